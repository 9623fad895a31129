//! Events and the deliveries they fan out to.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::ids::new_id;
use super::records::{
    DeliveryRecord, DeliveryStatus, DestinationRecord, EventRecord, EventSummary, Record,
};
use super::tables::{
    ATTEMPTS, DEDUP, DELIVERIES, DESTINATIONS, DUE, EVENTS, EVENT_DELIVERIES, SOURCES,
    SOURCE_EVENTS,
};
use super::StoreError;
use crate::ingest::filter;

/// What storing an inbound event did.
#[derive(Debug)]
pub enum IngestOutcome {
    /// Stored, with one pending delivery per matching enabled destination.
    Stored { deliveries: Vec<DeliveryRecord> },
    /// The same provider event id was already stored for this source.
    Duplicate { original: u128 },
}

/// Stores an event and its deliveries in the current transaction, or finds
/// it is a duplicate. The destinations are read inside the same write
/// transaction, so a destination created or disabled concurrently is either
/// fully in or fully out of this event's fan-out.
pub fn ingest(txn: &WriteTransaction, event: &EventRecord) -> Result<IngestOutcome, StoreError> {
    let mut dedup = txn.open_table(DEDUP)?;
    if let Some(pid) = &event.provider_event_id {
        let original = dedup
            .get((event.source_id, pid.as_str()))?
            .map(|g| g.value());
        if let Some(original) = original {
            return Ok(IngestOutcome::Duplicate { original });
        }
    }
    // The source may have been deleted since the handler looked it up.
    if txn.open_table(SOURCES)?.get(event.source_id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    let mut targets = Vec::new();
    {
        let destinations = txn.open_table(DESTINATIONS)?;
        for entry in destinations.range((event.source_id, 0)..=(event.source_id, u128::MAX))? {
            let d = DestinationRecord::decode(entry?.1.value())?;
            if d.enabled && filter::matches(&d.event_filter, &event.event_type) {
                targets.push(d.id);
            }
        }
    }

    if let Some(pid) = &event.provider_event_id {
        dedup.insert((event.source_id, pid.as_str()), event.id)?;
    }
    txn.open_table(EVENTS)?
        .insert(event.id, event.encode().as_slice())?;
    let summary = EventSummary {
        event_type: event.event_type.clone(),
        provider_event_id: event.provider_event_id.clone(),
        received_at_ms: event.received_at_ms,
        size_bytes: event.body.len() as u64,
    };
    txn.open_table(SOURCE_EVENTS)?
        .insert((event.source_id, event.id), summary.encode().as_slice())?;
    let deliveries = insert_deliveries(txn, event, &targets, event.received_at_ms)?;
    Ok(IngestOutcome::Stored { deliveries })
}

/// Creates one pending delivery per destination, due at `due_ms`.
pub fn insert_deliveries(
    txn: &WriteTransaction,
    event: &EventRecord,
    destination_ids: &[u128],
    due_ms: i64,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut by_event = txn.open_table(EVENT_DELIVERIES)?;
    let mut due = txn.open_table(DUE)?;
    let mut out = Vec::with_capacity(destination_ids.len());
    for &destination_id in destination_ids {
        let d = DeliveryRecord {
            id: new_id(),
            event_id: event.id,
            source_id: event.source_id,
            destination_id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: Some(due_ms),
            created_at_ms: due_ms,
            updated_at_ms: due_ms,
        };
        deliveries.insert(d.id, d.encode().as_slice())?;
        by_event.insert((event.id, d.id), ())?;
        due.insert((destination_id, due_ms.max(0) as u64, d.id), event.id)?;
        out.push(d);
    }
    Ok(out)
}

/// One event with its body.
pub fn get(txn: &ReadTransaction, id: u128) -> Result<EventRecord, StoreError> {
    match txn.open_table(EVENTS)?.get(id)? {
        Some(bytes) => EventRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// An event's deliveries, oldest first.
pub fn deliveries_of(
    txn: &ReadTransaction,
    event_id: u128,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let by_event = txn.open_table(EVENT_DELIVERIES)?;
    let deliveries = txn.open_table(DELIVERIES)?;
    let mut out = Vec::new();
    for entry in by_event.range((event_id, 0)..=(event_id, u128::MAX))? {
        let (key, _) = entry?;
        if let Some(bytes) = deliveries.get(key.value().1)? {
            out.push(DeliveryRecord::decode(bytes.value())?);
        }
    }
    Ok(out)
}

/// How many events a source holds (used by tests and metrics).
pub fn count_of_source(txn: &ReadTransaction, source_id: u128) -> Result<u64, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut n = 0;
    for entry in table.range((source_id, 0)..=(source_id, u128::MAX))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Removes an event with its summary, dedup entry, deliveries and their
/// queue entries. Used by source deletion and retention.
pub fn purge(txn: &WriteTransaction, event_id: u128) -> Result<(), StoreError> {
    let Some(event) = txn
        .open_table(EVENTS)?
        .remove(event_id)?
        .map(|bytes| EventRecord::decode(bytes.value()))
        .transpose()?
    else {
        return Ok(());
    };
    txn.open_table(SOURCE_EVENTS)?
        .remove((event.source_id, event_id))?;
    if let Some(pid) = &event.provider_event_id {
        let mut dedup = txn.open_table(DEDUP)?;
        let points_here = dedup
            .get((event.source_id, pid.as_str()))?
            .map(|g| g.value())
            == Some(event_id);
        if points_here {
            dedup.remove((event.source_id, pid.as_str()))?;
        }
    }
    let mut by_event = txn.open_table(EVENT_DELIVERIES)?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut due = txn.open_table(DUE)?;
    let mut attempts = txn.open_table(ATTEMPTS)?;
    let ids: Vec<u128> = by_event
        .extract_from_if((event_id, 0)..=(event_id, u128::MAX), |_, _| true)?
        .map(|entry| entry.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for id in ids {
        if let Some(bytes) = deliveries.remove(id)? {
            let d = DeliveryRecord::decode(bytes.value())?;
            if let Some(at) = d.next_attempt_ms {
                due.remove((d.destination_id, at.max(0) as u64, id))?;
            }
        }
        attempts.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
    }
    Ok(())
}

/// Ids of a source's events, oldest first (for deleting a source).
pub fn ids_of_source(txn: &WriteTransaction, source_id: u128) -> Result<Vec<u128>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut ids = Vec::new();
    for entry in table.range((source_id, 0)..=(source_id, u128::MAX))? {
        ids.push(entry?.0.value().1);
    }
    Ok(ids)
}
