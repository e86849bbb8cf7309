//! One io_uring and the sockets it carries: the state of each socket's
//! receive and send, the entries waiting for the next submission, and what
//! each completion changes.
//!
//! Memory safety: an entry names memory (a send's bytes, a receive buffer)
//! that the kernel uses until its completion. All of it is owned here, never
//! by a [`super::RingStream`]: a send's bytes sit in their slot's `sending`
//! buffer, which is not touched until the send completes, and a slot (with
//! its socket) is freed only once no entry naming it is in flight.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, Waker};

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue, IoUring};
use tokio::io::ReadBuf;

use super::buffers::{BufRing, GROUP};

/// Bytes per receive buffer: a WebSocket message of a chat or a dashboard
/// fits in one; a bigger one takes several receives.
const BUFFER_SIZE: usize = 4096;
/// How big a ring is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    /// Submission queue entries (more wait in `pending` for the next turn).
    pub(super) submissions: u32,
    /// Completion queue entries. Past them the kernel keeps completions in
    /// an overflow list, flushed by the next `io_uring_enter` (see `turn`).
    pub(super) completions: u32,
    /// Receive buffers (a power of two).
    pub(super) buffers: u16,
}

impl Sizes {
    /// tether's ring: 256 receive buffers (1 MiB), one per socket with
    /// bytes just received and not yet copied out, which lasts until its
    /// tunnel's next poll; a receive finding none waits for one to come back.
    pub(super) const DEFAULT: Sizes = Sizes {
        submissions: 1024,
        completions: 4096,
        buffers: 256,
    };
}
/// Bytes a socket may have waiting to be sent before writes wait.
const WRITE_LIMIT: usize = 64 * 1024;
/// Emptied send buffers kept for reuse, so a steady tunnel does not
/// allocate per message and an idle one owns no buffer.
const SPARE_BUFFERS: usize = 32;
/// Send buffers bigger than this are freed rather than kept.
const SPARE_CAPACITY: usize = 16 * 1024;

const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_CANCEL: u64 = 3;

fn user_data(slot: u32, op: u64) -> u64 {
    (u64::from(slot) << 8) | op
}

/// How a socket's receive side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    Open,
    Eof,
    Failed(i32),
}

/// Bytes received into a ring buffer and not yet all copied out.
struct Received {
    bid: u16,
    len: usize,
    taken: usize,
}

/// One socket carried by the ring.
#[derive(Default)]
struct Slot {
    /// The socket (closed when the slot is freed); `None`: the slot is free.
    socket: Option<TcpStream>,
    /// The stream was dropped: finish what is in flight, then free.
    released: bool,
    /// Entries in flight that name this slot.
    in_flight: u32,
    recv_armed: bool,
    received: Option<Received>,
    read_end: Option<ReadEnd>,
    reader: Option<Waker>,
    /// Bytes handed to the kernel by the send in flight (`sending[sent..]`
    /// is what it has not confirmed yet).
    sending: Vec<u8>,
    sent: usize,
    send_armed: bool,
    /// Bytes written while a send was in flight: the next send.
    queued: Vec<u8>,
    send_failed: Option<i32>,
    writer: Option<Waker>,
}

impl Slot {
    fn read_end(&self) -> ReadEnd {
        self.read_end.unwrap_or(ReadEnd::Open)
    }
}

/// The ring, its buffers and its sockets (one per worker thread).
pub(super) struct Ring {
    // Dropped before `buffers`: the ring's file closes before the buffers
    // it names are given up (they are leaked, see `BufRing`'s `Drop`).
    uring: IoUring,
    buffers: BufRing,
    /// Tells streams of this ring from those of a ring of another thread.
    pub(super) id: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Entries queued since the last submission.
    pending: Vec<squeue::Entry>,
    /// Completions of the turn under way (`reap`), kept for the next turn.
    completed: Vec<(u64, i32, u32)>,
    /// Slots whose receive found no free buffer; woken when one is given back.
    starved: Vec<u32>,
    spare: Vec<Vec<u8>>,
    /// The driver task, woken when entries are queued.
    driver: Option<Waker>,
    /// The driver was woken and has not run since.
    driver_due: bool,
    /// A driver task exists for this ring (it says so when dropped).
    pub(super) driver_running: bool,
    /// Receives that found no free buffer (and were armed again later).
    pub(super) starved_receives: u64,
}

impl Ring {
    /// A new ring with its receive buffers registered.
    pub(super) fn new(id: u64, sizes: Sizes) -> io::Result<Self> {
        let uring = IoUring::builder()
            .setup_cqsize(sizes.completions)
            .build(sizes.submissions)?;
        let buffers = BufRing::register(&uring, sizes.buffers, BUFFER_SIZE)?;
        Ok(Self {
            uring,
            buffers,
            id,
            slots: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            completed: Vec::new(),
            starved: Vec::new(),
            spare: Vec::new(),
            driver: None,
            driver_due: false,
            driver_running: false,
            starved_receives: 0,
        })
    }

    /// The ring's own file (readable while completions wait).
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.uring)
    }

    /// Takes `socket` (in blocking mode: how io_uring treats an `O_NONBLOCK`
    /// socket has differed between kernels, an `EAGAIN` completion instead
    /// of a wait on some; a blocking one is waited for on all) and returns its slot.
    pub(super) fn adopt(&mut self, socket: TcpStream) -> u32 {
        let slot = Slot {
            socket: Some(socket),
            ..Slot::default()
        };
        match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The stream of `index` is gone: cancels what it has in flight (as a
    /// close would: bytes the kernel took are delivered, a send still
    /// waiting for room is dropped with the stream, as the bytes an epoll
    /// tunnel kept for a slow reader are), then closes the socket once the
    /// cancelled entries completed.
    pub(super) fn release(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        slot.released = true;
        slot.reader = None;
        slot.writer = None;
        slot.queued = Vec::new();
        let received = slot.received.take();
        let armed = [(slot.recv_armed, OP_RECV), (slot.send_armed, OP_SEND)];
        if let Some(received) = received {
            self.give_back(received.bid);
        }
        for (_, op) in armed.into_iter().filter(|(armed, _)| *armed) {
            let cancel = opcode::AsyncCancel::new(user_data(index, op))
                .build()
                .user_data(user_data(index, OP_CANCEL));
            self.push(index, cancel);
        }
        self.free_if_done(index);
    }

    /// `AsyncRead::poll_read` of the stream of `index`.
    pub(super) fn poll_read(
        &mut self,
        index: u32,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Poll::Ready(Err(gone()));
        };
        if let Some(received) = slot.received.as_mut() {
            let bytes = &self.buffers.bytes(received.bid, received.len)[received.taken..];
            let n = bytes.len().min(buf.remaining());
            buf.put_slice(&bytes[..n]);
            received.taken += n;
            if received.taken == received.len {
                let bid = received.bid;
                slot.received = None;
                self.give_back(bid);
            }
            return Poll::Ready(Ok(()));
        }
        match slot.read_end() {
            ReadEnd::Eof => return Poll::Ready(Ok(())),
            ReadEnd::Failed(errno) => return Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
            ReadEnd::Open => {}
        }
        set_waker(&mut slot.reader, cx);
        if !slot.recv_armed {
            self.arm_recv(index);
        }
        Poll::Pending
    }

    /// `AsyncWrite::poll_write`: copies what fits under the write limit and
    /// sends it (or queues it behind the send in flight).
    pub(super) fn poll_write(&mut self, index: u32, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Poll::Ready(Err(gone()));
        };
        if let Some(errno) = slot.send_failed {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !slot.send_armed {
            let n = data.len().min(WRITE_LIMIT);
            let mut sending = self.spare.pop().unwrap_or_default();
            sending.extend_from_slice(&data[..n]);
            let slot = &mut self.slots[index as usize];
            slot.sending = sending;
            slot.sent = 0;
            self.arm_send(index);
            return Poll::Ready(Ok(n));
        }
        let room = WRITE_LIMIT.saturating_sub(slot.queued.len());
        if room == 0 {
            set_waker(&mut slot.writer, cx);
            return Poll::Pending;
        }
        let n = data.len().min(room);
        if slot.queued.capacity() == 0 {
            slot.queued = self.spare.pop().unwrap_or_default();
        }
        let slot = &mut self.slots[index as usize];
        slot.queued.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    /// `AsyncWrite::poll_flush`: the bytes are the kernel's once written
    /// (as with a socket's own send buffer); a failed send shows here.
    pub(super) fn poll_flush(&mut self, index: u32) -> Poll<io::Result<()>> {
        match self.slots.get(index as usize) {
            None => Poll::Ready(Err(gone())),
            Some(slot) => match slot.send_failed {
                Some(errno) => Poll::Ready(Err(io::Error::from_raw_os_error(errno))),
                None => Poll::Ready(Ok(())),
            },
        }
    }

    /// `AsyncWrite::poll_shutdown`: waits until every byte written was
    /// sent, then shuts the socket's write side (a FIN after the last byte).
    pub(super) fn poll_shutdown(&mut self, index: u32, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Poll::Ready(Err(gone()));
        };
        if let Some(errno) = slot.send_failed {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if slot.send_armed || !slot.queued.is_empty() {
            set_waker(&mut slot.writer, cx);
            return Poll::Pending;
        }
        match slot.socket.as_ref() {
            Some(socket) => match socket.shutdown(std::net::Shutdown::Write) {
                Err(err) if err.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(err)),
                _ => Poll::Ready(Ok(())),
            },
            None => Poll::Ready(Err(gone())),
        }
    }

    /// One driver turn: takes every completion, then submits every queued
    /// entry in one `io_uring_enter`, again while submitting completed more.
    /// Completions that overflowed the completion queue reach it only
    /// through an `io_uring_enter` (nothing wakes the ring's file for them),
    /// so an overflow is a reason to enter too. True if work is left for
    /// another turn (entries that did not fit, completions still overflowed).
    pub(super) fn turn(&mut self) -> io::Result<bool> {
        self.driver_due = false;
        for _ in 0..8 {
            self.reap();
            if self.pending.is_empty() && !self.overflowed() {
                return Ok(false);
            }
            self.submit()?;
        }
        Ok(!self.pending.is_empty() || self.overflowed())
    }

    fn overflowed(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Remembers the driver's waker (woken when entries are queued).
    pub(super) fn set_driver(&mut self, cx: &Context<'_>) {
        set_waker(&mut self.driver, cx);
    }

    /// The driver task ended (its runtime went away).
    pub(super) fn driver_stopped(&mut self) {
        self.driver_running = false;
        self.driver = None;
    }

    fn submit(&mut self) -> io::Result<()> {
        let mut pushed = 0;
        for entry in &self.pending {
            // SAFETY: every entry names memory owned by this ring that
            // outlives it (see the module's doc).
            if unsafe { self.uring.submission().push(entry) }.is_err() {
                // The queue is full: submit what it holds and try once more.
                submit_now(&self.uring)?;
                // SAFETY: as above.
                if unsafe { self.uring.submission().push(entry) }.is_err() {
                    break;
                }
            }
            pushed += 1;
        }
        // What did not fit (the kernel is behind on completions) waits for the next turn.
        self.pending.drain(..pushed);
        submit_now(&self.uring)
    }

    fn reap(&mut self) {
        // Completions are copied out first (handling one may queue entries),
        // into a buffer the ring keeps, so a turn allocates nothing.
        let mut done = std::mem::take(&mut self.completed);
        loop {
            done.extend(self.uring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            if done.is_empty() {
                break;
            }
            for (data, result, flags) in done.drain(..) {
                self.complete(data, result, flags);
            }
        }
        self.completed = done;
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32) {
        let index = (data >> 8) as u32;
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        slot.in_flight = slot.in_flight.saturating_sub(1);
        match data & 0xff {
            OP_RECV => self.received(index, result, flags),
            OP_SEND => self.sent(index, result),
            _ => {}
        }
        self.free_if_done(index);
    }

    fn received(&mut self, index: u32, result: i32, flags: u32) {
        let slot = &mut self.slots[index as usize];
        slot.recv_armed = false;
        let buffer = cqueue::buffer_select(flags);
        if slot.released {
            if let Some(bid) = buffer {
                self.give_back(bid);
            }
            return;
        }
        match (result, buffer) {
            (n, Some(bid)) if n > 0 => {
                slot.received = Some(Received {
                    bid,
                    len: n as usize,
                    taken: 0,
                })
            }
            (n, None) if n > 0 => slot.read_end = Some(ReadEnd::Failed(libc::EIO)),
            (0, _) => slot.read_end = Some(ReadEnd::Eof),
            (n, _) if n == -libc::ENOBUFS => {
                // Armed again when a buffer comes back.
                self.starved.push(index);
                self.starved_receives += 1;
                return;
            }
            (n, _) => slot.read_end = Some(ReadEnd::Failed(-n)),
        }
        if let (true, Some(bid)) = (result <= 0, buffer) {
            self.give_back(bid);
        }
        let slot = &mut self.slots[index as usize];
        if let Some(reader) = slot.reader.take() {
            reader.wake();
        }
    }

    fn sent(&mut self, index: u32, result: i32) {
        let slot = &mut self.slots[index as usize];
        slot.send_armed = false;
        if slot.released {
            return;
        }
        if result <= 0 {
            // A send of a non-empty buffer that sends nothing will not do better next time.
            slot.send_failed = Some(if result == 0 { libc::EPIPE } else { -result });
            slot.sending = Vec::new();
            slot.queued = Vec::new();
        } else {
            slot.sent += result as usize;
            if slot.sent < slot.sending.len() {
                // A short send: the rest goes next.
                self.arm_send(index);
                return;
            }
            let mut done = std::mem::replace(&mut slot.sending, std::mem::take(&mut slot.queued));
            slot.sent = 0;
            let more = !slot.sending.is_empty();
            done.clear();
            if done.capacity() <= SPARE_CAPACITY && self.spare.len() < SPARE_BUFFERS {
                self.spare.push(done);
            }
            if more {
                self.arm_send(index);
            }
        }
        if let Some(writer) = self.slots[index as usize].writer.take() {
            writer.wake();
        }
    }

    fn arm_recv(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let Some(socket) = slot.socket.as_ref() else { return };
        slot.recv_armed = true;
        let entry = opcode::Recv::new(Fd(socket.as_raw_fd()), std::ptr::null_mut(), BUFFER_SIZE as u32)
            .buf_group(GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data(index, OP_RECV));
        self.push(index, entry);
    }

    fn arm_send(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let Some(socket) = slot.socket.as_ref() else { return };
        slot.send_armed = true;
        let rest = &slot.sending[slot.sent..];
        // The bytes stay in `sending`, untouched until this send completes.
        let entry = opcode::Send::new(Fd(socket.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(index, OP_SEND));
        self.push(index, entry);
    }

    fn push(&mut self, index: u32, entry: squeue::Entry) {
        self.slots[index as usize].in_flight += 1;
        self.pending.push(entry);
        if !self.driver_due {
            self.driver_due = true;
            if let Some(driver) = self.driver.as_ref() {
                driver.wake_by_ref();
            }
        }
    }

    fn give_back(&mut self, bid: u16) {
        self.buffers.give_back(bid);
        for index in std::mem::take(&mut self.starved) {
            let Some(slot) = self.slots.get_mut(index as usize) else {
                continue;
            };
            if slot.released {
                continue;
            }
            if let Some(reader) = slot.reader.take() {
                reader.wake();
            }
        }
    }

    fn free_if_done(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.released && slot.in_flight == 0 && slot.socket.is_some() {
            // Dropping the socket closes it.
            *slot = Slot::default();
            self.free.push(index);
        }
    }
}

impl Ring {
    /// Sockets the ring still owns (open or finishing).
    pub(super) fn open_sockets(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
impl Ring {
    /// Whether slot `index` holds a receive buffer, and the send bytes it has allocated.
    pub(super) fn held(&self, index: u32) -> (bool, usize) {
        let slot = &self.slots[index as usize];
        (
            slot.received.is_some(),
            slot.sending.capacity() + slot.queued.capacity(),
        )
    }
}

impl Drop for Ring {
    /// The ring's file closes before the sockets (field order), and the
    /// kernel tears its requests down asynchronously: the bytes of a send
    /// still in flight are leaked rather than freed under it.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if slot.send_armed {
                std::mem::forget(std::mem::take(&mut slot.sending));
            }
        }
    }
}

/// Stores `cx`'s waker in `place` unless the one there wakes the same task.
fn set_waker(place: &mut Option<Waker>, cx: &Context<'_>) {
    match place {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *place = Some(cx.waker().clone()),
    }
}

fn submit_now(uring: &IoUring) -> io::Result<()> {
    loop {
        match uring.submit() {
            Ok(_) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
            // The completion queue is full: the next turn takes completions first.
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the io_uring socket is gone")
}
