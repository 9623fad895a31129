//! Dashboard sessions: stored under the SHA-256 of their id, indexed per
//! API key so a sign-in can cap and sweep one key's sessions without
//! scanning everyone's.

use crate::model::ids::ApiKeyId;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::api_keys::key_sessions_of;
use super::records::{ApiKeyRecord, Record, SessionRecord};
use super::tables::{API_KEYS, DASHBOARD_SESSIONS, KEY_SESSIONS};
use super::StoreError;

/// Stores `session` under `id_hash`. The key's expired sessions go and,
/// past `max_per_key`, its oldest live ones: the work is bounded by one
/// key's sessions.
pub fn create(
    txn: &WriteTransaction,
    id_hash: &[u8; 32],
    session: &SessionRecord,
    max_per_key: usize,
) -> Result<(), StoreError> {
    let key_id = session.key_id;
    let now = session.created_at_ms;
    let mut index = txn.open_table(KEY_SESSIONS)?;
    let mut sessions = txn.open_table(DASHBOARD_SESSIONS)?;
    let mut live = Vec::new();
    let mut ended = Vec::new();
    for entry in index.range(key_sessions_of(key_id))? {
        let (k, _) = entry?;
        let (_, created, hash) = k.value();
        let alive = sessions
            .get(hash)?
            .and_then(|v| SessionRecord::decode(v.value()).ok())
            .is_some_and(|r| r.expires_at_ms > now);
        let place = (created, hash.to_vec());
        if alive {
            live.push(place);
        } else {
            ended.push(place);
        }
    }
    // Oldest first (the index order): make room for this one.
    let excess = (live.len() + 1).saturating_sub(max_per_key);
    ended.extend(live.into_iter().take(excess));
    for (created, hash) in ended {
        index.remove((key_id.as_u128(), created, hash.as_slice()))?;
        sessions.remove(hash.as_slice())?;
    }
    sessions.insert(id_hash.as_slice(), session.encode().as_slice())?;
    index.insert((key_id.as_u128(), now, id_hash.as_slice()), ())?;
    Ok(())
}

/// The session under `id_hash` if it has not expired at `now_ms`, with its
/// key; `None` when unknown, expired or its key was revoked.
pub fn live(
    txn: &ReadTransaction,
    id_hash: &[u8; 32],
    now_ms: i64,
) -> Result<Option<(SessionRecord, ApiKeyRecord)>, StoreError> {
    let Some(bytes) = txn
        .open_table(DASHBOARD_SESSIONS)?
        .get(id_hash.as_slice())?
        .map(|v| v.value().to_vec())
    else {
        return Ok(None);
    };
    let session = SessionRecord::decode(&bytes)?;
    if session.expires_at_ms <= now_ms {
        return Ok(None);
    }
    let Some(key) = txn
        .open_table(API_KEYS)?
        .get(session.key_id.as_u128())?
        .map(|v| v.value().to_vec())
    else {
        return Ok(None);
    };
    Ok(Some((session, ApiKeyRecord::decode(&key)?)))
}

/// Ends a session; one already gone is fine.
pub fn end(
    txn: &WriteTransaction,
    id_hash: &[u8; 32],
    key_id: ApiKeyId,
    created_at_ms: i64,
) -> Result<(), StoreError> {
    txn.open_table(DASHBOARD_SESSIONS)?
        .remove(id_hash.as_slice())?;
    txn.open_table(KEY_SESSIONS)?
        .remove((key_id.as_u128(), created_at_ms, id_hash.as_slice()))?;
    Ok(())
}
