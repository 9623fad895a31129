//! The extractor that authenticates every `/api/v1` request by its bearer
//! API key (keys themselves are made and checked in `crate::ops::api_keys`).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::ops::{api_keys, Via};

/// The authenticated caller of an API request (a bearer key), or of an
/// in-process caller that authenticated by other means and inserted one as
/// a request extension.
pub use crate::ops::Caller;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Set only by in-process callers (the dashboard, after checking its
        // session); a network request cannot carry request extensions.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let key = bearer_token(parts).ok_or_else(|| {
            ApiError::unauthorized("send an API key as `Authorization: Bearer krf_...`")
        })?;
        match api_keys::authenticate(&state.store, key, Via::Api).await? {
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
