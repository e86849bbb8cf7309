//! Bad input and slow clients: tether answers clearly, closes what it must, and stays up.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::StatusCode;
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn closes_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn malformed_requests_get_400_and_tether_stays_up() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let cases: [&[u8]; 5] = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ];
    for case in cases {
        let reply = raw_exchange(tether.addr, case).await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "{:?} got {reply:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(s1.requests(), 0, "no malformed request reached the server");
    assert_eq!(server_of(tether.addr, "/").await, "s1");
}

#[tokio::test]
async fn a_head_that_dribbles_in_is_cut_at_the_http_request_timeout() {
    let s1 = backend("s1").start().await;
    let config = Config::simple(
        Frontend::public().http_request_timeout("300ms").client_timeout("5s"),
        pool().server(&s1),
    );
    let tether = start_tether(&config).await;
    let mut slow = TcpStream::connect(tether.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let writer = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
    };
    let started = Instant::now();
    writer.await;
    let waited = started.elapsed() + closes_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        waited < Duration::from_millis(1500),
        "closed after {waited:?}, expected about 300ms"
    );
    assert_eq!(s1.requests(), 0);
    assert_eq!(server_of(tether.addr, "/").await, "s1", "other clients are served");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_client_timeout() {
    let s1 = backend("s1").start().await;
    let config = Config::simple(
        Frontend::public().client_timeout("400ms").http_request_timeout("5s"),
        pool().server(&s1),
    );
    let tether = start_tether(&config).await;
    let mut stream = TcpStream::connect(tether.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle = closes_within(&mut stream, Duration::from_secs(3)).await;
    assert!(idle >= Duration::from_millis(300), "closed too early: {idle:?}");
}

#[tokio::test]
async fn a_connection_in_use_is_not_cut_by_the_client_timeout() {
    let s1 = backend("s1").delay(Duration::from_millis(600)).start().await;
    let config = Config::simple(
        Frontend::public().client_timeout("200ms").http_request_timeout("200ms"),
        pool().server(&s1),
    );
    let tether = start_tether(&config).await;
    let (status, _, body) = get(tether.addr, "/slow").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"s1");
}

// On the paused clock: the tunnel timeout is tokio time, and the sockets are
// in-process on this one thread.
#[tokio::test(start_paused = true)]
async fn an_idle_tunnel_is_closed_at_the_tunnel_timeout() {
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().tunnel_timeout("400ms").server(&s1))).await;
    let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the idle tunnel stayed open");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_graceful_stop_lets_the_request_in_flight_finish() {
    let s1 = backend("s1").delay(Duration::from_millis(500)).start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    let addr = tether.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(tether.stop());
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"s1");
    stopping.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after stop"
    );
}
