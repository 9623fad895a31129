//! The audit log on redb: one table keyed by entry id (time order). An
//! entry is inserted inside the write closure of the change it describes,
//! so it commits (or fails) with it.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::tables::AUDIT_LOG;
use super::{Page, RedbStore, StoreError};
use crate::store::audit::{AuditEntry, AuditQuery};

/// Entries a filtered page reads at most before answering with a cursor,
/// so a filter that matches little never scans the whole log at once.
pub(super) const MAX_SCAN: usize = 10_000;
/// Entries removed per retention write.
const CHUNK: usize = 1_000;

/// Records `entry` in the caller's write (no-op for `None`).
pub fn insert(txn: &WriteTransaction, entry: Option<&AuditEntry>) -> Result<(), StoreError> {
    if let Some(entry) = entry {
        txn.open_table(AUDIT_LOG)?
            .insert(entry.id.as_u128(), entry.encode().as_slice())?;
    }
    Ok(())
}

/// A newest-first page of entries passing `query`, below `before`.
pub fn list(
    txn: &ReadTransaction,
    query: &AuditQuery,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<AuditEntry>, StoreError> {
    let table = txn.open_table(AUDIT_LOG)?;
    let range = match before {
        Some(cursor) => table.range::<u128>(..cursor)?,
        None => table.range::<u128>(..)?,
    };
    let mut items = Vec::with_capacity(limit.min(256));
    let mut last = None;
    let mut more = false;
    for (scanned, entry) in range.rev().enumerate() {
        let (key, value) = entry?;
        if items.len() == limit || scanned == MAX_SCAN {
            more = true;
            break;
        }
        last = Some(key.value());
        let entry = AuditEntry::decode(value.value())?;
        // Entries are in time order: past `after`, nothing older matches.
        if query.after_ms.is_some_and(|t| entry.at_ms < t) {
            break;
        }
        if query.matches(&entry) {
            items.push(entry);
        }
    }
    Ok(Page {
        items,
        next: if more { last } else { None },
    })
}

/// Removes entries made before `before_ms`, oldest first, in short writes.
pub async fn sweep(store: &RedbStore, before_ms: i64) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let old: Vec<u128> = store.read(|txn| {
            let mut out = Vec::new();
            for entry in txn.open_table(AUDIT_LOG)?.iter()?.take(CHUNK) {
                let (key, value) = entry?;
                if AuditEntry::decode(value.value())?.at_ms >= before_ms {
                    break;
                }
                out.push(key.value());
            }
            Ok(out)
        })?;
        if old.is_empty() {
            return Ok(removed);
        }
        let n = old.len();
        store
            .write(move |txn| {
                let mut table = txn.open_table(AUDIT_LOG)?;
                for id in &old {
                    table.remove(*id)?;
                }
                Ok(())
            })
            .await?;
        removed += n as u64;
        if n < CHUNK {
            return Ok(removed);
        }
    }
}

/// The alert queue's operations (a sibling of the audit log: both are
/// operator-facing records outside the delivery path).
impl RedbStore {
    pub(in crate::store) async fn enqueue_alert(
        &self,
        alert: crate::store::AlertRecord,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(super::tables::ALERTS)?
                .insert(alert.id, alert.encode().as_slice())?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn due_alerts(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::AlertRecord>, StoreError> {
        self.read(|txn| {
            let mut out = Vec::new();
            for entry in txn.open_table(super::tables::ALERTS)?.iter()? {
                let alert = crate::store::AlertRecord::decode(entry?.1.value())?;
                if alert.next_attempt_ms <= now_ms {
                    out.push(alert);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    pub(in crate::store) async fn settle_alert(
        &self,
        alert: crate::store::AlertRecord,
        done: bool,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(super::tables::ALERTS)?;
            if done {
                table.remove(alert.id)?;
            } else {
                table.insert(alert.id, alert.encode().as_slice())?;
            }
            Ok(())
        })
        .await
    }
}

/// The overview's counters and a destination's backlog.
impl RedbStore {
    pub(in crate::store) async fn add_minute_stats(
        &self,
        stats: crate::store::MinuteStats,
    ) -> Result<(), StoreError> {
        use super::tables::MINUTE_STATS;
        self.write(move |txn| {
            let mut table = txn.open_table(MINUTE_STATS)?;
            let mut row = match table.get(stats.minute)? {
                Some(bytes) => crate::store::MinuteStats::decode(bytes.value())?,
                None => crate::store::MinuteStats::at(stats.minute),
            };
            row.merge(&stats);
            table.insert(stats.minute, row.encode().as_slice())?;
            let cutoff = stats.minute - crate::store::STATS_KEEP_MINUTES;
            table.retain_in(..cutoff, |_, _| false)?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn minute_stats(
        &self,
        from_minute: i64,
    ) -> Result<Vec<crate::store::MinuteStats>, StoreError> {
        self.read(|txn| {
            let mut out = Vec::new();
            for entry in txn
                .open_table(super::tables::MINUTE_STATS)?
                .range(from_minute..)?
            {
                out.push(crate::store::MinuteStats::decode(entry?.1.value())?);
            }
            Ok(out)
        })
    }

    pub(in crate::store) async fn destination_backlog(
        &self,
        destination: crate::model::ids::DestinationId,
        max: usize,
    ) -> Result<(u64, Option<i64>), StoreError> {
        self.read(|txn| {
            let d = destination.as_u128();
            let table = txn.open_table(super::tables::DUE)?;
            let mut count = 0u64;
            let mut first = None;
            for entry in table.range((d, 0, 0)..=(d, u64::MAX, u128::MAX))?.take(max) {
                let (key, _) = entry?;
                if first.is_none() {
                    first = Some(i64::try_from(key.value().1).unwrap_or(i64::MAX));
                }
                count += 1;
            }
            Ok((count, first))
        })
    }
}
