//! Events, their deliveries, replay and retry (SPEC §10), events across
//! sources and test events (SPEC §11).

use crate::model::ids::{DeliveryId, DestinationId, EventId, ReplayId, SourceId};
use serde_json::json;

use super::{Caller, Listed, OpError, Ops, Validation};
use crate::model::body_filter;
use crate::model::records::{
    AttemptRecord, DeliveryRecord, DestinationRecord, EventRecord, EventSummary, ReplayRecord,
    ReplayState, Scope,
};
use crate::model::time::{format_ms, now_ms};
use crate::store::{EventQuery, EventSearch, FoundEvent, ListedEvent};

/// Bulk replays up to this many events are queued before the 202 (a few
/// hundred milliseconds at most), so the 202 means the deliveries are
/// durable, as for a single replay; larger ones answer once the job is
/// stored and go on in the background. Either way the job is durable
/// before the 202 and resumes after a restart.
const DURABLE_BULK_EVENTS: u64 = 5_000;

/// Longest provider event id a search takes (Stripe's are 28 characters,
/// GitHub's delivery GUIDs 36).
pub const MAX_PROVIDER_EVENT_ID: usize = 1024;

/// The event type of a test event.
pub const TEST_EVENT_TYPE: &str = "krafter.test";

/// One event with its headers, body and deliveries.
#[derive(Debug, Clone)]
pub struct EventDetail {
    pub summary: EventSummary,
    pub event: EventRecord,
    pub deliveries: Vec<DeliveryRecord>,
}

/// What a bulk replay asks for (times already parsed).
#[derive(Debug, Clone)]
pub struct BulkReplay {
    /// Events received after this (exclusive).
    pub after_ms: i64,
    /// Events received before this (exclusive); default: now.
    pub before_ms: Option<i64>,
    /// Exact type or `*` pattern.
    pub event_type: Option<String>,
    /// Only where a delivery failed, to the destinations it failed for.
    pub only_failed: bool,
    /// Public destination ids, when chosen.
    pub destination_ids: Option<Vec<String>>,
}

/// A stored bulk replay job and how its first run went (`completed` when
/// it was small enough to queue before answering).
#[derive(Debug, Clone)]
pub struct BulkReplayStarted {
    pub job: ReplayRecord,
    pub state: ReplayState,
}

/// A test event as stored, with the deliveries it made.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub event_id: EventId,
    pub summary: EventSummary,
    pub deliveries: Vec<DeliveryRecord>,
}

fn not_found(what: &'static str) -> impl Fn(crate::store::StoreError) -> OpError {
    move |e| OpError::from_store(e, what)
}

impl Ops {
    /// A page of a source's events, newest first, each with its deliveries.
    pub async fn list_events(
        &self,
        caller: &Caller,
        source_id: SourceId,
        query: EventQuery,
        limit: usize,
    ) -> Result<Listed<ListedEvent>, OpError> {
        caller.require(Scope::Read)?;
        self.store()
            .list_events(source_id, query, limit)
            .await
            .map_err(not_found("source"))
    }

    /// Events across every source, newest first, or found by id or by the
    /// provider's event id.
    pub async fn search_events(
        &self,
        caller: &Caller,
        search: EventSearch,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Listed<FoundEvent>, OpError> {
        caller.require(Scope::Read)?;
        let provider_event_id = match &search {
            EventSearch::Id {
                provider_event_id, ..
            } => provider_event_id.as_deref(),
            EventSearch::ProviderEventId(p) => Some(p.as_str()),
            EventSearch::All => None,
        };
        if provider_event_id
            .is_some_and(|p| p.is_empty() || p.chars().count() > MAX_PROVIDER_EVENT_ID)
        {
            return Err(OpError::BadRequest(format!(
                "provider_event_id must be 1 to {MAX_PROVIDER_EVENT_ID} characters"
            )));
        }
        Ok(self.store().search_events(search, before, limit).await?)
    }

    /// One event with its headers, body and deliveries.
    pub async fn get_event(
        &self,
        caller: &Caller,
        source_id: SourceId,
        event_id: EventId,
    ) -> Result<EventDetail, OpError> {
        caller.require(Scope::Read)?;
        let (summary, event, deliveries) = self
            .store()
            .event_detail(source_id, event_id)
            .await
            .map_err(not_found("event"))?;
        Ok(EventDetail {
            summary,
            event,
            deliveries,
        })
    }

    /// An event's deliveries, each with every attempt.
    pub async fn event_deliveries(
        &self,
        caller: &Caller,
        source_id: SourceId,
        event_id: EventId,
    ) -> Result<Vec<(DeliveryRecord, Vec<AttemptRecord>)>, OpError> {
        caller.require(Scope::Read)?;
        self.store()
            .deliveries_with_attempts(source_id, event_id)
            .await
            .map_err(not_found("event"))
    }

    /// Re-sends one event: to every enabled destination whose filter
    /// matches, or to exactly the destinations named (each must be an
    /// enabled destination of the source). Durable before it answers;
    /// answers the destinations chosen.
    pub async fn replay_event(
        &self,
        caller: &Caller,
        source_id: SourceId,
        event_id: EventId,
        destination_ids: Option<Vec<String>>,
    ) -> Result<Vec<DestinationId>, OpError> {
        caller.require(Scope::Write)?;
        let (summary, event, _) = self
            .store()
            .event_detail(source_id, event_id)
            .await
            .map_err(not_found("event"))?;
        let all = self
            .store()
            .destinations_of_source(source_id)
            .await
            .map_err(not_found("event"))?;
        let targets = match destination_ids {
            Some(ids) => chosen_destinations(&all, &ids)?,
            None => {
                let body = body_filter::Body::new(&event.body);
                all.iter()
                    .filter(|d| {
                        d.enabled && body_filter::destination_accepts(d, &summary.event_type, &body)
                    })
                    .map(|d| d.id)
                    .collect()
            }
        };
        let names: Vec<String> = targets.iter().map(|d| d.to_string()).collect();
        let entry = caller.audit("event.replay", event_id).change(
            "destination_ids",
            serde_json::Value::Null,
            serde_json::json!(names),
        );
        let created = self
            .store()
            .replay_event_audited(source_id, event_id, targets.clone(), now_ms(), Some(entry))
            .await
            .map_err(not_found("event"))?;
        for d in &created {
            self.inner.engine.wake(source_id, d.destination_id);
        }
        Ok(targets)
    }

    /// Makes a failed or waiting delivery due now (SPEC §10).
    pub async fn retry_delivery(
        &self,
        caller: &Caller,
        source_id: SourceId,
        event_id: EventId,
        delivery_id: DeliveryId,
    ) -> Result<(DeliveryRecord, Vec<AttemptRecord>), OpError> {
        caller.require(Scope::Write)?;
        let (delivery, attempts) = self
            .store()
            .retry_delivery_audited(
                source_id,
                event_id,
                delivery_id,
                now_ms(),
                Some(caller.audit("delivery.retry", delivery_id)),
            )
            .await
            .map_err(not_found("delivery"))?;
        self.inner.engine.wake(source_id, delivery.destination_id);
        Ok((delivery, attempts))
    }

    /// Re-sends every event in a range as a durable job: counted now,
    /// stored before it answers, queued in chunks that resume after a
    /// restart.
    pub async fn bulk_replay(
        &self,
        caller: &Caller,
        source_id: SourceId,
        request: BulkReplay,
    ) -> Result<BulkReplayStarted, OpError> {
        caller.require(Scope::Write)?;
        let accepted_at = now_ms();
        let all = self
            .store()
            .destinations_of_source(source_id)
            .await
            .map_err(not_found("source"))?;
        let chosen = match &request.destination_ids {
            Some(ids) => Some(chosen_destinations(&all, ids)?),
            None => None,
        };
        let candidates = match &chosen {
            Some(chosen) => chosen.clone(),
            None => all.iter().filter(|d| d.enabled).map(|d| d.id).collect(),
        };
        let mut job = ReplayRecord {
            id: ReplayId::new(),
            source_id,
            after_ms: request.after_ms,
            before_ms: request.before_ms.unwrap_or(accepted_at),
            // Events stored from now on are not part of this replay.
            upper_id: EventId::new().as_u128(),
            type_pattern: request.event_type.filter(|t| !t.is_empty()),
            only_failed: request.only_failed,
            destination_ids: chosen,
            candidates,
            cursor: 0,
            events_total: 0,
            deliveries_total: 0,
            events_done: 0,
            deliveries_queued: 0,
            state: ReplayState::Running,
            created_at_ms: accepted_at,
            updated_at_ms: accepted_at,
        };
        let limit = self.inner.config.limits.bulk_replay_events;
        let Some(totals) = self.store().count_replay(job.clone(), limit as u64).await? else {
            return Err(OpError::invalid(
                "after",
                format!(
                    "more than {limit} events match (limits.bulk_replay_events); replay a narrower range"
                ),
            ));
        };
        job.events_total = totals.events;
        job.deliveries_total = totals.deliveries;
        let null = serde_json::Value::Null;
        let entry = caller
            .audit("source.bulk_replay", source_id)
            .change(
                "replay_id",
                null.clone(),
                serde_json::json!(job.id.to_string()),
            )
            .change("after_ms", null.clone(), serde_json::json!(job.after_ms))
            .change("before_ms", null.clone(), serde_json::json!(job.before_ms))
            .change(
                "event_type",
                null.clone(),
                serde_json::json!(job.type_pattern),
            )
            .change("only_failed", null, serde_json::json!(job.only_failed));
        self.store()
            .create_replay_audited(job.clone(), Some(entry))
            .await
            .map_err(not_found("source"))?;
        let outcome = self.inner.replays.start(source_id, job.id);
        let mut state = ReplayState::Running;
        if job.events_total <= DURABLE_BULK_EVENTS {
            // Small enough to queue before answering. Should storage fail
            // meanwhile, the job is stored and goes on: still accepted.
            if let Ok(Ok(done)) = outcome.await {
                state = done;
            }
        }
        Ok(BulkReplayStarted { job, state })
    }

    /// A source's bulk replay jobs, newest first.
    pub async fn list_replays(
        &self,
        caller: &Caller,
        source_id: SourceId,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Listed<ReplayRecord>, OpError> {
        caller.require(Scope::Read)?;
        self.store()
            .list_replays(source_id, before, limit)
            .await
            .map_err(not_found("source"))
    }

    /// One bulk replay job.
    pub async fn get_replay(
        &self,
        caller: &Caller,
        source_id: SourceId,
        id: ReplayId,
    ) -> Result<ReplayRecord, OpError> {
        caller.require(Scope::Read)?;
        self.store()
            .replay(source_id, id)
            .await
            .map_err(not_found("replay"))
    }

    /// Stores a test event of type `krafter.test` in an enabled source, as
    /// if it had arrived at its ingest URL, and delivers it to every
    /// enabled destination (filters not applied), signed like any delivery.
    pub async fn send_test_event(
        &self,
        caller: &Caller,
        source_id: SourceId,
    ) -> Result<TestEvent, OpError> {
        caller.require(Scope::Write)?;
        let source = self
            .store()
            .source(source_id)
            .await
            .map_err(not_found("source"))?;
        if !source.enabled {
            return Err(OpError::Conflict(
                "the source is disabled; enable it to send a test event".into(),
            ));
        }
        let event_id = EventId::new();
        let received_at_ms = event_id.timestamp_ms() as i64;
        let body = json!({
            "type": TEST_EVENT_TYPE,
            "id": event_id.to_string(),
            "created_at": format_ms(received_at_ms),
            "data": {
                "message": "A test event made by Krafter (not sent by the provider, so no provider signature was verified). Krafter signs its delivery like any other.",
                "source_id": source_id.to_string(),
                "source_name": source.name,
                "provider": source.provider.as_str(),
            }
        })
        .to_string()
        .into_bytes();
        let event = EventRecord {
            id: event_id,
            source_id,
            received_at_ms,
            event_type: TEST_EVENT_TYPE.to_string(),
            provider_event_id: None,
            headers: vec![
                ("content-type".to_string(), b"application/json".to_vec()),
                (
                    "user-agent".to_string(),
                    format!("Krafter/{} (test event)", env!("CARGO_PKG_VERSION")).into_bytes(),
                ),
            ],
            body,
            trace: None,
        };
        let summary = EventSummary {
            event_type: event.event_type.clone(),
            provider_event_id: None,
            received_at_ms,
            size_bytes: event.body.len() as u64,
        };
        let deliveries = self
            .store()
            .store_test_event(event)
            .await
            .map_err(not_found("source"))?;
        self.inner.metrics.events_stored.inc();
        for d in &deliveries {
            self.inner.engine.wake(d.source_id, d.destination_id);
        }
        self.inner.hub.committed();
        Ok(TestEvent {
            event_id,
            summary,
            deliveries,
        })
    }
}

/// Resolves and checks chosen destinations against the source: each must
/// be one of its destinations and enabled; else every bad one is named.
fn chosen_destinations(
    all: &[DestinationRecord],
    ids: &[String],
) -> Result<Vec<DestinationId>, OpError> {
    let mut v = Validation::default();
    v.check(
        !ids.is_empty(),
        "destination_ids",
        "name at least one destination",
    );
    let mut chosen = Vec::new();
    for (i, text) in ids.iter().enumerate() {
        let field = format!("destination_ids[{i}]");
        match DestinationId::parse(text).and_then(|id| all.iter().find(|d| d.id == id)) {
            None => v.fail(
                &field,
                format!("{text} is not a destination of this source"),
            ),
            Some(d) if !d.enabled => v.fail(&field, format!("{text} is disabled")),
            Some(d) if !chosen.contains(&d.id) => chosen.push(d.id),
            Some(_) => {}
        }
    }
    v.finish()?;
    Ok(chosen)
}
