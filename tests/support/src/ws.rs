//! WebSocket clients (tokio-tungstenite) against tether or a test backend.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client stream.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `addr` + `path`; returns it and the name the server announced.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> (Ws, String) {
    let request = format!("ws://{addr}{path}").into_client_request().expect("request");
    ws_connect_with(request).await
}

/// Opens a WebSocket with a prepared handshake request.
pub async fn ws_connect_with(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> (Ws, String) {
    let (mut ws, _response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    let name = next_text(&mut ws).await;
    (ws, name)
}

/// The next text message.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The code of the next Close frame the client sees (other messages are
/// skipped); `None` for a bare close or an error. Panics if nothing comes within `within`.
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the client was left hanging")
}

/// The code and reason of the next Close frame the client sees (other
/// messages are skipped); `None` for a bare close or an error. Panics if
/// nothing comes within `within`.
pub async fn close_frame(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the client was left hanging")
}

/// One WebSocket handshake to `/ws?sid=k<sid>` (a session id tether looks
/// up) and a close, within 10 s; whether the handshake succeeded. The load
/// of the tests that kill Redis under handshakes.
pub async fn handshake_with_sid(addr: SocketAddr, sid: usize) -> bool {
    let url = format!("ws://{addr}/ws?sid=k{sid}");
    match tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((mut ws, _))) => {
            let _ = ws.close(None).await;
            true
        }
        _ => false,
    }
}

/// What a WebSocket handshake through a balancer gave: the stream, the name
/// the server announced, and the `name=value` of the response's first
/// `Set-Cookie` (a stickiness cookie), if any.
pub struct Handshake {
    /// The open WebSocket.
    pub ws: Ws,
    /// The server's announced name.
    pub server: String,
    /// `NAME=value` of the first `Set-Cookie`, without its attributes.
    pub set_cookie: Option<String>,
}

/// A WebSocket handshake for `url` over an already connected `stream` (from
/// [`crate::connect_from`] to pick the client address), sending `cookie` as
/// the `Cookie` header when given. An error (refused, not 101, no name) is
/// returned as text, so a test can count failures instead of panicking.
pub async fn ws_handshake_on(stream: TcpStream, url: &str, cookie: Option<&str>) -> Result<Handshake, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().map_err(|_| "bad cookie".to_string())?);
    }
    let handshake = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream));
    let (mut ws, response) = tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
    let server = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => return Err(format!("no announced name: {other:?}")),
    };
    Ok(Handshake { ws, server, set_cookie })
}
