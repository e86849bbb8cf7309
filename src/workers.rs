//! Worker threads, NGINX-style: each worker runs its own single-threaded
//! tokio runtime and accepts on its own `SO_REUSEPORT` socket of every
//! frontend address, so a connection lives its whole life on the thread that
//! accepted it. No work stealing, no cross-thread wake-ups on the data path;
//! the kernel spreads new connections over the workers' sockets.
//!
//! Worker 0 is the thread that called [`crate::Tether::bind_on`] (the
//! binary's main thread, which also runs health checks, the admin listener
//! and cluster sync); [`WorkerThreads`] starts the others.

use std::cell::Cell;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running on this thread: 0 on the main thread and
/// on any thread that is not one of [`WorkerThreads`]. Keeps pooled upstream
/// connections on the worker that opened them.
pub fn current_index() -> usize {
    INDEX.with(Cell::get)
}

/// Why the worker threads could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The thread or its runtime could not be created.
    #[error("cannot start worker thread {index}: {source}")]
    Start {
        /// Which worker (1-based: 0 is the calling thread).
        index: usize,
        /// What the system said.
        source: std::io::Error,
    },
}

/// One started worker: its runtime's handle, the signal that ends it, its thread.
struct Worker {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Worker threads 1..N, each blocked in its own current-thread runtime until
/// [`WorkerThreads::stop`] (or drop). Tasks spawned on a worker's handle run
/// on that thread only.
#[derive(Default)]
pub struct WorkerThreads {
    workers: Vec<Worker>,
}

impl WorkerThreads {
    /// Starts `count` worker threads, numbered from 1.
    pub fn start(count: usize) -> Result<Self, WorkerError> {
        let mut started = WorkerThreads::default();
        for index in 1..=count {
            started.workers.push(start_worker(index)?);
        }
        Ok(started)
    }

    /// The runtime handles of the started workers, in order (worker 1 first).
    pub fn handles(&self) -> Vec<Handle> {
        self.workers.iter().map(|w| w.handle.clone()).collect()
    }

    /// Every worker's runtime for [`crate::Tether::bind_on`]: the calling
    /// thread's (worker 0) first, then the started workers'.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn runtimes(&self) -> Vec<Handle> {
        std::iter::once(Handle::current()).chain(self.handles()).collect()
    }

    /// Ends every worker: tasks still running on them are dropped, then the
    /// threads are joined. Call it after the instance stopped gracefully.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for worker in self.workers.drain(..) {
            let _ = worker.stop.send(());
            if worker.thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

impl Drop for WorkerThreads {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn start_worker(index: usize) -> Result<Worker, WorkerError> {
    let start_error = |source| WorkerError::Start { index, source };
    let (ready, runtime_ready) = std::sync::mpsc::channel::<std::io::Result<Handle>>();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("tether-worker-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            };
            INDEX.with(|i| i.set(index));
            let _ = ready.send(Ok(runtime.handle().clone()));
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })
        .map_err(start_error)?;
    let handle = runtime_ready
        .recv()
        .map_err(|_| start_error(std::io::Error::other("the thread ended before its runtime started")))?
        .map_err(start_error)?;
    Ok(Worker { handle, stop, thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_its_tasks_on_its_own_thread_and_stops_on_request() {
        let workers = WorkerThreads::start(2).expect("start workers");
        let handles = workers.handles();
        assert_eq!(handles.len(), 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen: Vec<(usize, String)> = runtime.block_on(async {
            let mut seen = Vec::new();
            for handle in &handles {
                let task = handle.spawn(async {
                    let name = std::thread::current().name().unwrap_or_default().to_string();
                    (current_index(), name)
                });
                seen.push(task.await.expect("task ran"));
            }
            seen
        });
        assert_eq!(
            seen,
            vec![(1, "tether-worker-1".to_string()), (2, "tether-worker-2".to_string())]
        );
        assert_eq!(current_index(), 0, "the calling thread is worker 0");
        // A task that never ends must not keep a worker from stopping.
        handles[0].spawn(std::future::pending::<()>());
        workers.stop();
        let after_stop = runtime.block_on(handles[0].spawn(async {}));
        assert!(
            after_stop.is_err_and(|e| e.is_cancelled()),
            "a stopped worker runs nothing"
        );
    }
}
