//! Scale-out: several tether instances share stickiness, load and operator
//! actions through one Redis server (`[cluster] redis = "redis://…"`), or
//! whichever master Redis Sentinel names (`redis+sentinel://…`).
//!
//! - `client`: the Redis connection (a reconnecting `ConnectionManager`;
//!   with sentinels, remade to the master they name after a failover),
//!   every call under a timeout, the "Redis is up" flag;
//! - `load`: each instance publishes its per-server connection counts every
//!   `sync_interval` and reads the others', which `leastconn` and `random`
//!   add to their local live counts (`ServerState::remote_active`);
//! - `ops`: drain, enable, disable, maint and weight changes made through
//!   any instance's admin API, published on a channel and stored in a hash
//!   a starting instance reads;
//! - `servers`: servers added and deleted through any instance's admin
//!   API, shared the same way, applied by each instance's reload path.
//!
//! The shared stick table itself is `stick_table`. Nothing here is on a
//! request's critical path except one bounded GET for a session id the
//! local table does not know: when Redis is down, slow or flushed, requests
//! are served from local state and the instance resynchronises once Redis
//! is back.

pub mod budget;
pub mod client;
pub mod load;
pub mod ops;
pub mod servers;
pub mod stick_table;
pub mod trust;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::snapshot::Snapshot;
use crate::state::Changes;
use crate::util::lock;
use client::RedisClient;
use trust::Trust;

/// Most stick-table writes waiting for the writer task; beyond, writes are dropped and counted.
const WRITE_QUEUE: usize = 8192;
/// Most stick entries remembered during an outage, to push once Redis is back.
const MAX_PENDING: usize = 100_000;

/// The `[cluster]` settings in force (read at start; a reload does not
/// change them): the config model's, as they are.
pub use crate::config::model::Cluster as ClusterSettings;

/// One stick-table write on its way to Redis.
#[derive(Debug)]
pub(crate) enum StickWrite {
    /// `SET key server PX ttl`.
    Set {
        /// The full Redis key.
        key: String,
        /// The server name.
        server: Arc<str>,
        /// Milliseconds to live.
        ttl_ms: u64,
    },
    /// `DEL key`.
    Del {
        /// The full Redis key.
        key: String,
    },
    /// `PEXPIRE key ttl`: the last tunnel holding the id closed, so its
    /// TTL starts again from now (nothing to replay after an outage).
    Expire {
        /// The full Redis key.
        key: String,
        /// Milliseconds to live.
        ttl_ms: u64,
    },
}

/// Another instance as last seen in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its name.
    pub name: String,
    /// When (Unix ms) it last published its heartbeat.
    pub heartbeat_unix_ms: u64,
}

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL or password could not be used.
    #[error("[cluster] redis: {0}")]
    Url(#[from] redis::RedisError),
    /// `tls_ca_file` could not be read.
    #[error("[cluster] tls_ca_file {path}: {source}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// This instance's membership of a cluster: the Redis client, the queue of
/// stick writes, what was last read about the other instances.
pub struct Cluster {
    /// Settings from `[cluster]`.
    pub settings: ClusterSettings,
    /// This instance's name, resolved once the frontends are bound.
    instance: OnceLock<String>,
    /// The connection and its health.
    pub redis: RedisClient,
    /// Stick writes to the writer task; bounded so Redis trouble never grows memory.
    writes: mpsc::Sender<StickWrite>,
    /// The writer's end, taken when the instance starts.
    write_queue: Mutex<Option<mpsc::Receiver<StickWrite>>>,
    /// Writes that could not reach Redis (outage), latest per key, pushed on recovery.
    pending: Mutex<HashMap<String, (Arc<str>, u64)>>,
    /// Writes dropped because the queue was full or `pending` at its bound.
    pub dropped_writes: AtomicU64,
    /// Instances with a recent heartbeat, this one included, as of the last sync.
    instances: Mutex<Vec<InstanceInfo>>,
    /// The latest operator change per `backend/server` known to this
    /// instance, re-applied after a reload (which resets admin states to the config's).
    ops_state: Mutex<HashMap<String, ops::OpRecord>>,
    /// Where operator changes from the others are made (so `instance`
    /// drains a server another instance drained).
    changes: Changes,
    /// Operator changes made here that could not be published (outage), published on recovery.
    ops_pending: Mutex<Vec<ops::OpRecord>>,
    /// Signs what is written to Redis, checks what is read back, counts what is ignored.
    pub trust: Trust,
    /// The shared stick tables made by `share_tables` (weak: a table goes
    /// with the last snapshot and tunnel using it), whose ids held by open
    /// tunnels the refresh task keeps alive in Redis.
    tables: Mutex<Vec<std::sync::Weak<stick_table::SharedTable>>>,
    /// The latest record of each server added or deleted through the API
    /// (`backend/server`), as stored in Redis; bounded by `servers::MAX_SCANNED`.
    servers_known: Mutex<HashMap<String, servers::ServerRecord>>,
    /// Server changes made here that could not be published (outage), published on recovery.
    servers_pending: Mutex<Vec<servers::ServerRecord>>,
    /// Where received servers are applied (set by `start`).
    servers_sink: OnceLock<servers::ServerSink>,
}

impl Cluster {
    /// A cluster member for `settings`; nothing connects until `start`.
    /// A member of the cluster `settings` describes; operator changes from
    /// the others are made through `changes`.
    pub fn new(settings: ClusterSettings, changes: Changes) -> Result<Self, ClusterError> {
        let ca = match &settings.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ClusterError::CaFile {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let redis = RedisClient::new(&settings.redis, settings.password.as_deref(), ca, settings.timeout)?;
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let trust = Trust::new(settings.secret.as_deref());
        Ok(Self {
            trust,
            settings,
            instance: OnceLock::new(),
            redis,
            writes,
            write_queue: Mutex::new(Some(queue)),
            pending: Mutex::new(HashMap::new()),
            dropped_writes: AtomicU64::new(0),
            instances: Mutex::new(Vec::new()),
            ops_state: Mutex::new(HashMap::new()),
            ops_pending: Mutex::new(Vec::new()),
            changes,
            tables: Mutex::new(Vec::new()),
            servers_known: Mutex::new(HashMap::new()),
            servers_pending: Mutex::new(Vec::new()),
            servers_sink: OnceLock::new(),
        })
    }

    /// Fixes this instance's name: the configured one, else host name + `:` + `port`.
    pub fn resolve_instance(&self, port: u16) {
        let name = self
            .settings
            .instance
            .clone()
            .unwrap_or_else(|| format!("{}:{port}", host_name()));
        let _ = self.instance.set(name);
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        self.instance.get().map_or("tether", String::as_str)
    }

    /// A Redis key (or channel) under the configured prefix.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.settings.prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    /// This instance's member of the heartbeat set: its name, followed by
    /// `.` and the name's signature when values are signed.
    pub(crate) fn member(&self) -> String {
        let key = self.key(&["instances"]);
        match self
            .trust
            .mac(&[b"instance", key.as_bytes(), self.instance().as_bytes()])
        {
            Some(mac) => format!("{}.{mac}", self.instance()),
            None => self.instance().to_string(),
        }
    }

    /// The instance name a member of the heartbeat set stands for, if it can be trusted.
    pub(crate) fn member_name<'a>(&self, member: &'a str) -> Option<&'a str> {
        if member.len() > trust::MAX_NAME_LEN + 33 {
            return None;
        }
        if !self.trust.signs() {
            return Some(member);
        }
        let (name, mac) = member.rsplit_once('.')?;
        let key = self.key(&["instances"]);
        self.trust
            .verify(&[b"instance", key.as_bytes(), name.as_bytes()], mac)
            .then_some(name)
    }

    /// The value stored for stick key `key` (full Redis key) → `server`:
    /// the name, preceded by its signature and `.` when values are signed.
    pub(crate) fn stick_value(&self, key: &str, server: &str) -> String {
        match self.trust.mac(&[b"stick", key.as_bytes(), server.as_bytes()]) {
            Some(mac) => format!("{mac}.{server}"),
            None => server.to_string(),
        }
    }

    /// The server a stick value read from Redis names, if it can be trusted
    /// (signed when values are signed, a name of at most 256 bytes).
    pub(crate) fn stick_server<'a>(&self, key: &str, value: &'a str) -> Option<&'a str> {
        let server = if self.trust.signs() {
            let (mac, server) = value.split_once('.')?;
            if !self.trust.verify(&[b"stick", key.as_bytes(), server.as_bytes()], mac) {
                return None;
            }
            server
        } else {
            value
        };
        (!server.is_empty() && server.len() <= trust::MAX_NAME_LEN).then_some(server)
    }

    /// Instances with a recent heartbeat, as of the last sync.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        lock(&self.instances).clone()
    }

    /// Wraps every stick table of `snapshot` that is not shared yet in a
    /// Redis-shared table (tables carried over by a reload already are).
    pub fn share_tables(self: &Arc<Self>, snapshot: &mut Snapshot) {
        for backend in &mut snapshot.backends {
            let name = backend.name.clone();
            let Some(policy) = backend.sticky.as_mut() else {
                continue;
            };
            let Some(table) = policy.table.as_ref() else { continue };
            if table.is_shared() {
                continue;
            }
            let shared = Arc::new(stick_table::SharedTable::new(
                table.clone(),
                self.clone(),
                &name,
                policy.idle_timeout,
            ));
            lock(&self.tables).push(Arc::downgrade(&shared));
            policy.table = Some(shared);
        }
    }

    /// Queues a stick write for Redis without waiting: remembered for the
    /// resync while Redis is down, dropped (and counted) if the queue is full.
    pub(crate) fn write(&self, write: StickWrite) {
        if !self.redis.is_up() {
            self.remember(write);
            return;
        }
        if self.writes.try_send(write).is_err() {
            self.dropped_writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stick writes kept for the next recovery (for tests and stats).
    pub fn pending_writes(&self) -> usize {
        lock(&self.pending).len()
    }

    fn remember(&self, write: StickWrite) {
        let mut pending = lock(&self.pending);
        match write {
            StickWrite::Set { key, server, ttl_ms } => {
                if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
                    self.dropped_writes.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                pending.insert(key, (server, ttl_ms));
            }
            StickWrite::Del { key } => {
                pending.remove(&key);
            }
            // A pending SET, if any, carries a whole TTL already.
            StickWrite::Expire { .. } => {}
        }
    }

    /// The shared stick tables still in use (dropping those no longer).
    fn live_tables(&self) -> Vec<Arc<stick_table::SharedTable>> {
        let mut tables = lock(&self.tables);
        tables.retain(|t| t.strong_count() > 0);
        tables.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// Starts the background tasks (writer, load sync and heartbeat, operator
    /// changes and servers added through the API, resync on recovery); they
    /// stop when the returned guard drops. Servers the others add or delete
    /// are handed to `servers`.
    pub fn start(self: &Arc<Self>, snapshot: Arc<ArcSwap<Snapshot>>, servers: servers::ServerSink) -> TaskGuard {
        let _ = self.servers_sink.set(servers);
        let mut tasks = Vec::new();
        tasks.extend(self.redis.start());
        if let Some(queue) = lock(&self.write_queue).take() {
            tasks.push(tokio::spawn(writer(self.clone(), queue)));
        }
        tasks.push(tokio::spawn(load::sync_loop(self.clone(), snapshot.clone())));
        tasks.push(tokio::spawn(ops::subscribe_loop(self.clone(), snapshot.clone())));
        tasks.push(tokio::spawn(resync_loop(self.clone(), snapshot.clone())));
        tasks.push(tokio::spawn(held_loop(self.clone())));
        tracing::info!(instance = self.instance(), redis = %redacted(&self.settings.redis), "cluster mode: sharing state through Redis");
        TaskGuard(tasks)
    }

    /// Leaves the cluster at the end of a graceful stop: removes this
    /// instance's heartbeat and load counts so the others stop counting it
    /// at once rather than after three sync intervals. Best effort.
    pub async fn leave(&self, snapshot: &Snapshot) {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(self.key(&["instances"]))
            .arg(self.member())
            .ignore();
        for backend in &snapshot.backends {
            pipe.cmd("DEL")
                .arg(self.key(&["load", &backend.name, self.instance()]))
                .ignore();
        }
        if let Err(err) = self.redis.query::<()>(&pipe, self.redis.background_timeout()).await {
            tracing::debug!(cause = %err, "could not leave the cluster cleanly: the others forget this instance in 3 sync intervals");
        }
    }

    /// Pushes the stick entries remembered during an outage.
    async fn push_pending(&self) {
        let entries: Vec<(String, (Arc<str>, u64))> = lock(&self.pending).drain().collect();
        if entries.is_empty() {
            return;
        }
        let count = entries.len();
        for chunk in entries.chunks(512) {
            let mut pipe = redis::pipe();
            for (key, (server, ttl_ms)) in chunk {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(self.stick_value(key, server))
                    .arg("PX")
                    .arg(*ttl_ms)
                    .ignore();
            }
            if let Err(err) = self.redis.query::<()>(&pipe, self.redis.background_timeout()).await {
                tracing::debug!(cause = %err, "resync of stick entries failed: kept for the next recovery");
                for (key, (server, ttl_ms)) in chunk.iter().cloned() {
                    self.remember(StickWrite::Set { key, server, ttl_ms });
                }
                return;
            }
        }
        tracing::info!(entries = count, "stick entries learned during the Redis outage pushed");
    }
}

/// Aborts the cluster's tasks when dropped (the instance stopped).
pub struct TaskGuard(Vec<JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Sends queued stick writes to Redis in pipelines of up to 512.
async fn writer(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<StickWrite>) {
    let mut batch = Vec::with_capacity(512);
    while queue.recv_many(&mut batch, 512).await > 0 {
        let mut pipe = redis::pipe();
        for write in &batch {
            match write {
                StickWrite::Set { key, server, ttl_ms } => {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(cluster.stick_value(key, server))
                        .arg("PX")
                        .arg(*ttl_ms)
                        .ignore();
                }
                StickWrite::Del { key } => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                StickWrite::Expire { key, ttl_ms } => {
                    pipe.cmd("PEXPIRE").arg(key).arg(*ttl_ms).ignore();
                }
            }
        }
        let limit = cluster.redis.background_timeout();
        if let Err(err) = cluster.redis.query::<()>(&pipe, limit).await {
            tracing::debug!(cause = %err, writes = batch.len(), "stick writes not stored: kept for the resync");
            for write in batch.drain(..) {
                cluster.remember(write);
            }
        }
        batch.clear();
    }
}

/// On every recovery of Redis: pushes what was learned meanwhile, reads
/// the stored servers and operator state (changes made elsewhere during a
/// partition may never have reached this instance's subscription),
/// publishes the server and operator changes made here meanwhile (only
/// where they are newer than the stored ones) and stores again what a
/// restarted Redis lost. (The load sync re-publishes the counts by itself.)
async fn resync_loop(cluster: Arc<Cluster>, snapshot: Arc<ArcSwap<Snapshot>>) {
    loop {
        cluster.redis.recovered.notified().await;
        cluster.push_pending().await;
        servers::publish_pending(&cluster).await;
        if let Err(err) = cluster.read_servers().await {
            tracing::debug!(cause = %err, "servers not read after the recovery");
        }
        servers::restore(&cluster).await;
        if let Err(err) = cluster.read_state(&snapshot).await {
            tracing::debug!(cause = %err, "operator state not read after the recovery");
        }
        ops::publish_pending(&cluster).await;
        ops::restore_state(&cluster).await;
    }
}

/// Keeps the ids held by open tunnels alive in Redis: each shared table
/// refreshes their TTLs when due (a third of its `idle_timeout`); the task
/// wakes for the earliest, and at least every `sync_interval` for tables a
/// reload added.
async fn held_loop(cluster: Arc<Cluster>) {
    loop {
        let mut next = tokio::time::Instant::now() + cluster.settings.sync_interval;
        for table in cluster.live_tables() {
            next = next.min(table.refresh_held().await);
        }
        tokio::time::sleep_until(next).await;
    }
}

/// The host name, for the default instance name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tether".to_string())
}

/// The URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redacted("rediss://redis.example:6380"), "rediss://redis.example:6380");
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let settings = ClusterSettings {
            redis: "redis://127.0.0.1:6379".into(),
            password: None,
            tls_ca_file: None,
            instance: Some("a".into()),
            prefix: "tether:".into(),
            timeout: Duration::from_millis(50),
            sync_interval: Duration::from_secs(1),
            stick_refresh: Duration::from_secs(10),
            secret: None,
        };
        let cluster = Cluster::new(settings, Changes::unobserved()).expect("valid URL");
        cluster.resolve_instance(8080);
        assert_eq!(cluster.instance(), "a");
        assert_eq!(cluster.key(&["load", "web", "a"]), "tether:load:web:a");
    }
}
