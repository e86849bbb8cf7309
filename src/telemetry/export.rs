//! The span pipeline of one tether instance: the SDK's batch span processor
//! on the tokio runtime, an OTLP/HTTP protobuf exporter over hyper (TLS by
//! rustls for an `https://` collector), and a watch that logs a collector
//! outage once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use super::span::Tracer;

/// How long one export (an HTTP POST of a batch) may take; OTLP's default.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans go (`[tracing]` of the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The full OTLP/HTTP traces URL (`…/v1/traces`).
    pub traces_url: http::Uri,
    /// Share of new traces sampled (0.0 to 1.0); a caller's `traceparent` decides for its own.
    pub sample_ratio: f64,
    /// The spans' `service.name`.
    pub service_name: String,
    /// The longest a finished span waits before its batch is posted.
    pub batch_delay: Duration,
}

/// Why the span pipeline could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The TLS client configuration for an `https://` collector.
    #[error("cannot set up TLS toward the OTLP collector: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The OTLP exporter refused its settings.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// A running span pipeline: the tracer the data path starts spans with,
/// and the provider that flushes them at the end.
pub struct Pipeline {
    provider: SdkTracerProvider,
    tracer: Tracer,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the pipeline for `settings`: its batch task runs on the
    /// current tokio runtime. Nothing is sent until a span ends; a
    /// collector that is down costs dropped spans, never a request.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(settings: &Settings) -> Result<Pipeline, TelemetryError> {
        let mut tls = (*crate::tls::client::client_config(None, true)?).clone();
        // The connector names its own ALPN protocols (HTTP/1.1 here).
        tls.alpn_protocols.clear();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = opentelemetry_http::hyper::HyperClient::new(connector, EXPORT_TIMEOUT, None);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url.to_string())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let exporter = Watched {
            inner: exporter,
            collector: settings.traces_url.to_string(),
            failing: AtomicBool::new(false),
        };
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(settings.batch_delay)
            .with_max_export_timeout(EXPORT_TIMEOUT)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batches)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // A caller's sampled or unsampled trace is followed; a new one is
            // sampled by its trace id (Envoy's and NGINX's behaviour).
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        // The provider shuts its processor down when its last handle drops,
        // blocking the dropping thread on the batch task, which may run on
        // that very thread (a current-thread runtime): never let that
        // happen; `shutdown` (on a blocking thread) is the one way it stops.
        std::mem::forget(provider.clone());
        let tracer = Tracer::new(provider.tracer("tether"));
        Ok(Pipeline { provider, tracer })
    }

    /// The tracer the data path starts spans with.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Exports what is left and stops the batch task (waiting on a
    /// blocking thread, so the runtime keeps running the export).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(cause = %err, "the span pipeline stopped with an error"),
            Err(err) => tracing::debug!(cause = %err, "the span pipeline's shutdown did not finish"),
        }
    }
}

/// The OTLP exporter, with a warning when the collector stops taking
/// spans and a note when it takes them again (once per outage, not per batch).
#[derive(Debug)]
struct Watched<E> {
    inner: E,
    /// The URL posted to, for the log lines.
    collector: String,
    /// The last export failed.
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(err) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                collector = %self.collector,
                cause = %err,
                spans,
                "the OTLP collector does not take spans: they are dropped until it does"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(collector = %self.collector, "the OTLP collector takes spans again")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
