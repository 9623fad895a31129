//! The API side of the dashboard's first hour (issue #11): retrying a
//! pending delivery now, events across every source with search by id or
//! by the provider's event id, and test events. Real server, real redb,
//! real receivers on 127.0.0.1.

mod common;

use std::time::Duration;

use common::receiver::{sequence, Receiver, Reply};
use common::{assert_error, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SOURCES: &str = "/api/v1/webhooks/sources";

async fn deliveries(server: &TestServer, src: &str, evt: &str) -> Vec<Value> {
    let (status, body) = server
        .get(&format!("{SOURCES}/{src}/events/{evt}/deliveries"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

fn ms(rfc3339: &Value) -> i64 {
    let text = rfc3339.as_str().expect("a time");
    chrono_ms(text)
}

/// Unix ms of an RFC 3339 UTC time as the API writes it
/// (`2026-11-27T14:48:08.123Z`), computed here, not by the server's clock code.
fn chrono_ms(text: &str) -> i64 {
    let (date, time) = text.trim_end_matches('Z').split_once('T').expect("T");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let frac_ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    ((days * 86_400) + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + frac_ms
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A pending delivery waiting for its next retry is attempted at once when
/// retried (issue #11), with the same delivery id and the next attempt
/// number; succeeded and cancelled deliveries still answer 409.
#[tokio::test]
async fn retry_makes_a_pending_delivery_due_now() {
    let server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        // The next retry would be an hour away.
        c.delivery.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let receiver = Receiver::start(sequence(vec![Reply::status(500)], Reply::ok())).await;
    let source = server.create_none_source("pending retry").await;
    let (src, slug) = (
        source["id"].as_str().unwrap().to_string(),
        source["slug"].as_str().unwrap().to_string(),
    );
    server
        .create_destination(&src, json!({"url": receiver.url("/hook")}))
        .await;
    let evt = server
        .ingest_json(&slug, &json!({"type": "t.pending"}))
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let d = common::poll(
        Duration::from_secs(10),
        "first attempt recorded",
        || async {
            let list = deliveries(&server, &src, &evt).await;
            (list[0]["attempts"].as_array().map(Vec::len) == Some(1)).then(|| list[0].clone())
        },
    )
    .await;
    assert_eq!(d["status"], "pending", "{d}");
    assert!(
        ms(&d["next_attempt_at"]) > now_ms() + 2_000_000,
        "next attempt is far away: {d}"
    );
    let dlv = d["id"].as_str().unwrap().to_string();
    let retry = format!("{SOURCES}/{src}/events/{evt}/deliveries/{dlv}/retry");

    // A read-only key may not.
    let (_, read_key) = server.create_key(&["webhooks:read"]).await;
    let resp = server
        .call_raw(Method::POST, &retry, Some(&read_key), None)
        .await;
    assert_error(resp.status, &resp.json(), 403, "forbidden");

    let before = now_ms();
    let resp = server
        .call_raw(Method::POST, &retry, Some(&server.admin_key), None)
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
    let body = resp.json();
    assert_eq!(body["data"]["id"], dlv.as_str());
    assert_eq!(body["data"]["status"], "pending");
    let due = ms(&body["data"]["next_attempt_at"]);
    assert!(
        due >= before - 1000 && due <= now_ms() + 1000,
        "due now: {body}"
    );

    // Attempted within seconds, not an hour: attempt 2 of the same delivery.
    let hits = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(hits[1].header("krafter-attempt"), Some("2"));
    assert_eq!(hits[1].header("webhook-id"), Some(evt.as_str()));
    let d = common::poll(Duration::from_secs(10), "delivery succeeded", || async {
        let list = deliveries(&server, &src, &evt).await;
        (list[0]["status"] == "succeeded").then(|| list[0].clone())
    })
    .await;
    assert_eq!(d["id"], dlv.as_str(), "the same delivery");
    assert_eq!(d["attempts"].as_array().map(Vec::len), Some(2), "{d}");
    assert_eq!(receiver.count(), 2, "sent once per attempt, never twice");

    // Succeeded: 409, nothing sent.
    let resp = server
        .call_raw(Method::POST, &retry, Some(&server.admin_key), None)
        .await;
    assert_error(resp.status, &resp.json(), 409, "conflict");
    assert!(resp.text.contains("succeeded"), "{}", resp.text);

    // Cancelled (its destination disabled while it waited): 409.
    receiver.set_script(|_| Reply::status(500));
    let evt2 = server
        .ingest_json(&slug, &json!({"type": "t.pending"}))
        .await;
    receiver.wait_for(3, Duration::from_secs(10)).await;
    let d2 = common::poll(Duration::from_secs(10), "attempt recorded", || async {
        let list = deliveries(&server, &src, &evt2).await;
        (list[0]["attempts"].as_array().map(Vec::len) == Some(1)).then(|| list[0].clone())
    })
    .await;
    let (_, dests) = server.get(&format!("{SOURCES}/{src}/destinations")).await;
    let dst = dests["data"][0]["id"].as_str().unwrap();
    let (status, _) = server
        .patch(
            &format!("{SOURCES}/{src}/destinations/{dst}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dlv2 = d2["id"].as_str().unwrap();
    let resp = server
        .call_raw(
            Method::POST,
            &format!("{SOURCES}/{src}/events/{evt2}/deliveries/{dlv2}/retry"),
            Some(&server.admin_key),
            None,
        )
        .await;
    assert_error(resp.status, &resp.json(), 409, "conflict");
    assert!(resp.text.contains("cancelled"), "{}", resp.text);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 3, "a cancelled delivery is not sent");
}
