//! Real `redis-sentinel` processes watching a [`RedisServer`] master, for
//! the tests of `redis+sentinel://`: started on free ports with short
//! failover settings, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{closed_port, RedisServer};

/// The master name every test sentinel monitors.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-sentinel` child process on 127.0.0.1, killed when dropped.
pub struct RedisSentinel {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    /// Its config file's directory (the sentinel rewrites the file), removed when dropped.
    dir: PathBuf,
}

impl RedisSentinel {
    /// Starts one monitoring `master` as [`MASTER_NAME`] with `quorum`,
    /// declaring it down after 500 ms without an answer (failover timeout 2 s).
    pub async fn start(master: &RedisServer, quorum: u32) -> RedisSentinel {
        let port = closed_port().await.port();
        let dir = std::env::temp_dir().join(format!("tether-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master} {quorum}\n\
             sentinel down-after-milliseconds {MASTER_NAME} 500\n\
             sentinel failover-timeout {MASTER_NAME} 2000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display(),
            master = master.port,
        );
        if let Some(password) = master.password() {
            conf.push_str(&format!("sentinel auth-pass {MASTER_NAME} \"{password}\"\n"));
        }
        let file = dir.join("sentinel.conf");
        std::fs::write(&file, conf).expect("write sentinel.conf");
        let binary = crate::redis_server::first_runnable([
            "redis-sentinel",
            "/usr/bin/redis-sentinel",
            "/usr/local/bin/redis-sentinel",
        ])
        .expect("redis-sentinel is needed for the sentinel tests: apt-get install redis-sentinel (.ci/run does)");
        let child = Command::new(binary)
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-sentinel");
        let sentinel = RedisSentinel { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sentinel.master_addr().await.is_none() {
            assert!(Instant::now() < deadline, "redis-sentinel did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sentinel
    }

    /// `SENTINEL <args…>` on a connection of its own.
    async fn sentinel<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("SENTINEL").arg(args).query_async(&mut connection).await
    }

    /// The master's address as this sentinel names it now, if it answers.
    pub async fn master_addr(&self) -> Option<(String, u16)> {
        let addr: Vec<String> = self.sentinel(&["GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).await.ok()?;
        match addr.as_slice() {
            [host, port] => Some((host.clone(), port.parse().ok()?)),
            _ => None,
        }
    }

    /// How many replicas and other sentinels this one knows of.
    pub async fn known(&self) -> (usize, usize) {
        let replicas: Vec<redis::Value> = self.sentinel(&["REPLICAS", MASTER_NAME]).await.unwrap_or_default();
        let sentinels: Vec<redis::Value> = self.sentinel(&["SENTINELS", MASTER_NAME]).await.unwrap_or_default();
        (replicas.len(), sentinels.len())
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` sentinels with `quorum` over `master`, returned once each knows
/// `replicas` replicas and the other sentinels (so a failover can happen).
pub async fn start_sentinels(master: &RedisServer, count: usize, quorum: u32, replicas: usize) -> Vec<RedisSentinel> {
    let mut sentinels = Vec::with_capacity(count);
    for _ in 0..count {
        sentinels.push(RedisSentinel::start(master, quorum).await);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    'wait: loop {
        for sentinel in &sentinels {
            if sentinel.known().await != (replicas, count - 1) {
                assert!(
                    Instant::now() < deadline,
                    "the sentinels did not find each other and the replicas in time"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'wait;
            }
        }
        return sentinels;
    }
}

/// `redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,…/mymaster`.
pub fn sentinel_url(sentinels: &[RedisSentinel]) -> String {
    let hosts = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
    format!("redis+sentinel://{hosts}/{MASTER_NAME}")
}
