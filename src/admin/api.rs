//! The JSON API under `/api/v1/`: views of frontends, backends and servers
//! with their live counters, and the operator actions. Documented in
//! `docs/admin-api.md` and `docs/openapi.yaml`.

use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::Context;
use super::{error_response, json_response, AdminBody};
use crate::config::MAX_WEIGHT;
use crate::dynamic::{Refusal, RefusalKind};
use crate::snapshot::{Backend, Server, Snapshot};
use crate::state::{AdminState, Changes, ServerState};

/// Stick-table entries returned when `limit` is absent.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` accepted.
pub const MAX_PAGE: usize = 1000;

/// A server's state for people: `maint` and `drain` (the operator's) win over `down` and `up` (the checks').
pub fn state_name(server: &Server) -> &'static str {
    match server.state.admin() {
        AdminState::Maint => "maint",
        AdminState::Drain => "drain",
        AdminState::Ready if server.state.is_up() => "up",
        AdminState::Ready => "down",
    }
}

/// One server with its live state and counters.
pub fn server_json(backend: &Backend, index: usize) -> Value {
    let server = &backend.servers[index];
    let state = &server.state;
    let slowstart = backend.candidates.get(index).and_then(|c| c.slowstart);
    let counters = state.counters();
    let responses = counters.responses;
    let health = backend.health.as_ref().map(|check| {
        let status = state.health();
        json!({
            "check": check.probe.kind(),
            "checks": status.checks,
            "failed_checks": status.failed_checks,
            "last_check": status.last_check.as_ref().map(|c| json!({
                "ago_ms": c.at.elapsed().as_millis() as u64,
                "latency_ms": c.latency.as_secs_f64() * 1000.0,
                "ok": c.failure.is_none(),
                "failure": c.failure,
            })),
            "last_flip": status.last_flip.as_ref().map(|f| json!({
                "ago_ms": f.at.elapsed().as_millis() as u64,
                "up": f.flip.is_up(),
                "cause": f.cause,
            })),
        })
    });
    let mut errors = serde_json::Map::new();
    errors.insert("connect".into(), counters.connect_failures.into());
    for (code, count) in counters.gateway_errors {
        errors.insert(code.to_string(), count.into());
    }
    json!({
        "backend": &*backend.name,
        "name": &*server.name,
        "source": server.source.as_str(),
        "deleting": server.leaving,
        "address": server.address.to_string(),
        "state": state_name(server),
        "admin": state.admin().as_str(),
        "up": state.is_up(),
        "weight": state.weight(),
        "effective_weight": state.effective_weight(slowstart),
        "maxconn": server.maxconn,
        "active": counters.active,
        "remote_active": counters.remote_active,
        "tunnels": counters.tunnels,
        "dispatched": counters.dispatched,
        "connect_failures": counters.connect_failures,
        "since_unix_ms": state.state_since_unix_ms(),
        "drain": state.drain_progress().map(|p| json!({
            "closing": p.closing,
            "ended_unix_ms": p.ended_unix_ms,
        })),
        "bytes_in": counters.bytes_in,
        "bytes_out": counters.bytes_out,
        "messages_in": counters.messages_in,
        "messages_out": counters.messages_out,
        "responses": { "1xx": responses[0], "2xx": responses[1], "3xx": responses[2], "4xx": responses[3], "5xx": responses[4] },
        "errors": errors,
        "health": health,
        "latency": latency_json(state),
    })
}

/// p50 and p99 of the server's latency histograms, in milliseconds (null
/// without samples), interpolated within their buckets.
fn latency_json(state: &ServerState) -> Value {
    let mut latency = serde_json::Map::new();
    for (name, histogram) in [
        ("connect", &state.connect_times),
        ("handshake", &state.handshake_times),
        ("first_byte", &state.first_byte_times),
    ] {
        let reading = histogram.read();
        for (suffix, q) in [("p50", 0.5), ("p99", 0.99)] {
            let ms = reading.quantile(q).map(|seconds| seconds * 1000.0);
            latency.insert(format!("{name}_{suffix}_ms"), ms.into());
        }
    }
    Value::Object(latency)
}

fn backend_json(backend: &Backend) -> Value {
    let table = backend.sticky.as_ref().and_then(|s| s.table.as_ref());
    json!({
        "name": &*backend.name,
        "health_check": backend.health.as_ref().map(|h| h.probe.kind()),
        "sticky": backend.sticky.is_some(),
        "stick_table_entries": table.map(|t| t.len()),
        "queued": backend.queued.load(Ordering::Relaxed),
        "rebalance": rebalance_json(backend),
        "servers": (0..backend.servers.len()).map(|i| server_json(backend, i)).collect::<Vec<_>>(),
    })
}

/// A backend's `rebalance` object: `null` when not configured; the settings
/// and where the rounds stand otherwise (`target_max` is 0 before the first round).
fn rebalance_json(backend: &Backend) -> Value {
    let Some(settings) = &backend.rebalance else {
        return Value::Null;
    };
    let reading = backend.rebalance_state.reading();
    let target_max = match reading.target_max {
        u32::MAX => 0,
        target => u64::from(target),
    };
    json!({
        "max_skew": settings.max_skew,
        "rate_per_s": settings.rate_per_s(),
        "settle_ms": settings.settle.as_millis() as u64,
        "active": reading.active,
        "target_max": target_max,
        "shed_total": reading.shed_total,
        "over": reading.over.iter().map(|s| &**s).collect::<Vec<_>>(),
    })
}

/// `GET /api/v1/frontends`.
pub fn frontends(snapshot: &Snapshot) -> Response<AdminBody> {
    let list: Vec<Value> = snapshot
        .frontends
        .iter()
        .map(|f| {
            json!({
                "name": &*f.name,
                "binds": f.binds.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "default_backend": f.default_backend.and_then(|i| snapshot.backends.get(i)).map(|b| &*b.name),
                "routes": f.routes.len(),
                "connections_open": f.state.connections_open.load(Ordering::Relaxed),
                "connections_accepted": f.state.connections_accepted.load(Ordering::Relaxed),
                "requests": f.state.requests.load(Ordering::Relaxed),
                "certificate": f.tls.as_ref().and_then(|t| t.acme.as_ref()).map(|acme| json!({
                    "source": "acme",
                    "domains": &*acme.domains,
                    "expires": acme.slot.not_after(),
                })),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "frontends": list }))
}

/// `GET /api/v1/backends/{backend}`: one backend as `GET /api/v1/backends` lists it.
pub fn backend(snapshot: &Snapshot, backend: &str) -> Response<AdminBody> {
    match snapshot.backend(backend) {
        Some(b) => json_response(StatusCode::OK, &backend_json(b)),
        None => error_response(StatusCode::NOT_FOUND, format!("there is no backend named `{backend}`")),
    }
}

/// `GET /api/v1/backends`.
pub fn backends(snapshot: &Snapshot) -> Response<AdminBody> {
    let list: Vec<Value> = snapshot.backends.iter().map(backend_json).collect();
    json_response(StatusCode::OK, &json!({ "backends": list }))
}

/// `GET /api/v1/servers`.
pub fn servers(snapshot: &Snapshot) -> Response<AdminBody> {
    let list: Vec<Value> = snapshot
        .backends
        .iter()
        .flat_map(|b| (0..b.servers.len()).map(move |i| server_json(b, i)))
        .collect();
    json_response(StatusCode::OK, &json!({ "servers": list }))
}

/// The backend and server index named in a path, or the message of a 404 saying which is unknown.
fn find<'a>(snapshot: &'a Snapshot, backend: &str, server: &str) -> Result<(&'a Backend, usize), String> {
    let Some(b) = snapshot.backend(backend) else {
        return Err(format!("there is no backend named `{backend}`"));
    };
    match b.server_index.get(server) {
        Some(&index) => Ok((b, index)),
        None => Err(format!("backend `{backend}` has no server named `{server}`")),
    }
}

/// `POST …/drain`, `…/enable`, `…/disable`, `…/maint`: sets the server's admin state.
pub fn server_action(
    snapshot: &Snapshot,
    changes: &Changes,
    backend: &str,
    server: &str,
    verb: &str,
    user: &str,
) -> Response<AdminBody> {
    let (b, index) = match find(snapshot, backend, server) {
        Ok(found) => found,
        Err(message) => return error_response(StatusCode::NOT_FOUND, message),
    };
    if b.servers[index].leaving {
        return leaving(backend, server);
    }
    let target = match verb {
        "drain" => AdminState::Drain,
        "enable" => AdminState::Ready,
        "disable" | "maint" => AdminState::Maint,
        other => return error_response(StatusCode::NOT_FOUND, format!("unknown action `{other}`")),
    };
    let state = &b.servers[index].state;
    if changes.set_admin(state, target) {
        tracing::info!(backend = %b.name, server = %server, state = target.as_str(), user, "admin state set through the API");
    }
    json_response(StatusCode::OK, &server_json(b, index))
}

/// `PUT …/weight` with `{ "weight": n }`.
pub fn set_weight(snapshot: &Snapshot, backend: &str, server: &str, body: &[u8], user: &str) -> Response<AdminBody> {
    let (b, index) = match find(snapshot, backend, server) {
        Ok(found) => found,
        Err(message) => return error_response(StatusCode::NOT_FOUND, message),
    };
    if b.servers[index].leaving {
        return leaving(backend, server);
    }
    let weight = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("weight").and_then(Value::as_u64))
        .filter(|w| *w <= u64::from(MAX_WEIGHT));
    let Some(weight) = weight else {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!("send a JSON body like {{ \"weight\": 10 }} with a weight from 0 to {MAX_WEIGHT}"),
        );
    };
    let weight = weight as u32;
    let state = &b.servers[index].state;
    let before = state.set_weight(weight);
    tracing::info!(backend = %b.name, server = %server, weight, before, user, "weight set through the API");
    json_response(StatusCode::OK, &server_json(b, index))
}

/// The 409 of an operator action on a server being deleted.
fn leaving(backend: &str, server: &str) -> Response<AdminBody> {
    error_response(
        StatusCode::CONFLICT,
        format!("server `{server}` of backend `{backend}` is being deleted: it drains until it holds no connection"),
    )
}

/// The answer to a refused add or delete: its class's status, the reason in `error`.
fn refused(refusal: Refusal) -> Response<AdminBody> {
    let status = match refusal.kind {
        RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, refusal.message)
}

/// `POST /api/v1/backends/{backend}/servers` with `{ "name", "address",
/// "weight", "maxconn", "cookie" }`: 201 with the new server.
pub fn add_server(context: &dyn Context, backend: &str, body: &[u8], user: &str) -> Response<AdminBody> {
    match context.add_server(backend, body, user) {
        Ok(name) => {
            let snapshot = context.snapshot();
            match find(&snapshot, backend, &name) {
                Ok((b, index)) => json_response(StatusCode::CREATED, &server_json(b, index)),
                Err(_) => json_response(StatusCode::CREATED, &json!({ "backend": backend, "name": name })),
            }
        }
        Err(refusal) => refused(refusal),
    }
}

/// `DELETE /api/v1/backends/{backend}/servers/{server}`: 202 with the
/// server, now draining (it leaves once it holds no connection).
pub fn delete_server(context: &dyn Context, backend: &str, server: &str, user: &str) -> Response<AdminBody> {
    match context.delete_server(backend, server, user) {
        Ok(()) => {
            let snapshot = context.snapshot();
            match find(&snapshot, backend, server) {
                Ok((b, index)) => json_response(StatusCode::ACCEPTED, &server_json(b, index)),
                Err(_) => json_response(
                    StatusCode::ACCEPTED,
                    &json!({ "backend": backend, "name": server, "deleting": true }),
                ),
            }
        }
        Err(refusal) => refused(refusal),
    }
}

/// `POST /api/v1/reload`.
pub fn reload(context: &dyn Context, user: &str) -> Response<AdminBody> {
    tracing::info!(user, "reload asked through the API");
    match context.reload_config_file() {
        Ok(()) => json_response(StatusCode::OK, &json!({ "reloaded": true })),
        Err(message) => error_response(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}

/// Hex digits of a stick-table key's SHA-256 shown by the API.
pub const KEY_HASH_DIGITS: usize = 12;

/// What the API shows of a stick-table key: the first `KEY_HASH_DIGITS`
/// hex digits of its SHA-256. The keys are live session ids (a client
/// holding one is that session), so they are never shown; an operator who
/// has an id finds its entry by hashing it the same way
/// (`printf %s "$id" | sha256sum | cut -c1-12`).
pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(KEY_HASH_DIGITS);
    for byte in digest.iter().take(KEY_HASH_DIGITS.div_ceil(2)) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(KEY_HASH_DIGITS);
    hex
}

/// `GET /api/v1/backends/{backend}/sticky?offset=&limit=`.
pub fn sticky(snapshot: &Snapshot, backend: &str, query: Option<&str>) -> Response<AdminBody> {
    let Some(b) = snapshot.backend(backend) else {
        return error_response(StatusCode::NOT_FOUND, format!("there is no backend named `{backend}`"));
    };
    let mut offset = 0usize;
    let mut limit = DEFAULT_PAGE;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = value.parse::<usize>();
        match (key, number) {
            ("offset", Ok(n)) => offset = n,
            ("limit", Ok(n)) if (1..=MAX_PAGE).contains(&n) => limit = n,
            ("offset" | "limit", _) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("`{key}` must be a number (limit from 1 to {MAX_PAGE})"),
                )
            }
            _ => {}
        }
    }
    let Some(table) = b.sticky.as_ref().and_then(|s| s.table.as_ref()) else {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("backend `{backend}` has no stick table (it learns no session ids: see `sticky.learn`)"),
        );
    };
    let entries: Vec<Value> = table
        .entries(offset, limit)
        .into_iter()
        .map(|e| json!({ "key_hash": key_hash(&e.key), "server": &*e.server, "idle_ms": e.idle.as_millis() as u64 }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "backend": backend, "total": table.len(), "offset": offset, "limit": limit, "entries": entries }),
    )
}

/// `GET /api/v1/cluster`: this instance's membership of a cluster, the
/// instances with a recent heartbeat and whether Redis is reachable.
pub fn cluster(context: &dyn Context) -> Response<AdminBody> {
    let Some(cluster) = context.cluster() else {
        return json_response(StatusCode::OK, &json!({ "enabled": false, "instances": [] }));
    };
    let now = crate::util::clock::unix_ms();
    let me = cluster.instance();
    let instances: Vec<Value> = cluster
        .instances()
        .into_iter()
        .map(|i| {
            json!({
                "name": i.name,
                "self": i.name == me,
                "heartbeat_unix_ms": i.heartbeat_unix_ms,
                "heartbeat_ago_ms": now.saturating_sub(i.heartbeat_unix_ms),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "enabled": true,
            "instance": me,
            "redis": crate::cluster::redacted(&cluster.settings.redis),
            "redis_up": cluster.redis.is_up(),
            "redis_outages": cluster.redis.outages.load(Ordering::Relaxed),
            "stick_writes_dropped": cluster.dropped_writes.load(Ordering::Relaxed),
            "instances": instances,
        }),
    )
}
