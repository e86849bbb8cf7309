//! An io_uring data path for established tunnels (`[tunnel] engine = "io_uring"`).
//!
//! Each worker thread has one ring. A [`RingStream`] is a TCP socket taken
//! off tokio's reactor and carried by that ring: its reads are receives into
//! the ring's shared buffers (picked by the kernel only when bytes arrive, so
//! an idle socket owns no buffer and no reactor registration), its writes
//! are sends of bytes copied into a buffer of its own. Streams only queue
//! entries; one driver task per ring submits all of them once per runtime
//! turn and hands out the completions, which is where the saving is: many
//! tunnels' receives and sends cost one `io_uring_enter`, not one syscall
//! each. The driver waits on the ring's file through tokio's reactor, so the
//! worker's runtime stays the one event loop.
//!
//! A stream is used on the thread that made it (tether's workers are
//! single-threaded runtimes); elsewhere its calls fail rather than touch
//! another thread's ring.

mod buffers;
mod ring;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use ring::{Ring, Sizes};

thread_local! {
    /// This thread's ring, made on first use.
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

/// Numbers the rings, so a stream knows its own.
static NEXT_RING: AtomicU64 = AtomicU64::new(1);

/// Makes this thread's ring if it has none and starts its driver task on
/// the current tokio runtime if none runs. Fails when the kernel refuses
/// io_uring (too old, or forbidden by a seccomp policy) or outside a runtime.
pub fn start_on_this_thread() -> io::Result<()> {
    start_with(Sizes::DEFAULT)
}

/// `start_on_this_thread` with a ring of `sizes` (if this thread has none yet).
fn start_with(sizes: Sizes) -> io::Result<()> {
    RING.with(|cell| {
        let mut cell = cell.try_borrow_mut().map_err(|_| busy())?;
        let ring = match cell.as_mut() {
            Some(ring) => ring,
            None => cell.insert(Ring::new(NEXT_RING.fetch_add(1, Ordering::Relaxed), sizes)?),
        };
        if !ring.driver_running {
            let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
            // The driver watches its own duplicate of the ring's file, so the
            // descriptor it registered stays open for as long as it is registered.
            let watched = ring.fd().try_clone_to_owned()?;
            let fd = {
                let _entered = handle.enter();
                // SAFETY: the `OwnedFd` is open and owned by the `AsyncFd`
                // until it is dropped, and always returns the same descriptor.
                unsafe { AsyncFd::register_with_interest(watched, Interest::READABLE) }.map_err(io::Error::from)?
            };
            ring.driver_running = true;
            handle.spawn(Driver { fd });
        }
        Ok(())
    })
}

/// Sockets this thread's ring carries (open, or closing once what is in
/// flight completes): two per tunnel on io_uring. For diagnostics and tests.
pub fn sockets_on_this_thread() -> usize {
    RING.with(|cell| {
        cell.try_borrow()
            .ok()
            .and_then(|ring| ring.as_ref().map(Ring::open_sockets))
            .unwrap_or(0)
    })
}

/// Whether this kernel runs tether's io_uring engine: sets up a small ring
/// and registers a provided buffer ring with it (what a worker's ring
/// needs), so an operator learns at start rather than at the first tunnel.
pub fn probe() -> io::Result<()> {
    let ring = io_uring::IoUring::new(2)?;
    buffers::probe(&ring)
}

/// A TCP socket carried by this thread's ring (see the module's doc).
#[derive(Debug)]
pub struct RingStream {
    ring: u64,
    slot: u32,
}

impl RingStream {
    /// Moves `socket` onto this thread's ring, starting the ring first if
    /// needed. The socket is switched to blocking mode: the ring waits for
    /// it, nothing else does.
    pub fn adopt(socket: TcpStream) -> io::Result<Self> {
        start_on_this_thread()?;
        socket.set_nonblocking(false)?;
        with_ring(None, |ring| {
            Ok(RingStream {
                ring: ring.id,
                slot: ring.adopt(socket),
            })
        })
    }
}

impl Drop for RingStream {
    fn drop(&mut self) {
        let (id, slot) = (self.ring, self.slot);
        if_ring_left(|ring| {
            if ring.id == id {
                ring.release(slot);
            }
        });
    }
}

impl AsyncRead for RingStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let slot = self.slot;
        with_ring_poll(self.ring, |ring| ring.poll_read(slot, cx, buf))
    }
}

impl AsyncWrite for RingStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let slot = self.slot;
        with_ring_poll(self.ring, |ring| ring.poll_write(slot, cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let slot = self.slot;
        with_ring_poll(self.ring, |ring| ring.poll_flush(slot))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let slot = self.slot;
        with_ring_poll(self.ring, |ring| ring.poll_shutdown(slot, cx))
    }
}

/// Runs `f` on this thread's ring, if it is ring `id` (any ring: `None`).
fn with_ring<T>(id: Option<u64>, f: impl FnOnce(&mut Ring) -> io::Result<T>) -> io::Result<T> {
    RING.with(|cell| {
        let mut cell = cell.try_borrow_mut().map_err(|_| busy())?;
        match cell.as_mut() {
            Some(ring) if id.is_none_or(|id| id == ring.id) => f(ring),
            _ => Err(io::Error::other(
                "an io_uring stream was used off the worker thread that made it",
            )),
        }
    })
}

fn with_ring_poll<T>(id: u64, f: impl FnOnce(&mut Ring) -> Poll<io::Result<T>>) -> Poll<io::Result<T>> {
    match with_ring(Some(id), |ring| Ok(f(ring))) {
        Ok(poll) => poll,
        Err(err) => Poll::Ready(Err(err)),
    }
}

/// Runs `f` on this thread's ring if there still is one. For `Drop`s: during
/// a thread's teardown the ring may be gone already (and its sockets with it).
fn if_ring_left(f: impl FnOnce(&mut Ring)) {
    let _ = RING.try_with(|cell| {
        if let Some(ring) = cell.try_borrow_mut().ok().as_deref_mut().and_then(Option::as_mut) {
            f(ring);
        }
    });
}

fn busy() -> io::Error {
    io::Error::other("the io_uring ring is in use (re-entered)")
}

/// The task that submits a ring's queued entries and hands out its
/// completions: woken by streams that queued entries and by the ring's file
/// when completions arrive.
struct Driver {
    fd: AsyncFd<OwnedFd>,
}

/// Turns in one poll before the driver lets other tasks run.
const TURNS_PER_POLL: usize = 8;

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..TURNS_PER_POLL {
            let turned = with_ring(None, |ring| {
                ring.set_driver(cx);
                ring.turn()
            });
            let waiting = match turned {
                Ok(waiting) => waiting,
                Err(err) => {
                    tracing::error!(cause = %err, "the io_uring driver stopped (the next tunnel on this worker starts another)");
                    return Poll::Ready(());
                }
            };
            match self.fd.poll_read_ready(cx) {
                Poll::Pending => {
                    if waiting {
                        // Entries did not fit this turn: another turn soon.
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => {
                    tracing::error!(cause = %err, "the io_uring driver stopped (the next tunnel on this worker starts another)");
                    return Poll::Ready(());
                }
                // Cleared before the completions are taken: one that
                // arrives after that sets it again.
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if_ring_left(Ring::driver_stopped);
    }
}

#[cfg(test)]
mod tests;
