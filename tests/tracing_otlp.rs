//! `[tracing]`: a span per request and per WebSocket handshake, and one per
//! tunnel when it ends, exported over OTLP/HTTP to a collector on
//! 127.0.0.1 that decodes the real protobuf (opentelemetry-proto); the
//! client's W3C `traceparent` continued and passed on to the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as SpanStatus, Span};
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use tether_test_support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span with its resource's `service.name`.
#[derive(Clone, Debug)]
struct Exported {
    service: String,
    span: Span,
}

/// An OTLP/HTTP collector on 127.0.0.1: decodes every
/// `ExportTraceServiceRequest` posted to `/v1/traces` and keeps its spans.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Exported>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    spans: Arc<Mutex<Vec<Exported>>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    assert_eq!(request.method(), http::Method::POST);
    assert_eq!(request.uri().path(), "/v1/traces");
    assert_eq!(request.headers()["content-type"], "application/x-protobuf");
    let body = request
        .into_body()
        .collect()
        .await
        .expect("the export's body")
        .to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf ExportTraceServiceRequest");
    let mut kept = spans.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| render(a.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Exported {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    Ok(Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap())
}

async fn collector() -> Collector {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| receive(kept.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Collector { addr, spans, task }
}

impl Collector {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// The first exported span that `matches`, waited for up to 10 s.
    async fn span(&self, what: &str, matches: impl Fn(&Exported) -> bool) -> Exported {
        let mut found = None;
        eventually(Duration::from_secs(10), async || {
            found = self.spans().into_iter().find(|s| matches(s));
            found.is_some()
        })
        .await;
        found.unwrap_or_else(|| panic!("no exported span {what}; exported: {:#?}", self.spans()))
    }
}

fn render(value: &Value) -> Option<String> {
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

/// Attribute `key` of `span`, as text.
fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| render(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The (trace id, span id, flags) of a `traceparent` a server received.
fn traceparent_parts(value: &http::HeaderValue) -> (String, String, String) {
    let text = value.to_str().unwrap();
    let parts: Vec<&str> = text.split('-').collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert_eq!(parts[0], "00", "{text}");
    (parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[(&'static str, &str)]) -> StatusCode {
    let mut request = get_request(path);
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(http::HeaderName::from_static(name), value.parse().unwrap());
    }
    let mut client = http_client(addr).await;
    send(&mut client, request).await.0
}

#[tokio::test]
async fn a_client_traceparent_is_continued_and_passed_on_to_the_server() {
    let access = captured_access_lines();
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    let config = Config::simple(
        Frontend::public().route(Route::to("api").path_prefix("/api")),
        pool().server(&s1),
    )
    .backend(Backend::new("api").server(&s1))
    .tracing(&collector.url(), 1.0);
    let tether = start_tether(&config).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let status = get_with(
        tether.addr,
        "/api/items?sid=secret",
        &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let seen = s1.last_headers();
    let (trace_id, span_id, flags) = traceparent_parts(&seen["traceparent"]);
    assert_eq!(trace_id, CLIENT_TRACE, "the server continues the client's trace");
    assert_ne!(
        span_id, CLIENT_SPAN,
        "the server's parent is tether's span, not the client's"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        seen["tracestate"], "vendor=abc",
        "tracestate goes on with the client's trace"
    );

    let exported = collector
        .span("of the request", |s| hex(&s.span.trace_id) == CLIENT_TRACE)
        .await;
    let span = &exported.span;
    assert_eq!(exported.service, "tether");
    assert_eq!(hex(&span.span_id), span_id, "the server was told tether's span");
    assert_eq!(
        hex(&span.parent_span_id),
        CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "GET");
    assert_eq!(attr(span, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(span, "url.path").as_deref(),
        Some("/api/items"),
        "no query (it may hold ids)"
    );
    assert_eq!(attr(span, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(span, "tether.frontend").as_deref(), Some("public"));
    assert_eq!(attr(span, "tether.route").as_deref(), Some("0"));
    assert_eq!(attr(span, "tether.backend").as_deref(), Some("api"));
    assert_eq!(attr(span, "tether.server").as_deref(), Some("s1"));
    assert_eq!(attr(span, "tether.retries").as_deref(), Some("0"));
    assert_eq!(attr(span, "tether.request_id").map(|id| id.len()), Some(16));
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(SpanStatus::Error as i32),
        "a 200 is no error"
    );
    let line = access_line(access, |l| l["kind"] == "http" && l["uri"] == "/api/items?sid=REDACTED").await;
    assert_eq!(
        line["trace_id"], CLIENT_TRACE,
        "the access line names the trace: {line}"
    );
}

/// The first access line `matches` picks, waiting up to 2 s for it.
async fn access_line(access: &Captured, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(line) = access.lines().into_iter().find(|l| matches(l)) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no such access line in {:?}", access.lines());
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace_the_server_continues() {
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tracing(&collector.url(), 1.0)).await;
    let status = get_with(tether.addr, "/plain", &[("tracestate", "orphan=1")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = s1.last_headers();
    let (trace_id, span_id, flags) = traceparent_parts(&seen["traceparent"]);
    assert_eq!(flags, "01", "sampled at ratio 1.0");
    assert!(
        seen.get("tracestate").is_none(),
        "a tracestate without its traceparent belongs to no trace"
    );
    let exported = collector
        .span("of the new trace", |s| hex(&s.span.trace_id) == trace_id)
        .await;
    assert_eq!(hex(&exported.span.span_id), span_id);
    assert!(exported.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(attr(&exported.span, "tether.route").as_deref(), Some("default"));
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_the_request_is_served() {
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tracing(&collector.url(), 1.0)).await;
    let malformed = format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase());
    let status = get_with(tether.addr, "/", &[("traceparent", &malformed)]).await;
    assert_eq!(status, StatusCode::OK);
    let (trace_id, _, _) = traceparent_parts(&s1.last_headers()["traceparent"]);
    assert_ne!(trace_id, CLIENT_TRACE.to_lowercase());
    let exported = collector
        .span("of the new trace", |s| hex(&s.span.trace_id) == trace_id)
        .await;
    assert!(
        exported.span.parent_span_id.is_empty(),
        "the malformed parent was ignored"
    );
}

#[tokio::test]
async fn a_websocket_handshake_has_a_span_and_its_tunnel_a_child_span_with_the_close_codes() {
    let access = captured_access_lines();
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tracing(&collector.url(), 1.0)).await;
    let mut handshake = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
    handshake.headers_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01").parse().unwrap(),
    );
    let (mut ws, name) = ws_connect_with(handshake).await;
    assert_eq!(name, "s1");
    let (_, handshake_span_id, _) = traceparent_parts(&s1.last_headers()["traceparent"]);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");

    let exported = collector
        .span("of the handshake", |s| {
            hex(&s.span.trace_id) == CLIENT_TRACE && s.span.kind == SpanKind::Server as i32
        })
        .await;
    let span = &exported.span;
    assert_eq!(hex(&span.span_id), handshake_span_id);
    assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN);
    assert_eq!(attr(span, "http.response.status_code").as_deref(), Some("101"));
    assert_eq!(attr(span, "tether.websocket").as_deref(), Some("true"));
    assert_eq!(attr(span, "tether.server").as_deref(), Some("s1"));
    assert!(
        !collector.spans().iter().any(|s| s.span.name == "WebSocket tunnel"),
        "the tunnel's span comes when it ends"
    );

    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}

    let tunnel = collector
        .span("of the tunnel", |s| s.span.name == "WebSocket tunnel")
        .await
        .span;
    assert_eq!(hex(&tunnel.trace_id), CLIENT_TRACE);
    assert_eq!(
        hex(&tunnel.parent_span_id),
        handshake_span_id,
        "a child of the handshake's span"
    );
    assert_eq!(attr(&tunnel, "tether.tunnel.close_code_in").as_deref(), Some("1001"));
    assert_eq!(attr(&tunnel, "tether.tunnel.close_code_out").as_deref(), Some("1001"));
    assert_eq!(
        attr(&tunnel, "tether.tunnel.messages_in").as_deref(),
        Some("1"),
        "the text (a Close is no message)"
    );
    assert!(attr(&tunnel, "tether.tunnel.bytes_in").is_some_and(|b| b.parse::<u64>().unwrap() > 0));
    assert!(tunnel.start_time_unix_nano >= span.start_time_unix_nano);
    assert!(tunnel.end_time_unix_nano > tunnel.start_time_unix_nano);
    let line = access_line(access, |l| {
        l["kind"] == "tunnel" && l["trace_id"] == CLIENT_TRACE && l["close_code_in"] == 1001
    })
    .await;
    assert_eq!(line["server"], "s1", "the tunnel's access line names its trace: {line}");
}

#[tokio::test]
async fn sample_ratio_zero_exports_no_new_trace_but_follows_a_sampled_parent() {
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tracing(&collector.url(), 0.0)).await;
    assert_eq!(get_with(tether.addr, "/unsampled", &[]).await, StatusCode::OK);
    let (unsampled, _, flags) = traceparent_parts(&s1.last_headers()["traceparent"]);
    assert_eq!(flags, "00", "the server is told the trace is not sampled");

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(
        get_with(tether.addr, "/sampled", &[("traceparent", &traceparent)]).await,
        StatusCode::OK
    );
    let (_, _, flags) = traceparent_parts(&s1.last_headers()["traceparent"]);
    assert_eq!(flags, "01");
    collector
        .span("of the sampled parent's trace", |s| {
            hex(&s.span.trace_id) == CLIENT_TRACE
        })
        .await;
    assert!(
        collector.spans().iter().all(|s| hex(&s.span.trace_id) != unsampled),
        "the unsampled request ended first, and was not exported"
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_dropped_spans_and_one_warning_not_requests() {
    let logs = captured_logs();
    let down = closed_port().await;
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tracing(&format!("http://{down}"), 1.0)).await;
    for _ in 0..3 {
        assert_eq!(get_with(tether.addr, "/", &[]).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let warning = "the OTLP collector does not take spans";
    let collector = format!("collector=http://{down}/v1/traces");
    eventually(Duration::from_secs(10), async || {
        logs.text()
            .lines()
            .any(|l| l.contains(warning) && l.contains(&collector))
    })
    .await
    .expect("a warning names the collector");
    assert_eq!(get_with(tether.addr, "/", &[]).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let warnings = logs
        .text()
        .lines()
        .filter(|l| l.contains(warning) && l.contains(&collector))
        .count();
    assert_eq!(warnings, 1, "one warning per outage, not one per batch");
}

#[tokio::test]
async fn an_http2_request_has_its_span_and_the_server_its_traceparent() {
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    let config = Config::simple(Frontend::public().http2(true), pool().server(&s1)).tracing(&collector.url(), 1.0);
    let tether = start_tether(&config).await;
    let stream = tokio::net::TcpStream::connect(tether.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(stream).await.expect("h2c with prior knowledge");
    tokio::spawn(connection);
    let request = Request::get("http://tether.test/over-h2")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer in time")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    let (trace_id, span_id, _) = traceparent_parts(&s1.last_headers()["traceparent"]);
    assert_eq!(trace_id, CLIENT_TRACE);
    let exported = collector
        .span("of the HTTP/2 request", |s| hex(&s.span.trace_id) == CLIENT_TRACE)
        .await;
    let span = &exported.span;
    assert_eq!(hex(&span.span_id), span_id);
    assert_eq!(hex(&span.parent_span_id), CLIENT_SPAN);
    assert_eq!(attr(span, "network.protocol.version").as_deref(), Some("2"));
    assert_eq!(attr(span, "server.address").as_deref(), Some("tether.test"));
    assert_eq!(attr(span, "url.path").as_deref(), Some("/over-h2"));
    assert_eq!(attr(span, "http.response.status_code").as_deref(), Some("200"));
}

#[tokio::test]
async fn spans_still_in_a_batch_are_exported_when_tether_stops() {
    let collector = collector().await;
    let s1 = backend("s1").start().await;
    // A batch delay far longer than the test: only the stop sends the span.
    let text = Config::over(pool().server(&s1))
        .tracing(&collector.url(), 1.0)
        .toml()
        .replace("batch_delay = \"50ms\"", "batch_delay = \"60s\"");
    assert!(text.contains("batch_delay = \"60s\""), "{text}");
    let tether = start_tether(&text).await;
    assert_eq!(get_with(tether.addr, "/last", &[]).await, StatusCode::OK);
    let (trace_id, _, _) = traceparent_parts(&s1.last_headers()["traceparent"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.spans().is_empty(), "the batch waits for its delay");
    tether.stop().await;
    let exported = collector.spans();
    assert!(
        exported.iter().any(|s| hex(&s.span.trace_id) == trace_id),
        "the stop flushed the batch: {exported:#?}"
    );
}

#[tokio::test]
async fn a_reload_that_changes_tracing_warns_and_keeps_the_running_export() {
    let logs = captured_logs();
    let first = collector().await;
    let second = collector().await;
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).tracing(&first.url(), 1.0)).await;
    let changed = Config::over(pool().server(&s1)).tracing(&second.url(), 1.0).parse();
    tether.handle.reload(&changed).expect("the reload is applied");
    eventually(Duration::from_secs(5), async || {
        logs.text().contains("[tracing] changed: restart tether to apply it")
    })
    .await
    .expect("the reload warns that [tracing] needs a restart");
    assert_eq!(get_with(tether.addr, "/after-reload", &[]).await, StatusCode::OK);
    let (trace_id, _, _) = traceparent_parts(&s1.last_headers()["traceparent"]);
    first
        .span("at the collector tether started with", |s| {
            hex(&s.span.trace_id) == trace_id
        })
        .await;
    assert!(
        second.spans().is_empty(),
        "the new collector gets nothing before a restart"
    );
}
