//! The stats page at `/`: server-rendered HTML that a small script keeps
//! current by polling `/api/v1/backends` every 2 s. No build step: the
//! page is one string in the binary.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

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
                 <dl><dt>weight</dt><dd>{w}</dd><dt>active</dt><dd>{a}</dd><dt>tunnels</dt><dd>{t}</dd></dl></div>",
                b = escape(&backend.name),
                s = escape(&server.name),
                st = state_name(server),
                w = state.weight(),
                a = state.active(),
                t = state.tunnels.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        html.push_str("</div></section>");
    }
    html
}

/// The `/` response.
pub fn respond(snapshot: &Snapshot) -> Response<AdminBody> {
    let html = TEMPLATE.replace("{{TABLES}}", &render_backends(snapshot));
    let mut response = Response::new(Full::new(Bytes::from(html)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
