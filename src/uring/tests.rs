//! The ring stream against real sockets on 127.0.0.1.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{with_ring, RingStream};

/// A connected pair: tokio's end (the peer) and the ring's end.
async fn pair() -> (TcpStream, RingStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (accepted, _) = accepted.expect("accept");
    let ring = RingStream::adopt(accepted.into_std().expect("std socket")).expect("onto the ring");
    (peer.expect("connect"), ring)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_mebibyte_crosses_each_way_intact_and_the_shutdown_arrives_after_it() {
    let (peer, mut ring) = pair().await;
    let (mut peer_read, mut peer_write) = peer.into_split();
    let to_ring = pattern(1 << 20, 7);
    let from_ring = pattern(1 << 20, 91);
    let sender = {
        let to_ring = to_ring.clone();
        tokio::spawn(async move {
            peer_write.write_all(&to_ring).await.expect("peer writes");
            peer_write.shutdown().await.expect("peer shuts down");
        })
    };
    let receiver = tokio::spawn(async move {
        let mut got = Vec::new();
        peer_read.read_to_end(&mut got).await.expect("peer reads");
        got
    });
    let mut got = Vec::new();
    let mut offset = 0;
    let mut buf = vec![0u8; 10_000];
    // Interleave: write a slice, read what came, so neither side's buffers fill up.
    loop {
        if offset < from_ring.len() {
            let end = (offset + 30_000).min(from_ring.len());
            ring.write_all(&from_ring[offset..end]).await.expect("ring writes");
            offset = end;
            if offset == from_ring.len() {
                ring.shutdown().await.expect("ring shuts down");
            }
        }
        let n = ring.read(&mut buf).await.expect("ring reads");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got == to_ring,
        "the ring read {} bytes, not the peer's 1 MiB in order",
        got.len()
    );
    sender.await.expect("sender");
    let peer_got = receiver.await.expect("receiver");
    assert!(
        peer_got == from_ring,
        "the peer read {} bytes, not the ring's 1 MiB in order",
        peer_got.len()
    );
}

#[tokio::test]
async fn a_dropped_stream_cancels_its_receive_and_closes_its_socket() {
    let (mut peer, mut ring) = pair().await;
    // Arm a receive that nothing answers, then drop the stream while it waits.
    let mut buf = [0u8; 16];
    let waited = tokio::time::timeout(Duration::from_millis(50), ring.read(&mut buf)).await;
    assert!(waited.is_err(), "nothing was sent, so the read waits");
    let before = with_ring(None, |r| Ok(r.open_sockets())).expect("ring");
    drop(ring);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "the peer sees the socket closed: {read:?}");
    let after = with_ring(None, |r| Ok(r.open_sockets())).expect("ring");
    assert_eq!(
        after,
        before - 1,
        "the slot is freed once the cancelled receive completed"
    );
}

/// `count` ring streams each wait for bytes (their receives armed), then
/// every peer sends before any of them runs again: more completions at once
/// than the ring may have buffers or queue entries for. Every stream must
/// still read exactly its own bytes.
async fn all_at_once(count: usize) {
    let mut peers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..count {
        let (peer, mut ring) = pair().await;
        peers.push(peer);
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64];
            let n = ring.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], format!("socket {i}").as_bytes());
            ring
        }));
    }
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.write_all(format!("socket {i}").as_bytes()).await.expect("write");
    }
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("every socket gets its bytes")
            .expect("reader");
    }
}

#[tokio::test]
async fn more_sockets_with_bytes_than_receive_buffers_all_get_theirs() {
    let starved_before = with_ring(None, |r| Ok(r.starved_receives)).unwrap_or(0);
    all_at_once(320).await; // more than the ring's 256 buffers
    let starved = with_ring(None, |r| Ok(r.starved_receives)).expect("ring") - starved_before;
    assert!(starved > 0, "some receives found no free buffer and were armed again");
}

#[tokio::test]
async fn an_idle_stream_holds_no_receive_or_send_buffer() {
    let (mut peer, mut ring) = pair().await;
    for round in 0..3u8 {
        peer.write_all(&[round; 3000]).await.expect("peer writes");
        let mut buf = [0u8; 3000];
        ring.read_exact(&mut buf).await.expect("ring reads");
        ring.write_all(&buf).await.expect("ring writes");
        let mut echoed = [0u8; 3000];
        peer.read_exact(&mut echoed).await.expect("peer reads");
        assert_eq!(echoed, buf);
    }
    // Let the last send's completion arrive.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let held = with_ring(None, |r| Ok(r.held(ring.slot))).expect("ring");
    assert_eq!(
        held,
        (false, 0),
        "(receive buffer held, send bytes allocated) while idle"
    );
}

#[test]
fn a_stream_used_off_its_thread_fails_instead_of_touching_another_ring() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (peer, ring) = runtime.block_on(pair());
    let elsewhere = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            // This thread gets a ring of its own, which must not be touched.
            let (_other_peer, _other) = pair().await;
            let mut ring = ring;
            let mut buf = [0u8; 4];
            ring.read(&mut buf).await
        })
    })
    .join()
    .expect("thread");
    let err = elsewhere.expect_err("a read off the ring's thread fails");
    assert!(err.to_string().contains("off the worker thread"), "{err}");
    drop(peer);
}

#[test]
fn a_new_runtime_on_the_same_thread_gets_a_new_driver() {
    for round in 0..2u8 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (mut peer, mut ring) = pair().await;
            peer.write_all(&[round; 10]).await.expect("write");
            let mut buf = [0u8; 10];
            tokio::time::timeout(Duration::from_secs(5), ring.read_exact(&mut buf))
                .await
                .expect("the driver of this runtime hands out the completion")
                .expect("read");
            assert_eq!(buf, [round; 10]);
        });
    }
}

#[tokio::test]
async fn a_stream_dropped_while_its_peer_reads_nothing_still_closes_its_socket() {
    let (peer, mut ring) = pair().await;
    // The peer never reads: the ring's sends fill both socket buffers and the last one waits.
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), ring.write(&chunk)).await {
            Ok(Ok(n)) => written += n,
            Ok(Err(err)) => panic!("write failed: {err}"),
            Err(_) => break, // the write waits: a send is stuck in flight
        }
        assert!(written < 1 << 30, "the writes never waited");
    }
    let before = with_ring(None, |r| Ok(r.open_sockets())).expect("ring");
    drop(ring);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while with_ring(None, |r| Ok(r.open_sockets())).expect("ring") != before - 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck send kept the socket open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(peer);
}

#[tokio::test]
async fn completions_past_a_full_completion_queue_still_arrive() {
    // A small ring (this test's thread has none yet): 16 completion entries, 16 buffers.
    super::start_with(super::Sizes {
        submissions: 8,
        completions: 16,
        buffers: 16,
    })
    .expect("a small ring");
    // 120 receives complete before the driver runs again: far more than the queue holds.
    all_at_once(120).await;
}

#[test]
fn this_kernel_passes_the_probe_tether_runs_at_start() {
    // The engine's own tests above need the same; the probe must agree with them.
    super::probe().expect("io_uring with a provided buffer ring");
}
