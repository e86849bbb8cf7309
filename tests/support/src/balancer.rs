//! Real HAProxy and NGINX, started on a free port with a temporary config,
//! pid and log files, in the foreground under the current user, for the
//! side-by-side tests of `tether import`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;

/// Which balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerKind {
    /// `haproxy -db -f FILE`.
    Haproxy,
    /// `nginx -p DIR -c FILE -e LOG -g "daemon off; pid …;"`.
    Nginx,
}

/// The balancer's binary: on the PATH, or Debian's /usr/sbin (not on every
/// user's PATH); Err says how to install it.
pub fn find_balancer(kind: BalancerKind) -> Result<String, String> {
    let (name, version) = match kind {
        BalancerKind::Haproxy => ("haproxy", "-v"),
        BalancerKind::Nginx => ("nginx", "-v"),
    };
    for candidate in [name.to_string(), format!("/usr/sbin/{name}")] {
        let found = std::process::Command::new(&candidate)
            .arg(version)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{name} is not installed: `apt-get install {name}` (.ci/run installs it)"
    ))
}

/// A running HAProxy or NGINX; killed when dropped.
pub struct ExternalBalancer {
    /// Where it listens (the address written in its config).
    pub addr: SocketAddr,
    child: tokio::process::Child,
    dir: PathBuf,
    log: PathBuf,
}

impl ExternalBalancer {
    /// Starts `bin` with `config` (whose listen address is `addr`); returns
    /// once `addr` accepts connections.
    pub async fn start(kind: BalancerKind, bin: &str, config: &str, addr: SocketAddr) -> ExternalBalancer {
        let dir = std::env::temp_dir().join(format!("tether-{kind:?}-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let file = dir.join("balancer.conf");
        std::fs::write(&file, config).unwrap();
        let log = dir.join("logs/error.log");
        let mut command = tokio::process::Command::new(bin);
        match kind {
            BalancerKind::Haproxy => {
                command.arg("-db").arg("-f").arg(&file);
            }
            BalancerKind::Nginx => {
                let pid = dir.join("nginx.pid");
                command
                    .arg("-p")
                    .arg(&dir)
                    .arg("-c")
                    .arg(&file)
                    .arg("-e")
                    .arg(&log)
                    .arg("-g")
                    .arg(format!("daemon off; pid {};", pid.display()));
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("logs/stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let balancer = ExternalBalancer { addr, child, dir, log };
        let started = std::time::Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{bin} did not start listening on {addr}: {}",
                balancer.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        balancer
    }

    /// What it wrote to stderr and its error log (for failure messages).
    pub fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(self.dir.join("logs/stderr.log")), read(self.log.clone()))
    }
}

impl Drop for ExternalBalancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
