//! Why tether answered a request itself: one error type for the whole
//! request path, whose variant decides the status code, the side at fault,
//! and the response the client gets (pingora's rule: an error carries its
//! source, and the source decides between 4xx, 502, 503 and 504).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use super::body::ClientBodyError;
use super::exchange::{Exchange, ResponseBody};
use super::log::{RequestId, REQUEST_ID_HEADER};
use super::pool::ConnectError;
use super::upgrade::{BadHandshake, BadSwitch};

/// Who is at fault for a [`ProxyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something tether refuses (a 4xx).
    Client,
    /// The servers could not take or answer the request (502, 503, 504).
    Server,
    /// tether's own configuration has no place for the request (503).
    Tether,
}

/// A request tether answers itself instead of forwarding a server's response.
/// Its `Display` is the reason written in the response body and the access log.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// RFC 9112 §6.1 allows refusing a head with both framings; a front-line
    /// proxy should (request smuggling).
    #[error("the request has both Content-Length and Transfer-Encoding")]
    FramingConflict,
    /// `redirect_https` needs a host to redirect to.
    #[error("no valid Host header to redirect to https")]
    NoHostToRedirect,
    /// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request
    /// with more than one; the host it is for is unknown or ambiguous.
    #[error("{0}")]
    BadHost(&'static str),
    /// The https location would not be a valid header value.
    #[error("the request cannot be redirected")]
    Unredirectable,
    /// A WebSocket handshake that breaks RFC 6455 §4.1.
    #[error(transparent)]
    BadHandshake(#[from] BadHandshake),
    /// The request target is over the frontend's `max_uri`.
    #[error("the request target is longer than this frontend accepts")]
    TargetTooLong,
    /// The declared `Content-Length` is over the frontend's `max_body`.
    #[error("the request body is larger than this frontend accepts")]
    DeclaredBodyTooLarge,
    /// The client's address opened WebSocket handshakes faster than `per_ip_rate`.
    #[error("too many WebSocket handshakes from your address: retry later")]
    HandshakeRate {
        /// Until the next handshake from the address would pass.
        wait: Duration,
    },
    /// The client's address already holds the frontend's
    /// `per_ip.max_connections`: refused before any request is read.
    #[error("too many connections from your address")]
    TooManyConnections,
    /// The handshake's `Origin` is not among the allowed ones.
    #[error("this origin may not open a WebSocket here")]
    OriginNotAllowed,
    /// A streamed body went over `max_body` (it declared no length, or a false one).
    #[error("the request body is larger than this frontend accepts ({limit} bytes)")]
    BodyTooLarge {
        /// The frontend's `limits.max_body`.
        limit: u64,
    },
    /// The body broke its framing (an invalid chunk size, a connection cut mid-body).
    #[error("the request body is malformed: {cause}")]
    BodyMalformed {
        /// hyper's description of the fault.
        cause: String,
    },
    /// A reload removed the frontend that accepted the connection.
    #[error("this frontend is no longer configured")]
    FrontendGone,
    /// No rule matched and there is no default backend.
    #[error("no route matches this request and the frontend has no default_backend")]
    NoRoute,
    /// No server was available at all (all down, full or weight 0).
    #[error("no server of backend `{backend}` is available")]
    NoServer {
        /// The backend routed to.
        backend: Arc<str>,
    },
    /// The client is stuck to a server that is unavailable and `redispatch` is off.
    #[error(
        "this session is stuck to server `{server}` of backend `{backend}`, which is unavailable, and redispatch is off"
    )]
    StuckUnavailable {
        /// The backend routed to.
        backend: Arc<str>,
        /// The server the client is stuck to.
        server: Arc<str>,
    },
    /// Every server stayed at `maxconn` for the whole `queue_timeout`.
    #[error("every server of backend `{backend}` stayed at maxconn for {waited:?}: try again shortly")]
    QueueTimeout {
        /// The backend routed to.
        backend: Arc<str>,
        /// The backend's `queue_timeout`.
        waited: Duration,
    },
    /// Servers were tried and every connect failed.
    #[error("no server of backend `{backend}` accepted the connection ({})", last_failure(.last))]
    AllFailed {
        /// The backend routed to.
        backend: Arc<str>,
        /// The last failed connect (`None` when none was tried).
        last: Option<Box<ConnectFailure>>,
    },
    /// A pooled connection was closed by the server, and a fresh one failed.
    #[error("server `{server}` could not be reached again: {cause}")]
    Unreachable {
        /// The server chosen.
        server: Arc<str>,
        /// Why the fresh connection failed (boxed: a rare error keeps the common result small).
        #[source]
        cause: Box<ConnectError>,
    },
    /// The server closed or broke the connection before its response head.
    #[error("server `{server}` failed before answering: {cause}")]
    ServerFailed {
        /// The server chosen.
        server: Arc<str>,
        /// What hyper saw.
        #[source]
        cause: hyper::Error,
    },
    /// The server answered a WebSocket handshake with a 101 a client must
    /// not believe (RFC 6455 §4.1); its connection is closed.
    #[error("server `{server}` switched protocols wrongly: {cause}")]
    BadSwitch {
        /// The server chosen.
        server: Arc<str>,
        /// What was wrong with its 101.
        #[source]
        cause: BadSwitch,
    },
    /// The client sent no byte of its request body for the frontend's
    /// `timeouts.client_body` (HAProxy's `timeout client`).
    #[error("the request body stalled: nothing arrived for {timeout:?}")]
    BodyStalled {
        /// The frontend's `timeouts.client_body`.
        timeout: Duration,
    },
    /// The server did not start its response within the backend's `server` timeout.
    #[error("server `{server}` did not answer within {timeout:?}")]
    ServerTimeout {
        /// The server chosen.
        server: Arc<str>,
        /// The backend's `server` timeout.
        timeout: Duration,
    },
}

/// One failed connect to a server: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("`{server}`: {error}")]
pub struct ConnectFailure {
    /// The server tried.
    pub server: Arc<str>,
    /// Why the connection could not be made.
    #[source]
    pub error: ConnectError,
}

/// The text of the last failed connect, empty when there was none.
fn last_failure(last: &Option<Box<ConnectFailure>>) -> String {
    last.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl From<&ClientBodyError> for ProxyError {
    fn from(fault: &ClientBodyError) -> Self {
        match fault {
            ClientBodyError::TooLarge { limit } => Self::BodyTooLarge { limit: *limit },
            ClientBodyError::Malformed(cause) => Self::BodyMalformed {
                cause: cause.to_string(),
            },
            ClientBodyError::Stalled { timeout } => Self::BodyStalled { timeout: *timeout },
            // Only after the response ended, so no client sees it; kept apart all the same.
            ClientBodyError::Abandoned => Self::BodyMalformed {
                cause: fault.to_string(),
            },
        }
    }
}

impl ProxyError {
    /// The status code of the response tether writes.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::FramingConflict
            | Self::NoHostToRedirect
            | Self::BadHost(_)
            | Self::Unredirectable
            | Self::BadHandshake(_)
            | Self::BodyMalformed { .. } => StatusCode::BAD_REQUEST,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::DeclaredBodyTooLarge | Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TargetTooLong => StatusCode::URI_TOO_LONG,
            Self::HandshakeRate { .. } | Self::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::AllFailed { .. } | Self::Unreachable { .. } | Self::ServerFailed { .. } | Self::BadSwitch { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::FrontendGone
            | Self::NoRoute
            | Self::NoServer { .. }
            | Self::StuckUnavailable { .. }
            | Self::QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ServerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Who is at fault.
    pub fn side(&self) -> Side {
        match self {
            Self::FramingConflict
            | Self::NoHostToRedirect
            | Self::BadHost(_)
            | Self::Unredirectable
            | Self::BadHandshake(_)
            | Self::TargetTooLong
            | Self::DeclaredBodyTooLarge
            | Self::HandshakeRate { .. }
            | Self::TooManyConnections
            | Self::OriginNotAllowed
            | Self::BodyTooLarge { .. }
            | Self::BodyMalformed { .. }
            | Self::BodyStalled { .. } => Side::Client,
            Self::FrontendGone | Self::NoRoute => Side::Tether,
            Self::NoServer { .. }
            | Self::StuckUnavailable { .. }
            | Self::QueueTimeout { .. }
            | Self::AllFailed { .. }
            | Self::Unreachable { .. }
            | Self::ServerFailed { .. }
            | Self::BadSwitch { .. }
            | Self::ServerTimeout { .. } => Side::Server,
        }
    }

    /// Whether the client connection closes after the response: after a
    /// malformed or refused request (its unread body, if any, cannot be
    /// trusted to frame the next one) and when the frontend is gone.
    pub fn closes_connection(&self) -> bool {
        match self.side() {
            Side::Client => !matches!(self, Self::HandshakeRate { .. }),
            Side::Tether => matches!(self, Self::FrontendGone),
            Side::Server => false,
        }
    }

    /// `Retry-After` in whole seconds, for a refusal a client should retry later.
    pub fn retry_after(&self, request_id: RequestId) -> Option<u64> {
        match self {
            // The whole seconds until the next handshake would pass.
            Self::HandshakeRate { wait } => Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)),
            // A connection slot of the address frees when one of its connections closes.
            Self::TooManyConnections => Some(1),
            // 1–5 s, varied per request so refused clients do not come back together.
            Self::QueueTimeout { .. } => Some(1 + spread_of(request_id, 5)),
            _ => None,
        }
    }

    /// The first line of the response body: status, reason and what happened.
    fn summary(&self) -> String {
        let status = self.status();
        format!(
            "{} {}: {self}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    }

    /// The whole HTTP/1.1 response, as bytes to write on a connection that
    /// never reached hyper (refused before any request was read); it closes
    /// the connection and names no request id (there is no request).
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let status = self.status();
        let body = self.summary();
        let retry_after = self
            .retry_after(RequestId::next())
            .map_or(String::new(), |seconds| format!("retry-after: {seconds}\r\n"));
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n{retry_after}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }

    /// The short plain-text response tether writes for this error, naming
    /// what happened and the request id (also in the access log).
    pub fn into_response(self, mut exchange: Box<Exchange>) -> Response<ResponseBody> {
        let status = self.status();
        let request_id = exchange.log.request_id;
        let message = self.to_string();
        if status.is_server_error() {
            tracing::warn!(request_id = %request_id, status = status.as_u16(), cause = message.as_str(), "request failed");
        }
        let body = format!("{}request id: {request_id}\n", self.summary());
        exchange.log.status = status.as_u16();
        exchange.log.error = Some(message);
        let mut response = Response::new(ResponseBody::local(Bytes::from(body), exchange));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(id) = HeaderValue::from_str(&request_id.to_string()) {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        if self.closes_connection() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after(request_id) {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An integer in `0..n` derived from a request id (ids are well mixed, so
/// this varies from request to request like a random number).
fn spread_of(request_id: RequestId, n: u64) -> u64 {
    request_id.as_u64() % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// A hyper error of the kind a server's early close gives.
    fn hyper_error() -> hyper::Error {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let (client, server) = tokio::io::duplex(64);
            drop(server);
            let io = hyper_util::rt::TokioIo::new(client);
            let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(io)
                .await
                .unwrap();
            tokio::spawn(connection);
            sender
                .send_request(http::Request::new(http_body_util::Empty::new()))
                .await
                .unwrap_err()
        })
    }

    /// Every variant, with the status, side and connection close it must give.
    fn every_variant() -> Vec<(ProxyError, u16, Side, bool)> {
        let timeout = Duration::from_secs(1);
        vec![
            (ProxyError::FramingConflict, 400, Side::Client, true),
            (ProxyError::NoHostToRedirect, 400, Side::Client, true),
            (ProxyError::Unredirectable, 400, Side::Client, true),
            (BadHandshake::NotGet.into(), 400, Side::Client, true),
            (ProxyError::TargetTooLong, 414, Side::Client, true),
            (ProxyError::DeclaredBodyTooLarge, 413, Side::Client, true),
            (ProxyError::HandshakeRate { wait: timeout }, 429, Side::Client, false),
            (ProxyError::TooManyConnections, 429, Side::Client, true),
            (ProxyError::OriginNotAllowed, 403, Side::Client, true),
            (ProxyError::BodyTooLarge { limit: 10 }, 413, Side::Client, true),
            (
                ProxyError::BodyMalformed {
                    cause: "bad chunk".into(),
                },
                400,
                Side::Client,
                true,
            ),
            (ProxyError::FrontendGone, 503, Side::Tether, true),
            (ProxyError::NoRoute, 503, Side::Tether, false),
            (ProxyError::NoServer { backend: name("b") }, 503, Side::Server, false),
            (
                ProxyError::StuckUnavailable {
                    backend: name("b"),
                    server: name("s1"),
                },
                503,
                Side::Server,
                false,
            ),
            (
                ProxyError::QueueTimeout {
                    backend: name("b"),
                    waited: timeout,
                },
                503,
                Side::Server,
                false,
            ),
            (
                ProxyError::AllFailed {
                    backend: name("b"),
                    last: None,
                },
                502,
                Side::Server,
                false,
            ),
            (
                ProxyError::Unreachable {
                    server: name("s1"),
                    cause: Box::new(ConnectError::Timeout(timeout)),
                },
                502,
                Side::Server,
                false,
            ),
            (
                ProxyError::ServerFailed {
                    server: name("s1"),
                    cause: hyper_error(),
                },
                502,
                Side::Server,
                false,
            ),
            (
                ProxyError::ServerTimeout {
                    server: name("s1"),
                    timeout,
                },
                504,
                Side::Server,
                false,
            ),
            (
                ProxyError::BadSwitch {
                    server: name("s1"),
                    cause: BadSwitch::WrongAccept,
                },
                502,
                Side::Server,
                false,
            ),
            (ProxyError::BodyStalled { timeout }, 408, Side::Client, true),
        ]
    }

    #[test]
    fn every_variant_has_its_status_side_and_close() {
        for (error, status, side, close) in every_variant() {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.side(), side, "{error:?}");
            assert_eq!(error.closes_connection(), close, "{error:?}");
        }
    }

    #[test]
    fn client_errors_are_4xx_and_the_others_5xx() {
        for (error, ..) in every_variant() {
            assert_eq!(
                error.status().is_client_error(),
                error.side() == Side::Client,
                "{error:?}"
            );
        }
    }

    #[test]
    fn only_rate_connection_and_queue_refusals_say_when_to_retry() {
        let id = RequestId::next();
        for (error, ..) in every_variant() {
            let expected = matches!(
                error,
                ProxyError::HandshakeRate { .. } | ProxyError::TooManyConnections | ProxyError::QueueTimeout { .. }
            );
            assert_eq!(error.retry_after(id).is_some(), expected, "{error:?}");
        }
    }

    #[test]
    fn a_502_names_the_last_failed_server_and_why() {
        let failed = ProxyError::AllFailed {
            backend: name("web"),
            last: Some(Box::new(ConnectFailure {
                server: name("s1"),
                error: ConnectError::Timeout(Duration::from_secs(3)),
            })),
        };
        assert_eq!(
            failed.to_string(),
            "no server of backend `web` accepted the connection (`s1`: connect timed out after 3s)"
        );
        let none = ProxyError::AllFailed {
            backend: name("web"),
            last: None,
        };
        assert_eq!(
            none.to_string(),
            "no server of backend `web` accepted the connection ()"
        );
    }

    #[test]
    fn a_refusal_before_any_request_is_a_whole_closing_response() {
        let bytes = ProxyError::TooManyConnections.to_http1_bytes();
        let text = String::from_utf8(bytes).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert_eq!(body, "429 Too Many Requests: too many connections from your address\n");
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
        for line in [
            "retry-after: 1",
            "connection: close",
            &format!("content-length: {}", body.len()),
        ] {
            assert!(head.lines().any(|l| l == line), "`{line}` in {head}");
        }
    }

    #[test]
    fn a_handshake_rate_refusal_rounds_its_wait_up_to_whole_seconds() {
        let id = RequestId::next();
        let after = |wait| ProxyError::HandshakeRate { wait }.retry_after(id);
        assert_eq!(after(Duration::from_millis(1)), Some(1));
        assert_eq!(after(Duration::ZERO), Some(1));
        assert_eq!(after(Duration::from_millis(2_001)), Some(3));
        assert_eq!(after(Duration::from_secs(2)), Some(2));
    }

    #[test]
    fn a_queue_timeout_asks_for_one_to_five_seconds() {
        for _ in 0..100 {
            let error = ProxyError::QueueTimeout {
                backend: name("b"),
                waited: Duration::from_secs(1),
            };
            let seconds = error.retry_after(RequestId::next());
            assert!(matches!(seconds, Some(1..=5)), "{seconds:?}");
        }
    }

    #[test]
    fn a_body_over_the_limit_reads_as_the_bodys_own_error() {
        let fault = ClientBodyError::TooLarge { limit: 1024 };
        assert_eq!(ProxyError::from(&fault).to_string(), fault.to_string());
    }

    #[test]
    fn the_common_result_stays_small() {
        let size = std::mem::size_of::<ProxyError>();
        assert!(size <= 48, "ProxyError grew to {size} bytes");
    }
}
