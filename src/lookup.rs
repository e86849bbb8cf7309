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

/// The value of cookie `name` across every `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim())
        })
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
    fn host_drops_the_port() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "ws.example.com:8080".parse().unwrap());
        assert_eq!(host(&"/".parse().unwrap(), &headers), Some("ws.example.com"));
        headers.insert(HOST, "[::1]:80".parse().unwrap());
        assert_eq!(host(&"/".parse().unwrap(), &headers), Some("[::1]"));
        assert_eq!(host(&"http://a.b:1/x".parse().unwrap(), &headers), Some("a.b"));
    }
}
