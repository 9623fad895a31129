//! The web dashboard under `/dashboard` (SPEC §11): API keys, sources,
//! destinations, events with their deliveries, replay and retry — so a
//! person can do everything the quickstart does, and debug a failing
//! destination, without curl.
//!
//! Server-rendered HTML (maud, checked at compile time and escaping every
//! value) with one small stylesheet and one small script embedded in the
//! binary: no build step, no CDN, no request leaves the server. Pages work
//! without JavaScript; the script only adds copy buttons, keeps relative
//! times fresh and adds new events to a source's events page as they
//! arrive (the live stream of SPEC §14, read with the session).
//!
//! The dashboard has no rules of its own. After checking the session (see
//! [`session`]) every handler turns its form or query into the typed input
//! of an operation (`crate::ops`), calls it as the signed-in key's
//! [`Caller`](crate::ops::Caller), and renders the records it answers. The
//! REST API calls the very same operations, so validation, scope checks,
//! errors and what follows a commit (waking delivery) have one
//! implementation, and the dashboard can never do what the key could not do
//! through the API. Its routes are not in the OpenAPI document: they are
//! pages for people, not API.

pub mod error;
pub mod form;
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

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ops::Ops;

/// What every dashboard handler can reach: the operations, and the few
/// pieces of configuration pages and cookies depend on. Not the API's
/// state: the dashboard is a door beside the API, not a client of it.
#[derive(Clone)]
pub struct Dashboard {
    /// The business operations every page calls (and, through
    /// [`Ops::store`], the sessions).
    pub ops: Ops,
    /// For the cookie flags and the sign-in budget.
    pub config: Arc<Config>,
    /// `server.public_url` without a trailing slash: ingest URLs are shown
    /// as providers must call them.
    pub public_url: Arc<str>,
    /// Counts the test events the dashboard stores, as the API does.
    pub metrics: Arc<Metrics>,
    /// Sign-in attempts per client address.
    pub sign_in_throttle: Arc<throttle::SignInThrottle>,
}

impl Dashboard {
    /// Whether cookies must be `Secure`: the listener speaks only HTTPS, or
    /// `server.public_url` says browsers reach Krafter over HTTPS (through a
    /// TLS-terminating proxy).
    pub fn secure_cookies(&self) -> bool {
        self.config.tls_enabled() || self.public_url.starts_with("https://")
    }

    /// Where a source's provider must send its webhooks.
    pub fn ingest_url(&self, slug: &str) -> String {
        format!("{}/in/{slug}", self.public_url)
    }
}

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");
const ICON: &str = include_str!("assets/icon.svg");

/// The dashboard's routes, ready to be merged into the server's router
/// (whatever its state). `public_url` is `server.public_url` without a
/// trailing slash.
pub fn router<S>(
    ops: Ops,
    config: Arc<Config>,
    public_url: Arc<str>,
    metrics: Arc<Metrics>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let dashboard = Dashboard {
        sign_in_throttle: Arc::new(throttle::SignInThrottle::new(
            config.dashboard.sign_in_per_minute,
        )),
        ops,
        config,
        public_url,
        metrics,
    };
    use pages::{audit, auth, destinations, events, home, keys, overview, sources};
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
        .route("/dashboard/audit-log", get(audit::list))
        .route("/dashboard/overview", get(home::show))
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
        .route(
            "/dashboard/sources/{sid}/events/stream",
            get(events::stream),
        )
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
