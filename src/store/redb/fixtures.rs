//! A temp store and records with chosen ids for the redb module's unit
//! tests (the records are the conformance suite's).

use std::sync::Arc;

use super::records::{DestinationRecord, SourceRecord};
use super::RedbStore;
use crate::config::StorageConfig;
use crate::metrics::Metrics;
use crate::model::ids::{DestinationId, SourceId};
use crate::store::conformance;

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

/// The conformance suite's source (enabled, provider `none`), with `id`.
pub fn source(id: SourceId, slug: &str) -> SourceRecord {
    SourceRecord {
        id,
        ..conformance::source(slug)
    }
}

/// The conformance suite's destination taking every event, with `id`.
pub fn destination(id: DestinationId, source_id: SourceId) -> DestinationRecord {
    DestinationRecord {
        id,
        ..conformance::destination(source_id, &[])
    }
}
