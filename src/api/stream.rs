//! `GET /api/v1/webhooks/sources/{id}/events/stream` (SPEC §14): a source's
//! events as Server-Sent Events. The stream itself (reading storage by
//! cursor, the settle window, backpressure) is `crate::ops::stream`; this
//! module parses the request and writes the `text/event-stream` body, for
//! the API and for the dashboard's live events page alike.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper::body::Frame;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::events::detail_view;
use super::extract::{ApiPath, ApiQuery};
use super::sources::source_id;
use super::AppState;
use crate::http::server::ConnectionKill;
use crate::model::ids::EventId;
use crate::ops::stream::{EventStream, StreamItem, StreamRequest};

/// Query of the live stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Send the stored events after this event id first (as the
    /// `Last-Event-ID` header does; the header wins when both are sent).
    #[param(pattern = "^evt_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub after: Option<String>,
    /// Exact event type or `*` pattern (`invoice.*`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

/// What the request asks of the stream: `Last-Event-ID` (what a browser's
/// `EventSource` sends when it reconnects, while the URL keeps its first
/// `?after=`) wins over `?after=`. A malformed id is a 400.
pub fn stream_request(
    headers: &HeaderMap,
    after: Option<&str>,
    event_type: Option<String>,
) -> Result<StreamRequest, ApiError> {
    let header =
        match headers.get("last-event-id") {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::bad_request("Last-Event-ID must be an event id (`evt_...`)")
            })?),
        };
    let resume = match (header.map(str::trim), after) {
        (Some(id), _) if !id.is_empty() => Some(EventId::parse(id).ok_or_else(|| {
            ApiError::bad_request("Last-Event-ID must be an event id (`evt_...`)")
        })?),
        (_, Some(id)) if !id.is_empty() => Some(
            EventId::parse(id)
                .ok_or_else(|| ApiError::bad_request("after must be an event id (`evt_...`)"))?,
        ),
        _ => None,
    };
    Ok(StreamRequest {
        after: resume,
        type_pattern: event_type,
        on_stall: None,
    })
}

/// Streams a source's events as they are stored (Server-Sent Events).
/// Each event: `id: <event id>`, `event: event`, `data: <the event detail
/// object, one line>`. With `Last-Event-ID` or `?after=` the stored events
/// after that one come first, oldest first, then live ones; a comment line
/// at least every 15 s keeps the connection open. Events are sent about
/// two seconds after they are received (so none can be skipped: see the
/// README), and the stream never ends by itself.
#[utoipa::path(get, path = "/api/v1/webhooks/sources/{id}/events/stream", tag = "events",
    params(("id" = String, Path, description = "source id"), StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id (`evt_...`)")),
    responses(
        (status = 200, description = "an endless `text/event-stream`", content_type = "text/event-stream", body = String),
        (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<StreamParams>,
    kill: Option<Extension<ConnectionKill>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let source = source_id(&id)?;
    let mut request = stream_request(&headers, params.after.as_deref(), params.event_type)?;
    request.on_stall = kill.map(|Extension(k)| Box::new(move || k.kill()) as _);
    let events = state.ops.open_stream(&caller, source, request).await?;
    Ok(sse_response(events))
}

/// The `text/event-stream` answer reading `events`. Told not to be cached
/// nor buffered by a proxy (`x-accel-buffering: no`), so every event goes
/// out as it is written.
pub fn sse_response(events: EventStream) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::new(SseBody {
            events,
            opened: false,
        }),
    )
        .into_response()
}

/// A response body pulling one item at a time from the stream's bounded
/// channel: nothing is produced faster than the connection takes it.
struct SseBody {
    events: EventStream,
    opened: bool,
}

/// The text of one stream item.
fn render(item: StreamItem) -> Bytes {
    match item {
        StreamItem::Event {
            source_id,
            id,
            detail,
        } => {
            let view = detail_view(source_id, id, *detail);
            // serde_json writes no raw newline: the object is one line.
            let json = serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_string());
            Bytes::from(format!("id: {id}\nevent: event\ndata: {json}\n\n"))
        }
        StreamItem::Heartbeat => Bytes::from_static(b": keep-alive\n\n"),
    }
}

impl HttpBody for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.opened {
            // A first comment at once: the client sees the stream open
            // even before an event or heartbeat is due.
            self.opened = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": open\n\n")))));
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(Ok(Frame::data(render(item))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
