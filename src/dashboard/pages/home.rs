//! `/dashboard/overview`: what an operator reads at a glance (SPEC §15):
//! events in, deliveries out and failed attempts per minute over the last
//! hour and per hour over the last week, as SVG drawn here (no script, no
//! CDN), and each destination's success rate, p95 latency, backlog and
//! state.

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};

use crate::dashboard::error::DashboardError;
use crate::dashboard::session::Session;
use crate::dashboard::views::{self, Nav};
use crate::dashboard::Dashboard;
use crate::model::time::{format_ms, now_ms};
use crate::ops::stats::{Bar, MAX_BACKLOG};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 90.0;

/// The page.
pub async fn show(
    State(d): State<Dashboard>,
    session: Session,
) -> Result<Response, DashboardError> {
    let o = d.ops.overview(&session.caller).await?;
    let now = now_ms();
    let body = html! {
        div.title-row { h1 { "Overview" } }
        h2 { "Last hour, per minute" }
        (chart("Events in", "events", &o.last_hour, |b| b.events_in, "minute"))
        (chart("Deliveries out", "delivered", &o.last_hour, |b| b.delivered, "minute"))
        (chart("Failed attempts", "failed", &o.last_hour, |b| b.failed_attempts, "minute"))
        h2 { "Last week, per hour" }
        (chart("Events in", "events", &o.last_week, |b| b.events_in, "hour"))
        (chart("Deliveries out", "delivered", &o.last_week, |b| b.delivered, "hour"))
        (chart("Failed attempts", "failed", &o.last_week, |b| b.failed_attempts, "hour"))
        h2 { "Destinations" }
        @if o.destinations.is_empty() {
            (views::empty("No destinations", html! { p { "Add a destination to a source to see it here." } }))
        } @else {
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Destination" } th scope="col" { "Source" } th scope="col" { "State" }
                        th scope="col" { "Success (1 h)" } th scope="col" { "p95 latency (1 h)" }
                        th scope="col" { "Backlog" } th scope="col" { "Oldest pending" }
                    } }
                    tbody {
                        @for f in &o.destinations {
                            tr data-destination=(f.destination.id.to_string()) {
                                td { a href={ "/dashboard/sources/" (f.destination.source_id.to_string()) "/destinations/" (f.destination.id.to_string()) } { code { (f.destination.url) } } }
                                td { (f.source_name) }
                                td { span.tag { (f.state) } }
                                td { @match f.success_rate {
                                    Some(rate) => { (format!("{:.1}%", rate * 100.0)) " " span.muted { "of " (f.attempts) } }
                                    None => span.muted { "no attempts" },
                                } }
                                td { @match f.p95_ms {
                                    Some(u64::MAX) => "> 30 s",
                                    Some(ms) => { "≤ " (ms) " ms" }
                                    None => span.muted { "—" },
                                } }
                                td { (f.backlog) @if f.backlog as usize >= MAX_BACKLOG { "+" } }
                                td { @match f.oldest_due_ms {
                                    Some(due) if due <= now => { "due " (age(now - due)) " ago" }
                                    Some(due) => { "next in " (age(due - now)) }
                                    None => span.muted { "—" },
                                } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(views::ok(views::page(
        "Overview",
        Some(&session),
        Nav::Overview,
        body,
    )))
}

fn age(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

/// A bar chart as inline SVG; each bar carries its figure in a `<title>`
/// (shown on hover, read by screen readers), and the total is in text.
fn chart(
    title: &str,
    class: &str,
    bars: &[Bar],
    value: impl Fn(&Bar) -> u64,
    unit: &str,
) -> Markup {
    let values: Vec<u64> = bars.iter().map(&value).collect();
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let total: u64 = values.iter().sum();
    let step = WIDTH / values.len().max(1) as f64;
    html! {
        figure.chart {
            figcaption { (title) ": " strong { (total) } }
            svg xmlns="http://www.w3.org/2000/svg" class={ "chart " (class) } role="img"
                viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
                aria-label={ (title) ", " (total) " in all" } {
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="currentColor" stroke-width="1" {}
                @for (i, (bar, v)) in bars.iter().zip(&values).enumerate() {
                    @let h = (*v as f64 / max) * (HEIGHT - 4.0);
                    rect x=(format!("{:.1}", i as f64 * step)) y=(format!("{:.1}", HEIGHT - h))
                        width=(format!("{:.1}", (step - 1.0).max(1.0))) height=(format!("{:.1}", h))
                        fill="currentColor" {
                        title { (format_ms(bar.start_ms)) " (" (unit) "): " (v) }
                    }
                }
            }
        }
    }
}
