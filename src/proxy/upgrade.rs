//! Recognising and checking a WebSocket opening handshake (RFC 6455 §4.1),
//! bridging one made over HTTP/2 (RFC 8441) to the HTTP/1.1 form servers
//! speak, and completing one the server accepted.

use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::handoff::TunnelJob;
use super::headers::{has_token, remove_hop_by_hop, set_websocket_upgrade};

/// What kind of request this is, as far as upgrades go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// A plain HTTP request (any non-WebSocket `Upgrade` is dropped as hop-by-hop).
    Plain,
    /// A well-formed WebSocket handshake.
    WebSocket,
}

/// Why a WebSocket handshake was refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadHandshake {
    /// RFC 6455 §4.1: the handshake must be a GET.
    #[error("a WebSocket handshake must use GET")]
    NotGet,
    /// RFC 6455 §4.1: a 16-byte nonce, base64-encoded.
    #[error("Sec-WebSocket-Key is missing or is not 16 base64-encoded bytes")]
    BadKey,
    /// RFC 6455 §4.4: only version 13 is defined.
    #[error("Sec-WebSocket-Version must be 13")]
    BadVersion,
    /// An HTTP/2 CONNECT that is not an RFC 8441 WebSocket (`:protocol
    /// websocket`): tether opens no other tunnels.
    #[error("an HTTP/2 CONNECT must be an extended CONNECT with :protocol websocket (RFC 8441)")]
    NotWebSocketConnect,
}

/// Why a server's 101 to a WebSocket handshake was not believed (RFC 6455
/// §4.1: the client fails the connection then); the client gets a 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadSwitch {
    /// `Sec-WebSocket-Accept` is missing or is not the digest of the client's key.
    #[error("its Sec-WebSocket-Accept does not answer the client's key")]
    WrongAccept,
    /// `Upgrade: websocket` or `Connection: upgrade` is missing.
    #[error("it does not switch to websocket (Upgrade/Connection)")]
    NotWebSocket,
}

/// The `Sec-WebSocket-Accept` a server must answer `request` (a checked
/// handshake) with: base64 of the SHA-1 of its key and the RFC's GUID.
pub fn expected_accept<B>(request: &Request<B>) -> String {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map_or(&b""[..], |k| k.as_bytes().trim_ascii());
    derive_accept_key(key)
}

/// Checks a server's 101 against the handshake it answers (RFC 6455 §4.1,
/// what a client checks): `Upgrade: websocket`, `Connection: upgrade` and
/// the accept digest `expected_accept` computed.
pub fn check_switch(headers: &HeaderMap, expected_accept: &str) -> Result<(), BadSwitch> {
    if !has_token(headers, &UPGRADE, "websocket") || !has_token(headers, &CONNECTION, "upgrade") {
        return Err(BadSwitch::NotWebSocket);
    }
    match headers.get(SEC_WEBSOCKET_ACCEPT) {
        Some(accept) if accept.as_bytes().trim_ascii() == expected_accept.as_bytes() => Ok(()),
        _ => Err(BadSwitch::WrongAccept),
    }
}

/// Classifies `request`. `Connection` is read as a token list, so
/// `Connection: keep-alive, Upgrade` is a handshake too, in any case.
pub fn classify<B>(request: &Request<B>) -> Result<Handshake, BadHandshake> {
    let headers = request.headers();
    if !has_token(headers, &CONNECTION, "upgrade") || !has_token(headers, &UPGRADE, "websocket") {
        return Ok(Handshake::Plain);
    }
    if request.method() != Method::GET {
        return Err(BadHandshake::NotGet);
    }
    if !headers
        .get(SEC_WEBSOCKET_KEY)
        .is_some_and(|k| is_websocket_key(k.as_bytes()))
    {
        return Err(BadHandshake::BadKey);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13")
    {
        return Err(BadHandshake::BadVersion);
    }
    Ok(Handshake::WebSocket)
}

/// Completes a handshake the server answered with 101: returns the
/// response head for the client, its hop-by-hop headers replaced by the
/// upgrade's own, and the server's side of the upgrade, for `start_tunnel`.
pub(super) fn switch_protocols(mut response: Response<Incoming>) -> (http::response::Parts, OnUpgrade) {
    let server = hyper::upgrade::on(&mut response);
    let (mut parts, _empty) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    set_websocket_upgrade(&mut parts.headers);
    (parts, server)
}

/// Hands both connections of a switched handshake to `tunnel`, a task that
/// waits for both to switch, then carries the tunnel.
pub(super) fn start_tunnel(tunnel: TunnelJob, client: OnUpgrade, server: OnUpgrade) {
    tokio::spawn(tunnel.run(client, server));
}

/// RFC 8441 §4-5: turns an HTTP/2 extended CONNECT with `:protocol
/// websocket` into the HTTP/1.1 handshake the server gets (RFC 6455 §4.1):
/// a GET with `Upgrade: websocket`, `Connection: Upgrade` and a fresh
/// `Sec-WebSocket-Key` (an HTTP/2 client sends none); the client's
/// version, subprotocols and extensions stay as sent. True when `request`
/// was such a CONNECT; any other CONNECT is refused (an HTTP/2 request
/// that is not a CONNECT is left alone).
pub fn bridge_extended_connect<B>(request: &mut Request<B>) -> Result<bool, BadHandshake> {
    if request.method() != Method::CONNECT {
        return Ok(false);
    }
    let websocket = request
        .extensions()
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return Err(BadHandshake::NotWebSocketConnect);
    }
    *request.method_mut() = Method::GET;
    let headers = request.headers_mut();
    set_websocket_upgrade(headers);
    if let Ok(key) = HeaderValue::from_str(&generate_key()) {
        headers.insert(SEC_WEBSOCKET_KEY, key);
    }
    Ok(true)
}

/// RFC 8441 §5: the server's 101 to a bridged handshake becomes a 200 on
/// the client's HTTP/2 stream, without the HTTP/1.1-only switch headers
/// (`Upgrade`, `Connection`, the accept digest of a key the client never sent).
pub(super) fn answer_over_http2(parts: &mut http::response::Parts) {
    parts.status = StatusCode::OK;
    parts.headers.remove(UPGRADE);
    parts.headers.remove(CONNECTION);
    parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
}

/// 16 bytes in base64 are exactly 22 alphabet characters followed by `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(connection: &str, extra: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/ws")
            .header("connection", connection)
            .header("upgrade", "WebSocket");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const KEY: (&str, &str) = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    const V13: (&str, &str) = ("sec-websocket-version", "13");

    #[test]
    fn connection_is_a_token_list_in_any_case() {
        assert_eq!(
            classify(&handshake("keep-alive, Upgrade", &[KEY, V13])),
            Ok(Handshake::WebSocket)
        );
        assert_eq!(classify(&handshake("UPGRADE", &[KEY, V13])), Ok(Handshake::WebSocket));
        assert_eq!(classify(&handshake("keep-alive", &[KEY, V13])), Ok(Handshake::Plain));
    }

    #[test]
    fn a_switch_must_answer_the_key_and_name_websocket() {
        // RFC 6455 §1.3's example key and accept.
        let request = handshake("upgrade", &[KEY, V13]);
        let expected = expected_accept(&request);
        assert_eq!(expected, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "Upgrade".parse().unwrap());
        headers.insert(UPGRADE, "websocket".parse().unwrap());
        assert_eq!(check_switch(&headers, &expected), Err(BadSwitch::WrongAccept));
        headers.insert(SEC_WEBSOCKET_ACCEPT, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        assert_eq!(check_switch(&headers, &expected), Err(BadSwitch::WrongAccept));
        headers.insert(SEC_WEBSOCKET_ACCEPT, expected.parse().unwrap());
        assert_eq!(check_switch(&headers, &expected), Ok(()));
        headers.insert(UPGRADE, "h2c".parse().unwrap());
        assert_eq!(check_switch(&headers, &expected), Err(BadSwitch::NotWebSocket));
    }

    #[test]
    fn malformed_handshakes_are_refused() {
        assert_eq!(classify(&handshake("upgrade", &[V13])), Err(BadHandshake::BadKey));
        assert_eq!(
            classify(&handshake("upgrade", &[("sec-websocket-key", "short"), V13])),
            Err(BadHandshake::BadKey)
        );
        assert_eq!(
            classify(&handshake("upgrade", &[KEY, ("sec-websocket-version", "8")])),
            Err(BadHandshake::BadVersion)
        );
        let post = Request::post("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(classify(&post), Err(BadHandshake::NotGet));
    }

    #[test]
    fn an_extended_connect_becomes_an_http1_handshake() {
        let mut connect = Request::connect("https://example.com/chat")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat")
            .body(())
            .unwrap();
        connect
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(bridge_extended_connect(&mut connect), Ok(true));
        assert_eq!(connect.method(), Method::GET);
        assert_eq!(
            classify(&connect),
            Ok(Handshake::WebSocket),
            "a well-formed handshake, fresh key included"
        );
        assert_eq!(connect.headers()["sec-websocket-protocol"], "chat");
        let mut plain = Request::connect("example.com:443").body(()).unwrap();
        assert_eq!(
            bridge_extended_connect(&mut plain),
            Err(BadHandshake::NotWebSocketConnect)
        );
        let mut get = Request::get("/").body(()).unwrap();
        assert_eq!(bridge_extended_connect(&mut get), Ok(false));
    }
}
