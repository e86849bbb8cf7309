//! A watch over request heads for the one framing conflict hyper accepts:
//! `Content-Length` together with `Transfer-Encoding`.
//!
//! RFC 9112 §6.1 lets a server either reject such a request or use the
//! `Transfer-Encoding` alone and close the connection after; hyper does the
//! latter and drops `Content-Length` before tether sees the request. A
//! front-line proxy should refuse it outright (it is the classic request
//! smuggling shape), so this scanner follows the header names as the head's
//! bytes are read and flags the conflict for the request handler.
//! Everything else ambiguous (differing `Content-Length`s, a
//! `Transfer-Encoding` whose last coding is not `chunked`, obsolete line
//! folding, bad chunk sizes) hyper already refuses.

/// The longest header-name prefix compared (`transfer-encoding:`).
const LONGEST: usize = 18;

/// Follows one request head at a time, line by line, remembering whether it
/// named `Content-Length` and `Transfer-Encoding`. Costs a few bytes of state
/// and one pass over head bytes; body and tunnel bytes are never looked at.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// The start of the current line, lower-cased (up to `LONGEST` bytes).
    line: [u8; LONGEST],
    /// Bytes of the current line kept so far (up to `LONGEST`; past it the
    /// rest of the line is skipped).
    len: u8,
    /// The head carried a `Content-Length` field.
    content_length: bool,
    /// The head carried a `Transfer-Encoding` field.
    transfer_encoding: bool,
    /// The blank line ending the head was seen: nothing more is scanned until `reset`.
    finished: bool,
}

impl HeadScanner {
    /// Follows `bytes`, the next bytes of a request head. Returns `Some`
    /// once the head ended, with whether it named both framing fields;
    /// after that, further bytes (the body) are ignored until `reset`.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<bool> {
        if self.finished {
            return None;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let at = usize::from(self.len);
            if at >= LONGEST {
                // Past the names that matter: jump to the end of the line.
                match rest.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        self.len = 0;
                        rest = &rest[end + 1..];
                    }
                    None => return None,
                }
                continue;
            }
            let byte = rest[0];
            rest = &rest[1..];
            if byte == b'\n' {
                if at == 0 || (at == 1 && self.line[0] == b'\r') {
                    self.finished = true;
                    return Some(self.content_length && self.transfer_encoding);
                }
                self.len = 0;
                continue;
            }
            self.line[at] = byte.to_ascii_lowercase();
            self.len += 1;
            // Compare only when the line is exactly as long as a name of interest.
            match at + 1 {
                15 => self.content_length |= &self.line[..15] == b"content-length:",
                18 => self.transfer_encoding |= &self.line[..18] == b"transfer-encoding:",
                _ => {}
            }
        }
        None
    }

    /// Whether the current head has ended (the scanner waits for `reset`).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Starts over for the next request head.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(head: &[u8], split_every: usize) -> Option<bool> {
        let mut scanner = HeadScanner::default();
        let mut verdict = None;
        for chunk in head.chunks(split_every) {
            if let Some(v) = scanner.scan(chunk) {
                verdict = Some(v);
            }
        }
        verdict
    }

    #[test]
    fn both_framing_fields_in_either_order_and_any_case_are_a_conflict() {
        let heads: [&[u8]; 3] = [
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\ncontent-length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\ncontent-length: 3\ntransfer-encoding: chunked\n\n",
        ];
        for head in heads {
            for split in [1, 2, 7, head.len()] {
                assert_eq!(
                    conflict(head, split),
                    Some(true),
                    "{:?} split {split}",
                    String::from_utf8_lossy(head)
                );
            }
        }
    }

    #[test]
    fn one_framing_field_or_a_lookalike_is_no_conflict() {
        let heads: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nX-Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nX-Note: transfer-encoding: chunked\r\n\r\n",
        ];
        for head in heads {
            assert_eq!(conflict(head, 3), Some(false), "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn body_bytes_after_the_head_are_not_scanned_until_reset() {
        let mut scanner = HeadScanner::default();
        assert_eq!(
            scanner.scan(b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n"),
            Some(false)
        );
        assert!(scanner.finished());
        assert_eq!(scanner.scan(b"\r\nTransfer-Encoding: chunked\r\n\r\n"), None);
        scanner.reset();
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(false));
    }

    #[test]
    fn a_very_long_line_neither_overflows_nor_matches() {
        let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 1000));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(conflict(&head, 64), Some(false));
    }
}
