//! `POST /in/{slug}`: verify, de-duplicate, store durably, then answer.
//!
//! The order is SPEC §7's: unknown or disabled slug → 404; body too large →
//! 413 without reading the rest; bad signature → 401 and nothing stored;
//! handshakes answered and not stored; otherwise the event and its
//! deliveries are committed in one group commit before the 200.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::extract::{ApiPath, Data};
use crate::api::AppState;
use crate::ingest::providers::{self, Inbound, Provider};
use crate::metrics::IngestResult;
use crate::model::ids::{format_id, id_timestamp_ms, new_id, IdKind};
use crate::model::records::{EventRecord, SourceRecord};
use crate::model::time::now_ms;
use crate::store::{IngestOutcome, StoreError};

/// Answer to an accepted (or duplicate) event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// `evt_...`; for a duplicate, the id of the event first stored.
    pub event_id: String,
    pub duplicate: bool,
}

/// Receives a provider's webhook.
#[utoipa::path(post, path = "/in/{slug}", tag = "ingest",
    params(("slug" = String, Path, description = "the source's ingest slug (`wh_...`)")),
    request_body(content = Vec<u8>, description = "the provider's payload, stored byte for byte", content_type = "*/*"),
    responses(
        (status = 200, description = "stored durably (or a duplicate, or a handshake answered)", body = Data<Accepted>),
        (status = 400, description = "bad_request: the body could not be read", body = ErrorEnvelope),
        (status = 401, description = "invalid_signature", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)))]
pub async fn receive(
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = match lookup(&state, &slug).await {
        Ok(source) => source,
        Err(e) => {
            state
                .metrics
                .observe_ingest("unknown", IngestResult::NotFound);
            return e.into_response();
        }
    };
    let source_label = format_id(IdKind::Source, source.id);
    let provider = providers::get(source.provider);
    // Only the providers that sign the URL need it built.
    let url = if provider.signs_url() {
        public_ingest_url(&state.public_url, &source.slug, query.as_deref())
    } else {
        String::new()
    };
    let (result, response) = match handle(&state, &source, provider, &url, headers, body).await {
        Ok((result, response)) => (result, response),
        Err((result, error)) => (result, error.into_response()),
    };
    state.metrics.observe_ingest(&source_label, result);
    response
}

async fn lookup(state: &AppState, slug: &str) -> Result<SourceRecord, ApiError> {
    let not_found = || ApiError::not_found("no such ingest URL");
    if slug.len() > 64 {
        return Err(not_found());
    }
    match state.store.source_by_slug(slug).await {
        Ok(source) if source.enabled => Ok(source),
        Ok(_) | Err(StoreError::NotFound) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

type Handled = Result<(IngestResult, Response), (IngestResult, ApiError)>;

/// The URL the provider called, as Square and Twilio sign it: the
/// configured public URL + `/in/<slug>` + `?<query>` exactly as received.
/// Built from configuration only, never from `Host`/`X-Forwarded-*`.
fn public_ingest_url(public_url: &str, slug: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{public_url}/in/{slug}?{query}"),
        None => format!("{public_url}/in/{slug}"),
    }
}

async fn handle(
    state: &AppState,
    source: &SourceRecord,
    provider: &dyn Provider,
    url: &str,
    headers: HeaderMap,
    body: Body,
) -> Handled {
    let limit = state.config.server.max_body_bytes;
    let too_large = |_| (IngestResult::TooLarge, ApiError::payload_too_large(limit));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(()));
    }
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large(()))
        }
        Err(_) => {
            return Err((
                IngestResult::BadRequest,
                ApiError::bad_request("the request body could not be read"),
            ))
        }
    };

    let now = now_ms();
    let inbound = Inbound {
        headers: &headers,
        body: &body,
        now_unix: now.div_euclid(1000),
        url,
    };
    let config = source.provider_config.as_ref();
    if let Some(reply) = provider.pre_verification_handshake(&inbound) {
        return Ok((IngestResult::Handshake, handshake(reply)));
    }
    let secrets =
        open_secrets(state, source, now).map_err(|e| (IngestResult::Error, ApiError::from(e)))?;
    let secret_refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
    if let Err(e) = provider.verify(config, &inbound, &secret_refs) {
        return Err((
            IngestResult::InvalidSignature,
            ApiError::invalid_signature(format!("signature verification failed: {e}")),
        ));
    }
    if !provider.verifies() {
        tracing::warn!(source = %format_id(IdKind::Source, source.id), "accepting an unverified webhook (provider `none`)");
    }
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if let Some(reply) = provider.post_verification_handshake(&inbound, json.as_ref()) {
        return Ok((IngestResult::Handshake, handshake(reply)));
    }
    // `received_at` is the id's own millisecond, so time filters on the
    // (source, id) index are exact key bounds.
    let id = new_id();
    let event = EventRecord {
        id,
        source_id: source.id,
        received_at_ms: id_timestamp_ms(id) as i64,
        event_type: provider.event_type(config, &inbound, json.as_ref()),
        provider_event_id: provider.event_id(config, &inbound, json.as_ref()),
        headers: stored_headers(&headers),
        body: body.to_vec(),
    };
    let event_id = event.id;
    let outcome = state.store.ingest(event).await;
    match outcome {
        Ok(IngestOutcome::Stored { deliveries }) => {
            state.metrics.events_stored.inc();
            for d in &deliveries {
                state.engine.wake(d.source_id, d.destination_id);
            }
            Ok((IngestResult::Accepted, accepted(event_id, false)))
        }
        Ok(IngestOutcome::Duplicate { original }) => {
            Ok((IngestResult::Duplicate, accepted(original, true)))
        }
        Err(StoreError::NotFound) => Err((
            IngestResult::NotFound,
            ApiError::not_found("no such ingest URL"),
        )),
        Err(StoreError::Unavailable(why)) => Err((
            IngestResult::Unavailable,
            ApiError::unavailable(format!("not accepted, retry later: {why}")),
        )),
        Err(e) => Err((IngestResult::Error, e.into())),
    }
}

/// The secrets a source accepts now: current, then the previous one while
/// its 24 h overlap lasts.
fn open_secrets(
    state: &AppState,
    source: &SourceRecord,
    now: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::with_capacity(2);
    if let Some(sealed) = &source.signing_secret {
        out.push(state.store.open_secret(sealed)?);
    }
    if let Some(previous) = &source.previous_secret {
        if previous.until_ms > now {
            out.push(state.store.open_secret(&previous.sealed)?);
        }
    }
    Ok(out)
}

fn stored_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
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

fn handshake(reply: providers::HandshakeReply) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

fn accepted(event_id: u128, duplicate: bool) -> Response {
    Json(Data {
        data: Accepted {
            event_id: format_id(IdKind::Event, event_id),
            duplicate,
        },
    })
    .into_response()
}
