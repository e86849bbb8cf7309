//! Operator changes shared by every instance: a drain, enable, disable,
//! maint or weight change made through one instance's admin API is stored
//! in the hash `<prefix>ops:state` (field `backend/server`, so a starting
//! instance reads the latest of each) and published on the channel
//! `<prefix>ops`. Every instance applies what it receives the way its own
//! API would (`ServerState::set_admin`, the weight), without publishing it again.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::snapshot::Snapshot;
use crate::state::{AdminState, Changes};
use crate::util::clock::unix_ms;
use crate::util::lock;

/// How long the subscriber waits before connecting again after losing Redis.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

/// A server's operator state after a change, as stored and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// The backend's name.
    pub backend: String,
    /// The server's name.
    pub server: String,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// The weight.
    pub weight: u32,
    /// Who asked (the admin user, `-` without login).
    pub by: String,
    /// The instance whose API was asked.
    pub instance: String,
    /// When (Unix ms).
    pub at_unix_ms: u64,
}

impl OpRecord {
    /// The hash field of this record.
    fn field(&self) -> String {
        format!("{}/{}", self.backend, self.server)
    }
}

fn admin_state(name: &str) -> Option<AdminState> {
    match name {
        "ready" => Some(AdminState::Ready),
        "drain" => Some(AdminState::Drain),
        "maint" => Some(AdminState::Maint),
        _ => None,
    }
}

impl Cluster {
    /// Publishes the current operator state of `backend`/`server` (just
    /// changed through this instance's API by `user`) to the other
    /// instances, in the background.
    pub fn announce(self: &Arc<Self>, snapshot: &Snapshot, backend: &str, server: &str, user: &str) {
        let Some(state) = snapshot
            .backend(backend)
            .and_then(|b| b.server_index.get(server).map(|i| b.servers[*i].state.clone()))
        else {
            return;
        };
        let record = OpRecord {
            backend: backend.to_string(),
            server: server.to_string(),
            admin: state.admin().as_str().to_string(),
            weight: state.weight(),
            by: user.to_string(),
            instance: self.instance().to_string(),
            at_unix_ms: unix_ms(),
        };
        lock(&self.ops_state).insert(record.field(), record.clone());
        let cluster = self.clone();
        tokio::spawn(async move {
            if let Err(err) = cluster.publish(&record).await {
                tracing::warn!(backend = %record.backend, server = %record.server, cause = %err,
                    "operator change not shared yet (Redis unreachable): it will be when Redis is back");
                lock(&cluster.ops_pending).push(record);
            }
        });
    }

    async fn publish(&self, record: &OpRecord) -> Result<(), super::client::RedisCallError> {
        let json = serde_json::to_string(record).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.key(&["ops", "state"]))
            .arg(record.field())
            .arg(&json)
            .ignore();
        pipe.cmd("PUBLISH").arg(self.key(&["ops"])).arg(&json).ignore();
        self.redis.query::<()>(&pipe, self.redis.background_timeout()).await
    }

    /// The latest operator change known for `backend`/`server` (admin
    /// state and weight), which wins over the config's at a reload.
    pub fn operator_state(&self, backend: &str, server: &str) -> Option<(AdminState, u32)> {
        let known = lock(&self.ops_state);
        let record = known.get(&format!("{backend}/{server}"))?;
        Some((
            admin_state(&record.admin)?,
            record.weight.min(crate::config::MAX_WEIGHT),
        ))
    }

    /// Records and applies `record` if it is newer than what is known of its server.
    fn receive(&self, snapshot: &Snapshot, record: OpRecord) {
        {
            let mut known = lock(&self.ops_state);
            if known
                .get(&record.field())
                .is_some_and(|k| k.at_unix_ms > record.at_unix_ms)
            {
                return;
            }
            known.insert(record.field(), record.clone());
        }
        apply(snapshot, &record, &self.changes);
    }

    /// Reads the stored operator state and applies it.
    async fn read_state(&self, snapshot: &ArcSwap<Snapshot>) -> Result<usize, super::client::RedisCallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.key(&["ops", "state"]));
        let (stored,): (std::collections::HashMap<String, String>,) =
            self.redis.query(&pipe, self.redis.background_timeout()).await?;
        let snapshot = snapshot.load_full();
        let count = stored.len();
        for json in stored.values() {
            if let Ok(record) = serde_json::from_str::<OpRecord>(json) {
                self.receive(&snapshot, record);
            }
        }
        Ok(count)
    }
}

/// Applies one record to the servers of `snapshot` it names; returns whether anything changed.
pub fn apply(snapshot: &Snapshot, record: &OpRecord, changes: &Changes) -> bool {
    let Some(backend) = snapshot.backend(&record.backend) else {
        return false;
    };
    let Some(&index) = backend.server_index.get(record.server.as_str()) else {
        return false;
    };
    let Some(target) = admin_state(&record.admin) else {
        return false;
    };
    let state = &backend.servers[index].state;
    let admin_changed = changes.set_admin(state, target);
    let weight = record.weight.min(crate::config::MAX_WEIGHT);
    let before = state.set_weight(weight);
    let changed = admin_changed || before != weight;
    if changed {
        tracing::info!(
            backend = %record.backend,
            server = %record.server,
            state = target.as_str(),
            weight,
            user = %record.by,
            instance = %record.instance,
            "operator change from the cluster applied"
        );
    }
    changed
}

/// Stores again the operator changes this instance knows of whose field is
/// missing in Redis (`HSETNX`: a newer record stored meanwhile wins), so a
/// restarted or flushed Redis still gives a starting instance the state.
pub(crate) async fn restore_state(cluster: &Cluster) {
    let records: Vec<OpRecord> = lock(&cluster.ops_state).values().cloned().collect();
    if records.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for record in &records {
        let json = serde_json::to_string(record).unwrap_or_default();
        pipe.cmd("HSETNX")
            .arg(cluster.key(&["ops", "state"]))
            .arg(record.field())
            .arg(json)
            .ignore();
    }
    if let Err(err) = cluster
        .redis
        .query::<()>(&pipe, cluster.redis.background_timeout())
        .await
    {
        tracing::debug!(cause = %err, "operator state not restored in Redis");
    }
}

/// Publishes the changes made here while Redis was unreachable.
pub(crate) async fn publish_pending(cluster: &Cluster) {
    let pending: Vec<OpRecord> = std::mem::take(&mut *lock(&cluster.ops_pending));
    for record in pending {
        // Only the latest of each server matters; a newer one may have arrived meanwhile.
        let latest = lock(&cluster.ops_state).get(&record.field()) == Some(&record);
        if latest && cluster.publish(&record).await.is_err() {
            lock(&cluster.ops_pending).push(record);
        }
    }
}

/// Subscribes to the operator channel, reads the stored state on every
/// (re)connection, applies what others publish; reconnects when Redis goes away.
pub(crate) async fn subscribe_loop(cluster: Arc<Cluster>, snapshot: Arc<ArcSwap<Snapshot>>) {
    let channel = cluster.key(&["ops"]);
    loop {
        match cluster.redis.pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    // Subscribed first, then read: nothing published in between is missed.
                    match cluster.read_state(&snapshot).await {
                        Ok(count) => tracing::debug!(records = count, "operator state read from Redis"),
                        Err(err) => tracing::debug!(cause = %err, "operator state not read"),
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        let Ok(record) = serde_json::from_str::<OpRecord>(&payload) else {
                            tracing::debug!("ignoring an operator message that is not a tether record");
                            continue;
                        };
                        if record.instance == cluster.instance() {
                            continue;
                        }
                        cluster.receive(&snapshot.load_full(), record);
                    }
                }
                Err(err) => tracing::debug!(cause = %err, "cannot subscribe to the operator channel"),
            },
            Err(err) => tracing::debug!(cause = %err, "no pub/sub connection to Redis"),
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}
