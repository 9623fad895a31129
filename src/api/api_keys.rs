//! `/api/v1/api-keys` (admin scope).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{encode_cursor, ApiJson, ApiPath, ApiQuery, Data, List, ListParams};
use super::AppState;
use crate::model::ids::ApiKeyId;
use crate::model::records::ApiKeyRecord;
use crate::model::time::format_ms;

/// Body of `POST /api/v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1 to 200 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// One or more of `webhooks:read`, `webhooks:write`, `admin`.
    #[schema(value_type = Vec<super::openapi::shapes::ScopeName>, min_items = 1)]
    pub scopes: Vec<String>,
}

/// An API key as listed (the key itself is never shown again).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    #[schema(pattern = "^key_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: String,
    pub name: String,
    #[schema(value_type = Vec<super::openapi::shapes::ScopeName>)]
    pub scopes: Vec<String>,
    /// First 8 characters of the key.
    #[schema(min_length = 8, max_length = 8)]
    pub prefix: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The key; present only in the response that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, pattern = "^krf_[0-9A-Za-z]{32,}$")]
    pub key: Option<String>,
}

impl ApiKeyView {
    fn from_record(record: &ApiKeyRecord, key: Option<String>) -> Self {
        ApiKeyView {
            id: record.id.to_string(),
            name: record.name.clone(),
            scopes: record
                .scopes
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            prefix: record.prefix.clone(),
            created_at: format_ms(record.created_at_ms),
            key,
        }
    }
}

/// Creates an API key; the key is in this response and nowhere else, ever.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKey,
    responses((status = 201, body = Data<ApiKeyView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<Data<ApiKeyView>>), ApiError> {
    let new = state
        .ops
        .create_api_key(&caller, &body.name, &body.scopes)
        .await?;
    let view = ApiKeyView::from_record(&new.record, Some(new.key));
    Ok((StatusCode::CREATED, Json(Data { data: view })))
}

/// Lists API keys, newest first.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    params(ListParams),
    responses((status = 200, body = List<ApiKeyView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<List<ApiKeyView>>, ApiError> {
    let (limit, cursor) = (params.limit()?, params.cursor()?);
    let page = state.ops.list_api_keys(&caller, cursor, limit).await?;
    Ok(Json(List {
        data: page
            .items
            .iter()
            .map(|r| ApiKeyView::from_record(r, None))
            .collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// Revokes an API key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id (`key_...`)")),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = ApiKeyId::parse(&id).ok_or_else(|| ApiError::not_found("no such API key"))?;
    state.ops.revoke_api_key(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
