//! Asking open tunnels to close. Each tunnel has one small `TunnelControl`
//! registered with its server; server-down, drain and shutdown walk those
//! registrations and request a Close code. A tunnel polls its control with
//! one atomic load, so the per-message path stays as cheap as before and an
//! idle tunnel holds a few dozen bytes for it instead of several timers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use super::frames::CloseCode;
use crate::util::clock::monotonic_ms;
use crate::util::lock;

/// The close request of one tunnel.
#[derive(Debug, Default)]
pub struct TunnelControl {
    /// 0 until a Close code is requested; the first request wins.
    code: AtomicU16,
    /// The tunnel's task, woken by a request.
    waker: AtomicWaker,
    /// When the tunnel opened (`monotonic_ms`): rebalancing sheds the oldest
    /// first and never one younger than its `settle`.
    opened_ms: u64,
    /// Its client was moved here by rebalancing: never shed again, so no
    /// client is shed twice in a row.
    moved: bool,
}

impl TunnelControl {
    /// When the tunnel opened (`monotonic_ms`).
    pub fn opened_ms(&self) -> u64 {
        self.opened_ms
    }

    /// Whether rebalancing moved this tunnel's client here.
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// Asks the tunnel to close with `code` (later requests are ignored).
    pub fn request(&self, code: CloseCode) {
        if self
            .code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// The requested code, if any.
    pub fn requested(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.code.load(Ordering::Acquire))
    }

    /// Ready with the code once one is requested; registers the task otherwise.
    pub fn poll_requested(&self, cx: &mut Context<'_>) -> Poll<CloseCode> {
        if let Some(code) = self.requested() {
            return Poll::Ready(code);
        }
        self.waker.register(cx.waker());
        match self.requested() {
            Some(code) => Poll::Ready(code),
            None => Poll::Pending,
        }
    }
}

/// The open tunnels of one server.
#[derive(Debug, Default)]
pub struct TunnelSet {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<TunnelControl>>>,
}

impl TunnelSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<TunnelControl>>> {
        lock(&self.open)
    }

    /// Registers a tunnel opened now; it leaves the set when the
    /// registration drops. `moved`: rebalancing moved its client here.
    pub fn register(self: &Arc<Self>, moved: bool) -> TunnelRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(TunnelControl {
            opened_ms: monotonic_ms(),
            moved,
            ..TunnelControl::default()
        });
        self.lock().insert(id, control.clone());
        TunnelRegistration {
            set: self.clone(),
            id,
            control,
        }
    }

    /// Controls of the tunnels open now.
    pub fn controls(&self) -> Vec<Arc<TunnelControl>> {
        self.lock().values().cloned().collect()
    }

    /// Tunnels open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no tunnel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests `code` from every tunnel open now.
    pub fn close_all(&self, code: CloseCode) {
        for control in self.controls() {
            control.request(code);
        }
    }
}

/// A tunnel's place in its server's set.
#[derive(Debug)]
pub struct TunnelRegistration {
    set: Arc<TunnelSet>,
    id: u64,
    control: Arc<TunnelControl>,
}

impl TunnelRegistration {
    /// The control the tunnel polls.
    pub fn control(&self) -> &Arc<TunnelControl> {
        &self.control
    }
}

impl Drop for TunnelRegistration {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

/// Requests `code` from each of `controls` one after another, evenly over
/// `spread`, so clients do not all reconnect at the same instant. The first
/// close comes one step in, not at once: a tunnel that opened just before
/// (a short exchange in flight) gets that step to finish on its own, and the
/// last close lands at the end of `spread`. `keep_going` is asked before each
/// close (a drain cancelled by re-enabling the server stops).
pub async fn close_spread(
    controls: Vec<Arc<TunnelControl>>,
    code: CloseCode,
    spread: Duration,
    keep_going: impl Fn() -> bool,
) {
    let step = spread.checked_div(controls.len().max(1) as u32).unwrap_or_default();
    let start = tokio::time::Instant::now();
    for (index, control) in (1u32..).zip(controls) {
        if !step.is_zero() {
            // From the start, not from the last wake-up: late timers do not add up.
            tokio::time::sleep_until(start + step * index).await;
        }
        if !keep_going() {
            return;
        }
        control.request(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_wins_and_registrations_leave_on_drop() {
        let set = Arc::new(TunnelSet::default());
        let a = set.register(false);
        let b = set.register(false);
        assert_eq!(set.len(), 2);
        a.control().request(CloseCode::ServiceRestart);
        a.control().request(CloseCode::GoingAway);
        assert_eq!(a.control().requested(), Some(CloseCode::ServiceRestart));
        assert_eq!(b.control().requested(), None);
        drop(a);
        assert_eq!(set.len(), 1);
        set.close_all(CloseCode::GoingAway);
        assert_eq!(b.control().requested(), Some(CloseCode::GoingAway));
    }

    #[tokio::test(start_paused = true)]
    async fn closes_are_spread_evenly() {
        let set = Arc::new(TunnelSet::default());
        let regs: Vec<_> = (0..4).map(|_| set.register(false)).collect();
        let started = tokio::time::Instant::now();
        let closing = tokio::spawn(close_spread(
            set.controls(),
            CloseCode::GoingAway,
            Duration::from_secs(4),
            || true,
        ));
        tokio::task::yield_now().await;
        let closed = |regs: &[TunnelRegistration]| regs.iter().filter(|r| r.control().requested().is_some()).count();
        assert_eq!(closed(&regs), 0, "no tunnel is closed at the very start");
        tokio::time::advance(Duration::from_millis(1500)).await;
        tokio::task::yield_now().await;
        assert_eq!(closed(&regs), 1);
        closing.await.unwrap();
        assert_eq!(closed(&regs), 4);
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "the last close lands at the end of the spread"
        );
    }
}
