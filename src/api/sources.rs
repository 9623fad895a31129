//! `/api/v1/webhooks/sources` (SPEC §5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope, Validation};
use super::extract::{encode_cursor, ApiJson, ApiPath, ApiQuery, Data, List, ListParams};
use super::AppState;
use crate::ingest::providers::{self, GenericHmacConfig, ProviderKind};
use crate::model::ids::{format_id, new_id, parse_id, IdKind};
use crate::model::records::{RetiredSecret, Scope, SourceRecord};
use crate::model::time::{format_ms, now_ms};
use crate::store::{destinations, sources, StoreError};

/// How long a replaced secret keeps verifying, so a provider's secret roll
/// loses nothing (SPEC §5).
pub const SECRET_OVERLAP_MS: i64 = 24 * 3600 * 1000;
const DEFAULT_RETENTION_DAYS: u32 = 30;

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
        id: format_id(IdKind::Source, source.id),
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
pub fn source_id(text: &str) -> Result<u128, ApiError> {
    parse_id(IdKind::Source, text).ok_or_else(|| ApiError::not_found("no such source"))
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("no such source"),
        other => other.into(),
    }
}

fn new_slug() -> String {
    format!(
        "wh_{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 8)
    )
}

fn check_name(v: &mut Validation, name: &str) {
    let len = name.chars().count();
    v.check(
        (1..=200).contains(&len) && !name.trim().is_empty(),
        "name",
        "must be 1 to 200 characters",
    );
}

fn check_retention(v: &mut Validation, days: u32) {
    v.check(
        (1..=3650).contains(&days),
        "retention_days",
        "must be between 1 and 3650",
    );
}

fn check_secret(v: &mut Validation, provider: ProviderKind, secret: &str) {
    if secret.chars().count() > 1024 {
        v.fail("signing_secret", "must be at most 1024 characters");
    } else if let Err(message) = providers::get(provider).validate_secret(secret.as_bytes()) {
        v.fail(
            "signing_secret",
            message.trim_start_matches("signing_secret "),
        );
    }
}

fn check_provider_config(
    v: &mut Validation,
    provider: ProviderKind,
    config: Option<&GenericHmacConfig>,
) {
    if let Err(message) = providers::get(provider).validate_config(config) {
        v.fail("provider_config", message);
    }
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
    caller.require(Scope::Write)?;
    let mut v = Validation::default();
    check_name(&mut v, &body.name);
    let retention_days = body.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    check_retention(&mut v, retention_days);
    match (
        &body.signing_secret,
        providers::get(body.provider).verifies(),
    ) {
        (Some(secret), _) => check_secret(&mut v, body.provider, secret),
        (None, true) => v.fail("signing_secret", "is required for this provider"),
        (None, false) => {}
    }
    check_provider_config(&mut v, body.provider, body.provider_config.as_ref());
    v.finish()?;

    let now = now_ms();
    let mut source = SourceRecord {
        id: new_id(),
        slug: new_slug(),
        name: body.name.trim().to_string(),
        provider: body.provider,
        provider_config: body.provider_config,
        signing_secret: body.signing_secret.map(|s| state.store.seal(s.as_bytes())),
        previous_secret: None,
        enabled: body.enabled.unwrap_or(true),
        retention_days,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let created = state
        .store
        .write(move |txn| {
            // 62^8 slugs make a clash rare; pick again rather than fail.
            for _ in 0..8 {
                match sources::insert(txn, &source) {
                    Err(StoreError::Conflict(_)) => source.slug = new_slug(),
                    other => return other.map(|()| source),
                }
            }
            Err(StoreError::Conflict("could not pick a free slug".into()))
        })
        .await?;
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
    caller.require(Scope::Read)?;
    let (limit, cursor) = (params.limit()?, params.cursor()?);
    let (page, counts) = state.store.read(|txn| {
        let page = sources::list(txn, cursor, limit)?;
        let counts = page
            .items
            .iter()
            .map(|s| destinations::count_of_source(txn, s.id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((page, counts))
    })?;
    Ok(Json(List {
        data: page
            .items
            .iter()
            .zip(counts)
            .map(|(s, n)| view(&state, s, n))
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
    caller.require(Scope::Read)?;
    let id = source_id(&id)?;
    let (source, count) = state
        .store
        .read(|txn| {
            Ok((
                sources::get(txn, id)?,
                destinations::count_of_source(txn, id)?,
            ))
        })
        .map_err(not_found)?;
    Ok(Json(Data {
        data: view(&state, &source, count),
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
    caller.require(Scope::Write)?;
    let id = source_id(&id)?;
    // The provider decides how secrets and settings are checked.
    let current = state
        .store
        .read(|txn| sources::get(txn, id))
        .map_err(not_found)?;
    let mut v = Validation::default();
    if let Some(name) = &body.name {
        check_name(&mut v, name);
    }
    if let Some(days) = body.retention_days {
        check_retention(&mut v, days);
    }
    if let Some(secret) = &body.signing_secret {
        check_secret(&mut v, current.provider, secret);
    }
    if body.provider_config.is_some() {
        check_provider_config(&mut v, current.provider, body.provider_config.as_ref());
    }
    v.finish()?;

    let sealed = body
        .signing_secret
        .as_ref()
        .map(|s| state.store.seal(s.as_bytes()));
    let updated = state
        .store
        .write(move |txn| {
            let source = sources::update(txn, id, |s| {
                let now = now_ms();
                if let Some(name) = body.name {
                    s.name = name.trim().to_string();
                }
                if let Some(enabled) = body.enabled {
                    s.enabled = enabled;
                }
                if let Some(days) = body.retention_days {
                    s.retention_days = days;
                }
                if let Some(config) = body.provider_config {
                    s.provider_config = Some(config);
                }
                if let Some(sealed) = sealed {
                    s.previous_secret = s.signing_secret.take().map(|old| RetiredSecret {
                        sealed: old,
                        until_ms: now + SECRET_OVERLAP_MS,
                    });
                    s.signing_secret = Some(sealed);
                }
                s.updated_at_ms = now;
                Ok(())
            })?;
            Ok(source)
        })
        .await
        .map_err(not_found)?;
    let count = state
        .store
        .read(|txn| destinations::count_of_source(txn, id))?;
    Ok(Json(Data {
        data: view(&state, &updated, count),
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
    caller.require(Scope::Write)?;
    let id = source_id(&id)?;
    state
        .store
        .write(move |txn| sources::delete(txn, id))
        .await
        .map_err(not_found)?;
    // The retention task purges its events now, in small chunks.
    state.retention.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
