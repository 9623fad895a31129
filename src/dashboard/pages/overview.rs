//! Every source's events on one page, newest first, with a search box that
//! finds an event by its Krafter id or by the provider's event id (issue
//! #11), and "Send a test event" for a source.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};

use super::{cursor_of, cursor_text, id_of, notice, QueryMap};
use crate::dashboard::error::DashboardError;
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::model::ids::{EventId, SourceId};
use crate::model::records::DeliveryCounts;
use crate::ops::{Listed, OpError};
use crate::store::{EventSearch, FoundEvent};

const PAGE: usize = 50;
const BASE: &str = "/dashboard/events";
/// A search finds at most one event per source: one page this long is all.
const SEARCH_PAGE: usize = 250;

/// The searches a search box text stands for: a Krafter event id is
/// looked up as one (and, as providers' ids can look alike, also as a
/// provider's id); anything else as a provider's event id.
fn searches(q: &str) -> Vec<EventSearch> {
    let mut out = Vec::new();
    if let Some(id) = EventId::parse(q) {
        out.push(EventSearch::Id {
            id,
            provider_event_id: None,
        });
    }
    out.push(EventSearch::ProviderEventId(q.to_string()));
    out
}

/// Runs the search (or lists the newest page); a refusal of the search
/// text or the cursor comes back to show on the page.
async fn events_for(
    d: &Dashboard,
    session: &Session,
    q: &str,
    query: &QueryMap,
) -> Result<Result<Listed<FoundEvent>, OpError>, DashboardError> {
    if q.is_empty() {
        let cursor = match cursor_of(query) {
            Ok(cursor) => cursor,
            Err(refused) => return Ok(Err(refused)),
        };
        let page = d
            .ops
            .search_events(&session.caller, EventSearch::All, cursor, PAGE)
            .await?;
        return Ok(Ok(page));
    }
    let mut found: Vec<FoundEvent> = Vec::new();
    for search in searches(q) {
        let page = match d
            .ops
            .search_events(&session.caller, search, None, SEARCH_PAGE)
            .await
        {
            Err(refused @ OpError::BadRequest(_)) => return Ok(Err(refused)),
            other => other?,
        };
        for e in page.items {
            if !found.iter().any(|f| f.event_id == e.event_id) {
                found.push(e);
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.event_id));
    Ok(Ok(Listed {
        items: found,
        next: None,
    }))
}

/// The names of the sources on a page (a page shows at most 50 events, so
/// at most 50 lookups).
async fn source_names(
    d: &Dashboard,
    session: &Session,
    events: &[FoundEvent],
) -> HashMap<SourceId, String> {
    let mut names = HashMap::new();
    for e in events {
        if names.contains_key(&e.source_id) {
            continue;
        }
        let name = match d.ops.get_source(&session.caller, e.source_id).await {
            Ok(found) => found.source.name,
            // Deleted since the list was read.
            Err(_) => e.source_id.to_string(),
        };
        names.insert(e.source_id, name);
    }
    names
}

/// `?cursor=` of the next page, as a query string.
fn cursor_query(cursor: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("cursor", cursor);
    q.finish()
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
    let (page, refused) = match events_for(&d, &session, &q, &query).await? {
        Ok(page) => (page, None),
        Err(refused) => (
            Listed {
                items: Vec::new(),
                next: None,
            },
            Some(refused.to_string()),
        ),
    };
    let next_cursor = cursor_text(page.next);
    let names = source_names(&d, &session, &page.items).await;
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
        @if let Some(message) = &refused { div.alert role="alert" { (message) } }
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
                            @let sid = e.source_id.to_string();
                            @let eid = e.event_id.to_string();
                            @let href = format!("/dashboard/sources/{sid}/events/{eid}");
                            tr data-event=(eid) {
                                td { a href={ "/dashboard/sources/" (sid) "/events" } { (names.get(&e.source_id).unwrap_or(&sid)) } }
                                td { a href=(href) { code { (e.summary.event_type) } } }
                                td { @if let Some(p) = &e.summary.provider_event_id { code.small.wrap title=(shown_id(p, 1024)) { (shown_id(p, SHOWN_ID_CHARS)) } } @else { span.muted { "—" } } }
                                td { (views::time(e.summary.received_at_ms)) }
                                td.counts { (super::events::counts(&DeliveryCounts::of(&e.deliveries))) }
                                td { a.muted.small href=(href) { (eid) } }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if cursor.is_some() { a href=(BASE) { "← Newest" } }
                @if let Some(c) = &next_cursor { a href={ (BASE) "?" (cursor_query(c)) } { "Older events →" } }
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

/// Sends a test event and shows it.
pub async fn send_test_event(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let sent = d.ops.send_test_event(&session.caller, sid).await?;
    Ok(views::see_other(&format!(
        "/dashboard/sources/{}/events/{}?notice=test-event",
        sid, sent.event_id
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
        let id = EventId::from_u128(
            ulid::Ulid::from_string("01ARZ3NDEKTSV4RRFFQ69G5FAV")
                .expect("a ULID")
                .0,
        );
        assert_eq!(
            searches(k),
            vec![
                EventSearch::Id {
                    id,
                    provider_event_id: None
                },
                EventSearch::ProviderEventId(k.to_string())
            ]
        );
        for other in ["evt_1NxShared", "72d3162e-cc78-11e3-81ab-4c9367dc0958"] {
            assert_eq!(
                searches(other),
                vec![EventSearch::ProviderEventId(other.to_string())]
            );
        }
    }
}
