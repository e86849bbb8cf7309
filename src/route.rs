//! Routing rules: conditions on a request and the first-match choice of backend.

use http::{HeaderName, Method, Request};
use regex::Regex;

use crate::config;
use crate::lookup;

/// Index of a backend within the snapshot (the config resolves names to indexes once per load).
pub use crate::config::BackendId;

/// One compiled test on a request.
#[derive(Debug, Clone)]
pub enum Condition {
    /// The path starts with this.
    PathPrefix(String),
    /// The path is exactly this.
    Path(String),
    /// The path matches this expression.
    PathRegex(Regex),
    /// The host without port equals this (stored lower case; compared without case).
    Host(String),
    /// The host starts with this (lower case).
    HostPrefix(String),
    /// A header test.
    Header(HeaderName, ValueTest),
    /// The method is this.
    Method(Method),
    /// A query parameter is present, or equals a value exactly.
    Query(String, Option<String>),
}

/// How a header's value is tested. As with HAProxy's `hdr()`, a value made
/// of comma-separated elements (`Connection: keep-alive, Upgrade`) is tested
/// element by element, and all compare without case.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// The header is present.
    Present,
    /// One element equals this (lower case).
    Equals(String),
    /// One element starts with this (lower case).
    Prefix(String),
}

impl Condition {
    /// Compiles a validated config condition (values that compare without
    /// case are stored lower case).
    pub fn from_config(c: &config::Condition) -> Self {
        match c {
            config::Condition::PathPrefix(p) => Condition::PathPrefix(p.clone()),
            config::Condition::Path(p) => Condition::Path(p.clone()),
            config::Condition::PathRegex(r) => Condition::PathRegex(r.clone()),
            config::Condition::Host(h) => Condition::Host(h.to_ascii_lowercase()),
            config::Condition::HostPrefix(h) => Condition::HostPrefix(h.to_ascii_lowercase()),
            config::Condition::Method(m) => Condition::Method(m.clone()),
            config::Condition::Query { name, equals } => Condition::Query(name.clone(), equals.clone()),
            config::Condition::Header { name, test } => Condition::Header(
                name.clone(),
                match test {
                    config::HeaderTest::Present => ValueTest::Present,
                    config::HeaderTest::Equals(v) => ValueTest::Equals(v.to_ascii_lowercase()),
                    config::HeaderTest::Prefix(v) => ValueTest::Prefix(v.to_ascii_lowercase()),
                },
            ),
        }
    }

    /// Whether `request` satisfies this condition.
    pub fn matches<B>(&self, request: &Request<B>) -> bool {
        let path = request.uri().path();
        match self {
            Condition::PathPrefix(prefix) => path.starts_with(prefix.as_str()),
            Condition::Path(exact) => path == exact,
            Condition::PathRegex(regex) => regex.is_match(path),
            Condition::Host(host) => {
                lookup::host(request.uri(), request.headers()).is_some_and(|h| h.eq_ignore_ascii_case(host))
            }
            Condition::HostPrefix(prefix) => {
                lookup::host(request.uri(), request.headers()).is_some_and(|h| starts_with_ignore_case(h, prefix))
            }
            Condition::Method(method) => request.method() == method,
            Condition::Query(name, equals) => match lookup::query_param(request.uri(), name) {
                None => false,
                Some(value) => equals.as_deref().is_none_or(|e| e == value),
            },
            Condition::Header(name, test) => {
                let mut values = request.headers().get_all(name).iter().peekable();
                match test {
                    ValueTest::Present => values.peek().is_some(),
                    ValueTest::Equals(want) => header_elements(values).any(|e| e.eq_ignore_ascii_case(want)),
                    ValueTest::Prefix(want) => header_elements(values).any(|e| starts_with_ignore_case(e, want)),
                }
            }
        }
    }
}

fn header_elements<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> impl Iterator<Item = &'a str> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// One rule of a frontend.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where matching requests go.
    pub backend: BackendId,
    /// At least one must hold (when not empty).
    pub any: Vec<Condition>,
    /// All must hold.
    pub all: Vec<Condition>,
    /// Origins allowed to open WebSockets through this rule (`None`: the frontend's list).
    pub allowed_origins: Option<Vec<crate::origin::OriginPattern>>,
    /// Headers set and removed on requests through this rule (after the backend's rules).
    pub request_headers: crate::config::HeaderRules,
    /// Headers set and removed on server responses through this rule (after the backend's rules).
    pub response_headers: crate::config::HeaderRules,
}

impl Route {
    /// Whether `request` matches: every `all` condition and, if `any` is not empty, one of `any`.
    pub fn matches<B>(&self, request: &Request<B>) -> bool {
        self.all.iter().all(|c| c.matches(request))
            && (self.any.is_empty() || self.any.iter().any(|c| c.matches(request)))
    }
}

/// The backend for `request`: the first matching rule's (with the rule),
/// else `default` (with no rule).
pub fn select<'a, B>(
    routes: &'a [Route],
    default: Option<BackendId>,
    request: &Request<B>,
) -> Option<(BackendId, Option<&'a Route>)> {
    match routes.iter().find(|route| route.matches(request)) {
        Some(route) => Some((route.backend, Some(route))),
        None => default.map(|backend| (backend, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(text: &str) -> Condition {
        let c: config::Condition = toml::from_str(text).expect("condition");
        Condition::from_config(&c)
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn header_names_and_values_compare_without_case() {
        let c = cond("header = \"Upgrade\"\nequals = \"WebSocket\"");
        assert!(c.matches(&get("/", &[("upgrade", "websocket")])));
        assert!(c.matches(&get("/", &[("UPGRADE", "WEBSOCKET")])));
        assert!(!c.matches(&get("/", &[("upgrade", "h2c")])));
    }

    #[test]
    fn header_lists_are_tested_element_by_element() {
        let c = cond("header = \"connection\"\nequals = \"upgrade\"");
        assert!(c.matches(&get("/", &[("connection", "keep-alive, Upgrade")])));
        let p = cond("header = \"accept\"\nprefix = \"text/\"");
        assert!(p.matches(&get("/", &[("accept", "application/json, TEXT/html")])));
        let present = cond("header = \"x-debug\"");
        assert!(present.matches(&get("/", &[("x-debug", "")])));
        assert!(!present.matches(&get("/", &[])));
    }

    #[test]
    fn paths_hosts_methods_and_queries() {
        assert!(cond("path_prefix = \"/socket.io\"").matches(&get("/socket.io/?EIO=4", &[])));
        assert!(!cond("path = \"/a\"").matches(&get("/a/b", &[])));
        assert!(cond("path_regex = \"^/rooms/[0-9]+$\"").matches(&get("/rooms/42", &[])));
        assert!(cond("host = \"WS.example.com\"").matches(&get("/", &[("host", "ws.example.com:8080")])));
        assert!(cond("host_prefix = \"ws\"").matches(&get("/", &[("host", "WS2.example.com")])));
        assert!(!cond("method = \"post\"").matches(&get("/", &[])));
        assert!(cond("query = \"sid\"").matches(&get("/?sid=1", &[])));
        assert!(cond("query = \"sid\"\nequals = \"1\"").matches(&get("/?sid=1", &[])));
        assert!(!cond("query = \"sid\"\nequals = \"2\"").matches(&get("/?sid=1", &[])));
    }

    #[test]
    fn first_matching_rule_wins_else_default() {
        let routes = vec![
            Route {
                backend: 1,
                any: vec![cond("path_prefix = \"/ws\"")],
                all: vec![],
                allowed_origins: None,
                request_headers: Default::default(),
                response_headers: Default::default(),
            },
            Route {
                backend: 2,
                any: vec![cond("path_prefix = \"/w\"")],
                all: vec![],
                allowed_origins: None,
                request_headers: Default::default(),
                response_headers: Default::default(),
            },
            Route {
                backend: 3,
                any: vec![],
                all: vec![cond("method = \"POST\""), cond("path = \"/api\"")],
                allowed_origins: None,
                request_headers: Default::default(),
                response_headers: Default::default(),
            },
        ];
        let backend = |req: &Request<()>, default| select(&routes, default, req).map(|(b, _)| b);
        assert_eq!(backend(&get("/ws/x", &[]), Some(0)), Some(1));
        assert_eq!(backend(&get("/wx", &[]), Some(0)), Some(2));
        assert_eq!(backend(&get("/api", &[]), Some(0)), Some(0));
        assert_eq!(backend(&get("/nothing", &[]), None), None);
    }
}
