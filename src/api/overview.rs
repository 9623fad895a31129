//! Events across every source, found by id or by the provider's event id,
//! and test events (issue #11): what a person needs in the first hour
//! ("did my webhook arrive?", "does my endpoint get it?") without knowing
//! which source to look in.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::events::{event_view, EventView};
use super::extract::{encode_cursor, ApiPath, ApiQuery, Data, List, ListParams};
use super::sources::source_id;
use super::AppState;
use crate::model::ids::EventId;
use crate::store::EventSearch;

/// Filters of `GET /api/v1/webhooks/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllEventsParams {
    /// Only the event with this Krafter id.
    #[param(pattern = "^evt_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: Option<String>,
    /// Only events whose provider event id is exactly this (Stripe's
    /// `evt_1...`, GitHub's `X-GitHub-Delivery` GUID, ...). With `id` too,
    /// the event must match both.
    #[param(min_length = 1, max_length = 1024)]
    pub provider_event_id: Option<String>,
    /// 1 to 250; default 50.
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor` (empty: the first page).
    #[param(pattern = "^([0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
}

fn search(params: &AllEventsParams) -> Result<EventSearch, ApiError> {
    match (&params.id, &params.provider_event_id) {
        (Some(id), provider) => EventId::parse(id)
            .map(|id| EventSearch::Id {
                id,
                provider_event_id: provider.clone(),
            })
            .ok_or_else(|| ApiError::bad_request("id must be a Krafter event id (evt_...)")),
        (None, Some(p)) => Ok(EventSearch::ProviderEventId(p.clone())),
        (None, None) => Ok(EventSearch::All),
    }
}

/// Events of every source, newest first; or the events found by id or by
/// the provider's event id. Every lookup uses an index: a page costs one
/// index lookup per source plus one per event listed.
#[utoipa::path(get, path = "/api/v1/webhooks/events", tag = "events",
    params(AllEventsParams),
    responses((status = 200, body = List<EventView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AllEventsParams>,
) -> Result<Json<List<EventView>>, ApiError> {
    let paging = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let (limit, cursor) = (paging.limit()?, paging.cursor()?);
    let wanted = search(&params)?;
    let page = state
        .ops
        .search_events(&caller, wanted, cursor, limit)
        .await?;
    Ok(Json(List {
        data: page
            .items
            .iter()
            .map(|f| event_view(f.source_id, f.event_id, &f.summary, &f.deliveries))
            .collect(),
        next_cursor: encode_cursor(page.next),
    }))
}

/// Stores a test event of type `krafter.test` in a source, as if it had
/// arrived at its ingest URL, and delivers it to every enabled destination
/// of the source (filters not applied), signed like any delivery. Krafter
/// makes it itself, so there is no provider signature to verify: it works
/// for every provider without the provider's secret leaving the server.
#[utoipa::path(post, path = "/api/v1/webhooks/sources/{id}/test-event", tag = "events",
    params(("id" = String, Path, description = "source id")),
    responses((status = 201, body = Data<EventView>),
        (status = 409, description = "conflict: the source is disabled", body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn test_event(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Data<EventView>>), ApiError> {
    let source = source_id(&id)?;
    let sent = state.ops.send_test_event(&caller, source).await?;
    Ok((
        StatusCode::CREATED,
        Json(Data {
            data: event_view(source, sent.event_id, &sent.summary, &sent.deliveries),
        }),
    ))
}
