//! `/dashboard/audit-log`: who changed what (SPEC §15). Admin scope, as
//! in the API; filters by actor and action, older entries by cursor.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;

use super::{cursor_of, cursor_text, QueryMap};
use crate::dashboard::error::DashboardError;
use crate::dashboard::session::Session;
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::store::AuditQuery;

const PAGE: usize = 50;

/// The list, newest first, with the `actor` and `action` filters.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let filter = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let (actor, action) = (filter("actor"), filter("action"));
    let audit_query = AuditQuery {
        actor: actor.clone(),
        action: action.clone(),
        ..AuditQuery::default()
    };
    let page = d
        .ops
        .list_audit(&session.caller, audit_query, cursor_of(&query)?, PAGE)
        .await?;
    let next_cursor = cursor_text(page.next);
    let mut more = url::form_urlencoded::Serializer::new(String::new());
    if let Some(a) = &actor {
        more.append_pair("actor", a);
    }
    if let Some(a) = &action {
        more.append_pair("action", a);
    }
    if let Some(c) = &next_cursor {
        more.append_pair("cursor", c);
    }
    let more = more.finish();
    let body = html! {
        div.title-row { h1 { "Audit log" } }
        p.muted { "Every change made through the API, this dashboard or the CLI. Secret values are never recorded; a changed secret shows as “(secret)”." }
        form.filters method="get" action="/dashboard/audit-log" {
            label { "Actor " input type="text" name="actor" value=(actor.clone().unwrap_or_default()) placeholder="key id or name"; }
            " "
            label { "Action " input type="text" name="action" value=(action.clone().unwrap_or_default()) placeholder="destination.update"; }
            " "
            button.btn.small type="submit" { "Filter" }
        }
        @if page.items.is_empty() {
            (views::empty("No entries", html! { p { "Nothing has been changed yet, or nothing matches the filters." } }))
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Via" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Changes" } } }
                    tbody {
                        @for e in &page.items {
                            tr {
                                td { (views::time(e.at_ms)) }
                                td { (e.actor.name) @if let Some(id) = &e.actor.api_key_id { br; code.muted { (id) } } }
                                td { span.tag { (e.actor.via) } }
                                td { code { (e.action) } }
                                td { code { (e.target_id) } }
                                td {
                                    @if e.changes.is_empty() { span.muted { "—" } }
                                    @for (field, [old, new]) in &e.changes {
                                        div { code { (field) } ": " (short(old)) " → " (short(new)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if next_cursor.is_some() {
                p.pager { a href={ "/dashboard/audit-log?" (more) } { "Older entries →" } }
            }
        }
    };
    Ok(views::ok(views::page(
        "Audit log",
        Some(&session),
        Nav::AuditLog,
        body,
    )))
}

/// A change's value as short text (long filters and lists are cut, so a
/// page stays bounded).
fn short(value: &serde_json::Value) -> String {
    const MAX: usize = 120;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}
