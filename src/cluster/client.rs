//! The Redis connection of a cluster member: one `ConnectionManager`
//! (multiplexed, pipelined, reconnecting by itself), every call bounded by a
//! timeout, and the "is Redis up" flag with its once-per-outage log lines.
//!
//! With `redis+sentinel://`, the master's address is asked of the sentinels
//! (`sentinel`) at every connection: a background task looks it up at start
//! and again whenever a call fails the way a dead or demoted master makes
//! it fail, and swaps in a connection manager to the master it names.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, RedisConnectionInfo, ServerErrorKind};
use tokio::sync::Notify;

use crate::config::sentinel_url::{parse_sentinel_url, SentinelUrl};
use crate::util::clock::monotonic_ms;

/// Least time between two replacements of the connection after timeouts.
const RENEW_AT_MOST_EVERY_MS: u64 = 1_000;
/// Bound of one question to the sentinels (the master's address and its
/// `ROLE` check), so a sentinel behind a silent partition cannot hold it.
const SENTINEL_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a lookup of the master, so failing calls ask the sentinels a few times a second at most.
const SENTINEL_LOOKUP_PAUSE: Duration = Duration::from_millis(200);

/// Why a Redis call did not give an answer. Never shown to a client: the
/// request goes on without Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisCallError {
    /// The call took longer than its timeout.
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    /// The connection has not been set up yet (the instance is not running).
    #[error("not connected to Redis yet")]
    NotStarted,
    /// Redis or the connection to it failed.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

/// Where the Redis server is.
enum Target {
    /// One address, from a `redis://` or `rediss://` URL (with TLS, password, database).
    Direct(Box<redis::Client>),
    /// Whichever server the sentinels name master now.
    Sentinel(Arc<Sentinels>),
}

/// The sentinels of a `redis+sentinel://` URL and the task that asks them.
struct Sentinels {
    /// The sentinels and the master's name; a lock because a lookup caches
    /// its connections to the sentinels (taken by the lookup task and by
    /// the pub/sub connection, never on a request's path).
    client: tokio::sync::Mutex<SentinelClient>,
    /// Wakes the lookup task: a call failed as if the master were gone.
    stale: Notify,
    /// The sentinels, for logs.
    shown: String,
}

impl Sentinels {
    /// A client for the master the sentinels name now (checked with `ROLE`).
    async fn master(&self) -> Result<redis::Client, RedisCallError> {
        let lookup = async { self.client.lock().await.async_get_client().await };
        match tokio::time::timeout(SENTINEL_LOOKUP_TIMEOUT, lookup).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisCallError::Timeout(SENTINEL_LOOKUP_TIMEOUT)),
        }
    }
}

/// The connection to Redis and what is known about its health.
pub struct RedisClient {
    /// Where Redis is: one address, or the sentinels' master.
    target: Target,
    /// Created when the instance starts running (it needs the runtime);
    /// lazy, so a Redis that is down at start costs nothing but a flag.
    /// Replaced by a new one when a background call times out: the manager
    /// reconnects by itself only when the connection reports an error, and
    /// after a silent partition (no FIN, no RST) it never does. With
    /// sentinels, replaced after every lookup of the master (a manager
    /// reconnects to the address it was made for, which after a failover is
    /// a dead or demoted server). Shared with the lookup task.
    manager: Arc<ArcSwapOption<ConnectionManager>>,
    /// Set by `start`, so a second call makes no second manager or lookup task.
    started: AtomicBool,
    /// Bound of calls a request waits for.
    pub(crate) timeout: Duration,
    /// Whether the last call or heartbeat succeeded (`tether_cluster_redis_up`).
    up: AtomicBool,
    /// Set once Redis answered at least once, so the first failure at start
    /// is logged as "unreachable" rather than as an outage.
    ever_up: AtomicBool,
    /// Outages seen since start (flips from up to down).
    pub(crate) outages: AtomicU64,
    /// When (monotonic ms) the connection was last replaced after a timeout.
    renewed_at: AtomicU64,
    /// Wakes the tasks that resynchronise when Redis comes back.
    pub(crate) recovered: Notify,
}

impl RedisClient {
    /// A client for `url` (already validated) with `password` overriding
    /// the URL's and `ca` (PEM) as the only trusted root for `rediss://`.
    /// A `redis+sentinel://` URL's password (or `password`) is the data
    /// nodes'; the sentinels are asked without one.
    pub fn new(
        url: &str,
        password: Option<&str>,
        ca: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        let target = match parse_sentinel_url(url) {
            Some(parsed) => {
                let parsed = parsed.map_err(|what| {
                    redis::RedisError::from((ErrorKind::InvalidClientConfig, "bad sentinel URL", what))
                })?;
                Target::Sentinel(Arc::new(sentinels(&parsed, password)?))
            }
            None => Target::Direct(Box::new(direct(url, password, ca)?)),
        };
        Ok(Self {
            target,
            manager: Arc::new(ArcSwapOption::empty()),
            started: AtomicBool::new(false),
            timeout,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            renewed_at: AtomicU64::new(0),
            recovered: Notify::new(),
        })
    }

    /// Creates the connection manager (inside the runtime), or with
    /// sentinels starts the task that looks up the master and makes it.
    /// Returns that task, if any. Idempotent.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        match &self.target {
            Target::Direct(client) => {
                install(&self.manager, (**client).clone());
                None
            }
            Target::Sentinel(sentinels) => Some(tokio::spawn(follow_master(sentinels.clone(), self.manager.clone()))),
        }
    }

    /// Sets up a new connection: a new manager for the same address, or
    /// with sentinels, a new lookup of the master.
    fn connect(&self) {
        match &self.target {
            Target::Direct(client) => install(&self.manager, (**client).clone()),
            Target::Sentinel(sentinels) => sentinels.stale.notify_one(),
        }
    }

    /// A separate connection for pub/sub (a subscribed connection can do
    /// nothing else); with sentinels, to the master they name now.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisCallError> {
        let limit = self.background_timeout().max(Duration::from_secs(1));
        let client = match &self.target {
            Target::Direct(client) => (**client).clone(),
            Target::Sentinel(sentinels) => sentinels.master().await?,
        };
        match tokio::time::timeout(limit, client.get_async_pubsub()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisCallError::Timeout(limit)),
        }
    }

    /// Whether Redis answered the last call.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The bound of background calls (heartbeat, writes, resync): a few
    /// request timeouts, so a loaded Redis is not declared down too eagerly.
    pub fn background_timeout(&self) -> Duration {
        (self.timeout * 4).max(Duration::from_millis(200))
    }

    /// Runs `pipe` within `limit`. A failure of the connection marks Redis down;
    /// a success marks it up.
    pub async fn query<T: FromRedisValue>(&self, pipe: &Pipeline, limit: Duration) -> Result<T, RedisCallError> {
        let Some(manager) = self.manager.load_full() else {
            return Err(RedisCallError::NotStarted);
        };
        let mut connection = (*manager).clone();
        match tokio::time::timeout(limit, pipe.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => {
                self.mark(true, None);
                Ok(value)
            }
            Ok(Err(err)) => {
                // READONLY: the server was demoted to a replica by a failover.
                let demoted = err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_timeout()
                    || demoted
                {
                    self.mark(false, Some(&err.to_string()));
                    if let Target::Sentinel(sentinels) = &self.target {
                        sentinels.stale.notify_one();
                    }
                }
                Err(err.into())
            }
            Err(_) => {
                if limit >= self.background_timeout() {
                    self.renew();
                }
                Err(RedisCallError::Timeout(limit))
            }
        }
    }

    /// Replaces the connection after a background call timed out, at most
    /// once a second: maybe Redis is slow, maybe nobody will ever answer on
    /// that connection again; a new one costs a reconnection at most.
    fn renew(&self) {
        let now = monotonic_ms().max(1);
        let last = self.renewed_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < RENEW_AT_MOST_EVERY_MS {
            return;
        }
        if self
            .renewed_at
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!("a Redis call timed out: connecting again");
            self.connect();
        }
    }

    /// Records whether Redis is reachable: the first failure of an outage is
    /// logged as a warning, the recovery as info (and wakes the resync).
    pub fn mark(&self, up: bool, cause: Option<&str>) {
        let was = self.up.swap(up, Ordering::AcqRel);
        if was == up {
            return;
        }
        if up {
            let first = !self.ever_up.swap(true, Ordering::AcqRel);
            if first {
                tracing::info!("connected to Redis: cluster state is shared");
            } else {
                tracing::info!("Redis is reachable again: resynchronising cluster state");
            }
            self.recovered.notify_waiters();
        } else {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                cause = cause.unwrap_or("no answer in time"),
                "Redis is unreachable: serving from the local stick table and hashing until it is back"
            );
        }
    }

    /// Called when Redis could not be reached before ever answering (logs once).
    pub fn mark_unreachable_at_start(&self, cause: &str) {
        if !self.ever_up.load(Ordering::Acquire) && self.outages.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                cause,
                "Redis is unreachable: serving from the local stick table and hashing until it is"
            );
        }
    }
}

/// The client for a `redis://` or `rediss://` URL.
fn direct(url: &str, password: Option<&str>, ca: Option<Vec<u8>>) -> Result<redis::Client, redis::RedisError> {
    if url.starts_with("rediss://") {
        // rustls needs one process-wide crypto provider; pick ring
        // explicitly (it fails to guess when several are compiled in).
        // An error means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut info: redis::ConnectionInfo = url.into_connection_info()?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    match ca {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => redis::Client::open(info),
    }
}

/// The sentinels of a parsed `redis+sentinel://` URL, asking for its
/// master with the URL's credentials and database (`password` wins).
fn sentinels(url: &SentinelUrl, password: Option<&str>) -> Result<Sentinels, redis::RedisError> {
    let mut node = RedisConnectionInfo::default().set_db(url.db);
    if let Some(user) = &url.username {
        node = node.set_username(user);
    }
    if let Some(password) = password.or(url.password.as_deref()) {
        node = node.set_password(password);
    }
    let client = SentinelClient::build(
        url.sentinels.clone(),
        url.master.clone(),
        Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
        SentinelServerType::Master,
    )?;
    let shown = url
        .sentinels
        .iter()
        .map(|(host, port)| format!("{host}:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(Sentinels {
        client: tokio::sync::Mutex::new(client),
        stale: Notify::new(),
        shown: format!("{shown}/{}", url.master),
    })
}

/// Puts a new lazy connection manager for `client` in `slot`.
fn install(slot: &ArcSwapOption<ConnectionManager>, client: redis::Client) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    match ConnectionManager::new_lazy_with_config(client, config) {
        Ok(manager) => slot.store(Some(Arc::new(manager))),
        Err(err) => {
            tracing::error!(cause = %err, "cannot set up the Redis connection: running without the cluster")
        }
    }
}

/// The lookup task of a `redis+sentinel://` cluster: asks the sentinels
/// for the master at start, then every time a call fails as if the master
/// were gone or demoted, and installs a connection manager to the server
/// they name (retrying while they still name a dead one: the failover
/// takes the sentinels' `down-after-milliseconds` and an election).
async fn follow_master(sentinels: Arc<Sentinels>, slot: Arc<ArcSwapOption<ConnectionManager>>) {
    let mut current: Option<String> = None;
    let mut failures = 0u32;
    loop {
        match sentinels.master().await {
            Ok(client) => {
                let address = client.get_connection_info().addr().to_string();
                if current.as_deref() != Some(address.as_str()) {
                    tracing::info!(master = %address, sentinels = %sentinels.shown, "Redis master found by the sentinels");
                }
                current = Some(address);
                failures = 0;
                install(&slot, client);
                tokio::time::sleep(SENTINEL_LOOKUP_PAUSE).await;
                sentinels.stale.notified().await;
            }
            Err(err) => {
                if failures == 0 {
                    tracing::warn!(cause = %err, sentinels = %sentinels.shown, "the sentinels name no reachable Redis master: asking again");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(SENTINEL_LOOKUP_PAUSE).await;
            }
        }
    }
}
