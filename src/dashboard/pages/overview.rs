//! Every source's events on one page, newest first, with a search box that
//! finds an event by its Krafter id or by the provider's event id (issue
//! #11), and "Send a test event" for a source.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{html, Markup};

use super::sources::api_path;
use super::{notice, QueryMap};
use crate::dashboard::dispatch::{id_segment, ApiFailure, Listed};
use crate::dashboard::error::DashboardError;
use crate::dashboard::model::{Event, Source};
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;

const PAGE: usize = 50;
const BASE: &str = "/dashboard/events";

/// The API queries a search box text stands for: a Krafter event id is
/// looked up as one (and, as providers' ids can look alike, also as a
/// provider's id); anything else as a provider's event id.
fn searches(q: &str) -> Vec<(&'static str, String)> {
    let krafter_id = q.starts_with("evt_")
        && crate::model::ids::parse_id(crate::model::ids::IdKind::Event, q).is_some();
    let mut out = Vec::new();
    if krafter_id {
        out.push(("id", q.to_string()));
    }
    out.push(("provider_event_id", q.to_string()));
    out
}

fn api_query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Runs the search (or lists the newest page); a refusal of the search
/// text (too long, ...) comes back to show on the page.
async fn events_for(
    d: &Dashboard,
    session: &Session,
    q: &str,
    cursor: Option<&str>,
) -> Result<Result<Listed<Event>, ApiFailure>, DashboardError> {
    let limit = PAGE.to_string();
    if q.is_empty() {
        let mut pairs = vec![("limit", limit.as_str())];
        if let Some(c) = cursor {
            pairs.push(("cursor", c));
        }
        let path = format!("/api/v1/webhooks/events?{}", api_query(&pairs));
        return match d
            .api
            .send(&session.caller, Method::GET, &path, None)
            .await?
        {
            Ok(v) => Ok(Ok(decode_list(v)?)),
            Err(f) if f.status == StatusCode::BAD_REQUEST => Ok(Err(f)),
            Err(f) => Err(f.into()),
        };
    }
    // A search finds at most one event per source: one page of 250 is all.
    let mut found: Vec<Event> = Vec::new();
    for (key, value) in searches(q) {
        let path = format!(
            "/api/v1/webhooks/events?{}",
            api_query(&[(key, value.as_str()), ("limit", "250")])
        );
        match d
            .api
            .send(&session.caller, Method::GET, &path, None)
            .await?
        {
            Ok(v) => {
                for e in decode_list(v)?.items {
                    if !found.iter().any(|f| f.id == e.id) {
                        found.push(e);
                    }
                }
            }
            Err(f) if f.status == StatusCode::BAD_REQUEST => return Ok(Err(f)),
            Err(f) => return Err(f.into()),
        }
    }
    found.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(Ok(Listed {
        items: found,
        next_cursor: None,
    }))
}

fn decode_list(v: serde_json::Value) -> Result<Listed<Event>, DashboardError> {
    #[derive(serde::Deserialize)]
    struct Body {
        data: Vec<Event>,
        next_cursor: Option<String>,
    }
    let b: Body = serde_json::from_value(v)
        .map_err(|e| DashboardError::Internal(format!("unexpected events list: {e}")))?;
    Ok(Listed {
        items: b.data,
        next_cursor: b.next_cursor,
    })
}

/// The names of the sources on a page (a page shows at most 50 events, so
/// at most 50 lookups, in-process).
async fn source_names(
    d: &Dashboard,
    session: &Session,
    events: &[Event],
) -> Result<HashMap<String, String>, DashboardError> {
    let mut names = HashMap::new();
    for e in events {
        if names.contains_key(&e.source_id) {
            continue;
        }
        let path = api_path(&e.source_id);
        let name = match d
            .api
            .send(&session.caller, Method::GET, &path, None)
            .await?
        {
            Ok(v) => serde_json::from_value::<SourceBody>(v)
                .map(|b| b.data.name)
                .unwrap_or_else(|_| e.source_id.clone()),
            // Deleted since the list was read.
            Err(_) => e.source_id.clone(),
        };
        names.insert(e.source_id.clone(), name);
    }
    Ok(names)
}

#[derive(serde::Deserialize)]
struct SourceBody {
    data: Source,
}

/// `/dashboard/events`: every source's events, or the search's results.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let q = query
        .get("q")
        .map(|v| v.trim())
        .unwrap_or_default()
        .to_string();
    let cursor = query.get("cursor").filter(|c| !c.is_empty()).cloned();
    let (page, refused) = match events_for(&d, &session, &q, cursor.as_deref()).await? {
        Ok(page) => (page, None),
        Err(f) => (
            Listed {
                items: Vec::new(),
                next_cursor: None,
            },
            Some(f),
        ),
    };
    let names = source_names(&d, &session, &page.items).await?;
    let body = html! {
        div.title-row {
            h1 { "All events" }
            span.muted { "Every source, newest first." }
        }
        @if let Some(n) = notice(&query) { (n) }
        form.filters #event-search method="get" action=(BASE) role="search" aria-label="Find an event" {
            div {
                label for="q" { "Event id or provider's event id" }
                input #q type="search" name="q" value=(q) maxlength="1024"
                    placeholder="evt_01J… or Stripe's evt_1Nx… or a GitHub delivery id";
            }
            div.filter-actions {
                button.btn type="submit" { "Find" }
                @if !q.is_empty() { a.btn.link href=(BASE) { "Clear" } }
            }
        }
        @if let Some(f) = &refused { div.alert role="alert" { (f.message) } }
        @if page.items.is_empty() && refused.is_none() {
            @if !q.is_empty() {
                (views::empty("No event found", html! {
                    p { "No event has the id or provider event id " code { (q) } "." }
                    p.muted { "Events removed by retention, and duplicates the provider re-sent (stored once), are not found separately." }
                }))
            } @else if cursor.is_some() {
                (views::empty("No older events", html! { p { a href=(BASE) { "Back to the newest" } } }))
            } @else {
                (views::empty("No events yet", html! {
                    p { "Events appear here as soon as a provider sends one to a source's ingest URL, or you send a test event from a source's page." }
                    p { a href="/dashboard/sources" { "Go to your sources" } }
                }))
            }
        } @else if !page.items.is_empty() {
            div.table-wrap {
                table #all-events {
                    thead { tr {
                        th scope="col" { "Source" } th scope="col" { "Type" } th scope="col" { "Provider's id" }
                        th scope="col" { "Received" } th scope="col" { "Deliveries" } th scope="col" { "Event" }
                    } }
                    tbody {
                        @for e in &page.items {
                            @let href = format!("/dashboard/sources/{}/events/{}", e.source_id, e.id);
                            tr data-event=(e.id) {
                                td { a href={ "/dashboard/sources/" (e.source_id) "/events" } { (names.get(&e.source_id).map(String::as_str).unwrap_or(&e.source_id)) } }
                                td { a href=(href) { code { (e.event_type) } } }
                                td { @if let Some(p) = &e.provider_event_id { code.small.wrap title=(shown_id(p, 1024)) { (shown_id(p, SHOWN_ID_CHARS)) } } @else { span.muted { "—" } } }
                                td { (views::time(&e.received_at)) }
                                td.counts { (super::events::counts(e)) }
                                td { a.muted.small href=(href) { (e.id) } }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if cursor.is_some() { a href=(BASE) { "← Newest" } }
                @if let Some(c) = &page.next_cursor { a href={ (BASE) "?" (api_query(&[("cursor", c.as_str())])) } { "Older events →" } }
            }
        }
    };
    Ok(views::ok(views::page(
        "All events",
        Some(&session),
        Nav::Events,
        body,
    )))
}

/// Characters of a provider's event id shown in a row. Providers take it
/// from the body (Stripe's `id`), so a hostile sender can make it as long
/// as a body: a page of 50 must stay small whatever was stored.
const SHOWN_ID_CHARS: usize = 64;

/// `id`'s first `max` characters, with "…" when cut.
fn shown_id(id: &str, max: usize) -> String {
    match id.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_string(),
    }
}

/// The "Send a test event" form of a source (write keys only).
pub fn test_event_form(session: &Session, sid: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/dashboard/sources/" (sid) "/test-event" } {
            (views::csrf(session))
            button.btn type="submit" { "Send a test event" }
        }
    }
}

/// Sends a test event through the API and shows it.
pub async fn send_test_event(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_segment(&sid)?;
    let event = d
        .api
        .change::<Event>(
            &session.caller,
            Method::POST,
            &format!("{}/test-event", api_path(sid)),
            None,
        )
        .await??;
    Ok(views::see_other(&format!(
        "/dashboard/sources/{sid}/events/{}?notice=test-event",
        event.id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_provider_ids_are_cut_on_a_character_boundary() {
        assert_eq!(shown_id("evt_1Nx", 64), "evt_1Nx");
        assert_eq!(
            shown_id(&"é".repeat(70), 64),
            format!("{}…", "é".repeat(64))
        );
        assert_eq!(shown_id(&"x".repeat(64), 64), "x".repeat(64));
    }

    #[test]
    fn krafter_ids_are_searched_both_ways_others_as_provider_ids() {
        let k = "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_eq!(
            searches(k),
            vec![("id", k.to_string()), ("provider_event_id", k.to_string())]
        );
        for other in ["evt_1NxShared", "72d3162e-cc78-11e3-81ab-4c9367dc0958"] {
            assert_eq!(
                searches(other),
                vec![("provider_event_id", other.to_string())]
            );
        }
    }
}
