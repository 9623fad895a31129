//! Per-destination delivery options end to end (SPEC §13, issue #16): a
//! real Krafter server delivering over real HTTP(S) on 127.0.0.1 to
//! in-test receivers. Credentials are checked as the receiver computes
//! them (base64 of `user:password` here, not Krafter's code); certificates
//! are made in the test with rcgen.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use krafter::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::receiver::{Received, Receiver, Reply};
use crate::common::{assert_invalid_field, none_source, poll, server_with, Source, TestServer};

const SOURCES: &str = "/api/v1/webhooks/sources";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn destinations_path(source: &Source) -> String {
    format!("{SOURCES}/{}/destinations", source.id)
}

/// Creates a destination; returns its id.
async fn create(server: &TestServer, source: &Source, body: Value) -> String {
    let d = server.create_destination(&source.id, body).await;
    d["id"].as_str().expect("id").to_string()
}

/// Tries to create a destination; returns status and body.
async fn try_create(server: &TestServer, source: &Source, body: Value) -> (StatusCode, Value) {
    server.post(&destinations_path(source), body).await
}

/// The deliveries of an event as the API lists them.
async fn deliveries(server: &TestServer, source: &Source, event: &str) -> Vec<Value> {
    let (status, body) = server
        .get(&format!(
            "{SOURCES}/{}/events/{event}/deliveries",
            source.id
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().expect("list").clone()
}

/// Waits until `event`'s delivery to `destination` is no longer pending
/// (or has at least one attempt when `settled` is false); returns it.
async fn delivery_to(
    server: &TestServer,
    source: &Source,
    event: &str,
    destination: &str,
    within: Duration,
) -> Value {
    poll(within, "a recorded attempt", || async {
        deliveries(server, source, event)
            .await
            .into_iter()
            .find(|d| {
                d["destination_id"] == destination
                    && d["attempts"].as_array().is_some_and(|a| !a.is_empty())
            })
    })
    .await
}

fn webhook_ids(requests: &[Received]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.must("webhook-id").to_string())
        .collect()
}

/// `headers`: extra headers arrive with every delivery (replacing an
/// inbound one of the same name); the names and values §13 refuses are a
/// 422 naming the header, on create and on change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_arrive_and_refused_ones_are_422() {
    let receiver = Receiver::ok().await;
    let server = server_with(|_| {}).await;
    let source = none_source(&server).await;
    let id = create(
        &server,
        &source,
        json!({
            "url": receiver.url("/h"),
            "headers": {"X-Team": "payments", "x-api-key": "k-123", "X-Tenant": "from-destination"}
        }),
    )
    .await;
    let (_, got) = server
        .get(&format!("{}/{id}", destinations_path(&source)))
        .await;
    assert_eq!(
        got["data"]["headers"],
        json!({"x-team": "payments", "x-api-key": "k-123", "x-tenant": "from-destination"})
    );

    let (status, body) = server
        .post_in(
            &source.slug,
            &[
                ("content-type", "application/json".into()),
                ("x-tenant", "from-sender".into()),
            ],
            br#"{"type":"h.test"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(r.must("x-team"), "payments");
    assert_eq!(r.must("x-api-key"), "k-123");
    assert_eq!(r.must("x-tenant"), "from-destination");
    assert_eq!(r.must("content-type"), "application/json");
    assert!(r.must("user-agent").starts_with("Krafter/"));

    for name in [
        "Host",
        "content-length",
        "Content-Type",
        "user-agent",
        "webhook-id",
        "Webhook-Signature",
        "krafter-attempt",
        "connection",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "te",
        "proxy-authorization",
        "bad name",
        "x-é",
    ] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "headers": {name: "v"}}),
        )
        .await;
        assert_invalid_field(status, &body, &format!("headers.{name}"));
    }
    for value in ["line\nbreak", "nul\u{0}", "é"] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "headers": {"x-ok": value}}),
        )
        .await;
        assert_invalid_field(status, &body, "headers.x-ok");
    }
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let (status, body) = try_create(
        &server,
        &source,
        json!({"url": receiver.url("/x"), "headers": many}),
    )
    .await;
    assert_invalid_field(status, &body, "headers");
    let (status, body) = try_create(
        &server,
        &source,
        json!({"url": receiver.url("/x"), "headers": ["x-a"]}),
    )
    .await;
    assert_eq!(status.as_u16(), 422, "{body}");

    // A change is validated the same way, and `null` removes them.
    let path = format!("{}/{id}", destinations_path(&source));
    let (status, body) = server
        .patch(&path, json!({"headers": {"webhook-timestamp": "1"}}))
        .await;
    assert_invalid_field(status, &body, "headers.webhook-timestamp");
    let (status, body) = server.patch(&path, json!({"headers": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["headers"], json!({}));
}

/// `auth` basic and bearer: the receiver gets the `authorization` it
/// expects; `GET` shows only `type` and `username`; the password and token
/// are sealed at rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_bearer_credentials_arrive_and_are_never_shown() {
    const PASSWORD: &str = "pw-Zq8-never-shown-4471";
    const TOKEN: &str = "tok_Hx91-never-shown-5582";
    let receiver = Receiver::ok().await;
    let server = server_with(|_| {}).await;
    let source = none_source(&server).await;
    let basic = create(
        &server,
        &source,
        json!({"url": receiver.url("/basic"),
               "auth": {"type": "basic", "username": "relay", "password": PASSWORD}}),
    )
    .await;
    let bearer = create(
        &server,
        &source,
        json!({"url": receiver.url("/bearer"), "auth": {"type": "bearer", "token": TOKEN}}),
    )
    .await;

    let event = server
        .ingest_json(&source.slug, &json!({"type": "auth.test"}))
        .await;
    let b = receiver
        .wait_for_path("/basic", 1, Duration::from_secs(10))
        .await
        .remove(0);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("relay:{PASSWORD}"))
    );
    assert_eq!(b.must("authorization"), expected);
    assert_eq!(b.must("webhook-id"), event);
    let t = receiver
        .wait_for_path("/bearer", 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(t.must("authorization"), format!("Bearer {TOKEN}"));

    let (_, one) = server
        .get(&format!("{}/{basic}", destinations_path(&source)))
        .await;
    assert_eq!(
        one["data"]["auth"],
        json!({"type": "basic", "username": "relay"})
    );
    let (_, one) = server
        .get(&format!("{}/{bearer}", destinations_path(&source)))
        .await;
    assert_eq!(one["data"]["auth"], json!({"type": "bearer"}));
    let (_, list) = server.get(&destinations_path(&source)).await;
    let text = list.to_string();
    assert!(!text.contains(PASSWORD) && !text.contains(TOKEN), "{text}");
    // A change answers without them too.
    let (status, changed) = server
        .patch(
            &format!("{}/{bearer}", destinations_path(&source)),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!changed.to_string().contains(TOKEN), "{changed}");

    // Bad credentials are a 422 naming the field.
    for (auth, field) in [
        (
            json!({"type": "basic", "username": "", "password": "x"}),
            "auth.username",
        ),
        (
            json!({"type": "basic", "username": "a:b", "password": "x"}),
            "auth.username",
        ),
        (json!({"type": "bearer", "token": ""}), "auth.token"),
        (
            json!({"type": "bearer", "token": "has space"}),
            "auth.token",
        ),
    ] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "auth": auth}),
        )
        .await;
        assert_invalid_field(status, &body, field);
    }
    for auth in [
        json!({"type": "digest", "username": "a"}),
        json!({"type": "basic", "username": "a"}),
        json!({"type": "bearer", "token": "t", "extra": 1}),
    ] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "auth": auth}),
        )
        .await;
        assert_eq!(status.as_u16(), 422, "{auth} → {body}");
    }
    // `auth` and a custom authorization header conflict.
    let (status, body) = try_create(
        &server,
        &source,
        json!({"url": receiver.url("/x"), "headers": {"authorization": "x"},
               "auth": {"type": "bearer", "token": "t"}}),
    )
    .await;
    assert_invalid_field(status, &body, "headers.authorization");

    // Sealed at rest: the clear text is nowhere in the stored data.
    assert!(!server.stored_contains(PASSWORD.as_bytes()).await);
    assert!(!server.stored_contains(TOKEN.as_bytes()).await);
    assert!(
        server.stored_contains(b"relay").await,
        "the check can find text"
    );
}

/// `timeout`: a destination's own attempt timeout, in place of
/// `delivery.timeout`: a receiver slower than it is a `timeout` attempt,
/// one within it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_timeout_replaces_the_global_one() {
    let receiver = Receiver::start(|_| Reply::ok().delay(ms(1500))).await;
    let server = server_with(|c| {
        c.delivery.timeout = Duration::from_secs(20);
        c.delivery.retry_schedule = vec![Duration::from_secs(60)];
    })
    .await;
    let source = none_source(&server).await;
    let short = create(
        &server,
        &source,
        json!({"url": receiver.url("/short"), "timeout": "1s"}),
    )
    .await;
    let long = create(
        &server,
        &source,
        json!({"url": receiver.url("/long"), "timeout": "4s"}),
    )
    .await;
    let (_, got) = server
        .get(&format!("{}/{short}", destinations_path(&source)))
        .await;
    assert_eq!(got["data"]["timeout"], "1s");
    let event = server
        .ingest_json(&source.slug, &json!({"type": "slow"}))
        .await;

    let d = delivery_to(&server, &source, &event, &short, Duration::from_secs(10)).await;
    let a = &d["attempts"][0];
    assert_eq!(a["error_kind"], "timeout", "{d}");
    let took = a["duration_ms"].as_u64().expect("duration");
    assert!((900..1450).contains(&took), "timed out after {took} ms");
    assert_eq!(d["status"], "pending", "retried later");

    let d = delivery_to(&server, &source, &event, &long, Duration::from_secs(10)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"][0]["status_code"], 200);

    for bad in ["0s", "500ms", "121s", "2 minutes and more", "", "-1s"] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "timeout": bad}),
        )
        .await;
        assert_invalid_field(status, &body, "timeout");
    }
    let (status, body) = try_create(
        &server,
        &source,
        json!({"url": receiver.url("/x"), "timeout": 5}),
    )
    .await;
    assert_eq!(status.as_u16(), 422, "{body}");
    // `null` returns to `delivery.timeout`.
    let (status, body) = server
        .patch(
            &format!("{}/{short}", destinations_path(&source)),
            json!({"timeout": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["timeout"], Value::Null);
}

/// `body_filter` at ingest: only events whose JSON body matches get a
/// delivery to the filtered destination (a body that is not JSON never
/// does); the same filter decides single and bulk replays; an invalid
/// filter is a 422 naming its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filters_choose_deliveries_at_ingest_and_replay() {
    let receiver = Receiver::ok().await;
    let server = server_with(|_| {}).await;
    let source = none_source(&server).await;
    let big = create(
        &server,
        &source,
        json!({"url": receiver.url("/big"),
               "body_filter": {"data": {"amount": {"$gt": 100}, "currency": {"$in": ["eur", "usd"]}}}}),
    )
    .await;
    create(&server, &source, json!({"url": receiver.url("/all")})).await;
    let (_, got) = server
        .get(&format!("{}/{big}", destinations_path(&source)))
        .await;
    assert_eq!(
        got["data"]["body_filter"],
        json!({"data": {"amount": {"$gt": 100}, "currency": {"$in": ["eur", "usd"]}}})
    );

    let small = server
        .ingest_json(
            &source.slug,
            &json!({"type": "pay", "data": {"amount": 50, "currency": "eur"}}),
        )
        .await;
    let large = server
        .ingest_json(
            &source.slug,
            &json!({"type": "pay", "data": {"amount": 150, "currency": "eur"}}),
        )
        .await;
    let other_currency = server
        .ingest_json(
            &source.slug,
            &json!({"type": "pay", "data": {"amount": 150, "currency": "gbp"}}),
        )
        .await;
    let missing = server
        .ingest_json(&source.slug, &json!({"type": "pay"}))
        .await;
    let not_json = server
        .ingest_bytes(
            &source.slug,
            "text/plain",
            b"amount=150&currency=eur".to_vec(),
        )
        .await;

    let all = receiver
        .wait_for_path("/all", 5, Duration::from_secs(10))
        .await;
    assert_eq!(all.len(), 5);
    tokio::time::sleep(ms(300)).await;
    let got = webhook_ids(&receiver.requests_to("/big"));
    assert_eq!(got, vec![large.clone()], "only the matching event");
    for event in [&small, &other_currency, &missing, &not_json] {
        let list = deliveries(&server, &source, event).await;
        assert_eq!(list.len(), 1, "{event}: {list:?}");
    }

    // Replay of one event follows the filter (as it is now).
    let replay = |event: String| {
        let server = &server;
        let source = &source;
        async move {
            let (status, body) = server
                .post(
                    &format!("{SOURCES}/{}/events/{event}/replay", source.id),
                    json!({}),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["data"]["count"].as_u64().expect("count")
        }
    };
    assert_eq!(
        replay(small.clone()).await,
        1,
        "only the unfiltered destination"
    );
    assert_eq!(replay(large.clone()).await, 2);
    let (status, body) = server
        .patch(
            &format!("{}/{big}", destinations_path(&source)),
            json!({"body_filter": {"data": {"amount": {"$lt": 100}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(replay(small.clone()).await, 2, "matches the changed filter");
    assert_eq!(replay(not_json.clone()).await, 1);
    receiver
        .wait_for_path("/big", 3, Duration::from_secs(10))
        .await;

    // A bulk replay applies it too: of the five, only `small` matches.
    let before = receiver.count_to("/big");
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{}/replay", source.id),
            json!({"after": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["events"], 5, "{body}");
    assert_eq!(body["data"]["deliveries"], 6, "{body}");
    receiver
        .wait_for_path("/big", before + 1, Duration::from_secs(10))
        .await;
    tokio::time::sleep(ms(300)).await;
    let big_ids = webhook_ids(&receiver.requests_to("/big")[before..]);
    assert_eq!(big_ids, vec![small.clone()]);

    // `null` removes the filter.
    let (status, body) = server
        .patch(
            &format!("{}/{big}", destinations_path(&source)),
            json!({"body_filter": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["body_filter"], Value::Null);
    assert_eq!(replay(not_json).await, 2);

    for (filter, field) in [
        (json!({"amount": {"$gt": [1]}}), "body_filter.amount.$gt"),
        (
            json!({"a": {"b": {"$regex": "x"}}}),
            "body_filter.a.b.$regex",
        ),
        (
            json!({"$or": [{"a": 1}, {"b": {"$in": 2}}]}),
            "body_filter.$or[1].b.$in",
        ),
        (json!({"a": {"$exist": "yes"}}), "body_filter.a.$exist"),
        (json!([1, 2]), "body_filter"),
    ] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "body_filter": filter}),
        )
        .await;
        assert_invalid_field(status, &body, field);
    }
    let (status, body) = server
        .patch(
            &format!("{}/{big}", destinations_path(&source)),
            json!({"body_filter": {"x": {"$lte": {}}}}),
        )
        .await;
    assert_invalid_field(status, &body, "body_filter.x.$lte");
}

/// The `n` of a test event's body.
fn event_number(r: &Received) -> u64 {
    let body: Value = serde_json::from_slice(&r.body).expect("a JSON test event");
    body["n"].as_u64().expect("n")
}

/// Ingests `n` JSON events one after another, each received in a later
/// millisecond than the one before (so event order is ingest order);
/// returns their ids in that order.
async fn ingest_in_order(server_base: &str, slug: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let resp = client
            .post(format!("{server_base}/in/{slug}"))
            .header("content-type", "application/json")
            .body(json!({"type": "fifo.test", "n": i}).to_string())
            .send()
            .await
            .expect("ingest");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        ids.push(body["data"]["event_id"].as_str().expect("id").to_string());
        tokio::time::sleep(ms(3)).await;
    }
    ids
}

/// `ordering: "fifo"`: one attempt at a time, in event order; a failing
/// delivery holds the later ones until it succeeds or ends `failed`, even
/// with `max_in_flight_per_destination` above one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_holds_later_deliveries_behind_a_failing_one() {
    let receiver = Receiver::start(|r| {
        let n = event_number(r);
        let attempt: u32 = r.must("krafter-attempt").parse().unwrap();
        // Event 0 always fails (it ends `failed`); event 2 fails once.
        let fail = n == 0 || (n == 2 && attempt == 1);
        Reply::status(if fail { 500 } else { 200 }).delay(ms(40))
    })
    .await;
    let server = server_with(|c| {
        c.delivery.retry_schedule = vec![ms(300), ms(300)];
        c.delivery.max_in_flight_per_destination = 8;
    })
    .await;
    let source = none_source(&server).await;
    let (status, body) = try_create(
        &server,
        &source,
        json!({"url": receiver.url("/x"), "ordering": "sideways"}),
    )
    .await;
    assert_eq!(status.as_u16(), 422, "{body}");
    let fifo = server
        .create_destination(
            &source.id,
            json!({"url": receiver.url("/fifo"), "ordering": "fifo"}),
        )
        .await;
    assert_eq!(fifo["ordering"], "fifo");
    // All are queued while event 0 is still failing.
    let events = ingest_in_order(&server.base, &source.slug, 8).await;

    // 3 attempts of event 0, then 1, 2 twice, then 3..7: exactly this.
    let got = receiver
        .wait_for_path("/fifo", 11, Duration::from_secs(20))
        .await;
    let mut expected = vec![events[0].clone(); 3];
    expected.push(events[1].clone());
    expected.extend([events[2].clone(), events[2].clone()]);
    expected.extend(events[3..].iter().cloned());
    assert_eq!(webhook_ids(&got), expected);
    assert_eq!(receiver.max_in_flight(), 1, "one attempt at a time");
    let first = deliveries(&server, &source, &events[0]).await;
    assert_eq!(first[0]["status"], "failed", "{first:?}");
    tokio::time::sleep(ms(300)).await;
    assert_eq!(receiver.count_to("/fifo"), 11, "nothing more");
}

/// `krafter serve` (the real binary) over `data`, retrying after 200 ms.
async fn spawn_fifo_server(
    dir: &std::path::Path,
    data: &std::path::Path,
) -> (crate::common::KillOnDrop, String) {
    crate::common::spawn_logged_server(
        dir,
        data,
        &[
            (
                "KRAFTER_DELIVERY__RETRY_SCHEDULE",
                r#"["200ms","200ms","200ms","200ms"]"#,
            ),
            ("KRAFTER_DELIVERY__MAX_IN_FLIGHT_PER_DESTINATION", "8"),
        ],
    )
    .await
}

/// FIFO across `kill -9`: the order is kept by what is on disk, so a
/// server killed mid-way and started again goes on in event order. What
/// was delivered but not yet recorded when it died comes again (at least
/// once), in order; no event is ever sent before every earlier one
/// succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_holds_across_kill_9() {
    const EVENTS: usize = 30;
    // Slow, and fails the first attempt of every fifth event.
    let receiver = Receiver::start(|r| {
        let attempt: u32 = r.must("krafter-attempt").parse().unwrap();
        let fail = event_number(r).is_multiple_of(5) && attempt == 1;
        Reply::status(if fail { 500 } else { 200 }).delay(ms(60))
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let (mut child, base) = spawn_fifo_server(dir.path(), &data).await;
    let key = std::fs::read_to_string(data.join("admin.key")).expect("admin.key");
    let key = key.trim().to_string();
    let source: Value = client
        .post(format!("{base}{SOURCES}"))
        .bearer_auth(&key)
        .json(&json!({"name": "fifo crash", "provider": "none"}))
        .send()
        .await
        .expect("create source")
        .json()
        .await
        .expect("json");
    let slug = source["data"]["slug"].as_str().expect("slug").to_string();
    let source_id = source["data"]["id"].as_str().expect("id").to_string();
    let created: Value = client
        .post(format!("{base}{SOURCES}/{source_id}/destinations"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url("/fifo"), "ordering": "fifo"}))
        .send()
        .await
        .expect("create destination")
        .json()
        .await
        .expect("json");
    assert_eq!(created["data"]["ordering"], "fifo", "{created}");
    let events = ingest_in_order(&base, &slug, EVENTS).await;

    receiver.wait_for(10, Duration::from_secs(20)).await;
    child.0.kill().expect("kill -9");
    child.0.wait().expect("reap");
    let at_kill = receiver.count();
    drop(child);
    let (_child, _base) = spawn_fifo_server(dir.path(), &data).await;

    // Every event arrives with a success; the first-arrival order is the
    // event order, and no request is for an event before one already sent.
    let all = receiver
        .wait_until(Duration::from_secs(40), "every event delivered", |all| {
            let ok: std::collections::HashSet<&str> =
                all.iter().map(|r| r.must("webhook-id")).collect();
            ok.len() == EVENTS && all.len() >= EVENTS + EVENTS / 5
        })
        .await;
    eprintln!("killed after {at_kill} requests; {} in all", all.len());
    assert!(at_kill < all.len(), "killed too late to matter");
    // Whatever came again after the kill (at least once: outcomes not yet
    // on disk), no event was ever sent before every earlier one had been
    // answered with a success.
    let position = |id: &str| events.iter().position(|e| e == id).expect("a known event");
    let mut succeeded = [false; EVENTS];
    let mut positions = Vec::new();
    for r in &all {
        let p = position(r.must("webhook-id"));
        positions.push(p);
        assert!(
            succeeded[..p].iter().all(|done| *done),
            "event {p} sent before an earlier one succeeded: {positions:?}"
        );
        let attempt: u32 = r.must("krafter-attempt").parse().unwrap();
        if !(p.is_multiple_of(5) && attempt == 1) {
            succeeded[p] = true;
        }
    }
    assert_eq!(receiver.max_in_flight(), 1, "one attempt at a time");
}

/// A test CA, a server certificate it signed for 127.0.0.1 and localhost,
/// and a client certificate it signed (PEM), for mutual TLS.
struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "krafter test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "billing-relay");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        server,
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// `tls_client_certificate`: an HTTPS receiver that requires a client
/// certificate from its CA gets the delivery from a destination that has
/// one, and refuses one that has none; `GET` shows the subject and expiry,
/// never the key, which is sealed at rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_destination_certificate() {
    let pki = pki();
    let ca_dir = tempfile::tempdir().expect("dir");
    let ca_path = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).expect("write CA");
    let receiver = Receiver::start_tls(std::sync::Arc::new(pki.server), |_| Reply::ok()).await;
    let server = server_with(|c| {
        c.delivery.extra_ca_path = Some(ca_path.clone());
        c.delivery.retry_schedule = vec![Duration::from_secs(60)];
    })
    .await;
    let source = none_source(&server).await;
    let with = create(
        &server,
        &source,
        json!({"url": receiver.localhost_url("/with"),
               "tls_client_certificate": {"cert_pem": pki.client_cert_pem, "key_pem": pki.client_key_pem}}),
    )
    .await;
    let without = create(&server, &source, json!({"url": receiver.url("/without")})).await;
    let (_, got) = server
        .get(&format!("{}/{with}", destinations_path(&source)))
        .await;
    let shown = &got["data"]["tls_client_certificate"];
    assert!(
        shown["subject"]
            .as_str()
            .unwrap()
            .contains("CN=billing-relay"),
        "{shown}"
    );
    assert!(
        shown["not_after"].as_str().unwrap().ends_with('Z'),
        "{shown}"
    );
    assert_eq!(shown.as_object().unwrap().len(), 2, "{shown}");
    assert!(!got.to_string().contains("PRIVATE KEY"), "{got}");

    let event = server
        .ingest_json(&source.slug, &json!({"type": "mtls.test"}))
        .await;
    let r = receiver
        .wait_for_path("/with", 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(r.must("webhook-id"), event);
    let d = delivery_to(&server, &source, &event, &with, Duration::from_secs(10)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let d = delivery_to(&server, &source, &event, &without, Duration::from_secs(10)).await;
    assert_eq!(d["status"], "pending", "{d}");
    let kind = d["attempts"][0]["error_kind"].as_str().unwrap().to_string();
    assert!(["tls", "http", "connect"].contains(&kind.as_str()), "{d}");
    assert_eq!(
        receiver.count_to("/without"),
        0,
        "refused before any request"
    );

    // The key is sealed at rest; a broken pair is a 422 naming the part.
    let key_body: String = pki
        .client_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!server.stored_contains(&key_body.as_bytes()[..40]).await);
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for (cert, field) in [
        (
            json!({"cert_pem": pki.client_cert_pem, "key_pem": other_key}),
            "tls_client_certificate.key_pem",
        ),
        (
            json!({"cert_pem": "not a certificate", "key_pem": pki.client_key_pem}),
            "tls_client_certificate.cert_pem",
        ),
        (
            json!({"cert_pem": pki.client_cert_pem, "key_pem": "nope"}),
            "tls_client_certificate.key_pem",
        ),
    ] {
        let (status, body) = try_create(
            &server,
            &source,
            json!({"url": receiver.url("/x"), "tls_client_certificate": cert}),
        )
        .await;
        assert_invalid_field(status, &body, field);
        assert!(!body.to_string().contains("PRIVATE KEY"), "{body}");
    }
}

/// Attempts that find no token share one grant: a burst of deliveries to a
/// destination whose token endpoint answers slowly asks it once, not once
/// per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_attempts_without_a_token_asks_the_token_endpoint_once() {
    let receiver = Receiver::start(|r| match r.path.as_str() {
        "/slow-token" => Reply::ok()
            .header("content-type", "application/json")
            .body(
                json!({"access_token": "tok-burst", "token_type": "Bearer", "expires_in": 3600})
                    .to_string(),
            )
            .delay(Duration::from_millis(500)),
        _ => Reply::ok(),
    })
    .await;
    let server = server_with(|_| {}).await;
    let source = none_source(&server).await;
    create(
        &server,
        &source,
        json!({"url": receiver.url("/hook"),
               "auth": {"type": "oauth2_client_credentials", "token_url": receiver.url("/slow-token"),
                        "client_id": "burst", "client_secret": "s"}}),
    )
    .await;
    for n in 0..8 {
        server
            .ingest_json(&source.slug, &json!({"type": "burst", "n": n}))
            .await;
    }
    let hooks = receiver
        .wait_for_path("/hook", 8, Duration::from_secs(15))
        .await;
    assert!(hooks
        .iter()
        .all(|r| r.must("authorization") == "Bearer tok-burst"));
    assert_eq!(
        receiver.count_to("/slow-token"),
        1,
        "one grant for the burst"
    );
}

/// OAuth2 client credentials: a real token endpoint on loopback gets one
/// client-credentials grant (HTTP basic client auth, form body), its token
/// is reused for later deliveries, fetched again once when the receiver
/// answers 401, and a failing endpoint is a failed attempt of kind `auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_fetched_once_reused_and_refreshed_after_a_401() {
    const CLIENT_SECRET: &str = "cs-Vq83-never-shown-1193";
    let revoked = std::sync::Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let receiver = {
        let revoked = revoked.clone();
        Receiver::start(move |r| match r.path.as_str() {
            "/token" => Reply::ok().header("content-type", "application/json").body(
                json!({"access_token": format!("tok-{}", r.path_index),
                           "token_type": "Bearer", "expires_in": 3600})
                .to_string(),
            ),
            "/broken-token" => Reply::status(500),
            _ => {
                let auth = r.header("authorization").unwrap_or_default().to_string();
                if revoked.lock().unwrap().contains(&auth) {
                    Reply::status(401)
                } else {
                    Reply::ok()
                }
            }
        })
        .await
    };
    let server = server_with(|c| c.delivery.retry_schedule = vec![Duration::from_secs(60)]).await;
    let source = none_source(&server).await;
    let dest = create(
        &server,
        &source,
        json!({"url": receiver.url("/hook"),
               "auth": {"type": "oauth2_client_credentials", "token_url": receiver.url("/token"),
                        "client_id": "krafter-relay", "client_secret": CLIENT_SECRET,
                        "scope": "webhooks:write", "audience": "https://api.example.invalid"}}),
    )
    .await;
    let (_, got) = server
        .get(&format!("{}/{dest}", destinations_path(&source)))
        .await;
    assert_eq!(
        got["data"]["auth"],
        json!({"type": "oauth2_client_credentials", "token_url": receiver.url("/token"),
               "client_id": "krafter-relay", "scope": "webhooks:write",
               "audience": "https://api.example.invalid"})
    );

    for i in 0..3 {
        server
            .ingest_json(&source.slug, &json!({"type": "oauth.test", "n": i}))
            .await;
        receiver
            .wait_for_path("/hook", i + 1, Duration::from_secs(10))
            .await;
    }
    let hooks = receiver.requests_to("/hook");
    assert!(
        hooks
            .iter()
            .all(|r| r.must("authorization") == "Bearer tok-0"),
        "{:?}",
        hooks
            .iter()
            .map(|r| r.header("authorization"))
            .collect::<Vec<_>>()
    );
    let tokens = receiver.requests_to("/token");
    assert_eq!(tokens.len(), 1, "one grant for three deliveries");
    let t = &tokens[0];
    assert_eq!(t.method, "POST");
    assert_eq!(t.must("content-type"), "application/x-www-form-urlencoded");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("krafter-relay:{CLIENT_SECRET}"))
    );
    assert_eq!(t.must("authorization"), basic);
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&t.body).into_owned().collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "webhooks:write");
    assert_eq!(form["audience"], "https://api.example.invalid");

    // The receiver stops accepting tok-0: one 401, a new grant, the same
    // attempt succeeds with tok-1.
    revoked.lock().unwrap().insert("Bearer tok-0".into());
    let event = server
        .ingest_json(&source.slug, &json!({"type": "oauth.test", "n": 3}))
        .await;
    let hooks = receiver
        .wait_for_path("/hook", 5, Duration::from_secs(10))
        .await;
    assert_eq!(hooks[3].must("authorization"), "Bearer tok-0");
    assert_eq!(hooks[4].must("authorization"), "Bearer tok-1");
    assert_eq!(receiver.count_to("/token"), 2);
    let d = delivery_to(&server, &source, &event, &dest, Duration::from_secs(10)).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");

    // A token endpoint that fails: a failed attempt of kind `auth`, and
    // nothing sent to the receiver.
    let broken = create(
        &server,
        &source,
        json!({"url": receiver.url("/never"),
               "auth": {"type": "oauth2_client_credentials", "token_url": receiver.url("/broken-token"),
                        "client_id": "c", "client_secret": "s"}}),
    )
    .await;
    let event = server
        .ingest_json(&source.slug, &json!({"type": "oauth.test", "n": 4}))
        .await;
    let d = delivery_to(&server, &source, &event, &broken, Duration::from_secs(10)).await;
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["attempts"][0]["error_kind"], "auth", "{d}");
    assert!(!d.to_string().contains(CLIENT_SECRET));
    assert_eq!(receiver.count_to("/never"), 0);

    assert!(!server.stored_contains(CLIENT_SECRET.as_bytes()).await);
    let (status, body) = try_create(
        &server,
        &source,
        json!({"url": receiver.url("/x"),
               "auth": {"type": "oauth2_client_credentials", "token_url": "ftp://127.0.0.1/t",
                        "client_id": "c", "client_secret": "s"}}),
    )
    .await;
    assert_invalid_field(status, &body, "auth.token_url");
}

/// A CONNECT proxy on loopback that counts its tunnels and records what
/// each asked for.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let targets: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let seen = targets.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut words = text.split_whitespace();
                    let (method, target) = (words.next(), words.next());
                    let (Some("CONNECT"), Some(target)) = (method, target) else {
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    };
                    seen.lock().unwrap().push(target.to_string());
                    // Loopback only, whatever is asked.
                    let upstream_addr: std::net::SocketAddr = match target.parse() {
                        Ok(a) if matches!(a, std::net::SocketAddr::V4(v4) if v4.ip().is_loopback()) => {
                            a
                        }
                        _ => {
                            let _ = client
                                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            return;
                        }
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(upstream_addr).await
                    else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        ConnectProxy {
            addr,
            targets,
            accept,
        }
    }

    fn tunnels(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// `delivery.proxy_url`: every delivery, http and https, goes through a
/// CONNECT tunnel of the proxy, asked for the address Krafter resolved and
/// checked; a destination the SSRF guard refuses never reaches the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_egress_proxy() {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let proxy = ConnectProxy::start().await;
    let plain = Receiver::ok().await;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![ck.cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
    )
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let secure = Receiver::start_tls(std::sync::Arc::new(tls), |_| Reply::ok()).await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_path, ck.cert.pem()).unwrap();

    let proxy_url = format!("http://{}", proxy.addr);
    let server = server_with(|c| {
        c.delivery.proxy_url = Some(proxy_url.clone());
        c.delivery.extra_ca_path = Some(ca_path.clone());
        c.delivery.retry_schedule = vec![Duration::from_secs(60)];
    })
    .await;
    let source = none_source(&server).await;
    create(
        &server,
        &source,
        json!({"url": plain.localhost_url("/plain")}),
    )
    .await;
    create(
        &server,
        &source,
        json!({"url": secure.localhost_url("/secure")}),
    )
    .await;
    let refused = create(
        &server,
        &source,
        json!({"url": format!("http://hooks.rebind.invalid:{}/x", plain.addr().port())}),
    )
    .await;
    let event = server
        .ingest_json(&source.slug, &json!({"type": "proxy.test"}))
        .await;
    let r = plain
        .wait_for_path("/plain", 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(r.must("webhook-id"), event);
    secure
        .wait_for_path("/secure", 1, Duration::from_secs(10))
        .await;
    let d = delivery_to(&server, &source, &event, &refused, Duration::from_secs(10)).await;
    assert_eq!(d["attempts"][0]["error_kind"], "ssrf_refused", "{d}");

    // Each went through its own tunnel to the resolved loopback address
    // (not the name); nothing was tunnelled for the refused one.
    let mut tunnels = proxy.tunnels();
    tunnels.sort();
    let mut expected = vec![
        format!("127.0.0.1:{}", plain.addr().port()),
        format!("127.0.0.1:{}", secure.addr().port()),
    ];
    expected.sort();
    assert_eq!(tunnels, expected);

    // A proxy URL the client cannot use is refused when the config loads.
    for bad in [
        "socks5://127.0.0.1:1080",
        "http://user:pw@127.0.0.1:3128",
        "http://127.0.0.1:3128/path",
        "nope",
    ] {
        let mut config = Config::default();
        config.delivery.proxy_url = Some(bad.into());
        let err = Config::from_figment(figment::Figment::from(
            figment::providers::Serialized::defaults(config),
        ))
        .expect_err(bad)
        .to_string();
        assert!(err.contains("delivery.proxy_url"), "{bad}: {err}");
    }
}

/// The dashboard's destination forms set the options; the secret parts
/// are write-only there too: never shown on a page, kept when left empty,
/// and a refused form does not echo them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_sets_options_and_never_shows_secrets() {
    const TOKEN: &str = "tok_Dash-never-shown-7731";
    let receiver = Receiver::ok().await;
    let server = server_with(|_| {}).await;
    let source = none_source(&server).await;
    let mut b = crate::common::browser::Browser::new(&server.base);
    let csrf = b.signed_in(&server.admin_key).await;
    let src = format!("/dashboard/sources/{}", source.id);
    let url = receiver.url("/dash");
    let page = b
        .post(
            &format!("{src}/destinations"),
            &[
                ("csrf", &csrf),
                ("url", &url),
                ("event_filter", ""),
                ("headers", "X-Team: payments\nX-Env: test"),
                ("timeout", "5s"),
                ("ordering", "fifo"),
                ("body_filter", r#"{"amount": {"$gte": 10}}"#),
                ("auth_type", "bearer"),
                ("auth_secret", TOKEN),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(!page.text.contains(TOKEN));
    let (_, list) = server.get(&destinations_path(&source)).await;
    let d = &list["data"][0];
    let id = d["id"].as_str().unwrap().to_string();
    assert_eq!(d["headers"], json!({"x-team": "payments", "x-env": "test"}));
    assert_eq!(d["timeout"], "5s");
    assert_eq!(d["ordering"], "fifo");
    assert_eq!(d["body_filter"], json!({"amount": {"$gte": 10}}));
    assert_eq!(d["auth"], json!({"type": "bearer"}));

    // The edit page shows the options but not the token.
    let edit = format!("{src}/destinations/{id}");
    let page = b.get(&edit).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("X-Team: payments") || page.text.contains("x-team: payments"));
    assert!(!page.text.contains(TOKEN), "the token is write-only");

    // Saved without a new token: the stored one is kept and still sent.
    let page = b
        .post(
            &edit,
            &[
                ("csrf", &csrf),
                ("url", &url),
                ("event_filter", ""),
                ("headers", "X-Team: billing"),
                ("timeout", ""),
                ("ordering", "none"),
                ("body_filter", ""),
                ("auth_type", "bearer"),
                ("auth_secret", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    server
        .ingest_json(&source.slug, &json!({"type": "dash", "amount": 1}))
        .await;
    let r = receiver
        .wait_for_path("/dash", 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(r.must("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(r.must("x-team"), "billing");

    // A refused form (bad filter) shows the path and does not echo secrets.
    let pki = pki();
    let page = b
        .post(
            &edit,
            &[
                ("csrf", &csrf),
                ("url", &url),
                ("event_filter", ""),
                ("headers", ""),
                ("ordering", "none"),
                ("body_filter", r#"{"amount": {"$gt": [1]}}"#),
                ("auth_type", "bearer"),
                ("auth_secret", "tok_new-secret-never-echoed"),
                ("tls_cert_pem", &pki.client_cert_pem),
                ("tls_key_pem", &pki.client_key_pem),
            ],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.text
    );
    assert!(
        page.text.contains("body_filter.amount.$gt"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("tok_new-secret-never-echoed"));
    let key_line = pki
        .client_key_pem
        .lines()
        .find(|l| !l.starts_with("-----"))
        .unwrap();
    assert!(
        !page.text.contains(key_line),
        "the private key is write-only"
    );
}
