//! `websocket.max_lifetime` and `websocket.lifetime_jitter`: every tunnel is
//! closed with 1001 "max lifetime" at its own limit, busy or not, at a frame
//! boundary towards the client; tunnels opened together get limits spread
//! over the jitter; bad values fail the config with file:line:column.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;

/// `config` with a loopback admin listener that serves `/metrics`.
fn with_metrics(config: Config) -> Config {
    // `get` sends `Host: tether.test`: the admin listener answers only for names it knows.
    config.admin(
        Admin::bind("127.0.0.1:0")
            .hosts(&["tether.test"])
            .metrics_allow(&["127.0.0.1/32"]),
    )
}

async fn lifetime_closes(tether: &RunningTether) -> u64 {
    let admin = tether.handle.admin_addr().expect("admin listener");
    metric(admin, "tether_frontend_lifetime_closes_total{frontend=\"public\"}").await
}

/// Sends a message every 250 ms and reads the echoes until tether's Close:
/// its code and reason, the echoes read, and when it came.
async fn chat_until_closed(ws: &mut Ws) -> (Option<(u16, String)>, usize, Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut echoed = 0;
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = ws.send(Message::text("still busy")).await;
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(_))) => echoed += 1,
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    }
                    Some(Ok(_)) => continue,
                    _ => return None,
                },
            }
        }
    })
    .await
    .expect("no Close within 30 s");
    (close, echoed, Instant::now())
}

// On the paused clock: the lifetime is tokio time, so the test's clock and
// tether's timer advance together without waiting.
#[tokio::test(start_paused = true)]
async fn a_busy_tunnel_is_closed_with_1001_max_lifetime_at_its_own_limit() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&with_metrics(Config::simple(
        Frontend::public().websocket_max_lifetime("2s"),
        pool().server(&s1),
    )))
    .await;
    let (mut first, _) = ws_connect(tether.addr, "/ws").await;
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut second, _) = ws_connect(tether.addr, "/ws").await;

    let (close, echoed, closed_at) = chat_until_closed(&mut first).await;
    assert_eq!(close, Some((1001, "max lifetime".to_string())));
    let lived = closed_at - opened;
    assert!(
        lived >= Duration::from_millis(1990) && lived < Duration::from_millis(2300),
        "closed after {lived:?}, not at its 2 s limit"
    );
    assert!(
        echoed >= 3,
        "the tunnel was busy in its last second: a lifetime is not idleness ({echoed} echoes)"
    );
    assert_eq!(lifetime_closes(&tether).await, 1);

    // The limit is each tunnel's own: the one opened a second later is still open.
    second.send(Message::text("younger")).await.unwrap();
    assert_eq!(next_text(&mut second).await, "younger");
    let (close, _, closed_at) = chat_until_closed(&mut second).await;
    assert_eq!(close, Some((1001, "max lifetime".to_string())));
    let lived = closed_at - opened;
    assert!(
        lived >= Duration::from_millis(2990) && lived < Duration::from_millis(3300),
        "the second closed {lived:?} after the first opened, not 1 s + its 2 s"
    );
    assert_eq!(lifetime_closes(&tether).await, 2);
    // A new tunnel is welcome, with a new lifetime.
    let (mut again, name) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(name, "s1");
    again.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut again).await, "hello");
}

#[tokio::test(start_paused = true)]
async fn with_jitter_tunnels_opened_together_get_different_limits_within_the_bounds() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public()
            .websocket_max_lifetime("10s")
            .websocket_lifetime_jitter("5s"),
        pool().server(&s1),
    ))
    .await;
    let opened = Instant::now();
    let mut waits = Vec::new();
    for _ in 0..12 {
        let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
        waits.push(tokio::spawn(async move {
            let close = close_frame(&mut ws, Duration::from_secs(30)).await;
            (close, opened.elapsed())
        }));
    }
    let mut lived = Vec::new();
    for wait in waits {
        let (close, after) = wait.await.unwrap();
        assert_eq!(close, Some((1001, "max lifetime".to_string())));
        lived.push(after);
    }
    lived.sort();
    let (shortest, longest) = (lived[0], lived[lived.len() - 1]);
    assert!(
        shortest >= Duration::from_secs(5) && longest <= Duration::from_millis(10_100),
        "every limit lies in [max_lifetime - jitter, max_lifetime]: {lived:?}"
    );
    let distinct = lived
        .iter()
        .map(|d| d.as_millis() / 100)
        .collect::<std::collections::HashSet<_>>();
    assert!(
        longest - shortest >= Duration::from_secs(1) && distinct.len() >= 6,
        "limits spread over the jitter, not one for all: {lived:?}"
    );
    eprintln!("12 tunnels opened together closed after {lived:?}");
}

/// A WebSocket server written byte by byte: it accepts one handshake, then
/// sends one binary frame of `size` bytes in two halves, the second
/// `pause` after the first, and reports the code of the Close it gets then.
async fn dribbling_server(size: usize, pause: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<Option<u16>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            })
            .expect("a WebSocket handshake");
        let accept = derive_accept_key(key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(size as u64).to_be_bytes());
        frame.extend_from_slice(&payload[..size / 2]);
        stream.write_all(&frame).await.unwrap();
        tokio::time::sleep(pause).await;
        stream.write_all(&payload[size / 2..]).await.unwrap();
        // What comes back: tether's Close (masked, as a client sends it).
        let mut header = [0u8; 2];
        let code = match stream.read_exact(&mut header).await {
            Ok(_) if header[0] == 0x88 && header[1] & 0x7f >= 2 => {
                let mut mask_and_code = [0u8; 6];
                stream.read_exact(&mut mask_and_code).await.unwrap();
                let [m0, m1, _, _, c0, c1] = mask_and_code;
                Some(u16::from_be_bytes([c0 ^ m0, c1 ^ m1]))
            }
            _ => None,
        };
        let _ = report.send(code);
    });
    (addr, reports)
}

// Real time: the server's pause must really straddle the limit while the
// first half is on its way (a paused clock could jump past the limit first).
#[tokio::test]
async fn a_message_under_way_at_the_limit_arrives_whole_before_the_close() {
    let size = 200_000;
    let (server, mut reports) = dribbling_server(size, Duration::from_millis(900)).await;
    let tether = start_tether(&Config::simple(
        Frontend::public().websocket_max_lifetime("400ms"),
        pool().server(Server::new("raw", server.to_string())),
    ))
    .await;
    let started = std::time::Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", tether.addr))
        .await
        .expect("handshake");
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the message within 5 s");
    let Some(Ok(Message::Binary(data))) = message else {
        panic!("expected the whole binary message first, got {message:?}");
    };
    assert_eq!(data.len(), size);
    assert!(
        data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "the message is intact"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(850),
        "the second half came 900 ms in, past the 400 ms limit ({waited:?})"
    );
    assert_eq!(
        close_frame(&mut ws, Duration::from_secs(5)).await,
        Some((1001, "max lifetime".to_string())),
        "then tether's Close"
    );
    let to_server = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("the server reports");
    assert_eq!(
        to_server,
        Some(Some(1001)),
        "the server gets a Close 1001 of tether's own"
    );
}

/// A frontend with `websocket = { <websocket> }` on line 5 of `t.toml`.
fn with_websocket(websocket: &str) -> String {
    format!(
        "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\nwebsocket = {{ {websocket} }}\n\n\
         [[backend]]\nname = \"web\"\n\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:9\"\n"
    )
}

#[test]
fn a_zero_lifetime_or_a_jitter_past_it_is_a_config_error_at_its_place() {
    for (websocket, column, says) in [
        ("max_lifetime = \"0s\"", 30, "max_lifetime` = 0"),
        (
            "max_lifetime = \"1m\", lifetime_jitter = \"2m\"",
            54,
            "longer than `max_lifetime`",
        ),
        ("lifetime_jitter = \"5m\"", 33, "needs `websocket.max_lifetime`"),
    ] {
        let err = tether::config::parse(&with_websocket(websocket), "t.toml").expect_err(websocket);
        let text = err.to_string();
        assert!(text.contains(&format!("t.toml:5:{column}")), "{websocket}: {text}");
        assert!(text.contains(says), "{websocket}: {text}");
    }
    let fine = "max_lifetime = \"30m\", lifetime_jitter = \"30m\"";
    let config = tether::config::parse(&with_websocket(fine), "t.toml").expect(fine);
    assert_eq!(
        config.frontends[0].websocket.max_lifetime,
        Some(Duration::from_secs(1800))
    );
}
