//! `GET /api/v1/backup` (admin): a consistent copy of the database while
//! the server runs. `krafter backup --to FILE` calls it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::AppState;
use crate::model::ids::new_id;
use crate::model::records::Scope;

/// Streams a backup: a redb file holding every table from one snapshot
/// plus the key that opens stored secrets. Protect it like the data
/// directory. Restore with `krafter restore --from FILE` (server stopped).
/// On PostgreSQL storage it answers 501 `not_supported`: use `pg_dump`.
#[utoipa::path(get, path = "/api/v1/backup", tag = "operations",
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>,
        description = "the backup file"), (status = "4XX", body = ErrorEnvelope),
        (status = 501, body = ErrorEnvelope,
        description = "`not_supported`: the storage is PostgreSQL (back it up with pg_dump)")),
    security(("bearer" = [])))]
pub async fn backup(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let store = state.store.clone();
    // Written beside the database (the one place the service may write),
    // opened, then unlinked: the stream keeps it alive, nothing is left behind.
    let path = store
        .dir()
        .join(format!("backup-{:x}.tmp", new_id::<u128>()));
    let file = tokio::task::spawn_blocking(move || {
        let written = store.backup_to(&path);
        let opened = written.and_then(|_| {
            std::fs::File::open(&path)
                .map_err(|e| crate::store::StoreError::io("opening the backup", e))
        });
        let _ = std::fs::remove_file(&path);
        opened
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"krafter-backup.redb\"".to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
