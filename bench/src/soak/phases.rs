//! The four phases of the soak run. Each starts its own echo servers and
//! tether (and Redis) from scratch in its own directory, and tears them down
//! at the end, so a failure in one does not spill into the next.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::admin;
use super::checked::{ClientParams, Clients, Expectations, Stats};
use super::procs::{self, free_port, local, Bins, Proc};
use super::slowloris::{self, Attack};
use super::PhaseReport;

/// Scale and timing of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// WebSockets held in the reload, kill and Redis phases.
    pub sockets: usize,
    /// Reloads in the reload phase.
    pub reloads: usize,
    /// Time between two reloads.
    pub reload_interval: Duration,
    /// Each client sends one message this often.
    pub message_interval: Duration,
    /// Messages in flight per client at most.
    pub window: usize,
    /// Client lifetimes (normal close and reconnect) are drawn in this range.
    pub churn: (Duration, Duration),
    /// How long the load runs after a server is killed.
    pub after_kill: Duration,
    /// How long Redis stays down.
    pub redis_outage: Duration,
    /// Slowloris connections.
    pub slowloris: usize,
    /// Slowloris: one byte per connection this often.
    pub slowloris_byte_interval: Duration,
    /// Length of each probe measurement (before, during, after the attack).
    pub probe: Duration,
    /// How much the attacked p99 may exceed the unattacked one, in ms.
    pub slack_ms: f64,
    /// Where configs and logs go.
    pub out: PathBuf,
    /// The binaries.
    pub bins: Bins,
}

impl Settings {
    fn client_params(&self, addrs: Vec<SocketAddr>) -> ClientParams {
        ClientParams {
            addrs,
            interval: self.message_interval,
            window: self.window,
            stall: Duration::from_secs(5),
            churn: Some(self.churn),
            ramp_per_second: 500,
        }
    }

    fn open_limit(&self) -> Duration {
        Duration::from_secs(20 + self.sockets as u64 / 100)
    }
}

/// One echo server of a backend, as written in tether's configuration.
#[derive(Debug, Clone)]
struct ServerLine {
    name: String,
    addr: SocketAddr,
    weight: u32,
}

/// A tether configuration for the soak: one frontend, one `leastconn`
/// backend with WebSocket health checks and retries, the admin API, and
/// optionally a cluster.
#[derive(Debug, Clone)]
struct TetherConf {
    frontend: SocketAddr,
    admin: SocketAddr,
    servers: Vec<ServerLine>,
    drain_timeout: &'static str,
    drain_spread: &'static str,
    cluster: Option<(String, String)>,
}

impl TetherConf {
    fn new(servers: &[(String, SocketAddr)]) -> io::Result<TetherConf> {
        Ok(TetherConf {
            frontend: local(free_port()?),
            admin: local(free_port()?),
            servers: servers
                .iter()
                .map(|(name, addr)| ServerLine {
                    name: name.clone(),
                    addr: *addr,
                    weight: 1,
                })
                .collect(),
            drain_timeout: "500ms",
            drain_spread: "1s",
            cluster: None,
        })
    }

    fn render(&self) -> String {
        let mut t = String::from("# Written by the soak run (bench/src/bin/soak.rs).\nshutdown_grace = \"2s\"\n\n");
        t += &format!("[admin]\nbind = \"{}\"\n\n", self.admin);
        if let Some((redis, instance)) = &self.cluster {
            t += &format!("[cluster]\nredis = \"{redis}\"\ninstance = \"{instance}\"\nsync_interval = \"500ms\"\n\n");
        }
        t += &format!(
            "[[frontend]]\nname = \"soak\"\nbind = [\"{}\"]\ndefault_backend = \"echo\"\n\n",
            self.frontend
        );
        t += "[[backend]]\nname = \"echo\"\nbalance = \"leastconn\"\nretries = 2\n";
        t += &format!(
            "drain_timeout = \"{}\"\ndrain_spread = \"{}\"\n",
            self.drain_timeout, self.drain_spread
        );
        t += "timeouts = { connect = \"1s\", server = \"5s\", tunnel = \"1h\" }\n";
        t += "health = { check = \"websocket\", path = \"/health\", interval = \"500ms\", timeout = \"400ms\", rise = 2, fall = 2, observe = true }\n";
        for s in &self.servers {
            t += &format!(
                "\n[[backend.server]]\nname = \"{}\"\naddress = \"{}\"\nweight = {}\n",
                s.name, s.addr, s.weight
            );
        }
        t
    }

    /// Writes the file whole (a new file renamed over the old), so a reload
    /// never reads half of it.
    fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("toml.new");
        std::fs::write(&tmp, self.render())?;
        std::fs::rename(&tmp, path)
    }
}

/// Echo servers `names` on free ports.
async fn start_servers(s: &Settings, dir: &Path, names: &[&str]) -> io::Result<(Vec<Proc>, Vec<(String, SocketAddr)>)> {
    let mut procs = Vec::new();
    let mut addrs = Vec::new();
    for name in names {
        let addr = local(free_port()?);
        procs.push(procs::echo_server(&s.bins, dir, name, addr).await?);
        addrs.push(((*name).to_owned(), addr));
    }
    Ok((procs, addrs))
}

/// Starts tether on `conf` (written to `<dir>/<name>.toml`) and waits until
/// its `up` servers pass their health checks.
async fn start_tether(
    s: &Settings,
    dir: &Path,
    name: &str,
    conf: &TetherConf,
    up: usize,
) -> io::Result<(Proc, PathBuf)> {
    let path = dir.join(format!("{name}.toml"));
    conf.write(&path)?;
    let p = procs::tether(&s.bins, dir, name, &path, conf.frontend).await?;
    admin::wait_all_up(conf.admin, up, Duration::from_secs(10)).await?;
    Ok((p, path))
}

fn phase_dir(s: &Settings, name: &str) -> io::Result<PathBuf> {
    let dir = s.out.join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The traffic figures every load phase reports.
fn traffic_rows(r: &mut PhaseReport, st: &Stats, opened: bool, sockets: usize) {
    let g = Stats::get;
    r.check(
        "all sockets open at the start",
        if opened { format!("{sockets}") } else { "no".into() },
        &format!("{sockets}"),
        opened,
    );
    r.check(
        "failed handshakes",
        format!(
            "{} (of {})",
            g(&st.handshakes_failed),
            g(&st.handshakes_ok) + g(&st.handshakes_failed)
        ),
        "0",
        g(&st.handshakes_failed) == 0,
    );
    r.info(
        "messages sent / echoed intact",
        format!("{} / {}", g(&st.sent), g(&st.echoed)),
    );
    r.check("lost messages", g(&st.lost), "0", g(&st.lost) == 0);
    // Every message sent is echoed, lost, or was in flight at an expected close.
    let accounted = g(&st.echoed) + g(&st.lost) + g(&st.in_flight_at_expected_close);
    r.check(
        "messages unaccounted for (sent − echoed − lost − in flight at expected closes)",
        g(&st.sent) as i64 - accounted as i64,
        "0",
        g(&st.sent) == accounted,
    );
    r.check("reordered messages", g(&st.reordered), "0", g(&st.reordered) == 0);
    r.check("corrupted messages", g(&st.corrupted), "0", g(&st.corrupted) == 0);
    r.check(
        "tunnels closed unexpectedly (not by the client, not 1012 from a server taken away)",
        g(&st.unexpected_closes),
        "0",
        g(&st.unexpected_closes) == 0,
    );
    r.info("normal closes by clients (churn, end of run)", g(&st.client_closes));
    r.check(
        "traffic flowed",
        g(&st.echoed),
        "> 0",
        g(&st.echoed) > 0 && g(&st.sent) > 0,
    );
}

/// Successful and failed handshakes so far.
fn handshakes(st: &Stats) -> (u64, u64) {
    (Stats::get(&st.handshakes_ok), Stats::get(&st.handshakes_failed))
}

fn add_samples(r: &mut PhaseReport, st: &Stats) {
    if let Ok(samples) = st.samples.lock() {
        for s in samples.iter() {
            r.notes.push(s.clone());
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`), to read the timings against.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs a phase body; a setup error becomes a failed `setup` row.
async fn guarded<F>(mut r: PhaseReport, body: F) -> PhaseReport
where
    F: std::future::Future<Output = io::Result<PhaseReport>>,
{
    let load_before = load_average();
    let mut done = match body.await {
        Ok(done) => done,
        Err(e) => {
            r.check("setup", e.to_string(), "ok", false);
            r
        }
    };
    done.info(
        "machine load average (1 min) at the start / end of the phase",
        format!("{load_before} / {}", load_average()),
    );
    done
}

/// Reloads: `reloads` SIGHUPs after rewriting the file, alternately changing
/// the weights and adding or removing a fourth server, under steady traffic.
pub async fn reload(s: &Settings) -> PhaseReport {
    let r = PhaseReport::new("reload");
    guarded(r.clone(), reload_body(s, r)).await
}

async fn reload_body(s: &Settings, mut r: PhaseReport) -> io::Result<PhaseReport> {
    let started = Instant::now();
    let dir = phase_dir(s, "reload")?;
    let (_servers, addrs) = start_servers(s, &dir, &["s1", "s2", "s3", "s4"]).await?;
    let mut conf = TetherConf::new(&addrs[..3])?;
    let s4 = ServerLine {
        name: addrs[3].0.clone(),
        addr: addrs[3].1,
        weight: 1,
    };
    let (mut tether, path) = start_tether(s, &dir, "tether", &conf, 3).await?;
    let expect = Arc::new(Expectations::default());
    let clients = Clients::start(s.sockets, s.client_params(vec![conf.frontend]), Arc::clone(&expect));
    let opened = clients.wait_open(s.sockets as u64, s.open_limit()).await;
    sleep(Duration::from_secs(2)).await;

    let success = "tether_config_reloads_total{result=\"success\"}";
    let base = admin::metric(conf.admin, success).await.unwrap_or(0.0);
    let (mut adds, mut removes, mut weight_changes, mut unconfirmed) = (0, 0, 0, 0);
    for i in 1..=s.reloads {
        sleep(s.reload_interval).await;
        let mut removal = None;
        if i % 2 == 1 {
            for (k, server) in conf.servers.iter_mut().enumerate() {
                server.weight = 1 + ((i + k) % 4) as u32;
            }
            weight_changes += 1;
        } else if let Some(pos) = conf.servers.iter().position(|x| x.name == s4.name) {
            conf.servers.remove(pos);
            // From now on a 1012 from s4 to a client that connected before is expected.
            removal = Some(expect.begin(&s4.name));
            removes += 1;
        } else {
            conf.servers.push(s4.clone());
            adds += 1;
        }
        conf.write(&path)?;
        tether.signal(libc::SIGHUP)?;
        // Each reload is confirmed by the counter before the next one.
        let want = base + i as f64;
        let confirmed = admin::eventually(Duration::from_secs(5), || async {
            admin::metric(conf.admin, success).await.is_ok_and(|v| v >= want)
        })
        .await;
        if let Some(index) = removal {
            expect.applied(&s4.name, index);
        }
        if confirmed.is_none() {
            unconfirmed += 1;
            r.notes.push(format!(
                "reload {i}: not counted as a success within 5 s ({})",
                tether.log_tail()
            ));
        }
    }
    // Let the last drain finish and its clients reconnect.
    sleep(Duration::from_secs(3)).await;
    let alive = tether.alive();
    let done = admin::metric(conf.admin, success).await.unwrap_or(-1.0) - base;
    let failed = admin::metric(conf.admin, "tether_config_reloads_total{result=\"failure\"}")
        .await
        .unwrap_or(-1.0);
    let st = clients.stop(Duration::from_secs(15)).await;

    r.summary = format!(
        "{} WebSockets through tether to 3 echo servers (+ s4), {} reloads every {:?} ({weight_changes} weight changes, {adds} adds and {removes} removals of s4), {:.0} s",
        s.sockets,
        s.reloads,
        s.reload_interval,
        started.elapsed().as_secs_f64()
    );
    r.check(
        "reloads applied (tether_config_reloads_total success)",
        format!("{done:.0} (failure {failed:.0}, unconfirmed {unconfirmed})"),
        &format!("{}", s.reloads),
        done as usize == s.reloads && failed == 0.0 && unconfirmed == 0,
    );
    r.check("tether still running", alive, "true", alive);
    traffic_rows(&mut r, &st, opened, s.sockets);
    let expected = Stats::get(&st.expected_closes);
    r.info(
        "expected closes: 1012 from s4 after its removal (clients reconnected)",
        format!(
            "{expected} ({} message(s) in flight at the close; max {} ms after the removal)",
            Stats::get(&st.in_flight_at_expected_close),
            st.max_close_delay_ms().map_or("-".into(), |d| format!("{d:.0}"))
        ),
    );
    add_samples(&mut r, &st);
    Ok(r)
}

/// A server process SIGKILLed under load: each of its clients must get a
/// 1012 within a second, and new handshakes must not fail (retries).
pub async fn kill(s: &Settings) -> PhaseReport {
    let r = PhaseReport::new("kill");
    guarded(r.clone(), kill_body(s, r)).await
}

async fn kill_body(s: &Settings, mut r: PhaseReport) -> io::Result<PhaseReport> {
    let started = Instant::now();
    let dir = phase_dir(s, "kill")?;
    let (mut servers, addrs) = start_servers(s, &dir, &["s1", "s2", "s3"]).await?;
    let conf = TetherConf::new(&addrs)?;
    let (mut tether, _path) = start_tether(s, &dir, "tether", &conf, 3).await?;
    let expect = Arc::new(Expectations::default());
    let clients = Clients::start(s.sockets, s.client_params(vec![conf.frontend]), Arc::clone(&expect));
    let opened = clients.wait_open(s.sockets as u64, s.open_limit()).await;
    sleep(Duration::from_secs(3)).await;

    let victim = "s2";
    let on_victim = clients.stats.open_on(victim);
    let (ok_before, failed_before) = handshakes(&clients.stats);
    let taking = expect.begin(victim);
    servers[1].kill_now();
    expect.applied(victim, taking);
    let killed_at = Instant::now();
    let marked_down = admin::eventually(Duration::from_secs(5), || async {
        admin::server(conf.admin, victim).await.is_ok_and(|v| v["up"] == false)
    })
    .await;
    sleep(s.after_kill.saturating_sub(killed_at.elapsed())).await;
    let alive = tether.alive();
    let (ok_after, failed_after) = handshakes(&clients.stats);
    let st = clients.stop(Duration::from_secs(15)).await;

    r.summary = format!(
        "{} WebSockets over 3 echo server processes; s2 SIGKILLed, load kept {:?} after; retries = 2, health checks every 500 ms (fall 2, observe), {:.0} s",
        s.sockets,
        s.after_kill,
        started.elapsed().as_secs_f64()
    );
    r.check("tether still running", alive, "true", alive);
    let expected = Stats::get(&st.expected_closes) as i64;
    r.check(
        "clients of s2 at the kill / got Close 1012",
        format!("{on_victim} / {expected}"),
        "all",
        on_victim > 0 && expected == on_victim,
    );
    let max = st.max_close_delay_ms();
    r.check(
        "max delay kill → 1012 at the client",
        max.map_or("-".into(), |d| format!("{d:.1} ms")),
        "≤ 1000 ms",
        max.is_some_and(|d| d <= 1000.0),
    );
    r.info(
        "s2 marked down by tether after",
        marked_down.map_or("not within 5 s".into(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        }),
    );
    r.check(
        "handshakes after the kill (reconnects and churn): ok / failed",
        format!("{} / {}", ok_after - ok_before, failed_after - failed_before),
        "failed 0",
        failed_after == failed_before && ok_after > ok_before,
    );
    r.info(
        "messages in flight to s2 at the kill (cannot be echoed)",
        Stats::get(&st.in_flight_at_expected_close),
    );
    traffic_rows(&mut r, &st, opened, s.sockets);
    add_samples(&mut r, &st);
    Ok(r)
}

/// Redis killed and restarted (empty) under a two-instance cluster with load:
/// no handshake fails, and operator state is shared again afterwards.
pub async fn redis(s: &Settings) -> PhaseReport {
    let r = PhaseReport::new("redis");
    if s.bins.redis_server.is_none() {
        let mut r = r;
        r.summary = "two tether instances sharing one Redis".into();
        r.skipped = Some("redis-server is not installed (apt-get install redis-server), phase not run".into());
        return r;
    }
    guarded(r.clone(), redis_body(s, r)).await
}

async fn redis_up(admin_addr: SocketAddr, up: bool) -> bool {
    admin::get_json(admin_addr, "/api/v1/cluster")
        .await
        .is_ok_and(|v| v["redis_up"] == up)
}

async fn redis_body(s: &Settings, mut r: PhaseReport) -> io::Result<PhaseReport> {
    let started = Instant::now();
    let dir = phase_dir(s, "redis")?;
    let redis_port = free_port()?;
    let mut redis = procs::redis(&s.bins, &dir, redis_port, 1).await?;
    let url = format!("redis://127.0.0.1:{redis_port}");
    let (_servers, addrs) = start_servers(s, &dir, &["s1", "s2", "s3"]).await?;
    let mut conf_a = TetherConf::new(&addrs)?;
    // No drain closes during this phase: the drain below only has to be seen.
    conf_a.drain_timeout = "1h";
    let mut conf_b = conf_a.clone();
    conf_b.frontend = local(free_port()?);
    conf_b.admin = local(free_port()?);
    conf_a.cluster = Some((url.clone(), "soak-a".into()));
    conf_b.cluster = Some((url, "soak-b".into()));
    let (mut a, _) = start_tether(s, &dir, "tether-a", &conf_a, 3).await?;
    let (mut b, _) = start_tether(s, &dir, "tether-b", &conf_b, 3).await?;
    let both = admin::eventually(Duration::from_secs(10), || async {
        admin::get_json(conf_a.admin, "/api/v1/cluster")
            .await
            .is_ok_and(|v| v["instances"].as_array().is_some_and(|i| i.len() == 2))
    })
    .await;
    r.check(
        "cluster formed (A sees 2 instances)",
        both.is_some(),
        "true",
        both.is_some(),
    );

    let expect = Arc::new(Expectations::default());
    let params = s.client_params(vec![conf_a.frontend, conf_b.frontend]);
    let clients = Clients::start(s.sockets, params, expect);
    let opened = clients.wait_open(s.sockets as u64, s.open_limit()).await;
    sleep(Duration::from_secs(2)).await;

    let (ok_before, failed_before) = handshakes(&clients.stats);
    redis.kill_now();
    let down_at = Instant::now();
    let noticed = admin::eventually(Duration::from_secs(10), || async {
        !redis_up(conf_a.admin, true).await && !redis_up(conf_b.admin, true).await
    })
    .await;
    // An operator change made while Redis is away, through A.
    let (weight_status, _) = admin::request(
        conf_a.admin,
        "PUT",
        "/api/v1/backends/echo/servers/s1/weight",
        Some("{\"weight\": 3}"),
    )
    .await?;
    sleep(s.redis_outage.saturating_sub(down_at.elapsed())).await;
    // While Redis is away the change cannot reach B: checks that it really was away.
    let b_weight_during = admin::server(conf_b.admin, "s1").await.map(|v| v["weight"].clone());
    let (ok_outage, failed_outage) = handshakes(&clients.stats);
    let mut redis2 = procs::redis(&s.bins, &dir, redis_port, 2).await?;
    let back_at = Instant::now();
    let both_up = admin::eventually(Duration::from_secs(20), || async {
        redis_up(conf_a.admin, true).await && redis_up(conf_b.admin, true).await
    })
    .await;
    let weight_seen = admin::eventually(Duration::from_secs(10), || async {
        admin::server(conf_b.admin, "s1").await.is_ok_and(|v| v["weight"] == 3)
    })
    .await;
    let drain_at = Instant::now();
    let (drain_status, _) =
        admin::request(conf_a.admin, "POST", "/api/v1/backends/echo/servers/s3/drain", None).await?;
    let drain_seen = admin::eventually(Duration::from_secs(5), || async {
        admin::server(conf_b.admin, "s3")
            .await
            .is_ok_and(|v| v["admin"] == "drain")
    })
    .await
    .map(|_| drain_at.elapsed());
    sleep(Duration::from_secs(2)).await;
    let alive = a.alive() && b.alive() && redis2.alive();
    let st = clients.stop(Duration::from_secs(15)).await;

    r.summary = format!(
        "{} WebSockets over 2 tether instances (half each) sharing Redis; Redis SIGKILLed, restarted empty after {:?}, {:.0} s",
        s.sockets,
        s.redis_outage,
        started.elapsed().as_secs_f64()
    );
    r.check("tether A, B and Redis running at the end", alive, "true", alive);
    r.info(
        "Redis loss noticed by both (redis_up false) after",
        noticed.map_or("not within 10 s".into(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        }),
    );
    r.check(
        "weight change through A during the outage",
        format!("HTTP {weight_status}"),
        "200",
        weight_status == 200,
    );
    r.info(
        "handshakes during the outage: ok / failed",
        format!("{} / {}", ok_outage - ok_before, failed_outage - failed_before),
    );
    r.check(
        "s1's weight on B during the outage (the change via A cannot reach it)",
        match &b_weight_during {
            Ok(w) => w.to_string(),
            Err(e) => e.to_string(),
        },
        "1",
        b_weight_during.as_ref().is_ok_and(|w| *w == 1),
    );
    r.check(
        "Redis back seen by both (redis_up true) after the restart",
        both_up.map_or("not within 20 s".into(), |_| {
            format!("{:.1} s", back_at.elapsed().as_secs_f64())
        }),
        "≤ 20 s",
        both_up.is_some(),
    );
    r.check(
        "outage-time weight change (s1 = 3 via A) seen by B after Redis came back",
        weight_seen.map_or("not within 10 s".into(), |d| format!("after {:.1} s", d.as_secs_f64())),
        "≤ 10 s",
        weight_seen.is_some(),
    );
    r.check(
        "drain of s3 via A (after Redis came back) seen by B",
        match (drain_status, drain_seen) {
            (200, Some(d)) => format!("after {:.0} ms", d.as_secs_f64() * 1000.0),
            (200, None) => "not within 5 s".into(),
            (status, _) => format!("drain refused: HTTP {status}"),
        },
        "≤ 5 s",
        drain_status == 200 && drain_seen.is_some(),
    );
    traffic_rows(&mut r, &st, opened, s.sockets);
    add_samples(&mut r, &st);
    Ok(r)
}

/// Slowloris: `slowloris` connections sending header bytes slowly while one
/// normal client times WebSocket handshakes; before, during and after.
pub async fn slowloris(s: &Settings) -> PhaseReport {
    let r = PhaseReport::new("slowloris");
    guarded(r.clone(), slowloris_body(s, r)).await
}

async fn slowloris_body(s: &Settings, mut r: PhaseReport) -> io::Result<PhaseReport> {
    let started = Instant::now();
    let dir = phase_dir(s, "slowloris")?;
    let (_servers, addrs) = start_servers(s, &dir, &["s1", "s2", "s3"]).await?;
    let conf = TetherConf::new(&addrs)?;
    let (mut tether, _) = start_tether(s, &dir, "tether", &conf, 3).await?;
    let pause = Duration::from_millis(10);
    // Warm-up, not recorded.
    slowloris::probe(conf.frontend, Duration::from_secs(1), pause).await;
    let before = slowloris::probe(conf.frontend, s.probe, pause).await;

    let attack = Attack::start(conf.frontend, s.slowloris, s.slowloris_byte_interval);
    let target_open = (s.slowloris as i64) * 9 / 10;
    let ramp = admin::eventually(Duration::from_secs(20), || async {
        attack.stats.open.load(std::sync::atomic::Ordering::Relaxed) >= s.slowloris as i64
    })
    .await;
    let open_at_start = attack.stats.open.load(std::sync::atomic::Ordering::Relaxed);
    let during = slowloris::probe(conf.frontend, s.probe, pause).await;
    let open_at_end = attack.stats.open.load(std::sync::atomic::Ordering::Relaxed);
    let stats = Arc::clone(&attack.stats);
    attack.stop().await;
    sleep(Duration::from_secs(1)).await;
    let after = slowloris::probe(conf.frontend, s.probe, pause).await;
    let alive = tether.alive();

    r.summary = format!(
        "{} slowloris connections (one header byte every ~{:?} each) against one tether with 3 echo servers; probe: one client, sequential WebSocket handshake + echo + close, every 10 ms, {:?} per measurement, {:.0} s",
        s.slowloris,
        s.slowloris_byte_interval,
        s.probe,
        started.elapsed().as_secs_f64()
    );
    r.check("tether still running", alive, "true", alive);
    r.check(
        "slowloris connections open during the measurement (start / end)",
        format!(
            "{open_at_start} / {open_at_end}{}",
            if ramp.is_none() { " (ramp-up incomplete)" } else { "" }
        ),
        &format!("≥ {target_open}"),
        open_at_start >= target_open && open_at_end >= target_open,
    );
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    r.info(
        "slowloris connections closed by tether / longest held",
        format!(
            "{} / {:.1} s",
            g(&stats.closed_by_proxy),
            g(&stats.longest_held_ms) as f64 / 1000.0
        ),
    );
    for (label, p) in [("before", &before), ("during the attack", &during), ("after", &after)] {
        r.check(
            &format!("probe {label}: failed cycles"),
            format!(
                "{} (of {}){}",
                p.failed,
                p.ok + p.failed,
                p.first_error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            ),
            "0",
            p.failed == 0 && p.ok > 0,
        );
        r.info(
            &format!("probe {label}: p50 / p99 / max"),
            format!("{:.2} / {:.2} / {:.2} ms", p.ms(0.5), p.ms(0.99), p.ms(1.0)),
        );
    }
    let baseline = before.ms(0.99).max(after.ms(0.99));
    let attacked = during.ms(0.99);
    r.check(
        "p99 under attack vs unattacked (worse of before/after)",
        format!("{attacked:.2} ms vs {baseline:.2} ms ({:+.2} ms)", attacked - baseline),
        &format!("≤ +{:.1} ms", s.slack_ms),
        attacked <= baseline + s.slack_ms,
    );
    Ok(r)
}
