//! Destinations of a source: create (secret shown once), edit, enable or
//! disable (with Krafter's reason when it disabled one), rotate the
//! secret, delete with confirmation.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::sources::{self, api_path, ShowExtra};
use super::{notice, value, QueryMap, SourceTab};
use crate::dashboard::dispatch::{id_segment, ApiFailure};
use crate::dashboard::error::DashboardError;
use crate::dashboard::form::Form;
use crate::dashboard::model::{Destination, Source};
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;

fn dest_path(sid: &str, did: &str) -> String {
    format!("{}/destinations/{did}", api_path(sid))
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
pub fn table(source: &Source, dests: &[Destination], session: &Session) -> Markup {
    html! {
        div.table-wrap {
            table #destinations {
                thead { tr {
                    th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "Status" }
                    th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } }
                } }
                tbody {
                    @for dest in dests {
                        tr data-destination=(dest.id) {
                            td.url { code { (dest.url) } br; span.muted.small { (dest.id) } }
                            td { (filter_text(&dest.event_filter))
                                @if let Some(limit) = dest.rate_limit { br; span.muted.small { "≤ " (limit) "/s" } } }
                            td {
                                (views::status_pill(if dest.enabled { "enabled" } else { "disabled" }))
                                @if let Some(reason) = &dest.disabled_reason {
                                    p.warn.small { "Disabled by Krafter"
                                        @if let Some(at) = &dest.disabled_at { " " (views::time(at)) }
                                        ": " (reason) }
                                }
                            }
                            td { (views::time(&dest.created_at)) }
                            td.actions {
                                @if session.can_write() {
                                    form method="post" action={ "/dashboard/sources/" (source.id) "/destinations/" (dest.id) "/enabled" } {
                                        (views::csrf(session))
                                        input type="hidden" name="enabled" value=(if dest.enabled { "false" } else { "true" });
                                        button.btn.small type="submit" { @if dest.enabled { "Disable" } @else { "Enable" } }
                                    }
                                    a.btn.small href={ "/dashboard/sources/" (source.id) "/destinations/" (dest.id) } { "Edit" }
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
    source: &Source,
    session: &Session,
    refused: Option<(&Form, &ApiFailure)>,
) -> Markup {
    let (form, failure) = match refused {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    html! {
        section.card #new-destination {
            h3 { "Add a destination" }
            @if let Some(f) = failure { (views::failure(f)) }
            form method="post" action={ "/dashboard/sources/" (source.id) "/destinations" } {
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

fn body_from(form: &Form, editing: bool) -> Value {
    let mut body = Map::new();
    body.insert("url".into(), json!(form.get("url").unwrap_or("").trim()));
    body.insert(
        "event_filter".into(),
        json!(patterns(form.get("event_filter").unwrap_or(""))),
    );
    match form.text("rate_limit") {
        Some(t) => {
            let v = t
                .parse::<u64>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(t));
            body.insert("rate_limit".into(), v);
        }
        // In a PATCH, 0 removes the limit.
        None if editing => {
            body.insert("rate_limit".into(), json!(0));
        }
        None => {}
    }
    Value::Object(body)
}

/// Creates a destination and shows its secret once, on the source page.
pub async fn create(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_segment(&sid)?;
    let query = QueryMap::new();
    match d
        .api
        .change::<Destination>(
            &session.caller,
            Method::POST,
            &format!("{}/destinations", api_path(sid)),
            Some(body_from(&form, false)),
        )
        .await?
    {
        Ok(dest) => sources::render_show(&d, &session, sid, &query, ShowExtra::Created(dest)).await,
        Err(f)
            if f.status == StatusCode::UNPROCESSABLE_ENTITY
                || f.status == StatusCode::BAD_REQUEST =>
        {
            sources::render_show(&d, &session, sid, &query, ShowExtra::Refused(&form, f)).await
        }
        Err(f) => Err(f.into()),
    }
}

/// The destination page: edit, rotate the secret, delete.
pub async fn edit_page(
    State(d): State<Dashboard>,
    session: Session,
    Path((sid, did)): Path<(String, String)>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let (sid, did) = (id_segment(&sid)?, id_segment(&did)?);
    render_edit(&d, &session, sid, did, &query, None, None).await
}

async fn render_edit(
    d: &Dashboard,
    session: &Session,
    sid: &str,
    did: &str,
    query: &QueryMap,
    secret: Option<&str>,
    refused: Option<(&Form, &ApiFailure)>,
) -> Result<Response, DashboardError> {
    let source = sources::fetch(d, session, sid).await?;
    let dest: Destination = d.api.get(&session.caller, &dest_path(sid, did)).await?;
    let (form, failure) = match refused {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    let base = format!("/dashboard/sources/{sid}/destinations/{did}");
    let filter = dest.event_filter.join(", ");
    let rate = dest.rate_limit.map(|r| r.to_string()).unwrap_or_default();
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        (super::source_header(&source, SourceTab::Other, session))
        (views::crumbs(&[("Destinations", Some(format!("/dashboard/sources/{sid}"))), (dest.url.as_str(), None)]))
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
                    @if let Some(at) = &dest.disabled_at { " " (views::time(at)) }
                    ": " (reason) ". Enable it to resume delivery." }
            }
            p.muted.small { (dest.id) " · created " (views::time(&dest.created_at)) }
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
    let (sid, did) = (id_segment(&sid)?, id_segment(&did)?);
    match d
        .api
        .change::<Destination>(
            &session.caller,
            Method::PATCH,
            &dest_path(sid, did),
            Some(body_from(&form, true)),
        )
        .await?
    {
        Ok(_) => Ok(views::see_other(&format!(
            "/dashboard/sources/{sid}?notice=destination-updated"
        ))),
        Err(f)
            if f.status == StatusCode::UNPROCESSABLE_ENTITY
                || f.status == StatusCode::BAD_REQUEST =>
        {
            render_edit(
                &d,
                &session,
                sid,
                did,
                &QueryMap::new(),
                None,
                Some((&form, &f)),
            )
            .await
        }
        Err(f) => Err(f.into()),
    }
}

/// Enables or disables a destination.
pub async fn set_enabled(
    State(d): State<Dashboard>,
    Path((sid, did)): Path<(String, String)>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, did) = (id_segment(&sid)?, id_segment(&did)?);
    let enabled = form.get("enabled") == Some("true");
    d.api
        .change::<Destination>(
            &session.caller,
            Method::PATCH,
            &dest_path(sid, did),
            Some(json!({ "enabled": enabled })),
        )
        .await??;
    let notice = if enabled {
        "destination-enabled"
    } else {
        "destination-disabled"
    };
    Ok(views::see_other(&format!(
        "/dashboard/sources/{sid}?notice={notice}"
    )))
}

/// Issues a new secret and shows it once.
pub async fn rotate_secret(
    State(d): State<Dashboard>,
    Path((sid, did)): Path<(String, String)>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let (sid, did) = (id_segment(&sid)?, id_segment(&did)?);
    let dest = d
        .api
        .change::<Destination>(
            &session.caller,
            Method::POST,
            &format!("{}/rotate-secret", dest_path(sid, did)),
            None,
        )
        .await??;
    render_edit(
        &d,
        &session,
        sid,
        did,
        &QueryMap::new(),
        dest.secret.as_deref(),
        None,
    )
    .await
}

/// Asks before deleting.
pub async fn delete_page(
    State(d): State<Dashboard>,
    session: Session,
    Path((sid, did)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    let (sid, did) = (id_segment(&sid)?, id_segment(&did)?);
    let source = sources::fetch(&d, &session, sid).await?;
    let dest: Destination = d.api.get(&session.caller, &dest_path(sid, did)).await?;
    let base = format!("/dashboard/sources/{sid}/destinations/{did}");
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
    let (sid, did) = (id_segment(&sid)?, id_segment(&did)?);
    d.api
        .change::<Value>(&session.caller, Method::DELETE, &dest_path(sid, did), None)
        .await??;
    Ok(views::see_other(&format!(
        "/dashboard/sources/{sid}?notice=destination-deleted"
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
