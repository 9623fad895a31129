//! Destinations, keyed by (source, destination) so a source's destinations
//! are one contiguous range.

use crate::model::ids::{DestinationId, SourceId};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::records::{DestinationRecord, Record};
use super::tables::{DESTINATIONS, SOURCES};
use super::{Page, StoreError};

/// Stores a new destination of an existing source.
pub fn insert(
    txn: &WriteTransaction,
    destination: &DestinationRecord,
    max_per_source: usize,
) -> Result<(), StoreError> {
    if txn
        .open_table(SOURCES)?
        .get(destination.source_id.as_u128())?
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let mut table = txn.open_table(DESTINATIONS)?;
    // Counted inside the write, so concurrent creations cannot pass the cap.
    let existing = table
        .range((destination.source_id.as_u128(), 0)..=(destination.source_id.as_u128(), u128::MAX))?
        .take(max_per_source)
        .count();
    if existing >= max_per_source {
        return Err(StoreError::LimitReached(max_per_source));
    }
    super::writer::note_settings_written();
    table.insert(
        (destination.source_id.as_u128(), destination.id.as_u128()),
        destination.encode().as_slice(),
    )?;
    Ok(())
}

/// One destination of a source.
pub fn get(
    txn: &ReadTransaction,
    source_id: SourceId,
    id: DestinationId,
) -> Result<DestinationRecord, StoreError> {
    match txn
        .open_table(DESTINATIONS)?
        .get((source_id.as_u128(), id.as_u128()))?
    {
        Some(bytes) => DestinationRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// A source's destinations, newest first.
pub fn list(
    txn: &ReadTransaction,
    source_id: SourceId,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<DestinationRecord>, StoreError> {
    super::page_in_source(&txn.open_table(DESTINATIONS)?, source_id, before, limit)
}

/// Every destination of a source (for counting and, later, fan-out).
pub fn all_of_source(
    txn: &ReadTransaction,
    source_id: SourceId,
) -> Result<Vec<DestinationRecord>, StoreError> {
    let table = txn.open_table(DESTINATIONS)?;
    let mut out = Vec::new();
    for entry in table.range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))? {
        out.push(DestinationRecord::decode(entry?.1.value())?);
    }
    Ok(out)
}

/// How many destinations a source has.
pub fn count_of_source(txn: &ReadTransaction, source_id: SourceId) -> Result<u64, StoreError> {
    let table = txn.open_table(DESTINATIONS)?;
    let mut n = 0;
    for entry in table.range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Reads, changes and writes back one destination; `change` may refuse.
pub fn update(
    txn: &WriteTransaction,
    source_id: SourceId,
    id: DestinationId,
    change: impl FnOnce(&mut DestinationRecord) -> Result<(), StoreError>,
) -> Result<DestinationRecord, StoreError> {
    let mut table = txn.open_table(DESTINATIONS)?;
    let mut destination = match table.get((source_id.as_u128(), id.as_u128()))? {
        Some(bytes) => DestinationRecord::decode(bytes.value())?,
        None => return Err(StoreError::NotFound),
    };
    change(&mut destination)?;
    super::writer::note_settings_written();
    table.insert(
        (source_id.as_u128(), id.as_u128()),
        destination.encode().as_slice(),
    )?;
    Ok(destination)
}

/// Removes one destination.
pub fn delete(
    txn: &WriteTransaction,
    source_id: SourceId,
    id: DestinationId,
) -> Result<(), StoreError> {
    super::writer::note_settings_written();
    match txn
        .open_table(DESTINATIONS)?
        .remove((source_id.as_u128(), id.as_u128()))?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound),
    }
}

/// Every destination of every source, as (source id, destination id):
/// the delivery engine starts one lane per destination at boot.
pub fn all_ids(txn: &ReadTransaction) -> Result<Vec<(SourceId, DestinationId)>, StoreError> {
    let table = txn.open_table(DESTINATIONS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (source, destination) = entry?.0.value();
        out.push((
            SourceId::from_u128(source),
            DestinationId::from_u128(destination),
        ));
    }
    Ok(out)
}
