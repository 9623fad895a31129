//! Destinations of a source: create (secret shown once), edit, enable or
//! disable (with Krafter's reason when it disabled one), rotate the
//! secret, delete with confirmation.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::sources::{self, ShowExtra};
use super::{id_of, notice, value, QueryMap, Reading, SourceTab};
use crate::dashboard::error::{DashboardError, Refusal};
use crate::dashboard::form::Form;
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::model::ids::{DestinationId, SourceId};
use crate::model::records::{DestinationRecord, SourceRecord};
use crate::ops::destinations::{DestinationEdit, NewDestination};
use crate::ops::OpError;

/// Destinations a page lists for one source (the most a list page holds).
pub const SHOWN: usize = 250;

/// The ids of a destination page's URL.
fn ids(sid: &str, did: &str) -> Result<(SourceId, DestinationId), DashboardError> {
    Ok((id_of::<SourceId>(sid)?, id_of::<DestinationId>(did)?))
}

/// `/dashboard/sources/{sid}/destinations/{did}`.
fn page_path(sid: SourceId, did: DestinationId) -> String {
    format!("/dashboard/sources/{}/destinations/{}", sid, did)
}

/// "invoice.paid, charge.*" → patterns; commas, spaces and newlines all
/// separate.
fn patterns(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// How a filter reads in a table.
fn filter_text(filter: &[String]) -> String {
    if filter.is_empty() {
        "every event".to_string()
    } else {
        filter.join(", ")
    }
}

/// The destinations table of a source page.
pub fn table(source: &SourceRecord, dests: &[DestinationRecord], session: &Session) -> Markup {
    html! {
        div.table-wrap {
            table #destinations {
                thead { tr {
                    th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "Status" }
                    th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } }
                } }
                tbody {
                    @for dest in dests {
                        @let did = dest.id.to_string();
                        @let base = page_path(source.id, dest.id);
                        tr data-destination=(did) {
                            td.url { code { (dest.url) } br; span.muted.small { (did) } }
                            td { (filter_text(&dest.event_filter))
                                @if let Some(limit) = dest.rate_limit { br; span.muted.small { "≤ " (limit) "/s" } } }
                            td {
                                (views::status_pill(if dest.enabled { "enabled" } else { "disabled" }))
                                @if let Some(reason) = &dest.disabled_reason {
                                    p.warn.small { "Disabled by Krafter"
                                        @if let Some(at) = dest.disabled_at_ms { " " (views::time(at)) }
                                        ": " (reason) }
                                }
                            }
                            td { (views::time(dest.created_at_ms)) }
                            td.actions {
                                @if session.can_write() {
                                    form method="post" action={ (base) "/enabled" } {
                                        (views::csrf(session))
                                        input type="hidden" name="enabled" value=(if dest.enabled { "false" } else { "true" });
                                        button.btn.small type="submit" { @if dest.enabled { "Disable" } @else { "Enable" } }
                                    }
                                    a.btn.small href=(base) { "Edit" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The "Add destination" form of a source page.
pub fn new_form(
    source: &SourceRecord,
    session: &Session,
    refused: Option<(&Form, &Refusal)>,
) -> Markup {
    let (form, failure) = match refused {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    html! {
        section.card #new-destination {
            h3 { "Add a destination" }
            @if let Some(f) = failure { (views::failure(f)) }
            form method="post" action={ "/dashboard/sources/" (source.id.to_string()) "/destinations" } {
                (views::csrf(session))
                label for="dest-url" { "URL" }
                input #dest-url type="url" name="url" required maxlength="2048"
                    value=(value(form, "url", "")) placeholder="https://api.your-app.com/webhooks/stripe";
                (views::field_error(failure, "url"))
                label for="dest-filter" { "Event types" }
                input #dest-filter type="text" name="event_filter" value=(value(form, "event_filter", ""))
                    placeholder="invoice.paid, charge.*  (empty: every event)";
                p.hint { "Comma-separated. " code { "*" } " stands for any run of characters." }
                (views::field_error(failure, "event_filter"))
                label for="dest-rate" { "Rate limit (deliveries per second, optional)" }
                input #dest-rate type="number" name="rate_limit" min="1" max="10000" value=(value(form, "rate_limit", ""));
                (views::field_error(failure, "rate_limit"))
                div.form-actions { button.btn.primary type="submit" { "Add destination" } }
            }
        }
    }
}

/// The fields both destination forms have: URL, event types, rate limit.
struct Fields {
    url: String,
    event_filter: Vec<String>,
    rate_limit: Option<u32>,
}

fn read(form: &Form) -> Result<Fields, OpError> {
    let mut r = Reading::default();
    let rate_limit = r.number(form, "rate_limit");
    r.finish()?;
    Ok(Fields {
        url: form.get("url").unwrap_or("").trim().to_string(),
        event_filter: patterns(form.get("event_filter").unwrap_or("")),
        rate_limit,
    })
}

/// The "Add a destination" form as an operation's input.
fn read_new(form: &Form) -> Result<NewDestination, OpError> {
    let f = read(form)?;
    Ok(NewDestination {
        url: f.url,
        event_filter: Some(f.event_filter),
        enabled: None,
        rate_limit: f.rate_limit,
        options: Default::default(),
    })
}

/// The edit form as a change. The form shows every field, so every field
/// is set; an empty rate limit removes the limit (`0`).
fn read_edit(form: &Form) -> Result<DestinationEdit, OpError> {
    let f = read(form)?;
    Ok(DestinationEdit {
        url: Some(f.url),
        event_filter: Some(f.event_filter),
        enabled: None,
        rate_limit: Some(f.rate_limit.unwrap_or(0)),
        options: Default::default(),
    })
}

/// Creates a destination and shows its secret once, on the source page.
pub async fn create(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let query = QueryMap::new();
    let created = match read_new(&form) {
        Ok(new) => d.ops.create_destination(&session.caller, sid, new).await,
        Err(e) => Err(e),
    };
    match created.map_err(Refusal::of) {
        Ok(dest) => {
            sources::render_show(
                &d,
                &session,
                sid,
                &query,
                ShowExtra::Created(Box::new(dest)),
            )
            .await
        }
        Err(Ok(refusal)) => {
            let extra = ShowExtra::Refused(&form, refusal);
            sources::render_show(&d, &session, sid, &query, extra).await
        }
        Err(Err(e)) => Err(e.into()),
    }
}

/// The destination page: edit, rotate the secret, delete.
pub async fn edit_page(
    State(d): State<Dashboard>,
    session: Session,
    Path((sid, did)): Path<(String, String)>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let (sid, did) = ids(&sid, &did)?;
    render_edit(&d, &session, sid, did, &query, None, None).await
}

async fn render_edit(
    d: &Dashboard,
    session: &Session,
    sid: SourceId,
    did: DestinationId,
    query: &QueryMap,
    secret: Option<&str>,
    refused: Option<(&Form, &Refusal)>,
) -> Result<Response, DashboardError> {
    let source = sources::fetch(d, session, sid).await?.source;
    let dest = d.ops.get_destination(&session.caller, sid, did).await?;
    let (form, failure) = match refused {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    let base = page_path(sid, did);
    let source_page = format!("/dashboard/sources/{}", sid);
    let filter = dest.event_filter.join(", ");
    let rate = dest.rate_limit.map(|r| r.to_string()).unwrap_or_default();
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        (super::source_header(&source, SourceTab::Other, session))
        (views::crumbs(&[("Destinations", Some(source_page)), (dest.url.as_str(), None)]))
        @if let Some(n) = notice(query) { (n) }
        @if let Some(secret) = secret {
            (views::shown_once("new-secret", secret, "new signing secret",
                "For 24 hours deliveries carry signatures with both the new and the previous secret, so you can switch your endpoint over without losing any."))
        }
        section.card {
            div.title-row {
                h2 { "Destination" }
                (views::status_pill(if dest.enabled { "enabled" } else { "disabled" }))
            }
            @if let Some(reason) = &dest.disabled_reason {
                p.warn { "Krafter disabled this destination"
                    @if let Some(at) = dest.disabled_at_ms { " " (views::time(at)) }
                    ": " (reason) ". Enable it to resume delivery." }
            }
            p.muted.small { (dest.id.to_string()) " · created " (views::time(dest.created_at_ms)) }
            @if session.can_write() {
                @if let Some(f) = failure { (views::failure(f)) }
                form method="post" action=(base) {
                    (views::csrf(session))
                    label for="dest-url" { "URL" }
                    input #dest-url type="url" name="url" required maxlength="2048" value=(value(form, "url", &dest.url));
                    (views::field_error(failure, "url"))
                    label for="dest-filter" { "Event types" }
                    input #dest-filter type="text" name="event_filter" value=(value(form, "event_filter", &filter))
                        placeholder="empty: every event";
                    (views::field_error(failure, "event_filter"))
                    label for="dest-rate" { "Rate limit (deliveries per second; empty: none)" }
                    input #dest-rate type="number" name="rate_limit" min="1" max="10000" value=(value(form, "rate_limit", &rate));
                    (views::field_error(failure, "rate_limit"))
                    div.form-actions { button.btn.primary type="submit" { "Save" } }
                }
            } @else {
                dl.facts {
                    dt { "URL" } dd { code { (dest.url) } }
                    dt { "Events" } dd { (filter_text(&dest.event_filter)) }
                }
            }
        }
        @if session.can_write() {
            section.card {
                h2 { "Status and secret" }
                div.button-row {
                    form method="post" action={ (base) "/enabled" } {
                        (views::csrf(session))
                        input type="hidden" name="enabled" value=(if dest.enabled { "false" } else { "true" });
                        button.btn type="submit" { @if dest.enabled { "Disable destination" } @else { "Enable destination" } }
                    }
                    form method="post" action={ (base) "/rotate-secret" }
                        data-confirm="Issue a new signing secret? The current one keeps working for 24 hours." {
                        (views::csrf(session))
                        button.btn type="submit" { "Rotate signing secret" }
                    }
                }
                p.hint { "Disabling cancels this destination's pending deliveries." }
            }
            section.card.danger-zone {
                h2 { "Delete" }
                a.btn.danger href={ (base) "/delete" } { "Delete destination…" }
            }
        }
    };
    Ok(views::respond(
        status,
        views::page("Destination", Some(session), Nav::Sources, body),
    ))
}

/// Saves a destination.
pub async fn edit(
    State(d): State<Dashboard>,
    Path((sid, did)): Path<(String, String)>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, did) = ids(&sid, &did)?;
    let updated = match read_edit(&form) {
        Ok(edit) => {
            d.ops
                .update_destination(&session.caller, sid, did, edit)
                .await
        }
        Err(e) => Err(e),
    };
    match updated.map_err(Refusal::of) {
        Ok(_) => Ok(views::see_other(&format!(
            "/dashboard/sources/{}?notice=destination-updated",
            sid
        ))),
        Err(Ok(refusal)) => {
            let empty = QueryMap::new();
            render_edit(
                &d,
                &session,
                sid,
                did,
                &empty,
                None,
                Some((&form, &refusal)),
            )
            .await
        }
        Err(Err(e)) => Err(e.into()),
    }
}

/// Enables or disables a destination.
pub async fn set_enabled(
    State(d): State<Dashboard>,
    Path((sid, did)): Path<(String, String)>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, did) = ids(&sid, &did)?;
    let enabled = form.get("enabled") == Some("true");
    let edit = DestinationEdit {
        enabled: Some(enabled),
        ..DestinationEdit::default()
    };
    d.ops
        .update_destination(&session.caller, sid, did, edit)
        .await?;
    let notice = if enabled {
        "destination-enabled"
    } else {
        "destination-disabled"
    };
    Ok(views::see_other(&format!(
        "/dashboard/sources/{}?notice={notice}",
        sid
    )))
}

/// Issues a new secret and shows it once.
pub async fn rotate_secret(
    State(d): State<Dashboard>,
    Path((sid, did)): Path<(String, String)>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, did) = ids(&sid, &did)?;
    let rotated = d
        .ops
        .rotate_destination_secret(&session.caller, sid, did)
        .await?;
    let empty = QueryMap::new();
    render_edit(&d, &session, sid, did, &empty, Some(&rotated.secret), None).await
}

/// Asks before deleting.
pub async fn delete_page(
    State(d): State<Dashboard>,
    session: Session,
    Path((sid, did)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    let (sid, did) = ids(&sid, &did)?;
    let source = sources::fetch(&d, &session, sid).await?.source;
    let dest = d.ops.get_destination(&session.caller, sid, did).await?;
    let base = page_path(sid, did);
    let body = html! {
        (super::source_header(&source, SourceTab::Other, &session))
        section.card.danger-zone {
            h1 { "Delete this destination?" }
            p { code { (dest.url) } " stops receiving events of “" (source.name) "”. Its pending deliveries are cancelled; past deliveries stay visible on their events." }
            form method="post" action={ (base) "/delete" } {
                (views::csrf(&session))
                div.form-actions {
                    button.btn.danger type="submit" { "Delete destination" }
                    a.btn href=(base) { "Cancel" }
                }
            }
        }
    };
    Ok(views::ok(views::page(
        "Delete destination",
        Some(&session),
        Nav::Sources,
        body,
    )))
}

/// Deletes a destination.
pub async fn delete(
    State(d): State<Dashboard>,
    Path((sid, did)): Path<(String, String)>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, did) = ids(&sid, &did)?;
    d.ops.delete_destination(&session.caller, sid, did).await?;
    Ok(views::see_other(&format!(
        "/dashboard/sources/{}?notice=destination-deleted",
        sid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_split_on_commas_and_space() {
        assert_eq!(
            patterns(" invoice.paid, charge.*\n  refund.created "),
            vec!["invoice.paid", "charge.*", "refund.created"]
        );
        assert!(patterns("  , ").is_empty());
    }
}
