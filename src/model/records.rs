//! The records every layer shares: API keys, sources, destinations,
//! events, deliveries, attempts and replay jobs, as plain data.
//!
//! Storage backends encode them as they see fit (redb: a version byte plus
//! postcard, see `crate::store`); nothing here knows about an engine.

use serde::{Deserialize, Serialize};

use super::ids::{ApiKeyId, DeliveryId, DestinationId, EventId, ReplayId, SourceId};
use super::provider::{GenericHmacConfig, ProviderKind};

/// What an API key may do. `Write` includes `Read`; `Admin` includes all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    /// The public name (SPEC §3).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "webhooks:read",
            Scope::Write => "webhooks:write",
            Scope::Admin => "admin",
        }
    }

    /// Parses a public name.
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "webhooks:read" => Some(Scope::Read),
            "webhooks:write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// An API key; the key itself is never stored, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// First 8 characters of the key, to recognise it in lists.
    pub prefix: String,
    pub hash: [u8; 32],
    pub created_at_ms: i64,
}

/// A secret that was replaced, still accepted until `until_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetiredSecret {
    pub sealed: Vec<u8>,
    pub until_ms: i64,
}

impl RetiredSecret {
    /// Until when `previous` (a record's retired secret, if any) is still
    /// accepted, as of `now_ms`; `None` once it is not (or there is none).
    /// What keeps opened secrets in memory must open them again then.
    pub fn live_until(previous: Option<&RetiredSecret>, now_ms: i64) -> Option<i64> {
        previous
            .map(|retired| retired.until_ms)
            .filter(|until| *until > now_ms)
    }
}

/// A source: one third-party origin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRecord {
    pub id: SourceId,
    pub slug: String,
    pub name: String,
    #[serde(with = "super::provider::stored_code")]
    pub provider: ProviderKind,
    pub provider_config: Option<GenericHmacConfig>,
    /// Sealed with the data directory's key; `None` only for provider `none`.
    pub signing_secret: Option<Vec<u8>>,
    pub previous_secret: Option<RetiredSecret>,
    pub enabled: bool,
    pub retention_days: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A destination: one URL of the user's receiving one source's events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationRecord {
    pub id: DestinationId,
    pub source_id: SourceId,
    pub url: String,
    pub event_filter: Vec<String>,
    pub enabled: bool,
    /// Sealed `whsec_...` string.
    pub secret: Vec<u8>,
    pub previous_secret: Option<RetiredSecret>,
    /// Deliveries per second, when limited.
    pub rate_limit: Option<u32>,
    pub disabled_reason: Option<String>,
    pub disabled_at_ms: Option<i64>,
    /// Start of the current run of failed attempts (none since a success);
    /// drives auto-disable. Written only when the run starts or ends.
    pub failing_since_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The per-destination delivery options of SPEC §13 (added in record
    /// version 2; older records read as the defaults).
    pub options: DeliveryOptions,
}

/// Per-destination delivery options (SPEC §13). Secret parts are sealed
/// with the data directory's key, like the signing secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryOptions {
    /// Extra request headers, lower-case names, in the order given.
    pub headers: Vec<(String, String)>,
    pub auth: Option<AuthRecord>,
    pub tls_client_certificate: Option<ClientCertRecord>,
    /// The body filter as compact JSON text (postcard cannot hold a free
    /// JSON value); validated before it is stored.
    pub body_filter: Option<String>,
    pub ordering: Ordering,
    /// This destination's attempt timeout, replacing `delivery.timeout`.
    pub timeout_ms: Option<u64>,
}

/// How a destination's deliveries are ordered (SPEC §13 `ordering`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ordering {
    /// Any order, several attempts at once.
    #[default]
    None,
    /// One attempt at a time, in event order; a failing delivery holds
    /// the later ones until it succeeds or ends failed.
    Fifo,
}

impl Ordering {
    /// The public name.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Fifo => "fifo",
        }
    }
}

/// How deliveries authenticate to the receiver (SPEC §13 `auth`). Every
/// `Vec<u8>` here is sealed; `Debug` never shows even the sealed bytes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum AuthRecord {
    Basic {
        username: String,
        password: Vec<u8>,
    },
    Bearer {
        token: Vec<u8>,
    },
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: Vec<u8>,
        scope: Option<String>,
        audience: Option<String>,
    },
}

impl AuthRecord {
    /// The public `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthRecord::Basic { .. } => "basic",
            AuthRecord::Bearer { .. } => "bearer",
            AuthRecord::OAuth2ClientCredentials { .. } => "oauth2_client_credentials",
        }
    }
}

impl std::fmt::Debug for AuthRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRecord::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<sealed>")
                .finish(),
            AuthRecord::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<sealed>")
                .finish(),
            AuthRecord::OAuth2ClientCredentials {
                token_url,
                client_id,
                scope,
                audience,
                ..
            } => f
                .debug_struct("OAuth2ClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("client_secret", &"<sealed>")
                .field("scope", scope)
                .field("audience", audience)
                .finish(),
        }
    }
}

/// A client certificate for mTLS: the chain in clear (it is public), the
/// private key sealed, and what `GET` shows, read once at creation.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientCertRecord {
    pub cert_pem: String,
    /// Sealed PEM private key.
    pub key_pem: Vec<u8>,
    pub subject: String,
    pub not_after_ms: i64,
}

impl std::fmt::Debug for ClientCertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertRecord")
            .field("subject", &self.subject)
            .field("not_after_ms", &self.not_after_ms)
            .field("key_pem", &"<sealed>")
            .finish()
    }
}

/// One accepted inbound request, exactly as received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: EventId,
    pub source_id: SourceId,
    pub received_at_ms: i64,
    pub event_type: String,
    pub provider_event_id: Option<String>,
    /// Lower-case names, hop-by-hop headers removed, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The ingest span's trace context when tracing was on (SPEC §15), so
    /// that every delivery attempt joins the trace that stored the event,
    /// after a restart or on another node. `None`: tracing was off (or the
    /// event was made by a test event / an older release).
    pub trace: Option<super::trace::TraceContext>,
}

/// What listing an event needs, kept apart from the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSummary {
    pub event_type: String,
    pub provider_event_id: Option<String>,
    pub received_at_ms: i64,
    pub size_bytes: u64,
}

/// Where a delivery stands (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    /// The public name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }
}

/// How many of an event's deliveries are in each status: what every list
/// of events shows (the API's `deliveries` object, the dashboard's pills).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl DeliveryCounts {
    /// Counts `deliveries` by status.
    pub fn of(deliveries: &[DeliveryRecord]) -> DeliveryCounts {
        let mut c = DeliveryCounts::default();
        for d in deliveries {
            match d.status {
                DeliveryStatus::Pending => c.pending += 1,
                DeliveryStatus::Succeeded => c.succeeded += 1,
                DeliveryStatus::Failed => c.failed += 1,
                DeliveryStatus::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    /// Every delivery counted.
    pub fn total(&self) -> u32 {
        self.pending + self.succeeded + self.failed + self.cancelled
    }
}

/// One (event, destination) pair to deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub source_id: SourceId,
    pub destination_id: DestinationId,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, while pending.
    pub next_attempt_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One HTTP try of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based.
    pub number: u32,
    pub started_at_ms: i64,
    pub duration_ms: u64,
    /// The HTTP status, when a response arrived.
    pub status_code: Option<u16>,
    /// Why it failed; `None` when it succeeded.
    #[serde(with = "error_kind_text")]
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    /// First 1 KiB of the response body.
    pub response_snippet: Vec<u8>,
}

/// Why a delivery attempt failed (SPEC §9's `error_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No complete response within the timeout.
    Timeout,
    /// The connection could not be made (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The destination resolved to an address Krafter refuses (SSRF).
    SsrfRefused,
    /// The HTTP exchange broke after connecting.
    Http,
    /// A response arrived, but not a 2xx.
    HttpStatus,
    /// The stored URL could not be parsed as a request target.
    InvalidUrl,
    /// The request could not be built (e.g. a header value).
    InvalidRequest,
    /// The destination's credentials could not be had (OAuth2 token
    /// endpoint failure, a secret that does not open).
    Auth,
}

impl ErrorKind {
    /// Every kind, for round-trip tests.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::SsrfRefused,
        ErrorKind::Http,
        ErrorKind::HttpStatus,
        ErrorKind::InvalidUrl,
        ErrorKind::InvalidRequest,
        ErrorKind::Auth,
    ];

    /// The public name, also what is stored (so records written before this
    /// type existed, which stored the name, read unchanged).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::SsrfRefused => "ssrf_refused",
            ErrorKind::Http => "http",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Auth => "auth",
        }
    }

    /// The kind a public name stands for.
    pub fn parse(text: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Stores an [`ErrorKind`] as its public name.
mod error_kind_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ErrorKind;

    pub fn serialize<S: Serializer>(kind: &Option<ErrorKind>, s: S) -> Result<S::Ok, S::Error> {
        match kind {
            Some(kind) => s.serialize_some(kind.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ErrorKind>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            ErrorKind::parse(&t)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown error kind `{t}`")))
        })
        .transpose()
    }
}

/// Where a bulk replay job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayState {
    /// Queuing deliveries chunk by chunk (resumed after a restart).
    Running,
    /// Every event up to the job's bound was processed.
    Completed,
    /// Its source was deleted before it finished.
    Cancelled,
}

impl ReplayState {
    /// The public name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Running => "running",
            ReplayState::Completed => "completed",
            ReplayState::Cancelled => "cancelled",
        }
    }
}

/// A bulk replay job (SPEC §10): the request, the bound fixed when it was
/// accepted, and how far it got. Its cursor and counters advance in the
/// same write transaction as the deliveries of each chunk, so a crash
/// neither repeats nor skips a chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayRecord {
    pub id: ReplayId,
    pub source_id: SourceId,
    /// `received_at` bounds in Unix ms, both exclusive; `before_ms` is the
    /// requested `before`, or the time the job was accepted.
    pub after_ms: i64,
    pub before_ms: i64,
    /// Exclusive upper event id: events stored after the request was
    /// accepted are not part of the job.
    pub upper_id: u128,
    /// Exact type or `*` pattern.
    pub type_pattern: Option<String>,
    /// `status: failed`: only where a delivery failed and is not fixed.
    pub only_failed: bool,
    /// `destination_ids` as requested (after validation), if any.
    pub destination_ids: Option<Vec<DestinationId>>,
    /// The destinations the job may queue to, fixed at acceptance: the
    /// named ones, else those enabled then. Each is re-checked (still
    /// there, still enabled) when its chunk is queued.
    pub candidates: Vec<DestinationId>,
    /// The last event id processed (0 before the first chunk).
    pub cursor: u128,
    /// What the 202 promised: events with at least one delivery, and
    /// deliveries, counted when the job was accepted.
    pub events_total: u64,
    pub deliveries_total: u64,
    /// Events that got at least one delivery so far, and deliveries queued.
    pub events_done: u64,
    pub deliveries_queued: u64,
    pub state: ReplayState,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A dashboard session, stored under the SHA-256 of its id (the id itself
/// is only in the user's cookie).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The API key the user signed in with.
    pub key_id: ApiKeyId,
    /// Per-session token every state-changing form must echo back.
    pub csrf: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What releases before `ErrorKind` stored: the name as text.
    #[derive(Serialize)]
    struct OldAttempt {
        number: u32,
        error_kind: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    struct NewAttempt {
        number: u32,
        #[serde(with = "error_kind_text")]
        error_kind: Option<ErrorKind>,
    }

    #[test]
    fn error_kinds_read_what_older_releases_wrote() {
        for kind in ErrorKind::ALL.map(Some).into_iter().chain([None]) {
            let old = postcard::to_stdvec(&OldAttempt {
                number: 3,
                error_kind: kind.map(|k| k.as_str().to_string()),
            })
            .unwrap();
            let new = postcard::to_stdvec(&NewAttempt {
                number: 3,
                error_kind: kind,
            })
            .unwrap();
            assert_eq!(old, new, "{kind:?}");
            let back: NewAttempt = postcard::from_bytes(&old).unwrap();
            assert_eq!(back.error_kind, kind);
        }
        let unknown = postcard::to_stdvec(&OldAttempt {
            number: 1,
            error_kind: Some("gremlins".into()),
        })
        .unwrap();
        assert!(postcard::from_bytes::<NewAttempt>(&unknown).is_err());
    }

    #[test]
    fn scopes_include_lower_ones() {
        assert!(Scope::Admin.grants(Scope::Read));
        assert!(Scope::Write.grants(Scope::Read));
        assert!(!Scope::Write.grants(Scope::Admin));
        assert!(!Scope::Read.grants(Scope::Write));
    }

    #[test]
    fn deliveries_are_counted_by_status() {
        let delivery = |status| DeliveryRecord {
            id: DeliveryId::from_u128(1),
            event_id: EventId::from_u128(2),
            source_id: SourceId::from_u128(3),
            destination_id: DestinationId::from_u128(4),
            status,
            attempts: 0,
            next_attempt_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let list = [
            delivery(DeliveryStatus::Failed),
            delivery(DeliveryStatus::Succeeded),
            delivery(DeliveryStatus::Failed),
            delivery(DeliveryStatus::Cancelled),
        ];
        let c = DeliveryCounts::of(&list);
        assert_eq!(
            (c.pending, c.succeeded, c.failed, c.cancelled, c.total()),
            (0, 1, 2, 1, 4)
        );
        assert_eq!(DeliveryCounts::of(&[]).total(), 0);
    }
}
