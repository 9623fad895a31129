//! Test events (issue #11): a synthetic event stored as if it had arrived,
//! fanned out to every enabled destination of its source.

use redb::{ReadableTable, WriteTransaction};

use super::events::store_with_deliveries;
use super::records::{DeliveryRecord, DestinationRecord, EventRecord, Record};
use super::tables::{DESTINATIONS, SOURCES};
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
    if txn
        .open_table(SOURCES)?
        .get(event.source_id.as_u128())?
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let mut targets = Vec::new();
    {
        let destinations = txn.open_table(DESTINATIONS)?;
        for entry in destinations
            .range((event.source_id.as_u128(), 0)..=(event.source_id.as_u128(), u128::MAX))?
        {
            let d = DestinationRecord::decode(entry?.1.value())?;
            if d.enabled {
                targets.push(d.id);
            }
        }
    }
    store_with_deliveries(txn, event, &event.encode(), &targets)
}
