//! The extractor that authenticates every `/api/v1` request by its bearer
//! API key (keys themselves are made and checked in `crate::ops::api_keys`).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::ops::{api_keys, Via};

/// The authenticated caller of an API request: always a bearer key checked
/// against storage (nothing else, in-process or not, can stand in for one).
pub use crate::ops::Caller;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer_token(parts).ok_or_else(|| {
            ApiError::unauthorized("send an API key as `Authorization: Bearer krf_...`")
        })?;
        let via = match parts.headers.get(header::USER_AGENT) {
            Some(agent) if agent.as_bytes().starts_with(b"krafter-cli/") => Via::Cli,
            _ => Via::Api,
        };
        match api_keys::authenticate(&state.store, key, via).await? {
            Some(caller) => Ok(caller),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
