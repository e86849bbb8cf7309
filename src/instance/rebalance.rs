//! The rebalance loop: once a round, for every backend with `rebalance`,
//! it reads the servers' counts (the cluster's too), notes when the set of
//! ready servers last changed, asks `crate::rebalance` what to shed, takes
//! the rate budget (in memory, or from Redis for the whole fleet), asks
//! the chosen tunnels to close with 1012 spread over the round, records
//! the round for the data path and the API, and logs one line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::MissedTickBehavior;

use crate::cluster::Cluster;
use crate::config::model::Rebalance;
use crate::rebalance::{allocate, oldest_sheddable, plan, Budget, LocalWindow, ServerLoad, TunnelAge};
use crate::snapshot::{Backend, Snapshot};
use crate::state::AdminState;
use crate::util::clock::{monotonic_ms, unix_ms};
use crate::ws::control::{close_spread, TunnelControl};
use crate::ws::frames::CloseCode;

/// A round's length alone: short enough that a rate of a few per second is
/// kept smoothly, long enough that the closes of one round have ended before the next.
const ROUND: Duration = Duration::from_secs(1);

/// Under a cluster, a round lasts this many sync intervals at least, so the
/// other instances' counts reflect their previous round's sheds (no
/// instance sheds what another one already did).
const ROUND_SYNCS: u32 = 3;

/// The share of a round its closes are spread over (the rest lets the last
/// ones finish before the next round counts).
const SPREAD_SHARE: f64 = 0.75;

/// Rounds start this long after a multiple of the round length in Unix
/// time, so every instance's rounds (and the sheds of a round) fall in the
/// same rate window.
const ROUND_OFFSET_MS: u64 = 50;

/// What the loop remembers of one backend between rounds.
#[derive(Default)]
struct Memory {
    /// The names of the ready servers at the last round.
    ready: Vec<Arc<str>>,
    /// When (`monotonic_ms`) that set last changed.
    changed_ms: u64,
    /// The last round was shedding.
    was_active: bool,
    /// The rate's window used alone (without a cluster, or while Redis is away).
    window: LocalWindow,
}

/// The length of a round: [`ROUND`], or [`ROUND_SYNCS`] sync intervals under a cluster.
pub(super) fn round_length(cluster: Option<&Cluster>) -> Duration {
    cluster.map_or(ROUND, |c| ROUND.max(c.settings.sync_interval * ROUND_SYNCS))
}

/// Runs rounds until the task is aborted.
pub(super) async fn rebalance_loop(snapshot: Arc<ArcSwap<Snapshot>>, cluster: Option<Arc<Cluster>>) {
    let round = round_length(cluster.as_deref());
    let round_ms = (round.as_millis() as u64).max(1);
    let to_boundary = (round_ms - unix_ms() % round_ms + ROUND_OFFSET_MS) % round_ms;
    let first = tokio::time::Instant::now() + Duration::from_millis(to_boundary);
    let mut tick = tokio::time::interval_at(first, round);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut memory: HashMap<Arc<str>, Memory> = HashMap::new();
    loop {
        tick.tick().await;
        let snapshot = snapshot.load_full();
        for backend in &snapshot.backends {
            let Some(settings) = backend.rebalance else {
                backend.rebalance_state.set_round(false, u32::MAX, Vec::new());
                continue;
            };
            let memory = memory.entry(backend.name.clone()).or_insert_with(|| Memory {
                changed_ms: monotonic_ms(),
                ..Memory::default()
            });
            run_round(backend, &settings, memory, cluster.as_deref(), round).await;
        }
        memory.retain(|name, _| snapshot.backend(name).is_some());
    }
}

/// Whether `server` of `backend` takes part in the mean: up, ready, weighted, staying.
fn is_ready(backend: &Backend, index: usize) -> bool {
    let server = &backend.servers[index];
    let state = &server.state;
    !server.leaving && state.is_up() && state.admin() == AdminState::Ready && state.weight() > 0
}

/// One round of one backend.
async fn run_round(
    backend: &Backend,
    settings: &Rebalance,
    memory: &mut Memory,
    cluster: Option<&Cluster>,
    round: Duration,
) {
    let now = monotonic_ms();
    let ready: Vec<bool> = (0..backend.servers.len()).map(|i| is_ready(backend, i)).collect();
    let mut names: Vec<Arc<str>> = backend
        .servers
        .iter()
        .zip(&ready)
        .filter(|(_, r)| **r)
        .map(|(s, _)| s.name.clone())
        .collect();
    names.sort();
    if names != memory.ready {
        memory.ready = names;
        memory.changed_ms = now;
    }
    let settled = now.saturating_sub(memory.changed_ms) >= settings.settle.as_millis() as u64;
    let tunnels: Vec<Vec<Arc<TunnelControl>>> = backend.servers.iter().map(|s| s.state.tunnel_controls()).collect();
    let ages: Vec<Vec<TunnelAge>> = tunnels
        .iter()
        .map(|controls| {
            controls
                .iter()
                .map(|c| TunnelAge {
                    opened_ms: c.opened_ms(),
                    moved: c.moved(),
                    closing: c.requested().is_some(),
                })
                .collect()
        })
        .collect();
    let loads: Vec<ServerLoad> = backend
        .servers
        .iter()
        .zip(&ready)
        .zip(&ages)
        .map(|((server, ready), ages)| {
            let closing = ages.iter().filter(|a| a.closing).count() as u32;
            ServerLoad {
                ready: *ready,
                local: server.state.active().saturating_sub(closing),
                remote: server.state.remote_active(),
                sheddable: ages.iter().filter(|a| a.sheddable(now, settings.settle)).count() as u32,
            }
        })
        .collect();
    let decision = plan(&loads, settings.max_skew, settled, memory.was_active);
    memory.was_active = decision.active;
    let over: Vec<Arc<str>> = decision.over.iter().map(|&i| backend.servers[i].name.clone()).collect();
    backend
        .rebalance_state
        .set_round(decision.active, decision.target_max, over);
    let wanted: u32 = decision.want.iter().sum();
    if !decision.active {
        return;
    }
    let budget = Budget::of(settings.rate, round);
    let granted = take_budget(backend, &budget, memory, cluster, wanted).await;
    let shares = allocate(&decision.want, granted);
    let mut chosen = Vec::new();
    for ((controls, ages), share) in tunnels.iter().zip(&ages).zip(&shares) {
        for index in oldest_sheddable(ages, now, settings.settle, *share) {
            chosen.push(controls[index].clone());
        }
    }
    let shed = chosen.len() as u64;
    backend.rebalance_state.count_shed(shed);
    let counts: Vec<String> = backend
        .servers
        .iter()
        .zip(&loads)
        .map(|(s, l)| format!("{}={}", s.name, l.local.saturating_add(l.remote)))
        .collect();
    tracing::info!(
        backend = %backend.name,
        before = %counts.join(" "),
        wanted,
        shed,
        target = decision.target_max,
        "rebalance round"
    );
    if !chosen.is_empty() {
        tokio::spawn(close_spread(
            chosen,
            CloseCode::ServiceRestart,
            round.mul_f64(SPREAD_SHARE),
            || true,
        ));
    }
}

/// The sheds this round may make: from the fleet's shared window in Redis
/// under a cluster, else (or while Redis does not answer, with the rate
/// split among the live instances) from this instance's own window.
async fn take_budget(
    backend: &Backend,
    budget: &Budget,
    memory: &mut Memory,
    cluster: Option<&Cluster>,
    wanted: u32,
) -> u32 {
    let now = unix_ms();
    let asked = wanted.min(budget.per_round);
    let Some(cluster) = cluster else {
        return memory.window.take(budget, now, asked);
    };
    let shared = cluster
        .take_rebalance_budget(&backend.name, budget.window(now), budget.window_ms, budget.limit, asked)
        .await;
    match shared {
        Some(granted) => granted,
        None => {
            let instances = cluster.live_instances() as u32;
            let alone = Budget {
                limit: budget.limit / instances,
                per_round: (budget.per_round / instances).max(1),
                ..*budget
            };
            memory.window.take(&alone, now, asked)
        }
    }
}
