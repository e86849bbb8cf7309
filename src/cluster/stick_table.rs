//! The stick table shared by the instances of a cluster through Redis.
//!
//! A local `MemoryTable` stays in front, so the hot path makes no Redis
//! call: a local hit answers at once (and refreshes the Redis TTL in the
//! background at most once per refresh interval); an insert goes to the
//! local table and is queued for a pipelined `SET key server PX ttl` by one
//! writer task, never waited for. Only a session id the local table does
//! not know costs one `GETEX` bounded by `[cluster] timeout` (`fetch`,
//! called by the request handler before the synchronous lookup), and none
//! at all while Redis is known to be down.
//!
//! An id Redis does not know either is remembered as unknown for
//! [`MISS_TTL`] (at most [`MAX_MISSES`] ids per table), so a client — or an
//! attacker — repeating unknown ids costs one Redis call per id and window,
//! not one per request. An id learned by another instance meanwhile is found
//! once the window is over (the request in between is balanced).
//!
//! An id an open tunnel holds (`StickHold`) is kept alive in Redis too: the
//! cluster's refresh task calls [`SharedTable::refresh_held`] about every
//! third of `idle_timeout`, which sends one pipelined `PEXPIRE … ttl` per
//! batch of held ids (never one call per message or per tunnel), and writes
//! again an id Redis lost meanwhile (a flush, an outage). When the last
//! tunnel holding an id closes, its TTL starts again from then.
//!
//! Redis keys: `<prefix>stick:<backend>:<session id>` → server name (names
//! are the same on every instance; indexes are not), preceded by its
//! signature with `[cluster] secret`. A value that does not verify, or a
//! name longer than 256 bytes, is ignored and counted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Cluster, StickWrite};

/// How long an id Redis did not know is not asked for again.
pub const MISS_TTL: Duration = Duration::from_secs(2);
/// Most ids remembered as unknown per table; beyond, the oldest window is forgotten.
pub const MAX_MISSES: usize = 10_000;
use crate::sticky::table::{StickEntry, StickTable};
use crate::util::lock;

/// A `StickTable` whose entries are shared through Redis.
pub struct SharedTable {
    /// The local cache answering lookups.
    local: Arc<dyn StickTable>,
    /// The connection, the write queue and the settings.
    cluster: Arc<Cluster>,
    /// `<prefix>stick:<backend>:`, the start of every key of this table.
    key_prefix: String,
    /// The Redis TTL: the local table's `idle_timeout`, so both forget alike.
    ttl: Duration,
    /// Least time between two TTL refreshes of one key in Redis.
    refresh: Duration,
    /// When each key was last written to Redis (for the refresh interval).
    pushed: Mutex<HashMap<String, Instant>>,
    /// Ids Redis did not know, and when it was asked (the negative cache).
    misses: Mutex<HashMap<String, Instant>>,
    /// Ids held by open tunnels here, with how many hold each (their Redis
    /// TTL is refreshed by `refresh_held`).
    held: Mutex<HashMap<String, u32>>,
    /// Time between two TTL refreshes of the held ids: a third of the TTL.
    held_every: Duration,
    /// When the held ids' TTLs are next due for a refresh.
    held_due: Mutex<Instant>,
}

impl SharedTable {
    /// Shares `local` (the table of backend `backend`) with `idle_timeout` as the Redis TTL.
    pub fn new(local: Arc<dyn StickTable>, cluster: Arc<Cluster>, backend: &str, idle_timeout: Duration) -> Self {
        let key_prefix = format!("{}:", cluster.key(&["stick", backend]));
        let refresh = cluster
            .settings
            .stick_refresh
            .min(idle_timeout / 4)
            .max(Duration::from_millis(10));
        let held_every = (idle_timeout / 3).max(Duration::from_millis(10));
        Self {
            local,
            cluster,
            key_prefix,
            ttl: idle_timeout.max(Duration::from_millis(1)),
            refresh,
            pushed: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            held_every,
            held_due: Mutex::new(Instant::now() + held_every),
        }
    }

    /// If due, refreshes the Redis TTL of every id held by an open tunnel
    /// here (`PEXPIRE` in pipelines of up to 512), and writes again the ids
    /// Redis no longer has. Returns when it is next due. Skipped (and
    /// tried again at the next round) while Redis is down.
    pub async fn refresh_held(&self) -> Instant {
        let now = Instant::now();
        {
            let mut due = lock(&self.held_due);
            if *due > now {
                return *due;
            }
            *due = now + self.held_every;
        }
        let next = now + self.held_every;
        if !self.cluster.redis.is_up() {
            return next;
        }
        let keys: Vec<String> = lock(&self.held).keys().cloned().collect();
        let ttl_ms = self.ttl.as_millis() as u64;
        for chunk in keys.chunks(512) {
            let mut pipe = ::redis::pipe();
            for key in chunk {
                pipe.cmd("PEXPIRE").arg(self.redis_key(key)).arg(ttl_ms);
            }
            let limit = self.cluster.redis.background_timeout();
            match self.cluster.redis.query::<Vec<i64>>(&pipe, limit).await {
                Ok(found) => {
                    for (key, found) in chunk.iter().zip(found) {
                        if found == 0 {
                            // Gone from Redis (flushed, or expired during an outage): write it again.
                            if let Some(server) = self.local.get(key) {
                                self.push(key, server);
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(cause = %err, ids = chunk.len(), "TTL refresh of ids held by tunnels skipped");
                    return next;
                }
            }
        }
        next
    }

    /// Ids held by open tunnels here (for tests and stats).
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    /// Whether Redis was asked for `key` less than [`MISS_TTL`] ago and did not know it.
    fn recently_missed(&self, key: &str, now: Instant) -> bool {
        lock(&self.misses)
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < MISS_TTL)
    }

    /// Remembers that Redis did not know `key`, within the bound.
    fn missed(&self, key: String, now: Instant) {
        let mut misses = lock(&self.misses);
        if misses.len() >= MAX_MISSES && !misses.contains_key(&key) {
            misses.retain(|_, at| now.saturating_duration_since(*at) < MISS_TTL);
            if misses.len() >= MAX_MISSES {
                // All fresh: a flood of unknown ids. Forget them rather than grow.
                misses.clear();
            }
        }
        misses.insert(key, now);
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    fn pushed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        lock(&self.pushed)
    }

    /// Queues `SET key server PX ttl` and notes when.
    fn push(&self, key: &str, server: Arc<str>) {
        let now = Instant::now();
        {
            let mut pushed = self.pushed();
            if pushed.len() > 2 * self.local.len() + 1024 {
                let refresh = self.refresh;
                pushed.retain(|_, at| now.saturating_duration_since(*at) < refresh);
            }
            pushed.insert(key.to_string(), now);
        }
        self.cluster.write(StickWrite::Set {
            key: self.redis_key(key),
            server,
            ttl_ms: self.ttl.as_millis() as u64,
        });
    }

    /// Refreshes the Redis TTL of `key` if it was not written for `refresh`.
    fn refresh_if_due(&self, key: &str, server: &Arc<str>) {
        let due = self.pushed().get(key).is_none_or(|at| at.elapsed() >= self.refresh);
        if due {
            self.push(key, server.clone());
        }
    }

    /// Looks the keys up in Redis (one pipelined `GETEX … PX ttl`, which
    /// also refreshes their TTL) and caches what it finds locally.
    async fn fetch_from_redis(&self, keys: Vec<String>) {
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.cmd("GETEX")
                .arg(self.redis_key(key))
                .arg("PX")
                .arg(self.ttl.as_millis() as u64);
        }
        let limit = self.cluster.redis.timeout;
        // Bytes, not strings: a value that is not UTF-8 is one bad entry, not a failed lookup.
        match self.cluster.redis.query::<Vec<Option<Vec<u8>>>>(&pipe, limit).await {
            Ok(values) => {
                let now = Instant::now();
                for (key, value) in keys.into_iter().zip(values) {
                    let Some(value) = value else {
                        self.missed(key, now);
                        continue;
                    };
                    let redis_key = self.redis_key(&key);
                    let server = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| self.cluster.stick_server(&redis_key, v));
                    match server {
                        Some(server) => {
                            self.local.insert(&key, Arc::from(server));
                            self.pushed().insert(key, now);
                        }
                        None => {
                            self.cluster.trust.reject("stick entry");
                            self.missed(key, now);
                        }
                    }
                }
            }
            Err(err) => tracing::debug!(cause = %err, "stick lookup in Redis skipped"),
        }
    }
}

impl StickTable for SharedTable {
    fn get(&self, key: &str) -> Option<Arc<str>> {
        let server = self.local.get(key)?;
        self.refresh_if_due(key, &server);
        Some(server)
    }

    fn insert(&self, key: &str, server: Arc<str>) {
        if key.is_empty() || key.len() > crate::sticky::table::MAX_KEY_LEN {
            return;
        }
        lock(&self.misses).remove(key);
        self.local.insert(key, server.clone());
        self.push(key, server);
    }

    fn remove(&self, key: &str) {
        self.local.remove(key);
        self.pushed().remove(key);
        self.cluster.write(StickWrite::Del {
            key: self.redis_key(key),
        });
    }

    fn len(&self) -> usize {
        self.local.len()
    }

    fn entries(&self, offset: usize, limit: usize) -> Vec<StickEntry> {
        self.local.entries(offset, limit)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn hold(&self, key: &str) {
        if key.is_empty() || key.len() > crate::sticky::table::MAX_KEY_LEN {
            return;
        }
        self.local.hold(key);
        *lock(&self.held).entry(key.to_string()).or_insert(0) += 1;
    }

    fn release(&self, key: &str) {
        self.local.release(key);
        let last = {
            let mut held = lock(&self.held);
            match held.get_mut(key) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    held.remove(key);
                    true
                }
                None => false,
            }
        };
        if last {
            // Its TTL starts again now, as the local entry's idle time does.
            self.cluster.write(StickWrite::Expire {
                key: self.redis_key(key),
                ttl_ms: self.ttl.as_millis() as u64,
            });
        }
    }

    fn fetch<'a>(&'a self, keys: Vec<String>) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>> {
        if !self.cluster.redis.is_up() {
            return None;
        }
        let now = Instant::now();
        let missing: Vec<String> = keys
            .into_iter()
            .filter(|k| !k.is_empty() && k.len() <= crate::sticky::table::MAX_KEY_LEN)
            .filter(|k| self.local.get(k).is_none() && !self.recently_missed(k, now))
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(Box::pin(self.fetch_from_redis(missing)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterSettings;
    use crate::sticky::table::MemoryTable;

    /// A cluster member that never started: Redis counts as down.
    fn offline() -> Arc<Cluster> {
        let settings = ClusterSettings {
            redis: "redis://127.0.0.1:1".into(),
            password: None,
            tls_ca_file: None,
            instance: Some("t".into()),
            prefix: "tether:".into(),
            timeout: Duration::from_millis(50),
            sync_interval: Duration::from_secs(1),
            stick_refresh: Duration::from_secs(10),
            secret: None,
        };
        Arc::new(Cluster::new(settings, crate::state::Changes::unobserved()).expect("valid URL"))
    }

    #[tokio::test(start_paused = true)]
    async fn without_redis_the_local_table_answers_and_writes_wait_for_the_resync() {
        let cluster = offline();
        let local = Arc::new(MemoryTable::new(Duration::from_secs(60), 100));
        let table = SharedTable::new(local, cluster.clone(), "web", Duration::from_secs(60));
        assert_eq!(table.redis_key("abc"), "tether:stick:web:abc");
        assert_eq!(table.refresh, Duration::from_secs(10), "stick_refresh, under idle/4");
        table.insert("abc", Arc::from("s1"));
        assert_eq!(table.get("abc").as_deref(), Some("s1"));
        assert!(
            table.fetch(vec!["zzz".into()]).is_none(),
            "no Redis call while it is down"
        );
        assert_eq!(cluster.pending_writes(), 1, "kept for the next recovery");
        table.remove("abc");
        assert_eq!(cluster.pending_writes(), 0, "a removal cancels the pending write");
        assert!(table.is_empty() && table.is_shared());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_ids_are_remembered_for_a_short_window_within_a_bound() {
        let cluster = offline();
        let local = Arc::new(MemoryTable::new(Duration::from_secs(60), 100));
        let table = SharedTable::new(local, cluster, "web", Duration::from_secs(60));
        let now = Instant::now();
        table.missed("gone".into(), now);
        assert!(table.recently_missed("gone", now));
        tokio::time::advance(MISS_TTL).await;
        assert!(
            !table.recently_missed("gone", Instant::now()),
            "asked again after the window"
        );
        for i in 0..MAX_MISSES + 10 {
            table.missed(format!("flood-{i}"), Instant::now());
        }
        assert!(lock(&table.misses).len() <= MAX_MISSES, "bounded");
        table.missed("learned".into(), Instant::now());
        table.insert("learned", Arc::from("s1"));
        assert!(
            !table.recently_missed("learned", Instant::now()),
            "an id learned here is no longer unknown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tunnels_hold_ids_locally_and_for_the_refresh_until_the_last_one_closes() {
        let cluster = offline();
        let local: Arc<dyn StickTable> = Arc::new(MemoryTable::new(Duration::from_secs(3), 100));
        let table = SharedTable::new(local.clone(), cluster, "web", Duration::from_secs(3));
        assert_eq!(table.held_every, Duration::from_secs(1), "a third of the TTL");
        table.insert("abc", Arc::from("s1"));
        table.hold("abc");
        table.hold("abc");
        assert_eq!(table.held(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(local.get("abc").as_deref(), Some("s1"), "held in the local table too");
        let next = table.refresh_held().await;
        assert_eq!(
            next,
            Instant::now() + Duration::from_secs(1),
            "Redis down: tried again next round"
        );
        table.release("abc");
        assert_eq!(table.held(), 1, "one tunnel still holds it");
        table.release("abc");
        assert_eq!(table.held(), 0);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(local.get("abc").is_none(), "expires once released");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_refreshes_the_redis_ttl_at_most_once_per_interval() {
        let cluster = offline();
        let local = Arc::new(MemoryTable::new(Duration::from_secs(8), 100));
        let table = SharedTable::new(local, cluster, "web", Duration::from_secs(8));
        assert_eq!(
            table.refresh,
            Duration::from_secs(2),
            "a quarter of a short idle_timeout"
        );
        table.insert("abc", Arc::from("s1"));
        let first = table.pushed()["abc"];
        tokio::time::advance(Duration::from_secs(1)).await;
        table.get("abc");
        assert_eq!(table.pushed()["abc"], first, "refreshed 1 s ago: no write");
        tokio::time::advance(Duration::from_millis(1500)).await;
        table.get("abc");
        assert!(table.pushed()["abc"] > first, "due: written again");
    }
}
