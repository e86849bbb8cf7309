//! Rules that relate several values of the file (unique names, references to
//! backends that exist, keys that go together), then the validated model.
//!
//! `validate` first checks every rule on the raw types (no I/O), then has
//! `build` make the model, which resolves addresses and reads TLS files.

use std::collections::HashSet;
use std::path::Path;

use toml::Spanned;

use super::address::nameserver;
use super::error::{ConfigError, SourceMap};
use super::model::Config;
use super::raw::{self, Admin, Cluster, Health, Route, Sticky};
use super::types::{Balance, CheckKind, CookieMode, HashMethod, SameSite};
use crate::util::prime::is_prime;

/// The largest weight a server may have (HAProxy allows 256; a little more room costs nothing).
pub const MAX_WEIGHT: u32 = 1000;

/// Checks everything the deserialiser could not check alone and builds the
/// validated model; relative file paths (certificates, keys, CAs) start at `base`.
pub(crate) fn validate(raw: &raw::Config, source: &SourceMap<'_>, base: &Path) -> Result<Config, ConfigError> {
    check(raw, source)?;
    super::build::model(raw, source, base)
}

/// The rules between values, on the raw types.
fn check(config: &raw::Config, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    if let Some(workers) = &config.workers {
        if *workers.get_ref() == 0 || *workers.get_ref() > 1024 {
            return Err(source.error(
                Some(workers.span()),
                "`workers` must be between 1 and 1024 (leave it out for one per core)",
            ));
        }
    }
    if config.frontend.is_empty() {
        return Err(source.error(
            None,
            "there is no [[frontend]]: add one with a `name`, a `bind` address and a `default_backend`",
        ));
    }

    let mut backend_names = HashSet::new();
    for backend in &config.backend {
        if !backend_names.insert(backend.name.get_ref().as_str()) {
            return Err(source.error(
                Some(backend.name.span()),
                format!(
                    "a backend named `{}` is already defined: give each backend its own name",
                    backend.name.get_ref()
                ),
            ));
        }
        validate_backend(backend, source)?;
    }

    let mut frontend_names = HashSet::new();
    for frontend in &config.frontend {
        if !frontend_names.insert(frontend.name.get_ref().as_str()) {
            return Err(source.error(
                Some(frontend.name.span()),
                format!(
                    "a frontend named `{}` is already defined: give each frontend its own name",
                    frontend.name.get_ref()
                ),
            ));
        }
        if frontend.bind.get_ref().is_empty() {
            return Err(source.error(
                Some(frontend.bind.span()),
                "`bind` is empty: list at least one address, like [\"0.0.0.0:8080\"]",
            ));
        }
        let head = &frontend.limits.max_request_head;
        if !(8192..=1 << 20).contains(head.get_ref()) {
            return Err(source.error(
                Some(head.span()),
                "`max_request_head` must be between 8192 and 1048576 bytes (default 32768)",
            ));
        }
        let headers = &frontend.limits.max_headers;
        if !(1..=1000).contains(headers.get_ref()) {
            return Err(source.error(
                Some(headers.span()),
                "`max_headers` must be between 1 and 1000 (default 100)",
            ));
        }
        let streams = &frontend.limits.http2_max_concurrent_streams;
        if !(1..=10_000).contains(streams.get_ref()) {
            return Err(source.error(
                Some(streams.span()),
                "`http2_max_concurrent_streams` must be between 1 and 10000 (default 100)",
            ));
        }
        let header_list = &frontend.limits.http2_max_header_list_size;
        if !(1024..=1 << 20).contains(header_list.get_ref()) {
            return Err(source.error(
                Some(header_list.span()),
                "`http2_max_header_list_size` must be between 1024 and 1048576 bytes (default 32768)",
            ));
        }
        if let Some(maxconn) = frontend.maxconn.as_ref().filter(|m| *m.get_ref() == 0) {
            return Err(source.error(
                Some(maxconn.span()),
                "`maxconn` = 0 would accept nothing: give at least 1, or leave it out for no cap",
            ));
        }
        if let Some(prefix) = frontend
            .per_ip
            .ipv6_prefix
            .as_ref()
            .filter(|p| !(1..=128).contains(p.get_ref()))
        {
            return Err(source.error(
                Some(prefix.span()),
                "`per_ip.ipv6_prefix` must be a prefix length from 1 to 128 (64 counts each /64 as one client)",
            ));
        }
        if let Some(max) = frontend.per_ip.max_connections.as_ref().filter(|m| *m.get_ref() == 0) {
            return Err(source.error(
                Some(max.span()),
                "`per_ip.max_connections` = 0 would refuse everyone: give at least 1, or leave it out for no cap",
            ));
        }
        validate_lifetime(&frontend.websocket, source)?;
        if *frontend.proxy_protocol.get_ref() && frontend.trusted_proxies.is_empty() {
            return Err(source.error(
                Some(frontend.proxy_protocol.span()),
                "`proxy_protocol` is only accepted from trusted peers: list them in `trusted_proxies = [\"10.0.0.0/8\"]`",
            ));
        }
        if let Some(default) = &frontend.default_backend {
            check_backend_exists(default, &backend_names, source)?;
        }
        for route in &frontend.route {
            validate_route(route, &backend_names, source)?;
        }
    }
    if let Some(admin) = &config.admin {
        validate_admin(admin, source)?;
    }
    if let Some(cluster) = &config.cluster {
        validate_cluster(cluster.get_ref(), source)?;
    }
    if let Some(resolver) = &config.resolver {
        validate_resolver(resolver.get_ref(), source)?;
    }
    if let Some(state_file) = &config.state_file {
        validate_state_file(state_file, config.cluster.is_some(), source)?;
    }
    if let Some(tracing) = &config.tracing {
        validate_tracing(tracing.get_ref(), source)?;
    }
    validate_log(&config.log, source)
}

/// `[tracing]`: an http(s) collector URL, a ratio within 0..=1, a service
/// name, a batch delay within reason.
fn validate_tracing(tracing: &raw::Tracing, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    super::build::otlp_traces_url(tracing.otlp.get_ref())
        .map_err(|message| source.error(Some(tracing.otlp.span()), message))?;
    let ratio = *tracing.sample_ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        return Err(source.error(
            Some(tracing.sample_ratio.span()),
            "`sample_ratio` must be between 0.0 (no new trace sampled) and 1.0 (every one, the default)",
        ));
    }
    if tracing.service_name.get_ref().trim().is_empty() {
        return Err(source.error(
            Some(tracing.service_name.span()),
            "`service_name` is empty: name the service the spans come from (default \"tether\")",
        ));
    }
    let delay = tracing.batch_delay.get_ref().get();
    if delay < std::time::Duration::from_millis(10) || delay > std::time::Duration::from_secs(60) {
        return Err(source.error(
            Some(tracing.batch_delay.span()),
            "`batch_delay` must be between 10ms and 60s (default \"5s\")",
        ));
    }
    Ok(())
}

/// `websocket.max_lifetime` and `websocket.lifetime_jitter`: a lifetime is
/// more than zero, and its jitter goes with one and is not longer than it.
fn validate_lifetime(ws: &raw::WebSocketLimits, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    if let Some(max) = ws.max_lifetime.as_ref().filter(|m| m.get_ref().get().is_zero()) {
        return Err(source.error(
            Some(max.span()),
            "`websocket.max_lifetime` = 0 would close every tunnel at once: give a duration like \"30m\", or leave it out for no limit",
        ));
    }
    match (&ws.max_lifetime, &ws.lifetime_jitter) {
        (None, Some(jitter)) => Err(source.error(
            Some(jitter.span()),
            "`websocket.lifetime_jitter` needs `websocket.max_lifetime`: add max_lifetime = \"30m\", or remove the jitter",
        )),
        (Some(max), Some(jitter)) if jitter.get_ref() > max.get_ref() => Err(source.error(
            Some(jitter.span()),
            "`websocket.lifetime_jitter` is longer than `max_lifetime`: each tunnel's limit is drawn from [max_lifetime - lifetime_jitter, max_lifetime], so give a jitter of at most max_lifetime (like \"5m\" for \"30m\")",
        )),
        _ => Ok(()),
    }
}

/// `state_file`: a file name, and only without `[cluster]` (whose state lives in Redis).
fn validate_state_file(state_file: &Spanned<String>, cluster: bool, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let path = state_file.get_ref();
    if path.trim().is_empty() || path.ends_with('/') {
        return Err(source.error(
            Some(state_file.span()),
            "`state_file` names a file, like \"/var/lib/tether/state.json\"",
        ));
    }
    if cluster {
        return Err(source.error(
            Some(state_file.span()),
            "`state_file` keeps state without a cluster; with [cluster] the servers added through the API \
             and the operator states live in Redis: remove `state_file` or [cluster]",
        ));
    }
    Ok(())
}

/// `[log]`: each redacted query parameter is a plain name; `log_format` parses.
fn validate_log(log: &raw::Log, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    for name in &log.redact_query {
        let text = name.get_ref();
        if text.is_empty() || text.contains(['&', '=', '#', ' ']) {
            return Err(source.error(
                Some(name.span()),
                "a `redact_query` entry is a query parameter's name, like \"sid\" (not empty, without `&`, `=`, `#` or spaces)",
            ));
        }
    }
    if let Some(format) = &log.log_format {
        super::access_log::format(format, source)?;
    }
    Ok(())
}

// --- rebalancing ---

/// `rebalance = { max_skew, rate, settle }`: a skew that can trigger, a rate
/// of whole seconds or minutes, a settle time a deploy fits in.
fn validate_rebalance(rebalance: &raw::Rebalance, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let skew = *rebalance.max_skew.get_ref();
    if !skew.is_finite() || skew <= 1.0 || skew > 100.0 {
        return Err(source.error(
            Some(rebalance.max_skew.span()),
            "`max_skew` must be above 1.0 (a server may hold that many times the mean, e.g. 1.2) and at most 100",
        ));
    }
    let rate = rebalance.rate.get_ref();
    if rate.per > std::time::Duration::from_secs(60) {
        return Err(source.error(
            Some(rebalance.rate.span()),
            "`rate` is per second or per minute: write it as \"5/s\" or \"60/m\"",
        ));
    }
    if rebalance.settle.get_ref().get() > std::time::Duration::from_secs(24 * 3600) {
        return Err(source.error(
            Some(rebalance.settle.span()),
            "`settle` must be at most 24h (e.g. \"10s\": the time a scale-out or a rolling deploy takes to finish)",
        ));
    }
    Ok(())
}

// --- DNS discovery ---

fn validate_resolver(resolver: &raw::Resolver, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    if resolver.nameservers.get_ref().is_empty() {
        return Err(source.error(
            Some(resolver.nameservers.span()),
            "`nameservers` is empty: list at least one, like [\"10.0.0.2:53\"], or remove [resolver] to use /etc/resolv.conf",
        ));
    }
    for server in resolver.nameservers.get_ref() {
        nameserver(server.get_ref()).map_err(|message| source.error(Some(server.span()), message))?;
    }
    let timeout = resolver.timeout.get_ref().get();
    if timeout < std::time::Duration::from_millis(10) || timeout > std::time::Duration::from_secs(60) {
        return Err(source.error(
            Some(resolver.timeout.span()),
            "`timeout` must be between 10ms and 60s (default \"2s\")",
        ));
    }
    Ok(())
}

/// `discover`, `server_defaults` and `resolve_interval` of `backend`.
fn validate_discovery(backend: &raw::Backend, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let least = std::time::Duration::from_millis(100);
    if let Some(discover) = &backend.discover {
        let d = discover.get_ref();
        match (&d.dns, &d.srv) {
            (Some(_), Some(srv)) => {
                return Err(source.error(
                    Some(srv.span()),
                    "`discover` takes `dns` (A/AAAA records, with `port`) or `srv` (SRV records), not both",
                ))
            }
            (None, None) => {
                return Err(source.error(
                    Some(discover.span()),
                    "`discover` needs `dns = \"name\"` with `port = 8200`, or `srv = \"_service._tcp.name\"`",
                ))
            }
            (Some(dns), None) if d.port.is_none() => return Err(source.error(
                Some(dns.span()),
                "`discover = { dns = … }` needs a `port`: A/AAAA records carry none (or use `srv`, whose records do)",
            )),
            (None, Some(_)) if d.port.is_some() => {
                let port = d.port.as_ref().map(|p| p.span());
                return Err(source.error(
                    port,
                    "`port` does not apply to `srv`: each SRV record carries its own port; remove `port`",
                ));
            }
            _ => {}
        }
        for name in [&d.dns, &d.srv].into_iter().flatten() {
            if name.get_ref().trim().is_empty() || name.get_ref().contains(char::is_whitespace) {
                return Err(source.error(
                    Some(name.span()),
                    "the name to look up must be a DNS name without spaces",
                ));
            }
        }
        if let Some(port) = d.port.as_ref().filter(|p| *p.get_ref() == 0) {
            return Err(source.error(Some(port.span()), "`port` must be between 1 and 65535"));
        }
        if d.interval.get_ref().get() < least {
            return Err(source.error(
                Some(d.interval.span()),
                "`interval` must be at least 100ms (default \"5s\")",
            ));
        }
        if let Some(tls) = &backend.tls {
            return Err(source.error(
                Some(tls.span()),
                "`tls` toward discovered servers is not supported yet: remove `tls` or `discover`",
            ));
        }
    }
    if let Some(defaults) = &backend.server_defaults {
        let d = defaults.get_ref();
        if backend.discover.is_none() {
            return Err(source.error(
                Some(defaults.span()),
                "`server_defaults` applies to discovered servers: add `discover = { … }` or remove it",
            ));
        }
        if *d.weight.get_ref() > MAX_WEIGHT {
            return Err(source.error(
                Some(d.weight.span()),
                format!("weight must be between 0 and {MAX_WEIGHT}"),
            ));
        }
        if let Some(maxconn) = d.maxconn.as_ref().filter(|m| *m.get_ref() == 0) {
            return Err(source.error(
                Some(maxconn.span()),
                "maxconn must be at least 1 (use weight = 0 to send servers no new traffic)",
            ));
        }
    }
    if let Some(interval) = &backend.resolve_interval {
        if interval.get_ref().get() < least {
            return Err(source.error(
                Some(interval.span()),
                "`resolve_interval` must be at least 100ms (leave it out to resolve names once, at load)",
            ));
        }
        for server in &backend.server {
            if matches!(server.address.get_ref(), super::address::Address::Name { .. }) {
                if let Some(tls) = server.tls.as_ref().or(backend.tls.as_ref()) {
                    return Err(source.error(
                        Some(tls.span()),
                        "`tls` toward a server re-resolved by `resolve_interval` is not supported yet: \
                         write its IP address, or remove `resolve_interval`",
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_cluster(cluster: &Cluster, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let url = cluster.redis.get_ref();
    let sentinel = super::sentinel_url::parse_sentinel_url(url);
    if let Some(Err(what)) = &sentinel {
        return Err(source.error(
            Some(cluster.redis.span()),
            format!("`redis` is not a usable sentinel URL: {what}"),
        ));
    }
    if sentinel.is_none() && !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(source.error(
            Some(cluster.redis.span()),
            format!("`redis = \"{url}\"` must be a redis://, rediss:// or redis+sentinel:// URL, like \"redis://127.0.0.1:6379\" or \"redis+sentinel://h1:26379,h2:26379/mymaster\""),
        ));
    }
    if sentinel.is_some() {
        if let Some(ca) = &cluster.tls_ca_file {
            return Err(source.error(
                Some(ca.span()),
                "`tls_ca_file` does not apply to redis+sentinel:// (TLS through sentinels is not supported): remove it or connect to Redis directly with \"rediss://host:port\"",
            ));
        }
    } else if let Err(err) = redis::Client::open(url.as_str()) {
        return Err(source.error(
            Some(cluster.redis.span()),
            format!("`redis` is not a usable Redis URL ({err}): write it as \"redis://[:password@]host:port[/db]\""),
        ));
    }
    if let Some(ca) = &cluster.tls_ca_file {
        if !url.starts_with("rediss://") {
            return Err(source.error(
                Some(ca.span()),
                "`tls_ca_file` only applies to TLS: write the URL as \"rediss://host:port\" or remove `tls_ca_file`",
            ));
        }
        let readable = std::fs::read(ca.get_ref())
            .is_ok_and(|pem| String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"));
        if !readable {
            return Err(source.error(
                Some(ca.span()),
                format!(
                    "`tls_ca_file` {} cannot be read as a PEM certificate: give the CA's certificate file",
                    ca.get_ref().display()
                ),
            ));
        }
    }
    if let Some(instance) = &cluster.instance {
        let name = instance.get_ref();
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(source.error(
                Some(instance.span()),
                "`instance` must be a non-empty name without spaces, at most 200 bytes (default: host name and port)",
            ));
        }
    }
    let timeout = cluster.timeout.get_ref().get();
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(5) {
        return Err(source.error(
            Some(cluster.timeout.span()),
            "`timeout` must be between 1ms and 5s (default \"50ms\"): it bounds every Redis call a request may wait for",
        ));
    }
    let sync = cluster.sync_interval.get_ref().get();
    if sync < std::time::Duration::from_millis(100) || sync > std::time::Duration::from_secs(60) {
        return Err(source.error(
            Some(cluster.sync_interval.span()),
            "`sync_interval` must be between 100ms and 60s (default \"1s\")",
        ));
    }
    if let Some(secret) = &cluster.secret {
        if secret.get_ref().len() < 16 {
            return Err(source.error(
                Some(secret.span()),
                "`secret` must be at least 16 bytes (the same on every instance), e.g. the output of `openssl rand -hex 32`",
            ));
        }
    }
    Ok(())
}

fn validate_admin(admin: &Spanned<Admin>, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    // Whether the bind address is loopback is checked once it is resolved (`build`).
    let settings = admin.get_ref();
    for host in &settings.hosts {
        let name = host.get_ref();
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !is_ip && !name_ok {
            return Err(source.error(
                Some(host.span()),
                format!(
                    "`{name}` is not a host name or IP address: list the names the admin listener is reached by, \
                     without scheme or port, like hosts = [\"lb1.example.net\"]"
                ),
            ));
        }
    }
    let mut names = HashSet::new();
    for user in &settings.users {
        let user = user.get_ref();
        let name = user.name.get_ref();
        if name.is_empty() || name.contains(':') {
            return Err(source.error(
                Some(user.name.span()),
                "an admin user name must not be empty nor contain `:` (HTTP Basic separates name and password with it)",
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(source.error(
                Some(user.name.span()),
                format!("an admin user named `{name}` is already defined: give each user their own name"),
            ));
        }
        let hash = user.password_hash.get_ref();
        let parsed = argon2::PasswordHash::new(hash);
        let is_argon2 = parsed
            .as_ref()
            .is_ok_and(|h| ["argon2id", "argon2i", "argon2d"].contains(&h.algorithm.as_str()));
        if !is_argon2 {
            return Err(source.error(
                Some(user.password_hash.span()),
                format!(
                    "the password hash of `{name}` is not an argon2 hash in PHC form (`$argon2id$v=19$m=...`): \
                     run `tether hash-password` and paste what it prints"
                ),
            ));
        }
    }
    Ok(())
}

fn check_backend_exists(
    name: &Spanned<String>,
    backends: &HashSet<&str>,
    source: &SourceMap<'_>,
) -> Result<(), ConfigError> {
    if backends.contains(name.get_ref().as_str()) {
        return Ok(());
    }
    let mut known: Vec<_> = backends.iter().copied().collect();
    known.sort_unstable();
    Err(source.error(
        Some(name.span()),
        format!(
            "there is no backend named `{}`: define it with [[backend]] or use one of: {}",
            name.get_ref(),
            if known.is_empty() {
                "(none defined)".to_string()
            } else {
                known.join(", ")
            }
        ),
    ))
}

fn validate_route(route: &Route, backends: &HashSet<&str>, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    check_backend_exists(&route.backend, backends, source)?;
    if route.any.is_empty() && route.all.is_empty() {
        return Err(source.error(
            Some(route.backend.span()),
            "this route has no conditions: add `any = [...]` or `all = [...]`, or use `default_backend` for a catch-all",
        ));
    }
    Ok(())
}

/// `health.send_proxy` needs a `send_proxy` version on the backend or one of its servers.
fn validate_health_proxy(backend: &raw::Backend, health: &Health, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let some_version = backend
        .send_proxy
        .iter()
        .chain(backend.server.iter().filter_map(|s| s.send_proxy.as_ref()))
        .any(|p| p.get_ref().version().is_some());
    if *health.send_proxy.get_ref() && !some_version {
        return Err(source.error(
            Some(health.send_proxy.span()),
            "`health.send_proxy` sends the PROXY header of the servers' `send_proxy` version, and no server has one: \
             add send_proxy = \"v1\" or \"v2\" to the backend, or remove `health.send_proxy`",
        ));
    }
    Ok(())
}

fn validate_backend(backend: &raw::Backend, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let balance = *backend.balance.get_ref();
    let needs_key = matches!(balance, Balance::UrlParam | Balance::Header | Balance::Cookie);
    match (&backend.hash_key, needs_key) {
        (None, true) => {
            return Err(source.error(
                Some(backend.balance.span()).filter(|s| !s.is_empty()).or(Some(backend.name.span())),
                "this balance hashes a named value: add `hash_key = \"…\"` with the parameter, header or cookie name",
            ))
        }
        (Some(key), false) => {
            return Err(source.error(
                Some(key.span()),
                "`hash_key` is only used with balance = \"url_param\", \"header\" or \"cookie\": remove it or change `balance`",
            ))
        }
        (Some(key), true) if key.get_ref().is_empty() => {
            return Err(source.error(Some(key.span()), "`hash_key` is empty: name the parameter, header or cookie"))
        }
        _ => {}
    }
    validate_hashing(backend, source)?;
    if let Some(sticky) = &backend.sticky {
        validate_sticky(sticky, source)?;
    }
    if let Some(health) = &backend.health {
        validate_health(health, source)?;
        validate_health_proxy(backend, health.get_ref(), source)?;
    }
    validate_discovery(backend, source)?;
    if let Some(rebalance) = &backend.rebalance {
        validate_rebalance(rebalance.get_ref(), source)?;
    }
    if backend.server.is_empty() && backend.discover.is_none() {
        return Err(source.error(
            Some(backend.name.span()),
            format!(
                "backend `{}` has no servers: add a [[backend.server]] with a name and an address, \
                 or `discover = {{ dns = \"name\", port = 8200 }}`",
                backend.name.get_ref()
            ),
        ));
    }
    let mut names = HashSet::new();
    let mut cookies = HashSet::new();
    for server in &backend.server {
        if !names.insert(server.name.get_ref().as_str()) {
            return Err(source.error(
                Some(server.name.span()),
                format!(
                    "backend `{}` already has a server named `{}`",
                    backend.name.get_ref(),
                    server.name.get_ref()
                ),
            ));
        }
        if let Some(cookie) = &server.cookie {
            if !cookies.insert(cookie.as_str()) {
                return Err(source.error(
                    Some(server.name.span()),
                    format!(
                        "cookie id `{cookie}` is used by two servers of backend `{}`: make them unique",
                        backend.name.get_ref()
                    ),
                ));
            }
        }
        if *server.weight.get_ref() > MAX_WEIGHT {
            return Err(source.error(
                Some(server.weight.span()),
                format!("weight must be between 0 and {MAX_WEIGHT}"),
            ));
        }
        if let Some(maxconn) = &server.maxconn {
            if *maxconn.get_ref() == 0 {
                return Err(source.error(
                    Some(maxconn.span()),
                    "maxconn must be at least 1 (use weight = 0 to send a server no new traffic)",
                ));
            }
        }
    }
    Ok(())
}

fn validate_hashing(backend: &raw::Backend, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let balance = *backend.balance.get_ref();
    let hashing = matches!(
        balance,
        Balance::Source | Balance::Uri | Balance::UrlParam | Balance::Header | Balance::Cookie
    );
    let method = *backend.hash.get_ref();
    if method != HashMethod::Map && !hashing {
        return Err(source.error(
            Some(backend.hash.span()),
            "`hash` applies to hashing balances only (source, uri, url_param, header, cookie)",
        ));
    }
    if let Some(factor) = &backend.balance_factor {
        if method == HashMethod::Map {
            return Err(source.error(
                Some(factor.span()),
                "`balance_factor` bounds consistent hashing: add hash = \"consistent\" or \"maglev\"",
            ));
        }
        if !(*factor.get_ref() >= 1.0 && factor.get_ref().is_finite()) {
            return Err(source.error(
                Some(factor.span()),
                "`balance_factor` must be at least 1.0 (1.25 lets a server take 125% of the average load)",
            ));
        }
    }
    let margin = &backend.sticky_maxconn_margin;
    if *margin.get_ref() > 1000 {
        return Err(source.error(
            Some(margin.span()),
            "`sticky_maxconn_margin` is a percent of `maxconn`, at most 1000 (10 lets stuck clients take 110% of maxconn)",
        ));
    }
    if let Some(size) = &backend.maglev_table_size {
        if method != HashMethod::Maglev {
            return Err(source.error(Some(size.span()), "`maglev_table_size` needs hash = \"maglev\""));
        }
        let n = *size.get_ref();
        if !(is_prime(n) && (backend.server.len()..=1_000_003).contains(&n)) {
            return Err(source.error(
                Some(size.span()),
                "`maglev_table_size` must be a prime larger than the number of servers, at most 1000003 (default 65537)",
            ));
        }
    }
    Ok(())
}

fn validate_sticky(sticky: &Spanned<Sticky>, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let at = Some(sticky.span());
    let s = sticky.get_ref();
    let learns = s.learn.is_some() || s.preset.is_some();
    if s.cookie.is_none() && !learns && s.match_.is_empty() {
        return Err(source.error(
            at,
            "`sticky` needs a `cookie = \"SERVERID\"`, a `learn` with `match`, or `preset = \"engine.io\"`",
        ));
    }
    if let Some(cookie) = &s.cookie {
        if cookie.is_empty() || http::HeaderName::from_bytes(cookie.as_bytes()).is_err() {
            return Err(source.error(at, format!("`{cookie}` is not a valid cookie name")));
        }
    }
    if s.opaque {
        if s.mode != CookieMode::Insert || s.cookie.is_none() {
            return Err(source.error(
                at,
                "`opaque` applies to an inserted cookie: set `cookie` and mode = \"insert\"",
            ));
        }
        if s.secret.as_ref().is_none_or(|secret| secret.len() < 16) {
            return Err(source.error(
                at,
                "`opaque = true` needs a `secret` of at least 16 characters, the same on every tether instance",
            ));
        }
    } else if s.secret.is_some() {
        return Err(source.error(at, "`secret` is only used with `opaque = true`"));
    }
    if s.samesite == Some(SameSite::None) && s.secure == Some(false) {
        return Err(source.error(
            at,
            "browsers refuse `SameSite=None` without `Secure`: remove `secure = false`",
        ));
    }
    if s.learn.is_some() && s.match_.is_empty() {
        return Err(source.error(
            at,
            "`learn` needs `match = [...]` saying where requests carry the id, e.g. [{ cookie = \"io\" }, { url_param = \"sid\" }]",
        ));
    }
    if let Some(learn) = &s.learn {
        if learn.response_cookie.is_none() && learn.response_header.is_none() {
            return Err(source.error(at, "`learn` needs `response_cookie` or `response_header`"));
        }
    }
    if *s.max_entries.get_ref() == 0 {
        return Err(source.error(Some(s.max_entries.span()), "`max_entries` must be at least 1"));
    }
    Ok(())
}

/// The shortest `interval` between health checks.
pub const MIN_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// The largest `rise` or `fall`.
pub const MAX_RISE_FALL: u32 = 1000;
/// The longest `expect_body`: it must fit in what a check reads of a body.
pub const MAX_EXPECT_BODY: usize = 1024;

fn validate_health(health: &Spanned<Health>, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let h = health.get_ref();
    // Defaults carry an empty span: point at the whole `health` table then.
    let at = |span: std::ops::Range<usize>| Some(if span.is_empty() { health.span() } else { span });
    let Some(check) = &h.check else {
        let message = if *h.observe.get_ref() {
            "`observe = true` needs an active check too, since only a check can bring a server back: \
             add check = \"tcp\", \"http\" or \"websocket\""
        } else {
            "`health` needs `check = \"tcp\"`, `\"http\"` or `\"websocket\"`"
        };
        return Err(source.error(Some(health.span()), message));
    };
    let kind = *check.get_ref();
    let refuse = |key: &str, span: std::ops::Range<usize>, why: &str| {
        Err(source.error(Some(span), format!("`{key}` does not apply to a {why}: remove it")))
    };
    match kind {
        CheckKind::Tcp => {
            let why = "TCP check (it only connects); use check = \"http\" to send a request";
            if let Some(v) = &h.path {
                return refuse("path", v.span(), why);
            }
            if let Some(v) = &h.method {
                return refuse("method", v.span(), why);
            }
            if let Some(v) = &h.host {
                return refuse("host", v.span(), why);
            }
            if let Some(v) = &h.expect_status {
                return refuse("expect_status", v.span(), why);
            }
            if let Some(v) = &h.expect_body {
                return refuse("expect_body", v.span(), why);
            }
        }
        CheckKind::Websocket => {
            let why = "WebSocket check (it always sends GET and expects 101)";
            if let Some(v) = &h.method {
                return refuse("method", v.span(), why);
            }
            if let Some(v) = &h.expect_status {
                return refuse("expect_status", v.span(), why);
            }
            if let Some(v) = &h.expect_body {
                return refuse("expect_body", v.span(), why);
            }
        }
        CheckKind::Http => {}
    }
    if let Some(path) = &h.path {
        let text = path.get_ref();
        if !text.starts_with('/') || text.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(source.error(
                Some(path.span()),
                format!("`{text}` is not a request path: write it like \"/health\" or \"/ws?probe=1\""),
            ));
        }
    }
    if let Some(method) = &h.method {
        let text = method.get_ref();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_uppercase()) || text == "CONNECT" {
            return Err(source.error(
                Some(method.span()),
                format!("`{text}` is not a method a check can send: write it in capitals, like GET or HEAD"),
            ));
        }
        if text == "HEAD" && h.expect_body.is_some() {
            return Err(source.error(
                Some(method.span()),
                "a HEAD response has no body to search: remove `expect_body` or use method = \"GET\"",
            ));
        }
    }
    if let Some(host) = &h.host {
        let text = host.get_ref();
        if text.is_empty() || text.contains('@') || text.parse::<http::uri::Authority>().is_err() {
            return Err(source.error(
                Some(host.span()),
                format!("`{text}` is not a Host header value: write a name, optionally with a port, like \"app.example.com\""),
            ));
        }
    }
    if let Some(body) = &h.expect_body {
        let len = body.get_ref().len();
        if len == 0 || len > MAX_EXPECT_BODY {
            return Err(source.error(
                Some(body.span()),
                format!(
                    "`expect_body` must be 1 to {MAX_EXPECT_BODY} bytes long (it is searched in the first {} KiB of the body)",
                    super::types::defaults::CHECK_BODY_LIMIT / 1024
                ),
            ));
        }
    }
    let interval = h.interval.get_ref().get();
    if interval < MIN_CHECK_INTERVAL {
        return Err(source.error(
            at(h.interval.span()),
            format!("`interval` must be at least {MIN_CHECK_INTERVAL:?}, like \"2s\""),
        ));
    }
    if let Some(timeout) = &h.timeout {
        let t = timeout.get_ref().get();
        if t.is_zero() {
            return Err(source.error(Some(timeout.span()), "`timeout` must be longer than 0, like \"1s\""));
        }
        if t > interval {
            return Err(source.error(
                Some(timeout.span()),
                format!("`timeout` ({t:?}) is longer than `interval` ({interval:?}): a check must end before the next one starts"),
            ));
        }
    }
    for (key, value) in [("rise", &h.rise), ("fall", &h.fall)] {
        if !(1..=MAX_RISE_FALL).contains(value.get_ref()) {
            return Err(source.error(
                at(value.span()),
                format!("`{key}` must be between 1 and {MAX_RISE_FALL} (consecutive results)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod health_tests {
    use crate::config::{parse, ConfigError};
    use crate::health::{HealthCheck, Probe};
    use std::time::Duration;

    /// A config whose backend has `health = { <health> }` on line 9.
    fn with_health(health: &str) -> String {
        format!(
            "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\n\
             [[backend]]\nname = \"web\"\n\nhealth = {{ {health} }}\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:8200\"\n"
        )
    }

    fn settings(health: &str) -> HealthCheck {
        let config = parse(&with_health(health), "test.toml").unwrap_or_else(|e| panic!("{health}: {e}"));
        HealthCheck::from_config(config.backends[0].health.as_ref().expect("health"))
    }

    fn error_of(health: &str) -> (usize, usize, String) {
        ConfigError::invalid_at(parse(&with_health(health), "test.toml"))
    }

    #[test]
    fn defaults_fill_in_what_is_left_out() {
        let tcp = settings("check = \"tcp\"");
        assert!(matches!(tcp.probe, Probe::Tcp));
        assert_eq!(
            (tcp.interval, tcp.timeout),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
        assert_eq!((tcp.thresholds.rise, tcp.thresholds.fall, tcp.observe), (2, 3, false));
        let Probe::Http(http) = settings("check = \"http\"").probe else {
            panic!("http")
        };
        assert_eq!((http.method.as_str(), http.path.as_str()), ("GET", "/"));
        assert_eq!((http.expect_status.low, http.expect_status.high), (200, 399));
        assert!(http.host.is_none() && http.expect_body.is_none());
        // A short interval shortens the default timeout with it.
        assert_eq!(
            settings("check = \"tcp\", interval = \"300ms\"").timeout,
            Duration::from_millis(300)
        );
    }

    #[test]
    fn every_key_is_read() {
        let http = settings(
            "check = \"http\", path = \"/healthz?full=1\", method = \"HEAD\", host = \"app.example.com\", \
             expect_status = \"200-204\", interval = \"5s\", timeout = \"2s\", rise = 1, fall = 5, observe = true",
        );
        assert_eq!(
            (http.interval, http.timeout),
            (Duration::from_secs(5), Duration::from_secs(2))
        );
        assert_eq!((http.thresholds.rise, http.thresholds.fall, http.observe), (1, 5, true));
        let Probe::Http(probe) = http.probe else { panic!("http") };
        assert_eq!(
            (probe.method.as_str(), probe.path.as_str()),
            ("HEAD", "/healthz?full=1")
        );
        assert_eq!(probe.host.as_deref(), Some("app.example.com"));
        assert!(probe.expect_status.contains(204) && !probe.expect_status.contains(205));
        let Probe::Http(probe) = settings("check = \"http\", expect_status = 200, expect_body = \"ok\"").probe else {
            panic!("http")
        };
        assert!(probe.expect_status.contains(200) && !probe.expect_status.contains(201));
        assert_eq!(probe.expect_body.as_deref(), Some("ok"));
        let ws = settings("check = \"websocket\", path = \"/ws\", host = \"chat.example.com:8080\"").probe;
        assert!(
            matches!(ws, Probe::WebSocket { ref path, ref host } if path == "/ws" && host.as_deref() == Some("chat.example.com:8080"))
        );
    }

    #[test]
    fn keys_that_do_not_apply_to_the_check_kind_are_refused_at_their_column() {
        let (line, column, message) = error_of("check = \"tcp\", expect_body = \"ok\"");
        assert_eq!((line, column), (9, 41), "points at the value");
        assert!(
            message.contains("`expect_body` does not apply to a TCP check"),
            "{message}"
        );
        for key in [
            "path = \"/\"",
            "method = \"GET\"",
            "host = \"x\"",
            "expect_status = \"200\"",
        ] {
            let (_, _, message) = error_of(&format!("check = \"tcp\", {key}"));
            assert!(message.contains("TCP check"), "{key}: {message}");
        }
        for key in ["method = \"POST\"", "expect_status = \"101\"", "expect_body = \"x\""] {
            let (_, _, message) = error_of(&format!("check = \"websocket\", {key}"));
            assert!(message.contains("WebSocket check"), "{key}: {message}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_fix() {
        let cases = [
            ("check = \"http\", rise = 0", "`rise` must be between 1"),
            ("check = \"http\", fall = 0", "`fall` must be between 1"),
            (
                "check = \"tcp\", interval = \"1s\", timeout = \"2s\"",
                "longer than `interval`",
            ),
            ("check = \"tcp\", timeout = \"0ms\"", "longer than 0"),
            ("check = \"tcp\", interval = \"1ms\"", "at least"),
            ("check = \"http\", path = \"health\"", "not a request path"),
            ("check = \"http\", method = \"get\"", "capitals"),
            (
                "check = \"http\", method = \"HEAD\", expect_body = \"x\"",
                "HEAD response has no body",
            ),
            ("check = \"http\", expect_body = \"\"", "`expect_body` must be 1 to"),
            ("check = \"http\", host = \"a b\"", "not a Host header value"),
            ("interval = \"2s\"", "needs `check ="),
            ("observe = true", "only a check can bring a server back"),
        ];
        for (health, expected) in cases {
            let (line, _, message) = error_of(health);
            assert_eq!(line, 9, "{health}");
            assert!(message.contains(expected), "{health}: {message}");
        }
    }

    #[test]
    fn bad_status_ranges_and_kinds_are_reported_by_the_parser() {
        for (range, expected) in [
            ("\"399-200\"", "empty range"),
            ("\"2xx\"", "not a status"),
            ("700", "not a status"),
        ] {
            let (line, _, message) = error_of(&format!("check = \"http\", expect_status = {range}"));
            assert_eq!(line, 9);
            assert!(message.contains(expected), "{range}: {message}");
        }
        let (_, _, message) = error_of("check = \"icmp\"");
        assert!(message.contains("unknown variant `icmp`"), "{message}");
        let (_, _, message) = error_of("check = \"tcp\", intervall = \"2s\"");
        assert!(message.contains("intervall"), "{message}");
    }

    /// A config whose backend has `rebalance = { <rebalance> }` on line 7, column 13.
    fn with_rebalance(rebalance: &str) -> String {
        format!(
            "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\n\
             [[backend]]\nrebalance = {{ {rebalance} }}\nname = \"web\"\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:8200\"\n"
        )
    }

    fn rebalance_error(rebalance: &str) -> (usize, usize, String) {
        ConfigError::invalid_at(parse(&with_rebalance(rebalance), "test.toml"))
    }

    #[test]
    fn rebalance_reads_its_keys_and_fills_in_defaults() {
        let config = parse(
            &with_rebalance("max_skew = 1.5, rate = \"30/m\", settle = \"2s\""),
            "t.toml",
        )
        .unwrap();
        let r = config.backends[0].rebalance.expect("rebalance");
        assert_eq!((r.max_skew, r.settle), (1.5, Duration::from_secs(2)));
        assert!((r.rate_per_s() - 0.5).abs() < 1e-9);
        let r = parse(&with_rebalance(""), "t.toml").unwrap().backends[0]
            .rebalance
            .expect("defaults");
        assert_eq!((r.max_skew, r.rate.count, r.settle), (1.2, 5, Duration::from_secs(10)));
        assert!(parse(&with_health("check = \"tcp\""), "t.toml").unwrap().backends[0]
            .rebalance
            .is_none());
    }

    #[test]
    fn bad_rebalance_values_name_their_place_and_the_fix() {
        let (line, column, message) = rebalance_error("max_skew = 1.0");
        assert_eq!((line, column), (7, 26));
        assert!(message.contains("above 1.0"), "{message}");
        let (line, column, message) = rebalance_error("rate = \"5/h\"");
        assert_eq!((line, column), (7, 22));
        assert!(message.contains("per second or per minute"), "{message}");
        let (_, _, message) = rebalance_error("rate = \"fast\"");
        assert!(message.contains("not a rate"), "{message}");
        let (_, _, message) = rebalance_error("settle = \"soon\"");
        assert!(message.contains("soon"), "{message}");
        let (_, _, message) = rebalance_error("max_skew = 1.2, burst = 3");
        assert!(message.contains("burst"), "{message}");
    }
}

#[cfg(test)]
mod tracing_tests {
    use crate::config::{parse, ConfigError};
    use std::time::Duration;

    const BASE: &str = "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\n\
                        [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:8200\"\n";

    fn with_tracing(tracing: &str) -> String {
        format!("{BASE}\n[tracing]\n{tracing}\n")
    }

    #[test]
    fn tracing_posts_to_the_collectors_v1_traces_with_defaults_filled_in() {
        let config = parse(&with_tracing("otlp = \"http://collector:4318/\""), "test.toml").unwrap();
        let tracing = config.tracing.expect("[tracing]");
        assert_eq!(tracing.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(tracing.sample_ratio, 1.0);
        assert_eq!(tracing.service_name, "tether");
        assert_eq!(tracing.batch_delay, Duration::from_secs(5));
        let config = parse(
            &with_tracing("otlp = \"https://otel.example/base\"\nsample_ratio = 0.25\nservice_name = \"lb\""),
            "test.toml",
        )
        .unwrap();
        let tracing = config.tracing.expect("[tracing]");
        assert_eq!(tracing.traces_url, "https://otel.example/base/v1/traces");
        assert_eq!((tracing.sample_ratio, tracing.service_name.as_str()), (0.25, "lb"));
        assert!(parse(BASE, "test.toml").unwrap().tracing.is_none());
    }

    #[test]
    fn bad_tracing_values_name_their_place_and_the_fix() {
        let text = with_tracing("otlp = \"collector:4318\"");
        let line = text.lines().position(|l| l.starts_with("otlp")).unwrap() + 1;
        let (at, column, message) = ConfigError::invalid_at(parse(&text, "test.toml"));
        assert_eq!((at, column), (line, 8));
        assert!(message.contains("http:// or https://"), "{message}");
        let (_, _, message) = ConfigError::invalid_at(parse(
            &with_tracing("otlp = \"http://c:4318\"\nsample_ratio = 1.5"),
            "test.toml",
        ));
        assert!(message.contains("`sample_ratio` must be between 0.0"), "{message}");
        let (_, _, message) = ConfigError::invalid_at(parse(
            &with_tracing("otlp = \"http://c:4318\"\nservice_name = \" \""),
            "test.toml",
        ));
        assert!(message.contains("`service_name` is empty"), "{message}");
        let (_, _, message) = ConfigError::invalid_at(parse(
            &with_tracing("otlp = \"http://c:4318\"\nbatch_delay = \"2m\""),
            "test.toml",
        ));
        assert!(message.contains("`batch_delay` must be between"), "{message}");
        let (_, _, message) =
            ConfigError::invalid_at(parse(&with_tracing("otlp = \"http://c:4318/?x=1\""), "test.toml"));
        assert!(message.contains("no query"), "{message}");
    }
}
