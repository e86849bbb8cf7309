//! Cookie stickiness: tether's own cookie naming the server (`insert`), or
//! the server's session cookie prefixed with the server id (`prefix`), with
//! plain or opaque (HMAC) server ids.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::balance::{hash_bytes, ServerId};
use crate::config::model::StickyCookie;
use crate::config::types::{CookieMode, SameSite};

/// Cookie values longer than this are ignored as garbage.
pub const MAX_COOKIE_VALUE: usize = 256;
/// Separates the server id from the server's own value in `prefix` mode.
const PREFIX_SEPARATOR: char = '~';

/// What a request's stickiness cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieState {
    /// No stickiness cookie.
    Absent,
    /// A cookie that names no server (garbage, over-long, forged, or a removed server).
    Invalid,
    /// A cookie naming this server.
    Server(ServerId),
}

/// The stickiness cookie of one backend.
#[derive(Debug)]
pub struct CookieSticky {
    name: String,
    mode: CookieMode,
    indirect: bool,
    nocache: bool,
    /// The whole `Set-Cookie` value for each server, by `ServerId`: without
    /// and with `; Secure` (chosen per frontend). Built once per config, so
    /// inserting the cookie into a response is a reference-count increment.
    set_cookie: Vec<[Option<HeaderValue>; 2]>,
    /// `Some(x)`: always / never `Secure`; `None`: on TLS frontends only.
    secure: Option<bool>,
    /// The value written for each server, by `ServerId`.
    values: Vec<String>,
    /// Server by value.
    by_value: HashMap<String, ServerId>,
}

/// The id of a server in a plain cookie: its `cookie` setting, or a stable
/// id derived from its name.
pub fn server_cookie_id(name: &str, configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:08x}", hash_bytes(name.as_bytes()) as u32))
}

/// The opaque value of a server id under `secret`: 96 bits of HMAC-SHA256, hex.
pub fn opaque_value(secret: &str, id: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot happen.
        return id.to_string();
    };
    mac.update(b"tether-server:");
    mac.update(id.as_bytes());
    mac.finalize().into_bytes()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CookieSticky {
    /// Builds the cookie handling for `servers` (name, configured cookie id), in `ServerId` order.
    pub fn new(config: &StickyCookie, servers: &[(&str, Option<&str>)]) -> Self {
        let name = &config.name;
        let values: Vec<String> = servers
            .iter()
            .map(|(server, configured)| {
                let id = server_cookie_id(server, *configured);
                match &config.opaque_secret {
                    Some(secret) => opaque_value(secret, &id),
                    None => id,
                }
            })
            .collect();
        let by_value = values.iter().enumerate().map(|(i, v)| (v.clone(), i)).collect();
        let mut attributes = format!("; Path={}", config.path);
        if let Some(domain) = &config.domain {
            attributes.push_str(&format!("; Domain={domain}"));
        }
        if let Some(max_age) = config.max_age {
            attributes.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        if config.httponly {
            attributes.push_str("; HttpOnly");
        }
        if let Some(same_site) = config.samesite {
            attributes.push_str(match same_site {
                SameSite::Strict => "; SameSite=Strict",
                SameSite::Lax => "; SameSite=Lax",
                SameSite::None => "; SameSite=None",
            });
        }
        let set_cookie = values
            .iter()
            .map(|value| {
                let plain = format!("{name}={value}{attributes}");
                let secure = format!("{plain}; Secure");
                [HeaderValue::from_str(&plain).ok(), HeaderValue::from_str(&secure).ok()]
            })
            .collect();
        Self {
            name: name.to_string(),
            mode: config.mode,
            indirect: config.indirect,
            nocache: config.nocache,
            set_cookie,
            secure: config.secure,
            values,
            by_value,
        }
    }

    /// The value this cookie carries for `server`.
    pub fn value_of(&self, server: ServerId) -> Option<&str> {
        self.values.get(server).map(String::as_str)
    }

    fn server_of_value(&self, value: &str) -> CookieState {
        if value.len() > MAX_COOKIE_VALUE {
            return CookieState::Invalid;
        }
        match self.by_value.get(value) {
            Some(id) => CookieState::Server(*id),
            None => CookieState::Invalid,
        }
    }

    /// What the request's cookie says about its server.
    pub fn state(&self, headers: &HeaderMap) -> CookieState {
        let Some(value) = crate::lookup::cookie(headers, &self.name) else {
            return CookieState::Absent;
        };
        match self.mode {
            CookieMode::Insert => self.server_of_value(value),
            CookieMode::Prefix => match value.split_once(PREFIX_SEPARATOR) {
                Some((id, _)) => self.server_of_value(id),
                None => CookieState::Absent,
            },
        }
    }

    /// Rewrites the request's cookies for the server: `insert` + `indirect`
    /// drops tether's cookie; `prefix` strips the server id from the value.
    pub fn rewrite_request(&self, headers: &mut HeaderMap) {
        match self.mode {
            CookieMode::Insert if self.indirect => {
                rewrite_cookies(headers, |name, value| (name != self.name).then(|| value.to_string()))
            }
            CookieMode::Insert => {}
            CookieMode::Prefix => rewrite_cookies(headers, |name, value| {
                if name != self.name {
                    return Some(value.to_string());
                }
                Some(
                    value
                        .split_once(PREFIX_SEPARATOR)
                        .map_or(value, |(_, rest)| rest)
                        .to_string(),
                )
            }),
        }
    }

    /// Rewrites the response: `insert` sets the cookie when the client's
    /// did not already name `server`; `prefix` prefixes the server's own cookie.
    pub fn rewrite_response(&self, headers: &mut HeaderMap, server: ServerId, client: CookieState, https: bool) {
        let Some(value) = self.value_of(server) else { return };
        match self.mode {
            CookieMode::Insert => {
                if client == CookieState::Server(server) {
                    return;
                }
                let secure = self.secure.unwrap_or(https);
                if let Some(header) = self
                    .set_cookie
                    .get(server)
                    .and_then(|both| both[usize::from(secure)].clone())
                {
                    headers.append(SET_COOKIE, header);
                }
                if self.nocache {
                    mark_uncacheable(headers);
                }
            }
            CookieMode::Prefix => {
                let prefix = format!("{}={value}{PREFIX_SEPARATOR}", self.name);
                let start = format!("{}=", self.name);
                let rewritten: Vec<HeaderValue> = headers
                    .get_all(SET_COOKIE)
                    .iter()
                    .map(|header| match header.to_str() {
                        Ok(text) if text.starts_with(&start) => {
                            HeaderValue::from_str(&format!("{prefix}{}", &text[start.len()..]))
                                .unwrap_or(header.clone())
                        }
                        _ => header.clone(),
                    })
                    .collect();
                if rewritten.is_empty() {
                    return;
                }
                headers.remove(SET_COOKIE);
                for header in rewritten {
                    headers.append(SET_COOKIE, header);
                }
            }
        }
    }
}

/// `Cache-Control: no-cache="set-cookie"` so no shared cache stores a
/// response that sticks its client to a server; an existing `Vary` is kept.
fn mark_uncacheable(headers: &mut HeaderMap) {
    const DIRECTIVE: &str = "no-cache=\"set-cookie\"";
    let value = match headers.get(CACHE_CONTROL).map(|v| v.to_str()) {
        Some(Ok(existing)) if existing.contains(DIRECTIVE) => return,
        Some(Ok(existing)) if !existing.is_empty() => format!("{existing}, {DIRECTIVE}"),
        // None, empty or not text: the directive alone.
        _ => {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(DIRECTIVE));
            return;
        }
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(CACHE_CONTROL, value);
    }
}

/// Rebuilds every `Cookie` header, keeping each `name=value` pair as `keep`
/// says (`None` drops it). Headers left empty are removed.
fn rewrite_cookies(headers: &mut HeaderMap, mut keep: impl FnMut(&str, &str) -> Option<String>) {
    if !headers.contains_key(COOKIE) {
        return;
    }
    let mut rebuilt = Vec::new();
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else {
            rebuilt.push(header.clone());
            continue;
        };
        let pairs: Vec<String> = text
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .filter_map(|pair| match pair.split_once('=') {
                Some((name, value)) => keep(name.trim(), value.trim()).map(|v| format!("{}={v}", name.trim())),
                None => Some(pair.to_string()),
            })
            .collect();
        if !pairs.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&pairs.join("; ")) {
                rebuilt.push(value);
            }
        }
    }
    headers.remove(COOKIE);
    for value in rebuilt {
        headers.append(COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cookie settings of a backend whose `sticky` table holds `text` (one key a line).
    fn sticky(text: &str) -> StickyCookie {
        let table = text.replace('\n', ", ");
        let config = crate::config::parse(
            &format!(
                "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
                 [[backend]]\nname = \"b\"\nsticky = {{ {table} }}\n\
                 [[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n"
            ),
            "test.toml",
        )
        .expect("a valid sticky table");
        config.backends[0]
            .sticky
            .as_ref()
            .and_then(|s| s.cookie.clone())
            .expect("a sticky cookie")
    }

    fn servers() -> Vec<(&'static str, Option<&'static str>)> {
        vec![("web-1", Some("s1")), ("web-2", None)]
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, value.parse().unwrap());
        h
    }

    #[test]
    fn insert_sets_the_cookie_with_attributes_when_the_client_has_none() {
        let config = sticky(
            "cookie = \"SERVERID\"\nnocache = true\nmax_age = \"1h\"\nsamesite = \"lax\"\ndomain = \"example.com\"",
        );
        let c = CookieSticky::new(&config, &servers());
        let mut h = HeaderMap::new();
        h.insert(http::header::VARY, "Cookie".parse().unwrap());
        c.rewrite_response(&mut h, 0, CookieState::Absent, false);
        assert_eq!(
            h[SET_COOKIE],
            "SERVERID=s1; Path=/; Domain=example.com; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
        assert_eq!(h[CACHE_CONTROL], "no-cache=\"set-cookie\"");
        assert_eq!(h[http::header::VARY], "Cookie");
        let mut again = HeaderMap::new();
        c.rewrite_response(&mut again, 0, CookieState::Server(0), true);
        assert!(again.get(SET_COOKIE).is_none(), "a valid cookie is not set again");
        let mut tls = HeaderMap::new();
        c.rewrite_response(&mut tls, 1, CookieState::Server(0), true);
        let value = tls[SET_COOKIE].to_str().unwrap();
        assert!(value.ends_with("; Secure"), "{value}");
        assert!(value.starts_with(&format!("SERVERID={}", server_cookie_id("web-2", None))));
        let mut private = HeaderMap::new();
        private.insert(CACHE_CONTROL, "private".parse().unwrap());
        c.rewrite_response(&mut private, 0, CookieState::Absent, false);
        assert_eq!(private[CACHE_CONTROL], "private, no-cache=\"set-cookie\"");
    }

    #[test]
    fn garbage_unknown_and_overlong_values_are_invalid() {
        let c = CookieSticky::new(&sticky("cookie = \"SERVERID\""), &servers());
        assert_eq!(c.state(&with_cookie("a=1; SERVERID=s1")), CookieState::Server(0));
        assert_eq!(c.state(&with_cookie("SERVERID=nope")), CookieState::Invalid);
        assert_eq!(
            c.state(&with_cookie(&format!("SERVERID={}", "s".repeat(300)))),
            CookieState::Invalid
        );
        assert_eq!(c.state(&with_cookie("other=1")), CookieState::Absent);
    }

    #[test]
    fn indirect_removes_only_tethers_cookie() {
        let c = CookieSticky::new(&sticky("cookie = \"SERVERID\"\nindirect = true"), &servers());
        let mut h = with_cookie("a=1; SERVERID=s1; b=2");
        c.rewrite_request(&mut h);
        assert_eq!(h[COOKIE], "a=1; b=2");
        let mut only = with_cookie("SERVERID=s1");
        c.rewrite_request(&mut only);
        assert!(only.get(COOKIE).is_none());
    }

    #[test]
    fn prefix_mode_prefixes_on_the_way_out_and_strips_on_the_way_in() {
        let c = CookieSticky::new(&sticky("cookie = \"JSESSIONID\"\nmode = \"prefix\""), &servers());
        let mut response = HeaderMap::new();
        response.append(SET_COOKIE, "JSESSIONID=abc123; Path=/; HttpOnly".parse().unwrap());
        response.append(SET_COOKIE, "other=x".parse().unwrap());
        c.rewrite_response(&mut response, 0, CookieState::Absent, false);
        let set: Vec<_> = response
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(set, vec!["JSESSIONID=s1~abc123; Path=/; HttpOnly", "other=x"]);
        let mut request = with_cookie("JSESSIONID=s1~abc123; x=y");
        assert_eq!(c.state(&request), CookieState::Server(0));
        c.rewrite_request(&mut request);
        assert_eq!(request[COOKIE], "JSESSIONID=abc123; x=y");
    }

    #[test]
    fn opaque_values_hide_names_and_depend_on_the_secret() {
        let config = sticky("cookie = \"SERVERID\"\nopaque = true\nsecret = \"correct horse battery staple\"");
        let c = CookieSticky::new(&config, &servers());
        let value = c.value_of(0).unwrap().to_string();
        assert_eq!(value.len(), 24);
        assert!(!value.contains("s1") && !value.contains("web"));
        assert_eq!(
            c.state(&with_cookie(&format!("SERVERID={value}"))),
            CookieState::Server(0)
        );
        assert_eq!(
            c.state(&with_cookie("SERVERID=s1")),
            CookieState::Invalid,
            "plain ids are not accepted"
        );
        assert_ne!(opaque_value("other secret", "s1"), value);
        assert_eq!(
            opaque_value("correct horse battery staple", "s1"),
            value,
            "stable across instances"
        );
    }
}
