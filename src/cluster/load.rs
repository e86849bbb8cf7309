//! Cluster-wide connection counts. Every `sync_interval` each instance:
//!
//! 1. writes its heartbeat in the sorted set `<prefix>instances` (score: Unix ms),
//! 2. writes its per-server active counts in one hash per backend,
//!    `<prefix>load:<backend>:<instance>` (server → count), expiring after
//!    three intervals so a dead instance's counts vanish by themselves,
//! 3. reads the other live instances' hashes (no `KEYS`: the sorted set
//!    names them) and stores their sums in `ServerState::remote_active`.
//!
//! `leastconn` and `random` then decide on the cluster's total (the others'
//! counts as of the last sync plus this instance's live count). While Redis
//! cannot be reached the remote counts are zeroed: each instance balances
//! its own connections, as it would alone.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::MissedTickBehavior;

use super::trust::{self, MAX_INSTANCES};
use super::{Cluster, InstanceInfo};
use crate::snapshot::Snapshot;
use crate::util::clock::unix_ms;
use crate::util::lock;

/// Heartbeats older than this many intervals mean the instance is gone.
const LIVE_INTERVALS: u32 = 3;
/// Every this many rounds the stored servers and operator state are restored if Redis lost them.
const RESTORE_EVERY: u64 = 30;
/// Every this many rounds the stored servers and operator state are read
/// again, in case a published change never reached this instance (a partition).
const REREAD_EVERY: u64 = 5;
/// Instances silent for this long are removed from the sorted set.
const FORGET_AFTER_MS: u64 = 3_600_000;

/// Publishes and reads load until the task is aborted.
pub(crate) async fn sync_loop(cluster: Arc<Cluster>, snapshot_source: Arc<ArcSwap<Snapshot>>) {
    let mut tick = tokio::time::interval(cluster.settings.sync_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tick.tick().await;
        round += 1;
        let snapshot = snapshot_source.load_full();
        let result = sync_once(&cluster, &snapshot).await;
        if result.is_ok() && round % REREAD_EVERY == 0 {
            if let Err(err) = cluster.read_servers().await {
                tracing::debug!(cause = %err, "servers not read again");
            }
            if let Err(err) = cluster.read_state(&snapshot_source).await {
                tracing::debug!(cause = %err, "operator state not read again");
            }
        }
        if result.is_ok() && round % RESTORE_EVERY == 0 {
            // A FLUSHALL does not disconnect anyone: repair the stored operator state now and then.
            super::ops::restore_state(&cluster).await;
            super::servers::restore(&cluster).await;
        }
        if let Err(err) = result {
            // The first failure of an outage is logged by `mark`; a plain
            // timeout is an outage too for the heartbeat.
            cluster.redis.mark(false, Some(&err.to_string()));
            cluster.redis.mark_unreachable_at_start(&err.to_string());
            clear_remote(&snapshot);
        }
    }
}

/// One round: heartbeat, own counts, the others' counts.
///
/// What is read back is bounded: members of the heartbeat set with a
/// timestamp beyond the allowed clock skew, with an unverifiable signature
/// or beyond the first [`MAX_INSTANCES`] are ignored, and only the fields of
/// this instance's own servers are read from each load hash (`HMGET`), each
/// parsed on its own, so one bad field costs that field only.
pub(crate) async fn sync_once(cluster: &Cluster, snapshot: &Snapshot) -> Result<(), super::client::RedisCallError> {
    let me = cluster.instance();
    let now = unix_ms();
    let live_ms = cluster.settings.sync_interval.as_millis() as u64 * u64::from(LIVE_INTERVALS);
    let instances_key = cluster.key(&["instances"]);
    let limit = cluster.redis.background_timeout();

    let mut pipe = redis::pipe();
    pipe.cmd("ZADD")
        .arg(&instances_key)
        .arg(now)
        .arg(cluster.member())
        .ignore();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&instances_key)
        .arg("-inf")
        .arg(now.saturating_sub(FORGET_AFTER_MS))
        .ignore();
    for backend in snapshot.backends.iter().filter(|b| !b.servers.is_empty()) {
        let key = cluster.key(&["load", &backend.name, me]);
        let hset = pipe.cmd("HSET").arg(&key);
        for server in &backend.servers {
            let count = server.state.active().to_string();
            hset.arg(&*server.name)
                .arg(load_value(cluster, &key, &server.name, &count));
        }
        hset.ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(live_ms).ignore();
    }
    // Newest first, a bounded number: a flood of fake members costs at most this much.
    pipe.cmd("ZREVRANGEBYSCORE")
        .arg(&instances_key)
        .arg(trust::latest_acceptable(now))
        .arg(now.saturating_sub(live_ms))
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(4 * MAX_INSTANCES);
    let (flat,): (Vec<redis::Value>,) = cluster.redis.query(&pipe, limit).await?;
    let mut instances: Vec<InstanceInfo> = Vec::new();
    for pair in flat.chunks(2) {
        let [member, score] = pair else { continue };
        let (Ok(member), Ok(score)) = (
            redis::from_redis_value_ref::<String>(member),
            redis::from_redis_value_ref::<f64>(score),
        ) else {
            cluster.trust.reject("heartbeat member");
            continue;
        };
        let Some(name) = cluster.member_name(&member) else {
            cluster.trust.reject("heartbeat member");
            continue;
        };
        if instances.len() >= MAX_INSTANCES {
            cluster.trust.reject("heartbeat beyond the instance limit");
            break;
        }
        if instances.iter().any(|i| i.name == name) {
            continue;
        }
        instances.push(InstanceInfo {
            name: name.to_string(),
            heartbeat_unix_ms: score as u64,
        });
    }
    if !instances.iter().any(|i| i.name == me) {
        // Crowded out of the bounded read (or not stored): it is alive all the same.
        instances.truncate(MAX_INSTANCES.saturating_sub(1));
        instances.push(InstanceInfo {
            name: me.to_string(),
            heartbeat_unix_ms: now,
        });
    }
    instances.sort_by(|a, b| a.name.cmp(&b.name));
    let others: Vec<&str> = instances.iter().map(|i| i.name.as_str()).filter(|n| *n != me).collect();
    *lock(&cluster.instances) = instances.clone();

    let backends: Vec<_> = snapshot.backends.iter().filter(|b| !b.servers.is_empty()).collect();
    if others.is_empty() || backends.is_empty() {
        clear_remote(snapshot);
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for backend in &backends {
        for other in &others {
            let get = pipe.cmd("HMGET").arg(cluster.key(&["load", &backend.name, other]));
            for server in &backend.servers {
                get.arg(&*server.name);
            }
        }
    }
    // Bytes, not strings: a value that is not UTF-8 is one bad field, not a failed read.
    let counts: Vec<Vec<Option<Vec<u8>>>> = cluster.redis.query(&pipe, limit).await?;
    let mut results = counts.into_iter();
    for backend in backends {
        let mut sums = vec![0u32; backend.servers.len()];
        for other in &others {
            let Some(values) = results.next() else { break };
            let key = cluster.key(&["load", &backend.name, other]);
            for ((server, value), sum) in backend.servers.iter().zip(values).zip(sums.iter_mut()) {
                let Some(value) = value else { continue };
                let value = std::str::from_utf8(&value).unwrap_or("");
                match load_count(cluster, &key, &server.name, value) {
                    Some(count) => *sum = sum.saturating_add(count),
                    None => cluster.trust.reject("load count"),
                }
            }
        }
        for (server, remote) in backend.servers.iter().zip(sums) {
            server.state.remote_active.store(remote, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// A count as stored in a load hash: the number, followed by `.` and its
/// signature when values are signed.
fn load_value(cluster: &Cluster, key: &str, server: &str, count: &str) -> String {
    match cluster
        .trust
        .mac(&[b"load", key.as_bytes(), server.as_bytes(), count.as_bytes()])
    {
        Some(mac) => format!("{count}.{mac}"),
        None => count.to_string(),
    }
}

/// The count a load hash field holds, if it is a number (signed when values are signed).
fn load_count(cluster: &Cluster, key: &str, server: &str, value: &str) -> Option<u32> {
    let count = if cluster.trust.signs() {
        let (count, mac) = value.split_once('.')?;
        if !cluster
            .trust
            .verify(&[b"load", key.as_bytes(), server.as_bytes(), count.as_bytes()], mac)
        {
            return None;
        }
        count
    } else {
        value
    };
    count.parse::<u32>().ok()
}

/// Forgets the other instances' counts (Redis unreachable or alone).
fn clear_remote(snapshot: &Snapshot) {
    for server in snapshot.backends.iter().flat_map(|b| &b.servers) {
        server.state.remote_active.store(0, Ordering::Relaxed);
    }
}
