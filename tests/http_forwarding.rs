//! Plain HTTP through tether: bodies streamed byte-exact, keep-alive on both
//! sides, hop-by-hop headers removed, forwarding headers added, Host kept.

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tether_test_support::*;

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 11) as u8)
        .collect()
}

#[tokio::test]
async fn a_ten_mebibyte_content_length_body_is_forwarded_byte_exact() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let payload = Bytes::from(pattern(10 * 1024 * 1024, 7));
    let request = Request::post("/upload")
        .header("host", "tether.test")
        .header("content-length", payload.len())
        .body(Full::new(payload.clone()).map_err(|never| match never {}).boxed())
        .unwrap();
    let mut client = http_client(tether.addr).await;
    let (status, headers, body) = send(&mut client, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-server"], "s1");
    assert_eq!(body.len(), payload.len());
    assert!(body == payload, "the 10 MiB echo differs");
}

#[tokio::test]
async fn a_chunked_body_is_streamed_byte_exact() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let chunks: Vec<Bytes> = (0..64u32)
        .map(|i| Bytes::from(pattern(1000 + i as usize * 37, i)))
        .collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let frames = stream::iter(chunks.into_iter().map(|c| Ok::<_, hyper::Error>(Frame::data(c))));
    let request = Request::post("/chunked")
        .header("host", "tether.test")
        .body(StreamBody::new(frames).boxed())
        .unwrap();
    let mut client = http_client(tether.addr).await;
    let (status, _, body) = send(&mut client, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), expected.len());
    assert!(body[..] == expected[..], "the chunked echo differs");
    let seen = s1.last_headers();
    assert_eq!(
        seen["transfer-encoding"], "chunked",
        "a body of unknown length goes on chunked"
    );
}

#[tokio::test]
async fn keep_alive_is_reused_on_both_sides() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let mut client = http_client(tether.addr).await;
    for i in 0..20 {
        let (status, _, body) = send(&mut client, get_request(&format!("/req/{i}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"s1");
    }
    assert_eq!(s1.requests(), 20);
    assert_eq!(s1.connections(), 1, "tether should reuse one upstream connection");
    // A second client reuses the pooled upstream connection too.
    let mut other = http_client(tether.addr).await;
    let (status, _, _) = send(&mut other, get_request("/other")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s1.connections(), 1);
}

#[tokio::test]
async fn a_server_that_closed_its_idle_connection_costs_the_client_nothing() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let mut client = http_client(tether.addr).await;
    // `Connection: close` from the server: each upstream connection dies after its answer,
    // so tether must not hand a dead pooled connection to the next request.
    for i in 0..5 {
        let mut request = get_request(&format!("/close/{i}"));
        request.headers_mut().insert("x-close", "1".parse().unwrap());
        let (status, _, body) = send(&mut client, request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"s1");
    }
    assert_eq!(s1.connections(), 5);
    let (status, _, _) = send(&mut client, get_request("/after")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    let s1 = backend("s1").start().await;
    let config = Config::simple(
        Frontend::public().forward_headers(&["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"]),
        pool().server(&s1),
    );
    let tether = start_tether(&config).await;
    let mut client = http_client(tether.addr).await;
    let mut request = get_request("/headers");
    let headers = request.headers_mut();
    headers.insert("host", "chat.example.com".parse().unwrap());
    headers.insert("connection", "keep-alive, X-Hop".parse().unwrap());
    headers.insert("x-hop", "secret".parse().unwrap());
    headers.insert("keep-alive", "timeout=5".parse().unwrap());
    headers.insert("te", "trailers".parse().unwrap());
    headers.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    headers.insert("x-end-to-end", "kept".parse().unwrap());
    let (status, _, _) = send(&mut client, request).await;
    assert_eq!(status, StatusCode::OK);
    let seen = s1.last_headers();
    assert_eq!(seen["host"], "chat.example.com", "Host is kept");
    assert_eq!(seen["x-end-to-end"], "kept");
    for hop in ["x-hop", "keep-alive", "te"] {
        assert!(!seen.contains_key(hop), "{hop} must not reach the server: {seen:?}");
    }
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "chat.example.com");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=http;host=\"chat.example.com\"");
}

#[tokio::test]
async fn forwarding_headers_follow_the_frontend_setting() {
    let s1 = backend("s1").start().await;
    let config = Config::simple(Frontend::public().forward_headers(&[]), pool().server(&s1));
    let tether = start_tether(&config).await;
    let (status, _, _) = get(tether.addr, "/").await;
    assert_eq!(status, StatusCode::OK);
    let seen = s1.last_headers();
    assert!(
        !seen.contains_key("x-forwarded-for") && !seen.contains_key("forwarded"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_absolute_form_target_reaches_the_server_in_origin_form() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let reply = raw_exchange(
        tether.addr,
        b"GET http://chat.example.com/abs?x=1 HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(s1.last_headers()["host"], "chat.example.com");
}
