//! Retention: events older than their source's `retention_days` go, with
//! their deliveries, attempts and dedup entries.
//!
//! Purged in chunks, one writer operation each, so ingest commits keep
//! interleaving and no transaction grows large. redb reuses the freed pages,
//! so under steady ingest the file stops growing.

use redb::ReadableTable;

use super::records::{EventSummary, Record, SourceRecord};
use super::tables::{SOURCES, SOURCE_EVENTS};
use super::{events, Store, StoreError};

/// Events removed per write.
const CHUNK: usize = 500;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Removes every expired event as of `now_ms`; returns how many went.
/// Taking the clock as a parameter lets tests move it.
pub async fn sweep(store: &Store, now_ms: i64) -> Result<u64, StoreError> {
    let sources: Vec<SourceRecord> = store.read(|txn| {
        let mut out = Vec::new();
        for entry in txn.open_table(SOURCES)?.iter()? {
            out.push(SourceRecord::decode(entry?.1.value())?);
        }
        Ok(out)
    })?;
    let mut removed = 0;
    for source in sources {
        let cutoff = now_ms - i64::from(source.retention_days) * DAY_MS;
        loop {
            let expired = store.read(|txn| expired_ids(txn, source.id, cutoff))?;
            if expired.is_empty() {
                break;
            }
            let n = expired.len();
            store
                .write(move |txn| {
                    for id in &expired {
                        events::purge(txn, *id)?;
                    }
                    Ok(())
                })
                .await?;
            removed += n as u64;
            if n < CHUNK {
                break;
            }
        }
    }
    Ok(removed)
}

/// Up to [`CHUNK`] of a source's events received before `cutoff_ms`, oldest first.
fn expired_ids(
    txn: &redb::ReadTransaction,
    source_id: u128,
    cutoff_ms: i64,
) -> Result<Vec<u128>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut ids = Vec::new();
    for entry in table.range((source_id, 0)..=(source_id, u128::MAX))? {
        let (key, value) = entry?;
        // Ids are time-ordered: the first unexpired one ends the scan.
        if EventSummary::decode(value.value())?.received_at_ms >= cutoff_ms || ids.len() == CHUNK {
            break;
        }
        ids.push(key.value().1);
    }
    Ok(ids)
}
