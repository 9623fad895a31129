//! The enabled sources ingest has looked up lately, by slug, with their
//! signing secrets already opened.
//!
//! Every inbound webhook names its source by slug; reading the record and
//! opening its sealed secrets cost more than verifying the signature. The
//! cache is exact, not timed: it is emptied whenever
//! [`Store::settings_version`] moves on (any source, destination or key
//! changed), and a backend that cannot tell (several nodes) is read every
//! time. Only sources that exist and are enabled are kept, so unknown slugs
//! (anyone can send them) cannot fill it.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::model::records::{RetiredSecret, SourceRecord};
use crate::model::time::now_ms;
use crate::store::{Store, StoreError};

/// Sources kept at most; past this the cache starts over (a store with
/// more sources than this still works, reading more often).
const MAX_SOURCES: usize = 10_000;

/// An enabled source and the secrets it accepts.
pub struct Source {
    record: SourceRecord,
    /// The current secret, then the previous one while its overlap lasts;
    /// `None` if they could not be opened (asked again, to report why).
    secrets: Option<Arc<[Vec<u8>]>>,
    /// When the previous secret stops being accepted (then read again).
    secrets_until_ms: Option<i64>,
}

impl Deref for Source {
    type Target = SourceRecord;

    fn deref(&self) -> &SourceRecord {
        &self.record
    }
}

impl Source {
    /// Opens `record`'s secrets as of `now`.
    fn open(store: &Store, record: SourceRecord, now: i64) -> Source {
        let secrets_until_ms = RetiredSecret::live_until(record.previous_secret.as_ref(), now);
        Source {
            secrets: open_secrets(store, &record, now).ok().map(Arc::from),
            record,
            secrets_until_ms,
        }
    }

    /// The secrets the source accepts now.
    pub fn secrets(&self, store: &Store, now: i64) -> Result<Arc<[Vec<u8>]>, StoreError> {
        match &self.secrets {
            Some(secrets) if self.secrets_until_ms.is_none_or(|until| until > now) => {
                Ok(secrets.clone())
            }
            _ => open_secrets(store, &self.record, now).map(Arc::from),
        }
    }
}

/// The secrets a source accepts at `now`: current, then the previous one
/// while its 24 h overlap lasts.
fn open_secrets(
    store: &Store,
    source: &SourceRecord,
    now: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::with_capacity(2);
    if let Some(sealed) = &source.signing_secret {
        out.push(store.open_secret(sealed)?);
    }
    if let Some(previous) = &source.previous_secret {
        if previous.until_ms > now {
            out.push(store.open_secret(&previous.sealed)?);
        }
    }
    Ok(out)
}

/// Enabled sources by slug, valid for one settings version.
#[derive(Default)]
pub struct SourceCache {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    version: u64,
    by_slug: HashMap<Box<str>, Arc<Source>>,
}

impl SourceCache {
    /// The enabled source named `slug`, from memory when nothing changed
    /// since it was read; `NotFound` for an unknown or disabled one.
    pub async fn get(&self, store: &Store, slug: &str) -> Result<Arc<Source>, StoreError> {
        // Read before the record: a change committed in between moves the
        // version on, and the next lookup reads again.
        let version = store.settings_version();
        if let Some(version) = version {
            let mut kept = lock(&self.kept);
            // Versions only grow; a lookup that read an older one than the
            // cache holds just reads the store.
            if kept.version < version {
                kept.by_slug.clear();
                kept.version = version;
            } else if kept.version == version {
                // Past a retired secret's overlap: read again.
                let live =
                    |s: &&Arc<Source>| s.secrets_until_ms.is_none_or(|until| until > now_ms());
                if let Some(source) = kept.by_slug.get(slug).filter(live) {
                    return Ok(source.clone());
                }
            }
        }
        let record = store.source_by_slug(slug).await?;
        if !record.enabled {
            return Err(StoreError::NotFound);
        }
        let source = Arc::new(Source::open(store, record, now_ms()));
        if let Some(version) = version {
            let mut kept = lock(&self.kept);
            if kept.version == version {
                if kept.by_slug.len() >= MAX_SOURCES {
                    kept.by_slug.clear();
                }
                kept.by_slug.insert(slug.into(), source.clone());
            }
        }
        Ok(source)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
