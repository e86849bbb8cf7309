//! `request_headers` / `response_headers` of a route or backend: headers
//! set and removed on messages passing through (HAProxy's
//! `http-request set-header`, NGINX's `proxy_set_header`). Names and values
//! are checked and compiled once here, never per request; hop-by-hop and
//! framing headers are refused, since tether itself owns them.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, SourceMap};

/// The serde shape: `{ set = { "X-App" = "1" }, remove = ["X-Debug"] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    /// Headers written (replacing any the message carries), name → value.
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Headers taken out of the message.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// Headers set and removed on one side (request or response) of an
/// exchange, compiled: removals first, then the set headers, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Headers written, replacing any of the same name.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers taken out.
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// Whether the rules change nothing (the common case: one branch per message).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// Which message a rule set applies to: the forbidden names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `request_headers`: what the server receives.
    Request,
    /// `response_headers`: what the client receives.
    Response,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Request => "request_headers",
            Side::Response => "response_headers",
        }
    }
}

/// Why a header may not be set or removed by a rule, if it may not:
/// hop-by-hop headers (RFC 9110 §7.6.1), the message's framing (RFC 9112 §6),
/// the WebSocket handshake's own keys (RFC 6455 §4), and on responses `Host`
/// (a request header).
pub fn forbidden(name: &HeaderName, side: Side) -> Option<&'static str> {
    match name.as_str() {
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "upgrade" => {
            Some("it is a hop-by-hop header, which tether writes per connection (RFC 9110 §7.6.1)")
        }
        "transfer-encoding" | "content-length" => Some("it frames the message body, which tether relays as it is"),
        "sec-websocket-key" | "sec-websocket-accept" => {
            Some("it belongs to the WebSocket handshake between client and server (RFC 6455 §4)")
        }
        "host" if side == Side::Response => Some("`Host` is a request header"),
        _ => None,
    }
}

/// Checks and compiles `raw` (the value of `key` on `side`).
pub(crate) fn compile(raw: &RawHeaderRules, side: Side, source: &SourceMap<'_>) -> Result<HeaderRules, ConfigError> {
    let key = side.key();
    let name_of = |text: &Spanned<String>, what: &str| -> Result<HeaderName, ConfigError> {
        let name = HeaderName::from_bytes(text.get_ref().as_bytes()).map_err(|_| {
            source.error(
                Some(text.span()),
                format!(
                    "`{key}.{what}`: `{}` is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                    text.get_ref()
                ),
            )
        })?;
        if let Some(why) = forbidden(&name, side) {
            return Err(source.error(
                Some(text.span()),
                format!(
                    "`{key}.{what}` cannot change `{}`: {why}; remove it from the rule",
                    text.get_ref()
                ),
            ));
        }
        Ok(name)
    };
    let mut rules = HeaderRules::default();
    for name in &raw.remove {
        rules.remove.push(name_of(name, "remove")?);
    }
    for (name, value) in &raw.set {
        let header = name_of(name, "set")?;
        if rules.remove.contains(&header) {
            return Err(source.error(
                Some(name.span()),
                format!(
                    "`{key}`: `{}` is both set and removed: keep one of the two",
                    name.get_ref()
                ),
            ));
        }
        if rules.set.iter().any(|(n, _)| *n == header) {
            return Err(source.error(
                Some(name.span()),
                format!(
                    "`{key}.set` names `{}` twice (names compare without case)",
                    name.get_ref()
                ),
            ));
        }
        let value = HeaderValue::from_str(value.get_ref()).map_err(|_| {
            source.error(
                Some(value.span()),
                format!(
                    "`{key}.set.{}`: the value is not a valid header value (no control characters or line breaks)",
                    name.get_ref()
                ),
            )
        })?;
        rules.set.push((header, value));
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str, side: Side) -> Result<HeaderRules, ConfigError> {
        #[derive(Deserialize)]
        struct Wrap {
            rules: RawHeaderRules,
        }
        let wrap: Wrap = toml::from_str(text).expect("toml");
        compile(&wrap.rules, side, &SourceMap::new("t.toml", text))
    }

    fn refusal(result: Result<HeaderRules, ConfigError>) -> (usize, usize, String) {
        ConfigError::invalid_at(result)
    }

    #[test]
    fn names_and_values_are_compiled_once() {
        let rules = compiled(
            "rules = { set = { \"X-App\" = \"1\", \"x-b\" = \"two words\" }, remove = [\"X-Debug\"] }",
            Side::Request,
        )
        .expect("valid");
        assert_eq!(rules.remove, [HeaderName::from_static("x-debug")]);
        assert_eq!(rules.set.len(), 2);
        assert_eq!(rules.set[0].0, "x-app");
        assert_eq!(rules.set[1].1, "two words");
    }

    #[test]
    fn framing_and_hop_by_hop_headers_are_refused_where_written() {
        for name in [
            "Connection",
            "Transfer-Encoding",
            "Content-Length",
            "Upgrade",
            "TE",
            "Trailer",
            "Keep-Alive",
            "Proxy-Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Accept",
        ] {
            let text = format!("\nrules = {{ remove = [\"{name}\"] }}");
            let (line, column, message) = refusal(compiled(&text, Side::Request));
            assert_eq!((line, column), (2, 21), "{name}: {message}");
            assert!(message.contains("cannot change"), "{message}");
        }
        let (_, _, message) = refusal(compiled("rules = { set = { Host = \"x\" } }", Side::Response));
        assert!(message.contains("request header"), "{message}");
        compiled("rules = { set = { Host = \"x\" } }", Side::Request).expect("Host may be set on requests");
    }

    #[test]
    fn invalid_names_and_values_are_refused() {
        let (_, _, message) = refusal(compiled("rules = { set = { \"X App\" = \"1\" } }", Side::Request));
        assert!(message.contains("not a valid header name"), "{message}");
        let (_, _, message) = refusal(compiled("rules = { set = { \"X-App\" = \"a\\nb\" } }", Side::Request));
        assert!(message.contains("not a valid header value"), "{message}");
        let (_, _, message) = refusal(compiled(
            "rules = { set = { \"X-App\" = \"1\" }, remove = [\"x-app\"] }",
            Side::Request,
        ));
        assert!(message.contains("both set and removed"), "{message}");
    }
}
