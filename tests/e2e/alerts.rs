//! Alerts (SPEC §15): a receiver on 127.0.0.1 gets signed Standard
//! Webhooks POSTs, checked here with an HMAC computed independently, for
//! each alert type, coalesced so it never sees a storm, and retried until
//! it accepts one.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::receiver::{sequence, Received, Receiver, Reply};
use crate::common::{self, poll, TestServer};

const KEY: &[u8] = b"alert-receiver-key-0123456789";

pub(crate) fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

/// Checks the Standard Webhooks signature of `r` with our own HMAC and
/// answers its JSON body.
pub(crate) fn verified(r: &Received) -> Value {
    let id = r.must("webhook-id");
    let ts = r.must("webhook-timestamp");
    let signature = r.must("webhook-signature");
    assert!(
        common::sign::standard_webhooks_verifies(&secret(), id, ts, &r.body, signature),
        "signature {signature} does not verify"
    );
    let age = common::unix_secs() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {ts}");
    assert_eq!(r.must("content-type"), "application/json");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["data", "timestamp", "type"]
    );
    common::assert_timestamp(&body["timestamp"]);
    body
}

/// Every verified alert of `kind` so far.
fn alerts_of(receiver: &Receiver, kind: &str) -> Vec<Value> {
    receiver
        .requests_to("/alerts")
        .iter()
        .map(verified)
        .filter(|b| b["type"] == kind)
        .collect()
}

async fn server_with_alerts(
    receiver: &Receiver,
    tweak: impl FnOnce(&mut krafter::config::Config),
) -> TestServer {
    let url = receiver.url("/alerts");
    TestServer::start_with(move |c| {
        c.delivery.allow_private_networks = true;
        c.alerts.url = url;
        c.alerts.secret = secret();
        tweak(c);
    })
    .await
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hook", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_destinations_alert_once_and_failed_deliveries_are_coalesced() {
    let receiver = Receiver::ok().await;
    let server = server_with_alerts(&receiver, |c| {
        c.alerts.failing_after = 3;
        c.alerts.min_interval = Duration::from_secs(1);
        c.delivery.retry_schedule = vec![Duration::from_millis(10); 2];
    })
    .await;
    let source = server.create_none_source("S").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let url = closed_port_url();
    let dest = server.create_destination(&sid, json!({"url": url})).await;
    let did = dest["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    // Three events, three attempts each: nine failed attempts, three
    // deliveries failed for good.
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(
            server
                .ingest_json(&slug, &json!({"type": "t", "i": i}))
                .await,
        );
    }
    let first = poll(
        Duration::from_secs(20),
        "a delivery.failed alert",
        || async { alerts_of(&receiver, "delivery.failed").first().cloned() },
    )
    .await;
    let first_at = Instant::now();
    assert_eq!(first["data"]["destination_id"], did.as_str());
    assert_eq!(first["data"]["source_id"], sid.as_str());
    // The rest come as one more alert with their count, after min_interval.
    let all = poll(Duration::from_secs(20), "every failure counted", || async {
        let all = alerts_of(&receiver, "delivery.failed");
        let counted: u64 = all
            .iter()
            .map(|a| a["data"]["count"].as_u64().unwrap())
            .sum();
        (counted == 3).then_some(all)
    })
    .await;
    assert_eq!(all.len(), 2, "coalesced: {all:#?}");
    assert_eq!(all[0]["data"]["count"], 1);
    assert_eq!(all[1]["data"]["count"], 2);
    assert!(
        first_at.elapsed() >= Duration::from_millis(500),
        "the second came only after min_interval"
    );
    let last = &all[1]["data"];
    assert!(events.contains(&last["last_event_id"].as_str().unwrap().to_string()));
    assert!(last["last_delivery_id"]
        .as_str()
        .unwrap()
        .starts_with("dlv_"));

    // destination.failing once for the run of nine failures.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let failing = alerts_of(&receiver, "destination.failing");
    assert_eq!(failing.len(), 1, "{failing:#?}");
    let data = &failing[0]["data"];
    assert_eq!(data["destination_id"], did.as_str());
    assert_eq!(data["source_id"], sid.as_str());
    assert_eq!(data["url"], url.as_str());
    assert_eq!(data["consecutive_failures"], 3);
    assert!(data["last_error"].as_str().is_some_and(|e| !e.is_empty()));
    // Nothing else, and each alert is its own message.
    let requests = receiver.requests_to("/alerts");
    assert_eq!(requests.len(), 3);
    let ids: std::collections::HashSet<&str> =
        requests.iter().map(|r| r.must("webhook-id")).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_disable_sends_destination_disabled() {
    let receiver = Receiver::ok().await;
    let server = server_with_alerts(&receiver, |c| {
        c.delivery.disable_after = Duration::from_millis(300);
        c.delivery.retry_schedule = vec![Duration::from_millis(100); 20];
    })
    .await;
    let source = server.create_none_source("S").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let url = closed_port_url();
    let dest = server.create_destination(&sid, json!({"url": url})).await;
    let did = dest["id"].as_str().unwrap().to_string();
    server
        .ingest_json(source["slug"].as_str().unwrap(), &json!({"type": "t"}))
        .await;
    let alert = poll(Duration::from_secs(20), "destination.disabled", || async {
        alerts_of(&receiver, "destination.disabled")
            .first()
            .cloned()
    })
    .await;
    let data = &alert["data"];
    assert_eq!(data["destination_id"], did.as_str());
    assert_eq!(data["source_id"], sid.as_str());
    assert_eq!(data["url"], url.as_str());
    assert!(data["reason"].as_str().unwrap().contains("disable_after"));
    let (_, d) = server
        .get(&format!(
            "/api/v1/webhooks/sources/{sid}/destinations/{did}"
        ))
        .await;
    assert_eq!(d["data"]["enabled"], false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alerts_of(&receiver, "destination.disabled").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_signature_burst_alerts_once_and_alerts_are_retried() {
    // The receiver refuses the first two tries: the alert is retried,
    // the same message each time.
    let receiver = Receiver::start(sequence(
        vec![Reply::status(500), Reply::status(503)],
        Reply::ok(),
    ))
    .await;
    let server = server_with_alerts(&receiver, |c| {
        c.alerts.invalid_signature_burst = 3;
        c.delivery.retry_schedule = vec![Duration::from_millis(50); 5];
    })
    .await;
    let source = server.create_source("Stripe").await;
    let slug = source["slug"].as_str().unwrap().to_string();
    for _ in 0..6 {
        let (status, _) = server
            .post_in(
                &slug,
                &[
                    ("content-type", "application/json".to_string()),
                    ("stripe-signature", "t=1,v1=00".to_string()),
                ],
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let requests = poll(Duration::from_secs(20), "the alert accepted", || async {
        let r = receiver.requests_to("/alerts");
        (r.len() >= 3).then_some(r)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests_now = receiver.requests_to("/alerts");
    assert_eq!(requests_now.len(), 3, "one alert, tried three times");
    let bodies: Vec<Value> = requests.iter().map(verified).collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert!(requests
        .iter()
        .all(|r| r.must("webhook-id") == requests[0].must("webhook-id")));
    assert_eq!(bodies[0]["type"], "ingest.invalid_signatures");
    assert_eq!(
        bodies[0]["data"],
        json!({"source_id": source["id"], "count": 3, "window_seconds": 300})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_follow_the_ssrf_rules_and_a_bad_secret_refuses_to_start() {
    // Without allow_private_networks the loopback receiver is refused.
    let receiver = Receiver::ok().await;
    let url = receiver.url("/alerts");
    let server = TestServer::start_with(move |c| {
        c.alerts.url = url;
        c.alerts.secret = secret();
        c.alerts.invalid_signature_burst = 1;
    })
    .await;
    let source = server.create_source("Stripe").await;
    let (status, _) = server
        .post_in(
            source["slug"].as_str().unwrap(),
            &[("stripe-signature", "t=1,v1=00".to_string())],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.count(), 0, "an alert reached a private address");

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(&dir);
    config.alerts.url = "http://127.0.0.1:9/alerts".into();
    config.alerts.secret = "not-a-secret".into();
    let refused = krafter::server::start(config).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("alerts.secret"), "{message}");
}
