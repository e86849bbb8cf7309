//! What a client or a server can no longer do to tether's HTTP path: bypass
//! host rules with an absolute-form target, strip end-to-end headers through
//! `Connection`, lose its response by half-closing, hold connections forever
//! by stalling a body, open a tunnel with a wrong 101, or leave a
//! half-sent connection in the pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads from `stream` until it closes or `limit` passes; returns what came
/// and whether the peer closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A raw server: each accepted connection is handed to `serve`; counts them.
struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl RawServer {
    async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        Self { addr, accepted }
    }
}

/// Reads a request head (up to the blank line) from `stream`.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn an_absolute_form_target_is_routed_and_forwarded_with_its_own_host() {
    let public = backend("public").start().await;
    let internal = backend("internal").start().await;
    let config = Config::new()
        .shutdown_grace("2s")
        .frontend(
            Frontend::public()
                .forward_headers(&["x-forwarded-host"])
                .route(Route::to("internal").any(Condition::host("internal.example"))),
        )
        .backend(pool().server(&public))
        .backend(Backend::new("internal").server(&internal));
    let tether = start_tether(&config).await;
    let reply = raw_exchange(
        tether.addr,
        b"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("x-server: public"),
        "routed by the target's host: {reply}"
    );
    let seen = public.last_headers();
    assert_eq!(
        seen["host"], "public.example",
        "the server sees the host it was routed by"
    );
    assert_eq!(seen["x-forwarded-host"], "public.example");
    assert_eq!(internal.requests(), 0);

    // The other way round: a target naming the internal host reaches it, Host notwithstanding.
    let reply = raw_exchange(
        tether.addr,
        b"GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.contains("x-server: internal"), "{reply}");
    assert_eq!(internal.last_headers()["host"], "internal.example");
}

#[tokio::test]
async fn connection_cannot_strip_host_or_forwarding_headers() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let reply = raw_exchange(
        tether.addr,
        b"GET /x HTTP/1.1\r\nHost: app.example\r\nCookie: a=1\r\nX-Forwarded-For: 203.0.113.9\r\nX-Secret: 1\r\nConnection: close, host, x-forwarded-for, x-secret\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = s1.last_headers();
    assert_eq!(seen.get("host").map(|h| h.to_str().unwrap()), Some("app.example"));
    assert_eq!(
        seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
        "the client's chain is kept"
    );
    assert!(
        !seen.contains_key("x-secret"),
        "other named headers are still hop-by-hop"
    );
}

#[tokio::test]
async fn an_http10_request_without_host_gets_one() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    assert_eq!(
        host_of_an_http10_request_without_one(tether.addr, &s1).await,
        Some(tether.addr.to_string()),
        "the address the client reached"
    );
}

/// Sends `GET /x HTTP/1.0` without `Host` to `reached`; the `Host` that `server` saw.
async fn host_of_an_http10_request_without_one(reached: SocketAddr, server: &TestBackend) -> Option<String> {
    let reply = raw_exchange(reached, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
        "{reply}"
    );
    let seen = server.last_headers();
    seen.get("host").map(|h| h.to_str().unwrap().to_string())
}

#[tokio::test]
async fn behind_a_wildcard_bind_the_address_reached_is_the_connections_own() {
    let s1 = backend("s1").start().await;
    let frontend = Frontend::new("public").bind("0.0.0.0:0").default_backend("pool");
    let tether = start_tether(&Config::simple(frontend, pool().server(&s1))).await;
    let reached = SocketAddr::from(([127, 0, 0, 1], tether.addr.port()));
    assert_eq!(
        host_of_an_http10_request_without_one(reached, &s1).await,
        Some(reached.to_string()),
        "not the wildcard the listener is bound to"
    );
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_whole_response() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let requests: [&[u8]; 2] = [
        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
    ];
    for request in requests {
        let mut stream = TcpStream::connect(tether.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        stream.shutdown().await.unwrap();
        let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "{:?}: {reply:?}",
            String::from_utf8_lossy(request)
        );
        let expected = if request.starts_with(b"POST") {
            "hello world"
        } else {
            "s1"
        };
        assert!(reply.ends_with(expected), "the whole body: {reply:?}");
        assert!(closed, "then tether closes");
    }
}

#[tokio::test]
async fn a_server_stalling_mid_body_is_cut_after_server_body() {
    let server_saw_close = Arc::new(Mutex::new(None::<bool>));
    let saw = server_saw_close.clone();
    let server = RawServer::start(move |mut stream| {
        let saw = saw.clone();
        async move {
            if read_head(&mut stream).await.is_none() {
                return;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            // Then nothing, until tether gives up on it.
            let mut buf = [0u8; 64];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
            *saw.lock().unwrap() = Some(closed);
        }
    })
    .await;
    let config = Config::over(pool().server(("s1", server.addr)).server_body_timeout("300ms"));
    let tether = start_tether(&config).await;
    let mut client = TcpStream::connect(tether.addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (reply, closed) = read_until_closed(&mut client, Duration::from_secs(3)).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("0123456789"),
        "{reply:?}"
    );
    assert!(closed, "the client connection is closed, not held forever");
    let server_closed = eventually(Duration::from_secs(3), async || {
        *server_saw_close.lock().unwrap() == Some(true)
    })
    .await;
    assert!(server_closed.is_some(), "the server's connection is closed too");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_client_body() {
    let server_cut = Arc::new(Mutex::new(false));
    let cut = server_cut.clone();
    let server = RawServer::start(move |mut stream| {
        let cut = cut.clone();
        async move {
            if read_head(&mut stream).await.is_none() {
                return;
            }
            let len = 256 * 1024 * 1024;
            if stream
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..len / chunk.len() {
                if stream.write_all(&chunk).await.is_err() {
                    *cut.lock().unwrap() = true;
                    return;
                }
            }
        }
    })
    .await;
    let config = Config::simple(
        Frontend::public().client_body_timeout("300ms"),
        pool().server(("s1", server.addr)),
    );
    let tether = start_tether(&config).await;
    let mut client = TcpStream::connect(tether.addr).await.unwrap();
    client.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    // The client reads nothing: once the socket buffers are full, tether
    // waits on it, and gives up after `client_body`.
    let cut = eventually(Duration::from_secs(5), async || *server_cut.lock().unwrap()).await;
    assert!(cut.is_some(), "the server's connection is closed, its slot freed");
    drop(client);
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_gets_408_after_client_body() {
    // A server that reads the request and waits for all of it before answering.
    let server = RawServer::start(|mut stream| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    let config = Config::simple(
        Frontend::public().client_body_timeout("300ms"),
        pool().server(("s1", server.addr)),
    );
    let tether = start_tether(&config).await;
    let mut client = TcpStream::connect(tether.addr).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (reply, closed) = read_until_closed(&mut client, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(closed);
}

#[tokio::test]
async fn a_101_with_a_wrong_accept_gets_502_and_no_tunnel() {
    let server = RawServer::start(|mut stream| async move {
        if read_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBkaWdlc3Q=\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    })
    .await;
    let tether = start_tether(&Config::over(pool().server(("s1", server.addr)))).await;
    let result = raw_exchange(
        tether.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(result.starts_with("HTTP/1.1 502"), "{result:?}");
    assert!(
        result.contains("Sec-WebSocket-Accept"),
        "the reason is named: {result:?}"
    );
}

#[tokio::test]
async fn an_upstream_connection_whose_server_answered_before_the_body_ended_is_closed() {
    let closed_first = Arc::new(Mutex::new(None::<bool>));
    let saw = closed_first.clone();
    let server = RawServer::start(move |mut stream| {
        let saw = saw.clone();
        async move {
            // Answer every head at once, without reading any body.
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            if head.starts_with("POST") {
                let mut buf = [0u8; 1024];
                let closed = loop {
                    match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break true,
                        Ok(Ok(_)) => continue,
                        Err(_) => break false,
                    }
                };
                *saw.lock().unwrap() = Some(closed);
            }
        }
    })
    .await;
    let tether = start_tether(&Config::over(pool().server(("s1", server.addr)))).await;
    let mut client = TcpStream::connect(tether.addr).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut reply = Vec::new();
    while !reply.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(3), client.read(&mut buf))
            .await
            .expect("the early answer")
            .unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    // The client stays connected; the server's connection must not wait for
    // the rest of the body, nor serve the next request.
    eventually(Duration::from_secs(4), async || closed_first.lock().unwrap().is_some()).await;
    assert_eq!(
        *closed_first.lock().unwrap(),
        Some(true),
        "tether closed the server's connection"
    );
    let reply = raw_exchange(
        tether.addr,
        b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        2,
        "the next request used a new connection"
    );
    drop(client);
}

#[tokio::test]
async fn connections_whose_request_bodies_were_sent_whole_are_still_reused() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let mut client = TcpStream::connect(tether.addr).await.unwrap();
    for i in 0..6 {
        let request = if i % 2 == 0 {
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_string()
        } else {
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string()
        };
        client.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&reply).contains("hello") {
            let n = tokio::time::timeout(Duration::from_secs(3), client.read(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
            assert!(n > 0);
            reply.extend_from_slice(&buf[..n]);
        }
        // A chunked echo ends with its last chunk.
        if i % 2 == 1 {
            while !reply.ends_with(b"0\r\n\r\n") {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0);
                reply.extend_from_slice(&buf[..n]);
            }
        }
    }
    assert_eq!(s1.requests(), 6);
    assert_eq!(s1.connections(), 1, "one upstream connection served every request");
}

#[tokio::test]
async fn a_request_without_host_or_with_two_is_refused_with_400_before_any_server_sees_it() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    // RFC 9112 §3.2: HTTP/1.1 without Host, and any request with two.
    for (request, why) in [
        (
            &b"GET /a HTTP/1.1\r\n\r\n"[..],
            "an HTTP/1.1 request must have a Host header",
        ),
        (
            &b"GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
            "the request has more than one Host header",
        ),
        (
            &b"GET /a HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
            "the request has more than one Host header",
        ),
    ] {
        let reply = raw_exchange(tether.addr, request).await;
        assert_eq!(reply.split_whitespace().nth(1), Some("400"), "{reply}");
        assert!(reply.contains(why), "the body says why: {reply}");
    }
    assert_eq!(s1.requests(), 0, "no server saw a request with an unknown host");
    // Still served: HTTP/1.0 without Host, and an absolute-form target (it names the host).
    for request in [
        &b"GET /a HTTP/1.0\r\n\r\n"[..],
        &b"GET http://a.example/a HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
    ] {
        let reply = raw_exchange(tether.addr, request).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "{reply}"
        );
    }
    assert_eq!(s1.requests(), 2);
}
