//! Admission per frontend: the cap on open connections (`maxconn`), the cap
//! on connections per client address (`per_ip.max_connections`) and the
//! per-address WebSocket handshake rate (`per_ip.rate`).
//!
//! A "client address" is an IPv4 address as it is, or an IPv6 address cut
//! to its first `per_ip.ipv6_prefix` bits (/64 by default,
//! [`crate::cidr::client_key`]): one subscriber usually holds a whole /64,
//! so counting each IPv6 address would hand one client 2^64 budgets.
//!
//! Lives in the frontend's state, so counts survive reloads. The per-address
//! table is only touched when a per-IP limit is configured; an address's
//! entry goes away once it has no connection and its rate bucket is full
//! again, so the table holds about as many entries as there are clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cidr::{client_key, DEFAULT_IPV6_CLIENT_PREFIX};
use crate::config::ConfigRate;
use crate::util::lock;

/// The table size below which no sweep of idle entries is done.
const SWEEP_FLOOR: usize = 1024;

/// One client address's open connections and handshake bucket.
#[derive(Debug)]
struct IpEntry {
    /// Connections from this address open now.
    connections: u32,
    /// Handshakes the address may still make at once (token bucket).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// The bucket's size at the last handshake (0: no rate applied yet).
    capacity: u32,
}

impl IpEntry {
    fn new(now: Instant) -> Self {
        Self {
            connections: 0,
            tokens: 0.0,
            refilled: now,
            capacity: 0,
        }
    }

    /// Refills the bucket for the time passed, for a rate of `rate`.
    fn refill(&mut self, rate: ConfigRate, now: Instant) {
        let capacity = f64::from(rate.count);
        if self.capacity != rate.count {
            // First handshake, or the rate changed by a reload: start full.
            self.capacity = rate.count;
            self.tokens = capacity;
        } else {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * capacity / rate.per.as_secs_f64()).min(capacity);
        }
        self.refilled = now;
    }

    /// No connection open and the bucket full again: nothing worth keeping.
    fn is_idle(&self, now: Instant, rate_per: Option<Duration>) -> bool {
        if self.connections > 0 {
            return false;
        }
        if self.capacity == 0 {
            return true;
        }
        let per = rate_per.unwrap_or(Duration::ZERO).as_secs_f64();
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        let capacity = f64::from(self.capacity);
        per == 0.0 || self.tokens + elapsed * capacity / per >= capacity
    }
}

/// Admission state of one frontend (see the module docs).
#[derive(Debug, Default)]
pub struct Admission {
    /// Per client address: open connections and handshake bucket.
    per_ip: Mutex<HashMap<IpAddr, IpEntry>>,
    /// The table size at which idle entries are swept next.
    sweep_at: AtomicUsize,
    /// The period of the rate in force, in milliseconds (for sweeping).
    rate_per_ms: AtomicU64,
    /// The IPv6 prefix length clients are counted by (0: the default, 64).
    ipv6_prefix: AtomicU8,
    /// Wakes accept loops waiting below `maxconn`.
    slot_freed: Notify,
    /// Accept loops waiting for a slot (closes only notify when some wait).
    accept_waiters: AtomicUsize,
    /// Connections refused because their address had `per_ip.max_connections` open.
    pub refused_connections: AtomicU64,
    /// WebSocket handshakes refused with 429 by `per_ip.rate`.
    pub refused_handshakes: AtomicU64,
    /// Tunnels closed with 1008 for going over `websocket.max_messages`.
    pub message_rate_closes: AtomicU64,
}

impl Admission {
    /// Sets the IPv6 prefix length clients are counted by (`per_ip.ipv6_prefix`).
    /// Connections counted before keep the key they were counted under.
    pub fn set_ipv6_prefix(&self, prefix: u8) {
        self.ipv6_prefix.store(prefix, Ordering::Relaxed);
    }

    /// The key `ip` is counted under: IPv4 as it is, IPv6 cut to the prefix in force.
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        let prefix = match self.ipv6_prefix.load(Ordering::Relaxed) {
            0 => DEFAULT_IPV6_CLIENT_PREFIX,
            prefix => prefix,
        };
        client_key(ip, prefix)
    }

    /// Counts a new connection from `ip` unless its client (see
    /// `client_key`) already has `max` open; returns the key it was counted
    /// under, for `disconnect`.
    pub fn try_connect(&self, ip: IpAddr, max: u32) -> Option<IpAddr> {
        let key = self.client_key(ip);
        self.try_connect_key(key, max).then_some(key)
    }

    /// Counts a new connection under `key` (already a client key) unless it has `max` open.
    pub fn try_connect_key(&self, key: IpAddr, max: u32) -> bool {
        let now = Instant::now();
        let mut table = self.table();
        let entry = table.entry(key).or_insert_with(|| IpEntry::new(now));
        if entry.connections >= max {
            drop(table);
            self.refused_connections.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        entry.connections += 1;
        self.maybe_sweep(&mut table, now);
        true
    }

    /// A connection counted by `try_connect` under `ip` (the key it returned) closed.
    pub fn disconnect(&self, ip: IpAddr) {
        let now = Instant::now();
        let rate_per = self.rate_per();
        let mut table = self.table();
        if let Some(entry) = table.get_mut(&ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.is_idle(now, rate_per) {
                table.remove(&ip);
            }
        }
    }

    /// Takes one WebSocket handshake from the bucket of `ip`'s client (see
    /// `client_key`), or says how long until one is available again.
    pub fn try_handshake(&self, ip: IpAddr, rate: ConfigRate) -> Result<(), Duration> {
        self.try_handshake_at(self.client_key(ip), rate, Instant::now())
    }

    fn try_handshake_at(&self, ip: IpAddr, rate: ConfigRate, now: Instant) -> Result<(), Duration> {
        self.rate_per_ms.store(rate.per.as_millis() as u64, Ordering::Relaxed);
        let mut table = self.table();
        let entry = table.entry(ip).or_insert_with(|| IpEntry::new(now));
        entry.refill(rate, now);
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            self.maybe_sweep(&mut table, now);
            return Ok(());
        }
        let missing = 1.0 - entry.tokens;
        drop(table);
        self.refused_handshakes.fetch_add(1, Ordering::Relaxed);
        Err(rate.per.mul_f64(missing / f64::from(rate.count)))
    }

    /// Client addresses tracked now (for tests and the API).
    pub fn tracked(&self) -> usize {
        self.table().len()
    }

    /// Waits, if `open` connections reach `maxconn`, until one closes; new
    /// connections meanwhile stay in the kernel's accept backlog.
    pub async fn wait_for_slot(&self, open: &AtomicU64, maxconn: u64) {
        loop {
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if open.load(Ordering::Acquire) < maxconn {
                return;
            }
            self.accept_waiters.fetch_add(1, Ordering::AcqRel);
            // Re-check after announcing the wait, so a close in between is not missed.
            if open.load(Ordering::Acquire) >= maxconn {
                freed.await;
            }
            self.accept_waiters.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A connection of this frontend closed: wake a waiting accept loop.
    pub fn slot_freed(&self) {
        if self.accept_waiters.load(Ordering::Acquire) > 0 {
            self.slot_freed.notify_waiters();
        }
    }

    fn rate_per(&self) -> Option<Duration> {
        match self.rate_per_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, IpEntry>> {
        // A panic while holding the lock leaves counts that are still usable.
        lock(&self.per_ip)
    }

    /// Drops idle entries once the table doubled since the last sweep
    /// (amortised O(1) per call; addresses that only made handshakes and
    /// left are forgotten here).
    fn maybe_sweep(&self, table: &mut HashMap<IpAddr, IpEntry>, now: Instant) {
        let threshold = self.sweep_at.load(Ordering::Relaxed).max(SWEEP_FLOOR);
        if table.len() < threshold {
            return;
        }
        let rate_per = self.rate_per();
        table.retain(|_, entry| !entry.is_idle(now, rate_per));
        self.sweep_at
            .store((table.len() * 2).max(SWEEP_FLOOR), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn connections_per_address_are_capped_and_freed() {
        let admission = Admission::default();
        assert!(admission.try_connect(ip(1), 2).is_some());
        assert!(admission.try_connect(ip(1), 2).is_some());
        assert!(
            admission.try_connect(ip(1), 2).is_none(),
            "a third connection from the same address"
        );
        assert!(
            admission.try_connect(ip(2), 2).is_some(),
            "other addresses are not affected"
        );
        admission.disconnect(ip(1));
        assert!(admission.try_connect(ip(1), 2).is_some());
        assert_eq!(admission.refused_connections.load(Ordering::Relaxed), 1);
        for _ in 0..2 {
            admission.disconnect(ip(1));
        }
        admission.disconnect(ip(2));
        assert_eq!(admission.tracked(), 0, "addresses without connections are forgotten");
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix() {
        let admission = Admission::default();
        let v6 = |last: u16, net: u16| IpAddr::from([0x2001, 0xdb8, 0, net, 0, 0, 0, last]);
        // The default: one /64 is one client.
        let first = admission.try_connect(v6(1, 1), 2).expect("first");
        assert_eq!(first, v6(0, 1), "counted under the /64");
        assert!(admission.try_connect(v6(2, 1), 2).is_some());
        assert!(
            admission.try_connect(v6(3, 1), 2).is_none(),
            "a third address of the same /64 is the same client"
        );
        assert!(
            admission.try_connect(v6(1, 2), 2).is_some(),
            "another /64 is another client"
        );
        // IPv4 and IPv4-mapped addresses are counted as they are.
        assert!(admission.try_connect(ip(1), 1).is_some());
        let mapped = IpAddr::from(std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert!(admission.try_connect(mapped, 1).is_none());
        // Per address with a prefix of 128.
        let exact = Admission::default();
        exact.set_ipv6_prefix(128);
        assert!(exact.try_connect(v6(1, 1), 1).is_some());
        assert!(exact.try_connect(v6(2, 1), 1).is_some());
        // Handshake buckets follow the same keys.
        let rate = ConfigRate {
            count: 1,
            per: Duration::from_secs(60),
        };
        assert!(admission.try_handshake(v6(7, 9), rate).is_ok());
        assert!(
            admission.try_handshake(v6(8, 9), rate).is_err(),
            "same /64, same bucket"
        );
        // A connection is uncounted under the key it was counted under.
        admission.disconnect(first);
        assert!(admission.try_connect(v6(3, 1), 2).is_some());
    }

    #[test]
    fn handshakes_follow_a_token_bucket_with_a_burst_of_one_period() {
        let admission = Admission::default();
        let rate = ConfigRate {
            count: 4,
            per: Duration::from_secs(1),
        };
        let start = Instant::now();
        for _ in 0..4 {
            assert!(admission.try_handshake_at(ip(1), rate, start).is_ok());
        }
        let wait = admission.try_handshake_at(ip(1), rate, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(250), "one token comes back every 250 ms");
        assert!(admission.try_handshake_at(ip(2), rate, start).is_ok(), "per address");
        let later = start + Duration::from_millis(260);
        assert!(admission.try_handshake_at(ip(1), rate, later).is_ok());
        assert!(admission.try_handshake_at(ip(1), rate, later).is_err());
        assert_eq!(admission.refused_handshakes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn addresses_that_only_made_handshakes_are_swept_once_their_bucket_refilled() {
        let admission = Admission::default();
        let rate = ConfigRate {
            count: 10,
            per: Duration::from_millis(100),
        };
        let start = Instant::now();
        // Ten waves of 1,024 new addresses, a second apart: each wave's buckets
        // have refilled by the next, so the table never holds much more than
        // two waves (it sweeps whenever it doubled).
        for wave in 0..10u32 {
            let now = start + Duration::from_secs(u64::from(wave));
            for i in 0..SWEEP_FLOOR as u32 {
                let address = IpAddr::from((0x0a00_0000u32 + wave * 4096 + i).to_be_bytes());
                admission.try_handshake_at(address, rate, now).unwrap();
            }
            assert!(
                admission.tracked() <= 2 * SWEEP_FLOOR,
                "wave {wave}: {} entries",
                admission.tracked()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_accept_loop_at_maxconn_waits_until_a_connection_closes() {
        let admission = std::sync::Arc::new(Admission::default());
        let open = std::sync::Arc::new(AtomicU64::new(2));
        let waiter = {
            let (admission, open) = (admission.clone(), open.clone());
            tokio::spawn(async move { admission.wait_for_slot(&open, 2).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "full: the accept loop waits");
        open.fetch_sub(1, Ordering::AcqRel);
        admission.slot_freed();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woken by the close")
            .unwrap();
    }
}
