//! `bench-relay` with each engine in front of a small echo server: 1 MiB
//! comes back intact and in order, and half-closes are passed on both ways.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Kills the relay when the test ends, passed or not.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(upstream: SocketAddr, engine_args: &[&str]) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench-relay"))
        .args(["--listen", "127.0.0.1:0", "--upstream", &upstream.to_string()])
        .args(engine_args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("bench-relay starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("a first line on stderr");
    // Keep reading, so the relay never writes into a closed pipe.
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            eprintln!("bench-relay: {l}");
        }
    });
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    Relay { child, addr }
}

const TRAILER: &[u8] = b"after your end of stream";

/// Echoes every byte; at the client's end of stream (which reaches it only if
/// the relay passes the half-close on) it sends a trailer, then ends its own side.
async fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 7000];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).await.unwrap();
                }
                s.write_all(TRAILER).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

async fn check_engine(engine_args: &[&str]) {
    let echo = start_echo().await;
    let relay = start_relay(echo, engine_args);
    for _ in 0..2 {
        let stream = TcpStream::connect(relay.addr).await.unwrap();
        let (mut r, mut w) = stream.into_split();
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(3000) {
                w.write_all(piece).await.unwrap();
            }
            // Half-close: our end of stream; reading goes on.
            w.shutdown().await.unwrap();
            w
        });
        let mut back = Vec::new();
        // read_to_end returns only at the echo server's end of stream, which
        // it sends after ours reached it.
        tokio::time::timeout(std::time::Duration::from_secs(20), r.read_to_end(&mut back))
            .await
            .expect("the relay passes both ends of stream on")
            .unwrap();
        let _w = writer.await.unwrap();
        assert_eq!(back.len(), data.len() + TRAILER.len());
        assert!(back[..data.len()] == data[..], "bytes differ");
        assert_eq!(&back[data.len()..], TRAILER);
    }
}

#[tokio::test]
async fn epoll_engine_relays_a_mebibyte_and_half_closes() {
    check_engine(&["--engine", "epoll"]).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn uring_engine_with_multishot_receive_relays_a_mebibyte_and_half_closes() {
    // Few buffers: the receive runs out of them and must be armed again.
    check_engine(&["--engine", "uring", "--uring-recv", "multishot", "--uring-buffers", "4"]).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn uring_engine_with_single_receive_relays_a_mebibyte_and_half_closes() {
    check_engine(&["--engine", "uring", "--uring-recv", "single"]).await;
}
