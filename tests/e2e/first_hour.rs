//! The API side of the dashboard's first hour (issue #11): retrying a
//! pending delivery now, events across every source with search by id or
//! by the provider's event id, and test events. Real server, real redb,
//! real receivers on 127.0.0.1.

use crate::common;

use std::time::Duration;

use crate::common::receiver::{sequence, Receiver, Reply};
use crate::common::{assert_error, standard_webhooks_verifies, unix_ms, TestServer};
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
        ms(&d["next_attempt_at"]) > unix_ms() + 2_000_000,
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

    let before = unix_ms();
    let resp = server
        .call_raw(Method::POST, &retry, Some(&server.admin_key), None)
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
    let body = resp.json();
    assert_eq!(body["data"]["id"], dlv.as_str());
    assert_eq!(body["data"]["status"], "pending");
    let due = ms(&body["data"]["next_attempt_at"]);
    assert!(
        due >= before - 1000 && due <= unix_ms() + 1000,
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

const STRIPE_SECRET: &str = "whsec_first_hour_stripe";
const GITHUB_SECRET: &str = "first-hour-github";

async fn source_of(server: &TestServer, body: Value) -> (String, String) {
    let (status, resp) = server.post(SOURCES, body).await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    (
        resp["data"]["id"].as_str().unwrap().to_string(),
        resp["data"]["slug"].as_str().unwrap().to_string(),
    )
}

async fn ingest_stripe(server: &TestServer, slug: &str, id: &str) -> String {
    let body = json!({"id": id, "type": "invoice.paid", "data": {}}).to_string();
    let headers = [
        ("content-type", "application/json".to_string()),
        (
            "stripe-signature",
            common::stripe_signature(STRIPE_SECRET, &body),
        ),
    ];
    let (status, v) = server.post_in(slug, &headers, body).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["duplicate"], false, "{v}");
    v["data"]["event_id"].as_str().unwrap().to_string()
}

async fn ingest_github(server: &TestServer, slug: &str, guid: &str) -> String {
    let body = r#"{"zen":"Keep it logically awesome."}"#;
    let sig = format!(
        "sha256={}",
        hex::encode(common::hmac_sha256(
            GITHUB_SECRET.as_bytes(),
            &[body.as_bytes()]
        ))
    );
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-github-event", "ping".to_string()),
        ("x-github-delivery", guid.to_string()),
        ("x-hub-signature-256", sig),
    ];
    let (status, v) = server.post_in(slug, &headers, body).await;
    assert_eq!(status, 200);
    v["data"]["event_id"].as_str().unwrap().to_string()
}

fn ids_of(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Issue #11: every source's events in one list, newest first and paged
/// without gaps, and an event found by its Krafter id or by the id its
/// provider gave it (Stripe's `evt_1...`, GitHub's delivery GUID), in
/// whichever source it arrived.
#[tokio::test]
async fn events_across_sources_newest_first_and_found_by_either_id() {
    let server = TestServer::start().await;
    let (stripe, stripe_slug) = source_of(
        &server,
        json!({"name": "Stripe", "provider": "stripe", "signing_secret": STRIPE_SECRET}),
    )
    .await;
    let (stripe2, stripe2_slug) = source_of(
        &server,
        json!({"name": "Stripe 2", "provider": "stripe", "signing_secret": STRIPE_SECRET}),
    )
    .await;
    let (github, github_slug) = source_of(
        &server,
        json!({"name": "GitHub", "provider": "github", "signing_secret": GITHUB_SECRET}),
    )
    .await;
    let none = server.create_none_source("plain").await;
    let none_slug = none["slug"].as_str().unwrap().to_string();

    // Interleaved across sources: (event id, source id), oldest first.
    let guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let mut sent = Vec::new();
    sent.push((
        ingest_stripe(&server, &stripe_slug, "evt_1NxFirst").await,
        stripe.clone(),
    ));
    for i in 0..3 {
        let e = server
            .ingest_json(&none_slug, &json!({"type": "n", "i": i}))
            .await;
        sent.push((e, none["id"].as_str().unwrap().to_string()));
    }
    sent.push((
        ingest_github(&server, &github_slug, guid).await,
        github.clone(),
    ));
    sent.push((
        ingest_stripe(&server, &stripe_slug, "evt_1NxShared").await,
        stripe.clone(),
    ));
    sent.push((
        ingest_stripe(&server, &stripe2_slug, "evt_1NxShared").await,
        stripe2.clone(),
    ));
    let newest_first: Vec<String> = sent.iter().rev().map(|(e, _)| e.clone()).collect();

    // One page holds them all, newest first, each with its source.
    let (status, all) = server.get("/api/v1/webhooks/events").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(ids_of(&all), newest_first);
    assert!(all["next_cursor"].is_null());
    for item in all["data"].as_array().unwrap() {
        let (_, src) = sent.iter().find(|(e, _)| *e == item["id"]).unwrap();
        assert_eq!(item["source_id"], src.as_str(), "{item}");
    }
    let gh = &all["data"][2];
    assert_eq!(gh["type"], "ping");
    assert_eq!(gh["provider_event_id"], guid);

    // Pages of two: the same order, no gaps, no repeats.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = server
            .get(&format!("/api/v1/webhooks/events?limit=2&cursor={cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(ids_of(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(paged.len() <= sent.len(), "runaway paging");
    }
    assert_eq!(paged, newest_first);

    // By the provider's id: Stripe's, in both sources that got it.
    let (_, found) = server
        .get("/api/v1/webhooks/events?provider_event_id=evt_1NxShared")
        .await;
    assert_eq!(ids_of(&found), newest_first[..2].to_vec(), "{found}");
    let (_, found) = server
        .get("/api/v1/webhooks/events?provider_event_id=evt_1NxFirst")
        .await;
    assert_eq!(ids_of(&found), vec![sent[0].0.clone()]);
    assert_eq!(found["data"][0]["source_id"], stripe.as_str());
    // GitHub's delivery GUID.
    let (_, found) = server
        .get(&format!("/api/v1/webhooks/events?provider_event_id={guid}"))
        .await;
    assert_eq!(ids_of(&found), vec![sent[4].0.clone()]);
    // By Krafter's id.
    let (_, found) = server
        .get(&format!("/api/v1/webhooks/events?id={}", sent[2].0))
        .await;
    assert_eq!(ids_of(&found), vec![sent[2].0.clone()]);
    assert_eq!(found["data"][0]["deliveries"]["pending"], 0);
    // Both: the event must match both.
    let (_, found) = server
        .get(&format!(
            "/api/v1/webhooks/events?id={}&provider_event_id=evt_1NxFirst",
            sent[0].0
        ))
        .await;
    assert_eq!(ids_of(&found), vec![sent[0].0.clone()]);
    let (status, found) = server
        .get(&format!(
            "/api/v1/webhooks/events?id={}&provider_event_id=evt_1NxShared",
            sent[0].0
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["data"], json!([]));
    // Nothing found is an empty list, not an error.
    for q in [
        "provider_event_id=evt_1NxNever",
        "id=evt_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        let (status, found) = server.get(&format!("/api/v1/webhooks/events?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {found}");
        assert_eq!(found["data"], json!([]), "{q}");
        assert!(found["next_cursor"].is_null());
    }
    // Bad searches are a 400 that says why.
    let long = "x".repeat(1025);
    for q in [
        "id=evt_nope".to_string(),
        "id=src_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
        "provider_event_id=".to_string(),
        format!("provider_event_id={long}"),
        "limit=0".to_string(),
        "limit=251".to_string(),
        "cursor=nope".to_string(),
    ] {
        let (status, body) = server.get(&format!("/api/v1/webhooks/events?{q}")).await;
        assert_error(status, &body, 400, "bad_request");
    }
    // A read-only key may search; no key may not.
    let (_, read_key) = server.create_key(&["webhooks:read"]).await;
    let resp = server
        .call_raw(
            Method::GET,
            "/api/v1/webhooks/events",
            Some(&read_key),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let resp = server
        .call_raw(Method::GET, "/api/v1/webhooks/events", None, None)
        .await;
    assert_error(resp.status, &resp.json(), 401, "unauthorized");
}

/// Issue #11: "Send a test event" works for a signed provider without its
/// secret: Krafter stores a `krafter.test` event and delivers it, signed,
/// to every enabled destination whatever its filter; never to a disabled
/// one. It needs a write key and an enabled source.
#[tokio::test]
async fn a_test_event_reaches_every_enabled_destination_signed() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let receiver = Receiver::ok().await;
    let (src, _) = source_of(
        &server,
        json!({"name": "Stripe", "provider": "stripe", "signing_secret": STRIPE_SECRET}),
    )
    .await;
    let filtered = server
        .create_destination(
            &src,
            json!({"url": receiver.url("/filtered"), "event_filter": ["invoice.*"]}),
        )
        .await;
    let every = server
        .create_destination(&src, json!({"url": receiver.url("/every")}))
        .await;
    let off = server
        .create_destination(&src, json!({"url": receiver.url("/off")}))
        .await;
    let off_id = off["id"].as_str().unwrap();
    let (status, _) = server
        .patch(
            &format!("{SOURCES}/{src}/destinations/{off_id}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let path = format!("{SOURCES}/{src}/test-event");
    let (_, read_key) = server.create_key(&["webhooks:read"]).await;
    let resp = server
        .call_raw(Method::POST, &path, Some(&read_key), None)
        .await;
    assert_error(resp.status, &resp.json(), 403, "forbidden");

    let resp = server
        .call_raw(Method::POST, &path, Some(&server.admin_key), None)
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let created = resp.json()["data"].clone();
    let evt = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["type"], "krafter.test");
    assert_eq!(created["source_id"], src.as_str());
    assert!(created["provider_event_id"].is_null());
    assert_eq!(created["deliveries"]["pending"], 2, "{created}");

    let hits = receiver.wait_for(2, Duration::from_secs(10)).await;
    let mut paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/every", "/filtered"]);
    for hit in &hits {
        let secret = if hit.path == "/every" {
            every["secret"].as_str().unwrap()
        } else {
            filtered["secret"].as_str().unwrap()
        };
        assert_eq!(hit.must("webhook-id"), evt);
        assert_eq!(hit.must("krafter-event-type"), "krafter.test");
        assert!(standard_webhooks_verifies(
            secret,
            hit.must("webhook-id"),
            hit.must("webhook-timestamp"),
            &hit.body,
            hit.must("webhook-signature"),
        ));
        let body: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(body["type"], "krafter.test");
        assert_eq!(body["id"], evt.as_str());
        assert_eq!(body["data"]["source_id"], src.as_str());
    }
    // The stored event is the body that was delivered, listed like any other.
    let (_, detail) = server.get(&format!("{SOURCES}/{src}/events/{evt}")).await;
    assert_eq!(
        detail["data"]["body"].as_str().unwrap().as_bytes(),
        hits[0].body.as_slice()
    );
    let (_, list) = server.get("/api/v1/webhooks/events?limit=1").await;
    assert_eq!(ids_of(&list), vec![evt.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.count_to("/off"),
        0,
        "never to a disabled destination"
    );

    // A disabled source: 409; an unknown one: 404.
    let (status, _) = server
        .patch(&format!("{SOURCES}/{src}"), json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let resp = server
        .call_raw(Method::POST, &path, Some(&server.admin_key), None)
        .await;
    assert_error(resp.status, &resp.json(), 409, "conflict");
    let resp = server
        .call_raw(
            Method::POST,
            &format!("{SOURCES}/src_01ARZ3NDEKTSV4RRFFQ69G5FAV/test-event"),
            Some(&server.admin_key),
            None,
        )
        .await;
    assert_error(resp.status, &resp.json(), 404, "not_found");
}
