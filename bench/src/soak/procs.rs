//! The processes of a soak run (tether, echo servers, redis-server): started
//! with their output in a log file, signalled by PID, stopped when dropped.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::{sleep, Instant};

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process, killed (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program args…` with `env`, output to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, program: &Path, args: &[String], env: &[(&str, &str)]) -> io::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))?;
        Ok(Proc {
            name: name.to_owned(),
            log,
            child,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGHUP`, `libc::SIGKILL`, …).
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) with the PID of our own child, which we have not
        // reaped yet (so it cannot have been reused), and a valid signal.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Waits until `addr` accepts connections (10 s at most, while the process lives).
    pub async fn wait_port(&mut self, addr: SocketAddr) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.alive() {
                return Err(io::Error::other(format!("{} exited: {}", self.name, self.log_tail())));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            sleep(Duration::from_millis(50)).await;
        }
        Err(io::Error::other(format!("{} does not listen on {addr}", self.name)))
    }

    /// SIGKILL and reap, now.
    pub fn kill_now(&mut self) {
        let _ = self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = self.signal(libc::SIGTERM);
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            if !self.alive() {
                return;
            }
        }
        self.kill_now();
    }
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The tether release binary.
    pub tether: PathBuf,
    /// `bench-echo-server`.
    pub echo_server: PathBuf,
    /// `redis-server`, if installed.
    pub redis_server: Option<PathBuf>,
}

/// An echo server process listening on `addr`, announcing `name`.
pub async fn echo_server(bins: &Bins, dir: &Path, name: &str, addr: SocketAddr) -> io::Result<Proc> {
    let args = vec![
        "--listen".to_owned(),
        addr.to_string(),
        "--name".to_owned(),
        name.to_owned(),
        "--max-lifetime".to_owned(),
        "3600".to_owned(),
    ];
    let mut p = Proc::spawn(&format!("server-{name}"), dir, &bins.echo_server, &args, &[])?;
    p.wait_port(addr).await?;
    Ok(p)
}

/// tether on `config`, logging warnings and errors to `<dir>/<name>.log`.
pub async fn tether(bins: &Bins, dir: &Path, name: &str, config: &Path, frontend: SocketAddr) -> io::Result<Proc> {
    let args = vec!["run".to_owned(), "--config".to_owned(), config.display().to_string()];
    let mut p = Proc::spawn(name, dir, &bins.tether, &args, &[("TETHER_LOG", "warn")])?;
    p.wait_port(frontend).await?;
    Ok(p)
}

/// redis-server on `port`, without persistence (a restart comes back empty).
pub async fn redis(bins: &Bins, dir: &Path, port: u16, generation: u32) -> io::Result<Proc> {
    let program = bins
        .redis_server
        .as_ref()
        .ok_or_else(|| io::Error::other("redis-server is not installed"))?;
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn(&format!("redis-{generation}"), dir, program, &args, &[])?;
    p.wait_port(local(port)).await?;
    Ok(p)
}

/// Finds `name` in `PATH` (and /usr/sbin, /usr/local/bin).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/bin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
