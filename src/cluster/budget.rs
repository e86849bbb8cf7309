//! The fleet's shared rebalance budget: the sheds every instance makes in
//! one window of a backend's rate are counted in one Redis key,
//! `<prefix>rebalance:<backend>:<window>`, with `INCRBY` (atomic, one round
//! trip, no script): an ask is granted what the window had left before it,
//! so the fleet as a whole never exceeds the rate, however many instances
//! shed at once. The key expires two windows later by itself.
//!
//! While Redis cannot be reached each instance takes the rate divided by
//! the number of live instances it last knew of, so the fleet still keeps
//! to the rate (only less evenly).

use super::Cluster;

impl Cluster {
    /// Takes up to `asked` sheds from `backend`'s window `window` (of
    /// `window_ms`, at most `limit` sheds in it across the fleet); `None`
    /// if Redis did not answer.
    pub async fn take_rebalance_budget(
        &self,
        backend: &str,
        window: u64,
        window_ms: u64,
        limit: u32,
        asked: u32,
    ) -> Option<u32> {
        if asked == 0 {
            return Some(0);
        }
        let key = self.key(&["rebalance", backend, &window.to_string()]);
        let mut pipe = redis::pipe();
        pipe.cmd("INCRBY").arg(&key).arg(asked);
        pipe.cmd("PEXPIRE").arg(&key).arg(window_ms.saturating_mul(2)).ignore();
        let limit_time = self.redis.background_timeout();
        match self.redis.query::<(u64,)>(&pipe, limit_time).await {
            Ok((after,)) => Some(crate::rebalance::granted(
                limit,
                after.saturating_sub(u64::from(asked)),
                asked,
            )),
            Err(err) => {
                tracing::debug!(backend, cause = %err, "rebalance budget not read from Redis");
                None
            }
        }
    }

    /// The live instances as of the last sync (at least this one).
    pub fn live_instances(&self) -> usize {
        self.instances().len().max(1)
    }
}
