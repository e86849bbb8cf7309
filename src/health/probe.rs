//! The three active checks, each one exchange on a fresh connection:
//! `tcp` connects, `http` sends one HTTP/1.1 request and reads the status
//! (and at most `BODY_LIMIT` bytes of body), `websocket` completes a real
//! handshake (RFC 6455 §4.1) and closes with a Close frame (§5.5.1).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::proxy_header::ProxyVersion;
use crate::tls::{UpstreamStream, UpstreamTls};

/// How much of a response body an HTTP check reads, at most.
pub const BODY_LIMIT: usize = crate::config::types::defaults::CHECK_BODY_LIMIT;

/// The User-Agent of tether's checks, so servers can tell them from clients.
const CHECK_AGENT: &str = concat!("tether-health-check/", env!("CARGO_PKG_VERSION"));

/// What one check does: the config model's check, as it is.
pub use crate::config::model::{Check as Probe, HttpCheck as HttpProbe};

/// Why a check failed; the text goes into the log line of a flip.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The whole check took longer than `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The TCP connect failed (refused, unreachable, …).
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The HTTP exchange broke off.
    #[error("HTTP request failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a path or host the URI rules refuse).
    #[error("the check request is invalid: {0}")]
    Request(String),
    /// The status is not among the expected ones.
    #[error("status {got} is not {expected}")]
    Status {
        /// What the server answered.
        got: u16,
        /// What passes.
        expected: String,
    },
    /// The body lacks the expected text.
    #[error("the first {read} bytes of the body do not contain {expected:?}")]
    Body {
        /// How many bytes were searched.
        read: usize,
        /// The substring looked for.
        expected: String,
    },
    /// The TLS handshake with the server failed or timed out.
    #[error("{0}")]
    Tls(io::Error),
    /// The WebSocket handshake or close failed.
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(tungstenite::Error),
}

/// How a check reaches its server: over TLS or not, and whether its
/// connection starts with a PROXY header (`health.send_proxy`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reach<'a> {
    /// TLS toward the server, if it is reached over TLS.
    pub tls: Option<&'a UpstreamTls>,
    /// The PROXY header version written first, naming the check's own connection.
    pub send_proxy: Option<ProxyVersion>,
}

/// Runs one check of `address` within `timeout`; on success, how long it took.
/// With TLS, every check (even `tcp`) includes the TLS handshake, as traffic
/// would; with `send_proxy`, the PROXY header before it.
pub async fn check(
    probe: &Probe,
    address: SocketAddr,
    tls: Reach<'_>,
    timeout: Duration,
) -> Result<Duration, CheckError> {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        match probe {
            Probe::Tcp => tcp(address, tls, timeout).await,
            Probe::Http(http) => http_check(http, address, tls, timeout).await,
            Probe::WebSocket { path, host } => websocket(path, host.as_deref(), address, tls, timeout).await,
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(CheckError::Timeout(timeout)),
    }
}

async fn connect(address: SocketAddr, reach: Reach<'_>, timeout: Duration) -> Result<UpstreamStream, CheckError> {
    let mut stream = TcpStream::connect(address).await.map_err(CheckError::Connect)?;
    // Best effort: a check works the same with Nagle on.
    let _ = stream.set_nodelay(true);
    if let Some(version) = reach.send_proxy {
        // The check's own connection: tether's address as source, the server as destination.
        let local = stream.local_addr().map_err(CheckError::Connect)?;
        let header = crate::proxy_header::encode(version, local, address);
        stream.write_all(&header).await.map_err(CheckError::Connect)?;
    }
    UpstreamTls::maybe_start(reach.tls, stream, timeout)
        .await
        .map_err(CheckError::Tls)
}

async fn tcp(address: SocketAddr, tls: Reach<'_>, timeout: Duration) -> Result<(), CheckError> {
    connect(address, tls, timeout).await.map(drop)
}

/// Aborts the HTTP connection task when the check is over, whatever the outcome.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_check(
    probe: &HttpProbe,
    address: SocketAddr,
    tls: Reach<'_>,
    timeout: Duration,
) -> Result<(), CheckError> {
    let host = probe.host.clone().unwrap_or_else(|| address.to_string());
    let request = Request::builder()
        .method(probe.method.clone())
        .uri(probe.path.as_str())
        .header(HOST, host)
        .header(USER_AGENT, CHECK_AGENT)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|err| CheckError::Request(err.to_string()))?;
    let stream = connect(address, tls, timeout).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let _connection = AbortOnDrop(tokio::spawn(connection).abort_handle());
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    if !probe.expect_status.contains(status) {
        return Err(CheckError::Status {
            got: status,
            expected: probe.expect_status.to_string(),
        });
    }
    let Some(expected) = &probe.expect_body else {
        return Ok(());
    };
    let mut body = response.into_body();
    let mut read = Vec::new();
    while read.len() < BODY_LIMIT {
        let Some(frame) = body.frame().await.transpose()? else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            let take = data.len().min(BODY_LIMIT - read.len());
            read.extend_from_slice(&data[..take]);
            if contains(&read, expected.as_bytes()) {
                return Ok(());
            }
        }
    }
    Err(CheckError::Body {
        read: read.len(),
        expected: expected.clone(),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

async fn websocket(
    path: &str,
    host: Option<&str>,
    address: SocketAddr,
    tls: Reach<'_>,
    timeout: Duration,
) -> Result<(), CheckError> {
    let authority = host.map_or_else(|| address.to_string(), str::to_string);
    let request = format!("ws://{authority}{path}")
        .into_client_request()
        .map_err(|err| CheckError::Request(err.to_string()))?;
    let stream = connect(address, tls, timeout).await?;
    let (mut ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|err| match err {
            tungstenite::Error::Http(response) => CheckError::Status {
                got: response.status().as_u16(),
                expected: "101".to_string(),
            },
            other => CheckError::WebSocket(other),
        })?;
    // Close politely (1000); the server's reply is not awaited.
    ws.close(None).await.map_err(CheckError::WebSocket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::StatusRange;
    use http::Method;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn substrings_are_found_anywhere_in_what_was_read() {
        assert!(contains(b"status: ready\n", b"ready"));
        assert!(!contains(b"status: starting", b"ready"));
        assert!(contains(b"x", b""));
    }

    #[tokio::test]
    async fn a_server_that_accepts_but_never_answers_fails_the_http_check_at_the_timeout() {
        tokio::time::pause();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        });
        let probe = Probe::Http(HttpProbe {
            method: Method::GET,
            path: "/".into(),
            host: None,
            expect_status: StatusRange { low: 200, high: 399 },
            expect_body: None,
        });
        let started = tokio::time::Instant::now();
        let outcome = check(&probe, address, Reach::default(), Duration::from_secs(3)).await;
        assert!(
            matches!(outcome, Err(CheckError::Timeout(t)) if t == Duration::from_secs(3)),
            "{outcome:?}"
        );
        // Virtual time: exactly the timeout, give or take the timer's 1 ms granularity.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited <= Duration::from_millis(3002),
            "{waited:?}"
        );
        held.abort();
    }

    #[tokio::test]
    async fn a_tcp_check_of_a_closed_port_fails_with_the_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let outcome = check(&Probe::Tcp, address, Reach::default(), Duration::from_secs(2)).await;
        assert!(matches!(outcome, Err(CheckError::Connect(_))), "{outcome:?}");
    }
}
