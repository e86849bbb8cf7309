//! Request smuggling: every ambiguous framing is refused with 400 and the
//! connection closed, and what reaches the server is checked byte by byte.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that records every byte it receives and answers each request
/// head it sees (once its body, if any, has had a moment to arrive) with a
/// small 200, so tests can compare what tether forwarded with what the
/// client sent.
struct RecordingServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
}

impl RecordingServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(record(stream, log.clone()));
            }
        });
        Self { addr, received }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

async fn record(mut stream: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered = 0;
    loop {
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                seen.extend_from_slice(&buf[..n]);
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            Err(_) => {
                // Quiet for a moment: answer every complete request body that arrived.
                let text = String::from_utf8_lossy(&seen).into_owned();
                let complete = text.matches("\r\n\r\n").count();
                while answered < complete {
                    answered += 1;
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Sends `request` on a fresh connection, returns the reply and whether
/// tether closed the connection afterwards.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

async fn tether_over(server: &RecordingServer) -> RunningTether {
    start_tether(&Config::over(pool().server(("s1", server.addr)))).await
}

#[tokio::test]
async fn ambiguous_framing_gets_400_and_a_closed_connection_and_reaches_no_server() {
    let server = RecordingServer::start().await;
    let tether = tether_over(&server).await;
    let cases: [(&str, &[u8]); 11] = [
        (
            "Content-Length and Transfer-Encoding",
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        (
            "Transfer-Encoding and Content-Length",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        (
            "differing duplicate Content-Length",
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 41\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        (
            "Transfer-Encoding other than a final chunked",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding without chunked",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
        ),
        (
            "obfuscated Transfer-Encoding",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obsolete line folding",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        (
            "NUL in a header value",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Evil: a\x00b\r\n\r\n",
        ),
        (
            "bare CR in a header value",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Evil: a\rGET /smuggled HTTP/1.1\r\n\r\n",
        ),
        (
            "chunk size overflowing 64 bits",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "invalid chunk size",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in cases {
        let (reply, closed) = exchange(tether.addr, request).await;
        if !(reply.starts_with("HTTP/1.1 400") && closed && reply.matches("HTTP/1.1").count() == 1) {
            failures.push(format!("{what}: got {reply:?}, closed: {closed}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        !server.received().contains("smuggled"),
        "no smuggled request reached the server: {:?}",
        server.received()
    );
}

#[tokio::test]
async fn a_chunked_request_reaches_the_server_with_one_unambiguous_framing() {
    let server = RecordingServer::start().await;
    let tether = tether_over(&server).await;
    let request = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    let (reply, _) = exchange(tether.addr, request).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let received = server.received();
    let (head, body) = received.split_once("\r\n\r\n").expect("a whole head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /upload http/1.1\r\n"), "{head}");
    assert_eq!(head.matches("transfer-encoding: chunked").count(), 1, "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // hyper re-frames the body: the same bytes in chunks, ended by the last chunk.
    let mut decoded = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
            assert_eq!(after, "\r\n", "nothing follows the last chunk");
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("CRLF after chunk data");
    }
    assert_eq!(decoded, "hello world");
}

#[tokio::test]
async fn a_chunked_body_over_max_body_gets_413_and_the_server_sees_it_cut_off() {
    let server = RecordingServer::start().await;
    let config = Config::simple(Frontend::public().max_body(10), pool().server(("s1", server.addr)));
    let tether = start_tether(&config).await;
    let request =
        b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
    let (reply, closed) = exchange(tether.addr, request).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply:?}");
    assert!(closed, "the connection is closed after the 413");
    let received = server.received();
    assert!(
        !received.contains("\r\n0\r\n\r\n"),
        "the server never saw a complete body: {received:?}"
    );
    // Within the limit, the same request passes.
    let small = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n0\r\n\r\n";
    let (reply, _) = exchange(tether.addr, small).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}

#[tokio::test]
async fn a_pipelined_request_with_both_framings_is_refused_too() {
    let server = RecordingServer::start().await;
    let tether = tether_over(&server).await;
    // Three requests in one write: a GET, a POST with a body, then the
    // ambiguous one; the policy holds for every request, not only a read's first.
    let request = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
        POST /third HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
        GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let (reply, closed) = exchange(tether.addr, request).await;
    let statuses: Vec<&str> = reply
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &reply[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "400"], "{reply:?}");
    assert!(closed, "the connection is closed after the 400");
    let received = server.received();
    assert!(!received.contains("/third"), "{received:?}");
    assert!(!received.contains("smuggled"), "{received:?}");
}
