//! Bulk replay jobs: stored, advanced chunk by chunk, resumed after a
//! restart.
//!
//! A job is a [`ReplayRecord`]: the request, an upper event id fixed when
//! it was accepted, and a cursor. [`advance`] queues the deliveries of the
//! next chunk of events and moves the cursor in the same write transaction,
//! so after a crash (even `kill -9`) the job resumes exactly after the last
//! committed chunk: no chunk is queued twice and none is skipped.
//!
//! Which destinations an event goes to is decided by [`plan_chunk`], used
//! both to count what the 202 promises and to queue it, so the two follow
//! the same rules.

use crate::model::ids::{DestinationId, EventId, ReplayId, SourceId};
use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::events::{insert_deliveries, stored_deliveries_of};
use super::records::{
    DeliveryStatus, DestinationRecord, EventRecord, EventSummary, Record, ReplayRecord, ReplayState,
};
use super::tables::{
    DELIVERIES, DESTINATIONS, EVENTS, EVENT_DELIVERIES, REPLAYS, SOURCES, SOURCE_EVENTS,
};
use super::{Page, StoreError};
use crate::model::{body_filter, filter};
use crate::store::{Advanced, Totals, KEPT_PER_SOURCE};

/// The events of one chunk and where each goes.
#[derive(Debug, Default)]
pub struct ChunkPlan {
    /// (event id, destination ids), oldest first; only events with at
    /// least one destination.
    pub items: Vec<(EventId, Vec<DestinationId>)>,
    /// Events in the job's range and type examined (with or without
    /// destinations).
    pub matched: u64,
    /// The last index entry examined: the next chunk starts after it.
    pub last: Option<u128>,
    /// Nothing is left in the job's range after `last`.
    pub exhausted: bool,
}

/// A source's destinations by id.
pub fn destinations_of<T>(
    table: &T,
    source_id: SourceId,
) -> Result<HashMap<DestinationId, DestinationRecord>, StoreError>
where
    T: ReadableTable<(u128, u128), &'static [u8]>,
{
    let mut out = HashMap::new();
    for entry in table.range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))? {
        let d = DestinationRecord::decode(entry?.1.value())?;
        out.insert(d.id, d);
    }
    Ok(out)
}

/// Plans the chunk after `job.cursor`: at most `max_items` events that get
/// deliveries, examining at most `max_scan` index entries. Only reads, so
/// it can run over a read snapshot (counting) or inside the write that
/// queues the chunk.
///
/// The rules are those of a bulk replay: the job's candidate destinations
/// that still exist and are enabled; without `destination_ids` only those
/// whose filter matches the event's type; with `status: failed` only those
/// whose delivery of the event failed and has not since succeeded or been
/// queued again.
#[allow(clippy::too_many_arguments)]
pub fn plan_chunk<SE, ED, D, EV>(
    source_events: &SE,
    event_deliveries: &ED,
    deliveries: &D,
    events: &EV,
    destinations: &HashMap<DestinationId, DestinationRecord>,
    job: &ReplayRecord,
    max_items: usize,
    max_scan: usize,
) -> Result<ChunkPlan, StoreError>
where
    SE: ReadableTable<(u128, u128), &'static [u8]>,
    ED: ReadableTable<(u128, u128), ()>,
    D: ReadableTable<u128, &'static [u8]>,
    EV: ReadableTable<u128, &'static [u8]>,
{
    let lower = crate::model::ids::ulid_floor(job.after_ms.saturating_add(1))
        .max(job.cursor.saturating_add(1));
    let upper = job
        .upper_id
        .min(crate::model::ids::ulid_floor(job.before_ms));
    let mut plan = ChunkPlan::default();
    if lower >= upper {
        plan.exhausted = true;
        return Ok(plan);
    }
    let patterns: Vec<String> = job.type_pattern.iter().cloned().collect();
    let usable = |id: &DestinationId| destinations.get(id).filter(|d| d.enabled);
    // Bodies are read only when a destination that may match filters on them.
    let needs_body = job.destination_ids.is_none()
        && job
            .candidates
            .iter()
            .any(|id| usable(id).is_some_and(|d| d.options.body_filter.is_some()));
    for (scanned, entry) in source_events
        .range((job.source_id.as_u128(), lower)..(job.source_id.as_u128(), upper))?
        .enumerate()
    {
        if scanned == max_scan || plan.items.len() == max_items {
            return Ok(plan);
        }
        let (key, value) = entry?;
        let event_id = key.value().1;
        plan.last = Some(event_id);
        let summary = EventSummary::decode(value.value())?;
        let in_range =
            summary.received_at_ms > job.after_ms && summary.received_at_ms < job.before_ms;
        if !in_range || !filter::matches(&patterns, &summary.event_type) {
            continue;
        }
        plan.matched += 1;
        let targets: Vec<DestinationId> = if job.only_failed {
            let list =
                stored_deliveries_of(event_deliveries, deliveries, EventId::from_u128(event_id))?;
            let settled = |dest: DestinationId| {
                list.iter().any(|d| {
                    d.destination_id == dest
                        && matches!(
                            d.status,
                            DeliveryStatus::Succeeded | DeliveryStatus::Pending
                        )
                })
            };
            let mut failed: Vec<DestinationId> = list
                .iter()
                .filter(|d| d.status == DeliveryStatus::Failed)
                .map(|d| d.destination_id)
                .filter(|id| !settled(*id))
                .filter(|id| job.candidates.contains(id))
                .filter(|id| usable(id).is_some())
                .collect();
            failed.sort_unstable();
            failed.dedup();
            failed
        } else {
            let stored_body = if needs_body {
                events
                    .get(event_id)?
                    .map(|v| EventRecord::decode(v.value()))
                    .transpose()?
                    .map(|e| e.body)
            } else {
                None
            };
            let body = body_filter::Body::new(stored_body.as_deref().unwrap_or_default());
            job.candidates
                .iter()
                .filter(|id| {
                    usable(id).is_some_and(|d| {
                        job.destination_ids.is_some()
                            || body_filter::destination_accepts(d, &summary.event_type, &body)
                    })
                })
                .copied()
                .collect()
        };
        if !targets.is_empty() {
            plan.items.push((EventId::from_u128(event_id), targets));
        }
    }
    plan.exhausted = true;
    Ok(plan)
}

/// Counts what `job` will queue, over one read snapshot (for the 202).
/// `None` when more than `max_matched` events are in its range and type.
pub fn count(
    txn: &ReadTransaction,
    job: &ReplayRecord,
    max_matched: u64,
) -> Result<Option<Totals>, StoreError> {
    let source_events = txn.open_table(SOURCE_EVENTS)?;
    let event_deliveries = txn.open_table(EVENT_DELIVERIES)?;
    let deliveries = txn.open_table(DELIVERIES)?;
    let destinations = destinations_of(&txn.open_table(DESTINATIONS)?, job.source_id)?;
    let mut cursor = job.clone();
    let mut totals = Totals::default();
    loop {
        let plan = plan_chunk(
            &source_events,
            &event_deliveries,
            &deliveries,
            &txn.open_table(EVENTS)?,
            &destinations,
            &cursor,
            10_000,
            usize::MAX,
        )?;
        totals.matched += plan.matched;
        if totals.matched > max_matched {
            return Ok(None);
        }
        totals.events += plan.items.len() as u64;
        totals.deliveries += plan.items.iter().map(|(_, t)| t.len() as u64).sum::<u64>();
        match plan.last {
            Some(last) if !plan.exhausted => cursor.cursor = last,
            _ => return Ok(Some(totals)),
        }
    }
}

/// Stores a new job; its source must still exist. Finished jobs beyond the
/// newest [`KEPT_PER_SOURCE`] of the source are removed; running ones are
/// always kept.
pub fn insert(txn: &WriteTransaction, job: &ReplayRecord) -> Result<(), StoreError> {
    if txn
        .open_table(SOURCES)?
        .get(job.source_id.as_u128())?
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let mut jobs = txn.open_table(REPLAYS)?;
    let mut old = Vec::new();
    for (seen, entry) in jobs
        .range((job.source_id.as_u128(), 0)..=(job.source_id.as_u128(), u128::MAX))?
        .rev()
        .enumerate()
    {
        let (key, value) = entry?;
        if seen + 1 >= KEPT_PER_SOURCE
            && ReplayRecord::decode(value.value())?.state != ReplayState::Running
        {
            old.push(key.value());
        }
    }
    jobs.insert(
        (job.source_id.as_u128(), job.id.as_u128()),
        job.encode().as_slice(),
    )?;
    for key in &old {
        jobs.remove(key)?;
    }
    Ok(())
}

/// One job of a source.
pub fn get(
    txn: &ReadTransaction,
    source_id: SourceId,
    id: ReplayId,
) -> Result<ReplayRecord, StoreError> {
    match txn
        .open_table(REPLAYS)?
        .get((source_id.as_u128(), id.as_u128()))?
    {
        Some(bytes) => ReplayRecord::decode(bytes.value()),
        None => Err(StoreError::NotFound),
    }
}

/// A source's jobs, newest first, below the cursor `before` (exclusive).
pub fn list(
    txn: &ReadTransaction,
    source_id: SourceId,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<ReplayRecord>, StoreError> {
    super::page_in_source(&txn.open_table(REPLAYS)?, source_id, before, limit)
}

/// Every job still running, as (source id, job id): what start-up resumes.
pub fn running(txn: &ReadTransaction) -> Result<Vec<(SourceId, ReplayId)>, StoreError> {
    let mut out = Vec::new();
    for entry in txn.open_table(REPLAYS)?.iter()? {
        let (key, value) = entry?;
        if ReplayRecord::decode(value.value())?.state == ReplayState::Running {
            let (source, job) = key.value();
            out.push((SourceId::from_u128(source), ReplayId::from_u128(job)));
        }
    }
    Ok(out)
}

/// Queues the next chunk of a job and advances its cursor and counters, in
/// the caller's write transaction. A job whose source is gone ends
/// `cancelled`; a job no longer stored ends with `state: None`. Every read
/// (and so every decode error) happens before the first write, keeping the
/// writer's contract.
pub fn advance(
    txn: &WriteTransaction,
    source_id: SourceId,
    id: ReplayId,
    now_ms: i64,
    max_items: usize,
    max_scan: usize,
) -> Result<Advanced, StoreError> {
    let mut jobs = txn.open_table(REPLAYS)?;
    let Some(mut job) = jobs
        .get((source_id.as_u128(), id.as_u128()))?
        .map(|b| ReplayRecord::decode(b.value()))
        .transpose()?
    else {
        return Ok(Advanced::default());
    };
    if job.state != ReplayState::Running {
        return Ok(Advanced {
            state: Some(job.state),
            ..Advanced::default()
        });
    }
    if txn.open_table(SOURCES)?.get(source_id.as_u128())?.is_none() {
        job.state = ReplayState::Cancelled;
        job.updated_at_ms = now_ms;
        jobs.insert((source_id.as_u128(), id.as_u128()), job.encode().as_slice())?;
        return Ok(Advanced {
            state: Some(job.state),
            ..Advanced::default()
        });
    }
    let plan = {
        let destinations = destinations_of(&txn.open_table(DESTINATIONS)?, source_id)?;
        plan_chunk(
            &txn.open_table(SOURCE_EVENTS)?,
            &txn.open_table(EVENT_DELIVERIES)?,
            &txn.open_table(DELIVERIES)?,
            &txn.open_table(EVENTS)?,
            &destinations,
            &job,
            max_items,
            max_scan,
        )?
    };
    let mut out = Advanced::default();
    for (event_id, targets) in &plan.items {
        insert_deliveries(txn, *event_id, source_id, targets, now_ms)?;
        out.events += 1;
        out.deliveries += targets.len() as u64;
        for d in targets {
            if !out.destinations.contains(d) {
                out.destinations.push(*d);
            }
        }
    }
    if let Some(last) = plan.last {
        job.cursor = last;
    }
    job.events_done += out.events;
    job.deliveries_queued += out.deliveries;
    if plan.exhausted {
        job.state = ReplayState::Completed;
    }
    job.updated_at_ms = now_ms;
    jobs.insert((source_id.as_u128(), id.as_u128()), job.encode().as_slice())?;
    out.state = Some(job.state);
    Ok(out)
}

/// Jobs of sources that no longer exist, except running ones (their
/// runner first records them `cancelled`), as (source id, job id).
pub fn orphans(txn: &ReadTransaction) -> Result<Vec<(u128, u128)>, StoreError> {
    let sources = txn.open_table(SOURCES)?;
    let mut out = Vec::new();
    for entry in txn.open_table(REPLAYS)?.iter()? {
        let (key, value) = entry?;
        let (source, _) = key.value();
        if sources.get(source)?.is_none()
            && ReplayRecord::decode(value.value())?.state != ReplayState::Running
        {
            out.push(key.value());
        }
    }
    Ok(out)
}

/// Removes the given jobs of deleted sources (found by [`orphans`]),
/// leaving any that is running again or whose source exists.
pub fn remove_orphans(txn: &WriteTransaction, keys: &[(u128, u128)]) -> Result<u64, StoreError> {
    let sources = txn.open_table(SOURCES)?;
    let mut jobs = txn.open_table(REPLAYS)?;
    let mut gone = Vec::new();
    for key in keys {
        if sources.get(key.0)?.is_some() {
            continue;
        }
        if let Some(bytes) = jobs.get(key)? {
            if ReplayRecord::decode(bytes.value())?.state != ReplayState::Running {
                gone.push(*key);
            }
        }
    }
    for key in &gone {
        jobs.remove(key)?;
    }
    Ok(gone.len() as u64)
}
