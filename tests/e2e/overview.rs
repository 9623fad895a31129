//! The dashboard overview (SPEC §15): charts drawn server-side as SVG and
//! per-destination figures, read from storage so they survive a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::browser::Browser;
use crate::common::receiver::Receiver;
use crate::common::{poll, TestServer};

/// The `<tr>` of one destination.
fn row<'a>(page: &'a str, destination: &str) -> &'a str {
    let start = page
        .find(&format!("data-destination=\"{destination}\""))
        .unwrap_or_else(|| panic!("no row for {destination}: {page}"));
    let rest = &page[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_charts_traffic_and_rates_from_storage_across_a_restart() {
    let receiver = Receiver::ok().await;
    let mut server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        c.delivery.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let source = server.create_none_source("Shop").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let good = server
        .create_destination(&sid, json!({"url": receiver.url("/ok")}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bad = server
        .create_destination(&sid, json!({"url": format!("http://{closed}/x")}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(
            server
                .ingest_json(&slug, &json!({"type": "t", "i": i}))
                .await,
        );
    }
    poll(Duration::from_secs(20), "three deliveries", || async {
        (receiver.count() == 3).then_some(())
    })
    .await;
    for eid in &events {
        let path = format!("/api/v1/webhooks/sources/{sid}/events/{eid}/deliveries");
        poll(
            Duration::from_secs(20),
            "the failed attempt recorded",
            || async {
                let (_, body) = server.get(&path).await;
                body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| {
                        d["destination_id"] == bad.as_str()
                            && d["attempts"].as_array().is_some_and(|a| a.len() == 1)
                    })
                    .then_some(())
            },
        )
        .await;
    }

    // The figures come from storage: a restart keeps them.
    server.reopen().await;
    let mut b = Browser::new(&server.base);
    b.signed_in(&server.admin_key).await;
    let page = b.get("/dashboard/overview").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let text = &page.text;
    assert_eq!(text.matches("<svg").count(), 6, "{text}");
    assert_eq!(
        text.matches("Events in: <strong>3</strong>").count(),
        2,
        "hour and week: {text}"
    );
    assert_eq!(
        text.matches("Deliveries out: <strong>3</strong>").count(),
        2
    );
    assert_eq!(
        text.matches("Failed attempts: <strong>3</strong>").count(),
        2
    );
    assert!(text.contains("): 3</title>"), "a bar carries its figure");

    let good_row = row(text, &good);
    assert!(good_row.contains("<td>100.0% "), "{good_row}");
    assert!(good_row.contains(">enabled<"), "{good_row}");
    assert!(good_row.contains("ms"), "a p95 latency: {good_row}");
    let bad_row = row(text, &bad);
    assert!(bad_row.contains("<td>0.0% "), "{bad_row}");
    assert!(bad_row.contains(">failing<"), "{bad_row}");
    assert!(
        bad_row.contains("<td>3</td>"),
        "backlog of three: {bad_row}"
    );
    assert!(bad_row.contains("next in"), "{bad_row}");

    // Disabled shows as such; a read key may look.
    let (status, _) = server
        .patch(
            &format!("/api/v1/webhooks/sources/{sid}/destinations/{bad}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, read) = server.create_key(&["webhooks:read"]).await;
    let mut r = Browser::new(&server.base);
    r.signed_in(&read).await;
    let page = r.get("/dashboard/overview").await;
    assert_eq!(page.status, StatusCode::OK);
    let bad_row = row(&page.text, &bad);
    assert!(bad_row.contains(">disabled<"), "{bad_row}");
    assert!(bad_row.contains("<td>0</td>"), "cancelled: {bad_row}");
}
