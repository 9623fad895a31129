//! `/api/v1/webhooks/sources/{source_id}/destinations` (SPEC §6).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{encode_cursor, ApiJson, ApiPath, ApiQuery, Data, List, ListParams};
use super::sources::source_id;
use super::AppState;
use crate::model::ids::DestinationId;
use crate::model::records::DestinationRecord;
use crate::model::time::format_ms;
use crate::ops::destinations::{DestinationEdit, NewDestination};

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
        id: d.id.to_string(),
        source_id: d.source_id.to_string(),
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

fn destination_id(text: &str) -> Result<DestinationId, ApiError> {
    DestinationId::parse(text).ok_or_else(|| ApiError::not_found("no such destination"))
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
    let new = NewDestination {
        url: body.url,
        event_filter: body.event_filter,
        enabled: body.enabled,
        rate_limit: body.rate_limit,
    };
    let created = state
        .ops
        .create_destination(&caller, source_id(&source)?, new)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: view(&created.destination, Some(created.secret)),
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
    let source_id = source_id(&source)?;
    let (limit, cursor) = (params.limit()?, params.cursor()?);
    let page = state
        .ops
        .list_destinations(&caller, source_id, cursor, limit)
        .await?;
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
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    let d = state.ops.get_destination(&caller, source_id, id).await?;
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
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    let edit = DestinationEdit {
        url: body.url,
        event_filter: body.event_filter,
        enabled: body.enabled,
        rate_limit: body.rate_limit,
    };
    let updated = state
        .ops
        .update_destination(&caller, source_id, id, edit)
        .await?;
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
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    state.ops.delete_destination(&caller, source_id, id).await?;
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
    let (source_id, id) = (source_id(&source)?, destination_id(&id)?);
    let rotated = state
        .ops
        .rotate_destination_secret(&caller, source_id, id)
        .await?;
    Ok(Json(Data {
        data: view(&rotated.destination, Some(rotated.secret)),
    }))
}
