//! Bulk replays are durable jobs (SPEC §10, issue #10): visible with their
//! progress, completing, resumed after a restart or a `kill -9` with every
//! promised delivery made, and each chunk queued exactly once.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::receiver::Receiver;
use crate::common::{assert_error, open_store_at, poll, KillOnDrop, TestServer};
use krafter::model::ids::{new_id, DestinationId, EventId, ReplayId, SourceId};
use krafter::model::records::{ReplayRecord, ReplayState};
use krafter::store::{Store, KEPT_PER_SOURCE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SOURCES: &str = "/api/v1/webhooks/sources";
/// More than the 5,000 events a bulk replay queues before its 202.
const EVENTS: usize = 5_200;
const ANY_TIME: &str = "2020-01-01T00:00:00Z";

/// Ingests `n` events into `slug` over `base` with 16 concurrent senders;
/// returns their ids.
async fn ingest_many(base: &str, slug: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for sender in 0..16 {
        let (client, url) = (client.clone(), format!("{base}/in/{slug}"));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (sender..n).step_by(16) {
                let resp = client
                    .post(&url)
                    .json(&json!({"type": "order.created", "n": i}))
                    .send()
                    .await
                    .expect("ingest reaches the server");
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.expect("json");
                ids.push(body["data"]["event_id"].as_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(ids.len(), n);
    ids
}

/// How many times each `webhook-id` reached the receiver.
fn per_event(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.requests() {
        *counts.entry(r.must("webhook-id").to_string()).or_insert(0) += 1;
    }
    counts
}

/// Waits until every event reached the receiver at least `times` times:
/// as long as deliveries keep arriving (a loaded machine delivers thousands
/// slowly), but no more than 30 s without one more event done, nor past
/// `within`. A failure says how many events are short, and which.
async fn delivered_at_least(receiver: &Receiver, ids: &[String], times: usize, within: Duration) {
    let started = Instant::now();
    let mut best = usize::MAX;
    let mut progressed = Instant::now();
    loop {
        let counts = per_event(receiver);
        let short: Vec<&String> = ids
            .iter()
            .filter(|id| counts.get(*id).copied().unwrap_or(0) < times)
            .collect();
        if short.is_empty() {
            return;
        }
        if short.len() < best {
            best = short.len();
            progressed = Instant::now();
        }
        assert!(
            progressed.elapsed() < Duration::from_secs(30) && started.elapsed() < within,
            "after {:?}: {} of {} events not yet delivered {times} times ({} requests in all; \
             none more for {:?}), e.g. {:?}",
            started.elapsed(),
            short.len(),
            ids.len(),
            receiver.count(),
            progressed.elapsed(),
            &short[..short.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_replay_is_a_job_with_progress_that_completes() {
    let receiver = Receiver::ok().await;
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let src = server.create_none_source("jobs").await;
    let (sid, slug) = (src["id"].as_str().unwrap(), src["slug"].as_str().unwrap());
    let ids = ingest_many(&server.base, slug, EVENTS).await;
    // Made after ingest: only replays reach it.
    let dst = server
        .create_destination(sid, json!({"url": receiver.url("/hook")}))
        .await;

    let (status, body) = server
        .post(
            &format!("{SOURCES}/{sid}/replay"),
            json!({"after": ANY_TIME}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = body["data"]["id"].as_str().unwrap().to_string();
    assert!(job.starts_with("rpl_"), "{body}");
    assert_eq!(body["data"]["events"], EVENTS);
    assert_eq!(body["data"]["deliveries"], EVENTS);
    // Above 5,000 events the 202 comes once the job is stored, before it runs.
    assert_eq!(body["data"]["status"], "running", "{body}");
    // A graceful restart mid-job: shutdown stops it between chunks (without
    // hanging), the next start resumes it.
    let server = server.restart().await;
    // An event received after the replay was accepted is not part of it.
    let late = server
        .ingest_json(slug, &json!({"type": "order.created", "late": true}))
        .await;

    let path = format!("{SOURCES}/{sid}/replays/{job}");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (status, body) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let view = body["data"].clone();
        seen.push(view["events_done"].as_u64().unwrap());
        if view["status"] == "completed" {
            break view;
        }
        assert_eq!(view["status"], "running", "{view}");
        assert!(
            Instant::now() < deadline,
            "the replay did not complete: {view}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {seen:?}"
    );
    assert_eq!(done["id"], job.as_str());
    assert_eq!(done["source_id"], sid);
    assert_eq!(done["events_total"], EVENTS);
    assert_eq!(done["events_done"], EVENTS);
    assert_eq!(done["deliveries_total"], EVENTS);
    assert_eq!(done["deliveries_queued"], EVENTS);
    common::assert_timestamp(&done["created_at"]);
    common::assert_timestamp(&done["updated_at"]);
    assert!(done["updated_at"].as_str() >= done["created_at"].as_str());
    assert_eq!(done["request"]["after"], "2020-01-01T00:00:00.000Z");
    common::assert_timestamp(&done["request"]["before"]);
    assert_eq!(done["request"]["type"], Value::Null);
    assert_eq!(done["request"]["status"], Value::Null);
    assert_eq!(done["request"]["destination_ids"], Value::Null);

    delivered_at_least(&receiver, &ids, 1, Duration::from_secs(300)).await;
    // The late event got its own delivery from ingest, and none from the
    // replay.
    let (_, dl) = server
        .get(&format!("{SOURCES}/{sid}/events/{late}/deliveries"))
        .await;
    assert_eq!(dl["data"].as_array().unwrap().len(), 1, "{dl}");

    // A second, narrower replay: listed first, paged with the cursor.
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{sid}/replay"),
            json!({"after": ANY_TIME, "type": "nothing.*", "destination_ids": [dst["id"]]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["status"], "completed", "{body}");
    assert_eq!(body["data"]["events"], 0);
    let small = body["data"]["id"].as_str().unwrap().to_string();
    let (status, page) = server
        .get(&format!("{SOURCES}/{sid}/replays?limit=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"][0]["id"], small.as_str());
    assert_eq!(page["data"][0]["request"]["type"], "nothing.*");
    assert_eq!(
        page["data"][0]["request"]["destination_ids"],
        json!([dst["id"]])
    );
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, page) = server
        .get(&format!("{SOURCES}/{sid}/replays?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page["data"][0]["id"], job.as_str());
    assert_eq!(page["next_cursor"], Value::Null);

    // Reading needs webhooks:read; unknown ids and bad queries are clean.
    let (_, read_key) = server.create_key(&["webhooks:read"]).await;
    let (status, _) = server.call(Method::GET, &path, Some(&read_key), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.call(Method::GET, &path, None, None).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = server
        .get(&format!(
            "{SOURCES}/{sid}/replays/rpl_01ARZ3NDEKTSV4RRFFQ69G5FAV"
        ))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .get(&format!(
            "{SOURCES}/{sid}/replays/{}",
            dst["id"].as_str().unwrap()
        ))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .get(&format!("{SOURCES}/src_01ARZ3NDEKTSV4RRFFQ69G5FAV/replays"))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .get(&format!("{SOURCES}/{sid}/replays?limit=0"))
        .await;
    assert_error(status, &body, 400, "bad_request");
}

/// Checks, on the stopped server's data, that a job's cursor and counters
/// match exactly the deliveries it made: every event at or before the
/// cursor has `before + 1` deliveries, every later one `before`. Returns
/// the job's state.
///
/// Store-level on purpose: the job's cursor is shown by no API, and the
/// state to check is the one the kill left — a restarted server (the only
/// way to ask the API) resumes the job at once, changing it under the read.
async fn chunks_are_atomic(
    data: &Path,
    sid: &str,
    job: &str,
    ids: &[String],
    before: usize,
) -> ReplayRecord {
    let store = open_store_at(data);
    let (source, job) = (SourceId::parse(sid).unwrap(), ReplayId::parse(job).unwrap());
    let record = store.replay(source, job).await.unwrap();
    // 5,200 events, two reads each: eight readers at once (on PostgreSQL
    // one after the other took ~5 s of round trips per check).
    let mut readers = tokio::task::JoinSet::new();
    for part in ids.chunks(ids.len().div_ceil(8).max(1)) {
        let (store, part) = (store.clone(), part.to_vec());
        readers.spawn(async move {
            let mut counts = Vec::new();
            for id in part {
                let raw = EventId::parse(&id).unwrap();
                counts.push((raw, delivery_count(&store, raw).await));
            }
            counts
        });
    }
    let mut counts = Vec::new();
    while let Some(part) = readers.join_next().await {
        counts.extend(part.unwrap());
    }
    store.close().await;
    let mut done = 0;
    for (raw, n) in counts {
        let expected = if raw.as_u128() <= record.cursor {
            done += 1;
            before + 1
        } else {
            before
        };
        assert_eq!(n, expected, "deliveries of an event vs the cursor");
    }
    assert_eq!(record.events_done, done, "events_done vs the cursor");
    assert_eq!(
        record.deliveries_queued, done,
        "deliveries_queued vs the cursor"
    );
    if record.state == ReplayState::Completed {
        assert_eq!(done as usize, ids.len());
    }
    record
}

/// The real binary, on a port the system picks, healthy.
async fn boot(data: &Path) -> (KillOnDrop, String) {
    let mut command = common::serve_command(data);
    command.env("KRAFTER_DELIVERY__RETRY_SCHEDULE", r#"["1s"]"#);
    common::spawn_serving(&mut command, data).await
}

/// `kill -9`, and wait until the process is gone.
fn kill_9(child: KillOnDrop) {
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_survives_kill_9_with_every_promised_delivery_made() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::ok().await;
    let client = reqwest::Client::new();

    let (child, base) = boot(&data).await;
    let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let key = key.trim().to_string();
    let api = |method: Method, base: &str, path: &str, body: Option<Value>| {
        let mut req = client
            .request(method, format!("{base}{SOURCES}{path}"))
            .bearer_auth(&key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let resp = req.send().await.expect("the API answers");
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, src) = api(
        Method::POST,
        &base,
        "",
        Some(json!({"name": "crash", "provider": "none"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{src}");
    let sid = src["data"]["id"].as_str().unwrap().to_string();
    let slug = src["data"]["slug"].as_str().unwrap().to_string();
    let ids = ingest_many(&base, &slug, EVENTS).await;
    let (status, dst) = api(
        Method::POST,
        &base,
        &format!("/{sid}/destinations"),
        Some(json!({"url": receiver.url("/hook")})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{dst}");
    eprintln!("set up in {:?}", started.elapsed());

    // Kill point 1: right after the 202.
    let (status, accepted) = api(
        Method::POST,
        &base,
        &format!("/{sid}/replay"),
        Some(json!({"after": ANY_TIME})),
    )
    .await;
    kill_9(child);
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["data"]["deliveries"], EVENTS);
    let first = accepted["data"]["id"].as_str().unwrap().to_string();
    let at_kill = chunks_are_atomic(&data, &sid, &first, &ids, 0).await;
    eprintln!(
        "killed after the 202: {:?}, {} of {EVENTS} events queued",
        at_kill.state, at_kill.events_done
    );

    // Restarted, the job resumes from its cursor and completes.
    let (child, base) = boot(&data).await;
    let path = format!("/{sid}/replays/{first}");
    let done = poll(Duration::from_secs(30), "replay 1 to complete", || async {
        let (_, body) = api(Method::GET, &base, &path, None).await;
        (body["data"]["status"] == "completed").then(|| body["data"].clone())
    })
    .await;
    assert_eq!(done["deliveries_queued"], EVENTS);

    // Kill point 2: mid-way through queuing a second replay (or as close
    // as the machine allows: the first progress seen).
    let (status, accepted) = api(
        Method::POST,
        &base,
        &format!("/{sid}/replay"),
        Some(json!({"after": ANY_TIME})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["data"]["deliveries"], EVENTS);
    let second = accepted["data"]["id"].as_str().unwrap().to_string();
    let path = format!("/{sid}/replays/{second}");
    poll(
        Duration::from_secs(30),
        "replay 2 to make progress",
        || async {
            let (_, body) = api(Method::GET, &base, &path, None).await;
            (body["data"]["events_done"].as_u64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
    kill_9(child);
    let at_kill = chunks_are_atomic(&data, &sid, &second, &ids, 1).await;
    eprintln!(
        "killed mid-way: {:?}, {} of {EVENTS} events queued",
        at_kill.state, at_kill.events_done
    );

    // Kill point 3: while deliveries of the second replay are arriving.
    let (child, _) = boot(&data).await;
    poll(
        Duration::from_secs(30),
        "some deliveries of replay 2",
        || async { (receiver.count() > EVENTS + 200).then_some(()) },
    )
    .await;
    kill_9(child);
    eprintln!("killed mid-delivery at {} requests", receiver.count());

    let (child, base) = boot(&data).await;
    let done = poll(Duration::from_secs(30), "replay 2 to complete", || async {
        let (_, body) = api(Method::GET, &base, &path, None).await;
        (body["data"]["status"] == "completed").then(|| body["data"].clone())
    })
    .await;
    assert_eq!(done["events_done"], EVENTS);
    assert_eq!(done["deliveries_queued"], EVENTS);
    // Every promised delivery arrives: each event at least once per replay.
    delivered_at_least(&receiver, &ids, 2, Duration::from_secs(300)).await;
    kill_9(child);
    // And no chunk was queued twice: exactly one delivery per event per
    // replay on disk.
    chunks_are_atomic(&data, &sid, &second, &ids, 1).await;
    eprintln!("done in {:?}", started.elapsed());
}

/// Store-level: a job whose source is deleted ends `cancelled` (and is
/// then removed with the source's other leftovers); an event purged before
/// its chunk is skipped; a resumed job starts after its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_skip_purged_events_resume_after_their_cursor_and_end_with_their_source() {
    let receiver = Receiver::ok().await;
    let mut server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let src = server.create_none_source("store").await;
    let (sid, slug) = (
        src["id"].as_str().unwrap().to_string(),
        src["slug"].as_str().unwrap().to_string(),
    );
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            server
                .ingest_json(&slug, &json!({"type": "a.b", "n": i}))
                .await,
        );
    }
    let dst = server
        .create_destination(&sid, json!({"url": receiver.url("/hook")}))
        .await;
    server.stop().await;

    let store = open_store_at(&server.data_dir());
    let source = SourceId::parse(&sid).unwrap();
    let raw: Vec<_> = ids.iter().map(|id| EventId::parse(id).unwrap()).collect();
    let job = ReplayRecord {
        id: new_id(),
        source_id: source,
        after_ms: 0,
        before_ms: i64::MAX,
        upper_id: new_id(),
        type_pattern: None,
        only_failed: false,
        destination_ids: None,
        candidates: vec![DestinationId::parse(dst["id"].as_str().unwrap()).unwrap()],
        // As if a chunk up to the 3rd event had been committed before a crash.
        cursor: raw[2].as_u128(),
        events_total: 10,
        deliveries_total: 10,
        events_done: 3,
        deliveries_queued: 3,
        state: ReplayState::Running,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    store.create_replay(job.clone()).await.unwrap();
    // The 6th event is purged (retention) before the job reaches it.
    store.purge_events(vec![raw[5]]).await.unwrap();
    // Two events per chunk.
    let mut steps = 0;
    loop {
        let step = store
            .advance_replay(source, job.id, 1, 2, 100)
            .await
            .unwrap();
        steps += 1;
        assert!(steps < 50, "the job never completes");
        if step.state != Some(ReplayState::Running) {
            assert_eq!(step.state, Some(ReplayState::Completed));
            break;
        }
        assert!(step.events <= 2);
    }
    assert!(steps >= 3, "{steps} chunks");
    let record = store.replay(source, job.id).await.unwrap();
    let mut counts = Vec::new();
    for id in &raw {
        counts.push(delivery_count(&store, *id).await);
    }
    assert_eq!(counts, vec![0, 0, 0, 1, 1, 0, 1, 1, 1, 1]);
    assert_eq!(record.events_done, 3 + 6);
    assert_eq!(record.deliveries_queued, 3 + 6);
    assert_eq!(record.state, ReplayState::Completed);

    // Finished jobs are kept up to a bound per source, newest first.
    for _ in 0..KEPT_PER_SOURCE {
        let mut done = record.clone();
        done.id = new_id();
        store.create_replay(done).await.unwrap();
    }
    let kept = store.list_replays(source, None, 250).await.unwrap();
    assert_eq!(kept.items.len(), KEPT_PER_SOURCE);
    assert!(kept.items.iter().all(|j| j.id != job.id), "the oldest went");

    // A running job whose source is deleted ends cancelled, queues nothing,
    // and is removed with the source's leftovers.
    let mut second = job.clone();
    second.id = new_id();
    second.cursor = 0;
    store.create_replay(second.clone()).await.unwrap();
    store.delete_source(source).await.unwrap();
    let step = store
        .advance_replay(source, second.id, 1, 2, 100)
        .await
        .unwrap();
    assert_eq!(step.state, Some(ReplayState::Cancelled));
    assert_eq!(step.deliveries, 0);
    // Every job of the deleted source stays readable until the leftovers
    // are purged, then none is.
    let newest_kept = kept.items[0].id;
    assert!(store.replay(source, newest_kept).await.is_ok());
    store.purge_orphans().await.unwrap();
    assert!(store.replay(source, second.id).await.is_err());
    assert!(store.replay(source, newest_kept).await.is_err());
    store.close().await;
}

/// How many deliveries an event has; 0 for one no longer stored.
async fn delivery_count(store: &Store, event_id: EventId) -> usize {
    match store.event(event_id).await {
        Ok(event) => store
            .event_detail(event.source_id, event_id)
            .await
            .unwrap()
            .2
            .len(),
        Err(_) => 0,
    }
}

/// The bulk replay limit (`limits.bulk_replay_events`, 1,000,000 by
/// default) at its edge, lowered to 50 so the test stays small: one event
/// more than the limit is refused with 422 on `after` and leaves no job and
/// no delivery behind; exactly the limit is accepted and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_over_the_configured_limit_is_refused_and_queues_nothing() {
    const LIMIT: usize = 50;
    let receiver = Receiver::ok().await;
    let server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        c.limits.bulk_replay_events = LIMIT;
    })
    .await;
    let src = server.create_none_source("limited").await;
    let (sid, slug) = (src["id"].as_str().unwrap(), src["slug"].as_str().unwrap());
    let first = server
        .ingest_json(slug, &json!({"type": "order.created", "first": true}))
        .await;
    let (status, detail) = server.get(&format!("{SOURCES}/{sid}/events/{first}")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let first_at = detail["data"]["received_at"].as_str().unwrap().to_string();
    // The rest arrive strictly after the first's millisecond.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rest = ingest_many(&server.base, slug, LIMIT).await;
    // Made after ingest: only replays reach it.
    server
        .create_destination(sid, json!({"url": receiver.url("/hook")}))
        .await;
    let replays = format!("{SOURCES}/{sid}/replays");

    // 51 events match: refused, naming `after` and the limit.
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{sid}/replay"),
            json!({"after": ANY_TIME}),
        )
        .await;
    common::assert_invalid_field(status, &body, "after");
    let message = body["error"]["details"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&LIMIT.to_string()) && message.contains("limits.bulk_replay_events"),
        "{body}"
    );
    // No job was stored.
    let (status, page) = server.get(&replays).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["data"],
        json!([]),
        "a refused replay left a job: {page}"
    );

    // Exactly the limit (everything after the first event): accepted, and
    // at this size queued before the 202.
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{sid}/replay"),
            json!({"after": first_at}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["events"], LIMIT, "{body}");
    assert_eq!(body["data"]["deliveries"], LIMIT, "{body}");
    assert_eq!(body["data"]["status"], "completed", "{body}");
    let (_, page) = server.get(&replays).await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");

    // Exactly those 50 are delivered, once each; the refused call queued
    // nothing (the first event, outside the accepted range, never arrives).
    delivered_at_least(&receiver, &rest, 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = per_event(&receiver);
    assert_eq!(counts.len(), LIMIT, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(
        !counts.contains_key(&first),
        "the refused replay queued the first event"
    );
}
