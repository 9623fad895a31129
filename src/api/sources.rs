//! `/api/v1/webhooks/sources` (SPEC §5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{encode_cursor, ApiJson, ApiPath, ApiQuery, Data, List, ListParams};
use super::AppState;
use crate::model::ids::SourceId;
use crate::model::provider::{GenericHmacConfig, ProviderKind};
use crate::model::records::SourceRecord;
use crate::model::time::format_ms;
use crate::ops::sources::{NewSource, SourceEdit};

/// Body of `POST /api/v1/webhooks/sources`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    /// 1 to 200 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    pub provider: ProviderKind,
    /// Required for every provider except `none`; never returned. At most
    /// 1024 characters.
    #[schema(max_length = 1024)]
    pub signing_secret: Option<String>,
    /// 1 to 3650; default 30.
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, deserialize_with = "super::extract::optional_u32")]
    pub retention_days: Option<u32>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Required for `generic_hmac`, refused for other providers.
    pub provider_config: Option<GenericHmacConfig>,
}

/// Body of `PATCH /api/v1/webhooks/sources/{id}`; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSource {
    /// 1 to 200 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// The previous secret keeps verifying for 24 hours. Checked as on
    /// creation for the source's provider (non-empty unless `none`).
    #[schema(max_length = 1024)]
    pub signing_secret: Option<String>,
    #[schema(minimum = 1, maximum = 3650)]
    #[serde(default, deserialize_with = "super::extract::optional_u32")]
    pub retention_days: Option<u32>,
    pub provider_config: Option<GenericHmacConfig>,
}

/// A source as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceView {
    #[schema(pattern = "^src_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: String,
    /// `wh_` + 8 random base62 characters.
    #[schema(pattern = "^wh_[0-9A-Za-z]{8}$")]
    pub slug: String,
    /// Where the provider should POST: `<public_url>/in/<slug>`.
    #[schema(format = "uri")]
    pub url: String,
    pub name: String,
    pub provider: ProviderKind,
    pub enabled: bool,
    #[schema(minimum = 1, maximum = 3650)]
    pub retention_days: u32,
    pub destinations_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<GenericHmacConfig>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

fn view(state: &AppState, source: &SourceRecord, destinations_count: u64) -> SourceView {
    SourceView {
        id: source.id.to_string(),
        slug: source.slug.clone(),
        url: format!("{}/in/{}", state.public_url, source.slug),
        name: source.name.clone(),
        provider: source.provider,
        enabled: source.enabled,
        retention_days: source.retention_days,
        destinations_count,
        provider_config: source.provider_config.clone(),
        created_at: format_ms(source.created_at_ms),
        updated_at: format_ms(source.updated_at_ms),
    }
}

/// Parses a public source id; anything else is a 404.
pub fn source_id(text: &str) -> Result<SourceId, ApiError> {
    SourceId::parse(text).ok_or_else(|| ApiError::not_found("no such source"))
}

/// Creates a source and its ingest URL.
#[utoipa::path(post, path = "/api/v1/webhooks/sources", tag = "sources",
    request_body = CreateSource,
    responses((status = 201, body = Data<SourceView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSource>,
) -> Result<(StatusCode, Json<Data<SourceView>>), ApiError> {
    let new = NewSource {
        name: body.name,
        provider: body.provider,
        signing_secret: body.signing_secret,
        retention_days: body.retention_days,
        enabled: body.enabled,
        provider_config: body.provider_config,
    };
    let created = state.ops.create_source(&caller, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: view(&state, &created, 0),
        }),
    ))
}

/// Lists sources, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/sources", tag = "sources",
    params(ListParams),
    responses((status = 200, body = List<SourceView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<List<SourceView>>, ApiError> {
    let (limit, cursor) = (params.limit()?, params.cursor()?);
    let page = state.ops.list_sources(&caller, cursor, limit).await?;
    Ok(Json(List {
        data: page
            .items
            .iter()
            .map(|s| view(&state, &s.source, s.destinations))
            .collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// One source.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "source id (`src_...`)")),
    responses((status = 200, body = Data<SourceView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Data<SourceView>>, ApiError> {
    let found = state.ops.get_source(&caller, source_id(&id)?).await?;
    Ok(Json(Data {
        data: view(&state, &found.source, found.destinations),
    }))
}

/// Changes a source's name, enabled flag, retention, secret or generic
/// HMAC settings.
#[utoipa::path(patch, path = "/api/v1/webhooks/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "source id (`src_...`)")),
    request_body = UpdateSource,
    responses((status = 200, body = Data<SourceView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateSource>,
) -> Result<Json<Data<SourceView>>, ApiError> {
    let edit = SourceEdit {
        name: body.name,
        enabled: body.enabled,
        signing_secret: body.signing_secret,
        retention_days: body.retention_days,
        provider_config: body.provider_config,
    };
    let updated = state
        .ops
        .update_source(&caller, source_id(&id)?, edit)
        .await?;
    Ok(Json(Data {
        data: view(&state, &updated.source, updated.destinations),
    }))
}

/// Deletes a source with its destinations, events and pending deliveries.
#[utoipa::path(delete, path = "/api/v1/webhooks/sources/{id}", tag = "sources",
    params(("id" = String, Path, description = "source id (`src_...`)")),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.ops.delete_source(&caller, source_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
