//! The API's one error type and its envelope (SPEC §3):
//! `{"error": {"code", "message", "details"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ops::OpError;
use crate::store::StoreError;

/// One field's problem in a 422.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answered to an API or ingest caller.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
}

/// Body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub code: &'static str,
    /// A human sentence.
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400: malformed JSON or query.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 401: no, unknown or revoked API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403: a valid key without the needed scope.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }
    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with content-type: application/json",
        )
    }
    /// 422 with one problem per field.
    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "some fields are invalid; see details".to_string(),
        };
        ApiError {
            details,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        }
    }
    /// 422 for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }
    /// 500: a fault of Krafter's, never of the request.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    /// 501 `not_supported`: the configured storage does not offer this
    /// (a backup file of a PostgreSQL store).
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "not_supported", message)
    }
    /// 401 `invalid_signature` for ingest.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(message) => ApiError::conflict(message),
            StoreError::Unavailable(why) => {
                ApiError::unavailable(format!("storage is unavailable: {why}"))
            }
            StoreError::NotSupported(why) => ApiError::not_supported(why),
            other => {
                tracing::error!(error = %other, "storage error while serving a request");
                ApiError::internal()
            }
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(message) => ApiError::not_found(message),
            OpError::Conflict(message) => ApiError::conflict(message),
            OpError::Invalid(fields) => ApiError::validation(
                fields
                    .into_iter()
                    .map(|f| FieldError {
                        field: f.field,
                        message: f.message,
                    })
                    .collect(),
            ),
            OpError::BadRequest(message) => ApiError::bad_request(message),
            OpError::Forbidden(message) => ApiError::forbidden(message),
            OpError::Unavailable(message) => ApiError::unavailable(message),
            OpError::Internal => ApiError::internal(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let unauthorized = status == StatusCode::UNAUTHORIZED && self.code == "unauthorized";
        let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if unavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Collects field problems so one 422 names all of them.
#[derive(Default)]
pub struct Validation {
    details: Vec<FieldError>,
}

impl Validation {
    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.fail(field, message);
        }
    }

    /// Records a problem.
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.details.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// `Err(422)` if anything was recorded.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.details.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.details))
        }
    }
}
