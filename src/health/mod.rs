//! Health: active checks (TCP, HTTP, WebSocket handshake) on their own
//! tasks, the rise/fall state machine, and passive marking from failed
//! connects of live traffic.
//!
//! The pieces, each with one job: `machine` counts consecutive results and
//! says when a server flips (pure); `probe` runs one check (I/O only);
//! this module applies results to a server's live state, flipping it with
//! `Changes::set_up` (so `instance` closes the tunnels of a server gone
//! down) and logging each flip once; `Checkers` owns the checker tasks of
//! one instance (one per server) and replaces them on reload. It is handed
//! the servers to check (`BackendTargets`), never the snapshot.
//!
//! A server of a backend with checks starts down and its first check decides
//! at once (so it gets no traffic before a check passed, and does not wait
//! `rise` intervals for its first); after that `rise` and `fall` apply. A
//! server whose state carries over a reload keeps its up/down and counters.

mod probe;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::config::model;
use crate::state::{Changes, ServerState};
use crate::tls::UpstreamTls;
use crate::util::lock;
use crate::util::mix::SplitMix64;

use crate::proxy_header::ProxyVersion;
pub use crate::state::health::{CheckReport, FlipReport, HealthStatus};
pub use crate::state::machine::{Flip, Machine, Thresholds};
pub use probe::{check, CheckError, HttpProbe, Probe, Reach, BODY_LIMIT};

/// The health settings of one backend, resolved from the config with defaults.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// What a check does.
    pub probe: Probe,
    /// Time between the starts of two checks of one server, before jitter.
    pub interval: Duration,
    /// Limit of one check, connect included.
    pub timeout: Duration,
    /// Consecutive results that flip a server.
    pub thresholds: Thresholds,
    /// Failed connects of live traffic count toward `fall`.
    pub observe: bool,
    /// Checks start with the PROXY header of each server's `send_proxy` version.
    pub send_proxy: bool,
}

impl HealthCheck {
    /// The runtime settings of a validated `health` table.
    pub fn from_config(config: &model::Health) -> HealthCheck {
        HealthCheck {
            probe: config.check.clone(),
            interval: config.interval,
            timeout: config.timeout,
            thresholds: Thresholds {
                rise: config.rise,
                fall: config.fall,
            },
            observe: config.observe,
            send_proxy: config.send_proxy,
        }
    }
}

/// Names of a server for logs.
#[derive(Debug, Clone)]
struct Names {
    backend: Arc<str>,
    server: Arc<str>,
}

/// Applies one active check result to `state`; flips and logs if the machine says so.
fn record_check(
    names: &Names,
    state: &Arc<ServerState>,
    settings: &HealthCheck,
    outcome: Result<Duration, CheckError>,
    took: Duration,
    changes: &Changes,
) {
    let check = settings.probe.kind();
    let passed = outcome.is_ok();
    let failure = outcome.err().map(|err| err.to_string());
    state.check_durations.observe(took.as_secs_f64());
    let flipped = {
        let mut status = state.health_lock();
        status.governed = true;
        status.checks += 1;
        status.failed_checks += u64::from(!passed);
        status.last_check = Some(CheckReport {
            at: Instant::now(),
            latency: took,
            failure: failure.clone(),
        });
        let first = !status.machine.is_checked();
        let flip = status.machine.observe(state.is_up(), passed, settings.thresholds);
        if flip.is_some() {
            // A flip either way settles the tunnels: back up they stay, a flip down closes them.
            status.tunnels_kept = false;
        } else if status.tunnels_kept && !passed && !state.is_up() {
            // Down by passive detection, and the active check fails too: gone.
            status.tunnels_kept = false;
            changes.confirm_down(state);
        }
        flip.filter(|flip| changes.set_up(state, flip.is_up())).map(|flip| {
            let after = if first {
                1
            } else if flip.is_up() {
                status.machine.successes()
            } else {
                status.machine.failure_streak()
            };
            let cause = failure.clone().unwrap_or_else(|| "check passed".to_string());
            status.record_flip(flip, check, after, cause)
        })
    };
    match flipped {
        Some(report) => log_flip(names, &report),
        None => {
            if let Some(cause) = &failure {
                tracing::debug!(backend = %names.backend, server = %names.server, check, cause = %cause, "health check failed");
            }
        }
    }
}

fn log_flip(names: &Names, report: &FlipReport) {
    match report.flip {
        Flip::Down => tracing::warn!(
            backend = %names.backend,
            server = %names.server,
            check = report.check,
            cause = %report.cause,
            after = report.after,
            "server is down"
        ),
        Flip::Up => tracing::info!(
            backend = %names.backend,
            server = %names.server,
            check = report.check,
            cause = %report.cause,
            after = report.after,
            "server is up"
        ),
    }
}

/// Passive detection: a connect of live traffic to `server` failed. With
/// `observe` on, it counts toward `fall` and may take the server down at
/// once, for new traffic only: its tunnels stay open until an active check
/// fails too (failed connects may be a server under load, not a dead one;
/// a dead server's tunnels end by themselves, with 1012, when their
/// connections do).
pub fn connect_failed(
    backend: &Arc<str>,
    server: &Arc<str>,
    state: &Arc<ServerState>,
    settings: &HealthCheck,
    cause: &str,
    changes: &Changes,
) {
    if !settings.observe {
        return;
    }
    let flipped = {
        let mut status = state.health_lock();
        state.passive_pending.store(true, std::sync::atomic::Ordering::Release);
        let flip = status
            .machine
            .observe_passive_failure(state.is_up(), settings.thresholds);
        flip.filter(|_| changes.set_down_keeping_tunnels(state)).map(|flip| {
            status.tunnels_kept = true;
            let after = status.machine.failure_streak();
            status.record_flip(flip, "passive", after, cause.to_string())
        })
    };
    if let Some(report) = flipped {
        let names = Names {
            backend: backend.clone(),
            server: server.clone(),
        };
        log_flip(&names, &report);
    }
}

/// ±10 % of `interval`, `unit` in [0, 1): checks of many servers drift apart
/// instead of arriving at the same instant.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// A tiny generator per checker task, seeded from the server's names.
struct Jitter(SplitMix64);

impl Jitter {
    fn new(names: &Names) -> Self {
        use std::hash::{BuildHasher, RandomState};
        Jitter(SplitMix64::new(
            RandomState::new().hash_one((&*names.backend, &*names.server)),
        ))
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0.next_unit()
    }
}

/// Checks one server forever (until its task is aborted).
async fn watch_server(
    names: Names,
    address: SocketAddr,
    (tls, send_proxy): (Option<UpstreamTls>, Option<ProxyVersion>),
    state: Arc<ServerState>,
    settings: Arc<HealthCheck>,
    changes: Changes,
) {
    let mut jitter = Jitter::new(&names);
    // A server not checked yet is checked at once; the others start at a
    // random point of the interval, so a reload does not align them all.
    if state.health_lock().machine.is_checked() {
        tokio::time::sleep(settings.interval.mul_f64(jitter.unit())).await;
    }
    loop {
        let started = tokio::time::Instant::now();
        let reach = Reach {
            tls: tls.as_ref(),
            send_proxy: send_proxy.filter(|_| settings.send_proxy),
        };
        let outcome = check(&settings.probe, address, reach, settings.timeout).await;
        record_check(&names, &state, &settings, outcome, started.elapsed(), &changes);
        tokio::time::sleep_until(started + jittered(settings.interval, jitter.unit())).await;
    }
}

/// One server to check, as the checks see it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's name, for logs.
    pub name: Arc<str>,
    /// Where to connect.
    pub address: SocketAddr,
    /// TLS toward the server, if it is reached over TLS.
    pub tls: Option<UpstreamTls>,
    /// The server's `send_proxy` version (written by checks with `health.send_proxy`).
    pub send_proxy: Option<ProxyVersion>,
    /// Its live state, where results and flips are written.
    pub state: Arc<ServerState>,
}

/// The servers of one backend and its checks (`None`: not checked, so its
/// servers are released: up, and checked afresh if checks come back).
#[derive(Debug, Clone)]
pub struct BackendTargets {
    /// The backend's name, for logs.
    pub backend: Arc<str>,
    /// The backend's checks, if any.
    pub settings: Option<Arc<HealthCheck>>,
    /// Its servers.
    pub servers: Vec<Target>,
}

/// The checker tasks of one tether instance: one per server of every
/// backend with checks. Started by `Tether::run`, replaced on each reload,
/// stopped when the instance stops.
#[derive(Debug)]
pub struct Checkers {
    inner: Mutex<Generation>,
    /// Where flips are made and reported.
    changes: Changes,
}

/// The tasks of the snapshot in force.
#[derive(Debug, Default)]
struct Generation {
    /// Where to spawn; `None` until started and after stopping.
    runtime: Option<tokio::runtime::Handle>,
    tasks: Vec<JoinHandle<()>>,
}

impl Generation {
    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Stops the checkers when dropped (when `Tether::run` returns or is cancelled).
#[must_use = "the checkers stop when this is dropped"]
#[derive(Debug)]
pub struct Running<'a> {
    checkers: &'a Checkers,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.checkers.stop();
    }
}

impl Checkers {
    /// No checker running yet; flips go through `changes`.
    pub fn new(changes: Changes) -> Self {
        Self {
            inner: Mutex::default(),
            changes,
        }
    }

    /// Starts checking the servers `targets` lists, on the current runtime;
    /// they are checked until the returned guard drops. `targets` is called
    /// under the checkers' lock, so a concurrent reload cannot be missed.
    /// Must be called within a tokio runtime.
    pub fn start<'a>(&'a self, targets: impl FnOnce() -> Vec<BackendTargets>) -> Running<'a> {
        let mut generation = self.lock();
        generation.runtime = Some(tokio::runtime::Handle::current());
        spawn_generation(&mut generation, &targets(), &self.changes);
        Running { checkers: self }
    }

    /// After a reload: stops the previous tasks and starts checking
    /// `targets`. Does nothing if the instance is not running.
    pub fn refresh(&self, targets: impl FnOnce() -> Vec<BackendTargets>) {
        let mut generation = self.lock();
        if generation.runtime.is_some() {
            spawn_generation(&mut generation, &targets(), &self.changes);
        }
    }

    /// Stops every checker task.
    pub fn stop(&self) {
        let mut generation = self.lock();
        generation.runtime = None;
        generation.stop_tasks();
    }

    /// Checker tasks running now (one per checked server).
    pub fn running(&self) -> usize {
        self.lock().tasks.iter().filter(|t| !t.is_finished()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generation> {
        lock(&self.inner)
    }
}

fn spawn_generation(generation: &mut Generation, backends: &[BackendTargets], changes: &Changes) {
    generation.stop_tasks();
    let Some(runtime) = generation.runtime.clone() else {
        return;
    };
    for backend in backends {
        let Some(settings) = &backend.settings else {
            release_unchecked(backend);
            continue;
        };
        for server in &backend.servers {
            server.state.health_lock().governed = true;
            let names = Names {
                backend: backend.backend.clone(),
                server: server.name.clone(),
            };
            let task = watch_server(
                names,
                server.address,
                (server.tls.clone(), server.send_proxy),
                server.state.clone(),
                settings.clone(),
                changes.clone(),
            );
            generation.tasks.push(runtime.spawn(task));
        }
    }
}

/// Servers of a backend whose checks were removed by a reload are up again,
/// and a later check starts afresh.
fn release_unchecked(backend: &BackendTargets) {
    for server in &backend.servers {
        let mut status = server.state.health_lock();
        if !std::mem::replace(&mut status.governed, false) {
            continue;
        }
        status.machine.reset();
        // Going up calls for no action, so the plain setter does.
        if server.state.set_up(true) {
            let report = status.record_flip(
                Flip::Up,
                "none",
                0,
                "health checks removed from the backend".to_string(),
            );
            drop(status);
            let names = Names {
                backend: backend.backend.clone(),
                server: server.name.clone(),
            };
            log_flip(&names, &report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(2);
        assert_eq!(jittered(interval, 0.0), Duration::from_millis(1800));
        assert_eq!(jittered(interval, 0.5), interval);
        assert!(jittered(interval, 0.999_999) <= Duration::from_millis(2200));
        let names = Names {
            backend: "b".into(),
            server: "s".into(),
        };
        let mut jitter = Jitter::new(&names);
        let units: Vec<f64> = (0..1000).map(|_| jitter.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = units.iter().sum::<f64>() / units.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }

    fn settings(rise: u32, fall: u32, observe: bool) -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            thresholds: Thresholds { rise, fall },
            observe,
            send_proxy: false,
        }
    }

    fn failed() -> Result<Duration, CheckError> {
        Err(CheckError::Timeout(Duration::from_millis(500)))
    }

    #[test]
    fn a_new_checked_server_is_down_until_its_first_check_passes_then_rise_and_fall_apply() {
        let names = Names {
            backend: "b".into(),
            server: "s".into(),
        };
        let state = Arc::new(ServerState::awaiting_first_check(1));
        let changes = Changes::unobserved();
        let s = settings(3, 2, false);
        assert!(!state.is_up());
        record_check(&names, &state, &s, Ok(Duration::ZERO), Duration::ZERO, &changes);
        assert!(state.is_up(), "the first check decides at once despite rise = 3");
        assert_eq!(state.health().last_flip.map(|f| (f.flip, f.after)), Some((Flip::Up, 1)));
        record_check(&names, &state, &s, failed(), Duration::ZERO, &changes);
        assert!(state.is_up());
        record_check(&names, &state, &s, failed(), Duration::ZERO, &changes);
        assert!(!state.is_up());
        let flip = state.health().last_flip.unwrap();
        assert_eq!((flip.flip, flip.after, flip.check), (Flip::Down, 2, "tcp"));
        assert!(flip.cause.contains("no answer"), "{}", flip.cause);
        for _ in 0..2 {
            record_check(&names, &state, &s, Ok(Duration::ZERO), Duration::ZERO, &changes);
            assert!(!state.is_up());
        }
        record_check(&names, &state, &s, Ok(Duration::ZERO), Duration::ZERO, &changes);
        assert!(state.is_up());
        let health = state.health();
        assert_eq!((health.checks, health.failed_checks), (6, 2));
    }

    #[test]
    fn passive_failures_only_count_with_observe_and_a_good_connect_clears_them() {
        let (backend, server): (Arc<str>, Arc<str>) = ("b".into(), "s".into());
        let state = Arc::new(ServerState::new(1));
        let changes = Changes::unobserved();
        connect_failed(&backend, &server, &state, &settings(1, 2, false), "refused", &changes);
        connect_failed(&backend, &server, &state, &settings(1, 2, false), "refused", &changes);
        assert!(state.is_up(), "observe is off");
        let s = settings(1, 2, true);
        connect_failed(&backend, &server, &state, &s, "refused", &changes);
        state.connect_succeeded();
        connect_failed(&backend, &server, &state, &s, "refused", &changes);
        assert!(state.is_up(), "a good connect in between restarts the count");
        connect_failed(&backend, &server, &state, &s, "refused", &changes);
        assert!(!state.is_up());
        let flip = state.health().last_flip.unwrap();
        assert_eq!((flip.check, flip.after, flip.cause.as_str()), ("passive", 2, "refused"));
    }

    #[tokio::test]
    async fn a_checker_waits_about_one_interval_between_checks() {
        tokio::time::pause();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let state = Arc::new(ServerState::awaiting_first_check(1));
        let names = Names {
            backend: "b".into(),
            server: "s".into(),
        };
        let task = tokio::spawn(watch_server(
            names,
            address,
            (None, None),
            state.clone(),
            Arc::new(settings(1, 1, false)),
            Changes::unobserved(),
        ));
        // The first check runs at once; then one per interval ± 10 %.
        let mut seen = Vec::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.push(state.health().checks);
        }
        task.abort();
        assert!(seen[0] >= 1, "the first check is immediate: {seen:?}");
        // 4 s of checks at 0.9–1.1 s apart: 4 or 5 checks in all.
        let total = *seen.last().unwrap();
        assert!((4..=5).contains(&total), "{total} checks in 4s: {seen:?}");
        assert!(!state.is_up());
    }
}
