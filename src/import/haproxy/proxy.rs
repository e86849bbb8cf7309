//! HAProxy sections → tether: `global` (`nbthread`), `defaults`
//! (inherited by the proxies after it), `frontend` and `listen` (binds,
//! ACL routes, client timeouts, `stats` → `[admin]`) and `backend` (see
//! `backend`).

use super::super::output::{quote, Doc, Origin, Section, Value};
use super::super::{duration, listen_address};
use super::acl::Acls;
use super::backend::Backend;
use super::{Block, Directive, Kind};

/// A frontend being translated.
struct Frontend {
    name: String,
    section: Section,
    routes: Vec<Section>,
    acls: Acls,
    plain_binds: Vec<(String, Origin)>,
    tls_binds: Vec<(String, Origin)>,
    certificates: Vec<(String, Origin)>,
    forwardfor: Option<Origin>,
    keep_alive_set: bool,
    stats: Vec<Directive>,
    /// Backends it routes to, with the line naming each (checked to exist).
    targets: Vec<(String, Origin)>,
}

impl Frontend {
    fn new(name: &str, origin: &Origin) -> Self {
        let mut section = Section::new("[[frontend]]", Some(origin.clone()));
        section.set("name", Value::Str(name.to_string()), origin);
        Frontend {
            name: name.to_string(),
            section,
            routes: Vec::new(),
            acls: Acls::default(),
            plain_binds: Vec::new(),
            tls_binds: Vec::new(),
            certificates: Vec::new(),
            forwardfor: None,
            keep_alive_set: false,
            stats: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Handles `d` if it is a frontend directive (true), translated or noted.
    fn directive(&mut self, d: &Directive) -> Result<bool, (usize, String)> {
        let o = &d.origin;
        let s = &mut self.section;
        match (d.word(0), d.word(1)) {
            ("bind", _) => self.bind(d)?,
            ("acl", _) => self.acls.define(&d.words[1..]).map_err(|reason| (o.line, reason))?,
            ("use_backend", backend) => {
                if backend.is_empty() {
                    return Err((o.line, "`use_backend` needs a backend name".to_string()));
                }
                if backend.contains("%[") {
                    s.not_translated(
                        o,
                        "tether routes name their backend; it cannot be computed from the request",
                    );
                    return Ok(true);
                }
                if d.words.len() == 2 {
                    s.not_translated(
                        o,
                        "a tether route needs a condition: write `default_backend` for a catch-all",
                    );
                    return Ok(true);
                }
                match self.acls.routes(&d.words[2..]).map_err(|reason| (o.line, reason))? {
                    Ok(routes) => {
                        self.targets.push((backend.to_string(), o.clone()));
                        for conditions in routes {
                            let mut route = Section::new("[[frontend.route]]", Some(o.clone()));
                            route.set("backend", Value::Str(backend.to_string()), o);
                            if !conditions.all.is_empty() {
                                route.set("all", Value::Raw(format!("[{}]", conditions.all.join(", "))), o);
                            }
                            if !conditions.any.is_empty() {
                                route.set("any", Value::Raw(format!("[{}]", conditions.any.join(", "))), o);
                            }
                            self.routes.push(route);
                        }
                    }
                    Err(reason) => s.not_translated(o, &reason),
                }
            }
            ("default_backend", backend) => {
                if backend.is_empty() {
                    return Err((o.line, "`default_backend` needs a backend name".to_string()));
                }
                s.set("default_backend", Value::Str(backend.to_string()), o);
                self.targets
                    .retain(|(_, origin)| !origin.text.starts_with("default_backend"));
                self.targets.push((backend.to_string(), o.clone()));
            }
            ("maxconn", n) => match n.parse::<u64>() {
                Ok(n) => s.set("maxconn", Value::Int(n), o),
                Err(_) => return Err((o.line, format!("`maxconn {n}` is not a number"))),
            },
            ("timeout", which @ ("client" | "http-request" | "http-keep-alive")) => {
                let Some(value) = duration(d.word(2), "ms") else {
                    return Err((o.line, format!("`{}` is not a time like 5000, 5s or 1m", d.word(2))));
                };
                match which {
                    "client" => {
                        s.set("timeouts.client_body", Value::Str(value.clone()), o);
                        if !self.keep_alive_set {
                            s.set("timeouts.client", Value::Str(value), o);
                        }
                    }
                    "http-request" => s.set("timeouts.http_request", Value::Str(value), o),
                    _ => {
                        s.set("timeouts.client", Value::Str(value), o);
                        self.keep_alive_set = true;
                    }
                }
            }
            ("option", "forwardfor") => {
                if d.words.len() > 2 {
                    s.not_translated(o, "tether's X-Forwarded-For has no `except`/`header`/`if-none` options");
                }
                self.forwardfor = Some(o.clone());
            }
            ("stats", _) => self.stats.push(d.clone()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn bind(&mut self, d: &Directive) -> Result<(), (usize, String)> {
        let o = &d.origin;
        let Some(addresses) = d.words.get(1) else {
            return Err((o.line, "`bind` needs an address".to_string()));
        };
        let mut ssl = false;
        let mut rest = d.words[2..].iter();
        while let Some(option) = rest.next() {
            match option.as_str() {
                "ssl" => ssl = true,
                "crt" => match rest.next() {
                    Some(file) => self.certificates.push((file.clone(), o.clone())),
                    None => return Err((o.line, "`crt` needs a file".to_string())),
                },
                "alpn" => {
                    let protocols = rest.next().cloned().unwrap_or_default();
                    if !protocols.split(',').all(|p| p == "h2" || p == "http/1.1") {
                        self.section
                            .not_translated(o, &format!("ALPN `{protocols}`: tether offers h2 and http/1.1"));
                    }
                }
                "v4v6" | "transparent" | "defer-accept" => {}
                other => self
                    .section
                    .not_translated(o, &format!("bind option `{other}` has no tether equivalent")),
            }
        }
        for address in addresses.split(',') {
            match listen_address(address) {
                Some(a) if ssl => self.tls_binds.push((a, o.clone())),
                Some(a) => self.plain_binds.push((a, o.clone())),
                None => self
                    .section
                    .not_translated(o, &format!("`{address}`: tether listens on ip:port addresses")),
            }
        }
        if ssl && self.certificates.is_empty() {
            self.section
                .not_translated(o, "`ssl` without `crt`: give tether the certificate in `tls`");
        }
        Ok(())
    }

    /// Whether the section only serves the stats page (no route, no backend).
    fn is_stats_only(&self, has_servers: bool) -> bool {
        let routes_elsewhere = self.targets.iter().any(|(t, _)| t != &self.name);
        !self.stats.is_empty() && !routes_elsewhere && !has_servers
    }

    /// The `[[frontend]]` sections (two when it listens both plain and TLS).
    fn finish(mut self, forward: Option<(Value, Origin, Option<String>)>) -> Result<Vec<Section>, (usize, String)> {
        let origin = self.section.from.clone().unwrap_or(Origin {
            line: 0,
            text: String::new(),
        });
        if self.plain_binds.is_empty() && self.tls_binds.is_empty() {
            return Err((
                origin.line,
                format!("`{}` has no `bind`: tether cannot listen for it", self.name),
            ));
        }
        for stats in &self.stats {
            self.section.not_translated(
                &stats.origin,
                "tether serves its stats page on the [admin] address, not on a frontend",
            );
        }
        if let Some((value, from, remark)) = forward {
            self.section.set_remarked("forward_headers", value, &from, remark);
        }
        let bind_value = |binds: &[(String, Origin)]| Value::Strs(binds.iter().map(|(a, _)| a.clone()).collect());
        let mut sections = Vec::new();
        let mut tls_section = if self.plain_binds.is_empty() {
            None
        } else {
            let mut plain = self.section.clone();
            plain.set("bind", bind_value(&self.plain_binds), &self.plain_binds[0].1);
            plain.children = self.routes.clone();
            sections.push(plain);
            (!self.tls_binds.is_empty()).then(|| {
                let mut tls = self.section.clone();
                tls.set_remarked(
                    "name",
                    Value::Str(format!("{}-tls", self.name)),
                    &self.tls_binds[0].1,
                    Some("a tether frontend is all TLS or all plain: its TLS binds are a frontend of their own".into()),
                );
                tls
            })
        };
        if self.plain_binds.is_empty() {
            tls_section = Some(self.section.clone());
        }
        if let Some(mut tls) = tls_section {
            tls.set("bind", bind_value(&self.tls_binds), &self.tls_binds[0].1);
            match self.certificates.as_slice() {
                [] => {}
                [(file, from)] => {
                    tls.set_remarked(
                        "tls.cert",
                        Value::Str(file.clone()),
                        from,
                        Some("HAProxy's crt file holds the certificate and its key; tether reads both from it".into()),
                    );
                    tls.set("tls.key", Value::Str(file.clone()), from);
                }
                many => {
                    let list: Vec<String> = many
                        .iter()
                        .map(|(f, _)| format!("{{ cert = {}, key = {} }}", quote(f), quote(f)))
                        .collect();
                    tls.set(
                        "tls.certificates",
                        Value::Raw(format!("[{}]", list.join(", "))),
                        &many[0].1,
                    );
                }
            }
            tls.children = self.routes;
            sections.push(tls);
        }
        Ok(sections)
    }
}

/// Why a directive tether does not have is not translated (common ones get a precise reason).
fn reason(d: &Directive) -> String {
    match (d.word(0), d.word(1)) {
        ("log", _) | ("option", "httplog" | "dontlognull" | "tcplog" | "log-health-checks") => {
            "tether writes its own access log to stderr".into()
        }
        ("option", "http-server-close" | "http-keep-alive" | "httpclose" | "forceclose" | "http-pretend-keepalive") => {
            "tether keeps client connections alive and pools server connections by itself".into()
        }
        ("http-request" | "http-response" | "http-after-response", _) => {
            "tether has no request or response rules yet".into()
        }
        ("daemon" | "user" | "group" | "chroot" | "pidfile" | "uid" | "gid", _) => {
            "run tether under a service manager (systemd) for this".into()
        }
        ("maxconn", _) => "tether has no process-wide limit: set `maxconn` on each frontend".into(),
        ("stats", "socket") => "tether's runtime API is HTTP, on [admin]".into(),
        (word, _) => format!("`{word}` has no tether equivalent"),
    }
}

/// Translates the parsed sections; an error is (line, reason).
pub(super) fn translate(blocks: &[Block]) -> Result<Doc, (usize, String)> {
    let mut doc = Doc::default();
    let mut defaults: Option<&Block> = None;
    let mut frontends: Vec<Frontend> = Vec::new();
    let mut backends: Vec<Backend> = Vec::new();
    for block in blocks {
        match block.kind {
            Kind::Global => global(&mut doc.top, block),
            Kind::Defaults => {
                defaults = Some(block);
                // A directive neither side takes is noted once, at the top.
                let mut fe = Frontend::new("", &block.origin);
                let mut be = Backend::new("", &block.origin);
                for d in &block.directives {
                    if d.word(0) == "mode" {
                        match d.word(1) {
                            "http" => doc.top.builtin(&d.origin, "tether always speaks HTTP"),
                            _ => doc
                                .top
                                .not_translated(&d.origin, "tether balances HTTP and WebSocket only, not raw TCP"),
                        }
                        continue;
                    }
                    let taken = fe.directive(d)? | be.directive(d)?;
                    if !taken {
                        doc.top.not_translated(&d.origin, &reason(d));
                    }
                }
            }
            Kind::Other => {
                doc.top
                    .not_translated(&block.origin, "a section tether has no equivalent of");
                for d in &block.directives {
                    doc.top
                        .not_translated(&d.origin, "inside a section tether has no equivalent of");
                }
            }
            Kind::Frontend | Kind::Backend | Kind::Listen => {
                let inherited = defaults.map_or(&[][..], |b| &b.directives[..]);
                let mut fe = (block.kind != Kind::Backend).then(|| Frontend::new(&block.name, &block.origin));
                let mut be = (block.kind != Kind::Frontend).then(|| Backend::new(&block.name, &block.origin));
                if let (Some(fe), Some(_)) = (&mut fe, &be) {
                    fe.section
                        .set("default_backend", Value::Str(block.name.clone()), &block.origin);
                    fe.targets.push((block.name.clone(), block.origin.clone()));
                }
                for (own, d) in inherited
                    .iter()
                    .map(|d| (false, d))
                    .chain(block.directives.iter().map(|d| (true, d)))
                {
                    if d.word(0) == "mode" {
                        if own || d.word(1) != "http" {
                            let target = fe
                                .as_mut()
                                .map_or_else(|| be.as_mut().map(|b| &mut b.section), |f| Some(&mut f.section));
                            if let Some(section) = target {
                                if d.word(1) == "http" {
                                    section.builtin(&d.origin, "tether always speaks HTTP");
                                } else {
                                    section.not_translated(
                                        &d.origin,
                                        "tether balances HTTP and WebSocket only, not raw TCP",
                                    );
                                }
                            }
                        }
                        continue;
                    }
                    let by_fe = match &mut fe {
                        Some(fe) => fe.directive(d)?,
                        None => false,
                    };
                    let by_be = match &mut be {
                        Some(be) => be.directive(d)?,
                        None => false,
                    };
                    if own && !by_fe && !by_be {
                        let section = match (&mut fe, &mut be) {
                            (Some(fe), _) => &mut fe.section,
                            (None, Some(be)) => &mut be.section,
                            (None, None) => continue,
                        };
                        section.not_translated(&d.origin, &reason(d));
                    }
                }
                let has_servers = be.as_ref().is_some_and(|b| b.has_servers);
                match fe {
                    Some(fe) if fe.is_stats_only(has_servers) && doc.admin.is_none() => {
                        doc.admin = Some(admin(fe)?);
                        be = None;
                    }
                    Some(fe) => frontends.push(fe),
                    None => {}
                }
                if let Some(be) = be {
                    backends.push(be);
                }
            }
        }
    }
    for fe in frontends {
        for (target, origin) in &fe.targets {
            if !backends.iter().any(|b| &b.name == target) {
                return Err((origin.line, format!("there is no backend named `{target}`")));
            }
        }
        let reaching: Vec<&Backend> = backends
            .iter()
            .filter(|b| fe.targets.iter().any(|(t, _)| t == &b.name))
            .collect();
        let by_backend = reaching.iter().filter(|b| b.forwardfor).count();
        let from = fe.section.from.clone();
        let forward = match (&fe.forwardfor, by_backend, from) {
            (Some(origin), _, _) => Some((Value::Strs(vec!["x-forwarded-for".into()]), origin.clone(), None)),
            (None, n, Some(from)) if n > 0 => Some((
                Value::Strs(vec!["x-forwarded-for".into()]),
                from,
                (n < reaching.len()).then(|| {
                    "some of its backends have `option forwardfor`: tether adds the header for all of them".to_string()
                }),
            )),
            (None, _, Some(from)) => Some((
                Value::Strs(Vec::new()),
                from,
                Some("HAProxy adds no forwarding headers without `option forwardfor`".into()),
            )),
            _ => None,
        };
        doc.frontends.extend(fe.finish(forward)?);
    }
    doc.backends = backends.into_iter().map(Backend::finish).collect();
    Ok(doc)
}

/// `global`: `nbthread` → `workers`; everything else is noted.
fn global(top: &mut Section, block: &Block) {
    for d in &block.directives {
        match (d.word(0), d.word(1).parse::<u64>()) {
            ("nbthread", Ok(n)) => top.set("workers", Value::Int(n), &d.origin),
            _ => top.not_translated(&d.origin, &reason(d)),
        }
    }
}

/// A stats-only `listen`/`frontend` → `[admin]`.
fn admin(fe: Frontend) -> Result<Section, (usize, String)> {
    let origin = fe.section.from.clone().unwrap_or(Origin {
        line: 0,
        text: String::new(),
    });
    let mut admin = Section::new("[admin]", Some(origin.clone()));
    let Some((address, bind_origin)) = fe.plain_binds.first().or(fe.tls_binds.first()).cloned() else {
        return Err((origin.line, "the stats section has no `bind`".to_string()));
    };
    let mut users = false;
    for d in &fe.stats {
        let o = &d.origin;
        match d.word(1) {
            "enable" => admin.builtin(o, "the stats page is at / of the admin address"),
            "auth" => {
                users = true;
                let user = d.word(2).split(':').next().unwrap_or_default();
                admin.not_translated(
                    o,
                    &format!(
                        "passwords must be re-hashed with `tether hash-password`: add users = [{{ name = \"{user}\", password_hash = \"…\" }}]"
                    ),
                );
            }
            "uri" => admin.not_translated(
                o,
                "tether's stats page is at / of the admin address (JSON under /api/v1/, metrics at /metrics)",
            ),
            other => admin.not_translated(o, &format!("`stats {other}` has no tether equivalent")),
        }
    }
    let loopback = address.starts_with("127.") || address.starts_with("[::1]");
    if loopback {
        admin.set("bind", Value::Str(address), &bind_origin);
    } else {
        let port = address.rsplit(':').next().unwrap_or("9000");
        admin.set_remarked(
            "bind",
            Value::Str(format!("127.0.0.1:{port}")),
            &bind_origin,
            Some(format!(
                "tether serves an admin address other than loopback only with `users`{}: add them, then bind {address}",
                if users { " (see the re-hashing note)" } else { "" }
            )),
        );
        admin.not_translated(
            &bind_origin,
            "the stats page listens on loopback until [admin] has users",
        );
    }
    for d in fe.section.items.iter() {
        if let super::super::output::Item::NotTranslated { from, reason } = d {
            admin.not_translated(from, reason);
        }
    }
    Ok(admin)
}
