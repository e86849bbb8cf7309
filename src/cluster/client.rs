//! The Redis connection of a cluster member: one `ConnectionManager`
//! (multiplexed, pipelined, reconnecting by itself), every call bounded by a
//! timeout, and the "is Redis up" flag with its once-per-outage log lines.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, Pipeline};
use tokio::sync::Notify;

use crate::util::clock::monotonic_ms;

/// Least time between two replacements of the connection after timeouts.
const RENEW_AT_MOST_EVERY_MS: u64 = 1_000;

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

/// The connection to Redis and what is known about its health.
pub struct RedisClient {
    /// The parsed URL (address, TLS, password, database).
    client: redis::Client,
    /// Created when the instance starts running (it needs the runtime);
    /// lazy, so a Redis that is down at start costs nothing but a flag.
    /// Replaced by a new one when a background call times out: the manager
    /// reconnects by itself only when the connection reports an error, and
    /// after a silent partition (no FIN, no RST) it never does.
    manager: ArcSwapOption<ConnectionManager>,
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
    pub fn new(
        url: &str,
        password: Option<&str>,
        ca: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
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
        let client = match ca {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        Ok(Self {
            client,
            manager: ArcSwapOption::empty(),
            timeout,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            renewed_at: AtomicU64::new(0),
            recovered: Notify::new(),
        })
    }

    /// Creates the connection manager (inside the runtime). Idempotent.
    pub fn start(&self) {
        if self.manager.load().is_some() {
            return;
        }
        self.connect();
    }

    /// Sets up a new connection manager in place of the current one, if any.
    fn connect(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(manager) => self.manager.store(Some(Arc::new(manager))),
            Err(err) => {
                tracing::error!(cause = %err, "cannot set up the Redis connection: running without the cluster")
            }
        }
    }

    /// A separate connection for pub/sub (a subscribed connection can do nothing else).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisCallError> {
        let limit = self.background_timeout().max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.client.get_async_pubsub()).await {
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
                if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() || err.is_timeout() {
                    self.mark(false, Some(&err.to_string()));
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
