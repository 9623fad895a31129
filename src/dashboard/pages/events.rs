//! Events of a source (filter by type and time, paging), the event page
//! (headers, body, every delivery with every attempt), replay to all
//! matching or to ticked destinations, retry, and bulk replay.

use crate::model::ids::{DeliveryId, DestinationId, EventId, SourceId};
use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use maud::{html, Markup};

use super::destinations::SHOWN;
use super::sources;
use super::{cursor_of, cursor_text, id_of, notice, QueryMap, Reading, SourceTab};
use crate::dashboard::error::{DashboardError, Refusal};
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::model::records::{
    AttemptRecord, DeliveryCounts, DeliveryRecord, DeliveryStatus, DestinationRecord, ReplayRecord,
};
use crate::model::time::parse_rfc3339_ms;
use crate::ops::events::{BulkReplay, EventDetail};
use crate::ops::OpError;
use crate::store::EventQuery;

const PAGE: usize = 50;

/// The ids of an event page's URL.
fn ids(sid: &str, eid: &str) -> Result<(SourceId, EventId), DashboardError> {
    Ok((id_of::<SourceId>(sid)?, id_of::<EventId>(eid)?))
}

/// A time filter as typed: an `<input type="datetime-local">` value
/// (`2026-11-27T14:48`, read as UTC) or a full RFC 3339 time.
fn rfc3339(input: &str) -> String {
    let t = input.trim();
    let has_zone = t.ends_with('Z')
        || t.ends_with('z')
        || t.get(19..)
            .is_some_and(|rest| rest.contains('+') || rest.contains('-'));
    match (has_zone, t.len()) {
        (true, _) => t.to_string(),
        (false, 16) => format!("{t}:00Z"),
        (false, _) => format!("{t}Z"),
    }
}

/// The `datetime-local` value for an input (drops zone and fraction).
fn local_input(value: &str) -> String {
    value.trim().chars().take(16).collect()
}

/// The filters that carry over from page to page.
fn filters(query: &QueryMap) -> Vec<(&'static str, String)> {
    ["type", "after", "before"]
        .into_iter()
        .filter_map(|k| {
            query
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .map(|v| (k, v))
        })
        .collect()
}

/// The events of a source, newest first.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Path(sid): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let source = sources::fetch(&d, &session, sid).await?.source;
    let active = filters(&query);
    // A bad cursor or time filter: the page with the complaint, not an
    // error page.
    let (page, refused) = match event_query(&active, &query) {
        Ok(wanted) => {
            let page = d
                .ops
                .list_events(&session.caller, sid, wanted, PAGE)
                .await?;
            (page, None)
        }
        Err(message) => (
            crate::ops::Listed {
                items: Vec::new(),
                next: None,
            },
            Some(message),
        ),
    };
    let next_cursor = cursor_text(page.next);
    let jobs = d
        .ops
        .list_replays(&session.caller, sid, None, RECENT_REPLAYS)
        .await?;
    let sid = sid.to_string();
    let ingest_url = d.ingest_url(&source.slug);
    let base = format!("/dashboard/sources/{sid}/events");
    let keep = |extra: Option<(&str, &str)>| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &active {
            q.append_pair(k, v);
        }
        if let Some((k, v)) = extra {
            q.append_pair(k, v);
        }
        q.finish()
    };
    let live = refused.is_none()
        && !query.contains_key("cursor")
        && !active.iter().any(|(k, _)| *k == "after" || *k == "before");
    let live_url = match active.iter().find(|(k, _)| *k == "type") {
        Some((_, t)) => format!(
            "{base}/stream?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("type", t)
                .finish()
        ),
        None => format!("{base}/stream"),
    };
    let body = html! {
        (super::source_header(&source, SourceTab::Events, &session))
        @if let Some(n) = notice(&query) { (n) }
        form.filters method="get" action=(base) role="search" aria-label="Filter events" {
            div {
                label for="f-type" { "Type" }
                input #f-type type="text" name="type" value=(query.get("type").cloned().unwrap_or_default())
                    placeholder="invoice.* or charge.succeeded";
            }
            div {
                label for="f-after" { "Received after (UTC)" }
                input #f-after type="datetime-local" name="after" value=(query.get("after").map(|v| local_input(v)).unwrap_or_default());
            }
            div {
                label for="f-before" { "Received before (UTC)" }
                input #f-before type="datetime-local" name="before" value=(query.get("before").map(|v| local_input(v)).unwrap_or_default());
            }
            div.filter-actions {
                button.btn type="submit" { "Filter" }
                @if !active.is_empty() { a.btn.link href=(base) { "Clear" } }
                a.btn.link href={ (base) @if !active.is_empty() { "?" (keep(None)) } } { "Refresh" }
            }
        }
        @if let Some(message) = &refused { div.alert role="alert" { (message) } }
        // New events are added live (dashboard.js) while the newest page
        // is shown without a time range; without JavaScript, Refresh.
        @if live {
            p.muted.small #live-events data-stream=(live_url) aria-live="polite" { "New events appear here as they arrive." }
        }
        @if page.items.is_empty() && refused.is_none() {
            @if active.is_empty() && !query.contains_key("cursor") {
                (views::empty("No events yet", html! {
                    p { "Events appear here as soon as " (super::provider_label(source.provider)) " sends one to this source's ingest URL:" }
                    (views::copyable("ingest-url", &ingest_url, "ingest URL"))
                    p.muted { "Try it with curl, or send a test event from the provider's dashboard." }
                    @if session.can_write() && source.enabled {
                        p { (super::overview::test_event_form(&session, &sid)) }
                    }
                }))
            } @else {
                (views::empty("No events match", html! { p { a href=(base) { "Clear the filters" } " to see every event." } }))
            }
        } @else if !page.items.is_empty() {
            div.table-wrap {
                table #events {
                    thead { tr {
                        th scope="col" { "Type" } th scope="col" { "Received" } th scope="col" { "Deliveries" }
                        th scope="col" { "Size" } th scope="col" { "Event" }
                    } }
                    tbody {
                        @for e in &page.items {
                            @let eid = e.id.to_string();
                            tr data-event=(eid) {
                                td { a href={ (base) "/" (eid) } { code { (e.summary.event_type) } } }
                                td { (views::time(e.summary.received_at_ms)) }
                                td.counts { (counts(&DeliveryCounts::of(&e.deliveries))) }
                                td.num { (views::bytes(e.summary.size_bytes)) }
                                td { a.muted.small href={ (base) "/" (eid) } { (eid) } }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if query.contains_key("cursor") { a href={ (base) "?" (keep(None)) } { "← Newest" } }
                @if let Some(cursor) = &next_cursor { a href={ (base) "?" (keep(Some(("cursor", cursor)))) } { "Older events →" } }
            }
        }
        @if session.can_write() { (bulk_form(&session, &sid, None)) }
        @if !jobs.items.is_empty() { (replay_jobs(&jobs.items)) }
    };
    Ok(views::ok(views::page(
        &format!("Events of {}", source.name),
        Some(&session),
        Nav::Sources,
        body,
    )))
}

/// The source's live event stream (SPEC §14) for the events page's script,
/// authorised by the session like every page: the same stream as the
/// API's, as the signed-in key's caller.
pub async fn stream(
    State(d): State<Dashboard>,
    session: Session,
    Path(sid): Path<String>,
    Query(query): Query<QueryMap>,
    kill: Option<axum::Extension<crate::http::server::ConnectionKill>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let mut request = crate::api::stream::stream_request(
        &headers,
        query.get("after").map(String::as_str),
        query.get("type").cloned(),
    )
    .map_err(|_| DashboardError::BadRequest("after / Last-Event-ID must be an event id".into()))?;
    request.on_stall = kill.map(|axum::Extension(k)| Box::new(move || k.kill()) as _);
    let events = d.ops.open_stream(&session.caller, sid, request).await?;
    Ok(crate::api::stream::sse_response(events))
}

/// The filters and cursor of the events page as a query; what is wrong
/// with them, worded as the API words it, otherwise.
fn event_query(active: &[(&str, String)], query: &QueryMap) -> Result<EventQuery, String> {
    let before_id = cursor_of(query).map_err(|e| e.to_string())?;
    let mut wanted = EventQuery {
        before_id,
        ..EventQuery::default()
    };
    let mut bad_time = false;
    for (k, v) in active {
        match *k {
            "type" => wanted.type_pattern = Some(v.clone()),
            "after" | "before" => {
                let ms = parse_rfc3339_ms(&rfc3339(v));
                bad_time |= ms.is_none();
                if *k == "after" {
                    wanted.after_ms = ms;
                } else {
                    wanted.before_ms = ms;
                }
            }
            _ => {}
        }
    }
    if bad_time {
        return Err("after and before must be RFC 3339 times".to_string());
    }
    Ok(wanted)
}

/// An event's delivery counts as pills that say what they count.
pub fn counts(c: &DeliveryCounts) -> Markup {
    let total = c.total();
    html! {
        @if total == 0 {
            span.muted { "none (no destination matched)" }
        }
        @for (n, status) in [(c.succeeded, "succeeded"), (c.failed, "failed"), (c.pending, "pending"), (c.cancelled, "cancelled")] {
            @if n > 0 {
                span.count { (n) " " (views::status_pill(status)) }
            }
        }
    }
}

/// Bulk replay jobs shown on the events page.
const RECENT_REPLAYS: usize = 5;

/// The most recent bulk replays with their progress (refresh to update).
fn replay_jobs(jobs: &[ReplayRecord]) -> Markup {
    html! {
        section.card #replays {
            h2 { "Recent bulk replays" }
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Started" } th scope="col" { "Range" } th scope="col" { "Status" }
                        th scope="col" { "Progress" } th scope="col" { "Deliveries queued" } th scope="col" { "Replay" }
                    } }
                    tbody {
                        @for j in jobs {
                            @let id = j.id.to_string();
                            tr data-replay=(id) {
                                td { (views::time(j.created_at_ms)) }
                                td.small {
                                    (views::time(j.after_ms)) " → " (views::time(j.before_ms))
                                    @if let Some(t) = &j.type_pattern { " · " code { (t) } }
                                    @if j.only_failed { " · failed only" }
                                }
                                td { (views::status_pill(j.state.as_str())) }
                                td {
                                    progress value=(j.events_done) max=(j.events_total.max(1))
                                        aria-label={ "events re-sent of " (id) } {}
                                    " " span.num { (j.events_done) " / " (j.events_total) " events" }
                                }
                                td.num { (j.deliveries_queued) " / " (j.deliveries_total) }
                                td { span.muted.small { (id) } }
                            }
                        }
                    }
                }
            }
            p.hint { "A replay keeps going across restarts; refresh to see its progress." }
        }
    }
}

fn bulk_form(session: &Session, sid: &str, failure: Option<&Refusal>) -> Markup {
    html! {
        details.card #bulk-replay open[failure.is_some()] {
            summary { "Replay many events…" }
            p.hint { "Re-sends every event received in a time range (optionally of a type), each as a new delivery with the same event id. A large replay goes on in the background, across restarts; its progress is listed on this page." }
            @if let Some(f) = failure { (views::failure(f)) }
            form method="post" action={ "/dashboard/sources/" (sid) "/replay" } {
                (views::csrf(session))
                div.grid3 {
                    div { label for="b-after" { "Received after (UTC)" } input #b-after type="datetime-local" name="after" required; }
                    div { label for="b-before" { "Received before (UTC, empty: now)" } input #b-before type="datetime-local" name="before"; }
                    div { label for="b-type" { "Type (optional)" } input #b-type type="text" name="type" placeholder="invoice.*"; }
                }
                label.check {
                    input type="checkbox" name="status" value="failed";
                    span { "Only where a delivery failed, to the destinations it failed for" }
                }
                div.form-actions { button.btn.primary type="submit" { "Queue replay" } }
            }
        }
    }
}

/// Queues a bulk replay.
pub async fn bulk_replay(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let started = match read_bulk_replay(&form) {
        Ok(request) => d.ops.bulk_replay(&session.caller, sid, request).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(s) => Ok(views::see_other(&format!(
            "/dashboard/sources/{}/events?bulk={},{}",
            sid, s.job.events_total, s.job.deliveries_total
        ))),
        Err(OpError::Invalid(details)) => {
            let refusal = Refusal::invalid(details);
            let source = sources::fetch(&d, &session, sid).await?.source;
            let body = html! {
                (super::source_header(&source, SourceTab::Events, &session))
                (bulk_form(&session, &sid.to_string(), Some(&refusal)))
            };
            Ok(views::respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::page("Bulk replay", Some(&session), Nav::Sources, body),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bulk replay form as an operation's input: times typed in UTC (or
/// with their zone), and "failed only" as the one status filter.
fn read_bulk_replay(form: &crate::dashboard::form::Form) -> Result<BulkReplay, OpError> {
    const TIME: &str = "must be an RFC 3339 time, e.g. 2026-11-27T14:48:08Z";
    let mut r = Reading::default();
    let after_text = form.text("after").map(|t| rfc3339(&t)).unwrap_or_default();
    let after_ms = parse_rfc3339_ms(&after_text);
    if after_ms.is_none() {
        r.fail("after", TIME);
    }
    let before_ms = form.text("before").and_then(|t| {
        let ms = parse_rfc3339_ms(&rfc3339(&t));
        if ms.is_none() {
            r.fail("before", TIME);
        }
        ms
    });
    let only_failed = match form.text("status").as_deref() {
        None => false,
        Some("failed") => true,
        Some(_) => {
            r.fail("status", "the only status filter is `failed`");
            false
        }
    };
    r.finish()?;
    Ok(BulkReplay {
        after_ms: after_ms.unwrap_or(0),
        before_ms,
        event_type: form.text("type"),
        only_failed,
        destination_ids: None,
    })
}

/// The event page.
pub async fn show(
    State(d): State<Dashboard>,
    session: Session,
    Path((sid, eid)): Path<(String, String)>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let (sid, eid) = ids(&sid, &eid)?;
    render_show(&d, &session, sid, eid, &query, None).await
}

/// One delivery with every attempt, as the event page shows it.
struct Delivery {
    record: DeliveryRecord,
    attempts: Vec<AttemptRecord>,
}

/// An event's headers as the API shows them: lower-case names, a repeated
/// header's values joined with ", " (bytes that are not UTF-8 replaced).
fn headers(event: &crate::model::records::EventRecord) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &event.headers {
        let value = String::from_utf8_lossy(value).into_owned();
        headers
            .entry(name.clone())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    headers
}

/// An event's body as text when it is UTF-8 (`Ok`), else in base64 (`Err`).
fn body_text(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|_| base64::engine::general_purpose::STANDARD.encode(body))
}

async fn render_show(
    d: &Dashboard,
    session: &Session,
    sid: SourceId,
    eid: EventId,
    query: &QueryMap,
    refused: Option<Refusal>,
) -> Result<Response, DashboardError> {
    let source = sources::fetch(d, session, sid).await?.source;
    let EventDetail {
        summary: e,
        event,
        deliveries: records,
    } = d.ops.get_event(&session.caller, sid, eid).await?;
    let deliveries: Vec<Delivery> = d
        .ops
        .event_deliveries(&session.caller, sid, eid)
        .await?
        .into_iter()
        .map(|(record, attempts)| Delivery { record, attempts })
        .collect();
    let dests = d
        .ops
        .list_destinations(&session.caller, sid, None, SHOWN)
        .await?
        .items;
    let by_id: HashMap<DestinationId, &DestinationRecord> =
        dests.iter().map(|d| (d.id, d)).collect();
    let (sid, eid) = (sid.to_string(), eid.to_string());
    let base = format!("/dashboard/sources/{sid}/events/{eid}");
    let headers = headers(&event);
    let body = body_text(&event.body);
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        (super::source_header(&source, SourceTab::Events, session))
        (views::crumbs(&[("Events", Some(format!("/dashboard/sources/{sid}/events"))), (eid.as_str(), None)]))
        @if let Some(n) = notice(query) { (n) }
        @if let Some(f) = &refused { (views::failure(f)) }
        div.title-row {
            h2.event-type { code { (e.event_type) } }
            span.muted { "received " (views::time(e.received_at_ms)) }
        }
        dl.facts {
            dt { "Event id" } dd { (views::copyable("event-id", &eid, "event id")) }
            dt { "Provider's id" } dd { @if let Some(p) = &e.provider_event_id { code { (p) } } @else { span.muted { "none" } } }
            dt { "Size" } dd { (views::bytes(e.size_bytes)) }
            dt { "Deliveries" } dd { (counts(&DeliveryCounts::of(&records))) }
        }
        section #deliveries {
            h2 { "Deliveries" }
            @if deliveries.is_empty() {
                (views::empty("No deliveries", html! {
                    p { "No enabled destination's filter matched " code { (e.event_type) } " when it arrived." }
                    @if session.can_write() { p { "Replay it to a destination above, or " a href={ "/dashboard/sources/" (sid) } { "add a destination" } "." } }
                }))
            }
            @for group in by_destination(&deliveries) {
                (destination_group(session, &base, &group, by_id.get(&group.destination_id).copied()))
            }
        }
        @if session.can_write() { (replay_form(session, &base, &dests)) }
        section.card {
            h2 { "Headers" }
            div.table-wrap {
                table.headers {
                    tbody { @for (name, value) in &headers { tr { th scope="row" { code { (name) } } td { code.wrap { (value) } } } } }
                }
            }
        }
        section.card {
            div.title-row {
                h2 { "Body" }
                @if body.is_ok() { button.copy.btn.small type="button" data-copy="event-body" aria-label="Copy body" { "Copy" } }
            }
            @match &body {
                Ok(text) => {
                    @let (part, cut) = shown(text);
                    @if cut { p.muted { "The body is " (text.len()) " bytes; the first " (part.len()) " are shown, as received. The API returns all of it." } }
                    pre #event-body tabindex="0" { @if cut { (part) } @else { (pretty(text)) } }
                }
                Err(b64) => {
                    @let (part, cut) = shown(b64);
                    p.muted { "The body is not UTF-8 text; shown in base64." @if cut { " Only its beginning is shown; the API returns all of it." } }
                    pre #event-body tabindex="0" { (part) }
                }
            }
        }
    };
    Ok(views::respond(
        status,
        views::page(&e.event_type, Some(session), Nav::Sources, body),
    ))
}

/// Deepest JSON nesting the page indents; deeper bodies are shown as sent.
/// Indentation grows with depth, so without a bound a 100 KB body of nested
/// arrays becomes a page of gigabytes.
const PRETTY_MAX_DEPTH: usize = 64;
/// Largest indented text the page shows; past it the body is shown as sent.
const PRETTY_MAX_BYTES: usize = 1024 * 1024;
/// Largest part of a body the page shows at all (the API serves the rest).
const BODY_SHOWN_BYTES: usize = 1024 * 1024;

/// The body as the page shows it: the first [`BODY_SHOWN_BYTES`] (on a
/// character boundary) and whether the rest was cut.
fn shown(text: &str) -> (&str, bool) {
    if text.len() <= BODY_SHOWN_BYTES {
        return (text, false);
    }
    let mut end = BODY_SHOWN_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// JSON bodies indented, keys in the order they arrived; anything else, and
/// JSON too deep or too large to indent within the page's bounds, as
/// received.
fn pretty(text: &str) -> String {
    if text.len() > PRETTY_MAX_BYTES || serde_json::from_str::<serde::de::IgnoredAny>(text).is_err()
    {
        return text.to_string();
    }
    indent(text).unwrap_or_else(|| text.to_string())
}

/// Indents valid JSON; `None` once the nesting or the output passes the
/// page's bounds.
fn indent(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if out.len() > PRETTY_MAX_BYTES {
            return None;
        }
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Empty objects and arrays stay on one line.
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    continue;
                }
                depth += 1;
                if depth > PRETTY_MAX_DEPTH {
                    return None;
                }
                newline(&mut out, depth);
            }
            '}' | ']' => {
                if !matches!(out.chars().last(), Some('{') | Some('[')) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn replay_form(session: &Session, base: &str, dests: &[DestinationRecord]) -> Markup {
    let enabled: Vec<&DestinationRecord> = dests.iter().filter(|d| d.enabled).collect();
    html! {
        section.card #replay {
            h2 { "Replay" }
            @if enabled.is_empty() {
                p.muted { "No enabled destination to replay to." }
            } @else {
                p.hint { "A replay is a new delivery with the same event id (" code { "webhook-id" } "), so receivers can de-duplicate." }
                form method="post" action={ (base) "/replay" } {
                    (views::csrf(session))
                    fieldset {
                        legend { "Destinations (tick some to replay to only those)" }
                        @for d in &enabled {
                            label.check {
                                input type="checkbox" name="destination_ids" value=(d.id.to_string());
                                span { code { (d.url) } span.muted.small { " — " @if d.event_filter.is_empty() { "every event" } @else { (d.event_filter.join(", ")) } } }
                            }
                        }
                    }
                    div.form-actions {
                        button.btn.primary type="submit" name="mode" value="all" { "Replay to all matching destinations" }
                        button.btn type="submit" name="mode" value="chosen" { "Replay to ticked destinations" }
                    }
                }
            }
        }
    }
}

/// The deliveries of one event to one destination: the first delivery,
/// then every replay and retry of it.
struct DestinationGroup<'a> {
    destination_id: DestinationId,
    /// Newest first.
    deliveries: Vec<&'a Delivery>,
}

/// Groups an event's deliveries (as the operation lists them, oldest
/// first) by destination: the destination delivered to most recently
/// first, each group's deliveries newest first. An event replayed nine
/// times to one destination is one group, not nine cards.
fn by_destination(deliveries: &[Delivery]) -> Vec<DestinationGroup<'_>> {
    let mut groups: Vec<DestinationGroup<'_>> = Vec::new();
    for dl in deliveries.iter().rev() {
        let destination_id = dl.record.destination_id;
        match groups
            .iter_mut()
            .find(|g| g.destination_id == destination_id)
        {
            Some(g) => g.deliveries.push(dl),
            None => groups.push(DestinationGroup {
                destination_id,
                deliveries: vec![dl],
            }),
        }
    }
    groups
}

/// Every attempt of a group's deliveries, newest first: (delivery, attempt).
fn attempts_newest_first<'a>(
    group: &DestinationGroup<'a>,
) -> Vec<(&'a Delivery, &'a AttemptRecord)> {
    let mut rows: Vec<(&Delivery, &AttemptRecord)> = group
        .deliveries
        .iter()
        .flat_map(|dl| dl.attempts.iter().map(move |a| (*dl, a)))
        .collect();
    // Ties (same millisecond) by delivery id, then attempt number.
    rows.sort_by(|(da, a), (db, b)| {
        (b.started_at_ms, db.record.id, b.number).cmp(&(a.started_at_ms, da.record.id, a.number))
    });
    rows
}

/// Whether "Retry now" applies: a failed delivery goes back to pending, a
/// pending one is attempted now instead of at its next retry.
fn retriable(dl: &DeliveryRecord) -> bool {
    matches!(dl.status, DeliveryStatus::Failed | DeliveryStatus::Pending)
}

/// One destination's deliveries of this event: a line per delivery (state,
/// next attempt, "Retry now") and one table with all their attempts.
fn destination_group(
    session: &Session,
    base: &str,
    group: &DestinationGroup<'_>,
    dest: Option<&DestinationRecord>,
) -> Markup {
    let rows = attempts_newest_first(group);
    let n = group.deliveries.len();
    let destination_id = group.destination_id.to_string();
    html! {
        article.card.delivery data-destination=(destination_id) {
            div.title-row {
                @match dest {
                    Some(dest) => { code.url { (dest.url) } }
                    None => { span.muted { (destination_id) " (deleted)" } }
                }
                span.muted.small { (n) @if n == 1 { " delivery" } @else { " deliveries (replays and the first)" } }
            }
            ul.delivery-list {
                @for dl in &group.deliveries {
                    @let id = dl.record.id.to_string();
                    @let status = dl.record.status.as_str();
                    li.delivery-row data-delivery=(id) data-status=(status) {
                        (views::status_pill(status))
                        " "
                        code.small { (id) }
                        span.muted.small {
                            " · created " (views::time(dl.record.created_at_ms))
                            " · " (dl.attempts.len()) @if dl.attempts.len() == 1 { " attempt" } @else { " attempts" }
                            @if dl.record.status == DeliveryStatus::Pending {
                                @if let Some(next) = dl.record.next_attempt_ms { " · next attempt " (views::time(next)) } @else { " · attempt in progress" }
                            }
                        }
                        @if retriable(&dl.record) && session.can_write() {
                            form.inline method="post" action={ (base) "/deliveries/" (id) "/retry" } {
                                (views::csrf(session))
                                button.btn.small type="submit" aria-label={ "Retry delivery " (id) " now" } { "Retry now" }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() {
                p.muted.small { "No attempt yet." }
            } @else {
                div.table-wrap {
                    table.attempts {
                        thead { tr {
                            th scope="col" { "Started" } th scope="col" { "Delivery" } th scope="col" { "#" }
                            th scope="col" { "Duration" } th scope="col" { "Result" } th scope="col" { "Response" }
                        } }
                        tbody {
                            @for (dl, a) in &rows {
                                @let id = dl.record.id.to_string();
                                tr data-delivery-attempt=(id) {
                                    td { (views::time(a.started_at_ms)) }
                                    td { code.small title=(dl.record.status.as_str()) { (id) } }
                                    td.num { (a.number) }
                                    td.num { (a.duration_ms) " ms" }
                                    td {
                                        @if let Some(code) = a.status_code {
                                            span class={ "code " @if (200..300).contains(&code) { "code-ok" } @else { "code-bad" } } { "HTTP " (code) }
                                        }
                                        @if let Some(kind) = &a.error_kind {
                                            " " span.tag { (kind.as_str()) }
                                        }
                                        @if let Some(msg) = &a.error_message { div.small.wrap { (msg) } }
                                    }
                                    td { @if a.response_snippet.is_empty() { span.muted { "—" } } @else { pre.snippet { (String::from_utf8_lossy(&a.response_snippet)) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Replays one event: to all matching destinations, or to the ticked ones.
pub async fn replay(
    State(d): State<Dashboard>,
    Path((sid, eid)): Path<(String, String)>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, eid) = ids(&sid, &eid)?;
    let chosen = match form.get("mode") {
        Some("chosen") => Some(form.all("destination_ids")),
        _ => None,
    };
    match d.ops.replay_event(&session.caller, sid, eid, chosen).await {
        Ok(targets) => Ok(views::see_other(&format!(
            "/dashboard/sources/{}/events/{}?queued={}",
            sid,
            eid,
            targets.len()
        ))),
        Err(OpError::Invalid(details)) => {
            let refusal = Refusal::invalid(details);
            render_show(&d, &session, sid, eid, &QueryMap::new(), Some(refusal)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Attempts a delivery now: a failed one again, a pending one without
/// waiting for its next retry.
pub async fn retry(
    State(d): State<Dashboard>,
    Path((sid, eid, did)): Path<(String, String, String)>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, eid) = ids(&sid, &eid)?;
    let did = id_of::<DeliveryId>(&did)?;
    d.ops.retry_delivery(&session.caller, sid, eid, did).await?;
    Ok(views::see_other(&format!(
        "/dashboard/sources/{}/events/{}?notice=retried",
        sid, eid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_inputs_become_rfc3339_utc() {
        assert_eq!(rfc3339("2026-11-27T14:48"), "2026-11-27T14:48:00Z");
        assert_eq!(rfc3339("2026-11-27T14:48:08"), "2026-11-27T14:48:08Z");
        assert_eq!(rfc3339("2026-11-27T14:48:08Z"), "2026-11-27T14:48:08Z");
        assert_eq!(
            rfc3339("2026-11-27T14:48:08+01:00"),
            "2026-11-27T14:48:08+01:00"
        );
        assert_eq!(local_input("2026-11-27T14:48:08.123Z"), "2026-11-27T14:48");
    }

    #[test]
    fn json_bodies_are_indented_and_others_kept() {
        assert_eq!(pretty(r#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(
            pretty(r#"{"z":[1,{}],"a":"x, \"y\": {"}"#),
            "{\n  \"z\": [\n    1,\n    {}\n  ],\n  \"a\": \"x, \\\"y\\\": {\"\n}"
        );
        assert_eq!(pretty("a=1&b=2"), "a=1&b=2");
    }

    #[test]
    fn deep_or_huge_json_is_shown_as_sent_not_indented() {
        // The attack: 50,000 nested arrays would indent to gigabytes.
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert_eq!(pretty(&deep), deep);
        // Just past the depth bound: raw; at it: indented.
        let over = format!(
            "{}1{}",
            "[".repeat(PRETTY_MAX_DEPTH + 1),
            "]".repeat(PRETTY_MAX_DEPTH + 1)
        );
        assert_eq!(pretty(&over), over);
        let at = format!(
            "{}1{}",
            "[".repeat(PRETTY_MAX_DEPTH),
            "]".repeat(PRETTY_MAX_DEPTH)
        );
        assert!(pretty(&at).len() > at.len() * 10);
        // Shallow but wide enough that indentation would pass the bound.
        let wide = format!("[{}]", vec!["[[[[[[[[1]]]]]]]]"; 40_000].join(","));
        assert!(wide.len() < PRETTY_MAX_BYTES);
        assert!(pretty(&wide).len() <= PRETTY_MAX_BYTES + 1024);
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(BODY_SHOWN_BYTES);
        let (part, cut) = shown(&body);
        assert!(cut);
        assert!(part.len() <= BODY_SHOWN_BYTES && part.len() > BODY_SHOWN_BYTES - 2);
        assert_eq!(shown("short"), ("short", false));
    }
}
