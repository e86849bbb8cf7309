//! NGINX `http`, `server` and `location` blocks → tether frontends and
//! routes: `listen`, TLS certificates, location matching, `proxy_pass`,
//! the WebSocket upgrade idiom (folded into tether's own handling),
//! forwarding headers and proxy timeouts (onto the backends).

use std::collections::{BTreeSet, HashMap};

use super::super::output::{Doc, Item, Origin, Section, Value};
use super::super::{duration, listen_address, size};
use super::upstream;
use super::Node;

mod location;
mod vhost;

use location::location;
use vhost::{merge_virtual_host, virtual_host_target};

/// Directives inherited from `http` to `server` to `location`.
#[derive(Debug, Clone, Default)]
struct Inherited {
    /// `proxy_set_header`s of the innermost level that has any (NGINX's rule).
    headers: Vec<Node>,
    /// `proxy_connect_timeout`, `proxy_read_timeout`, `proxy_send_timeout`, `proxy_http_version`, …
    proxy: HashMap<String, Node>,
    /// Client-side settings: `keepalive_timeout`, `client_*_timeout`, `client_max_body_size`.
    client: HashMap<String, Node>,
}

const PROXY: &[&str] = &[
    "proxy_connect_timeout",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "proxy_http_version",
];
const CLIENT: &[&str] = &[
    "keepalive_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "client_max_body_size",
];
/// Directives that change nothing tether does, with why.
const BUILTIN: &[(&str, &str)] = &[
    ("proxy_buffering", "tether streams responses as they come"),
    ("proxy_request_buffering", "tether streams request bodies as they come"),
    ("proxy_cache_bypass", "tether caches nothing"),
    ("proxy_no_cache", "tether caches nothing"),
    ("proxy_redirect", "tether does not rewrite Location headers"),
    ("tcp_nodelay", "tether sets TCP_NODELAY on every connection"),
];

impl Inherited {
    /// This level's settings over the enclosing ones.
    fn within(&self, nodes: &[Node]) -> Inherited {
        let mut next = self.clone();
        let headers: Vec<Node> = nodes.iter().filter(|n| n.name == "proxy_set_header").cloned().collect();
        if !headers.is_empty() {
            next.headers = headers;
        }
        for n in nodes {
            if PROXY.contains(&n.name.as_str()) {
                next.proxy.insert(n.name.clone(), n.clone());
            }
            if CLIENT.contains(&n.name.as_str()) {
                next.client.insert(n.name.clone(), n.clone());
            }
        }
        next
    }
}

/// Whether the level's own directive is one `Inherited` takes.
fn inheritable(name: &str) -> bool {
    name == "proxy_set_header" || PROXY.contains(&name) || CLIENT.contains(&name)
}

struct Ctx {
    doc: Doc,
    upstreams: Vec<Section>,
    /// Backends made for `proxy_pass http://host:port`.
    singles: Vec<Section>,
    /// Lines already commented on in a frontend (inherited headers are noted once).
    noted: BTreeSet<(String, usize)>,
    /// Addresses already listened on by a server block.
    listening: BTreeSet<String>,
}

/// Translates the parsed file.
pub(super) fn translate(nodes: &[Node]) -> Result<Doc, (usize, String)> {
    let mut ctx = Ctx {
        doc: Doc::default(),
        upstreams: Vec::new(),
        singles: Vec::new(),
        noted: BTreeSet::new(),
        listening: BTreeSet::new(),
    };
    let mut http_level: Vec<Node> = Vec::new();
    for node in nodes {
        let o = &node.origin;
        match node.name.as_str() {
            "worker_processes" => match node.arg(0) {
                "auto" => ctx.doc.top.builtin(o, "tether starts one worker per core by default"),
                n => match n.parse::<u64>() {
                    Ok(n) => ctx.doc.top.set("workers", Value::Int(n), o),
                    Err(_) => return Err((o.line, format!("`worker_processes {n}`: a number or auto"))),
                },
            },
            "events" => {
                for inner in node.block.iter().flatten() {
                    match inner.name.as_str() {
                        "worker_connections" => ctx.doc.top.not_translated(
                            &inner.origin,
                            "tether has no per-worker connection cap: set `maxconn` on the frontend",
                        ),
                        "use" | "multi_accept" | "accept_mutex" => ctx
                            .doc
                            .top
                            .builtin(&inner.origin, "tether uses epoll and accepts on one socket per worker"),
                        _ => ctx.doc.top.not_translated(&inner.origin, "no tether equivalent"),
                    }
                }
            }
            "http" => http_level.extend(node.block.iter().flatten().cloned()),
            "user" | "pid" | "daemon" | "master_process" | "worker_rlimit_nofile" => ctx
                .doc
                .top
                .not_translated(o, "run tether under a service manager (systemd) for this"),
            "error_log" => ctx.doc.top.not_translated(o, "tether logs to stderr"),
            "stream" | "mail" => ctx.doc.top.not_translated(o, "tether balances HTTP and WebSocket only"),
            _ => http_level.push(node.clone()),
        }
    }
    http(&mut ctx, &http_level)?;
    let mut doc = ctx.doc;
    doc.backends = ctx.upstreams;
    doc.backends.extend(ctx.singles);
    Ok(doc)
}

fn http(ctx: &mut Ctx, nodes: &[Node]) -> Result<(), (usize, String)> {
    for node in nodes.iter().filter(|n| n.name == "upstream") {
        ctx.upstreams.push(upstream::upstream(node)?);
    }
    let inherited = Inherited::default().within(nodes);
    for node in nodes {
        let o = &node.origin;
        match node.name.as_str() {
            "upstream" => {}
            "server" if node.block.is_some() => server(ctx, node, &inherited)?,
            "map" => map(ctx, node),
            name if inheritable(name) => {}
            name => match BUILTIN.iter().find(|(n, _)| *n == name) {
                Some((_, why)) => ctx.doc.top.builtin(o, why),
                None => ctx.doc.top.not_translated(o, &reason(name)),
            },
        }
    }
    // http-level inherited directives no server used are still accounted for.
    for node in nodes.iter().filter(|n| inheritable(&n.name)) {
        if !ctx.noted.iter().any(|(_, line)| *line == node.origin.line) {
            ctx.doc.top.builtin(
                &node.origin,
                "inherited by the server blocks below (see their comments)",
            );
        }
    }
    Ok(())
}

fn reason(name: &str) -> String {
    match name {
        "access_log" | "log_format" => "tether writes its own access log to stderr".into(),
        "include" => "the importer reads one file: import the included file on its own".into(),
        "root" | "index" | "try_files" | "alias" | "sendfile" | "default_type" | "types" | "autoindex" => {
            "tether serves no files".into()
        }
        "ssl_protocols"
        | "ssl_ciphers"
        | "ssl_prefer_server_ciphers"
        | "ssl_session_cache"
        | "ssl_session_timeout"
        | "ssl_session_tickets"
        | "ssl_dhparam"
        | "ssl_ecdh_curve"
        | "ssl_stapling"
        | "ssl_stapling_verify" => "tether's TLS settings are rustls's safe defaults (TLS 1.2 and 1.3)".into(),
        "add_header" | "more_set_headers" => "tether has no response header rules yet".into(),
        "gzip" | "gzip_types" | "gzip_proxied" => "tether does not compress responses".into(),
        name => format!("`{name}` has no tether equivalent"),
    }
}

/// `map $http_upgrade $connection_upgrade { default upgrade; '' close; }` is
/// the WebSocket idiom tether does by itself; other maps are not translated.
fn map(ctx: &mut Ctx, node: &Node) {
    let entries = node.block.as_deref().unwrap_or(&[]);
    let idiom = node.arg(0) == "$http_upgrade"
        && entries.iter().all(|e| {
            matches!(
                (e.name.as_str(), e.arg(0)),
                ("default", "upgrade" | "Upgrade") | ("", "close")
            )
        });
    if idiom {
        ctx.doc.top.builtin(
            &node.origin,
            "the WebSocket Connection idiom: tether forwards Upgrade handshakes by itself",
        );
    } else {
        ctx.doc.top.not_translated(
            &node.origin,
            "tether has no variables; maps other than the Upgrade idiom are not translated",
        );
    }
}

/// One location's route, in NGINX's order of precedence.
struct Located {
    /// 0 `=`, 1 `^~`, 2 regex, 3 plain prefix.
    rank: u8,
    /// Longer prefixes first within a rank (regexes keep file order).
    length: usize,
    order: usize,
    route: Option<Section>,
}

fn server(ctx: &mut Ctx, node: &Node, outer: &Inherited) -> Result<(), (usize, String)> {
    let o = &node.origin;
    let nodes = node.block.as_deref().unwrap_or(&[]);
    let inherited = outer.within(nodes);
    let name = nodes
        .iter()
        .find(|n| n.name == "server_name" && !n.arg(0).is_empty() && n.arg(0) != "_")
        .map(|n| n.arg(0).to_string())
        .unwrap_or_else(|| format!("server-line-{}", o.line));
    let key = name.clone();
    let mut fe = Section::new("[[frontend]]", Some(o.clone()));
    fe.set("name", Value::Str(name.clone()), o);
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    let mut certs: Vec<&Node> = Vec::new();
    let mut keys: Vec<&Node> = Vec::new();
    for n in nodes.iter().filter(|n| n.name == "listen") {
        let Some(address) = listen_address(n.arg(0)) else {
            fe.not_translated(&n.origin, "tether listens on ip:port addresses");
            continue;
        };
        let mut ssl = false;
        for param in &n.args[1..] {
            match param.split('=').next().unwrap_or_default() {
                "ssl" => ssl = true,
                "default_server" | "default" => {}
                "http2" => fe.builtin(&n.origin, "tether offers HTTP/2 by ALPN on TLS frontends"),
                "reuseport" => fe.builtin(&n.origin, "tether listens with SO_REUSEPORT, one socket per worker"),
                other => fe.not_translated(
                    &n.origin,
                    &format!("listen parameter `{other}` has no tether equivalent"),
                ),
            }
        }
        if ssl {
            tls.push((address, n.origin.clone()));
        } else {
            plain.push((address, n.origin.clone()));
        }
    }
    if plain.is_empty() && tls.is_empty() {
        plain.push(("0.0.0.0:80".to_string(), o.clone()));
        fe.builtin(o, "no `listen`: NGINX listens on *:80");
    }
    let shared = plain.iter().chain(&tls).any(|(a, _)| ctx.listening.contains(a));
    let merge_into = if shared {
        match virtual_host_target(ctx, nodes, &plain, &tls) {
            Ok(target) => Some(target),
            Err(reason) => {
                ctx.doc.top.not_translated(o, &reason);
                return Ok(());
            }
        }
    } else {
        None
    };
    for (address, _) in plain.iter().chain(&tls) {
        ctx.listening.insert(address.clone());
    }
    let mut forward: BTreeSet<&'static str> = BTreeSet::new();
    let mut located: Vec<Located> = Vec::new();
    for n in nodes {
        let no = &n.origin;
        match n.name.as_str() {
            "listen" => {}
            "server_name" if merge_into.is_some() => fe.builtin(no, "its routes ask for these hosts"),
            "server_name" => fe.builtin(
                no,
                "the first server block on its addresses is NGINX's default server: it takes every host no other block names",
            ),
            "ssl_certificate" => certs.push(n),
            "ssl_certificate_key" => keys.push(n),
            "location" => {
                let order = located.len();
                located.push(location(ctx, &mut fe, &key, n, &inherited, &mut forward, order)?);
            }
            "return"
                if matches!(n.arg(0), "301" | "302" | "307" | "308")
                    && (n.arg(1) == "https://$host$request_uri" || n.arg(1) == "https://$server_name$request_uri") =>
            {
                fe.set_remarked(
                    "redirect_https",
                    Value::Bool(true),
                    no,
                    (n.arg(0) != "308").then(|| format!("tether redirects with 308 (NGINX: {})", n.arg(0))),
                );
            }
            name if inheritable(name) => {}
            name => match BUILTIN.iter().find(|(b, _)| *b == name) {
                Some((_, why)) => fe.builtin(no, why),
                None => fe.not_translated(no, &reason(name)),
            },
        }
    }
    client_settings(&mut fe, &inherited);
    let from = fe.from.clone().unwrap_or_else(|| o.clone());
    let forward_value = Value::Strs(forward.iter().map(|s| s.to_string()).collect());
    let remark = forward
        .is_empty()
        .then(|| "NGINX adds no forwarding headers unless `proxy_set_header` sets them".to_string());
    if fe
        .items
        .iter()
        .all(|i| !matches!(i, Item::Key { key, .. } if key == "redirect_https"))
    {
        fe.set_remarked("forward_headers", forward_value, &from, remark);
    }
    located.sort_by(|a, b| {
        a.rank
            .cmp(&b.rank)
            .then(b.length.cmp(&a.length))
            .then(a.order.cmp(&b.order))
    });
    let routes: Vec<Section> = located.into_iter().filter_map(|l| l.route).collect();
    if let Some((index, hosts, names_origin)) = merge_into {
        merge_virtual_host(&mut ctx.doc.frontends[index], fe, routes, &hosts, &names_origin);
        return Ok(());
    }
    let bind = |list: &[(String, Origin)]| Value::Strs(list.iter().map(|(a, _)| a.clone()).collect());
    if !plain.is_empty() {
        let mut section = fe.clone();
        section.set("bind", bind(&plain), &plain[0].1);
        section.children = routes.clone();
        ctx.doc.frontends.push(section);
    }
    if !tls.is_empty() {
        let mut section = fe;
        if !plain.is_empty() {
            section.set_remarked(
                "name",
                Value::Str(format!("{name}-tls")),
                &tls[0].1,
                Some("a tether frontend is all TLS or all plain: the ssl listens are a frontend of their own".into()),
            );
            section
                .items
                .retain(|i| !matches!(i, Item::Key { key, .. } if key == "redirect_https"));
        }
        section.set("bind", bind(&tls), &tls[0].1);
        match (certs.first(), keys.first()) {
            (Some(cert), Some(key)) => {
                section.set("tls.cert", Value::Str(cert.arg(0).to_string()), &cert.origin);
                section.set("tls.key", Value::Str(key.arg(0).to_string()), &key.origin);
            }
            _ => section.not_translated(&tls[0].1, "`ssl` without ssl_certificate and ssl_certificate_key"),
        }
        for extra in certs.iter().skip(1).chain(keys.iter().skip(1)) {
            section.not_translated(
                &extra.origin,
                "a second certificate for one name (RSA + ECDSA): tether takes one per name",
            );
        }
        section.children = routes;
        ctx.doc.frontends.push(section);
    }
    Ok(())
}

/// `keepalive_timeout`, `client_header_timeout`, `client_body_timeout`, `client_max_body_size`.
fn client_settings(fe: &mut Section, inherited: &Inherited) {
    let mut names: Vec<&String> = inherited.client.keys().collect();
    names.sort();
    for name in names {
        let n = &inherited.client[name];
        let o = &n.origin;
        let time = duration(n.arg(0), "s");
        match (name.as_str(), time) {
            ("keepalive_timeout", Some(t)) if n.args.len() == 1 => fe.set("timeouts.client", Value::Str(t), o),
            ("client_header_timeout", Some(t)) => fe.set("timeouts.http_request", Value::Str(t), o),
            ("client_body_timeout", Some(t)) => fe.set("timeouts.client_body", Value::Str(t), o),
            ("client_max_body_size", _) => match size(n.arg(0)) {
                Some(0) => fe.builtin(o, "0 is no limit, as without `limits.max_body`"),
                Some(bytes) => fe.set("limits.max_body", Value::Int(bytes), o),
                None => fe.not_translated(o, "not a size"),
            },
            _ => fe.not_translated(o, "not a time tether can use"),
        }
    }
}
