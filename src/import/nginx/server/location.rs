//! NGINX `location` blocks → tether routes: the match, `proxy_pass`, the
//! headers in effect (the Upgrade idiom, forwarding headers) and the proxy
//! timeouts, which go onto the backend.

use std::collections::BTreeSet;

use super::super::super::duration;
use super::super::super::output::{quote, Item, Origin, Section, Value};
use super::super::upstream;
use super::super::Node;
use super::{inheritable, reason, Ctx, Inherited, Located, BUILTIN};

pub(super) fn location(
    ctx: &mut Ctx,
    fe: &mut Section,
    fe_key: &str,
    node: &Node,
    outer: &Inherited,
    forward: &mut BTreeSet<&'static str>,
    order: usize,
) -> Result<Located, (usize, String)> {
    let o = &node.origin;
    let nodes = node.block.as_deref().unwrap_or(&[]);
    let inherited = outer.within(nodes);
    let (modifier, path) = match node.args.as_slice() {
        [path] => ("", path.as_str()),
        [modifier, path] => (modifier.as_str(), path.as_str()),
        _ => {
            return Err((
                o.line,
                "`location` needs a path, optionally after =, ^~, ~ or ~*".to_string(),
            ))
        }
    };
    let mut out = Located {
        rank: 3,
        length: path.len(),
        order,
        route: None,
    };
    let condition = match modifier {
        "=" => {
            out.rank = 0;
            Some(format!("{{ path = {} }}", quote(path)))
        }
        "^~" | "" if path.starts_with('@') => None,
        "^~" | "" => {
            out.rank = if modifier == "^~" { 1 } else { 3 };
            (path != "/").then(|| format!("{{ path_prefix = {} }}", quote(path)))
        }
        "~" | "~*" => {
            out.rank = 2;
            let pattern = if modifier == "~*" {
                format!("(?i){path}")
            } else {
                path.to_string()
            };
            if regex::Regex::new(&pattern).is_err() {
                fe.not_translated(o, "a regular expression tether (Rust regex) does not accept");
                return Ok(out);
            }
            Some(format!("{{ path_regex = {} }}", quote(&pattern)))
        }
        other => return Err((o.line, format!("`{other}` is not a location modifier (=, ^~, ~, ~*)"))),
    };
    if path.starts_with('@') {
        fe.not_translated(
            o,
            "named locations are reached by internal redirects, which tether does not make",
        );
        return Ok(out);
    }
    let mut backend = None;
    for n in nodes {
        let no = &n.origin;
        match n.name.as_str() {
            "proxy_pass" => backend = proxy_pass(ctx, fe, n, path)?,
            name if inheritable(name) => {}
            "location" => fe.not_translated(no, "nested locations: write each as a route of its own"),
            name => match BUILTIN.iter().find(|(b, _)| *b == name) {
                Some((_, why)) => fe.builtin(no, why),
                None => fe.not_translated(no, &reason(name)),
            },
        }
    }
    let Some(backend) = backend else {
        if !nodes.iter().any(|n| n.name == "proxy_pass") {
            fe.not_translated(o, "a location without proxy_pass: tether only proxies");
        }
        return Ok(out);
    };
    headers(ctx, fe, fe_key, &inherited, forward);
    proxy_settings(ctx, &backend, &inherited, o);
    match condition {
        None => fe.set("default_backend", Value::Str(backend), o),
        Some(condition) => {
            let mut route = Section::new("[[frontend.route]]", Some(o.clone()));
            route.set("backend", Value::Str(backend), o);
            route.set("any", Value::Raw(format!("[{condition}]")), o);
            out.route = Some(route);
        }
    }
    Ok(out)
}

/// The backend a `proxy_pass` names (an upstream, or a backend made for an address).
fn proxy_pass(ctx: &mut Ctx, fe: &mut Section, n: &Node, location: &str) -> Result<Option<String>, (usize, String)> {
    let o = &n.origin;
    let url = n.arg(0);
    let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err((
            o.line,
            format!("`proxy_pass {url}`: the URL starts with http:// or https://"),
        ));
    };
    if rest.contains('$') {
        fe.not_translated(o, "tether's backends are named, not computed from variables");
        return Ok(None);
    }
    let (host, uri) = rest.split_once('/').map_or((rest, None), |(h, u)| (h, Some(u)));
    if let Some(uri) = uri {
        if !(uri.is_empty() && location == "/") {
            fe.not_translated(
                o,
                "a URI in proxy_pass rewrites the path; tether forwards the path as it came",
            );
            return Ok(None);
        }
    }
    if let Some(upstream) = ctx.upstreams.iter_mut().find(|u| name_of(u) == host) {
        if tls
            && !upstream
                .items
                .iter()
                .any(|i| matches!(i, Item::Key { key, .. } if key == "tls"))
        {
            upstream.set_remarked(
                "tls",
                Value::Raw("{ verify = false }".into()),
                o,
                Some("NGINX does not verify a server's certificate unless `proxy_ssl_verify on`".into()),
            );
        }
        return Ok(Some(host.to_string()));
    }
    let address = match host.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => host.to_string(),
        _ => format!("{host}:{}", if tls { 443 } else { 80 }),
    };
    let name = address.replace([':', '[', ']'], "-");
    if !ctx.singles.iter().any(|s| name_of(s) == name) {
        ctx.singles.push(upstream::single(&name, &address, tls, o));
    }
    Ok(Some(name))
}

fn name_of(section: &Section) -> &str {
    section
        .items
        .iter()
        .find_map(|i| match i {
            Item::Key {
                key,
                value: Value::Str(v),
                ..
            } if key == "name" => Some(v.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `proxy_set_header`s in effect: the upgrade idiom and Host are built in,
/// `X-Forwarded-*` become `forward_headers`, the rest is noted.
fn headers(ctx: &mut Ctx, fe: &mut Section, fe_key: &str, inherited: &Inherited, forward: &mut BTreeSet<&'static str>) {
    for n in &inherited.headers {
        let (name, value) = (n.arg(0).to_ascii_lowercase(), n.arg(1));
        let outcome: Result<&str, &str> = match (name.as_str(), value) {
            ("upgrade", "$http_upgrade") => Ok("tether forwards the WebSocket Upgrade handshake by itself"),
            ("connection", "$connection_upgrade" | "upgrade" | "Upgrade" | "") => {
                Ok("tether manages the Connection header of the handshake and of its pooled connections")
            }
            ("host", "$host" | "$http_host") => Ok("tether passes the client's Host to the server"),
            ("x-forwarded-for", "$proxy_add_x_forwarded_for" | "$remote_addr") => {
                forward.insert("x-forwarded-for");
                Ok("x-forwarded-for in forward_headers")
            }
            ("x-forwarded-proto", "$scheme") => {
                forward.insert("x-forwarded-proto");
                Ok("x-forwarded-proto in forward_headers")
            }
            ("x-forwarded-host", "$host" | "$http_host") => {
                forward.insert("x-forwarded-host");
                Ok("x-forwarded-host in forward_headers")
            }
            ("x-real-ip", _) => Err("tether sends the client address in X-Forwarded-For, not X-Real-IP"),
            _ => Err("tether has no request header rules yet"),
        };
        if ctx.noted.insert((fe_key.to_string(), n.origin.line)) {
            match outcome {
                Ok(why) => fe.builtin(&n.origin, why),
                Err(reason) => fe.not_translated(&n.origin, reason),
            }
        }
    }
}

/// Proxy timeouts onto the backend (tether's are per backend), with NGINX's
/// 60 s defaults where the file sets none.
fn proxy_settings(ctx: &mut Ctx, backend: &str, inherited: &Inherited, location: &Origin) {
    let Some(section) = ctx
        .upstreams
        .iter_mut()
        .chain(ctx.singles.iter_mut())
        .find(|s| name_of(s) == backend)
    else {
        return;
    };
    let timeout = |name: &str| inherited.proxy.get(name);
    let mut apply = |keys: &[&str], node: Option<&Node>, default: &str| {
        let (value, origin, remark) = match node {
            Some(n) => match duration(n.arg(0), "s") {
                Some(v) => (v, n.origin.clone(), None),
                None => {
                    section.not_translated(&n.origin, "not a time tether can use");
                    return;
                }
            },
            None => (
                default.to_string(),
                location.clone(),
                Some(format!("NGINX's default when not set: {default}")),
            ),
        };
        for key in keys {
            let earlier = section.items.iter().find_map(|i| match i {
                Item::Key {
                    key: k,
                    value: Value::Str(v),
                    from,
                    ..
                } if k == key => Some((v.clone(), from[0].line)),
                _ => None,
            });
            match earlier {
                Some((v, _)) if v == value => {}
                Some((v, line)) => section.not_translated(
                    &origin,
                    &format!("{key} is {v} from line {line} for another location; tether's timeouts are per backend"),
                ),
                None => section.set_remarked(key, Value::Str(value.clone()), &origin, remark.clone()),
            }
        }
    };
    apply(&["timeouts.connect"], timeout("proxy_connect_timeout"), "60s");
    apply(
        &["timeouts.server", "timeouts.server_body", "timeouts.tunnel"],
        timeout("proxy_read_timeout"),
        "60s",
    );
    if let Some(n) = timeout("proxy_send_timeout") {
        section.not_translated(&n.origin, "tether has no timeout on writes to a server");
    }
    if let Some(n) = timeout("proxy_http_version") {
        match n.arg(0) {
            "1.1" => section.builtin(&n.origin, "tether speaks HTTP/1.1 to servers"),
            _ => section.not_translated(&n.origin, "tether speaks HTTP/1.1 to servers"),
        }
    }
}
