//! A real DNS server for the discovery tests: Debian's `dnsmasq`, started on
//! a free port of 127.0.0.1 with its own hosts file (A records, re-read on
//! SIGHUP) and SRV lines (in its own config file, read at start: changing
//! them restarts it on the same port). It answers nothing else (`--no-resolv`,
//! `--no-hosts`). A missing `dnsmasq` fails the test, saying how to install it.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One SRV record: `name` points at `target` (a name of the hosts file).
#[derive(Clone, Debug)]
pub struct SrvRecord {
    /// `_service._proto.domain`.
    pub name: String,
    /// The target host name.
    pub target: String,
    /// The service's port on the target.
    pub port: u16,
    /// Lower is preferred.
    pub priority: u16,
    /// Share among records of one priority.
    pub weight: u16,
}

/// A running dnsmasq; stopped when dropped.
pub struct Dnsmasq {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The dnsmasq binary: on the PATH, or Debian's /usr/sbin (not on every user's PATH).
fn binary() -> String {
    for candidate in ["dnsmasq", "/usr/sbin/dnsmasq"] {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return candidate.to_string();
        }
    }
    panic!(
        "dnsmasq is not installed, and the DNS discovery tests need a real DNS server: \
         `apt-get install dnsmasq-base` (.ci/run installs it)"
    );
}

/// The text of a hosts file with `hosts` (`(ip, name)` pairs).
fn hosts_text(hosts: &[(&str, &str)]) -> String {
    hosts.iter().map(|(ip, name)| format!("{ip} {name}\n")).collect()
}

/// The config file text with `srv` records.
fn srv_text(srv: &[SrvRecord]) -> String {
    srv.iter()
        .map(|r| {
            format!(
                "srv-host={},{},{},{},{}\n",
                r.name, r.target, r.port, r.priority, r.weight
            )
        })
        .collect()
}

/// A port of 127.0.0.1 free for both UDP and TCP, below Linux's ephemeral
/// range (32768–60999). dnsmasq takes both protocols, and is restarted on the
/// same port by `set_srv`/`restart`: a port from the ephemeral range (what
/// binding port 0 gives) can meanwhile be taken as the local port of some
/// other test's outgoing connection ("Address already in use"); nothing
/// takes a port below the range unless asked for it by number.
fn port_outside_the_ephemeral_range() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test process starts at its own place in 20000..32000.
    let base = std::process::id() % 600 * 20;
    for _ in 0..12_000 {
        let offset = (base + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        let port = 20_000 + offset as u16;
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no port of 20000..32000 is free for both UDP and TCP on 127.0.0.1");
}

impl Dnsmasq {
    /// Starts dnsmasq on a free port with these A records and SRV records.
    pub fn start(hosts: &[(&str, &str)], srv: &[SrvRecord]) -> Dnsmasq {
        let port = port_outside_the_ephemeral_range();
        let dir = std::env::temp_dir().join(format!("tether-dnsmasq-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dnsmasq directory");
        let mut dns = Dnsmasq { port, dir, child: None };
        dns.write("hosts", &hosts_text(hosts));
        dns.write("srv.conf", &srv_text(srv));
        dns.spawn();
        dns
    }

    /// Where it answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Replaces the A records and makes dnsmasq read them again (SIGHUP).
    pub fn set_hosts(&mut self, hosts: &[(&str, &str)]) {
        self.write("hosts", &hosts_text(hosts));
        let pid = self.child.as_ref().expect("dnsmasq is running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP dnsmasq failed");
    }

    /// Replaces the SRV records: dnsmasq reads them only at start, so it is restarted on the same port.
    pub fn set_srv(&mut self, srv: &[SrvRecord]) {
        self.write("srv.conf", &srv_text(srv));
        self.stop();
        self.spawn();
    }

    /// Stops it: lookups get no answer until `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same records.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, text).expect("write a dnsmasq file");
    }

    fn spawn(&mut self) {
        let dir = self.dir.display();
        let mut command = Command::new(binary());
        command.args([
            "--keep-in-foreground".to_string(),
            format!("--port={}", self.port),
            "--listen-address=127.0.0.1".to_string(),
            "--bind-interfaces".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            "--no-negcache".to_string(),
            "--pid-file".to_string(),
            format!("--addn-hosts={dir}/hosts"),
            format!("--conf-file={dir}/srv.conf"),
            "--log-facility=-".to_string(),
        ]);
        // As root it would drop to `nobody`, who may not read the files: stay who we are.
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            command.arg("--user=root");
        }
        let log = std::fs::File::create(self.dir.join("log")).expect("dnsmasq log file");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dnsmasq");
        // Ready once its UDP port is taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                panic!("dnsmasq exited at start ({status}): {err}");
            }
            if UdpSocket::bind(self.addr()).is_err() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not listen on {} within 10s",
                self.addr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
