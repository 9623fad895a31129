//! The operations layer's one error type.

use crate::store::StoreError;

/// One field's problem in an invalid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Why an operation was refused or failed. Each door turns it into its own
/// answer (the API's envelope and status, the dashboard's page, the CLI's
/// message); the messages are written for the user and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The thing does not exist (or the caller may not know it does).
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    /// Some fields are invalid; every problem is listed.
    #[error("{}", describe(.0))]
    Invalid(Vec<FieldError>),
    /// The request itself is malformed (a bad filter or time).
    #[error("{0}")]
    BadRequest(String),
    /// The caller's key lacks the scope.
    #[error("{0}")]
    Forbidden(String),
    /// Storage cannot take it now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke inside Krafter (logged where it happened).
    #[error("internal error")]
    Internal,
}

/// `field: message; field: message`, for doors that show one line.
fn describe(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl OpError {
    /// One invalid field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        OpError::Invalid(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }

    /// A store error, with `NotFound` named for what was looked up.
    pub fn from_store(e: StoreError, what: &str) -> Self {
        match e {
            StoreError::NotFound => OpError::NotFound(format!("no such {what}")),
            other => other.into(),
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => OpError::NotFound("not found".into()),
            StoreError::Conflict(message) => OpError::Conflict(message),
            StoreError::Unavailable(why) => {
                OpError::Unavailable(format!("storage is unavailable: {why}"))
            }
            other => {
                tracing::error!(error = %other, "storage error");
                OpError::Internal
            }
        }
    }
}

/// Collects field problems so one answer names all of them.
#[derive(Debug, Default)]
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

    /// `Err(Invalid)` if anything was recorded.
    pub fn finish(self) -> Result<(), OpError> {
        if self.details.is_empty() {
            Ok(())
        } else {
            Err(OpError::Invalid(self.details))
        }
    }
}
