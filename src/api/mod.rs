//! The REST API under `/api/v1`, the operations endpoints and `POST
//! /in/{slug}`: each handler extracts, calls an operation (or ingest) and
//! renders. `crate::server` assembles them with the dashboard.
//!
//! Routes are registered through utoipa-axum, so the OpenAPI document is
//! built from the same list the router serves and cannot drift from it.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod destinations;
pub mod error;
pub mod events;
pub mod extract;
pub mod ingest;
pub mod openapi;
pub mod ops;
pub mod overview;
pub mod sources;
pub mod stream;

use std::sync::Arc;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach. One shared allocation: axum hands each
/// request its own copy of the state, and copying one pointer costs one
/// atomic increment where copying the parts cost one per shared handle
/// inside them (dozens, measurable on the ingest path).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// Shares `parts` with every handler.
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// `server.public_url` without a trailing slash.
    pub public_url: Arc<str>,
    /// The delivery engine, for its queue figures in `/metrics`.
    pub engine: crate::delivery::engine::Engine,
    /// The business operations every handler delegates to.
    pub ops: crate::ops::Ops,
    /// Takes provider webhooks in (`POST /in/{slug}`).
    pub ingest: crate::ingest::Ingest,
    /// Alerts to the operator (invalid-signature bursts are counted here).
    pub alerts: crate::alerts::Alerts,
    /// The dashboard overview's counters (events in are counted here).
    pub stats: crate::stats::Stats,
    /// Tracing, when `telemetry.otlp_endpoint` is set (SPEC §15).
    pub telemetry: Option<crate::telemetry::Telemetry>,
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
        (name = "audit-log", description = "Who changed what, when, through which door (admin scope)"),
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
pub(crate) fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::delete))
        .routes(routes!(audit::list))
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
        .routes(routes!(stream::stream))
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
        .routes(routes!(ingest::receive))
}

/// The OpenAPI document as served, without starting anything (for tests
/// and tools).
pub fn openapi() -> serde_json::Value {
    document(documented_routes().into_openapi())
}

/// utoipa's document made exact by [`openapi::refine`].
pub(crate) fn document(generated: utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut doc = serde_json::to_value(&generated).unwrap_or_default();
    openapi::refine(&mut doc);
    doc
}
