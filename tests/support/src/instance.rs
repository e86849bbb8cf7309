//! A tether instance running inside the test's runtime, or as a process of its own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::config::ConfigText;
use crate::http::closed_port;

/// A tether running in this test's runtime.
pub struct RunningTether {
    /// The first address of the first frontend.
    pub addr: SocketAddr,
    /// Its handle.
    pub handle: tether::Handle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningTether {
    /// Stops it gracefully and waits (up to 10 s) for `run` to end.
    pub async fn stop(self) {
        self.stopped_within(Duration::from_secs(10)).await;
    }

    /// Stops it gracefully; true if `run` ended, without a panic, within `limit`.
    pub async fn stopped_within(mut self, limit: Duration) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => matches!(tokio::time::timeout(limit, task).await, Ok(Ok(()))),
            None => false,
        }
    }
}

impl Drop for RunningTether {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts tether with `config` (a [`crate::Config`], or TOML text for the
/// tests that go through the text on purpose); frontend binds should be "127.0.0.1:0".
pub async fn start_tether(config: &(impl ConfigText + ?Sized)) -> RunningTether {
    start_tether_on(config, vec![tokio::runtime::Handle::current()]).await
}

/// Starts tether with `config`, one worker per runtime in `workers` (see
/// `Tether::bind_on`); `run` goes on this test's runtime.
pub async fn start_tether_on(
    config: &(impl ConfigText + ?Sized),
    workers: Vec<tokio::runtime::Handle>,
) -> RunningTether {
    crate::logs::quiet_access_log_unless_captured();
    let config =
        tether::config::parse(&config.config_text(), "test.toml").unwrap_or_else(|e| panic!("test config: {e}"));
    let tether = tether::Tether::bind_on(&config, workers).expect("bind tether");
    let first = config.frontends[0].name.clone();
    let addr = tether.local_addrs(&first)[0];
    let handle = tether.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tether.run(async move {
        let _ = stopped.await;
    }));
    RunningTether {
        addr,
        handle,
        stop: Some(stop),
        task: Some(task),
    }
}

/// `tether run` in a process of its own, its config in a temporary folder.
pub struct TetherProcess {
    /// The process; killed if still running when this drops.
    pub child: tokio::process::Child,
    /// The frontend's address (127.0.0.1 and the port it was given).
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl TetherProcess {
    /// Starts `bin` (the test's `env!("CARGO_BIN_EXE_tether")`, which only
    /// the tether package's own test targets see) as `tether run` with
    /// `config`, whose frontend binds `127.0.0.1:0`, moved to a free port;
    /// returns once that port accepts.
    pub async fn start(bin: &str, config: &(impl ConfigText + ?Sized)) -> TetherProcess {
        let port = closed_port().await.port();
        let dir = std::env::temp_dir().join(format!("tether-process-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("tether.toml");
        std::fs::write(
            &config_path,
            config
                .config_text()
                .replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("TETHER_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start tether");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = std::time::Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tether did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TetherProcess { child, addr, dir }
    }

    /// Sends SIGTERM (the graceful stop).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("tether is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }
}

impl Drop for TetherProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
