//! Sources and their ingest slugs.

use crate::model::ids::SourceId;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::records::{Record, SourceRecord};
use super::tables::{DESTINATIONS, SOURCES, SOURCE_SLUGS};
use super::{page_by_id, Page, StoreError};

/// Stores a new source; its slug must be unused.
pub fn insert(txn: &WriteTransaction, source: &SourceRecord) -> Result<(), StoreError> {
    let mut slugs = txn.open_table(SOURCE_SLUGS)?;
    if slugs.get(source.slug.as_str())?.is_some() {
        return Err(StoreError::Conflict(format!(
            "slug {} is taken",
            source.slug
        )));
    }
    super::writer::note_settings_written();
    slugs.insert(source.slug.as_str(), source.id.as_u128())?;
    txn.open_table(SOURCES)?
        .insert(source.id.as_u128(), source.encode().as_slice())?;
    Ok(())
}

/// One source by id.
pub fn get(txn: &ReadTransaction, id: SourceId) -> Result<SourceRecord, StoreError> {
    match txn.open_table(SOURCES)?.get(id.as_u128())? {
        Some(bytes) => SourceRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// One source by its ingest slug.
pub fn get_by_slug(txn: &ReadTransaction, slug: &str) -> Result<SourceRecord, StoreError> {
    let id = txn
        .open_table(SOURCE_SLUGS)?
        .get(slug)?
        .map(|g| SourceId::from_u128(g.value()))
        .ok_or(StoreError::NotFound)?;
    get(txn, id)
}

/// Newest first.
pub fn list(
    txn: &ReadTransaction,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<SourceRecord>, StoreError> {
    page_by_id(&txn.open_table(SOURCES)?, before, limit)
}

/// Reads, changes and writes back one source. `change` may refuse (its
/// error is returned and nothing is written).
pub fn update(
    txn: &WriteTransaction,
    id: SourceId,
    change: impl FnOnce(&mut SourceRecord) -> Result<(), StoreError>,
) -> Result<SourceRecord, StoreError> {
    let mut table = txn.open_table(SOURCES)?;
    let mut source = match table.get(id.as_u128())? {
        Some(bytes) => SourceRecord::decode(bytes.value())?,
        None => return Err(StoreError::NotFound),
    };
    change(&mut source)?;
    super::writer::note_settings_written();
    table.insert(id.as_u128(), source.encode().as_slice())?;
    Ok(source)
}

/// Removes a source with its slug and destinations; its events follow in
/// the background (see the comment inside).
pub fn delete(txn: &WriteTransaction, id: SourceId) -> Result<(), StoreError> {
    let mut table = txn.open_table(SOURCES)?;
    let source = match table.get(id.as_u128())? {
        Some(bytes) => SourceRecord::decode(bytes.value())?,
        None => return Err(StoreError::NotFound),
    };
    super::writer::note_settings_written();
    table.remove(id.as_u128())?;
    txn.open_table(SOURCE_SLUGS)?.remove(source.slug.as_str())?;
    txn.open_table(DESTINATIONS)?
        .retain_in((id.as_u128(), 0)..=(id.as_u128(), u128::MAX), |_, _| false)?;
    // Its events and deliveries are purged afterwards in small chunks
    // (`retention::purge_orphans`): a source with millions of events must
    // not become one huge transaction that stalls every ingest. Nothing can
    // reach them meanwhile: the slug and destinations are gone, so ingest
    // answers 404, the API 404 and the delivery lanes stop.
    Ok(())
}
