//! WebSocket through tether: handshake forwarding, the tunnel, byte-exact transfer.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ten_thousand_messages_arrive_in_order_both_ways() {
    init_logs();
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let (ws, name) = ws_connect(tether.addr, "/ws").await;
    assert_eq!(name, "s1");
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        for i in 0..10_000u32 {
            sink.send(Message::text(format!("message {i}"))).await.expect("send");
        }
        sink
    });
    for i in 0..10_000u32 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), format!("message {i}")),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let sink = writer.await.unwrap();
    let mut ws = sink.reunite(stream).unwrap();
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_sixteen_mebibyte_message_is_byte_exact_both_ways() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .expect("handshake");
    assert_eq!(next_text(&mut ws).await, "s1");
    let payload: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ws.send(Message::binary(payload.clone())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
        Ok(Some(Ok(Message::Binary(echo)))) => {
            assert_eq!(echo.len(), payload.len());
            assert!(echo[..] == payload[..], "the echoed 16 MiB differ");
        }
        other => panic!("expected the binary echo, got {other:?}"),
    }
}

#[tokio::test]
async fn subprotocol_and_extension_headers_pass_through_untouched() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let handshake = "GET /ws HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(tether.addr).await.unwrap();
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut head = String::new();
    while !head.contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "tether closed during the handshake: {head}");
        head.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101"), "{head}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(lower.contains("sec-websocket-protocol: chat.v2"), "{head}");
    assert!(
        lower.contains("sec-websocket-extensions: permessage-deflate; client_max_window_bits"),
        "{head}"
    );
    let seen = s1.last_headers();
    assert_eq!(seen["sec-websocket-protocol"], "chat.v2, chat.v1");
    assert_eq!(
        seen["sec-websocket-extensions"],
        "permessage-deflate; client_max_window_bits"
    );
}

#[tokio::test]
async fn a_keep_alive_upgrade_connection_header_is_a_handshake() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let mut request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("connection", "keep-alive, Upgrade".parse().unwrap());
    let (mut ws, name) = ws_connect_with(request).await;
    assert_eq!(name, "s1");
    ws.send(Message::text("ping?")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ping?");
}

async fn refused_upgrade_keeps_http_going(status: StatusCode) {
    let s1 = backend("s1").refuse_upgrades_with(status).start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let mut client = http_client(tether.addr).await;
    let mut handshake = get_request("/ws");
    let headers = handshake.headers_mut();
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
    headers.insert("sec-websocket-version", "13".parse().unwrap());
    let (got, _, body) = send(&mut client, handshake).await;
    assert_eq!(got, status);
    assert_eq!(&body[..], b"s1 refuses upgrades");
    let (next, headers, body) = send(&mut client, get_request("/after")).await;
    assert_eq!(next, StatusCode::OK);
    assert_eq!(headers["x-server"], "s1");
    assert_eq!(&body[..], b"s1");
}

#[tokio::test]
async fn an_upgrade_answered_with_400_is_relayed_and_the_connection_goes_on() {
    refused_upgrade_keeps_http_going(StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn an_upgrade_answered_with_200_is_relayed_and_the_connection_goes_on() {
    refused_upgrade_keeps_http_going(StatusCode::OK).await;
}

#[tokio::test]
async fn malformed_handshakes_get_400_and_never_reach_a_server() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let no_key =
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let reply = raw_exchange(tether.addr, no_key.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("Sec-WebSocket-Key"), "{reply}");
    let old_version = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let reply = raw_exchange(tether.addr, old_version.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("13"), "{reply}");
    assert_eq!(s1.requests(), 0);
}

#[tokio::test]
async fn a_close_handshake_completes_through_the_tunnel() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
    ws.send(Message::Close(None)).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = ws.next().await {
            if message.is_err() || matches!(message, Ok(Message::Close(_))) {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the close handshake did not complete through the tunnel");
}

/// A server that answers any request with 403 and a body of `size`
/// patterned bytes, written in 16 KiB pieces with a pause between them, so
/// the body outlasts the response head by many reads.
async fn refusing_server(size: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {size}\r\n\r\n");
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                let body = patterned(size);
                for piece in body.chunks(16 * 1024) {
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

fn patterned(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_handshake_refused_with_a_long_body_gets_all_of_it() {
    let size = 1 << 20;
    let refuser = refusing_server(size).await;
    let tether = start_tether(&Config::over(pool().server(("refuser", refuser)))).await;
    let mut client = http_client(tether.addr).await;
    let mut handshake = get_request("/ws");
    let headers = handshake.headers_mut();
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
    headers.insert("sec-websocket-version", "13".parse().unwrap());
    let (got, _, body) = tokio::time::timeout(Duration::from_secs(20), send(&mut client, handshake))
        .await
        .expect("the refusal's body arrives");
    assert_eq!(got, StatusCode::FORBIDDEN);
    assert_eq!(body.len(), size);
    assert!(body[..] == patterned(size)[..], "the body arrives byte-exact");
}
