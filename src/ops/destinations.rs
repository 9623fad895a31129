//! Destinations: the user's URLs that receive a source's events, each with
//! its own signing secret, filter and rate limit (SPEC §6).

use crate::model::ids::{DestinationId, SourceId};
use std::time::Duration;

use base64::Engine;
use rand::RngCore;

use super::sources::SECRET_OVERLAP_MS;
use super::{Caller, Listed, OpError, Ops, Validation};
use crate::config::Config;
use crate::delivery::resolve::Resolver;
use crate::delivery::ssrf;
use crate::model::records::{DestinationRecord, Scope};
use crate::model::time::now_ms;
use crate::store::{DestinationChange, NewSecret, StoreError};

/// How long creation waits for DNS before accepting an unresolved host.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_URL_LEN: usize = 2048;
const MAX_PATTERNS: usize = 100;
const MAX_PATTERN_LEN: usize = 256;

/// What a new destination needs.
#[derive(Debug, Clone)]
pub struct NewDestination {
    pub url: String,
    pub event_filter: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub rate_limit: Option<u32>,
}

/// A change to a destination; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct DestinationEdit {
    pub url: Option<String>,
    pub event_filter: Option<Vec<String>>,
    /// Re-enabling clears why Krafter disabled it.
    pub enabled: Option<bool>,
    /// `0` removes the limit.
    pub rate_limit: Option<u32>,
}

/// A destination with its signing secret in clear: only what creation and
/// rotation answer, once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    pub destination: DestinationRecord,
    pub secret: String,
}

fn not_found(e: StoreError) -> OpError {
    OpError::from_store(e, "source or destination")
}

impl Ops {
    /// Creates a destination of a source with a fresh signing secret.
    pub async fn create_destination(
        &self,
        caller: &Caller,
        source_id: SourceId,
        new: NewDestination,
    ) -> Result<WithSecret, OpError> {
        caller.require(Scope::Write)?;
        self.store().source(source_id).await.map_err(not_found)?;
        let filter = new.event_filter.unwrap_or_default();
        let mut v = Validation::default();
        let url = check_url(
            &self.inner.config,
            self.inner.engine.resolver(),
            &mut v,
            &new.url,
        )
        .await;
        check_filter(&mut v, &filter);
        check_rate_limit(&mut v, new.rate_limit, false);
        v.finish()?;
        let url = url.ok_or_else(|| OpError::invalid("url", "is not valid"))?;

        let secret = new_secret();
        let now = now_ms();
        let record = DestinationRecord {
            id: DestinationId::new(),
            source_id,
            url,
            event_filter: filter,
            enabled: new.enabled.unwrap_or(true),
            secret: self.store().seal(secret.as_bytes()),
            previous_secret: None,
            rate_limit: new.rate_limit,
            disabled_reason: None,
            disabled_at_ms: None,
            failing_since_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let limit = self.inner.config.limits.destinations_per_source;
        self.store()
            .create_destination(record.clone(), limit)
            .await
            .map_err(|e| match e {
                StoreError::LimitReached(limit) => OpError::invalid(
                    "source_id",
                    format!("this source already has {limit} destinations, the most limits.destinations_per_source allows"),
                ),
                other => not_found(other),
            })?;
        self.inner.engine.wake(source_id, record.id);
        Ok(WithSecret {
            destination: record,
            secret,
        })
    }

    /// A source's destinations, newest first (no secrets).
    pub async fn list_destinations(
        &self,
        caller: &Caller,
        source_id: SourceId,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Listed<DestinationRecord>, OpError> {
        caller.require(Scope::Read)?;
        let page = self
            .store()
            .list_destinations(source_id, before, limit)
            .await
            .map_err(not_found)?;
        Ok(page)
    }

    /// One destination.
    pub async fn get_destination(
        &self,
        caller: &Caller,
        source_id: SourceId,
        id: DestinationId,
    ) -> Result<DestinationRecord, OpError> {
        caller.require(Scope::Read)?;
        self.store()
            .destination(source_id, id)
            .await
            .map_err(not_found)
    }

    /// Changes a destination. Disabling cancels its pending deliveries in
    /// the same commit; enabling wakes its lane.
    pub async fn update_destination(
        &self,
        caller: &Caller,
        source_id: SourceId,
        id: DestinationId,
        edit: DestinationEdit,
    ) -> Result<DestinationRecord, OpError> {
        caller.require(Scope::Write)?;
        self.store()
            .destination(source_id, id)
            .await
            .map_err(not_found)?;
        let mut v = Validation::default();
        let mut url = None;
        if let Some(text) = &edit.url {
            url = check_url(
                &self.inner.config,
                self.inner.engine.resolver(),
                &mut v,
                text,
            )
            .await;
        }
        if let Some(filter) = &edit.event_filter {
            check_filter(&mut v, filter);
        }
        check_rate_limit(&mut v, edit.rate_limit, true);
        v.finish()?;

        let change = DestinationChange {
            url,
            event_filter: edit.event_filter,
            rate_limit: edit.rate_limit.map(|limit| (limit > 0).then_some(limit)),
            enabled: edit.enabled,
            new_secret: None,
            now_ms: now_ms(),
        };
        let updated = self
            .store()
            .update_destination(source_id, id, change)
            .await
            .map_err(not_found)?
            .destination;
        if updated.enabled {
            self.inner.engine.wake(source_id, id);
        }
        Ok(updated)
    }

    /// Deletes a destination; its pending deliveries are cancelled and its
    /// lane stops.
    pub async fn delete_destination(
        &self,
        caller: &Caller,
        source_id: SourceId,
        id: DestinationId,
    ) -> Result<(), OpError> {
        caller.require(Scope::Write)?;
        self.store()
            .delete_destination(source_id, id)
            .await
            .map_err(not_found)?;
        // The lane notices its destination is gone and stops.
        self.inner.engine.wake(source_id, id);
        Ok(())
    }

    /// Issues a new signing secret; for 24 hours deliveries carry
    /// signatures with both the new and the previous one.
    pub async fn rotate_destination_secret(
        &self,
        caller: &Caller,
        source_id: SourceId,
        id: DestinationId,
    ) -> Result<WithSecret, OpError> {
        caller.require(Scope::Write)?;
        let secret = new_secret();
        let now = now_ms();
        let change = DestinationChange {
            new_secret: Some(NewSecret {
                sealed: self.store().seal(secret.as_bytes()),
                previous_until_ms: now + SECRET_OVERLAP_MS,
            }),
            now_ms: now,
            ..DestinationChange::default()
        };
        let destination = self
            .store()
            .update_destination(source_id, id, change)
            .await
            .map_err(not_found)?
            .destination;
        Ok(WithSecret {
            destination,
            secret,
        })
    }
}

/// A new destination secret: `whsec_` + base64 of 32 random bytes.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Checks a destination URL's shape, then (unless private networks are
/// allowed) where its host resolves. Returns the URL as it will be stored
/// and sent: normalised (percent-encoding, IDNA, default port dropped), so
/// the SSRF check, the API and the delivery client all see the same target.
/// Names are resolved with the delivery client's own `resolver`.
async fn check_url(
    config: &Config,
    resolver: &Resolver,
    v: &mut Validation,
    text: &str,
) -> Option<String> {
    if text.len() > MAX_URL_LEN {
        v.fail("url", format!("must be at most {MAX_URL_LEN} characters"));
        return None;
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            v.fail("url", format!("is not an absolute URL: {e}"));
            return None;
        }
    };
    // The URL standard reads `\` as `/` and drops tabs and newlines, so
    // `http://a.invalid\@127.0.0.1/` means one host to a browser and another
    // to a reader; refuse such text rather than guess.
    if text
        .chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        v.fail(
            "url",
            "must not contain backslashes, spaces or control characters (percent-encode them)",
        );
        return None;
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        v.fail("url", "must be an http or https URL with a host");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        v.fail(
            "url",
            "must not contain credentials (user:password@): they would be shown to every reader and never sent",
        );
        return None;
    }
    if url.fragment().is_some() {
        v.fail(
            "url",
            "must not contain a fragment (#...): it is never sent",
        );
        return None;
    }
    let normalised = url.as_str().to_string();
    if normalised.len() > MAX_URL_LEN || http::Uri::try_from(normalised.as_str()).is_err() {
        v.fail("url", "cannot be sent as an HTTP request target");
        return None;
    }
    if !config.delivery.allow_private_networks {
        if let Err(e) = ssrf::check_url_host(
            &url,
            resolver,
            RESOLVE_TIMEOUT,
            !config.delivery.loopback_only,
        )
        .await
        {
            v.fail(
                "url",
                format!("{e}; private networks are refused unless delivery.allow_private_networks is true"),
            );
        }
    }
    Some(normalised)
}

fn check_filter(v: &mut Validation, filter: &[String]) {
    v.check(
        filter.len() <= MAX_PATTERNS,
        "event_filter",
        format!("at most {MAX_PATTERNS} patterns"),
    );
    for (i, pattern) in filter.iter().enumerate() {
        let ok = !pattern.is_empty()
            && pattern.chars().count() <= MAX_PATTERN_LEN
            && !pattern.chars().any(char::is_control);
        v.check(
            ok,
            &format!("event_filter[{i}]"),
            format!("must be 1 to {MAX_PATTERN_LEN} printable characters"),
        );
    }
}

fn check_rate_limit(v: &mut Validation, limit: Option<u32>, zero_allowed: bool) {
    if let Some(n) = limit {
        let ok = n <= 10_000 && (n > 0 || zero_allowed);
        v.check(
            ok,
            "rate_limit",
            "must be between 1 and 10000 deliveries per second",
        );
    }
}
