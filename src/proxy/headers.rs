//! Header rules of a proxy: hop-by-hop removal and forwarding headers.

use std::net::IpAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::types::ForwardHeader;
use crate::config::HeaderRules;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers a `Connection` list may not remove: the target's host, the
/// message's framing, and what tether itself writes (forwarding headers,
/// request id). A peer naming them would otherwise strip `Host` (an
/// HTTP/1.1 request without one) or the forwarding chain the server trusts.
pub static NEVER_NAMED: [HeaderName; 8] = [
    HOST,
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    FORWARDED,
    X_REQUEST_ID,
];

/// The comma-separated tokens of every `name` header, trimmed.
pub fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether header `name` lists `token` (compared without case), e.g. `Connection: keep-alive, Upgrade`.
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// The hop-by-hop headers every message loses (RFC 9110 §7.6.1), `Connection` first.
static HOP_BY_HOP: [HeaderName; 6] = [CONNECTION, PROXY_CONNECTION, KEEP_ALIVE, TE, TRANSFER_ENCODING, UPGRADE];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection`, every header
/// it names, and `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`,
/// `Upgrade`. hyper frames the forwarded body itself. A header `Connection`
/// names is kept when it is one of [`NEVER_NAMED`].
///
/// One pass over the names (no hashing) finds which are present, so only
/// those are removed: most messages carry one or two of them, or none.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; 6];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if present[0] {
        let named: Vec<HeaderName> = tokens(headers, &CONNECTION)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|name| !HOP_BY_HOP.contains(name) && !NEVER_NAMED.contains(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
}

/// Applies the operator's header rules (`request_headers` /
/// `response_headers`) of a backend, then of the route: removals, then the
/// set headers replacing any of their name, so the route's rules win on a
/// name both give. Names and values were compiled at load; the config
/// refused the hop-by-hop and framing headers tether owns.
pub fn apply_rules(headers: &mut HeaderMap, backend: &HeaderRules, route: Option<&HeaderRules>) {
    for rules in std::iter::once(backend).chain(route).filter(|r| !r.is_empty()) {
        for name in &rules.remove {
            headers.remove(name);
        }
        for (name, value) in &rules.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Marks a forwarded request as a WebSocket handshake again after hop-by-hop removal.
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Adds the forwarding headers the frontend asks for. `X-Forwarded-For` and
/// `Forwarded` append to what the client sent; proto and host are set.
pub fn add_forwarding(headers: &mut HeaderMap, which: &[ForwardHeader], client: IpAddr, https: bool) {
    let client = client.to_canonical();
    let proto = if https { "https" } else { "http" };
    let host = headers.get(HOST).cloned();
    for header in which {
        match header {
            ForwardHeader::XForwardedFor => append_list(headers, X_FORWARDED_FOR, ip_text(client)),
            ForwardHeader::XForwardedProto => {
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            }
            ForwardHeader::XForwardedHost => {
                if let Some(host) = &host {
                    headers.insert(X_FORWARDED_HOST, host.clone());
                }
            }
            ForwardHeader::Forwarded => {
                // RFC 7239 §6: an IPv6 node is quoted and bracketed.
                let node = match client {
                    IpAddr::V4(_) => ip_text(client),
                    IpAddr::V6(v6) => format!("\"[{v6}]\""),
                };
                let mut element = format!("for={node};proto={proto}");
                if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
                    element.push_str(&format!(";host={}", quoted_string(host)));
                }
                append_list(headers, FORWARDED, element);
            }
        }
    }
}

/// `text` as an RFC 9110 §5.6.4 quoted-string: `"` and `\` are escaped, so a
/// client's Host cannot close the quote and add parameters or elements of its own.
fn quoted_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Appends `item` to the list in every `name` line (RFC 9110 §5.3: several
/// lines are one comma-separated list), leaving one line. Empty lines add
/// nothing; a line that is not text makes the old list unusable, so it is dropped.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: String) {
    let existing: Option<Vec<&str>> = headers
        .get_all(&name)
        .iter()
        .map(|v| v.to_str().ok())
        .filter(|text| text.is_none_or(|t| !t.trim().is_empty()))
        .collect();
    let joined = match existing {
        Some(mut list) if !list.is_empty() => {
            list.push(&item);
            list.join(", ")
        }
        _ => item,
    };
    // From a `String`: the value takes its bytes without a copy.
    if let Ok(value) = HeaderValue::try_from(joined) {
        headers.insert(name, value);
    }
}

/// A client address as header text. IPv4 is written digit by digit: the
/// standard `Display` (which supports padding) cost ~1,500 instructions, 2 %
/// of a whole WebSocket handshake through tether (callgrind).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_cannot_name_host_framing_or_forwarding_headers_away() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            "close, host, content-length, x-forwarded-for, forwarded, x-request-id, cookie"
                .parse()
                .unwrap(),
        );
        for name in [
            "host",
            "content-length",
            "x-forwarded-for",
            "forwarded",
            "x-request-id",
            "cookie",
        ] {
            h.insert(name, "1".parse().unwrap());
        }
        remove_hop_by_hop(&mut h);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            ["content-length", "forwarded", "host", "x-forwarded-for", "x-request-id"]
        );
    }

    #[test]
    fn forwarding_headers_append_and_set() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "chat.example.com".parse().unwrap());
        h.insert(X_FORWARDED_FOR, "203.0.113.9".parse().unwrap());
        let all = [
            ForwardHeader::XForwardedFor,
            ForwardHeader::XForwardedProto,
            ForwardHeader::XForwardedHost,
            ForwardHeader::Forwarded,
        ];
        add_forwarding(&mut h, &all, "::1".parse().unwrap(), false);
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.9, ::1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "chat.example.com");
        assert_eq!(h[FORWARDED], "for=\"[::1]\";proto=http;host=\"chat.example.com\"");
    }

    #[test]
    fn a_host_with_quotes_cannot_forge_forwarded_parameters() {
        // Found by the request_head fuzz target: the Host went into the
        // quoted `host=` unescaped, so `"` in it ended the quote and the rest
        // became parameters (or a whole element, e.g. a forged `for=`).
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static(r#"a", for=6.6.6.6;host="b\"#));
        add_forwarding(
            &mut h,
            &[ForwardHeader::Forwarded],
            "198.51.100.7".parse().unwrap(),
            true,
        );
        assert_eq!(
            h[FORWARDED],
            r#"for=198.51.100.7;proto=https;host="a\", for=6.6.6.6;host=\"b\\""#
        );
    }

    #[test]
    fn forwarding_lists_spread_over_several_lines_keep_every_hop() {
        // Found by the request_head fuzz target: an empty first line made the
        // hops of the second line vanish from X-Forwarded-For.
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static(""));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9, 10.0.0.4"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.5"));
        h.append(FORWARDED, HeaderValue::from_static("for=203.0.113.9"));
        h.append(FORWARDED, HeaderValue::from_static("for=10.0.0.4"));
        add_forwarding(
            &mut h,
            &[ForwardHeader::XForwardedFor, ForwardHeader::Forwarded],
            "198.51.100.7".parse().unwrap(),
            false,
        );
        let xff: Vec<_> = h.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(xff, ["203.0.113.9, 10.0.0.4, 10.0.0.5, 198.51.100.7"]);
        let forwarded: Vec<_> = h.get_all(FORWARDED).iter().collect();
        assert_eq!(
            forwarded,
            ["for=203.0.113.9, for=10.0.0.4, for=198.51.100.7;proto=http"]
        );
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.99.100.255",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.9.10",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), text);
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, n / 2, 255 - n, n.wrapping_mul(7)]);
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
