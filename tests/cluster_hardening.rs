//! The cluster against hostile data in Redis and against partitions: each
//! test writes what an attacker (or a partitioned instance) would write,
//! with a plain Redis client, to a real `redis-server`, and checks what
//! tether makes of it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_test_support::*;

/// The wall clock in Unix ms, as tether stamps records.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An operator record as tether stores and publishes it (unsigned).
fn record(server: &str, admin: &str, weight: u32, instance: &str, at: u64) -> String {
    format!(
        r#"{{"backend":"pool","server":"{server}","admin":"{admin}","weight":{weight},"by":"mallory","instance":"{instance}","at_unix_ms":{at}}}"#
    )
}

/// Stores `json` as the operator state of `pool/server` and publishes it, as an instance would.
async fn store_and_publish(redis: &RedisServer, server: &str, json: &str) {
    let _: () = redis
        .run(
            redis::cmd("HSET")
                .arg("tether:ops:state")
                .arg(format!("pool/{server}"))
                .arg(json),
        )
        .await;
    let _: () = redis.run(redis::cmd("PUBLISH").arg("tether:ops").arg(json)).await;
}

/// The stored operator record of `pool/server`.
async fn stored_record(redis: &RedisServer, server: &str) -> Option<String> {
    redis
        .run(redis::cmd("HGET").arg("tether:ops:state").arg(format!("pool/{server}")))
        .await
}

/// A cluster member over `redis` named `instance`, syncing every 200 ms.
fn member(redis: &str, instance: &str) -> Cluster {
    Cluster::redis(redis).instance(instance).sync_interval("200ms")
}

fn config(base: &Backend, cluster: Cluster) -> Config {
    Config::over(base.clone())
        .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]))
        .cluster(cluster)
}

fn admin(tether: &RunningTether) -> SocketAddr {
    tether.handle.admin_addr().expect("admin listener")
}

async fn admin_json(tether: &RunningTether, path: &str) -> serde_json::Value {
    let (status, _, body) = get(admin(tether), path).await;
    assert_eq!(status, http::StatusCode::OK, "GET {path}");
    serde_json::from_slice(&body).expect("JSON")
}

async fn server_field(tether: &RunningTether, server: &str, field: &str) -> serde_json::Value {
    let servers = admin_json(tether, "/api/v1/servers").await;
    servers["servers"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == server))
        .map(|s| s[field].clone())
        .unwrap_or_default()
}

async fn redis_up(tether: &RunningTether) -> bool {
    admin_json(tether, "/api/v1/cluster").await["redis_up"] == true
}

async fn instance_names(tether: &RunningTether) -> Vec<String> {
    admin_json(tether, "/api/v1/cluster").await["instances"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|i| i["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn post(addr: SocketAddr, path: &str) -> String {
    let request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes()).await
}

/// Operator action `action` on `pool/server` through `tether`'s API.
async fn act(tether: &RunningTether, server: &str, action: &str) {
    let answer = post(
        admin(tether),
        &format!("/api/v1/backends/pool/servers/{server}/{action}"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{action}: {answer}");
}

/// Waits until both instances list each other.
async fn joined(a: &RunningTether, b: &RunningTether) {
    let both = eventually(Duration::from_secs(5), async || {
        instance_names(a).await.len() == 2 && instance_names(b).await.len() == 2
    })
    .await;
    assert!(both.is_some(), "both instances heartbeat in Redis");
}

/// Waits until `server`'s `field` on `tether` is `value`; whether it got there within `within`.
async fn reaches(
    tether: &RunningTether,
    server: &str,
    field: &str,
    value: serde_json::Value,
    within: Duration,
) -> bool {
    eventually(within, async || server_field(tether, server, field).await == value)
        .await
        .is_some()
}

async fn two_servers() -> (TestBackend, TestBackend) {
    (backend("s1").start().await, backend("s2").start().await)
}

fn learn() -> Sticky {
    Sticky::learned()
        .learn_response_cookie("io")
        .match_url_param("sid")
        .idle_timeout("10m")
}

#[tokio::test]
async fn an_operator_record_stamped_far_in_the_future_is_ignored_and_later_changes_still_apply() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2);
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    let b = start_tether(&config(&base, member(&redis.url(), "b"))).await;
    joined(&a, &b).await;

    store_and_publish(&redis, "s1", &record("s1", "drain", 1, "evil", u64::MAX)).await;
    // Published, stored, and read again by the periodic re-read (every 5 × 200 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server_field(&b, "s1", "admin").await,
        "ready",
        "a record stamped u64::MAX is not applied"
    );
    assert_eq!(server_field(&a, "s1", "admin").await, "ready");

    // The operator's own changes are stored over it and reach the other instance.
    act(&a, "s1", "drain").await;
    assert!(
        reaches(&b, "s1", "admin", "drain".into(), Duration::from_secs(2)).await,
        "A's drain reaches B"
    );
    act(&a, "s1", "enable").await;
    assert!(
        reaches(&b, "s1", "admin", "ready".into(), Duration::from_secs(2)).await,
        "and so does the enable after it"
    );
    let stored = stored_record(&redis, "s1").await.expect("stored");
    assert!(
        stored.contains(r#""instance":"a""#),
        "A's record replaced the forged one: {stored}"
    );
}

#[tokio::test]
async fn operator_changes_for_servers_an_instance_does_not_have_are_not_kept() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let ghost = backend("ghost").start().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2);
    let b = start_tether(&config(&base, member(&redis.url(), "b"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&b).await)
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(500)).await; // subscribed

    // Published only (nothing stored): a record for a server B does not have.
    let json = record("ghost", "maint", 1, "evil", now_ms());
    let _: () = redis.run(redis::cmd("PUBLISH").arg("tether:ops").arg(&json)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A reload adds `ghost`: had B kept the record, it would win over the file's state.
    let with_ghost = base.clone().server(&ghost);
    b.handle
        .reload(&config(&with_ghost, member(&redis.url(), "b")).parse())
        .expect("reload");
    assert_eq!(
        server_field(&b, "ghost", "admin").await,
        "ready",
        "a record naming a server B did not have was not kept"
    );
}

#[tokio::test]
async fn a_bad_field_in_a_load_hash_costs_that_field_only() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("leastconn").server(&s1).server(&s2);
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&a).await)
        .await
        .is_some());

    // A fake instance `c`, alive for a few seconds, with one bad count, one
    // good one, and a field naming no server.
    let _: () = redis
        .run(redis::cmd("ZADD").arg("tether:instances").arg(now_ms() + 4000).arg("c"))
        .await;
    let _: () = redis
        .run(
            redis::cmd("HSET")
                .arg("tether:load:pool:c")
                .arg("s1")
                .arg("not a number")
                .arg("s2")
                .arg("5")
                .arg("zzz")
                .arg("-1"),
        )
        .await;
    assert!(
        reaches(&a, "s2", "remote_active", 5.into(), Duration::from_secs(2)).await,
        "the good field is counted"
    );
    assert_eq!(
        server_field(&a, "s1", "remote_active").await,
        0,
        "the bad one is skipped"
    );
    for _ in 0..20 {
        assert!(redis_up(&a).await, "a bad field is no Redis outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fake_instances_in_the_future_or_beyond_the_limit_are_not_counted() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("leastconn").server(&s1).server(&s2);
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&a).await)
        .await
        .is_some());

    let now = now_ms();
    let mut far = redis::cmd("ZADD");
    far.arg("tether:instances");
    for i in 0..1000 {
        far.arg(now + 3_600_000).arg(format!("future-{i}"));
    }
    let _: () = redis.run(&far).await;
    let mut many = redis::cmd("ZADD");
    many.arg("tether:instances");
    for i in 0..1000 {
        many.arg(now + 2000).arg(format!("fake-{i}"));
    }
    let _: () = redis.run(&many).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let names = instance_names(&a).await;
    assert!(names.len() <= 128, "at most 128 instances counted, not {}", names.len());
    assert!(
        !names.iter().any(|n| n.starts_with("future-")),
        "heartbeats from the future are ignored"
    );
    assert!(names.iter().any(|n| n == "a"), "the instance itself still counts");
    assert!(redis_up(&a).await);
}

#[tokio::test]
async fn a_huge_stick_value_is_not_cached() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2).sticky(learn());
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&a).await)
        .await
        .is_some());
    let huge = "x".repeat(1 << 20);
    let _: () = redis
        .run(redis::cmd("SET").arg("tether:stick:pool:big").arg(&huge))
        .await;
    let _: () = redis
        .run(redis::cmd("SET").arg("tether:stick:pool:fine").arg("s2"))
        .await;
    let (status, _, _) = get(a.addr, "/?sid=big").await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(server_of(a.addr, "/?sid=fine").await, "s2", "a sane entry is used");
    let table = admin_json(&a, "/api/v1/backends/pool/sticky").await;
    let keys: Vec<&str> = table["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["key_hash"].as_str())
        .collect();
    let fine = tether::admin::api::key_hash("fine");
    assert_eq!(keys, [fine.as_str()], "the 1 MiB value is not kept in the local table");
}

#[tokio::test]
async fn with_a_secret_only_signed_data_is_trusted() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let s3 = backend("s3").start().await;
    let base = pool()
        .balance("roundrobin")
        .server(&s1)
        .server(&s2)
        .server(&s3)
        .sticky(learn());
    let secret = "correct horse battery staple";
    let a = start_tether(&config(&base, member(&redis.url(), "a").secret(secret))).await;
    let b = start_tether(&config(&base, member(&redis.url(), "b").secret(secret))).await;
    joined(&a, &b).await;

    // Signed data flows: a learned id, an operator change.
    let owner = server_of(a.addr, "/?set_cookie=io=real").await;
    let stored = eventually(Duration::from_secs(3), async || {
        redis.get("tether:stick:pool:real").await.is_some()
    })
    .await;
    assert!(stored.is_some(), "the id reaches Redis");
    let signed = redis.get("tether:stick:pool:real").await.expect("stored");
    assert!(signed.ends_with(&format!(".{owner}")), "stored signed: {signed}");
    for _ in 0..4 {
        assert_eq!(
            server_of(b.addr, "/?sid=real").await,
            owner,
            "B trusts A's signed entry"
        );
    }
    act(&a, "s2", "drain").await;
    assert!(reaches(&b, "s2", "admin", "drain".into(), Duration::from_secs(2)).await);

    // Unsigned, or signed for another key: ignored.
    let _: () = redis
        .run(redis::cmd("SET").arg("tether:stick:pool:forged").arg("s3"))
        .await;
    let _: () = redis
        .run(redis::cmd("SET").arg("tether:stick:pool:moved").arg(&signed))
        .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(server_of(b.addr, "/?sid=forged").await);
        seen.insert(server_of(b.addr, "/?sid=moved").await);
    }
    assert!(seen.len() > 1, "forged entries stick to nothing: roundrobin ({seen:?})");
    store_and_publish(&redis, "s1", &record("s1", "maint", 1, "evil", now_ms())).await;
    let _: () = redis
        .run(
            redis::cmd("ZADD")
                .arg("tether:instances")
                .arg(now_ms() + 4000)
                .arg("evil"),
        )
        .await;
    let _: () = redis
        .run(redis::cmd("HSET").arg("tether:load:pool:evil").arg("s3").arg("1000"))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server_field(&b, "s1", "admin").await,
        "ready",
        "an unsigned record is not applied"
    );
    assert_eq!(
        server_field(&b, "s3", "remote_active").await,
        0,
        "unsigned counts are not added"
    );
    let mut names = instance_names(&b).await;
    names.sort();
    assert_eq!(names, ["a", "b"], "an unsigned heartbeat is not an instance");
}

#[tokio::test]
async fn a_change_stored_during_a_partition_is_not_overwritten_by_the_partitioned_instance() {
    let redis = RedisServer::start().await;
    let proxy = PartitionProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2);
    let b = start_tether(&config(&base, member(&proxy.url(), "b"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&b).await)
        .await
        .is_some());

    proxy.partition();
    assert!(
        eventually(Duration::from_secs(10), async || !redis_up(&b).await)
            .await
            .is_some(),
        "B notices the partition"
    );
    // B's drain cannot be shared: pending. Meanwhile another instance makes a newer change.
    act(&b, "s1", "drain").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = record("s1", "ready", 5, "c", now_ms());
    store_and_publish(&redis, "s1", &newer).await;

    proxy.heal();
    assert!(
        eventually(Duration::from_secs(10), async || redis_up(&b).await)
            .await
            .is_some(),
        "B reconnects"
    );
    assert!(
        reaches(&b, "s1", "weight", 5.into(), Duration::from_secs(3)).await,
        "B adopts the newer change stored meanwhile"
    );
    assert_eq!(server_field(&b, "s1", "admin").await, "ready");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored_record(&redis, "s1").await.as_deref(),
        Some(newer.as_str()),
        "B's older pending drain did not overwrite it"
    );
}

#[tokio::test]
async fn a_subscription_cut_silently_by_a_partition_is_renewed() {
    init_logs();
    let redis = RedisServer::start().await;
    let proxy = PartitionProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2);
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    // B syncs (and re-reads the stored state) only every 10 s: what reaches
    // it within the next seconds came through its subscription.
    let slow = Cluster::redis(&proxy.url()).instance("b").sync_interval("10s");
    let b = start_tether(&config(&base, slow)).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&b).await)
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(300)).await; // subscribed

    // A partition nobody is told about, long enough to lose the connection's state.
    proxy.partition();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.heal();
    // Published after the partition: only a live subscription hears it in time.
    act(&a, "s1", "drain").await;
    assert!(
        reaches(&b, "s1", "admin", "drain".into(), Duration::from_secs(4)).await,
        "B's dead subscription is noticed and renewed"
    );
}

#[tokio::test]
async fn a_record_written_directly_to_redis_is_picked_up_by_the_periodic_read() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2);
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&a).await)
        .await
        .is_some());
    tokio::time::sleep(Duration::from_millis(500)).await; // subscribed, state read
    let _: () = redis
        .run(
            redis::cmd("HSET")
                .arg("tether:ops:state")
                .arg("pool/s1")
                .arg(record("s1", "drain", 3, "c", now_ms())),
        )
        .await;
    assert!(
        reaches(&a, "s1", "admin", "drain".into(), Duration::from_secs(3)).await,
        "stored without a publication: read within 5 sync intervals"
    );
    assert_eq!(server_field(&a, "s1", "weight").await, 3);
}

#[tokio::test]
async fn repeated_unknown_session_ids_cost_one_redis_lookup_per_window() {
    let redis = RedisServer::start().await;
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2).sticky(learn());
    let a = start_tether(&config(&base, member(&redis.url(), "a"))).await;
    assert!(eventually(Duration::from_secs(5), async || redis_up(&a).await)
        .await
        .is_some());
    let before = redis.calls("getex").await;
    for _ in 0..20 {
        let (status, _, _) = get(a.addr, "/?sid=nobody-knows").await;
        assert_eq!(status, http::StatusCode::OK);
    }
    let lookups = redis.calls("getex").await - before;
    assert!(lookups <= 2, "20 requests for one unknown id: {lookups} Redis lookups");
    // Known once learned: the id learned here is not held up by the negative cache.
    let owner = server_of(a.addr, "/?set_cookie=io=nobody-knows").await;
    assert_eq!(server_of(a.addr, "/?sid=nobody-knows").await, owner);
}

#[tokio::test]
async fn an_operator_record_is_stored_only_over_an_older_one() {
    let redis = RedisServer::start().await;
    let settings = tether::cluster::ClusterSettings {
        redis: redis.url(),
        password: None,
        tls_ca_file: None,
        instance: Some("b".into()),
        prefix: "tether:".into(),
        timeout: Duration::from_millis(50),
        sync_interval: Duration::from_secs(1),
        stick_refresh: Duration::from_secs(10),
        secret: None,
    };
    let cluster = tether::cluster::Cluster::new(settings, tether::state::Changes::unobserved()).expect("valid URL");
    cluster.redis.start();
    let op = |admin: &str, at: u64| tether::cluster::ops::OpRecord {
        backend: "pool".into(),
        server: "s1".into(),
        admin: admin.into(),
        weight: 1,
        by: "-".into(),
        instance: "b".into(),
        at_unix_ms: at,
        sig: None,
    };
    let now = now_ms();
    let newer = record("s1", "ready", 5, "c", now);
    let _: () = redis
        .run(redis::cmd("HSET").arg("tether:ops:state").arg("pool/s1").arg(&newer))
        .await;

    let older = op("drain", now - 1000);
    let outcome = cluster.publish(&older).await.expect("Redis answers");
    assert_eq!(outcome, tether::cluster::ops::Published::Superseded);
    assert_eq!(
        stored_record(&redis, "s1").await.as_deref(),
        Some(newer.as_str()),
        "kept"
    );

    let later = op("maint", now + 1);
    assert_eq!(
        cluster.publish(&later).await.expect("Redis answers"),
        tether::cluster::ops::Published::Stored
    );
    assert_eq!(stored_record(&redis, "s1").await, Some(cluster.encode(&later)));

    // A stored record stamped beyond the clock skew does not block anything.
    let forged = record("s1", "drain", 1, "evil", u64::MAX);
    let _: () = redis
        .run(redis::cmd("HSET").arg("tether:ops:state").arg("pool/s1").arg(&forged))
        .await;
    let next = op("ready", now + 2);
    assert_eq!(
        cluster.publish(&next).await.expect("Redis answers"),
        tether::cluster::ops::Published::Stored
    );
    assert_eq!(stored_record(&redis, "s1").await, Some(cluster.encode(&next)));
}

#[tokio::test]
async fn the_documented_acl_user_is_enough_for_everything_tether_does() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/redis.md")).expect("docs/redis.md");
    let line = docs
        .lines()
        .find(|l| l.starts_with("ACL SETUSER tether "))
        .expect("the ACL line in docs/redis.md");
    let redis = RedisServer::start().await;
    let mut acl = redis::cmd("ACL");
    for word in line.split_whitespace().skip(1) {
        acl.arg(if word == ">CHANGE-ME" { ">acl-test-pass" } else { word });
    }
    let _: () = redis.run(&acl).await;
    let url = format!("redis://tether:acl-test-pass@127.0.0.1:{}", redis.port);
    let (s1, s2) = two_servers().await;
    let base = pool().balance("roundrobin").server(&s1).server(&s2).sticky(learn());
    let secret = "correct horse battery staple";
    let a = start_tether(&config(&base, member(&url, "a").secret(secret))).await;
    let b = start_tether(&config(&base, member(&url, "b").secret(secret))).await;
    joined(&a, &b).await;
    let owner = server_of(a.addr, "/?set_cookie=io=acl").await;
    let stored = eventually(Duration::from_secs(3), async || {
        redis.get("tether:stick:pool:acl").await.is_some()
    })
    .await;
    assert!(stored.is_some(), "SET allowed");
    assert_eq!(server_of(b.addr, "/?sid=acl").await, owner, "GETEX allowed");
    act(&a, "s1", "drain").await;
    assert!(
        reaches(&b, "s1", "admin", "drain".into(), Duration::from_secs(2)).await,
        "EVAL (HGET, HSET, PUBLISH) and SUBSCRIBE allowed"
    );
    let (status, _) = admin_call(
        admin(&a),
        http::Method::POST,
        "/api/v1/backends/pool/servers",
        Some(&format!(r#"{{"name": "s3", "address": "{}"}}"#, s2.addr)),
    )
    .await;
    assert_eq!(status, http::StatusCode::CREATED);
    assert!(
        reaches(&b, "s3", "source", "api".into(), Duration::from_secs(2)).await,
        "a server added through the API reaches the other instance (the servers channel)"
    );
    for _ in 0..15 {
        assert!(redis_up(&a).await && redis_up(&b).await, "no command refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await; // ZREM, DEL
    let left = eventually(Duration::from_secs(2), async || instance_names(&b).await == ["b"]).await;
    assert!(left.is_some(), "A left the heartbeat set");
    let denials: Vec<redis::Value> = redis.run(redis::cmd("ACL").arg("LOG")).await;
    assert!(denials.is_empty(), "Redis refused nothing: {denials:?}");
}
