//! `tether import haproxy|nginx FILE`: translates another balancer's
//! configuration into tether's TOML.
//!
//! Pure: text in, a [`Translation`] (the TOML, with a comment above each
//! piece naming the source line it came from, and the list of directives
//! that could not be expressed) or a [`ParseError`] out; the CLI reads the
//! file and prints. Nothing is dropped silently: every directive either
//! becomes keys, is recognised as something tether does by itself (a
//! comment says why), or is listed as not translated.

mod haproxy;
mod nginx;
mod output;

pub use output::{Translation, Untranslated};

/// A file the importer cannot read as a configuration of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ParseError {
    /// The file's name as given (for the message).
    pub file: String,
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// Translates an HAProxy configuration (`haproxy.cfg`); `file` names it in comments and errors.
pub fn haproxy(text: &str, file: &str) -> Result<Translation, ParseError> {
    haproxy::translate(text, file)
}

/// Translates an NGINX configuration (`nginx.conf`); `file` names it in comments and errors.
pub fn nginx(text: &str, file: &str) -> Result<Translation, ParseError> {
    nginx::translate(text, file)
}

/// Converts an HAProxy or NGINX time (`5000` = ms for HAProxy, `5s`, `1m`,
/// `2h`, `1d`; NGINX's bare numbers are seconds) into a tether duration.
fn duration(text: &str, bare_unit: &str) -> Option<String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().ok()?;
    let unit = match unit {
        "" => bare_unit,
        "ms" | "s" | "m" | "h" | "d" => unit,
        _ => return None,
    };
    Some(format!("{value}{unit}"))
}

/// A size as HAProxy and NGINX write them (`30k`, `10m`, `1g`, `100000`;
/// binary multiples, as both read them) in bytes or entries.
fn size(text: &str) -> Option<u64> {
    let (digits, factor) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1 << 10),
        'm' | 'M' => (&text[..text.len() - 1], 1 << 20),
        'g' | 'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().map(|n| n * factor)
}

/// A listen address as tether writes it: `*:80`, `:80` and `80` listen on every IPv4 address.
fn listen_address(text: &str) -> Option<String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port),
        None => ("", text),
    };
    let port: u16 = port.parse().ok()?;
    let host = match host {
        "" | "*" | "0.0.0.0" => "0.0.0.0".to_string(),
        "[::]" | "::" => "[::]".to_string(),
        h if h.parse::<std::net::Ipv4Addr>().is_ok() => h.to_string(),
        h if h.starts_with('[') && h.ends_with(']') => h.to_string(),
        _ => return None,
    };
    Some(format!("{host}:{port}"))
}

/// Escapes `text` for use inside a regular expression.
fn regex_escape(text: &str) -> String {
    regex::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_with_their_bare_unit() {
        assert_eq!(duration("5000", "ms").as_deref(), Some("5000ms"));
        assert_eq!(duration("60", "s").as_deref(), Some("60s"));
        assert_eq!(duration("1h", "ms").as_deref(), Some("1h"));
        assert_eq!(duration("10us", "ms"), None);
        assert_eq!(duration("x", "s"), None);
    }

    #[test]
    fn listen_addresses_default_to_every_ipv4_address() {
        assert_eq!(listen_address("*:80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(listen_address(":8080").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(listen_address("443").as_deref(), Some("0.0.0.0:443"));
        assert_eq!(listen_address("127.0.0.1:81").as_deref(), Some("127.0.0.1:81"));
        assert_eq!(listen_address("[::]:80").as_deref(), Some("[::]:80"));
        assert_eq!(listen_address("unix@/x"), None);
        assert_eq!(listen_address("example.com:80"), None);
    }
}
