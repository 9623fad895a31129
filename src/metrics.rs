//! Prometheus metrics, all prefixed `krafter_`.
//!
//! One registry built at startup; handles are cheap clones of atomics, so
//! hot paths only bump counters. Gauges that describe state (file size) are
//! refreshed when `/metrics` is scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of one served HTTP request. `route` is the route template
/// (`/api/v1/webhooks/sources/{id}`), never the raw path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// How an ingest request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngestResult {
    Accepted,
    Duplicate,
    Handshake,
    InvalidSignature,
    TooLarge,
    NotFound,
    BadRequest,
    Unavailable,
    Error,
}

impl IngestResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestResult::Accepted => "accepted",
            IngestResult::Duplicate => "duplicate",
            IngestResult::Handshake => "handshake",
            IngestResult::InvalidSignature => "invalid_signature",
            IngestResult::TooLarge => "too_large",
            IngestResult::NotFound => "not_found",
            IngestResult::BadRequest => "bad_request",
            IngestResult::Unavailable => "unavailable",
            IngestResult::Error => "error",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for IngestResult {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of one ingest request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// The source id (never the slug: it is the URL's only secret part).
    pub source: String,
    pub result: IngestResult,
}

/// Every metric Krafter exports.
pub struct Metrics {
    registry: Registry,
    /// Served HTTP requests.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Time from begin to durable commit of one writer batch.
    pub storage_commit_duration: Histogram,
    /// Operations per writer batch: how well group commit is amortising fsyncs.
    pub storage_commit_batch_size: Histogram,
    /// Time to append and sync one group of records to the write-ahead log
    /// (what an ingest waits for before its 2xx, on the redb backend).
    pub storage_wal_sync_duration: Histogram,
    /// Records per write-ahead log sync: how well the log amortises fsyncs.
    pub storage_wal_batch_size: Histogram,
    /// Size of the database file.
    pub storage_file_size: Gauge,
    /// Ingest requests by source and result.
    pub ingest_requests: Family<IngestLabels, Counter>,
    /// Events stored (not counting duplicates and handshakes).
    pub events_stored: Counter,
    /// Delivery attempts by result (`succeeded`, `http_status`, `timeout`, ...).
    pub delivery_attempts: Family<ResultLabel, Counter>,
    /// Duration of delivery attempts.
    pub delivery_attempt_duration: Histogram,
    /// Deliveries waiting in the queue (refreshed on scrape).
    pub deliveries_pending: Gauge,
    /// Age of the oldest due delivery, in seconds (refreshed on scrape).
    pub oldest_pending_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Destinations auto-disabled since start.
    pub destinations_disabled: Counter,
}

/// A single `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("krafter");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route template and status",
            http_requests.clone(),
        );
        let storage_commit_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "storage_commit_duration_seconds",
            "Duration of one writer commit to the database (begin to commit), in seconds",
            storage_commit_duration.clone(),
        );
        let storage_commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "storage_commit_batch_size",
            "Operations folded into one database commit",
            storage_commit_batch_size.clone(),
        );
        let storage_wal_sync_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        registry.register(
            "storage_wal_sync_duration_seconds",
            "Duration of one write-ahead log append and fdatasync (redb backend), in seconds",
            storage_wal_sync_duration.clone(),
        );
        let storage_wal_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "storage_wal_batch_size",
            "Records made durable by one write-ahead log sync (redb backend)",
            storage_wal_batch_size.clone(),
        );
        let storage_file_size = Gauge::default();
        registry.register(
            "storage_file_size_bytes",
            "Size of the database file in bytes",
            storage_file_size.clone(),
        );
        let ingest_requests = Family::<IngestLabels, Counter>::default();
        registry.register(
            "ingest_requests",
            "Ingest requests by source id and result",
            ingest_requests.clone(),
        );
        let events_stored = Counter::default();
        registry.register(
            "events_stored",
            "Events durably stored by ingest",
            events_stored.clone(),
        );
        let delivery_attempts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by result",
            delivery_attempts.clone(),
        );
        let delivery_attempt_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "delivery_attempt_duration_seconds",
            "Duration of delivery attempts, in seconds",
            delivery_attempt_duration.clone(),
        );
        let deliveries_pending = Gauge::default();
        registry.register(
            "deliveries_pending",
            "Deliveries waiting for their next attempt (queue depth)",
            deliveries_pending.clone(),
        );
        let oldest_pending_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "oldest_pending_age_seconds",
            "How long the oldest due delivery has been waiting past its due time, in seconds",
            oldest_pending_age.clone(),
        );
        let destinations_disabled = Counter::default();
        registry.register(
            "destinations_auto_disabled",
            "Destinations disabled because every delivery failed for delivery.disable_after",
            destinations_disabled.clone(),
        );
        Metrics {
            registry,
            delivery_attempts,
            delivery_attempt_duration,
            deliveries_pending,
            oldest_pending_age,
            destinations_disabled,
            ingest_requests,
            events_stored,
            http_requests,
            storage_commit_duration,
            storage_commit_batch_size,
            storage_wal_sync_duration,
            storage_wal_batch_size,
            storage_file_size,
        }
    }

    /// Records one write-ahead log sync.
    pub fn observe_wal_sync(&self, elapsed: Duration, records: usize) {
        self.storage_wal_sync_duration
            .observe(elapsed.as_secs_f64());
        self.storage_wal_batch_size.observe(records as f64);
    }

    /// Records one writer batch.
    pub fn observe_commit(&self, elapsed: Duration, ops: usize) {
        self.storage_commit_duration.observe(elapsed.as_secs_f64());
        self.storage_commit_batch_size.observe(ops as f64);
    }

    /// Records one delivery attempt.
    pub fn observe_attempt(&self, result: &str, duration: Duration) {
        self.delivery_attempts
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        self.delivery_attempt_duration
            .observe(duration.as_secs_f64());
    }

    /// Counts one ingest request.
    pub fn observe_ingest(&self, source: &str, result: IngestResult) {
        self.ingest_requests
            .get_or_create(&IngestLabels {
                source: source.to_string(),
                result,
            })
            .inc();
    }

    /// Counts one served request; `method` comes from [`method_label`] so
    /// the label set stays bounded.
    pub fn observe_request(&self, method: &'static str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The exposition text for `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A bounded label for an HTTP method: the standard ones by name, any
/// other token as `other`. hyper accepts any token as a method, and a label
/// an unauthenticated client chooses would grow the registry forever.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}
