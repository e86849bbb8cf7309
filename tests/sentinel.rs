//! `[cluster] redis = "redis+sentinel://…"`: two tether instances share
//! state through whichever Redis the sentinels name master, and follow it
//! through a failover. Real `redis-server` master and replica, three real
//! `redis-sentinel` processes, all on free ports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_test_support::*;

fn admin(tether: &RunningTether) -> SocketAddr {
    tether.handle.admin_addr().expect("admin listener")
}

async fn redis_up(tether: &RunningTether) -> Option<bool> {
    let (_, _, body) = get(admin(tether), "/metrics").await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("tether_cluster_redis_up "))
        .map(|v| v.trim() == "1")
}

/// `base` behind the usual frontend, with an admin listener, in the cluster at `redis` as `instance`.
fn cluster_config(base: &Backend, redis: &str, instance: &str) -> Config {
    Config::over(base.clone())
        .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]))
        .cluster(Cluster::redis(redis).instance(instance))
}

/// Roundrobin over three servers, with session ids learned from the `io`
/// cookie and matched in `?sid=` (roundrobin would rotate an unknown id).
async fn pool_with_learned_ids() -> (Backend, [TestBackend; 3]) {
    let servers = [
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    ];
    let sticky = Sticky::learned()
        .learn_response_cookie("io")
        .match_url_param("sid")
        .idle_timeout("10m");
    let base = pool()
        .balance("roundrobin")
        .servers([&servers[0], &servers[1], &servers[2]])
        .sticky(sticky);
    (base, servers)
}

#[tokio::test]
async fn killing_the_master_under_load_fails_no_handshake_and_both_instances_follow_the_promoted_replica() {
    init_logs();
    let started = Instant::now();
    let mut master = RedisServer::start().await;
    let replica = RedisServer::start_replica_of(&master).await;
    let sentinels = start_sentinels(&master, 3, 2, 1).await;
    let url = sentinel_url(&sentinels);
    let (base, _servers) = pool_with_learned_ids().await;
    let a = start_tether(&cluster_config(&base, &url, "a")).await;
    let b = start_tether(&cluster_config(&base, &url, "b")).await;
    let up = eventually(Duration::from_secs(5), async || {
        redis_up(&a).await == Some(true) && redis_up(&b).await == Some(true)
    })
    .await;
    assert!(up.is_some(), "both instances find the master through the sentinels");

    let owner = server_of(a.addr, "/?set_cookie=io=before").await;
    let stored = eventually(Duration::from_secs(3), async || {
        master.get("tether:stick:pool:before").await.as_deref() == Some(owner.as_str())
    })
    .await;
    assert!(stored.is_some(), "the learned id is written to the master");

    // Handshakes every few milliseconds through both instances, each
    // looking up an id in Redis, while the master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let targets = [a.addr, b.addr];
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                if !handshake_with_sid(targets[i % 2], i).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 8;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    master.kill();

    let promoted = eventually(Duration::from_secs(10), async || replica.role().await == "master").await;
    assert!(promoted.is_some(), "the sentinels promote the replica");
    let promoted_after = killed_at.elapsed();
    // Written through A after the failover: it must land in the promoted replica.
    let owner_after = server_of(a.addr, "/?set_cookie=io=after").await;
    let followed = eventually(Duration::from_secs(10), async || {
        replica.try_get("tether:stick:pool:after").await.as_deref() == Some(owner_after.as_str())
    })
    .await;
    assert!(followed.is_some(), "A writes to the promoted replica");
    let reconnected_after = killed_at.elapsed();
    let up = eventually(Duration::from_secs(5), async || {
        redis_up(&a).await == Some(true) && redis_up(&b).await == Some(true)
    })
    .await;
    assert!(up.is_some(), "tether_cluster_redis_up is 1 again on both instances");

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    let handshakes = done.load(Ordering::Relaxed);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no handshake fails while Redis fails over"
    );
    assert!(
        handshakes > 200,
        "the load ran through the failover ({handshakes} handshakes)"
    );

    for _ in 0..6 {
        assert_eq!(
            server_of(b.addr, "/?sid=after").await,
            owner_after,
            "B never saw `after` but finds it in the promoted master; roundrobin would rotate"
        );
    }
    assert_eq!(
        server_of(b.addr, "/?sid=before").await,
        owner,
        "an id learned before the failover was replicated and survives it"
    );
    // The subscription follows the master too: an operator change made
    // through A reaches B at once (the periodic re-read takes 5 s).
    let request = "POST /api/v1/backends/pool/servers/s3/drain HTTP/1.1\r\nHost: tether.test\r\n\
                   Content-Length: 0\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(admin(&a), request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let applied = eventually(Duration::from_secs(1), async || {
        let (_, _, body) = get(admin(&b), "/api/v1/servers").await;
        let servers: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        servers["servers"]
            .as_array()
            .and_then(|list| list.iter().find(|s| s["name"] == "s3"))
            .is_some_and(|s| s["admin"] == "drain")
    })
    .await;
    assert!(
        applied.is_some(),
        "B applies A's drain within a second, through the promoted master"
    );
    eprintln!(
        "sentinel failover: {handshakes} handshakes, 0 failed; replica promoted {promoted_after:?} after the kill, \
         tether writing to it {reconnected_after:?} after; whole test {:?}",
        started.elapsed()
    );
}

#[test]
fn check_refuses_a_sentinel_url_without_hosts_or_master_naming_line_and_column() {
    let dir = std::env::temp_dir().join(format!("tether-sentinel-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |name: &str, url: &str| {
        let path = dir.join(name);
        // TOML text on purpose: the error must name the file, line and column of `redis`.
        std::fs::write(
            &path,
            format!(
                "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\n\n\
                 [cluster]\nredis = \"{url}\"\n"
            ),
        )
        .expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run tether");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (name, url, needle) in [
        ("hosts.toml", "redis+sentinel:///mymaster", "no sentinel host"),
        (
            "master.toml",
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380",
            "no master name",
        ),
        ("port.toml", "redis+sentinel://127.0.0.1:x/mymaster", "not host[:port]"),
    ] {
        let (code, stderr) = check(name, url);
        assert_eq!(code, Some(1), "{url}: {stderr}");
        let at = format!("{}:6:9", dir.join(name).display());
        assert!(stderr.contains(&at) && stderr.contains(needle), "{url}: {stderr}");
    }
    let (code, stderr) = check(
        "tls.toml",
        "redis+sentinel://127.0.0.1/mymaster\"\ntls_ca_file = \"/etc/ssl/ca.pem",
    );
    let at = format!("{}:7:", dir.join("tls.toml").display());
    assert!(
        code == Some(1) && stderr.contains(&at) && stderr.contains("not supported"),
        "TLS through sentinels is refused where it is asked for: {stderr}"
    );
    let (code, stderr) = check("good.toml", "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1/mymaster/1");
    assert_eq!(code, Some(0), "a well-formed sentinel URL passes: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_password_in_the_sentinel_url_or_in_cluster_password_reaches_the_master() {
    let master = RedisServer::start_with_password("s3cret pass").await;
    let sentinels = start_sentinels(&master, 1, 1, 0).await;
    let hosts = format!("127.0.0.1:{}", sentinels[0].port);
    let (base, _servers) = pool_with_learned_ids().await;
    // In the URL (percent-encoded) for A, in `password` for B.
    let a = start_tether(&cluster_config(
        &base,
        &format!("redis+sentinel://:s3cret%20pass@{hosts}/{MASTER_NAME}"),
        "a",
    ))
    .await;
    let b_config = Config::over(base.clone())
        .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]))
        .cluster(
            Cluster::redis(&format!("redis+sentinel://{hosts}/{MASTER_NAME}"))
                .password("s3cret pass")
                .instance("b"),
        );
    let b = start_tether(&b_config).await;
    let up = eventually(Duration::from_secs(5), async || {
        redis_up(&a).await == Some(true) && redis_up(&b).await == Some(true)
    })
    .await;
    assert!(
        up.is_some(),
        "both instances authenticate to the master the sentinel names"
    );
    let owner = server_of(a.addr, "/?set_cookie=io=pw").await;
    let stored = eventually(Duration::from_secs(3), async || {
        master.get("tether:stick:pool:pw").await.as_deref() == Some(owner.as_str())
    })
    .await;
    assert!(stored.is_some(), "A writes the learned id to the master");
    for _ in 0..6 {
        assert_eq!(server_of(b.addr, "/?sid=pw").await, owner, "B reads it there");
    }
}
