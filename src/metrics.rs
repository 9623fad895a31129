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

/// Every metric Krafter exports.
pub struct Metrics {
    registry: Registry,
    /// Served HTTP requests.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Time from begin to durable commit of one writer batch.
    pub storage_commit_duration: Histogram,
    /// Operations per writer batch: how well group commit is amortising fsyncs.
    pub storage_commit_batch_size: Histogram,
    /// Size of the database file.
    pub storage_file_size: Gauge,
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
            "Duration of one group commit (begin to durable), in seconds",
            storage_commit_duration.clone(),
        );
        let storage_commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "storage_commit_batch_size",
            "Operations folded into one durable commit",
            storage_commit_batch_size.clone(),
        );
        let storage_file_size = Gauge::default();
        registry.register(
            "storage_file_size_bytes",
            "Size of the database file in bytes",
            storage_file_size.clone(),
        );
        Metrics {
            registry,
            http_requests,
            storage_commit_duration,
            storage_commit_batch_size,
            storage_file_size,
        }
    }

    /// Records one writer batch.
    pub fn observe_commit(&self, elapsed: Duration, ops: usize) {
        self.storage_commit_duration.observe(elapsed.as_secs_f64());
        self.storage_commit_batch_size.observe(ops as f64);
    }

    /// Counts one served request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16) {
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
