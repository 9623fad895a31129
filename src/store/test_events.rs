//! Test events (issue #11): a synthetic event stored as if it had arrived,
//! fanned out to every enabled destination of its source.

use redb::{ReadableTable, WriteTransaction};

use super::events::insert_deliveries;
use super::records::{DeliveryRecord, DestinationRecord, EventRecord, EventSummary, Record};
use super::tables::{DESTINATIONS, EVENTS, SOURCES, SOURCE_EVENTS};
use super::StoreError;

/// Stores `event` with one pending delivery per enabled destination of its
/// source, in the current transaction. Event-type filters are not applied
/// (a test checks the path to every destination, whatever it subscribes
/// to, like a replay to chosen destinations), and nothing is de-duplicated
/// (a test event has no provider event id).
pub fn store(
    txn: &WriteTransaction,
    event: &EventRecord,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    if txn.open_table(SOURCES)?.get(event.source_id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    let mut targets = Vec::new();
    {
        let destinations = txn.open_table(DESTINATIONS)?;
        for entry in destinations.range((event.source_id, 0)..=(event.source_id, u128::MAX))? {
            let d = DestinationRecord::decode(entry?.1.value())?;
            if d.enabled {
                targets.push(d.id);
            }
        }
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
    insert_deliveries(
        txn,
        event.id,
        event.source_id,
        &targets,
        event.received_at_ms,
    )
}
