//! Events and the deliveries they fan out to.

use crate::model::ids::{DeliveryId, DestinationId, EventId, SourceId};
use std::collections::hash_map::Entry;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::hot::{DeliveryTables, HotTables};
use super::records::{
    DeliveryRecord, DeliveryStatus, DestinationRecord, EventRecord, EventSummary, Record,
};
use super::tables::{
    ATTEMPTS, DEDUP, DELIVERIES, DESTINATIONS, DUE, EVENTS, EVENT_DELIVERIES, SOURCE_EVENTS,
};
use super::StoreError;
use crate::model::{body_filter, filter};
use crate::store::{EventQuery, IngestOutcome, MAX_SCAN_PER_PAGE};

impl HotTables<'_> {
    /// Stores an event and its deliveries, or finds it is a duplicate. The
    /// destinations are read inside the same write transaction, so a
    /// destination created or disabled concurrently is either fully in or
    /// fully out of this event's fan-out.
    /// `encoded` is `event` as stored ([`Record::encode`]).
    pub fn ingest(
        &mut self,
        event: &EventRecord,
        encoded: &[u8],
    ) -> Result<IngestOutcome, StoreError> {
        if let Some(pid) = &event.provider_event_id {
            let original = self
                .dedup
                .get((event.source_id.as_u128(), pid.as_str()))?
                .map(|g| EventId::from_u128(g.value()));
            if let Some(original) = original {
                return Ok(IngestOutcome::Duplicate { original });
            }
        }
        // The source may have been deleted since the handler looked it up.
        if self.sources.get(event.source_id.as_u128())?.is_none() {
            return Err(StoreError::NotFound);
        }
        let body = body_filter::Body::new(&event.body);
        let targets: Vec<DestinationId> = self
            .enabled_destinations_of(event.source_id)?
            .iter()
            .filter(|d| d.accepts(&event.event_type, &body))
            .map(|d| d.id)
            .collect();
        if let Some(pid) = &event.provider_event_id {
            self.dedup.insert(
                (event.source_id.as_u128(), pid.as_str()),
                event.id.as_u128(),
            )?;
        }
        let deliveries = self.store_with_deliveries(event, encoded, &targets)?;
        Ok(IngestOutcome::Stored { deliveries })
    }

    /// Writes an event, its list summary and one pending delivery (due at
    /// once) per destination in `targets`. The caller has checked that the
    /// source exists and chosen the targets.
    fn store_with_deliveries(
        &mut self,
        event: &EventRecord,
        encoded: &[u8],
        targets: &[DestinationId],
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.events.insert(event.id.as_u128(), encoded)?;
        let summary = EventSummary {
            event_type: event.event_type.clone(),
            provider_event_id: event.provider_event_id.clone(),
            received_at_ms: event.received_at_ms,
            size_bytes: event.body.len() as u64,
        };
        self.source_events.insert(
            (event.source_id.as_u128(), event.id.as_u128()),
            summary.encode().as_slice(),
        )?;
        // An event's first fan-out numbers its deliveries from its id, so
        // that replaying the write-ahead log after a crash recreates the
        // same ids.
        insert_into(
            &mut self.deliveries,
            event.id,
            event.source_id,
            targets,
            event.received_at_ms,
            |index| DeliveryId::for_fan_out(event.id, index),
        )
    }

    /// Applies one write-ahead log record (an ingest, see
    /// [`logged_ingest`]) again after a crash: exactly what the original
    /// ingest did, unless the database already holds the event (the record
    /// was applied before a checkpoint the log did not yet reflect). An
    /// ingest that failed logically then (its source deleted) fails the
    /// same way now and is skipped.
    pub fn replay_logged(&mut self, record: &[u8]) -> Result<(), StoreError> {
        let event = EventRecord::decode(record)?;
        if self.events.get(event.id.as_u128())?.is_some() {
            return Ok(());
        }
        match self.ingest(&event, record) {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn enabled_destinations_of(
        &mut self,
        source_id: SourceId,
    ) -> Result<&[body_filter::Target], StoreError> {
        let destinations = match self.fan_out.entry(source_id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let mut enabled = Vec::new();
                for entry in self
                    .destinations
                    .range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))?
                {
                    let d = DestinationRecord::decode(entry?.1.value())?;
                    if d.enabled {
                        enabled.push(body_filter::Target::of(&d));
                    }
                }
                slot.insert(enabled)
            }
        };
        Ok(destinations)
    }
}

/// Stores an event and its deliveries in `txn` (see
/// [`HotTables::ingest`]), for tests that set up stored events directly.
#[cfg(test)]
pub fn ingest(
    txn: &WriteTransaction,
    event: &EventRecord,
    encoded: &[u8],
) -> Result<IngestOutcome, StoreError> {
    HotTables::open(txn)?.ingest(event, encoded)
}

/// The write-ahead log record of an ingest: the event record as stored.
pub fn logged_ingest(event: &EventRecord) -> Vec<u8> {
    event.encode()
}

/// Writes an event, its list summary and one pending delivery (due at once)
/// per destination in `targets`, chosen by the caller (a test event).
pub fn store_with_deliveries(
    txn: &WriteTransaction,
    event: &EventRecord,
    encoded: &[u8],
    targets: &[DestinationId],
) -> Result<Vec<DeliveryRecord>, StoreError> {
    HotTables::open(txn)?.store_with_deliveries(event, encoded, targets)
}

/// Creates one pending delivery per destination, due at `due_ms`, with new
/// ids (an event sent again: replays, retries of a whole event).
pub fn insert_deliveries(
    txn: &WriteTransaction,
    event_id: EventId,
    source_id: SourceId,
    destination_ids: &[DestinationId],
    due_ms: i64,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    insert_into(
        &mut DeliveryTables::open(txn)?,
        event_id,
        source_id,
        destination_ids,
        due_ms,
        |_| DeliveryId::new(),
    )
}

/// Creates one pending delivery per destination, the `i`-th with id
/// `id_of(i)`.
fn insert_into(
    tables: &mut DeliveryTables<'_>,
    event_id: EventId,
    source_id: SourceId,
    destination_ids: &[DestinationId],
    due_ms: i64,
    id_of: impl Fn(u16) -> DeliveryId,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut out = Vec::with_capacity(destination_ids.len());
    for (index, &destination_id) in destination_ids.iter().enumerate() {
        // At most `limits.destinations_per_source` (≤ 65,536) targets.
        let d = DeliveryRecord {
            id: id_of(u16::try_from(index).unwrap_or(u16::MAX)),
            event_id,
            source_id,
            destination_id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: Some(due_ms),
            created_at_ms: due_ms,
            updated_at_ms: due_ms,
        };
        tables
            .deliveries
            .insert(d.id.as_u128(), d.encode().as_slice())?;
        tables
            .by_event
            .insert((event_id.as_u128(), d.id.as_u128()), ())?;
        tables.due.insert(
            (
                destination_id.as_u128(),
                due_ms.max(0) as u64,
                d.id.as_u128(),
            ),
            event_id.as_u128(),
        )?;
        out.push(d);
    }
    Ok(out)
}

/// One event with its body.
pub fn get(txn: &ReadTransaction, id: EventId) -> Result<EventRecord, StoreError> {
    match txn.open_table(EVENTS)?.get(id.as_u128())? {
        Some(bytes) => EventRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// An event's deliveries, oldest first.
pub fn deliveries_of(
    txn: &ReadTransaction,
    event_id: EventId,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let by_event = txn.open_table(EVENT_DELIVERIES)?;
    let deliveries = txn.open_table(DELIVERIES)?;
    let mut out = Vec::new();
    for entry in by_event.range((event_id.as_u128(), 0)..=(event_id.as_u128(), u128::MAX))? {
        let (key, _) = entry?;
        if let Some(bytes) = deliveries.get(key.value().1)? {
            out.push(DeliveryRecord::decode(bytes.value())?);
        }
    }
    Ok(out)
}

/// How many events a source holds (used by tests and metrics).
pub fn count_of_source(txn: &ReadTransaction, source_id: SourceId) -> Result<u64, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut n = 0;
    for entry in table.range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Removes an event with its summary, dedup entry, deliveries and their
/// queue entries. Used by source deletion and retention.
pub fn purge(txn: &WriteTransaction, event_id: EventId) -> Result<(), StoreError> {
    let Some(event) = txn
        .open_table(EVENTS)?
        .remove(event_id.as_u128())?
        .map(|bytes| EventRecord::decode(bytes.value()))
        .transpose()?
    else {
        return Ok(());
    };
    txn.open_table(SOURCE_EVENTS)?
        .remove((event.source_id.as_u128(), event_id.as_u128()))?;
    if let Some(pid) = &event.provider_event_id {
        let mut dedup = txn.open_table(DEDUP)?;
        let points_here = dedup
            .get((event.source_id.as_u128(), pid.as_str()))?
            .map(|g| g.value())
            == Some(event_id.as_u128());
        if points_here {
            dedup.remove((event.source_id.as_u128(), pid.as_str()))?;
        }
    }
    let mut by_event = txn.open_table(EVENT_DELIVERIES)?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut due = txn.open_table(DUE)?;
    let mut attempts = txn.open_table(ATTEMPTS)?;
    let ids: Vec<u128> = by_event
        .extract_from_if(
            (event_id.as_u128(), 0)..=(event_id.as_u128(), u128::MAX),
            |_, _| true,
        )?
        .map(|entry| entry.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for id in ids {
        if let Some(bytes) = deliveries.remove(id)? {
            let d = DeliveryRecord::decode(bytes.value())?;
            if let Some(at) = d.next_attempt_ms {
                due.remove((d.destination_id.as_u128(), at.max(0) as u64, id))?;
            }
        }
        attempts.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
    }
    Ok(())
}

/// A page of a source's events, newest first, from the summary index (no
/// bodies are read). `next` is set when more may follow.
pub fn list(
    txn: &ReadTransaction,
    source_id: SourceId,
    query: &EventQuery,
    limit: usize,
) -> Result<super::Page<(EventId, EventSummary)>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    // An event's `received_at` is its id's millisecond: time bounds are
    // key bounds (the exact check below guards the edges).
    let mut upper = query.before_id.unwrap_or(u128::MAX);
    if let Some(before) = query.before_ms {
        upper = upper.min(crate::model::ids::ulid_floor(before));
    }
    let lower = query
        .after_ms
        .map(|after| crate::model::ids::ulid_floor(after.saturating_add(1)))
        .unwrap_or(0);
    let patterns: Vec<String> = query.type_pattern.iter().cloned().collect();
    let mut items = Vec::new();
    let mut last_seen = None;
    for (scanned, entry) in table
        .range((source_id.as_u128(), lower)..(source_id.as_u128(), upper))?
        .rev()
        .enumerate()
    {
        let (key, value) = entry?;
        let id = key.value().1;
        if items.len() == limit || scanned == MAX_SCAN_PER_PAGE {
            return Ok(super::Page {
                items,
                next: last_seen,
            });
        }
        last_seen = Some(id);
        let summary = EventSummary::decode(value.value())?;
        let in_time = query.after_ms.is_none_or(|a| summary.received_at_ms > a)
            && query.before_ms.is_none_or(|b| summary.received_at_ms < b);
        if in_time && filter::matches(&patterns, &summary.event_type) {
            items.push((EventId::from_u128(id), summary));
        }
    }
    Ok(super::Page { items, next: None })
}

/// A source's event ids with `after < id < before`, oldest first, whose
/// type matches `type_pattern`: what the live stream (SPEC §14) sends next.
/// `next` is the last id examined when the page was cut (by `limit` or the
/// scan bound); every id up to it has been looked at.
pub fn after(
    txn: &ReadTransaction,
    source_id: SourceId,
    after: u128,
    before: u128,
    type_pattern: Option<&str>,
    limit: usize,
) -> Result<super::Page<EventId>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let patterns: Vec<String> = type_pattern.iter().map(|p| p.to_string()).collect();
    let mut items = Vec::new();
    let mut last_seen = None;
    if after >= before {
        return Ok(super::Page { items, next: None });
    }
    let lower = after.saturating_add(1);
    for (scanned, entry) in table
        .range((source_id.as_u128(), lower)..(source_id.as_u128(), before))?
        .enumerate()
    {
        let (key, value) = entry?;
        if items.len() == limit || scanned == MAX_SCAN_PER_PAGE {
            return Ok(super::Page {
                items,
                next: last_seen,
            });
        }
        let id = key.value().1;
        last_seen = Some(id);
        if patterns.is_empty() || {
            let summary = EventSummary::decode(value.value())?;
            filter::matches(&patterns, &summary.event_type)
        } {
            items.push(EventId::from_u128(id));
        }
    }
    Ok(super::Page { items, next: None })
}

/// One event's summary, read inside a write (an event checked and changed
/// in the same commit).
pub fn summary_in_write(
    txn: &WriteTransaction,
    source_id: SourceId,
    event_id: EventId,
) -> Result<EventSummary, StoreError> {
    match txn
        .open_table(SOURCE_EVENTS)?
        .get((source_id.as_u128(), event_id.as_u128()))?
    {
        Some(bytes) => EventSummary::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// One event's summary (for the detail view and replay).
pub fn summary(
    txn: &ReadTransaction,
    source_id: SourceId,
    event_id: EventId,
) -> Result<EventSummary, StoreError> {
    match txn
        .open_table(SOURCE_EVENTS)?
        .get((source_id.as_u128(), event_id.as_u128()))?
    {
        Some(bytes) => EventSummary::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// Those of `ids` that still exist and are enabled, read in the write
/// transaction that is about to queue deliveries to them.
pub fn enabled_destinations(
    txn: &WriteTransaction,
    source_id: SourceId,
    ids: &[DestinationId],
) -> Result<Vec<DestinationId>, StoreError> {
    let table = txn.open_table(DESTINATIONS)?;
    let mut live = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Some(bytes) = table.get((source_id.as_u128(), id.as_u128()))? {
            if DestinationRecord::decode(bytes.value())?.enabled {
                live.push(id);
            }
        }
    }
    Ok(live)
}
