//! Cookie stickiness: tether's own cookie naming the server (`insert`), or
//! the server's session cookie prefixed with the server id (`prefix`), with
//! plain or opaque (HMAC) server ids.

use std::collections::HashMap;

use std::time::Duration;

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

/// How long an opaque cookie is honoured when the cookie has no `max_age`.
pub const DEFAULT_OPAQUE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far in the future an opaque cookie's issue time may lie (clocks of
/// instances sharing the secret differ a little).
const OPAQUE_CLOCK_SKEW_SECS: u64 = 60;

/// What a request's stickiness cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieState {
    /// No stickiness cookie.
    Absent,
    /// A cookie that names no server (garbage, over-long, forged, expired, or a removed server).
    Invalid,
    /// A cookie naming this server.
    Server(ServerId),
    /// An opaque cookie naming this server, past half its lifetime: honoured,
    /// and a fresh one is set on the response.
    Renew(ServerId),
}

impl CookieState {
    /// The server the cookie names, if it is honoured.
    pub fn server(self) -> Option<ServerId> {
        match self {
            CookieState::Server(id) | CookieState::Renew(id) => Some(id),
            CookieState::Absent | CookieState::Invalid => None,
        }
    }
}

/// Opaque cookie values: `<server>.<issued>.<tag>`, where `<server>` is the
/// server id's HMAC (the same on every instance with the secret), `<issued>`
/// the issue time (Unix seconds, hex) and `<tag>` 64 bits of HMAC over both,
/// so a value collected once is honoured only for `lifetime`.
#[derive(Debug)]
struct Opaque {
    secret: String,
    lifetime_secs: u64,
}

impl Opaque {
    /// The tag of `server_part` issued at `issued` (hex).
    fn tag(&self, server_part: &str, issued: &str) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).ok()?;
        mac.update(b"tether-cookie:");
        mac.update(server_part.as_bytes());
        mac.update(b".");
        mac.update(issued.as_bytes());
        Some(mac)
    }

    /// The full value for `server_part` issued at `now_secs`.
    fn value(&self, server_part: &str, now_secs: u64) -> String {
        let issued = format!("{now_secs:x}");
        let tag = self
            .tag(server_part, &issued)
            .map(|mac| hex(&mac.finalize().into_bytes()[..8]))
            .unwrap_or_default();
        format!("{server_part}.{issued}.{tag}")
    }

    /// Checks a full value at `now_secs`: its server part if the tag is right
    /// and it is within its lifetime, with whether it is due for renewal.
    fn check<'v>(&self, value: &'v str, now_secs: u64) -> Option<(&'v str, bool)> {
        let mut parts = value.split('.');
        let (server_part, issued, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || issued.len() > 16 || tag.len() != 16 {
            return None;
        }
        let tag = unhex(tag)?;
        self.tag(server_part, issued)?.verify_truncated_left(&tag).ok()?;
        let issued = u64::from_str_radix(issued, 16).ok()?;
        if issued > now_secs + OPAQUE_CLOCK_SKEW_SECS {
            return None;
        }
        let age = now_secs.saturating_sub(issued);
        (age <= self.lifetime_secs).then_some((server_part, age > self.lifetime_secs / 2))
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower- or upper-case hex `text` (`None` if it is not hex).
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

/// Now, in Unix seconds.
fn now_secs() -> u64 {
    crate::util::clock::unix_ms() / 1000
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
    /// Opaque values carry an issue time and expire; `None`: plain values.
    opaque: Option<Opaque>,
    /// `; Path=…` and the other attributes, for values built per response.
    attributes: String,
}

/// The id of a server in a plain cookie: its `cookie` setting, or a stable
/// id derived from its name.
pub fn server_cookie_id(name: &str, configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:08x}", hash_bytes(name.as_bytes()) as u32))
}

/// The server part of an opaque value of server id `id` under `secret`:
/// 96 bits of HMAC-SHA256, hex (the issue time and tag follow it).
pub fn opaque_value(secret: &str, id: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot happen.
        return id.to_string();
    };
    mac.update(b"tether-server:");
    mac.update(id.as_bytes());
    hex(&mac.finalize().into_bytes()[..12])
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
        // Opaque values carry their issue time: built per response instead.
        let precomputed = if config.opaque_secret.is_some() {
            &[][..]
        } else {
            &values[..]
        };
        let set_cookie = precomputed
            .iter()
            .map(|value| {
                let plain = format!("{name}={value}{attributes}");
                let secure = format!("{plain}; Secure");
                [HeaderValue::from_str(&plain).ok(), HeaderValue::from_str(&secure).ok()]
            })
            .collect();
        let opaque = config.opaque_secret.as_ref().map(|secret| Opaque {
            secret: secret.clone(),
            lifetime_secs: config.max_age.unwrap_or(DEFAULT_OPAQUE_LIFETIME).as_secs().max(1),
        });
        Self {
            name: name.to_string(),
            mode: config.mode,
            indirect: config.indirect,
            nocache: config.nocache,
            set_cookie,
            secure: config.secure,
            values,
            by_value,
            opaque,
            attributes,
        }
    }

    /// The value this cookie carries for `server` (for opaque cookies, the
    /// server part, before the issue time and tag).
    pub fn value_of(&self, server: ServerId) -> Option<&str> {
        self.values.get(server).map(String::as_str)
    }

    fn server_of_value(&self, value: &str, now_secs: u64) -> CookieState {
        if value.len() > MAX_COOKIE_VALUE {
            return CookieState::Invalid;
        }
        let (server_part, renew) = match &self.opaque {
            Some(opaque) => match opaque.check(value, now_secs) {
                Some(checked) => checked,
                None => return CookieState::Invalid,
            },
            None => (value, false),
        };
        match self.by_value.get(server_part) {
            Some(id) if renew => CookieState::Renew(*id),
            Some(id) => CookieState::Server(*id),
            None => CookieState::Invalid,
        }
    }

    /// What the request's cookie says about its server.
    pub fn state(&self, headers: &HeaderMap) -> CookieState {
        self.state_at(headers, now_secs())
    }

    /// [`Self::state`] at `now_secs` (Unix seconds), which opaque cookies' age is measured against.
    pub fn state_at(&self, headers: &HeaderMap, now_secs: u64) -> CookieState {
        let Some(value) = crate::lookup::cookie(headers, &self.name) else {
            return CookieState::Absent;
        };
        match self.mode {
            CookieMode::Insert => self.server_of_value(value, now_secs),
            CookieMode::Prefix => match value.split_once(PREFIX_SEPARATOR) {
                Some((id, _)) => self.server_of_value(id, now_secs),
                None => CookieState::Absent,
            },
        }
    }

    /// Rewrites the request's cookies for the server: `insert` + `indirect`
    /// drops tether's cookie; `prefix` strips the server id from the value.
    pub fn rewrite_request(&self, headers: &mut HeaderMap) {
        let ours = self.name.as_bytes();
        match self.mode {
            CookieMode::Insert if self.indirect => {
                rewrite_cookies(headers, |name, value| (name != ours).then(|| value.to_vec()))
            }
            CookieMode::Insert => {}
            CookieMode::Prefix => rewrite_cookies(headers, |name, value| {
                if name != ours {
                    return Some(value.to_vec());
                }
                let separator = PREFIX_SEPARATOR as u8;
                Some(match value.iter().position(|b| *b == separator) {
                    Some(at) => value[at + 1..].to_vec(),
                    None => value.to_vec(),
                })
            }),
        }
    }

    /// Rewrites the response: `insert` sets the cookie when the client's
    /// did not already name `server`; `prefix` prefixes the server's own cookie.
    pub fn rewrite_response(&self, headers: &mut HeaderMap, server: ServerId, client: CookieState, https: bool) {
        self.rewrite_response_at(headers, server, client, https, now_secs());
    }

    /// [`Self::rewrite_response`] at `now_secs` (Unix seconds), the issue time of an opaque cookie set now.
    pub fn rewrite_response_at(
        &self,
        headers: &mut HeaderMap,
        server: ServerId,
        client: CookieState,
        https: bool,
        now_secs: u64,
    ) {
        let Some(value) = self.value_of(server) else { return };
        match self.mode {
            CookieMode::Insert => {
                if client == CookieState::Server(server) {
                    return;
                }
                let secure = self.secure.unwrap_or(https);
                let header = match &self.opaque {
                    Some(opaque) => {
                        let full = opaque.value(value, now_secs);
                        let secure = if secure { "; Secure" } else { "" };
                        HeaderValue::from_str(&format!("{}={full}{}{secure}", self.name, self.attributes)).ok()
                    }
                    None => self
                        .set_cookie
                        .get(server)
                        .and_then(|both| both[usize::from(secure)].clone()),
                };
                if let Some(header) = header {
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
/// says (`None` drops it; other cookies pass as they are, whatever their
/// bytes). Headers left empty are removed.
fn rewrite_cookies(headers: &mut HeaderMap, mut keep: impl FnMut(&[u8], &[u8]) -> Option<Vec<u8>>) {
    if !headers.contains_key(COOKIE) {
        return;
    }
    let mut rebuilt = Vec::new();
    for header in headers.get_all(COOKIE) {
        let mut line = Vec::with_capacity(header.len());
        for item in crate::lookup::cookie_items(header.as_bytes()) {
            let (name, value) = crate::lookup::split_cookie_pair(item);
            // An item without a name (`flag`, `=x`) is nobody's cookie: kept as it was.
            let pair = if name.is_empty() {
                Some(item.to_vec())
            } else {
                keep(name, value).map(|kept| [name, b"=", &kept].concat())
            };
            if let Some(pair) = pair {
                if !line.is_empty() {
                    line.extend_from_slice(b"; ");
                }
                line.extend_from_slice(&pair);
            }
        }
        if !line.is_empty() {
            if let Ok(value) = HeaderValue::from_bytes(&line) {
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
    fn non_utf8_cookie_headers_are_read_and_stripped() {
        let c = CookieSticky::new(&sticky("cookie = \"SERVERID\"\nindirect = true"), &servers());
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_bytes(b"a=\xff; SERVERID=s1; b=\xc3\xa9").unwrap(),
        );
        assert_eq!(c.state(&h), CookieState::Server(0), "read past another cookie's bytes");
        c.rewrite_request(&mut h);
        assert_eq!(
            h[COOKIE].as_bytes(),
            b"a=\xff; b=\xc3\xa9",
            "tether's cookie stripped, the rest byte for byte"
        );
    }

    #[test]
    fn a_nameless_item_is_kept_as_it_was_and_never_becomes_tethers_cookie() {
        // Found by the request_head fuzz target: `=SERVERID=s1` came out as `SERVERID=s1`.
        let c = CookieSticky::new(&sticky("cookie = \"SERVERID\"\nindirect = true"), &servers());
        let mut h = with_cookie("a=%; =SERVERID=s1; flag");
        assert_eq!(c.state(&h), CookieState::Absent);
        c.rewrite_request(&mut h);
        assert_eq!(h[COOKIE], "a=%; =SERVERID=s1; flag");
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

    /// The value of the `Set-Cookie` that `c` puts on a response of `server` at `now`.
    fn issued(c: &CookieSticky, server: ServerId, now: u64) -> String {
        let mut h = HeaderMap::new();
        c.rewrite_response_at(&mut h, server, CookieState::Absent, false, now);
        let set = h[SET_COOKIE].to_str().unwrap();
        set.strip_prefix("SERVERID=")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    #[test]
    fn opaque_cookies_expire_are_renewed_at_half_life_and_resist_tampering() {
        let config =
            sticky("cookie = \"SERVERID\"\nopaque = true\nsecret = \"correct horse battery staple\"\nmax_age = \"1h\"");
        let c = CookieSticky::new(&config, &servers());
        let t = 1_800_000_000;
        let value = issued(&c, 1, t);
        let cookie = with_cookie(&format!("SERVERID={value}"));
        assert_eq!(c.state_at(&cookie, t), CookieState::Server(1));
        assert_eq!(c.state_at(&cookie, t + 1799), CookieState::Server(1));
        assert_eq!(
            c.state_at(&cookie, t + 1801),
            CookieState::Renew(1),
            "past half its life"
        );
        assert_eq!(
            c.state_at(&cookie, t + 3601),
            CookieState::Invalid,
            "expired: cannot be replayed for ever"
        );
        assert_eq!(
            c.state_at(&cookie, t - 3600),
            CookieState::Invalid,
            "issued in the future"
        );
        let mut renewed = HeaderMap::new();
        c.rewrite_response_at(&mut renewed, 1, CookieState::Renew(1), false, t + 2000);
        assert!(renewed.get(SET_COOKIE).is_some(), "a renewal sets a fresh cookie");
        let mut kept = HeaderMap::new();
        c.rewrite_response_at(&mut kept, 1, CookieState::Server(1), false, t + 10);
        assert!(kept.get(SET_COOKIE).is_none(), "a fresh cookie is not set again");
        // A later issue time with the old tag, or another server's part with this tag: refused.
        let parts: Vec<&str> = value.split('.').collect();
        let later = format!("{}.{:x}.{}", parts[0], t + 3000, parts[2]);
        assert_eq!(
            c.state_at(&with_cookie(&format!("SERVERID={later}")), t + 3100),
            CookieState::Invalid
        );
        let other = format!("{}.{}.{}", c.value_of(0).unwrap(), parts[1], parts[2]);
        assert_eq!(
            c.state_at(&with_cookie(&format!("SERVERID={other}")), t),
            CookieState::Invalid
        );
        assert_eq!(
            c.state_at(&with_cookie(&format!("SERVERID={}", parts[0])), t),
            CookieState::Invalid,
            "a value without issue time (an older tether's) is not honoured"
        );
    }

    #[test]
    fn opaque_values_hide_names_and_depend_on_the_secret() {
        let config = sticky("cookie = \"SERVERID\"\nopaque = true\nsecret = \"correct horse battery staple\"");
        let c = CookieSticky::new(&config, &servers());
        let value = c.value_of(0).unwrap().to_string();
        assert_eq!(value.len(), 24);
        assert!(!value.contains("s1") && !value.contains("web"));
        let now = 1_800_000_000;
        let full = issued(&c, 0, now);
        assert!(full.starts_with(&value) && !full.contains("s1") && !full.contains("web"));
        assert_eq!(
            c.state_at(&with_cookie(&format!("SERVERID={full}")), now + 60),
            CookieState::Server(0)
        );
        assert_eq!(
            c.state_at(&with_cookie(&format!("SERVERID={full}")), now + 86_401),
            CookieState::Invalid,
            "without max_age an opaque cookie is honoured for a day"
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
