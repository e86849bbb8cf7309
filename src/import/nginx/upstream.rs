//! NGINX `upstream` blocks → tether `[[backend]]`s: servers and their
//! parameters, `least_conn`, `ip_hash`, `hash KEY [consistent]`, `random
//! two least_conn`, `sticky cookie|learn`.

use super::super::duration;
use super::super::output::{quote, Origin, Section, Value};
use super::Node;

/// A `[[backend]]` for `upstream NAME { … }`.
pub(super) fn upstream(node: &Node) -> Result<Section, (usize, String)> {
    let o = &node.origin;
    let name = node.arg(0);
    if name.is_empty() {
        return Err((o.line, "`upstream` needs a name".to_string()));
    }
    let mut backend = Section::new("[[backend]]", Some(o.clone()));
    backend.set("name", Value::Str(name.to_string()), o);
    for d in node.block.iter().flatten() {
        directive(&mut backend, d)?;
    }
    if !node.block.iter().flatten().any(|d| d.name == "server") {
        return Err((o.line, format!("upstream `{name}` has no `server`")));
    }
    Ok(backend)
}

/// A backend with one server, for `proxy_pass http://host:port` without an upstream.
pub(super) fn single(name: &str, address: &str, tls: bool, origin: &Origin) -> Section {
    let mut backend = Section::new("[[backend]]", Some(origin.clone()));
    backend.set("name", Value::Str(name.to_string()), origin);
    if tls {
        backend.set_remarked(
            "tls",
            Value::Raw("{ verify = false }".into()),
            origin,
            Some("NGINX does not verify a server's certificate unless `proxy_ssl_verify on`".into()),
        );
    }
    let mut server = Section::new("[[backend.server]]", Some(origin.clone()));
    server.set("name", Value::Str("s1".into()), origin);
    server.set("address", Value::Str(address.to_string()), origin);
    backend.children.push(server);
    backend
}

fn directive(backend: &mut Section, d: &Node) -> Result<(), (usize, String)> {
    let o = &d.origin;
    let set_balance = |b: &mut Section, balance: &str| b.set("balance", Value::Str(balance.into()), o);
    match (d.name.as_str(), d.arg(0)) {
        ("server", _) => server(backend, d)?,
        ("least_conn", _) => set_balance(backend, "leastconn"),
        ("ip_hash", _) => {
            backend.set_remarked(
                "balance",
                Value::Str("source".into()),
                o,
                Some(
                    "NGINX's ip_hash hashes the first three octets of an IPv4 address; tether hashes the whole address"
                        .into(),
                ),
            );
        }
        ("hash", key) => {
            let consistent = match d.arg(1) {
                "consistent" => true,
                "" => false,
                other => {
                    return Err((
                        o.line,
                        format!("`hash {key} {other}`: only `consistent` may follow the key"),
                    ))
                }
            };
            let named = |prefix: &str| key.strip_prefix(prefix).filter(|n| !n.is_empty());
            let (balance, hash_key, remark) = if key == "$remote_addr" || key == "$binary_remote_addr" {
                ("source", None, None)
            } else if key == "$request_uri" || key == "$uri" {
                let remark = (key == "$request_uri")
                    .then(|| "NGINX's $request_uri includes the query; tether hashes the path alone".to_string());
                ("uri", None, remark)
            } else if let Some(arg) = named("$arg_") {
                ("url_param", Some(arg.to_string()), None)
            } else if let Some(header) = named("$http_") {
                ("header", Some(header.replace('_', "-")), None)
            } else if let Some(cookie) = named("$cookie_") {
                ("cookie", Some(cookie.to_string()), None)
            } else {
                backend.not_translated(
                    o,
                    "tether hashes one of $remote_addr, $request_uri, $arg_X, $http_X, $cookie_X",
                );
                return Ok(());
            };
            backend.set_remarked("balance", Value::Str(balance.into()), o, remark);
            if let Some(hash_key) = hash_key {
                backend.set("hash_key", Value::Str(hash_key), o);
            }
            backend.set(
                "hash",
                Value::Str(if consistent { "consistent" } else { "map" }.into()),
                o,
            );
        }
        ("random", "two") if matches!(d.arg(1), "" | "least_conn") => set_balance(backend, "random"),
        ("random", _) => backend.not_translated(
            o,
            "tether's random picks the less loaded of two servers (`random two least_conn`)",
        ),
        ("sticky", "cookie") => sticky_cookie(backend, d),
        ("sticky", "learn") => sticky_learn(backend, d),
        ("sticky", _) => backend.not_translated(o, "tether's stickiness is `sticky cookie` or `sticky learn`"),
        ("keepalive" | "keepalive_timeout" | "keepalive_requests" | "keepalive_time", _) => {
            backend.builtin(o, "tether keeps a pool of idle connections to each server by itself")
        }
        ("zone", _) => backend.builtin(o, "tether's workers share upstream state without a zone"),
        _ => backend.not_translated(o, &format!("`{}` has no tether equivalent", d.name)),
    }
    Ok(())
}

fn server(backend: &mut Section, d: &Node) -> Result<(), (usize, String)> {
    let o = &d.origin;
    let address = d.arg(0);
    if address.is_empty() {
        return Err((o.line, "`server` needs an address".to_string()));
    }
    if address.starts_with("unix:") {
        backend.not_translated(o, "tether connects to servers over TCP; this server is left out");
        return Ok(());
    }
    let address = match address.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => address.to_string(),
        _ => format!("{address}:80"),
    };
    let number = backend.children.len() + 1;
    let mut server = Section::new("[[backend.server]]", Some(o.clone()));
    server.set("name", Value::Str(format!("s{number}")), o);
    server.set("address", Value::Str(address), o);
    let mut max_fails_zero = false;
    for param in &d.args[1..] {
        let (key, value) = param.split_once('=').unwrap_or((param.as_str(), ""));
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| (o.line, format!("`{param}`: not a number")))
        };
        match key {
            "weight" => server.set("weight", Value::Int(number(value)?), o),
            "max_conns" => match number(value)? {
                0 => server.builtin(o, "max_conns=0 is no limit"),
                n => server.set("maxconn", Value::Int(n), o),
            },
            "max_fails" if value == "0" => max_fails_zero = true,
            "fail_timeout" if max_fails_zero => {}
            "max_fails" | "fail_timeout" => server.not_translated(
                o,
                &format!("`{key}`: tether's passive detection (health.observe) works with an active check only"),
            ),
            "down" => server.set("state", Value::Str("maint".into()), o),
            "backup" => {
                backend.not_translated(o, "tether has no backup servers; this server is left out");
                return Ok(());
            }
            "slow_start" => match duration(value, "s") {
                Some(t) => backend.set("slowstart", Value::Str(t), o),
                None => return Err((o.line, format!("`{param}`: not a time"))),
            },
            _ => server.not_translated(o, &format!("server parameter `{key}` has no tether equivalent")),
        }
    }
    if max_fails_zero {
        server.builtin(o, "max_fails=0: the server is never marked failed, as without `health`");
    }
    backend.children.push(server);
    Ok(())
}

fn sticky_cookie(backend: &mut Section, d: &Node) {
    let o = &d.origin;
    let Some(name) = d.args.get(1) else {
        backend.not_translated(o, "`sticky cookie` needs a name");
        return;
    };
    backend.set("sticky.cookie", Value::Str(name.clone()), o);
    backend.set("sticky.mode", Value::Str("insert".into()), o);
    let mut httponly = false;
    let mut secure = false;
    for param in &d.args[2..] {
        let (key, value) = param.split_once('=').unwrap_or((param.as_str(), ""));
        match key {
            "httponly" => httponly = true,
            "secure" => secure = true,
            "path" => backend.set("sticky.path", Value::Str(value.into()), o),
            "domain" => backend.set("sticky.domain", Value::Str(value.into()), o),
            "samesite" => match value.to_ascii_lowercase().as_str() {
                s @ ("strict" | "lax" | "none") => backend.set("sticky.samesite", Value::Str(s.into()), o),
                _ => backend.not_translated(o, &format!("`samesite={value}`")),
            },
            "expires" => match duration(value, "s") {
                Some(t) => backend.set("sticky.max_age", Value::Str(t), o),
                None => backend.not_translated(o, "`expires=max` or an epoch: tether's max_age is a duration"),
            },
            _ => backend.not_translated(o, &format!("sticky cookie parameter `{key}` has no tether equivalent")),
        }
    }
    // NGINX sets neither attribute unless asked; tether's defaults differ, so both are written.
    backend.set("sticky.httponly", Value::Bool(httponly), o);
    backend.set("sticky.secure", Value::Bool(secure), o);
}

fn sticky_learn(backend: &mut Section, d: &Node) {
    let o = &d.origin;
    let mut learned = Vec::new();
    let mut lookups = Vec::new();
    for param in &d.args[1..] {
        let (key, value) = param.split_once('=').unwrap_or((param.as_str(), ""));
        match key {
            "create" => {
                if let Some(c) = value.strip_prefix("$upstream_cookie_") {
                    learned.push(("sticky.learn.response_cookie", c.to_string()));
                } else if let Some(h) = value.strip_prefix("$upstream_http_") {
                    learned.push(("sticky.learn.response_header", h.replace('_', "-")));
                } else {
                    backend.not_translated(
                        o,
                        &format!("`create={value}`: tether learns from a response cookie or header"),
                    );
                }
            }
            "lookup" => {
                if let Some(c) = value.strip_prefix("$cookie_") {
                    lookups.push(format!("{{ cookie = {} }}", quote(c)));
                } else if let Some(a) = value.strip_prefix("$arg_") {
                    lookups.push(format!("{{ url_param = {} }}", quote(a)));
                } else if let Some(h) = value.strip_prefix("$http_") {
                    lookups.push(format!("{{ header = {} }}", quote(&h.replace('_', "-"))));
                } else {
                    backend.not_translated(
                        o,
                        &format!("`lookup={value}`: tether matches a cookie, query parameter or header"),
                    );
                }
            }
            "timeout" => match duration(value, "s") {
                Some(t) => backend.set("sticky.idle_timeout", Value::Str(t), o),
                None => backend.not_translated(o, "`timeout` is not a time"),
            },
            "zone" => {}
            "header" | "sync" => {
                backend.not_translated(o, &format!("`{key}`: share learned ids with [cluster] instead"))
            }
            _ => backend.not_translated(o, &format!("sticky learn parameter `{key}` has no tether equivalent")),
        }
    }
    if learned.is_empty() || lookups.is_empty() {
        backend.not_translated(
            o,
            "`sticky learn` needs a create= tether can learn from and a lookup= it can match",
        );
        return;
    }
    for (key, value) in learned {
        backend.set(key, Value::Str(value), o);
    }
    backend.set("sticky.match", Value::Raw(format!("[{}]", lookups.join(", "))), o);
}
