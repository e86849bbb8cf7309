//! Client connections of the load generator: a WebSocket client (handshake,
//! masked frames out, frames in) and a keep-alive HTTP/1.1 GET client.
//!
//! Every connection goes to a loopback address only ([`check_loopback`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::ws::{self, FrameHeader, XorShift};

/// Largest frame the client accepts (the echo of the largest message it sends).
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Largest response head the client accepts.
const MAX_HEAD: usize = 64 * 1024;

/// Refuses any address outside 127.0.0.0/8 (or `::1`): the benchmark never
/// sends traffic anywhere but this machine.
pub fn check_loopback(addr: &SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{addr} is not a loopback address: the benchmark only talks to 127.0.0.0/8"
        )))
    }
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Opens a TCP connection to `addr`, from `source` when given.
///
/// With a source address the socket is bound with `IP_BIND_ADDRESS_NO_PORT`,
/// so the kernel picks the source port at `connect` time per 4-tuple: each
/// 127.0.0.x source then offers the whole local port range towards one
/// destination, which is how one load generator opens 100,000+ connections.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    check_loopback(&addr)?;
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            set_bind_address_no_port(&socket)?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn set_bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `setsockopt` is given a valid, open descriptor owned by `socket`
    // for the duration of the call, and a pointer to a live `c_int` together
    // with its exact size; the kernel only reads those four bytes.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Index of the end of the response head (`\r\n\r\n`), if it is in `buf`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A WebSocket client connection after a successful handshake.
#[derive(Debug)]
pub struct WsClient {
    stream: TcpStream,
    /// Bytes read but not yet consumed; the handshake response may already
    /// carry the first frames behind it.
    buf: BytesMut,
    /// Masking keys for frames this client sends.
    pub rng: XorShift,
    /// The `X-Echo-Server` header of the handshake response, when present.
    pub server_name: Option<String>,
}

impl WsClient {
    /// Connects and performs the opening handshake on `path`, checking the
    /// `101` status and `Sec-WebSocket-Accept`.
    pub async fn connect(addr: SocketAddr, path: &str, source: Option<IpAddr>, mut rng: XorShift) -> io::Result<Self> {
        let mut stream = tcp_connect(addr, source).await?;
        let key = ws::new_key(&mut rng);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let head_len = loop {
            if let Some(n) = find_head_end(&buf) {
                break n;
            }
            if buf.len() > MAX_HEAD {
                return Err(protocol_error("handshake response head too large"));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
        };
        let expected = ws::accept_key(key.as_bytes());
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&buf[..head_len])
            .map_err(|e| protocol_error(format!("bad handshake response: {e}")))?;
        if resp.code != Some(101) {
            return Err(protocol_error(format!("handshake answered {:?}, not 101", resp.code)));
        }
        let mut accepted = false;
        let mut server_name = None;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
                accepted = h.value.trim_ascii() == expected.as_bytes();
            } else if h.name.eq_ignore_ascii_case("x-echo-server") {
                server_name = Some(String::from_utf8_lossy(h.value).into_owned());
            }
        }
        if !accepted {
            return Err(protocol_error("missing or wrong Sec-WebSocket-Accept"));
        }
        buf.advance(head_len);
        Ok(WsClient {
            stream,
            buf,
            rng,
            server_name,
        })
    }

    /// Writes bytes (one or more already encoded frames).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends one masked frame with a fresh masking key.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        let key = self.rng.mask_key();
        ws::write_frame(&mut out, true, opcode, Some(key), payload);
        self.send(&out).await
    }

    /// The frame header at the front of the buffer once the whole frame is
    /// buffered, or `None` if more must be read.
    pub fn buffered_frame(&mut self) -> io::Result<Option<FrameHeader>> {
        match ws::parse_header(&self.buf, MAX_FRAME) {
            Ok(Some(h)) if self.buf.len() >= h.frame_len() => Ok(Some(h)),
            Ok(Some(h)) => {
                self.buf.reserve(h.frame_len() - self.buf.len());
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(protocol_error(format!("bad frame from the server: {e:?}"))),
        }
    }

    /// Reads until one whole frame is buffered and returns its header; the
    /// caller looks at [`WsClient::payload`] and then calls [`WsClient::consume`].
    pub async fn read_frame(&mut self) -> io::Result<FrameHeader> {
        loop {
            if let Some(h) = self.buffered_frame()? {
                return Ok(h);
            }
            self.read_more().await?;
        }
    }

    /// Reads more bytes into the buffer; end of stream is an error.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 256 {
            self.buf.reserve(4096);
        }
        match self.stream.read_buf(&mut self.buf).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by peer",
            )),
            n => Ok(n),
        }
    }

    /// The payload of a buffered frame.
    pub fn payload(&self, h: &FrameHeader) -> &[u8] {
        &self.buf[h.header_len..h.frame_len()]
    }

    /// Drops a buffered frame.
    pub fn consume(&mut self, h: &FrameHeader) {
        self.buf.advance(h.frame_len());
    }

    /// Closing handshake: send a close (1000), wait for the peer's close or
    /// end of stream, and shut down.
    pub async fn close(mut self) -> io::Result<()> {
        self.send_frame(ws::OP_CLOSE, &1000u16.to_be_bytes()).await?;
        loop {
            match self.read_frame().await {
                Ok(h) if h.opcode == ws::OP_CLOSE => break,
                Ok(h) => self.consume(&h),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        self.stream.shutdown().await
    }
}

/// A keep-alive HTTP/1.1 client sending the same GET again and again.
#[derive(Debug)]
pub struct HttpClient {
    stream: TcpStream,
    buf: BytesMut,
    request: Vec<u8>,
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Whether the server keeps the connection open.
    pub keep_alive: bool,
}

impl HttpClient {
    /// Connects to `addr`; requests will be `GET path`.
    pub async fn connect(addr: SocketAddr, path: &str) -> io::Result<Self> {
        let stream = tcp_connect(addr, None).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-load\r\n\r\n").into_bytes();
        Ok(HttpClient {
            stream,
            buf: BytesMut::with_capacity(4096),
            request,
        })
    }

    /// Sends the GET and reads the whole response (Content-Length or chunked).
    pub async fn get(&mut self) -> io::Result<HttpResponse> {
        self.stream.write_all(&self.request).await?;
        loop {
            if let Some((len, resp)) = parse_response(&self.buf)? {
                self.buf.advance(len);
                return Ok(resp);
            }
            if self.buf.len() > MAX_HEAD + MAX_FRAME {
                return Err(protocol_error("response too large"));
            }
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(4096);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by peer",
                ));
            }
        }
    }
}

/// Parses one complete response at the start of `buf`: its total length and
/// what it said, or `None` if incomplete.
fn parse_response(buf: &[u8]) -> io::Result<Option<(usize, HttpResponse)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(protocol_error("response head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(protocol_error(format!("bad response: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v.windows(5).any(|w| w == b"close") {
                keep_alive = false;
            } else if v.windows(10).any(|w| w == b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let resp = HttpResponse { status, keep_alive };
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some((head_len, resp)));
    }
    if chunked {
        return Ok(chunked_len(&buf[head_len..]).map(|n| (head_len + n, resp)));
    }
    match content_length {
        Some(n) if buf.len() >= head_len + n => Ok(Some((head_len + n, resp))),
        Some(_) => Ok(None),
        None => Err(protocol_error("response without length on a keep-alive connection")),
    }
}

/// Length of a complete chunked body at the start of `buf`, if complete.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let line = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Some(pos);
                }
            }
        }
        pos += size + 2;
        if pos > buf.len() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_allowed() {
        assert!(check_loopback(&"127.0.0.3:80".parse().unwrap()).is_ok());
        assert!(check_loopback(&"[::1]:80".parse().unwrap()).is_ok());
        assert!(check_loopback(&"10.0.0.1:80".parse().unwrap()).is_err());
    }

    #[test]
    fn responses_with_length_and_chunked_bodies_parse() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP";
        assert_eq!(parse_response(r).unwrap().unwrap().0, r.len() - 4);
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (len, resp) = parse_response(c).unwrap().unwrap();
        assert_eq!(len, c.len());
        assert!(resp.keep_alive);
        assert!(parse_response(&c[..c.len() - 1]).unwrap().is_none());
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(!parse_response(closing).unwrap().unwrap().1.keep_alive);
    }
}
