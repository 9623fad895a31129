//! `POST /in/{slug}`: the HTTP half of ingest (`crate::ingest` verifies,
//! de-duplicates and stores durably; this reads the body and answers).
//!
//! The order is SPEC §7's: unknown or disabled slug → 404; body too large →
//! 413 without reading the rest; bad signature → 401 and nothing stored;
//! handshakes answered and not stored; otherwise the event and its
//! deliveries are committed in one group commit before the 200.

use crate::model::ids::EventId;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::extract::{ApiPath, Data};
use super::AppState;
use crate::ingest::providers::HandshakeReply;
use crate::ingest::{IngestError, Received, Source};
use crate::metrics::IngestResult;
use crate::telemetry::IngestSpan;

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
        (status = 204, description = "a handshake that expects no body (Discord's webhook-events PING)"),
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
    let started = state
        .telemetry
        .as_ref()
        .map(|_| std::time::SystemTime::now());
    let source = match state.ingest.source(&slug).await {
        Ok(source) => source,
        Err(e) => {
            // No source to name: counted under `unknown`.
            let (result, error) = refused(e);
            state.metrics.observe_ingest("unknown", result);
            return error.into_response();
        }
    };
    // Tracing on: the span starts with the request (the source lookup
    // included) but only once a source is found, so unknown URLs make no
    // spans; off, nothing is built.
    let mut span = match (&state.telemetry, started) {
        (Some(telemetry), Some(at)) => Some(telemetry.ingest_span(at, source.id, &headers)),
        _ => None,
    };
    let url = state.ingest.signed_url(&source, query.as_deref());
    let (result, response) = match handle(&state, &source, &url, headers, body, span.as_mut()).await
    {
        Ok((result, response)) => (result, response),
        Err((result, error)) => (result, error.into_response()),
    };
    state.metrics.observe_ingest(&source.id.to_string(), result);
    if let Some(span) = span {
        span.finish(response.status().as_u16());
    }
    response
}

type Handled = Result<(IngestResult, Response), (IngestResult, ApiError)>;

/// Reads the body under `server.max_body_bytes` (413 without reading the
/// rest), then hands the request to ingest.
async fn handle(
    state: &AppState,
    source: &Source,
    url: &str,
    headers: HeaderMap,
    body: Body,
    mut span: Option<&mut IngestSpan>,
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
    match state
        .ingest
        .accept(source, url, &headers, &body, span.as_deref_mut())
        .await
    {
        Ok(Received::Stored { event_id }) => {
            state.stats.event_in();
            // After the commit: this node's live streams look again.
            state.ops.stream_hub().committed();
            Ok((IngestResult::Accepted, accepted(event_id, false)))
        }
        Ok(Received::Duplicate { original }) => {
            if let Some(span) = span {
                span.record_duplicate(original);
            }
            Ok((IngestResult::Duplicate, accepted(original, true)))
        }
        Ok(Received::Handshake(reply)) => Ok((IngestResult::Handshake, handshake(reply))),
        Err(e) => {
            if matches!(e, IngestError::InvalidSignature(_)) {
                state.alerts.invalid_signature(source.id).await;
            }
            Err(refused(e))
        }
    }
}

/// The answer to a refused request, and how metrics count it.
fn refused(e: IngestError) -> (IngestResult, ApiError) {
    match e {
        IngestError::NotFound => (IngestResult::NotFound, ApiError::not_found(e.to_string())),
        IngestError::InvalidSignature(_) => (
            IngestResult::InvalidSignature,
            ApiError::invalid_signature(e.to_string()),
        ),
        IngestError::Unavailable(_) => (
            IngestResult::Unavailable,
            ApiError::unavailable(e.to_string()),
        ),
        IngestError::Store(e) => (IngestResult::Error, e.into()),
    }
}

fn handshake(reply: HandshakeReply) -> Response {
    if reply.status == StatusCode::NO_CONTENT {
        return StatusCode::NO_CONTENT.into_response();
    }
    (
        reply.status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

fn accepted(event_id: EventId, duplicate: bool) -> Response {
    Json(Data {
        data: Accepted {
            event_id: event_id.to_string(),
            duplicate,
        },
    })
    .into_response()
}
