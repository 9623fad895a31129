//! The API's JSON shapes, as far as the pages read them.
//!
//! Read from the API's answers (not from storage) so the dashboard shows
//! exactly what an API client would see. Unknown fields are ignored, so the
//! API can grow without breaking a page.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An API key (`key` only in the answer that creates it).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub prefix: String,
    pub created_at: String,
    pub key: Option<String>,
}

/// A source.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub id: String,
    pub url: String,
    pub name: String,
    pub provider: String,
    pub enabled: bool,
    pub retention_days: u32,
    pub destinations_count: u64,
    #[serde(default)]
    pub provider_config: Option<ProviderConfig>,
    pub created_at: String,
}

/// A `generic_hmac` source's settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProviderConfig {
    pub signature_header: String,
    pub encoding: String,
    pub prefix: Option<String>,
    pub event_type_pointer: Option<String>,
    pub event_type_header: Option<String>,
    pub event_id_header: Option<String>,
    pub event_id_pointer: Option<String>,
}

/// A destination (`secret` only on create and rotate).
#[derive(Debug, Clone, Deserialize)]
pub struct Destination {
    pub id: String,
    pub url: String,
    pub event_filter: Vec<String>,
    pub enabled: bool,
    pub rate_limit: Option<u32>,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    pub created_at: String,
    pub secret: Option<String>,
}

/// Delivery counts of one event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Counts {
    pub pending: u32,
    pub succeeded: u32,
    pub failed: u32,
    #[serde(default)]
    pub cancelled: u32,
}

/// An event as listed.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub provider_event_id: Option<String>,
    pub received_at: String,
    pub size_bytes: u64,
    pub deliveries: Counts,
}

/// An event with headers and body.
#[derive(Debug, Clone, Deserialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: Event,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub body_base64: Option<String>,
}

/// One delivery of an event, with its attempts.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub destination_id: String,
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
}

/// One HTTP try.
#[derive(Debug, Clone, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: String,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub response_body: String,
}

/// What a replay queued.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplayAccepted {
    pub count: usize,
}

/// What a bulk replay will queue.
#[derive(Debug, Clone, Deserialize)]
pub struct BulkReplayAccepted {
    pub events: usize,
    pub deliveries: usize,
}
