//! `/api/v1/webhooks/sources/{source_id}/destinations` (SPEC §6).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope, Validation};
use super::extract::{encode_cursor, ApiJson, ApiPath, ApiQuery, Data, List, ListParams};
use super::sources::{source_id, SECRET_OVERLAP_MS};
use super::AppState;
use crate::delivery::ssrf;
use crate::model::ids::{format_id, new_id, parse_id, IdKind};
use crate::model::records::{DestinationRecord, Scope};
use crate::model::time::{format_ms, now_ms};
use crate::store::{DestinationChange, NewSecret, StoreError};

/// How long creation waits for DNS before accepting an unresolved host.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_URL_LEN: usize = 2048;
const MAX_PATTERNS: usize = 100;
const MAX_PATTERN_LEN: usize = 256;

/// Body of `POST .../destinations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDestination {
    /// Absolute http(s) URL, at most 2048 characters.
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub url: String,
    /// Event types to forward (`invoice.paid`, `invoice.*`, `*`); absent or
    /// empty means every event.
    #[schema(value_type = Option<Vec<super::openapi::shapes::EventPattern>>, max_items = 100)]
    pub event_filter: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Deliveries per second to this destination, 1 to 10000; absent means unlimited.
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "super::extract::optional_u32")]
    pub rate_limit: Option<u32>,
}

/// Body of `PATCH .../destinations/{id}`; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDestination {
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<super::openapi::shapes::EventPattern>>, max_items = 100)]
    pub event_filter: Option<Vec<String>>,
    /// Re-enabling clears `disabled_reason`.
    pub enabled: Option<bool>,
    /// `0` removes the limit.
    #[schema(minimum = 0, maximum = 10000)]
    #[serde(default, deserialize_with = "super::extract::optional_u32")]
    pub rate_limit: Option<u32>,
}

/// A destination as the API shows it. `secret` only on create and rotate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DestinationView {
    #[schema(pattern = "^dst_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: String,
    #[schema(pattern = "^src_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub source_id: String,
    #[schema(format = "uri")]
    pub url: String,
    pub event_filter: Vec<String>,
    pub enabled: bool,
    #[schema(required = true, minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
    /// Why Krafter disabled it, when it did.
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub disabled_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `whsec_` + base64; present only in create and rotate-secret responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, pattern = "^whsec_[A-Za-z0-9+/]{32,}={0,2}$")]
    pub secret: Option<String>,
}

fn view(d: &DestinationRecord, secret: Option<String>) -> DestinationView {
    DestinationView {
        id: format_id(IdKind::Destination, d.id),
        source_id: format_id(IdKind::Source, d.source_id),
        url: d.url.clone(),
        event_filter: d.event_filter.clone(),
        enabled: d.enabled,
        rate_limit: d.rate_limit,
        disabled_reason: d.disabled_reason.clone(),
        disabled_at: d.disabled_at_ms.map(format_ms),
        created_at: format_ms(d.created_at_ms),
        updated_at: format_ms(d.updated_at_ms),
        secret,
    }
}

/// A new destination secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn destination_id(text: &str) -> Result<u128, ApiError> {
    parse_id(IdKind::Destination, text).ok_or_else(|| ApiError::not_found("no such destination"))
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("no such source or destination"),
        other => other.into(),
    }
}

/// Checks a destination URL's shape, then (unless private networks are
/// allowed) where its host resolves. Returns the URL as it will be stored
/// and sent: normalised (percent-encoding, IDNA, default port dropped), so
/// the SSRF check, the API and the delivery client all see the same target.
async fn check_url(state: &AppState, v: &mut Validation, text: &str) -> Option<String> {
    if text.len() > MAX_URL_LEN {
        v.fail("url", format!("must be at most {MAX_URL_LEN} characters"));
        return None;
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            v.fail("url", format!("is not an absolute URL: {e}"));
            return None;
        }
    };
    // The URL standard reads `\` as `/` and drops tabs and newlines, so
    // `http://a.invalid\@127.0.0.1/` means one host to a browser and another
    // to a reader; refuse such text rather than guess.
    if text
        .chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        v.fail(
            "url",
            "must not contain backslashes, spaces or control characters (percent-encode them)",
        );
        return None;
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        v.fail("url", "must be an http or https URL with a host");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        v.fail(
            "url",
            "must not contain credentials (user:password@): they would be shown to every reader and never sent",
        );
        return None;
    }
    if url.fragment().is_some() {
        v.fail(
            "url",
            "must not contain a fragment (#...): it is never sent",
        );
        return None;
    }
    let normalised = url.as_str().to_string();
    if normalised.len() > MAX_URL_LEN || http::Uri::try_from(normalised.as_str()).is_err() {
        v.fail("url", "cannot be sent as an HTTP request target");
        return None;
    }
    if !state.config.delivery.allow_private_networks {
        if let Err(e) =
            ssrf::check_url_host(&url, RESOLVE_TIMEOUT, !state.config.delivery.loopback_only).await
        {
            v.fail(
                "url",
                format!("{e}; private networks are refused unless delivery.allow_private_networks is true"),
            );
        }
    }
    Some(normalised)
}

fn check_filter(v: &mut Validation, filter: &[String]) {
    v.check(
        filter.len() <= MAX_PATTERNS,
        "event_filter",
        format!("at most {MAX_PATTERNS} patterns"),
    );
    for (i, pattern) in filter.iter().enumerate() {
        let ok = !pattern.is_empty()
            && pattern.chars().count() <= MAX_PATTERN_LEN
            && !pattern.chars().any(char::is_control);
        v.check(
            ok,
            &format!("event_filter[{i}]"),
            format!("must be 1 to {MAX_PATTERN_LEN} printable characters"),
        );
    }
}

fn check_rate_limit(v: &mut Validation, limit: Option<u32>, zero_allowed: bool) {
    if let Some(n) = limit {
        let ok = n <= 10_000 && (n > 0 || zero_allowed);
        v.check(
            ok,
            "rate_limit",
            "must be between 1 and 10000 deliveries per second",
        );
    }
}

/// Creates a destination; its signing secret is in this response only.
#[utoipa::path(post, path = "/api/v1/webhooks/sources/{source_id}/destinations", tag = "destinations",
    params(("source_id" = String, Path, description = "source id (`src_...`)")),
    request_body = CreateDestination,
    responses((status = 201, body = Data<DestinationView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(source): ApiPath<String>,
    ApiJson(body): ApiJson<CreateDestination>,
) -> Result<(StatusCode, Json<Data<DestinationView>>), ApiError> {
    caller.require(Scope::Write)?;
    let source_id = source_id(&source)?;
    state.store.source(source_id).await.map_err(not_found)?;
    let filter = body.event_filter.unwrap_or_default();
    let mut v = Validation::default();
    let url = check_url(&state, &mut v, &body.url).await;
    check_filter(&mut v, &filter);
    check_rate_limit(&mut v, body.rate_limit, false);
    v.finish()?;
    let url = url.ok_or_else(|| ApiError::invalid_field("url", "is not valid"))?;

    let secret = new_secret();
    let now = now_ms();
    let record = DestinationRecord {
        id: new_id(),
        source_id,
        url,
        event_filter: filter,
        enabled: body.enabled.unwrap_or(true),
        secret: state.store.seal(secret.as_bytes()),
        previous_secret: None,
        rate_limit: body.rate_limit,
        disabled_reason: None,
        disabled_at_ms: None,
        failing_since_ms: None,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let stored = record.clone();
    let limit = state.config.limits.destinations_per_source;
    state
        .store
        .create_destination(stored, limit)
        .await
        .map_err(|e| match e {
            StoreError::LimitReached(limit) => ApiError::invalid_field(
                "source_id",
                format!("this source already has {limit} destinations, the most limits.destinations_per_source allows"),
            ),
            other => not_found(other),
        })?;
    state.engine.wake(source_id, record.id);
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: view(&record, Some(secret)),
        }),
    ))
}

/// Lists a source's destinations, newest first (no secrets).
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{source_id}/destinations", tag = "destinations",
    params(("source_id" = String, Path, description = "source id (`src_...`)"), ListParams),
    responses((status = 200, body = List<DestinationView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(source): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<List<DestinationView>>, ApiError> {
    caller.require(Scope::Read)?;
    let source_id = source_id(&source)?;
    let (limit, cursor) = (params.limit()?, params.cursor()?);
    let page = state
        .store
        .list_destinations(source_id, cursor, limit)
        .await
        .map_err(not_found)?;
    Ok(Json(List {
        data: page.items.iter().map(|d| view(d, None)).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// One destination (no secret).
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{source_id}/destinations/{id}", tag = "destinations",
    params(("source_id" = String, Path, description = "source id"), ("id" = String, Path, description = "destination id (`dst_...`)")),
    responses((status = 200, body = Data<DestinationView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, id)): ApiPath<(String, String)>,
) -> Result<Json<Data<DestinationView>>, ApiError> {
    caller.require(Scope::Read)?;
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    let d = state
        .store
        .destination(source_id, id)
        .await
        .map_err(not_found)?;
    Ok(Json(Data {
        data: view(&d, None),
    }))
}

/// Changes a destination's URL, filter, enabled flag or rate limit.
#[utoipa::path(patch, path = "/api/v1/webhooks/sources/{source_id}/destinations/{id}", tag = "destinations",
    params(("source_id" = String, Path, description = "source id"), ("id" = String, Path, description = "destination id")),
    request_body = UpdateDestination,
    responses((status = 200, body = Data<DestinationView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateDestination>,
) -> Result<Json<Data<DestinationView>>, ApiError> {
    caller.require(Scope::Write)?;
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    state
        .store
        .destination(source_id, id)
        .await
        .map_err(not_found)?;
    let mut v = Validation::default();
    let mut url = None;
    if let Some(text) = &body.url {
        url = check_url(&state, &mut v, text).await;
    }
    if let Some(filter) = &body.event_filter {
        check_filter(&mut v, filter);
    }
    check_rate_limit(&mut v, body.rate_limit, true);
    v.finish()?;

    let change = DestinationChange {
        url,
        event_filter: body.event_filter,
        rate_limit: body.rate_limit.map(|limit| (limit > 0).then_some(limit)),
        enabled: body.enabled,
        new_secret: None,
        now_ms: now_ms(),
    };
    let updated = state
        .store
        .update_destination(source_id, id, change)
        .await
        .map_err(not_found)?
        .destination;
    if updated.enabled {
        state.engine.wake(source_id, id);
    }
    Ok(Json(Data {
        data: view(&updated, None),
    }))
}

/// Deletes a destination; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/api/v1/webhooks/sources/{source_id}/destinations/{id}", tag = "destinations",
    params(("source_id" = String, Path, description = "source id"), ("id" = String, Path, description = "destination id")),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Write)?;
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    state
        .store
        .delete_destination(source_id, id)
        .await
        .map_err(not_found)?;
    // The lane notices its destination is gone and stops.
    state.engine.wake(source_id, id);
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new signing secret; for 24 hours deliveries carry signatures
/// with both the new and the previous secret.
#[utoipa::path(post, path = "/api/v1/webhooks/sources/{source_id}/destinations/{id}/rotate-secret", tag = "destinations",
    params(("source_id" = String, Path, description = "source id"), ("id" = String, Path, description = "destination id")),
    responses((status = 200, body = Data<DestinationView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, id)): ApiPath<(String, String)>,
) -> Result<Json<Data<DestinationView>>, ApiError> {
    caller.require(Scope::Write)?;
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    let secret = new_secret();
    let sealed = state.store.seal(secret.as_bytes());
    let now = now_ms();
    let change = DestinationChange {
        new_secret: Some(NewSecret {
            sealed,
            previous_until_ms: now + SECRET_OVERLAP_MS,
        }),
        now_ms: now,
        ..DestinationChange::default()
    };
    let updated = state
        .store
        .update_destination(source_id, id, change)
        .await
        .map_err(not_found)?
        .destination;
    Ok(Json(Data {
        data: view(&updated, Some(secret)),
    }))
}
