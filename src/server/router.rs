//! The whole application router: the documented routes (REST API, ingest,
//! operations endpoints, OpenAPI), the dashboard, and the layers every
//! request passes (metrics and logs by route template, body limits and
//! deadline, panics answered as 500).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};

use crate::api::error::ApiError;
use crate::api::{document, documented_routes, AppState, OpenApiJson};

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = documented_routes().split_for_parts();
    let json =
        serde_json::to_string_pretty(&document(openapi)).unwrap_or_else(|_| "{}".to_string());
    let max_body = state.config.server.max_body_bytes;
    // The dashboard: pages for people, kept out of the OpenAPI document,
    // that call the same operations as these routes.
    let dashboard = crate::dashboard::router(
        state.ops.clone(),
        state.config.clone(),
        state.public_url.clone(),
        state.metrics.clone(),
    );
    routes
        .merge(dashboard)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(Extension(OpenApiJson(Arc::new(json))))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

/// Counts and logs every request by its route template, so ids and slugs
/// (which are bearer-like for ingest) never reach logs or metric labels.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = crate::metrics::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.observe_request(method, &route, status);
    tracing::info!(
        method = %method,
        route = %route,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Gives every request body `server.body_read_timeout` to arrive in full.
async fn body_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.server.body_read_timeout;
    next.run(request.map(|body| crate::http::body_deadline::DeadlineBody::wrap(body, limit)))
        .await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}
