//! The dashboard's one error type, answered as a page a person can act on.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::dispatch::ApiFailure;
use super::views;
use crate::ops::OpError;
use crate::store::StoreError;

/// Why a dashboard request did not get the page it asked for.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// No valid session: go to the sign-in page (and come back to `next`).
    #[error("sign in to continue")]
    SignIn { next: Option<String> },
    /// A form without this session's CSRF token: it did not come from our
    /// page (or the page is older than the session).
    #[error("the form's security token is missing or stale")]
    Csrf,
    /// The request itself was unusable (not a form, too large, bad id).
    #[error("{0}")]
    BadRequest(String),
    /// No such page or thing.
    #[error("not found")]
    NotFound,
    /// The API refused the operation; its message is shown as is.
    #[error("{}", .0.message)]
    Api(ApiFailure),
    /// An operation refused or failed; its message is shown as is.
    #[error(transparent)]
    Op(#[from] OpError),
    /// Storage failed while checking the session.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fault of Krafter's (an API answer we could not read).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ApiFailure> for DashboardError {
    fn from(failure: ApiFailure) -> Self {
        DashboardError::Api(failure)
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            DashboardError::SignIn { next } => {
                let mut location = "/dashboard/sign-in".to_string();
                if let Some(next) = next {
                    location.push_str("?next=");
                    location.extend(url::form_urlencoded::byte_serialize(next.as_bytes()));
                }
                return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
            }
            DashboardError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was missing its security token, or it was opened before you last signed in. Go back, reload the page and try again.".to_string(),
            ),
            DashboardError::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, "Bad request", message)
            }
            DashboardError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here. It may have been deleted.".to_string(),
            ),
            DashboardError::Api(failure) => {
                let title = match failure.status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    s if s.is_server_error() => "Something went wrong",
                    _ => "That did not work",
                };
                (failure.status, title, failure.message)
            }
            DashboardError::Op(e) => {
                let (status, title) = match &e {
                    OpError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
                    OpError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
                    OpError::Conflict(_) => (StatusCode::CONFLICT, "That did not work"),
                    OpError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "That did not work"),
                    OpError::BadRequest(_) => (StatusCode::BAD_REQUEST, "That did not work"),
                    OpError::Unavailable(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "Something went wrong")
                    }
                    OpError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
                };
                (status, title, e.to_string())
            }
            DashboardError::Store(e) => {
                tracing::error!(error = %e, "storage error in the dashboard");
                let status = match e {
                    StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (
                    status,
                    "Something went wrong",
                    "Storage is not answering right now; try again in a moment.".to_string(),
                )
            }
            DashboardError::Internal(why) => {
                tracing::error!(error = %why, "dashboard fault");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "An internal error occurred; it has been logged.".to_string(),
                )
            }
        };
        let body = html! {
            section.card.error-page {
                h1 { (title) }
                p { (message) }
                p { a href="/dashboard/sources" { "Back to sources" } }
            }
        };
        views::respond(status, views::page(title, None, views::Nav::None, body))
    }
}
