//! Dashboard sessions: signing in with an API key, finding the session a
//! cookie names, signing out (SPEC §11).
//!
//! The browser holds a random 256-bit id; storage holds only its SHA-256,
//! so a copy of the data signs no one in. Sessions are stored (not kept in
//! memory) so a restart does not sign everyone out and signing out is as
//! durable as signing in. Each lookup re-reads the API key too: a revoked
//! key ends its sessions at once, and the key's current scopes decide what
//! the user may do.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{api_keys, Caller, OpError, Ops, Via};
use crate::model::records::SessionRecord;
use crate::model::time::now_ms;
use crate::store::Store;

/// How long a session lasts from sign-in; afterwards the user signs in
/// again. Absolute, not sliding, so a stolen cookie has a bounded life.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// Sessions one API key may hold; signing in once more ends the oldest.
pub const MAX_SESSIONS_PER_KEY: usize = 50;

/// A valid session with the key behind it.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie value: enough to sign this session out.
    id_hash: [u8; 32],
    /// When it started: its place in the key's session index.
    created_at_ms: i64,
    /// The CSRF token to embed in this session's forms.
    pub csrf: String,
    /// The signed-in key's name and prefix, shown in the header.
    pub key_name: String,
    pub key_prefix: String,
    /// Who the operations are called as: the signed-in key, its current
    /// scopes, via the dashboard.
    pub caller: Caller,
}

impl Session {
    /// Whether the key may change sources, destinations and events; pages
    /// hide write controls otherwise (the operations refuse them anyway).
    pub fn can_write(&self) -> bool {
        self.caller.can_write()
    }

    /// Whether the key may manage API keys.
    pub fn is_admin(&self) -> bool {
        self.caller.is_admin()
    }
}

/// A fresh random token, URL- and cookie-safe (256 bits).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// See [`Ops::sign_in`]; takes the store so it can be exercised alone.
pub async fn sign_in(store: &Store, key: &str) -> Result<Option<(String, Caller)>, OpError> {
    let Some(caller) = api_keys::authenticate(store, key, Via::Dashboard).await? else {
        return Ok(None);
    };
    let id = random_token();
    let now = now_ms();
    let record = SessionRecord {
        key_id: caller.key_id,
        csrf: random_token(),
        created_at_ms: now,
        expires_at_ms: now + SESSION_TTL_MS,
    };
    store
        .create_session(hash(&id), record, MAX_SESSIONS_PER_KEY)
        .await?;
    Ok(Some((id, caller)))
}

/// See [`Ops::session`].
pub async fn find(store: &Store, cookie_id: &str, now_ms: i64) -> Result<Option<Session>, OpError> {
    let id_hash = hash(cookie_id);
    let Some((record, key)) = store.live_session(id_hash, now_ms).await? else {
        return Ok(None);
    };
    Ok(Some(Session {
        id_hash,
        created_at_ms: record.created_at_ms,
        csrf: record.csrf,
        key_name: key.name.clone(),
        key_prefix: key.prefix,
        caller: Caller {
            key_id: key.id,
            key_name: key.name,
            scopes: key.scopes,
            via: Via::Dashboard,
        },
    }))
}

/// See [`Ops::sign_out`].
pub async fn sign_out(store: &Store, session: &Session) -> Result<(), OpError> {
    store
        .end_session(
            session.id_hash,
            session.caller.key_id,
            session.created_at_ms,
        )
        .await?;
    Ok(())
}

impl Ops {
    /// Signs in with an API key: a new session for it, answered as the
    /// cookie value (the only copy of the id) and the caller; `None` for a
    /// key that is unknown or revoked. The key's expired sessions go in the
    /// same commit and, past [`MAX_SESSIONS_PER_KEY`], its oldest ones.
    pub async fn sign_in(&self, key: &str) -> Result<Option<(String, Caller)>, OpError> {
        sign_in(self.store(), key).await
    }

    /// The live session a cookie value names, with its key; `None` when
    /// unknown, expired, or its key was revoked.
    pub async fn session(&self, cookie_id: &str) -> Result<Option<Session>, OpError> {
        find(self.store(), cookie_id, now_ms()).await
    }

    /// Ends a session (sign-out); one already gone is fine.
    pub async fn sign_out(&self, session: &Session) -> Result<(), OpError> {
        sign_out(self.store(), session).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::records::Scope;

    async fn store_with_key(dir: &std::path::Path) -> (Store, String, crate::model::ids::ApiKeyId) {
        let config = crate::config::StorageConfig {
            path: dir.to_path_buf(),
            cache_size_bytes: 4 * 1024 * 1024,
            ..Default::default()
        };
        let store = Store::open(&config, std::sync::Arc::new(crate::metrics::Metrics::new()))
            .expect("store opens");
        let new = api_keys::generate_key("t", vec![Scope::Read]);
        store
            .create_api_key(new.record.clone())
            .await
            .expect("key stored");
        (store, new.key, new.record.id)
    }

    async fn valid(store: &Store, id: &str) -> bool {
        matches!(find(store, id, now_ms()).await, Ok(Some(_)))
    }

    #[tokio::test]
    async fn a_session_is_valid_until_it_expires() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, key, key_id) = store_with_key(dir.path()).await;
        let (id, caller) = sign_in(&store, &key)
            .await
            .expect("sign in")
            .expect("valid key");
        assert_eq!(caller.key_id, key_id);
        let found = find(&store, &id, now_ms())
            .await
            .expect("read")
            .expect("live");
        assert_eq!(found.caller.key_id, key_id);
        assert_eq!(found.caller.via, Via::Dashboard);
        assert!(!valid(&store, "someone-else").await);
        let expired_at = now_ms() + SESSION_TTL_MS + 1;
        assert!(find(&store, &id, expired_at).await.expect("read").is_none());
        // A key that is not one signs no one in.
        assert!(sign_in(&store, "krf_nope")
            .await
            .expect("sign in")
            .is_none());
        store.close().await;
    }

    #[tokio::test]
    async fn a_key_holds_at_most_fifty_sessions_and_the_oldest_end_first() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, key, _) = store_with_key(dir.path()).await;
        let mut ids = Vec::new();
        for _ in 0..MAX_SESSIONS_PER_KEY + 5 {
            ids.push(
                sign_in(&store, &key)
                    .await
                    .expect("sign in")
                    .expect("valid")
                    .0,
            );
            // Distinct creation times keep "oldest" well defined.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(valid(&store, id).await, i >= 5, "session {i}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn signing_out_or_revoking_the_key_ends_a_session() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, key, key_id) = store_with_key(dir.path()).await;
        let (first, _) = sign_in(&store, &key)
            .await
            .expect("sign in")
            .expect("valid");
        let (second, _) = sign_in(&store, &key)
            .await
            .expect("sign in")
            .expect("valid");
        let session = find(&store, &first, now_ms())
            .await
            .expect("read")
            .expect("live");
        sign_out(&store, &session).await.expect("signed out");
        assert!(!valid(&store, &first).await);
        assert!(valid(&store, &second).await);
        store.revoke_api_key(key_id).await.expect("revoked");
        assert!(!valid(&store, &second).await);
        store.close().await;
    }
}
