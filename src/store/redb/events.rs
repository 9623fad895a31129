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
/// `id_of(i)`. A delivery whose id lies in the event's first fan-out range
/// gets no [`EVENT_DELIVERIES`] row (its id finds it); any other does.
fn insert_into(
    tables: &mut DeliveryTables<'_>,
    event_id: EventId,
    source_id: SourceId,
    destination_ids: &[DestinationId],
    due_ms: i64,
    id_of: impl Fn(u16) -> DeliveryId,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut out = Vec::with_capacity(destination_ids.len());
    let fan_out = fan_out_range(event_id);
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
        // A first fan-out delivery is found by its id's range alone
        // (see [`stored_deliveries_of`]); only the others need an index row.
        if !fan_out.contains(&d.id.as_u128()) {
            tables
                .by_event
                .insert((event_id.as_u128(), d.id.as_u128()), ())?;
        }
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

/// The `DELIVERIES` keys an event's first fan-out can use:
/// [`DeliveryId::for_fan_out`] of index 0 to 65,535, one contiguous range.
fn fan_out_range(event_id: EventId) -> std::ops::RangeInclusive<u128> {
    DeliveryId::for_fan_out(event_id, 0).as_u128()
        ..=DeliveryId::for_fan_out(event_id, u16::MAX).as_u128()
}

/// Every stored delivery of an event, oldest first (by delivery id): the
/// one place that knows where they are, for reads and for writes (any
/// open table will do).
///
/// Why two places: an ingest does not write [`EVENT_DELIVERIES`] rows for
/// its first fan-out (one B-tree insert fewer per delivery on the hot
/// path, issue #14), because those deliveries' ids are the key range
/// [`fan_out_range`] of `DELIVERIES`. So an event's deliveries are that
/// range — keeping only records of this event, since a fresh id of another
/// event's delivery may (with negligible odds) fall in it — and the
/// deliveries its index rows name (replays, retries of a whole event, and
/// in databases written before this change the fan-out ones too, which are
/// then skipped as already found).
pub fn stored_deliveries_of<ED, D>(
    event_deliveries: &ED,
    deliveries: &D,
    event_id: EventId,
) -> Result<Vec<DeliveryRecord>, StoreError>
where
    ED: ReadableTable<(u128, u128), ()>,
    D: ReadableTable<u128, &'static [u8]>,
{
    let range = fan_out_range(event_id);
    let mut out = Vec::new();
    for entry in deliveries.range(range.clone())? {
        let d = DeliveryRecord::decode(entry?.1.value())?;
        if d.event_id == event_id {
            out.push(d);
        }
    }
    for entry in
        event_deliveries.range((event_id.as_u128(), 0)..=(event_id.as_u128(), u128::MAX))?
    {
        let id = entry?.0.value().1;
        if range.contains(&id) {
            // Found by the range scan above (or not this event's).
            continue;
        }
        if let Some(bytes) = deliveries.get(id)? {
            out.push(DeliveryRecord::decode(bytes.value())?);
        }
    }
    // Each part is in id order, but a fresh id may sort before a fan-out
    // one (same millisecond): merge them.
    out.sort_by_key(|d| d.id);
    Ok(out)
}

/// An event's deliveries, oldest first (see [`stored_deliveries_of`]).
pub fn deliveries_of(
    txn: &ReadTransaction,
    event_id: EventId,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    stored_deliveries_of(
        &txn.open_table(EVENT_DELIVERIES)?,
        &txn.open_table(DELIVERIES)?,
        event_id,
    )
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
    let found = stored_deliveries_of(&by_event, &deliveries, event_id)?;
    by_event.retain_in(
        (event_id.as_u128(), 0)..=(event_id.as_u128(), u128::MAX),
        |_, _| false,
    )?;
    for d in found {
        let id = d.id.as_u128();
        deliveries.remove(id)?;
        if let Some(at) = d.next_attempt_ms {
            due.remove((d.destination_id.as_u128(), at.max(0) as u64, id))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::new_id;
    use crate::store::redb::{destinations, fixtures, sources, RedbStore as Store};

    /// A real store holding one source with `n` enabled destinations.
    async fn store_with_destinations(
        n: usize,
    ) -> (tempfile::TempDir, Store, SourceId, Vec<DestinationId>) {
        let (dir, store) = fixtures::temp_store();
        let source_id: SourceId = new_id();
        let destination_ids: Vec<DestinationId> = (0..n).map(|_| new_id()).collect();
        let source = fixtures::source(source_id, "wh_fanidx00");
        let ids = destination_ids.clone();
        store
            .write(move |txn| {
                sources::insert(txn, &source)?;
                for id in ids {
                    let destination = fixtures::destination(id, source_id);
                    destinations::insert(txn, &destination, 100)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        (dir, store, source_id, destination_ids)
    }

    fn event(id: EventId, source_id: SourceId) -> EventRecord {
        EventRecord {
            id,
            source_id,
            received_at_ms: id.timestamp_ms() as i64,
            event_type: "t".into(),
            provider_event_id: None,
            headers: vec![],
            body: vec![],
            trace: None,
        }
    }

    /// Ingests `ids` through the real ingest path; each event's deliveries.
    async fn ingest_all(store: &Store, source_id: SourceId, ids: &[EventId]) {
        let ids = ids.to_vec();
        store
            .write(move |txn| {
                for id in ids {
                    let e = event(id, source_id);
                    let outcome = ingest(txn, &e, &e.encode())?;
                    assert!(matches!(outcome, IngestOutcome::Stored { .. }));
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    /// Every (event id, delivery id) row of the index.
    fn index_rows(store: &Store) -> Vec<(u128, u128)> {
        store
            .read(|txn| {
                let mut rows = Vec::new();
                for entry in txn.open_table(EVENT_DELIVERIES)?.iter()? {
                    rows.push(entry?.0.value());
                }
                Ok(rows)
            })
            .unwrap()
    }

    /// Every delivery id in the durable queue.
    fn queued(store: &Store) -> Vec<u128> {
        store
            .read(|txn| {
                let mut ids = Vec::new();
                for entry in txn.open_table(DUE)?.iter()? {
                    ids.push(entry?.0.value().2);
                }
                Ok(ids)
            })
            .unwrap()
    }

    fn stored(store: &Store, id: DeliveryId) -> bool {
        store
            .read(|txn| Ok(txn.open_table(DELIVERIES)?.get(id.as_u128())?.is_some()))
            .unwrap()
    }

    fn listed(store: &Store, event_id: EventId) -> Vec<DeliveryRecord> {
        store.read(|txn| deliveries_of(txn, event_id)).unwrap()
    }

    fn ids(list: &[DeliveryRecord]) -> Vec<DeliveryId> {
        list.iter().map(|d| d.id).collect()
    }

    #[tokio::test]
    async fn a_fan_out_writes_no_index_rows_and_is_still_listed_with_replays_oldest_first() {
        let (_dir, store, source_id, dests) = store_with_destinations(3).await;
        let event_id: EventId = new_id();
        ingest_all(&store, source_id, &[event_id]).await;
        assert_eq!(index_rows(&store), vec![], "no rows for a first fan-out");
        let fan_out: Vec<DeliveryId> = (0..3)
            .map(|i| DeliveryId::for_fan_out(event_id, i))
            .collect();
        let first = listed(&store, event_id);
        assert_eq!(ids(&first), fan_out);
        let mut to: Vec<DestinationId> = first.iter().map(|d| d.destination_id).collect();
        to.sort();
        let mut expected = dests.clone();
        expected.sort();
        assert_eq!(to, expected, "one delivery per destination");
        assert!(first.iter().all(|d| d.event_id == event_id));

        // A replay's deliveries (fresh ids) keep their rows; so does one
        // whose id sorts before the fan-out's (same millisecond, smallest
        // random part): the list stays in id order.
        let earliest =
            DeliveryId::from_u128(crate::model::ids::ulid_floor(event_id.timestamp_ms() as i64));
        assert!(earliest < fan_out[0]);
        let (d0, d1) = (dests[0], dests[1]);
        let (replayed, early) = store
            .write(move |txn| {
                let replayed = insert_deliveries(txn, event_id, source_id, &[d0, d1], 5)?;
                let early = insert_into(
                    &mut DeliveryTables::open(txn)?,
                    event_id,
                    source_id,
                    &[d1],
                    6,
                    |_| earliest,
                )?;
                Ok((replayed, early))
            })
            .await
            .unwrap();
        let mut rows: Vec<(u128, u128)> = replayed
            .iter()
            .chain(&early)
            .map(|d| (event_id.as_u128(), d.id.as_u128()))
            .collect();
        rows.sort();
        assert_eq!(index_rows(&store), rows, "fresh ids keep their rows");
        let all = listed(&store, event_id);
        let mut expected = vec![earliest];
        expected.extend(&fan_out);
        expected.extend(ids(&replayed));
        assert_eq!(ids(&all), expected, "every delivery once, oldest first");
        store.close().await;
    }

    #[tokio::test]
    async fn old_index_rows_list_each_delivery_once_and_purge_removes_both_kinds() {
        let (_dir, store, source_id, dests) = store_with_destinations(2).await;
        let (old, new, kept): (EventId, EventId, EventId) = (new_id(), new_id(), new_id());
        ingest_all(&store, source_id, &[old, new, kept]).await;
        let dest = dests[0];
        let (old_replayed, new_replayed) = store
            .write(move |txn| {
                // `old` as a database written before this change holds it:
                // an index row for each fan-out delivery too.
                let mut rows = txn.open_table(EVENT_DELIVERIES)?;
                for i in 0..2 {
                    let id = DeliveryId::for_fan_out(old, i);
                    rows.insert((old.as_u128(), id.as_u128()), ())?;
                }
                drop(rows);
                let old_replayed = insert_deliveries(txn, old, source_id, &[dest], 7)?;
                let new_replayed = insert_deliveries(txn, new, source_id, &[dest], 7)?;
                // An attempt of each kind of delivery, to be purged with it.
                let mut attempts = txn.open_table(ATTEMPTS)?;
                for id in [
                    DeliveryId::for_fan_out(old, 0),
                    old_replayed[0].id,
                    DeliveryId::for_fan_out(new, 1),
                    new_replayed[0].id,
                    DeliveryId::for_fan_out(kept, 0),
                ] {
                    attempts.insert((id.as_u128(), 1), b"attempt".as_slice())?;
                }
                Ok((old_replayed[0].id, new_replayed[0].id))
            })
            .await
            .unwrap();
        let fan_out = |e: EventId| (0..2).map(move |i| DeliveryId::for_fan_out(e, i));
        let mut expected: Vec<DeliveryId> = fan_out(old).collect();
        expected.push(old_replayed);
        assert_eq!(ids(&listed(&store, old)), expected, "each delivery once");
        let mut expected: Vec<DeliveryId> = fan_out(new).collect();
        expected.push(new_replayed);
        assert_eq!(ids(&listed(&store, new)), expected);

        store
            .write(move |txn| {
                purge(txn, old)?;
                purge(txn, new)
            })
            .await
            .unwrap();
        let gone: Vec<DeliveryId> = fan_out(old)
            .chain(fan_out(new))
            .chain([old_replayed, new_replayed])
            .collect();
        for id in &gone {
            assert!(!stored(&store, *id), "{id} purged");
        }
        assert!(listed(&store, old).is_empty());
        assert!(listed(&store, new).is_empty());
        let rows = index_rows(&store);
        assert!(
            rows.iter()
                .all(|(e, _)| *e != old.as_u128() && *e != new.as_u128()),
            "{rows:?}"
        );
        let mut due = queued(&store);
        due.sort();
        let kept_ids: Vec<u128> = fan_out(kept).map(|d| d.as_u128()).collect();
        assert_eq!(due, kept_ids, "only the kept event's deliveries are queued");
        let attempts = store
            .read(|txn| {
                let mut keys = Vec::new();
                for entry in txn.open_table(ATTEMPTS)?.iter()? {
                    keys.push(entry?.0.value().0);
                }
                Ok(keys)
            })
            .unwrap();
        assert_eq!(attempts, vec![DeliveryId::for_fan_out(kept, 0).as_u128()]);
        assert_eq!(
            ids(&listed(&store, kept)),
            fan_out(kept).collect::<Vec<_>>()
        );
        store.close().await;
    }

    #[tokio::test]
    async fn events_of_one_millisecond_do_not_share_deliveries() {
        let (_dir, store, source_id, dests) = store_with_destinations(2).await;
        // Two events of one millisecond, as the id generator makes them:
        // random parts one apart, so their fan-out ranges are neighbours.
        let ms = 1_700_000_000_123;
        let random = 0x1234_5678_9abc_def0_1234u128;
        let a = EventId::from_u128(ulid::Ulid::from_parts(ms, random).0);
        let b = EventId::from_u128(ulid::Ulid::from_parts(ms, random + 1).0);
        ingest_all(&store, source_id, &[a, b]).await;
        // A delivery of `b` whose fresh id happens to fall in `a`'s range.
        let stray = DeliveryId::for_fan_out(a, 700);
        let dest = dests[1];
        store
            .write(move |txn| {
                insert_into(
                    &mut DeliveryTables::open(txn)?,
                    b,
                    source_id,
                    &[dest],
                    9,
                    |_| stray,
                )
                .map(drop)
            })
            .await
            .unwrap();
        assert_eq!(index_rows(&store), vec![(b.as_u128(), stray.as_u128())]);
        let of_a = listed(&store, a);
        let of_b = listed(&store, b);
        assert!(of_a.iter().all(|d| d.event_id == a), "{of_a:?}");
        assert!(of_b.iter().all(|d| d.event_id == b), "{of_b:?}");
        assert_eq!(
            ids(&of_a),
            vec![DeliveryId::for_fan_out(a, 0), DeliveryId::for_fan_out(a, 1)]
        );
        let mut expected = vec![DeliveryId::for_fan_out(b, 0), DeliveryId::for_fan_out(b, 1)];
        expected.push(stray);
        expected.sort();
        assert_eq!(ids(&of_b), expected);

        // Purging `a` leaves `b`'s delivery in `a`'s range alone.
        store.write(move |txn| purge(txn, a)).await.unwrap();
        assert!(stored(&store, stray));
        assert!(queued(&store).contains(&stray.as_u128()));
        assert_eq!(ids(&listed(&store, b)), expected);
        assert!(listed(&store, a).is_empty());
        store.close().await;
    }
}
