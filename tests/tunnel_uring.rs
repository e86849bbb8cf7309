//! `[tunnel] engine = "io_uring"`: established tunnels carried by the
//! worker's io_uring keep every behaviour of the epoll path: bytes in order
//! both ways, tether's own Close codes at frame boundaries, the idle limit,
//! a graceful stop.
//!
//! The in-process tests run tether on the test's single-threaded runtime,
//! so the tunnel's sockets are on this thread's ring and
//! `tether::uring::sockets_on_this_thread` shows it.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether::uring::sockets_on_this_thread;
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Waits until this thread's ring carries `count` sockets.
async fn ring_sockets(count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockets_on_this_thread() != count {
        assert!(
            Instant::now() < deadline,
            "the ring carries {} sockets, not {count}",
            sockets_on_this_thread()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn messages_of_every_size_cross_an_io_uring_tunnel_and_the_close_handshake_completes() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tunnel_engine("io_uring")).await;
    let (mut ws, name) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(name, "s1");
    ring_sockets(2).await;
    for size in [1usize, 125, 126, 4095, 4096, 4097, 65_535, 65_536, 1 << 20] {
        let text: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        ws.send(Message::text(text.clone())).await.expect("send");
        assert!(
            next_text(&mut ws).await == text,
            "the {size}-byte message came back changed"
        );
    }
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(binary.clone())).await.expect("send");
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Binary(echoed)))) => assert!(echoed == binary, "the binary message came back changed"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .expect("close");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1000));
    ring_sockets(0).await;
}

#[tokio::test]
async fn a_server_taken_out_closes_its_io_uring_tunnels_with_1012_and_only_those() {
    let (a, b) = (backend("s1").start().await, backend("s2").start().await);
    let servers = pool().balance("leastconn").down_spread("200ms").server(&a).server(&b);
    let tether = start_tether(&Config::over(servers).tunnel_engine("io_uring")).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(ws_connect(tether.addr, "/ws").await);
    }
    ring_sockets(12).await;
    let snapshot = tether.handle.snapshot();
    assert!(tether.handle.set_up(&snapshot.backends[0].servers[0].state, false));
    for (ws, name) in clients.iter_mut() {
        if name == "s1" {
            assert_eq!(close_code(ws, Duration::from_secs(3)).await, Some(1012));
        } else {
            ws.send(Message::text("still here?")).await.expect("send");
            assert_eq!(next_text(ws).await, "still here?");
        }
    }
    ring_sockets(6).await;
}

/// A WebSocket server that accepts one handshake, sends "gone" and drops the
/// connection without a Close.
async fn vanishing_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.expect("handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let key = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            })
            .expect("a key");
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        stream.write_all(answer.as_bytes()).await.expect("answer");
        stream.write_all(b"\x81\x04gone").await.expect("frame");
        // Dropped here: an end of stream without a Close.
    });
    addr
}

#[tokio::test]
async fn a_server_that_vanishes_leaves_its_io_uring_client_a_1012() {
    let server = vanishing_server().await;
    let tether = start_tether(&Config::over(pool().server(("s1", server))).tunnel_engine("io_uring")).await;
    let (mut ws, first) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(first, "gone");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1012));
    ring_sockets(0).await;
}

#[tokio::test]
async fn an_idle_io_uring_tunnel_is_closed_after_the_tunnel_timeout() {
    let s1 = backend("s1").start().await;
    let tether =
        start_tether(&Config::over(pool().tunnel_timeout("300ms").server(&s1)).tunnel_engine("io_uring")).await;
    let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
    ring_sockets(2).await;
    let opened = Instant::now();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        None,
        "a bare close, as on epoll"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(250),
        "closed early: {:?}",
        opened.elapsed()
    );
    ring_sockets(0).await;
}

#[tokio::test]
async fn stopping_tether_closes_its_io_uring_tunnels_with_1001_and_exits_zero() {
    let s1 = backend("s1").start().await;
    let config = Config::over(pool().server(&s1)).workers(2).tunnel_engine("io_uring");
    let mut tether = TetherProcess::start(env!("CARGO_BIN_EXE_tether"), &config).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(ws_connect(tether.addr, "/ws").await.0);
    }
    for ws in clients.iter_mut() {
        ws.send(Message::text("through the ring")).await.expect("send");
        assert_eq!(next_text(ws).await, "through the ring");
    }
    tether.terminate();
    for ws in clients.iter_mut() {
        assert_eq!(close_code(ws, Duration::from_secs(4)).await, Some(1001));
    }
    let exit = tokio::time::timeout(Duration::from_secs(5), tether.child.wait())
        .await
        .expect("tether exited")
        .expect("exit status");
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn an_unknown_engine_is_refused_with_its_line_and_the_choices() {
    let server: std::net::SocketAddr = "127.0.0.1:1".parse().expect("address");
    let text = format!(
        "{}\n[tunnel]\nengine = \"uring\"\n",
        Config::over(pool().server(("s1", server))).toml()
    );
    let err = tether::config::parse(&text, "tether.toml").expect_err("an unknown engine is refused");
    let message = err.to_string();
    assert!(message.contains("tether.toml:"), "{message}");
    assert!(message.contains("epoll") && message.contains("io_uring"), "{message}");
}

#[tokio::test]
async fn a_reload_that_changes_the_engine_applies_to_new_tunnels_and_keeps_open_ones() {
    let s1 = backend("s1").start().await;
    let on_epoll = || Config::over(pool().server(&s1));
    let tether = start_tether(&on_epoll()).await;
    let (mut first, _) = ws_connect(tether.addr, "/ws").await;
    first.send(Message::text("epoll")).await.expect("send");
    assert_eq!(next_text(&mut first).await, "epoll");
    assert_eq!(sockets_on_this_thread(), 0, "epoll tunnels are not on the ring");

    tether
        .handle
        .reload(&on_epoll().tunnel_engine("io_uring").parse())
        .expect("reload");
    let (mut second, _) = ws_connect(tether.addr, "/ws").await;
    ring_sockets(2).await;
    for (ws, text) in [(&mut first, "still epoll"), (&mut second, "ring")] {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(ws).await, text);
    }

    tether.handle.reload(&on_epoll().parse()).expect("reload back");
    let (mut third, _) = ws_connect(tether.addr, "/ws").await;
    for (ws, text) in [(&mut second, "ring still"), (&mut third, "epoll again")] {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(next_text(ws).await, text);
    }
    assert_eq!(
        sockets_on_this_thread(),
        2,
        "only the tunnel opened under io_uring is on the ring"
    );
}
