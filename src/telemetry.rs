//! OpenTelemetry tracing (SPEC §15 `telemetry.otlp_endpoint`): a span per
//! ingest request and per delivery attempt, exported over OTLP/HTTP
//! (protobuf) to a collector.
//!
//! - The `ingest` span's parent is the request's `traceparent` when that is
//!   valid (an invalid one is ignored). Its context is stored with the
//!   event ([`crate::model::records::EventRecord::trace`]).
//! - Each `delivery.attempt` span is a child of that stored context, so it
//!   sits in the trace of the ingest that created the event even after a
//!   restart or on another node, and the attempt's own context is sent to
//!   the destination as `traceparent`.
//!
//! Off (no endpoint) there is no [`Telemetry`] at all: callers hold an
//! `Option<Telemetry>`, so no provider, exporter thread or span object
//! exists and nothing extra is stored with events. An inbound
//! `traceparent` is still kept with the event's headers and forwarded
//! unchanged, as every inbound header is (SPEC §9).
//!
//! Why the OpenTelemetry SDK directly rather than `tracing` spans bridged
//! by `tracing-opentelemetry`: a `tracing` layer is process-global, while a
//! process may run several servers (the in-process tests do), each with its
//! own collector; and building `tracing` spans would cost the log
//! subscriber work on every request even with tracing off. Each server
//! here owns its tracer provider and shuts it down (flushing) with itself.
//!
//! Spans carry ids, the event type, numbers and outcomes only: never a
//! secret, a body, a header value or a destination URL (which may hold a
//! token).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;
use crate::model::ids::{DeliveryId, DestinationId, EventId, SourceId};
use crate::model::records::ErrorKind;
use crate::model::records::EventRecord;
use crate::model::trace::{TraceContext, TRACEPARENT, TRACESTATE};

/// Longest event type put on a span (a provider chooses it).
const MAX_EVENT_TYPE_CHARS: usize = 256;
/// Most of a collector's answer read (OTLP answers are tiny).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest a graceful shutdown waits for the last spans to be sent, so the
/// whole stop stays within SPEC §2's 30 s.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);
/// At most one warning per this interval while the collector fails.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why tracing could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its configuration.
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
    /// TLS for an `https` collector could not be set up.
    #[error("telemetry: TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// Not called on a tokio runtime (the exporter sends from it).
    #[error("telemetry: no tokio runtime to export from")]
    NoRuntime,
}

/// Tracing that is on; cheap to clone. Off is the absence of one.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Set once the provider was shut down (gracefully, or on drop).
    closed: AtomicBool,
}

impl Drop for Inner {
    /// A server dropped without a graceful shutdown: the provider's own
    /// drop would block this (runtime) thread while the exporter thread
    /// waits for the runtime, so it is shut down on a thread of its own.
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let provider = self.provider.clone();
            let _ = std::thread::Builder::new()
                .name("krafter-otel-shutdown".into())
                .spawn(move || {
                    let _ = provider.shutdown_with_timeout(SHUTDOWN_FLUSH);
                });
        }
    }
}

impl Telemetry {
    /// Sets up the exporter and tracer when `config` names an endpoint;
    /// `None` when tracing is off. Must run on the tokio runtime that will
    /// carry the exports.
    pub fn start(config: &TelemetryConfig) -> Result<Option<Telemetry>, TelemetryError> {
        let Some(url) = config.traces_url() else {
            return Ok(None);
        };
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let client = OtlpClient::new(runtime, config.export_timeout)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(url)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        // The SDK's batch processor: finished spans queue in memory (at most
        // 2048; beyond, new ones are dropped, never waited for) and a thread
        // of its own hands batches to the exporter above, which sends them
        // on the tokio runtime.
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(config.batch_interval)
            .with_max_queue_size(2048)
            .with_max_export_batch_size(512)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        // New traces are sampled by ratio; a trace that arrives (or was
        // stored) with a parent follows the parent's decision.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("krafter")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        tracing::info!(
            endpoint = config.endpoint().unwrap_or_default(),
            "tracing on: spans exported over OTLP/HTTP"
        );
        Ok(Some(Telemetry {
            inner: Arc::new(Inner {
                provider,
                tracer,
                closed: AtomicBool::new(false),
            }),
        }))
    }

    /// Starts the span of one ingest request to `source_id` that began at
    /// `started`: a child of the request's `traceparent` when it has one
    /// valid header (with its `tracestate`), else a new trace.
    pub fn ingest_span(
        &self,
        started: SystemTime,
        source_id: SourceId,
        headers: &HeaderMap,
    ) -> IngestSpan {
        let inbound = TraceContext::from_headers(
            headers
                .get_all(TRACEPARENT)
                .iter()
                .map(|value| value.as_bytes()),
        );
        let parent = match inbound {
            Some(remote) => {
                let state = inbound_tracestate(headers);
                Context::new().with_remote_span_context(span_context(remote, state))
            }
            None => Context::new(),
        };
        let builder = self
            .inner
            .tracer
            .span_builder("ingest")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes([
                KeyValue::new("krafter.source.id", source_id.to_string()),
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/in/{slug}"),
            ]);
        IngestSpan {
            span: self.inner.tracer.build_with_context(builder, &parent),
            event: None,
            duplicate_of: None,
        }
    }

    /// Starts the span of one delivery attempt of `event`: a child of the
    /// ingest context stored with the event; for an event stored without
    /// one (tracing was off, a test event), of the `traceparent` it arrived
    /// with, if valid; else the root of a new trace.
    pub fn attempt_span(
        &self,
        event: &EventRecord,
        destination_id: DestinationId,
        delivery_id: DeliveryId,
        attempt: u32,
    ) -> AttemptSpan {
        let parent = event
            .trace
            .or_else(|| TraceContext::from_stored_headers(&event.headers))
            .map_or_else(Context::new, |stored| {
                Context::new().with_remote_span_context(span_context(stored, TraceState::default()))
            });
        let builder = self
            .inner
            .tracer
            .span_builder("delivery.attempt")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("krafter.destination.id", destination_id.to_string()),
                KeyValue::new("krafter.delivery.id", delivery_id.to_string()),
                KeyValue::new("krafter.event.id", event.id.to_string()),
                KeyValue::new("krafter.source.id", event.source_id.to_string()),
                KeyValue::new("krafter.event.type", bounded(&event.event_type)),
                KeyValue::new("krafter.attempt", i64::from(attempt)),
                KeyValue::new("http.request.method", "POST"),
            ]);
        AttemptSpan {
            span: self.inner.tracer.build_with_context(builder, &parent),
        }
    }

    /// Sends the spans still queued and stops exporting (graceful
    /// shutdown), waiting at most a few seconds for the collector.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let provider = self.inner.provider.clone();
        // The SDK blocks while it flushes, and the flush sends on this
        // runtime: wait on a blocking thread, never on a runtime one.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_FLUSH))
                .await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "tracing: the last spans may not have been exported");
        }
    }
}

/// The span of one ingest request; ends when finished or dropped. What is
/// learnt on the way is set once, at the end (a span's attributes are a
/// list: setting a key twice would export it twice).
pub struct IngestSpan {
    span: opentelemetry_sdk::trace::Span,
    /// The event being stored: id and type.
    event: Option<(EventId, String)>,
    /// The event first stored, when this request is its duplicate.
    duplicate_of: Option<EventId>,
}

impl IngestSpan {
    /// The span's context, to store with the event (`None` only when the
    /// provider is already shut down).
    pub fn context(&self) -> Option<TraceContext> {
        trace_context(self.span.span_context())
    }

    /// Names the event this request is storing.
    pub fn record_event(&mut self, event_id: EventId, event_type: &str) {
        self.event = Some((event_id, bounded(event_type)));
    }

    /// Marks the request as a duplicate of the event first stored (which
    /// the answer names, and so does the span).
    pub fn record_duplicate(&mut self, original: EventId) {
        self.duplicate_of = Some(original);
    }

    /// Ends the span with the answer's status. A 5xx marks the span as an
    /// error (as OpenTelemetry's HTTP conventions do for servers; a 4xx is
    /// the sender's problem).
    pub fn finish(mut self, status: u16) {
        let event_id = self.duplicate_of.or(self.event.as_ref().map(|e| e.0));
        if let Some(id) = event_id {
            self.span
                .set_attribute(KeyValue::new("krafter.event.id", id.to_string()));
        }
        if let Some((_, event_type)) = self.event.take() {
            self.span
                .set_attribute(KeyValue::new("krafter.event.type", event_type));
        }
        if self.duplicate_of.is_some() {
            self.span
                .set_attribute(KeyValue::new("krafter.duplicate", true));
        }
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            self.span
                .set_status(Status::error(format!("HTTP {status}")));
        }
        self.span.end();
    }
}

/// The span of one delivery attempt; ends when finished or dropped.
pub struct AttemptSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl AttemptSpan {
    /// What the attempt sends as `traceparent` (`None` only when the
    /// provider is already shut down).
    pub fn context(&self) -> Option<TraceContext> {
        trace_context(self.span.span_context())
    }

    /// Ends the span with the attempt's outcome: the status code when the
    /// destination answered, the error kind (never the message, which may
    /// name the destination) when it failed.
    pub fn finish(
        mut self,
        status: Option<u16>,
        error_kind: Option<ErrorKind>,
        duration: Duration,
    ) {
        let outcome = error_kind.map_or("succeeded", |k| k.as_str());
        self.span.set_attributes([
            KeyValue::new("krafter.outcome", outcome),
            KeyValue::new(
                "krafter.duration_ms",
                i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            ),
        ]);
        if let Some(status) = status {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        match error_kind {
            None => self.span.set_status(Status::Ok),
            Some(kind) => self.span.set_status(Status::error(kind.as_str())),
        }
        self.span.end();
    }
}

fn span_context(c: TraceContext, state: TraceState) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(c.trace_id),
        SpanId::from_bytes(c.span_id),
        TraceFlags::new(c.flags),
        true,
        state,
    )
}

fn trace_context(c: &SpanContext) -> Option<TraceContext> {
    c.is_valid().then(|| TraceContext {
        trace_id: c.trace_id().to_bytes(),
        span_id: c.span_id().to_bytes(),
        flags: c.trace_flags().to_u8(),
    })
}

/// The request's `tracestate` (several headers are one list); an invalid
/// one is dropped, as W3C asks.
fn inbound_tracestate(headers: &HeaderMap) -> TraceState {
    let parts: Vec<&str> = headers
        .get_all(TRACESTATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut members = Vec::new();
    for member in parts.iter().flat_map(|p| p.split(',')) {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let Some((key, value)) = member.split_once('=') else {
            return TraceState::default();
        };
        let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
        if key.is_empty() || value.is_empty() || !printable || value.ends_with(' ') {
            return TraceState::default();
        }
        members.push((key, value));
    }
    // The SDK checks keys and the list's length (32 members).
    TraceState::from_key_value(members).unwrap_or_default()
}

fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_EVENT_TYPE_CHARS) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

/// The exporter's HTTP client: hyper with rustls (http and https), sending
/// on the server's tokio runtime. The SDK's batch thread awaits each send
/// from outside the runtime, which is why the request is spawned onto it.
#[derive(Clone)]
struct OtlpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// When a failed export was last logged.
    warned: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OtlpClient {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, TelemetryError> {
        let tls = rustls::ClientConfig::builder_with_provider(crate::http::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(crate::http::tls::native_roots())
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(OtlpClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(https),
            runtime,
            timeout,
            warned: Arc::default(),
        })
    }

    /// Logs a failed export, at most once per [`WARN_EVERY`].
    fn warn(&self, what: &str) {
        let mut last = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                error = what,
                "tracing: cannot export spans to the collector; they are dropped"
            );
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let exchange = self.runtime.spawn(async move {
            let exchange = async {
                let response = client.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(HttpError::from(Cow::Borrowed(
                    "the collector did not answer in time",
                ))),
            }
        });
        let answer = match exchange.await {
            Ok(answer) => answer,
            Err(e) => Err(HttpError::from(e)),
        };
        match &answer {
            Err(e) => self.warn(&e.to_string()),
            Ok(r) if !r.status().is_success() => self.warn(&format!("HTTP {}", r.status())),
            Ok(_) => {}
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_convert_both_ways() {
        let c =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let sc = span_context(c, TraceState::default());
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(trace_context(&sc), Some(c));
        assert_eq!(trace_context(&SpanContext::empty_context()), None);
    }

    #[test]
    fn long_event_types_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("invoice.paid"), "invoice.paid");
        let long = "é".repeat(300);
        assert_eq!(bounded(&long).chars().count(), MAX_EVENT_TYPE_CHARS);
    }

    #[test]
    fn an_invalid_tracestate_is_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACESTATE, "congo=t61rcWkgMzE".parse().unwrap());
        headers.append(TRACESTATE, "rojo=00f067aa0ba902b7".parse().unwrap());
        let state = inbound_tracestate(&headers);
        assert_eq!(state.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(state.get("rojo"), Some("00f067aa0ba902b7"));
        for bad in ["=,,=", "congo", "Upper=1", "congo=a=b", "congo=ok,=x"] {
            let mut headers = HeaderMap::new();
            headers.insert(TRACESTATE, bad.parse().unwrap());
            assert_eq!(inbound_tracestate(&headers).header(), "", "{bad}");
        }
    }
}
