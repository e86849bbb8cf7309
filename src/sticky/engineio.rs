//! Engine.IO (the transport under Socket.IO): recognising its handshake and
//! reading the session id from the handshake response body, so clients that
//! keep no cookies still reach the server holding their session.
//!
//! The handshake is the first `GET …?EIO=4&transport=polling` without `sid`;
//! its body is short: `0{"sid":"…","upgrades":["websocket"],…}` (EIO 4) or
//! `96:0{"sid":"…",…}` (EIO 3). Only the first bytes, up to `SNIFF_LIMIT`,
//! are looked at as they stream by; nothing is held back from the client.

use http::Request;

use crate::lookup::query_param;

/// How many bytes of a handshake body are inspected at most.
pub const SNIFF_LIMIT: usize = 512;

/// Whether `request` opens an Engine.IO session (a polling GET without `sid`).
pub fn is_handshake<B>(request: &Request<B>) -> bool {
    let uri = request.uri();
    request.method() == http::Method::GET
        && query_param(uri, "EIO").is_some()
        && query_param(uri, "transport") == Some("polling")
        && query_param(uri, "sid").is_none()
}

/// Collects the start of a handshake body until the `sid` can be read.
#[derive(Debug, Default)]
pub struct SidSniffer {
    seen: Vec<u8>,
    done: bool,
}

impl SidSniffer {
    /// Feeds the next body chunk; returns the session id once it is complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<String> {
        if self.done {
            return None;
        }
        let room = SNIFF_LIMIT.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let found = parse_sid(&self.seen);
        if found.is_some() || self.seen.len() >= SNIFF_LIMIT {
            self.done = true;
        }
        found
    }
}

/// The value of `"sid":"…"` in `body`, if complete and made of URL-safe characters.
pub fn parse_sid(body: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"\"sid\":\"";
    let start = body.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &body[start..];
    let end = rest.iter().position(|b| *b == b'"')?;
    let sid = &rest[..end];
    let valid = !sid.is_empty()
        && sid.len() <= super::table::MAX_KEY_LEN
        && sid
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    valid.then(|| String::from_utf8_lossy(sid).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_is_a_polling_get_without_sid() {
        let req = |uri: &str| Request::get(uri).body(()).unwrap();
        assert!(is_handshake(&req("/socket.io/?EIO=4&transport=polling&t=N8hyd6w")));
        assert!(!is_handshake(&req("/socket.io/?EIO=4&transport=polling&sid=abc")));
        assert!(!is_handshake(&req("/socket.io/?EIO=4&transport=websocket")));
        assert!(!is_handshake(&req("/other")));
    }

    #[test]
    fn sids_are_read_from_eio4_and_eio3_bodies_even_when_split() {
        let eio4 = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(parse_sid(eio4).as_deref(), Some("lv_VI97HAXpY6yYWAAAC"));
        let eio3 = br#"96:0{"sid":"Xx-1_2","upgrades":[]}"#;
        assert_eq!(parse_sid(eio3).as_deref(), Some("Xx-1_2"));
        let mut sniffer = SidSniffer::default();
        assert_eq!(sniffer.feed(br#"0{"sid":"abc"#), None);
        assert_eq!(sniffer.feed(br#"def","upgrades":[]}"#).as_deref(), Some("abcdef"));
    }

    #[test]
    fn hostile_bodies_yield_nothing() {
        assert_eq!(parse_sid(br#"0{"sid":"a b<script>"}"#), None);
        assert_eq!(parse_sid(br#"0{"sid":""}"#), None);
        let mut sniffer = SidSniffer::default();
        let junk = vec![b'x'; 4096];
        assert_eq!(sniffer.feed(&junk), None);
        assert_eq!(sniffer.feed(br#""sid":"late""#), None, "past the limit nothing is read");
    }
}
