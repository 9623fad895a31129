//! Sources: list with ingest URLs, create, the source page (its ingest URL
//! and destinations), settings, enable/disable, delete with confirmation.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::{
    cursor_of, cursor_text, destinations, id_of, list_query, notice, provider_label, value,
    QueryMap, Reading, SourceTab,
};
use crate::dashboard::error::{DashboardError, Refusal};
use crate::dashboard::form::Form;
use crate::dashboard::session::{Session, SignedForm};
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::ingest::providers;
use crate::model::ids::SourceId;
use crate::model::provider::{GenericHmacConfig, ProviderKind, SignatureEncoding};
use crate::model::records::SourceRecord;
use crate::ops::destinations::WithSecret;
use crate::ops::sources::{NewSource, SourceEdit, SourceSummary};
use crate::ops::OpError;

const PAGE: usize = 50;

/// Fetches one source with its destination count (404 page if it is gone).
pub async fn fetch(
    d: &Dashboard,
    session: &Session,
    sid: SourceId,
) -> Result<SourceSummary, DashboardError> {
    Ok(d.ops.get_source(&session.caller, sid).await?)
}

/// Every source, newest first.
pub async fn list(
    State(d): State<Dashboard>,
    session: Session,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let page = d
        .ops
        .list_sources(&session.caller, cursor_of(&query)?, PAGE)
        .await?;
    let next_cursor = cursor_text(page.next);
    let body = html! {
        div.title-row {
            h1 { "Sources" }
            @if session.can_write() && !page.items.is_empty() {
                a.btn.primary href="/dashboard/sources/new" { "New source" }
            }
        }
        @if let Some(n) = notice(&query) { (n) }
        @if page.items.is_empty() {
            (views::empty("No sources yet", html! {
                p { "A source is one provider sending you webhooks — Stripe, GitHub, Shopify, Slack, Paddle, Linear, Square, Twilio, Zoom, Intercom, Twitch, Discord, Mailgun, SendGrid, or anything that signs with HMAC. Each gets its own ingest URL to paste into the provider's settings." }
                @if session.can_write() {
                    a.btn.primary href="/dashboard/sources/new" { "Create your first source" }
                } @else {
                    p.muted { "Your API key is read-only: ask an admin to create one." }
                }
            }))
        } @else {
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Provider" } th scope="col" { "Ingest URL" }
                        th scope="col" { "Destinations" } th scope="col" { "Status" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for (i, item) in page.items.iter().enumerate() {
                            @let s = &item.source;
                            @let href = format!("/dashboard/sources/{}", s.id);
                            tr {
                                td { a href=(href) { strong { (s.name) } } }
                                td { (provider_label(s.provider)) }
                                td { (views::copyable(&format!("url-{i}"), &d.ingest_url(&s.slug), "ingest URL")) }
                                td.num { a href=(href) { (item.destinations) } }
                                td { (views::status_pill(if s.enabled { "enabled" } else { "disabled" })) }
                                td { (views::time(s.created_at_ms)) }
                            }
                        }
                    }
                }
            }
            @if let Some(cursor) = &next_cursor {
                p.pager { a href={ "/dashboard/sources?" (list_query(PAGE, Some(cursor))) } { "Older sources →" } }
            }
        }
    };
    Ok(views::ok(views::page(
        "Sources",
        Some(&session),
        Nav::Sources,
        body,
    )))
}

/// The "New source" form.
pub async fn new_page(session: Session) -> Result<Response, DashboardError> {
    Ok(new_form(&session, None, StatusCode::OK))
}

fn new_form(session: &Session, refused: Option<(&Form, &Refusal)>, status: StatusCode) -> Response {
    let (form, failure) = split(refused);
    let body = html! {
        (views::crumbs(&[("Sources", Some("/dashboard/sources".to_string())), ("New source", None)]))
        h1 { "New source" }
        section.card {
            @if let Some(f) = failure { (views::failure(f)) }
            form method="post" action="/dashboard/sources" {
                (views::csrf(session))
                label for="name" { "Name" }
                input #name type="text" name="name" required maxlength="200"
                    value=(value(form, "name", "")) placeholder="Stripe production";
                (views::field_error(failure, "name"))
                label for="provider" { "Provider" }
                select #provider name="provider" {
                    @for (kind, provider) in providers::all() {
                        option value=(kind.as_str()) selected[value(form, "provider", "stripe") == kind.as_str()] { (provider.label()) }
                    }
                }
                p.hint { "Krafter verifies each request exactly as the provider's own SDK does." }
                (views::field_error(failure, "provider"))
                label for="signing_secret" { "Signing secret" }
                input #signing_secret type="password" name="signing_secret" autocomplete="off" spellcheck="false"
                    placeholder="whsec_… (from the provider's webhook settings)";
                p.hint { "Required for every provider except “None”; for Discord and SendGrid, the public key they show. Stored encrypted and never shown again." }
                (views::field_error(failure, "signing_secret"))
                label for="retention_days" { "Keep events for (days)" }
                input #retention_days type="number" name="retention_days" min="1" max="3650"
                    value=(value(form, "retention_days", "30"));
                (views::field_error(failure, "retention_days"))
                (generic_fields(form, failure, None))
                div.form-actions {
                    button.btn.primary type="submit" { "Create source" }
                    a.btn href="/dashboard/sources" { "Cancel" }
                }
            }
        }
    };
    views::respond(
        status,
        views::page("New source", Some(session), Nav::Sources, body),
    )
}

fn split<'a>(refused: Option<(&'a Form, &'a Refusal)>) -> (Option<&'a Form>, Option<&'a Refusal>) {
    match refused {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    }
}

/// The `generic_hmac` settings, in their own group (the script shows it
/// only when that provider is chosen).
fn generic_fields(
    form: Option<&Form>,
    failure: Option<&Refusal>,
    current: Option<&GenericHmacConfig>,
) -> Markup {
    let cur = |f: fn(&GenericHmacConfig) -> Option<String>| current.and_then(f).unwrap_or_default();
    let fields: [(&str, &str, String, &str); 6] = [
        (
            "signature_header",
            "Signature header",
            cur(|c| Some(c.signature_header.clone())),
            "X-Signature",
        ),
        (
            "prefix",
            "Signature prefix",
            cur(|c| c.prefix.clone()),
            "sha256=",
        ),
        (
            "event_type_pointer",
            "Event type: JSON pointer",
            cur(|c| c.event_type_pointer.clone()),
            "/type",
        ),
        (
            "event_type_header",
            "Event type: header",
            cur(|c| c.event_type_header.clone()),
            "X-Event-Type",
        ),
        (
            "event_id_header",
            "Event id: header",
            cur(|c| c.event_id_header.clone()),
            "X-Event-Id",
        ),
        (
            "event_id_pointer",
            "Event id: JSON pointer",
            cur(|c| c.event_id_pointer.clone()),
            "/id",
        ),
    ];
    let encoding = value(
        form,
        "encoding",
        current.map_or("hex", |c| c.encoding.as_str()),
    );
    html! {
        fieldset.generic data-show-for="generic_hmac" {
            legend { "Generic HMAC settings" }
            p.hint { "Only for provider “Generic HMAC”: HMAC-SHA256 of the raw body, in a header you name." }
            (views::field_error(failure, "provider_config"))
            @for (name, label, default, placeholder) in &fields {
                label for={ "cfg-" (name) } { (label) }
                input id={ "cfg-" (name) } type="text" name=(name) value=(value(form, name, default)) placeholder=(placeholder);
            }
            label for="cfg-encoding" { "Signature encoding" }
            select #cfg-encoding name="encoding" {
                option value="hex" selected[encoding == "hex"] { "hex" }
                option value="base64" selected[encoding == "base64"] { "base64" }
            }
        }
    }
}

/// The `generic_hmac` settings as typed.
fn provider_config(r: &mut Reading, form: &Form) -> GenericHmacConfig {
    let encoding = match form.text("encoding").as_deref() {
        None | Some("hex") => SignatureEncoding::Hex,
        Some("base64") => SignatureEncoding::Base64,
        Some(_) => {
            r.fail("provider_config.encoding", "must be hex or base64");
            SignatureEncoding::Hex
        }
    };
    GenericHmacConfig {
        signature_header: form.text("signature_header").unwrap_or_default(),
        encoding,
        prefix: form.text("prefix"),
        event_type_pointer: form.text("event_type_pointer"),
        event_type_header: form.text("event_type_header"),
        event_id_header: form.text("event_id_header"),
        event_id_pointer: form.text("event_id_pointer"),
    }
}

/// Creates a source, then shows its page (with its ingest URL).
pub async fn create(
    State(d): State<Dashboard>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let created = match read_new_source(&form) {
        Ok(new) => d.ops.create_source(&session.caller, new).await,
        Err(e) => Err(e),
    };
    match created.map_err(Refusal::of) {
        Ok(source) => Ok(views::see_other(&format!(
            "/dashboard/sources/{}?notice=source-created",
            source.id
        ))),
        Err(Ok(refusal)) => Ok(new_form(
            &session,
            Some((&form, &refusal)),
            StatusCode::UNPROCESSABLE_ENTITY,
        )),
        Err(Err(e)) => Err(e.into()),
    }
}

/// The "New source" form as an operation's input.
fn read_new_source(form: &Form) -> Result<NewSource, OpError> {
    let mut r = Reading::default();
    let text = form.text("provider").unwrap_or_default();
    let provider = ProviderKind::ALL.into_iter().find(|p| p.as_str() == text);
    if provider.is_none() {
        r.fail("provider", format!("unknown provider `{text}`"));
    }
    let retention_days = r.number(form, "retention_days");
    let provider_config =
        (provider == Some(ProviderKind::GenericHmac)).then(|| provider_config(&mut r, form));
    r.finish()?;
    Ok(NewSource {
        name: form.get("name").unwrap_or("").to_string(),
        provider: provider.unwrap_or(ProviderKind::None),
        signing_secret: form.text("signing_secret"),
        retention_days,
        enabled: None,
        provider_config,
    })
}

/// The source page: ingest URL and destinations.
pub async fn show(
    State(d): State<Dashboard>,
    session: Session,
    Path(sid): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    render_show(&d, &session, sid, &query, ShowExtra::None).await
}

/// What else the source page shows after an action on it.
pub enum ShowExtra<'a> {
    None,
    /// A destination was just made: its secret, once.
    Created(Box<WithSecret>),
    /// Adding a destination was refused: the form again, with why.
    Refused(&'a Form, Refusal),
}

/// Renders the source page.
pub async fn render_show(
    d: &Dashboard,
    session: &Session,
    sid: SourceId,
    query: &QueryMap,
    extra: ShowExtra<'_>,
) -> Result<Response, DashboardError> {
    let source = fetch(d, session, sid).await?.source;
    let dests = d
        .ops
        .list_destinations(&session.caller, sid, None, destinations::SHOWN)
        .await?;
    let ingest_url = d.ingest_url(&source.slug);
    let source_id = sid.to_string();
    let status = match extra {
        ShowExtra::Refused(..) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let hint = providers::get(source.provider).setup_hint();
    let body = html! {
        (super::source_header(&source, SourceTab::Destinations, session))
        @if let Some(n) = notice(query) { (n) }
        @if let ShowExtra::Created(dest) = &extra {
            (views::shown_once("new-secret", &dest.secret, "destination signing secret",
                "Your endpoint verifies Krafter's Standard Webhooks signature (webhook-signature header) with it."))
        }
        section.card {
            h2 { "Ingest URL" }
            (views::copyable("ingest-url", &ingest_url, "ingest URL"))
            p.hint { (hint) }
            @if !source.enabled { p.warn { "This source is disabled: its URL answers 404 until it is enabled again." } }
            @if session.can_write() && source.enabled {
                div.test-event {
                    (super::overview::test_event_form(session, &source_id))
                    span.hint { "Stores a " code { "krafter.test" } " event and delivers it, signed, to every enabled destination (filters not applied) — no provider secret needed." }
                }
            }
        }
        section {
            div.title-row {
                h2 { "Destinations" }
                span.muted { "Where Krafter forwards this source's events, signed and retried." }
            }
            @if dests.items.is_empty() {
                (views::empty("No destinations yet", html! {
                    p { "Events sent to the ingest URL are stored, but go nowhere until you add the URL of your app." }
                    @if !session.can_write() { p.muted { "Your API key is read-only." } }
                }))
            } @else {
                (destinations::table(&source, &dests.items, session))
            }
            @if session.can_write() {
                @let refused = match &extra { ShowExtra::Refused(f, e) => Some((*f, e)), _ => None };
                (destinations::new_form(&source, session, refused))
            }
        }
    };
    Ok(views::respond(
        status,
        views::page(&source.name, Some(session), Nav::Sources, body),
    ))
}

/// The settings page.
pub async fn edit_page(
    State(d): State<Dashboard>,
    session: Session,
    Path(sid): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let source = fetch(&d, &session, sid).await?.source;
    Ok(settings(&source, &session, &query, None))
}

fn settings(
    source: &SourceRecord,
    session: &Session,
    query: &QueryMap,
    refused: Option<(&Form, &Refusal)>,
) -> Response {
    let (form, failure) = split(refused);
    let base = format!("/dashboard/sources/{}", source.id);
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        (super::source_header(source, SourceTab::Settings, session))
        @if let Some(n) = notice(query) { (n) }
        section.card {
            h2 { "Settings" }
            @if let Some(f) = failure { (views::failure(f)) }
            form method="post" action={ (base) "/edit" } {
                (views::csrf(session))
                label for="name" { "Name" }
                input #name type="text" name="name" required maxlength="200" value=(value(form, "name", &source.name));
                (views::field_error(failure, "name"))
                label for="retention_days" { "Keep events for (days)" }
                input #retention_days type="number" name="retention_days" min="1" max="3650"
                    value=(value(form, "retention_days", &source.retention_days.to_string()));
                (views::field_error(failure, "retention_days"))
                @if providers::get(source.provider).verifies() {
                    label for="signing_secret" { "New signing secret" }
                    input #signing_secret type="password" name="signing_secret" autocomplete="off" spellcheck="false"
                        placeholder="Leave empty to keep the current one";
                    p.hint { "After a change the previous secret is still accepted for 24 hours, so the provider's secret roll loses nothing." }
                    (views::field_error(failure, "signing_secret"))
                }
                @if source.provider == ProviderKind::GenericHmac {
                    (generic_fields(form, failure, source.provider_config.as_ref()))
                }
                div.form-actions { button.btn.primary type="submit" { "Save" } }
            }
        }
        section.card {
            h2 { "Status" }
            @if source.enabled {
                p { "Enabled: the ingest URL accepts webhooks." }
            } @else {
                p { "Disabled: the ingest URL answers 404, so the provider will retry later." }
            }
            form method="post" action={ (base) "/enabled" } {
                (views::csrf(session))
                input type="hidden" name="enabled" value=(if source.enabled { "false" } else { "true" });
                button.btn type="submit" { @if source.enabled { "Disable source" } @else { "Enable source" } }
            }
        }
        section.card.danger-zone {
            h2 { "Delete" }
            p { "Deleting a source deletes its destinations, events and pending deliveries. Its ingest URL stops working." }
            a.btn.danger href={ (base) "/delete" } { "Delete source…" }
        }
    };
    views::respond(
        status,
        views::page(
            &format!("{} settings", source.name),
            Some(session),
            Nav::Sources,
            body,
        ),
    )
}

/// Saves the settings.
pub async fn edit(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let source = fetch(&d, &session, sid).await?.source;
    let updated = match read_source_edit(&form, source.provider) {
        Ok(edit) => d.ops.update_source(&session.caller, sid, edit).await,
        Err(e) => Err(e),
    };
    match updated.map_err(Refusal::of) {
        Ok(_) => Ok(views::see_other(&format!(
            "/dashboard/sources/{}/edit?notice=source-updated",
            sid
        ))),
        Err(Ok(refusal)) => Ok(settings(
            &source,
            &session,
            &QueryMap::new(),
            Some((&form, &refusal)),
        )),
        Err(Err(e)) => Err(e.into()),
    }
}

/// The settings form as a change: the name always, a new secret when one
/// was typed, the generic HMAC settings for such a source.
fn read_source_edit(form: &Form, provider: ProviderKind) -> Result<SourceEdit, OpError> {
    let mut r = Reading::default();
    let retention_days = r.number(form, "retention_days");
    let provider_config =
        (provider == ProviderKind::GenericHmac).then(|| provider_config(&mut r, form));
    r.finish()?;
    Ok(SourceEdit {
        name: Some(form.get("name").unwrap_or("").to_string()),
        enabled: None,
        signing_secret: form.text("signing_secret"),
        retention_days,
        provider_config,
    })
}

/// Enables or disables a source.
pub async fn set_enabled(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, form }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let enabled = form.get("enabled") == Some("true");
    let edit = SourceEdit {
        enabled: Some(enabled),
        ..SourceEdit::default()
    };
    d.ops.update_source(&session.caller, sid, edit).await?;
    let notice = if enabled {
        "source-enabled"
    } else {
        "source-disabled"
    };
    Ok(views::see_other(&format!(
        "/dashboard/sources/{}/edit?notice={notice}",
        sid
    )))
}

/// Asks before deleting.
pub async fn delete_page(
    State(d): State<Dashboard>,
    session: Session,
    Path(sid): Path<String>,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    let SourceSummary {
        source,
        destinations,
    } = fetch(&d, &session, sid).await?;
    let sid = sid.to_string();
    let body = html! {
        (views::crumbs(&[("Sources", Some("/dashboard/sources".to_string())),
            (source.name.as_str(), Some(format!("/dashboard/sources/{sid}"))), ("Delete", None)]))
        section.card.danger-zone {
            h1 { "Delete “" (source.name) "”?" }
            p { "This deletes the source, its " strong { (destinations) " destination(s)" }
                ", every stored event and every pending delivery. Requests to "
                code { (d.ingest_url(&source.slug)) } " will be answered 404. This cannot be undone." }
            form method="post" action={ "/dashboard/sources/" (sid) "/delete" } {
                (views::csrf(&session))
                div.form-actions {
                    button.btn.danger type="submit" { "Delete source" }
                    a.btn href={ "/dashboard/sources/" (sid) "/edit" } { "Cancel" }
                }
            }
        }
    };
    Ok(views::ok(views::page(
        &format!("Delete {}", source.name),
        Some(&session),
        Nav::Sources,
        body,
    )))
}

/// Deletes a source.
pub async fn delete(
    State(d): State<Dashboard>,
    Path(sid): Path<String>,
    SignedForm { session, .. }: SignedForm,
) -> Result<Response, DashboardError> {
    let sid = id_of::<SourceId>(&sid)?;
    d.ops.delete_source(&session.caller, sid).await?;
    Ok(views::see_other("/dashboard/sources?notice=source-deleted"))
}
