//! `/metrics`: the Prometheus exposition (OpenMetrics text), collected from
//! the snapshot's live server state at scrape time, so the request path
//! keeps no second set of counters.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Context;
use super::{error_response, AdminBody};
use crate::state::latency::LatencyReading;
use crate::state::AdminState;

/// The content type of the exposition (Prometheus negotiates it and parses it natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    backend: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    backend: String,
    server: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendLabels {
    frontend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    frontend: String,
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    frontend: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    frontend: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    backend: String,
    server: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    backend: String,
    server: String,
    direction: String,
}

/// Histograms kept in each server's state (they live across scrapes and
/// reloads), encoded under one metric name at scrape time.
#[derive(Debug)]
struct ServerHistograms {
    name: &'static str,
    help: &'static str,
    series: Vec<(ServerLabels, Histogram)>,
}

impl Collector for ServerHistograms {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        for (labels, histogram) in &self.series {
            histogram.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// Latency histograms read from the live state (`state::latency`), one
/// series per label set, encoded under one metric name at scrape time.
#[derive(Debug)]
struct LatencyHistograms<L> {
    name: &'static str,
    help: &'static str,
    series: Vec<(L, LatencyReading)>,
}

impl<L> LatencyHistograms<L> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            series: Vec::new(),
        }
    }
}

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> Collector for LatencyHistograms<L> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        for (labels, reading) in &self.series {
            family.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                reading.sum_seconds,
                reading.count(),
                &reading.buckets(),
                None,
            )?;
        }
        Ok(())
    }
}

type GaugeFamily<L> = Family<L, Gauge>;
type FloatGaugeFamily<L> = Family<L, Gauge<f64, AtomicU64>>;
type CounterFamily<L> = Family<L, Counter>;

/// The exposition text of every metric, as of now.
pub fn render(context: &dyn Context) -> Result<String, std::fmt::Error> {
    let snapshot = context.snapshot();
    let up = GaugeFamily::<ServerLabels>::default();
    let active = GaugeFamily::<ServerLabels>::default();
    let tunnels = GaugeFamily::<ServerLabels>::default();
    let weight = GaugeFamily::<ServerLabels>::default();
    let admin = GaugeFamily::<StateLabels>::default();
    let dispatched = CounterFamily::<ServerLabels>::default();
    let failures = CounterFamily::<ServerLabels>::default();
    let checks = CounterFamily::<ServerLabels>::default();
    let failed_checks = CounterFamily::<ServerLabels>::default();
    let check_latency = FloatGaugeFamily::<ServerLabels>::default();
    let stick_entries = GaugeFamily::<BackendLabels>::default();
    let requests = CounterFamily::<CodeLabels>::default();
    let error_responses = CounterFamily::<CodeLabels>::default();
    let bytes = CounterFamily::<DirectionLabels>::default();
    let messages = CounterFamily::<DirectionLabels>::default();
    let mut tunnel_durations = ServerHistograms {
        name: "tether_tunnel_duration_seconds",
        help: "How long WebSocket tunnels lasted, recorded when they end",
        series: Vec::new(),
    };
    let mut check_durations = ServerHistograms {
        name: "tether_health_check_duration_seconds",
        help: "How long active health checks took",
        series: Vec::new(),
    };
    let mut connect_times = LatencyHistograms::new(
        "tether_server_connect_seconds",
        "How long new connections to the server took: TCP connect, and the TLS handshake to a TLS server",
    );
    let mut handshake_times = LatencyHistograms::new(
        "tether_server_websocket_handshake_seconds",
        "From a WebSocket handshake's request head to tether's 101 for it",
    );
    let mut first_byte_times = LatencyHistograms::new(
        "tether_server_first_byte_seconds",
        "From a plain HTTP request's head to the server's response head",
    );
    let mut queue_waits = LatencyHistograms::new(
        "tether_backend_queue_wait_seconds",
        "How long requests that queued for a server slot (every server at maxconn) waited",
    );
    let mut tls_handshakes = LatencyHistograms::new(
        "tether_frontend_tls_handshake_seconds",
        "How long the frontend's successful TLS handshakes with clients took",
    );
    for backend in &snapshot.backends {
        queue_waits.series.push((
            BackendLabels {
                backend: backend.name.to_string(),
            },
            backend.queue_waits.read(),
        ));
        for (index, server) in backend.servers.iter().enumerate() {
            let labels = ServerLabels {
                backend: backend.name.to_string(),
                server: server.name.to_string(),
            };
            let state = &server.state;
            let counters = state.counters();
            let slowstart = backend.candidates.get(index).and_then(|c| c.slowstart);
            up.get_or_create(&labels).set(i64::from(state.is_up()));
            active.get_or_create(&labels).set(i64::from(counters.active));
            tunnels.get_or_create(&labels).set(i64::from(counters.tunnels));
            weight
                .get_or_create(&labels)
                .set(i64::from(state.effective_weight(slowstart)));
            for candidate in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
                let labels = StateLabels {
                    backend: labels.backend.clone(),
                    server: labels.server.clone(),
                    state: candidate.as_str().to_string(),
                };
                admin.get_or_create(&labels).set(i64::from(state.admin() == candidate));
            }
            dispatched.get_or_create(&labels).inc_by(counters.dispatched);
            failures.get_or_create(&labels).inc_by(counters.connect_failures);
            for (class, count) in counters.responses.into_iter().enumerate() {
                let code = format!("{}xx", class + 1);
                requests.get_or_create(&code_labels(&labels, code)).inc_by(count);
            }
            for (code, count) in counters.gateway_errors {
                error_responses
                    .get_or_create(&code_labels(&labels, code.to_string()))
                    .inc_by(count);
            }
            for (family, inbound, outbound) in [
                (&bytes, counters.bytes_in, counters.bytes_out),
                (&messages, counters.messages_in, counters.messages_out),
            ] {
                for (direction, count) in [("in", inbound), ("out", outbound)] {
                    let labels = DirectionLabels {
                        backend: labels.backend.clone(),
                        server: labels.server.clone(),
                        direction: direction.to_string(),
                    };
                    family.get_or_create(&labels).inc_by(count);
                }
            }
            tunnel_durations
                .series
                .push((labels.clone(), state.tunnel_durations.clone()));
            connect_times.series.push((labels.clone(), state.connect_times.read()));
            handshake_times
                .series
                .push((labels.clone(), state.handshake_times.read()));
            first_byte_times
                .series
                .push((labels.clone(), state.first_byte_times.read()));
            if backend.health.is_some() {
                check_durations
                    .series
                    .push((labels.clone(), state.check_durations.clone()));
                let health = state.health();
                checks.get_or_create(&labels).inc_by(health.checks);
                failed_checks.get_or_create(&labels).inc_by(health.failed_checks);
                if let Some(last) = &health.last_check {
                    check_latency.get_or_create(&labels).set(last.latency.as_secs_f64());
                }
            }
        }
        if let Some(table) = backend.sticky.as_ref().and_then(|s| s.table.as_ref()) {
            stick_entries
                .get_or_create(&BackendLabels {
                    backend: backend.name.to_string(),
                })
                .set(table.len() as i64);
        }
    }
    let queued = GaugeFamily::<BackendLabels>::default();
    for backend in &snapshot.backends {
        queued
            .get_or_create(&BackendLabels {
                backend: backend.name.to_string(),
            })
            .set(i64::from(backend.queued.load(std::sync::atomic::Ordering::Relaxed)));
    }
    let rebalance_shed = CounterFamily::<BackendLabels>::default();
    for backend in snapshot.backends.iter().filter(|b| b.rebalance.is_some()) {
        rebalance_shed
            .get_or_create(&BackendLabels {
                backend: backend.name.to_string(),
            })
            .inc_by(backend.rebalance_state.shed_total());
    }
    let frontend_open = GaugeFamily::<FrontendLabels>::default();
    let frontend_accepted = CounterFamily::<FrontendLabels>::default();
    let frontend_requests = CounterFamily::<FrontendLabels>::default();
    let frontend_refused = CounterFamily::<RefusedLabels>::default();
    let tls_failures = CounterFamily::<FrontendLabels>::default();
    let certificate_expiry = GaugeFamily::<CertificateLabels>::default();
    let message_rate_closes = CounterFamily::<FrontendLabels>::default();
    let lifetime_closes = CounterFamily::<FrontendLabels>::default();
    let http2_connections = CounterFamily::<FrontendLabels>::default();
    let requests_by_protocol = CounterFamily::<ProtocolLabels>::default();
    let websockets_by_protocol = CounterFamily::<ProtocolLabels>::default();
    for frontend in &snapshot.frontends {
        let labels = FrontendLabels {
            frontend: frontend.name.to_string(),
        };
        let state = &frontend.state;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        frontend_open
            .get_or_create(&labels)
            .set(load(&state.connections_open) as i64);
        frontend_accepted
            .get_or_create(&labels)
            .inc_by(load(&state.connections_accepted));
        frontend_requests.get_or_create(&labels).inc_by(load(&state.requests));
        http2_connections
            .get_or_create(&labels)
            .inc_by(load(&state.http2_connections));
        let requests = load(&state.requests);
        let http2 = load(&state.http2_requests).min(requests);
        for (protocol, requests, websockets) in [
            ("http/1.1", requests - http2, load(&state.websockets_http1)),
            ("h2", http2, load(&state.websockets_http2)),
        ] {
            let labels = ProtocolLabels {
                frontend: frontend.name.to_string(),
                protocol: protocol.to_string(),
            };
            requests_by_protocol.get_or_create(&labels).inc_by(requests);
            websockets_by_protocol.get_or_create(&labels).inc_by(websockets);
        }
        for (reason, count) in [
            ("per_ip_connections", &state.admission.refused_connections),
            ("per_ip_rate", &state.admission.refused_handshakes),
        ] {
            frontend_refused
                .get_or_create(&RefusedLabels {
                    frontend: frontend.name.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(load(count));
        }
        message_rate_closes
            .get_or_create(&labels)
            .inc_by(load(&state.admission.message_rate_closes));
        lifetime_closes
            .get_or_create(&labels)
            .inc_by(load(&state.lifetime_closes));
        if let Some(acme) = frontend.tls.as_ref().and_then(|t| t.acme.as_ref()) {
            if let Some(not_after) = acme.slot.not_after() {
                for domain in acme.domains.iter() {
                    certificate_expiry
                        .get_or_create(&CertificateLabels {
                            frontend: frontend.name.to_string(),
                            domain: domain.clone(),
                        })
                        .set(not_after);
                }
            }
        }
        if frontend.tls.is_some() {
            tls_handshakes
                .series
                .push((labels.clone(), state.tls_handshakes.read()));
            tls_failures
                .get_or_create(&labels)
                .inc_by(load(&state.tls_handshake_failures));
        }
    }
    let reloads = CounterFamily::<ResultLabels>::default();
    let (ok, refused) = context.reloads();
    for (result, count) in [("success", ok), ("failure", refused)] {
        reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc_by(count);
    }
    let logins = &context.admin().logins;
    let password_checks: Counter = Counter::default();
    password_checks.inc_by(logins.password_checks());
    let logins_refused = CounterFamily::<ReasonLabels>::default();
    let (wrong, blocked, busy) = logins.refused();
    for (reason, count) in [("wrong", wrong), ("blocked", blocked), ("busy", busy)] {
        logins_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(count);
    }
    let access_log_dropped: Counter = Counter::default();
    access_log_dropped.inc_by(crate::access_log::dropped_total());
    let open: Gauge = Gauge::default();
    open.set(context.open_connections() as i64);
    let worker_accepted = CounterFamily::<WorkerLabels>::default();
    for (worker, count) in context.accepted_per_worker().into_iter().enumerate() {
        worker_accepted
            .get_or_create(&WorkerLabels {
                worker: worker.to_string(),
            })
            .inc_by(count);
    }

    let mut registry = Registry::default();
    registry.register(
        "tether_server_up",
        "Whether the server may take traffic (1) or is down (0)",
        up,
    );
    registry.register(
        "tether_server_active_connections",
        "Requests in flight plus open WebSocket tunnels on the server",
        active,
    );
    registry.register("tether_tunnels_open", "Open WebSocket tunnels on the server", tunnels);
    registry.register(
        "tether_server_weight",
        "Weight the algorithm uses now (during slow start, less than configured)",
        weight,
    );
    registry.register(
        "tether_server_admin_state",
        "The operator's state of the server: 1 for the one in force (ready, drain, maint)",
        admin,
    );
    registry.register(
        "tether_server_dispatched",
        "Requests and tunnels dispatched to the server",
        dispatched,
    );
    registry.register(
        "tether_server_connect_failures",
        "Failed connect attempts to the server",
        failures,
    );
    registry.register("tether_health_checks", "Active health checks run", checks);
    registry.register(
        "tether_health_check_failures",
        "Active health checks that failed",
        failed_checks,
    );
    registry.register(
        "tether_health_check_last_duration_seconds",
        "How long the server's latest health check took",
        check_latency,
    );
    registry.register(
        "tether_stick_table_entries",
        "Session ids in the backend's stick table",
        stick_entries,
    );
    registry.register(
        "tether_requests",
        "HTTP responses sent for exchanges with the server, by status class (101 for WebSocket handshakes is 1xx)",
        requests,
    );
    registry.register(
        "tether_server_error_responses",
        "502, 503 and 504 responses sent for exchanges with the server",
        error_responses,
    );
    registry.register(
        "tether_server_bytes",
        "Bytes carried to (in) and from (out) the server: HTTP bodies and tunnel bytes, tunnels adding theirs about once a second",
        bytes,
    );
    registry.register(
        "tether_websocket_messages",
        "WebSocket messages carried to (in) and from (out) the server, tunnels adding theirs about once a second",
        messages,
    );
    registry.register_collector(Box::new(tunnel_durations));
    registry.register_collector(Box::new(check_durations));
    registry.register_collector(Box::new(connect_times));
    registry.register_collector(Box::new(handshake_times));
    registry.register_collector(Box::new(first_byte_times));
    registry.register_collector(Box::new(queue_waits));
    registry.register_collector(Box::new(tls_handshakes));
    registry.register(
        "tether_backend_queued",
        "Requests waiting for a slot because every server is at maxconn",
        queued,
    );
    registry.register(
        "tether_rebalance_shed",
        "Tunnels closed with 1012 by rebalancing, to even out servers after the server set changed",
        rebalance_shed,
    );
    registry.register(
        "tether_frontend_connections_open",
        "Client connections open on the frontend",
        frontend_open,
    );
    registry.register(
        "tether_frontend_connections",
        "Client connections accepted by the frontend",
        frontend_accepted,
    );
    registry.register(
        "tether_frontend_requests",
        "Requests (WebSocket handshakes included) received by the frontend",
        frontend_requests,
    );
    registry.register(
        "tether_frontend_http2_connections",
        "Client connections that spoke HTTP/2 (ALPN h2 or h2c with prior knowledge)",
        http2_connections,
    );
    registry.register(
        "tether_frontend_protocol_requests",
        "Requests (WebSocket handshakes included) received by the frontend, by protocol (http/1.1, h2)",
        requests_by_protocol,
    );
    registry.register(
        "tether_frontend_protocol_websockets",
        "WebSocket tunnels opened, by the protocol that carries them (http/1.1 Upgrade, h2 extended CONNECT)",
        websockets_by_protocol,
    );
    registry.register(
        "tether_frontend_refused",
        "Connections (per_ip_connections) and WebSocket handshakes (per_ip_rate) refused with 429 by per-address limits",
        frontend_refused,
    );
    registry.register(
        "tether_frontend_message_rate_closes",
        "WebSocket tunnels closed with 1008 for going over websocket.max_messages",
        message_rate_closes,
    );
    registry.register(
        "tether_frontend_lifetime_closes",
        "WebSocket tunnels closed with 1001 at their websocket.max_lifetime",
        lifetime_closes,
    );
    registry.register(
        "tether_tls_handshake_failures",
        "TLS handshakes with clients that failed or did not finish in time (TLS frontends)",
        tls_failures,
    );
    registry.register(
        "tether_tls_certificate_expiry_seconds",
        "When each automatic (ACME) certificate expires, as Unix time",
        certificate_expiry,
    );
    registry.register("tether_config_reloads", "Configuration reloads by result", reloads);
    registry.register(
        "tether_access_log_dropped",
        "Access-log lines dropped because their destination could not keep up",
        access_log_dropped,
    );
    registry.register(
        "tether_admin_password_checks",
        "Admin passwords checked against their argon2 hash (remembered logins and refused attempts are not checked)",
        password_checks,
    );
    registry.register(
        "tether_admin_logins_refused",
        "Admin logins refused: wrong credentials, client blocked after too many failures, password checks busy",
        logins_refused,
    );
    registry.register("tether_open_connections", "Open client connections and tunnels", open);
    registry.register(
        "tether_worker_connections_accepted",
        "Client connections each worker accepted (how evenly the kernel spreads them over the workers' sockets)",
        worker_accepted,
    );
    if let Some(cluster) = context.cluster() {
        let redis_up: Gauge = Gauge::default();
        redis_up.set(i64::from(cluster.redis.is_up()));
        registry.register(
            "tether_cluster_redis_up",
            "Whether this instance reaches the cluster's Redis (1) or serves from local state (0)",
            redis_up,
        );
        let instances: Gauge = Gauge::default();
        instances.set(cluster.instances().len() as i64);
        registry.register(
            "tether_cluster_instances",
            "Instances with a recent heartbeat in Redis, this one included (as of the last sync)",
            instances,
        );
        let outages: Counter = Counter::default();
        outages.inc_by(cluster.redis.outages.load(Ordering::Relaxed));
        registry.register(
            "tether_cluster_redis_outages",
            "Times Redis became unreachable",
            outages,
        );
        let dropped: Counter = Counter::default();
        dropped.inc_by(cluster.dropped_writes.load(Ordering::Relaxed));
        registry.register(
            "tether_cluster_stick_writes_dropped",
            "Stick-table writes to Redis dropped (queue full, or too many kept during an outage)",
            dropped,
        );
        let remote = GaugeFamily::<ServerLabels>::default();
        for backend in &snapshot.backends {
            for server in &backend.servers {
                let labels = ServerLabels {
                    backend: backend.name.to_string(),
                    server: server.name.to_string(),
                };
                remote
                    .get_or_create(&labels)
                    .set(i64::from(server.state.remote_active()));
            }
        }
        registry.register(
            "tether_server_remote_active_connections",
            "Requests and tunnels of the server on the other instances of the cluster (last sync)",
            remote,
        );
    }
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

fn code_labels(server: &ServerLabels, code: String) -> CodeLabels {
    CodeLabels {
        backend: server.backend.clone(),
        server: server.server.clone(),
        code,
    }
}

/// The `/metrics` response.
pub fn respond(context: &dyn Context) -> Response<AdminBody> {
    match render(context) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics"),
    }
}
