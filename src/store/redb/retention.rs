//! Retention: events older than their source's `retention_days` go, with
//! their deliveries, attempts and dedup entries.
//!
//! Purged in chunks, one writer operation each, so ingest commits keep
//! interleaving and no transaction grows large. redb reuses the freed pages,
//! so under steady ingest the file stops growing.

use crate::model::ids::{EventId, SourceId};
use redb::ReadableTable;

use super::records::{EventSummary, Record, SourceRecord};
use super::tables::{SOURCES, SOURCE_EVENTS};
use super::{events, RedbStore, StoreError};

/// Events removed per write.
const CHUNK: usize = 500;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Removes every expired event as of `now_ms`, and the events of deleted
/// sources; returns how many went. Taking the clock as a parameter lets
/// tests move it.
pub async fn sweep(store: &RedbStore, now_ms: i64) -> Result<u64, StoreError> {
    let orphans = purge_orphans(store).await?;
    let sources: Vec<SourceRecord> = store.read(|txn| {
        let mut out = Vec::new();
        for entry in txn.open_table(SOURCES)?.iter()? {
            out.push(SourceRecord::decode(entry?.1.value())?);
        }
        Ok(out)
    })?;
    let mut removed = orphans;
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

/// Purges, in chunks, the events of sources that no longer exist (a
/// deleted source's events, or what a crash interrupted). Returns how many.
pub async fn purge_orphans(store: &RedbStore) -> Result<u64, StoreError> {
    let orphaned: Vec<u128> = store.read(|txn| {
        let sources = txn.open_table(SOURCES)?;
        let index = txn.open_table(SOURCE_EVENTS)?;
        let mut out = Vec::new();
        let mut from = Some((0u128, 0u128));
        // One lookup per source id present in the index, not per event.
        while let Some(start) = from.take() {
            let Some(entry) = index.range(start..)?.next() else {
                break;
            };
            let source = entry?.0.value().0;
            if sources.get(source)?.is_none() {
                out.push(source);
            }
            from = source.checked_add(1).map(|next| (next, 0));
        }
        Ok(out)
    })?;
    let mut removed = 0;
    for source in orphaned {
        loop {
            let source = SourceId::from_u128(source);
            let ids = store.read(|txn| expired_ids(txn, source, i64::MAX))?;
            if ids.is_empty() {
                break;
            }
            let n = ids.len();
            store
                .write(move |txn| {
                    for id in &ids {
                        events::purge(txn, *id)?;
                    }
                    Ok(())
                })
                .await?;
            removed += n as u64;
        }
    }
    // Replay jobs of deleted sources (a handful of small records).
    let jobs = store.read(super::replays::orphans)?;
    if !jobs.is_empty() {
        store
            .write(move |txn| super::replays::remove_orphans(txn, &jobs))
            .await?;
    }
    Ok(removed)
}

/// Up to [`CHUNK`] of a source's events received before `cutoff_ms`, oldest first.
fn expired_ids(
    txn: &redb::ReadTransaction,
    source_id: SourceId,
    cutoff_ms: i64,
) -> Result<Vec<EventId>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut ids = Vec::new();
    for entry in table.range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))? {
        let (key, value) = entry?;
        // Ids are time-ordered: the first unexpired one ends the scan.
        if EventSummary::decode(value.value())?.received_at_ms >= cutoff_ms || ids.len() == CHUNK {
            break;
        }
        ids.push(EventId::from_u128(key.value().1));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::new_id;
    use crate::store::redb::records::EventRecord;
    use crate::store::redb::{fixtures, sources};

    fn source(slug: &str) -> SourceRecord {
        fixtures::source(new_id(), slug)
    }

    fn event(source_id: SourceId, n: u32) -> EventRecord {
        let id = new_id();
        EventRecord {
            id,
            source_id,
            received_at_ms: id.timestamp_ms() as i64,
            event_type: "t".into(),
            provider_event_id: Some(format!("p{n}")),
            headers: vec![],
            body: vec![b'x'; 100],
            trace: None,
        }
    }

    #[tokio::test]
    async fn a_deleted_sources_events_are_purged_in_chunks_and_others_kept() {
        let (_dir, store) = fixtures::temp_store();
        let (gone, kept) = (source("wh_gone0000"), source("wh_kept0000"));
        let (gone_id, kept_id) = (gone.id, kept.id);
        store
            .write(move |txn| {
                sources::insert(txn, &gone)?;
                sources::insert(txn, &kept)
            })
            .await
            .unwrap();
        // More than one chunk's worth for the deleted source.
        for batch in 0..3u32 {
            store
                .write(move |txn| {
                    for n in 0..400 {
                        let gone = event(gone_id, batch * 1000 + n);
                        events::ingest(txn, &gone, &gone.encode())?;
                    }
                    let kept = event(kept_id, batch);
                    events::ingest(txn, &kept, &kept.encode())?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        store
            .write(move |txn| sources::delete(txn, gone_id))
            .await
            .unwrap();
        let count = |id| store.read(|txn| events::count_of_source(txn, id)).unwrap();
        assert_eq!(count(gone_id), 1200, "deletion itself stays small");
        assert_eq!(purge_orphans(&store).await.unwrap(), 1200);
        assert_eq!(count(gone_id), 0);
        assert_eq!(count(kept_id), 3);
        assert_eq!(purge_orphans(&store).await.unwrap(), 0);
        store.close().await;
    }
}
