//! API keys: made, listed, revoked and checked (SPEC §3). Only a key's
//! SHA-256 is stored; the key itself is shown once.
//!
//! These take the store rather than [`Ops`] because the CLI manages keys
//! with the server stopped, without a delivery engine.

use crate::model::ids::ApiKeyId;
use std::path::PathBuf;

use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

use super::{Caller, Listed, OpError, Ops, Validation, Via};
use crate::model::records::{ApiKeyRecord, Scope};
use crate::model::time;
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
        id: ApiKeyId::new(),
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
    // The file first: a key in the store that nobody can read would lock
    // everyone out. Nodes of one database starting at once: only the one
    // whose key is stored keeps its file (SPEC §18).
    write_private_file(&path, format!("{}\n", new.key).as_bytes())?;
    if store.create_first_api_key(new.record).await? {
        return Ok(Some(path));
    }
    std::fs::remove_file(&path)
        .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
    Ok(None)
}

/// Checks a key's name and scopes, as the API and the CLI both need.
pub fn validate_key_request(name: &str, scopes: &[String]) -> Result<Vec<Scope>, OpError> {
    let mut v = Validation::default();
    let name_len = name.chars().count();
    v.check(
        (1..=200).contains(&name_len) && !name.trim().is_empty(),
        "name",
        "must be 1 to 200 characters",
    );
    let mut parsed = Vec::new();
    for (i, s) in scopes.iter().enumerate() {
        match Scope::parse(s) {
            Some(scope) if !parsed.contains(&scope) => parsed.push(scope),
            Some(_) => {}
            None => v.fail(
                &format!("scopes[{i}]"),
                format!("unknown scope `{s}`; use webhooks:read, webhooks:write or admin"),
            ),
        }
    }
    v.check(!scopes.is_empty(), "scopes", "give at least one scope");
    v.finish()?;
    parsed.sort();
    Ok(parsed)
}

/// Creates a key with `name` and `scopes` (public names); answers the
/// record and the key, which is never shown again.
pub async fn create(
    store: &Store,
    caller: &Caller,
    name: &str,
    scopes: &[String],
) -> Result<NewKey, OpError> {
    caller.require(Scope::Admin)?;
    let scopes = validate_key_request(name, scopes)?;
    let new = generate_key(name.trim(), scopes);
    let scope_names: Vec<&str> = new.record.scopes.iter().map(|s| s.as_str()).collect();
    let entry = caller
        .audit("api_key.create", new.record.id)
        .change("name", Value::Null, json!(new.record.name))
        .change("scopes", Value::Null, json!(scope_names))
        .change("prefix", Value::Null, json!(new.record.prefix));
    store
        .create_api_key_audited(new.record.clone(), Some(entry))
        .await?;
    Ok(new)
}

/// Keys, newest first.
pub async fn list(
    store: &Store,
    caller: &Caller,
    before: Option<u128>,
    limit: usize,
) -> Result<Listed<ApiKeyRecord>, OpError> {
    caller.require(Scope::Admin)?;
    Ok(store.list_api_keys(before, limit).await?)
}

/// Revokes a key; it stops working with the commit, and its dashboard
/// sessions end with it.
pub async fn revoke(store: &Store, caller: &Caller, id: ApiKeyId) -> Result<(), OpError> {
    caller.require(Scope::Admin)?;
    store
        .revoke_api_key_audited(id, Some(caller.audit("api_key.revoke", id)))
        .await
        .map_err(|e| OpError::from_store(e, "API key"))
}

/// The caller a presented key stands for, via `via`; `None` for a key we
/// never issued, or one revoked.
pub async fn authenticate(store: &Store, key: &str, via: Via) -> Result<Option<Caller>, OpError> {
    // Keys we never issue are refused without touching storage.
    if !key.starts_with(KEY_PREFIX) || key.len() > 256 {
        return Ok(None);
    }
    Ok(store
        .api_key_by_hash(hash_key(key))
        .await?
        .map(|record| Caller {
            key_id: record.id,
            key_name: record.name,
            scopes: record.scopes,
            via,
        }))
}

/// The audit log's actor name for the local operator (no API key).
pub const LOCAL_OPERATOR: &str = "local operator";

impl Caller {
    /// The operator at the machine (`krafter api-keys ...` on the data
    /// directory): whoever can read the data directory holds every right.
    pub fn local_admin() -> Caller {
        Caller {
            key_id: ApiKeyId::from_u128(0),
            key_name: LOCAL_OPERATOR.to_owned(),
            scopes: vec![Scope::Admin],
            via: Via::Cli,
        }
    }
}

impl Ops {
    /// See [`create`].
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        name: &str,
        scopes: &[String],
    ) -> Result<NewKey, OpError> {
        create(self.store(), caller, name, scopes).await
    }

    /// See [`list`].
    pub async fn list_api_keys(
        &self,
        caller: &Caller,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Listed<ApiKeyRecord>, OpError> {
        list(self.store(), caller, before, limit).await
    }

    /// See [`revoke`].
    pub async fn revoke_api_key(&self, caller: &Caller, id: ApiKeyId) -> Result<(), OpError> {
        revoke(self.store(), caller, id).await
    }
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
