//! The page shell and the small pieces every page uses (status pills,
//! times, copy buttons, empty states). maud escapes every interpolated
//! value, so nothing an event or a user typed can become markup.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::error::Refusal;
use super::session::{Session, CSRF_FIELD};
use crate::model::time::{format_ms, now_ms};

/// Asset URLs carry the version so a browser never runs an old script
/// against a new page.
const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which top-level section a page belongs to (for the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Sources,
    Events,
    ApiKeys,
    AuditLog,
    Overview,
    None,
}

/// An HTML answer.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A 200 HTML answer.
pub fn ok(markup: Markup) -> Response {
    respond(StatusCode::OK, markup)
}

/// A redirect after a successful form post, so reloading does not post again.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                HeaderValue::from_static("/dashboard/sources"),
            )],
        )
            .into_response(),
    }
}

/// The whole page around `body`.
pub fn page(title: &str, session: Option<&Session>, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Krafter" }
                link rel="stylesheet" href={ "/dashboard/assets/dashboard.css?v=" (ASSET_VERSION) };
                link rel="icon" href={ "/dashboard/assets/icon.svg?v=" (ASSET_VERSION) } type="image/svg+xml";
                script src={ "/dashboard/assets/dashboard.js?v=" (ASSET_VERSION) } defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.topbar {
                    a.brand href="/dashboard/sources" aria-label="Krafter dashboard home" {
                        span.logo aria-hidden="true" { "K" }
                        span { "Krafter" }
                    }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/dashboard/overview" aria-current=[current(nav, Nav::Overview)] { "Overview" } }
                                li { a href="/dashboard/sources" aria-current=[current(nav, Nav::Sources)] { "Sources" } }
                                li { a href="/dashboard/events" aria-current=[current(nav, Nav::Events)] { "All events" } }
                                @if session.is_admin() {
                                    li { a href="/dashboard/api-keys" aria-current=[current(nav, Nav::ApiKeys)] { "API keys" } }
                                    li { a href="/dashboard/audit-log" aria-current=[current(nav, Nav::AuditLog)] { "Audit log" } }
                                }
                            }
                        }
                        div.who {
                            span.muted title={ "Signed in with API key " (session.key_prefix) "…" } {
                                (session.key_name) " · " span.scope { (scope_label(session)) }
                            }
                            form method="post" action="/dashboard/sign-out" {
                                (csrf(session))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
                footer.foot { "Krafter " (ASSET_VERSION) " · " a href="/api/v1/openapi.json" { "API reference (OpenAPI)" } }
            }
        }
    }
}

fn current(nav: Nav, item: Nav) -> Option<&'static str> {
    (nav == item).then_some("page")
}

fn scope_label(session: &Session) -> &'static str {
    if session.is_admin() {
        "admin"
    } else if session.can_write() {
        "webhooks:write"
    } else {
        "read only"
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// A status shown by colour *and* by word (and a symbol), so it reads the
/// same without colour vision or in a screen reader.
pub fn status_pill(status: &str) -> Markup {
    let (class, symbol) = match status {
        "succeeded" => ("ok", "✓"),
        "failed" => ("bad", "✕"),
        "pending" => ("wait", "…"),
        "running" => ("wait", "…"),
        "completed" => ("ok", "✓"),
        "cancelled" => ("off", "–"),
        "enabled" => ("ok", "●"),
        "disabled" => ("off", "○"),
        _ => ("off", "•"),
    };
    html! {
        span class={ "pill pill-" (class) } data-status=(status) {
            span aria-hidden="true" { (symbol) } " " (status)
        }
    }
}

/// A time (Unix ms) as "3 minutes ago", with the exact UTC time on hover
/// and, as the API writes it (RFC 3339), in the `datetime` attribute (the
/// script keeps the words current).
pub fn time(ms: i64) -> Markup {
    let rfc3339 = format_ms(ms);
    let exact = rfc3339.replace('T', " ").replace('Z', " UTC");
    let words = relative(ms, now_ms());
    html! { time datetime=(rfc3339) title=(exact) { (words) } }
}

/// "3 minutes ago" / "in 5 minutes".
pub fn relative(then_ms: i64, now_ms: i64) -> String {
    let delta = (now_ms - then_ms) / 1000;
    let (n, future) = (delta.unsigned_abs(), delta < 0);
    if n < 10 {
        return if future { "in a moment" } else { "just now" }.to_string();
    }
    let (value, unit) = match n {
        0..=59 => (n, "second"),
        60..=3599 => (n / 60, "minute"),
        3600..=86_399 => (n / 3600, "hour"),
        _ => (n / 86_400, "day"),
    };
    let plural = if value == 1 { "" } else { "s" };
    if future {
        format!("in {value} {unit}{plural}")
    } else {
        format!("{value} {unit}{plural} ago")
    }
}

/// A value with a button that copies it.
pub fn copyable(id: &str, value: &str, what: &str) -> Markup {
    html! {
        div.copyable {
            code id=(id) { (value) }
            button.copy type="button" data-copy=(id) aria-label={ "Copy " (what) } { "Copy" }
        }
    }
}

/// A message at the top of a page after an action.
pub fn notice(text: &str) -> Markup {
    html! { div.notice role="status" { (text) } }
}

/// An operation's refusal of a form, shown above it.
pub fn failure(failure: &Refusal) -> Markup {
    html! {
        div.alert role="alert" {
            strong { "That did not work: " }
            (failure.message)
            @if failure.details.len() > 1 {
                ul { @for d in &failure.details { li { code { (d.field) } " " (d.message) } } }
            }
        }
    }
}

/// An operation's complaint about one field, under that field.
pub fn field_error(failure: Option<&Refusal>, name: &str) -> Markup {
    let message = failure.and_then(|f| f.field(name));
    html! {
        @if let Some(message) = message {
            p.field-error id={ (name) "-error" } { (message) }
        }
    }
}

/// What a page shows when there is nothing yet: what to do next.
pub fn empty(title: &str, body: Markup) -> Markup {
    html! {
        div.empty {
            h3 { (title) }
            (body)
        }
    }
}

/// Inline script-free text for byte sizes.
pub fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Breadcrumbs above a page title.
pub fn crumbs(items: &[(&str, Option<String>)]) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            ol {
                @for (label, href) in items {
                    li {
                        @if let Some(href) = href { a href=(href) { (label) } } @else { span aria-current="page" { (label) } }
                    }
                }
            }
        }
    }
}

/// Marks a secret shown once.
pub fn shown_once(id: &str, value: &str, what: &str, hint: &str) -> Markup {
    html! {
        div.secret-once role="status" {
            h2 { "Copy your " (what) " now" }
            p { "You will only see it once. " (hint) }
            (copyable(id, value, what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = 1_000_000_000;
        assert_eq!(relative(now - 3_000, now), "just now");
        assert_eq!(relative(now - 42_000, now), "42 seconds ago");
        assert_eq!(relative(now - 60_000, now), "1 minute ago");
        assert_eq!(relative(now - 7_200_000, now), "2 hours ago");
        assert_eq!(relative(now - 3 * 86_400_000, now), "3 days ago");
        assert_eq!(relative(now + 300_000, now), "in 5 minutes");
    }

    #[test]
    fn statuses_carry_words_not_only_colour() {
        let html = status_pill("failed").into_string();
        assert!(html.contains("failed") && html.contains("pill-bad"));
    }

    #[test]
    fn values_are_escaped() {
        let html = copyable("x", "<script>alert(1)</script>", "it").into_string();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
