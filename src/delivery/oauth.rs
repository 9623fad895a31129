//! OAuth2 client credentials for destinations (SPEC §13 `auth`): a form
//! POST with HTTP basic client authentication to the destination's
//! `token_url`, through the same SSRF-guarded client as deliveries, and a
//! per-destination token cache (until 30 s before `expires_in`).
//!
//! Tokens and client secrets are never logged; errors say what failed
//! (status, shape), never what was sent or received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use super::client::{guard_literal, DeliveryClient, Reach};
use crate::model::ids::DestinationId;

/// How long before its expiry a cached token is no longer used.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// What a token request needs (the secret opened just for it).
pub struct Grant<'a> {
    pub token_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scope: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// Why no token could be had: a failed attempt with `error_kind` `auth`.
#[derive(Debug, thiserror::Error)]
#[error("OAuth2 token endpoint: {0}")]
pub struct TokenError(String);

struct Cached {
    /// The destination's `updated_at`: a changed destination (new
    /// credentials) never uses a token fetched for the old ones.
    version: i64,
    token: String,
    /// `None`: no `expires_in` was given; kept until a 401.
    usable_until: Option<Instant>,
}

/// Tokens per destination, shared by the lanes of one node.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<DestinationId, Cached>>,
    /// One fetch at a time per destination: attempts that find no token
    /// wait for the one fetching instead of each asking the token
    /// endpoint (which may rate-limit a burst of grants).
    fetching: Mutex<HashMap<DestinationId, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestinationId, Cached>> {
        match self.tokens.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A cached token still usable, if any.
    pub fn cached(&self, destination: DestinationId, version: i64) -> Option<String> {
        let tokens = self.lock();
        let c = tokens.get(&destination)?;
        let fresh = c.usable_until.is_none_or(|until| Instant::now() < until);
        (c.version == version && fresh).then(|| c.token.clone())
    }

    /// Drops a destination's token that the receiver refused (401) —
    /// only that one: a sibling attempt may already have stored a fresh
    /// token, which must not be thrown away with it.
    pub fn forget(&self, destination: DestinationId, rejected: &str) {
        let mut tokens = self.lock();
        if tokens
            .get(&destination)
            .is_some_and(|c| c.token == rejected)
        {
            tokens.remove(&destination);
        }
    }

    fn fetch_lock(&self, destination: DestinationId) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetching = match self.fetching.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        fetching.entry(destination).or_default().clone()
    }

    /// A token: the cached one, or a new one from the token endpoint.
    pub async fn token(
        &self,
        client: &DeliveryClient,
        reach: Reach,
        timeout: Duration,
        destination: DestinationId,
        version: i64,
        grant: &Grant<'_>,
    ) -> Result<String, TokenError> {
        if let Some(token) = self.cached(destination, version) {
            return Ok(token);
        }
        let fetch_lock = self.fetch_lock(destination);
        let _fetching = fetch_lock.lock().await;
        // Whoever held the lock before may have just fetched one.
        if let Some(token) = self.cached(destination, version) {
            return Ok(token);
        }
        let (token, expires_in) = tokio::time::timeout(timeout, fetch(client, reach, grant))
            .await
            .map_err(|_| {
                TokenError(format!(
                    "no answer within {}",
                    humantime::format_duration(timeout)
                ))
            })??;
        let usable_until = expires_in.map(|d| Instant::now() + d.saturating_sub(EXPIRY_MARGIN));
        self.lock().insert(
            destination,
            Cached {
                version,
                token: token.clone(),
                usable_until,
            },
        );
        Ok(token)
    }
}

/// One client-credentials grant (RFC 6749 §4.4): the client id and secret
/// form-encoded into HTTP basic auth (§2.3.1), `scope` and `audience` in
/// the form.
async fn fetch(
    client: &DeliveryClient,
    reach: Reach,
    grant: &Grant<'_>,
) -> Result<(String, Option<Duration>), TokenError> {
    let url =
        url::Url::parse(grant.token_url).map_err(|e| TokenError(format!("token_url: {e}")))?;
    guard_literal(&url, reach).map_err(|e| TokenError(e.to_string()))?;
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = grant.scope {
            form.append_pair("scope", scope);
        }
        if let Some(audience) = grant.audience {
            form.append_pair("audience", audience);
        }
        form.finish()
    };
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(grant.client_id),
        encode(grant.client_secret)
    ));
    let mut auth = http::HeaderValue::from_str(&format!("Basic {basic}"))
        .map_err(|_| TokenError("client credentials cannot be sent in a header".into()))?;
    auth.set_sensitive(true);
    let request = Request::builder()
        .method(Method::POST)
        .uri(grant.token_url)
        .header(http::header::AUTHORIZATION, auth)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            format!("Krafter/{}", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| TokenError(format!("request: {e}")))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| TokenError(format!("request failed: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(TokenError(format!("answered HTTP {status}")));
    }
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|_| TokenError("response unreadable or over 64 KiB".into()))?
        .to_bytes();
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        access_token: String,
        expires_in: Option<serde_json::Number>,
    }
    let parsed: TokenResponse = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError("response is not JSON with an access_token".into()))?;
    if parsed.access_token.is_empty()
        || http::HeaderValue::from_str(&format!("Bearer {}", parsed.access_token)).is_err()
    {
        return Err(TokenError("access_token cannot be sent in a header".into()));
    }
    let expires_in = parsed
        .expires_in
        .and_then(|n| n.as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(1e9)));
    Ok((parsed.access_token, expires_in))
}
