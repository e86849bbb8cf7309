//! A real `redis-server` for the cluster tests, started on a free port and
//! killed when dropped, and a TCP proxy that can cut a connection silently
//! (a network partition: no FIN, no RST).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::closed_port;

/// A `redis-server` child process on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    /// With TLS: the CA certificate (PEM) clients must trust.
    ca: Option<Vec<u8>>,
    /// With `requirepass`: the password.
    password: Option<String>,
}

impl RedisServer {
    /// Starts one on a free port.
    pub async fn start() -> RedisServer {
        let port = closed_port().await.port();
        Self::start_on(port).await
    }

    /// Starts one on `port` (no persistence: a restart starts empty).
    pub async fn start_on(port: u16) -> RedisServer {
        Self::spawn(port, &[], None, None).await
    }

    /// Starts one on a free port asking for `password` (clients and replicas alike).
    pub async fn start_with_password(password: &str) -> RedisServer {
        let port = closed_port().await.port();
        let args = [
            "--requirepass".to_string(),
            password.to_string(),
            "--masterauth".to_string(),
            password.to_string(),
        ];
        Self::spawn(port, &args, None, Some(password.to_string())).await
    }

    /// Starts a replica of `master` on a free port (with its password, if
    /// any) and waits until it has synchronised.
    pub async fn start_replica_of(master: &RedisServer) -> RedisServer {
        let port = closed_port().await.port();
        let mut args = vec![
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            master.port.to_string(),
        ];
        if let Some(password) = &master.password {
            args.extend([
                "--requirepass".to_string(),
                password.clone(),
                "--masterauth".to_string(),
                password.clone(),
            ]);
        }
        let replica = Self::spawn(port, &args, None, master.password.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("replication");
            let info: String = replica.run(&cmd).await;
            if info.contains("master_link_status:up") {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "the replica on {port} did not synchronise: {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the server says it is (`master` or `slave`, from `ROLE`); an
    /// error's text when it does not answer (a sentinel promoting it closes
    /// its clients' connections).
    pub async fn role(&self) -> String {
        let answer: redis::RedisResult<Vec<redis::Value>> = async {
            let mut connection = self.connection().await?;
            redis::cmd("ROLE").query_async(&mut connection).await
        }
        .await;
        match answer.as_deref() {
            Ok([redis::Value::BulkString(bytes), ..]) => String::from_utf8_lossy(bytes).into_owned(),
            Ok([redis::Value::SimpleString(text), ..]) => text.clone(),
            other => format!("{other:?}"),
        }
    }

    /// The value of `key`; `None` when there is none or the server does not answer.
    pub async fn try_get(&self, key: &str) -> Option<String> {
        let mut connection = self.connection().await.ok()?;
        redis::cmd("GET").arg(key).query_async(&mut connection).await.ok()?
    }

    /// Starts one speaking only TLS with a certificate for 127.0.0.1 signed by
    /// a fresh CA (`ca.pem` in `dir`), asking for `password`.
    pub async fn start_tls(dir: &std::path::Path, password: &str) -> RedisServer {
        let port = closed_port().await.port();
        std::fs::create_dir_all(dir).expect("temp dir");
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "openssl {args:?} failed: the TLS test needs the openssl command"
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=tether test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let path = |name: &str| dir.join(name).display().to_string();
        let args = [
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            path("redis.pem"),
            "--tls-key-file".to_string(),
            path("redis.key"),
            "--tls-ca-cert-file".to_string(),
            path("ca.pem"),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
            "--requirepass".to_string(),
            password.to_string(),
        ];
        let ca = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
        Self::spawn(0, &args, Some(ca), Some(password.to_string())).await
    }

    async fn spawn(port: u16, extra: &[String], ca: Option<Vec<u8>>, password: Option<String>) -> RedisServer {
        let tls_port = extra
            .iter()
            .position(|a| a == "--tls-port")
            .and_then(|i| extra.get(i + 1))
            .and_then(|p| p.parse::<u16>().ok());
        let binary = first_runnable(["redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server"])
            .expect("redis-server is needed for the cluster tests: apt-get install redis-server (.ci/run does)");
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // A replica's full sync can still write a dump: not into the repository.
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer {
            port: tls_port.unwrap_or(port),
            child: Some(child),
            ca,
            password,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut connection) = server.connection().await {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:port` (or `rediss://`).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A new connection of its own (with the password and CA if any).
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url())?;
        if let Some(password) = &self.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match &self.ca {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        client.get_multiplexed_async_connection().await
    }

    /// The password it asks for, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The value of `key`, if any.
    pub async fn get(&self, key: &str) -> Option<String> {
        let mut connection = self.connection().await.expect("connect to redis");
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("GET")
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// Runs a command (`FLUSHALL`, …).
    pub async fn command(&self, name: &str) {
        let mut connection = self.connection().await.expect("connect to redis");
        let _: () = redis::cmd(name).query_async(&mut connection).await.expect(name);
    }

    /// `kill -9`: no goodbye to the clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    /// `INFO commandstats`' count of calls of `command` (lower case, e.g. `getex`).
    pub async fn calls(&self, command: &str) -> u64 {
        let mut connection = self.connection().await.expect("connect to redis");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .expect("INFO");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Runs `cmd` on a connection of its own and returns its answer.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut connection = self.connection().await.expect("connect to redis");
        cmd.query_async(&mut connection).await.expect("redis command")
    }
}

/// A TCP proxy in front of `upstream` that can play a silent network
/// partition: [`partition`](Self::partition) freezes every open connection
/// for good (both ends stay open, nothing more is forwarded, nobody is told)
/// and leaves new ones unanswered; [`heal`](Self::heal) lets new
/// connections through again while the frozen ones stay dead, as after a
/// partition that outlived a NAT or firewall's connection state.
pub struct PartitionProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    /// Bumped by each partition: connections of an older generation are dead.
    generation: AtomicU64,
    partitioned: AtomicBool,
}

impl PartitionProxy {
    /// A proxy on 127.0.0.1 (free port) forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> PartitionProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            generation: AtomicU64::new(0),
            partitioned: AtomicBool::new(false),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let generation = state.generation.load(Ordering::SeqCst);
                    if state.partitioned.load(Ordering::SeqCst) {
                        // Unanswered, like a SYN lost in the partition.
                        let _held = client;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, state.clone(), generation),
                        pump(server_read, client_write, state.clone(), generation),
                    );
                });
            }
        });
        PartitionProxy { addr, state, task }
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Starts a silent partition: open connections freeze for good.
    pub fn partition(&self) {
        self.state.partitioned.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends the partition for new connections.
    pub fn heal(&self) {
        self.state.partitioned.store(false, Ordering::SeqCst);
    }
}

impl Drop for PartitionProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes, or forever nothing once the
/// connection's generation is partitioned (the bytes in flight are lost and
/// both sockets stay open).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<ProxyState>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if state.generation.load(Ordering::SeqCst) != generation {
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The first of `candidates` that runs (`--version` exits 0): a program by
/// its name on the PATH, else at its usual Debian or local paths.
pub(crate) fn first_runnable(candidates: [&'static str; 3]) -> Option<&'static str> {
    candidates.into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
