//! `tether demo`: three in-process WebSocket echo servers behind a
//! `leastconn` balancer, and a page that shows which server a WebSocket
//! reached. Load balancing visible in a browser in ten seconds.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::{self, Config, ConfigError};
use crate::instance::{StartError, Tether};

/// Names of the demo's servers.
pub const SERVER_NAMES: [&str; 3] = ["echo-1", "echo-2", "echo-3"];

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An echo server could not bind a port.
    #[error("cannot start a demo echo server: {0}")]
    Backend(#[from] std::io::Error),
    /// The generated configuration was refused (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The balancer could not bind its address.
    #[error("{0} (is another program on that port? try `tether demo --listen 127.0.0.1:8081`)")]
    Start(#[from] StartError),
}

/// A WebSocket echo server on 127.0.0.1 (a free port) that sends its name
/// first, then echoes every message; plain GETs get the demo page. Returns
/// the address it listens on.
pub async fn start_echo_server(name: &'static str) -> std::io::Result<SocketAddr> {
    start_echo_server_on("127.0.0.1:0".parse().expect("a literal address"), name).await
}

/// `start_echo_server` on a chosen address (`tether echo`).
pub async fn start_echo_server_on(address: SocketAddr, name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |request| serve(name, request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(address)
}

async fn serve(name: &'static str, mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let Some(key) = key else {
        let page = PAGE.replace("{{SERVER}}", name);
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(page)))
            .unwrap_or_default());
    };
    tokio::spawn(announce_and_echo(hyper::upgrade::on(&mut request), name.to_string()));
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()))
        .unwrap_or_default())
}

/// Once `on_upgrade` completes (after a 101), speaks WebSocket as a server:
/// sends `name` as the first message, then echoes every text and binary
/// message until the client closes. The demo's and the tests' echo servers.
pub async fn announce_and_echo(on_upgrade: hyper::upgrade::OnUpgrade, name: String) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    if ws.send(Message::text(name)).await.is_err() {
        return;
    }
    // A Close is answered by tungstenite itself on the next read, which then ends the stream.
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// The demo's configuration: one frontend on `listen`, `leastconn` over the servers.
pub fn demo_config(listen: SocketAddr, servers: &[(&str, SocketAddr)]) -> Result<Config, ConfigError> {
    let mut text = format!(
        "[[frontend]]\nname = \"demo\"\nbind = [\"{listen}\"]\ndefault_backend = \"echo\"\n\n\
         [[backend]]\nname = \"echo\"\nbalance = \"leastconn\"\n"
    );
    for (name, address) in servers {
        text.push_str(&format!(
            "\n[[backend.server]]\nname = \"{name}\"\naddress = \"{address}\"\n"
        ));
    }
    config::parse(&text, "<demo>")
}

/// Starts the echo servers and binds the balancer on `listen`.
pub async fn prepare(listen: SocketAddr) -> Result<Tether, DemoError> {
    let mut servers = Vec::new();
    for name in SERVER_NAMES {
        servers.push((name, start_echo_server(name).await?));
    }
    let config = demo_config(listen, &servers)?;
    Ok(Tether::bind(&config)?)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>tether demo</title>
<style>
 body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}
 .server{font-size:2rem;font-weight:bold}
 button{font-size:1rem;padding:.4rem .8rem;margin:.2rem}
 #log{background:#f4f4f4;padding:.5rem;min-height:6rem;white-space:pre-wrap;font-family:monospace}
 #counts span{display:inline-block;margin-right:1rem}
</style></head>
<body>
<h1>tether demo</h1>
<p>This page was served by <b>{{SERVER}}</b>. tether balances WebSockets over three echo servers with <code>leastconn</code>.</p>
<p>Your WebSocket reached: <span class="server" id="server">connecting…</span></p>
<p><button id="reconnect">Reconnect</button> <button id="ten">Open 10 more</button>
 <input id="msg" value="hello" aria-label="message"> <button id="send">Send</button></p>
<p id="counts"></p>
<div id="log"></div>
<script>
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
const log = (t) => { const l = document.getElementById("log"); l.textContent = t + "\n" + l.textContent.slice(0, 2000); };
const counts = {}; const extra = [];
function showCounts(){ document.getElementById("counts").innerHTML = Object.entries(counts).map(([k,v]) => `<span>${k}: ${v}</span>`).join(""); }
let ws;
function connect(){
  if (ws) ws.close();
  ws = new WebSocket(url); let first = true;
  ws.onmessage = (e) => { if (first) { first = false; document.getElementById("server").textContent = e.data; log("connected to " + e.data); } else { log("echo: " + e.data); } };
  ws.onclose = () => log("closed");
}
document.getElementById("reconnect").onclick = connect;
document.getElementById("send").onclick = () => ws && ws.send(document.getElementById("msg").value);
document.getElementById("ten").onclick = () => { for (let i = 0; i < 10; i++) { const s = new WebSocket(url); extra.push(s);
  s.onmessage = (e) => { if (!s.seen) { s.seen = true; counts[e.data] = (counts[e.data] || 0) + 1; showCounts(); } }; } };
connect();
</script>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid() {
        let servers = [("echo-1", "127.0.0.1:1".parse().unwrap())];
        let config = demo_config("127.0.0.1:0".parse().unwrap(), &servers).expect("valid");
        assert_eq!(config.backends[0].servers.len(), 1);
    }
}
