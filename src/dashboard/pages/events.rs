//! Events of a source (filter by type and time, paging), the event page
//! (headers, body, every delivery with every attempt), replay to all
//! matching or to ticked destinations, retry, and bulk replay.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::sources::{self, api_path};
use super::{notice, QueryMap, SourceTab};
use crate::dashboard::dispatch::{id_segment, ApiFailure};
use crate::dashboard::error::DashboardError;
use crate::dashboard::model::{
    Attempt, BulkReplayAccepted, Delivery, Destination, Event, EventDetail, ReplayAccepted,
    ReplayJob,
};
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;

const PAGE: usize = 50;

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
    let sid = id_segment(&sid)?;
    let source = sources::fetch(&d, &session, sid).await?;
    let active = filters(&query);
    // Built in a block: the serializer is not `Send` and must not live
    // across an await.
    let path = {
        let mut api_query = url::form_urlencoded::Serializer::new(String::new());
        api_query.append_pair("limit", &PAGE.to_string());
        for (k, v) in &active {
            let v = if *k == "type" { v.clone() } else { rfc3339(v) };
            api_query.append_pair(k, &v);
        }
        if let Some(cursor) = query.get("cursor").filter(|c| !c.is_empty()) {
            api_query.append_pair("cursor", cursor);
        }
        format!("{}/events?{}", api_path(sid), api_query.finish())
    };
    let (page, refused) = match d
        .api
        .send(&session.caller, Method::GET, &path, None)
        .await?
    {
        Ok(value) => (
            serde_json::from_value::<ListOf<Event>>(value)
                .map_err(|e| DashboardError::Internal(format!("unexpected events list: {e}")))?,
            None,
        ),
        // A bad time filter: show the page with the complaint, not an error page.
        Err(f) if f.status == StatusCode::BAD_REQUEST => (
            ListOf {
                data: Vec::new(),
                next_cursor: None,
            },
            Some(f),
        ),
        Err(f) => return Err(f.into()),
    };
    let jobs = d
        .api
        .list::<ReplayJob>(
            &session.caller,
            &format!("{}/replays?limit={RECENT_REPLAYS}", api_path(sid)),
        )
        .await?;
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
        @if let Some(f) = &refused { div.alert role="alert" { (f.message) } }
        @if page.data.is_empty() && refused.is_none() {
            @if active.is_empty() && !query.contains_key("cursor") {
                (views::empty("No events yet", html! {
                    p { "Events appear here as soon as " (super::provider_label(source.provider)) " sends one to this source's ingest URL:" }
                    (views::copyable("ingest-url", &source.url, "ingest URL"))
                    p.muted { "Try it with curl, or send a test event from the provider's dashboard." }
                    @if session.can_write() && source.enabled {
                        p { (super::overview::test_event_form(&session, &source.id)) }
                    }
                }))
            } @else {
                (views::empty("No events match", html! { p { a href=(base) { "Clear the filters" } " to see every event." } }))
            }
        } @else if !page.data.is_empty() {
            div.table-wrap {
                table #events {
                    thead { tr {
                        th scope="col" { "Type" } th scope="col" { "Received" } th scope="col" { "Deliveries" }
                        th scope="col" { "Size" } th scope="col" { "Event" }
                    } }
                    tbody {
                        @for e in &page.data {
                            tr data-event=(e.id) {
                                td { a href={ (base) "/" (e.id) } { code { (e.event_type) } } }
                                td { (views::time(&e.received_at)) }
                                td.counts { (counts(e)) }
                                td.num { (views::bytes(e.size_bytes)) }
                                td { a.muted.small href={ (base) "/" (e.id) } { (e.id) } }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if query.contains_key("cursor") { a href={ (base) "?" (keep(None)) } { "← Newest" } }
                @if let Some(cursor) = &page.next_cursor { a href={ (base) "?" (keep(Some(("cursor", cursor)))) } { "Older events →" } }
            }
        }
        @if session.can_write() { (bulk_form(&session, sid, None)) }
        @if !jobs.items.is_empty() { (replay_jobs(&jobs.items)) }
    };
    Ok(views::ok(views::page(
        &format!("Events of {}", source.name),
        Some(&session),
        Nav::Sources,
        body,
    )))
}

#[derive(serde::Deserialize)]
struct ListOf<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

/// An event's delivery counts as pills that say what they count.
pub fn counts(e: &Event) -> Markup {
    let c = &e.deliveries;
    let total = c.pending + c.succeeded + c.failed + c.cancelled;
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
fn replay_jobs(jobs: &[ReplayJob]) -> Markup {
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
                            tr data-replay=(j.id) {
                                td { (views::time(&j.created_at)) }
                                td.small {
                                    (views::time(&j.request.after)) " → " (views::time(&j.request.before))
                                    @if let Some(t) = &j.request.event_type { " · " code { (t) } }
                                    @if j.request.status.is_some() { " · failed only" }
                                }
                                td { (views::status_pill(&j.status)) }
                                td {
                                    progress value=(j.events_done) max=(j.events_total.max(1))
                                        aria-label={ "events re-sent of " (j.id) } {}
                                    " " span.num { (j.events_done) " / " (j.events_total) " events" }
                                }
                                td.num { (j.deliveries_queued) " / " (j.deliveries_total) }
                                td { span.muted.small { (j.id) } }
                            }
                        }
                    }
                }
            }
            p.hint { "A replay keeps going across restarts; refresh to see its progress." }
        }
    }
}

fn bulk_form(session: &Session, sid: &str, failure: Option<&ApiFailure>) -> Markup {
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
    let sid = id_segment(&sid)?;
    let mut body = Map::new();
    body.insert(
        "after".into(),
        json!(form.text("after").map(|t| rfc3339(&t)).unwrap_or_default()),
    );
    if let Some(before) = form.text("before") {
        body.insert("before".into(), json!(rfc3339(&before)));
    }
    if let Some(t) = form.text("type") {
        body.insert("type".into(), json!(t));
    }
    if let Some(s) = form.text("status") {
        body.insert("status".into(), json!(s));
    }
    match d
        .api
        .change::<BulkReplayAccepted>(
            &session.caller,
            Method::POST,
            &format!("{}/replay", api_path(sid)),
            Some(Value::Object(body)),
        )
        .await?
    {
        Ok(a) => Ok(views::see_other(&format!(
            "/dashboard/sources/{sid}/events?bulk={},{}",
            a.events, a.deliveries
        ))),
        Err(f) if f.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let source = sources::fetch(&d, &session, sid).await?;
            let body = html! {
                (super::source_header(&source, SourceTab::Events, &session))
                (bulk_form(&session, sid, Some(&f)))
            };
            Ok(views::respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::page("Bulk replay", Some(&session), Nav::Sources, body),
            ))
        }
        Err(f) => Err(f.into()),
    }
}

/// The event page.
pub async fn show(
    State(d): State<Dashboard>,
    session: Session,
    Path((sid, eid)): Path<(String, String)>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let (sid, eid) = (id_segment(&sid)?, id_segment(&eid)?);
    render_show(&d, &session, sid, eid, &query, None).await
}

async fn render_show(
    d: &Dashboard,
    session: &Session,
    sid: &str,
    eid: &str,
    query: &QueryMap,
    refused: Option<ApiFailure>,
) -> Result<Response, DashboardError> {
    let source = sources::fetch(d, session, sid).await?;
    let event_path = format!("{}/events/{eid}", api_path(sid));
    let event: EventDetail = d.api.get(&session.caller, &event_path).await?;
    let deliveries = d
        .api
        .list::<Delivery>(&session.caller, &format!("{event_path}/deliveries"))
        .await?
        .items;
    let dests = d
        .api
        .list::<Destination>(
            &session.caller,
            &format!("{}/destinations?limit=250", api_path(sid)),
        )
        .await?
        .items;
    let by_id: HashMap<&str, &Destination> = dests.iter().map(|d| (d.id.as_str(), d)).collect();
    let base = format!("/dashboard/sources/{sid}/events/{eid}");
    let e = &event.event;
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        (super::source_header(&source, SourceTab::Events, session))
        (views::crumbs(&[("Events", Some(format!("/dashboard/sources/{sid}/events"))), (e.id.as_str(), None)]))
        @if let Some(n) = notice(query) { (n) }
        @if let Some(f) = &refused { (views::failure(f)) }
        div.title-row {
            h2.event-type { code { (e.event_type) } }
            span.muted { "received " (views::time(&e.received_at)) }
        }
        dl.facts {
            dt { "Event id" } dd { (views::copyable("event-id", &e.id, "event id")) }
            dt { "Provider's id" } dd { @if let Some(p) = &e.provider_event_id { code { (p) } } @else { span.muted { "none" } } }
            dt { "Size" } dd { (views::bytes(e.size_bytes)) }
            dt { "Deliveries" } dd { (counts(e)) }
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
                (destination_group(session, &base, &group, by_id.get(group.destination_id).copied()))
            }
        }
        @if session.can_write() { (replay_form(session, &base, &dests)) }
        section.card {
            h2 { "Headers" }
            div.table-wrap {
                table.headers {
                    tbody { @for (name, value) in &event.headers { tr { th scope="row" { code { (name) } } td { code.wrap { (value) } } } } }
                }
            }
        }
        section.card {
            div.title-row {
                h2 { "Body" }
                @if event.body.is_some() { button.copy.btn.small type="button" data-copy="event-body" aria-label="Copy body" { "Copy" } }
            }
            @match (&event.body, &event.body_base64) {
                (Some(text), _) => {
                    @let (part, cut) = shown(text);
                    @if cut { p.muted { "The body is " (text.len()) " bytes; the first " (part.len()) " are shown, as received. The API returns all of it." } }
                    pre #event-body tabindex="0" { @if cut { (part) } @else { (pretty(text)) } }
                }
                (None, Some(b64)) => {
                    @let (part, cut) = shown(b64);
                    p.muted { "The body is not UTF-8 text; shown in base64." @if cut { " Only its beginning is shown; the API returns all of it." } }
                    pre #event-body tabindex="0" { (part) }
                }
                _ => { p.muted { "Empty body." } }
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

fn replay_form(session: &Session, base: &str, dests: &[Destination]) -> Markup {
    let enabled: Vec<&Destination> = dests.iter().filter(|d| d.enabled).collect();
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
                                input type="checkbox" name="destination_ids" value=(d.id);
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
    destination_id: &'a str,
    /// Newest first.
    deliveries: Vec<&'a Delivery>,
}

/// Groups an event's deliveries (as the API lists them, oldest first) by
/// destination: the destination delivered to most recently first, each
/// group's deliveries newest first. An event replayed nine times to one
/// destination is one group, not nine cards.
fn by_destination(deliveries: &[Delivery]) -> Vec<DestinationGroup<'_>> {
    let mut groups: Vec<DestinationGroup<'_>> = Vec::new();
    for dl in deliveries.iter().rev() {
        match groups
            .iter_mut()
            .find(|g| g.destination_id == dl.destination_id)
        {
            Some(g) => g.deliveries.push(dl),
            None => groups.push(DestinationGroup {
                destination_id: &dl.destination_id,
                deliveries: vec![dl],
            }),
        }
    }
    groups
}

/// Every attempt of a group's deliveries, newest first: (delivery, attempt).
fn attempts_newest_first<'a>(group: &DestinationGroup<'a>) -> Vec<(&'a Delivery, &'a Attempt)> {
    let mut rows: Vec<(&Delivery, &Attempt)> = group
        .deliveries
        .iter()
        .flat_map(|dl| dl.attempts.iter().map(move |a| (*dl, a)))
        .collect();
    // RFC 3339 UTC times of one format sort as text; ties (same
    // millisecond) by delivery id, then attempt number.
    rows.sort_by(|(da, a), (db, b)| {
        (b.started_at.as_str(), db.id.as_str(), b.number).cmp(&(
            a.started_at.as_str(),
            da.id.as_str(),
            a.number,
        ))
    });
    rows
}

/// Whether "Retry now" applies: a failed delivery goes back to pending, a
/// pending one is attempted now instead of at its next retry.
fn retriable(dl: &Delivery) -> bool {
    dl.status == "failed" || dl.status == "pending"
}

/// One destination's deliveries of this event: a line per delivery (state,
/// next attempt, "Retry now") and one table with all their attempts.
fn destination_group(
    session: &Session,
    base: &str,
    group: &DestinationGroup<'_>,
    dest: Option<&Destination>,
) -> Markup {
    let rows = attempts_newest_first(group);
    let n = group.deliveries.len();
    html! {
        article.card.delivery data-destination=(group.destination_id) {
            div.title-row {
                @match dest {
                    Some(dest) => { code.url { (dest.url) } }
                    None => { span.muted { (group.destination_id) " (deleted)" } }
                }
                span.muted.small { (n) @if n == 1 { " delivery" } @else { " deliveries (replays and the first)" } }
            }
            ul.delivery-list {
                @for dl in &group.deliveries {
                    li.delivery-row data-delivery=(dl.id) data-status=(dl.status) {
                        (views::status_pill(&dl.status))
                        " "
                        code.small { (dl.id) }
                        span.muted.small {
                            " · created " (views::time(&dl.created_at))
                            " · " (dl.attempts.len()) @if dl.attempts.len() == 1 { " attempt" } @else { " attempts" }
                            @if dl.status == "pending" {
                                @if let Some(next) = &dl.next_attempt_at { " · next attempt " (views::time(next)) } @else { " · attempt in progress" }
                            }
                        }
                        @if retriable(dl) && session.can_write() {
                            form.inline method="post" action={ (base) "/deliveries/" (dl.id) "/retry" } {
                                (views::csrf(session))
                                button.btn.small type="submit" aria-label={ "Retry delivery " (dl.id) " now" } { "Retry now" }
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
                                tr data-delivery-attempt=(dl.id) {
                                    td { (views::time(&a.started_at)) }
                                    td { code.small title=(dl.status) { (dl.id) } }
                                    td.num { (a.number) }
                                    td.num { (a.duration_ms) " ms" }
                                    td {
                                        @if let Some(code) = a.status_code {
                                            span class={ "code " @if (200..300).contains(&code) { "code-ok" } @else { "code-bad" } } { "HTTP " (code) }
                                        }
                                        @if let Some(kind) = &a.error_kind {
                                            " " span.tag { (kind) }
                                        }
                                        @if let Some(msg) = &a.error_message { div.small.wrap { (msg) } }
                                    }
                                    td { @if a.response_body.is_empty() { span.muted { "—" } } @else { pre.snippet { (a.response_body) } } }
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
    let (sid, eid) = (id_segment(&sid)?, id_segment(&eid)?);
    let body = match form.get("mode") {
        Some("chosen") => Some(json!({ "destination_ids": form.all("destination_ids") })),
        _ => None,
    };
    match d
        .api
        .change::<ReplayAccepted>(
            &session.caller,
            Method::POST,
            &format!("{}/events/{eid}/replay", api_path(sid)),
            body,
        )
        .await?
    {
        Ok(a) => Ok(views::see_other(&format!(
            "/dashboard/sources/{sid}/events/{eid}?queued={}",
            a.count
        ))),
        Err(f) if f.status == StatusCode::UNPROCESSABLE_ENTITY => {
            render_show(&d, &session, sid, eid, &QueryMap::new(), Some(f)).await
        }
        Err(f) => Err(f.into()),
    }
}

/// Attempts a delivery now: a failed one again, a pending one without
/// waiting for its next retry.
pub async fn retry(
    State(d): State<Dashboard>,
    Path((sid, eid, did)): Path<(String, String, String)>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, eid, did) = (id_segment(&sid)?, id_segment(&eid)?, id_segment(&did)?);
    d.api
        .change::<Value>(
            &session.caller,
            Method::POST,
            &format!("{}/events/{eid}/deliveries/{did}/retry", api_path(sid)),
            None,
        )
        .await??;
    Ok(views::see_other(&format!(
        "/dashboard/sources/{sid}/events/{eid}?notice=retried"
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
