//! The live event stream (SPEC §14) end to end: a real server, real HTTP
//! clients reading `text/event-stream` byte by byte, real storage (redb, or
//! PostgreSQL with `KRAFTER_TEST_BACKEND=postgres`). Inbound signatures are
//! computed here with `hmac`, never by Krafter's code.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{assert_error, stripe_signature, TestServer};

/// One block of a `text/event-stream` (the lines up to a blank line).
#[derive(Debug, Default, Clone)]
pub struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comments: Vec<String>,
}

/// Reads a stream's blocks from a response as bytes arrive.
pub struct SseReader {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buf: Vec::new(),
        }
    }

    /// The next block, `None` when the stream ended or `within` passed.
    pub async fn next_block(&mut self, within: Duration) -> Option<Block> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("the stream is UTF-8");
                let mut block = Block::default();
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        block.comments.push(c.trim().to_string());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                        match field {
                            "id" => block.id = Some(value),
                            "event" => block.event = Some(value),
                            "data" => {
                                assert!(block.data.is_none(), "data is one line: {text}");
                                block.data = Some(value)
                            }
                            other => panic!("unexpected field {other}: {text}"),
                        }
                    }
                }
                return Some(block);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }

    /// The next event block (heartbeats skipped), as (id, detail object).
    pub async fn next_event(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let block = self.next_block(left).await?;
            if let Some(data) = block.data.clone() {
                assert_eq!(block.event.as_deref(), Some("event"), "{block:?}");
                let id = block.id.expect("every event has an id");
                let detail: Value = serde_json::from_str(&data).expect("data is JSON");
                assert_eq!(detail["id"], id, "the SSE id is the event id");
                return Some((id, detail));
            }
        }
    }

    /// `n` events, failing if they do not all come within `within`.
    pub async fn events(&mut self, n: usize, within: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(e) => out.push(e),
                None => panic!("only {} of {n} events within {within:?}", out.len()),
            }
        }
        out
    }
}

fn stream_path(source_id: &str) -> String {
    format!("/api/v1/webhooks/sources/{source_id}/events/stream")
}

/// Opens the stream with `key` and extra headers; asserts a 200
/// `text/event-stream` and reads past the opening comment.
pub async fn open(
    server: &TestServer,
    key: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> SseReader {
    let mut request = server
        .client
        .get(format!("{}{}", server.base, path_and_query))
        .bearer_auth(key);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the stream answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut reader = SseReader::new(response);
    let first = reader
        .next_block(Duration::from_secs(5))
        .await
        .expect("the stream opens with a comment at once");
    assert!(first.data.is_none(), "{first:?}");
    reader
}

/// Ingests `count` events of `event_type` into a `none` source, one after
/// the other; returns their ids in order.
async fn ingest_many(
    server: &TestServer,
    slug: &str,
    event_type: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(
            server
                .ingest_json(slug, &json!({"type": event_type, "n": n}))
                .await,
        );
    }
    ids
}

#[tokio::test]
async fn the_stream_sends_a_newly_ingested_event_with_its_detail() {
    let server = TestServer::start().await;
    let source = server.create_source("stripe live").await;
    let id = source["id"].as_str().unwrap();
    let slug = source["slug"].as_str().unwrap();
    let (_, reader_key) = server.create_key(&["webhooks:read"]).await;
    let mut stream = open(&server, &reader_key, &stream_path(id), &[]).await;

    let body = br#"{"id":"evt_stripe_1","type":"invoice.paid","data":{"n":1}}"#.to_vec();
    let (status, answer) = server
        .post_in(
            slug,
            &[
                ("content-type", "application/json".to_string()),
                (
                    "stripe-signature",
                    stripe_signature("whsec_test_secret", &body),
                ),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let event_id = answer["data"]["event_id"].as_str().unwrap().to_string();

    let (sent_id, detail) = stream
        .next_event(Duration::from_secs(15))
        .await
        .expect("the new event arrives on the stream");
    assert_eq!(sent_id, event_id);
    // The detail object of SPEC §10, the same as GET .../events/{id}.
    let (status, got) = server
        .get(&format!("/api/v1/webhooks/sources/{id}/events/{event_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["type"], "invoice.paid");
    assert_eq!(detail["source_id"], id);
    assert_eq!(detail["provider_event_id"], "evt_stripe_1");
    assert_eq!(detail["body"].as_str().unwrap().as_bytes(), &body[..]);
    assert_eq!(detail["headers"], got["data"]["headers"]);
    assert_eq!(detail["received_at"], got["data"]["received_at"]);
    assert!(detail["headers"]["stripe-signature"].is_string());
    // Nothing more was stored, so nothing more is sent.
    assert!(stream.next_event(Duration::from_secs(3)).await.is_none());
}

#[tokio::test]
async fn resuming_after_a_restart_has_no_gap_and_no_duplicate() {
    const N: usize = 6;
    let mut server = TestServer::start().await;
    let source = server.create_none_source("resume").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let marker = ingest_many(&server, &slug, "marker", 1).await.remove(0);
    let before = ingest_many(&server, &slug, "batch.one", N).await;

    // ?after= sends the stored events after the marker, oldest first.
    let key = server.admin_key.clone();
    let mut stream = open(
        &server,
        &key,
        &format!("{}?after={marker}", stream_path(&id)),
        &[],
    )
    .await;
    let first: Vec<String> = stream
        .events(N, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(first, before);
    let last_seen = first.last().unwrap().clone();
    drop(stream);

    server.reopen().await;
    let after = ingest_many(&server, &slug, "batch.two", N).await;
    let key = server.admin_key.clone();
    let mut stream = open(
        &server,
        &key,
        // The header wins over the query (a browser reconnecting keeps
        // the URL's first ?after= and sends Last-Event-ID).
        &format!("{}?after={marker}", stream_path(&id)),
        &[("last-event-id", &last_seen)],
    )
    .await;
    let second: Vec<String> = stream
        .events(N, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(second, after, "exactly the events after the last one seen");
    assert!(
        stream.next_event(Duration::from_secs(4)).await.is_none(),
        "no duplicate after the stored ones"
    );
    let all: HashSet<&String> = first.iter().chain(&second).collect();
    assert_eq!(all.len(), 2 * N);
}

#[tokio::test]
async fn concurrent_ingests_all_arrive_once_in_id_order() {
    // Ids are made before the commit, so concurrent ingests commit out of
    // id order; the stream must neither skip nor repeat any of them.
    const TASKS: usize = 8;
    const EACH: usize = 15;
    let server = TestServer::start().await;
    let source = server.create_none_source("race").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let key = server.admin_key.clone();
    let mut stream = open(&server, &key, &stream_path(&id), &[]).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let client = server.client.clone();
        let url = format!("{}/in/{slug}", server.base);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..EACH {
                let answer: Value = client
                    .post(&url)
                    .json(&json!({"type": "race", "t": t, "n": n}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(answer["data"]["event_id"].as_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut ingested = Vec::new();
    for task in tasks {
        ingested.extend(task.await.unwrap());
    }
    ingested.sort();
    let got: Vec<String> = stream
        .events(TASKS * EACH, Duration::from_secs(30))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, ingested, "every event once, in id order");
    assert!(stream.next_event(Duration::from_secs(3)).await.is_none());
}

#[tokio::test]
async fn the_type_filter_uses_destination_pattern_syntax() {
    let server = TestServer::start().await;
    let source = server.create_none_source("typed").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let marker = ingest_many(&server, &slug, "marker", 1).await.remove(0);
    let a1 = ingest_many(&server, &slug, "invoice.paid", 1).await;
    ingest_many(&server, &slug, "charge.failed", 2).await;
    let a2 = ingest_many(&server, &slug, "invoice.voided", 1).await;
    let key = server.admin_key.clone();
    let mut stream = open(
        &server,
        &key,
        &format!("{}?after={marker}&type=invoice.*", stream_path(&id)),
        &[],
    )
    .await;
    let got = stream.events(2, Duration::from_secs(15)).await;
    assert_eq!(got[0].0, a1[0]);
    assert_eq!(got[1].0, a2[0]);
    assert_eq!(got[1].1["type"], "invoice.voided");
    assert!(stream.next_event(Duration::from_secs(3)).await.is_none());
}

#[tokio::test]
async fn stream_errors_use_the_envelope() {
    let server = TestServer::start().await;
    let source = server.create_none_source("errors").await;
    let id = source["id"].as_str().unwrap().to_string();
    let path = stream_path(&id);

    let (status, body) = server.call(Method::GET, &path, None, None).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = server
        .call(
            Method::GET,
            &path,
            Some("krf_0123456789abcdefghijABCDEFGHIJ0123"),
            None,
        )
        .await;
    assert_error(status, &body, 401, "unauthorized");
    // A revoked key stops at once.
    let (key_id, key) = server.create_key(&["webhooks:read"]).await;
    server.delete(&format!("/api/v1/api-keys/{key_id}")).await;
    let (status, body) = server.call(Method::GET, &path, Some(&key), None).await;
    assert_error(status, &body, 401, "unauthorized");

    let admin = server.admin_key.clone();
    let unknown = "src_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let (status, body) = server
        .call(Method::GET, &stream_path(unknown), Some(&admin), None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .call(Method::GET, &stream_path("nonsense"), Some(&admin), None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .call(
            Method::GET,
            &format!("{path}?after=evt_nope"),
            Some(&admin),
            None,
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    let response = server
        .client
        .get(format!("{}{path}", server.base))
        .bearer_auth(&admin)
        .header("last-event-id", "12345")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_error(StatusCode::BAD_REQUEST, &body, 400, "bad_request");
    let long = "x".repeat(2000);
    let (status, body) = server
        .call(
            Method::GET,
            &format!("{path}?type={long}"),
            Some(&admin),
            None,
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_open_past_the_idle_timeout() {
    // The heartbeat is min(15 s, server.idle_timeout / 2): with a 2 s idle
    // timeout a comment comes every second, and the watchdog that closes
    // idle connections never closes a healthy stream.
    let server = TestServer::start_with(|c| c.server.idle_timeout = Duration::from_secs(2)).await;
    let source = server.create_none_source("beats").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let key = server.admin_key.clone();
    let mut stream = open(&server, &key, &stream_path(&id), &[]).await;
    let started = Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let block = stream
            .next_block(Duration::from_secs(3))
            .await
            .expect("a heartbeat within the idle timeout");
        assert!(block.data.is_none());
        assert_eq!(block.comments, ["keep-alive"]);
        beats += 1;
    }
    assert!(beats >= 3, "{beats} heartbeats in 5 s");
    let sent = ingest_many(&server, &slug, "after.idle", 1).await;
    let (got, _) = stream.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(got, sent[0], "the stream outlived the idle timeout");
}

#[tokio::test]
async fn shutdown_ends_open_streams_promptly() {
    let mut server = TestServer::start().await;
    let source = server.create_none_source("bye").await;
    let id = source["id"].as_str().unwrap().to_string();
    let key = server.admin_key.clone();
    let mut stream = open(&server, &key, &stream_path(&id), &[]).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} on an open stream",
        started.elapsed()
    );
    assert!(stream.next_block(Duration::from_secs(5)).await.is_none());
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_without_growing_memory() {
    const EVENTS: usize = 2_000;
    const BODY: usize = 64 * 1024;
    let server = TestServer::start_with(|c| c.server.idle_timeout = Duration::from_secs(3)).await;
    let source = server.create_none_source("stalled").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let key = server.admin_key.clone();

    // A raw connection with a small receive buffer that asks for the
    // stream and then never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n\r\n",
        stream_path(&id)
    );
    stalled.write_all(request.as_bytes()).await.unwrap();

    let baseline = rss_bytes();
    let mut peak = baseline;
    let filler = "x".repeat(BODY);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..EVENTS {
        let client = server.client.clone();
        let url = format!("{}/in/{slug}", server.base);
        let body = json!({"type": "big", "n": n, "filler": filler}).to_string();
        tasks.spawn(async move {
            let status = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, StatusCode::OK);
        });
        if tasks.len() >= 8 {
            tasks.join_next().await.unwrap().unwrap();
            if n % 100 == 0 {
                peak = peak.max(rss_bytes());
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // The settle window passes, then the stream has every event to send.
    tokio::time::sleep(Duration::from_secs(4)).await;

    peak = peak.max(rss_bytes());
    let total = (EVENTS * BODY) as u64;
    eprintln!(
        "ingested {} MiB in {:?}; RSS {} → peak {} MiB",
        total >> 20,
        started.elapsed(),
        baseline >> 20,
        peak >> 20
    );
    // Were the events queued for the stalled client, memory would grow by
    // at least their size.
    assert!(
        peak < baseline + total / 2,
        "RSS grew from {baseline} to {peak} with {total} bytes of events"
    );
    // The server still answers.
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);

    // The stalled connection was closed: what is left to read is what was
    // in flight, then the end.
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // Already closed by the server, while the client read nothing: what
    // was in flight drains at once, then the end comes (a connection still
    // open would now stream on, or idle for another timeout).
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled connection is still open ({received} bytes read)"
    );
    assert!(
        (received as u64) < total / 4,
        "{received} bytes were sent of {total}"
    );
}

// ---- `krafter listen` and `krafter events tail`, the real binary ----

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc;

use crate::common::receiver::{self, Receiver, Reply};
use crate::common::{krafter, standard_webhooks_signature, standard_webhooks_verifies};

/// A spawned CLI with its stdout lines arriving on a channel.
struct Cli {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Cli {
    fn spawn(args: &[&str]) -> Cli {
        let mut child = krafter()
            .args(args)
            .env_remove("KRAFTER_API_KEY")
            .env_remove("KRAFTER_URL")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("krafter runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Cli {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next stdout line, within `within`.
    async fn line(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.seen.push(line.clone());
                    return line;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("the CLI's stdout closed; it printed {:?}", self.seen)
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(
                Instant::now() < deadline,
                "no line within {within:?}; printed so far {:?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code.
    async fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the CLI did not exit within 10 s of SIGINT");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on a fixed loopback port, so a CLI pointed at it can reconnect
/// after a restart.
async fn server_on_fixed_port() -> TestServer {
    let port = crate::common::free_port();
    TestServer::start_with(move |c| c.server.listen = format!("127.0.0.1:{port}").parse().unwrap())
        .await
}

/// Checks one forwarded request against the event: body and content type
/// as ingested, `webhook-id` the event id, and a Standard Webhooks
/// signature that verifies under `secret` (computed here with `hmac`).
fn assert_forwarded(hit: &receiver::Received, secret: &str, event_id: &str, body: &[u8], ct: &str) {
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.body, body);
    assert_eq!(hit.must("content-type"), ct);
    assert_eq!(hit.must("webhook-id"), event_id);
    let ts = hit.must("webhook-timestamp");
    let now = crate::common::sign::unix_secs();
    let sent: i64 = ts.parse().unwrap();
    assert!((now - sent).abs() < 60, "timestamp {ts} is now");
    assert!(
        standard_webhooks_verifies(
            secret,
            event_id,
            ts,
            &hit.body,
            hit.must("webhook-signature")
        ),
        "signature {} does not verify under {secret}",
        hit.must("webhook-signature")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_forwards_signed_events_resumes_after_a_restart_and_exits_0_on_ctrl_c() {
    let mut server = server_on_fixed_port().await;
    let source = server.create_none_source("local dev").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let (_, key) = server.create_key(&["webhooks:read"]).await;
    let app = Receiver::ok().await;
    let forward = app.url("/webhooks");
    let base = server.base.clone();
    let mut cli = Cli::spawn(&[
        "listen",
        "--source",
        &id,
        "--forward-to",
        &forward,
        "--url",
        &base,
        "--api-key",
        &key,
    ]);
    let header = cli.line(Duration::from_secs(20)).await;
    assert!(
        header.contains("local dev") && header.contains(&id),
        "{header}"
    );
    let target = cli.line(Duration::from_secs(5)).await;
    assert!(target.contains(&forward), "{target}");
    let secret_line = cli.line(Duration::from_secs(5)).await;
    let secret = secret_line
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .unwrap_or_else(|| panic!("no secret in {secret_line:?}"))
        .to_string();
    cli.line(Duration::from_secs(5)).await; // ready
                                            // The stream is open once the CLI says so; give it a moment to connect.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let json_body = br#"{"type":"order.created","n":1}"#.to_vec();
    let first = server
        .ingest_bytes(&slug, "application/json", json_body.clone())
        .await;
    let binary_body = vec![0u8, 159, 146, 150, 255, 1];
    let second = server
        .ingest_bytes(&slug, "application/octet-stream", binary_body.clone())
        .await;
    let hits = app.wait_for(2, Duration::from_secs(20)).await;
    assert_forwarded(&hits[0], &secret, &first, &json_body, "application/json");
    assert_forwarded(
        &hits[1],
        &secret,
        &second,
        &binary_body,
        "application/octet-stream",
    );
    for event in [&first, &second] {
        let line = cli.line(Duration::from_secs(10)).await;
        assert!(
            line.contains(event.as_str()) && line.contains("-> 200"),
            "{line}"
        );
    }

    // The server goes away for a while; the CLI retries with a growing
    // backoff, so events stored right after the restart are older than the
    // settle window when it reconnects: only resuming after the last event
    // it saw (Last-Event-ID) brings them, once, and the old ones not again.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    server.reopen().await;
    assert_eq!(server.base, base, "same port");
    let third = server
        .ingest_bytes(&slug, "application/json", b"{\"n\":3}".to_vec())
        .await;
    let fourth = server
        .ingest_bytes(&slug, "application/json", b"{\"n\":4}".to_vec())
        .await;
    let hits = app.wait_for(4, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hits_now = app.requests();
    assert_eq!(
        hits_now.len(),
        4,
        "no duplicate forwards: {:?}",
        hits_now
            .iter()
            .map(|h| h.must("webhook-id").to_string())
            .collect::<Vec<_>>()
    );
    assert_forwarded(&hits[2], &secret, &third, b"{\"n\":3}", "application/json");
    assert_forwarded(&hits[3], &secret, &fourth, b"{\"n\":4}", "application/json");

    assert_eq!(cli.interrupt().await, Some(0), "Ctrl-C exits 0");
}

#[tokio::test]
async fn listen_signs_with_a_given_secret_and_retries_when_asked() {
    // The secret of the Standard Webhooks reference vector: the checker
    // used here reproduces that vector, so it is the official algorithm.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(
        standard_webhooks_signature(
            VECTOR_SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    let server = TestServer::start().await;
    let source = server.create_none_source("retrying").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    // The app fails the first try of each event, then accepts.
    let app = Receiver::start(receiver::sequence(
        vec![Reply::status(500), Reply::ok(), Reply::status(503)],
        Reply::status(503),
    ))
    .await;
    let forward = app.url("/hook");
    let key = server.admin_key.clone();
    let base = server.base.clone();
    let mut cli = Cli::spawn(&[
        "listen",
        "--source",
        &id,
        "--forward-to",
        &forward,
        "--url",
        &base,
        "--api-key",
        &key,
        "--secret",
        VECTOR_SECRET,
        "--retry",
        "1",
        "--events",
        "order.*",
    ]);
    for _ in 0..4 {
        cli.line(Duration::from_secs(20)).await;
    }
    assert!(cli.seen[2].contains(VECTOR_SECRET), "{:?}", cli.seen);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .ingest_json(&slug, &json!({"type": "ignored.kind"}))
        .await;
    let event = server
        .ingest_json(&slug, &json!({"type": "order.paid"}))
        .await;
    let hits = app.wait_for(2, Duration::from_secs(20)).await;
    for (n, hit) in hits.iter().enumerate() {
        assert_eq!(hit.must("webhook-id"), event, "only order.* is forwarded");
        assert_eq!(hit.must("krafter-attempt"), (n + 1).to_string());
        assert!(standard_webhooks_verifies(
            VECTOR_SECRET,
            &event,
            hit.must("webhook-timestamp"),
            &hit.body,
            hit.must("webhook-signature")
        ));
    }
    let line = cli.line(Duration::from_secs(10)).await;
    assert!(line.contains(&event) && line.contains("-> 200"), "{line}");
    // A third event fails twice (503, then 503): reported, not retried forever.
    let failing = server
        .ingest_json(&slug, &json!({"type": "order.failed"}))
        .await;
    let line = cli.line(Duration::from_secs(20)).await;
    assert!(line.contains(&failing) && line.contains("-> 503"), "{line}");
    assert_eq!(app.count(), 4, "one retry, as asked");
    assert_eq!(cli.interrupt().await, Some(0));
}

#[tokio::test]
async fn events_tail_prints_one_json_line_per_event() {
    let server = TestServer::start().await;
    let source = server.create_none_source("tailed").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let (_, key) = server.create_key(&["webhooks:read"]).await;
    let base = server.base.clone();
    let mut cli = Cli::spawn(&[
        "events",
        "tail",
        "--source",
        &id,
        "--url",
        &base,
        "--api-key",
        &key,
    ]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = server
        .ingest_json(&slug, &json!({"type": "a.one", "text": "line\nbreak"}))
        .await;
    let b = server.ingest_json(&slug, &json!({"type": "b.two"})).await;
    for (want, kind) in [(&a, "a.one"), (&b, "b.two")] {
        let line = cli.line(Duration::from_secs(20)).await;
        let detail: Value = serde_json::from_str(&line).expect("each line is JSON");
        assert_eq!(detail["id"], want.as_str());
        assert_eq!(detail["type"], kind);
        assert_eq!(detail["source_id"], id.as_str());
        assert!(detail["headers"].is_object() && detail["body"].is_string());
    }
    assert_eq!(cli.interrupt().await, Some(0));

    // A source that does not exist ends the command with the server's word.
    // (Off the runtime's thread: the server answering it runs there.)
    let mut command = krafter();
    command.args([
        "events",
        "tail",
        "--source",
        "src_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "--url",
        &base,
        "--api-key",
        &key,
    ]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404"), "{stderr}");
}

// ---- The dashboard's live events page ----

#[tokio::test]
async fn the_dashboard_events_page_streams_new_events_with_the_session() {
    use crate::common::browser::Browser;
    let server = TestServer::start().await;
    let source = server.create_none_source("dashboard live").await;
    let id = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    let page_path = format!("/dashboard/sources/{id}/events");
    let stream_url = format!("{page_path}/stream");

    // Without a session: the sign-in page, never the stream.
    let mut b = Browser::new(&server.base);
    b.get(&stream_url).await.assert_sign_in_redirect();

    let (_, key) = server.create_key(&["webhooks:read"]).await;
    b.sign_in(&key).await;
    let page = b.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text.contains(&format!("data-stream=\"{stream_url}\"")),
        "the page names its stream: {}",
        page.text
    );
    // The script that reads it is the embedded one (the CSP allows no
    // inline script), and the page stays usable without it.
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let script = b.get("/dashboard/assets/dashboard.js").await;
    assert!(script.text.contains("new EventSource(") && script.text.contains("data-stream"));
    // A time range or an older page is not "live".
    let ranged = b.get(&format!("{page_path}?after=2020-01-01T00:00")).await;
    assert!(!ranged.text.contains("data-stream="), "{}", ranged.text);
    let typed = b.get(&format!("{page_path}?type=order.*")).await;
    assert!(typed
        .text
        .contains(&format!("data-stream=\"{stream_url}?type=order.*\"")));

    // The stream itself, with the session cookie as a browser sends it.
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let response = server
        .client
        .get(format!("{}{stream_url}", server.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = SseReader::new(response);
    stream
        .next_block(Duration::from_secs(5))
        .await
        .expect("opened");
    let event = server
        .ingest_json(&slug, &json!({"type": "order.created"}))
        .await;
    let (got, detail) = stream.next_event(Duration::from_secs(15)).await.unwrap();
    assert_eq!(got, event);
    assert_eq!(detail["type"], "order.created");
}
