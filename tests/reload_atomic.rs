//! A reload is all or nothing: one that cannot be applied (a new address
//! that cannot be bound) changes nothing, live weights and admin states
//! included; one that can logs what it changed.

use std::sync::Arc;

use tether::state::AdminState;
use tether_test_support::*;

#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing_not_even_weights_or_admin_states() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let base = Config::over(
        pool()
            .server(Server::from(&a).weight(1))
            .server(Server::from(&b).weight(1)),
    );
    let tether = start_tether(&base).await;
    let before = tether.handle.snapshot();

    // A port held by someone else (without SO_REUSEPORT) cannot be bound;
    // the same reload would change both servers' weights and drain s1.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let bad = Config::simple(
        Frontend::public().bind(taken),
        pool()
            .server(Server::from(&a).weight(7).state("drain"))
            .server(Server::from(&b).weight(7)),
    );
    let config = bad.parse();
    let (result, log) = Captured::during(|| tether.handle.reload(&config));
    let err = result.expect_err("the squatted address cannot be bound");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");

    let after = tether.handle.snapshot();
    assert!(Arc::ptr_eq(&before, &after), "the running snapshot stays");
    for server in &after.backends[0].servers {
        assert_eq!(server.state.weight(), 1, "{}: weight untouched", server.name);
        assert_eq!(
            server.state.admin(),
            AdminState::Ready,
            "{}: admin state untouched",
            server.name
        );
    }
    assert!(!log.contains("configuration applied"), "nothing was applied: {log}");
    assert_eq!(tether.handle.local_addrs("public"), vec![tether.addr]);
    let names: std::collections::HashSet<String> =
        futures_util::future::join_all((0..4).map(|_| server_of(tether.addr, "/")))
            .await
            .into_iter()
            .collect();
    assert_eq!(names.len(), 2, "both servers still take traffic: {names:?}");
}

#[tokio::test]
async fn a_good_reload_applies_the_config_and_logs_its_diff() {
    let (a, b, c) = (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    );
    let base = Config::over(
        pool()
            .server(Server::from(&a).weight(1))
            .server(Server::from(&b).weight(1)),
    );
    let tether = start_tether(&base).await;
    let next = Config::over(
        pool()
            .server(Server::from(&a).weight(3).state("drain"))
            .server(Server::from(&c).weight(1)),
    );
    let config = next.parse();
    let (result, log) = Captured::during(|| tether.handle.reload(&config));
    result.expect("reload");
    let line = log
        .lines()
        .find(|l| l.contains("configuration applied"))
        .unwrap_or_else(|| panic!("the reload logs its diff: {log}"));
    for change in ["+pool/s3", "-pool/s2", "~pool/s1"] {
        assert!(line.contains(change), "`{change}` in the diff: {line}");
    }
    let snapshot = tether.handle.snapshot();
    let s1 = &snapshot.backends[0].servers[0].state;
    assert_eq!(
        (s1.weight(), s1.admin()),
        (3, AdminState::Drain),
        "applied after the swap"
    );
    assert_eq!(server_of(tether.addr, "/").await, "s3", "s1 drains, s2 is gone");
}
