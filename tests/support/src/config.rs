//! A typed, fluent builder of tether configurations.
//!
//! Tests describe a config with values, not glued TOML text:
//!
//! ```text
//! Config::new()
//!     .frontend(Frontend::new("fe").bind("127.0.0.1:0").default_backend("ws")
//!         .route(Route::to("ws").path_prefix("/socket.io")))
//!     .backend(Backend::new("ws").balance("leastconn")
//!         .sticky(Sticky::cookie("SERVERID")).server(Server::new("s1", addr)))
//! ```
//!
//! The builder holds a `toml::Table`; [`Config::toml`] serialises it and
//! [`Config::parse`] runs the text through `tether::config::parse`, so every
//! config a test uses still goes through tether's real loader. Key names are
//! those of `docs/config.md`.

use std::net::SocketAddr;

use toml::{Table, Value};

use crate::backend::TestBackend;

/// A value the builder can write as a TOML value.
pub trait ToValue {
    /// The TOML value.
    fn to_value(self) -> Value;
}

impl ToValue for &str {
    fn to_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl ToValue for String {
    fn to_value(self) -> Value {
        Value::String(self)
    }
}

impl ToValue for &String {
    fn to_value(self) -> Value {
        Value::String(self.clone())
    }
}

impl ToValue for i64 {
    fn to_value(self) -> Value {
        Value::Integer(self)
    }
}

impl ToValue for bool {
    fn to_value(self) -> Value {
        Value::Boolean(self)
    }
}

impl ToValue for f64 {
    fn to_value(self) -> Value {
        Value::Float(self)
    }
}

impl ToValue for SocketAddr {
    fn to_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl<T: ToValue + Clone> ToValue for &[T] {
    fn to_value(self) -> Value {
        Value::Array(self.iter().cloned().map(ToValue::to_value).collect())
    }
}

impl<T: ToValue, const N: usize> ToValue for [T; N] {
    fn to_value(self) -> Value {
        Value::Array(self.into_iter().map(ToValue::to_value).collect())
    }
}

impl<T: ToValue> ToValue for Vec<T> {
    fn to_value(self) -> Value {
        Value::Array(self.into_iter().map(ToValue::to_value).collect())
    }
}

/// Sets `path` (a key, or keys of nested tables) in `table` to `value`.
fn set(table: &mut Table, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("a key");
    let mut table = table;
    for key in parents {
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = entry.as_table_mut().expect("a table");
    }
    table.insert(last.to_string(), value);
}

/// Appends `value` to the array at `key` of `table`.
fn push(table: &mut Table, key: &str, value: Value) {
    let entry = table.entry(key.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    entry.as_array_mut().expect("an array").push(value);
}

/// Appends `value` to the array at `path` (keys of nested tables) of `table`.
fn push_at(table: &mut Table, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("a key");
    let mut table = table;
    for key in parents {
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = entry.as_table_mut().expect("a table");
    }
    push(table, last, value);
}

/// Header rule methods (`request_headers` / `response_headers`) of a route or backend.
macro_rules! header_rules {
    () => {
        /// `request_headers.set.NAME = VALUE`.
        pub fn request_set(mut self, name: &str, value: &str) -> Self {
            set(
                &mut self.table,
                &["request_headers", "set", name],
                value.to_value(),
            );
            self
        }

        /// Adds NAME to `request_headers.remove`.
        pub fn request_remove(mut self, name: &str) -> Self {
            push_at(&mut self.table, &["request_headers", "remove"], name.to_value());
            self
        }

        /// `response_headers.set.NAME = VALUE`.
        pub fn response_set(mut self, name: &str, value: &str) -> Self {
            set(
                &mut self.table,
                &["response_headers", "set", name],
                value.to_value(),
            );
            self
        }

        /// Adds NAME to `response_headers.remove`.
        pub fn response_remove(mut self, name: &str) -> Self {
            push_at(&mut self.table, &["response_headers", "remove"], name.to_value());
            self
        }
    };
}

/// Setter methods writing one key (or a dotted path into nested tables).
macro_rules! keys {
    ($($(#[$doc:meta])* $method:ident($ty:ty) => $($key:literal).+;)*) => {
        $(
            $(#[$doc])*
            pub fn $method(mut self, value: $ty) -> Self {
                set(&mut self.table, &[$($key),+], ToValue::to_value(value));
                self
            }
        )*
    };
}

/// A whole configuration file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    table: Table,
}

/// What `start_tether` and friends accept as a config: a builder, or TOML
/// text for the tests that go through the text on purpose.
pub trait ConfigText {
    /// The TOML text.
    fn config_text(&self) -> String;
}

impl ConfigText for Config {
    fn config_text(&self) -> String {
        self.toml()
    }
}

impl ConfigText for str {
    fn config_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigText for String {
    fn config_text(&self) -> String {
        self.clone()
    }
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Config {
        Config::default()
    }

    /// The usual test layout: `shutdown_grace = "2s"`, `frontend` and `backend`.
    pub fn simple(frontend: Frontend, backend: Backend) -> Config {
        Config::new().shutdown_grace("2s").frontend(frontend).backend(backend)
    }

    /// [`Frontend::public`] (default backend `pool`) over `backend`, with `shutdown_grace = "2s"`.
    pub fn over(backend: Backend) -> Config {
        Config::simple(Frontend::public(), backend)
    }

    keys! {
        /// `log.redact_query`: query parameters the access log redacts.
        redact_query(&[&str]) => "log"."redact_query";
        /// `log.access`: where access-log lines go (`stderr`, `stdout`, `off` or a file).
        access_log(&str) => "log"."access";
        /// `log.log_format`: `text`, `json` or a template of `$field`s.
        log_format(&str) => "log"."log_format";
        /// `workers`: worker threads.
        workers(i64) => "workers";
        /// `tunnel.engine`: what carries established tunnels (`epoll` or `io_uring`).
        tunnel_engine(&str) => "tunnel"."engine";
        /// `shutdown_grace`: how long a graceful stop waits.
        shutdown_grace(&str) => "shutdown_grace";
        /// `state_file`: where API servers and operator states are kept across restarts.
        state_file(&str) => "state_file";
    }

    /// Adds a `[[frontend]]`.
    pub fn frontend(mut self, frontend: Frontend) -> Self {
        push(&mut self.table, "frontend", Value::Table(frontend.table));
        self
    }

    /// Adds a `[[backend]]`.
    pub fn backend(mut self, backend: Backend) -> Self {
        push(&mut self.table, "backend", Value::Table(backend.table));
        self
    }

    /// Sets `[admin]`.
    pub fn admin(mut self, admin: Admin) -> Self {
        self.table.insert("admin".into(), Value::Table(admin.table));
        self
    }

    /// Sets `[resolver]`: the nameservers discovery asks, and its lookup timeout.
    pub fn resolver(mut self, nameservers: &[SocketAddr], timeout: &str) -> Self {
        set(&mut self.table, &["resolver", "nameservers"], nameservers.to_value());
        set(&mut self.table, &["resolver", "timeout"], timeout.to_value());
        self
    }

    /// Sets `[tracing]`: spans posted to the OTLP/HTTP collector at `otlp`,
    /// new traces sampled at `sample_ratio`, batches sent after 50ms (so a
    /// test sees its spans at once).
    pub fn tracing(mut self, otlp: &str, sample_ratio: f64) -> Self {
        set(&mut self.table, &["tracing", "otlp"], otlp.to_value());
        set(&mut self.table, &["tracing", "sample_ratio"], sample_ratio.to_value());
        set(&mut self.table, &["tracing", "batch_delay"], "50ms".to_value());
        self
    }

    /// Sets `[cluster]`.
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.table.insert("cluster".into(), Value::Table(cluster.table));
        self
    }

    /// The TOML text of this configuration.
    pub fn toml(&self) -> String {
        toml::to_string(&self.table).expect("a config serialises")
    }

    /// The configuration as tether's loader reads it (panics on an error, naming it).
    pub fn parse(&self) -> tether::config::Config {
        tether::config::parse(&self.toml(), "test.toml").unwrap_or_else(|e| panic!("test config: {e}\n{}", self.toml()))
    }
}

/// One `[[frontend]]`.
#[derive(Clone, Debug)]
pub struct Frontend {
    table: Table,
}

impl Frontend {
    /// A frontend named `name`, with no address yet.
    pub fn new(name: &str) -> Frontend {
        let mut table = Table::new();
        set(&mut table, &["name"], name.to_value());
        Frontend { table }
    }

    /// The usual test frontend: `public` on `127.0.0.1:0`, default backend `pool`.
    pub fn public() -> Frontend {
        Frontend::new("public").bind("127.0.0.1:0").default_backend("pool")
    }

    /// Adds an address to `bind`.
    pub fn bind(mut self, addr: impl ToValue) -> Self {
        push(&mut self.table, "bind", addr.to_value());
        self
    }

    /// Adds a `[[frontend.route]]`.
    pub fn route(mut self, route: Route) -> Self {
        push(&mut self.table, "route", Value::Table(route.table));
        self
    }

    /// Sets `tls`.
    pub fn tls(mut self, tls: FrontendTls) -> Self {
        set(&mut self.table, &["tls"], Value::Table(tls.table));
        self
    }

    keys! {
        /// `default_backend`: where requests no route matches go.
        default_backend(&str) => "default_backend";
        /// `forward_headers`: which forwarding headers to add.
        forward_headers(&[&str]) => "forward_headers";
        /// `allowed_origins`: origins allowed to open WebSockets.
        allowed_origins(&[&str]) => "allowed_origins";
        /// `maxconn`: most client connections at once.
        maxconn(i64) => "maxconn";
        /// `per_ip.max_connections`: most connections of one client address.
        per_ip_max_connections(i64) => "per_ip"."max_connections";
        /// `per_ip.rate`: handshakes per client address, as `"20/s"`.
        per_ip_rate(&str) => "per_ip"."rate";
        /// `limits.max_request_head`: largest request head in bytes.
        max_request_head(i64) => "limits"."max_request_head";
        /// `limits.max_headers`: most header fields in a request.
        max_headers(i64) => "limits"."max_headers";
        /// `limits.max_uri`: longest request target in bytes.
        max_uri(i64) => "limits"."max_uri";
        /// `limits.max_body`: largest request body in bytes.
        max_body(i64) => "limits"."max_body";
        /// `websocket.max_frame_size`: largest client frame payload.
        websocket_max_frame_size(i64) => "websocket"."max_frame_size";
        /// `websocket.max_message_size`: largest client message.
        websocket_max_message_size(i64) => "websocket"."max_message_size";
        /// `websocket.idle_timeout`: a silent tunnel is closed with 1001 after this.
        websocket_idle_timeout(&str) => "websocket"."idle_timeout";
        /// `websocket.ping_interval`: tether pings a client silent this long.
        websocket_ping_interval(&str) => "websocket"."ping_interval";
        /// `websocket.ping_timeout`: a pinged client silent this long is closed.
        websocket_ping_timeout(&str) => "websocket"."ping_timeout";
        /// `websocket.max_messages`: client messages per tunnel, as `"100/s"`.
        websocket_max_messages(&str) => "websocket"."max_messages";
        /// `websocket.max_lifetime`: every tunnel is closed with 1001 this long after it opened.
        websocket_max_lifetime(&str) => "websocket"."max_lifetime";
        /// `websocket.lifetime_jitter`: each tunnel's limit is up to this much shorter.
        websocket_lifetime_jitter(&str) => "websocket"."lifetime_jitter";
        /// `per_ip.ipv6_prefix`: IPv6 clients are counted per network of this prefix.
        per_ip_ipv6_prefix(i64) => "per_ip"."ipv6_prefix";
        /// `trusted_proxies`: CIDR blocks of proxies whose forwarding headers are believed.
        trusted_proxies(&[&str]) => "trusted_proxies";
        /// `proxy_protocol`: trusted peers start with a PROXY protocol header.
        proxy_protocol(bool) => "proxy_protocol";
        /// `timeouts.client`: idle keep-alive limit.
        client_timeout(&str) => "timeouts"."client";
        /// `timeouts.http_request`: limit for a request head to arrive.
        http_request_timeout(&str) => "timeouts"."http_request";
        /// `timeouts.client_body`: limit of a request under way moving no byte on the client side.
        client_body_timeout(&str) => "timeouts"."client_body";
        /// `redirect_https`: every request gets a 308 to https.
        redirect_https(bool) => "redirect_https";
        /// `https_port`: the port written in the redirect.
        https_port(i64) => "https_port";
        /// `hsts`: the `Strict-Transport-Security` value.
        hsts(&str) => "hsts";
        /// `http2`: ALPN `h2` on a TLS frontend, h2c with prior knowledge on a plain one.
        http2(bool) => "http2";
        /// `limits.http2_max_concurrent_streams`: most streams open at once per connection.
        http2_max_concurrent_streams(i64) => "limits"."http2_max_concurrent_streams";
        /// `limits.http2_max_header_list_size`: largest decoded header list, bytes.
        http2_max_header_list_size(i64) => "limits"."http2_max_header_list_size";
    }
}

/// A frontend's `tls`: certificates and keys (PEM files).
#[derive(Clone, Debug, Default)]
pub struct FrontendTls {
    table: Table,
}

impl FrontendTls {
    /// `{ cert, key }`.
    pub fn new(cert: &str, key: &str) -> FrontendTls {
        FrontendTls::default().cert(cert).key(key)
    }

    /// No certificate yet (add some with [`FrontendTls::certificate`]).
    pub fn none() -> FrontendTls {
        FrontendTls::default()
    }

    keys! {
        /// `cert`: the PEM certificate chain.
        cert(&str) => "cert";
        /// `key`: its private key.
        key(&str) => "key";
    }

    /// `acme = { domains, contact, directory, directory_ca, cache }`: certificates from an ACME CA.
    pub fn acme(domains: &[&str], directory: &str, directory_ca: &str, cache: &str) -> FrontendTls {
        let mut acme = Table::new();
        let names = domains.iter().map(|d| Value::String(d.to_string())).collect();
        acme.insert("domains".into(), Value::Array(names));
        acme.insert("contact".into(), "mailto:ops@example.com".to_value());
        acme.insert("directory".into(), directory.to_value());
        acme.insert("directory_ca".into(), directory_ca.to_value());
        acme.insert("cache".into(), cache.to_value());
        let mut tls = FrontendTls::default();
        tls.table.insert("acme".into(), Value::Table(acme));
        tls
    }

    /// Sets `acme.challenge` ("tls-alpn-01" or "http-01").
    pub fn acme_challenge(mut self, challenge: &str) -> Self {
        if let Some(Value::Table(acme)) = self.table.get_mut("acme") {
            acme.insert("challenge".into(), challenge.to_value());
        }
        self
    }

    /// Adds a `{ cert, key }` pair to `certificates`.
    pub fn certificate(mut self, cert: &str, key: &str) -> Self {
        let mut pair = Table::new();
        pair.insert("cert".into(), cert.to_value());
        pair.insert("key".into(), key.to_value());
        push(&mut self.table, "certificates", Value::Table(pair));
        self
    }
}

/// One `[[frontend.route]]`: conditions and the backend they choose.
#[derive(Clone, Debug)]
pub struct Route {
    table: Table,
}

impl Route {
    /// A rule choosing `backend` (add conditions with the other methods).
    pub fn to(backend: &str) -> Route {
        let mut table = Table::new();
        set(&mut table, &["backend"], backend.to_value());
        Route { table }
    }

    /// Adds a condition to `any` (the rule matches if one holds).
    pub fn any(mut self, condition: Condition) -> Self {
        push(&mut self.table, "any", Value::Table(condition.table));
        self
    }

    /// Adds a condition to `all` (all must hold).
    pub fn all(mut self, condition: Condition) -> Self {
        push(&mut self.table, "all", Value::Table(condition.table));
        self
    }

    /// Adds `{ path_prefix }` to `any`.
    pub fn path_prefix(self, prefix: &str) -> Self {
        self.any(Condition::path_prefix(prefix))
    }

    header_rules!();

    keys! {
        /// `allowed_origins`: this rule's own list, replacing the frontend's.
        allowed_origins(&[&str]) => "allowed_origins";
    }
}

/// One route condition (an inline table with one selector).
#[derive(Clone, Debug, Default)]
pub struct Condition {
    table: Table,
}

impl Condition {
    fn one(key: &str, value: &str) -> Condition {
        let mut table = Table::new();
        table.insert(key.into(), value.to_value());
        Condition { table }
    }

    /// `{ path_prefix }`.
    pub fn path_prefix(prefix: &str) -> Condition {
        Condition::one("path_prefix", prefix)
    }

    /// `{ path }`: the path is exactly it.
    pub fn path(path: &str) -> Condition {
        Condition::one("path", path)
    }

    /// `{ path_regex }`.
    pub fn path_regex(regex: &str) -> Condition {
        Condition::one("path_regex", regex)
    }

    /// `{ host }`.
    pub fn host(host: &str) -> Condition {
        Condition::one("host", host)
    }

    /// `{ host_prefix }`.
    pub fn host_prefix(prefix: &str) -> Condition {
        Condition::one("host_prefix", prefix)
    }

    /// `{ header }`: the header is present (narrow with `equals`/`prefix`).
    pub fn header(name: &str) -> Condition {
        Condition::one("header", name)
    }

    /// `{ method }`.
    pub fn method(method: &str) -> Condition {
        Condition::one("method", method)
    }

    /// `{ query }`: the query parameter is present (narrow with `equals`).
    pub fn query(name: &str) -> Condition {
        Condition::one("query", name)
    }

    keys! {
        /// `equals`: the header element or query parameter equals this.
        equals(&str) => "equals";
        /// `prefix`: a header element starts with this.
        prefix(&str) => "prefix";
    }
}

/// One `[[backend]]`.
#[derive(Clone, Debug)]
pub struct Backend {
    table: Table,
}

/// `Backend::new("pool")`, the backend [`Frontend::public`] sends to.
pub fn pool() -> Backend {
    Backend::new("pool")
}

impl Backend {
    /// A backend named `name`, without servers yet.
    pub fn new(name: &str) -> Backend {
        let mut table = Table::new();
        set(&mut table, &["name"], name.to_value());
        Backend { table }
    }

    /// Adds a `[[backend.server]]`.
    pub fn server(mut self, server: impl Into<Server>) -> Self {
        push(&mut self.table, "server", Value::Table(server.into().table));
        self
    }

    /// Adds one server per test backend, named as they announce.
    pub fn servers<'a>(mut self, backends: impl IntoIterator<Item = &'a TestBackend>) -> Self {
        for backend in backends {
            self = self.server(backend);
        }
        self
    }

    /// Sets `sticky`.
    pub fn sticky(mut self, sticky: Sticky) -> Self {
        set(&mut self.table, &["sticky"], Value::Table(sticky.table));
        self
    }

    /// Sets `health`.
    pub fn health(mut self, health: Health) -> Self {
        set(&mut self.table, &["health"], Value::Table(health.table));
        self
    }

    /// Sets `tls` to a table (`{ ca, verify, sni }`).
    pub fn tls(mut self, tls: BackendTls) -> Self {
        set(&mut self.table, &["tls"], Value::Table(tls.table));
        self
    }

    header_rules!();

    /// `discover = { dns = name, port, interval }`: every A/AAAA record of `name` is a server.
    pub fn discover_dns(mut self, name: &str, port: u16, interval: &str) -> Self {
        set(&mut self.table, &["discover", "dns"], name.to_value());
        set(&mut self.table, &["discover", "port"], i64::from(port).to_value());
        set(&mut self.table, &["discover", "interval"], interval.to_value());
        self
    }

    /// `rebalance = { max_skew, rate, settle }`: tunnels are shed from servers
    /// over their share after the server set changed.
    pub fn rebalance(mut self, max_skew: f64, rate: &str, settle: &str) -> Self {
        set(&mut self.table, &["rebalance", "max_skew"], max_skew.to_value());
        set(&mut self.table, &["rebalance", "rate"], rate.to_value());
        set(&mut self.table, &["rebalance", "settle"], settle.to_value());
        self
    }

    /// `discover = { srv = name, interval }`: every SRV record of `name` is a server.
    pub fn discover_srv(mut self, name: &str, interval: &str) -> Self {
        set(&mut self.table, &["discover", "srv"], name.to_value());
        set(&mut self.table, &["discover", "interval"], interval.to_value());
        self
    }

    keys! {
        /// `server_defaults.weight`: weight of discovered servers.
        server_defaults_weight(i64) => "server_defaults"."weight";
        /// `server_defaults.maxconn`: `maxconn` of discovered servers.
        server_defaults_maxconn(i64) => "server_defaults"."maxconn";
        /// `resolve_interval`: written servers' host names are looked up again this often.
        resolve_interval(&str) => "resolve_interval";
    }

    keys! {
        /// `balance`: the algorithm (`roundrobin`, `leastconn`, `source`, …).
        balance(&str) => "balance";
        /// `hash_key`: the parameter, header or cookie a hashing balance reads.
        hash_key(&str) => "hash_key";
        /// `hash`: `map`, `consistent` or `maglev`.
        hash(&str) => "hash";
        /// `balance_factor`: bounded loads for `consistent`/`maglev`.
        balance_factor(f64) => "balance_factor";
        /// `maglev_table_size`.
        maglev_table_size(i64) => "maglev_table_size";
        /// `retries`: other servers tried after a failed connect.
        retries(i64) => "retries";
        /// `queue_timeout`: how long a request waits for a free slot.
        queue_timeout(&str) => "queue_timeout";
        /// `slowstart`: ramp-up of a server coming back.
        slowstart(&str) => "slowstart";
        /// `drain_timeout`: how long a draining server's tunnels may stay.
        drain_timeout(&str) => "drain_timeout";
        /// `drain_spread`: the drain closes are spread over this.
        drain_spread(&str) => "drain_spread";
        /// `down_spread`: the closes of a down server's tunnels are spread over this.
        down_spread(&str) => "down_spread";
        /// `drain_sticky`: a draining server still takes stuck clients.
        drain_sticky(bool) => "drain_sticky";
        /// `timeouts.connect`: TCP connect limit per attempt.
        connect_timeout(&str) => "timeouts"."connect";
        /// `timeouts.server`: limit for a server to start its response.
        server_timeout(&str) => "timeouts"."server";
        /// `timeouts.tunnel`: limit of a silent tunnel.
        tunnel_timeout(&str) => "timeouts"."tunnel";
        /// `timeouts.server_body`: limit of a response body getting no byte from its server.
        server_body_timeout(&str) => "timeouts"."server_body";
        /// `redispatch`: a client stuck to a down server goes elsewhere.
        redispatch(bool) => "redispatch";
        /// `sticky_respects_maxconn`.
        sticky_respects_maxconn(bool) => "sticky_respects_maxconn";
        /// `sticky_maxconn_margin`: percent past `maxconn` stuck clients may go.
        sticky_maxconn_margin(i64) => "sticky_maxconn_margin";
        /// `tls = true|false` (verified against the Mozilla roots, or off).
        tls_enabled(bool) => "tls";
        /// `send_proxy`: `v1` or `v2`, the PROXY header toward every server.
        send_proxy(&str) => "send_proxy";
    }
}

/// One `[[backend.server]]`.
#[derive(Clone, Debug)]
pub struct Server {
    table: Table,
}

impl Server {
    /// A server `name` at `addr`.
    pub fn new(name: &str, addr: impl ToValue) -> Server {
        let mut table = Table::new();
        set(&mut table, &["name"], name.to_value());
        set(&mut table, &["address"], addr.to_value());
        Server { table }
    }

    /// Sets this server's own `tls` table.
    pub fn tls(mut self, tls: BackendTls) -> Self {
        set(&mut self.table, &["tls"], Value::Table(tls.table));
        self
    }

    keys! {
        /// `weight`.
        weight(i64) => "weight";
        /// `maxconn`.
        maxconn(i64) => "maxconn";
        /// `cookie`: its id in a stickiness cookie.
        cookie(&str) => "cookie";
        /// `state`: `ready`, `drain` or `maint`.
        state(&str) => "state";
        /// `sni`: the TLS name sent and checked.
        sni(&str) => "sni";
        /// `tls = true|false` for this server only.
        tls_enabled(bool) => "tls";
        /// `send_proxy`: `v1`, `v2` or `off` for this server only.
        send_proxy(&str) => "send_proxy";
    }
}

impl From<&TestBackend> for Server {
    fn from(backend: &TestBackend) -> Server {
        Server::new(backend.name(), backend.addr)
    }
}

impl From<(&str, SocketAddr)> for Server {
    fn from((name, addr): (&str, SocketAddr)) -> Server {
        Server::new(name, addr)
    }
}

/// A backend's or server's `tls` table.
#[derive(Clone, Debug, Default)]
pub struct BackendTls {
    table: Table,
}

impl BackendTls {
    /// `{}`: verified against the Mozilla roots (set keys with the methods).
    pub fn new() -> BackendTls {
        BackendTls::default()
    }

    keys! {
        /// `ca`: PEM bundle of the trusted CAs.
        ca(&str) => "ca";
        /// `verify`: check the server's certificate.
        verify(bool) => "verify";
        /// `sni`: the name sent and checked.
        sni(&str) => "sni";
    }
}

/// A backend's `sticky` table.
#[derive(Clone, Debug, Default)]
pub struct Sticky {
    table: Table,
}

impl Sticky {
    /// `{ cookie = name }` (tether's own cookie, `insert` mode unless changed).
    pub fn cookie(name: &str) -> Sticky {
        Sticky::default().cookie_name(name)
    }

    /// `{ preset = "engine.io" }` and friends.
    pub fn preset(preset: &str) -> Sticky {
        let mut sticky = Sticky::default();
        set(&mut sticky.table, &["preset"], preset.to_value());
        sticky
    }

    /// No cookie: learned session ids only (set with `learn_*` and `match_*`).
    pub fn learned() -> Sticky {
        Sticky::default()
    }

    /// Adds `{ cookie = name }` to `match`.
    pub fn match_cookie(self, name: &str) -> Self {
        self.match_on("cookie", name)
    }

    /// Adds `{ url_param = name }` to `match`.
    pub fn match_url_param(self, name: &str) -> Self {
        self.match_on("url_param", name)
    }

    /// Adds `{ header = name }` to `match`.
    pub fn match_header(self, name: &str) -> Self {
        self.match_on("header", name)
    }

    fn match_on(mut self, kind: &str, name: &str) -> Self {
        let mut one = Table::new();
        one.insert(kind.into(), name.to_value());
        push(&mut self.table, "match", Value::Table(one));
        self
    }

    keys! {
        /// `cookie`: the cookie name.
        cookie_name(&str) => "cookie";
        /// `mode`: `insert` or `prefix`.
        mode(&str) => "mode";
        /// `indirect`: remove tether's cookie before the server.
        indirect(bool) => "indirect";
        /// `nocache`: `Cache-Control: no-cache="set-cookie"` on responses that set it.
        nocache(bool) => "nocache";
        /// `path`: cookie `Path`.
        path(&str) => "path";
        /// `domain`: cookie `Domain`.
        domain(&str) => "domain";
        /// `max_age`: cookie `Max-Age`.
        max_age(&str) => "max_age";
        /// `httponly`: cookie `HttpOnly`.
        httponly(bool) => "httponly";
        /// `secure`: cookie `Secure`.
        secure(bool) => "secure";
        /// `samesite`: `strict`, `lax` or `none`.
        samesite(&str) => "samesite";
        /// `opaque`: HMAC values instead of server ids.
        opaque(bool) => "opaque";
        /// `secret`: key of opaque cookies.
        secret(&str) => "secret";
        /// `learn.response_cookie`: servers hand out session ids in this cookie.
        learn_response_cookie(&str) => "learn"."response_cookie";
        /// `learn.response_header`: servers hand out session ids in this header.
        learn_response_header(&str) => "learn"."response_header";
        /// `idle_timeout`: a learned id unused this long is forgotten.
        idle_timeout(&str) => "idle_timeout";
        /// `max_entries`: the stick table's size bound.
        max_entries(i64) => "max_entries";
    }
}

/// A backend's `health` table.
#[derive(Clone, Debug, Default)]
pub struct Health {
    table: Table,
}

impl Health {
    /// `{ check = kind }`: `tcp`, `http` or `websocket`.
    pub fn check(kind: &str) -> Health {
        let mut health = Health::default();
        set(&mut health.table, &["check"], kind.to_value());
        health
    }

    keys! {
        /// `path`: the request target of http/websocket checks.
        path(&str) => "path";
        /// `method`: the http check's method.
        method(&str) => "method";
        /// `host`: the `Host` header of checks.
        host(&str) => "host";
        /// `expect_status`: a code or range, as text.
        expect_status(&str) => "expect_status";
        /// `expect_body`: text the body must contain.
        expect_body(&str) => "expect_body";
        /// `interval`: time between two checks.
        interval(&str) => "interval";
        /// `timeout`: limit of one check.
        timeout(&str) => "timeout";
        /// `rise`: passed checks that bring a server up.
        rise(i64) => "rise";
        /// `fall`: failures that take it down.
        fall(i64) => "fall";
        /// `observe`: failed connects of live traffic count too.
        observe(bool) => "observe";
        /// `send_proxy`: checks start with the servers' PROXY header.
        send_proxy(bool) => "send_proxy";
    }
}

/// The `[admin]` table.
#[derive(Clone, Debug, Default)]
pub struct Admin {
    table: Table,
}

impl Admin {
    /// An admin listener on `bind`.
    pub fn bind(bind: &str) -> Admin {
        let mut admin = Admin::default();
        set(&mut admin.table, &["bind"], bind.to_value());
        admin
    }

    /// Adds a user to `users`.
    pub fn user(mut self, name: &str, password_hash: &str) -> Self {
        let mut user = Table::new();
        user.insert("name".into(), name.to_value());
        user.insert("password_hash".into(), password_hash.to_value());
        push(&mut self.table, "users", Value::Table(user));
        self
    }

    keys! {
        /// `allow`: CIDR blocks that may reach the admin listener.
        allow(&[&str]) => "allow";
        /// `metrics_allow`: CIDR blocks that read `/metrics` without a login.
        metrics_allow(&[&str]) => "metrics_allow";
        /// `hosts`: names the listener answers for besides its address and localhost.
        hosts(&[&str]) => "hosts";
    }

    /// `tls`: HTTPS for the listener, the same table as a frontend's.
    pub fn tls(mut self, tls: FrontendTls) -> Self {
        self.table.insert("tls".into(), Value::Table(tls.table));
        self
    }
}

/// The `[cluster]` table.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    table: Table,
}

impl Cluster {
    /// A cluster over the Redis at `redis` (a `redis://`, `rediss://` or `redis+sentinel://` URL).
    pub fn redis(redis: &str) -> Cluster {
        let mut cluster = Cluster::default();
        set(&mut cluster.table, &["redis"], redis.to_value());
        cluster
    }

    keys! {
        /// `instance`: this instance's name.
        instance(&str) => "instance";
        /// `password`: the Redis password.
        password(&str) => "password";
        /// `tls_ca_file`: the CA of a `rediss://` server.
        tls_ca_file(&str) => "tls_ca_file";
        /// `prefix`: prefix of every key and channel.
        prefix(&str) => "prefix";
        /// `timeout`: bound of a request's Redis call.
        timeout(&str) => "timeout";
        /// `sync_interval`: how often load and heartbeat are published.
        sync_interval(&str) => "sync_interval";
        /// `stick_refresh`: how often a stick entry's TTL is refreshed.
        stick_refresh(&str) => "stick_refresh";
        /// `secret`: the key signing every value in Redis.
        secret(&str) => "secret";
    }
}
