//! HAProxy backend-side directives (`balance`, `hash-type`, `cookie`,
//! `stick`, `server`, health checks, retries, server timeouts) → a tether
//! `[[backend]]` with its `[[backend.server]]`s (servers and health checks in
//! `server`, stick tables in `stick`).

mod server;
mod stick;

use super::super::duration;
use super::super::output::{Item, Origin, Section, Value};
use super::Directive;

/// A backend being translated.
pub(super) struct Backend {
    pub name: String,
    pub section: Section,
    servers: Vec<Section>,
    /// `default-server` options, applied before each server's own.
    default_server: Vec<String>,
    /// `option httpchk` / `http-check` keys, used when a server has `check`.
    http_check: Vec<(String, Value, Origin)>,
    http_check_origin: Option<Origin>,
    /// `inter`/`rise`/`fall`/`timeout check` keys, from the first checked server.
    check_keys: Vec<(String, Value, Origin)>,
    checked: Vec<bool>,
    stick_table: Option<Directive>,
    stick_match: Vec<(String, Origin)>,
    stick_learn: Vec<(String, String, Origin)>,
    stick_on: Vec<Directive>,
    /// `option forwardfor` seen (the frontends reaching it add `X-Forwarded-For`).
    pub forwardfor: bool,
    redispatch: Option<Origin>,
    /// Whether any directive of this backend's own section (not `defaults`) was read.
    pub has_servers: bool,
}

/// Server options that take one argument (so the next word is skipped with them).
const SERVER_OPTIONS_WITH_ARGUMENT: &[&str] = &[
    "weight",
    "maxconn",
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "cookie",
    "ca-file",
    "sni",
    "slowstart",
    "observe",
    "port",
    "id",
    "resolvers",
    "init-addr",
    "on-error",
    "error-limit",
    "verify",
    "crt",
    "addr",
    "agent-port",
    "agent-inter",
    "agent-send",
    "on-marked-down",
    "on-marked-up",
    "track",
    "maxqueue",
    "minconn",
    "redir",
    "source",
    "proto",
    "alpn",
    "check-alpn",
    "ciphers",
    "ciphersuites",
    "pool-max-conn",
    "pool-purge-delay",
    "namespace",
    "ws",
    "resolve-prefer",
    "resolve-net",
    "crl-file",
    "verifyhost",
    "log-proto",
    "max-reuse",
    "pool-low-conn",
    "tcp-ut",
    "check-sni",
    "check-proto",
    "set-proxy-v2-tlv-fmt",
    "shard",
];

impl Backend {
    /// A backend named `name`, opened at `origin`.
    pub fn new(name: &str, origin: &Origin) -> Self {
        let mut section = Section::new("[[backend]]", Some(origin.clone()));
        section.set("name", Value::Str(name.to_string()), origin);
        Backend {
            name: name.to_string(),
            section,
            servers: Vec::new(),
            default_server: Vec::new(),
            http_check: Vec::new(),
            http_check_origin: None,
            check_keys: Vec::new(),
            checked: Vec::new(),
            stick_table: None,
            stick_match: Vec::new(),
            stick_learn: Vec::new(),
            stick_on: Vec::new(),
            forwardfor: false,
            redispatch: None,
            has_servers: false,
        }
    }

    /// Handles `d` if it is a backend directive (true), translated or noted.
    pub fn directive(&mut self, d: &Directive) -> Result<bool, (usize, String)> {
        let o = &d.origin;
        let s = &mut self.section;
        match (d.word(0), d.word(1)) {
            ("balance", kind) => self.balance(d, kind),
            ("hash-type", "consistent") => s.set("hash", Value::Str("consistent".into()), o),
            ("hash-type", "map-based") => s.set("hash", Value::Str("map".into()), o),
            ("hash-type", _) => s.not_translated(o, "tether hashes with `map`, `consistent` or `maglev`"),
            ("hash-balance-factor", factor) => match factor.parse::<u32>() {
                Ok(percent) if percent >= 100 => s.set("balance_factor", Value::Float(f64::from(percent) / 100.0), o),
                Ok(0) => s.builtin(o, "0 disables the bound, as an absent `balance_factor` does"),
                _ => {
                    return Err((
                        o.line,
                        format!("`hash-balance-factor {factor}`: write a percentage of 100 or more"),
                    ))
                }
            },
            ("cookie", _) => self.cookie(d)?,
            ("stick-table", _) => self.stick_table = Some(d.clone()),
            ("stick", _) => self.stick(d),
            ("server", _) => self.server(d)?,
            ("default-server", _) => {
                self.default_server.extend(d.words[1..].iter().cloned());
                s.builtin(o, "its options are applied to each server below");
            }
            ("option", "httpchk") => self.httpchk(d),
            ("http-check", _) => self.http_check(d),
            ("option", "redispatch") => {
                s.set("redispatch", Value::Bool(true), o);
                self.redispatch = Some(o.clone());
            }
            ("no", "option") if d.word(2) == "redispatch" => {
                s.set("redispatch", Value::Bool(false), o);
                self.redispatch = Some(o.clone());
            }
            ("retries", n) => match n.parse::<u32>() {
                Ok(n) => s.set_remarked(
                    "retries",
                    Value::Int(u64::from(n)),
                    o,
                    Some("tether retries a failed connect on other servers, never the same one".into()),
                ),
                Err(_) => return Err((o.line, format!("`retries {n}` is not a number"))),
            },
            ("option", "forwardfor") => {
                self.forwardfor = true;
                if d.words.len() > 2 {
                    s.not_translated(o, "tether's X-Forwarded-For has no `except`/`header`/`if-none` options");
                } else {
                    s.builtin(o, "the frontends reaching this backend add X-Forwarded-For");
                }
            }
            ("timeout", which) => {
                let key = match which {
                    "connect" => "timeouts.connect",
                    "server" => "timeouts.server",
                    "tunnel" => "timeouts.tunnel",
                    "queue" => "queue_timeout",
                    "check" => "check",
                    _ => return Ok(false),
                };
                let Some(value) = duration(d.word(2), "ms") else {
                    return Err((o.line, format!("`{}` is not a time like 5000, 5s or 1m", d.word(2))));
                };
                match key {
                    "check" => self
                        .check_keys
                        .push(("health.timeout".into(), Value::Str(value), o.clone())),
                    "timeouts.server" => {
                        s.set("timeouts.server", Value::Str(value.clone()), o);
                        s.set("timeouts.server_body", Value::Str(value), o);
                    }
                    _ => s.set(key, Value::Str(value), o),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn balance(&mut self, d: &Directive, kind: &str) {
        let (o, s) = (&d.origin, &mut self.section);
        let mut set = |balance: &str| s.set("balance", Value::Str(balance.to_string()), o);
        match kind {
            "roundrobin" | "static-rr" => set("roundrobin"),
            "leastconn" => set("leastconn"),
            "source" => set("source"),
            "uri" if d.words.len() == 2 => set("uri"),
            "url_param" if !d.word(2).is_empty() && d.words.len() == 3 => {
                set("url_param");
                s.set("hash_key", Value::Str(d.word(2).to_string()), o);
            }
            "random" | "random(2)" => set("random"),
            k if k.starts_with("hdr(") && k.ends_with(')') && k.len() > 5 => {
                set("header");
                s.set("hash_key", Value::Str(k[4..k.len() - 1].to_string()), o);
            }
            _ => s.not_translated(
                o,
                "tether balances by roundrobin, leastconn, source, uri, url_param, hdr() or random (two draws)",
            ),
        }
    }

    fn cookie(&mut self, d: &Directive) -> Result<(), (usize, String)> {
        let (o, s) = (&d.origin, &mut self.section);
        let Some(name) = d.words.get(1) else {
            return Err((o.line, "`cookie` needs a name".to_string()));
        };
        let mut mode = None;
        let mut flags = Vec::new();
        let mut domains = Vec::new();
        let mut rest = d.words[2..].iter();
        let mut untranslated = Vec::new();
        while let Some(word) = rest.next() {
            match word.as_str() {
                "insert" | "prefix" | "rewrite" => mode = Some(word.clone()),
                "indirect" | "nocache" | "httponly" | "secure" => flags.push(word.clone()),
                "domain" => domains.extend(rest.next().cloned()),
                "maxlife" => match rest.next().and_then(|t| duration(t, "s")) {
                    Some(t) => s.set_remarked(
                        "sticky.max_age",
                        Value::Str(t),
                        o,
                        Some("HAProxy's `maxlife` expires the cookie server-side; tether sets it as the cookie's Max-Age".into()),
                    ),
                    None => untranslated.push("maxlife".to_string()),
                },
                "attr" => match rest.next().map(|a| a.to_ascii_lowercase()) {
                    Some(a) if a.starts_with("samesite=") => {
                        s.set("sticky.samesite", Value::Str(a["samesite=".len()..].to_string()), o)
                    }
                    other => untranslated.push(format!("attr {}", other.unwrap_or_default())),
                },
                "maxidle" => {
                    rest.next();
                    untranslated.push("maxidle".to_string());
                }
                other => untranslated.push(other.to_string()),
            }
        }
        match mode.as_deref() {
            Some("insert") | Some("prefix") => {
                s.set("sticky.cookie", Value::Str(name.clone()), o);
                s.set("sticky.mode", Value::Str(mode.clone().unwrap_or_default()), o);
            }
            _ => {
                s.not_translated(
                    o,
                    "cookie `rewrite` mode (HAProxy's default): tether inserts its own cookie or prefixes the server's",
                );
                return Ok(());
            }
        }
        for flag in ["indirect", "nocache"] {
            if flags.iter().any(|f| f == flag) {
                s.set(&format!("sticky.{flag}"), Value::Bool(true), o);
            }
        }
        // HAProxy sets neither attribute unless asked; tether's defaults differ, so both are written.
        let httponly = flags.iter().any(|f| f == "httponly");
        let secure = flags.iter().any(|f| f == "secure");
        s.set("sticky.httponly", Value::Bool(httponly), o);
        s.set("sticky.secure", Value::Bool(secure), o);
        match domains.as_slice() {
            [] => {}
            [one] => s.set("sticky.domain", Value::Str(one.clone()), o),
            _ => untranslated.push("several domain".to_string()),
        }
        for option in untranslated {
            s.not_translated(o, &format!("cookie option `{option}` has no tether equivalent"));
        }
        Ok(())
    }

    /// Without `timeout tunnel`, HAProxy closes an idle WebSocket after
    /// `timeout client`/`timeout server`; tether's own default is an hour, so
    /// the server timeout is written as the tunnel's.
    fn tunnel_from_server_timeout(&mut self) {
        let key = |item: &Item, name: &str| matches!(item, Item::Key { key, .. } if key == name);
        if self.section.items.iter().any(|i| key(i, "timeouts.tunnel")) {
            return;
        }
        let server = self.section.items.iter().find_map(|i| match i {
            Item::Key {
                key,
                value: Value::Str(v),
                from,
                ..
            } if key == "timeouts.server" => Some((v.clone(), from[0].clone())),
            _ => None,
        });
        if let Some((value, from)) = server {
            self.section.set_remarked(
                "timeouts.tunnel",
                Value::Str(value),
                &from,
                Some(
                    "no `timeout tunnel`: HAProxy closes idle WebSockets after `timeout client`/`timeout server`"
                        .into(),
                ),
            );
        }
    }

    /// Writes the health, stickiness and redispatch keys and returns the finished section.
    pub fn finish(mut self) -> Section {
        let any_checked = self.checked.iter().any(|c| *c);
        if any_checked {
            let checks = if self.http_check.is_empty() {
                let origin = self.servers[self.checked.iter().position(|c| *c).unwrap_or(0)]
                    .from
                    .clone()
                    .unwrap_or(Origin {
                        line: 0,
                        text: String::new(),
                    });
                vec![("health.check".to_string(), Value::Str("tcp".into()), origin)]
            } else {
                std::mem::take(&mut self.http_check)
            };
            for (key, value, origin) in checks.iter().chain(&self.check_keys) {
                self.section.set(key, value.clone(), origin);
            }
            if self.checked.iter().any(|c| !*c) {
                for (server, checked) in self.servers.iter_mut().zip(&self.checked) {
                    if let (false, Some(from)) = (checked, server.from.clone()) {
                        server.not_translated(
                            &from,
                            "no `check` here, but tether checks every server of a backend with `health`",
                        );
                    }
                }
            }
        } else if let Some(origin) = &self.http_check_origin {
            self.section
                .builtin(origin, "no server has `check`, so nothing is checked (as in HAProxy)");
        }
        self.finish_stick();
        self.tunnel_from_server_timeout();
        if self.redispatch.is_none() {
            if let Some(from) = self.section.from.clone() {
                self.section.set_remarked(
                    "redispatch",
                    Value::Bool(false),
                    &from,
                    Some("HAProxy sends a stuck client to another server only with `option redispatch`".into()),
                );
            }
        }
        self.section.children = self.servers;
        self.section
    }
}
