//! Caps that keep one client (or a crowd) from starving the others:
//! connections and handshake rate per address, the frontend's `maxconn`,
//! WebSocket idle and ping timeouts, and slowloris heads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Sends a GET on `stream` and returns the status line (empty if the connection closed first).
async fn status_on(stream: &mut TcpStream) -> String {
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Ok(Err(_)) => String::new(),
        Err(_) => panic!("no answer within 5 s"),
    }
}

/// A WebSocket handshake from source address `source`; Ok with the socket, or Err with the HTTP status.
async fn ws_from(source: &str, addr: SocketAddr) -> Result<Ws, (u16, Option<String>)> {
    let stream = connect_from(source, addr).await;
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await {
        Ok((mut ws, _)) => {
            let _name = next_text(&mut ws).await;
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_string()),
        )),
        Err(other) => panic!("handshake from {source}: {other}"),
    }
}

#[tokio::test]
async fn connections_per_address_are_capped_and_other_addresses_are_not_affected() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().per_ip_max_connections(3),
        pool().server(&s1),
    ))
    .await;
    // Three connections from 127.0.0.2: two keep-alive HTTP, one WebSocket tunnel.
    let mut first = connect_from("127.0.0.2", tether.addr).await;
    assert!(status_on(&mut first).await.starts_with("HTTP/1.1 200"));
    let mut second = connect_from("127.0.0.2", tether.addr).await;
    assert!(status_on(&mut second).await.starts_with("HTTP/1.1 200"));
    let tunnel = ws_from("127.0.0.2", tether.addr)
        .await
        .expect("the third connection is a tunnel");
    // The fourth is refused with 429 and closed.
    let mut fourth = connect_from("127.0.0.2", tether.addr).await;
    let mut reply = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), fourth.read_to_string(&mut reply)).await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply:?}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply:?}");
    // Another address is served.
    let mut other = connect_from("127.0.0.3", tether.addr).await;
    assert!(status_on(&mut other).await.starts_with("HTTP/1.1 200"));
    // The tunnel still counts after its HTTP connection became a tunnel; closing it frees a place.
    assert!(ws_from("127.0.0.2", tether.addr).await.is_err());
    drop(tunnel);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.2", tether.addr).await;
        if status_on(&mut again).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the closed tunnel never freed its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics_text = tether::admin::metrics::render(&tether.handle).unwrap();
    assert!(
        metrics_text.contains("tether_frontend_refused_total{frontend=\"public\",reason=\"per_ip_connections\"}"),
        "{metrics_text}"
    );
}

/// A connection whose PROXY protocol header names `client` (an IPv6 address), with one GET answered.
async fn status_as(tether: SocketAddr, client: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(tether).await.unwrap();
    let header = format!("PROXY TCP6 {client} ::1 51000 80\r\n");
    stream.write_all(header.as_bytes()).await.unwrap();
    let status = status_on(&mut stream).await;
    (stream, status)
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_unless_told_otherwise() {
    let s1 = backend("s1").start().await;
    let frontend = || {
        Frontend::public()
            .trusted_proxies(&["127.0.0.1"])
            .proxy_protocol(true)
            .per_ip_max_connections(2)
    };
    let tether = start_tether(&Config::simple(frontend(), pool().server(&s1))).await;
    let (_a, first) = status_as(tether.addr, "2001:db8:0:1::1").await;
    let (_b, second) = status_as(tether.addr, "2001:db8:0:1::2").await;
    assert!(first.starts_with("HTTP/1.1 200") && second.starts_with("HTTP/1.1 200"));
    // A third address of the same /64 is the same client: refused.
    let (_c, third) = status_as(tether.addr, "2001:db8:0:1:ffff::3").await;
    assert!(third.is_empty() || third.starts_with("HTTP/1.1 429"), "{third:?}");
    // Another /64 is another client.
    let (_d, other) = status_as(tether.addr, "2001:db8:0:2::1").await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other:?}");
    // `per_ip.ipv6_prefix = 128` counts each address.
    let exact = start_tether(&Config::simple(frontend().per_ip_ipv6_prefix(128), pool().server(&s1))).await;
    let mut held = Vec::new();
    for last in 1..=3 {
        let (stream, status) = status_as(exact.addr, &format!("2001:db8:0:1::{last}")).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{last}: {status:?}");
        held.push(stream);
    }
}

#[test]
fn an_ipv6_prefix_outside_1_to_128_is_a_config_error() {
    for bad in [0, 129] {
        let servers = pool().server(Server::new("s1", "127.0.0.1:9"));
        let text = Config::simple(Frontend::public().per_ip_ipv6_prefix(bad), servers).toml();
        let err = tether::config::parse(&text, "t.toml").expect_err("refused");
        assert!(err.to_string().contains("ipv6_prefix"), "{err}");
    }
}

#[tokio::test]
async fn handshakes_over_the_per_address_rate_get_429_with_retry_after() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().per_ip_rate("5/s"),
        pool().server(&s1),
    ))
    .await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(ws_from("127.0.0.2", tether.addr).await.expect("within the rate"));
    }
    let refused = ws_from("127.0.0.2", tether.addr)
        .await
        .expect_err("the sixth is over the rate");
    assert_eq!(refused, (429, Some("1".to_string())));
    // Plain HTTP from the same address is not rate limited.
    assert_eq!(server_of(tether.addr, "/").await, "s1");
    // Another address has its own bucket.
    open.push(ws_from("127.0.0.3", tether.addr).await.expect("another address"));
    // A token comes back every 200 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.push(ws_from("127.0.0.2", tether.addr).await.expect("refilled"));
}

#[tokio::test]
async fn at_maxconn_new_connections_wait_until_one_closes() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(Frontend::public().maxconn(2), pool().server(&s1))).await;
    let (first, _) = ws_connect(tether.addr, "/ws").await;
    let mut second = TcpStream::connect(tether.addr).await.unwrap();
    assert!(status_on(&mut second).await.starts_with("HTTP/1.1 200"));
    // The third connects (the kernel backlog takes it) but is not served.
    let mut third = TcpStream::connect(tether.addr).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "a connection beyond maxconn must wait"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once the tunnel closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

// On the paused clock: the tunnel's idle timer is tokio time, so the test's
// sleeps and tether's timeout advance together without waiting.
#[tokio::test(start_paused = true)]
async fn an_idle_websocket_is_closed_with_1001_and_a_busy_one_is_not() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().websocket_idle_timeout("400ms"),
        pool().server(&s1),
    ))
    .await;
    let (mut busy, _) = ws_connect(tether.addr, "/ws").await;
    let (mut idle, _) = ws_connect(tether.addr, "/ws").await;
    let started = tokio::time::Instant::now();
    for i in 0..8 {
        busy.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut busy).await, format!("m{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(close_code(&mut idle, Duration::from_secs(5)).await, Some(1001));
    assert!(started.elapsed() >= Duration::from_millis(400));
    busy.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut busy).await, "still here");
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_and_a_silent_one_is_closed_with_1001() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public()
            .websocket_ping_interval("200ms")
            .websocket_ping_timeout("300ms"),
        pool().server(&s1),
    ))
    .await;
    // tungstenite answers pings while it is being read.
    let (mut answering, _) = ws_connect(tether.addr, "/ws").await;
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        let until = tokio::time::sleep(Duration::from_millis(1500));
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return (pings, answering),
                message = answering.next() => match message {
                    Some(Ok(Message::Ping(payload))) => {
                        assert_eq!(&payload[..], b"tether");
                        pings += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
    });
    // A raw client that completes the handshake, then never answers.
    let mut silent = TcpStream::connect(tether.addr).await.unwrap();
    silent
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed_after = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed_after.is_ok(), "the silent client was never closed");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let frames = &seen[text.find("\r\n\r\n").unwrap() + 4..];
    let ping_at = frames.windows(8).position(|w| w == b"\x89\x06tether").expect("a ping");
    let close_at = frames.windows(2).position(|w| w[0] == 0x88).expect("a Close");
    assert!(ping_at < close_at);
    assert_eq!(&frames[close_at + 2..close_at + 4], &1001u16.to_be_bytes());
    let (pings, mut answering) = reader.await.unwrap();
    assert!(pings >= 2, "the answering client was pinged {pings} times");
    answering.send(Message::text("alive")).await.unwrap();
    assert_eq!(next_text(&mut answering).await, "alive");
}

/// Round trips of `count` GETs on `client`, 25 ms apart, sorted.
async fn latencies(client: &mut hyper::client::conn::http1::SendRequest<TestBody>, count: usize) -> Vec<Duration> {
    let mut taken = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let (status, _, _) = send(client, get_request("/")).await;
        assert_eq!(status, 200);
        taken.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    taken.sort();
    taken
}

#[tokio::test]
async fn slowloris_dribblers_do_not_slow_a_normal_client_and_are_all_cut() {
    // 500 by default; TETHER_SLOWLORIS=2000 runs the full attack.
    let dribblers: usize = std::env::var("TETHER_SLOWLORIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let s1 = backend("s1").start().await;
    let config = Config::simple(
        Frontend::public().http_request_timeout("2s").client_timeout("30s"),
        pool().server(&s1),
    );
    // tether and the normal client each get a thread of their own, as they
    // would be separate processes: the attackers' tasks in this runtime then
    // slow neither tether's scheduling nor the measurement.
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tether_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tether = start_tether(&config).await;
            let _ = addr_tx.send(tether.addr);
            let _ = stop_rx.await;
        });
    });
    let addr = addr_rx.await.unwrap();
    let measure = move |count: usize| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut client = http_client(addr).await;
                latencies(&mut client, count).await
            })
        })
    };
    let quiet = tokio::task::spawn_blocking(move || measure(20).join().unwrap())
        .await
        .unwrap();
    let mut attack = Vec::new();
    for i in 0..dribblers {
        attack.push(tokio::spawn(async move {
            let source = format!("127.0.1.{}", 1 + i % 250);
            let mut stream = connect_from(&source, addr).await;
            let opened = Instant::now();
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await;
            let mut buf = [0u8; 256];
            loop {
                // One header byte every 200 ms, until tether hangs up.
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return opened.elapsed(),
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stream.write_all(b"X").await.is_err() {
                            return opened.elapsed();
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A normal client, meanwhile: every request answered quickly.
    let attacked = tokio::task::spawn_blocking(move || measure(40).join().unwrap())
        .await
        .unwrap();
    let slowest = attacked[attacked.len() - 1];
    eprintln!(
        "normal requests, median / slowest: quiet {:?} / {:?}; under {dribblers} dribbling connections {:?} / {slowest:?}",
        quiet[quiet.len() / 2],
        quiet[quiet.len() - 1],
        attacked[attacked.len() / 2],
    );
    // Generous: the shared CI machine runs 500+ dribbling tasks on both sides of the socket.
    assert!(
        slowest < Duration::from_millis(250),
        "slowest normal request took {slowest:?}"
    );
    for dribbler in attack {
        let lasted = tokio::time::timeout(Duration::from_secs(10), dribbler)
            .await
            .expect("a dribbler was never cut")
            .unwrap();
        assert!(lasted < Duration::from_secs(5), "a dribbler lasted {lasted:?}");
    }
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || tether_thread.join()).await;
}
