//! Tunnels tether closes itself, against clients that keep sending: the
//! client still reads tether's Close and its code, then a clean end of
//! stream (no RST), and the server gets a Close too. Also the frame checks
//! a client cannot slip past (control frames) and the per-tunnel message rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that reads everything and reports the code of each
/// Close frame it receives (`None` for a connection that ended without one).
async fn recording_server() -> (SocketAddr, mpsc::UnboundedReceiver<Option<u16>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let report = report.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let mut code = None;
                while let Some(message) = ws.next().await {
                    match message {
                        Ok(Message::Close(frame)) => {
                            code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                // The reply Close is sent by tungstenite; then the stream ends.
                while ws.next().await.is_some() {}
                let _ = report.send(code);
            });
        }
    });
    (addr, reports)
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as is
    frame.extend_from_slice(payload);
    frame
}

/// A raw WebSocket client connection, past its handshake.
async fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    // Read the response head byte by byte, so no frame byte is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// What the client saw of tether's closing.
#[derive(Debug)]
struct Seen {
    /// The code of the Close frame read, if one was.
    close: Option<u16>,
    /// How the stream ended after it: `Ok` for a clean end of stream, the error's kind otherwise.
    end: Result<(), std::io::ErrorKind>,
}

/// Reads server frames until a Close (telling the writer to stop), then on
/// to the end of the stream.
async fn read_close_then_end(mut read: OwnedReadHalf, stop: Arc<AtomicBool>) -> Seen {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut close = None;
    loop {
        // Parse whole frames at the front of `buf` (server frames are unmasked).
        while close.is_none() && buf.len() >= 2 {
            let (len, header) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
                126 | 127 => break,
                n => (u64::from(n), 2),
            };
            let total = header + len as usize;
            if buf.len() < total {
                break;
            }
            if buf[0] & 0x0f == 0x8 {
                close = Some(if len >= 2 {
                    u16::from_be_bytes([buf[header], buf[header + 1]])
                } else {
                    1005
                });
                stop.store(true, Ordering::SeqCst);
            }
            buf.drain(..total);
        }
        match read.read(&mut chunk).await {
            Ok(0) => return Seen { close, end: Ok(()) },
            Ok(n) if close.is_none() => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
            Err(err) => {
                return Seen {
                    close,
                    end: Err(err.kind()),
                }
            }
        }
    }
}

/// Opens a raw client through tether, floods it with binary messages (or,
/// once `oversize` is set, with the payload of one huge frame) until it
/// reads a Close, then answers like a browser: Close 1000 (only between
/// frames) and the end of its stream. `trigger` runs once the flood is
/// under way. Returns what the client saw.
async fn flood_until_closed(addr: SocketAddr, oversize: Option<Arc<AtomicBool>>, trigger: impl AsyncFnOnce()) -> Seen {
    let (read, mut write) = raw_client(addr).await.into_split();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_close_then_end(read, stop.clone()));
    let flooder = tokio::spawn(async move {
        let message = client_frame(0x2, &[7u8; 4096]);
        let mut in_huge_frame = false;
        while !stop.load(Ordering::SeqCst) {
            let bytes = if in_huge_frame {
                vec![9u8; 16 * 1024]
            } else if oversize.as_ref().is_some_and(|o| o.load(Ordering::SeqCst)) {
                in_huge_frame = true;
                let mut header = vec![0x82, 0x80 | 127];
                header.extend_from_slice(&(1u64 << 30).to_be_bytes());
                header.extend_from_slice(&[0, 0, 0, 0]);
                header
            } else {
                message.clone()
            };
            if write.write_all(&bytes).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        if !in_huge_frame {
            let _ = write.write_all(&client_frame(0x8, &1000u16.to_be_bytes())).await;
        }
        let _ = write.shutdown().await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    trigger().await;
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the client was left hanging")
        .unwrap();
    let _ = flooder.await;
    seen
}

/// The code of the next Close the recording server receives.
async fn server_close(reports: &mut mpsc::UnboundedReceiver<Option<u16>>) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("the server connection never ended")
        .expect("the server stopped")
}

#[tokio::test]
async fn a_flooding_client_of_a_server_taken_down_reads_1012_and_a_clean_end_and_the_server_gets_a_close() {
    let (server, mut reports) = recording_server().await;
    let tether = start_tether(&Config::over(
        pool().down_spread("0s").server(Server::new("s1", server)),
    ))
    .await;
    let handle = tether.handle.clone();
    let seen = flood_until_closed(tether.addr, None, async || {
        let snapshot = handle.snapshot();
        assert!(handle.set_up(&snapshot.backends[0].servers[0].state, false));
    })
    .await;
    assert_eq!(seen.close, Some(1012), "{seen:?}");
    assert_eq!(seen.end, Ok(()), "the client's stream ends cleanly, not with a reset");
    assert_eq!(
        server_close(&mut reports).await,
        Some(1001),
        "the server is told the client is going away"
    );
}

#[tokio::test]
async fn a_flooding_client_of_a_stopping_tether_reads_1001_and_a_clean_end_and_the_server_gets_a_close() {
    let (server, mut reports) = recording_server().await;
    let tether = start_tether(&Config::over(pool().server(Server::new("s1", server)))).await;
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    let seen = flood_until_closed(tether.addr, None, async move || {
        tokio::spawn(async move {
            let _ = stopped_tx.send(tether.stopped_within(Duration::from_secs(15)).await);
        });
    })
    .await;
    assert_eq!(seen.close, Some(1001), "{seen:?}");
    assert_eq!(seen.end, Ok(()), "the client's stream ends cleanly, not with a reset");
    assert_eq!(server_close(&mut reports).await, Some(1001));
    assert!(stopped_rx.await.unwrap(), "tether stopped");
}

#[tokio::test]
async fn a_client_streaming_an_oversized_frame_reads_1009_and_a_clean_end_and_the_server_gets_a_close() {
    let (server, mut reports) = recording_server().await;
    let tether = start_tether(&Config::simple(
        Frontend::public().websocket_max_frame_size(64 * 1024),
        pool().server(Server::new("s1", server)),
    ))
    .await;
    let oversize = Arc::new(AtomicBool::new(false));
    let flag = oversize.clone();
    let seen = flood_until_closed(tether.addr, Some(oversize), async move || {
        flag.store(true, Ordering::SeqCst)
    })
    .await;
    assert_eq!(seen.close, Some(1009), "{seen:?}");
    assert_eq!(seen.end, Ok(()), "the client's stream ends cleanly, not with a reset");
    assert_eq!(
        server_close(&mut reports).await,
        Some(1001),
        "the messages before the oversized frame went whole, then a Close"
    );
}

/// Sends `frame` on a fresh tunnel and returns the Close code the client gets.
async fn close_for(addr: SocketAddr, frame: &[u8]) -> Option<u16> {
    let (read, mut write) = raw_client(addr).await.into_split();
    write.write_all(frame).await.unwrap();
    let seen = tokio::time::timeout(
        Duration::from_secs(5),
        read_close_then_end(read, Arc::new(AtomicBool::new(false))),
    )
    .await
    .expect("no Close within 5 s");
    seen.close
}

#[tokio::test]
async fn control_frames_over_125_bytes_get_1002_and_over_the_frame_limit_1009() {
    let s1 = backend("s1").start().await;
    let plain = start_tether(&Config::over(pool().server(&s1))).await;
    // A ping of 200 bytes breaks RFC 6455 §5.5 even without limits.
    assert_eq!(close_for(plain.addr, &client_frame(0x9, &[1u8; 200])).await, Some(1002));
    let limited = start_tether(&Config::simple(
        Frontend::public().websocket_max_frame_size(16),
        pool().server(&s1),
    ))
    .await;
    // A ping within 125 bytes but over the frame limit: 1009, like data.
    assert_eq!(
        close_for(limited.addr, &client_frame(0x9, &[1u8; 100])).await,
        Some(1009)
    );
    // A reserved control opcode (0xB) is held to the same limit.
    assert_eq!(
        close_for(limited.addr, &client_frame(0xB, &[1u8; 100])).await,
        Some(1009)
    );
    // A small ping passes and is answered by the server.
    let (mut ws, _) = ws_connect(limited.addr, "/ws").await;
    ws.send(Message::Ping(vec![1u8; 8].into())).await.unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
}

/// The value of `name{frontend="public"}` in tether's `/metrics`.
async fn frontend_metric(admin: SocketAddr, name: &str) -> u64 {
    metric(admin, &format!("{name}{{frontend=\"public\"}}")).await
}

#[tokio::test]
async fn a_client_over_the_message_rate_gets_1008_and_one_under_it_is_left_alone() {
    let s1 = backend("s1").start().await;
    let config = Config::simple(Frontend::public().websocket_max_messages("20/s"), pool().server(&s1))
        // `get` sends `Host: tether.test`: the admin listener answers only for names it knows.
        .admin(
            Admin::bind("127.0.0.1:0")
                .hosts(&["tether.test"])
                .metrics_allow(&["127.0.0.1/32"]),
        );
    let tether = start_tether(&config).await;
    let admin = tether.handle.admin_addr().expect("admin listener");
    // Under the rate: 10 messages a second for two seconds, all echoed.
    let (mut calm, _) = ws_connect(tether.addr, "/ws").await;
    for i in 0..20 {
        calm.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut calm).await, format!("m{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        frontend_metric(admin, "tether_frontend_message_rate_closes_total").await,
        0
    );
    // Over it: 100 messages at once.
    let (mut flood, _) = ws_connect(tether.addr, "/ws").await;
    for i in 0..100 {
        if flood.send(Message::text(format!("f{i}"))).await.is_err() {
            break;
        }
    }
    let mut echoed = 0;
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = flood.next().await {
            match message {
                Ok(Message::Text(_)) => echoed += 1,
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("no Close within 5 s");
    assert_eq!(code, Some(1008));
    assert!(
        echoed < 40,
        "about the burst (and what refilled meanwhile) went through, not the flood: {echoed}"
    );
    assert_eq!(
        frontend_metric(admin, "tether_frontend_message_rate_closes_total").await,
        1
    );
    // The calm client is still served.
    calm.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut calm).await, "still here");
}
