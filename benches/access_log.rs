//! The cost of one access-log line (issue 19: "logging a line costs ≤ 3 µs"):
//! what a worker spends per line (the record built, formatted into its
//! thread's buffer, the buffer handed to the writer thread when full) for
//! `text`, `json` and an NGINX-combined-like template, against today's path
//! before this change: `tracing::info!` with the same fields into
//! `tracing_subscriber`'s text or JSON formatter, which writes each line
//! with its own `write(2)` on the worker.
//!
//! Every variant writes to `/dev/null`: the new path from its writer thread
//! (off the measured thread, as in production), the old one from the
//! measured thread. Run with `cargo bench --bench access_log`; results in
//! docs/benchmarks.md, "Access log cost".

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tether::access_log::{Destination, Format, Logger};
use tether::proxy::log::{HttpLog, Protocol, RequestId, TunnelLog};
use tether::proxy::tunnel::{CloseReason, TunnelEnd};

const NGINX_LIKE: &str =
    "$client - - [$time_clf] \"$method $uri\" $status $bytes_out $duration_ms $backend/$server $request_id";

fn logger(format: Format) -> Arc<Logger> {
    Arc::new(Logger::resolve(
        Some(&format),
        Some(&Destination::File("/dev/null".into())),
        None,
    ))
}

fn http_log(access: Arc<Logger>) -> HttpLog {
    HttpLog {
        request_id: RequestId::next(),
        client: "192.0.2.33:51234".parse().unwrap(),
        frontend: Arc::from("public"),
        backend: Some(Arc::from("websockets")),
        server: Some(Arc::from("ws-server1")),
        method: http::Method::GET,
        uri: "/socket.io/?EIO=4&transport=polling&t=OqX3dPx&sid=8Jk2mZp0qW"
            .parse()
            .unwrap(),
        status: 200,
        started: Instant::now(),
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out: 1432,
        error: None,
        redact_query: Arc::from(vec![Box::from("sid")]),
        protocol: Protocol::Http1,
        access,
        trace_id: None,
    }
}

fn tunnel_end() -> TunnelEnd {
    TunnelEnd {
        client_to_server: 18_443,
        server_to_client: 92_113,
        messages_in: 120,
        messages_out: 610,
        close_code_in: Some(1000),
        close_code_out: Some(1000),
        reason: CloseReason::ClientClosed,
    }
}

/// Today's line before this change, field for field.
fn old_http_line(log: &HttpLog) {
    let uri = tether::proxy::log::RedactedUri {
        uri: &log.uri,
        names: &log.redact_query,
    };
    tracing::info!(
        target: "tether::access",
        kind = %"http",
        protocol = %log.protocol.as_str(),
        request_id = %log.request_id,
        client = %log.client,
        frontend = %log.frontend,
        backend = %log.backend.as_deref().unwrap_or("-"),
        server = %log.server.as_deref().unwrap_or("-"),
        method = %log.method,
        uri = %uri,
        status = log.status,
        bytes_in = log.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        bytes_out = log.bytes_out,
        duration_ms = (log.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
        error = log.error.as_deref().unwrap_or("-"),
    );
}

fn old_subscriber(json: bool) -> tracing::Dispatch {
    let null = std::sync::Mutex::new(std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap());
    let builder = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(null);
    if json {
        tracing::Dispatch::new(builder.json().flatten_event(true).finish())
    } else {
        tracing::Dispatch::new(builder.finish())
    }
}

fn lines(c: &mut Criterion) {
    let mut group = c.benchmark_group("access_log_line");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for (name, format) in [
        ("new_text", Format::Text),
        ("new_json", Format::Json),
        ("new_template", Format::parse(NGINX_LIKE).unwrap()),
    ] {
        let log = http_log(logger(format));
        group.bench_function(format!("http/{name}"), |b| b.iter(|| black_box(&log).emit()));
    }
    let end = tunnel_end();
    let client: SocketAddr = "192.0.2.33:51234".parse().unwrap();
    let access = logger(Format::Text);
    group.bench_function("tunnel/new_text", |b| {
        b.iter(|| {
            TunnelLog {
                request_id: RequestId::next(),
                client,
                frontend: "public",
                backend: "websockets",
                server: "ws-server1",
                open_for: Duration::from_millis(8_123),
                end: &end,
                protocol: Protocol::Http1,
                access: &access,
                trace_id: None,
            }
            .emit()
        })
    });
    for (name, json) in [("old_tracing_text", false), ("old_tracing_json", true)] {
        let log = http_log(logger(Format::Text));
        let dispatch = old_subscriber(json);
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(format!("http/{name}"), |b| b.iter(|| old_http_line(black_box(&log))));
        });
    }
    group.finish();
    tether::access_log::flush_all(Duration::from_secs(5));
    println!(
        "access-log lines dropped during the run (the writer thread fell behind): {}",
        tether::access_log::dropped_total()
    );
}

criterion_group!(benches, lines);
criterion_main!(benches);
