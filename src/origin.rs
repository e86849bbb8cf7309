//! Cross-site WebSocket hijacking defence: which `Origin`s may open a
//! WebSocket through a route (RFC 6455 §10.2: browsers always send Origin;
//! the server side must check it, since cookies ride along cross-site).

use serde::{Deserialize, Deserializer};

/// One allowed origin: exact (`https://app.example.com`) or a subdomain
/// wildcard (`https://*.example.com`, or `*.example.com` for any scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// Required scheme, lower case; `None` matches any.
    scheme: Option<String>,
    /// Lower-case host (with port, if given); for a wildcard, the suffix after `*`.
    host: String,
    wildcard: bool,
}

impl OriginPattern {
    /// Parses a pattern; the error says how to write one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (scheme, rest) = match lower.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_string()), rest.to_string()),
            None => (None, lower.clone()),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "`{text}` is not an origin: write \"https://app.example.com\" or \"https://*.example.com\""
            ));
        }
        let (wildcard, host) = match rest.strip_prefix("*.") {
            Some(suffix) => (true, format!(".{suffix}")),
            None if rest.contains('*') => {
                return Err(format!(
                    "`{text}`: a wildcard may only start the host, as in \"*.example.com\""
                ))
            }
            None => (false, rest.to_string()),
        };
        if scheme.is_none() && !wildcard {
            return Err(format!("`{text}` needs a scheme: write \"https://{text}\""));
        }
        Ok(Self { scheme, host, wildcard })
    }

    /// Whether the request's `Origin` value matches.
    pub fn matches(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let Some((scheme, host)) = origin.split_once("://") else {
            return false; // "null" and other opaque origins
        };
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        if self.wildcard {
            host.ends_with(&self.host) && host.len() > self.host.len()
        } else {
            host == self.host
        }
    }
}

impl<'de> Deserialize<'de> for OriginPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        OriginPattern::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Whether `origin` (the header, if any) is allowed by `patterns`; an empty list allows everything.
pub fn allowed(patterns: &[OriginPattern], origin: Option<&str>) -> bool {
    patterns.is_empty() || origin.is_some_and(|o| patterns.iter().any(|p| p.matches(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let exact = OriginPattern::parse("https://App.example.com").unwrap();
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com.evil.net"));
        let wild = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(wild.matches("https://chat.example.com"));
        assert!(wild.matches("https://a.b.example.com"));
        assert!(!wild.matches("https://example.com"));
        assert!(!wild.matches("https://evilexample.com"));
        let any_scheme = OriginPattern::parse("*.example.com").unwrap();
        assert!(any_scheme.matches("http://x.example.com"));
        assert!(!any_scheme.matches("null"));
    }

    #[test]
    fn bad_patterns_say_how_to_write_them() {
        assert!(OriginPattern::parse("app.example.com").unwrap_err().contains("scheme"));
        assert!(OriginPattern::parse("https://a.*.com").is_err());
        assert!(OriginPattern::parse("https://x.com/path").is_err());
    }

    #[test]
    fn no_list_allows_all_and_a_list_needs_an_origin() {
        let list = vec![OriginPattern::parse("https://a.example").unwrap()];
        assert!(allowed(&[], None));
        assert!(!allowed(&list, None));
        assert!(allowed(&list, Some("https://a.example")));
    }
}
