//! Access-log lines: one per HTTP exchange with its request id, one per
//! finished tunnel with bytes, messages and the WebSocket close codes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The access-log lines of every test in this file.
fn access_lines() -> &'static Captured {
    captured_access_lines()
}

#[tokio::test]
async fn access_lines_carry_the_request_id_and_tunnel_close_codes() {
    let captured = access_lines();

    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    // A refused handshake: its request id is in the response and in the log.
    let reply = raw_exchange(
        tether.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let id = reply
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id header")
        .trim()
        .to_string();
    let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}

    let mut tunnel = None;
    for _ in 0..100 {
        tunnel = captured.lines().into_iter().find(|l| l["kind"] == "tunnel");
        if tunnel.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tunnel = tunnel.expect("a tunnel line");
    assert_eq!(tunnel["close_code_in"], 1000, "{tunnel}");
    assert_eq!(tunnel["close_code_out"], 1000, "the server echoed the close: {tunnel}");
    assert_eq!(
        tunnel["messages_in"], 1,
        "hello (control frames are not messages): {tunnel}"
    );
    assert_eq!(tunnel["server"], "s1");
    let http = captured
        .lines()
        .into_iter()
        .find(|l| l["kind"] == "http" && l["status"] == 400)
        .expect("the 400 line");
    assert_eq!(http["request_id"], id.as_str(), "{http}");
    assert!(http["error"].as_str().unwrap().contains("Sec-WebSocket-Key"), "{http}");
}

#[tokio::test]
async fn session_ids_in_query_strings_are_redacted_in_access_lines() {
    let captured = access_lines();
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).redact_query(&["sid", "token"])).await;
    let (status, _, _) = get(
        tether.addr,
        "/socket.io/?EIO=4&transport=polling&sid=s3cr3t-sid&token=t0k3n&t=1",
    )
    .await;
    assert_eq!(status, 200);
    let mut line = None;
    for _ in 0..100 {
        line = captured
            .lines()
            .into_iter()
            .find(|l| l["kind"] == "http" && l["uri"].as_str().is_some_and(|u| u.starts_with("/socket.io/")));
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = line.expect("the request's access line");
    assert_eq!(
        line["uri"], "/socket.io/?EIO=4&transport=polling&sid=REDACTED&token=REDACTED&t=1",
        "{line}"
    );
    assert!(
        !captured.text().contains("s3cr3t-sid"),
        "the id appears nowhere in the logs"
    );
    // By default `sid` alone is redacted.
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    get(tether.addr, "/default/?sid=other-secret&token=visible").await;
    for _ in 0..100 {
        if captured.text().contains("/default/") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = captured.text();
    assert!(text.contains("/default/?sid=REDACTED&token=visible"), "{text}");
}
