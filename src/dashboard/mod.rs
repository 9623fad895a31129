//! The web dashboard under `/dashboard` (SPEC §11): API keys, sources,
//! destinations, events with their deliveries, replay and retry — so a
//! person can do everything the quickstart does, and debug a failing
//! destination, without curl.
//!
//! Server-rendered HTML (maud, checked at compile time and escaping every
//! value) with one small stylesheet and one small script embedded in the
//! binary: no build step, no CDN, no request leaves the server. Pages work
//! without JavaScript; the script only adds copy buttons and keeps
//! relative times fresh.
//!
//! The dashboard has no operations of its own. After checking the session
//! (see [`session`]) every handler calls the REST API in-process as the
//! signed-in key (see [`dispatch`]) and renders the JSON it gets back, so
//! validation, scopes and errors have one implementation. Its routes are
//! not in the OpenAPI document: they are pages for people, not API.

pub mod dispatch;
pub mod error;
pub mod form;
pub mod model;
mod pages;
pub mod session;
pub mod throttle;
pub mod views;

use std::sync::Arc;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;

use crate::api::AppState;
use dispatch::ApiClient;

/// What every dashboard handler can reach.
#[derive(Clone)]
pub struct Dashboard {
    /// The server's state (storage for sessions, config for cookie flags).
    pub app: AppState,
    /// The API, called in-process.
    pub api: ApiClient,
    /// Sign-in attempts per client address.
    pub sign_in_throttle: Arc<throttle::SignInThrottle>,
}

impl Dashboard {
    /// Whether cookies must be `Secure`: the listener speaks only HTTPS, or
    /// `server.public_url` says browsers reach Krafter over HTTPS (through a
    /// TLS-terminating proxy).
    pub fn secure_cookies(&self) -> bool {
        self.app.config.tls_enabled() || self.app.public_url.starts_with("https://")
    }
}

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");
const ICON: &str = include_str!("assets/icon.svg");

/// The dashboard's routes. `api` is the API router with its state applied;
/// every operation is dispatched to it.
pub fn router(state: AppState, api: Router) -> Router<AppState> {
    let dashboard = Dashboard {
        sign_in_throttle: Arc::new(throttle::SignInThrottle::new(
            state.config.dashboard.sign_in_per_minute,
        )),
        app: state,
        api: ApiClient::new(api),
    };
    use pages::{auth, destinations, events, keys, overview, sources};
    Router::new()
        .route("/", get(root))
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/assets/{name}", get(asset))
        .route(
            "/dashboard/sign-in",
            get(auth::sign_in_page).post(auth::sign_in),
        )
        .route("/dashboard/sign-out", post(auth::sign_out))
        .route("/dashboard/api-keys", get(keys::list).post(keys::create))
        .route("/dashboard/api-keys/{id}/revoke", post(keys::revoke))
        .route(
            "/dashboard/sources",
            get(sources::list).post(sources::create),
        )
        .route("/dashboard/sources/new", get(sources::new_page))
        .route("/dashboard/sources/{sid}", get(sources::show))
        .route(
            "/dashboard/sources/{sid}/edit",
            get(sources::edit_page).post(sources::edit),
        )
        .route(
            "/dashboard/sources/{sid}/enabled",
            post(sources::set_enabled),
        )
        .route(
            "/dashboard/sources/{sid}/delete",
            get(sources::delete_page).post(sources::delete),
        )
        .route(
            "/dashboard/sources/{sid}/destinations",
            post(destinations::create),
        )
        .route(
            "/dashboard/sources/{sid}/destinations/{did}",
            get(destinations::edit_page).post(destinations::edit),
        )
        .route(
            "/dashboard/sources/{sid}/destinations/{did}/enabled",
            post(destinations::set_enabled),
        )
        .route(
            "/dashboard/sources/{sid}/destinations/{did}/rotate-secret",
            post(destinations::rotate_secret),
        )
        .route(
            "/dashboard/sources/{sid}/destinations/{did}/delete",
            get(destinations::delete_page).post(destinations::delete),
        )
        .route("/dashboard/events", get(overview::list))
        .route(
            "/dashboard/sources/{sid}/test-event",
            post(overview::send_test_event),
        )
        .route("/dashboard/sources/{sid}/events", get(events::list))
        .route("/dashboard/sources/{sid}/replay", post(events::bulk_replay))
        .route("/dashboard/sources/{sid}/events/{eid}", get(events::show))
        .route(
            "/dashboard/sources/{sid}/events/{eid}/replay",
            post(events::replay),
        )
        .route(
            "/dashboard/sources/{sid}/events/{eid}/deliveries/{did}/retry",
            post(events::retry),
        )
        .route("/dashboard/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(dashboard)
}

async fn not_found() -> error::DashboardError {
    error::DashboardError::NotFound
}

/// `/` is where a person types the server's address: send them to the
/// dashboard (303, not cached, so `/` can become something else later).
async fn root() -> Response {
    views::see_other("/dashboard")
}

async fn home() -> Response {
    views::see_other("/dashboard/sources")
}

/// The embedded stylesheet, script and icon. Their URLs carry the version,
/// so they may be cached for long.
async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "dashboard.css" => ("text/css; charset=utf-8", CSS),
        "dashboard.js" => ("text/javascript; charset=utf-8", JS),
        "icon.svg" => ("image/svg+xml", ICON),
        _ => return error::DashboardError::NotFound.into_response(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every dashboard answer: nothing may load from elsewhere, no
/// framing (clickjacking), no sniffing, no referrer carrying ids, and pages
/// (which may show a secret once) are never stored.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &str); 5] = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
