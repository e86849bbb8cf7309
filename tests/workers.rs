//! Several workers: each with its own single-threaded runtime and its own
//! `SO_REUSEPORT` socket on every address; the kernel spreads clients over
//! them, and stopping, reloading and pooled keep-alive work across all.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use http::StatusCode;
use tether::workers::WorkerThreads;
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn clients_spread_over_the_workers_and_every_one_is_served() {
    let s1 = backend("s1").start().await;
    let s2 = backend("s2").start().await;
    let workers = WorkerThreads::start(2).expect("worker threads");
    let config = Config::over(pool().balance("leastconn").server(&s1).server(&s2));
    let tether = start_tether_on(&config, workers.runtimes()).await;
    let handle = tether.handle.clone();
    let addr = handle.local_addrs("public")[0];

    let mut clients = Vec::new();
    for i in 0..60 {
        let (mut ws, _server) = ws_connect(addr, "/ws").await;
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_text(&mut ws).await, text);
        clients.push(ws);
    }
    // Plain HTTP over fresh connections: pooled upstream connections stay usable on every worker.
    for _ in 0..30 {
        let (status, _, _) = get(addr, "/").await;
        assert_eq!(status, StatusCode::OK);
    }
    let accepted = handle.accepted_per_worker();
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    assert_eq!(accepted.iter().sum::<u64>(), 90, "{accepted:?}");
    // 90 connections from distinct source ports: the kernel's hash leaves no
    // worker without any (the chance it does is about 3 × (2/3)^90).
    assert!(accepted.iter().all(|n| *n > 0), "{accepted:?}");
    let metrics = tether::admin::metrics::render(&handle).expect("metrics");
    for (worker, count) in accepted.iter().enumerate() {
        let line = format!("tether_worker_connections_accepted_total{{worker=\"{worker}\"}} {count}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // Stopping closes the tunnels of every worker with 1001.
    let (stopped, ()) = tokio::join!(tether.stopped_within(Duration::from_secs(5)), async {
        for ws in clients.iter_mut() {
            assert_eq!(close_code(ws, Duration::from_secs(4)).await, Some(1001));
        }
    });
    assert!(stopped, "tether stopped and run ended");
    workers.stop();
}

/// Stops the instance, checks that `run` ended, then ends the worker threads.
async fn stop_all(tether: RunningTether, workers: WorkerThreads) {
    assert!(
        tether.stopped_within(Duration::from_secs(5)).await,
        "tether stopped and run ended"
    );
    workers.stop();
}

/// Sends a keep-alive GET on `stream`; true if a response starts within `within`.
async fn answered(stream: &mut TcpStream, within: Duration) -> bool {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200")
    )
}

#[tokio::test]
async fn maxconn_holds_exactly_when_several_workers_accept_at_once() {
    let s1 = backend("s1").start().await;
    let workers = WorkerThreads::start(3).expect("worker threads");
    let config = Config::simple(Frontend::public().maxconn(5), pool().server(&s1));
    let tether = start_tether_on(&config, workers.runtimes()).await;
    let handle = tether.handle.clone();
    let addr = handle.local_addrs("public")[0];

    // A burst of 24 clients at once: the four workers race for the last slots.
    let clients = futures_util::future::join_all((0..24).map(|_| async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let served = answered(&mut stream, Duration::from_millis(1500)).await;
        (stream, served)
    }))
    .await;
    let served = clients.iter().filter(|(_, served)| *served).count();
    assert_eq!(served, 5, "exactly maxconn connections are served");
    assert!(
        handle.accepted_per_worker().iter().sum::<u64>() >= 5,
        "{:?}",
        handle.accepted_per_worker()
    );

    // Closing the served ones lets the waiting ones in, still five at a time.
    let (served_streams, waiting): (Vec<_>, Vec<_>) = clients.into_iter().partition(|(_, served)| *served);
    drop(served_streams);
    let next = futures_util::future::join_all(waiting.into_iter().map(|(mut stream, _)| async move {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await;
        (stream, matches!(read, Ok(Ok(n)) if n > 0))
    }))
    .await;
    let served_next = next.iter().filter(|(_, served)| *served).count();
    assert_eq!(served_next, 5, "the next five are served once the first five closed");

    drop(next);
    stop_all(tether, workers).await;
}

#[tokio::test]
async fn a_reload_adds_and_removes_an_address_on_every_worker() {
    let s1 = backend("s1").start().await;
    let workers = WorkerThreads::start(1).expect("worker threads");
    let servers = pool().balance("leastconn").server(&s1);
    let config = Config::over(servers.clone());
    let tether = start_tether_on(&config, workers.runtimes()).await;
    let handle = tether.handle.clone();
    let first = handle.local_addrs("public")[0];

    let extra = closed_port().await;
    let reloaded = Config::simple(Frontend::public().bind(extra), servers);
    handle.reload(&reloaded.parse()).expect("reload");
    let before = handle.accepted_per_worker();
    for _ in 0..40 {
        let (status, _, _) = get(extra, "/").await;
        assert_eq!(status, StatusCode::OK);
    }
    let after = handle.accepted_per_worker();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "both workers accept on the added address: {before:?} -> {after:?}"
    );

    // Removing it closes the socket of every worker: nothing accepts there any more.
    handle.reload(&config.parse()).expect("reload");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(extra).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a removed address still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, _) = get(first, "/").await;
    assert_eq!(status, StatusCode::OK);

    stop_all(tether, workers).await;
}

#[tokio::test]
async fn the_binary_with_two_workers_serves_and_stops_on_sigterm() {
    let s1 = backend("s1").start().await;
    let config = Config::over(pool().balance("leastconn").server(&s1))
        .shutdown_grace("1s")
        .workers(2);
    let mut tether = TetherProcess::start(env!("CARGO_BIN_EXE_tether"), &config).await;
    let addr = tether.addr;
    let mut clients = Vec::new();
    for i in 0..30 {
        let (mut ws, name) = ws_connect(addr, "/ws").await;
        assert_eq!(name, "s1");
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
        clients.push(ws);
    }
    tether.terminate();
    for ws in clients.iter_mut() {
        assert_eq!(close_code(ws, Duration::from_secs(4)).await, Some(1001));
    }
    let exit = tokio::time::timeout(Duration::from_secs(5), tether.child.wait())
        .await
        .expect("tether exited with its worker threads")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn a_reload_that_changes_workers_warns_and_keeps_the_running_ones() {
    let s1 = backend("s1").start().await;
    let workers = WorkerThreads::start(1).expect("worker threads");
    let config = Config::over(pool().balance("leastconn").server(&s1)).workers(2);
    let tether = start_tether_on(&config, workers.runtimes()).await;
    let handle = tether.handle.clone();

    let changed = config.clone().workers(4).parse();
    let (reloaded, log) = Captured::during(|| handle.reload(&changed));
    reloaded.expect("reload");
    assert!(log.contains("`workers` changed: restart tether to apply it"), "{}", log);
    assert_eq!(handle.accepted_per_worker().len(), 2, "the running workers stay");
    let (status, _, _) = get(handle.local_addrs("public")[0], "/").await;
    assert_eq!(status, StatusCode::OK);
    stop_all(tether, workers).await;
}
