//! The echo server checked against an independent WebSocket client
//! (tungstenite), and every load mode run briefly against the echo server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_bench::load::{self, ConnectParams, EchoParams, HttpParams, IdleParams, Target};
use tether_bench::server::{serve, ServerConfig};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

async fn start_server(name: &str) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let config = ServerConfig {
        name: Arc::from(name),
        max_message: 1 << 20,
    };
    tokio::spawn(serve(listener, config, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn echo_server_speaks_websocket_to_tungstenite() {
    let (addr, _stop) = start_server("s1").await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/any/path?x=1"))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-echo-server"], "s1");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong(b"p".to_vec().into()));
    ws.close(None).await.unwrap();
    while let Some(msg) = ws.next().await {
        if msg.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn echo_server_closes_on_a_too_big_message() {
    let (addr, _stop) = start_server("s1").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    ws.send(Message::binary(vec![0u8; (1 << 20) + 1])).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn every_load_mode_runs_against_the_echo_server() {
    let (addr, _stop) = start_server("s1").await;
    let target = Target {
        addr,
        path: "/ws".into(),
    };
    let short = Duration::from_millis(300);

    let echo = load::echo(
        &target,
        &EchoParams {
            connections: 4,
            size: 64,
            duration: short,
            warmup: Duration::ZERO,
            cpu_pids: Vec::new(),
        },
    )
    .await;
    assert_eq!(echo["ok"], true, "{echo}");
    assert!(echo["messages"].as_u64().unwrap() > 10, "{echo}");
    // No process to read: no CPU figure.
    assert!(echo.get("proxy_cpu_us_per_op").is_none(), "{echo}");

    let connect = load::connect(
        &target,
        &ConnectParams {
            count: 30,
            concurrency: 5,
            size: 16,
            cpu_pids: Vec::new(),
        },
    )
    .await;
    assert_eq!(connect["ok"], true, "{connect}");
    assert_eq!(connect["handshakes"], 30, "{connect}");

    let http = load::http(
        &target,
        &HttpParams {
            connections: 3,
            duration: short,
            warmup: Duration::ZERO,
            cpu_pids: Vec::new(),
        },
    )
    .await;
    assert_eq!(http["ok"], true, "{http}");

    let pid = std::process::id();
    let idle = load::idle(
        &target,
        &IdleParams {
            count: 40,
            hold: Duration::from_millis(400),
            ping_interval: Duration::from_millis(100),
            open_concurrency: 8,
            sources: 2,
            ready_file: None,
            rss_pids: vec![pid],
        },
    )
    .await;
    assert_eq!(idle["ok"], true, "{idle}");
    assert_eq!(idle["alive"], 40, "{idle}");
    assert!(idle["pongs"].as_u64().unwrap() >= 40, "{idle}");
    assert!(idle["kib_per_conn"].is_number(), "{idle}");
    // The kernel's side of the same connections (read from /proc) and the
    // load generator's own memory per connection.
    assert!(idle["kernel_kib_per_conn"].is_number(), "{idle}");
    assert!(idle["kernel_slab_kib_per_conn"].is_number(), "{idle}");
    assert!(idle["client_kib_per_conn"].is_number(), "{idle}");
}

#[tokio::test]
async fn plain_get_is_answered_and_kept_alive() {
    let (addr, _stop) = start_server("s2").await;
    let mut c = tether_bench::client::HttpClient::connect(addr, "/").await.unwrap();
    for _ in 0..3 {
        let r = c.get().await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.keep_alive);
    }
}

/// A `bench-echo-server` process on a free loopback port, stopped on drop.
struct ServerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_bench-echo-server"))
            .args(["--listen", &addr.to_string(), "--name", "cpu"])
            .spawn()
            .unwrap();
        // Dropped (killed and reaped) if it never listens.
        let server = ServerProcess { child, addr };
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("bench-echo-server did not listen on {addr}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPU time of another process (here the echo server, in run.sh the
/// proxy) over each mode's measured window, divided by its operations.
#[tokio::test]
async fn cpu_per_operation_is_read_from_the_given_process() {
    let server = ServerProcess::start();
    let target = Target {
        addr: server.addr,
        path: "/ws".into(),
    };
    let pids = vec![server.child.id()];
    let short = Duration::from_millis(400);
    let echo = load::echo(
        &target,
        &EchoParams {
            connections: 4,
            size: 64,
            duration: short,
            warmup: Duration::from_millis(100),
            cpu_pids: pids.clone(),
        },
    )
    .await;
    let connect = load::connect(
        &target,
        &ConnectParams {
            count: 200,
            concurrency: 5,
            size: 16,
            cpu_pids: pids.clone(),
        },
    )
    .await;
    let http = load::http(
        &target,
        &HttpParams {
            connections: 3,
            duration: short,
            warmup: Duration::from_millis(100),
            cpu_pids: pids,
        },
    )
    .await;
    for (r, count) in [(&echo, "messages"), (&connect, "handshakes"), (&http, "requests")] {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["proxy_cpu_source"], "schedstat", "{r}");
        let ops = r[count].as_f64().unwrap();
        let total = r["proxy_cpu_us"].as_f64().unwrap();
        let per_op = r["proxy_cpu_us_per_op"].as_f64().unwrap();
        // The server did work for every operation, and not more than one
        // core's worth of it over the window.
        assert!(total > 0.0 && per_op > 0.0, "{r}");
        assert!((per_op - total / ops).abs() <= 0.01 + per_op * 0.01, "{r}");
        let share = r["proxy_cpu_share"].as_f64().unwrap();
        assert!(share > 0.0 && share <= 1.5, "{r}");
    }
}
