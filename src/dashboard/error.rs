//! The dashboard's one error type, answered as a page a person can act on.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::views;
use crate::ops::{FieldError, OpError};
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
    /// An operation refused or failed; its message is shown as is.
    #[error(transparent)]
    Op(#[from] OpError),
    /// Storage failed while checking the session.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An operation's refusal of what a form asked for: shown above the form
/// again, each field's message next to its field, so the person can fix
/// the input rather than land on an error page.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// One line saying what was wrong.
    pub message: String,
    /// Every field's problem (`name`, `scopes[0]`, `event_filter[1]`, ...).
    pub details: Vec<FieldError>,
}

impl Refusal {
    /// The refusal to show with the form for `error`, if it is about the
    /// form's content (invalid fields or a malformed value); any other
    /// error (not found, not allowed, storage) is not the form's to show
    /// and comes back as is.
    pub fn of(error: OpError) -> Result<Refusal, OpError> {
        match error {
            OpError::Invalid(details) => Ok(Refusal::invalid(details)),
            OpError::BadRequest(message) => Ok(Refusal {
                message,
                details: Vec::new(),
            }),
            other => Err(other),
        }
    }

    /// The refusal for invalid fields, worded as the API words its 422:
    /// the one field and its problem, or a pointer to the list below.
    pub fn invalid(details: Vec<FieldError>) -> Refusal {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "some fields are invalid; see details".to_string(),
        };
        Refusal { message, details }
    }

    /// Every named field starting with `prefix` (such as `headers.` or
    /// `auth`), with its message: for form fields that stand for a whole
    /// object (one text area of headers, one body filter).
    pub fn fields_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.details
            .iter()
            .filter(move |d| d.field.starts_with(prefix))
            .map(|d| (d.field.as_str(), d.message.as_str()))
    }

    /// The message for one form field, if the operation named it (or one
    /// of its elements, such as `scopes[0]`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|d| {
                d.field == name
                    || d.field
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('['))
            })
            .map(|d| d.message.as_str())
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
            DashboardError::Op(e) => match e {
                OpError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
                OpError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
                OpError::Conflict(m) => (StatusCode::CONFLICT, "That did not work", m),
                OpError::Invalid(details) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "That did not work",
                    Refusal::invalid(details).message,
                ),
                OpError::BadRequest(m) => (StatusCode::BAD_REQUEST, "That did not work", m),
                OpError::Unavailable(m) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "Something went wrong", m)
                }
                // Logged where it happened; the page says no more.
                OpError::Internal => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "An internal error occurred; it has been logged.".to_string(),
                ),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn field(field: &str, message: &str) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn refusals_name_fields_and_their_elements() {
        let r = Refusal::invalid(vec![field("scopes[0]", "unknown")]);
        assert_eq!(r.message, "scopes[0]: unknown");
        assert_eq!(r.field("scopes"), Some("unknown"));
        assert_eq!(r.field("scope"), None);
        assert_eq!(r.field("name"), None);
        let r = Refusal::invalid(vec![field("name", "a"), field("event_filter[1]", "b")]);
        assert_eq!(r.message, "some fields are invalid; see details");
        assert_eq!(r.field("name"), Some("a"));
        assert_eq!(r.field("event_filter"), Some("b"));
    }

    #[test]
    fn only_complaints_about_the_form_come_back_to_it() {
        let r = Refusal::of(OpError::BadRequest("invalid cursor".into())).expect("refusal");
        assert_eq!(r.message, "invalid cursor");
        assert!(r.details.is_empty());
        for other in [
            OpError::NotFound("no such source".into()),
            OpError::Forbidden("no".into()),
            OpError::Conflict("no".into()),
            OpError::Internal,
        ] {
            assert!(Refusal::of(other).is_err());
        }
    }
}
