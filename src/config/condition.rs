//! A route condition: one test on a request, written as a table such as
//! `{ path_prefix = "/ws" }` or `{ header = "upgrade", equals = "websocket" }`.
//!
//! Deserialising decides the variant, so a table with no selector or two,
//! a refinement (`equals`, `prefix`) that does not apply, a bad method or
//! header name is refused by the parser, which names the table's line.

use http::{HeaderName, Method};
use serde::{Deserialize, Deserializer};

/// One test on a request, typed: exactly one selector, with its refinement.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `path_prefix`: the path starts with this.
    PathPrefix(String),
    /// `path`: the path is exactly this.
    Path(String),
    /// `path_regex`: the path matches this regular expression.
    PathRegex(regex::Regex),
    /// `host`: the host (without port) is this, compared without case.
    Host(String),
    /// `host_prefix`: the host starts with this, compared without case.
    HostPrefix(String),
    /// `header`, optionally refined by `equals` or `prefix`.
    Header {
        /// The header's name.
        name: HeaderName,
        /// What its value must be.
        test: HeaderTest,
    },
    /// `method`: the request method is this (written in any case, kept in capitals).
    Method(Method),
    /// `query`, optionally refined by `equals`.
    Query {
        /// The parameter's name.
        name: String,
        /// The value it must have exactly; present with any value when `None`.
        equals: Option<String>,
    },
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::from_table::from_table::<_, ConditionTable, _>(
            deserializer,
            "a condition table such as { path_prefix = \"/ws\" }",
        )
    }
}

/// How a header condition tests the value (as written; compared without case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    /// The header is present.
    Present,
    /// `equals`: one element of the value equals this.
    Equals(String),
    /// `prefix`: one element of the value starts with this.
    Prefix(String),
}

/// The table an operator writes: every key optional, checked into a `Condition`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionTable {
    path_prefix: Option<String>,
    path: Option<String>,
    path_regex: Option<Pattern>,
    host: Option<String>,
    host_prefix: Option<String>,
    header: Option<String>,
    method: Option<String>,
    query: Option<String>,
    equals: Option<String>,
    prefix: Option<String>,
}

/// A regular expression compiled while the file is read, so a bad one is
/// reported with its line and column.
struct Pattern(regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text)
            .map(Pattern)
            .map_err(|err| D::Error::custom(format!("`{text}` is not a valid regular expression: {err}")))
    }
}

impl TryFrom<ConditionTable> for Condition {
    type Error = String;

    fn try_from(t: ConditionTable) -> Result<Self, String> {
        let selectors: Vec<Selector> = [
            t.path_prefix.map(Selector::PathPrefix),
            t.path.map(Selector::Path),
            t.path_regex.map(Selector::PathRegex),
            t.host.map(Selector::Host),
            t.host_prefix.map(Selector::HostPrefix),
            t.header.map(Selector::Header),
            t.method.map(Selector::Method),
            t.query.map(Selector::Query),
        ]
        .into_iter()
        .flatten()
        .collect();
        let Ok([selector]) = <[Selector; 1]>::try_from(selectors) else {
            return Err(
                "a condition needs exactly one of path_prefix, path, path_regex, host, host_prefix, header, method, query; \
                 split it into several conditions"
                    .to_string(),
            );
        };
        let refines_header = matches!(selector, Selector::Header(_));
        let refines_query = matches!(selector, Selector::Query(_));
        if t.equals.is_some() && !refines_header && !refines_query {
            return Err("`equals` only refines `header` or `query`".to_string());
        }
        if t.prefix.is_some() && !refines_header {
            return Err("`prefix` only refines `header` (for paths use `path_prefix`)".to_string());
        }
        if t.equals.is_some() && t.prefix.is_some() {
            return Err("use either `equals` or `prefix`, not both".to_string());
        }
        Ok(match selector {
            Selector::PathPrefix(p) => Condition::PathPrefix(p),
            Selector::Path(p) => Condition::Path(p),
            Selector::PathRegex(p) => Condition::PathRegex(p.0),
            Selector::Host(h) => Condition::Host(h),
            Selector::HostPrefix(h) => Condition::HostPrefix(h),
            Selector::Method(method) => Condition::Method(method_of(&method)?),
            Selector::Query(name) => Condition::Query { name, equals: t.equals },
            Selector::Header(header) => {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("`{header}` is not a valid header name"))?;
                let test = match (t.equals, t.prefix) {
                    (Some(v), _) => HeaderTest::Equals(v),
                    (None, Some(v)) => HeaderTest::Prefix(v),
                    (None, None) => HeaderTest::Present,
                };
                Condition::Header { name, test }
            }
        })
    }
}

/// The selector keys of a table, before their refinements are checked.
enum Selector {
    PathPrefix(String),
    Path(String),
    PathRegex(Pattern),
    Host(String),
    HostPrefix(String),
    Header(String),
    Method(String),
    Query(String),
}

/// A method name of letters, in any case, as the method in capitals.
fn method_of(text: &str) -> Result<Method, String> {
    let refused = || format!("`{text}` is not an HTTP method: write GET, POST, …");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(refused());
    }
    Method::from_bytes(text.to_ascii_uppercase().as_bytes()).map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Condition, String> {
        toml::from_str::<Condition>(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn each_selector_decodes_to_its_variant() {
        assert!(matches!(read("path_prefix = \"/ws\""), Ok(Condition::PathPrefix(p)) if p == "/ws"));
        assert!(matches!(read("path = \"/a\""), Ok(Condition::Path(p)) if p == "/a"));
        assert!(matches!(read("path_regex = \"^/r/[0-9]+$\""), Ok(Condition::PathRegex(r)) if r.is_match("/r/42")));
        assert!(matches!(read("host = \"WS.example.com\""), Ok(Condition::Host(h)) if h == "WS.example.com"));
        assert!(matches!(read("host_prefix = \"ws\""), Ok(Condition::HostPrefix(h)) if h == "ws"));
        assert!(matches!(read("method = \"post\""), Ok(Condition::Method(m)) if m == Method::POST));
        assert!(matches!(read("query = \"sid\""), Ok(Condition::Query { name, equals: None }) if name == "sid"));
        assert!(matches!(
            read("query = \"sid\"\nequals = \"1\""),
            Ok(Condition::Query { equals: Some(v), .. }) if v == "1"
        ));
        assert!(matches!(
            read("header = \"Upgrade\""),
            Ok(Condition::Header { name, test: HeaderTest::Present }) if name == "upgrade"
        ));
        assert!(matches!(
            read("header = \"upgrade\"\nequals = \"WebSocket\""),
            Ok(Condition::Header { test: HeaderTest::Equals(v), .. }) if v == "WebSocket"
        ));
        assert!(matches!(
            read("header = \"accept\"\nprefix = \"text/\""),
            Ok(Condition::Header { test: HeaderTest::Prefix(v), .. }) if v == "text/"
        ));
    }

    #[test]
    fn tables_that_are_not_one_condition_are_refused_with_the_fix() {
        let cases = [
            ("path = \"/a\"\nhost = \"x\"", "exactly one of"),
            ("equals = \"x\"", "exactly one of"),
            ("path = \"/a\"\nequals = \"x\"", "`equals` only refines"),
            ("query = \"a\"\nprefix = \"x\"", "`prefix` only refines `header`"),
            ("header = \"a\"\nequals = \"x\"\nprefix = \"y\"", "not both"),
            ("method = \"G3T\"", "is not an HTTP method"),
            ("method = \"\"", "is not an HTTP method"),
            ("header = \"a b\"", "not a valid header name"),
            ("path_regex = \"(\"", "regular expression"),
            ("paht = \"/a\"", "unknown field"),
        ];
        for (text, expected) in cases {
            let message = read(text).expect_err(text);
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
