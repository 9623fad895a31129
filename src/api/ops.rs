//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::{AppState, OpenApiJson};

/// Body of the health endpoints.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    #[schema(value_type = String, pattern = "^(ok|ready)$")]
    pub status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// 200 when storage is open and writable, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Status), (status = 503, body = super::error::ErrorEnvelope)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.store.is_healthy() {
        Ok(Json(Status { status: "ready" }))
    } else {
        Err(ApiError::unavailable("storage is not accepting writes"))
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let size = i64::try_from(state.store.size_bytes()).unwrap_or(i64::MAX);
    state.metrics.storage_file_size.set(size);
    match state.engine.queue_stats().await {
        Ok((pending, oldest_ms)) => {
            state
                .metrics
                .deliveries_pending
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            state
                .metrics
                .oldest_pending_age
                .set(oldest_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue statistics"),
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_string(),
    )
        .into_response()
}
