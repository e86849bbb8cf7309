//! Several tether instances sharing stickiness, load and operator actions
//! through a real `redis-server` (started here on a free port), and two
//! instances agreeing without Redis through maglev hashing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_test_support::*;

/// `base` behind the usual frontend, with a loopback admin listener and `cluster`.
fn cluster_config_with(base: &Backend, cluster: Cluster) -> Config {
    Config::over(base.clone())
        // `get` sends `Host: tether.test`: the admin listener answers only for names it knows.
        .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]))
        .cluster(cluster)
}

/// [`cluster_config_with`] the Redis at `redis`, as `instance`.
fn cluster_config(base: &Backend, redis: &str, instance: &str) -> Config {
    cluster_config_with(base, Cluster::redis(redis).instance(instance))
}

fn admin(tether: &RunningTether) -> SocketAddr {
    tether.handle.admin_addr().expect("admin listener")
}

async fn admin_json(tether: &RunningTether, path: &str) -> serde_json::Value {
    let (status, _, body) = get(admin(tether), path).await;
    assert_eq!(status, http::StatusCode::OK, "GET {path}");
    serde_json::from_slice(&body).expect("JSON")
}

/// The server's field `field` as the instance's API shows it.
async fn server_field(tether: &RunningTether, server: &str, field: &str) -> serde_json::Value {
    let servers = admin_json(tether, "/api/v1/servers").await;
    servers["servers"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == server))
        .map(|s| s[field].clone())
        .unwrap_or_default()
}

async fn redis_up(tether: &RunningTether) -> Option<bool> {
    let (_, _, body) = get(admin(tether), "/metrics").await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("tether_cluster_redis_up "))
        .map(|v| v.trim() == "1")
}

/// Three backends that announce themselves as s1, s2 and s3.
async fn three_servers() -> (TestBackend, TestBackend, TestBackend) {
    (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    )
}

/// Backend `pool` balanced by `balance` over `servers`, named as they announce.
fn config_over(balance: &str, servers: [&TestBackend; 3]) -> Backend {
    pool().balance(balance).servers(servers)
}

/// Session ids learned from the `io` cookie, matched in `?sid=`, forgotten after `idle_timeout`.
fn learn(idle_timeout: &str) -> Sticky {
    Sticky::learned()
        .learn_response_cookie("io")
        .match_url_param("sid")
        .idle_timeout(idle_timeout)
}

#[tokio::test]
async fn a_session_learned_through_one_instance_routes_through_the_other_until_its_ttl() {
    let redis = RedisServer::start().await;
    let (s1, s2, s3) = three_servers().await;
    let base = config_over("roundrobin", [&s1, &s2, &s3]).sticky(learn("1500ms"));
    let a = start_tether(&cluster_config(&base, &redis.url(), "a")).await;
    let b = start_tether(&cluster_config(&base, &redis.url(), "b")).await;

    let owner = server_of(a.addr, "/?set_cookie=io=abc").await;
    let stored = eventually(Duration::from_secs(3), async || {
        redis.get("tether:stick:pool:abc").await.as_deref() == Some(owner.as_str())
    })
    .await;
    assert!(
        stored.is_some(),
        "the learned id reaches Redis under the prefix, with the server's name"
    );
    for _ in 0..6 {
        assert_eq!(
            server_of(b.addr, "/?sid=abc").await,
            owner,
            "B never saw `abc` but finds it in Redis; roundrobin would rotate"
        );
    }

    // An id nobody uses for longer than idle_timeout is gone from Redis too.
    let owner = server_of(a.addr, "/?set_cookie=io=old").await;
    let stored = eventually(Duration::from_secs(3), async || {
        redis.get("tether:stick:pool:old").await.as_deref() == Some(owner.as_str())
    })
    .await;
    assert!(stored.is_some());
    let expired = eventually(Duration::from_secs(5), async || {
        redis.get("tether:stick:pool:old").await.is_none()
    })
    .await;
    assert!(expired.is_some(), "SET … PX idle_timeout: the entry expires in Redis");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(server_of(b.addr, "/?sid=old").await);
    }
    assert!(
        seen.len() > 1,
        "an expired id sticks to nothing: roundrobin again ({seen:?})"
    );
}

/// Opens `count` WebSockets alternately through `a` and `b`, keeping them open.
async fn open_alternately(a: SocketAddr, b: SocketAddr, count: usize) -> (Vec<Ws>, HashMap<String, usize>) {
    let mut sockets = Vec::with_capacity(count);
    let mut per_server = HashMap::new();
    for i in 0..count {
        let (ws, server) = ws_connect(if i % 2 == 0 { a } else { b }, "/ws").await;
        *per_server.entry(server).or_insert(0) += 1;
        sockets.push(ws);
    }
    (sockets, per_server)
}

#[tokio::test]
async fn cluster_leastconn_spreads_300_websockets_through_two_instances_within_two_per_server() {
    let redis = RedisServer::start().await;
    let (s1, s2, s3) = three_servers().await;
    let base = config_over("leastconn", [&s1, &s2, &s3]);
    let a = start_tether(&cluster_config(&base, &redis.url(), "a")).await;
    let b = start_tether(&cluster_config(&base, &redis.url(), "b")).await;
    let (_sockets, per_server) = open_alternately(a.addr, b.addr, 300).await;
    for server in ["s1", "s2", "s3"] {
        let n = per_server.get(server).copied().unwrap_or(0);
        assert!((98..=102).contains(&n), "{server}: {n} of 300 ({per_server:?})");
    }
}

#[tokio::test]
async fn cluster_leastconn_counts_the_other_instances_connections() {
    let redis = RedisServer::start().await;
    let (s1, s2, s3) = three_servers().await;
    // A only knows s1, so all its connections load s1; B knows all three.
    let only_s1 = pool().balance("leastconn").server(&s1);
    let all = config_over("leastconn", [&s1, &s2, &s3]);
    let a = start_tether(&cluster_config(&only_s1, &redis.url(), "a")).await;
    let b = start_tether(&cluster_config(&all, &redis.url(), "b")).await;
    let mut sockets = Vec::new();
    for _ in 0..30 {
        sockets.push(ws_connect(a.addr, "/ws").await.0);
    }
    let synced = eventually(Duration::from_secs(5), async || {
        server_field(&b, "s1", "remote_active").await == 30
    })
    .await;
    assert!(synced.is_some(), "B learns A's 30 connections on s1 from Redis");
    let mut through_b = HashMap::new();
    for _ in 0..30 {
        let (ws, server) = ws_connect(b.addr, "/ws").await;
        *through_b.entry(server).or_insert(0) += 1;
        sockets.push(ws);
    }
    assert_eq!(
        through_b.get("s1"),
        None,
        "s1 already holds 30 of the cluster's connections: B fills s2 and s3 first ({through_b:?})"
    );
    assert_eq!((through_b.get("s2"), through_b.get("s3")), (Some(&15), Some(&15)));
}

async fn post(addr: SocketAddr, path: &str) -> String {
    let request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes()).await
}

#[tokio::test]
async fn a_drain_through_one_instance_stops_new_connections_through_the_other_within_a_second() {
    let redis = RedisServer::start().await;
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let base = pool().balance("roundrobin").server(&s1).server(&s2);
    let a = start_tether(&cluster_config(&base, &redis.url(), "a")).await;
    let b = start_tether(&cluster_config(&base, &redis.url(), "b")).await;
    // Both subscribed (each instance reads the cluster list once synced).
    let joined = eventually(Duration::from_secs(5), async || {
        admin_json(&b, "/api/v1/cluster").await["instances"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    assert!(joined.is_some(), "both instances heartbeat in Redis");

    let answer = post(admin(&a), "/api/v1/backends/pool/servers/s1/drain").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let applied = eventually(Duration::from_secs(1), async || {
        server_field(&b, "s1", "admin").await == "drain"
    })
    .await;
    assert!(applied.is_some(), "B applies A's drain within a second");
    for _ in 0..10 {
        assert_eq!(
            ws_connect(b.addr, "/ws").await.1,
            "s2",
            "no new connection to the drained s1 through B"
        );
    }
    // A reload resets admin states to the file's; the cluster's stored state wins again.
    let config = cluster_config(&base, &redis.url(), "b").parse();
    b.handle.reload(&config).expect("reload");
    assert_eq!(
        server_field(&b, "s1", "admin").await,
        "drain",
        "still drained after B's reload"
    );

    // A weight change travels the same way, and a starting instance reads the stored state.
    let body = r#"{"weight": 7}"#;
    let weight = format!(
        "PUT /api/v1/backends/pool/servers/s2/weight HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert!(raw_exchange(admin(&a), weight.as_bytes())
        .await
        .starts_with("HTTP/1.1 200"));
    let c = start_tether(&cluster_config(&base, &redis.url(), "c")).await;
    let caught_up = eventually(Duration::from_secs(3), async || {
        server_field(&c, "s1", "admin").await == "drain" && server_field(&c, "s2", "weight").await == 7
    })
    .await;
    assert!(
        caught_up.is_some(),
        "a starting instance applies the stored operator state"
    );
    assert!(
        eventually(Duration::from_secs(1), async || server_field(&b, "s2", "weight").await
            == 7)
        .await
        .is_some()
    );
    // The stats API lists the cluster's instances.
    let cluster = admin_json(&c, "/api/v1/cluster").await;
    assert_eq!(cluster["instance"], "c");
    assert_eq!(cluster["redis_up"], true);
}

#[tokio::test]
async fn killing_redis_during_2000_handshakes_fails_none_and_the_instances_resynchronise() {
    init_logs();
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let (s1, s2, s3) = three_servers().await;
    let base = config_over("leastconn", [&s1, &s2, &s3]).sticky(learn("10m"));
    let a = start_tether(&cluster_config(&base, &redis.url(), "a")).await;
    let b = start_tether(&cluster_config(&base, &redis.url(), "b")).await;
    assert!(
        eventually(Duration::from_secs(5), async || redis_up(&a).await == Some(true))
            .await
            .is_some()
    );

    // An operator change before the outage: a restarted (empty) Redis gets it back.
    let answer = post(admin(&a), "/api/v1/backends/pool/servers/s3/enable").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..20 {
        let (done, failed, next) = (done.clone(), failed.clone(), next.clone());
        let targets = [a.addr, b.addr];
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 2000 {
                    break;
                }
                if !handshake_with_sid(targets[i % 2], i).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while done.load(Ordering::Relaxed) < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no handshake fails because of Redis");
    assert_eq!(done.load(Ordering::Relaxed), 2000);
    let took = started.elapsed();

    assert!(
        eventually(Duration::from_secs(5), async || redis_up(&a).await == Some(false))
            .await
            .is_some(),
        "tether_cluster_redis_up goes to 0"
    );
    // Learned while Redis is down: kept locally, pushed once it is back.
    let owner = server_of(a.addr, "/?set_cookie=io=during").await;
    assert_eq!(
        server_of(a.addr, "/?sid=during").await,
        owner,
        "the local table still answers"
    );

    let redis = RedisServer::start_on(port).await;
    let back = eventually(Duration::from_secs(10), async || {
        redis_up(&a).await == Some(true) && redis_up(&b).await == Some(true)
    })
    .await;
    assert!(back.is_some(), "both instances reconnect by themselves");
    let resynced = eventually(Duration::from_secs(5), async || {
        redis.get("tether:stick:pool:during").await.as_deref() == Some(owner.as_str())
    })
    .await;
    assert!(
        resynced.is_some(),
        "the id learned during the outage is pushed to Redis"
    );
    assert_eq!(server_of(b.addr, "/?sid=during").await, owner, "and B finds it");
    let restored = eventually(Duration::from_secs(5), async || {
        let mut connection = redis.connection().await.expect("connect");
        let stored: Option<String> = redis::cmd("HGET")
            .arg("tether:ops:state")
            .arg("pool/s3")
            .query_async(&mut connection)
            .await
            .expect("HGET");
        stored.is_some_and(|json| json.contains("\"admin\":\"ready\""))
    })
    .await;
    assert!(
        restored.is_some(),
        "the operator state is stored again in the restarted Redis"
    );
    let heartbeats = eventually(Duration::from_secs(5), async || {
        admin_json(&b, "/api/v1/cluster").await["instances"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    assert!(heartbeats.is_some(), "both instances heartbeat again");
    eprintln!(
        "2000 handshakes through two instances with Redis killed midway: {took:?}; back up after {:?}",
        back.unwrap_or_default()
    );
}

#[tokio::test]
async fn two_instances_without_redis_send_a_key_to_the_same_server_with_maglev() {
    let servers = [
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
        backend("s4").start().await,
    ];
    let config = Config::over(
        pool()
            .balance("url_param")
            .hash_key("room")
            .hash("maglev")
            .servers(&servers),
    );
    let a = start_tether(&config).await;
    let b = start_tether(&config).await;
    let mut used = std::collections::HashSet::new();
    for room in 0..40 {
        let path = format!("/?room=room-{room}");
        let through_a = server_of(a.addr, &path).await;
        assert_eq!(server_of(b.addr, &path).await, through_a, "{path}");
        used.insert(through_a);
    }
    assert_eq!(used.len(), 4, "the keys spread over every server");
}

#[tokio::test]
async fn a_flushed_or_frozen_redis_fails_no_request_and_a_stopping_instance_leaves() {
    let redis = RedisServer::start().await;
    let (s1, s2, s3) = three_servers().await;
    let base = config_over("roundrobin", [&s1, &s2, &s3]).sticky(learn("1500ms"));
    let a = start_tether(&cluster_config(&base, &redis.url(), "a")).await;
    let b = start_tether(&cluster_config(&base, &redis.url(), "b")).await;
    let owner = server_of(a.addr, "/?set_cookie=io=abc").await;
    let key = "tether:stick:pool:abc";
    assert!(
        eventually(Duration::from_secs(3), async || redis.get(key).await.is_some())
            .await
            .is_some()
    );

    // Flushed: A keeps answering from its local table and writes the entry
    // again when it refreshes its TTL (a quarter of idle_timeout here).
    redis.command("FLUSHALL").await;
    let repaired = eventually(Duration::from_secs(3), async || {
        assert_eq!(server_of(a.addr, "/?sid=abc").await, owner);
        redis.get(key).await.as_deref() == Some(owner.as_str())
    })
    .await;
    assert!(repaired.is_some(), "a flushed entry in use is written again");
    assert_eq!(server_of(b.addr, "/?sid=abc").await, owner);

    // Frozen (SIGSTOP): lookups time out after 50 ms, then are skipped once
    // the heartbeat says Redis is down; every request is answered.
    redis.signal("STOP");
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let started = Instant::now();
        let (status, _, _) = get(b.addr, &format!("/?sid=unknown-{i}")).await;
        assert_eq!(status, http::StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        eventually(Duration::from_secs(3), async || redis_up(&b).await == Some(false))
            .await
            .is_some(),
        "a frozen Redis counts as down"
    );
    redis.signal("CONT");
    assert!(slowest < Duration::from_millis(1000), "slowest request {slowest:?}");
    assert!(
        eventually(Duration::from_secs(10), async || redis_up(&b).await == Some(true))
            .await
            .is_some(),
        "back when Redis thaws"
    );
    eprintln!("slowest request while Redis was frozen: {slowest:?}");

    // A stopping instance removes its heartbeat at once.
    assert!(eventually(Duration::from_secs(5), async || {
        admin_json(&b, "/api/v1/cluster").await["instances"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await
    .is_some());
    a.stop().await;
    let left = eventually(Duration::from_secs(2), async || {
        admin_json(&b, "/api/v1/cluster").await["instances"]
            .as_array()
            .map(Vec::len)
            == Some(1)
    })
    .await;
    assert!(left.is_some(), "B stops listing A soon after A stopped");
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_a_password_shares_session_ids() {
    let dir = std::env::temp_dir().join(format!("tether-cluster-tls-{}", std::process::id()));
    let redis = RedisServer::start_tls(&dir, "s3cret pass").await;
    let (s1, s2, s3) = three_servers().await;
    let base = config_over("roundrobin", [&s1, &s2, &s3]).sticky(learn("1500ms"));
    let ca = dir.join("ca.pem");
    let tls = |instance: &str| {
        Cluster::redis(&redis.url())
            .instance(instance)
            .password("s3cret pass")
            .tls_ca_file(ca.to_str().expect("a UTF-8 path"))
    };
    let a = start_tether(&cluster_config_with(&base, tls("a"))).await;
    let b = start_tether(&cluster_config_with(&base, tls("b"))).await;
    assert!(
        eventually(Duration::from_secs(5), async || redis_up(&a).await == Some(true))
            .await
            .is_some(),
        "A reaches Redis over TLS with the password"
    );
    let owner = server_of(a.addr, "/?set_cookie=io=tls").await;
    assert!(eventually(Duration::from_secs(3), async || {
        redis.get("tether:stick:pool:tls").await.as_deref() == Some(owner.as_str())
    })
    .await
    .is_some());
    assert_eq!(server_of(b.addr, "/?sid=tls").await, owner);
    let _ = std::fs::remove_dir_all(&dir);
}
