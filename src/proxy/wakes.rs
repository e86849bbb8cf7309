//! Two wake-ups for one client connection's task: its HTTP connection and
//! its watchdog (timer, stop signals, phase changes) share the task, but
//! each is polled only when something of its own woke it.
//!
//! With one `select!` over both, every read and write readiness of the
//! connection also polled the watchdog's timer, both stop signals and its
//! `Notify` (about a tenth of a keep-alive request's instructions). Here
//! the connection is polled with a waker that marks the connection side,
//! the watchdog's futures with one that marks the watchdog side, and a task
//! poll looks only at the sides marked.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

/// Which side of a connection's task woke, and what it gave.
#[derive(Debug)]
pub enum Woke<C, W> {
    /// The connection finished with this output.
    Connection(C),
    /// The watchdog side was woken; this is what it found.
    Watchdog(W),
}

/// The task's waker and which side needs a poll. Both sides start marked,
/// so the first poll registers every future.
#[derive(Debug)]
pub struct Wakes {
    task: AtomicWaker,
    connection: AtomicBool,
    watchdog: AtomicBool,
}

impl Default for Wakes {
    fn default() -> Self {
        Self {
            task: AtomicWaker::new(),
            connection: AtomicBool::new(true),
            watchdog: AtomicBool::new(true),
        }
    }
}

impl Wakes {
    /// Marks the connection side and wakes the task (the connection's waker).
    pub fn wake_connection(&self) {
        self.connection.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Marks the watchdog side and wakes the task (the watchdog's waker).
    pub fn wake_watchdog(&self) {
        self.watchdog.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Marks the connection side for the next poll without waking the task
    /// (the task is running: e.g. the watchdog just asked the connection to stop).
    pub fn mark_connection(&self) {
        self.connection.store(true, Ordering::Release);
    }

    /// Marks the watchdog side for the next poll without waking the task
    /// (the watchdog just re-armed a timer that must be polled to register).
    pub fn mark_watchdog(&self) {
        self.watchdog.store(true, Ordering::Release);
    }

    /// Whether the watchdog side is marked; clears the mark (for tests).
    #[cfg(test)]
    pub fn take_watchdog_mark(&self) -> bool {
        self.watchdog.swap(false, Ordering::AcqRel)
    }

    /// One poll of the task: `connection` (with `connection_waker`) if its
    /// side is marked, then, if the watchdog's side is marked, `watchdog`
    /// (with `watchdog_waker`), whose answer is returned at once: a watchdog
    /// wake-up always means "look again" (a phase change has nothing to poll).
    pub fn poll<C, W>(
        &self,
        cx: &mut Context<'_>,
        mut connection: Pin<&mut C>,
        connection_waker: &Waker,
        watchdog_waker: &Waker,
        watchdog: impl FnOnce(&mut Context<'_>) -> W,
    ) -> Poll<Woke<C::Output, W>>
    where
        C: Future + ?Sized,
    {
        self.task.register(cx.waker());
        if self.connection.swap(false, Ordering::AcqRel) {
            let mut connection_cx = Context::from_waker(connection_waker);
            if let Poll::Ready(output) = connection.as_mut().poll(&mut connection_cx) {
                return Poll::Ready(Woke::Connection(output));
            }
        }
        if self.watchdog.swap(false, Ordering::AcqRel) {
            let mut watchdog_cx = Context::from_waker(watchdog_waker);
            return Poll::Ready(Woke::Watchdog(watchdog(&mut watchdog_cx)));
        }
        // A side that woke while polled (hyper yields when tokio's budget
        // runs out: it wakes itself and returns `Pending`) has woken the task
        // too, which tokio polls again after the others: never loop here.
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Side(Arc<Wakes>, bool);
    impl Wake for Side {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if self.1 {
                self.0.wake_connection();
            } else {
                self.0.wake_watchdog();
            }
        }
    }

    /// A future that counts its polls and is ready on the `ready_at`-th.
    struct Counted {
        polls: usize,
        ready_at: usize,
    }
    impl Future for Counted {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls == self.ready_at {
                Poll::Ready(self.polls)
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn each_side_is_polled_only_when_it_woke() {
        let wakes = Arc::new(Wakes::default());
        let connection_waker = Waker::from(Arc::new(Side(wakes.clone(), true)));
        let watchdog_waker = Waker::from(Arc::new(Side(wakes.clone(), false)));
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        let mut connection = Counted { polls: 0, ready_at: 3 };
        let mut watchdog_polls = 0;
        let mut poll = |connection: &mut Counted, watchdog_polls: &mut usize| {
            wakes.poll(
                &mut cx,
                Pin::new(connection),
                &connection_waker,
                &watchdog_waker,
                |_| *watchdog_polls += 1,
            )
        };
        // The first poll looks at both sides.
        assert!(matches!(
            poll(&mut connection, &mut watchdog_polls),
            Poll::Ready(Woke::Watchdog(()))
        ));
        assert_eq!((connection.polls, watchdog_polls), (1, 1));
        // Nothing woke: nothing is polled.
        assert!(poll(&mut connection, &mut watchdog_polls).is_pending());
        assert_eq!((connection.polls, watchdog_polls), (1, 1));
        // Only the connection woke: the watchdog is left alone.
        connection_waker.wake_by_ref();
        assert!(poll(&mut connection, &mut watchdog_polls).is_pending());
        assert_eq!((connection.polls, watchdog_polls), (2, 1));
        // Only the watchdog woke.
        watchdog_waker.wake_by_ref();
        assert!(matches!(
            poll(&mut connection, &mut watchdog_polls),
            Poll::Ready(Woke::Watchdog(()))
        ));
        assert_eq!((connection.polls, watchdog_polls), (2, 2));
        connection_waker.wake_by_ref();
        assert!(matches!(
            poll(&mut connection, &mut watchdog_polls),
            Poll::Ready(Woke::Connection(3))
        ));
    }

    /// Like a hyper connection out of tokio's budget: wakes itself, then `Pending`.
    struct Yields(usize);
    impl Future for Yields {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0 += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_connection_that_yields_is_polled_once_per_task_poll() {
        let wakes = Arc::new(Wakes::default());
        let connection_waker = Waker::from(Arc::new(Side(wakes.clone(), true)));
        let watchdog_waker = Waker::from(Arc::new(Side(wakes.clone(), false)));
        let mut cx = Context::from_waker(Waker::noop());
        let mut connection = Yields(0);
        assert!(matches!(
            wakes.poll(
                &mut cx,
                Pin::new(&mut connection),
                &connection_waker,
                &watchdog_waker,
                |_| ()
            ),
            Poll::Ready(Woke::Watchdog(()))
        ));
        assert!(wakes
            .poll(
                &mut cx,
                Pin::new(&mut connection),
                &connection_waker,
                &watchdog_waker,
                |_| ()
            )
            .is_pending());
        assert_eq!(connection.0, 2, "once per task poll, never in a loop");
    }
}
