//! DNS discovery against a real DNS server (dnsmasq, started per test on a
//! free port): A records and SRV records become servers, records that come
//! and go add and drain servers, a DNS that fails or answers nothing keeps
//! the last known set (one warning), and written host names are looked up
//! again with `resolve_interval`. Servers listen on 127.0.0.2, 127.0.0.3, …

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use http::StatusCode;
use tether_test_support::*;

/// Every log line of this test binary (tests tell theirs apart by the DNS name in them).
fn logs() -> &'static Captured {
    captured_logs()
}

/// How many warnings "kept the last known servers" name `dns_name`.
fn keep_warnings(dns_name: &str) -> usize {
    logs()
        .text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("keeping the last known servers") && l.contains(dns_name))
        .count()
}

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// The servers of the first backend in force: `(name, address, weight)`.
fn servers(tether: &RunningTether) -> Vec<(String, SocketAddr, u32)> {
    let snapshot = tether.handle.snapshot();
    snapshot.backends[0]
        .servers
        .iter()
        .map(|s| (s.name.to_string(), s.address, s.configured_weight))
        .collect()
}

/// Waits until the first backend's server addresses are `expected` (in any order).
async fn wait_addresses(tether: &RunningTether, expected: &[SocketAddr]) {
    let mut expected = expected.to_vec();
    expected.sort();
    let reached = eventually(Duration::from_secs(5), async || {
        let mut now: Vec<SocketAddr> = servers(tether).into_iter().map(|s| s.1).collect();
        now.sort();
        now == expected
    })
    .await;
    assert!(
        reached.is_some(),
        "servers {:?}, expected {expected:?}",
        servers(tether)
    );
}

/// The servers `count` new WebSockets reach (they stay open, returned too).
async fn connect(addr: SocketAddr, count: usize) -> (Vec<String>, Vec<Ws>) {
    let mut names = Vec::new();
    let mut open = Vec::new();
    for _ in 0..count {
        let (ws, name) = ws_connect(addr, "/ws").await;
        names.push(name);
        open.push(ws);
    }
    (names, open)
}

fn at(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((loopback(last), port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_servers_that_join_and_leave_with_the_dns() {
    let (port, _fleet) = loopback_backends(&[2, 3, 4]).await;
    let mut dns = Dnsmasq::start(&[("127.0.0.2", "ws.internal"), ("127.0.0.3", "ws.internal")], &[]);
    let config = Config::over(
        pool()
            .balance("roundrobin")
            .discover_dns("ws.internal", port, "100ms")
            .drain_timeout("100ms")
            .drain_spread("100ms"),
    )
    .resolver(&[dns.addr()], "1s");
    let tether = start_tether(&config).await;
    wait_addresses(&tether, &[at(2, port), at(3, port)]).await;
    let names: Vec<String> = servers(&tether).into_iter().map(|s| s.0).collect();
    assert!(names.contains(&format!("pool-127.0.0.2-{port}")), "{names:?}");

    let (first, mut open) = connect(tether.addr, 4).await;
    assert_eq!(first.iter().filter(|n| *n == "b2").count(), 2, "{first:?}");
    assert_eq!(first.iter().filter(|n| *n == "b3").count(), 2, "{first:?}");

    // A record added: a server added, and used.
    dns.set_hosts(&[
        ("127.0.0.2", "ws.internal"),
        ("127.0.0.3", "ws.internal"),
        ("127.0.0.4", "ws.internal"),
    ]);
    wait_addresses(&tether, &[at(2, port), at(3, port), at(4, port)]).await;
    let (reached, _more) = connect(tether.addr, 6).await;
    assert_eq!(reached.iter().filter(|n| *n == "b4").count(), 2, "{reached:?}");

    // A record removed: its tunnels get 1012, it is gone, nobody new reaches it.
    dns.set_hosts(&[("127.0.0.3", "ws.internal"), ("127.0.0.4", "ws.internal")]);
    wait_addresses(&tether, &[at(3, port), at(4, port)]).await;
    for (ws, name) in open.iter_mut().zip(&first) {
        if name == "b2" {
            assert_eq!(
                close_code(ws, Duration::from_secs(5)).await,
                Some(1012),
                "a tunnel on the removed server"
            );
        }
    }
    let (after, _) = connect(tether.addr, 4).await;
    assert!(!after.iter().any(|n| n == "b2"), "{after:?}");
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights_and_only_the_best_priority_serves() {
    let b2 = backend("b2").start_on(at(2, 0)).await;
    let b3 = backend("b3").start_on(at(3, 0)).await;
    let b4 = backend("b4").start_on(at(4, 0)).await;
    let (p2, p3, p4) = (b2.addr.port(), b3.addr.port(), b4.addr.port());
    let srv = |target: &str, port: u16, priority: u16, weight: u16| SrvRecord {
        name: "_ws._tcp.srv.internal".to_string(),
        target: target.to_string(),
        port,
        priority,
        weight,
    };
    let hosts = [
        ("127.0.0.2", "ws2.srv.internal"),
        ("127.0.0.3", "ws3.srv.internal"),
        ("127.0.0.4", "ws4.srv.internal"),
    ];
    let mut dns = Dnsmasq::start(
        &hosts,
        &[
            srv("ws2.srv.internal", p2, 0, 1),
            srv("ws3.srv.internal", p3, 0, 3),
            srv("ws4.srv.internal", p4, 10, 5),
        ],
    );
    let config = Config::over(
        pool()
            .balance("roundrobin")
            .discover_srv("_ws._tcp.srv.internal", "100ms"),
    )
    .resolver(&[dns.addr()], "1s");
    let tether = start_tether(&config).await;
    wait_addresses(&tether, &[b2.addr, b3.addr]).await;
    let mut weights: Vec<(SocketAddr, u32)> = servers(&tether).into_iter().map(|s| (s.1, s.2)).collect();
    weights.sort();
    assert_eq!(
        weights,
        vec![(b2.addr, 1), (b3.addr, 3)],
        "SRV weights; the priority-10 record is a backup"
    );
    let (reached, _open) = connect(tether.addr, 8).await;
    assert_eq!(reached.iter().filter(|n| *n == "b2").count(), 2, "{reached:?}");
    assert_eq!(reached.iter().filter(|n| *n == "b3").count(), 6, "{reached:?}");

    // The best records gone, the backup serves.
    dns.set_srv(&[srv("ws4.srv.internal", p4, 10, 5)]);
    wait_addresses(&tether, &[b4.addr]).await;
    let (reached, _open) = connect(tether.addr, 2).await;
    assert_eq!(reached, vec!["b4", "b4"]);
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_empty_dns_keeps_the_servers_and_warns_once() {
    logs();
    let (port, _fleet) = loopback_backends(&[2]).await;
    // Before any answer the backend has no server: 503, not a crash.
    let mut dns = Dnsmasq::start(&[], &[]);
    let config = Config::over(pool().discover_dns("blink.internal", port, "100ms")).resolver(&[dns.addr()], "300ms");
    let tether = start_tether(&config).await;
    assert_eq!(get(tether.addr, "/").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        eventually(Duration::from_secs(3), async || keep_warnings("blink.internal") == 1)
            .await
            .is_some()
    );

    dns.set_hosts(&[("127.0.0.2", "blink.internal")]);
    wait_addresses(&tether, &[at(2, port)]).await;
    let (mut ws, _) = ws_connect(tether.addr, "/ws").await;

    // DNS down for a while: many lookups fail, the server stays, one warning.
    dns.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(servers(&tether).len(), 1, "a DNS failure never empties a backend");
    assert_eq!(keep_warnings("blink.internal"), 2, "one warning for the whole outage");
    assert_eq!(ws_connect(tether.addr, "/ws").await.1, "b2");

    // Back, then answering nothing for the name: kept again, one more warning.
    dns.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    dns.set_hosts(&[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(servers(&tether).len(), 1, "an empty answer never empties a backend");
    assert_eq!(keep_warnings("blink.internal"), 3);
    let logs = logs().text();
    assert!(logs.contains("DNS lookup answers again"), "recovery is logged");
    // The tunnel opened before the outage was never touched.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ws.next())
            .await
            .is_err(),
        "the tunnel opened before the outage is left alone"
    );
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_host_name_is_looked_up_again_with_resolve_interval() {
    let (port, _fleet) = loopback_backends(&[2, 3]).await;
    let mut dns = Dnsmasq::start(&[("127.0.0.2", "app.named.internal")], &[]);
    let config = Config::over(
        pool()
            .resolve_interval("100ms")
            .drain_timeout("100ms")
            .drain_spread("100ms")
            .server(Server::new("app", format!("app.named.internal:{port}"))),
    )
    .resolver(&[dns.addr()], "1s");
    let tether = start_tether(&config).await;
    wait_addresses(&tether, &[at(2, port)]).await;
    assert_eq!(servers(&tether)[0].0, "app", "the written name stays");
    let (mut ws, name) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(name, "b2");

    dns.set_hosts(&[("127.0.0.3", "app.named.internal")]);
    wait_addresses(&tether, &[at(3, port)]).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(1012),
        "the old address is drained"
    );
    assert_eq!(ws_connect(tether.addr, "/ws").await.1, "b3");
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_found_later_ramps_up_with_slowstart_and_a_reload_keeps_found_servers() {
    let (port, _fleet) = loopback_backends(&[2, 3]).await;
    let mut dns = Dnsmasq::start(&[("127.0.0.2", "ramp.internal")], &[]);
    let backend = pool()
        .balance("roundrobin")
        .slowstart("1h")
        .server_defaults_weight(100)
        .server_defaults_maxconn(50)
        .discover_dns("ramp.internal", port, "100ms");
    let config = Config::over(backend.clone()).resolver(&[dns.addr()], "1s");
    let tether = start_tether(&config).await;
    wait_addresses(&tether, &[at(2, port)]).await;
    dns.set_hosts(&[("127.0.0.2", "ramp.internal"), ("127.0.0.3", "ramp.internal")]);
    wait_addresses(&tether, &[at(2, port), at(3, port)]).await;
    let snapshot = tether.handle.snapshot();
    let joined = snapshot.backends[0]
        .servers
        .iter()
        .find(|s| s.address == at(3, port))
        .expect("the new server");
    assert_eq!(
        (joined.configured_weight, joined.maxconn),
        (100, Some(50)),
        "server_defaults"
    );
    let ramp = joined.state.effective_weight(Some(Duration::from_secs(3600)));
    assert!(
        ramp < 10,
        "a server found at run time starts its slow start: weight {ramp} of 100"
    );

    // A reload of the file keeps the found servers and their live state.
    tether.handle.reload(&config.parse()).expect("reload");
    let after = tether.handle.snapshot();
    assert_eq!(after.backends[0].servers.len(), 2, "found servers survive a reload");
    let carried = |snapshot: &tether::snapshot::Snapshot| {
        snapshot.backends[0]
            .servers
            .iter()
            .any(|s| std::sync::Arc::ptr_eq(&s.state, &joined.state))
    };
    assert!(carried(&after), "with their live state");
    // A reload that changes the lookup's interval (not what it asks) keeps them too.
    let slower = Config::over(backend.discover_dns("ramp.internal", port, "150ms")).resolver(&[dns.addr()], "1s");
    tether.handle.reload(&slower.parse()).expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = tether.handle.snapshot();
    assert_eq!(after.backends[0].servers.len(), 2);
    assert!(
        carried(&after),
        "a new interval neither drains nor re-adds the found servers"
    );
    tether.stop().await;
}

/// The new keys, as `tether check` reads them: errors at file:line:column.
#[test]
fn the_discovery_keys_are_checked_with_their_place() {
    let base = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"ws\"\n\n[[backend]]\nname = \"ws\"\n";
    let error = |extra: &str| match tether::config::parse(&format!("{base}{extra}"), "t.toml") {
        Err(tether::config::ConfigError::Invalid {
            line, column, message, ..
        }) => (line, column, message),
        other => panic!("expected an error for {extra:?}, got {other:?}"),
    };
    // `discover` alone, or with written servers, is fine.
    tether::config::parse(
        &format!("{base}discover = {{ dns = \"ws.internal\", port = 8200 }}\n"),
        "t.toml",
    )
    .expect("discover without written servers");
    tether::config::parse(
        &format!(
            "[resolver]\nnameservers = [\"127.0.0.1:5353\", \"10.0.0.2\"]\ntimeout = \"2s\"\n\n{base}\
             discover = {{ srv = \"_ws._tcp.ws.internal\", interval = \"5s\" }}\n\
             server_defaults = {{ maxconn = 1024, weight = 1 }}\n\
             [[backend.server]]\nname = \"w\"\naddress = \"127.0.0.1:8200\"\n"
        ),
        "t.toml",
    )
    .expect("the issue's example");
    let (line, column, message) = error("discover = { srv = \"_ws._tcp.ws.internal\", port = 8200 }\n");
    assert_eq!((line, column), (8, 51), "{message}");
    assert!(message.contains("`port` does not apply to `srv`"), "{message}");
    let (line, _, message) = error("discover = { dns = \"ws.internal\" }\n");
    assert_eq!(line, 8);
    assert!(message.contains("needs a `port`"), "{message}");
    let (_, _, message) = error("discover = { dns = \"a\", srv = \"b\", port = 1 }\n");
    assert!(message.contains("not both"), "{message}");
    let (line, _, message) =
        error("server_defaults = { weight = 2 }\n[[backend.server]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\n");
    assert_eq!(line, 8);
    assert!(message.contains("add `discover"), "{message}");
    let (line, _, message) = error("discover = { dns = \"a\", port = 1, interval = \"1ms\" }\n");
    assert_eq!(line, 8);
    assert!(message.contains("at least 100ms"), "{message}");
    let (line, _, message) = match tether::config::parse(
        &format!("[resolver]\nnameservers = [\"dns.example\"]\n{base}discover = {{ dns = \"a\", port = 1 }}\n"),
        "t.toml",
    ) {
        Err(tether::config::ConfigError::Invalid {
            line, column, message, ..
        }) => (line, column, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(line, 2);
    assert!(message.contains("not an IP address"), "{message}");
    let (_, _, message) = error("");
    assert!(
        message.contains("has no servers") && message.contains("discover"),
        "{message}"
    );
}
