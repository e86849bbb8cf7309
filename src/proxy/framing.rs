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
/// and a `memchr` per line (the first 18 bytes of each line are looked at,
/// the rest skipped); body and tunnel bytes are never looked at.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// The start of the current line (up to `LONGEST` bytes).
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
            let kept = usize::from(self.len);
            if kept >= LONGEST {
                // Past the names that matter: jump to the end of the line.
                let end = memchr::memchr(b'\n', rest)?;
                self.len = 0;
                rest = &rest[end + 1..];
                continue;
            }
            // Keep the start of the line, up to its end or `LONGEST` bytes.
            let window = &rest[..rest.len().min(LONGEST - kept)];
            let line_ends = memchr::memchr(b'\n', window);
            let taken = line_ends.unwrap_or(window.len());
            self.line[kept..kept + taken].copy_from_slice(&window[..taken]);
            let line = &self.line[..kept + taken];
            if line_ends.is_none() {
                self.len = (kept + taken) as u8;
                if line.len() == LONGEST {
                    self.note_names(LONGEST);
                }
                rest = &rest[taken..];
                continue;
            }
            if line.is_empty() || line == b"\r" {
                self.finished = true;
                return Some(self.content_length && self.transfer_encoding);
            }
            self.note_names(line.len());
            self.len = 0;
            rest = &rest[taken + 1..];
        }
        None
    }

    /// Notes which framing field the current line names, given its first `kept` bytes.
    fn note_names(&mut self, kept: usize) {
        let line = &self.line[..kept];
        self.content_length |= line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:");
        self.transfer_encoding |= line.len() >= 18 && line[..18].eq_ignore_ascii_case(b"transfer-encoding:");
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

    proptest::proptest! {
        /// However a head is split into reads, the verdict is the one a plain
        /// line-by-line reading gives.
        #[test]
        fn the_verdict_does_not_depend_on_how_the_head_is_split(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    "Content-Length: 5", "content-length:5", "Transfer-Encoding: chunked",
                    "TRANSFER-ENCODING: chunked", "X-Content-Length: 1", "Host: a",
                    "X-Very-Long-Header-Name-Here: transfer-encoding: chunked", "Content-Lengthy: 3",
                    "Transfer-Encodingx: chunked", "Upgrade: websocket",
                ]),
                0..8,
            ),
            cuts in proptest::collection::vec(1usize..40, 0..10),
            bare_lf in proptest::bool::ANY,
        ) {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut head = format!("POST / HTTP/1.1{eol}");
            for line in &lines {
                head.push_str(line);
                head.push_str(eol);
            }
            head.push_str(eol);
            let names: Vec<String> = lines
                .iter()
                .map(|l| l.split(':').next().unwrap_or("").to_ascii_lowercase())
                .collect();
            let expected = names.iter().any(|n| n == "content-length")
                && names.iter().any(|n| n == "transfer-encoding");
            let mut scanner = HeadScanner::default();
            let mut verdict = None;
            let mut rest = head.as_bytes();
            for cut in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                if let Some(v) = scanner.scan(chunk) {
                    verdict = Some(v);
                }
                rest = tail;
            }
            proptest::prop_assert_eq!(verdict, Some(expected));
        }
    }
}
