//! Reloading and upgrading tether without dropping anyone.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// Opens and closes WebSockets until `stop`, counting failures.
fn churn(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
                Ok((mut ws, _)) => match ws.next().await {
                    Some(Ok(Message::Text(_))) => {
                        ok += 1;
                        let _ = ws.close(None).await;
                    }
                    other => {
                        eprintln!("churn: after the handshake got {other:?}");
                        failed += 1
                    }
                },
                Err(err) => {
                    eprintln!("churn: handshake failed: {err}");
                    failed += 1
                }
            }
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_drop_no_handshake_and_no_tunnel() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let config_a = Config::over(pool().balance("leastconn").server(&a).server(&b));
    let config_b = Config::over(
        pool()
            .balance("roundrobin")
            .retries(2)
            .server(Server::from(&a).weight(3))
            .server(Server::from(&b).maxconn(5000)),
    );
    // Bad configs go through the TOML text on purpose: the loader must refuse
    // each with an error naming the file.
    let text_a = config_a.toml();
    let invalid = [
        text_a.replace("balance = \"leastconn\"", "balance = \"fastest\""),
        text_a.replace("default_backend = \"pool\"", "default_backend = \"nowhere\""),
        text_a.replace("[[backend.server]]", "[[backend.server]]\nwieght = 2"),
    ];
    for bad in &invalid {
        assert_ne!(bad, &text_a, "the text has what the bad config replaces");
    }
    let tether = start_tether(&config_a).await;
    let mut tunnels = Vec::new();
    for _ in 0..200 {
        tunnels.push(ws_connect(tether.addr, "/ws").await.0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churner = churn(tether.addr, stop.clone());
    let mut refused = 0;
    for i in 0..100 {
        if i % 10 == 5 {
            let bad = &invalid[(i / 10) % invalid.len()];
            let err = tether::config::parse(bad, "bad.toml").unwrap_err().to_string();
            assert!(err.starts_with("bad.toml:"), "{err}");
            refused += 1;
            continue;
        }
        let config = if i % 2 == 0 { &config_b } else { &config_a };
        tether.handle.reload(&config.parse()).expect("reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = churner.await.unwrap();
    assert_eq!(failed, 0, "{failed} handshakes failed during reloads ({ok} succeeded)");
    assert!(ok > 20, "the churning client made only {ok} handshakes");
    assert_eq!(refused, 10);
    for (i, ws) in tunnels.iter_mut().enumerate() {
        ws.send(Message::text(format!("still {i}"))).await.unwrap();
        assert_eq!(
            next_text(ws).await,
            format!("still {i}"),
            "tunnel {i} was touched by a reload"
        );
    }
}

#[tokio::test]
async fn a_reload_opens_added_addresses_closes_removed_ones_and_refuses_unbindable_ones() {
    let s1 = backend("s1").start().await;
    let base = Config::over(pool().server(&s1));
    let tether = start_tether(&base).await;
    let extra_port = closed_port().await.port();
    let with_extra = Config::simple(
        Frontend::public().bind(format!("127.0.0.1:{extra_port}")),
        pool().server(&s1),
    );
    tether.handle.reload(&with_extra.parse()).unwrap();
    let extra: std::net::SocketAddr = format!("127.0.0.1:{extra_port}").parse().unwrap();
    assert_eq!(server_of(extra, "/").await, "s1", "the added address serves");
    assert_eq!(server_of(tether.addr, "/").await, "s1", "the kept address still serves");

    tether.handle.reload(&base.parse()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(extra).await.is_err(),
        "the removed address is closed"
    );

    // A port held by someone else (without SO_REUSEPORT) cannot be bound: nothing changes.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let bad = Config::simple(Frontend::public().bind(taken), pool().server(&s1));
    let err = tether.handle.reload(&bad.parse()).unwrap_err();
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
    assert_eq!(server_of(tether.addr, "/").await, "s1");
}

#[tokio::test]
async fn a_server_removed_by_a_reload_is_drained() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let draining = pool().balance("leastconn").drain_timeout("100ms").drain_spread("200ms");
    let both = Config::over(draining.clone().server(&a).server(&b));
    let tether = start_tether(&both).await;
    let mut on_s1 = Vec::new();
    for _ in 0..6 {
        let (ws, name) = ws_connect(tether.addr, "/ws").await;
        if name == "s1" {
            on_s1.push(ws);
        }
    }
    let only_b = Config::over(draining.server(&b));
    tether.handle.reload(&only_b.parse()).unwrap();
    for ws in on_s1.iter_mut() {
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .expect("drained within drain_timeout + drain_spread");
        assert_eq!(closed, Some(1012));
    }
    assert_eq!(ws_connect(tether.addr, "/ws").await.1, "s2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_the_port_while_the_old_one_drains() {
    // Linux migrates connections queued on a closing SO_REUSEPORT listener to the
    // other listener when this is on (see README, "Upgrading tether"). Best effort: needs root.
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1");
    let s1 = backend("s1").start().await;
    let port = closed_port().await.port();
    let dir = std::env::temp_dir().join(format!("tether-upgrade-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tether.toml");
    let config = Config::new().shutdown_grace("1s").frontend(
        Frontend::new("public")
            .bind(format!("127.0.0.1:{port}"))
            .default_backend("pool"),
    );
    let config = config.backend(pool().balance("leastconn").server(&s1));
    std::fs::write(&path, config.toml()).unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("TETHER_LOG", "warn")
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start tether")
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut old = start();
    let waiting = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(waiting.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..4).map(|_| churn(addr, stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _new = start();
    tokio::time::sleep(Duration::from_millis(500)).await; // the new process is listening
    let pid = old.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = tokio::time::timeout(Duration::from_secs(5), old.wait())
        .await
        .expect("old tether exits")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let total_failed = AtomicUsize::new(0);
    let mut total_ok = 0;
    for churner in churners {
        let (ok, failed) = churner.await.unwrap();
        total_ok += ok;
        total_failed.fetch_add(failed, Ordering::Relaxed);
    }
    assert_eq!(
        total_failed.load(Ordering::Relaxed),
        0,
        "{total_ok} handshakes succeeded"
    );
    assert!(total_ok > 50);
    std::fs::remove_dir_all(&dir).ok();
}
