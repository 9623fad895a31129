//! Rows to records and back: ids, statuses and the column lists every
//! query shares, so each record is read the same way everywhere.

use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::db_error;
use crate::model::ids::RawId;
use crate::model::records::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryStatus, ErrorKind, EventRecord,
    EventSummary, Scope, SessionRecord,
};
use crate::model::trace::TraceContext;
use crate::store::StoreError;

/// A ULID as the `uuid` it is stored as (same 16 bytes, same order).
pub(super) fn uid(id: impl RawId) -> Uuid {
    Uuid::from_u128(id.raw())
}

/// Many ULIDs, for `= ANY($1)`.
pub(super) fn uids<T: RawId>(ids: &[T]) -> Vec<Uuid> {
    ids.iter().map(|&id| Uuid::from_u128(id.raw())).collect()
}

/// The stored code of a delivery status.
pub(super) fn status_code(status: DeliveryStatus) -> i16 {
    match status {
        DeliveryStatus::Pending => 0,
        DeliveryStatus::Succeeded => 1,
        DeliveryStatus::Failed => 2,
        DeliveryStatus::Cancelled => 3,
    }
}

fn status_of(code: i16) -> Result<DeliveryStatus, StoreError> {
    Ok(match code {
        0 => DeliveryStatus::Pending,
        1 => DeliveryStatus::Succeeded,
        2 => DeliveryStatus::Failed,
        3 => DeliveryStatus::Cancelled,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown delivery status {other}"
            )))
        }
    })
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(db_error)
}

/// A string stored as UTF-8 `bytea` (see the schema: `text` cannot hold
/// U+0000).
pub(super) fn string(row: &PgRow, column: &str) -> Result<String, StoreError> {
    String::from_utf8(get(row, column)?)
        .map_err(|_| StoreError::Corrupt(format!("{column} is not UTF-8")))
}

fn optional_string(row: &PgRow, column: &str) -> Result<Option<String>, StoreError> {
    get::<Option<Vec<u8>>>(row, column)?
        .map(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| StoreError::Corrupt(format!("{column} is not UTF-8")))
        })
        .transpose()
}

/// Krafter's own text for a `text` column, which cannot hold U+0000.
pub(super) fn text(value: Option<&str>) -> Option<String> {
    value.map(|v| v.replace('\0', "\u{FFFD}"))
}

fn id<T: RawId>(row: &PgRow, column: &str) -> Result<T, StoreError> {
    Ok(T::from_raw(get::<Uuid>(row, column)?.as_u128()))
}

fn u32_of(value: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn u64_of(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

/// Columns of a delivery, in the order [`delivery`] reads them.
pub(super) const DELIVERY_COLUMNS: &str = "id, event_id, source_id, destination_id, status, attempts, next_attempt_ms, created_at_ms, updated_at_ms";

/// A delivery row.
pub(super) fn delivery(row: &PgRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: id(row, "id")?,
        event_id: id(row, "event_id")?,
        source_id: id(row, "source_id")?,
        destination_id: id(row, "destination_id")?,
        status: status_of(get(row, "status")?)?,
        attempts: u32_of(get(row, "attempts")?, "attempt count")?,
        next_attempt_ms: get(row, "next_attempt_ms")?,
        created_at_ms: get(row, "created_at_ms")?,
        updated_at_ms: get(row, "updated_at_ms")?,
    })
}

/// Columns of an event's summary.
pub(super) const SUMMARY_COLUMNS: &str =
    "event_type, provider_event_id, received_at_ms, size_bytes";

/// An event's summary from a row holding [`SUMMARY_COLUMNS`].
pub(super) fn summary(row: &PgRow) -> Result<EventSummary, StoreError> {
    Ok(EventSummary {
        event_type: string(row, "event_type")?,
        provider_event_id: optional_string(row, "provider_event_id")?,
        received_at_ms: get(row, "received_at_ms")?,
        size_bytes: u64_of(get(row, "size_bytes")?, "event size")?,
    })
}

/// Columns of a whole event.
pub(super) const EVENT_COLUMNS: &str =
    "id, source_id, received_at_ms, event_type, provider_event_id, headers, body, traceparent";

/// A whole event (headers and body).
pub(super) fn event(row: &PgRow) -> Result<EventRecord, StoreError> {
    let headers: Vec<u8> = get(row, "headers")?;
    Ok(EventRecord {
        id: id(row, "id")?,
        source_id: id(row, "source_id")?,
        received_at_ms: get(row, "received_at_ms")?,
        event_type: string(row, "event_type")?,
        provider_event_id: optional_string(row, "provider_event_id")?,
        headers: postcard::from_bytes(&headers)
            .map_err(|e| StoreError::Corrupt(format!("event headers: {e}")))?,
        body: get(row, "body")?,
        // Advisory: a value that does not parse loses the trace link, never
        // the event.
        trace: get::<Option<String>>(row, "traceparent")?
            .as_deref()
            .and_then(TraceContext::parse),
    })
}

/// An event's headers as stored.
pub(super) fn encode_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    // postcard cannot fail writing plain data to a Vec; an empty value
    // would be reported as corrupt when read.
    postcard::to_stdvec(headers).unwrap_or_default()
}

/// Columns of an attempt.
pub(super) const ATTEMPT_COLUMNS: &str =
    "number, started_at_ms, duration_ms, status_code, error_kind, error_message, response_snippet";

/// An attempt row.
pub(super) fn attempt(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    let status: Option<i32> = get(row, "status_code")?;
    Ok(AttemptRecord {
        number: u32_of(get(row, "number")?, "attempt number")?,
        started_at_ms: get(row, "started_at_ms")?,
        duration_ms: u64_of(get(row, "duration_ms")?, "attempt duration")?,
        status_code: status
            .map(|s| u16::try_from(s).map_err(|_| StoreError::Corrupt("status code".into())))
            .transpose()?,
        error_kind: get::<Option<String>>(row, "error_kind")?
            .map(|kind| {
                ErrorKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown error kind `{kind}`")))
            })
            .transpose()?,
        error_message: get(row, "error_message")?,
        response_snippet: get(row, "response_snippet")?,
    })
}

/// Columns of an API key.
pub(super) const API_KEY_COLUMNS: &str = "id, name, scopes, prefix, hash, created_at_ms";

/// An API key row.
pub(super) fn api_key(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    let scopes: Vec<String> = get(row, "scopes")?;
    let hash: Vec<u8> = get(row, "hash")?;
    Ok(ApiKeyRecord {
        id: id(row, "id")?,
        name: string(row, "name")?,
        scopes: scopes
            .iter()
            .map(|s| {
                Scope::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown scope {s}")))
            })
            .collect::<Result<_, _>>()?,
        prefix: get(row, "prefix")?,
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("API key hash is not 32 bytes".into()))?,
        created_at_ms: get(row, "created_at_ms")?,
    })
}

/// An API key's scopes as stored.
pub(super) fn scope_names(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_string()).collect()
}

/// A session row (`key_id, csrf, created_at_ms, expires_at_ms`).
pub(super) fn session(row: &PgRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        key_id: id(row, "key_id")?,
        csrf: get(row, "csrf")?,
        created_at_ms: get(row, "created_at_ms")?,
        expires_at_ms: get(row, "expires_at_ms")?,
    })
}

/// The `id` column of a row.
pub(super) fn row_id<T: RawId>(row: &PgRow, column: &str) -> Result<T, StoreError> {
    id(row, column)
}

/// A `bytea` column.
pub(super) fn bytes(row: &PgRow, column: &str) -> Result<Vec<u8>, StoreError> {
    get(row, column)
}
