//! Finding named values in a request: query parameters, cookies, the host.
//! Shared by routing rules and hashing balancers so both read a request the same way.

use http::header::{COOKIE, HOST};
use http::{HeaderMap, Uri};

/// The raw (undecoded) value of query parameter `name`; `Some("")` when it is present without a value.
pub fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The value of cookie `name` across every `Cookie` header. Read as bytes:
/// another cookie's non-UTF-8 value does not hide this one (only a value
/// that is itself not UTF-8 reads as absent).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|line| cookie_pairs(line.as_bytes()))
        .find_map(|(key, value)| {
            (key == name.as_bytes())
                .then(|| std::str::from_utf8(value).ok())
                .flatten()
        })
}

/// The `name=value` pairs of one `Cookie` header line, trimmed, as bytes
/// (a pair without `=` has an empty name, as browsers read it).
pub fn cookie_pairs(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    cookie_items(line).map(split_cookie_pair)
}

/// The `;`-separated items of one `Cookie` header line, trimmed, empty ones skipped.
pub fn cookie_items(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// One cookie item split at its first `=` into name and value, both
/// trimmed (no `=`: an empty name and the whole item as value).
pub fn split_cookie_pair(item: &[u8]) -> (&[u8], &[u8]) {
    match item.iter().position(|b| *b == b'=') {
        Some(at) => (item[..at].trim_ascii(), item[at + 1..].trim_ascii()),
        None => (&item[..0], item),
    }
}

/// The host the client asked for, without port: the absolute URI's authority, else the Host header.
pub fn host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.host() {
        Some(host) => host,
        None => headers.get(HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_with_and_without_values() {
        let uri: Uri = "/socket.io/?EIO=4&transport=polling&sid=abc&flag".parse().unwrap();
        assert_eq!(query_param(&uri, "sid"), Some("abc"));
        assert_eq!(query_param(&uri, "flag"), Some(""));
        assert_eq!(query_param(&uri, "si"), None);
    }

    #[test]
    fn cookies_are_found_in_any_header() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1; SERVERID=s2".parse().unwrap());
        headers.append(COOKIE, "io=xyz".parse().unwrap());
        assert_eq!(cookie(&headers, "SERVERID"), Some("s2"));
        assert_eq!(cookie(&headers, "io"), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn a_non_utf8_cookie_does_not_hide_the_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            http::HeaderValue::from_bytes(b"junk=\xff\xfe; SERVERID=s2; bad=\xc3").unwrap(),
        );
        assert_eq!(cookie(&headers, "SERVERID"), Some("s2"));
        assert_eq!(cookie(&headers, "junk"), None, "a non-UTF-8 value reads as absent");
        let pairs: Vec<_> = cookie_pairs(b" a = 1 ;; flag; =x").collect();
        assert_eq!(
            pairs,
            vec![(&b"a"[..], &b"1"[..]), (&b""[..], &b"flag"[..]), (&b""[..], &b"x"[..])]
        );
    }

    #[test]
    fn host_drops_the_port() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "ws.example.com:8080".parse().unwrap());
        assert_eq!(host(&"/".parse().unwrap(), &headers), Some("ws.example.com"));
        headers.insert(HOST, "[::1]:80".parse().unwrap());
        assert_eq!(host(&"/".parse().unwrap(), &headers), Some("[::1]"));
        assert_eq!(host(&"http://a.b:1/x".parse().unwrap(), &headers), Some("a.b"));
    }
}
