//! One file per section of the dashboard: each handler checks the session,
//! calls the API in-process and renders the answer.

pub mod auth;
pub mod destinations;
pub mod events;
pub mod keys;
pub mod overview;
pub mod sources;

use std::collections::HashMap;

use maud::{html, Markup};

use super::form::Form;
use super::model::Source;
use super::session::Session;
use super::views;
use crate::ingest::providers::{self, ProviderKind};

/// Query parameters of a page, as given.
pub type QueryMap = HashMap<String, String>;

/// The message for `?notice=...` after a redirect. Only known codes are
/// shown, so a crafted link cannot put words on the page.
pub fn notice(query: &QueryMap) -> Option<Markup> {
    if let Some(n) = query.get("queued").and_then(|n| n.parse::<usize>().ok()) {
        let plural = if n == 1 { "" } else { "s" };
        return Some(views::notice(&format!(
            "Replay queued to {n} destination{plural}."
        )));
    }
    if let Some((events, deliveries)) = query
        .get("bulk")
        .and_then(|v| v.split_once(','))
        .and_then(|(e, d)| Some((e.parse::<usize>().ok()?, d.parse::<usize>().ok()?)))
    {
        return Some(views::notice(&format!(
            "Bulk replay queued: {events} events, {deliveries} deliveries."
        )));
    }
    let text = match query.get("notice")?.as_str() {
        "source-created" => {
            "Source created. Paste its ingest URL into your provider's webhook settings."
        }
        "source-updated" => "Source saved.",
        "source-enabled" => "Source enabled: its ingest URL accepts webhooks again.",
        "source-disabled" => "Source disabled: its ingest URL now answers 404.",
        "source-deleted" => "Source deleted, with its destinations and events.",
        "destination-updated" => "Destination saved.",
        "destination-enabled" => "Destination enabled: deliveries resume.",
        "destination-disabled" => "Destination disabled: its pending deliveries were cancelled.",
        "destination-deleted" => "Destination deleted; its pending deliveries were cancelled.",
        "key-revoked" => "API key revoked: it stopped working at once.",
        "retried" => "Delivery queued for an immediate attempt.",
        "test-event" => {
            "Test event stored: Krafter is delivering it, signed, to every enabled destination of this source (filters not applied)."
        }
        "signed-out" => "You are signed out.",
        _ => return None,
    };
    Some(views::notice(text))
}

/// A form's value for `name`, else `default` (to refill a form the API
/// refused).
pub fn value(form: Option<&Form>, name: &str, default: &str) -> String {
    form.and_then(|f| f.get(name))
        .unwrap_or(default)
        .to_string()
}

/// The tabs of a source's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceTab {
    Destinations,
    Events,
    Settings,
    Other,
}

/// Breadcrumbs, title and tabs of every page about one source.
pub fn source_header(source: &Source, tab: SourceTab, session: &Session) -> Markup {
    let base = format!("/dashboard/sources/{}", source.id);
    let tabs = [
        (SourceTab::Destinations, "Destinations", base.clone()),
        (SourceTab::Events, "Events", format!("{base}/events")),
        (SourceTab::Settings, "Settings", format!("{base}/edit")),
    ];
    html! {
        (views::crumbs(&[("Sources", Some("/dashboard/sources".to_string())), (source.name.as_str(), None)]))
        div.title-row {
            h1 { (source.name) }
            (views::status_pill(if source.enabled { "enabled" } else { "disabled" }))
            span.tag { (provider_label(source.provider)) }
        }
        nav.tabs aria-label="Source sections" {
            @for (t, label, href) in &tabs {
                @if *t != SourceTab::Settings || session.can_write() {
                    a href=(href) aria-current=[(*t == tab).then_some("page")] { (label) }
                }
            }
        }
    }
}

/// The human name of a provider.
pub fn provider_label(kind: ProviderKind) -> &'static str {
    providers::get(kind).label()
}

/// `?limit=..&cursor=..` for a list page.
pub fn list_query(limit: usize, cursor: Option<&String>) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("limit", &limit.to_string());
    if let Some(c) = cursor.filter(|c| !c.is_empty()) {
        q.append_pair("cursor", c);
    }
    q.finish()
}
