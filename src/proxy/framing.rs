//! A watch over the request stream for the one framing conflict hyper
//! accepts: `Content-Length` together with `Transfer-Encoding`.
//!
//! RFC 9112 §6.1 lets a server either reject such a request or use the
//! `Transfer-Encoding` alone and close the connection after; hyper does the
//! latter and drops `Content-Length` before tether sees the request. A
//! front-line proxy should refuse it outright (it is the classic request
//! smuggling shape), so this scanner follows every byte the client sends,
//! head after body after head, and flags the first request whose head named
//! both fields, by its place on the connection. Following the bodies (by
//! their `Content-Length`, or chunk by chunk) is what lets it find a head
//! that arrives in the same read as the request before it (pipelining).
//! Everything else ambiguous (differing `Content-Length`s, a
//! `Transfer-Encoding` whose last coding is not `chunked`, obsolete line
//! folding, bad chunk sizes) hyper already refuses, and it closes the
//! connection then, so the scanner simply stops where it would lose its way.

/// The longest header-name prefix compared (`transfer-encoding:`).
const LONGEST: usize = 18;

/// Where in the request stream the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a request head (or before one).
    Head,
    /// Inside a `Content-Length` body: this many bytes left.
    Body(u64),
    /// Reading a chunk-size line (the size so far).
    ChunkSize(u64),
    /// Skipping a chunk extension to the end of its line (the chunk's size).
    ChunkExt(u64),
    /// Inside a chunk's data: this many bytes left.
    ChunkData(u64),
    /// Skipping the line end after a chunk's data.
    ChunkEnd,
    /// Reading trailer lines until an empty one (whether the current line has content).
    Trailers(bool),
    /// A conflict was found or the stream is one hyper refuses: nothing more is read.
    Stopped,
}

/// Follows a client's request stream, a few bytes of state: request heads
/// line by line (the first 18 bytes of each line compared, the rest skipped
/// with a `memchr`, except a `Content-Length` value, which is read), bodies
/// skipped by length.
#[derive(Debug, Clone)]
pub struct RequestScanner {
    state: State,
    /// The start of the current head line (up to `LONGEST` bytes).
    line: [u8; LONGEST],
    /// Bytes of the current head line so far (counted past `LONGEST`).
    len: usize,
    /// The current head has a non-empty line (its request line): blank
    /// lines before a request line are not a head's end.
    started: bool,
    /// The current head carried a `Content-Length` field.
    content_length: bool,
    /// The current head carried a `Transfer-Encoding` field.
    transfer_encoding: bool,
    /// The current line is a `Content-Length` field whose value is being read.
    in_length: bool,
    /// The `Content-Length` value read so far (`None`: not a valid number).
    length: Option<u64>,
    /// Whether `length` has a digit yet.
    length_digits: bool,
    /// Heads that ended so far.
    heads: u64,
    /// The place (0 = first) of the first head that named both fields.
    first_conflict: Option<u64>,
}

impl Default for RequestScanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            line: [0; LONGEST],
            len: 0,
            started: false,
            content_length: false,
            transfer_encoding: false,
            in_length: false,
            length: Some(0),
            length_digits: false,
            heads: 0,
            first_conflict: None,
        }
    }
}

impl RequestScanner {
    /// The place on the connection (0 = first) of the first request whose
    /// head named both `Content-Length` and `Transfer-Encoding`, once seen.
    pub fn first_conflict(&self) -> Option<u64> {
        self.first_conflict
    }

    /// How many request heads have ended so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Follows `bytes`, the next bytes the client sent.
    pub fn scan(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            rest = match self.state {
                State::Stopped => return,
                State::Head => self.head(rest),
                State::Body(left) => {
                    let taken = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - taken as u64;
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                    &rest[taken..]
                }
                State::ChunkSize(size) => {
                    let byte = rest[0];
                    self.state = match byte {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = u64::from((byte as char).to_digit(16).unwrap_or(0));
                            size.checked_mul(16)
                                .and_then(|s| s.checked_add(digit))
                                .map_or(State::Stopped, State::ChunkSize)
                        }
                        b';' | b' ' | b'\t' => State::ChunkExt(size),
                        b'\r' => State::ChunkSize(size),
                        b'\n' => Self::after_size_line(size),
                        _ => State::Stopped,
                    };
                    &rest[1..]
                }
                State::ChunkExt(size) => match memchr::memchr(b'\n', rest) {
                    Some(end) => {
                        self.state = Self::after_size_line(size);
                        &rest[end + 1..]
                    }
                    None => return,
                },
                State::ChunkData(left) => {
                    let taken = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - taken as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    &rest[taken..]
                }
                State::ChunkEnd => match memchr::memchr(b'\n', rest) {
                    Some(end) => {
                        self.state = State::ChunkSize(0);
                        &rest[end + 1..]
                    }
                    None => return,
                },
                State::Trailers(content) => {
                    let byte = rest[0];
                    self.state = match byte {
                        b'\n' if !content => State::Head,
                        b'\n' => State::Trailers(false),
                        b'\r' => State::Trailers(content),
                        _ => State::Trailers(true),
                    };
                    &rest[1..]
                }
            };
        }
    }

    /// After a chunk-size line: the last chunk's trailers, or the chunk's data.
    fn after_size_line(size: u64) -> State {
        if size == 0 {
            State::Trailers(false)
        } else {
            State::ChunkData(size)
        }
    }

    /// Follows head bytes; returns what is left after the head ended (or nothing).
    fn head<'b>(&mut self, mut rest: &'b [u8]) -> &'b [u8] {
        while !rest.is_empty() {
            if self.len >= LONGEST && !self.in_length {
                // Past the names that matter: jump to the end of the line.
                let Some(end) = memchr::memchr(b'\n', rest) else {
                    return &[];
                };
                rest = &rest[end..];
            }
            let byte = rest[0];
            rest = &rest[1..];
            if byte == b'\n' {
                if self.end_line() {
                    return rest;
                }
                continue;
            }
            if self.in_length {
                self.length_byte(byte);
            } else if self.len < LONGEST {
                self.line[self.len] = byte;
            }
            self.len += 1;
            if self.len == 15 && self.line[..15].eq_ignore_ascii_case(b"content-length:") {
                self.content_length = true;
                // A second `Content-Length` line: hyper refuses it unless it
                // repeats the first value, so the first one stands.
                self.in_length = !self.length_digits;
            }
        }
        rest
    }

    /// One byte of a `Content-Length` value: digits, spaces around them;
    /// anything else makes it unusable (hyper refuses such a request; a
    /// comma list of equal values keeps its first).
    fn length_byte(&mut self, byte: u8) {
        match byte {
            b'0'..=b'9' => {
                self.length = self
                    .length
                    .and_then(|l| l.checked_mul(10))
                    .and_then(|l| l.checked_add(u64::from(byte - b'0')));
                self.length_digits = true;
            }
            b' ' | b'\t' | b'\r' => {}
            b',' if self.length_digits => self.in_length = false,
            _ => self.length = None,
        }
    }

    /// A head line ended; says whether it was the blank line ending the head.
    fn end_line(&mut self) -> bool {
        let blank = self.len == 0 || (self.len == 1 && self.line[0] == b'\r');
        if !blank {
            if self.len >= LONGEST && self.line.eq_ignore_ascii_case(b"transfer-encoding:") {
                self.transfer_encoding = true;
            }
            self.started = true;
            self.len = 0;
            self.in_length = false;
            return false;
        }
        self.len = 0;
        if !self.started {
            // Blank lines before a request line (RFC 9112 §2.2 lets a server ignore them).
            return false;
        }
        let state = match (self.content_length, self.transfer_encoding) {
            (true, true) => {
                self.first_conflict.get_or_insert(self.heads);
                State::Stopped
            }
            (false, true) => State::ChunkSize(0),
            (true, false) => match self.length.filter(|_| self.length_digits) {
                Some(0) => State::Head,
                Some(len) => State::Body(len),
                None => State::Stopped,
            },
            (false, false) => State::Head,
        };
        let heads = self.heads + 1;
        let first_conflict = self.first_conflict;
        *self = Self {
            state,
            heads,
            first_conflict,
            ..Self::default()
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first conflicting head's place after reading `stream` in pieces of `split_every` bytes.
    fn conflict(stream: &[u8], split_every: usize) -> Option<u64> {
        let mut scanner = RequestScanner::default();
        for chunk in stream.chunks(split_every) {
            scanner.scan(chunk);
        }
        scanner.first_conflict()
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
                    Some(0),
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
            let mut scanner = RequestScanner::default();
            scanner.scan(head);
            assert_eq!(scanner.heads(), 1, "{:?}", String::from_utf8_lossy(head));
            assert_eq!(scanner.first_conflict(), None, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn a_conflict_after_a_content_length_body_is_found_in_the_same_read() {
        // The body holds what looks like a conflicting head: it is skipped.
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 59\r\n\r\n\
            GET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n\
            GET /b HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /c HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(&stream[40..44], b"GET ", "the body starts there");
        for split in [1, 3, 40, stream.len()] {
            assert_eq!(conflict(stream, split), Some(2), "split {split}");
        }
    }

    #[test]
    fn a_conflict_after_a_chunked_body_with_trailers_is_found() {
        let stream = b"\r\nPOST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nab\ncd\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        for split in [1, 2, 5, stream.len()] {
            assert_eq!(conflict(stream, split), Some(1), "split {split}");
        }
    }

    #[test]
    fn requests_without_bodies_follow_one_another() {
        let mut scanner = RequestScanner::default();
        scanner.scan(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(scanner.heads(), 3);
        assert_eq!(scanner.first_conflict(), None);
    }

    #[test]
    fn a_very_long_line_neither_overflows_nor_matches() {
        let mut head = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 1000));
        head.extend_from_slice(b"\r\n\r\n");
        let mut scanner = RequestScanner::default();
        for chunk in head.chunks(64) {
            scanner.scan(chunk);
        }
        assert_eq!((scanner.heads(), scanner.first_conflict()), (1, None));
    }

    proptest::proptest! {
        /// However a stream of two requests is split into reads, the verdict
        /// on each head is the one a plain line-by-line reading gives.
        #[test]
        fn the_verdict_does_not_depend_on_how_the_stream_is_split(
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
            let names: Vec<String> = lines
                .iter()
                .map(|l| l.split(':').next().unwrap_or("").to_ascii_lowercase())
                .collect();
            let has_length = names.iter().any(|n| n == "content-length");
            let has_chunked = names.iter().any(|n| n == "transfer-encoding");
            // A first request with no framing, then the generated one with a body to match.
            let mut stream = format!("GET /first HTTP/1.1{eol}Host: a{eol}{eol}POST / HTTP/1.1{eol}");
            for line in &lines {
                stream.push_str(line);
                stream.push_str(eol);
            }
            stream.push_str(eol);
            if has_chunked {
                stream.push_str(&format!("5{eol}hello{eol}0{eol}{eol}"));
            } else if has_length {
                stream.push_str("hello");
            }
            stream.push_str(&format!("GET /last HTTP/1.1{eol}{eol}"));
            let conflicting = has_length && has_chunked;
            let mut scanner = RequestScanner::default();
            let mut rest = stream.as_bytes();
            for cut in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                scanner.scan(chunk);
                rest = tail;
            }
            proptest::prop_assert_eq!(scanner.first_conflict(), conflicting.then_some(1));
            if !conflicting {
                proptest::prop_assert_eq!(scanner.heads(), 3);
            }
        }
    }
}
