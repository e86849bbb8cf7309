//! The stick table: session ids learned from servers, mapped to the server
//! that issued them, forgotten after `idle_timeout` without use, bounded by
//! `max_entries` with least-recently-used eviction.
//!
//! As in mini-redis, one ordered set `(last_use, seq, key)` serves both
//! expiry (its front is the oldest) and LRU eviction (the same front).
//! Expired entries are purged lazily on each access, so no background task
//! is needed and a paused tokio clock drives the tests.
//!
//! An entry an open tunnel was routed by is *held* (`StickHold`) while the
//! tunnel lives: when it comes to the front of the order it is moved back
//! instead of forgotten or evicted, and once its last tunnel closes its idle
//! time starts again from then. A two-hour tunnel thus keeps its session id
//! for the client's reconnect (HAProxy issue #1480), without a timer per
//! tunnel and without touching the table per message.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::lock;
use tokio::time::Instant;

/// The longest session id tether stores; longer ones are ignored.
pub const MAX_KEY_LEN: usize = 256;

/// A map from session id to server name, shared by the requests of one backend.
///
/// Synchronous on purpose: the in-memory table answers in nanoseconds; the
/// Redis-shared table (scale-out issue) keeps a local table like this one in
/// front and talks to Redis off the request path.
pub trait StickTable: Send + Sync {
    /// The server `key` is stuck to, refreshing its idle timer.
    fn get(&self, key: &str) -> Option<Arc<str>>;
    /// Sticks `key` to `server` (replacing any previous server).
    fn insert(&self, key: &str, server: Arc<str>);
    /// Forgets `key`.
    fn remove(&self, key: &str);
    /// Entries currently held (expired ones excluded).
    fn len(&self) -> usize;
    /// Up to `limit` entries after skipping `offset`, most recently used
    /// first (for the admin API; does not refresh their idle timers).
    fn entries(&self, offset: usize, limit: usize) -> Vec<StickEntry>;
    /// Keeps `key` from expiring (or being evicted) until as many `release`s:
    /// an open tunnel was routed by it.
    fn hold(&self, key: &str);
    /// Ends one `hold` of `key`; after the last, its idle time starts from now.
    fn release(&self, key: &str);
    /// Whether the table holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the table is shared with other instances (`cluster::stick_table`).
    fn is_shared(&self) -> bool {
        false
    }
    /// For a shared table: a bounded lookup in the shared store of the
    /// `keys` the local table does not know, caching what it finds, to be
    /// awaited before `get`. `None` when there is nothing to wait for (a
    /// local table, every key known, or the shared store unreachable).
    fn fetch<'a>(&'a self, keys: Vec<String>) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>> {
        let _ = keys;
        None
    }
}

/// One entry of a stick table, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickEntry {
    /// The session id.
    pub key: String,
    /// The server it is stuck to.
    pub server: Arc<str>,
    /// How long since it was last used.
    pub idle: Duration,
}

struct Entry {
    server: Arc<str>,
    last_use: Instant,
    seq: u64,
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// `(last_use, seq, key)`: oldest first; `seq` makes equal instants distinct.
    order: BTreeSet<(Instant, u64, String)>,
    next_seq: u64,
    /// Keys held by open tunnels, with how many hold each. Apart from
    /// `entries`, so a hold outlives an entry replaced or learned again.
    held: HashMap<String, u32>,
}

/// The in-memory stick table.
pub struct MemoryTable {
    idle_timeout: Duration,
    /// A hit moves an entry in the LRU order only when its last move is at
    /// least this old (1/64 of `idle_timeout`, at most 1 s): a hot session
    /// costs a hash lookup, not a reordering of a big ordered set per request.
    refresh_every: Duration,
    max_entries: usize,
    /// One short lock per lookup (per request, never per message).
    inner: Mutex<Inner>,
}

impl MemoryTable {
    /// A table forgetting ids after `idle_timeout` and holding at most `max_entries`.
    pub fn new(idle_timeout: Duration, max_entries: usize) -> Self {
        Self {
            idle_timeout,
            refresh_every: (idle_timeout / 64).min(Duration::from_secs(1)),
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeSet::new(),
                next_seq: 0,
                held: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

impl Inner {
    /// Forgets the entries unused for `idle`, except held ones, which are
    /// moved to the back as if used now.
    fn purge_expired(&mut self, now: Instant, idle: Duration) {
        let mut held = Vec::new();
        while let Some((last_use, _, _)) = self.order.first() {
            if *last_use + idle > now {
                break;
            }
            if let Some((_, _, key)) = self.order.pop_first() {
                if self.held.contains_key(&key) {
                    held.push(key);
                } else {
                    self.entries.remove(&key);
                }
            }
        }
        for key in held {
            self.place(key, now);
        }
    }

    /// Makes room for one more entry below `max_entries`: the least recently
    /// used go first; held ones are moved to the back instead (so a table
    /// whose every entry is held by an open tunnel may hold more).
    fn evict_for_one(&mut self, max_entries: usize, now: Instant) {
        let mut spared = 0;
        while self.entries.len() >= max_entries && spared < self.entries.len() {
            match self.order.pop_first() {
                Some((_, _, oldest)) if self.held.contains_key(&oldest) => {
                    self.place(oldest, now);
                    spared += 1;
                }
                Some((_, _, oldest)) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// Puts the entry of `key` (already out of `order`) in the order as used at `now`.
    fn place(&mut self, key: String, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.last_use = now;
            entry.seq = seq;
            self.order.insert((now, seq, key));
        }
    }

    fn touch(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get(key) {
            self.order.remove(&(entry.last_use, entry.seq, key.to_string()));
            self.place(key.to_string(), now);
        }
    }
}

impl StickTable for MemoryTable {
    fn get(&self, key: &str) -> Option<Arc<str>> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge_expired(now, self.idle_timeout);
        let entry = inner.entries.get(key)?;
        let server = entry.server.clone();
        if now.saturating_duration_since(entry.last_use) >= self.refresh_every {
            inner.touch(key, now);
        }
        Some(server)
    }

    fn insert(&self, key: &str, server: Arc<str>) {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge_expired(now, self.idle_timeout);
        if let Some(entry) = inner.entries.get_mut(key) {
            entry.server = server;
            inner.touch(key, now);
            return;
        }
        inner.evict_for_one(self.max_entries, now);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert(
            key.to_string(),
            Entry {
                server,
                last_use: now,
                seq,
            },
        );
        inner.order.insert((now, seq, key.to_string()));
    }

    fn remove(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.remove(key) {
            inner.order.remove(&(entry.last_use, entry.seq, key.to_string()));
        }
    }

    fn len(&self) -> usize {
        let mut inner = self.lock();
        inner.purge_expired(Instant::now(), self.idle_timeout);
        inner.entries.len()
    }

    fn entries(&self, offset: usize, limit: usize) -> Vec<StickEntry> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge_expired(now, self.idle_timeout);
        inner
            .order
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|(last_use, _, key)| {
                let entry = inner.entries.get(key)?;
                Some(StickEntry {
                    key: key.clone(),
                    server: entry.server.clone(),
                    idle: now.saturating_duration_since(*last_use),
                })
            })
            .collect()
    }

    fn hold(&self, key: &str) {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return;
        }
        *self.lock().held.entry(key.to_string()).or_insert(0) += 1;
    }

    fn release(&self, key: &str) {
        let mut inner = self.lock();
        let Some(count) = inner.held.get_mut(key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            inner.held.remove(key);
            // The tunnel used the entry until now: it expires `idle_timeout` after it closed.
            inner.touch(key, Instant::now());
        }
    }
}

/// The session ids an open tunnel was routed by (or learned at its
/// handshake), held in their table while the tunnel lives and released
/// when it ends (this guard drops with the tunnel's task).
pub struct StickHold {
    table: Arc<dyn StickTable>,
    keys: Vec<String>,
}

impl StickHold {
    /// Holds `keys` in `table`; `None` when there is none to hold.
    pub fn new(table: Arc<dyn StickTable>, keys: Vec<String>) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        for key in &keys {
            table.hold(key);
        }
        Some(Self { table, keys })
    }

    /// The keys held.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

impl Drop for StickHold {
    fn drop(&mut self) {
        for key in &self.keys {
            self.table.release(key);
        }
    }
}

impl std::fmt::Debug for StickHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StickHold")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_idle_timeout_without_use() {
        let table = MemoryTable::new(Duration::from_secs(60), 100);
        table.insert("abc", name("s1"));
        table.insert("def", name("s2"));
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(table.get("abc").as_deref(), Some("s1"), "use refreshes the timer");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(table.get("abc").as_deref(), Some("s1"));
        assert_eq!(table.get("def"), None, "unused for 70 s: forgotten");
        assert_eq!(table.len(), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_entry_is_evicted_at_max_entries() {
        let table = MemoryTable::new(Duration::from_secs(3600), 3);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            table.insert(key, name(&format!("s{i}")));
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // Hits reorder at most once per second (1/64 of the idle timeout, capped).
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(table.get("a").is_some()); // "b" is now the least recently used
        table.insert("d", name("s3"));
        assert_eq!(table.len(), 3);
        assert_eq!(table.get("b"), None);
        assert!(table.get("a").is_some() && table.get("c").is_some() && table.get("d").is_some());
    }

    #[tokio::test]
    async fn reinserting_moves_a_key_and_overlong_keys_are_ignored() {
        let table = MemoryTable::new(Duration::from_secs(60), 10);
        table.insert("k", name("s1"));
        table.insert("k", name("s2"));
        assert_eq!(table.get("k").as_deref(), Some("s2"));
        assert_eq!(table.len(), 1);
        let long = "x".repeat(MAX_KEY_LEN + 1);
        table.insert(&long, name("s1"));
        assert_eq!(table.get(&long), None);
        table.remove("k");
        assert!(table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_entry_outlives_its_idle_timeout_and_expires_after_the_last_release() {
        let table: Arc<dyn StickTable> = Arc::new(MemoryTable::new(Duration::from_secs(60), 100));
        table.insert("held", name("s1"));
        table.insert("free", name("s2"));
        let first = StickHold::new(table.clone(), vec!["held".into()]).expect("a key");
        let second = StickHold::new(table.clone(), vec!["held".into()]).expect("a key");
        assert!(StickHold::new(table.clone(), Vec::new()).is_none());
        tokio::time::advance(Duration::from_secs(150)).await;
        assert_eq!(table.get("free"), None, "an entry no tunnel holds expires");
        assert_eq!(
            table.get("held").as_deref(),
            Some("s1"),
            "held for 150 s past 60 s idle"
        );
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(first);
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(table.len(), 1, "still held by the second tunnel");
        drop(second);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(table.len(), 1, "idle again from the last release");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(table.is_empty(), "forgotten idle_timeout after the tunnel closed");
    }

    #[tokio::test(start_paused = true)]
    async fn held_entries_are_not_evicted_at_max_entries() {
        let table: Arc<dyn StickTable> = Arc::new(MemoryTable::new(Duration::from_secs(3600), 2));
        table.insert("a", name("s1"));
        tokio::time::advance(Duration::from_secs(1)).await;
        table.insert("b", name("s2"));
        let _hold = StickHold::new(table.clone(), vec!["a".into()]);
        table.insert("c", name("s3"));
        assert_eq!(table.get("a").as_deref(), Some("s1"), "the oldest, but held");
        assert_eq!(table.get("b"), None, "the oldest not held went instead");
        table.insert("d", name("s1"));
        assert_eq!(table.len(), 2);
        assert!(table.get("a").is_some() && table.get("d").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_paged_most_recent_first() {
        let table = MemoryTable::new(Duration::from_secs(60), 10);
        for key in ["a", "b", "c"] {
            table.insert(key, name(&format!("s-{key}")));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let keys = |entries: Vec<StickEntry>| entries.into_iter().map(|e| e.key).collect::<Vec<_>>();
        assert_eq!(keys(table.entries(0, 10)), ["c", "b", "a"]);
        assert_eq!(keys(table.entries(1, 1)), ["b"]);
        assert!(table.entries(3, 10).is_empty());
        let first = &table.entries(0, 1)[0];
        assert_eq!((&*first.server, first.idle), ("s-c", Duration::from_secs(1)));
    }
}
