//! The durability promise, tested with real process kills: every event that
//! got a 2xx from ingest is on disk after `kill -9`, with its deliveries —
//! read back through the API of a server started again on the same data.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

const SECRET: &str = "whsec_durability";
/// Events acknowledged in each round before its `kill -9`.
const PER_ROUND: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    // Acknowledged event id → (body, stripe id), over every round.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut slug = String::new();
    let mut src = String::new();
    let mut destinations = 0u64;

    for round in 0..3 {
        let acked_before = acked.lock().await.len();
        let (mut child, base) =
            common::spawn_serving(&mut common::serve_command(&data), &data).await;
        if round == 0 {
            let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
            let key = key.trim();
            let source: Value = client
                .post(format!("{base}/api/v1/webhooks/sources"))
                .bearer_auth(key)
                .json(&json!({"name": "crash", "provider": "stripe", "signing_secret": SECRET}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            slug = source["data"]["slug"].as_str().unwrap().to_string();
            src = source["data"]["id"].as_str().unwrap().to_string();
            for filter in [json!([]), json!(["invoice.*"])] {
                let status = client
                    .post(format!("{base}/api/v1/webhooks/sources/{src}/destinations"))
                    .bearer_auth(key)
                    .json(&json!({"url": "http://127.0.0.1:9/sink", "event_filter": filter}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 201);
                destinations += 1;
            }
        }

        // 32 concurrent senders, each with its own keep-alive connection,
        // until this round has PER_ROUND acknowledged (a count, however
        // slowly a loaded machine gets there), then the kill.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for sender in 0..32 {
            let (client, base, slug, acked) = (
                reqwest::Client::new(),
                base.clone(),
                slug.clone(),
                acked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let stripe_id = format!("evt_r{round}_s{sender}_n{n}");
                    n += 1;
                    let body = format!(
                        r#"{{"id":"{stripe_id}","type":"invoice.paid","pad":"{}"}}"#,
                        "x".repeat(512)
                    );
                    let sent = client
                        .post(format!("{base}/in/{slug}"))
                        .header("stripe-signature", common::stripe_signature(SECRET, &body))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(resp) = sent else { break };
                    if resp.status() != 200 {
                        break;
                    }
                    let Ok(answer) = resp.json::<Value>().await else {
                        break;
                    };
                    let id = answer["data"]["event_id"].as_str().unwrap().to_string();
                    assert_eq!(answer["data"]["duplicate"], false);
                    acked.lock().await.insert(id, body);
                    if started.elapsed() > Duration::from_secs(120) {
                        break;
                    }
                }
            }));
        }
        common::poll(
            Duration::from_secs(90),
            &format!("round {round}: {PER_ROUND} events acknowledged"),
            || async { (acked.lock().await.len() - acked_before >= PER_ROUND).then_some(()) },
        )
        .await;
        // The real thing: SIGKILL while requests are in flight.
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        for task in tasks {
            task.await.unwrap();
        }

        // Read back as a user would: through the API of a server started
        // again on the same data.
        let (reader, base) = common::spawn_serving(&mut common::serve_command(&data), &data).await;
        let acked = acked.lock().await;
        assert!(
            acked.len() - acked_before >= PER_ROUND,
            "round {round}: load too small ({} acknowledged in this round)",
            acked.len() - acked_before
        );
        eprintln!("round {round}: {} events acknowledged so far", acked.len());
        let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
        let key = key.trim().to_string();
        let ids: Vec<String> = acked.keys().cloned().collect();
        let mut readers = tokio::task::JoinSet::new();
        for part in ids.chunks(ids.len().div_ceil(8)) {
            let (client, base, key, src) = (client.clone(), base.clone(), key.clone(), src.clone());
            let part = part.to_vec();
            readers.spawn(async move {
                let mut read = Vec::new();
                for id in part {
                    let resp = client
                        .get(format!("{base}/api/v1/webhooks/sources/{src}/events/{id}"))
                        .bearer_auth(&key)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    read.push((id, status, body));
                }
                read
            });
        }
        let mut missing = Vec::new();
        while let Some(part) = readers.join_next().await {
            for (id, status, body) in part.unwrap() {
                if status == 404 {
                    missing.push(id);
                    continue;
                }
                assert_eq!(status, 200, "{id}: {body}");
                let event = &body["data"];
                assert_eq!(event["body"], acked[&id].as_str(), "body of {id}");
                let counts = &event["deliveries"];
                let deliveries: u64 = ["pending", "succeeded", "failed", "cancelled"]
                    .iter()
                    .map(|s| counts[*s].as_u64().unwrap())
                    .sum();
                assert_eq!(deliveries, destinations, "deliveries of {id}: {event}");
            }
        }
        drop(reader);
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged events lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

/// The write-ahead design opens windows a random kill may rarely hit: a
/// group read but not yet logged (`wal-append`), written to the log and
/// handed to the writer but not yet synced (`wal-written`: the writer may be
/// applying it), logged and synced but not yet committed or answered
/// (`wal-synced`), a non-durable commit about to be
/// made (`apply`) and a checkpoint about to be made (`checkpoint`). The
/// server kills itself with SIGKILL right inside each one (test hook
/// `KRAFTER_TEST_CRASH_AT`) while 16 clients ingest; after a restart every
/// acknowledged event is there through the API, and every one of them
/// reaches the receiver — deliveries whose outcome was not recorded durably
/// are attempted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_every_write_ahead_window_loses_no_event_and_no_delivery() {
    if common::redb_only("the write-ahead log belongs to the redb backend") {
        return;
    }
    // How many passes through the point before the crash: enough that
    // events were acknowledged and delivered before it.
    for (point, after) in [
        ("wal-append", 150),
        ("wal-written", 150),
        ("wal-synced", 150),
        ("apply", 100),
        ("checkpoint", 4),
    ] {
        crash_inside(point, after).await;
    }
}

async fn crash_inside(point: &str, after: u32) {
    use std::os::unix::process::ExitStatusExt;

    let receiver = common::receiver::Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let mut command = common::serve_command(&data);
    command
        .env("KRAFTER_TEST_CRASH_AT", point)
        .env("KRAFTER_TEST_CRASH_AFTER", after.to_string());
    let (mut child, base) = common::spawn_serving(&mut command, &data).await;
    let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let key = key.trim().to_string();
    let source: Value = client
        .post(format!("{base}/api/v1/webhooks/sources"))
        .bearer_auth(&key)
        .json(&json!({"name": "crash", "provider": "stripe", "signing_secret": SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slug = source["data"]["slug"].as_str().unwrap().to_string();
    let src = source["data"]["id"].as_str().unwrap().to_string();
    let status = client
        .post(format!("{base}/api/v1/webhooks/sources/{src}/destinations"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url("/hook")}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 201, "{point}");

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for sender in 0..16 {
        let (client, base, slug, acked) = (
            reqwest::Client::new(),
            base.clone(),
            slug.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let body = format!(
                    r#"{{"id":"evt_{sender}_{n}","type":"invoice.paid","pad":"{}"}}"#,
                    "x".repeat(256)
                );
                let sent = client
                    .post(format!("{base}/in/{slug}"))
                    .header("stripe-signature", common::stripe_signature(SECRET, &body))
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status() != 200 || Instant::now() > give_up {
                    break;
                }
                let Ok(answer) = resp.json::<Value>().await else {
                    break;
                };
                let id = answer["data"]["event_id"].as_str().unwrap().to_string();
                acked.lock().await.push(id);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The server must have died at the point, by its own SIGKILL — not
    // because the clients gave up.
    let died = common::poll(Duration::from_secs(10), "the crash", || {
        let exited = child.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert_eq!(died.signal(), Some(9), "{point}: {died:?}");
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() >= 20,
        "{point}: only {} events acknowledged before the crash",
        acked.len()
    );

    let (_child, base) = common::spawn_serving(&mut common::serve_command(&data), &data).await;
    for id in &acked {
        let resp = client
            .get(format!(
                "{base}/api/v1/webhooks/sources/{src}/events/{id}/deliveries"
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{point}: acknowledged event {id} is gone"
        );
        let deliveries: Value = resp.json().await.unwrap();
        assert_eq!(
            deliveries["data"].as_array().map(Vec::len),
            Some(1),
            "{point}: {id} {deliveries}"
        );
    }
    // Every acknowledged event reaches the receiver (again, if its success
    // was among what the crash forgot).
    let wanted: std::collections::HashSet<String> = acked.iter().cloned().collect();
    common::poll(
        Duration::from_secs(60),
        &format!("{point}: every acknowledged event delivered"),
        || {
            let seen: std::collections::HashSet<String> = receiver
                .requests()
                .iter()
                .filter_map(|r| r.header("webhook-id").map(str::to_string))
                .collect();
            let done = wanted.is_subset(&seen);
            async move { done.then_some(()) }
        },
    )
    .await;
    eprintln!(
        "{point}: {} acknowledged, all stored and delivered after the crash",
        acked.len()
    );
}
