//! The small part of RFC 6455 (WebSocket) that the echo server and the load
//! generator need: the handshake key, frame headers and masking.
//!
//! Hand-rolled rather than taken from a WebSocket library so that the echo
//! server and the client spend as little CPU per message as possible: every
//! target is measured with the same fixed cost on the client and server side,
//! so the cheaper that cost, the more the figure shows the proxy's own cost.

use sha1::{Digest, Sha1};

/// The GUID appended to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3).
pub const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Continuation frame (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Close status 1002: protocol error (RFC 6455 §7.4.1).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close status 1009: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64 of the SHA-1 of the key followed by [`GUID`].
pub fn accept_key(key: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key);
    hasher.update(GUID);
    data_encoding::BASE64.encode(&hasher.finalize())
}

/// A new random `Sec-WebSocket-Key`: base64 of 16 bytes.
pub fn new_key(rng: &mut XorShift) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    raw[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    data_encoding::BASE64.encode(&raw)
}

/// A parsed frame header. The payload follows at `header_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this frame ends a message.
    pub fin: bool,
    /// One of the `OP_*` constants.
    pub opcode: u8,
    /// The masking key; clients must mask, servers must not (RFC 6455 §5.3).
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

impl FrameHeader {
    /// Header plus payload: how many bytes of the buffer this frame takes.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a frame header was refused; each maps to a close status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Reserved bits set, unknown opcode, or a malformed control frame.
    Protocol,
    /// Payload larger than the configured maximum.
    TooBig,
}

impl FrameError {
    /// The close status to answer with.
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::Protocol => CLOSE_PROTOCOL_ERROR,
            FrameError::TooBig => CLOSE_TOO_BIG,
        }
    }
}

/// Parses the frame header at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed for the header (the payload
/// is not required to be complete: compare [`FrameHeader::frame_len`] with the
/// buffer). No extension is ever negotiated, so any reserved bit is an error.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            // Control frames: not fragmented, payload at most 125 (§5.5).
            if !fin || len7 > 125 {
                return Err(FrameError::Protocol);
            }
        }
        _ => return Err(FrameError::Protocol),
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(FrameError::Protocol);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let payload_len = match usize::try_from(payload_len) {
        Ok(n) if n <= max_payload => n,
        _ => return Err(FrameError::TooBig),
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let key = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// Appends a frame header to `out`.
pub fn write_header(out: &mut Vec<u8>, fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: usize) {
    let b0 = if fin { 0x80 } else { 0 } | (opcode & 0x0F);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    if len < 126 {
        // `len < 126` so the cast keeps every bit.
        out.push(mask_bit | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Appends a whole frame; the payload is masked when `mask` is given.
pub fn write_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) {
    write_header(out, fin, opcode, mask, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
}

/// XORs `buf` with the masking key, starting at key phase 0 (RFC 6455 §5.3).
/// Masking and unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let k32 = u32::from_ne_bytes(key);
    // The same four key bytes twice, in memory order, on either endianness.
    let k64 = u64::from(k32) | (u64::from(k32) << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word) ^ k64;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key phase is 0 again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// A tiny xorshift64* generator: masking keys and handshake keys need to vary,
/// not to be cryptographically strong, and this costs a few instructions.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded from `seed` (zero is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// A generator seeded from the clock and an index, different per connection.
    pub fn from_time(index: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self::new(nanos ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Four random bytes for a masking key.
    pub fn mask_key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn masked_frame_round_trips_for_every_length_class() {
        let mut rng = XorShift::new(7);
        for len in [0usize, 1, 5, 8, 13, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let key = rng.mask_key();
            let mut out = Vec::new();
            write_frame(&mut out, true, OP_BINARY, Some(key), &payload);
            let h = parse_header(&out, 1 << 20).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            assert_eq!(h.mask, Some(key));
            assert_eq!(h.frame_len(), out.len());
            let body = &mut out[h.header_len..];
            apply_mask(body, key);
            assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn mask_matches_the_bytewise_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut fast: Vec<u8> = (0..37u8).collect();
        let slow: Vec<u8> = (0..37u8).enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        apply_mask(&mut fast, key);
        assert_eq!(fast, slow);
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let mut out = Vec::new();
        write_frame(&mut out, true, OP_TEXT, Some([1, 2, 3, 4]), &[0u8; 300]);
        for cut in 0..8 {
            assert_eq!(parse_header(&out[..cut], 1 << 20), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        // Reserved bit.
        assert_eq!(parse_header(&[0xC2, 0x00], 100), Err(FrameError::Protocol));
        // Unknown opcode.
        assert_eq!(parse_header(&[0x83, 0x00], 100), Err(FrameError::Protocol));
        // Fragmented ping.
        assert_eq!(parse_header(&[0x09, 0x00], 100), Err(FrameError::Protocol));
        // Control frame over 125 bytes.
        assert_eq!(parse_header(&[0x89, 126, 0, 200], 1000), Err(FrameError::Protocol));
        // Too big.
        assert_eq!(parse_header(&[0x82, 126, 1, 0], 100), Err(FrameError::TooBig));
        // 64-bit length with the top bit set.
        assert_eq!(
            parse_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], usize::MAX),
            Err(FrameError::Protocol)
        );
    }
}
