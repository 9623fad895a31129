//! Events, their deliveries, replay and retry (SPEC §10).

use crate::model::ids::{DeliveryId, EventId, ReplayId, SourceId};
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
    encode_cursor, query_time, ApiPath, ApiQuery, Data, List, ListParams, OptionalJson,
};
use super::sources::source_id;
use super::AppState;
use crate::model::records::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, EventSummary, ReplayRecord,
};
use crate::model::time::{format_ms, parse_rfc3339_ms};
use crate::ops::events::{self, BulkReplay};
use crate::store::EventQuery;

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

/// What a bulk replay will queue, and the job doing it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkReplayAccepted {
    /// The replay job (`rpl_...`), to follow its progress.
    pub id: String,
    /// `running` or `completed` (small replays are queued before the 202).
    pub status: String,
    /// Events that will be re-sent (each to at least one destination).
    pub events: u64,
    /// Deliveries that will be queued.
    pub deliveries: u64,
}

/// A bulk replay's request, as the job holds it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayRequestView {
    pub after: String,
    /// The requested `before`, else the time the replay was accepted.
    pub before: String,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `failed` or null.
    pub status: Option<String>,
    pub destination_ids: Option<Vec<String>>,
}

/// A bulk replay job and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayView {
    pub id: String,
    pub source_id: String,
    /// `running`, `completed` or `cancelled` (its source was deleted).
    pub status: String,
    /// Events the 202 promised to re-send.
    pub events_total: u64,
    /// Events re-sent so far.
    pub events_done: u64,
    /// Deliveries the 202 promised.
    pub deliveries_total: u64,
    /// Deliveries queued so far.
    pub deliveries_queued: u64,
    pub created_at: String,
    pub updated_at: String,
    pub request: ReplayRequestView,
}

fn event_id(text: &str) -> Result<EventId, ApiError> {
    EventId::parse(text).ok_or_else(|| ApiError::not_found("no such event"))
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
    source: SourceId,
    id: EventId,
    s: &EventSummary,
    deliveries: &[DeliveryRecord],
) -> EventView {
    EventView {
        id: id.to_string(),
        source_id: source.to_string(),
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
    let source = source_id(&id)?;
    let paging = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let (limit, before_id) = (paging.limit()?, paging.cursor()?);
    let after_ms = query_time("after", params.after.as_deref())?;
    let before_ms = query_time("before", params.before.as_deref())?;
    let query = EventQuery {
        before_id,
        after_ms,
        before_ms,
        type_pattern: params.event_type.filter(|t| !t.is_empty()),
    };
    let page = state.ops.list_events(&caller, source, query, limit).await?;
    Ok(Json(List {
        data: page
            .items
            .iter()
            .map(|e| event_view(source, e.id, &e.summary, &e.deliveries))
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
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let detail = state.ops.get_event(&caller, source, event).await?;
    Ok(Json(Data {
        data: detail_view(source, event, detail),
    }))
}

/// The detail object of SPEC §10 (the event plus its headers and body),
/// as `GET .../events/{id}` answers it and the live stream sends it.
pub(crate) fn detail_view(
    source: SourceId,
    event: EventId,
    detail: events::EventDetail,
) -> EventDetail {
    let events::EventDetail {
        summary,
        event: record,
        deliveries: list,
    } = detail;
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
    EventDetail {
        event: event_view(source, event, &summary, &list),
        headers,
        body,
        body_base64,
    }
}

fn attempt_view(a: AttemptRecord) -> AttemptView {
    AttemptView {
        number: a.number,
        started_at: format_ms(a.started_at_ms),
        duration_ms: a.duration_ms,
        status_code: a.status_code,
        error_kind: a.error_kind.map(|k| k.as_str().to_string()),
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
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let views = state
        .ops
        .event_deliveries(&caller, source, event)
        .await?
        .into_iter()
        .map(|(d, attempts)| DeliveryView {
            id: d.id.to_string(),
            destination_id: d.destination_id.to_string(),
            status: d.status.as_str().to_string(),
            attempts: attempts.into_iter().map(attempt_view).collect(),
            next_attempt_at: d.next_attempt_ms.map(format_ms),
            created_at: format_ms(d.created_at_ms),
        })
        .collect();
    Ok(Json(List {
        data: views,
        next_cursor: None,
    }))
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
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let chosen = body.and_then(|b| b.destination_ids);
    let targets = state
        .ops
        .replay_event(&caller, source, event, chosen)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: ReplayAccepted {
                count: targets.len(),
                destination_ids: targets.iter().map(|id| id.to_string()).collect(),
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
    let (source, event) = (source_id(&source)?, event_id(&event)?);
    let delivery =
        DeliveryId::parse(&delivery).ok_or_else(|| ApiError::not_found("no such delivery"))?;
    let (updated, attempts) = state
        .ops
        .retry_delivery(&caller, source, event, delivery)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: DeliveryView {
                id: updated.id.to_string(),
                destination_id: updated.destination_id.to_string(),
                status: updated.status.as_str().to_string(),
                attempts: attempts.into_iter().map(attempt_view).collect(),
                next_attempt_at: updated.next_attempt_ms.map(format_ms),
                created_at: format_ms(updated.created_at_ms),
            },
        }),
    ))
}

/// Re-sends every event in a time range (optionally of a type, optionally
/// only where delivery failed, optionally to chosen destinations) as a
/// durable replay job. Counts are computed now; the job is stored before
/// the 202 and queues the deliveries in chunks, resuming after a restart.
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
    let source = source_id(&source)?;
    let mut v = Validation::default();
    let after = parse_time(&mut v, "after", Some(&body.after));
    let before = parse_time(&mut v, "before", body.before.as_deref());
    let only_failed = match body.status.as_deref() {
        None => false,
        Some("failed") => true,
        Some(_) => {
            v.fail("status", "the only status filter is `failed`");
            false
        }
    };
    v.finish()?;
    let request = BulkReplay {
        after_ms: after.unwrap_or(0),
        before_ms: before,
        event_type: body.event_type.clone(),
        only_failed,
        destination_ids: body.destination_ids.clone(),
    };
    let started = state.ops.bulk_replay(&caller, source, request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Data {
            data: BulkReplayAccepted {
                id: started.job.id.to_string(),
                status: started.state.as_str().to_string(),
                events: started.job.events_total,
                deliveries: started.job.deliveries_total,
            },
        }),
    ))
}

fn replay_id(text: &str) -> Result<ReplayId, ApiError> {
    ReplayId::parse(text).ok_or_else(|| ApiError::not_found("no such replay"))
}

fn replay_view(job: &ReplayRecord) -> ReplayView {
    ReplayView {
        id: job.id.to_string(),
        source_id: job.source_id.to_string(),
        status: job.state.as_str().to_string(),
        events_total: job.events_total,
        events_done: job.events_done,
        deliveries_total: job.deliveries_total,
        deliveries_queued: job.deliveries_queued,
        created_at: format_ms(job.created_at_ms),
        updated_at: format_ms(job.updated_at_ms),
        request: ReplayRequestView {
            after: format_ms(job.after_ms),
            before: format_ms(job.before_ms),
            event_type: job.type_pattern.clone(),
            status: job.only_failed.then(|| "failed".to_string()),
            destination_ids: job
                .destination_ids
                .as_ref()
                .map(|ids| ids.iter().map(|id| id.to_string()).collect()),
        },
    }
}

/// A source's bulk replay jobs, newest first, with their progress.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}/replays", tag = "events",
    params(("id" = String, Path, description = "source id"), ListParams),
    responses((status = 200, body = List<ReplayView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list_replays(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<List<ReplayView>>, ApiError> {
    let source = source_id(&id)?;
    let (limit, cursor) = (params.limit()?, params.cursor()?);
    let page = state
        .ops
        .list_replays(&caller, source, cursor, limit)
        .await?;
    Ok(Json(List {
        data: page.items.iter().map(replay_view).collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// One bulk replay job with its progress.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}/replays/{replay_id}", tag = "events",
    params(("id" = String, Path, description = "source id"), ("replay_id" = String, Path, description = "replay id (`rpl_...`)")),
    responses((status = 200, body = Data<ReplayView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get_replay(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((source, replay)): ApiPath<(String, String)>,
) -> Result<Json<Data<ReplayView>>, ApiError> {
    let (source, replay) = (source_id(&source)?, replay_id(&replay)?);
    let job = state.ops.get_replay(&caller, source, replay).await?;
    Ok(Json(Data {
        data: replay_view(&job),
    }))
}
