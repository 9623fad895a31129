//! The delivery queue: what is due per destination, and recording attempts.

use crate::model::ids::{DeliveryId, DestinationId, EventId};
use std::collections::HashSet;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::hot::{DeliveryTables, HotTables};
use super::records::{AttemptRecord, DeliveryRecord, DeliveryStatus, DestinationRecord, Record};
use super::tables::{ATTEMPTS, DELIVERIES, DUE};
use super::StoreError;
use crate::store::{AttemptOutcome, DueItem, Next, Recorded};

/// Up to `limit` deliveries of `destination` due at or before `now_ms`,
/// earliest first, skipping those already in flight; plus when the next
/// one not taken falls due (to sleep until then).
pub fn due_for(
    txn: &ReadTransaction,
    destination: DestinationId,
    now_ms: u64,
    in_flight: &HashSet<DeliveryId>,
    limit: usize,
) -> Result<(Vec<DueItem>, Option<u64>), StoreError> {
    let table = txn.open_table(DUE)?;
    let mut items = Vec::new();
    let range = table
        .range((destination.as_u128(), 0, 0)..=(destination.as_u128(), u64::MAX, u128::MAX))?;
    for entry in range {
        let (key, value) = entry?;
        let (_, due_ms, delivery_id) = key.value();
        let delivery_id = DeliveryId::from_u128(delivery_id);
        if in_flight.contains(&delivery_id) {
            continue;
        }
        if due_ms > now_ms || items.len() == limit {
            return Ok((items, Some(due_ms)));
        }
        items.push(DueItem {
            delivery_id,
            event_id: EventId::from_u128(value.value()),
            due_ms,
        });
    }
    Ok((items, None))
}

/// The destination's pending delivery first in event order (event id,
/// then delivery id), due or not. The queue is keyed by due time, so this
/// reads the destination's whole queue: a `fifo` destination's backlog
/// costs a scan per attempt (documented with `ordering`).
pub fn fifo_head(
    txn: &ReadTransaction,
    destination: DestinationId,
) -> Result<Option<DueItem>, StoreError> {
    let table = txn.open_table(DUE)?;
    let mut head: Option<(u128, u128, u64)> = None;
    for entry in
        table.range((destination.as_u128(), 0, 0)..=(destination.as_u128(), u64::MAX, u128::MAX))?
    {
        let (key, value) = entry?;
        let (_, due_ms, delivery_id) = key.value();
        let event_id = value.value();
        if head.is_none_or(|(e, d, _)| (event_id, delivery_id) < (e, d)) {
            head = Some((event_id, delivery_id, due_ms));
        }
    }
    Ok(head.map(|(event_id, delivery_id, due_ms)| DueItem {
        delivery_id: DeliveryId::from_u128(delivery_id),
        event_id: EventId::from_u128(event_id),
        due_ms,
    }))
}

/// Deliveries waiting (the queue depth).
pub fn pending_count(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(DUE)?.len()?)
}

/// Earliest due time over the given destinations' queues.
pub fn oldest_due(
    txn: &ReadTransaction,
    destinations: &[DestinationId],
) -> Result<Option<u64>, StoreError> {
    let table = txn.open_table(DUE)?;
    let mut oldest: Option<u64> = None;
    for &d in destinations {
        let first = table
            .range((d.as_u128(), 0, 0)..=(d.as_u128(), u64::MAX, u128::MAX))?
            .next()
            .transpose()?;
        if let Some((key, _)) = first {
            let due = key.value().1;
            oldest = Some(oldest.map_or(due, |o| o.min(due)));
        }
    }
    Ok(oldest)
}

/// Records an attempt in `txn` (see [`HotTables::record_attempt`]), for
/// tests that drive the queue directly.
#[cfg(test)]
pub fn record_attempt(txn: &WriteTransaction, o: &AttemptOutcome) -> Result<Recorded, StoreError> {
    HotTables::open(txn)?.record_attempt(o)
}

impl HotTables<'_> {
    /// Records an attempt: the attempt row, the delivery's new state and
    /// queue position, and the destination's failure run (auto-disable).
    pub fn record_attempt(&mut self, o: &AttemptOutcome) -> Result<Recorded, StoreError> {
        let Some(mut delivery) = self
            .deliveries
            .deliveries
            .get(o.item.delivery_id.as_u128())?
            .map(|b| DeliveryRecord::decode(b.value()))
            .transpose()?
        else {
            // The event (or its source) was deleted meanwhile.
            return Ok(Recorded {
                stale: true,
                ..Recorded::default()
            });
        };
        let destination = self
            .destinations
            .get((o.source_id.as_u128(), o.destination_id.as_u128()))?
            .map(|b| DestinationRecord::decode(b.value()))
            .transpose()?;

        self.attempts.insert(
            (delivery.id.as_u128(), o.attempt.number),
            o.attempt.encode().as_slice(),
        )?;
        let now = o.attempt.started_at_ms + o.attempt.duration_ms as i64;
        let queued = self
            .deliveries
            .due
            .remove((
                o.destination_id.as_u128(),
                o.item.due_ms,
                delivery.id.as_u128(),
            ))?
            .is_some();
        let mut recorded = Recorded::default();
        if delivery.status != DeliveryStatus::Pending || !queued {
            recorded.stale = true;
            delivery.attempts = delivery.attempts.max(o.attempt.number);
            // Cancelled (destination disabled or deleted) while this attempt
            // was already on the wire, and the receiver took it: it was
            // delivered, and the record says so rather than "cancelled".
            if delivery.status == DeliveryStatus::Cancelled && o.next == Next::Succeeded {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.next_attempt_ms = None;
            }
            delivery.updated_at_ms = now;
            self.deliveries
                .deliveries
                .insert(delivery.id.as_u128(), delivery.encode().as_slice())?;
            return Ok(recorded);
        }
        delivery.attempts = o.attempt.number;
        delivery.updated_at_ms = now;
        match o.next {
            Next::Succeeded => {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.next_attempt_ms = None;
            }
            Next::Failed => {
                delivery.status = DeliveryStatus::Failed;
                delivery.next_attempt_ms = None;
            }
            Next::RetryAt(at) => {
                delivery.next_attempt_ms = Some(at);
                self.deliveries.due.insert(
                    (
                        o.destination_id.as_u128(),
                        at.max(0) as u64,
                        delivery.id.as_u128(),
                    ),
                    delivery.event_id.as_u128(),
                )?;
            }
        }
        self.deliveries
            .deliveries
            .insert(delivery.id.as_u128(), delivery.encode().as_slice())?;

        if let Some(mut d) = destination {
            let (changed, disabled) = o.apply_to_destination(&mut d);
            recorded.disabled_destination = disabled;
            if changed {
                super::writer::note_settings_written();
                self.destinations.insert(
                    (o.source_id.as_u128(), o.destination_id.as_u128()),
                    d.encode().as_slice(),
                )?;
                // The next ingest of this source reads its destinations
                // again (this one may have just been disabled).
                self.fan_out.remove(&o.source_id);
            }
            if recorded.disabled_destination {
                cancel_pending_in(&mut self.deliveries, o.destination_id, now)?;
            }
        }
        Ok(recorded)
    }
}

/// Cancels every queued delivery of a destination (disabled or deleted).
pub fn cancel_pending(
    txn: &WriteTransaction,
    destination: DestinationId,
    now_ms: i64,
) -> Result<u64, StoreError> {
    cancel_pending_in(&mut DeliveryTables::open(txn)?, destination, now_ms)
}

/// [`cancel_pending`] through tables already open.
fn cancel_pending_in(
    tables: &mut DeliveryTables<'_>,
    destination: DestinationId,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let (due, deliveries) = (&mut tables.due, &mut tables.deliveries);
    let mut cancelled = 0;
    let queued: Vec<u128> = due
        .extract_from_if(
            (destination.as_u128(), 0, 0)..=(destination.as_u128(), u64::MAX, u128::MAX),
            |_, _| true,
        )?
        .map(|entry| entry.map(|(k, _)| k.value().2))
        .collect::<Result<_, _>>()?;
    for id in queued {
        let record = deliveries
            .get(id)?
            .map(|b| DeliveryRecord::decode(b.value()))
            .transpose()?;
        if let Some(mut d) = record {
            d.status = DeliveryStatus::Cancelled;
            d.next_attempt_ms = None;
            d.updated_at_ms = now_ms;
            deliveries.insert(id, d.encode().as_slice())?;
            cancelled += 1;
        }
    }
    Ok(cancelled)
}

/// One delivery.
pub fn get(txn: &ReadTransaction, id: DeliveryId) -> Result<DeliveryRecord, StoreError> {
    match txn.open_table(DELIVERIES)?.get(id.as_u128())? {
        Some(bytes) => DeliveryRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// One delivery, read inside a write.
pub fn get_in_write(txn: &WriteTransaction, id: DeliveryId) -> Result<DeliveryRecord, StoreError> {
    match txn.open_table(DELIVERIES)?.get(id.as_u128())? {
        Some(bytes) => DeliveryRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// A delivery's attempts, in order.
pub fn attempts_of(
    txn: &ReadTransaction,
    delivery_id: DeliveryId,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let table = txn.open_table(ATTEMPTS)?;
    let mut out = Vec::new();
    for entry in table.range((delivery_id.as_u128(), 0)..=(delivery_id.as_u128(), u32::MAX))? {
        out.push(AttemptRecord::decode(entry?.1.value())?);
    }
    Ok(out)
}

/// Makes a delivery due now: a `failed` one goes back to `pending`; a
/// `pending` one waiting for a later retry moves to the front of its
/// destination's queue. A pending one already due (or being attempted
/// right now) is left as it is: moving its queue entry under an attempt in
/// flight would have that attempt's outcome recorded as stale and the
/// event sent twice. `succeeded` and `cancelled` are a conflict.
pub fn retry(
    txn: &WriteTransaction,
    delivery_id: DeliveryId,
    now_ms: i64,
) -> Result<DeliveryRecord, StoreError> {
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut d = match deliveries.get(delivery_id.as_u128())? {
        Some(bytes) => DeliveryRecord::decode(bytes.value())?,
        None => return Err(StoreError::NotFound),
    };
    let mut due = txn.open_table(DUE)?;
    match (d.status, d.next_attempt_ms) {
        (DeliveryStatus::Failed, _) => {}
        (DeliveryStatus::Pending, Some(at)) if at > now_ms => {
            due.remove((d.destination_id.as_u128(), at.max(0) as u64, d.id.as_u128()))?;
        }
        (DeliveryStatus::Pending, _) => return Ok(d),
        (status, _) => {
            return Err(StoreError::Conflict(format!(
                "only a failed or pending delivery can be retried; this one is {}",
                status.as_str()
            )))
        }
    }
    d.status = DeliveryStatus::Pending;
    d.next_attempt_ms = Some(now_ms);
    d.updated_at_ms = now_ms;
    deliveries.insert(d.id.as_u128(), d.encode().as_slice())?;
    due.insert(
        (
            d.destination_id.as_u128(),
            now_ms.max(0) as u64,
            d.id.as_u128(),
        ),
        d.event_id.as_u128(),
    )?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{new_id, SourceId};
    use crate::store::redb::records::EventRecord;
    use crate::store::redb::{destinations, events, fixtures, sources, RedbStore as Store};

    const DISABLE_AFTER_MS: i64 = 1_000;

    async fn store_with_three_deliveries() -> (
        tempfile::TempDir,
        Store,
        SourceId,
        DestinationId,
        Vec<EventId>,
    ) {
        let (dir, store) = fixtures::temp_store();
        let (source_id, destination_id) = (new_id(), new_id());
        let source = fixtures::source(source_id, "wh_disable00");
        let destination = fixtures::destination(destination_id, source_id);
        let event_ids: Vec<EventId> = (0..3).map(|_| new_id()).collect();
        let to_store = event_ids.clone();
        store
            .write(move |txn| {
                sources::insert(txn, &source)?;
                destinations::insert(txn, &destination, 100)?;
                for id in to_store {
                    let event = EventRecord {
                        id,
                        source_id,
                        received_at_ms: 0,
                        event_type: "t".into(),
                        provider_event_id: None,
                        headers: vec![],
                        body: vec![],
                        trace: None,
                    };
                    events::ingest(txn, &event, &event.encode())?;
                }
                Ok(())
            })
            .await
            .unwrap();
        (dir, store, source_id, destination_id, event_ids)
    }

    /// Records one attempt of the delivery of `event_id`, started at `at`.
    async fn attempt(
        store: &Store,
        (source_id, destination_id): (SourceId, DestinationId),
        event_id: EventId,
        at: i64,
        succeeded: bool,
    ) -> Recorded {
        let (items, _) = store
            .read(|txn| due_for(txn, destination_id, u64::MAX, &HashSet::new(), 10))
            .unwrap();
        let item = *items
            .iter()
            .find(|i| i.event_id == event_id)
            .expect("the delivery is queued");
        let number = store
            .read(|txn| get(txn, item.delivery_id))
            .unwrap()
            .attempts
            + 1;
        let outcome = AttemptOutcome {
            destination_id,
            source_id,
            item,
            attempt: AttemptRecord {
                number,
                started_at_ms: at,
                duration_ms: 0,
                status_code: Some(if succeeded { 200 } else { 500 }),
                error_kind: (!succeeded).then_some(crate::model::records::ErrorKind::HttpStatus),
                error_message: None,
                response_snippet: vec![],
            },
            next: if succeeded {
                Next::Succeeded
            } else {
                Next::RetryAt(at + 50)
            },
            disable_after_ms: DISABLE_AFTER_MS,
            lease_epoch: 0,
            lane_waits: false,
        };
        store
            .write(move |txn| record_attempt(txn, &outcome))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn auto_disable_counts_from_the_first_failure_after_the_last_success() {
        let (_dir, store, source_id, destination_id, events) = store_with_three_deliveries().await;
        let ids = (source_id, destination_id);
        let enabled = |store: &Store| {
            store
                .read(|txn| destinations::get(txn, source_id, destination_id))
                .unwrap()
                .enabled
        };
        // A failure at 10.0 s, a success at 10.5 s (the run ends), and a new
        // run from 10.9 s.
        assert!(
            !attempt(&store, ids, events[0], 10_000, false)
                .await
                .disabled_destination
        );
        assert!(
            !attempt(&store, ids, events[1], 10_500, true)
                .await
                .disabled_destination
        );
        assert!(
            !attempt(&store, ids, events[0], 10_900, false)
                .await
                .disabled_destination
        );
        // 1.5 s after the first failure but 0.6 s into the new run: kept.
        let kept = attempt(&store, ids, events[2], 11_500, false).await;
        assert!(!kept.disabled_destination);
        assert!(enabled(&store));
        // 1.1 s into the new run: disabled, and what was queued is cancelled.
        let disabled = attempt(&store, ids, events[0], 12_000, false).await;
        assert!(disabled.disabled_destination);
        assert!(!enabled(&store));
        let (queued, _) = store
            .read(|txn| due_for(txn, destination_id, u64::MAX, &HashSet::new(), 10))
            .unwrap();
        assert!(queued.is_empty(), "{queued:?}");
        store.close().await;
    }
}
