//! One file per section of the dashboard: each handler checks the session,
//! calls the operations as the signed-in key and renders what they answer.

pub mod audit;
pub mod auth;
pub mod destinations;
pub mod events;
pub mod home;
pub mod keys;
pub mod overview;
pub mod sources;

use std::collections::HashMap;

use maud::{html, Markup};

use super::error::DashboardError;
use super::form::Form;
use super::session::Session;
use super::views;
use crate::ingest::providers;
use crate::model::ids::PublicId;
use crate::model::provider::ProviderKind;
use crate::model::records::SourceRecord;
use crate::ops::{FieldError, OpError};

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

/// A form's value for `name`, else `default` (to refill a form an
/// operation refused).
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
pub fn source_header(source: &SourceRecord, tab: SourceTab, session: &Session) -> Markup {
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

/// A form read into an operation's input. Reading is the door's job (as
/// JSON decoding is the API's); whether the values are acceptable is the
/// operation's. A field that cannot even be read (a number field holding
/// words) is named here, with every other such field, and the operation is
/// not called.
#[derive(Debug, Default)]
pub struct Reading {
    problems: Vec<FieldError>,
}

impl Reading {
    /// Records a field that could not be read.
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A whole-number field (absent when empty). Past `u32::MAX` it reads
    /// as `u32::MAX`, so the operation's own range check names the field;
    /// text that is no number at all is refused here.
    pub fn number(&mut self, form: &Form, name: &str) -> Option<u32> {
        let text = form.text(name)?;
        match text.parse::<u64>() {
            Ok(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(_) => {
                self.fail(name, "must be a whole number");
                None
            }
        }
    }

    /// `Invalid` naming every unreadable field, if there was one.
    pub fn finish(self) -> Result<(), OpError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(OpError::Invalid(self.problems))
        }
    }
}

/// An id taken from a dashboard URL. Anything but a well-formed id of the
/// right kind is a 404 saying what was not found, as the API says it.
pub fn id_of<T: PublicId>(text: &str) -> Result<T, DashboardError> {
    T::parse(text)
        .ok_or_else(|| DashboardError::Op(OpError::NotFound(format!("no such {}", T::NOUN))))
}

/// The `?cursor=` of a list page: the id of the last item of the previous
/// page (empty or absent: the first page).
pub fn cursor_of(query: &QueryMap) -> Result<Option<u128>, OpError> {
    match query.get("cursor").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => ulid::Ulid::from_string(text)
            .map(|u| Some(u.0))
            .map_err(|_| OpError::BadRequest("invalid cursor".into())),
    }
}

/// The cursor text of the page after one ending at `next`, as the API
/// writes its `next_cursor`.
pub fn cursor_text(next: Option<u128>) -> Option<String> {
    next.map(|id| ulid::Ulid(id).to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{DestinationId, SourceId};

    #[test]
    fn only_well_formed_ids_of_the_right_kind_are_read() {
        let id = SourceId::new();
        let text = id.to_string();
        assert_eq!(id_of::<SourceId>(&text).ok(), Some(id));
        let destination = DestinationId::from_u128(id.as_u128()).to_string();
        for bad in [
            "",
            "src_1/destinations",
            "..",
            "src_1?x=1",
            "a%2Fb",
            "x y",
            destination.as_str(),
        ] {
            let err = id_of::<SourceId>(bad).expect_err(bad);
            assert!(
                matches!(&err, DashboardError::Op(OpError::NotFound(m)) if m == "no such source"),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn numbers_are_read_or_named() {
        let form = Form::parse(b"a=12&b=99999999999&c=twelve&d=-1&e=");
        let mut r = Reading::default();
        assert_eq!(r.number(&form, "a"), Some(12));
        assert_eq!(r.number(&form, "b"), Some(u32::MAX));
        assert_eq!(r.number(&form, "c"), None);
        assert_eq!(r.number(&form, "d"), None);
        assert_eq!(r.number(&form, "e"), None);
        assert_eq!(r.number(&form, "missing"), None);
        match r.finish() {
            Err(OpError::Invalid(fields)) => {
                let named: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
                assert_eq!(named, ["c", "d"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Reading::default().finish().is_ok());
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let id = crate::model::ids::new_id::<u128>();
        let mut query = QueryMap::new();
        assert_eq!(cursor_of(&query).ok(), Some(None));
        query.insert("cursor".into(), String::new());
        assert_eq!(cursor_of(&query).ok(), Some(None));
        query.insert("cursor".into(), cursor_text(Some(id)).unwrap_or_default());
        assert_eq!(cursor_of(&query).ok(), Some(Some(id)));
        query.insert("cursor".into(), "nope".into());
        assert!(matches!(cursor_of(&query), Err(OpError::BadRequest(m)) if m == "invalid cursor"));
    }
}
