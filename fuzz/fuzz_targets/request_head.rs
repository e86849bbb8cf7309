//! The request-head handling tether does itself, fed arbitrary bytes:
//! cookies (lookup and sticky rewriting), `Connection`/`Upgrade` token lists
//! and hop-by-hop removal, the WebSocket handshake check, `X-Forwarded-For`
//! and `Forwarded`, the Host and query lookups, the PROXY v1/v2 reader, and
//! the head scanner that flags `Content-Length` with `Transfer-Encoding`.
//!
//! Input: byte 0 steers the chunking of the PROXY reader; the rest is read
//! both as a PROXY header and as header lines (`name: value`, the first line
//! `METHOD URI`). A one-byte header name is a shortcut to a known header.
//! Every check is an invariant, not just "no panic".

#![no_main]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http::header::{CONNECTION, COOKIE, HOST, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

use tether::cidr::Cidr;
use tether::config::model::StickyCookie;
use tether::config::types::ForwardHeader;
use tether::proxy::client_addr::{client_ip, is_trusted, read_proxy_header, ProxyHeaderError};
use tether::proxy::framing::RequestScanner;
use tether::proxy::headers::{add_forwarding, has_token, remove_hop_by_hop, tokens, NEVER_NAMED};
use tether::proxy::upgrade::{classify, Handshake};
use tether::sticky::cookie::{CookieState, CookieSticky};
use tokio::io::{AsyncRead, ReadBuf};

/// Headers reached by one-byte names, so the fuzzer needs not spell them.
const KNOWN: [&str; 14] = [
    "cookie",
    "connection",
    "upgrade",
    "x-forwarded-for",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "keep-alive",
    "te",
    "transfer-encoding",
    "forwarded",
    "proxy-connection",
    "x-secret",
    "set-cookie",
];

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    proxy_protocol(seed, body);
    framing_scan(seed, body);
    let (method, uri, headers) = head(body);
    cookies(&headers);
    hop_by_hop(&headers);
    forwarding(&headers, seed);
    forwarded_for(&headers);
    handshake(method, uri, headers);
});

/// Reads `body` as `METHOD URI` then `name: value` lines; bad ones are skipped.
fn head(body: &[u8]) -> (Method, Uri, HeaderMap) {
    let mut lines = body.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (mut method, mut uri) = (Method::GET, Uri::from_static("/"));
    if let Some(first) = lines.next() {
        let mut parts = first.splitn(2, |b| *b == b' ');
        if let Some(m) = parts.next().and_then(|m| Method::from_bytes(m).ok()) {
            method = m;
        }
        if let Some(u) = parts.next().and_then(|u| Uri::try_from(u).ok()) {
            uri = u;
        }
    }
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        let name = match name {
            [short] => HeaderName::from_static(KNOWN[usize::from(*short) % KNOWN.len()]),
            long => match HeaderName::from_bytes(long) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    // The query and Host lookups must not panic whatever they are given.
    if let Some(value) = tether::lookup::query_param(&uri, "sid") {
        assert!(!value.contains('&'), "a query value never spans a `&`");
    }
    if let Some(host) = tether::lookup::host(&uri, &headers) {
        assert!(!host.is_empty() || headers.get(HOST).is_some() || uri.host().is_some());
    }
    (method, uri, headers)
}

/// The cookie settings of a fixed `sticky` table, through the config loader.
fn sticky(table: &str) -> StickyCookie {
    let text = format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\nsticky = {{ {table} }}\n\
         [[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n"
    );
    let config = tether::config::parse(&text, "fuzz.toml").expect("a fixed sticky section parses");
    config.backends[0]
        .sticky
        .as_ref()
        .and_then(|s| s.cookie.clone())
        .expect("a sticky cookie")
}

/// Cookie lookup and the two cookie sticky modes agree with each other.
fn cookies(headers: &HeaderMap) {
    for name in ["SERVERID", "JSESSIONID", "io"] {
        if let Some(value) = tether::lookup::cookie(headers, name) {
            assert_eq!(value, value.trim(), "cookie values come trimmed");
            assert!(!value.contains(';'), "a cookie value never spans a `;`");
        }
    }
    let servers = [("web-1", Some("s1")), ("web-2", None)];

    // insert + indirect: tether's cookie never reaches the server.
    // Built once: the config loader is not what this target exercises.
    static INSERT: OnceLock<CookieSticky> = OnceLock::new();
    static PREFIX: OnceLock<CookieSticky> = OnceLock::new();
    let insert = INSERT.get_or_init(|| CookieSticky::new(&sticky("cookie = \"SERVERID\", indirect = true"), &servers));
    let state = insert.state(headers);
    if let CookieState::Server(id) = state {
        assert_eq!(tether::lookup::cookie(headers, "SERVERID"), insert.value_of(id));
    }
    let mut request = headers.clone();
    insert.rewrite_request(&mut request);
    assert_eq!(
        tether::lookup::cookie(&request, "SERVERID"),
        None,
        "indirect mode removes tether's cookie"
    );
    let mut response = headers.clone();
    insert.rewrite_response(&mut response, 1, state, true);

    // prefix: the server sees its own value with the id stripped.
    let prefix = PREFIX.get_or_init(|| CookieSticky::new(&sticky("cookie = \"JSESSIONID\", mode = \"prefix\""), &servers));
    // Compared as bytes: cookies are read and rewritten as bytes.
    let raw = |headers: &HeaderMap| -> Option<Vec<u8>> {
        headers.get_all(COOKIE).iter().find_map(|line| {
            tether::lookup::cookie_pairs(line.as_bytes()).find_map(|(name, value)| (name == b"JSESSIONID").then(|| value.to_vec()))
        })
    };
    let before = raw(headers);
    let state = prefix.state(headers);
    let mut request = headers.clone();
    prefix.rewrite_request(&mut request);
    let after = raw(&request);
    match before.as_deref() {
        None => assert_eq!(after, None),
        Some(value) => {
            let expected = match value.iter().position(|b| *b == b'~') {
                Some(at) => &value[at + 1..],
                None => value,
            };
            assert_eq!(after.as_deref(), Some(expected.trim_ascii()), "prefix mode strips the server id");
        }
    }
    let mut response = headers.clone();
    prefix.rewrite_response(&mut response, 0, state, false);
    // Every Set-Cookie of the server's cookie now carries the id.
    for value in response.get_all(SET_COOKIE) {
        if let Ok(text) = value.to_str() {
            if text.starts_with("JSESSIONID=") {
                assert!(text.starts_with("JSESSIONID=s1~"), "{text:?}");
            }
        }
    }
    let _ = headers.get_all(COOKIE).iter().count();

    // opaque: a value is honoured only with its server part, and the value
    // tether sets reads back as the server it was set for.
    static OPAQUE: OnceLock<CookieSticky> = OnceLock::new();
    let opaque = OPAQUE.get_or_init(|| {
        CookieSticky::new(
            &sticky("cookie = \"SERVERID\", opaque = true, secret = \"a fuzzing secret, long enough\""),
            &servers,
        )
    });
    let state = opaque.state(headers);
    if let Some(id) = state.server() {
        let value = tether::lookup::cookie(headers, "SERVERID").expect("a cookie was read");
        assert!(value.starts_with(opaque.value_of(id).expect("a known server")), "{value:?}");
    }
    let mut response = HeaderMap::new();
    opaque.rewrite_response(&mut response, 1, state, false);
    if let Some(set) = response.get(SET_COOKIE) {
        let pair = set.to_str().expect("tether's cookie is text").split(';').next().unwrap_or_default();
        let mut again = HeaderMap::new();
        again.insert(COOKIE, HeaderValue::from_str(pair).expect("a valid header"));
        assert_eq!(opaque.state(&again), CookieState::Server(1), "{pair}");
    } else {
        assert_eq!(state, CookieState::Server(1), "only a fresh cookie for the server is not set again");
    }
}

/// Token lists are trimmed and non-empty; hop-by-hop removal leaves none behind.
fn hop_by_hop(headers: &HeaderMap) {
    let listed: Vec<String> = tokens(headers, &CONNECTION).map(str::to_string).collect();
    for token in &listed {
        assert!(!token.is_empty() && token.trim() == token && !token.contains(','));
        assert!(has_token(headers, &CONNECTION, &token.to_ascii_uppercase()));
    }
    let mut cleaned = headers.clone();
    remove_hop_by_hop(&mut cleaned);
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(!cleaned.contains_key(name), "{name} is hop-by-hop");
    }
    for token in &listed {
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if NEVER_NAMED.contains(&name) {
                // Host, framing and tether's own headers survive being named.
                assert_eq!(cleaned.contains_key(&name), headers.contains_key(&name) && name != "transfer-encoding");
                continue;
            }
            assert!(!cleaned.contains_key(&name), "{name} was named by Connection");
        }
    }
}

/// The forwarding headers tether appends name the client, whatever the client sent,
/// and keep every hop the client's headers listed, in order.
fn forwarding(headers: &HeaderMap, seed: u8) {
    let all = [
        ForwardHeader::XForwardedFor,
        ForwardHeader::XForwardedProto,
        ForwardHeader::XForwardedHost,
        ForwardHeader::Forwarded,
    ];
    let clients: [IpAddr; 2] = ["198.51.100.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
    for client in clients {
        let mut h = headers.clone();
        let https = seed & 1 == 1;
        add_forwarding(&mut h, &all, client, https);
        let xff = h["x-forwarded-for"].to_str().expect("tether writes text");
        let last = xff.rsplit(',').next().unwrap_or_default().trim();
        assert_eq!(last.parse::<IpAddr>().ok(), Some(client), "{xff:?}");
        if let Some(before) = combined(headers, "x-forwarded-for") {
            assert_eq!(xff, format!("{before}, {client}"), "every earlier hop is kept");
        }

        let forwarded = h["forwarded"].to_str().expect("tether writes text");
        let element = match combined(headers, "forwarded") {
            Some(before) => forwarded
                .strip_prefix(before.as_str())
                .and_then(|rest| rest.strip_prefix(", "))
                .unwrap_or_else(|| panic!("{forwarded:?} does not extend {before:?}")),
            None => forwarded,
        };
        let params = parse_element(element).unwrap_or_else(|| panic!("malformed element {element:?}"));
        let node = match client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut expected = vec![
            ("for".to_string(), node),
            ("proto".to_string(), if https { "https" } else { "http" }.to_string()),
        ];
        if let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) {
            expected.push(("host".to_string(), host.to_string()));
        }
        assert_eq!(params, expected, "the element tether appended: {element:?}");
    }
}

/// The client's `name` lines as one list (RFC 9110 §5.3), when they are all text
/// and not all empty.
fn combined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        if !text.trim().is_empty() {
            values.push(text);
        }
    }
    (!values.is_empty()).then(|| values.join(", "))
}

/// RFC 7239 `forwarded-pair *( ";" forwarded-pair )` with token or quoted-string
/// values; None when it is not well-formed. Quoted values come unescaped.
fn parse_element(element: &str) -> Option<Vec<(String, String)>> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let mut out = Vec::new();
    let mut chars = element.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if !is_tchar(c) {
                return None;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ';' {
                    break;
                }
                if !is_tchar(c) {
                    return None;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name.to_ascii_lowercase(), value));
        match chars.next() {
            None => return Some(out),
            Some(';') => continue,
            Some(_) => return None,
        }
    }
}

/// `X-Forwarded-For` behind trusted proxies: the rightmost untrusted hop, or the peer.
fn forwarded_for(headers: &HeaderMap) {
    let trusted: Vec<Cidr> = ["10.0.0.0/8", "127.0.0.1", "fd00::/8"]
        .iter()
        .map(|c| c.parse().expect("fixed CIDR"))
        .collect();
    let peers: [IpAddr; 3] = [
        "10.1.2.3".parse().unwrap(),
        "::ffff:10.9.9.9".parse().unwrap(),
        "192.0.2.1".parse().unwrap(),
    ];
    for peer in peers {
        let client = client_ip(peer, headers, &trusted);
        if !is_trusted(&trusted, peer) {
            assert_eq!(client, peer, "an untrusted peer is the client");
            continue;
        }
        if client == peer {
            continue;
        }
        // The client came from the list, and every hop to its right is trusted.
        let items: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let text = client.to_string();
        let at = items
            .iter()
            .rposition(|item| item.contains(text.as_str()) || item.contains(&client.to_canonical().to_string()))
            .unwrap_or_else(|| panic!("{client} is not in {items:?}"));
        for item in &items[at + 1..] {
            let hop = client_ip("10.0.0.1".parse().unwrap(), &one_hop(item), &[]);
            assert!(is_trusted(&trusted, hop), "{item:?} right of the client is untrusted");
        }
    }
}

fn one_hop(item: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(item) {
        h.insert("x-forwarded-for", v);
    }
    h
}

/// A WebSocket verdict implies the token lists and the method say so.
fn handshake(method: Method, uri: Uri, headers: HeaderMap) {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let Ok(request) = builder.body(()) else { return };
    if classify(&request) == Ok(Handshake::WebSocket) {
        assert_eq!(request.method(), Method::GET);
        assert!(has_token(request.headers(), &CONNECTION, "Upgrade"));
        assert!(has_token(request.headers(), &http::header::UPGRADE, "WebSocket"));
    }
}

/// An in-memory stream handing out at most `sizes[i]` bytes per read and
/// answering every other read with `Pending` (waking itself at once).
struct Chunked<'a> {
    data: &'a [u8],
    sizes: u8,
    pending: bool,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = self.sizes & 1 == 1;
        let step = usize::from(self.sizes % 7) + 1;
        self.sizes = self.sizes.rotate_left(1);
        let n = step.min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn verdict(result: &Result<Option<SocketAddr>, ProxyHeaderError>) -> String {
    match result {
        Ok(addr) => format!("ok {addr:?}"),
        Err(ProxyHeaderError::Io(e)) => format!("io {:?}", e.kind()),
        Err(other) => format!("{other}"),
    }
}

/// The PROXY reader gives the same verdict however the bytes arrive, and
/// consumes exactly the header: a v1 line up to its CRLF, a v2 header's 16 + length bytes.
fn proxy_protocol(seed: u8, body: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| {
        let mut whole = body;
        let first = rt.block_on(read_proxy_header(&mut whole));
        let consumed = body.len() - whole.len();
        let mut chunked = Chunked {
            data: body,
            sizes: seed,
            pending: seed & 0x80 != 0,
        };
        let second = rt.block_on(read_proxy_header(&mut chunked));
        assert_eq!(verdict(&first), verdict(&second), "same bytes, same verdict");
        if first.is_err() {
            return;
        }
        assert_eq!(
            body.len() - chunked.data.len(),
            consumed,
            "same bytes, same consumption"
        );
        if body.starts_with(b"PROXY ") {
            assert!(consumed <= 107, "a v1 line is at most 107 bytes");
            assert!(body[..consumed].ends_with(b"\r\n"), "a v1 line ends at its CRLF");
            assert_eq!(
                body[..consumed].windows(2).position(|w| w == b"\r\n"),
                Some(consumed - 2),
                "and at the first one"
            );
        } else {
            assert!(body.len() >= 16, "a v2 header has 16 fixed bytes");
            let len = usize::from(u16::from_be_bytes([body[14], body[15]]));
            assert_eq!(consumed, 16 + len, "a v2 header is 16 + length bytes");
        }
    });
}

/// The head scanner gives the same verdict however the head is split into
/// reads (`seed` picks the piece sizes), and that verdict is the one a plain
/// line-by-line reading of the head gives.
fn framing_scan(seed: u8, body: &[u8]) {
    let verdict_of = |scanner: &RequestScanner| (scanner.heads() > 0).then(|| scanner.first_conflict() == Some(0));
    let mut whole = RequestScanner::default();
    whole.scan(body);
    let expected = verdict_of(&whole);
    let mut pieces = RequestScanner::default();
    let step = usize::from(seed % 23) + 1;
    for piece in body.chunks(step) {
        pieces.scan(piece);
    }
    assert_eq!(
        (pieces.heads(), pieces.first_conflict()),
        (whole.heads(), whole.first_conflict()),
        "split every {step} bytes"
    );
    // The reference: lines up to the first empty one after a non-empty one
    // (a lone CR counts as empty).
    let mut names = (false, false);
    let mut reference = None;
    let mut started = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        let line = &line[..line.len() - 1];
        if line.is_empty() || line == b"\r" {
            if !started {
                continue;
            }
            reference = Some(names.0 && names.1);
            break;
        }
        started = true;
        let starts = |name: &[u8]| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name);
        names.0 |= starts(b"content-length:");
        names.1 |= starts(b"transfer-encoding:");
    }
    assert_eq!(expected, reference, "{:?}", String::from_utf8_lossy(body));
}
