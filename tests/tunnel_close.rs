//! tether closing tunnels itself, with a WebSocket Close at a frame boundary:
//! 1012 when a server dies or is taken out, 1001 when tether stops.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// `tether echo` in its own process; returns the child and its address.
async fn echo_process(name: &str) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["echo", "--listen", "127.0.0.1:0", "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tether echo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("echo server started in time")
        .expect("read stdout")
        .expect("a LISTENING line");
    let addr = line
        .strip_prefix("LISTENING ")
        .expect("LISTENING <addr>")
        .parse()
        .expect("address");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_leaves_its_clients_a_1012_and_new_clients_see_no_error() {
    let (mut doomed, doomed_addr) = echo_process("s1").await;
    let (_survivor, survivor_addr) = echo_process("s2").await;
    let config = Config::over(
        pool()
            .balance("leastconn")
            .server(("s1", doomed_addr))
            .server(("s2", survivor_addr)),
    );
    let tether = start_tether(&config).await;
    let mut on_doomed = Vec::new();
    let mut on_survivor = Vec::new();
    for _ in 0..200 {
        let (ws, name) = ws_connect(tether.addr, "/ws").await;
        if name == "s1" {
            on_doomed.push(ws)
        } else {
            on_survivor.push(ws)
        }
    }
    assert_eq!((on_doomed.len(), on_survivor.len()), (100, 100));

    let addr = tether.addr;
    let newcomers = tokio::spawn(async move {
        let mut errors = 0;
        for _ in 0..60 {
            let request = format!("ws://{addr}/ws");
            // A client that got in just before the kill may see its fresh tunnel
            // closed with 1012: that is the signal to reconnect, and a real client
            // would. What must never happen is a refused or failed handshake.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match tokio_tungstenite::connect_async(request.clone()).await {
                    Ok((mut ws, _)) => match ws.next().await {
                        Some(Ok(Message::Text(_))) => break,
                        Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 1012 && attempts < 3 => {
                            continue
                        }
                        other => {
                            eprintln!("newcomer: after the handshake got {other:?}");
                            errors += 1;
                            break;
                        }
                    },
                    Err(err) => {
                        eprintln!("newcomer: handshake failed: {err}");
                        errors += 1;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        errors
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    doomed.kill().await.expect("SIGKILL the server");
    let killed = Instant::now();
    for (i, ws) in on_doomed.iter_mut().enumerate() {
        assert_eq!(close_code(ws, Duration::from_secs(3)).await, Some(1012), "client {i}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "closes took {:?}",
        killed.elapsed()
    );
    assert_eq!(
        newcomers.await.unwrap(),
        0,
        "new connections during and after the kill failed"
    );
    for ws in on_survivor.iter_mut().take(10) {
        ws.send(Message::text("still here?")).await.unwrap();
        assert_eq!(next_text(ws).await, "still here?");
    }
}

#[tokio::test]
async fn a_server_taken_out_closes_its_tunnels_with_1012_and_only_those() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let servers = pool().balance("leastconn").down_spread("1s").server(&a).server(&b);
    let tether = start_tether(&Config::over(servers)).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(ws_connect(tether.addr, "/ws").await);
    }
    let snapshot = tether.handle.snapshot();
    assert!(tether.handle.set_up(&snapshot.backends[0].servers[0].state, false));
    for (ws, name) in clients.iter_mut() {
        if name == "s1" {
            // Spread over `down_spread` (1 s), not all at once.
            assert_eq!(close_code(ws, Duration::from_secs(3)).await, Some(1012));
        } else {
            ws.send(Message::text("ok?")).await.unwrap();
            assert_eq!(next_text(ws).await, "ok?");
        }
    }
    let (_, name) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(name, "s2", "a down server takes no new tunnel");
}

#[tokio::test]
async fn stopping_tether_sends_1001_spread_over_the_grace_period_and_exits_zero() {
    let s1 = backend("s1").start().await;
    let config = Config::over(pool().balance("leastconn").server(&s1)).workers(1);
    let mut tether = TetherProcess::start(env!("CARGO_BIN_EXE_tether"), &config).await;
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(ws_connect(tether.addr, "/ws").await.0);
    }
    tether.terminate();
    let signalled = Instant::now();
    let mut arrivals = Vec::new();
    for ws in clients.iter_mut() {
        assert_eq!(close_code(ws, Duration::from_secs(4)).await, Some(1001));
        arrivals.push(signalled.elapsed());
    }
    let exit = tokio::time::timeout(Duration::from_secs(5), tether.child.wait())
        .await
        .expect("tether exited")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let last = arrivals.iter().max().unwrap();
    assert!(
        *last < Duration::from_millis(2500),
        "closes must fit in the grace period: {last:?}"
    );
    // Clients read their Close in order, so measure the spread on the arrival times seen.
    assert!(
        *last > Duration::from_millis(400),
        "closes should be spread over the grace period, last at {last:?}"
    );
}

#[tokio::test]
async fn the_tunnels_of_a_server_found_down_are_closed_over_down_spread_not_at_once() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().down_spread("2s").server(&s1))).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ws_connect(tether.addr, "/ws").await.0);
    }
    let started = std::time::Instant::now();
    let snapshot = tether.handle.snapshot();
    assert!(tether.handle.set_up(&snapshot.backends[0].servers[0].state, false));
    let mut at = Vec::new();
    for ws in clients.iter_mut() {
        assert_eq!(close_code(ws, Duration::from_secs(5)).await, Some(1012));
        at.push(started.elapsed());
    }
    at.sort();
    assert!(
        at[0] >= Duration::from_millis(400),
        "the first close comes one step in: {at:?}"
    );
    assert!(
        at[3] >= Duration::from_millis(1800),
        "the last one at the end of the spread: {at:?}"
    );
}
