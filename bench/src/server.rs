//! The echo server behind every target: answers the WebSocket handshake on any
//! path and echoes every data frame; answers a plain HTTP request with `200`
//! and a small body, keeping the connection alive.
//!
//! It is deliberately small and allocation-free per message: one read buffer
//! and one write buffer per connection, every complete frame in a read is
//! answered with one write. Nothing a peer sends can make it panic: malformed
//! requests get `400`, malformed frames a close frame with the matching status.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::ws;

/// Largest request head accepted before answering `431`.
const MAX_HEAD: usize = 16 * 1024;
/// Most request headers parsed; more is answered with `431`.
const MAX_HEADERS: usize = 64;
/// Read buffer of a fresh connection; it grows only for larger messages.
const INITIAL_BUF: usize = 2 * 1024;
/// A write buffer grown past this by one large message is given back after the write.
const KEEP_OUT_CAPACITY: usize = 256 * 1024;

/// What an echo server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Announced in the `X-Echo-Server` header and the HTTP body, so a test can
    /// tell which server a proxy chose.
    pub name: Arc<str>,
    /// Largest frame payload accepted; larger ones are closed with 1009 so one
    /// peer cannot make the server buffer without bound.
    pub max_message: usize,
}

/// Accepts connections on `listener` until `shutdown` completes, serving each on
/// its own task. Accept errors (for example running out of descriptors) are
/// reported and retried after a short pause rather than ending the server.
pub async fn serve(listener: TcpListener, config: ServerConfig, shutdown: impl Future<Output = ()>) {
    let responses = Arc::new(Responses::new(&config.name));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let config = config.clone();
                    let responses = Arc::clone(&responses);
                    tokio::spawn(async move {
                        // A peer resetting or vanishing is normal in a benchmark.
                        let _ = handle(stream, &config, &responses).await;
                    });
                }
                Err(err) => {
                    eprintln!("{}: accept failed: {err}", config.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Prebuilt response heads, so a plain request costs one buffer copy.
struct Responses {
    ok_keep_alive: Vec<u8>,
    ok_close: Vec<u8>,
    head_keep_alive: Vec<u8>,
    head_close: Vec<u8>,
    name: Arc<str>,
}

impl Responses {
    fn new(name: &Arc<str>) -> Self {
        let body = format!("{name}\n");
        let build = |close: bool, with_body: bool| {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Echo-Server: {name}\r\n",
                body.len()
            );
            if close {
                r.push_str("Connection: close\r\n");
            }
            r.push_str("\r\n");
            if with_body {
                r.push_str(&body);
            }
            r.into_bytes()
        };
        Responses {
            ok_keep_alive: build(false, true),
            ok_close: build(true, true),
            head_keep_alive: build(false, false),
            head_close: build(true, false),
            name: Arc::clone(name),
        }
    }
}

/// What the echo server needs from a request head.
#[derive(Debug, Default)]
struct Head {
    head_len: usize,
    is_head: bool,
    keep_alive: bool,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    version_13: bool,
    key: Option<String>,
    content_length: u64,
    chunked: bool,
}

enum Parsed {
    Partial,
    Head(Head),
    Bad(&'static [u8]),
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        }
        Err(_) => return Parsed::Bad(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
    let http11 = req.version == Some(1);
    let mut head = Head {
        head_len,
        is_head: req.method == Some("HEAD"),
        keep_alive: http11,
        ..Head::default()
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                head.keep_alive = false;
            }
            if has_token(h.value, "keep-alive") {
                head.keep_alive = true;
            }
            if has_token(h.value, "upgrade") {
                head.connection_upgrade = true;
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket = has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.version_13 = h.value.trim_ascii() == b"13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.key = std::str::from_utf8(h.value.trim_ascii()).ok().map(str::to_owned);
        } else if name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value.trim_ascii())
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(n) => head.content_length = n,
                None => {
                    return Parsed::Bad(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        }
    }
    Parsed::Head(head)
}

async fn handle(mut stream: TcpStream, config: &ServerConfig, responses: &Responses) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(INITIAL_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(INITIAL_BUF);
    // Body bytes of the current plain request still to be skipped.
    let mut skip: u64 = 0;
    loop {
        let mut close_after = false;
        let mut upgraded = false;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len() as u64) as usize;
                buf.advance(n);
                skip -= n as u64;
                if skip > 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            match parse_head(&buf) {
                Parsed::Partial => break,
                Parsed::Bad(response) => {
                    out.extend_from_slice(response);
                    close_after = true;
                    break;
                }
                Parsed::Head(head) => {
                    buf.advance(head.head_len);
                    if head.upgrade_websocket && head.connection_upgrade {
                        match (&head.key, head.version_13) {
                            (Some(key), true) => {
                                out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
                                out.extend_from_slice(ws::accept_key(key.as_bytes()).as_bytes());
                                out.extend_from_slice(b"\r\nX-Echo-Server: ");
                                out.extend_from_slice(responses.name.as_bytes());
                                out.extend_from_slice(b"\r\n\r\n");
                                upgraded = true;
                            }
                            (_, false) => {
                                out.extend_from_slice(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                                close_after = true;
                            }
                            (None, true) => {
                                out.extend_from_slice(
                                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                );
                                close_after = true;
                            }
                        }
                        break;
                    }
                    if head.chunked {
                        out.extend_from_slice(
                            b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        close_after = true;
                        break;
                    }
                    skip = head.content_length;
                    let response = match (head.is_head, head.keep_alive) {
                        (false, true) => &responses.ok_keep_alive,
                        (false, false) => &responses.ok_close,
                        (true, true) => &responses.head_keep_alive,
                        (true, false) => &responses.head_close,
                    };
                    out.extend_from_slice(response);
                    if !head.keep_alive {
                        close_after = true;
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close_after {
            return finish(stream).await;
        }
        if upgraded {
            return echo_frames(stream, buf, out, config.max_message).await;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The WebSocket phase: echo data frames as they came (same opcode and FIN, so
/// fragmentation is preserved), answer pings, answer a close and stop.
async fn echo_frames(mut stream: TcpStream, mut buf: BytesMut, mut out: Vec<u8>, max: usize) -> io::Result<()> {
    loop {
        let mut closing = false;
        loop {
            let header = match ws::parse_header(&buf, max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(err) => {
                    ws::write_frame(&mut out, true, ws::OP_CLOSE, None, &err.close_code().to_be_bytes());
                    closing = true;
                    break;
                }
            };
            if buf.len() < header.frame_len() {
                buf.reserve(header.frame_len() - buf.len());
                break;
            }
            let Some(key) = header.mask else {
                // Clients must mask (RFC 6455 §5.1).
                ws::write_frame(
                    &mut out,
                    true,
                    ws::OP_CLOSE,
                    None,
                    &ws::CLOSE_PROTOCOL_ERROR.to_be_bytes(),
                );
                closing = true;
                break;
            };
            let payload = &mut buf[header.header_len..header.frame_len()];
            ws::apply_mask(payload, key);
            match header.opcode {
                ws::OP_PING => ws::write_frame(&mut out, true, ws::OP_PONG, None, payload),
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    // Echo the status; a one-byte close body is malformed (§5.5.1).
                    let body: &[u8] = if payload.len() == 1 { &[0x03, 0xEA] } else { payload };
                    ws::write_frame(&mut out, true, ws::OP_CLOSE, None, body);
                    closing = true;
                }
                opcode => ws::write_frame(&mut out, header.fin, opcode, None, payload),
            }
            buf.advance(header.frame_len());
            if closing {
                break;
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
            if out.capacity() > KEEP_OUT_CAPACITY {
                out.shrink_to(INITIAL_BUF);
            }
        }
        if closing {
            return finish(stream).await;
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(INITIAL_BUF);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Closes our side and drains what the peer still sends for up to a second,
/// so the last response is not lost to a reset.
async fn finish(mut stream: TcpStream) -> io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    let drain = async {
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_are_matched_without_case() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(!has_token(b"keep-alive", "upgrade"));
    }

    #[test]
    fn a_websocket_request_is_recognised() {
        let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let Parsed::Head(head) = parse_head(req) else {
            panic!("not parsed")
        };
        assert!(head.upgrade_websocket && head.connection_upgrade && head.version_13);
        assert_eq!(head.key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(head.head_len, req.len());
    }

    #[test]
    fn garbage_and_oversized_heads_are_refused() {
        assert!(matches!(parse_head(b"\x00\x01 nonsense\r\n\r\n"), Parsed::Bad(_)));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(parse_head(&big), Parsed::Bad(_)));
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost"), Parsed::Partial));
    }
}
