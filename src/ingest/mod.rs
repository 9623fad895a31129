//! Inbound webhooks (SPEC §7–§8): what happens between a provider's request
//! being read and its answer — find the source, answer handshakes, verify
//! the signature against every secret the source accepts, name the event,
//! store it with its fan-out, wake the lanes. The HTTP half (`POST
//! /in/{slug}`: body limits, status codes, the answer's shape) is
//! `crate::api::ingest`.

pub mod providers;
mod sources;
mod tokens;

use crate::model::ids::EventId;
use std::sync::Arc;

use http::{header, HeaderMap};

use crate::delivery::engine::Engine;
use crate::metrics::Metrics;
use crate::model::records::{EventRecord, SourceRecord};
use crate::model::time::now_ms;
use crate::store::{IngestOutcome, Store, StoreError};
use crate::telemetry::IngestSpan;
use providers::{HandshakeReply, Inbound, VerifyError};
pub use sources::Source;
use sources::SourceCache;
use tokens::{SeenTokens, TokenUse};

/// Longest slug looked up; anything longer is an unknown URL.
const MAX_SLUG_LEN: usize = 64;

/// Takes verified webhooks in; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    store: Store,
    engine: Engine,
    metrics: Arc<Metrics>,
    /// `server.public_url` without a trailing slash.
    public_url: Arc<str>,
    /// Single-use signature tokens seen lately (Mailgun), per process.
    tokens: Arc<SeenTokens>,
    /// Enabled sources by slug, with their secrets opened.
    sources: Arc<SourceCache>,
}

/// What became of an accepted request.
#[derive(Debug)]
pub enum Received {
    /// Stored durably with its deliveries.
    Stored { event_id: EventId },
    /// The provider sent this event before; nothing new was stored.
    Duplicate { original: EventId },
    /// A handshake the provider expects answered (nothing stored).
    Handshake(HandshakeReply),
}

/// Why a request was not accepted. Messages are safe to return: they never
/// hold a secret or a signature.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No enabled source has this slug (or it was deleted meanwhile).
    #[error("no such ingest URL")]
    NotFound,
    /// No accepted secret verifies the request.
    #[error("signature verification failed: {0}")]
    InvalidSignature(VerifyError),
    /// Storage cannot take it now; the provider should retry.
    #[error("not accepted, retry later: {0}")]
    Unavailable(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => IngestError::NotFound,
            StoreError::Unavailable(why) => IngestError::Unavailable(why),
            other => IngestError::Store(other),
        }
    }
}

impl Ingest {
    /// Ingest over `store`, waking `engine`'s lanes after each commit.
    pub fn new(
        store: Store,
        engine: Engine,
        metrics: Arc<Metrics>,
        public_url: Arc<str>,
    ) -> Ingest {
        Ingest {
            store,
            engine,
            metrics,
            public_url,
            tokens: Arc::default(),
            sources: Arc::default(),
        }
    }

    /// The enabled source an ingest slug names.
    pub async fn source(&self, slug: &str) -> Result<Arc<Source>, IngestError> {
        if slug.len() > MAX_SLUG_LEN {
            return Err(IngestError::NotFound);
        }
        Ok(self.sources.get(&self.store, slug).await?)
    }

    /// The URL the provider called, as the providers that sign it (Square,
    /// Twilio) compute it: the configured public URL + `/in/<slug>` +
    /// `?<query>` exactly as received — never from `Host` or
    /// `X-Forwarded-*`, which any caller controls. Empty for providers that
    /// do not sign it.
    pub fn signed_url(&self, source: &SourceRecord, query: Option<&str>) -> String {
        if !providers::get(source.provider).signs_url() {
            return String::new();
        }
        let public_url = &self.public_url;
        let slug = &source.slug;
        match query {
            Some(query) => format!("{public_url}/in/{slug}?{query}"),
            None => format!("{public_url}/in/{slug}"),
        }
    }

    /// Handles one request to `source` whose body has been read whole, in
    /// SPEC §7's order: a handshake due before verification; verification;
    /// a handshake due after it; then the event is stored (or found a
    /// duplicate) and the lanes of its deliveries are woken.
    pub async fn accept(
        &self,
        source: &Source,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
        span: Option<&mut IngestSpan>,
    ) -> Result<Received, IngestError> {
        let provider = providers::get(source.provider);
        let now = now_ms();
        let inbound = Inbound {
            headers,
            body,
            now_unix: now.div_euclid(1000),
            url,
        };
        let config = source.provider_config.as_ref();
        if let Some(reply) = provider.pre_verification_handshake(&inbound) {
            return Ok(Received::Handshake(reply));
        }
        let secrets = source.secrets(&self.store, now)?;
        let secret_refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        provider
            .verify(config, &inbound, &secret_refs)
            .map_err(IngestError::InvalidSignature)?;
        if !provider.verifies() {
            tracing::warn!(source = %source.id.to_string(), "accepting an unverified webhook (provider `none`)");
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        if let Some(reply) =
            provider.post_verification_handshake(&inbound, json.as_ref(), &secret_refs)
        {
            return Ok(Received::Handshake(reply));
        }
        let provider_event_id = provider.event_id(config, &inbound, json.as_ref());
        if let Some(token) = provider.single_use_token(json.as_ref()) {
            self.use_token(
                source,
                &token,
                provider_event_id.as_deref(),
                inbound.now_unix,
            )?;
        }
        // `received_at` is the id's own millisecond, so time filters on the
        // (source, id) index are exact key bounds.
        let id = EventId::new();
        let event_type = provider.event_type(config, &inbound, json.as_ref());
        // Tracing on: the ingest span names the event, and its context is
        // stored with it for the delivery attempts to join.
        let trace = span.and_then(|span| {
            span.record_event(id, &event_type);
            span.context()
        });
        let event = EventRecord {
            id,
            source_id: source.id,
            received_at_ms: id.timestamp_ms() as i64,
            event_type,
            provider_event_id,
            headers: stored_headers(headers),
            body: body.to_vec(),
            trace,
        };
        match self.store.ingest(event).await? {
            IngestOutcome::Stored { deliveries } => {
                self.metrics.events_stored.inc();
                for d in &deliveries {
                    self.engine.wake(d.source_id, d.destination_id);
                }
                Ok(Received::Stored { event_id: id })
            }
            IngestOutcome::Duplicate { original } => Ok(Received::Duplicate { original }),
        }
    }

    /// Accepts a verified single-use token (Mailgun's) once per event: the
    /// same token again with the same provider event id is the provider's
    /// retry (de-duplicated by the store as usual); with another id, or
    /// without one, it is a replayed signature and refused like a bad one.
    fn use_token(
        &self,
        source: &SourceRecord,
        token: &str,
        provider_event_id: Option<&str>,
        now_unix: i64,
    ) -> Result<(), IngestError> {
        let window = providers::SINGLE_USE_TOKEN_WINDOW_SECS;
        match self
            .tokens
            .check(source.id, token, provider_event_id, now_unix, window)
        {
            TokenUse::Fresh | TokenUse::SameEvent => Ok(()),
            TokenUse::Reused => Err(IngestError::InvalidSignature(VerifyError::ReusedToken)),
            TokenUse::Full => Err(IngestError::Unavailable(
                "too many single-use signature tokens to remember right now",
            )),
        }
    }
}

/// The headers stored with an event: hop-by-hop ones and those named in
/// `Connection` dropped (RFC 9110 §7.6.1), values as raw bytes.
fn stored_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| crate::http::headers::is_kept_with_event(name.as_str(), &listed))
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}
