//! The storage layer's one error type.

/// Why a storage operation failed.
///
/// `NotFound` and `Conflict` are answers about the data (the API turns them
/// into 404/409); the rest are failures of the store itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing asked for does not exist (or no longer does).
    #[error("not found")]
    NotFound,
    /// The change contradicts what is stored (e.g. a duplicate slug).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A configured cap (e.g. destinations per source) is reached; the
    /// number is the cap.
    #[error("limit of {0} reached")]
    LimitReached(usize),
    /// Another process holds the database file (a running server).
    #[error("the database at {0} is in use by another Krafter process")]
    InUse(String),
    /// The writer is stopped or its queue stayed full; the caller may retry.
    #[error("storage is unavailable: {0}")]
    Unavailable(&'static str),
    /// The storage engine itself failed (I/O inside the engine, a broken
    /// transaction); the message is the engine's.
    #[error("storage error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The configured backend does not offer this (e.g. a backup file of
    /// a PostgreSQL store: that is `pg_dump`'s job); the API answers 501.
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A file beside the database (key files) could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with what Krafter was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}
