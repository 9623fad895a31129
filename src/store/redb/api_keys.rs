//! API keys: stored as SHA-256 hashes, found by hash, compared in constant time.

use crate::model::ids::ApiKeyId;
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};
use subtle::ConstantTimeEq;

use super::records::{ApiKeyRecord, Record};
use super::tables::{API_KEYS, API_KEY_HASHES, DASHBOARD_SESSIONS, KEY_SESSIONS};
use super::{page_by_id, Page, StoreError};

/// Stores a new key.
pub fn insert(txn: &WriteTransaction, key: &ApiKeyRecord) -> Result<(), StoreError> {
    let mut hashes = txn.open_table(API_KEY_HASHES)?;
    if hashes.get(key.hash.as_slice())?.is_some() {
        return Err(StoreError::Conflict(
            "an identical key already exists".into(),
        ));
    }
    hashes.insert(key.hash.as_slice(), key.id.as_u128())?;
    txn.open_table(API_KEYS)?
        .insert(key.id.as_u128(), key.encode().as_slice())?;
    Ok(())
}

/// The key whose SHA-256 is `hash`, if it exists (revoked keys are gone).
///
/// The index lookup finds the candidate; the digest is then compared in
/// constant time, so response timing says nothing about how close a guess was.
pub fn find_by_hash(
    txn: &ReadTransaction,
    hash: &[u8; 32],
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let Some(id) = txn
        .open_table(API_KEY_HASHES)?
        .get(hash.as_slice())?
        .map(|g| g.value())
    else {
        return Ok(None);
    };
    let Some(bytes) = txn.open_table(API_KEYS)?.get(id)? else {
        return Ok(None);
    };
    let record = ApiKeyRecord::decode(bytes.value())?;
    if bool::from(record.hash.ct_eq(hash)) {
        Ok(Some(record))
    } else {
        Ok(None)
    }
}

/// Newest first.
pub fn list(
    txn: &ReadTransaction,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<ApiKeyRecord>, StoreError> {
    page_by_id(&txn.open_table(API_KEYS)?, before, limit)
}

/// How many keys exist (the bootstrap key is made when there are none).
/// Inserts `key` only into an empty key table (the bootstrap key);
/// answers whether it did. Writes are serialised, so this is atomic.
pub fn insert_first(txn: &WriteTransaction, key: &ApiKeyRecord) -> Result<bool, StoreError> {
    if !txn.open_table(API_KEYS)?.is_empty()? {
        return Ok(false);
    }
    insert(txn, key)?;
    Ok(true)
}

pub fn count(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(API_KEYS)?.len()?)
}

/// Revokes a key: both the record and its hash go, so it stops working
/// with the commit.
pub fn delete(txn: &WriteTransaction, id: ApiKeyId) -> Result<(), StoreError> {
    let mut keys = txn.open_table(API_KEYS)?;
    let record = match keys.get(id.as_u128())? {
        Some(bytes) => ApiKeyRecord::decode(bytes.value())?,
        None => return Err(StoreError::NotFound),
    };
    keys.remove(id.as_u128())?;
    txn.open_table(API_KEY_HASHES)?
        .remove(record.hash.as_slice())?;
    // Its dashboard sessions end with it (at most 50, found by index).
    let mut index = txn.open_table(KEY_SESSIONS)?;
    let mut sessions = txn.open_table(DASHBOARD_SESSIONS)?;
    let of_key: Vec<(i64, Vec<u8>)> = index
        .range(key_sessions_of(id))?
        .map(|entry| entry.map(|(k, _)| (k.value().1, k.value().2.to_vec())))
        .collect::<Result<_, _>>()?;
    for (created, hash) in of_key {
        index.remove((id.as_u128(), created, hash.as_slice()))?;
        sessions.remove(hash.as_slice())?;
    }
    Ok(())
}

/// The range of [`KEY_SESSIONS`] holding one key's sessions.
pub fn key_sessions_of(key_id: ApiKeyId) -> std::ops::RangeInclusive<(u128, i64, &'static [u8])> {
    (key_id.as_u128(), i64::MIN, &[][..])..=(key_id.as_u128(), i64::MAX, &[0xff; 64][..])
}
