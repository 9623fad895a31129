//! Dashboard sessions: who is signed in, and the proof that a form came
//! from our own page.
//!
//! A session is made by signing in with an API key. The browser holds a
//! random 256-bit id in an `HttpOnly; SameSite=Strict; Path=/dashboard`
//! cookie (`Secure` over TLS); the database holds only its SHA-256, so a
//! copy of `krafter.redb` signs no one in. Sessions live in redb (through
//! the one writer, like every other write) rather than in memory so that a
//! restart or upgrade does not sign everyone out, and so that signing out
//! is as durable as signing in.
//!
//! Each request re-reads the session *and* the API key it was made with:
//! a revoked key (its record is gone) ends its sessions at once, and the
//! key's scopes, not a copy taken at sign-in, decide what the user may do.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::DashboardError;
use super::form::Form;
use super::Dashboard;
use crate::model::records::SessionRecord;
use crate::model::time::now_ms;
use crate::ops::{Caller, Via};
use crate::store::{Store, StoreError};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "krafter_session";
/// Name of the short-lived cookie that protects the sign-in form itself
/// (there is no session yet to bind a token to).
pub const SIGN_IN_COOKIE: &str = "krafter_sign_in";
/// How long a session lasts from sign-in; afterwards the user signs in
/// again. Absolute, not sliding, so a stolen cookie has a bounded life.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// How long a sign-in form stays usable.
const SIGN_IN_TTL_SECS: i64 = 3600;
/// Sessions one API key may hold; signing in once more ends the oldest.
pub const MAX_SESSIONS_PER_KEY: usize = 50;
/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// A valid session with the key behind it, as handlers see it.
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

/// Constant-time equality of two tokens, so timing says nothing about how
/// much of a guess was right.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Starts a session for `key`; returns the cookie value (the only copy of
/// the id). In the same commit the key's expired sessions are swept and,
/// past [`MAX_SESSIONS_PER_KEY`], its oldest ones end: the work is bounded
/// by one key's sessions, never a scan of everyone's.
pub async fn create(store: &Store, key_id: u128) -> Result<String, StoreError> {
    let id = random_token();
    let now = now_ms();
    let record = SessionRecord {
        key_id,
        csrf: random_token(),
        created_at_ms: now,
        expires_at_ms: now + SESSION_TTL_MS,
    };
    store
        .create_session(hash(&id), record, MAX_SESSIONS_PER_KEY)
        .await?;
    Ok(id)
}

/// Ends a session (sign-out). Ending one that is already gone is fine.
pub async fn end(store: &Store, session: &Session) -> Result<(), StoreError> {
    let (id_hash, key_id, created) = (
        session.id_hash,
        session.caller.key_id,
        session.created_at_ms,
    );
    store.end_session(id_hash, key_id, created).await
}

/// What a cookie value turned out to be.
enum Lookup {
    Valid(Session),
    /// Unknown, expired, or its key was revoked.
    Invalid,
}

async fn lookup(store: &Store, id: &str) -> Result<Lookup, StoreError> {
    let id_hash = hash(id);
    let Some((record, key)) = store.live_session(id_hash, now_ms()).await? else {
        return Ok(Lookup::Invalid);
    };
    Ok(Lookup::Valid(Session {
        id_hash,
        created_at_ms: record.created_at_ms,
        csrf: record.csrf,
        key_name: key.name,
        key_prefix: key.prefix,
        caller: Caller {
            key_id: key.id,
            scopes: key.scopes,
            via: Via::Dashboard,
        },
    }))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value with the flags every dashboard cookie carries.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    )
}

/// The session cookie for a new session.
pub fn session_cookie(id: &str, secure: bool) -> String {
    set_cookie(SESSION_COOKIE, id, SESSION_TTL_MS / 1000, secure)
}

/// The cookie that binds a sign-in form to this browser.
pub fn sign_in_cookie(token: &str, secure: bool) -> String {
    set_cookie(SIGN_IN_COOKIE, token, SIGN_IN_TTL_SECS, secure)
}

/// Where to come back to after signing in: only paths inside the
/// dashboard, so the sign-in page cannot be used as an open redirect.
pub fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?;
    let ok = next.starts_with("/dashboard/")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    ok.then(|| next.to_string())
}

impl FromRequestParts<Dashboard> for Session {
    type Rejection = DashboardError;

    /// A request without a valid session is sent to the sign-in page,
    /// remembering (for GETs) where it was going.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let next = (parts.method == Method::GET)
            .then(|| parts.uri.path_and_query().map(|p| p.as_str().to_string()))
            .flatten();
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(DashboardError::SignIn { next });
        };
        if id.is_empty() || id.len() > 128 {
            return Err(DashboardError::SignIn { next });
        }
        match lookup(state.ops.store(), id).await? {
            Lookup::Valid(session) => Ok(session),
            Lookup::Invalid => Err(DashboardError::SignIn { next }),
        }
    }
}

/// A state-changing form post from a signed-in user whose CSRF token
/// matched. Every dashboard POST but sign-in takes this, so none can forget
/// the check.
pub struct SignedForm {
    pub session: Session,
    pub form: Form,
}

impl FromRequest<Dashboard> for SignedForm {
    type Rejection = DashboardError;

    async fn from_request(request: Request, state: &Dashboard) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let form = Form::from_request(Request::from_parts(parts, body), state).await?;
        let given = form.get(CSRF_FIELD).unwrap_or("");
        if !tokens_match(&session.csrf, given) {
            return Err(DashboardError::Csrf);
        }
        Ok(SignedForm { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_cookie_safe() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, random_token());
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "ab"));
        assert!(!tokens_match("abc", ""));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; krafter_session=xyz".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "krafter"), None);
    }

    #[test]
    fn cookie_flags() {
        let c = session_cookie("id", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(c.contains("Path=/dashboard") && !c.contains("Secure"));
        assert!(session_cookie("id", true).ends_with("; Secure"));
    }

    async fn store_with_key(dir: &std::path::Path) -> (Store, crate::model::records::ApiKeyRecord) {
        let config = crate::config::StorageConfig {
            path: dir.to_path_buf(),
            cache_size_bytes: 4 * 1024 * 1024,
            ..Default::default()
        };
        let store = Store::open(&config, std::sync::Arc::new(crate::metrics::Metrics::new()))
            .expect("store opens");
        let key = crate::ops::api_keys::generate_key("t", vec![crate::model::records::Scope::Read])
            .record;
        store.create_api_key(key.clone()).await.expect("key stored");
        (store, key)
    }

    async fn valid(store: &Store, id: &str) -> bool {
        matches!(lookup(store, id).await, Ok(Lookup::Valid(_)))
    }

    #[tokio::test]
    async fn a_session_is_valid_until_it_expires() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, key) = store_with_key(dir.path()).await;
        let id = create(&store, key.id).await.expect("session");
        assert!(
            matches!(lookup(&store, &id).await, Ok(Lookup::Valid(s)) if s.caller.key_id == key.id)
        );
        assert!(!valid(&store, "someone-else").await);
        // Past its expiry the store no longer answers it.
        let expired_at = now_ms() + SESSION_TTL_MS + 1;
        let live = store
            .live_session(hash(&id), expired_at)
            .await
            .expect("read");
        assert!(live.is_none());
        store.close().await;
    }

    #[tokio::test]
    async fn a_key_holds_at_most_fifty_sessions_and_the_oldest_end_first() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, key) = store_with_key(dir.path()).await;
        let mut ids = Vec::new();
        for _ in 0..MAX_SESSIONS_PER_KEY + 5 {
            ids.push(create(&store, key.id).await.expect("session"));
            // Distinct creation times keep "oldest" well defined.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(valid(&store, id).await, i >= 5, "session {i}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_revoked_key_ends_its_sessions() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, key) = store_with_key(dir.path()).await;
        let id = create(&store, key.id).await.expect("session");
        assert!(valid(&store, &id).await);
        store.revoke_api_key(key.id).await.expect("revoked");
        assert!(!valid(&store, &id).await);
        store.close().await;
    }

    #[test]
    fn next_stays_inside_the_dashboard() {
        assert_eq!(
            safe_next(Some("/dashboard/sources?x=1")).as_deref(),
            Some("/dashboard/sources?x=1")
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/dashboard//evil",
            "/api/v1/api-keys",
            "/dashboard/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad}");
        }
    }
}
