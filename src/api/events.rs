//! Events, their deliveries, replay and retry (SPEC §10).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope, Validation};
use super::extract::{
    encode_cursor, ApiPath, ApiQuery, Data, List, OptionalJson, DEFAULT_LIMIT, MAX_LIMIT,
};
use super::sources::source_id;
use super::AppState;
use crate::clock::{format_ms, now_ms, parse_rfc3339_ms};
use crate::ingest::filter;
use crate::store::deliveries;
use crate::store::events::{self, EventQuery};
use crate::store::ids::{format_id, parse_id, IdKind};
use crate::store::records::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, DestinationRecord, EventSummary, Scope,
};
use crate::store::{destinations, StoreError};

/// Filters of `GET .../events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    /// Exact event type or `*` pattern (`invoice.*`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only events received after this RFC 3339 time.
    #[param(format = DateTime)]
    pub after: Option<String>,
    /// Only events received before this RFC 3339 time.
    #[param(format = DateTime)]
    pub before: Option<String>,
    /// 1 to 250; default 50.
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor` (empty: the first page).
    #[param(pattern = "^([0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
}

/// Delivery counts of one event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeliveryCounts {
    pub pending: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

/// An event as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    #[schema(pattern = "^evt_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: String,
    #[schema(pattern = "^src_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub source_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(required = true)]
    pub provider_event_id: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    pub size_bytes: u64,
    pub deliveries: DeliveryCounts,
}

/// An event with its headers and body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventView,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body, when it is valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub body: Option<String>,
    /// The body in base64, when it is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, content_encoding = "base64")]
    pub body_base64: Option<String>,
}

/// One HTTP try.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1-based.
    #[schema(minimum = 1)]
    pub number: u32,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub duration_ms: u64,
    /// The destination's HTTP status, when it answered.
    #[schema(required = true, minimum = 100, maximum = 999)]
    pub status_code: Option<u16>,
    #[schema(required = true)]
    pub error_kind: Option<String>,
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// First 1 KiB of the response body (lossy UTF-8).
    pub response_body: String,
}

/// A delivery with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    #[schema(pattern = "^dlv_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: String,
    #[schema(pattern = "^dst_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub destination_id: String,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = super::openapi::shapes::DeliveryStatusName)]
    pub status: String,
    pub attempts: Vec<AttemptView>,
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Body of a replay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Exactly these destinations (filter not applied); each must belong to
    /// the source and be enabled.
    #[schema(value_type = Option<Vec<super::openapi::shapes::DestinationId>>, min_items = 1)]
    pub destination_ids: Option<Vec<String>>,
}

/// What a replay queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayAccepted {
    pub count: usize,
    #[schema(value_type = Vec<super::openapi::shapes::DestinationId>)]
    pub destination_ids: Vec<String>,
}

/// Body of a bulk replay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    /// RFC 3339; events received after this time.
    #[schema(format = DateTime)]
    pub after: String,
    /// RFC 3339; events received before this time (default: now).
    #[schema(format = DateTime)]
    pub before: Option<String>,
    /// Exact type or `*` pattern.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `failed`: only re-send where a delivery failed, to the destinations it failed for.
    #[schema(value_type = Option<super::openapi::shapes::BulkReplayStatus>)]
    pub status: Option<String>,
    #[schema(value_type = Option<Vec<super::openapi::shapes::DestinationId>>, min_items = 1)]
    pub destination_ids: Option<Vec<String>>,
}

/// What a bulk replay will queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkReplayAccepted {
    pub events: usize,
    pub deliveries: usize,
}

fn event_id(text: &str) -> Result<u128, ApiError> {
    parse_id(IdKind::Event, text).ok_or_else(|| ApiError::not_found("no such event"))
}

fn not_found(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no such {what}")),
        other => other.into(),
    }
}

fn counts(list: &[DeliveryRecord]) -> DeliveryCounts {
    let mut c = DeliveryCounts::default();
    for d in list {
        match d.status {
            DeliveryStatus::Pending => c.pending += 1,
            DeliveryStatus::Succeeded => c.succeeded += 1,
            DeliveryStatus::Failed => c.failed += 1,
            DeliveryStatus::Cancelled => c.cancelled += 1,
        }
    }
    c
}

pub(crate) fn event_view(
    source: u128,
    id: u128,
    s: &EventSummary,
    deliveries: &[DeliveryRecord],
) -> EventView {
    EventView {
        id: format_id(IdKind::Event, id),
        source_id: format_id(IdKind::Source, source),
        event_type: s.event_type.clone(),
        provider_event_id: s.provider_event_id.clone(),
        received_at: format_ms(s.received_at_ms),
        size_bytes: s.size_bytes,
        deliveries: counts(deliveries),
    }
}

fn parse_time(v: &mut Validation, field: &str, text: Option<&str>) -> Option<i64> {
    let text = text?;
    let parsed = parse_rfc3339_ms(text);
    v.check(
        parsed.is_some(),
        field,
        "must be an RFC 3339 time, e.g. 2026-11-27T14:48:08Z",
    );
    parsed
}

/// Lists a source's events, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}/events", tag = "events",
    params(("id" = String, Path, description = "source id"), EventListParams),
    responses((status = 200, body = List<EventView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<EventListParams>,
) -> Result<Json<List<EventView>>, ApiError> {
    caller.require(Scope::Read)?;
    let source = source_id(&id)?;
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as u32).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )))
        }
    };
    let before_id = match params.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            ulid::Ulid::from_string(c)
                .map_err(|_| ApiError::bad_request("invalid cursor"))?
                .0,
        ),
    };
    let mut v = Validation::default();
    let after_ms = parse_time(&mut v, "after", params.after.as_deref());
    let before_ms = parse_time(&mut v, "before", params.before.as_deref());
    if v.finish().is_err() {
        return Err(ApiError::bad_request(
            "after and before must be RFC 3339 times",
        ));
    }
    let query = EventQuery {
        before_id,
        after_ms,
        before_ms,
        type_pattern: params.event_type.filter(|t| !t.is_empty()),
    };
    let (page, delivery_lists) = state
        .store
        .read(|txn| {
            crate::store::sources::get(txn, source)?;
            let page = events::list(txn, source, &query, limit)?;
            let lists = page
                .items
                .iter()
                .map(|(id, _)| events::deliveries_of(txn, *id))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((page, lists))
        })
        .map_err(not_found("source"))?;
    Ok(Json(List {
        data: page
            .items
            .iter()
            .zip(delivery_lists)
            .map(|((id, s), d)| event_view(source, *id, s, &d))
            .collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// One event with headers and body.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}/events/{event_id}", tag = "events",
    params(("id" = String, Path, description = "source id"), ("event_id" = String, Path, description = "event id (`evt_...`)")),
    responses((status = 200, body = Data<EventDetail>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, event)): ApiPath<(String, String)>,
) -> Result<Json<Data<EventDetail>>, ApiError> {
    caller.require(Scope::Read)?;
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let (summary, record, list) = state
        .store
        .read(|txn| {
            let summary = events::summary(txn, source, event)?;
            Ok((
                summary,
                events::get(txn, event)?,
                events::deliveries_of(txn, event)?,
            ))
        })
        .map_err(not_found("event"))?;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &record.headers {
        let value = String::from_utf8_lossy(value).into_owned();
        headers
            .entry(name.clone())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let (body, body_base64) = match String::from_utf8(record.body) {
        Ok(text) => (Some(text), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        ),
    };
    Ok(Json(Data {
        data: EventDetail {
            event: event_view(source, event, &summary, &list),
            headers,
            body,
            body_base64,
        },
    }))
}

fn attempt_view(a: AttemptRecord) -> AttemptView {
    AttemptView {
        number: a.number,
        started_at: format_ms(a.started_at_ms),
        duration_ms: a.duration_ms,
        status_code: a.status_code,
        error_kind: a.error_kind,
        error_message: a.error_message,
        response_body: String::from_utf8_lossy(&a.response_snippet).into_owned(),
    }
}

/// An event's deliveries, each with every attempt.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}/events/{event_id}/deliveries", tag = "events",
    params(("id" = String, Path, description = "source id"), ("event_id" = String, Path, description = "event id")),
    responses((status = 200, body = List<DeliveryView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, event)): ApiPath<(String, String)>,
) -> Result<Json<List<DeliveryView>>, ApiError> {
    caller.require(Scope::Read)?;
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let views = state
        .store
        .read(|txn| {
            events::summary(txn, source, event)?;
            let mut views = Vec::new();
            for d in events::deliveries_of(txn, event)? {
                let attempts = deliveries::attempts_of(txn, d.id)?;
                views.push(DeliveryView {
                    id: format_id(IdKind::Delivery, d.id),
                    destination_id: format_id(IdKind::Destination, d.destination_id),
                    status: d.status.as_str().to_string(),
                    attempts: attempts.into_iter().map(attempt_view).collect(),
                    next_attempt_at: d.next_attempt_ms.map(format_ms),
                    created_at: format_ms(d.created_at_ms),
                });
            }
            Ok(views)
        })
        .map_err(not_found("event"))?;
    Ok(Json(List {
        data: views,
        next_cursor: None,
    }))
}

/// Resolves and checks `destination_ids` against the source: each must be
/// one of its destinations and enabled; else 422 naming the bad ones.
fn chosen_destinations(all: &[DestinationRecord], ids: &[String]) -> Result<Vec<u128>, ApiError> {
    let mut v = Validation::default();
    v.check(
        !ids.is_empty(),
        "destination_ids",
        "name at least one destination",
    );
    let mut chosen = Vec::new();
    for (i, text) in ids.iter().enumerate() {
        let field = format!("destination_ids[{i}]");
        match parse_id(IdKind::Destination, text).and_then(|id| all.iter().find(|d| d.id == id)) {
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

/// Re-sends one event: to every enabled destination whose filter matches,
/// or to exactly the destinations named. Durable before the 202.
#[utoipa::path(post, path = "/api/v1/webhooks/sources/{id}/events/{event_id}/replay", tag = "events",
    params(("id" = String, Path, description = "source id"), ("event_id" = String, Path, description = "event id")),
    request_body(content = Option<ReplayRequest>, description = "optional"),
    responses((status = 202, body = Data<ReplayAccepted>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, event)): ApiPath<(String, String)>,
    OptionalJson(body): OptionalJson<ReplayRequest>,
) -> Result<(StatusCode, Json<Data<ReplayAccepted>>), ApiError> {
    caller.require(Scope::Write)?;
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let (record, all) = state
        .store
        .read(|txn| {
            events::summary(txn, source, event)?;
            Ok((
                events::get(txn, event)?,
                destinations::all_of_source(txn, source)?,
            ))
        })
        .map_err(not_found("event"))?;
    let targets = match body.and_then(|b| b.destination_ids) {
        Some(ids) => chosen_destinations(&all, &ids)?,
        None => all
            .iter()
            .filter(|d| d.enabled && filter::matches(&d.event_filter, &record.event_type))
            .map(|d| d.id)
            .collect(),
    };
    let queued = targets.clone();
    let created = state
        .store
        .write(move |txn| {
            // Re-checked in the write: a destination disabled or deleted
            // since the check above gets no delivery.
            let live = events::enabled_destinations(txn, source, &queued)?;
            events::insert_deliveries(txn, record.id, source, &live, now_ms())
        })
        .await
        .map_err(not_found("event"))?;
    for d in &created {
        state.engine.wake(source, d.destination_id);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: ReplayAccepted {
                count: targets.len(),
                destination_ids: targets
                    .iter()
                    .map(|id| format_id(IdKind::Destination, *id))
                    .collect(),
            },
        }),
    ))
}

/// Attempts a delivery now: a failed one goes back to `pending`, a pending
/// one waiting for its next retry is made due at once (one already due is
/// left alone). Succeeded and cancelled deliveries answer 409.
#[utoipa::path(post, path = "/api/v1/webhooks/sources/{id}/events/{event_id}/deliveries/{delivery_id}/retry", tag = "events",
    params(("id" = String, Path, description = "source id"), ("event_id" = String, Path, description = "event id"),
        ("delivery_id" = String, Path, description = "delivery id (`dlv_...`)")),
    responses((status = 202, body = Data<DeliveryView>),
        (status = 409, description = "conflict: the delivery succeeded or was cancelled", body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, event, delivery)): ApiPath<(String, String, String)>,
) -> Result<(StatusCode, Json<Data<DeliveryView>>), ApiError> {
    caller.require(Scope::Write)?;
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let delivery = parse_id(IdKind::Delivery, &delivery)
        .ok_or_else(|| ApiError::not_found("no such delivery"))?;
    let d = state
        .store
        .read(|txn| {
            events::summary(txn, source, event)?;
            deliveries::get(txn, delivery)
        })
        .map_err(not_found("delivery"))?;
    if d.event_id != event {
        return Err(ApiError::not_found("no such delivery"));
    }
    let updated = state
        .store
        .write(move |txn| deliveries::retry(txn, delivery, now_ms()))
        .await
        .map_err(not_found("delivery"))?;
    state.engine.wake(source, updated.destination_id);
    let attempts = state
        .store
        .read(|txn| deliveries::attempts_of(txn, delivery))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: DeliveryView {
                id: format_id(IdKind::Delivery, updated.id),
                destination_id: format_id(IdKind::Destination, updated.destination_id),
                status: updated.status.as_str().to_string(),
                attempts: attempts.into_iter().map(attempt_view).collect(),
                next_attempt_at: updated.next_attempt_ms.map(format_ms),
                created_at: format_ms(updated.created_at_ms),
            },
        }),
    ))
}

/// Events of one bulk replay queued per write, so ingest commits keep
/// interleaving with a large replay.
const BULK_CHUNK: usize = 200;
/// Bulk replays up to this many events are queued before the 202 (a few
/// hundred milliseconds at most); larger ones continue in the background.
const DURABLE_BULK_EVENTS: usize = 5_000;

/// Queues a bulk replay's deliveries, [`BULK_CHUNK`] events per commit,
/// waking each destination's lane as its deliveries land.
async fn queue_bulk(
    store: &crate::store::Store,
    engine: &crate::delivery::engine::Engine,
    source: u128,
    plan: &[(u128, std::sync::Arc<Vec<u128>>)],
) -> Result<(), StoreError> {
    for chunk in plan.chunks(BULK_CHUNK) {
        let chunk = chunk.to_vec();
        let made = store
            .write(move |txn| events::insert_many(txn, source, &chunk, now_ms()))
            .await?;
        let mut woken = std::collections::HashSet::new();
        for d in made {
            if woken.insert(d.destination_id) {
                engine.wake(source, d.destination_id);
            }
        }
    }
    Ok(())
}

/// Re-sends every event in a time range (optionally of a type, optionally
/// only where delivery failed, optionally to chosen destinations). Counts
/// are computed now; deliveries are queued in the background in chunks.
#[utoipa::path(post, path = "/api/v1/webhooks/sources/{id}/replay", tag = "events",
    params(("id" = String, Path, description = "source id")),
    request_body = BulkReplayRequest,
    responses((status = 202, body = Data<BulkReplayAccepted>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn bulk_replay(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(source): ApiPath<String>,
    super::extract::ApiJson(body): super::extract::ApiJson<BulkReplayRequest>,
) -> Result<(StatusCode, Json<Data<BulkReplayAccepted>>), ApiError> {
    caller.require(Scope::Write)?;
    let source = source_id(&source)?;
    let mut v = Validation::default();
    let after = parse_time(&mut v, "after", Some(&body.after));
    let before = parse_time(&mut v, "before", body.before.as_deref()).or(Some(now_ms()));
    let only_failed = match body.status.as_deref() {
        None => false,
        Some("failed") => true,
        Some(_) => {
            v.fail("status", "the only status filter is `failed`");
            false
        }
    };
    v.finish()?;
    let (after, before) = (after.unwrap_or(0), before.unwrap_or(0));
    let all = state
        .store
        .read(|txn| destinations::all_of_source(txn, source))
        .and_then(|all| {
            if all.is_empty() {
                state
                    .store
                    .read(|txn| crate::store::sources::get(txn, source))
                    .map(|_| all)
            } else {
                Ok(all)
            }
        })
        .map_err(not_found("source"))?;
    let chosen = match &body.destination_ids {
        Some(ids) => Some(chosen_destinations(&all, ids)?),
        None => None,
    };
    let store = state.store.clone();
    let pattern = body.event_type.clone().filter(|t| !t.is_empty());
    // Scanning a large range reads many index entries: off the async threads.
    let plan = tokio::task::spawn_blocking(move || {
        store.read(|txn| {
            let Some(matched) = events::matching(txn, source, after, before, pattern.as_deref())?
            else {
                return Ok(None);
            };
            // Without a status filter the targets depend only on the
            // type: one shared list per type, not one per event.
            let by_type: Vec<std::sync::Arc<Vec<u128>>> = matched
                .types
                .iter()
                .map(|event_type| {
                    std::sync::Arc::new(match &chosen {
                        Some(chosen) => chosen.clone(),
                        None => all
                            .iter()
                            .filter(|d| d.enabled && filter::matches(&d.event_filter, event_type))
                            .map(|d| d.id)
                            .collect(),
                    })
                })
                .collect();
            let mut plan = Vec::new();
            for (event, type_index) in matched.events {
                let targets = if only_failed {
                    // A destination counts as failed for this event when a
                    // delivery to it failed and none (a replay, a retry)
                    // has succeeded or is still pending since.
                    let list = events::deliveries_of(txn, event)?;
                    let settled = |dest: u128| {
                        list.iter().any(|d| {
                            d.destination_id == dest
                                && matches!(
                                    d.status,
                                    DeliveryStatus::Succeeded | DeliveryStatus::Pending
                                )
                        })
                    };
                    let mut failed: Vec<u128> = list
                        .iter()
                        .filter(|d| d.status == DeliveryStatus::Failed)
                        .map(|d| d.destination_id)
                        .filter(|id| !settled(*id))
                        .filter(|id| chosen.as_ref().is_none_or(|c| c.contains(id)))
                        .filter(|id| all.iter().any(|d| d.id == *id && d.enabled))
                        .collect();
                    failed.sort_unstable();
                    failed.dedup();
                    std::sync::Arc::new(failed)
                } else {
                    by_type[type_index as usize].clone()
                };
                if !targets.is_empty() {
                    plan.push((event, targets));
                }
            }
            Ok(Some(plan))
        })
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let Some(plan) = plan else {
        return Err(ApiError::invalid_field(
            "after",
            format!(
                "more than {} events match; replay a narrower range",
                events::MAX_BULK_EVENTS
            ),
        ));
    };
    let accepted = BulkReplayAccepted {
        events: plan.len(),
        deliveries: plan.iter().map(|(_, t)| t.len()).sum(),
    };
    if plan.len() <= DURABLE_BULK_EVENTS {
        // Small enough to queue before answering: the 202 then means the
        // deliveries are durable, as for a single replay.
        queue_bulk(&state.store, &state.engine, source, &plan).await?;
    } else {
        let (store, engine) = (state.store.clone(), state.engine.clone());
        tokio::spawn(async move {
            if let Err(e) = queue_bulk(&store, &engine, source, &plan).await {
                tracing::error!(error = %e, "bulk replay stopped");
            }
        });
    }
    Ok((StatusCode::ACCEPTED, Json(Data { data: accepted })))
}
