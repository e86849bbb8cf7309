//! The io_uring engine: one thread, one ring. Accept, connect, receive, send
//! and shutdown are all submission queue entries; every loop turn submits what
//! the previous completions queued and waits for the next completion in one
//! `io_uring_enter` (`submit_and_wait`).
//!
//! Receiving is either multishot (one `IORING_OP_RECV` per socket that keeps
//! posting completions, each into a buffer the kernel picks from a provided
//! buffer ring) or single (one receive into the direction's own buffer, armed
//! again once its bytes are sent).
//!
//! Memory safety: the kernel reads and writes memory named by entries after
//! they were pushed. Every such memory block is owned here and outlives its
//! entries: the buffer ring and its buffers live as long as the `Uring`
//! (declared after the ring, so dropped after it), and a pair (its address for
//! connect, its own receive buffers) is freed only when it has no entry left in
//! flight (`Pair::inflight`).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::{Upstreams, BUF_SIZE};

/// How the engine receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvMode {
    /// Multishot receive with a provided buffer ring (kernel ≥ 6.0).
    Multishot,
    /// One receive at a time into the direction's own buffer.
    Single,
}

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How to receive.
    pub recv: RecvMode,
    /// Buffers in the provided buffer ring (a power of two, multishot only).
    pub buffers: u16,
    /// Submission queue entries.
    pub ring_entries: u32,
}

/// What the kernel reports about multishot receive and buffer rings, for the report.
pub fn probe() -> io::Result<String> {
    let ring = IoUring::new(8)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let mut buffers = BufRing::new(&ring, 8)?;
    buffers.publish();
    Ok(format!(
        "io_uring_setup ok; recv {}; send {}; buffer ring registered",
        probe.is_supported(opcode::RecvMulti::CODE),
        probe.is_supported(opcode::Send::CODE)
    ))
}

/// Runs the relay on `listener` until the process ends or an error of the ring itself.
pub fn run(listener: TcpListener, upstreams: Upstreams, settings: Settings) -> io::Result<()> {
    let ring = IoUring::builder().build(settings.ring_entries)?;
    let buffers = match settings.recv {
        RecvMode::Multishot => Some(BufRing::new(&ring, settings.buffers)?),
        RecvMode::Single => None,
    };
    let mut relay = Uring {
        ring,
        buffers,
        settings,
        listener,
        upstreams,
        pairs: Vec::new(),
        free: Vec::new(),
        pending: Vec::new(),
        starved: Vec::new(),
    };
    relay.run()
}

const BGID: u16 = 0;
/// `user_data` of the accept entry; every other entry carries a pair index and an op.
const ACCEPT: u64 = u64::MAX;
const OP_CONNECT: u64 = 0;
const OP_RECV: u64 = 2; // + direction
const OP_SEND: u64 = 4; // + direction
const OP_SHUTDOWN: u64 = 6; // + direction

fn user_data(pair: usize, op: u64) -> u64 {
    ((pair as u64) << 8) | op
}

/// A received block not yet sent on.
struct Chunk {
    ptr: *const u8,
    len: usize,
    /// The ring buffer holding it (multishot), given back once sent.
    bid: Option<u16>,
}

/// One direction: receives from `fds[d]`, sends to `fds[1 - d]`.
#[derive(Default)]
struct Dir {
    queue: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent.
    sent: usize,
    sending: bool,
    recv_armed: bool,
    eof: bool,
    /// The write shutdown was submitted.
    shutting: bool,
    done: bool,
    /// The receive buffer of single mode (in use while `queue` is not empty).
    own: Option<Box<[u8]>>,
}

struct Pair {
    /// Client, upstream.
    fds: [RawFd; 2],
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    dirs: [Dir; 2],
    /// Entries in flight that name this pair (or its memory).
    inflight: u32,
    closing: bool,
}

struct Uring {
    // Field order matters: the ring is dropped (and its entries with it)
    // before the buffers its entries may point into.
    ring: IoUring,
    buffers: Option<BufRing>,
    settings: Settings,
    listener: TcpListener,
    upstreams: Upstreams,
    pairs: Vec<Option<Box<Pair>>>,
    free: Vec<usize>,
    /// Entries queued by this turn's completions, submitted in one go.
    pending: Vec<squeue::Entry>,
    /// Directions whose multishot receive ended for lack of buffers.
    starved: Vec<(usize, usize)>,
}

impl Uring {
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            self.flush()?;
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            for (ud, res, flags) in cqes.drain(..) {
                self.complete(ud, res, flags);
            }
            if let Some(b) = &mut self.buffers {
                if b.publish() {
                    for (i, d) in std::mem::take(&mut self.starved) {
                        self.arm_recv(i, d);
                    }
                }
            }
        }
    }

    /// Moves the queued entries into the submission queue (submitting early if it is full).
    fn flush(&mut self) -> io::Result<()> {
        for entry in self.pending.drain(..) {
            loop {
                // SAFETY: every entry names memory that outlives it (see the module doc).
                if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                    break;
                }
                self.ring.submit()?;
            }
        }
        Ok(())
    }

    fn push(&mut self, pair: usize, entry: squeue::Entry) {
        if let Some(p) = self.pairs[pair].as_mut() {
            p.inflight += 1;
        }
        self.pending.push(entry);
    }

    fn arm_accept(&mut self) {
        let fd = self.listener.as_raw_fd();
        let entry = opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT);
        self.pending.push(entry);
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        if ud == ACCEPT {
            if res >= 0 {
                self.accepted(res);
            } else {
                eprintln!("accept: {}", io::Error::from_raw_os_error(-res));
            }
            self.arm_accept();
            return;
        }
        let i = (ud >> 8) as usize;
        let op = ud & 0xff;
        let Some(p) = self.pairs.get_mut(i).and_then(|p| p.as_mut()) else {
            return;
        };
        let ends_entry = op / 2 != OP_RECV / 2 || !cqueue::more(flags);
        if ends_entry {
            p.inflight -= 1;
        }
        match op {
            OP_CONNECT => self.connected(i, res),
            OP_RECV | 3 => self.received(i, (op - OP_RECV) as usize, res, flags),
            OP_SEND | 5 => self.sent(i, (op - OP_SEND) as usize, res),
            _ => self.shut_down(i, (op - OP_SHUTDOWN) as usize),
        }
        self.free_if_finished(i);
    }

    fn accepted(&mut self, client: RawFd) {
        let upstream = self.upstreams.pick();
        let (addr, addr_len) = sockaddr(&upstream);
        let family = if upstream.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            eprintln!("socket: {}", io::Error::last_os_error());
            close(client);
            return;
        }
        set_nodelay(client);
        set_nodelay(fd);
        let own = |mode| (mode == RecvMode::Single).then(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        let pair = Box::new(Pair {
            fds: [client, fd],
            addr,
            addr_len,
            dirs: [
                Dir {
                    own: own(self.settings.recv),
                    ..Dir::default()
                },
                Dir {
                    own: own(self.settings.recv),
                    ..Dir::default()
                },
            ],
            inflight: 0,
            closing: false,
        });
        let i = match self.free.pop() {
            Some(i) => {
                self.pairs[i] = Some(pair);
                i
            }
            None => {
                self.pairs.push(Some(pair));
                self.pairs.len() - 1
            }
        };
        let p = self.pairs[i].as_ref().expect("just stored");
        // The address lives in the boxed pair, which outlives the entry.
        let entry = opcode::Connect::new(Fd(fd), std::ptr::addr_of!(p.addr).cast(), p.addr_len)
            .build()
            .user_data(user_data(i, OP_CONNECT));
        self.push(i, entry);
    }

    fn connected(&mut self, i: usize, res: i32) {
        if res < 0 {
            eprintln!("connect: {}", io::Error::from_raw_os_error(-res));
            self.abort(i);
            return;
        }
        self.arm_recv(i, 0);
        self.arm_recv(i, 1);
    }

    fn arm_recv(&mut self, i: usize, d: usize) {
        let Some(p) = self.pairs[i].as_mut() else { return };
        let dir = &mut p.dirs[d];
        if p.closing || dir.recv_armed || dir.eof {
            return;
        }
        let fd = Fd(p.fds[d]);
        let ud = user_data(i, OP_RECV + d as u64);
        let entry = match dir.own.as_mut() {
            // The buffer is in the boxed pair, freed only when no entry is in flight.
            Some(buf) => opcode::Recv::new(fd, buf.as_mut_ptr(), BUF_SIZE as u32).build(),
            None => opcode::RecvMulti::new(fd, BGID).build(),
        };
        dir.recv_armed = true;
        self.push(i, entry.user_data(ud));
    }

    fn received(&mut self, i: usize, d: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let p = self.pairs[i].as_mut().expect("checked by complete");
        let dir = &mut p.dirs[d];
        if !more {
            dir.recv_armed = false;
        }
        if p.closing {
            if let (Some(bid), Some(b)) = (bid, self.buffers.as_mut()) {
                b.give_back(bid);
            }
            return;
        }
        if res > 0 {
            let chunk = match (bid, self.buffers.as_ref(), dir.own.as_ref()) {
                (Some(bid), Some(b), _) => Chunk {
                    ptr: b.addr(bid),
                    len: res as usize,
                    bid: Some(bid),
                },
                (None, _, Some(own)) => Chunk {
                    ptr: own.as_ptr(),
                    len: res as usize,
                    bid: None,
                },
                _ => {
                    eprintln!("receive completion without a buffer");
                    self.abort(i);
                    return;
                }
            };
            dir.queue.push_back(chunk);
            if !dir.sending {
                self.start_send(i, d);
            }
            // Multishot may end after data (e.g. completion queue overflow): arm again.
            if !more && self.settings.recv == RecvMode::Multishot {
                self.arm_recv(i, d);
            }
        } else if res == 0 {
            dir.eof = true;
            if dir.queue.is_empty() {
                self.start_shutdown(i, d);
            }
        } else if res == -libc::ENOBUFS {
            self.starved.push((i, d));
        } else {
            self.abort(i);
        }
    }

    fn start_send(&mut self, i: usize, d: usize) {
        let p = self.pairs[i].as_mut().expect("live pair");
        let dir = &mut p.dirs[d];
        let Some(front) = dir.queue.front() else { return };
        // SAFETY: `sent < len`, so the pointer stays inside the chunk's buffer.
        let ptr = unsafe { front.ptr.add(dir.sent) };
        let len = (front.len - dir.sent) as u32;
        dir.sending = true;
        let entry = opcode::Send::new(Fd(p.fds[1 - d]), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(i, OP_SEND + d as u64));
        self.push(i, entry);
    }

    fn sent(&mut self, i: usize, d: usize, res: i32) {
        let p = self.pairs[i].as_mut().expect("checked by complete");
        let dir = &mut p.dirs[d];
        dir.sending = false;
        if p.closing {
            return;
        }
        if res < 0 {
            self.abort(i);
            return;
        }
        dir.sent += res as usize;
        let front_len = dir.queue.front().map_or(0, |c| c.len);
        if dir.sent >= front_len {
            dir.sent = 0;
            if let Some(Chunk { bid: Some(bid), .. }) = dir.queue.pop_front() {
                if let Some(b) = self.buffers.as_mut() {
                    b.give_back(bid);
                }
            }
        }
        if !dir.queue.is_empty() {
            self.start_send(i, d);
        } else if dir.eof {
            self.start_shutdown(i, d);
        } else if self.settings.recv == RecvMode::Single {
            self.arm_recv(i, d);
        }
    }

    fn start_shutdown(&mut self, i: usize, d: usize) {
        let p = self.pairs[i].as_mut().expect("live pair");
        if p.dirs[d].shutting {
            return;
        }
        p.dirs[d].shutting = true;
        let entry = opcode::Shutdown::new(Fd(p.fds[1 - d]), libc::SHUT_WR)
            .build()
            .user_data(user_data(i, OP_SHUTDOWN + d as u64));
        self.push(i, entry);
    }

    fn shut_down(&mut self, i: usize, d: usize) {
        let p = self.pairs[i].as_mut().expect("checked by complete");
        p.dirs[d].done = true;
        if p.dirs.iter().all(|d| d.done) {
            self.abort(i);
        }
    }

    /// Ends a pair: shuts both sockets down so entries still in flight on them
    /// complete; the pair is freed once the last one has.
    fn abort(&mut self, i: usize) {
        let Some(p) = self.pairs[i].as_mut() else { return };
        if !p.closing {
            p.closing = true;
            for fd in p.fds {
                // SAFETY: plain shutdown(2) on a socket this pair owns.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
    }

    fn free_if_finished(&mut self, i: usize) {
        let finished = self.pairs[i].as_ref().is_some_and(|p| p.closing && p.inflight == 0);
        if !finished {
            return;
        }
        let p = self.pairs[i].take().expect("checked");
        for dir in &p.dirs {
            for chunk in &dir.queue {
                if let (Some(bid), Some(b)) = (chunk.bid, self.buffers.as_mut()) {
                    b.give_back(bid);
                }
            }
        }
        self.starved.retain(|&(j, _)| j != i);
        close(p.fds[0]);
        close(p.fds[1]);
        self.free.push(i);
    }
}

/// A provided buffer ring (`IORING_REGISTER_PBUF_RING`): `entries` buffers of
/// `BUF_SIZE` bytes the kernel picks from for multishot receives; a buffer is
/// given back (appended at the tail) once its bytes were sent on.
struct BufRing {
    /// The ring of entries shared with the kernel (page aligned).
    ring: *mut BufRingEntry,
    layout: std::alloc::Layout,
    mem: Box<[u8]>,
    mask: u16,
    /// Local tail; `publish` makes it visible to the kernel.
    tail: u16,
    published: u16,
}

impl BufRing {
    fn new(ring: &IoUring, entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffers must be a power of two",
            ));
        }
        let layout = std::alloc::Layout::from_size_align(entries as usize * std::mem::size_of::<BufRingEntry>(), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if ptr.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        let mut this = Self {
            ring: ptr,
            layout,
            mem: vec![0u8; entries as usize * BUF_SIZE].into_boxed_slice(),
            mask: entries - 1,
            tail: 0,
            published: 0,
        };
        // SAFETY: the ring memory is valid for `entries` entries and lives as
        // long as `this`, which the caller keeps until after the ring is dropped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, entries, BGID, 0)?
        };
        for bid in 0..entries {
            this.give_back(bid);
        }
        this.publish();
        Ok(this)
    }

    fn addr(&self, bid: u16) -> *const u8 {
        self.mem[bid as usize * BUF_SIZE..].as_ptr()
    }

    fn give_back(&mut self, bid: u16) {
        // SAFETY: the index is masked into the ring's `entries` slots; the
        // kernel only reads slots between its head and the published tail,
        // and this one is past the published tail.
        let entry = unsafe { &mut *self.ring.add((self.tail & self.mask) as usize) };
        entry.set_addr(self.addr(bid) as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the given-back buffers visible to the kernel; true if there were any.
    fn publish(&mut self) -> bool {
        if self.tail == self.published {
            return false;
        }
        // SAFETY: the tail field lies in the first ring entry, valid and
        // aligned for u16; the kernel reads it concurrently, hence the atomic.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.ring).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        true
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is gone.
        unsafe { std::alloc::dealloc(self.ring.cast(), self.layout) };
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid pointer to a c_int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn close(fd: RawFd) {
    // SAFETY: the fd is owned here and closed once.
    unsafe { libc::close(fd) };
}
