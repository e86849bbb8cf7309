//! The validated model made from raw types whose rules passed: defaults
//! filled in, backend names turned into indexes, addresses resolved
//! (`resolve`), TLS files read (`tls`).

use std::path::Path;

use super::address::Address;
use super::error::{ConfigError, SourceMap};
use super::header_rules::{self, Side as HeaderSide};
use super::model::{
    Admin, AdminUser, BackendId, Check, Cluster, Config, Discover, Frontend, Hashing, Health, HttpCheck, HttpsRedirect,
    Limits, Log, NamedServer, PerIp, Resolver, Route, Server, ServerDefaults, Sticky, StickyCookie, Tracing, WebSocket,
};
use super::raw;
use super::resolve::located;
use super::tls;
use super::types::{defaults, CheckKind, HashMethod, MatchSource, Preset, ServerSource};

/// The model of `raw`, which passed `validate`'s rules.
pub(super) fn model(raw: &raw::Config, source: &SourceMap<'_>, base: &Path) -> Result<Config, ConfigError> {
    let frontends = raw
        .frontend
        .iter()
        .map(|f| frontend(f, raw, source, base))
        .collect::<Result<_, _>>()?;
    let backends = raw
        .backend
        .iter()
        .map(|b| backend(b, source, base))
        .collect::<Result<_, _>>()?;
    let admin = raw.admin.as_ref().map(|a| admin(a, source, base)).transpose()?;
    let state_file = raw
        .state_file
        .as_ref()
        .map(|f| state_file(f, source, base))
        .transpose()?;
    Ok(Config {
        workers: raw.workers.as_ref().map(|w| *w.get_ref()),
        shutdown_grace: raw.shutdown_grace.get(),
        frontends,
        backends,
        admin,
        cluster: raw.cluster.as_ref().map(|c| cluster(c.get_ref())),
        resolver: raw.resolver.as_ref().map(|r| resolver(r.get_ref())),
        log: Log {
            redact_query: raw.log.redact_query.iter().map(|p| p.get_ref().clone()).collect(),
            access: raw
                .log
                .access
                .as_ref()
                .map(|a| super::access_log::destination(a, source, base))
                .transpose()?,
            format: raw
                .log
                .log_format
                .as_ref()
                .map(|f| super::access_log::format(f, source))
                .transpose()?,
        },
        state_file,
        tracing: raw.tracing.as_ref().and_then(|t| tracing(t.get_ref())),
        tunnel_engine: raw.tunnel.engine,
    })
}

/// `[tracing]`, whose rules passed (`otlp` is an http(s) URL).
fn tracing(t: &raw::Tracing) -> Option<Tracing> {
    Some(Tracing {
        traces_url: otlp_traces_url(t.otlp.get_ref()).ok()?,
        sample_ratio: *t.sample_ratio.get_ref(),
        service_name: t.service_name.get_ref().clone(),
        batch_delay: t.batch_delay.get_ref().get(),
    })
}

/// The OTLP/HTTP traces URL of a collector's base URL `otlp`
/// (`http://collector:4318` → `http://collector:4318/v1/traces`), or what
/// to fix in it.
pub(super) fn otlp_traces_url(otlp: &str) -> Result<http::Uri, String> {
    let example = "like \"http://collector:4318\" (tether posts to its /v1/traces)";
    let uri: http::Uri = otlp
        .parse()
        .map_err(|err| format!("`otlp = \"{otlp}\"` is not a URL ({err}): write it {example}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "`otlp = \"{otlp}\"` must be an http:// or https:// URL with a host, {example}"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("`otlp = \"{otlp}\"` must have no query: write it {example}"));
    }
    let base = otlp.trim_end_matches('/');
    format!("{base}/v1/traces")
        .parse()
        .map_err(|err| format!("`otlp = \"{otlp}\"` is not a URL ({err}): write it {example}"))
}

/// `state_file`, relative to the configuration's folder; its folder must exist
/// (tether creates the file there, not the folder).
fn state_file(
    file: &toml::Spanned<String>,
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<std::path::PathBuf, ConfigError> {
    let path = base.join(file.get_ref());
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !folder.is_dir() {
        return Err(source.error(
            Some(file.span()),
            format!(
                "the folder of `state_file` ({}) does not exist: create it (tether writes the file there)",
                folder.display()
            ),
        ));
    }
    if path.is_dir() {
        return Err(source.error(
            Some(file.span()),
            format!(
                "`state_file` {} is a folder: name a file in it, like state.json",
                path.display()
            ),
        ));
    }
    Ok(path)
}

// --- DNS discovery ---

/// `[resolver]`: its nameservers (checked by the rules) with port 53 unless given.
fn resolver(r: &raw::Resolver) -> Resolver {
    Resolver {
        nameservers: r
            .nameservers
            .get_ref()
            .iter()
            .filter_map(|n| super::address::nameserver(n.get_ref()).ok())
            .collect(),
        timeout: r.timeout.get_ref().get(),
    }
}

/// `discover`, which the rules checked names exactly one of `dns` (with a port) or `srv`.
fn discover(d: &raw::Discover) -> Option<Discover> {
    let interval = d.interval.get_ref().get();
    match (&d.dns, &d.srv, &d.port) {
        (Some(name), None, Some(port)) => Some(Discover::Dns {
            name: name.get_ref().clone(),
            port: *port.get_ref(),
            interval,
        }),
        (None, Some(name), None) => Some(Discover::Srv {
            name: name.get_ref().clone(),
            interval,
        }),
        _ => None,
    }
}

/// `server_defaults` (weight 1, no `maxconn` when absent).
fn server_defaults(d: Option<&raw::ServerDefaults>) -> ServerDefaults {
    ServerDefaults {
        weight: d.map_or(1, |d| *d.weight.get_ref()),
        maxconn: d.and_then(|d| d.maxconn.as_ref().map(|m| *m.get_ref())),
    }
}

/// A written server named by host, with `resolve_interval`: looked up by the resolver, not here.
fn named_server(s: &raw::Server, b: &raw::Backend) -> Option<NamedServer> {
    match s.address.get_ref() {
        Address::Name { host, port } => Some(NamedServer {
            name: s.name.get_ref().clone(),
            host: host.clone(),
            port: *port,
            weight: *s.weight.get_ref(),
            maxconn: s.maxconn.as_ref().map(|m| *m.get_ref()),
            cookie: s.cookie.clone(),
            state: s.state,
            send_proxy: send_proxy(s, b),
        }),
        Address::Socket(_) => None,
    }
}

/// The PROXY header toward `s`: its own `send_proxy`, else its backend's.
fn send_proxy(s: &raw::Server, b: &raw::Backend) -> Option<crate::proxy_header::ProxyVersion> {
    s.send_proxy
        .as_ref()
        .or(b.send_proxy.as_ref())
        .and_then(|p| p.get_ref().version())
}

/// The index of the backend `name`, which the rules checked exists.
fn backend_id(
    raw: &raw::Config,
    name: &toml::Spanned<String>,
    source: &SourceMap<'_>,
) -> Result<BackendId, ConfigError> {
    raw.backend
        .iter()
        .position(|b| b.name.get_ref() == name.get_ref())
        .ok_or_else(|| {
            source.error(
                Some(name.span()),
                format!("there is no backend named `{}`", name.get_ref()),
            )
        })
}

fn frontend(
    f: &raw::Frontend,
    raw: &raw::Config,
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<Frontend, ConfigError> {
    let binds = f
        .bind
        .get_ref()
        .iter()
        .map(|a| located(a, source))
        .collect::<Result<_, _>>()?;
    let routes = f
        .route
        .iter()
        .map(|r| {
            Ok(Route {
                backend: backend_id(raw, &r.backend, source)?,
                any: r.any.iter().map(|c| c.get_ref().clone()).collect(),
                all: r.all.iter().map(|c| c.get_ref().clone()).collect(),
                allowed_origins: r.allowed_origins.clone(),
                request_headers: header_rules::compile(&r.request_headers, HeaderSide::Request, source)?,
                response_headers: header_rules::compile(&r.response_headers, HeaderSide::Response, source)?,
            })
        })
        .collect::<Result<_, _>>()?;
    let default_backend = f
        .default_backend
        .as_ref()
        .map(|d| backend_id(raw, d, source))
        .transpose()?;
    let (tls, acme) = tls::frontend(f, source, base)?;
    let hsts = f
        .hsts
        .as_ref()
        .map(|h| {
            http::HeaderValue::from_str(h.get_ref())
                .map_err(|_| source.error(Some(h.span()), "`hsts` is not a valid header value"))
        })
        .transpose()?;
    let ws = &f.websocket;
    Ok(Frontend {
        name: f.name.get_ref().clone(),
        binds,
        default_backend,
        routes,
        allowed_origins: f.allowed_origins.clone(),
        limits: Limits {
            max_request_head: *f.limits.max_request_head.get_ref(),
            max_headers: *f.limits.max_headers.get_ref(),
            max_uri: f.limits.max_uri,
            max_body: f.limits.max_body,
            http2_max_concurrent_streams: *f.limits.http2_max_concurrent_streams.get_ref(),
            http2_max_header_list_size: *f.limits.http2_max_header_list_size.get_ref(),
        },
        maxconn: f.maxconn.as_ref().map(|m| *m.get_ref()),
        per_ip: PerIp {
            max_connections: f.per_ip.max_connections.as_ref().map(|m| *m.get_ref()),
            rate: f.per_ip.rate,
            ipv6_prefix: f
                .per_ip
                .ipv6_prefix
                .as_ref()
                .map_or(crate::cidr::DEFAULT_IPV6_CLIENT_PREFIX, |p| *p.get_ref()),
        },
        websocket: WebSocket {
            max_frame_size: ws.max_frame_size,
            max_message_size: ws.max_message_size,
            idle_timeout: ws.idle_timeout.map(|d| d.get()),
            ping_interval: ws.ping_interval.map(|d| d.get()),
            ping_timeout: ws.ping_timeout.or(ws.ping_interval).map(|d| d.get()),
            max_messages: ws.max_messages,
            max_lifetime: ws.max_lifetime.as_ref().map(|d| d.get_ref().get()),
            lifetime_jitter: ws
                .lifetime_jitter
                .as_ref()
                .map_or(std::time::Duration::ZERO, |d| d.get_ref().get()),
        },
        trusted_proxies: f.trusted_proxies.clone(),
        proxy_protocol: *f.proxy_protocol.get_ref(),
        forward_headers: f.forward_headers.clone(),
        client_timeout: f.timeouts.client.get(),
        http_request_timeout: f.timeouts.http_request.get(),
        client_body_timeout: f.timeouts.client_body.get(),
        tls,
        acme,
        redirect_https: f.redirect_https.get_ref().then(|| HttpsRedirect {
            port: f.https_port.as_ref().map(|p| *p.get_ref()),
        }),
        hsts,
        http2: f.http2_enabled(),
    })
}

fn backend(b: &raw::Backend, source: &SourceMap<'_>, base: &Path) -> Result<super::model::Backend, ConfigError> {
    // With `resolve_interval`, host names are left to the resolver task (no lookup at load).
    let named_servers: Vec<NamedServer> = match b.resolve_interval {
        Some(_) => b.server.iter().filter_map(|s| named_server(s, b)).collect(),
        None => Vec::new(),
    };
    let written: Vec<&raw::Server> = b
        .server
        .iter()
        .filter(|s| !named_servers.iter().any(|n| n.name == *s.name.get_ref()))
        .collect();
    let addresses = written
        .iter()
        .map(|s| located(&s.address, source))
        .collect::<Result<Vec<_>, _>>()?;
    let server_tls = tls::backend(b, &written, &addresses, source, base)?;
    let servers = written
        .iter()
        .zip(addresses)
        .zip(server_tls)
        .map(|((s, address), tls)| Server {
            name: s.name.get_ref().clone(),
            address,
            weight: *s.weight.get_ref(),
            maxconn: s.maxconn.as_ref().map(|m| *m.get_ref()),
            cookie: s.cookie.clone(),
            state: s.state,
            tls,
            source: ServerSource::Config,
            leaving: false,
            send_proxy: send_proxy(s, b),
        })
        .collect();
    let balance_factor = b.balance_factor.as_ref().map(|f| *f.get_ref());
    let hash = match b.hash.get_ref() {
        HashMethod::Map => Hashing::Map,
        HashMethod::Consistent => Hashing::Consistent { balance_factor },
        HashMethod::Maglev => Hashing::Maglev {
            table_size: b
                .maglev_table_size
                .as_ref()
                .map_or(defaults::MAGLEV_TABLE_SIZE, |s| *s.get_ref()),
            balance_factor,
        },
    };
    let health = b.health.as_ref().map(|h| health(h, source)).transpose()?;
    Ok(super::model::Backend {
        name: b.name.get_ref().clone(),
        balance: *b.balance.get_ref(),
        hash_key: b.hash_key.as_ref().map(|k| k.get_ref().clone()),
        hash,
        sticky: b.sticky.as_ref().map(|s| sticky(s.get_ref())),
        redispatch: b.redispatch,
        sticky_respects_maxconn: b.sticky_respects_maxconn,
        sticky_maxconn_margin: *b.sticky_maxconn_margin.get_ref(),
        retries: b.retries,
        queue_timeout: b.queue_timeout.unwrap_or(b.timeouts.connect).get(),
        slowstart: b.slowstart.map(|d| d.get()),
        drain_timeout: b.drain_timeout.get(),
        drain_spread: b.drain_spread.get(),
        down_spread: b.down_spread.get(),
        drain_sticky: b.drain_sticky,
        connect_timeout: b.timeouts.connect.get(),
        server_timeout: b.timeouts.server.get(),
        tunnel_timeout: b.timeouts.tunnel.get(),
        server_body_timeout: b.timeouts.server_body.get(),
        health,
        servers,
        discover: b.discover.as_ref().and_then(|d| discover(d.get_ref())),
        server_defaults: server_defaults(b.server_defaults.as_ref().map(|d| d.get_ref())),
        resolve_interval: b.resolve_interval.as_ref().map(|d| d.get_ref().get()),
        named_servers,
        rebalance: b.rebalance.as_ref().map(|r| {
            let r = r.get_ref();
            super::model::Rebalance {
                max_skew: *r.max_skew.get_ref(),
                rate: *r.rate.get_ref(),
                settle: r.settle.get_ref().get(),
            }
        }),
        send_proxy: b.send_proxy.as_ref().and_then(|p| p.get_ref().version()),
        request_headers: header_rules::compile(&b.request_headers, HeaderSide::Request, source)?,
        response_headers: header_rules::compile(&b.response_headers, HeaderSide::Response, source)?,
    })
}

fn sticky(s: &raw::Sticky) -> Sticky {
    let learn = s.learn.as_ref();
    let engine_io = s.preset == Some(Preset::EngineIo);
    let mut learn_cookie = learn.and_then(|l| l.response_cookie.clone());
    let mut matches = s.match_.clone();
    if engine_io {
        // The preset's settings, after (and without repeating) the operator's own.
        learn_cookie.get_or_insert_with(|| "io".to_string());
        for source in [MatchSource::UrlParam("sid".into()), MatchSource::Cookie("io".into())] {
            if !matches.contains(&source) {
                matches.push(source);
            }
        }
    }
    Sticky {
        cookie: s.cookie.as_ref().map(|name| StickyCookie {
            name: name.clone(),
            mode: s.mode,
            indirect: s.indirect,
            nocache: s.nocache,
            path: s.path.clone(),
            domain: s.domain.clone(),
            max_age: s.max_age.map(|d| d.get()),
            httponly: s.httponly,
            secure: s.secure,
            samesite: s.samesite,
            opaque_secret: s.secret.clone().filter(|_| s.opaque),
        }),
        learn_cookie,
        // The rules do not check this name: an invalid one learns nothing (as it always did).
        learn_header: learn
            .and_then(|l| l.response_header.as_deref())
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        matches,
        engine_io,
        idle_timeout: s.idle_timeout.get(),
        max_entries: *s.max_entries.get_ref(),
    }
}

fn health(health: &toml::Spanned<raw::Health>, source: &SourceMap<'_>) -> Result<Health, ConfigError> {
    let h = health.get_ref();
    let Some(kind) = &h.check else {
        // The rules refused a `health` without `check`; this names it again rather than guess.
        return Err(source.error(
            Some(health.span()),
            "`health` needs `check = \"tcp\"`, `\"http\"` or `\"websocket\"`",
        ));
    };
    let path = || h.path.as_ref().map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
    let host = h.host.as_ref().map(|v| v.get_ref().clone());
    let check = match kind.get_ref() {
        CheckKind::Tcp => Check::Tcp,
        CheckKind::Websocket => Check::WebSocket { path: path(), host },
        CheckKind::Http => Check::Http(HttpCheck {
            method: match &h.method {
                Some(m) => http::Method::from_bytes(m.get_ref().as_bytes()).map_err(|_| {
                    source.error(
                        Some(m.span()),
                        format!("`{}` is not a method a check can send", m.get_ref()),
                    )
                })?,
                None => http::Method::GET,
            },
            path: path(),
            host,
            expect_status: h
                .expect_status
                .as_ref()
                .map_or(defaults::EXPECT_STATUS, |s| *s.get_ref()),
            expect_body: h.expect_body.as_ref().map(|b| b.get_ref().clone()),
        }),
    };
    let interval = h.interval.get_ref().get();
    Ok(Health {
        check,
        interval,
        timeout: h
            .timeout
            .as_ref()
            .map_or(defaults::CHECK_TIMEOUT.min(interval), |t| t.get_ref().get()),
        rise: *h.rise.get_ref(),
        fall: *h.fall.get_ref(),
        observe: *h.observe.get_ref(),
        send_proxy: *h.send_proxy.get_ref(),
    })
}

fn admin(
    admin: &toml::Spanned<raw::Admin>,
    source: &SourceMap<'_>,
    base: &std::path::Path,
) -> Result<Admin, ConfigError> {
    let settings = admin.get_ref();
    let bind = located(&settings.bind, source)?;
    if settings.users.is_empty() && !bind.ip().is_loopback() {
        return Err(source.error(
            Some(settings.bind.span()),
            format!(
                "the admin listener has no `users`, so it only serves on loopback and cannot bind {bind}: \
                 bind it to \"127.0.0.1:{port}\", or add users = [{{ name = \"admin\", password_hash = \"...\" }}] \
                 (`tether hash-password` prints a hash)",
                port = bind.port()
            ),
        ));
    }
    Ok(Admin {
        bind,
        users: settings
            .users
            .iter()
            .map(|u| AdminUser {
                name: u.get_ref().name.get_ref().clone(),
                password_hash: u.get_ref().password_hash.get_ref().clone(),
            })
            .collect(),
        allow: settings.allow.clone(),
        metrics_allow: settings.metrics_allow.clone(),
        hosts: settings
            .hosts
            .iter()
            .map(|h| h.get_ref().trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        tls: tls::admin(settings, source, base)?,
    })
}

fn cluster(c: &raw::Cluster) -> Cluster {
    Cluster {
        redis: c.redis.get_ref().clone(),
        password: c.password.clone(),
        tls_ca_file: c.tls_ca_file.as_ref().map(|f| f.get_ref().clone()),
        instance: c.instance.as_ref().map(|i| i.get_ref().clone()),
        prefix: c.prefix.clone(),
        timeout: c.timeout.get_ref().get(),
        sync_interval: c.sync_interval.get_ref().get(),
        stick_refresh: c.stick_refresh.get(),
        secret: c.secret.as_ref().map(|s| s.get_ref().clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::model::{Check, Hashing, HttpCheck};
    use crate::config::types::{Balance, MatchSource};
    use crate::config::{parse, Condition, HeaderTest};

    const TEXT: &str = r#"
[[frontend]]
name = "public"
bind = ["127.0.0.1:0", "localhost:0"]
default_backend = "web"
websocket = { ping_interval = "20s" }

[[frontend.route]]
backend = "chat"
any = [{ path_prefix = "/socket.io" }, { header = "Upgrade", equals = "websocket" }]
all = [{ method = "get" }]

[[backend]]
name = "web"
[[backend.server]]
name = "w1"
address = "localhost:8200"

[[backend]]
name = "chat"
balance = "header"
hash_key = "x-user"
hash = "maglev"
timeouts = { connect = "2s" }
health = { check = "http" }
sticky = { cookie = "SERVERID", match = [{ url_param = "sid" }] }
[[backend.server]]
name = "c1"
address = "192.0.2.1:9000"
weight = 5
"#;

    #[test]
    fn names_become_indexes_and_conditions_enums() {
        let config = parse(TEXT, "test.toml").expect("valid");
        let front = &config.frontends[0];
        assert_eq!(front.default_backend, Some(0));
        let route = &front.routes[0];
        assert_eq!(route.backend, 1);
        assert!(matches!(&route.any[0], Condition::PathPrefix(p) if p == "/socket.io"));
        assert!(matches!(
            &route.any[1],
            Condition::Header { name, test: HeaderTest::Equals(v) } if name == "upgrade" && v == "websocket"
        ));
        assert!(matches!(&route.all[0], Condition::Method(m) if m == http::Method::GET));
    }

    #[test]
    fn defaults_are_filled_in() {
        let config = parse(TEXT, "test.toml").expect("valid");
        let front = &config.frontends[0];
        assert_eq!(
            front.websocket.ping_timeout,
            Some(Duration::from_secs(20)),
            "ping_interval's"
        );
        assert_eq!(front.client_timeout, Duration::from_secs(30));
        assert!(front.tls.is_none() && front.redirect_https.is_none());
        let (web, chat) = (&config.backends[0], &config.backends[1]);
        assert_eq!((web.balance, web.hash), (Balance::Roundrobin, Hashing::Map));
        assert_eq!(web.queue_timeout, Duration::from_secs(3), "the connect timeout");
        assert_eq!(chat.queue_timeout, Duration::from_secs(2), "its own connect timeout");
        assert_eq!(chat.hash_key.as_deref(), Some("x-user"));
        assert!(matches!(
            chat.hash,
            Hashing::Maglev {
                table_size: super::defaults::MAGLEV_TABLE_SIZE,
                balance_factor: None
            }
        ));
        assert_eq!((web.servers[0].weight, chat.servers[0].weight), (1, 5));
        let health = chat.health.as_ref().expect("health");
        assert_eq!(
            (health.interval, health.timeout),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
        assert!(
            matches!(&health.check, Check::Http(HttpCheck { method, path, .. }) if method == http::Method::GET && path == "/")
        );
        let sticky = chat.sticky.as_ref().expect("sticky");
        let cookie = sticky.cookie.as_ref().expect("cookie");
        assert_eq!(
            (cookie.name.as_str(), cookie.path.as_str(), cookie.httponly),
            ("SERVERID", "/", true)
        );
        assert_eq!(sticky.matches, vec![MatchSource::UrlParam("sid".to_string())]);
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        assert!(config.workers.is_none() && config.admin.is_none() && config.cluster.is_none());
    }

    #[test]
    fn the_engine_io_preset_fills_in_its_learned_id_settings_after_the_operators() {
        let text = TEXT.replace(
            "sticky = { cookie = \"SERVERID\", match = [{ url_param = \"sid\" }] }",
            "sticky = { preset = \"engine.io\", match = [{ header = \"x-session\" }, { url_param = \"sid\" }] }",
        );
        let config = parse(&text, "test.toml").expect("valid");
        let sticky = config.backends[1].sticky.as_ref().expect("sticky");
        assert!(sticky.engine_io && sticky.cookie.is_none());
        assert_eq!(sticky.learn_cookie.as_deref(), Some("io"));
        assert_eq!(
            sticky.matches,
            vec![
                MatchSource::Header(http::HeaderName::from_static("x-session")),
                MatchSource::UrlParam("sid".to_string()),
                MatchSource::Cookie("io".to_string()),
            ]
        );
    }

    #[test]
    fn addresses_are_resolved_after_validation() {
        let config = parse(TEXT, "test.toml").expect("valid");
        let binds = &config.frontends[0].binds;
        assert_eq!(binds[0], "127.0.0.1:0".parse().unwrap());
        assert!(binds[1].ip().is_loopback(), "{}", binds[1]);
        let server = config.backends[0].servers[0].address;
        assert!(server.ip().is_loopback() && server.port() == 8200, "{server}");
        // A rule broken elsewhere is reported before any name is looked up.
        let text = TEXT
            .replace("localhost:8200", "no-such-host.invalid:8200")
            .replace("weight = 5", "weight = 5000");
        let err = parse(&text, "test.toml").unwrap_err().to_string();
        assert!(err.contains("weight must be between"), "{err}");
        let text = TEXT.replace("localhost:8200", "no-such-host.invalid:8200");
        let err = parse(&text, "test.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml:17:11:") && err.contains("is not an address tether can reach"),
            "{err}"
        );
    }
}
