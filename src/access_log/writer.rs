//! The access log's side effects: each thread formats its lines into a
//! buffer of its own (one per sink), a full buffer is handed to the sink's
//! writer thread through a bounded queue with `try_send`, and the writer
//! thread also collects what quiet threads hold every [`TICK`], so a line
//! appears within about that long without a clock read per line. When the
//! destination cannot keep up the queue fills, and whole buffers are dropped
//! and counted (`tether_access_log_dropped_total`): a worker never waits for
//! the log's destination.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::util::lock;

/// A thread's buffer is handed to the writer once it holds this much.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Buffers queued for the writer at most (with [`CHUNK_BYTES`]: about 1 MiB).
pub const QUEUE_CHUNKS: usize = 64;
/// How often the writer collects the buffers of quiet threads: the longest a
/// line waits for its destination when the destination keeps up.
pub const TICK: Duration = Duration::from_millis(100);

/// Lines dropped because the destination could not keep up.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Whether the current spell of dropping has been logged.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Access-log lines dropped since start because their destination could not
/// keep up (`tether_access_log_dropped_total`).
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where a sink writes.
#[derive(Clone)]
pub enum Target {
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, opened for appending (created if missing) by the writer thread.
    File(PathBuf),
    /// A function handed every chunk of whole lines (tests, embedders).
    Function(LineFn),
}

/// What a [`Target::Function`] is: called on the writer thread with whole lines.
pub type LineFn = Arc<dyn Fn(&[u8]) + Send + Sync>;

impl Target {
    /// Whether two targets write to the same place (a reload keeps the sink then).
    pub fn same_as(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Stderr, Target::Stderr) | (Target::Stdout, Target::Stdout) => true,
            (Target::File(a), Target::File(b)) => a == b,
            (Target::Function(a), Target::Function(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stderr => f.write_str("stderr"),
            Target::Stdout => f.write_str("stdout"),
            Target::File(path) => write!(f, "{}", path.display()),
            Target::Function(_) => f.write_str("function"),
        }
    }
}

/// Whole lines on their way to the writer.
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    lines: u64,
}

/// One thread's buffer for one sink. The writer thread takes it when it
/// collects; the lock is the thread's own but for that moment.
#[derive(Debug, Default)]
struct Slot {
    chunk: Mutex<Chunk>,
}

/// What a sink's writer thread and the threads writing lines share.
#[derive(Debug)]
struct Shared {
    target: Target,
    /// Every thread's buffer for this sink (the writer collects them).
    slots: Mutex<Vec<Arc<Slot>>>,
    queue: SyncSender<Chunk>,
    /// The writer's end, until the writer thread starts.
    receiver: Mutex<Option<Receiver<Chunk>>>,
    reopen: AtomicBool,
    /// The sink is gone: write what is left and stop.
    closed: AtomicBool,
    /// Flush requests made and flushes done (see [`flush_all`]).
    flush_asked: AtomicU64,
    flush_done: AtomicU64,
    /// The writer thread has written everything and ended.
    finished: AtomicBool,
}

/// One destination of access-log lines and its writer thread (started with
/// the first line). Dropping it writes what is left and ends the thread.
#[derive(Debug)]
pub struct Sink {
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

/// The sinks alive, so the binary can flush them at exit.
fn live() -> &'static Mutex<Vec<Weak<Shared>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<Shared>>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

thread_local! {
    /// This thread's buffer for each sink it has written to.
    static SLOTS: RefCell<Vec<(Weak<Shared>, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

impl Sink {
    /// A sink writing to `target`; no thread runs and nothing is opened until the first line.
    pub fn new(target: Target) -> Sink {
        let (queue, receiver) = sync_channel(QUEUE_CHUNKS);
        let shared = Arc::new(Shared {
            target,
            slots: Mutex::default(),
            queue,
            receiver: Mutex::new(Some(receiver)),
            reopen: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            flush_asked: AtomicU64::new(0),
            flush_done: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        });
        let mut live = lock(live());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&shared));
        Sink {
            shared,
            started: OnceLock::new(),
        }
    }

    /// Where it writes.
    pub fn target(&self) -> &Target {
        &self.shared.target
    }

    /// Appends one line (written by `format`, newline included) to this
    /// thread's buffer; hands the buffer to the writer when it is full, or
    /// drops and counts its lines when the writer is behind. Never blocks.
    pub fn write_line(&self, format: impl FnOnce(&mut Vec<u8>)) {
        self.started.get_or_init(|| self.start());
        self.with_slot(|slot| {
            let mut chunk = lock(&slot.chunk);
            if chunk.bytes.capacity() == 0 {
                chunk.bytes.reserve(CHUNK_BYTES + 1024);
            }
            format(&mut chunk.bytes);
            chunk.lines += 1;
            if chunk.bytes.len() >= CHUNK_BYTES {
                // Sent under the slot's lock: the writer, collecting, sees this
                // thread's lines in order.
                let full = std::mem::take(&mut *chunk);
                hand_over(&self.shared.queue, full);
            }
        })
    }

    /// Asks the writer to reopen a file destination before its next write.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
        let _ = self.shared.queue.try_send(Chunk::default());
    }

    /// Runs `f` on this thread's buffer for this sink (registered on first use).
    fn with_slot(&self, f: impl FnOnce(&Slot)) {
        SLOTS.with(|slots| {
            // A weak pointer keeps its allocation, so the address names the sink.
            let this = Arc::as_ptr(&self.shared);
            if let Some((_, slot)) = slots
                .borrow()
                .iter()
                .find(|(shared, _)| std::ptr::eq(shared.as_ptr(), this))
            {
                return f(slot);
            }
            let slot = Arc::new(Slot::default());
            lock(&self.shared.slots).push(slot.clone());
            let mut slots = slots.borrow_mut();
            slots.retain(|(shared, _)| shared.strong_count() > 0);
            slots.push((Arc::downgrade(&self.shared), slot.clone()));
            drop(slots);
            f(&slot)
        })
    }

    fn start(&self) {
        let Some(receiver) = lock(&self.shared.receiver).take() else {
            return;
        };
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("tether-access-log".into())
            .spawn(move || Writer::new(shared).run(receiver));
        if let Err(err) = spawned {
            tracing::error!(cause = %err, "cannot start the access log's writer thread: no access lines will be written");
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        // Wakes the writer; a full queue means it is awake already.
        let _ = self.shared.queue.try_send(Chunk::default());
    }
}

/// Queues `chunk` for the writer, or drops and counts its lines.
fn hand_over(queue: &SyncSender<Chunk>, chunk: Chunk) {
    let lines = chunk.lines;
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = queue.try_send(chunk) {
        DROPPED.fetch_add(lines, Ordering::Relaxed);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the access log's destination cannot keep up: lines are dropped \
                 (counted in tether_access_log_dropped_total)"
            );
        }
    }
}

/// Writes at most every this many seconds when the file cannot be opened.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    file: Option<File>,
    /// When opening the file failed last (it is retried after [`REOPEN_RETRY`]).
    failed_at: Option<Instant>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Writer {
        Writer {
            shared,
            file: None,
            failed_at: None,
        }
    }

    fn run(mut self, receiver: Receiver<Chunk>) {
        let mut next_collect = Instant::now() + TICK;
        loop {
            let wait = next_collect.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(wait) {
                Ok(chunk) => self.write(chunk),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let closed = self.shared.closed.load(Ordering::Relaxed);
            let asked = self.shared.flush_asked.load(Ordering::Acquire);
            if closed || asked != self.shared.flush_done.load(Ordering::Relaxed) || Instant::now() >= next_collect {
                while self.collect(&receiver) && closed {}
                next_collect = Instant::now() + TICK;
                self.shared.flush_done.store(asked, Ordering::Release);
                if closed {
                    self.shared.finished.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Queues every thread's partial buffer (under that thread's lock, so
    /// the queue holds each thread's lines in order), then writes what the
    /// queue holds. Returns whether a buffer had to stay behind (queue full).
    fn collect(&mut self, receiver: &Receiver<Chunk>) -> bool {
        let slots: Vec<Arc<Slot>> = {
            let mut slots = lock(&self.shared.slots);
            // A thread that ended left its buffer here alone: drop it once empty.
            slots.retain(|slot| Arc::strong_count(slot) > 1 || lock(&slot.chunk).lines > 0);
            slots.clone()
        };
        let mut left = false;
        for slot in &slots {
            let mut chunk = lock(&slot.chunk);
            if chunk.lines > 0 {
                match self.shared.queue.try_send(std::mem::take(&mut *chunk)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => {
                        *chunk = back;
                        left = true;
                    }
                }
            }
        }
        for _ in 0..QUEUE_CHUNKS * 2 {
            match receiver.try_recv() {
                Ok(chunk) => self.write(chunk),
                Err(_) => {
                    // Caught up: a later spell of dropping is logged again.
                    WARNED.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        self.flush();
        left
    }

    fn write(&mut self, chunk: Chunk) {
        if self.shared.reopen.swap(false, Ordering::Relaxed) {
            self.file = None;
            self.failed_at = None;
        }
        if chunk.bytes.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let written = match &shared.target {
            Target::Stderr => write_in_lines(&mut std::io::stderr().lock(), &chunk.bytes),
            Target::Stdout => write_in_lines(&mut std::io::stdout().lock(), &chunk.bytes),
            Target::Function(f) => {
                f(&chunk.bytes);
                Ok(())
            }
            Target::File(path) => match self.open(path) {
                Some(file) => file.write_all(&chunk.bytes),
                None => Err(std::io::Error::other("not open")),
            },
        };
        if written.is_err() {
            DROPPED.fetch_add(chunk.lines, Ordering::Relaxed);
            if matches!(self.shared.target, Target::File(_)) {
                self.file = None;
            }
        }
    }

    fn flush(&mut self) {
        match &self.shared.target {
            Target::Stderr => drop(std::io::stderr().flush()),
            Target::Stdout => drop(std::io::stdout().flush()),
            _ => {}
        }
    }

    /// The open file, opened (again) when needed; `None` while it cannot be.
    fn open(&mut self, path: &std::path::Path) -> Option<&mut File> {
        if self.file.is_none() {
            if self.failed_at.is_some_and(|at| at.elapsed() < REOPEN_RETRY) {
                return None;
            }
            match std::fs::OpenOptions::new().append(true).create(true).open(path) {
                Ok(file) => {
                    self.file = Some(file);
                    self.failed_at = None;
                }
                Err(err) => {
                    if self.failed_at.is_none() {
                        tracing::error!(file = %path.display(), cause = %err, "cannot open the access log: lines are dropped until it can be");
                    }
                    self.failed_at = Some(Instant::now());
                    return None;
                }
            }
        }
        self.file.as_mut()
    }
}

/// Writes `bytes` (whole lines) in pieces of at most `PIPE_BUF` (4096)
/// bytes cut after a newline, so a line never interleaves with another
/// writer's output on a shared pipe (standard error carries the other logs).
fn write_in_lines(out: &mut impl Write, mut bytes: &[u8]) -> std::io::Result<()> {
    const PIPE_BUF: usize = 4096;
    while !bytes.is_empty() {
        let end = if bytes.len() <= PIPE_BUF {
            bytes.len()
        } else {
            memchr::memrchr(b'\n', &bytes[..PIPE_BUF]).map_or(PIPE_BUF, |n| n + 1)
        };
        out.write_all(&bytes[..end])?;
        bytes = &bytes[end..];
    }
    Ok(())
}

/// Writes every line logged so far by every sink, waiting at most `timeout`
/// (the binary calls it before it exits; tests before they read a file).
/// Returns whether every sink finished in time.
pub fn flush_all(timeout: Duration) -> bool {
    let sinks: Vec<Arc<Shared>> = lock(live()).iter().filter_map(Weak::upgrade).collect();
    let deadline = Instant::now() + timeout;
    let mut done = true;
    for shared in sinks {
        if lock(&shared.receiver).is_some() {
            continue; // never started: nothing was logged to it
        }
        let asked = shared.flush_asked.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = shared.queue.try_send(Chunk::default());
        while shared.flush_done.load(Ordering::Acquire) < asked && !shared.finished.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                done = false;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chunks_are_written_in_pipe_sized_pieces_cut_after_a_newline() {
        struct Pieces(Vec<usize>, Vec<u8>);
        impl Write for Pieces {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.len());
                self.1.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let line = [b"x".repeat(999), b"\n".to_vec()].concat();
        let bytes = line.repeat(10);
        let mut out = Pieces(Vec::new(), Vec::new());
        write_in_lines(&mut out, &bytes).unwrap();
        assert_eq!(out.0, [4000, 4000, 2000]);
        assert_eq!(out.1, bytes);
    }

    #[test]
    fn lines_reach_a_function_target_within_a_tick_and_in_order() {
        let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
        let into = seen.clone();
        let sink = Sink::new(Target::Function(Arc::new(move |b: &[u8]| {
            into.lock().unwrap().extend_from_slice(b)
        })));
        for i in 0..2000 {
            sink.write_line(|out| out.extend_from_slice(format!("line {i} {}\n", "y".repeat(40)).as_bytes()));
        }
        let start = Instant::now();
        while seen.lock().unwrap().iter().filter(|b| **b == b'\n').count() < 2000 {
            assert!(start.elapsed() < Duration::from_secs(2), "lines still missing");
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
        let numbers: Vec<usize> = text
            .lines()
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..2000).collect::<Vec<_>>());
    }
}
