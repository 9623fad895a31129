//! The audit log's entries (SPEC §15): who changed what, through which
//! door, written by every backend in the same commit as the change itself.
//!
//! Backend-neutral on purpose: the diff of an update is computed here from
//! the record before and after the change, inside the backend's commit, so
//! the `[old, new]` pairs describe exactly what that commit did (a
//! concurrent change cannot slip between the read and the write), and no
//! backend can record a secret that the other would hide.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::ids::AuditId;
use crate::model::records::{DeliveryOptions, DestinationRecord, SourceRecord};

/// What a secret's value is recorded as: the change is visible, the value
/// never is (SPEC §15 "never a secret").
pub const SECRET: &str = "(secret)";

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// The API key the change was made with (`key_...`); `None` for the
    /// local operator (`krafter api-keys ...` on the data directory).
    pub api_key_id: Option<String>,
    /// The key's name at the time (it survives the key's revocation).
    pub name: String,
    /// `api`, `dashboard` or `cli`.
    pub via: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: AuditId,
    pub at_ms: i64,
    pub actor: AuditActor,
    /// `destination.update`, … (SPEC §18 names them).
    pub action: String,
    /// The id of what changed (`dst_...`, `src_...`, `key_...`, …).
    pub target_id: String,
    /// Field → `[old, new]`; secrets appear only as [`SECRET`].
    pub changes: BTreeMap<String, [Value; 2]>,
}

impl AuditEntry {
    /// A new entry made now, with no changes yet.
    pub fn new(actor: AuditActor, action: &str, target_id: String) -> AuditEntry {
        let id = AuditId::new();
        AuditEntry {
            id,
            // The entry's time is its id's, so the log's id order (its
            // cursor) and time order (its filters, retention) agree.
            at_ms: i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX),
            actor,
            action: action.to_owned(),
            target_id,
            changes: BTreeMap::new(),
        }
    }

    /// Adds a `[old, new]` pair.
    pub fn change(mut self, field: &str, old: Value, new: Value) -> AuditEntry {
        self.changes.insert(field.to_owned(), [old, new]);
        self
    }

    /// The stored form (JSON: the changes are free JSON values, which
    /// postcard cannot hold).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<AuditEntry, crate::store::StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("audit entry: {e}")))
    }
}

/// Filters of `GET /api/v1/audit-log`, applied by the backend while paging.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// The actor's API key id (`key_...`) or, failing that, its name.
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Only entries at or after this time (Unix ms).
    pub after_ms: Option<i64>,
    /// Only entries before this time (Unix ms).
    pub before_ms: Option<i64>,
}

impl AuditQuery {
    /// Whether `entry` passes every filter.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let actor_ok = self
            .actor
            .as_deref()
            .is_none_or(|a| entry.actor.api_key_id.as_deref() == Some(a) || entry.actor.name == a);
        actor_ok
            && self.action.as_deref().is_none_or(|a| entry.action == a)
            && self.after_ms.is_none_or(|t| entry.at_ms >= t)
            && self.before_ms.is_none_or(|t| entry.at_ms < t)
    }
}

fn diff(out: &mut BTreeMap<String, [Value; 2]>, field: &str, old: Value, new: Value) {
    if old != new {
        out.insert(field.to_owned(), [old, new]);
    }
}

fn secret_diff(out: &mut BTreeMap<String, [Value; 2]>, field: &str, changed: bool, had: bool) {
    if changed {
        let old = if had { json!(SECRET) } else { Value::Null };
        out.insert(field.to_owned(), [old, json!(SECRET)]);
    }
}

/// The public, secret-free view of a destination's fields, for
/// creation (`[null, value]`) and deletion (`[value, null]`).
pub fn destination_fields(d: &DestinationRecord) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    out.insert("url".into(), json!(d.url));
    out.insert("event_filter".into(), json!(d.event_filter));
    out.insert("enabled".into(), json!(d.enabled));
    out.insert("rate_limit".into(), json!(d.rate_limit));
    out.insert("secret".into(), json!(SECRET));
    for (k, v) in options_fields(&d.options) {
        out.insert(k, v);
    }
    out
}

/// A destination's options without secret values: header values and
/// credentials are replaced by [`SECRET`] (a header may carry a token).
fn options_fields(o: &DeliveryOptions) -> Vec<(String, Value)> {
    let headers: BTreeMap<&str, &str> = o
        .headers
        .iter()
        .map(|(n, _)| (n.as_str(), SECRET))
        .collect();
    vec![
        ("headers".into(), json!(headers)),
        (
            "auth".into(),
            o.auth.as_ref().map_or(
                Value::Null,
                |a| json!({"type": a.kind(), "credentials": SECRET}),
            ),
        ),
        (
            "tls_client_certificate".into(),
            o.tls_client_certificate.as_ref().map_or(
                Value::Null,
                |c| json!({"subject": c.subject, "key": SECRET}),
            ),
        ),
        ("body_filter".into(), json!(o.body_filter)),
        (
            "ordering".into(),
            json!(format!("{:?}", o.ordering).to_lowercase()),
        ),
        ("timeout_ms".into(), json!(o.timeout_ms)),
    ]
}

/// What an update changed in a destination, secrets as [`SECRET`].
pub fn destination_changes(
    old: &DestinationRecord,
    new: &DestinationRecord,
) -> BTreeMap<String, [Value; 2]> {
    let mut out = BTreeMap::new();
    diff(&mut out, "url", json!(old.url), json!(new.url));
    diff(
        &mut out,
        "event_filter",
        json!(old.event_filter),
        json!(new.event_filter),
    );
    diff(&mut out, "enabled", json!(old.enabled), json!(new.enabled));
    diff(
        &mut out,
        "rate_limit",
        json!(old.rate_limit),
        json!(new.rate_limit),
    );
    secret_diff(&mut out, "secret", old.secret != new.secret, true);
    for ((field, before), (_, after)) in options_fields(&old.options)
        .into_iter()
        .zip(options_fields(&new.options))
    {
        diff(&mut out, &field, before, after);
    }
    // Same shape, new value: a credential or header value was replaced.
    if old.options.headers != new.options.headers && !out.contains_key("headers") {
        out.insert("headers".into(), [json!(SECRET), json!(SECRET)]);
    }
    if old.options.auth != new.options.auth && !out.contains_key("auth") {
        out.insert("auth".into(), [json!(SECRET), json!(SECRET)]);
    }
    if old.options.tls_client_certificate != new.options.tls_client_certificate
        && !out.contains_key("tls_client_certificate")
    {
        out.insert(
            "tls_client_certificate".into(),
            [json!(SECRET), json!(SECRET)],
        );
    }
    out
}

/// The public, secret-free view of a source's fields.
pub fn source_fields(s: &SourceRecord) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    out.insert("name".into(), json!(s.name));
    out.insert("slug".into(), json!(s.slug));
    out.insert("provider".into(), json!(s.provider.as_str()));
    out.insert("enabled".into(), json!(s.enabled));
    out.insert("retention_days".into(), json!(s.retention_days));
    if s.signing_secret.is_some() {
        out.insert("signing_secret".into(), json!(SECRET));
    }
    out
}

/// What an update changed in a source, secrets as [`SECRET`].
pub fn source_changes(old: &SourceRecord, new: &SourceRecord) -> BTreeMap<String, [Value; 2]> {
    let mut out = BTreeMap::new();
    diff(&mut out, "name", json!(old.name), json!(new.name));
    diff(&mut out, "enabled", json!(old.enabled), json!(new.enabled));
    diff(
        &mut out,
        "retention_days",
        json!(old.retention_days),
        json!(new.retention_days),
    );
    secret_diff(
        &mut out,
        "signing_secret",
        old.signing_secret != new.signing_secret,
        old.signing_secret.is_some(),
    );
    if old.provider_config != new.provider_config {
        // The generic provider's header names and encoding; no secret.
        diff(
            &mut out,
            "provider_config",
            serde_json::to_value(&old.provider_config).unwrap_or(Value::Null),
            serde_json::to_value(&new.provider_config).unwrap_or(Value::Null),
        );
    }
    out
}

/// `[null, value]` for each field (a creation) or `[value, null]` (a
/// deletion).
pub fn all_fields(fields: BTreeMap<String, Value>, created: bool) -> BTreeMap<String, [Value; 2]> {
    fields
        .into_iter()
        .map(|(k, v)| {
            let pair = if created {
                [Value::Null, v]
            } else {
                [v, Value::Null]
            };
            (k, pair)
        })
        .collect()
}
