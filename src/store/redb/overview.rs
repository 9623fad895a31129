//! Events across every source (issue #11): the newest first, and finding
//! one by its Krafter id or by the provider's event id.
//!
//! There is no global time index of events (the `events` table holds
//! bodies, which a list must not read), so a page merges the per-source
//! summary index: one index descent per source to start, then one per
//! event taken. A page costs O(sources + limit) lookups, whatever the
//! number of events stored.

use crate::model::ids::{EventId, SourceId};
use std::collections::BinaryHeap;

use redb::{ReadTransaction, ReadableTable};

use super::records::{EventSummary, Record};
use super::tables::{DEDUP, SOURCES, SOURCE_EVENTS};
use super::{Page, StoreError};

/// One event as the overview lists it.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub source_id: SourceId,
    pub event_id: EventId,
    pub summary: EventSummary,
}

fn source_ids(txn: &ReadTransaction) -> Result<Vec<u128>, StoreError> {
    let mut out = Vec::new();
    for entry in txn.open_table(SOURCES)?.iter()? {
        out.push(entry?.0.value());
    }
    Ok(out)
}

/// The newest event of `source` with an id below `below`.
fn newest_below(
    table: &impl ReadableTable<(u128, u128), &'static [u8]>,
    source: u128,
    below: u128,
) -> Result<Option<u128>, StoreError> {
    Ok(table
        .range((source, 0)..(source, below))?
        .next_back()
        .transpose()?
        .map(|(key, _)| key.value().1))
}

/// Up to `limit` events of every source, newest first, with ids below
/// `before_id` (the cursor). `next` is set only when more events follow.
pub fn newest(
    txn: &ReadTransaction,
    before_id: Option<u128>,
    limit: usize,
) -> Result<Page<Found>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let upper = before_id.unwrap_or(u128::MAX);
    // (newest remaining event id, its source): a max-heap over sources.
    let mut heads = BinaryHeap::new();
    for source in source_ids(txn)? {
        if let Some(id) = newest_below(&table, source, upper)? {
            heads.push((id, source));
        }
    }
    let mut items = Vec::with_capacity(limit);
    while items.len() < limit {
        let Some((event_id, source_id)) = heads.pop() else {
            break;
        };
        if let Some(bytes) = table.get((source_id, event_id))? {
            items.push(Found {
                source_id: SourceId::from_u128(source_id),
                event_id: EventId::from_u128(event_id),
                summary: EventSummary::decode(bytes.value())?,
            });
        }
        if let Some(id) = newest_below(&table, source_id, event_id)? {
            heads.push((id, source_id));
        }
    }
    let next = match heads.is_empty() {
        true => None,
        false => items.last().map(|f| f.event_id.as_u128()),
    };
    Ok(Page { items, next })
}

/// The event with this Krafter id, in whichever source holds it: one point
/// lookup per source in the summary index (no body is read).
pub fn by_id(txn: &ReadTransaction, event_id: EventId) -> Result<Vec<Found>, StoreError> {
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut out = Vec::new();
    for source_id in source_ids(txn)? {
        if let Some(bytes) = table.get((source_id, event_id.as_u128()))? {
            out.push(Found {
                source_id: SourceId::from_u128(source_id),
                event_id,
                summary: EventSummary::decode(bytes.value())?,
            });
        }
    }
    Ok(out)
}

/// The events whose provider event id is `provider_event_id` (at most one
/// per source: the dedup index keeps one), newest first; one dedup-index
/// lookup per source.
pub fn by_provider_event_id(
    txn: &ReadTransaction,
    provider_event_id: &str,
) -> Result<Vec<Found>, StoreError> {
    let dedup = txn.open_table(DEDUP)?;
    let table = txn.open_table(SOURCE_EVENTS)?;
    let mut out = Vec::new();
    for source_id in source_ids(txn)? {
        let Some(event_id) = dedup
            .get((source_id, provider_event_id))?
            .map(|g| g.value())
        else {
            continue;
        };
        if let Some(bytes) = table.get((source_id, event_id))? {
            out.push(Found {
                source_id: SourceId::from_u128(source_id),
                event_id: EventId::from_u128(event_id),
                summary: EventSummary::decode(bytes.value())?,
            });
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.event_id));
    Ok(out)
}

/// A page of search results (newest first) below the cursor.
pub fn page_of(mut found: Vec<Found>, cursor: Option<u128>, limit: usize) -> Page<Found> {
    found.sort_by_key(|f| std::cmp::Reverse(f.event_id));
    found.retain(|f| cursor.is_none_or(|c| f.event_id.as_u128() < c));
    let more = found.len() > limit;
    found.truncate(limit);
    let next = more
        .then(|| found.last().map(|f| f.event_id.as_u128()))
        .flatten();
    Page { items: found, next }
}
