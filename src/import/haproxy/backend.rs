//! HAProxy backend-side directives (`balance`, `hash-type`, `cookie`,
//! `stick`, `server`, health checks, retries, server timeouts) → a tether
//! `[[backend]]` with its `[[backend.server]]`s.

use super::super::duration;
use super::super::output::{quote, Origin, Section, Value};
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

    fn stick(&mut self, d: &Directive) {
        let o = &d.origin;
        if d.words.iter().any(|w| w == "if" || w == "unless" || w == "table") {
            self.section
                .not_translated(o, "tether's learned ids have no conditions and one table per backend");
            return;
        }
        let expr = d.word(2);
        let arg = |prefixes: &[&str]| {
            prefixes.iter().find_map(|p| {
                expr.strip_prefix(p)
                    .and_then(|rest| rest.strip_suffix(')'))
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
            })
        };
        let request = if let Some(c) = arg(&["req.cook(", "cookie(", "cook("]) {
            Some(format!("{{ cookie = {} }}", quote(&c)))
        } else if let Some(p) = arg(&["url_param(", "urlp("]) {
            Some(format!("{{ url_param = {} }}", quote(&p)))
        } else {
            arg(&["req.hdr(", "hdr("]).map(|h| format!("{{ header = {} }}", quote(&h)))
        };
        let response = if let Some(c) = arg(&["res.cook(", "set-cookie(", "scook("]) {
            Some(("sticky.learn.response_cookie".to_string(), c))
        } else {
            arg(&["res.hdr(", "shdr("]).map(|h| ("sticky.learn.response_header".to_string(), h))
        };
        match (d.word(1), request, response) {
            ("on", Some(m), _) => {
                self.stick_match.push((m, o.clone()));
                self.stick_on.push(d.clone());
            }
            ("match", Some(m), _) => self.stick_match.push((m, o.clone())),
            ("store-response", _, Some((key, name))) => self.stick_learn.push((key, name, o.clone())),
            ("on" | "match" | "store-request", _, _) if expr == "src" => self.section.not_translated(
                o,
                "tether has no table of client addresses; `balance source` hashes them instead",
            ),
            _ => self.section.not_translated(
                o,
                "tether learns ids from server responses (res.cook, res.hdr) and matches them in cookies, query parameters or headers",
            ),
        }
    }

    fn server(&mut self, d: &Directive) -> Result<(), (usize, String)> {
        let o = &d.origin;
        let (Some(name), Some(address)) = (d.words.get(1), d.words.get(2)) else {
            return Err((o.line, "`server` needs a name and an address".to_string()));
        };
        self.has_servers = true;
        let address = address.strip_prefix("ipv4@").unwrap_or(address);
        let port_ok = address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            self.section.not_translated(
                o,
                &format!("server `{name}` has no `host:port` address tether can use; it is left out"),
            );
            return Ok(());
        }
        let mut server = Section::new("[[backend.server]]", Some(o.clone()));
        server.set("name", Value::Str(name.clone()), o);
        server.set("address", Value::Str(address.to_string()), o);
        let options: Vec<String> = self.default_server.iter().chain(&d.words[3..]).cloned().collect();
        let mut checked = false;
        let mut tls: Option<(bool, Option<String>)> = None;
        let mut keys = Vec::new();
        let mut i = 0;
        while i < options.len() {
            let option = options[i].as_str();
            let value = options.get(i + 1).cloned().unwrap_or_default();
            i += if SERVER_OPTIONS_WITH_ARGUMENT.contains(&option) {
                2
            } else {
                1
            };
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| (o.line, format!("`{option} {v}` is not a number")))
            };
            match option {
                "weight" => server.set("weight", Value::Int(number(&value)?), o),
                "maxconn" => server.set("maxconn", Value::Int(number(&value)?), o),
                "cookie" => server.set("cookie", Value::Str(value), o),
                "check" => checked = true,
                "no-check" => checked = false,
                "inter" | "rise" | "fall" => {
                    let v = if option == "inter" {
                        Value::Str(
                            duration(&value, "ms").ok_or_else(|| (o.line, format!("`inter {value}` is not a time")))?,
                        )
                    } else {
                        Value::Int(number(&value)?)
                    };
                    let key = if option == "inter" {
                        "health.interval".to_string()
                    } else {
                        format!("health.{option}")
                    };
                    keys.push((key, v));
                }
                "observe" => keys.push(("health.observe".to_string(), Value::Bool(true))),
                "slowstart" => match duration(&value, "ms") {
                    Some(t) => self.section.set("slowstart", Value::Str(t), o),
                    None => return Err((o.line, format!("`slowstart {value}` is not a time"))),
                },
                "disabled" => server.set("state", Value::Str("maint".into()), o),
                "enabled" => server.set("state", Value::Str("ready".into()), o),
                "ssl" => tls = Some(tls.unwrap_or((true, None))),
                "verify" => {
                    let entry = tls.get_or_insert((true, None));
                    entry.0 = value != "none";
                }
                "ca-file" => tls.get_or_insert((true, None)).1 = Some(value),
                "sni" if value.starts_with("str(") && value.ends_with(')') => {
                    server.set("sni", Value::Str(value[4..value.len() - 1].to_string()), o)
                }
                "backup" => {
                    self.section.not_translated(
                        o,
                        &format!("server `{name}` is a backup: tether has no backup servers, so it is left out"),
                    );
                    return Ok(());
                }
                other => server.not_translated(o, &format!("server option `{other}` has no tether equivalent")),
            }
        }
        if let Some((verify, ca)) = tls {
            let value = match (verify, ca) {
                (true, None) => Value::Bool(true),
                (verify, ca) => Value::Raw(match ca {
                    Some(ca) => format!("{{ ca = {}, verify = {verify} }}", quote(&ca)),
                    None => format!("{{ verify = {verify} }}"),
                }),
            };
            server.set("tls", value, o);
        }
        if checked && self.check_keys.iter().all(|(k, _, _)| k == "health.timeout") {
            for (key, value) in keys {
                self.check_keys.push((key, value, o.clone()));
            }
        }
        self.checked.push(checked);
        self.servers.push(server);
        Ok(())
    }

    fn httpchk(&mut self, d: &Directive) {
        let o = &d.origin;
        // `option httpchk [URI]` or `option httpchk METHOD URI [VERSION[\r\nHeaders]]`.
        let (method, uri, version) = match d.words.len() {
            2 => ("OPTIONS".to_string(), "/".to_string(), String::new()),
            3 => ("OPTIONS".to_string(), d.word(2).to_string(), String::new()),
            _ => (d.word(2).to_string(), d.word(3).to_string(), d.words[4..].join(" ")),
        };
        self.http_check
            .push(("health.check".into(), Value::Str("http".into()), o.clone()));
        self.http_check.push((
            "health.method".into(),
            Value::Str(method.to_ascii_uppercase()),
            o.clone(),
        ));
        self.http_check.push(("health.path".into(), Value::Str(uri), o.clone()));
        for header in version.split("\r\n").skip(1) {
            match header.split_once(':') {
                Some((h, v)) if h.trim().eq_ignore_ascii_case("host") => {
                    self.http_check
                        .push(("health.host".into(), Value::Str(v.trim().to_string()), o.clone()))
                }
                _ if header.trim().is_empty() => {}
                _ => self
                    .section
                    .not_translated(o, &format!("check header `{header}`: tether's check sends Host only")),
            }
        }
        self.http_check_origin = Some(o.clone());
    }

    fn http_check(&mut self, d: &Directive) {
        let o = &d.origin;
        match (d.word(1), d.word(2), d.word(3)) {
            ("expect", "status", code) if d.words.len() == 4 => {
                let value = code.replace("..", "-");
                self.http_check.push(("health.expect_status".into(), Value::Str(value), o.clone()));
            }
            ("expect", "string", text) if d.words.len() == 4 => {
                self.http_check.push(("health.expect_body".into(), Value::Str(text.to_string()), o.clone()));
            }
            ("send", _, _) => {
                let mut i = 2;
                while i + 1 < d.words.len() {
                    let (k, v) = (d.word(i), d.word(i + 1).to_string());
                    match k {
                        "meth" => self.http_check.push(("health.method".into(), Value::Str(v.to_ascii_uppercase()), o.clone())),
                        "uri" => self.http_check.push(("health.path".into(), Value::Str(v), o.clone())),
                        "hdr" if v.eq_ignore_ascii_case("host") => {
                            self.http_check.push(("health.host".into(), Value::Str(d.word(i + 2).to_string()), o.clone()));
                            i += 1;
                        }
                        other => self.section.not_translated(o, &format!("`http-check send {other}`: tether's check sends method, path and Host")),
                    }
                    i += 2;
                }
            }
            _ => self.section.not_translated(
                o,
                "tether's HTTP check expects a status or status range (`expect status`) or a body substring (`expect string`)",
            ),
        }
    }

    /// Writes the health, stickiness and redispatch keys and returns the finished sections.
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

    fn finish_stick(&mut self) {
        let table = self.stick_table.take();
        if self.stick_learn.is_empty() {
            for d in &self.stick_on {
                self.section.not_translated(
                    &d.origin,
                    "tether stores ids only from server responses: add `stick store-response res.cook(…)`",
                );
            }
            if let Some(t) = table {
                if !self.stick_match.is_empty() || self.stick_on.is_empty() {
                    self.section
                        .not_translated(&t.origin, "no `stick store-response` that tether can learn ids from");
                }
            }
            return;
        }
        if self.stick_match.is_empty() {
            for (_, _, origin) in &self.stick_learn {
                self.section
                    .not_translated(origin, "no `stick on`/`stick match` saying where requests carry the id");
            }
            return;
        }
        for (key, name, origin) in std::mem::take(&mut self.stick_learn) {
            self.section.set(&key, Value::Str(name), &origin);
        }
        let matches: Vec<String> = self.stick_match.iter().map(|(m, _)| m.clone()).collect();
        let origin = self.stick_match[0].1.clone();
        let remark = (!self.stick_on.is_empty())
            .then(|| "`stick on` also stores ids from requests; tether learns them only from responses".to_string());
        self.section.set_remarked(
            "sticky.match",
            Value::Raw(format!("[{}]", matches.join(", "))),
            &origin,
            remark,
        );
        if let Some(t) = table {
            let mut i = 1;
            while i + 1 < t.words.len() {
                let (k, v) = (t.word(i), t.word(i + 1));
                match k {
                    "expire" => match duration(v, "ms") {
                        Some(d) => self.section.set("sticky.idle_timeout", Value::Str(d), &t.origin),
                        None => self.section.not_translated(&t.origin, "`expire` is not a time"),
                    },
                    "size" => match size(v) {
                        Some(n) => self.section.set("sticky.max_entries", Value::Int(n), &t.origin),
                        None => self.section.not_translated(&t.origin, "`size` is not a number"),
                    },
                    "type" | "len" => {}
                    "peers" => self.section.not_translated(
                        &t.origin,
                        "`peers`: share learned ids between instances with [cluster] instead",
                    ),
                    other => self
                        .section
                        .not_translated(&t.origin, &format!("stick-table `{other}` has no tether equivalent")),
                }
                i += 2;
            }
        }
    }
}

/// A table size such as `30k`, `1m`, `100000`.
fn size(text: &str) -> Option<u64> {
    let (digits, factor) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1 << 10),
        'm' | 'M' => (&text[..text.len() - 1], 1 << 20),
        'g' | 'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().map(|n| n * factor)
}
