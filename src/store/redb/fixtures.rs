//! Records and stores for the redb module's unit tests, so each test file
//! does not spell out every field of a source or a destination.

use std::sync::Arc;

use super::records::{DestinationRecord, SourceRecord};
use super::RedbStore;
use crate::config::StorageConfig;
use crate::metrics::Metrics;
use crate::model::ids::{DestinationId, SourceId};
use crate::model::provider::ProviderKind;

/// A real store in a fresh temp dir (dropping the dir removes it).
pub fn temp_store() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().join("data"),
        ..StorageConfig::default()
    };
    let store = RedbStore::open(&config, Arc::new(Metrics::new())).unwrap();
    (dir, store)
}

/// An enabled source of provider `none` (no signature), kept 30 days.
pub fn source(id: SourceId, slug: &str) -> SourceRecord {
    SourceRecord {
        id,
        slug: slug.to_string(),
        name: slug.to_string(),
        provider: ProviderKind::None,
        provider_config: None,
        signing_secret: None,
        previous_secret: None,
        enabled: true,
        retention_days: 30,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// An enabled destination of `source_id` taking every event, at an
/// unresolvable URL (these tests never send).
pub fn destination(id: DestinationId, source_id: SourceId) -> DestinationRecord {
    DestinationRecord {
        id,
        source_id,
        url: "https://d.example.invalid/".into(),
        event_filter: vec![],
        enabled: true,
        secret: vec![],
        previous_secret: None,
        rate_limit: None,
        disabled_reason: None,
        disabled_at_ms: None,
        failing_since_ms: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        options: Default::default(),
    }
}
