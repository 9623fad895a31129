//! The HTTP surface: REST API under `/api/v1`, operations endpoints, and
//! (from the ingest module) `/in/{slug}`.
//!
//! Routes are registered through utoipa-axum, so the OpenAPI document is
//! built from the same list the router serves and cannot drift from it.

pub mod api_keys;
pub mod auth;
pub mod backup;
pub mod destinations;
pub mod error;
pub mod events;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod overview;
pub mod sources;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// `server.public_url` without a trailing slash.
    pub public_url: Arc<str>,
    /// Woken after commits that queue deliveries.
    pub engine: crate::delivery::engine::Engine,
    /// Wakes the retention task early (after a source is deleted).
    pub retention: Arc<tokio::sync::Notify>,
    /// Runs bulk replay jobs in the background.
    pub replays: crate::replay::Replays,
    /// The business operations every handler delegates to.
    pub ops: crate::ops::Ops,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Krafter",
        description = "Self-hosted webhook relay: verify, store durably, fan out, retry, replay."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "api-keys", description = "API keys (admin scope)"),
        (name = "sources", description = "Sources: where providers send webhooks"),
        (name = "destinations", description = "Destinations: where Krafter forwards them"),
        (name = "events", description = "Events, deliveries, replay and retry"),
        (name = "ingest", description = "Public ingest URLs that providers POST to"),
        (name = "operations", description = "Health, readiness, metrics and this document")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `krf_...`"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document served at `/api/v1/openapi.json`.
#[derive(Clone)]
pub struct OpenApiJson(pub Arc<String>);

/// Every route with its OpenAPI entry.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::delete))
        .routes(routes!(sources::create, sources::list))
        .routes(routes!(sources::get, sources::update, sources::delete))
        .routes(routes!(destinations::create, destinations::list))
        .routes(routes!(
            destinations::get,
            destinations::update,
            destinations::delete
        ))
        .routes(routes!(destinations::rotate_secret))
        .routes(routes!(events::list))
        .routes(routes!(events::get))
        .routes(routes!(events::deliveries))
        .routes(routes!(events::replay))
        .routes(routes!(events::retry))
        .routes(routes!(events::bulk_replay))
        .routes(routes!(events::list_replays))
        .routes(routes!(events::get_replay))
        .routes(routes!(overview::list_all))
        .routes(routes!(overview::test_event))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(backup::backup))
        .routes(routes!(crate::ingest::route::receive))
}

/// The OpenAPI document as served, without starting anything (for tests
/// and tools).
pub fn openapi() -> serde_json::Value {
    document(documented_routes().into_openapi())
}

/// utoipa's document made exact by [`openapi::refine`].
fn document(generated: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut doc = serde_json::to_value(&generated).unwrap_or_default();
    openapi::refine(&mut doc);
    doc
}

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
