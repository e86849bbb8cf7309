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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::MissedTickBehavior;

use super::{Cluster, InstanceInfo};
use crate::snapshot::Snapshot;
use crate::util::clock::unix_ms;
use crate::util::lock;

/// Heartbeats older than this many intervals mean the instance is gone.
const LIVE_INTERVALS: u32 = 3;
/// Every this many rounds the stored operator state is restored if Redis lost it.
const RESTORE_EVERY: u64 = 30;
/// Instances silent for this long are removed from the sorted set.
const FORGET_AFTER_MS: u64 = 3_600_000;

/// Publishes and reads load until the task is aborted.
pub(crate) async fn sync_loop(cluster: Arc<Cluster>, snapshot: Arc<ArcSwap<Snapshot>>) {
    let mut tick = tokio::time::interval(cluster.settings.sync_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tick.tick().await;
        round += 1;
        let snapshot = snapshot.load_full();
        let result = sync_once(&cluster, &snapshot).await;
        if result.is_ok() && round % RESTORE_EVERY == 0 {
            // A FLUSHALL does not disconnect anyone: repair the stored operator state now and then.
            super::ops::restore_state(&cluster).await;
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
pub(crate) async fn sync_once(cluster: &Cluster, snapshot: &Snapshot) -> Result<(), super::client::RedisCallError> {
    let me = cluster.instance();
    let now = unix_ms();
    let live_ms = cluster.settings.sync_interval.as_millis() as u64 * u64::from(LIVE_INTERVALS);
    let instances_key = cluster.key(&["instances"]);
    let limit = cluster.redis.background_timeout();

    let mut pipe = redis::pipe();
    pipe.cmd("ZADD").arg(&instances_key).arg(now).arg(me).ignore();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&instances_key)
        .arg("-inf")
        .arg(now.saturating_sub(FORGET_AFTER_MS))
        .ignore();
    for backend in snapshot.backends.iter().filter(|b| !b.servers.is_empty()) {
        let key = cluster.key(&["load", &backend.name, me]);
        let hset = pipe.cmd("HSET").arg(&key);
        for server in &backend.servers {
            hset.arg(&*server.name).arg(server.state.active());
        }
        hset.ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(live_ms).ignore();
    }
    pipe.cmd("ZRANGEBYSCORE")
        .arg(&instances_key)
        .arg(now.saturating_sub(live_ms))
        .arg("+inf")
        .arg("WITHSCORES");
    let (flat,): (Vec<String>,) = cluster.redis.query(&pipe, limit).await?;
    let instances: Vec<InstanceInfo> = flat
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, score] => Some(InstanceInfo {
                name: name.clone(),
                heartbeat_unix_ms: score.parse::<f64>().map_or(0, |s| s as u64),
            }),
            _ => None,
        })
        .collect();
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
            pipe.cmd("HGETALL").arg(cluster.key(&["load", &backend.name, other]));
        }
    }
    let counts: Vec<HashMap<String, u32>> = cluster.redis.query(&pipe, limit).await?;
    let mut results = counts.into_iter();
    for backend in backends {
        let mut sums: HashMap<&str, u32> = HashMap::new();
        for _ in &others {
            let Some(hash) = results.next() else { break };
            for server in &backend.servers {
                if let Some(count) = hash.get(&*server.name) {
                    let sum = sums.entry(&server.name).or_default();
                    *sum = sum.saturating_add(*count);
                }
            }
        }
        for server in &backend.servers {
            let remote = sums.get(&*server.name).copied().unwrap_or(0);
            server.state.remote_active.store(remote, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Forgets the other instances' counts (Redis unreachable or alone).
fn clear_remote(snapshot: &Snapshot) {
    for server in snapshot.backends.iter().flat_map(|b| &b.servers) {
        server.state.remote_active.store(0, Ordering::Relaxed);
    }
}
