//! The WebSocket frame-header tracker, differentially: an arbitrary byte
//! stream is cut at arbitrary points and fed to the tracker, and after every
//! piece its answers (boundary, messages, Close seen, close code, too big)
//! must equal those of a plain whole-buffer parse of the same prefix. So the
//! tracker never claims a boundary it has not reached, never runs ahead of
//! the bytes it was given, and splitting the input differently changes nothing.
//!
//! Input: byte 0 flags (bit 0: limits on), bytes 1–4 the frame and message
//! limits (two big-endian u16), byte 5 the cutting seed, the rest the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::ws::frames::FrameTracker;

/// What a whole-buffer parse knows about one complete frame header.
struct Frame {
    /// Offset just past the header.
    header_end: usize,
    /// Offset just past the payload (may lie beyond the input).
    end: u128,
    /// A data frame with FIN: one complete message.
    message: bool,
    /// A Close frame.
    close: bool,
    /// For a Close frame with a payload of two bytes or more, its code if present in the input.
    code: Option<u16>,
    /// This frame put the stream over the limits.
    too_big: bool,
}

/// Parses `data` as consecutive frames (RFC 6455 §5.2), independently of the tracker.
fn frames(data: &[u8], limits: Option<(u64, u64)>) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut message_len: u128 = 0;
    while data.len() - pos >= 2 {
        let (b0, b1) = (data[pos], data[pos + 1]);
        let masked = b1 & 0x80 != 0;
        let (extended, short) = match b1 & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let header_len = 2 + extended + if masked { 4 } else { 0 };
        if data.len() - pos < header_len {
            break;
        }
        let len = short.unwrap_or_else(|| {
            data[pos + 2..pos + 2 + extended]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        });
        let opcode = b0 & 0x0f;
        let header_end = pos + header_len;
        let close = opcode == 0x8;
        let code = (close && len >= 2 && data.len() >= header_end + 2).then(|| {
            let mask = if masked {
                &data[header_end - 4..header_end]
            } else {
                &[0u8; 4][..]
            };
            u16::from_be_bytes([data[header_end] ^ mask[0], data[header_end + 1] ^ mask[1]])
        });
        let mut too_big = false;
        if let Some((max_frame, max_message)) = limits {
            if opcode < 0x8 {
                message_len = if opcode == 0 {
                    message_len + u128::from(len)
                } else {
                    u128::from(len)
                };
                too_big = len > max_frame || message_len > u128::from(max_message);
            } else {
                // Control frames: over the frame limit, over 125 bytes or fragmented (RFC 6455 §5.5).
                too_big = len > max_frame || len > 125 || b0 & 0x80 == 0;
            }
        }
        let end = header_end as u128 + u128::from(len);
        out.push(Frame {
            header_end,
            end,
            message: b0 & 0x80 != 0 && opcode < 0x8,
            close,
            code,
            too_big,
        });
        if end > data.len() as u128 {
            break;
        }
        pos = end as usize;
    }
    out
}

/// What the tracker should say after the first `p` bytes.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    at_boundary: bool,
    messages: u64,
    saw_close: bool,
    close_code: Option<u16>,
    too_big: bool,
}

fn expected(frames: &[Frame], p: usize) -> Answers {
    let seen = || frames.iter().filter(|f| f.header_end <= p);
    // The code comes from the first Close frame long enough to carry one.
    let close_code = frames
        .iter()
        .find(|f| f.close && f.end >= f.header_end as u128 + 2)
        .filter(|f| f.header_end + 2 <= p)
        .and_then(|f| f.code);
    Answers {
        at_boundary: p == 0 || frames.iter().any(|f| f.end == p as u128),
        messages: seen().filter(|f| f.message).count() as u64,
        saw_close: seen().any(|f| f.close),
        close_code,
        too_big: seen().any(|f| f.too_big),
    }
}

fn answers(t: &FrameTracker) -> Answers {
    Answers {
        at_boundary: t.at_boundary(),
        messages: t.messages(),
        saw_close: t.saw_close(),
        close_code: t.close_code(),
        too_big: t.too_big(),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let limits = (data[0] & 1 == 1).then(|| {
        (
            u64::from(u16::from_be_bytes([data[1], data[2]])),
            u64::from(u16::from_be_bytes([data[3], data[4]])),
        )
    });
    let mut seed = data[5];
    let stream = &data[6..];
    let reference = frames(stream, limits);
    let fresh = || match limits {
        Some((frame, message)) => FrameTracker::with_limits(frame, message),
        None => FrameTracker::default(),
    };

    // Cut where the seed says, checking after every piece (as the tunnel
    // does, with a look-ahead probe on a clone first).
    let mut tracker = fresh();
    let mut at = 0;
    while at < stream.len() {
        let step = (usize::from(seed % 23) + 1).min(stream.len() - at);
        seed = seed.rotate_left(3) ^ 0x5b;
        let piece = &stream[at..at + step];
        let mut probe = tracker.clone();
        probe.observe(piece);
        tracker.observe(piece);
        at += step;
        assert_eq!(answers(&probe), answers(&tracker), "a probe on a clone tells the same");
        assert_eq!(answers(&tracker), expected(&reference, at), "after {at} bytes");
    }

    // One piece, and one byte at a time, end in the same state.
    let mut whole = fresh();
    whole.observe(stream);
    let mut bytes = fresh();
    for byte in stream {
        bytes.observe(std::slice::from_ref(byte));
    }
    let end = expected(&reference, stream.len());
    assert_eq!(answers(&whole), end, "in one piece");
    assert_eq!(answers(&bytes), end, "byte by byte");
    assert_eq!(answers(&tracker), end, "in seeded pieces");
});
