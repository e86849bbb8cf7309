//! Hostile or oversized requests get the right status, and WebSocket
//! handshakes from other sites are refused (cross-site WebSocket hijacking).

use http::StatusCode;
use tether_test_support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn oversized_heads_targets_and_bodies_get_431_414_413() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::simple(
        Frontend::public()
            .max_request_head(16384)
            .max_headers(20)
            .max_uri(1000)
            .max_body(1000),
        pool().server(&s1),
    ))
    .await;
    let big_header = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(20_000));
    assert!(raw_exchange(tether.addr, big_header.as_bytes())
        .await
        .starts_with("HTTP/1.1 431"));
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert!(raw_exchange(tether.addr, many_headers.as_bytes())
        .await
        .starts_with("HTTP/1.1 431"));
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(2000));
    let reply = raw_exchange(tether.addr, long_uri.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 414"), "{reply}");
    let big_body = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n";
    let reply = raw_exchange(tether.addr, big_body.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(s1.requests(), 0, "none of them reached the server");
    assert_eq!(server_of(tether.addr, "/fine").await, "s1");
}

#[tokio::test]
async fn only_allowed_origins_may_open_websockets() {
    let s1 = backend("s1").start().await;
    let config = Config::simple(
        Frontend::public().allowed_origins(&["https://app.example.com", "https://*.example.org"]),
        pool().server(&s1),
    );
    let tether = start_tether(&config).await;
    let handshake = |origin: Option<&'static str>| {
        let mut request = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    for good in [
        "https://app.example.com",
        "https://chat.example.org",
        "HTTPS://APP.EXAMPLE.COM",
    ] {
        assert!(handshake(Some(good)).await.is_ok(), "{good} is allowed");
    }
    for bad in [
        Some("https://evil.example.net"),
        Some("http://app.example.com"),
        Some("null"),
        None,
    ] {
        match handshake(bad).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{bad:?}")
            }
            other => panic!("{bad:?} should get 403, got {:?}", other.map(|_| ())),
        }
    }
    // Plain HTTP is not affected by the origin list.
    assert_eq!(server_of(tether.addr, "/").await, "s1");
}

#[tokio::test]
async fn a_route_can_set_its_own_origins() {
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let config = Config::new()
        .frontend(
            Frontend::new("public")
                .bind("127.0.0.1:0")
                .default_backend("open")
                .allowed_origins(&["https://app.example.com"])
                .route(
                    Route::to("partners")
                        .path_prefix("/partners")
                        .allowed_origins(&["https://partner.example.net"]),
                ),
        )
        .backend(Backend::new("open").server(&s1))
        .backend(Backend::new("partners").server(&s2));
    let tether = start_tether(&config).await;
    let ok = |path: &str, origin: &'static str| {
        let mut request = format!("ws://{}{path}", tether.addr).into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    assert!(ok("/partners/ws", "https://partner.example.net").await.is_ok());
    assert!(
        ok("/partners/ws", "https://app.example.com").await.is_err(),
        "the route's list replaces the frontend's"
    );
    assert!(ok("/ws", "https://app.example.com").await.is_ok());
    assert!(ok("/ws", "https://partner.example.net").await.is_err());
}

#[test]
fn a_bad_origin_or_limit_is_a_config_error_with_its_line() {
    // TOML text on purpose: the error must name the line and column of the bad key.
    let base = "[[frontend]]\nname = \"p\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n";
    let tail = "[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n";
    let bad_origin = format!("{base}allowed_origins = [\"app.example.com\"]\n{tail}");
    let err = tether::config::parse(&bad_origin, "t.toml").unwrap_err().to_string();
    assert!(
        err.starts_with("t.toml:5:") && err.contains("https://app.example.com"),
        "{err}"
    );
    let bad_limit = format!("{base}limits = {{ max_request_head = 100 }}\n{tail}");
    let err = tether::config::parse(&bad_limit, "t.toml").unwrap_err().to_string();
    assert!(err.starts_with("t.toml:5:") && err.contains("8192"), "{err}");
}

#[tokio::test]
async fn oversized_websocket_messages_and_frames_close_the_tunnel_with_1009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s1 = backend("s1").start().await;
    for (limits, frontend, too_big) in [
        (
            "max_message_size = 1000",
            Frontend::public().websocket_max_message_size(1000),
            2000usize,
        ),
        (
            "max_frame_size = 300",
            Frontend::public().websocket_max_frame_size(300),
            500,
        ),
    ] {
        let tether = start_tether(&Config::simple(frontend, pool().server(&s1))).await;
        let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
        ws.send(Message::binary(vec![7u8; 250])).await.unwrap();
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        {
            Ok(Some(Ok(Message::Binary(echo)))) => assert_eq!(echo.len(), 250, "{limits}: a small message passes"),
            other => panic!("{limits}: expected the echo, got {other:?}"),
        }
        ws.send(Message::binary(vec![9u8; too_big])).await.unwrap();
        // The very next frame is tether's Close: the oversized message never reached the echo server.
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        {
            Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 1009, "{limits}"),
            other => panic!("{limits}: expected Close 1009 first, got {other:?}"),
        }
    }
}
