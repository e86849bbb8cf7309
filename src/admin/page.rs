//! The stats page at `/`: server-rendered HTML that a small script keeps
//! current by polling `/api/v1/backends` every 2 s. No build step: the
//! page is one string in the binary.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;
use sha2::{Digest, Sha256};

use super::api::state_name;
use super::AdminBody;
use crate::snapshot::Snapshot;

/// The page's template: `{{TABLES}}` is replaced by the server-rendered backends.
const TEMPLATE: &str = include_str!("page.html");

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The backends as HTML (the script replaces this with the same markup on each poll).
pub fn render_backends(snapshot: &Snapshot) -> String {
    use std::fmt::Write;
    let mut html = String::new();
    for backend in &snapshot.backends {
        let _ = write!(
            html,
            "<section class=\"backend\"><h2>{}</h2><div class=\"servers\">",
            escape(&backend.name)
        );
        for server in &backend.servers {
            let state = &server.state;
            let _ = write!(
                html,
                "<div class=\"server\" data-backend=\"{b}\" data-server=\"{s}\"><h3>{s} <span class=\"state {st}\">{st}</span></h3>\
                 <dl><dt>source</dt><dd class=\"source\">{src}</dd><dt>weight</dt><dd>{w}</dd><dt>active</dt><dd>{a}</dd>\
                 <dt>tunnels</dt><dd>{t}</dd></dl></div>",
                b = escape(&backend.name),
                s = escape(&server.name),
                st = state_name(server),
                src = server.source.as_str(),
                w = state.weight(),
                a = state.active(),
                t = state.tunnels.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        html.push_str("</div></section>");
    }
    html
}

/// The text between `open` and the next `close` in the template (its inline script or style).
fn inline(open: &str, close: &str) -> &'static str {
    TEMPLATE
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inside, _)| inside)
}

/// A CSP source for `text`: `'sha256-…'` (base64 of its SHA-256).
fn hash_source(text: &str) -> String {
    use base64::Engine;
    let digest = Sha256::digest(text.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// The page's `Content-Security-Policy`: its own inline script and style
/// only (by hash, no `'unsafe-inline'`), requests to this listener only,
/// never framed.
pub fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'self'; script-src {}; style-src {}; img-src 'self' data:; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
            hash_source(inline("<script>", "</script>")),
            hash_source(inline("<style>", "</style>")),
        )
    })
}

/// The `/` response.
pub fn respond(snapshot: &Snapshot) -> Response<AdminBody> {
    let html = TEMPLATE.replace("{{TABLES}}", &render_backends(snapshot));
    let mut response = Response::new(Full::new(Bytes::from(html)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(policy) = HeaderValue::from_str(content_security_policy()) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style_of_the_page() {
        assert!(
            !TEMPLATE.contains("style=\""),
            "inline style attributes would be blocked"
        );
        assert_eq!(TEMPLATE.matches("<script>").count(), 1);
        assert_eq!(TEMPLATE.matches("<style>").count(), 1);
        let policy = content_security_policy();
        assert!(
            policy.contains(&hash_source(inline("<script>", "</script>"))),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }
}
