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
use crate::model::records::{AuthRecord, DestinationRecord, Ordering, SourceRecord};
use crate::ops::destinations::{
    AuthInput, ClientCertInput, DestinationEdit, NewDestination, OptionsInput,
};
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
                (options_fields(form, failure, None))
                div.form-actions { button.btn.primary type="submit" { "Add destination" } }
            }
        }
    }
}

/// "Name: value" lines, as the headers field shows them.
fn headers_text(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The delivery options of SPEC §13 as form fields. Secret parts
/// (password, token, client secret, private key) are write-only: never
/// filled in, not even with what a refused form sent.
fn options_fields(
    form: Option<&Form>,
    failure: Option<&Refusal>,
    current: Option<&DestinationRecord>,
) -> Markup {
    let o = current.map(|d| d.options.clone()).unwrap_or_default();
    let headers = headers_text(&o.headers);
    let timeout = o
        .timeout_ms
        .map(|ms| format!("{}s", ms / 1000))
        .unwrap_or_default();
    let filter = o.body_filter.clone().unwrap_or_default();
    let ordering = value(form, "ordering", o.ordering.as_str());
    let auth_kind = value(
        form,
        "auth_type",
        o.auth.as_ref().map_or("none", AuthRecord::kind),
    );
    let (mut username, mut token_url, mut client_id, mut scope, mut audience) = Default::default();
    match &o.auth {
        Some(AuthRecord::Basic { username: u, .. }) => username = u.clone(),
        Some(AuthRecord::OAuth2ClientCredentials {
            token_url: t,
            client_id: c,
            scope: s,
            audience: a,
            ..
        }) => {
            token_url = t.clone();
            client_id = c.clone();
            scope = s.clone().unwrap_or_default();
            audience = a.clone().unwrap_or_default();
        }
        _ => {}
    }
    let keep = if current.is_some_and(|d| d.options.auth.is_some()) {
        "stored; leave empty to keep it"
    } else {
        ""
    };
    html! {
        details.options open[failure.is_some()] {
            summary { "Delivery options" }
            label for="dest-headers" { "Extra headers (one “Name: value” per line)" }
            textarea #dest-headers name="headers" rows="3" { (value(form, "headers", &headers)) }
            (views::field_error(failure, "headers"))
            @if let Some(f) = failure { @for (field, message) in f.fields_under("headers.") {
                p.field-error { code { (field) } " " (message) } } }
            label for="dest-timeout" { "Timeout (1s to 120s; empty: delivery.timeout)" }
            input #dest-timeout type="text" name="timeout" value=(value(form, "timeout", &timeout)) placeholder="10s";
            (views::field_error(failure, "timeout"))
            label for="dest-ordering" { "Ordering" }
            select #dest-ordering name="ordering" {
                option value="none" selected[ordering == "none"] { "none: any order, several at once" }
                option value="fifo" selected[ordering == "fifo"] { "fifo: one at a time, in event order" }
            }
            p.hint { "FIFO sends one delivery at a time: its throughput is one delivery per receiver response time, and a failing delivery holds the ones after it until it succeeds or fails for good." }
            label for="dest-body-filter" { "Body filter (JSON; empty: none)" }
            textarea #dest-body-filter name="body_filter" rows="3" placeholder="{\"data\": {\"amount\": {\"$gt\": 100}}}" { (value(form, "body_filter", &filter)) }
            (views::field_error(failure, "body_filter"))
            @if let Some(f) = failure { @for (field, message) in f.fields_under("body_filter.") {
                p.field-error { code { (field) } " " (message) } } }
            label for="dest-auth" { "Authentication" }
            select #dest-auth name="auth_type" {
                @for (kind, label) in [("none", "none"), ("basic", "HTTP basic"), ("bearer", "bearer token"), ("oauth2_client_credentials", "OAuth2 client credentials")] {
                    option value=(kind) selected[auth_kind == kind] { (label) }
                }
            }
            label for="dest-auth-username" { "Username (basic)" }
            input #dest-auth-username type="text" name="auth_username" autocomplete="off" value=(value(form, "auth_username", &username));
            label for="dest-auth-secret" { "Password, token or client secret (write-only)" }
            input #dest-auth-secret type="password" name="auth_secret" autocomplete="new-password" value="" placeholder=(keep);
            label for="dest-auth-token-url" { "Token URL (OAuth2)" }
            input #dest-auth-token-url type="url" name="auth_token_url" value=(value(form, "auth_token_url", &token_url));
            label for="dest-auth-client-id" { "Client id (OAuth2)" }
            input #dest-auth-client-id type="text" name="auth_client_id" value=(value(form, "auth_client_id", &client_id));
            label for="dest-auth-scope" { "Scope (OAuth2, optional)" }
            input #dest-auth-scope type="text" name="auth_scope" value=(value(form, "auth_scope", &scope));
            label for="dest-auth-audience" { "Audience (OAuth2, optional)" }
            input #dest-auth-audience type="text" name="auth_audience" value=(value(form, "auth_audience", &audience));
            @if let Some(f) = failure { @for (field, message) in f.fields_under("auth") {
                p.field-error { code { (field) } " " (message) } } }
            label for="dest-cert" { "Client certificate for mTLS (PEM)" }
            @if let Some(cert) = &o.tls_client_certificate {
                p.hint { "Stored: " code { (cert.subject) } ", valid until " (views::time(cert.not_after_ms)) ". Paste a new pair to replace it." }
                label.check { input type="checkbox" name="tls_remove" value="true"; " Remove the client certificate" }
            }
            textarea #dest-cert name="tls_cert_pem" rows="3" placeholder="-----BEGIN CERTIFICATE-----" { (value(form, "tls_cert_pem", "")) }
            label for="dest-key" { "Its private key (PEM, write-only)" }
            textarea #dest-key name="tls_key_pem" rows="3" autocomplete="off" placeholder="-----BEGIN PRIVATE KEY-----" {}
            @if let Some(f) = failure { @for (field, message) in f.fields_under("tls_client_certificate") {
                p.field-error { code { (field) } " " (message) } } }
        }
    }
}

/// The options as read-only facts (for readers without write access).
fn options_facts(d: &DestinationRecord) -> Markup {
    let o = &d.options;
    html! {
        @if !o.headers.is_empty() { dt { "Headers" } dd { code { (headers_text(&o.headers)) } } }
        @if let Some(ms) = o.timeout_ms { dt { "Timeout" } dd { (ms / 1000) "s" } }
        dt { "Ordering" } dd { (o.ordering.as_str()) }
        @if let Some(f) = &o.body_filter { dt { "Body filter" } dd { code { (f) } } }
        @if let Some(a) = &o.auth { dt { "Authentication" } dd { (a.kind()) } }
        @if let Some(c) = &o.tls_client_certificate { dt { "Client certificate" } dd { code { (c.subject) } } }
    }
}

/// The fields both destination forms have: URL, event types, rate limit,
/// delivery options.
struct Fields {
    url: String,
    event_filter: Vec<String>,
    rate_limit: Option<u32>,
    options: OptionsInput,
}

fn read(form: &Form, current: Option<&DestinationRecord>) -> Result<Fields, OpError> {
    let mut r = Reading::default();
    let rate_limit = r.number(form, "rate_limit");
    r.finish()?;
    Ok(Fields {
        url: form.get("url").unwrap_or("").trim().to_string(),
        event_filter: patterns(form.get("event_filter").unwrap_or("")),
        rate_limit,
        options: read_options(form, current)?,
    })
}

/// The options part of a destination form. Every field is shown, so every
/// option is set, except the write-only secrets: left empty, the stored
/// credentials (same type) and certificate are kept.
fn read_options(form: &Form, current: Option<&DestinationRecord>) -> Result<OptionsInput, OpError> {
    let text = |name: &str| form.get(name).unwrap_or("").trim().to_string();
    let optional = |name: &str| Some(text(name)).filter(|t| !t.is_empty());
    let mut headers = Vec::new();
    for line in text("headers").lines().filter(|l| !l.trim().is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(OpError::invalid(
                "headers",
                format!("“{}” is not “Name: value”", line.trim()),
            ));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let body_filter = match optional("body_filter") {
        None => None,
        Some(json) => Some(
            serde_json::from_str(&json)
                .map_err(|e| OpError::invalid("body_filter", format!("is not JSON: {e}")))?,
        ),
    };
    let ordering = match text("ordering").as_str() {
        "fifo" => Ordering::Fifo,
        _ => Ordering::None,
    };
    let stored = current.and_then(|d| d.options.auth.as_ref());
    let secret = text("auth_secret");
    let kind = text("auth_type");
    let auth = match kind.as_str() {
        "" | "none" => Some(None),
        _ if secret.is_empty() && stored.is_some_and(|a| a.kind() == kind) => {
            // Secrets are write-only: the same type without a new secret
            // keeps the stored credentials, if nothing else of them changed.
            let unchanged = match stored {
                Some(AuthRecord::Basic { username, .. }) => *username == text("auth_username"),
                Some(AuthRecord::OAuth2ClientCredentials {
                    token_url,
                    client_id,
                    scope,
                    audience,
                    ..
                }) => {
                    *token_url == text("auth_token_url")
                        && *client_id == text("auth_client_id")
                        && *scope == optional("auth_scope")
                        && *audience == optional("auth_audience")
                }
                _ => true,
            };
            if !unchanged {
                return Err(OpError::invalid(
                    "auth",
                    "enter the password, token or client secret again to change the credentials",
                ));
            }
            None
        }
        _ if secret.is_empty() => {
            return Err(OpError::invalid(
                "auth",
                "enter the password, token or client secret",
            ))
        }
        "basic" => Some(Some(AuthInput::Basic {
            username: text("auth_username"),
            password: secret,
        })),
        "bearer" => Some(Some(AuthInput::Bearer { token: secret })),
        "oauth2_client_credentials" => Some(Some(AuthInput::OAuth2ClientCredentials {
            token_url: text("auth_token_url"),
            client_id: text("auth_client_id"),
            client_secret: secret,
            scope: optional("auth_scope"),
            audience: optional("auth_audience"),
        })),
        _ => return Err(OpError::invalid("auth", "unknown authentication type")),
    };
    let tls_client_certificate = if form.get("tls_remove") == Some("true") {
        Some(None)
    } else {
        match (optional("tls_cert_pem"), optional("tls_key_pem")) {
            (None, None) => None,
            (Some(cert_pem), Some(key_pem)) => Some(Some(ClientCertInput { cert_pem, key_pem })),
            _ => {
                return Err(OpError::invalid(
                    "tls_client_certificate",
                    "paste both the certificate and its private key",
                ))
            }
        }
    };
    Ok(OptionsInput {
        headers: Some(Some(headers)),
        auth,
        tls_client_certificate,
        body_filter: Some(body_filter),
        ordering: Some(ordering),
        timeout: Some(optional("timeout")),
    })
}

/// The "Add a destination" form as an operation's input.
fn read_new(form: &Form) -> Result<NewDestination, OpError> {
    let f = read(form, None)?;
    Ok(NewDestination {
        url: f.url,
        event_filter: Some(f.event_filter),
        enabled: None,
        rate_limit: f.rate_limit,
        options: f.options,
    })
}

/// The edit form as a change. The form shows every field, so every field
/// is set; an empty rate limit removes the limit (`0`).
fn read_edit(form: &Form, current: &DestinationRecord) -> Result<DestinationEdit, OpError> {
    let f = read(form, Some(current))?;
    Ok(DestinationEdit {
        url: Some(f.url),
        event_filter: Some(f.event_filter),
        enabled: None,
        rate_limit: Some(f.rate_limit.unwrap_or(0)),
        options: f.options,
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
                    (options_fields(form, failure, Some(&dest)))
                    div.form-actions { button.btn.primary type="submit" { "Save" } }
                }
            } @else {
                dl.facts {
                    dt { "URL" } dd { code { (dest.url) } }
                    dt { "Events" } dd { (filter_text(&dest.event_filter)) }
                    (options_facts(&dest))
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
    let current = d.ops.get_destination(&session.caller, sid, did).await?;
    let updated = match read_edit(&form, &current) {
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
