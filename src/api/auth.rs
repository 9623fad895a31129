//! Bearer API keys: generation, the bootstrap admin key, and the extractor
//! that authenticates every `/api/v1` request.

use std::path::PathBuf;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rand::distributions::{Alphanumeric, DistString};

use super::error::ApiError;
use super::AppState;
use crate::model::ids::new_id;
use crate::model::records::{ApiKeyRecord, Scope};
use crate::model::time;
use crate::ops::Via;
use crate::store::crypto::{hash_key, write_private_file};
use crate::store::{Store, StoreError};

/// Every key starts with this, so leaked keys are recognisable (and
/// greppable by secret scanners).
pub const KEY_PREFIX: &str = "krf_";
/// Random base62 characters after the prefix (~238 bits).
const KEY_RANDOM_CHARS: usize = 40;
/// Name of the bootstrap key file inside `storage.path`.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// A freshly made key: the record to store and the key to show once.
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// Makes a new random key with the given name and scopes.
pub fn generate_key(name: &str, scopes: Vec<Scope>) -> NewKey {
    let key = format!(
        "{KEY_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, KEY_RANDOM_CHARS)
    );
    let record = ApiKeyRecord {
        id: new_id(),
        name: name.to_string(),
        scopes,
        prefix: key.chars().take(8).collect(),
        hash: hash_key(&key),
        created_at_ms: time::now_ms(),
    };
    NewKey { record, key }
}

/// On first start (no key exists) makes an admin key and writes it to
/// `<storage.path>/admin.key` (0600). Returns the file's path when it made one.
///
/// The file is written before the key is committed: a crash in between
/// leaves no key in the database, so the next start simply makes another.
pub async fn ensure_bootstrap_key(store: &Store) -> Result<Option<PathBuf>, StoreError> {
    if store.count_api_keys().await? > 0 {
        return Ok(None);
    }
    let new = generate_key("bootstrap admin", vec![Scope::Admin]);
    let path = store.dir().join(ADMIN_KEY_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::io(
                format!("removing stale {}", path.display()),
                e,
            ))
        }
    }
    write_private_file(&path, format!("{}\n", new.key).as_bytes())?;
    store.create_api_key(new.record).await?;
    Ok(Some(path))
}

/// The authenticated caller of an API request (a bearer key), or of an
/// in-process caller that authenticated by other means and inserted one as
/// a request extension.
pub use crate::ops::Caller;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Set only by in-process callers (the dashboard, after checking its
        // session); a network request cannot carry request extensions.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let key = bearer_token(parts).ok_or_else(|| {
            ApiError::unauthorized("send an API key as `Authorization: Bearer krf_...`")
        })?;
        // Keys we never issue are refused without touching storage.
        if !key.starts_with(KEY_PREFIX) || key.len() > 256 {
            return Err(ApiError::unauthorized("unknown or revoked API key"));
        }
        let hash = hash_key(key);
        match state.store.api_key_by_hash(hash).await? {
            Some(record) => Ok(Caller {
                key_id: record.id,
                scopes: record.scopes,
                via: Via::Api,
            }),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let new = generate_key("ci", vec![Scope::Write]);
        assert!(new.key.starts_with("krf_"));
        assert_eq!(new.key.len(), 4 + KEY_RANDOM_CHARS);
        assert!(new.key[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(new.record.prefix, &new.key[..8]);
        assert_ne!(new.record.hash, [0u8; 32]);
        assert_ne!(generate_key("ci", vec![]).key, new.key);
    }
}
