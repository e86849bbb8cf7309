//! Rules that relate several values of the file: unique names, references to
//! backends that exist, conditions with exactly one selector.

use std::collections::HashSet;

use toml::Spanned;

use super::error::{ConfigError, SourceMap};
use super::types::{Balance, Condition, Config, CookieMode, HashMethod, Route, SameSite, Sticky};
use crate::balance::is_prime;

/// The largest weight a server may have (HAProxy allows 256; a little more room costs nothing).
pub const MAX_WEIGHT: u32 = 1000;

/// Checks everything the deserialiser could not check alone.
pub(crate) fn validate(config: &Config, source: &SourceMap<'_>) -> Result<(), ConfigError> {
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
    for condition in route.any.iter().chain(&route.all) {
        validate_condition(condition, source)?;
    }
    Ok(())
}

fn validate_condition(condition: &Spanned<Condition>, source: &SourceMap<'_>) -> Result<(), ConfigError> {
    let c = condition.get_ref();
    let at = Some(condition.span());
    let selectors = [
        c.path_prefix.is_some(),
        c.path.is_some(),
        c.path_regex.is_some(),
        c.host.is_some(),
        c.host_prefix.is_some(),
        c.header.is_some(),
        c.method.is_some(),
        c.query.is_some(),
    ];
    let count = selectors.iter().filter(|set| **set).count();
    if count != 1 {
        return Err(source.error(
            at,
            "a condition needs exactly one of path_prefix, path, path_regex, host, host_prefix, header, method, query; \
             split it into several conditions",
        ));
    }
    if c.equals.is_some() && c.header.is_none() && c.query.is_none() {
        return Err(source.error(at, "`equals` only refines `header` or `query`"));
    }
    if c.prefix.is_some() && c.header.is_none() {
        return Err(source.error(at, "`prefix` only refines `header` (for paths use `path_prefix`)"));
    }
    if c.equals.is_some() && c.prefix.is_some() {
        return Err(source.error(at, "use either `equals` or `prefix`, not both"));
    }
    if let Some(method) = &c.method {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(source.error(at, format!("`{method}` is not an HTTP method: write GET, POST, …")));
        }
    }
    if let Some(header) = &c.header {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(source.error(at, format!("`{header}` is not a valid header name")));
        }
    }
    Ok(())
}

fn validate_backend(backend: &super::types::Backend, source: &SourceMap<'_>) -> Result<(), ConfigError> {
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
    if backend.server.is_empty() {
        return Err(source.error(
            Some(backend.name.span()),
            format!(
                "backend `{}` has no servers: add a [[backend.server]] with a name and an address",
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

fn validate_hashing(backend: &super::types::Backend, source: &SourceMap<'_>) -> Result<(), ConfigError> {
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
    for m in &s.match_ {
        let v = m.get_ref();
        let count = [v.cookie.is_some(), v.url_param.is_some(), v.header.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if count != 1 {
            return Err(source.error(
                Some(m.span()),
                "each `match` entry needs exactly one of cookie, url_param, header",
            ));
        }
        if let Some(h) = &v.header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(source.error(Some(m.span()), format!("`{h}` is not a valid header name")));
            }
        }
    }
    if *s.max_entries.get_ref() == 0 {
        return Err(source.error(Some(s.max_entries.span()), "`max_entries` must be at least 1"));
    }
    Ok(())
}
