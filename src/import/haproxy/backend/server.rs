//! HAProxy `server` lines (and `default-server`) and health checks
//! (`check`, `option httpchk`, `http-check`).

use super::super::super::duration;
use super::super::super::output::{quote, Section, Value};
use super::super::Directive;
use super::{Backend, SERVER_OPTIONS_WITH_ARGUMENT};

impl Backend {
    pub(super) fn server(&mut self, d: &Directive) -> Result<(), (usize, String)> {
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

    pub(super) fn httpchk(&mut self, d: &Directive) {
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

    pub(super) fn http_check(&mut self, d: &Directive) {
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
}
