//! WebSocket frame boundaries as bytes stream through a tunnel (RFC 6455
//! §5.2): headers only (opcode, length), no unmasking and no copy of
//! payloads, so tether knows when it may inject a Close frame of its own and
//! how many messages passed.

/// Status codes tether sends in its own Close frames (RFC 6455 §7.4.1 and IANA registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the endpoint is going away (tether shutting down).
    GoingAway,
    /// 1012: the service is restarting (server died, drained or taken out).
    ServiceRestart,
    /// 1009: a frame or message was larger than the frontend allows.
    MessageTooBig,
    /// 1001 for a tunnel idle past the frontend's `websocket.idle_timeout`.
    Idle,
    /// 1001 for a client that did not answer tether's ping in time.
    NoPong,
    /// 1002: the client broke the protocol (a control frame over 125 bytes or fragmented).
    ProtocolError,
    /// 1008: the client sent messages faster than the frontend allows.
    PolicyViolation,
    /// 1001 for a tunnel open for its `websocket.max_lifetime`.
    MaxLifetime,
}

impl CloseCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway | CloseCode::Idle | CloseCode::NoPong | CloseCode::MaxLifetime => 1001,
            CloseCode::ServiceRestart => 1012,
            CloseCode::MessageTooBig => 1009,
            CloseCode::ProtocolError => 1002,
            CloseCode::PolicyViolation => 1008,
        }
    }

    /// The variant of a numeric code tether sends (None for 0 or others;
    /// 1001 reads back as `GoingAway`).
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1001 => Some(CloseCode::GoingAway),
            1012 => Some(CloseCode::ServiceRestart),
            1009 => Some(CloseCode::MessageTooBig),
            1002 => Some(CloseCode::ProtocolError),
            1008 => Some(CloseCode::PolicyViolation),
            _ => None,
        }
    }

    fn reason(self) -> &'static [u8] {
        match self {
            CloseCode::GoingAway => b"tether is shutting down",
            CloseCode::ServiceRestart => b"server restarting: reconnect",
            CloseCode::MessageTooBig => b"message too big",
            CloseCode::Idle => b"idle for too long",
            CloseCode::NoPong => b"no answer to ping",
            CloseCode::ProtocolError => b"protocol error",
            CloseCode::PolicyViolation => b"too many messages",
            CloseCode::MaxLifetime => b"max lifetime",
        }
    }

    /// The unmasked server-to-client Close frame carrying this code and a short reason.
    pub fn frame(self) -> Vec<u8> {
        let reason = self.reason();
        let mut frame = Vec::with_capacity(4 + reason.len());
        frame.push(0x88); // FIN + opcode 8 (Close)
        frame.push((2 + reason.len()) as u8); // unmasked, < 126
        frame.extend_from_slice(&self.code().to_be_bytes());
        frame.extend_from_slice(reason);
        frame
    }

    /// The Close frame a client sends (masked, RFC 6455 §5.3), carrying this
    /// code and reason: what tether tells a server when it ends a tunnel
    /// itself. `mask` is the masking key (any value is valid; it hides
    /// nothing from a server).
    pub fn client_frame(self, mask: [u8; 4]) -> Vec<u8> {
        let mut frame = self.frame();
        frame[1] |= 0x80;
        let payload = frame.split_off(2);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        frame
    }
}

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The unmasked server-to-client Ping frame tether sends to an idle client.
pub const PING_FRAME: &[u8] = b"\x89\x06tether";

/// Follows frame headers in one direction of a WebSocket stream.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    /// Header bytes of the frame being parsed (at most 14).
    header: [u8; 14],
    /// How many header bytes are held.
    have: u8,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    /// A Close frame passed in this direction.
    saw_close: bool,
    /// Complete messages passed (frames with FIN set, control frames excluded).
    messages: u64,
    /// The status code of the first Close frame, once its two bytes passed.
    close_code: Option<u16>,
    /// While a Close frame's payload starts: its mask and the code bytes so far.
    reading_code: Option<CodeRead>,
    /// Largest frame and message payloads allowed in this direction, if limited.
    limits: Option<(u64, u64)>,
    /// Payload bytes of the data message being received so far.
    message_len: u64,
    /// The first frame that broke the limits (1009) or the protocol (1002).
    violation: Option<CloseCode>,
    /// Bytes are read only to be thrown away (tether is closing): messages are no longer counted.
    discarding: bool,
}

/// The start of a Close frame's payload being read: its two code bytes.
/// Kept small (with `u8` counts) because every open tunnel holds two trackers.
#[derive(Debug, Clone, Copy)]
struct CodeRead {
    /// The frame's masking key (zeros when unmasked).
    mask: [u8; 4],
    /// The code bytes unmasked so far.
    code: [u8; 2],
    /// How many of them.
    have: u8,
}

impl FrameTracker {
    /// Accounts for `data`, the next bytes of the stream in this direction.
    pub fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                if let Some(mut read) = self.reading_code.take() {
                    // Only the two code bytes of a Close payload are read (and unmasked).
                    for byte in data.iter().take(2 - usize::from(read.have)) {
                        let at = usize::from(read.have);
                        read.code[at] = byte ^ read.mask[at % 4];
                        read.have += 1;
                    }
                    if read.have == 2 {
                        self.close_code.get_or_insert(u16::from_be_bytes(read.code));
                    } else {
                        self.reading_code = Some(read);
                    }
                }
                let skip = self.remaining.min(data.len() as u64);
                self.remaining -= skip;
                data = &data[skip as usize..];
                continue;
            }
            let needed = self.header_len().unwrap_or(2);
            let have = usize::from(self.have);
            let take = (needed - have).min(data.len());
            self.header[have..have + take].copy_from_slice(&data[..take]);
            // At most 14 header bytes: fits a u8.
            self.have += take as u8;
            data = &data[take..];
            match self.header_len() {
                Some(len) if usize::from(self.have) == len => self.finish_header(),
                _ => {}
            }
        }
    }

    /// Length of the current header, once its first two bytes are known.
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Some(2 + extended + if masked { 4 } else { 0 })
    }

    fn finish_header(&mut self) {
        let opcode = self.header[0] & 0x0f;
        let fin = self.header[0] & 0x80 != 0;
        self.remaining = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or([0; 8])),
            n => u64::from(n),
        };
        if opcode == 0x8 {
            self.saw_close = true;
            if self.remaining >= 2 && self.close_code.is_none() {
                let len = usize::from(self.have);
                let mask = if self.header[1] & 0x80 != 0 {
                    [
                        self.header[len - 4],
                        self.header[len - 3],
                        self.header[len - 2],
                        self.header[len - 1],
                    ]
                } else {
                    [0; 4]
                };
                self.reading_code = Some(CodeRead {
                    mask,
                    code: [0; 2],
                    have: 0,
                });
            }
        }
        if let Some((max_frame, max_message)) = self.limits {
            let violation = if opcode < 0x8 {
                // A continuation (0) adds to the message; text or binary (or a
                // reserved data opcode) starts one. Saturating: a 64-bit length
                // near u64::MAX must not wrap to a small total.
                self.message_len = if opcode == 0 {
                    self.message_len.saturating_add(self.remaining)
                } else {
                    self.remaining
                };
                (self.remaining > max_frame || self.message_len > max_message).then_some(CloseCode::MessageTooBig)
            } else if self.remaining > MAX_CONTROL_PAYLOAD || !fin {
                // Control (and reserved control) frames: at most 125 bytes, never fragmented.
                Some(CloseCode::ProtocolError)
            } else {
                (self.remaining > max_frame).then_some(CloseCode::MessageTooBig)
            };
            if self.violation.is_none() {
                self.violation = violation;
            }
        }
        if fin && opcode < 0x8 && !self.discarding {
            self.messages += 1;
        }
        self.have = 0;
    }

    /// How many bytes of `data` (the next bytes of the stream) may pass
    /// before `stop` first holds: the longest prefix that ends at a frame
    /// boundary before the frame whose header makes `stop` hold (a frame
    /// over the limits, one message too many), all of `data` if it never
    /// does. The tracker itself is not changed.
    pub fn prefix_before(&self, data: &[u8], stop: impl Fn(&FrameTracker) -> bool) -> usize {
        let mut probe = self.clone();
        let mut passed = 0;
        let mut at = 0;
        while at < data.len() {
            // Payloads in one step; headers a byte at a time, so `stop` is
            // asked as soon as a header is complete.
            let step = if probe.remaining > 0 {
                probe.remaining.min((data.len() - at) as u64) as usize
            } else {
                1
            };
            probe.observe(&data[at..at + step]);
            at += step;
            if stop(&probe) {
                return passed;
            }
            if probe.at_boundary() {
                passed = at;
            }
        }
        data.len()
    }

    /// Whether the bytes so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.have == 0
    }

    /// Whether a Close frame passed.
    pub fn saw_close(&self) -> bool {
        self.saw_close
    }

    /// A tracker that flags frames over `max_frame` and messages over
    /// `max_message` payload bytes (1009), and control frames over 125 bytes
    /// or fragmented (1002): the checks of what a client sends.
    pub fn with_limits(max_frame: u64, max_message: u64) -> Self {
        Self {
            limits: Some((max_frame, max_message)),
            ..Self::default()
        }
    }

    /// From now on the bytes observed are thrown away, not carried: frames
    /// (a Close among them) are still followed, messages no longer counted.
    pub fn discard_from_now(&mut self) {
        self.discarding = true;
    }

    /// Whether this tracker enforces limits.
    pub fn is_limited(&self) -> bool {
        self.limits.is_some()
    }

    /// Whether a frame or message went over the limits (or broke the protocol).
    pub fn too_big(&self) -> bool {
        self.violation.is_some()
    }

    /// The Close code owed for the first frame that broke the limits
    /// (1009) or the protocol (1002), if one did.
    pub fn violation(&self) -> Option<CloseCode> {
        self.violation
    }

    /// The status code of the first Close frame that passed, if it had one.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Complete messages passed.
    pub fn messages(&self) -> u64 {
        self.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload_len {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0xAB, payload_len));
        f
    }

    #[test]
    fn boundaries_are_found_whatever_the_chunking() {
        let mut stream = Vec::new();
        stream.extend(frame(0x1, true, 5, false));
        stream.extend(frame(0x2, false, 300, true));
        stream.extend(frame(0x0, true, 70_000, true));
        stream.extend(frame(0x9, true, 0, false));
        stream.extend(frame(0x8, true, 2, false));
        for chunk in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let mut t = FrameTracker::default();
            for (i, piece) in stream.chunks(chunk).enumerate() {
                t.observe(piece);
                let consumed = (i * chunk + piece.len()).min(stream.len());
                if consumed == 5 + 2 || consumed == stream.len() {
                    assert!(t.at_boundary(), "chunk {chunk}: boundary after {consumed}");
                }
            }
            assert!(t.at_boundary());
            assert!(t.saw_close());
            assert_eq!(
                t.messages(),
                2,
                "text + fragmented binary; ping and close are not messages"
            );
        }
    }

    #[test]
    fn mid_frame_is_not_a_boundary() {
        let mut t = FrameTracker::default();
        let f = frame(0x2, true, 1000, false);
        t.observe(&f[..10]);
        assert!(!t.at_boundary());
        t.observe(&f[10..]);
        assert!(t.at_boundary());
        t.observe(&f[..1]);
        assert!(!t.at_boundary(), "half a header");
    }

    #[test]
    fn the_close_code_is_read_even_masked_and_split() {
        let mut masked = vec![0x88, 0x80 | 4, 9, 8, 7, 6];
        masked.extend_from_slice(&[0x03 ^ 9, 0xe8 ^ 8, b'o' ^ 7, b'k' ^ 6]); // 1000 "ok"
        for chunk in [1, 2, 5, masked.len()] {
            let mut t = FrameTracker::default();
            let mut data = frame(0x1, true, 3, false);
            data.extend_from_slice(&masked);
            for piece in data.chunks(chunk) {
                t.observe(piece);
            }
            assert_eq!(t.close_code(), Some(1000), "chunk {chunk}");
            assert!(t.at_boundary());
        }
        let mut t = FrameTracker::default();
        t.observe(&CloseCode::ServiceRestart.frame());
        assert_eq!(t.close_code(), Some(1012));
        let mut empty = FrameTracker::default();
        empty.observe(&[0x88, 0x00]);
        assert_eq!(empty.close_code(), None);
        assert!(empty.saw_close());
    }

    #[test]
    fn frames_and_messages_over_the_limits_are_flagged() {
        let mut t = FrameTracker::with_limits(1000, 1500);
        t.observe(&frame(0x1, true, 1000, true));
        assert!(!t.too_big());
        t.observe(&frame(0x2, false, 800, true));
        t.observe(&frame(0x0, true, 800, true));
        assert!(t.too_big(), "1600 bytes in two fragments is over the message limit");
        let mut big_frame = FrameTracker::with_limits(1000, 1_000_000);
        big_frame.observe(&frame(0x2, true, 1001, true)[..8]);
        assert!(big_frame.too_big(), "the header alone tells");
        let mut control = FrameTracker::with_limits(200, 200);
        control.observe(&frame(0x9, true, 100, true));
        control.observe(&frame(0x1, true, 150, true));
        assert!(!control.too_big(), "a control frame is not part of a message");
    }

    #[test]
    fn control_and_reserved_frames_are_checked_too() {
        // Reserved control opcode 0xB over the frame limit: 1009.
        let mut t = FrameTracker::with_limits(10, 1000);
        t.observe(&frame(0xB, true, 20, true));
        assert_eq!(t.violation(), Some(CloseCode::MessageTooBig));
        // A ping over 125 bytes breaks RFC 6455 whatever the limits: 1002.
        let mut t = FrameTracker::with_limits(u64::MAX, u64::MAX);
        t.observe(&frame(0x9, true, 126, true)[..8]);
        assert_eq!(t.violation(), Some(CloseCode::ProtocolError), "the header alone tells");
        // So does a fragmented control frame.
        let mut t = FrameTracker::with_limits(u64::MAX, u64::MAX);
        t.observe(&frame(0xA, false, 3, true));
        assert_eq!(t.violation(), Some(CloseCode::ProtocolError));
        // Reserved data opcodes count as messages.
        let mut t = FrameTracker::with_limits(10, 10);
        t.observe(&frame(0x3, true, 11, true));
        assert_eq!(t.violation(), Some(CloseCode::MessageTooBig));
        // The first violation is the one answered.
        t.observe(&frame(0x9, true, 200, true));
        assert_eq!(t.violation(), Some(CloseCode::MessageTooBig));
    }

    #[test]
    fn the_prefix_before_a_bad_frame_ends_at_a_boundary() {
        let tracker = FrameTracker::with_limits(100, 100);
        let first = frame(0x2, true, 50, true);
        let mut stream = first[..20].to_vec();
        let rest_of_first = first[20..].to_vec();
        let mut t = tracker.clone();
        t.observe(&stream);
        stream = rest_of_first.clone();
        stream.extend(frame(0x1, true, 10, true));
        stream.extend(frame(0x2, true, 500, true));
        let clean = t.prefix_before(&stream, |p| p.violation().is_some());
        assert_eq!(
            clean,
            rest_of_first.len() + 16,
            "the end of the first frame and the small one pass"
        );
        let base = t.messages();
        let none_more = t.prefix_before(&stream, |p| p.messages() > base);
        assert_eq!(
            none_more,
            rest_of_first.len(),
            "no new message allowed: the frame in progress ends"
        );
        let one_more = t.prefix_before(&stream, |p| p.messages() > base + 1);
        assert_eq!(one_more, rest_of_first.len() + 16, "one more message allowed");
        assert_eq!(t.prefix_before(&stream[..10], |p| p.violation().is_some()), 10);
    }

    #[test]
    fn a_client_close_frame_is_masked_and_reads_back() {
        let f = CloseCode::GoingAway.client_frame([7, 1, 2, 9]);
        assert_eq!(f[1] & 0x80, 0x80, "masked");
        let mut t = FrameTracker::default();
        t.observe(&f);
        assert!(t.at_boundary() && t.saw_close());
        assert_eq!(t.close_code(), Some(1001));
    }

    #[test]
    fn a_continuation_of_absurd_length_is_too_big_and_does_not_overflow() {
        // Found by the frame_tracker fuzz target: a one-byte fragment then a
        // continuation announcing u64::MAX bytes overflowed the message total.
        let mut stream = frame(0x2, false, 1, true);
        stream.extend_from_slice(&[0x80, 0x80 | 127]);
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        stream.extend_from_slice(&[1, 2, 3, 4]);
        let mut t = FrameTracker::with_limits(u64::MAX, 1_000_000);
        t.observe(&stream);
        assert!(t.too_big(), "the message is over the limit, not wrapped under it");
        assert!(!t.at_boundary());
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let f = CloseCode::ServiceRestart.frame();
        assert_eq!(&f[..4], &[0x88, f.len() as u8 - 2, 0x03, 0xf4]);
        let mut t = FrameTracker::default();
        t.observe(&f);
        assert!(t.at_boundary() && t.saw_close());
        assert_eq!(&CloseCode::GoingAway.frame()[2..4], &1001u16.to_be_bytes());
    }
}
