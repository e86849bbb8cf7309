//! The demo's WebSocket echo servers: each sends its name first, then
//! echoes every message; a plain GET gets a small page saying which server
//! served it. One can be killed at once (listener and every connection
//! dropped, as a crashed process would), so the demo shows failover.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Stops one echo server and every connection it holds when sent `true`
/// (or dropped): the demo's "kill".
#[derive(Debug)]
pub struct Kill(watch::Sender<bool>);

impl Kill {
    /// Kills the server: its port refuses connections and every open
    /// connection (WebSocket tunnels included) is dropped without a Close.
    pub fn kill(self) {
        let _ = self.0.send(true);
    }
}

/// A WebSocket echo server on 127.0.0.1 (a free port) that sends its name
/// first, then echoes every message; plain GETs get the demo page. Returns
/// the address it listens on.
pub async fn start_echo_server(name: &'static str) -> std::io::Result<SocketAddr> {
    start_echo_server_on("127.0.0.1:0".parse().expect("a literal address"), name).await
}

/// `start_echo_server` on a chosen address (`tether echo`).
pub async fn start_echo_server_on(address: SocketAddr, name: &'static str) -> std::io::Result<SocketAddr> {
    let (address, kill) = start_killable(address, Arc::from(name)).await?;
    // Never killed: the server lives as long as the process.
    std::mem::forget(kill);
    Ok(address)
}

/// An echo server on `address` that [`Kill`] stops, with every connection
/// it holds. Returns the address it listens on.
pub async fn start_killable(address: SocketAddr, name: Arc<str>) -> std::io::Result<(SocketAddr, Kill)> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let (kill, killed) = watch::channel(false);
    tokio::spawn(until_killed(killed.clone(), async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            let killed = killed.clone();
            tokio::spawn(until_killed(killed.clone(), async move {
                let service = service_fn(move |request| serve(name.clone(), killed.clone(), request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            }));
        }
    }));
    Ok((address, Kill(kill)))
}

/// Runs `work` until it ends or the server is killed (`true` sent, or the
/// [`Kill`] dropped), whichever comes first; a killed task drops its sockets.
async fn until_killed(mut killed: watch::Receiver<bool>, work: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = killed.wait_for(|k| *k) => {}
        () = work => {}
    }
}

async fn serve(
    name: Arc<str>,
    killed: watch::Receiver<bool>,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let Some(key) = key else {
        let page = PAGE.replace("{{SERVER}}", &name);
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(page)))
            .unwrap_or_default());
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(until_killed(killed, announce_and_echo(on_upgrade, name.to_string())));
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

/// The page a plain GET through the demo's frontend gets: which server
/// served it, and a WebSocket of the reader's own.
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
<p>This page was served by <b>{{SERVER}}</b>. tether balances WebSockets over the demo's echo servers with <code>leastconn</code>.</p>
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
