//! Extractors that turn every malformed input into the SPEC's envelope:
//! bad JSON → 400, wrong types/missing fields → 422 with the field named,
//! wrong content type → 415, too large → 413, bad query → 400.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, FieldError};
use super::AppState;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = state.config.server.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e, limit))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be absent (no body at all means `None`).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let has_content_type = req.headers().contains_key(header::CONTENT_TYPE);
        let json = is_json(req.headers());
        let limit = state.config.server.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e, limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if has_content_type && !json {
            return Err(ApiError::unsupported_media_type());
        }
        parse_json(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(limit)
    } else {
        ApiError::bad_request(format!("could not read the request body: {rejection}"))
    }
}

/// Parses a JSON request body (always a JSON object), naming the offending
/// field on type errors.
///
/// Well-formedness is checked over the whole body first, so malformed JSON
/// (bad syntax, invalid UTF-8, trailing bytes) is a 400 even when a field
/// before the fault is unknown or mistyped; only then is the body read into
/// `T`, whose failures are all 422s naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request(
            "malformed JSON: the body is not valid UTF-8",
        ));
    }
    // Iterative and allocation-free: no recursion limit to trip on deep nesting.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    // Serde would also read a struct from an array of its fields in order;
    // the API speaks objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = strip_position(&inner.to_string());
    let message = match inner.classify() {
        Category::Data => message,
        // The body is known to be well-formed, so this is serde_json saying a
        // value has the wrong type (an enum given a number: "expected value")
        // or cannot be represented (a lone surrogate, a number out of range,
        // nesting past the recursion limit).
        Category::Syntax | Category::Eof | Category::Io => {
            format!("has the wrong type or an unsupported value ({message})")
        }
    };
    let field = if path == "." || path.is_empty() {
        missing_field_name(&message).unwrap_or_else(|| "body".to_string())
    } else {
        path
    };
    ApiError::validation(vec![FieldError { field, message }])
}

/// serde_json appends " at line 1 column 12" to data errors; the field name
/// says more than a column does.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Query string parameters; anything unparsable is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
            })
    }
}

/// Path parameters; undecodable ones are a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::bad_request(format!("invalid path: {}", e.body_text()))
            })
    }
}

/// `?limit=&cursor=` for every list (SPEC §3).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 250; default 50.
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = "^([0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
}

/// Default and largest page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 250;

impl ListParams {
    /// The page size, checked.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as u32).contains(&n) => Ok(n as usize),
            Some(_) => Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            ))),
        }
    }

    /// The decoded cursor: the id of the last item of the previous page.
    pub fn cursor(&self) -> Result<Option<u128>, ApiError> {
        match &self.cursor {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => ulid::Ulid::from_string(text)
                .map(|u| Some(u.0))
                .map_err(|_| ApiError::bad_request("invalid cursor")),
        }
    }
}

/// An optional RFC 3339 time from a query string (`after`, `before`), in
/// Unix ms. Given but not a time — empty included, as the OpenAPI
/// document's `date-time` format says — is a 400 naming `field`.
pub fn query_time(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    match text {
        None => Ok(None),
        Some(t) => crate::model::time::parse_rfc3339_ms(t)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{field} must be an RFC 3339 time, e.g. 2026-11-27T14:48:08Z"
                ))
            }),
    }
}

/// The cursor text for a page's continuation.
pub fn encode_cursor(next: Option<u128>) -> Option<String> {
    next.map(|id| ulid::Ulid(id).to_string())
}

/// `{"data": ...}`.
#[derive(Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": [...], "next_cursor": ...}`.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Reads an optional `u32` that a client may spell `30` or `30.0`: JSON
/// Schema, and so the OpenAPI document, counts both as the integer 30.
/// Fractions, negatives and values past `u32::MAX` stay errors (422).
/// Use with `#[serde(default, deserialize_with = "...")]`.
pub fn optional_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::{Error, Unexpected};
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    const EXPECTED: &str = "an integer from 0 to 4294967295";
    if let Some(u) = n.as_u64() {
        return u32::try_from(u)
            .map(Some)
            .map_err(|_| D::Error::invalid_value(Unexpected::Unsigned(u), &EXPECTED));
    }
    if let Some(i) = n.as_i64() {
        return Err(D::Error::invalid_value(Unexpected::Signed(i), &EXPECTED));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) {
        // Integral and in range: the cast is exact.
        Ok(Some(f as u32))
    } else {
        Err(D::Error::invalid_value(Unexpected::Float(f), &EXPECTED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "optional_u32")]
        n: Option<u32>,
    }

    fn n(json: &str) -> Result<Option<u32>, ApiError> {
        parse_json::<Probe>(json.as_bytes()).map(|p| p.n)
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        assert_eq!(n("{}").unwrap(), None);
        assert_eq!(n(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(n(r#"{"n": 30}"#).unwrap(), Some(30));
        assert_eq!(n(r#"{"n": 30.0}"#).unwrap(), Some(30));
        assert_eq!(n(r#"{"n": 3e1}"#).unwrap(), Some(30));
        for bad in ["30.5", "-1", "-1.0", "4294967296", "4294967296.0", "\"30\""] {
            let e = n(&format!(r#"{{"n": {bad}}}"#)).unwrap_err();
            assert_eq!(e.status, 422, "{bad}");
            assert_eq!(e.details[0].field, "n", "{bad}");
        }
    }
}
