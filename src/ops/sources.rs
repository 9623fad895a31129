//! Sources: one third-party origin each, with its ingest URL and the
//! provider's signing secret (SPEC §5).

use crate::model::ids::SourceId;
use rand::distributions::{Alphanumeric, DistString};

use super::{Caller, Listed, OpError, Ops, Validation};
use crate::ingest::providers;
use crate::model::provider::{GenericHmacConfig, ProviderKind};
use crate::model::records::{Scope, SourceRecord};
use crate::model::time::now_ms;
use crate::store::{NewSecret, SourceChange, StoreError};

/// How long a replaced secret keeps verifying (and a replaced destination
/// secret keeps signing), so a secret roll loses nothing (SPEC §5, §6).
pub const SECRET_OVERLAP_MS: i64 = 24 * 3600 * 1000;
/// Retention of a source created without one.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// What a new source needs.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub name: String,
    pub provider: ProviderKind,
    pub signing_secret: Option<String>,
    pub retention_days: Option<u32>,
    pub enabled: Option<bool>,
    pub provider_config: Option<GenericHmacConfig>,
}

/// A change to a source; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct SourceEdit {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    /// A new secret; the previous one keeps verifying for 24 hours.
    pub signing_secret: Option<String>,
    pub retention_days: Option<u32>,
    pub provider_config: Option<GenericHmacConfig>,
}

/// A source with how many destinations it has.
#[derive(Debug, Clone)]
pub struct SourceSummary {
    pub source: SourceRecord,
    pub destinations: u64,
}

fn not_found(e: StoreError) -> OpError {
    OpError::from_store(e, "source")
}

impl Ops {
    /// Creates a source with a fresh ingest slug.
    pub async fn create_source(
        &self,
        caller: &Caller,
        new: NewSource,
    ) -> Result<SourceRecord, OpError> {
        caller.require(Scope::Write)?;
        let mut v = Validation::default();
        check_name(&mut v, &new.name);
        let retention_days = new.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
        check_retention(&mut v, retention_days);
        match (&new.signing_secret, providers::get(new.provider).verifies()) {
            (Some(secret), _) => check_secret(&mut v, new.provider, secret),
            (None, true) => v.fail("signing_secret", "is required for this provider"),
            (None, false) => {}
        }
        check_provider_config(&mut v, new.provider, new.provider_config.as_ref());
        v.finish()?;

        let store = self.store();
        let now = now_ms();
        let mut source = SourceRecord {
            id: SourceId::new(),
            slug: new_slug(),
            name: new.name.trim().to_string(),
            provider: new.provider,
            provider_config: new.provider_config,
            signing_secret: new.signing_secret.map(|s| store.seal(s.as_bytes())),
            previous_secret: None,
            enabled: new.enabled.unwrap_or(true),
            retention_days,
            created_at_ms: now,
            updated_at_ms: now,
        };
        // 62^8 slugs make a clash rare; pick again rather than fail.
        for _ in 0..8 {
            let fields = crate::store::audit::source_fields(&source);
            let mut entry = caller.audit("source.create", source.id);
            entry.changes = crate::store::audit::all_fields(fields, true);
            match store
                .create_source_audited(source.clone(), Some(entry))
                .await
            {
                Ok(()) => return Ok(source),
                Err(StoreError::Conflict(_)) => source.slug = new_slug(),
                Err(e) => return Err(e.into()),
            }
        }
        Err(OpError::Conflict("could not pick a free slug".into()))
    }

    /// Sources, newest first, each with its destination count.
    pub async fn list_sources(
        &self,
        caller: &Caller,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Listed<SourceSummary>, OpError> {
        caller.require(Scope::Read)?;
        let page = self.store().list_sources(before, limit).await?;
        Ok(Listed {
            items: page
                .items
                .into_iter()
                .map(|(source, destinations)| SourceSummary {
                    source,
                    destinations,
                })
                .collect(),
            next: page.next,
        })
    }

    /// One source with its destination count.
    pub async fn get_source(
        &self,
        caller: &Caller,
        id: SourceId,
    ) -> Result<SourceSummary, OpError> {
        caller.require(Scope::Read)?;
        let (source, destinations) = self
            .store()
            .source_with_destination_count(id)
            .await
            .map_err(not_found)?;
        Ok(SourceSummary {
            source,
            destinations,
        })
    }

    /// Changes a source. A new secret is checked against the source's
    /// provider and retires the current one for 24 hours.
    pub async fn update_source(
        &self,
        caller: &Caller,
        id: SourceId,
        edit: SourceEdit,
    ) -> Result<SourceSummary, OpError> {
        caller.require(Scope::Write)?;
        // The provider decides how secrets and settings are checked.
        let current = self.store().source(id).await.map_err(not_found)?;
        let mut v = Validation::default();
        if let Some(name) = &edit.name {
            check_name(&mut v, name);
        }
        if let Some(days) = edit.retention_days {
            check_retention(&mut v, days);
        }
        if let Some(secret) = &edit.signing_secret {
            check_secret(&mut v, current.provider, secret);
        }
        if edit.provider_config.is_some() {
            check_provider_config(&mut v, current.provider, edit.provider_config.as_ref());
        }
        v.finish()?;

        // A change of the secret alone is a rotation (SPEC §18 names it).
        let rotation = edit.signing_secret.is_some()
            && edit.name.is_none()
            && edit.enabled.is_none()
            && edit.retention_days.is_none()
            && edit.provider_config.is_none();
        let action = if rotation {
            "source.rotate_secret"
        } else {
            "source.update"
        };
        // The store adds the changed fields, diffed inside its commit.
        let entry = caller.audit(action, id);
        let now = now_ms();
        let change = SourceChange {
            name: edit.name.map(|n| n.trim().to_string()),
            enabled: edit.enabled,
            retention_days: edit.retention_days,
            provider_config: edit.provider_config,
            new_secret: edit.signing_secret.map(|s| NewSecret {
                sealed: self.store().seal(s.as_bytes()),
                previous_until_ms: now + SECRET_OVERLAP_MS,
            }),
            previous_secret_until_ms: None,
            now_ms: now,
        };
        let (source, destinations) = self
            .store()
            .update_source_audited(id, change, Some(entry))
            .await
            .map_err(not_found)?;
        Ok(SourceSummary {
            source,
            destinations,
        })
    }

    /// Deletes a source with its destinations at once; its events and
    /// deliveries are purged right after by the retention task.
    pub async fn delete_source(&self, caller: &Caller, id: SourceId) -> Result<(), OpError> {
        caller.require(Scope::Write)?;
        let current = self.store().source(id).await.map_err(not_found)?;
        let mut entry = caller.audit("source.delete", id);
        entry.changes =
            crate::store::audit::all_fields(crate::store::audit::source_fields(&current), false);
        self.store()
            .delete_source_audited(id, Some(entry))
            .await
            .map_err(not_found)?;
        self.inner.retention.notify_one();
        Ok(())
    }
}

fn new_slug() -> String {
    format!(
        "wh_{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 8)
    )
}

fn check_name(v: &mut Validation, name: &str) {
    let len = name.chars().count();
    v.check(
        (1..=200).contains(&len) && !name.trim().is_empty(),
        "name",
        "must be 1 to 200 characters",
    );
}

fn check_retention(v: &mut Validation, days: u32) {
    v.check(
        (1..=3650).contains(&days),
        "retention_days",
        "must be between 1 and 3650",
    );
}

fn check_secret(v: &mut Validation, provider: ProviderKind, secret: &str) {
    if secret.chars().count() > 1024 {
        v.fail("signing_secret", "must be at most 1024 characters");
    } else if let Err(message) = providers::get(provider).validate_secret(secret.as_bytes()) {
        v.fail(
            "signing_secret",
            message.trim_start_matches("signing_secret "),
        );
    }
}

fn check_provider_config(
    v: &mut Validation,
    provider: ProviderKind,
    config: Option<&GenericHmacConfig>,
) {
    if let Err(message) = providers::get(provider).validate_config(config) {
        v.fail("provider_config", message);
    }
}
