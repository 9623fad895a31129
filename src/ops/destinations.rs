//! Destinations: the user's URLs that receive a source's events, each with
//! its own signing secret, filter and rate limit (SPEC §6).

use crate::model::ids::{DestinationId, SourceId};
use std::time::Duration;

use super::sources::SECRET_OVERLAP_MS;
use super::{Caller, Listed, OpError, Ops, Validation};
use crate::config::Config;
use crate::delivery::resolve::Resolver;
use crate::delivery::ssrf;
use crate::model::body_filter;
use crate::model::records::{AuthRecord, DeliveryOptions, DestinationRecord, Ordering, Scope};
use crate::model::time::now_ms;
use crate::store::{DestinationChange, NewSecret, StoreError};

/// How long creation waits for DNS before accepting an unresolved host.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_URL_LEN: usize = 2048;
const MAX_PATTERNS: usize = 100;
const MAX_PATTERN_LEN: usize = 256;
/// Most extra headers a destination may send (SPEC §13).
const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_CREDENTIAL: usize = 4096;
/// Bounds of a destination's own attempt timeout (SPEC §13).
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Credentials as a user gives them; `Debug` hides the secret parts.
#[derive(Clone)]
pub enum AuthInput {
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        audience: Option<String>,
    },
}

impl std::fmt::Debug for AuthInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            AuthInput::Basic { .. } => "basic",
            AuthInput::Bearer { .. } => "bearer",
            AuthInput::OAuth2ClientCredentials { .. } => "oauth2_client_credentials",
        };
        write!(f, "AuthInput({kind}, <redacted>)")
    }
}

/// A client certificate as given (PEM); `Debug` hides the key.
#[derive(Clone)]
pub struct ClientCertInput {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCertInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCertInput(<redacted>)")
    }
}

/// The delivery options of a create or change (SPEC §13). `None` keeps
/// (or, on creation, leaves out) an option; `Some(None)` removes it.
#[derive(Debug, Clone, Default)]
pub struct OptionsInput {
    pub headers: Option<Option<Vec<(String, String)>>>,
    pub auth: Option<Option<AuthInput>>,
    pub tls_client_certificate: Option<Option<ClientCertInput>>,
    pub body_filter: Option<Option<serde_json::Value>>,
    pub ordering: Option<Ordering>,
    /// Text such as `"5s"`.
    pub timeout: Option<Option<String>>,
}

/// What a new destination needs.
#[derive(Debug, Clone)]
pub struct NewDestination {
    pub url: String,
    pub event_filter: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub rate_limit: Option<u32>,
    pub options: OptionsInput,
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
    pub options: OptionsInput,
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
            "url",
            &new.url,
        )
        .await;
        check_filter(&mut v, &filter);
        check_rate_limit(&mut v, new.rate_limit, false);
        let options = self
            .delivery_options(&mut v, DeliveryOptions::default(), new.options)
            .await;
        v.finish()?;
        let url = url.ok_or_else(|| OpError::invalid("url", "is not valid"))?;

        let secret = crate::delivery::signer::new_secret();
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
            options,
        };
        let limit = self.inner.config.limits.destinations_per_source;
        let mut entry = caller.audit("destination.create", record.id);
        entry.changes =
            crate::store::audit::all_fields(crate::store::audit::destination_fields(&record), true);
        entry = entry.change(
            "source_id",
            serde_json::Value::Null,
            serde_json::json!(source_id.to_string()),
        );
        self.store()
            .create_destination_audited(record.clone(), limit, Some(entry))
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
        let current = self
            .store()
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
                "url",
                text,
            )
            .await;
        }
        let options = self
            .delivery_options(&mut v, current.options.clone(), edit.options)
            .await;
        let options = (options != current.options).then_some(options);
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
            options,
            now_ms: now_ms(),
        };
        // The store adds the changed fields, diffed inside its commit.
        let entry = caller.audit("destination.update", id);
        let updated = self
            .store()
            .update_destination_audited(source_id, id, change, Some(entry))
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
        let current = self
            .store()
            .destination(source_id, id)
            .await
            .map_err(not_found)?;
        let mut entry = caller.audit("destination.delete", id);
        entry.changes = crate::store::audit::all_fields(
            crate::store::audit::destination_fields(&current),
            false,
        );
        self.store()
            .delete_destination_audited(source_id, id, Some(entry))
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
        let secret = crate::delivery::signer::new_secret();
        let now = now_ms();
        let change = DestinationChange {
            new_secret: Some(NewSecret {
                sealed: self.store().seal(secret.as_bytes()),
                previous_until_ms: now + SECRET_OVERLAP_MS,
            }),
            now_ms: now,
            ..DestinationChange::default()
        };
        let entry = caller.audit("destination.rotate_secret", id);
        let destination = self
            .store()
            .update_destination_audited(source_id, id, change, Some(entry))
            .await
            .map_err(not_found)?
            .destination;
        Ok(WithSecret {
            destination,
            secret,
        })
    }
}

impl Ops {
    /// Validates `input` on top of `current` and returns the options to
    /// store, secret parts sealed. Failures go to `v`, named by field path.
    async fn delivery_options(
        &self,
        v: &mut Validation,
        current: DeliveryOptions,
        input: OptionsInput,
    ) -> DeliveryOptions {
        let mut options = current;
        if let Some(headers) = input.headers {
            options.headers = check_headers(v, headers.unwrap_or_default());
        }
        if let Some(auth) = input.auth {
            options.auth = match auth {
                None => None,
                Some(auth) => self.check_auth(v, auth).await,
            };
        }
        if let Some(cert) = input.tls_client_certificate {
            options.tls_client_certificate = match cert {
                None => None,
                Some(cert) => match crate::delivery::mtls::check(&cert.cert_pem, &cert.key_pem) {
                    Ok(info) => Some(crate::model::records::ClientCertRecord {
                        cert_pem: cert.cert_pem,
                        key_pem: self.store().seal(cert.key_pem.as_bytes()),
                        subject: info.subject,
                        not_after_ms: info.not_after_ms,
                    }),
                    Err(e) => {
                        v.fail(&format!("tls_client_certificate.{}", e.field), e.message);
                        None
                    }
                },
            };
        }
        if let Some(filter) = input.body_filter {
            options.body_filter = match filter {
                None => None,
                Some(filter) => match body_filter::validate(&filter) {
                    Ok(text) => Some(text),
                    Err(e) => {
                        v.fail(&e.path, e.message);
                        None
                    }
                },
            };
        }
        if let Some(ordering) = input.ordering {
            options.ordering = ordering;
        }
        if let Some(timeout) = input.timeout {
            options.timeout_ms = match timeout {
                None => None,
                Some(text) => check_timeout(v, &text),
            };
        }
        if options.auth.is_some() && options.headers.iter().any(|(n, _)| n == "authorization") {
            v.fail(
                "headers.authorization",
                "conflicts with auth, which sets the authorization header",
            );
        }
        options
    }

    async fn check_auth(&self, v: &mut Validation, auth: AuthInput) -> Option<AuthRecord> {
        let store = self.store();
        match auth {
            AuthInput::Basic { username, password } => {
                let ok_user = !username.is_empty()
                    && username.len() <= 256
                    && !username.contains(':')
                    && !username.chars().any(char::is_control);
                v.check(
                    ok_user,
                    "auth.username",
                    "must be 1 to 256 characters, without `:` or control characters",
                );
                let ok_pass =
                    password.len() <= MAX_CREDENTIAL && !password.chars().any(char::is_control);
                v.check(
                    ok_pass,
                    "auth.password",
                    format!("must be at most {MAX_CREDENTIAL} bytes, without control characters"),
                );
                (ok_user && ok_pass).then(|| AuthRecord::Basic {
                    username,
                    password: store.seal(password.as_bytes()),
                })
            }
            AuthInput::Bearer { token } => {
                let ok = !token.is_empty()
                    && token.len() <= MAX_CREDENTIAL
                    && token.bytes().all(|b| b.is_ascii_graphic());
                v.check(
                    ok,
                    "auth.token",
                    format!("must be 1 to {MAX_CREDENTIAL} visible ASCII characters"),
                );
                ok.then(|| AuthRecord::Bearer {
                    token: store.seal(token.as_bytes()),
                })
            }
            AuthInput::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
            } => {
                let url = check_url(
                    &self.inner.config,
                    self.inner.engine.resolver(),
                    v,
                    "auth.token_url",
                    &token_url,
                )
                .await;
                let text_ok = |t: &str, max: usize| {
                    !t.is_empty() && t.len() <= max && !t.chars().any(char::is_control)
                };
                let id_ok = text_ok(&client_id, 256) && !client_id.contains(':');
                v.check(
                    id_ok,
                    "auth.client_id",
                    "must be 1 to 256 characters, without `:` or control characters",
                );
                let secret_ok = text_ok(&client_secret, MAX_CREDENTIAL);
                v.check(
                    secret_ok,
                    "auth.client_secret",
                    format!("must be 1 to {MAX_CREDENTIAL} bytes, without control characters"),
                );
                let scope_ok = scope.as_deref().is_none_or(|s| text_ok(s, 1024));
                v.check(scope_ok, "auth.scope", "must be 1 to 1024 characters");
                let audience_ok = audience.as_deref().is_none_or(|s| text_ok(s, 1024));
                v.check(audience_ok, "auth.audience", "must be 1 to 1024 characters");
                let token_url = url?;
                (id_ok && secret_ok && scope_ok && audience_ok).then(|| {
                    AuthRecord::OAuth2ClientCredentials {
                        token_url,
                        client_id,
                        client_secret: store.seal(client_secret.as_bytes()),
                        scope,
                        audience,
                    }
                })
            }
        }
    }
}

/// Checks extra headers (SPEC §13) and returns them with lower-case names.
fn check_headers(v: &mut Validation, headers: Vec<(String, String)>) -> Vec<(String, String)> {
    // Refused before looking at any of them: the work (and the error list)
    // stays bounded however many a request sends.
    if headers.len() > MAX_HEADERS {
        v.fail("headers", format!("at most {MAX_HEADERS} headers"));
        return Vec::new();
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let field = format!("headers.{name}");
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            v.fail(&field, "is not a valid header name");
            continue;
        }
        if crate::http::headers::is_refused_destination_header(&lower) {
            v.fail(
                &field,
                "may not be set: hop-by-hop, host, content-length, content-type, user-agent, traceparent, tracestate, webhook-* and krafter-* headers are Krafter's",
            );
            continue;
        }
        let visible_ascii = value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if value.len() > MAX_HEADER_VALUE
            || !visible_ascii
            || http::HeaderValue::from_str(&value).is_err()
        {
            v.fail(
                &field,
                format!("value must be at most {MAX_HEADER_VALUE} visible ASCII characters"),
            );
            continue;
        }
        if out.iter().any(|(n, _)| *n == lower) {
            v.fail(&field, "is given twice (names are case-insensitive)");
            continue;
        }
        out.push((lower, value));
    }
    out
}

/// Parses a per-destination timeout — whole seconds from `"1s"` to
/// `"120s"`, exactly the form the OpenAPI document's pattern describes —
/// into milliseconds.
fn check_timeout(v: &mut Validation, text: &str) -> Option<u64> {
    let seconds = text
        .strip_suffix('s')
        .filter(|n| !n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (MIN_TIMEOUT.as_secs()..=MAX_TIMEOUT.as_secs()).contains(n));
    if seconds.is_none() {
        v.fail("timeout", "must be whole seconds from \"1s\" to \"120s\"");
    }
    seconds.map(|n| n * 1000)
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
    field: &str,
    text: &str,
) -> Option<String> {
    if text.len() > MAX_URL_LEN {
        v.fail(field, format!("must be at most {MAX_URL_LEN} characters"));
        return None;
    }
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            v.fail(field, format!("is not an absolute URL: {e}"));
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
            field,
            "must not contain backslashes, spaces or control characters (percent-encode them)",
        );
        return None;
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        v.fail(field, "must be an http or https URL with a host");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        v.fail(
            field,
            "must not contain credentials (user:password@): they would be shown to every reader and never sent",
        );
        return None;
    }
    if url.fragment().is_some() {
        v.fail(
            field,
            "must not contain a fragment (#...): it is never sent",
        );
        return None;
    }
    let normalised = url.as_str().to_string();
    if normalised.len() > MAX_URL_LEN || http::Uri::try_from(normalised.as_str()).is_err() {
        v.fail(field, "cannot be sent as an HTTP request target");
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
                field,
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
