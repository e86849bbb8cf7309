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

use super::{trust, Cluster};
use crate::snapshot::Snapshot;
use crate::state::{AdminState, Changes};
use crate::util::clock::unix_ms;
use crate::util::lock;

/// How long the subscriber waits before connecting again after losing Redis.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);
/// How often the subscribed connection is pinged (one tiny command per instance and second).
const PING_EVERY: Duration = Duration::from_secs(1);

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
    /// With `[cluster] secret`: the signature of the record without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl trust::SignedRecord for OpRecord {
    const MALFORMED: &'static str = "operator record";
    const FROM_THE_FUTURE: &'static str = "operator record from the future";
    const BAD_SIGNATURE: &'static str = "operator record signature";

    fn signature(&mut self) -> &mut Option<String> {
        &mut self.sig
    }

    fn at_unix_ms(&self) -> u64 {
        self.at_unix_ms
    }
}

impl OpRecord {
    /// The hash field of this record.
    fn field(&self) -> String {
        format!("{}/{}", self.backend, self.server)
    }
}

/// Stores a record only if the one stored for its server is not newer, and
/// publishes it only if stored: an instance coming back from a partition
/// never overwrites a change made meanwhile. A stored record stamped beyond
/// the allowed clock skew (`ARGV[4]`) counts as absent, so a forged
/// far-future one cannot block every later change; one that is not a
/// record is replaced. Returns the stored record when it wins, else nil.
/// KEYS[1] the hash; ARGV: field, record, its time, latest acceptable time, channel.
pub(crate) const STORE_IF_NEWER: &str = r#"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local ok, record = pcall(cjson.decode, stored)
  if ok and type(record) == 'table' and type(record.at_unix_ms) == 'number'
     and record.at_unix_ms <= tonumber(ARGV[4]) and record.at_unix_ms >= tonumber(ARGV[3]) then
    return stored
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return false
"#;

/// What became of a record sent to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored and published.
    Stored,
    /// Not stored: Redis holds a record for that server at least as recent.
    Superseded,
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
            sig: None,
        };
        lock(&self.ops_state).insert(record.field(), record.clone());
        let cluster = self.clone();
        tokio::spawn(async move {
            match cluster.publish(&record).await {
                Ok(Published::Stored) => {}
                Ok(Published::Superseded) => tracing::warn!(backend = %record.backend, server = %record.server,
                    "operator change not shared: Redis holds a more recent one for this server (clocks apart?), which wins at the next read"),
                Err(err) => {
                    tracing::warn!(backend = %record.backend, server = %record.server, cause = %err,
                        "operator change not shared yet (Redis unreachable): it will be when Redis is back");
                    lock(&cluster.ops_pending).push(record);
                }
            }
        });
    }

    /// Stores `record` in `<prefix>ops:state` and publishes it on
    /// `<prefix>ops`, unless Redis holds a record for that server at least
    /// as recent (compare-and-set in one Lua script).
    pub async fn publish(&self, record: &OpRecord) -> Result<Published, super::client::RedisCallError> {
        let value = self.encode(record);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(STORE_IF_NEWER)
            .arg(1)
            .arg(self.key(&["ops", "state"]))
            .arg(record.field())
            .arg(&value)
            .arg(record.at_unix_ms)
            .arg(trust::latest_acceptable(unix_ms()))
            .arg(self.key(&["ops"]));
        let (stored,): (Option<Vec<u8>>,) = self.redis.query(&pipe, self.redis.background_timeout()).await?;
        Ok(match stored {
            Some(_) => Published::Superseded,
            None => Published::Stored,
        })
    }

    /// `record` as stored and published: JSON, signed when values are signed.
    pub fn encode(&self, record: &OpRecord) -> String {
        self.trust.encode(b"ops", &self.key(&["ops", "state"]), record)
    }

    /// The record `bytes` (read from Redis) holds, if it can be trusted:
    /// at most 4 KiB of JSON, names of at most 256 bytes, a known admin
    /// state, a time within the allowed clock skew, signed when values are
    /// signed. Anything else is counted and ignored.
    pub fn decode(&self, bytes: &[u8]) -> Option<OpRecord> {
        self.trust
            .decode(b"ops", &self.key(&["ops", "state"]), bytes, |record: &OpRecord| {
                [&record.backend, &record.server, &record.by, &record.instance]
                    .iter()
                    .all(|n| n.len() <= trust::MAX_NAME_LEN)
                    && admin_state(&record.admin).is_some()
            })
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

    /// Records and applies `record` if it names a server of `snapshot` and
    /// is newer than what is known of that server. Records for servers this
    /// instance does not have are not kept (a reload adding the server
    /// reads them again from Redis), so Redis cannot grow the map.
    fn receive(&self, snapshot: &Snapshot, record: OpRecord) {
        let known_server = snapshot
            .backend(&record.backend)
            .is_some_and(|b| b.server_index.contains_key(record.server.as_str()));
        if !known_server {
            tracing::debug!(backend = %record.backend, server = %record.server,
                "operator change for a server this instance does not have: ignored");
            return;
        }
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

    /// Reads the stored operator state of this instance's servers (only
    /// those: `HMGET`, so a hash grown by someone else costs nothing) and
    /// applies what is newer than what is known. Returns how many were found.
    pub(crate) async fn read_state(
        &self,
        snapshot: &ArcSwap<Snapshot>,
    ) -> Result<usize, super::client::RedisCallError> {
        let snapshot = snapshot.load_full();
        let fields: Vec<String> = snapshot
            .backends
            .iter()
            .flat_map(|b| b.servers.iter().map(move |s| format!("{}/{}", b.name, s.name)))
            .collect();
        if fields.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(self.key(&["ops", "state"])).arg(&fields);
        let (stored,): (Vec<Option<Vec<u8>>>,) = self.redis.query(&pipe, self.redis.background_timeout()).await?;
        let mut count = 0;
        for (field, bytes) in fields.iter().zip(stored) {
            let Some(bytes) = bytes else { continue };
            count += 1;
            match self.decode(&bytes) {
                Some(record) if record.field() == *field => self.receive(&snapshot, record),
                Some(_) => self.trust.reject("operator record under another server's field"),
                None => {}
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
    if backend.servers[index].leaving {
        // Deleted through the API: it drains until it leaves, whatever the operator state says.
        return false;
    }
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
        let json = cluster.encode(record);
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
        if !latest {
            continue;
        }
        match cluster.publish(&record).await {
            Ok(Published::Stored) => {}
            Ok(Published::Superseded) => tracing::info!(backend = %record.backend, server = %record.server,
                "operator change made during the outage not shared: a more recent one was made meanwhile"),
            Err(_) => lock(&cluster.ops_pending).push(record),
        }
    }
}

/// Subscribes to the operator channel, reads the stored state on every
/// (re)connection, applies what others publish; reconnects when Redis goes
/// away, and also when the subscription stops answering a `PING` in time:
/// after a silent partition (no FIN, no RST, TCP keepalive off) a
/// subscribed connection would otherwise wait forever and hear nothing.
pub(crate) async fn subscribe_loop(cluster: Arc<Cluster>, snapshot: Arc<ArcSwap<Snapshot>>) {
    let channel = cluster.key(&["ops"]);
    loop {
        if let Err(err) = listen(&cluster, &snapshot, &channel).await {
            tracing::debug!(cause = %err, "operator channel lost: subscribing again");
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// How often the subscription is pinged, and how long its answer may take:
/// a dead subscription is renewed within about 2 s plus a reconnection.
fn ping_schedule(cluster: &Cluster) -> (Duration, Duration) {
    let deadline = cluster.redis.background_timeout().max(Duration::from_secs(1));
    (PING_EVERY, deadline)
}

/// One subscription, until it fails or stops answering.
async fn listen(
    cluster: &Cluster,
    snapshot: &ArcSwap<Snapshot>,
    channel: &str,
) -> Result<(), super::client::RedisCallError> {
    let (every, deadline) = ping_schedule(cluster);
    let servers = cluster.servers_channel();
    let (mut sink, mut messages) = cluster.redis.pubsub().await?.split();
    match tokio::time::timeout(deadline, sink.subscribe(&[channel, servers.as_str()])).await {
        Ok(result) => result?,
        Err(_) => return Err(super::client::RedisCallError::Timeout(deadline)),
    }
    // Subscribed first, then read: nothing published in between is missed.
    // Until that read succeeds (the other connection may be the one that is
    // dead now), it is tried again at every ping.
    let mut state_read = read_after_subscribing(cluster, snapshot).await;
    let mut ping = tokio::time::interval(every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                let payload: &[u8] = message.get_payload_bytes();
                if message.get_channel_name() == servers {
                    if let Some(record) = cluster.decode_server(payload) {
                        cluster.receive_server(snapshot, record).await;
                    }
                    continue;
                }
                let Some(record) = cluster.decode(payload) else { continue };
                if record.instance == cluster.instance() {
                    continue;
                }
                cluster.receive(&snapshot.load_full(), record);
            }
            _ = ping.tick() => {
                match tokio::time::timeout(deadline, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(err.into()),
                    Err(_) => return Err(super::client::RedisCallError::Timeout(deadline)),
                }
                if !state_read {
                    state_read = read_after_subscribing(cluster, snapshot).await;
                }
            }
        }
    }
}

/// Reads the stored servers, then the operator state (the servers' too),
/// once subscribed; whether it could.
async fn read_after_subscribing(cluster: &Cluster, snapshot: &ArcSwap<Snapshot>) -> bool {
    match cluster.read_servers().await {
        Ok(count) => tracing::debug!(records = count, "servers added through the API read from Redis"),
        Err(err) => {
            tracing::debug!(cause = %err, "servers not read yet: trying again at the next ping");
            return false;
        }
    }
    match cluster.read_state(snapshot).await {
        Ok(count) => {
            tracing::debug!(records = count, "operator state read from Redis");
            true
        }
        Err(err) => {
            tracing::debug!(cause = %err, "operator state not read yet: trying again at the next ping");
            false
        }
    }
}
