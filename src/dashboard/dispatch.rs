//! Calls into the REST API in-process.
//!
//! The dashboard has no operations of its own: every read and write is a
//! request to the same router that serves `/api/v1`, carrying the signed-in
//! key as a pre-authenticated [`Caller`]. Validation, scope checks, errors
//! and side effects (waking the delivery engine, ...) therefore have exactly
//! one implementation, and the dashboard can never do what the key could
//! not do through the API.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;

use super::error::DashboardError;
use crate::api::auth::Caller;

/// Largest API answer read (an event with a 5 MiB body, base64 and escaped).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The API router, ready to be called without a network hop.
#[derive(Clone)]
pub struct ApiClient {
    router: Router,
}

/// A refusal from the API: its status and the SPEC's error envelope.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// `(field, message)` pairs of a 422.
    pub details: Vec<(String, String)>,
}

impl ApiFailure {
    /// The message for one form field, if the API named it (or one of its
    /// elements, such as `scopes[0]`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(f, _)| f == name || f.starts_with(&format!("{name}[")))
            .map(|(_, m)| m.as_str())
    }
}

#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeBody,
}

#[derive(Deserialize)]
struct EnvelopeBody {
    code: String,
    message: String,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    field: String,
    message: String,
}

/// One page of a list.
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ListBody<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct DataBody<T> {
    data: T,
}

impl ApiClient {
    /// Wraps the API router (with its state applied).
    pub fn new(router: Router) -> ApiClient {
        ApiClient { router }
    }

    /// Sends one request as `caller`. `Ok(Err(..))` is the API saying no;
    /// `Err(..)` is the dashboard failing to talk to it at all.
    pub async fn send(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Result<Value, ApiFailure>, DashboardError> {
        let mut builder = Request::builder().method(method).uri(path);
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = builder
            .body(body)
            .map_err(|e| DashboardError::Internal(format!("building an API request: {e}")))?;
        request.extensions_mut().insert(caller.clone());
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| DashboardError::Internal(format!("reading an API answer: {e}")))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Ok(Value::Null));
            }
            return serde_json::from_slice(&bytes)
                .map(Ok)
                .map_err(|e| DashboardError::Internal(format!("API answer is not JSON: {e}")));
        }
        let failure = match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(envelope) => ApiFailure {
                status,
                code: envelope.error.code,
                message: envelope.error.message,
                details: envelope
                    .error
                    .details
                    .into_iter()
                    .map(|d| (d.field, d.message))
                    .collect(),
            },
            Err(_) => ApiFailure {
                status,
                code: "unknown".into(),
                message: format!("the API answered {status}"),
                details: Vec::new(),
            },
        };
        Ok(Err(failure))
    }

    /// GETs one `{"data": ...}`; a refusal becomes the error page.
    pub async fn get<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        path: &str,
    ) -> Result<T, DashboardError> {
        let value = self.send(caller, Method::GET, path, None).await??;
        decode::<DataBody<T>>(value).map(|d| d.data)
    }

    /// GETs one page of a list.
    pub async fn list<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        path: &str,
    ) -> Result<Listed<T>, DashboardError> {
        let value = self.send(caller, Method::GET, path, None).await??;
        decode::<ListBody<T>>(value).map(|l| Listed {
            items: l.data,
            next_cursor: l.next_cursor,
        })
    }

    /// Sends a change; `Ok(Err(..))` carries the API's refusal for the form
    /// to show, `Ok(Ok(..))` the decoded `data` (or `Value::Null` on 204).
    pub async fn change<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Result<T, ApiFailure>, DashboardError> {
        match self.send(caller, method, path, body).await? {
            Ok(Value::Null) => decode::<T>(Value::Null).map(Ok),
            Ok(value) => decode::<DataBody<T>>(value).map(|d| Ok(d.data)),
            Err(failure) => Ok(Err(failure)),
        }
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, DashboardError> {
    serde_json::from_value(value)
        .map_err(|e| DashboardError::Internal(format!("unexpected API answer: {e}")))
}

/// An id taken from a dashboard URL, checked before it becomes part of an
/// API path: ids are `prefix_` + base32, so anything else (a `/`, `..`,
/// `?`) can only be a mistake or a trick, and is a 404.
pub fn id_segment(text: &str) -> Result<&str, DashboardError> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(text)
    } else {
        Err(DashboardError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_change_the_api_path() {
        assert!(id_segment("src_01JABCDEF").is_ok());
        for bad in ["", "src_1/destinations", "..", "src_1?x=1", "a%2Fb", "x y"] {
            assert!(id_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_name_fields_and_their_elements() {
        let f = ApiFailure {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed".into(),
            message: "m".into(),
            details: vec![("scopes[0]".into(), "unknown".into())],
        };
        assert_eq!(f.field("scopes"), Some("unknown"));
        assert_eq!(f.field("scope"), None);
        assert_eq!(f.field("name"), None);
    }
}
