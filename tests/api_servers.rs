//! Servers added and deleted through the admin API without a reload of
//! the file: an added server takes new WebSockets, says where it came from
//! (`source`) in the API and on the stats page, and survives a reload; a
//! deleted one drains (Close 1012) and leaves once empty; refusals carry
//! 400/404/409 and the reason; a state file brings API servers and operator
//! states back after a restart; with `[cluster]` every instance (one started
//! later too) applies them through a real `redis-server`.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tether_test_support::*;

const SERVERS: &str = "/api/v1/backends/pool/servers";

/// `pool` behind the usual frontend, with a loopback admin listener.
fn config_with(pool: Backend) -> Config {
    Config::over(pool).admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]))
}

fn admin(tether: &RunningTether) -> SocketAddr {
    tether.handle.admin_addr().expect("admin listener")
}

/// The JSON body of an add of `name` at `address`.
fn add_body(name: &str, address: SocketAddr) -> String {
    format!(r#"{{"name": "{name}", "address": "{address}"}}"#)
}

async fn add(tether: &RunningTether, name: &str, address: SocketAddr) -> (StatusCode, Value) {
    admin_call(admin(tether), Method::POST, SERVERS, Some(&add_body(name, address))).await
}

async fn delete(tether: &RunningTether, name: &str) -> (StatusCode, Value) {
    admin_call(admin(tether), Method::DELETE, &format!("{SERVERS}/{name}"), None).await
}

/// Every server of the instance's API.
async fn listed(tether: &RunningTether) -> Vec<Value> {
    let (status, body) = admin_call(admin(tether), Method::GET, "/api/v1/servers", None).await;
    assert_eq!(status, StatusCode::OK);
    body["servers"].as_array().cloned().unwrap_or_default()
}

/// The server `name` as the instance's API shows it.
async fn listed_server(tether: &RunningTether, name: &str) -> Option<Value> {
    listed(tether).await.into_iter().find(|s| s["name"] == name)
}

/// The servers `count` new WebSockets reach (kept open, returned too).
async fn connect(addr: SocketAddr, count: usize) -> (Vec<String>, Vec<Ws>) {
    let mut names = Vec::new();
    let mut open = Vec::new();
    for _ in 0..count {
        let (ws, name) = ws_connect(addr, "/ws").await;
        names.push(name);
        open.push(ws);
    }
    (names, open)
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_through_the_api_takes_new_websockets_says_api_and_survives_a_reload() {
    let (s1, s2, s3) = (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    );
    let config = config_with(pool().balance("roundrobin").servers([&s1, &s2]));
    let tether = start_tether(&config).await;
    let (first, _before) = connect(tether.addr, 4).await;
    assert_eq!(count(&first, "s3"), 0);

    let (status, created) = admin_call(
        admin(&tether),
        Method::POST,
        SERVERS,
        Some(&format!(
            r#"{{"name": "s3", "address": "{}", "weight": 1, "maxconn": 100, "cookie": "c3"}}"#,
            s3.addr
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (&created["name"], &created["source"], &created["maxconn"]),
        (&Value::from("s3"), &Value::from("api"), &Value::from(100))
    );
    let (reached, mut open) = connect(tether.addr, 6).await;
    assert_eq!(
        (count(&reached, "s1"), count(&reached, "s2"), count(&reached, "s3")),
        (2, 2, 2),
        "the new server is balanced in: {reached:?}"
    );
    let sources: Vec<(String, String)> = listed(&tether)
        .await
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [("s1", "config"), ("s2", "config"), ("s3", "api")].map(|(n, s)| (n.to_string(), s.to_string()))
    );
    let (status, _, page) = get(admin(&tether), "/").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains(r#"data-server="s3""#) && page.contains(r#"<dt>source</dt><dd class="source">api</dd>"#),
        "the stats page says where s3 came from"
    );

    // A reload of the file keeps it, with its live state and its tunnels.
    let state = tether.handle.snapshot().backend("pool").unwrap().servers[2]
        .state
        .clone();
    tether.handle.reload(&config.parse()).expect("reload");
    let after = tether.handle.snapshot();
    let kept = after.backend("pool").unwrap();
    assert_eq!(kept.servers.len(), 3, "the API server survives a reload");
    assert!(
        std::sync::Arc::ptr_eq(&kept.servers[2].state, &state),
        "with its live state"
    );
    assert_eq!(listed_server(&tether, "s3").await.unwrap()["tunnels"], 2);
    let (again, _more) = connect(tether.addr, 3).await;
    assert_eq!(count(&again, "s3"), 1, "{again:?}");
    for ws in &mut open {
        assert!(
            tokio::time::timeout(Duration::from_millis(50), futures_util::StreamExt::next(ws))
                .await
                .is_err(),
            "no tunnel was touched by the reload"
        );
    }
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_server_drains_with_1012_takes_no_stuck_client_and_leaves_once_empty() {
    let (s1, s3) = (backend("s1").start().await, backend("s3").start().await);
    let pool = pool()
        .balance("roundrobin")
        .sticky(Sticky::cookie("SERVERID"))
        .drain_timeout("300ms")
        .drain_spread("200ms")
        .server(Server::new("s1", s1.addr).cookie("c1"));
    let tether = start_tether(&config_with(pool)).await;
    let body = format!(r#"{{"name": "s3", "address": "{}", "cookie": "c3"}}"#, s3.addr);
    let (status, _) = admin_call(admin(&tether), Method::POST, SERVERS, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (names, mut open) = connect(tether.addr, 4).await;
    assert_eq!(count(&names, "s3"), 2, "{names:?}");

    let (status, deleting) = delete(&tether, "s3").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deleting}");
    assert_eq!(
        (&deleting["deleting"], &deleting["state"]),
        (&Value::from(true), &Value::from("drain"))
    );
    // Nobody new reaches it, not even a client stuck to it by its cookie.
    let (after, _more) = connect(tether.addr, 3).await;
    assert_eq!(count(&after, "s3"), 0, "{after:?}");
    let stuck = Request::get("/ws")
        .header(header::HOST, "tether.test")
        .header(header::COOKIE, "SERVERID=c3")
        .body(Full::new(bytes::Bytes::new()).map_err(|never| match never {}).boxed())
        .unwrap();
    let (status, headers, _) = send(&mut http_client(tether.addr).await, stuck).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-server"], "s1", "a stuck client is balanced elsewhere");
    // Deleting it again changes nothing; it still lists, draining.
    assert_eq!(delete(&tether, "s3").await.0, StatusCode::ACCEPTED);
    assert_eq!(listed_server(&tether, "s3").await.unwrap()["deleting"], true);

    // Its tunnels get 1012 (spread as a removed server's), the others none.
    for (ws, name) in open.iter_mut().zip(&names) {
        if name == "s3" {
            assert_eq!(
                close_code(ws, Duration::from_secs(5)).await,
                Some(1012),
                "a tunnel on s3"
            );
        }
    }
    let gone = eventually(Duration::from_secs(3), async || {
        listed_server(&tether, "s3").await.is_none()
    })
    .await;
    assert!(gone.is_some(), "gone from the API once its last tunnel closed");
    for (ws, name) in open.iter_mut().zip(&names) {
        if name == "s1" {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), futures_util::StreamExt::next(ws))
                    .await
                    .is_err(),
                "a tunnel on s1 is left alone"
            );
        }
    }
    // Gone, the name is free again.
    assert_eq!(add(&tether, "s3", s3.addr).await.0, StatusCode::CREATED);
    tether.stop().await;
}

#[tokio::test]
async fn refused_adds_and_deletes_say_why_with_400_404_or_409() {
    let s1 = backend("s1").start().await;
    let named = pool().server(Server::new("s1", s1.addr).cookie("c1"));
    let tether = start_tether(&config_with(named)).await;
    let at = "127.0.0.1:9";
    let cases: [(&str, &str, StatusCode, &str); 12] = [
        (
            "POST",
            "/api/v1/backends/nope/servers",
            StatusCode::NOT_FOUND,
            "no backend named `nope`",
        ),
        ("POST", SERVERS, StatusCode::BAD_REQUEST, "JSON body"),
        ("POST", SERVERS, StatusCode::BAD_REQUEST, "unknown field `wieght`"),
        ("POST", SERVERS, StatusCode::BAD_REQUEST, "names a host"),
        ("POST", SERVERS, StatusCode::BAD_REQUEST, "has no port"),
        ("POST", SERVERS, StatusCode::BAD_REQUEST, "between 0 and 1000"),
        ("POST", SERVERS, StatusCode::CONFLICT, "already has a server named `s1`"),
        ("POST", SERVERS, StatusCode::CONFLICT, "cookie id `c1`"),
        (
            "DELETE",
            "/api/v1/backends/nope/servers/s1",
            StatusCode::NOT_FOUND,
            "no backend named `nope`",
        ),
        (
            "DELETE",
            "/api/v1/backends/pool/servers/s9",
            StatusCode::NOT_FOUND,
            "no server named `s9`",
        ),
        (
            "DELETE",
            "/api/v1/backends/pool/servers/s1",
            StatusCode::CONFLICT,
            "comes from the configuration file",
        ),
        (
            "POST",
            SERVERS,
            StatusCode::CONFLICT,
            "already has a server named `s2` (from the API)",
        ),
    ];
    let bodies = [
        add_body("s2", at.parse().unwrap()),
        "{\"name\": ".to_string(),
        format!(r#"{{"name": "s2", "address": "{at}", "wieght": 2}}"#),
        r#"{"name": "s2", "address": "ws2.internal:8200"}"#.to_string(),
        r#"{"name": "s2", "address": "127.0.0.1"}"#.to_string(),
        format!(r#"{{"name": "s2", "address": "{at}", "weight": 1001}}"#),
        add_body("s1", at.parse().unwrap()),
        format!(r#"{{"name": "s4", "address": "{at}", "cookie": "c1"}}"#),
        String::new(),
        String::new(),
        String::new(),
        add_body("s2", at.parse().unwrap()),
    ];
    assert_eq!(add(&tether, "s2", at.parse().unwrap()).await.0, StatusCode::CREATED);
    for ((method, path, status, says), body) in cases.iter().zip(&bodies) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (!body.is_empty()).then_some(body.as_str());
        let (got, answer) = admin_call(admin(&tether), method.clone(), path, body).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(got, *status, "{method} {path} {body:?}: {answer}");
        assert!(error.contains(says), "{method} {path} {body:?}: {error}");
    }
    // Nothing refused changed the servers.
    let names: Vec<Value> = listed(&tether).await.iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [Value::from("s1"), Value::from("s2")]);
    // The operator actions of a server being deleted are refused too.
    assert_eq!(delete(&tether, "s2").await.0, StatusCode::ACCEPTED);
    let (status, _) = admin_call(admin(&tether), Method::POST, &format!("{SERVERS}/s2/enable"), None).await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND,
        "enable of a deleted server: {status}"
    );
    tether.stop().await;
}

#[tokio::test]
async fn adding_a_server_needs_the_login_and_a_same_origin_request() {
    let s1 = backend("s1").start().await;
    let hash = tether::admin::auth::hash_password("correct horse").expect("hash");
    let config = Config::over(pool().servers([&s1])).admin(Admin::bind("127.0.0.1:0").user("admin", &hash));
    let tether = start_tether(&config).await;
    let addr = admin(&tether);
    let body = add_body("s2", "127.0.0.1:9".parse().unwrap());
    let (status, _) = admin_call(addr, Method::POST, SERVERS, Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no login");
    let login = "Basic YWRtaW46Y29ycmVjdCBob3JzZQ==";
    let request = |origin: &str, method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {login}\r\nOrigin: {origin}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let foreign = raw_exchange(addr, request("http://evil.example", "POST", SERVERS).as_bytes()).await;
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    let own = raw_exchange(addr, request(&format!("http://{addr}"), "POST", SERVERS).as_bytes()).await;
    assert!(own.starts_with("HTTP/1.1 201"), "{own}");
    let path = format!("{SERVERS}/s2");
    let foreign = raw_exchange(addr, request("http://evil.example", "DELETE", &path).as_bytes()).await;
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    tether.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_found_in_dns_says_dns_and_only_api_servers_can_be_deleted() {
    let found = backend("found").start_on("127.0.0.2:0".parse().unwrap()).await;
    let (s1, s3) = (backend("s1").start().await, backend("s3").start().await);
    let dns = Dnsmasq::start(&[("127.0.0.2", "api.found.internal")], &[]);
    let pool = pool()
        .balance("roundrobin")
        .discover_dns("api.found.internal", found.addr.port(), "100ms")
        .servers([&s1]);
    let tether = start_tether(&config_with(pool).resolver(&[dns.addr()], "1s")).await;
    let dns_name = format!("pool-127.0.0.2-{}", found.addr.port());
    let appeared = eventually(Duration::from_secs(5), async || {
        listed_server(&tether, &dns_name).await.is_some()
    })
    .await;
    assert!(appeared.is_some(), "the DNS server joins");
    assert_eq!(add(&tether, "s3", s3.addr).await.0, StatusCode::CREATED);
    let sources: Vec<(Value, Value)> = listed(&tether)
        .await
        .iter()
        .map(|s| (s["name"].clone(), s["source"].clone()))
        .collect();
    assert_eq!(
        sources,
        [("s1", "config"), (dns_name.as_str(), "dns"), ("s3", "api")].map(|(n, s)| (Value::from(n), Value::from(s)))
    );
    let (status, refused) = delete(&tether, &dns_name).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(refused["error"].as_str().unwrap().contains("found in DNS"), "{refused}");
    // The three sources are balanced together.
    let (reached, _open) = connect(tether.addr, 3).await;
    assert_eq!((count(&reached, "found"), count(&reached, "s3")), (1, 1), "{reached:?}");
    tether.stop().await;
}

/// A fresh folder for a state file.
fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-api-servers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_state_file_brings_back_api_servers_and_operator_states() {
    let (s1, s2, s3) = (
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    );
    let dir = state_dir("restart");
    let path = dir.join("state.json");
    let config = config_with(pool().balance("roundrobin").servers([&s1, &s2])).state_file(path.to_str().unwrap());
    let first = start_tether(&config).await;
    assert_eq!(add(&first, "s3", s3.addr).await.0, StatusCode::CREATED);
    let (status, _) = admin_call(admin(&first), Method::POST, &format!("{SERVERS}/s1/drain"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin_call(
        admin(&first),
        Method::PUT,
        &format!("{SERVERS}/s2/weight"),
        Some(r#"{"weight": 7}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A reload keeps the operator states the state file holds.
    first.handle.reload(&config.parse()).expect("reload");
    assert_eq!(listed_server(&first, "s1").await.unwrap()["admin"], "drain");
    first.stop().await;
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("state file")).unwrap();
    assert_eq!(written["servers"][0]["name"], "s3", "{written}");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "no temporary file left");

    let second = start_tether(&config).await;
    let s3_listed = listed_server(&second, "s3").await.expect("the API server is back");
    assert_eq!(
        (&s3_listed["source"], &s3_listed["address"]),
        (&Value::from("api"), &Value::from(s3.addr.to_string()))
    );
    assert_eq!(listed_server(&second, "s1").await.unwrap()["admin"], "drain");
    assert_eq!(listed_server(&second, "s2").await.unwrap()["weight"], 7);
    let (reached, _open) = connect(second.addr, 8).await;
    assert_eq!(count(&reached, "s1"), 0, "s1 is still drained: {reached:?}");
    assert_eq!(count(&reached, "s2"), 7, "s2 has weight 7 against s3's 1: {reached:?}");

    // Deleted, it stays deleted after the next restart.
    assert_eq!(delete(&second, "s3").await.0, StatusCode::ACCEPTED);
    second.stop().await;
    let third = start_tether(&config).await;
    assert!(listed_server(&third, "s3").await.is_none());
    third.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_a_server_added_through_one_instance_reaches_every_instance() {
    let redis = RedisServer::start().await;
    let (s1, s2) = (backend("s1").start().await, backend("s2").start().await);
    let base = pool()
        .balance("roundrobin")
        .drain_timeout("200ms")
        .drain_spread("100ms")
        .servers([&s1]);
    let member = |instance: &str| {
        config_with(base.clone()).cluster(
            Cluster::redis(&redis.url())
                .instance(instance)
                .secret("0123456789abcdef0123"),
        )
    };
    let a = start_tether(&member("a")).await;
    let b = start_tether(&member("b")).await;
    let joined = eventually(Duration::from_secs(5), async || {
        let (_, cluster) = admin_call(admin(&b), Method::GET, "/api/v1/cluster", None).await;
        cluster["instances"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert!(joined.is_some(), "both instances in the cluster");

    assert_eq!(add(&a, "s2", s2.addr).await.0, StatusCode::CREATED);
    let on_b = eventually(Duration::from_secs(2), async || {
        listed_server(&b, "s2").await.is_some_and(|s| s["source"] == "api")
    })
    .await;
    let took = on_b.expect("B applies the server A added");
    eprintln!("a server added through A was listed by B after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "within a second, as operator changes: {took:?}"
    );
    let (reached, open) = connect(b.addr, 4).await;
    assert_eq!(
        count(&reached, "s2"),
        2,
        "B balances new WebSockets onto it: {reached:?}"
    );
    drop(open);
    let stored = redis
        .run::<Option<String>>(redis::cmd("HGET").arg("tether:servers:state").arg("pool/s2"))
        .await;
    assert!(stored.is_some_and(|r| r.contains("\"sig\"")), "stored in Redis, signed");

    // An instance started afterwards reads it from Redis.
    let c = start_tether(&member("c")).await;
    let on_c = eventually(Duration::from_secs(3), async || listed_server(&c, "s2").await.is_some()).await;
    assert!(on_c.is_some(), "C, started later, applies it");

    // Deleted through B: every instance drains it and lets it go.
    assert_eq!(delete(&b, "s2").await.0, StatusCode::ACCEPTED);
    for (tether, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let gone = eventually(Duration::from_secs(5), async || {
            listed_server(tether, "s2").await.is_none()
        })
        .await;
        assert!(gone.is_some(), "gone from {name}");
    }
    for tether in [a, b, c] {
        tether.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_records_in_redis_that_are_unsigned_malformed_or_from_the_future_are_ignored() {
    let redis = RedisServer::start().await;
    let s1 = backend("s1").start().await;
    let cluster = Cluster::redis(&redis.url())
        .instance("a")
        .sync_interval("100ms")
        .secret("0123456789abcdef0123");
    let a = start_tether(&config_with(pool().servers([&s1])).cluster(cluster)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let record = |name: &str, address: &str, at: u64| {
        format!(
            r#"{{"server": {{"backend": "pool", "name": "{name}", "address": "{address}"}}, "deleted": false, "by": "evil", "instance": "x", "at_unix_ms": {at}}}"#
        )
    };
    let forged = [
        ("unsigned", record("unsigned", "127.0.0.1:9", now)),
        ("host", record("host", "evil.example:80", now)),
        ("future", record("future", "127.0.0.1:9", now + 3_600_000)),
        (
            "huge",
            record("huge", "127.0.0.1:9", now).replace("\"evil\"", &format!("\"{}\"", "e".repeat(5000))),
        ),
    ];
    for (name, value) in &forged {
        let _: () = redis
            .run(
                redis::cmd("HSET")
                    .arg("tether:servers:state")
                    .arg(format!("pool/{name}"))
                    .arg(value),
            )
            .await;
        let _: () = redis.run(redis::cmd("PUBLISH").arg("tether:servers").arg(value)).await;
    }
    // Published and read back again (every 5 sync intervals): never applied.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let names: Vec<Value> = listed(&a).await.iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [Value::from("s1")], "no forged server was added");
    // A genuine add still goes through.
    assert_eq!(
        add(&a, "s2", "127.0.0.1:9".parse().unwrap()).await.0,
        StatusCode::CREATED
    );
    a.stop().await;
}

/// The new key as `tether check` reads it: errors at file:line:column.
#[test]
fn state_file_is_checked_with_its_place() {
    let base = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"ws\"\n\n\
                [[backend]]\nname = \"ws\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n";
    let error = |text: &str| match tether::config::parse(text, "t.toml") {
        Err(tether::config::ConfigError::Invalid {
            line, column, message, ..
        }) => (line, column, message),
        other => panic!("expected an error for {text:?}, got {other:?}"),
    };
    let dir = state_dir("check");
    let path = dir.join("state.json");
    let ok = tether::config::parse(&format!("state_file = {:?}\n{base}", path.to_str().unwrap()), "t.toml")
        .expect("a file in a folder that exists");
    assert_eq!(ok.state_file.as_deref(), Some(path.as_path()));
    let (line, column, message) = error(&format!("state_file = \"/nonexistent-tether/state.json\"\n{base}"));
    assert_eq!((line, column), (1, 14), "{message}");
    assert!(message.contains("does not exist: create it"), "{message}");
    let (line, _, message) = error(&format!(
        "state_file = {:?}\n{base}\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\n",
        path.to_str().unwrap()
    ));
    assert_eq!(line, 1);
    assert!(message.contains("live in Redis"), "{message}");
    let (_, _, message) = error(&format!("state_file = {:?}\n{base}", dir.to_str().unwrap()));
    assert!(message.contains("is a folder"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
