//! Servers added and deleted through the admin API, without a reload
//! (HAProxy's `add server` / `del server`, Envoy's EDS), and the state kept
//! across restarts.
//!
//! The decisions are pure and live here: whether an add or a delete asked
//! through the API is valid against the configuration in force
//! (`check_add`, `check_delete`: a refusal carries its HTTP class and the
//! reason), which record of a server wins (`ApiServers::merge`: the latest),
//! and the configuration the snapshot is built from (`with_api`: the file's
//! and the found servers, then the API's). `state_file` reads and writes the
//! JSON file that keeps them without a cluster; with `[cluster]` they live in
//! Redis (`cluster::servers`). `instance` applies every change through the
//! reload path, as it does for servers found in DNS.

pub mod state_file;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::model::{Config, Server};
use crate::config::types::{AdminState, ServerSource};
use crate::config::{Address, MAX_WEIGHT};

/// Most servers added through the API that exist at once (being deleted
/// included), over all backends: bounds the state file and Redis.
pub const MAX_API_SERVERS: usize = 1024;
/// Longest backend or server name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest cookie id accepted, in bytes.
pub const MAX_COOKIE_LEN: usize = 64;
/// How long a deleted server's record is kept (in Redis and in memory), so
/// an older add of the same server arriving late cannot bring it back.
pub const TOMBSTONE_KEEP_MS: u64 = 24 * 3600 * 1000;

/// One server added through the API, as the API, the state file and Redis
/// carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiServer {
    /// The backend it belongs to.
    pub backend: String,
    /// Its name, unique in the backend.
    pub name: String,
    /// Where to connect (an IP address and a port: nothing to look up).
    pub address: SocketAddr,
    /// Relative share of new traffic (0 to `MAX_WEIGHT`).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Most active requests and tunnels; unlimited when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<u32>,
    /// Its id in a stickiness cookie; derived from the name when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

fn default_weight() -> u32 {
    1
}

impl ApiServer {
    /// Checks every field alone (what the API, the state file and Redis
    /// share); the error says which field and how to fix it.
    pub fn check(&self) -> Result<(), String> {
        check_name("backend", &self.backend)?;
        check_name("name", &self.name)?;
        check_address(self.address)?;
        if self.weight > MAX_WEIGHT {
            return Err(format!("`weight` must be between 0 and {MAX_WEIGHT}"));
        }
        if self.maxconn == Some(0) {
            return Err("`maxconn` must be at least 1 (use weight 0 to send a server no new traffic)".into());
        }
        if let Some(cookie) = &self.cookie {
            let fits = !cookie.is_empty()
                && cookie.len() <= MAX_COOKIE_LEN
                && cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !fits {
                return Err(format!(
                    "`cookie` must be 1 to {MAX_COOKIE_LEN} letters, digits, `.`, `_` or `-`"
                ));
            }
        }
        Ok(())
    }

    /// The configuration model's server for it (`leaving`: being deleted).
    /// `send_proxy`: its backend's PROXY header setting.
    fn model(&self, leaving: bool, send_proxy: Option<crate::proxy_header::ProxyVersion>) -> Server {
        Server {
            name: self.name.clone(),
            address: self.address,
            weight: self.weight,
            maxconn: self.maxconn,
            cookie: self.cookie.clone(),
            state: if leaving { AdminState::Drain } else { AdminState::Ready },
            tls: None,
            source: ServerSource::Api,
            leaving,
            send_proxy,
        }
    }
}

/// A name the API accepts: 1 to `MAX_NAME_LEN` letters, digits, `.`, `_`,
/// `-` or `:` (it appears in URL paths, cookie ids and Redis fields).
fn check_name(field: &str, name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "`{field}` must be 1 to {MAX_NAME_LEN} letters, digits, `.`, `_`, `-` or `:`"
        ))
    }
}

/// An address a server can be reached at: not port 0, not an unspecified IP.
fn check_address(address: SocketAddr) -> Result<(), String> {
    if address.port() == 0 {
        return Err(format!("`address` {address} has port 0: give the server's port"));
    }
    if address.ip().is_unspecified() || address.ip().is_multicast() {
        return Err(format!(
            "`address` {address} is not one server's address: give its IP address, like \"10.0.0.5:8200\""
        ));
    }
    Ok(())
}

/// Reads the `address` of an add: `ip:port` (a host name is refused: the
/// API path looks nothing up; `discover` follows names).
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    match Address::parse(text)? {
        Address::Socket(address) => Ok(address),
        Address::Name { host, port } => Err(format!(
            "`address` {host}:{port} names a host: give the server's IP address and port, like \"10.0.0.5:{port}\" \
             (host names are followed by a backend's `discover`, not looked up by the API)"
        )),
    }
}

/// Where a server added through the API stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// In the backend, taking traffic.
    Active,
    /// Deleted: draining, in the backend until it holds no connection.
    Deleting,
    /// Deleted and gone from this instance's backend (kept a while so an
    /// older record cannot bring it back).
    Gone,
}

/// A server added through the API with where it stands and when that was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The server.
    pub server: ApiServer,
    /// Active, being deleted, or gone.
    pub phase: Phase,
    /// When the add or delete was asked (Unix ms): the latest wins.
    pub at_unix_ms: u64,
}

/// The servers added through the API, by backend and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiServers {
    entries: BTreeMap<(String, String), Entry>,
}

impl ApiServers {
    /// The entry of `backend`/`name`, if any (gone ones included).
    pub fn get(&self, backend: &str, name: &str) -> Option<&Entry> {
        self.entries.get(&(backend.to_string(), name.to_string()))
    }

    /// Every entry, gone ones included, by backend then name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The servers that are in a backend (active or being deleted).
    pub fn live(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().filter(|e| e.phase != Phase::Gone)
    }

    /// How many servers are in a backend (active or being deleted).
    pub fn live_count(&self) -> usize {
        self.live().count()
    }

    /// A time for a new decision on `backend`/`name` made at `now`: later
    /// than the one known, so it wins even if the clock went back.
    fn next_time(&self, backend: &str, name: &str, now: u64) -> u64 {
        self.get(backend, name).map_or(now, |e| now.max(e.at_unix_ms + 1))
    }

    /// Adds `server` (checked by `check_add`) at `now`; returns its entry.
    pub fn add(&mut self, server: ApiServer, now: u64) -> Entry {
        let entry = Entry {
            at_unix_ms: self.next_time(&server.backend, &server.name, now),
            server,
            phase: Phase::Active,
        };
        self.entries.insert(key(&entry.server), entry.clone());
        entry
    }

    /// Starts deleting `backend`/`name` (checked by `check_delete`) at
    /// `now`; returns its entry, `None` if it is not active.
    pub fn delete(&mut self, backend: &str, name: &str, now: u64) -> Option<Entry> {
        let at = self.next_time(backend, name, now);
        let entry = self
            .entries
            .get_mut(&(backend.to_string(), name.to_string()))
            .filter(|e| e.phase == Phase::Active)?;
        entry.phase = Phase::Deleting;
        entry.at_unix_ms = at;
        Some(entry.clone())
    }

    /// Records that `backend`/`name`, being deleted, left the backend here.
    pub fn finish(&mut self, backend: &str, name: &str) -> bool {
        match self.entries.get_mut(&(backend.to_string(), name.to_string())) {
            Some(entry) if entry.phase == Phase::Deleting => {
                entry.phase = Phase::Gone;
                true
            }
            _ => false,
        }
    }

    /// Takes a record decided elsewhere (another instance, Redis) if it is
    /// newer than the one known; returns whether anything changed. A delete
    /// of a server this instance does not have is recorded as gone (there is
    /// nothing to drain).
    pub fn merge(&mut self, entry: Entry) -> bool {
        let key = key(&entry.server);
        let known = self.entries.get(&key);
        if known.is_some_and(|k| k.at_unix_ms >= entry.at_unix_ms) {
            return false;
        }
        let here = known.is_some_and(|k| k.phase != Phase::Gone);
        let phase = match entry.phase {
            Phase::Deleting if !here => Phase::Gone,
            phase => phase,
        };
        self.entries.insert(key, Entry { phase, ..entry });
        true
    }

    /// Forgets deleted servers gone since before `now - TOMBSTONE_KEEP_MS`.
    pub fn prune(&mut self, now: u64) {
        self.entries
            .retain(|_, e| e.phase != Phase::Gone || e.at_unix_ms.saturating_add(TOMBSTONE_KEEP_MS) > now);
    }
}

fn key(server: &ApiServer) -> (String, String) {
    (server.backend.clone(), server.name.clone())
}

/// The configuration the snapshot is built from: `config` (the file's
/// servers and the found ones) with each backend's API servers added after
/// them, by name. One named like a server already there (the file or DNS
/// wins), or for a backend the file no longer has, is left out.
pub fn with_api(config: &Config, api: &ApiServers) -> Config {
    let mut config = config.clone();
    for entry in api.live() {
        let server = &entry.server;
        let Some(backend) = config.backends.iter_mut().find(|b| b.name == server.backend) else {
            continue;
        };
        if backend.servers.iter().any(|s| s.name == server.name) {
            continue;
        }
        let send_proxy = backend.send_proxy;
        backend
            .servers
            .push(server.model(entry.phase == Phase::Deleting, send_proxy));
    }
    config
}

/// The API servers `with_api` leaves out of `config`, and why (for a warning).
pub fn left_out(config: &Config, api: &ApiServers) -> Vec<(String, String)> {
    api.live()
        .filter_map(|entry| {
            let server = &entry.server;
            let name = format!("{}/{}", server.backend, server.name);
            match config.backends.iter().find(|b| b.name == server.backend) {
                None => Some((name, "the configuration has no such backend".to_string())),
                Some(b) if b.servers.iter().any(|s| s.name == server.name) => Some((
                    name,
                    "the backend has a server of that name from the file or DNS".to_string(),
                )),
                Some(_) => None,
            }
        })
        .collect()
}

/// Which class of answer a refusal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed or a field is invalid (400).
    BadRequest,
    /// The backend or server does not exist (404).
    NotFound,
    /// It clashes with what exists (409): a name taken, a config server.
    Conflict,
    /// tether could not do it (500): the state file cannot be written.
    Failed,
}

/// Why an add or delete through the API was refused, for the JSON body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The class of answer.
    pub kind: RefusalKind,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A failure of tether's own (500).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Failed, message)
    }
}

/// The body of `POST /api/v1/backends/{backend}/servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    name: String,
    address: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    maxconn: Option<u32>,
    #[serde(default)]
    cookie: Option<String>,
}

/// Checks an add of a server to `backend` with the JSON `body` against
/// `config`, the configuration in force (file, found and API servers), and
/// `api`: the server to add, or why not (unknown backend: 404; a bad body or
/// field: 400; a name or cookie id taken, or too many API servers: 409).
pub fn check_add(config: &Config, api: &ApiServers, backend: &str, body: &[u8]) -> Result<ApiServer, Refusal> {
    let Some(model) = config.backends.iter().find(|b| b.name == backend) else {
        return Err(Refusal::new(
            RefusalKind::NotFound,
            format!("there is no backend named `{backend}`"),
        ));
    };
    let request: AddRequest = serde_json::from_slice(body).map_err(|err| {
        Refusal::new(
            RefusalKind::BadRequest,
            format!(
                "send a JSON body like {{\"name\": \"ws4\", \"address\": \"10.0.0.4:8200\", \"weight\": 1, \
                 \"maxconn\": 1024, \"cookie\": \"s4\"}} (name and address required): {err}"
            ),
        )
    })?;
    let bad = |message: String| Refusal::new(RefusalKind::BadRequest, message);
    let server = ApiServer {
        backend: backend.to_string(),
        name: request.name,
        address: parse_address(&request.address).map_err(bad)?,
        weight: request.weight,
        maxconn: request.maxconn,
        cookie: request.cookie,
    };
    server.check().map_err(bad)?;
    let conflict = |message: String| Err(Refusal::new(RefusalKind::Conflict, message));
    let name = &server.name;
    if api.get(backend, name).is_some_and(|e| e.phase == Phase::Deleting) {
        return conflict(format!(
            "server `{name}` of backend `{backend}` is being deleted: add it again once it is gone \
             (its last tunnel closed), or choose another name"
        ));
    }
    if let Some(taken) = model.servers.iter().find(|s| s.name == *name) {
        return conflict(format!(
            "backend `{backend}` already has a server named `{name}` (from {}): choose another name",
            describe(taken.source)
        ));
    }
    if model.named_servers.iter().any(|s| s.name == *name) {
        return conflict(format!(
            "backend `{backend}` already has a server named `{name}` (from the configuration file): choose another name"
        ));
    }
    if let Some(cookie) = &server.cookie {
        if let Some(taken) = model.servers.iter().find(|s| s.cookie.as_ref() == Some(cookie)) {
            return conflict(format!(
                "cookie id `{cookie}` is already server `{}`'s in backend `{backend}`: choose another",
                taken.name
            ));
        }
    }
    if model
        .servers
        .iter()
        .any(|s| s.source == ServerSource::Config && s.tls.is_some())
    {
        return conflict(format!(
            "backend `{backend}` reaches its servers over TLS, and servers added through the API are reached \
             over plain TCP: add this one to the configuration file"
        ));
    }
    if api.live_count() >= MAX_API_SERVERS {
        return conflict(format!(
            "{MAX_API_SERVERS} servers added through the API exist already: delete some first"
        ));
    }
    Ok(server)
}

/// What a delete does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The server starts draining.
    Start,
    /// It was already being deleted.
    AlreadyDeleting,
}

/// Checks a delete of `backend`/`name` against `config` (in force) and
/// `api`: only servers added through the API can be deleted (unknown: 404;
/// from the file or DNS: 409 saying where to remove it instead).
pub fn check_delete(config: &Config, api: &ApiServers, backend: &str, name: &str) -> Result<Deletion, Refusal> {
    let Some(model) = config.backends.iter().find(|b| b.name == backend) else {
        return Err(Refusal::new(
            RefusalKind::NotFound,
            format!("there is no backend named `{backend}`"),
        ));
    };
    let in_backend = model.servers.iter().find(|s| s.name == name);
    match (api.get(backend, name).map(|e| e.phase), in_backend.map(|s| s.source)) {
        (Some(Phase::Deleting), _) => Ok(Deletion::AlreadyDeleting),
        (Some(Phase::Active), Some(ServerSource::Api)) => Ok(Deletion::Start),
        (_, Some(ServerSource::Config)) => Err(Refusal::new(
            RefusalKind::Conflict,
            format!(
                "server `{name}` comes from the configuration file: remove it there and reload \
                 (only servers added through the API can be deleted through it; drain or maint stop its traffic)"
            ),
        )),
        (_, Some(ServerSource::Dns)) => Err(Refusal::new(
            RefusalKind::Conflict,
            format!(
                "server `{name}` was found in DNS by `discover`: remove its record there \
                 (only servers added through the API can be deleted through it; drain or maint stop its traffic)"
            ),
        )),
        _ => Err(Refusal::new(
            RefusalKind::NotFound,
            format!("backend `{backend}` has no server named `{name}`"),
        )),
    }
}

fn describe(source: ServerSource) -> &'static str {
    match source {
        ServerSource::Config => "the configuration file",
        ServerSource::Dns => "DNS",
        ServerSource::Api => "the API",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[frontend]]
name = "public"
bind = ["127.0.0.1:0"]
default_backend = "ws"

[[backend]]
name = "ws"
[[backend.server]]
name = "s1"
address = "127.0.0.1:8201"
cookie = "c1"
"#;

    fn config() -> Config {
        crate::config::parse(TEXT, "t.toml").expect("valid")
    }

    fn refusal(body: &str) -> Refusal {
        check_add(&config(), &ApiServers::default(), "ws", body.as_bytes()).expect_err(body)
    }

    #[test]
    fn an_add_is_checked_like_the_config() {
        let ok = check_add(
            &config(),
            &ApiServers::default(),
            "ws",
            br#"{"name":"s2","address":"127.0.0.1:8202","weight":3,"maxconn":10,"cookie":"c2"}"#,
        )
        .expect("valid");
        assert_eq!((ok.weight, ok.maxconn, ok.cookie.as_deref()), (3, Some(10), Some("c2")));
        let defaults = check_add(
            &config(),
            &ApiServers::default(),
            "ws",
            br#"{"name":"s2","address":"[::1]:80"}"#,
        )
        .expect("defaults");
        assert_eq!((defaults.weight, defaults.maxconn), (1, None));

        let nowhere = check_add(&config(), &ApiServers::default(), "nope", b"{}").unwrap_err();
        assert_eq!(nowhere.kind, RefusalKind::NotFound);
        for (body, says) in [
            ("not json", "JSON body"),
            (r#"{"address":"127.0.0.1:1"}"#, "missing field `name`"),
            (
                r#"{"name":"x","address":"127.0.0.1:1","colour":"red"}"#,
                "unknown field `colour`",
            ),
            (r#"{"name":"x","address":"127.0.0.1"}"#, "no port"),
            (r#"{"name":"x","address":"ws5.internal:80"}"#, "names a host"),
            (r#"{"name":"x","address":"0.0.0.0:80"}"#, "not one server's address"),
            (r#"{"name":"x","address":"127.0.0.1:0"}"#, "port 0"),
            (r#"{"name":"a/b","address":"127.0.0.1:1"}"#, "`name` must be"),
            (
                r#"{"name":"x","address":"127.0.0.1:1","weight":5000}"#,
                "between 0 and 1000",
            ),
            (r#"{"name":"x","address":"127.0.0.1:1","weight":-1}"#, "invalid value"),
            (r#"{"name":"x","address":"127.0.0.1:1","maxconn":0}"#, "at least 1"),
            (
                r#"{"name":"x","address":"127.0.0.1:1","cookie":"a b"}"#,
                "`cookie` must be",
            ),
        ] {
            let refused = refusal(body);
            assert_eq!(refused.kind, RefusalKind::BadRequest, "{body}: {refused}");
            assert!(refused.message.contains(says), "{body}: {refused}");
        }
        for (body, says) in [
            (
                r#"{"name":"s1","address":"127.0.0.1:1"}"#,
                "already has a server named `s1` (from the configuration file)",
            ),
            (
                r#"{"name":"s2","address":"127.0.0.1:1","cookie":"c1"}"#,
                "already server `s1`'s",
            ),
        ] {
            let refused = refusal(body);
            assert_eq!(refused.kind, RefusalKind::Conflict, "{body}: {refused}");
            assert!(refused.message.contains(says), "{body}: {refused}");
        }
    }

    #[test]
    fn api_servers_join_after_the_files_and_only_they_can_be_deleted() {
        let file = config();
        let mut api = ApiServers::default();
        let server = check_add(&file, &api, "ws", br#"{"name":"s2","address":"127.0.0.1:8202"}"#).unwrap();
        api.add(server, 1000);
        let composed = with_api(&file, &api);
        let servers: Vec<(&str, ServerSource, bool)> = composed.backends[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.source, s.leaving))
            .collect();
        assert_eq!(
            servers,
            vec![("s1", ServerSource::Config, false), ("s2", ServerSource::Api, false)]
        );
        let again = check_add(&composed, &api, "ws", br#"{"name":"s2","address":"127.0.0.1:1"}"#).unwrap_err();
        assert!(again.message.contains("(from the API)"), "{again}");

        assert_eq!(
            check_delete(&composed, &api, "ws", "s1").unwrap_err().kind,
            RefusalKind::Conflict
        );
        assert_eq!(
            check_delete(&composed, &api, "ws", "s9").unwrap_err().kind,
            RefusalKind::NotFound
        );
        assert_eq!(
            check_delete(&composed, &api, "nope", "s2").unwrap_err().kind,
            RefusalKind::NotFound
        );
        assert_eq!(check_delete(&composed, &api, "ws", "s2"), Ok(Deletion::Start));
        let deleting = api.delete("ws", "s2", 900).expect("active");
        assert_eq!(
            deleting.at_unix_ms, 1001,
            "later than the add even if the clock went back"
        );
        let composed = with_api(&file, &api);
        let leaving = &composed.backends[0].servers[1];
        assert!(leaving.leaving && leaving.state == AdminState::Drain);
        assert_eq!(check_delete(&composed, &api, "ws", "s2"), Ok(Deletion::AlreadyDeleting));
        let busy = check_add(&composed, &api, "ws", br#"{"name":"s2","address":"127.0.0.1:1"}"#).unwrap_err();
        assert!(busy.message.contains("being deleted"), "{busy}");
        assert!(api.finish("ws", "s2"));
        assert_eq!(with_api(&file, &api).backends[0].servers.len(), 1);
        assert!(check_add(&file, &api, "ws", br#"{"name":"s2","address":"127.0.0.1:1"}"#).is_ok());
    }

    #[test]
    fn the_latest_record_wins_and_a_delete_of_an_unknown_server_is_gone_at_once() {
        let server = ApiServer {
            backend: "ws".into(),
            name: "s2".into(),
            address: "127.0.0.1:8202".parse().unwrap(),
            weight: 1,
            maxconn: None,
            cookie: None,
        };
        let entry = |phase, at_unix_ms| Entry {
            server: server.clone(),
            phase,
            at_unix_ms,
        };
        let mut api = ApiServers::default();
        assert!(api.merge(entry(Phase::Deleting, 5)));
        assert_eq!(api.get("ws", "s2").map(|e| e.phase), Some(Phase::Gone));
        assert!(
            !api.merge(entry(Phase::Active, 4)),
            "an older add does not bring it back"
        );
        assert!(api.merge(entry(Phase::Active, 6)));
        assert!(!api.merge(entry(Phase::Active, 6)), "the same record twice");
        assert!(api.merge(entry(Phase::Deleting, 7)));
        assert_eq!(api.get("ws", "s2").map(|e| e.phase), Some(Phase::Deleting));
        api.finish("ws", "s2");
        api.prune(7 + TOMBSTONE_KEEP_MS - 1);
        assert!(api.get("ws", "s2").is_some(), "kept a while");
        api.prune(7 + TOMBSTONE_KEEP_MS);
        assert!(api.get("ws", "s2").is_none());
    }
}
