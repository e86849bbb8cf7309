//! Learned session ids stay alive while a tunnel they routed is open
//! (HAProxy issue #1480): a tunnel longer than the learned entry's
//! `idle_timeout` keeps it, so the client's reconnect with the same id
//! reaches the same server; once the tunnel closes the id expires as
//! before. Locally, and through a real `redis-server` with `[cluster]`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use tether_test_support::*;
use tokio_tungstenite::tungstenite::Message;

/// Three backends that announce themselves as s1, s2 and s3.
async fn three() -> [TestBackend; 3] {
    [
        backend("s1").start().await,
        backend("s2").start().await,
        backend("s3").start().await,
    ]
}

/// Roundrobin over `servers` (so an id that sticks to nothing rotates) with `sticky`.
fn rotating(servers: &[TestBackend; 3], sticky: Sticky) -> Backend {
    pool().balance("roundrobin").servers(servers).sticky(sticky)
}

/// Ids learned from the `io` cookie, matched in `?sid=`, forgotten after `idle_timeout`.
fn learn(idle_timeout: &str) -> Sticky {
    Sticky::learned()
        .learn_response_cookie("io")
        .match_url_param("sid")
        .idle_timeout(idle_timeout)
}

/// The servers six plain requests for `path` reach.
async fn servers_for(addr: SocketAddr, path: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..6 {
        seen.insert(server_of(addr, path).await);
    }
    seen
}

/// Closes `ws` the way a client does and waits for the end of its stream.
async fn close(mut ws: Ws) {
    ws.send(Message::Close(None)).await.unwrap();
    let _ = close_code(&mut ws, Duration::from_secs(5)).await;
}

// On the paused clock: the table's idle timeout is tokio time.
#[tokio::test(start_paused = true)]
async fn an_open_tunnel_keeps_the_learned_id_that_routed_it_past_its_idle_timeout() {
    let servers = three().await;
    let tether = start_tether(&Config::over(rotating(&servers, learn("1s")))).await;
    let owner = server_of(tether.addr, "/?set_cookie=io=abc").await;
    let (ws, reached) = ws_connect(tether.addr, "/ws?sid=abc").await;
    assert_eq!(reached, owner, "the handshake is routed by the learned id");
    // An id the server hands out in its 101 is held by that tunnel too.
    let (_taught, taught_by) = ws_connect(tether.addr, "/ws?set_cookie=io=taught").await;

    // Three idle timeouts pass with the tunnels open and nothing else using the ids.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        servers_for(tether.addr, "/?sid=abc").await,
        HashSet::from([owner.clone()]),
        "the reconnect lands on the tunnel's server; roundrobin would rotate"
    );
    assert_eq!(
        servers_for(tether.addr, "/?sid=taught").await,
        HashSet::from([taught_by])
    );
    // An id no tunnel holds expires meanwhile, as it always did.
    server_of(tether.addr, "/?set_cookie=io=free").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(servers_for(tether.addr, "/?sid=free").await.len() > 1);

    // Once the tunnel closed, the id expires idle_timeout later.
    close(ws).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = servers_for(tether.addr, "/?sid=abc").await;
    assert!(
        seen.len() > 1,
        "forgotten after the tunnel: roundrobin again ({seen:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_io_sid_stays_with_its_websocket_for_hours() {
    let servers = three().await;
    let sticky = Sticky::preset("engine.io").idle_timeout("1m");
    let tether = start_tether(&Config::over(rotating(&servers, sticky))).await;
    let (status, headers, body) = get(tether.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, http::StatusCode::OK);
    let owner = headers["x-server"].to_str().unwrap().to_string();
    let body = String::from_utf8_lossy(&body).to_string();
    let sid = body
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a sid in the handshake body")
        .to_string();
    let (mut ws, reached) = ws_connect(tether.addr, &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}")).await;
    assert_eq!(reached, owner);
    // Two hours of a WebSocket in use (a message every 20 minutes, within the
    // backend's 1 h tunnel timeout); messages never touch the stick table.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("m{i}"));
    }
    let polling = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(
        servers_for(tether.addr, &polling).await,
        HashSet::from([owner]),
        "the client's polling reconnect finds its server"
    );
}

/// `backend` with `[cluster]` on the Redis at `redis`, as `instance`.
fn clustered(backend: Backend, redis: &str, instance: &str) -> Config {
    Config::over(backend).cluster(Cluster::redis(redis).instance(instance))
}

#[tokio::test]
async fn through_redis_a_tunnel_on_one_instance_keeps_the_id_for_a_reconnect_through_the_other() {
    let redis = RedisServer::start().await;
    let servers = three().await;
    let base = rotating(&servers, learn("1s"));
    let a = start_tether(&clustered(base.clone(), &redis.url(), "a")).await;
    let b = start_tether(&clustered(base, &redis.url(), "b")).await;
    let key = "tether:stick:pool:abc";

    let owner = server_of(a.addr, "/?set_cookie=io=abc").await;
    let (ws, reached) = ws_connect(a.addr, "/ws?sid=abc").await;
    assert_eq!(reached, owner);
    eventually(Duration::from_secs(3), async || {
        redis.get(key).await.as_deref() == Some(owner.as_str())
    })
    .await
    .expect("the learned id reaches Redis");

    // Three TTLs pass; only A's tunnel uses the id, and B never saw it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        redis.get(key).await.as_deref(),
        Some(owner.as_str()),
        "A refreshes the TTL while its tunnel is open"
    );
    assert_eq!(
        servers_for(b.addr, "/?sid=abc").await,
        HashSet::from([owner.clone()]),
        "B finds the id in Redis; roundrobin would rotate"
    );

    // Flushed while the tunnel is open: A writes the id again.
    redis.command("FLUSHALL").await;
    eventually(Duration::from_secs(3), async || {
        redis.get(key).await.as_deref() == Some(owner.as_str())
    })
    .await
    .expect("an id held by a tunnel is written again after a flush");

    // Closed: gone from Redis about a TTL later, and from both local tables.
    close(ws).await;
    let gone = eventually(Duration::from_secs(5), async || redis.get(key).await.is_none())
        .await
        .expect("the id expires in Redis once no tunnel holds it");
    eprintln!("the id left Redis {gone:?} after the tunnel closed");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen = servers_for(b.addr, "/?sid=abc").await;
    assert!(seen.len() > 1, "forgotten: roundrobin again ({seen:?})");
}
