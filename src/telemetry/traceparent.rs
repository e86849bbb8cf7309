//! W3C Trace Context's `traceparent` header (<https://www.w3.org/TR/trace-context/>
//! §3.2): parsed from a client, written for a server. Pure: no I/O, no SDK.

use std::fmt::Write as _;

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// The header naming the caller's span (W3C Trace Context §3.2).
pub const TRACEPARENT: &str = "traceparent";

/// The vendors' header that travels with `traceparent` (W3C Trace Context §3.3).
pub const TRACESTATE: &str = "tracestate";

/// What a valid `traceparent` says: the trace, the caller's span in it,
/// and whether the caller sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the request belongs to (never all zeros).
    pub trace_id: TraceId,
    /// The caller's span, the parent of tether's (never all zeros).
    pub parent_id: SpanId,
    /// The trace flags; bit 0 is "sampled".
    pub flags: TraceFlags,
}

/// Parses a `traceparent` value; `None` for anything malformed (the caller
/// then starts a new trace, W3C Trace Context §3.2.2).
///
/// `version-traceid-parentid-flags`, lowercase hex: version `ff` is
/// invalid; version `00` is exactly 55 characters; a later version may be
/// longer, its extra fields after a `-` ignored (§3.2.4); an all-zero
/// trace or parent id is invalid.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    let head = value.get(..55)?;
    let version = hex_u8(&head[0..2])?;
    match (version, value.len()) {
        (0xff, _) => return None,
        (0, 55) => {}
        (0, _) => return None,
        (_, 55) => {}
        (_, _) if value[55] == b'-' => {}
        _ => return None,
    }
    if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let trace_id = u128::from_str_radix(lower_hex(&head[3..35])?, 16).ok()?;
    let parent_id = u64::from_str_radix(lower_hex(&head[36..52])?, 16).ok()?;
    let flags = hex_u8(&head[53..55])?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id: TraceId::from(trace_id),
        parent_id: SpanId::from(parent_id),
        // Version 00 defines only the sampled bit; later versions' other
        // bits are not ours to pass on (§3.2.2.5).
        flags: TraceFlags::new(flags & 1),
    })
}

/// The version-00 `traceparent` naming span `span_id` of `trace_id`.
pub fn format(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> String {
    let mut value = String::with_capacity(55);
    let _ = write!(value, "00-{trace_id}-{span_id}-{:02x}", flags.to_u8() & 1);
    value
}

/// `bytes` as text if it is lowercase hex digits only (W3C allows no uppercase).
fn lower_hex(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        .then(|| std::str::from_utf8(bytes).ok())
        .flatten()
}

/// Two lowercase hex digits as a byte.
fn hex_u8(bytes: &[u8]) -> Option<u8> {
    u8::from_str_radix(lower_hex(bytes)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses() {
        let parent = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.flags.is_sampled());
        let unsampled = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.flags.is_sampled());
    }

    #[test]
    fn format_writes_what_parse_reads() {
        let parent = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(format(parent.trace_id, parent.parent_id, parent.flags), EXAMPLE);
        let value = format(parent.trace_id, SpanId::from(1), TraceFlags::default());
        assert_eq!(value, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-00");
        assert_eq!(parse(value.as_bytes()).unwrap().parent_id, SpanId::from(1));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00_and_its_extra_fields_ignored() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes-next";
        let parent = parse(later.as_bytes()).unwrap();
        assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.flags, TraceFlags::SAMPLED, "only the sampled bit is kept");
        assert_eq!(
            parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None,
            "extra fields follow a dash"
        );
    }
}
