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
use std::collections::BTreeMap;

use crate::model::records::{AuthRecord, DestinationRecord, Ordering};
use crate::model::time::format_ms;
use crate::ops::destinations::{
    AuthInput, ClientCertInput, DestinationEdit, NewDestination, OptionsInput,
};

/// Reads a field that may be absent (keep), `null` (remove) or a value.
/// Use with `#[serde(default, deserialize_with = "nullable")]`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// How deliveries authenticate to the receiver (SPEC §13). The secret
/// parts (`password`, `token`, `client_secret`) are write-only.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthBody {
    /// HTTP basic authentication.
    Basic {
        #[schema(min_length = 1, max_length = 256)]
        username: String,
        #[schema(max_length = 4096, write_only)]
        password: String,
    },
    /// `authorization: Bearer <token>`.
    Bearer {
        #[schema(min_length = 1, max_length = 4096, write_only)]
        token: String,
    },
    /// An OAuth2 client-credentials grant to `token_url` (form POST with
    /// HTTP basic client auth); the token is cached until 30 s before it
    /// expires and fetched again once on a 401.
    Oauth2ClientCredentials {
        #[schema(format = "uri", max_length = 2048)]
        token_url: String,
        #[schema(min_length = 1, max_length = 256)]
        client_id: String,
        #[schema(min_length = 1, max_length = 4096, write_only)]
        client_secret: String,
        #[schema(min_length = 1, max_length = 1024)]
        scope: Option<String>,
        #[schema(min_length = 1, max_length = 1024)]
        audience: Option<String>,
    },
}

impl std::fmt::Debug for AuthBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthBody(<redacted>)")
    }
}

impl From<AuthBody> for AuthInput {
    fn from(body: AuthBody) -> AuthInput {
        match body {
            AuthBody::Basic { username, password } => AuthInput::Basic { username, password },
            AuthBody::Bearer { token } => AuthInput::Bearer { token },
            AuthBody::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
            } => AuthInput::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
            },
        }
    }
}

/// A client certificate for mutual TLS, PEM; `key_pem` is write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateBody {
    /// The certificate (chain), leaf first.
    #[schema(max_length = 65536)]
    pub cert_pem: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    #[schema(max_length = 16384, write_only)]
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCertificateBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCertificateBody(<redacted>)")
    }
}

/// `ordering` (SPEC §13).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderingName {
    /// Any order (the default).
    None,
    /// One attempt at a time, in event order (`received_at`, then id); a
    /// failing delivery holds the later ones until it succeeds or fails.
    Fifo,
}

impl From<OrderingName> for Ordering {
    fn from(o: OrderingName) -> Ordering {
        match o {
            OrderingName::None => Ordering::None,
            OrderingName::Fifo => Ordering::Fifo,
        }
    }
}

impl From<Ordering> for OrderingName {
    fn from(o: Ordering) -> OrderingName {
        match o {
            Ordering::None => OrderingName::None,
            Ordering::Fifo => OrderingName::Fifo,
        }
    }
}

/// The delivery options of a create or change body.
macro_rules! options_input {
    ($b:expr) => {{
        OptionsInput {
            headers: $b.headers.map(|h| h.map(|h| h.into_iter().collect())),
            auth: $b.auth.map(|a| a.map(AuthInput::from)),
            tls_client_certificate: $b.tls_client_certificate.map(|c| {
                c.map(|c| ClientCertInput {
                    cert_pem: c.cert_pem,
                    key_pem: c.key_pem,
                })
            }),
            body_filter: $b.body_filter,
            ordering: $b.ordering.map(Ordering::from),
            timeout: $b.timeout,
        }
    }};
}

/// `auth` as `GET` shows it: never the secret parts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthView {
    #[serde(rename = "type")]
    #[schema(pattern = "^(basic|bearer|oauth2_client_credentials)$")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// `tls_client_certificate` as `GET` shows it: never the key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientCertificateView {
    pub subject: String,
    #[schema(format = DateTime)]
    pub not_after: String,
}

fn auth_view(auth: &AuthRecord) -> AuthView {
    let mut view = AuthView {
        kind: auth.kind().to_string(),
        username: None,
        token_url: None,
        client_id: None,
        scope: None,
        audience: None,
    };
    match auth {
        AuthRecord::Basic { username, .. } => view.username = Some(username.clone()),
        AuthRecord::Bearer { .. } => {}
        AuthRecord::OAuth2ClientCredentials {
            token_url,
            client_id,
            scope,
            audience,
            ..
        } => {
            view.token_url = Some(token_url.clone());
            view.client_id = Some(client_id.clone());
            view.scope = scope.clone();
            view.audience = audience.clone();
        }
    }
    view
}

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
    /// Extra request headers (at most 20). Hop-by-hop names, `host`,
    /// `content-length`, `content-type`, `user-agent`, `webhook-*` and
    /// `krafter-*` are refused. `null` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<Option<BTreeMap<String, String>>>,
    /// `null` removes the credentials.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<AuthBody>)]
    pub auth: Option<Option<AuthBody>>,
    /// `null` removes the certificate.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ClientCertificateBody>)]
    pub tls_client_certificate: Option<Option<ClientCertificateBody>>,
    /// A JSON object matched against the JSON body (operators `$eq $neq
    /// $gt $gte $lt $lte $in $nin $exist $startsWith $endsWith $contains
    /// $and $or $not`); a body that is not JSON never matches. `null`
    /// removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub body_filter: Option<Option<serde_json::Value>>,
    /// Default `none`.
    pub ordering: Option<OrderingName>,
    /// This destination's attempt timeout, `"1s"` to `"120s"` (default:
    /// `delivery.timeout`). `null` returns to the default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^([1-9]|[1-9][0-9]|1[01][0-9]|120)s$")]
    pub timeout: Option<Option<String>>,
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
    /// Extra request headers (at most 20). Hop-by-hop names, `host`,
    /// `content-length`, `content-type`, `user-agent`, `webhook-*` and
    /// `krafter-*` are refused. `null` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub headers: Option<Option<BTreeMap<String, String>>>,
    /// `null` removes the credentials.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<AuthBody>)]
    pub auth: Option<Option<AuthBody>>,
    /// `null` removes the certificate.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ClientCertificateBody>)]
    pub tls_client_certificate: Option<Option<ClientCertificateBody>>,
    /// A JSON object matched against the JSON body (operators `$eq $neq
    /// $gt $gte $lt $lte $in $nin $exist $startsWith $endsWith $contains
    /// $and $or $not`); a body that is not JSON never matches. `null`
    /// removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub body_filter: Option<Option<serde_json::Value>>,
    /// Default `none`.
    pub ordering: Option<OrderingName>,
    /// This destination's attempt timeout, `"1s"` to `"120s"` (default:
    /// `delivery.timeout`). `null` returns to the default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^([1-9]|[1-9][0-9]|1[01][0-9]|120)s$")]
    pub timeout: Option<Option<String>>,
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
    /// Extra request headers sent with every delivery.
    pub headers: BTreeMap<String, String>,
    #[schema(required = true)]
    pub auth: Option<AuthView>,
    #[schema(required = true)]
    pub tls_client_certificate: Option<ClientCertificateView>,
    #[schema(required = true, value_type = Option<Object>)]
    pub body_filter: Option<serde_json::Value>,
    pub ordering: OrderingName,
    /// This destination's own attempt timeout (`"5s"`), or null for `delivery.timeout`.
    #[schema(required = true)]
    pub timeout: Option<String>,
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
        headers: d.options.headers.iter().cloned().collect(),
        auth: d.options.auth.as_ref().map(auth_view),
        tls_client_certificate: d.options.tls_client_certificate.as_ref().map(|c| {
            ClientCertificateView {
                subject: c.subject.clone(),
                not_after: format_ms(c.not_after_ms),
            }
        }),
        body_filter: d
            .options
            .body_filter
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok()),
        ordering: d.options.ordering.into(),
        timeout: d.options.timeout_ms.map(|ms| format!("{}s", ms / 1000)),
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
        options: options_input!(body),
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
        options: options_input!(body),
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
