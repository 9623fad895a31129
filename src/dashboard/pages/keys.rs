//! `/dashboard/api-keys`: list, create (shown once), revoke. Admin scope,
//! as in the API.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::json;

use super::{list_query, notice, value, QueryMap};
use crate::dashboard::dispatch::{id_segment, ApiFailure};
use crate::dashboard::error::DashboardError;
use crate::dashboard::form::Form;
use crate::dashboard::model::ApiKey;
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::model::ids::{format_id, IdKind};

const PAGE: usize = 50;

/// The scope picker's choices: group, scope, what it allows.
const SCOPES: [(&str, &str, &str); 3] = [
    (
        "Webhooks",
        "webhooks:read",
        "See sources, destinations, events and deliveries.",
    ),
    (
        "Webhooks",
        "webhooks:write",
        "Also create, change and delete them, replay and retry.",
    ),
    ("Admin", "admin", "Everything, including managing API keys."),
];

/// The list, and the "New API key" form when `?new` is asked for.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    render(&d, &session, &query, None, None).await
}

async fn render(
    d: &Dashboard,
    session: &Session,
    query: &QueryMap,
    created: Option<ApiKey>,
    refused: Option<(&Form, ApiFailure)>,
) -> Result<Response, DashboardError> {
    let path = format!("/api/v1/api-keys?{}", list_query(PAGE, query.get("cursor")));
    let page = d.api.list::<ApiKey>(&session.caller, &path).await?;
    let own_id = format_id(IdKind::ApiKey, session.caller.key_id);
    let show_form = query.contains_key("new") || refused.is_some();
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        div.title-row {
            h1 { "API keys" }
            @if !show_form { a.btn.primary href="/dashboard/api-keys?new" { "New API key" } }
        }
        @if let Some(n) = notice(query) { (n) }
        @if let Some(key) = &created {
            @if let Some(secret) = &key.key {
                (views::shown_once("new-key", secret, "API key", &format!(
                    "Krafter keeps only its hash. Send it to the API as “Authorization: Bearer <key>”, or sign in here with it (scopes: {}).",
                    key.scopes.join(", "))))
            }
        }
        @if show_form { (new_form(session, refused.as_ref().map(|(f, e)| (*f, e)))) }
        p.muted { "Keys authenticate scripts against the REST API and sign people in here. Each is shown once, when it is made." }
        @if page.items.is_empty() {
            (views::empty("No API keys", html! { p { "Create one above; until then only " code { "admin.key" } " can sign in." } }))
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Scopes" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody {
                        @for key in &page.items {
                            tr {
                                td { (key.name) @if key.id == own_id { " " span.tag { "you" } } }
                                td { code { (key.prefix) "…" } }
                                td { @for s in &key.scopes { span.tag { (s) } " " } }
                                td { (views::time(&key.created_at)) }
                                td.actions {
                                    form method="post" action={ "/dashboard/api-keys/" (key.id) "/revoke" }
                                        data-confirm={ "Revoke the key “" (key.name) "”? Anything using it stops working at once." } {
                                        (views::csrf(session))
                                        button.btn.danger.small type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(cursor) = &page.next_cursor {
                p.pager { a href={ "/dashboard/api-keys?" (list_query(PAGE, Some(cursor))) } { "Older keys →" } }
            }
        }
    };
    Ok(views::respond(
        status,
        views::page("API keys", Some(session), Nav::ApiKeys, body),
    ))
}

fn new_form(session: &Session, refused: Option<(&Form, &ApiFailure)>) -> Markup {
    let (form, failure) = match refused {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    let ticked = form.map(|f| f.all("scopes")).unwrap_or_default();
    html! {
        section.card #new-key-form {
            h2 { "New API key" }
            @if let Some(f) = failure { (views::failure(f)) }
            form method="post" action="/dashboard/api-keys" {
                (views::csrf(session))
                label for="key-name" { "Name" }
                input #key-name type="text" name="name" required maxlength="200"
                    value=(value(form, "name", "")) placeholder="ci, deploy script, …";
                (views::field_error(failure, "name"))
                fieldset.scope-picker {
                    legend { "Scopes" }
                    @for group in ["Webhooks", "Admin"] {
                        div.scope-group {
                            h3 { (group) }
                            @for (g, scope, what) in SCOPES {
                                @if g == group {
                                    label.check {
                                        input type="checkbox" name="scopes" value=(scope) checked[ticked.iter().any(|t| t == scope)];
                                        span { code { (scope) } span.muted { " — " (what) } }
                                    }
                                }
                            }
                        }
                    }
                    (views::field_error(failure, "scopes"))
                }
                div.form-actions {
                    button.btn.primary type="submit" { "Create key" }
                    a.btn href="/dashboard/api-keys" { "Cancel" }
                }
            }
        }
    }
}

/// Creates a key and shows it once, in this answer only (never in a URL
/// or stored anywhere but as its hash).
pub async fn create(
    State(d): State<Dashboard>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let body = json!({
        "name": form.get("name").unwrap_or(""),
        "scopes": form.all("scopes"),
    });
    let empty = QueryMap::new();
    match d
        .api
        .change::<ApiKey>(
            &session.caller,
            Method::POST,
            "/api/v1/api-keys",
            Some(body),
        )
        .await?
    {
        Ok(key) => render(&d, &session, &empty, Some(key), None).await,
        Err(failure) if failure.status == StatusCode::UNPROCESSABLE_ENTITY => {
            render(&d, &session, &empty, None, Some((&form, failure))).await
        }
        Err(failure) => Err(failure.into()),
    }
}

/// Revokes a key.
pub async fn revoke(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let id = id_segment(&id)?;
    d.api
        .change::<serde_json::Value>(
            &session.caller,
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            None,
        )
        .await??;
    Ok(views::see_other("/dashboard/api-keys?notice=key-revoked"))
}
