//! The storage API (`crate::store::Store`'s intents) on redb: each intent is
//! one read snapshot or one writer operation, composed from the table-level
//! functions of the sibling modules.
//!
//! A write closure must check everything that can fail for logical reasons
//! before writing (see `writer::Writer::write`), so an `Err` never leaves
//! half an operation in a batch that others commit.

use crate::model::ids::{ApiKeyId, DeliveryId, DestinationId, EventId, ReplayId, SourceId};
use std::collections::HashSet;

use ::redb::ReadableTableMetadata;

use super::records::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryStatus, DestinationRecord, EventRecord,
    EventSummary, ReplayRecord, SessionRecord, SourceRecord,
};
use super::tables::{ATTEMPTS, DEDUP, DELIVERIES, DESTINATIONS, DUE, EVENTS, SOURCES};
use super::{
    api_keys, audit, deliveries, destinations, events, overview, replays, retention, sessions,
    sources, test_events, RedbStore,
};
use crate::store::{
    Advanced, AttemptOutcome, AuditEntry, AuditQuery, DestinationChange, DestinationUpdated,
    DueItem, EventQuery, EventSearch, FoundEvent, IngestOutcome, LaneClaim, ListedEvent, Page,
    Recorded, SourceChange, StoreError, StoreStats, Totals,
};

impl RedbStore {
    // ---- API keys ----

    pub(in crate::store) async fn create_api_key_audited(
        &self,
        key: ApiKeyRecord,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            api_keys::insert(txn, &key)?;
            audit::insert(txn, audit.as_ref())
        })
        .await
    }

    pub(in crate::store) async fn api_key_by_hash(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(|txn| api_keys::find_by_hash(txn, &hash))
    }

    pub(in crate::store) async fn list_api_keys(
        &self,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<ApiKeyRecord>, StoreError> {
        self.read(|txn| api_keys::list(txn, before, limit))
    }

    pub(in crate::store) async fn count_api_keys(&self) -> Result<u64, StoreError> {
        self.read(api_keys::count)
    }

    pub(in crate::store) async fn create_first_api_key(
        &self,
        key: ApiKeyRecord,
    ) -> Result<bool, StoreError> {
        self.write(move |txn| api_keys::insert_first(txn, &key))
            .await
    }

    pub(in crate::store) async fn revoke_api_key_audited(
        &self,
        id: ApiKeyId,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            api_keys::delete(txn, id)?;
            audit::insert(txn, audit.as_ref())
        })
        .await
    }

    // ---- Audit log ----

    pub(in crate::store) async fn list_audit(
        &self,
        query: AuditQuery,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<AuditEntry>, StoreError> {
        self.read(|txn| audit::list(txn, &query, before, limit))
    }

    pub(in crate::store) async fn sweep_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        audit::sweep(self, before_ms).await
    }

    // ---- Dashboard sessions ----

    pub(in crate::store) async fn create_session(
        &self,
        id_hash: [u8; 32],
        session: SessionRecord,
        max_per_key: usize,
    ) -> Result<(), StoreError> {
        self.write(move |txn| sessions::create(txn, &id_hash, &session, max_per_key))
            .await
    }

    pub(in crate::store) async fn live_session(
        &self,
        id_hash: [u8; 32],
        now_ms: i64,
    ) -> Result<Option<(SessionRecord, ApiKeyRecord)>, StoreError> {
        self.read(|txn| sessions::live(txn, &id_hash, now_ms))
    }

    pub(in crate::store) async fn end_session(
        &self,
        id_hash: [u8; 32],
        key_id: ApiKeyId,
        created_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |txn| sessions::end(txn, &id_hash, key_id, created_at_ms))
            .await
    }

    // ---- Sources ----

    pub(in crate::store) async fn create_source_audited(
        &self,
        source: SourceRecord,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            sources::insert(txn, &source)?;
            audit::insert(txn, audit.as_ref())
        })
        .await
    }

    pub(in crate::store) async fn source(&self, id: SourceId) -> Result<SourceRecord, StoreError> {
        self.read(|txn| sources::get(txn, id))
    }

    pub(in crate::store) async fn source_by_slug(
        &self,
        slug: &str,
    ) -> Result<SourceRecord, StoreError> {
        self.read(|txn| sources::get_by_slug(txn, slug))
    }

    pub(in crate::store) async fn source_with_destination_count(
        &self,
        id: SourceId,
    ) -> Result<(SourceRecord, u64), StoreError> {
        self.read(|txn| {
            Ok((
                sources::get(txn, id)?,
                destinations::count_of_source(txn, id)?,
            ))
        })
    }

    pub(in crate::store) async fn list_sources(
        &self,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<(SourceRecord, u64)>, StoreError> {
        self.read(|txn| {
            let page = sources::list(txn, before, limit)?;
            let mut items = Vec::with_capacity(page.items.len());
            for source in page.items {
                let count = destinations::count_of_source(txn, source.id)?;
                items.push((source, count));
            }
            Ok(Page {
                items,
                next: page.next,
            })
        })
    }

    pub(in crate::store) async fn update_source_audited(
        &self,
        id: SourceId,
        change: SourceChange,
        mut audit: Option<AuditEntry>,
    ) -> Result<(SourceRecord, u64), StoreError> {
        let source = self
            .write(move |txn| {
                let source = sources::update(txn, id, |s| {
                    let old = s.clone();
                    change.apply(s);
                    if let Some(entry) = audit.as_mut() {
                        entry
                            .changes
                            .extend(crate::store::audit::source_changes(&old, s));
                    }
                    Ok(())
                })?;
                audit::insert(txn, audit.as_ref())?;
                Ok(source)
            })
            .await?;
        let count = self.read(|txn| destinations::count_of_source(txn, id))?;
        Ok((source, count))
    }

    pub(in crate::store) async fn delete_source_audited(
        &self,
        id: SourceId,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            sources::delete(txn, id)?;
            audit::insert(txn, audit.as_ref())
        })
        .await
    }

    // ---- Destinations ----

    pub(in crate::store) async fn create_destination_audited(
        &self,
        destination: DestinationRecord,
        max_per_source: usize,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            destinations::insert(txn, &destination, max_per_source)?;
            audit::insert(txn, audit.as_ref())
        })
        .await
    }

    pub(in crate::store) async fn destination(
        &self,
        source_id: SourceId,
        id: DestinationId,
    ) -> Result<DestinationRecord, StoreError> {
        self.read(|txn| destinations::get(txn, source_id, id))
    }

    pub(in crate::store) async fn list_destinations(
        &self,
        source_id: SourceId,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<DestinationRecord>, StoreError> {
        self.read(|txn| {
            sources::get(txn, source_id)?;
            destinations::list(txn, source_id, before, limit)
        })
    }

    pub(in crate::store) async fn destinations_of_source(
        &self,
        source_id: SourceId,
    ) -> Result<Vec<DestinationRecord>, StoreError> {
        self.read(|txn| {
            sources::get(txn, source_id)?;
            destinations::all_of_source(txn, source_id)
        })
    }

    pub(in crate::store) async fn update_destination_audited(
        &self,
        source_id: SourceId,
        id: DestinationId,
        change: DestinationChange,
        mut audit: Option<AuditEntry>,
    ) -> Result<DestinationUpdated, StoreError> {
        self.write(move |txn| {
            let destination = destinations::update(txn, source_id, id, |d| {
                let old = d.clone();
                change.apply(d);
                if let Some(entry) = audit.as_mut() {
                    entry
                        .changes
                        .extend(crate::store::audit::destination_changes(&old, d));
                }
                Ok(())
            })?;
            audit::insert(txn, audit.as_ref())?;
            let cancelled = if destination.enabled {
                0
            } else {
                deliveries::cancel_pending(txn, id, destination.updated_at_ms)?
            };
            Ok(DestinationUpdated {
                destination,
                cancelled,
            })
        })
        .await
    }

    pub(in crate::store) async fn delete_destination_audited(
        &self,
        source_id: SourceId,
        id: DestinationId,
        audit: Option<AuditEntry>,
    ) -> Result<u64, StoreError> {
        let now = crate::model::time::now_ms();
        self.write(move |txn| {
            destinations::delete(txn, source_id, id)?;
            audit::insert(txn, audit.as_ref())?;
            deliveries::cancel_pending(txn, id, now)
        })
        .await
    }

    pub(in crate::store) async fn all_destination_ids(
        &self,
    ) -> Result<Vec<(SourceId, DestinationId)>, StoreError> {
        self.read(destinations::all_ids)
    }

    // ---- Events ----

    pub(in crate::store) async fn ingest(
        &self,
        event: EventRecord,
    ) -> Result<IngestOutcome, StoreError> {
        // Durable once the record is in the write-ahead log; redb applies
        // it right after without an fsync (see `writer`).
        // Encoded once, here on the caller's thread: the same bytes are the
        // log record and the stored event.
        let record: std::sync::Arc<[u8]> = events::logged_ingest(&event).into();
        let stored = record.clone();
        self.writer
            .write_logged(record, move |tables| tables.ingest(&event, &stored))
            .await
    }

    pub(in crate::store) async fn store_test_event(
        &self,
        event: EventRecord,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let size = event.body.len();
        self.write_sized(size, move |txn| test_events::store(txn, &event))
            .await
    }

    pub(in crate::store) async fn list_events(
        &self,
        source_id: SourceId,
        query: EventQuery,
        limit: usize,
    ) -> Result<Page<ListedEvent>, StoreError> {
        self.read(|txn| {
            sources::get(txn, source_id)?;
            let page = events::list(txn, source_id, &query, limit)?;
            let mut items = Vec::with_capacity(page.items.len());
            for (id, summary) in page.items {
                items.push(ListedEvent {
                    id,
                    summary,
                    deliveries: events::deliveries_of(txn, id)?,
                });
            }
            Ok(Page {
                items,
                next: page.next,
            })
        })
    }

    pub(in crate::store) async fn events_after(
        &self,
        source_id: SourceId,
        after: u128,
        before: u128,
        type_pattern: Option<String>,
        limit: usize,
    ) -> Result<Page<EventId>, StoreError> {
        self.read(|txn| {
            sources::get(txn, source_id)?;
            events::after(
                txn,
                source_id,
                after,
                before,
                type_pattern.as_deref(),
                limit,
            )
        })
    }

    pub(in crate::store) async fn search_events(
        &self,
        search: EventSearch,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<FoundEvent>, StoreError> {
        self.read(|txn| {
            let page = match search {
                EventSearch::All => overview::newest(txn, before, limit)?,
                EventSearch::Id {
                    id,
                    provider_event_id,
                } => {
                    let mut found = overview::by_id(txn, id)?;
                    if let Some(p) = provider_event_id {
                        found
                            .retain(|f| f.summary.provider_event_id.as_deref() == Some(p.as_str()));
                    }
                    overview::page_of(found, before, limit)
                }
                EventSearch::ProviderEventId(p) => {
                    overview::page_of(overview::by_provider_event_id(txn, &p)?, before, limit)
                }
            };
            let mut items = Vec::with_capacity(page.items.len());
            for f in page.items {
                items.push(FoundEvent {
                    source_id: f.source_id,
                    event_id: f.event_id,
                    deliveries: events::deliveries_of(txn, f.event_id)?,
                    summary: f.summary,
                });
            }
            Ok(Page {
                items,
                next: page.next,
            })
        })
    }

    pub(in crate::store) async fn event_detail(
        &self,
        source_id: SourceId,
        event_id: EventId,
    ) -> Result<(EventSummary, EventRecord, Vec<DeliveryRecord>), StoreError> {
        self.read(|txn| {
            let summary = events::summary(txn, source_id, event_id)?;
            Ok((
                summary,
                events::get(txn, event_id)?,
                events::deliveries_of(txn, event_id)?,
            ))
        })
    }

    pub(in crate::store) async fn event(
        &self,
        event_id: EventId,
    ) -> Result<EventRecord, StoreError> {
        self.read(|txn| events::get(txn, event_id))
    }

    pub(in crate::store) async fn deliveries_with_attempts(
        &self,
        source_id: SourceId,
        event_id: EventId,
    ) -> Result<Vec<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        self.read(|txn| {
            events::summary(txn, source_id, event_id)?;
            let mut out = Vec::new();
            for d in events::deliveries_of(txn, event_id)? {
                let attempts = deliveries::attempts_of(txn, d.id)?;
                out.push((d, attempts));
            }
            Ok(out)
        })
    }

    pub(in crate::store) async fn event_count(
        &self,
        source_id: SourceId,
    ) -> Result<u64, StoreError> {
        self.read(|txn| events::count_of_source(txn, source_id))
    }

    pub(in crate::store) async fn replay_event_audited(
        &self,
        source_id: SourceId,
        event_id: EventId,
        destinations: Vec<DestinationId>,
        now_ms: i64,
        audit: Option<AuditEntry>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.write(move |txn| {
            events::summary_in_write(txn, source_id, event_id)?;
            // Re-checked in the write: a destination disabled or deleted
            // since the caller chose it gets no delivery.
            let live = events::enabled_destinations(txn, source_id, &destinations)?;
            let queued = events::insert_deliveries(txn, event_id, source_id, &live, now_ms)?;
            audit::insert(txn, audit.as_ref())?;
            Ok(queued)
        })
        .await
    }

    pub(in crate::store) async fn retry_delivery_audited(
        &self,
        source_id: SourceId,
        event_id: EventId,
        delivery_id: DeliveryId,
        now_ms: i64,
        audit: Option<AuditEntry>,
    ) -> Result<(DeliveryRecord, Vec<AttemptRecord>), StoreError> {
        let updated = self
            .write(move |txn| {
                events::summary_in_write(txn, source_id, event_id)?;
                let delivery = deliveries::get_in_write(txn, delivery_id)?;
                if delivery.event_id != event_id {
                    return Err(StoreError::NotFound);
                }
                // A delivery queued to a destination that is gone or
                // disabled would wait forever (no lane sends it).
                let retryable = matches!(
                    delivery.status,
                    DeliveryStatus::Failed | DeliveryStatus::Pending
                );
                let live = [delivery.destination_id];
                if retryable && events::enabled_destinations(txn, source_id, &live)?.is_empty() {
                    return Err(StoreError::Conflict(
                        "its destination is disabled or was deleted; enable the destination (or replay the event to another) first".into(),
                    ));
                }
                let retried = deliveries::retry(txn, delivery_id, now_ms)?;
                audit::insert(txn, audit.as_ref())?;
                Ok(retried)
            })
            .await?;
        let attempts = self.read(|txn| deliveries::attempts_of(txn, delivery_id))?;
        Ok((updated, attempts))
    }

    // ---- Bulk replay jobs ----

    pub(in crate::store) async fn count_replay(
        &self,
        job: ReplayRecord,
        max_matched: u64,
    ) -> Result<Option<Totals>, StoreError> {
        // Counting a large range reads many index entries: off the async
        // threads.
        let db = self.db.clone();
        let healthy = self.healthy.clone();
        tokio::task::spawn_blocking(move || {
            super::read_with(&db, &healthy, |txn| replays::count(txn, &job, max_matched))
        })
        .await
        .map_err(|_| StoreError::Unavailable("the replay count was interrupted"))?
    }

    pub(in crate::store) async fn create_replay_audited(
        &self,
        job: ReplayRecord,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            replays::insert(txn, &job)?;
            audit::insert(txn, audit.as_ref())
        })
        .await
    }

    pub(in crate::store) async fn replay(
        &self,
        source_id: SourceId,
        id: ReplayId,
    ) -> Result<ReplayRecord, StoreError> {
        self.read(|txn| replays::get(txn, source_id, id))
    }

    pub(in crate::store) async fn list_replays(
        &self,
        source_id: SourceId,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<ReplayRecord>, StoreError> {
        self.read(|txn| {
            sources::get(txn, source_id)?;
            replays::list(txn, source_id, before, limit)
        })
    }

    pub(in crate::store) async fn running_replays(
        &self,
    ) -> Result<Vec<(SourceId, ReplayId)>, StoreError> {
        let db = self.db.clone();
        let healthy = self.healthy.clone();
        tokio::task::spawn_blocking(move || super::read_with(&db, &healthy, replays::running))
            .await
            .map_err(|_| StoreError::Unavailable("the replay scan was interrupted"))?
    }

    pub(in crate::store) async fn advance_replay(
        &self,
        source_id: SourceId,
        id: ReplayId,
        now_ms: i64,
        max_items: usize,
        max_scan: usize,
    ) -> Result<Advanced, StoreError> {
        self.write(move |txn| replays::advance(txn, source_id, id, now_ms, max_items, max_scan))
            .await
    }

    // ---- The delivery queue ----

    pub(in crate::store) async fn due_for(
        &self,
        destination: DestinationId,
        now_ms: u64,
        in_flight: &HashSet<DeliveryId>,
        limit: usize,
    ) -> Result<(Vec<DueItem>, Option<u64>), StoreError> {
        self.read(|txn| deliveries::due_for(txn, destination, now_ms, in_flight, limit))
    }

    pub(in crate::store) async fn fifo_head(
        &self,
        destination: DestinationId,
    ) -> Result<Option<DueItem>, StoreError> {
        self.read(|txn| deliveries::fifo_head(txn, destination))
    }

    pub(in crate::store) async fn attempt_inputs(
        &self,
        event_id: EventId,
        delivery_id: DeliveryId,
    ) -> Result<(EventRecord, DeliveryRecord), StoreError> {
        self.read(|txn| {
            Ok((
                events::get(txn, event_id)?,
                deliveries::get(txn, delivery_id)?,
            ))
        })
    }

    pub(in crate::store) async fn record_attempt(
        &self,
        outcome: AttemptOutcome,
    ) -> Result<Recorded, StoreError> {
        // Not individually durable: a crash may forget the outcomes since
        // the last checkpoint (`writer::CHECKPOINT_INTERVAL`), and the
        // deliveries they concern are attempted again.
        self.writer
            .write_volatile(!outcome.lane_waits, move |tables| {
                tables.record_attempt(&outcome)
            })
            .await
    }

    /// One node: it holds every lane, for ever, at epoch 0.
    pub(in crate::store) async fn claim_lanes(
        &self,
        destinations: Vec<DestinationId>,
        _ttl_ms: u64,
        _max_new: usize,
    ) -> Result<Vec<LaneClaim>, StoreError> {
        Ok(destinations
            .into_iter()
            .map(|destination_id| LaneClaim {
                destination_id,
                held: Some(0),
                others_expire_in_ms: None,
            })
            .collect())
    }

    pub(in crate::store) async fn node_heartbeat(&self, _ttl_ms: u64) -> Result<u64, StoreError> {
        Ok(1)
    }

    pub(in crate::store) async fn release_lanes(
        &self,
        _destinations: Vec<DestinationId>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    pub(in crate::store) async fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// One node: every duty is its own.
    pub(in crate::store) async fn claim_duty(
        &self,
        _name: &'static str,
        _ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    pub(in crate::store) async fn queue_depth(
        &self,
        destinations: Vec<DestinationId>,
    ) -> Result<(u64, Option<u64>), StoreError> {
        self.read(|txn| {
            Ok((
                deliveries::pending_count(txn)?,
                deliveries::oldest_due(txn, &destinations)?,
            ))
        })
    }

    pub(in crate::store) async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|txn| {
            Ok(StoreStats {
                sources: txn.open_table(SOURCES)?.len()?,
                destinations: txn.open_table(DESTINATIONS)?.len()?,
                events: txn.open_table(EVENTS)?.len()?,
                deliveries: txn.open_table(DELIVERIES)?.len()?,
                queued: txn.open_table(DUE)?.len()?,
                attempts: txn.open_table(ATTEMPTS)?.len()?,
                dedup_keys: txn.open_table(DEDUP)?.len()?,
            })
        })
    }

    // ---- Retention ----

    pub(in crate::store) async fn sweep_retention(&self, now_ms: i64) -> Result<u64, StoreError> {
        retention::sweep(self, now_ms).await
    }

    pub(in crate::store) async fn purge_orphans(&self) -> Result<u64, StoreError> {
        retention::purge_orphans(self).await
    }

    pub(in crate::store) async fn purge_events(
        &self,
        event_ids: Vec<EventId>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            for id in &event_ids {
                events::purge(txn, *id)?;
            }
            Ok(())
        })
        .await
    }
}
