//! `/dashboard/api-keys`: list, create (shown once), revoke. Admin scope,
//! as in the API.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::{cursor_of, cursor_text, id_of, list_query, notice, value, QueryMap};
use crate::dashboard::error::{DashboardError, Refusal};
use crate::dashboard::form::Form;
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::model::ids::ApiKeyId;
use crate::ops::api_keys::NewKey;

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
    created: Option<NewKey>,
    refused: Option<(&Form, Refusal)>,
) -> Result<Response, DashboardError> {
    let page = d
        .ops
        .list_api_keys(&session.caller, cursor_of(query)?, PAGE)
        .await?;
    let next_cursor = cursor_text(page.next);
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
        @if let Some(new) = &created {
            (views::shown_once("new-key", &new.key, "API key", &format!(
                "Krafter keeps only its hash. Send it to the API as “Authorization: Bearer <key>”, or sign in here with it (scopes: {}).",
                scope_names(&new.record.scopes).join(", "))))
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
                                td { (key.name) @if key.id == session.caller.key_id { " " span.tag { "you" } } }
                                td { code { (key.prefix) "…" } }
                                td { @for s in scope_names(&key.scopes) { span.tag { (s) } " " } }
                                td { (views::time(key.created_at_ms)) }
                                td.actions {
                                    form method="post" action={ "/dashboard/api-keys/" (key.id.to_string()) "/revoke" }
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
            @if let Some(cursor) = &next_cursor {
                p.pager { a href={ "/dashboard/api-keys?" (list_query(PAGE, Some(cursor))) } { "Older keys →" } }
            }
        }
    };
    Ok(views::respond(
        status,
        views::page("API keys", Some(session), Nav::ApiKeys, body),
    ))
}

/// A key's scopes by their public names.
fn scope_names(scopes: &[crate::model::records::Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

fn new_form(session: &Session, refused: Option<(&Form, &Refusal)>) -> Markup {
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
    let name = form.get("name").unwrap_or("");
    let scopes = form.all("scopes");
    let empty = QueryMap::new();
    match d.ops.create_api_key(&session.caller, name, &scopes).await {
        Ok(new) => render(&d, &session, &empty, Some(new), None).await,
        Err(crate::ops::OpError::Invalid(details)) => {
            let refusal = Refusal::invalid(details);
            render(&d, &session, &empty, None, Some((&form, refusal))).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Revokes a key.
pub async fn revoke(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let id = id_of::<ApiKeyId>(&id)?;
    d.ops.revoke_api_key(&session.caller, id).await?;
    Ok(views::see_other("/dashboard/api-keys?notice=key-revoked"))
}
