//! OpenTelemetry tracing (`[tracing]`): W3C trace context in and out
//! (`traceparent`), one span per request or WebSocket handshake and one per
//! tunnel, exported over OTLP/HTTP. The data path holds a [`Tracer`] only
//! when `[tracing]` is configured; without it nothing here runs.

pub mod export;
pub mod span;
pub mod traceparent;

pub use export::{Pipeline, Settings, TelemetryError};
pub use opentelemetry::trace::TraceId;
pub use span::{RequestEnd, RequestSpan, RequestStart, Tracer, TunnelSummary, TunnelTrace};
