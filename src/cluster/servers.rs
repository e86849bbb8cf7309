//! Servers added through the admin API, shared by every instance: each add
//! or delete made through one instance is a record in the hash
//! `<prefix>servers:state` (field `backend/server`, so an instance starting
//! later reads them all) and is published on the channel `<prefix>servers`
//! (on the operator changes' subscription). Every instance merges what it
//! receives into its own set (`dynamic::ApiServers::merge`: the latest
//! record wins) and applies it through its reload path.
//!
//! As for operator changes, what is read back is bounded and checked
//! (`trust`): at most `MAX_RECORD_LEN` bytes of JSON per record, the same
//! field checks as the API, a time within the clock skew, signed with
//! `[cluster] secret`; at most `MAX_SCANNED` records are read. A deleted
//! server's record stays (marked `deleted`) for `TOMBSTONE_KEEP_MS`, so an
//! older add cannot bring it back, then the first instance to read it
//! removes it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::ops::{Published, STORE_IF_NEWER};
use super::{trust, Cluster};
use crate::dynamic::{ApiServer, Entry, Phase, MAX_API_SERVERS, TOMBSTONE_KEEP_MS};
use crate::snapshot::Snapshot;
use crate::util::clock::unix_ms;
use crate::util::lock;

/// Most records read from the hash in one pass (live servers and recent deletes).
pub const MAX_SCANNED: usize = 2 * MAX_API_SERVERS;

/// Deletes a field only if it still holds the value read (a newer record
/// written meanwhile stays). KEYS[1] the hash; ARGV: field, value.
const DELETE_IF_SAME: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;

/// A hash field and its value, as `HSCAN` returns them.
type FieldValue = (Vec<u8>, Vec<u8>);

/// What applies received servers: `instance`'s merge into its set and its
/// reload path (given at start, so this module never sees the instance).
pub type ServerSink = Arc<dyn Fn(Vec<Entry>) + Send + Sync>;

/// A server added or deleted through one instance's API, as stored and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRecord {
    /// The server (backend, name, address, weight, maxconn, cookie).
    pub server: ApiServer,
    /// Deleted: every instance drains it and removes it once empty.
    pub deleted: bool,
    /// Who asked (the admin user, `-` without login).
    pub by: String,
    /// The instance whose API was asked.
    pub instance: String,
    /// When (Unix ms): the latest record of a server wins.
    pub at_unix_ms: u64,
    /// With `[cluster] secret`: the signature of the record without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl trust::SignedRecord for ServerRecord {
    const MALFORMED: &'static str = "server record";
    const FROM_THE_FUTURE: &'static str = "server record from the future";
    const BAD_SIGNATURE: &'static str = "server record signature";

    fn signature(&mut self) -> &mut Option<String> {
        &mut self.sig
    }

    fn at_unix_ms(&self) -> u64 {
        self.at_unix_ms
    }
}

impl ServerRecord {
    /// The hash field of this record.
    fn field(&self) -> String {
        format!("{}/{}", self.server.backend, self.server.name)
    }

    /// The entry it stands for.
    pub fn entry(&self) -> Entry {
        Entry {
            server: self.server.clone(),
            phase: if self.deleted { Phase::Deleting } else { Phase::Active },
            at_unix_ms: self.at_unix_ms,
        }
    }

    /// A deleted server's record old enough to be removed from Redis.
    fn expired(&self, now: u64) -> bool {
        self.deleted && self.at_unix_ms.saturating_add(TOMBSTONE_KEEP_MS) <= now
    }
}

impl Cluster {
    /// Shares an add or delete just made through this instance's API by
    /// `user` (`entry`: the server and its new phase) with the others, in
    /// the background; kept for later if Redis cannot be reached.
    pub fn share_server(self: &Arc<Self>, entry: &Entry, user: &str) {
        let record = ServerRecord {
            server: entry.server.clone(),
            deleted: entry.phase != Phase::Active,
            by: user.to_string(),
            instance: self.instance().to_string(),
            at_unix_ms: entry.at_unix_ms,
            sig: None,
        };
        lock(&self.servers_known).insert(record.field(), record.clone());
        let cluster = self.clone();
        tokio::spawn(async move {
            match cluster.publish_server(&record).await {
                Ok(Published::Stored) => {}
                Ok(Published::Superseded) => {
                    tracing::warn!(backend = %record.server.backend, server = %record.server.name,
                    "server change not shared: Redis holds a more recent one for this server, which wins at the next read")
                }
                Err(err) => {
                    tracing::warn!(backend = %record.server.backend, server = %record.server.name, cause = %err,
                        "server change not shared yet (Redis unreachable): it will be when Redis is back");
                    lock(&cluster.servers_pending).push(record);
                }
            }
        });
    }

    /// Stores `record` in `<prefix>servers:state` and publishes it on
    /// `<prefix>servers`, unless Redis holds a record for that server at
    /// least as recent.
    async fn publish_server(&self, record: &ServerRecord) -> Result<Published, super::client::RedisCallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(STORE_IF_NEWER)
            .arg(1)
            .arg(self.servers_key())
            .arg(record.field())
            .arg(self.encode_server(record))
            .arg(record.at_unix_ms)
            .arg(trust::latest_acceptable(unix_ms()))
            .arg(self.key(&["servers"]));
        let (stored,): (Option<Vec<u8>>,) = self.redis.query(&pipe, self.redis.background_timeout()).await?;
        Ok(match stored {
            Some(_) => Published::Superseded,
            None => Published::Stored,
        })
    }

    /// The hash of the servers' records.
    fn servers_key(&self) -> String {
        self.key(&["servers", "state"])
    }

    /// The channel servers are published on.
    pub(crate) fn servers_channel(&self) -> String {
        self.key(&["servers"])
    }

    /// `record` as stored and published: JSON, signed when values are signed.
    pub fn encode_server(&self, record: &ServerRecord) -> String {
        self.trust.encode(b"servers", &self.servers_key(), record)
    }

    /// The record `bytes` (read from Redis) holds, if it can be trusted: at
    /// most `MAX_RECORD_LEN` bytes of JSON, fields the API would accept,
    /// names of at most `MAX_NAME_LEN` bytes, a time within the clock skew,
    /// signed when values are signed. Anything else is counted and ignored.
    pub fn decode_server(&self, bytes: &[u8]) -> Option<ServerRecord> {
        self.trust
            .decode(b"servers", &self.servers_key(), bytes, |record: &ServerRecord| {
                record.server.check().is_ok()
                    && [&record.by, &record.instance]
                        .iter()
                        .all(|n| n.len() <= trust::MAX_NAME_LEN)
            })
    }

    /// Keeps `record` if it is newer than the one known for its server;
    /// returns whether it was.
    fn know(&self, record: &ServerRecord) -> bool {
        let mut known = lock(&self.servers_known);
        if known
            .get(&record.field())
            .is_some_and(|k| k.at_unix_ms >= record.at_unix_ms)
        {
            return false;
        }
        if known.len() >= MAX_SCANNED && !known.contains_key(&record.field()) {
            self.trust.reject("server record beyond the bound");
            return false;
        }
        known.insert(record.field(), record.clone());
        true
    }

    /// Applies a record another instance published (through the sink), then
    /// reads the operator states again: the new server's may be stored.
    pub(crate) async fn receive_server(&self, snapshot: &ArcSwap<Snapshot>, record: ServerRecord) {
        if record.instance == self.instance() || !self.know(&record) {
            return;
        }
        if let Some(sink) = self.servers_sink.get() {
            sink(vec![record.entry()]);
        }
        if !record.deleted {
            if let Err(err) = self.read_state(snapshot).await {
                tracing::debug!(cause = %err, "operator state not read after a server was added");
            }
        }
    }

    /// Reads every stored server record (up to `MAX_SCANNED`), applies those
    /// newer than what is known, and removes deletes older than
    /// `TOMBSTONE_KEEP_MS`. Returns how many records were read.
    pub(crate) async fn read_servers(&self) -> Result<usize, super::client::RedisCallError> {
        let key = self.servers_key();
        let mut cursor: u64 = 0;
        let mut read: Vec<FieldValue> = Vec::new();
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(256);
            let ((next, pairs),): ((u64, Vec<FieldValue>),) =
                self.redis.query(&pipe, self.redis.background_timeout()).await?;
            read.extend(pairs);
            cursor = next;
            if cursor == 0 {
                break;
            }
            if read.len() >= MAX_SCANNED {
                self.trust.reject("server records beyond the bound");
                break;
            }
        }
        read.truncate(MAX_SCANNED);
        let count = read.len();
        let now = unix_ms();
        lock(&self.servers_known).retain(|_, record| !record.expired(now));
        let mut entries = Vec::new();
        let mut expired = Vec::new();
        for (field, bytes) in read {
            let Some(record) = self.decode_server(&bytes) else {
                continue;
            };
            if record.field().as_bytes() != field.as_slice() {
                self.trust.reject("server record under another server's field");
                continue;
            }
            if record.expired(now) {
                expired.push((field, bytes));
                continue;
            }
            if self.know(&record) {
                entries.push(record.entry());
            }
        }
        if !entries.is_empty() {
            if let Some(sink) = self.servers_sink.get() {
                sink(entries);
            }
        }
        if !expired.is_empty() {
            let mut pipe = redis::pipe();
            for (field, bytes) in &expired {
                pipe.cmd("EVAL")
                    .arg(DELETE_IF_SAME)
                    .arg(1)
                    .arg(&key)
                    .arg(field)
                    .arg(bytes)
                    .ignore();
            }
            if let Err(err) = self.redis.query::<()>(&pipe, self.redis.background_timeout()).await {
                tracing::debug!(cause = %err, "old records of deleted servers not removed from Redis");
            }
        }
        Ok(count)
    }
}

/// Publishes the server changes made here while Redis was unreachable.
pub(crate) async fn publish_pending(cluster: &Cluster) {
    let pending: Vec<ServerRecord> = std::mem::take(&mut *lock(&cluster.servers_pending));
    for record in pending {
        // Only the latest of each server matters; a newer one may have arrived meanwhile.
        if lock(&cluster.servers_known).get(&record.field()) != Some(&record) {
            continue;
        }
        match cluster.publish_server(&record).await {
            Ok(_) => {}
            Err(_) => lock(&cluster.servers_pending).push(record),
        }
    }
}

/// Stores again the server records this instance knows of whose field is
/// missing in Redis (`HSETNX`: a newer record stored meanwhile wins), so a
/// restarted or flushed Redis still gives a starting instance the servers.
pub(crate) async fn restore(cluster: &Cluster) {
    let now = unix_ms();
    let records: Vec<ServerRecord> = lock(&cluster.servers_known)
        .values()
        .filter(|r| !r.expired(now))
        .cloned()
        .collect();
    if records.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for record in &records {
        pipe.cmd("HSETNX")
            .arg(cluster.servers_key())
            .arg(record.field())
            .arg(cluster.encode_server(record))
            .ignore();
    }
    if let Err(err) = cluster
        .redis
        .query::<()>(&pipe, cluster.redis.background_timeout())
        .await
    {
        tracing::debug!(cause = %err, "server records not restored in Redis");
    }
}
