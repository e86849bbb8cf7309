//! A minimal client for tether's admin listener: one HTTP/1.0 request per
//! connection (so the answer is never chunked and ends with the connection).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

use crate::client::tcp_connect;

/// Sends `method path` (with a JSON `body` if given) and returns the status
/// and the body.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tcp_connect(addr, None).await?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad answer from the admin API: {text:.80}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    timeout(Duration::from_secs(5), exchange).await.unwrap_or_else(|_| {
        Err(io::Error::other(format!(
            "admin API {addr} did not answer {method} {path}"
        )))
    })
}

/// GETs `path` and parses the JSON answer.
pub async fn get_json(addr: SocketAddr, path: &str) -> io::Result<Value> {
    let (status, body) = request(addr, "GET", path, None).await?;
    if status != 200 {
        return Err(io::Error::other(format!("GET {path}: {status} {body:.200}")));
    }
    serde_json::from_str(&body).map_err(io::Error::other)
}

/// The servers of every backend as the admin API shows them.
pub async fn servers(addr: SocketAddr) -> io::Result<Vec<Value>> {
    let v = get_json(addr, "/api/v1/servers").await?;
    Ok(v["servers"].as_array().cloned().unwrap_or_default())
}

/// One server's entry, by name.
pub async fn server(addr: SocketAddr, name: &str) -> io::Result<Value> {
    servers(addr)
        .await?
        .into_iter()
        .find(|s| s["name"] == name)
        .ok_or_else(|| io::Error::other(format!("no server {name} in the admin API")))
}

/// Polls `check` every 100 ms until it holds or `limit` passes; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until the admin API shows `count` servers, all up.
pub async fn wait_all_up(addr: SocketAddr, count: usize, limit: Duration) -> io::Result<()> {
    let ok = eventually(limit, || async {
        match servers(addr).await {
            Ok(s) => s.len() == count && s.iter().all(|s| s["up"] == true),
            Err(_) => false,
        }
    })
    .await;
    match ok {
        Some(_) => Ok(()),
        None => Err(io::Error::other(format!(
            "the servers did not all come up within {limit:?}: {:?}",
            servers(addr).await.map(|s| s
                .iter()
                .map(|s| format!("{}={}", s["name"], s["state"]))
                .collect::<Vec<_>>())
        ))),
    }
}

/// The value of a counter or gauge line of `/metrics` (summed over the lines
/// that start with `prefix`, labels included in the prefix).
pub async fn metric(addr: SocketAddr, prefix: &str) -> io::Result<f64> {
    let (status, body) = request(addr, "GET", "/metrics", None).await?;
    if status != 200 {
        return Err(io::Error::other(format!("GET /metrics: {status}")));
    }
    Ok(body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
