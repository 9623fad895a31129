//! SPEC §17 end to end: what an attacker, a full disk and a bad network
//! did to the server, replayed against the real server on 127.0.0.1 with
//! raw sockets, a real (tiny) tmpfs and real receivers. Each test is the
//! attack itself; each failed before the fix it guards.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::receiver::{Receiver, Reply};
use crate::common::{poll, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SOURCES: &str = "/api/v1/webhooks/sources";

fn addr_of(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `within` passes);
/// returns what arrived and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// 1. Each request with a new made-up method used to add a metric series
/// forever. Now every unknown method is counted as `other`.
#[tokio::test]
async fn made_up_http_methods_do_not_grow_the_metrics() {
    let server = TestServer::start().await;
    let before = server.metrics_text().await.len();
    for i in 0..40 {
        let method = format!("X{i}{}", "Q".repeat(20_000));
        let mut stream = TcpStream::connect(addr_of(&server)).await.unwrap();
        let request = format!("{method} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(closed, "the server answers and closes");
        assert!(answer.starts_with(b"HTTP/1.1 "), "an HTTP answer");
    }
    let text = server.metrics_text().await;
    assert!(
        !text.contains("QQQQ"),
        "a client-chosen method became a label"
    );
    assert!(
        text.contains("method=\"other\""),
        "unknown methods are counted as `other`"
    );
    assert!(
        text.len() < before + 4_096,
        "metrics grew from {before} to {} bytes",
        text.len()
    );
}

/// 4a. A connection that sends nothing is closed after
/// `server.header_read_timeout`, and an HTTP/2 connection left idle after
/// its preface after `server.idle_timeout`.
#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let server = TestServer::start_with(|c| {
        c.server.header_read_timeout = Duration::from_millis(700);
        c.server.idle_timeout = Duration::from_millis(1200);
    })
    .await;

    let started = Instant::now();
    let mut silent = TcpStream::connect(addr_of(&server)).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(6)).await;
    assert!(closed, "a connection that sends nothing stays open");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // HTTP/2 prior knowledge: the preface and an empty SETTINGS frame, then
    // nothing. The server answers with its SETTINGS, then must hang up.
    let mut h2 = TcpStream::connect(addr_of(&server)).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let started = Instant::now();
    let (frames, closed) = read_until_closed(&mut h2, Duration::from_secs(6)).await;
    assert!(!frames.is_empty(), "the server spoke HTTP/2");
    assert!(closed, "an idle HTTP/2 connection stays open");
    assert!(started.elapsed() >= Duration::from_millis(1000));

    // A keep-alive HTTP/1.1 connection after its request.
    let mut keep = TcpStream::connect(addr_of(&server)).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut keep, Duration::from_secs(6)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(closed, "an idle keep-alive connection stays open");
}

/// 4b. A body that drips in (1 byte every 300 ms) is cut off after
/// `server.body_read_timeout`, with a 400 in the SPEC's envelope.
#[tokio::test]
async fn a_dripping_body_is_cut_off() {
    let server = TestServer::start_with(|c| {
        c.server.body_read_timeout = Duration::from_millis(800);
    })
    .await;
    let source = server.create_none_source("drip").await;
    let slug = source["slug"].as_str().unwrap();
    let mut stream = TcpStream::connect(addr_of(&server)).await.unwrap();
    let head = format!(
        "POST /in/{slug} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let drip = async {
        for _ in 0..100 {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        stream
    };
    let mut stream = drip.await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server kept reading a dripping body for {:?}",
        started.elapsed()
    );
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"bad_request\""), "{text}");
}

/// 4c. Past `server.max_connections` new connections wait instead of
/// taking descriptors, and the server stays responsive: silent ones are
/// closed and the waiting request is served.
#[tokio::test]
async fn connections_past_the_cap_wait_and_are_then_served() {
    let server = TestServer::start_with(|c| {
        c.server.max_connections = 4;
        c.server.header_read_timeout = Duration::from_millis(1000);
    })
    .await;
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(TcpStream::connect(addr_of(&server)).await.unwrap());
    }
    // Give the accept loop time to take all four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        server.call(Method::GET, "/healthz", None, None),
    )
    .await
    .expect("the fifth connection is served once silent ones are closed");
    assert_eq!(status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "served after {waited:?}: the cap did not hold the fifth connection"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(hogs);
}

/// 4d. Shutdown does not wait out its grace period for connections that
/// never sent a byte (a guard: hyper-util already let go of these; the
/// connection watchdog must not hold them).
#[tokio::test]
async fn shutdown_does_not_wait_for_silent_connections() {
    let mut server = TestServer::start_with(|c| {
        c.server.shutdown_grace = Duration::from_secs(20);
    })
    .await;
    let _silent = TcpStream::connect(addr_of(&server)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// 5 and 9. Destination URLs: credentials are refused, text the URL
/// standard reads two ways is refused, and whatever is accepted is stored
/// as the normalised URL the delivery client sends.
#[tokio::test]
async fn destination_urls_are_refused_or_stored_as_sent() {
    let server = TestServer::start().await;
    let source = server.create_none_source("urls").await;
    let path = format!("{SOURCES}/{}/destinations", source["id"].as_str().unwrap());
    for refused in [
        "http://alice:s3cret@example.invalid/hook",
        "http://alice@example.invalid/hook",
        "https://:pw@example.invalid/",
        "http://example.invalid\\@127.0.0.1:19001/",
        "http://example.invalid/a\\b",
        "http://example.invalid/a b",
        "http://example.invalid/\t",
        "http://example.invalid/#frag",
        "ftp://example.invalid/",
    ] {
        let (status, body) = server.post(&path, json!({"url": refused})).await;
        common::assert_invalid_field(status, &body, "url");
    }
    // Accepted forms, and what is stored (and sent).
    for (given, stored) in [
        (
            "https://example.invalid/ü?q=ä",
            "https://example.invalid/%C3%BC?q=%C3%A4",
        ),
        ("HTTP://Example.INVALID:80/x", "http://example.invalid/x"),
        ("https://bücher.invalid/", "https://xn--bcher-kva.invalid/"),
        ("http://example.invalid/a/../b", "http://example.invalid/b"),
        ("http:///slashes.invalid", "http://slashes.invalid/"),
    ] {
        let (status, body) = server.post(&path, json!({"url": given})).await;
        assert_eq!(status, StatusCode::CREATED, "{given}: {body}");
        assert_eq!(body["data"]["url"], stored, "{given}");
        assert!(
            stored.parse::<http::Uri>().is_ok(),
            "{stored} is a valid request target"
        );
    }
    // PATCH refuses credentials too.
    let dest = server
        .create_destination(
            source["id"].as_str().unwrap(),
            json!({"url": "https://example.invalid/p"}),
        )
        .await;
    let (status, body) = server
        .patch(
            &format!("{path}/{}", dest["id"].as_str().unwrap()),
            json!({"url": "https://u:p@example.invalid/p"}),
        )
        .await;
    common::assert_invalid_field(status, &body, "url");
}

/// 7. The sender's credentials and proxy hops are neither stored with the
/// event nor forwarded to destinations.
#[tokio::test]
async fn sender_credentials_and_proxy_headers_are_dropped() {
    let receiver = Receiver::ok().await;
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let source = server.create_none_source("creds").await;
    let sid = source["id"].as_str().unwrap();
    server
        .create_destination(sid, json!({"url": receiver.url("/in")}))
        .await;
    let dropped = [
        ("authorization", "Bearer sender-secret"),
        ("cookie", "session=sender-cookie"),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("forwarded", "for=192.0.2.60;proto=http"),
        ("x-forwarded-for", "192.0.2.60"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "hooks.example.invalid"),
        ("x-real-ip", "192.0.2.60"),
    ];
    let mut request = server
        .client
        .post(format!(
            "{}/in/{}",
            server.base,
            source["slug"].as_str().unwrap()
        ))
        .header("content-type", "application/json")
        .header("x-kept", "yes")
        .body(r#"{"type":"t.creds"}"#);
    for (name, value) in dropped {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let event_id = answer["data"]["event_id"].as_str().unwrap();

    let (status, event) = server
        .get(&format!("{SOURCES}/{sid}/events/{event_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let headers = event["data"]["headers"].as_object().unwrap();
    assert_eq!(headers["x-kept"], "yes");
    for (name, _) in dropped {
        assert!(!headers.contains_key(name), "{name} was stored");
    }
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-kept"), Some("yes"));
    for (name, value) in dropped {
        assert!(got[0].header(name).is_none(), "{name} was forwarded");
        assert!(
            !String::from_utf8_lossy(&got[0].body).contains(value),
            "{name}'s value reached the body"
        );
    }
}

/// 8. A source holds at most `limits.destinations_per_source`
/// destinations, also when creations race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_per_source_are_capped_even_under_races() {
    let server = TestServer::start_with(|c| c.limits.destinations_per_source = 3).await;
    let source = server.create_none_source("capped").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let path = format!("{SOURCES}/{sid}/destinations");
    let mut racing = Vec::new();
    for i in 0..12 {
        let request = server
            .client
            .post(format!("{}{path}", server.base))
            .bearer_auth(&server.admin_key)
            .json(&json!({"url": format!("https://d{i}.example.invalid/")}));
        racing.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }));
    }
    let mut created = 0;
    for task in racing {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::CREATED {
            created += 1;
        } else {
            common::assert_invalid_field(status, &body, "source_id");
            let message = body["error"]["details"][0]["message"].as_str().unwrap();
            assert!(
                message.contains("limits.destinations_per_source"),
                "{message}"
            );
        }
    }
    assert_eq!(created, 3);
    let (_, list) = server.get(&path).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    // Another source is not affected.
    let other = server.create_none_source("other").await;
    server
        .create_destination(
            other["id"].as_str().unwrap(),
            json!({"url": "https://o.example.invalid/"}),
        )
        .await;
}

/// 12. Whatever the umask, the data directory Krafter makes is 0700 and
/// every file in it 0600.
#[tokio::test]
async fn data_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    // The usual default; the files must not inherit its 0644. The mask is
    // the whole test process's (every module runs in it): 022 is what a
    // shell normally starts with, so setting it again whenever this runs
    // changes nothing another test relies on (no other test sets or reads it,
    // and what Krafter creates must not depend on it anyway).
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o022) };
    let server = TestServer::start().await;
    let dir = server.data_dir();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "data directory");
    let mut files = 0;
    // Files 0600, directories (the write-ahead log's) 0700, all the way down.
    let mut dirs = vec![dir.clone()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                dirs.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    if common::on_postgres() {
        assert!(files >= 2, "admin.key and secrets.key");
        assert!(
            !dir.join("krafter.redb").exists(),
            "no redb file on postgres"
        );
    } else {
        assert!(files >= 3, "krafter.redb, admin.key and secrets.key");
    }
}

/// The test network guard: with `delivery.loopback_only` (on in every
/// test server) a destination outside loopback is refused at connect time,
/// without a connection and without a DNS query.
#[tokio::test]
async fn loopback_only_refuses_every_other_address_without_connecting() {
    let server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        c.delivery.retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    assert!(server.config.delivery.loopback_only, "the test guard is on");
    let source = server.create_none_source("guard").await;
    let sid = source["id"].as_str().unwrap();
    // TEST-NET-1 (never routed) and a name that would need DNS.
    for url in ["http://192.0.2.1:9/", "http://hooks.example.com/x"] {
        server.create_destination(sid, json!({"url": url})).await;
    }
    let event_id = server
        .ingest_json(source["slug"].as_str().unwrap(), &json!({"type": "t"}))
        .await;
    let path = format!("{SOURCES}/{sid}/events/{event_id}/deliveries");
    let deliveries = poll(Duration::from_secs(10), "both attempts", || async {
        let (_, body) = server.get(&path).await;
        let list = body["data"].as_array()?.clone();
        let done = list
            .iter()
            .all(|d| d["attempts"].as_array().is_some_and(|a| !a.is_empty()));
        (list.len() == 2 && done).then_some(list)
    })
    .await;
    for delivery in deliveries {
        let attempt = &delivery["attempts"][0];
        assert_eq!(attempt["error_kind"], "ssrf_refused", "{delivery}");
        let message = attempt["error_message"].as_str().unwrap();
        assert!(message.contains("loopback_only"), "{message}");
        assert!(
            attempt["duration_ms"].as_u64().unwrap() < 1000,
            "refused before any connection or lookup: {attempt}"
        );
    }
}

/// Keeps a private tmpfs mounted for as long as it lives.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at a new directory under `parent`; `None`
    /// when this process may not mount (not root).
    fn mount(parent: &std::path::Path, bytes: u64) -> Option<Tmpfs> {
        let path = parent.join("tmpfs");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { path })
    }

    /// Fills the file system with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // Then byte by byte, so not even a small page fits.
        while file.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// 3 and 6. The disk fills while an attempt is in flight: its outcome
/// cannot be recorded. The delivery pauses (no re-send storm), ingest
/// answers 503 `unavailable` (not 500), `/readyz` is 503; once space is
/// freed the store reopens itself, the delivery ends succeeded having been
/// sent at most once more (outcomes are not individually durable), and
/// ingest and delivery resume — no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_delivery_and_recovery_needs_no_restart() {
    if common::redb_only(
        "fills the filesystem under the redb file; PostgreSQL's own disk is not Krafter's data directory",
    ) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(scratch.path(), 24 * 1024 * 1024) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run the full-disk test"
        );
        eprintln!("SKIPPED a_full_disk_pauses_delivery_and_recovery_needs_no_restart: mounting a tmpfs needs root");
        return;
    };
    // The first request is held until the disk is full.
    let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let held = hold.clone();
    let receiver = Receiver::start(move |r| {
        if r.index == 0 && held.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::ok().delay(Duration::from_millis(2500))
        } else {
            Reply::ok()
        }
    })
    .await;
    let data = tmpfs.path.join("data");
    let mut server = TestServer::start_with(|c| {
        c.storage.path = data.clone();
        c.delivery.allow_private_networks = true;
        c.delivery.retry_schedule = vec![Duration::from_secs(1)];
    })
    .await;
    let source = server.create_none_source("full").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let slug = source["slug"].as_str().unwrap().to_string();
    server
        .create_destination(&sid, json!({"url": receiver.url("/in")}))
        .await;
    let first = server.ingest_json(&slug, &json!({"type": "t.first"})).await;
    poll(
        Duration::from_secs(10),
        "the first attempt in flight",
        || async { (receiver.in_flight() == 1).then_some(()) },
    )
    .await;

    let filler = tmpfs.fill();
    // A write now fails: ingest answers 503 in the SPEC's envelope.
    let body =
        serde_json::to_vec(&json!({"type": "t.during", "pad": "x".repeat(64 * 1024)})).unwrap();
    let refused = server
        .raw(
            Method::POST,
            &format!("/in/{slug}"),
            None,
            Some("application/json"),
            Some(body),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(refused.json()["error"]["code"], "unavailable");
    let (ready, _) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);

    // The held attempt now answers 200, but its outcome cannot be
    // recorded. Before the fix it was sent again ~2,500 times a second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.count(), 1, "sent again while storage was full");

    hold.store(false, std::sync::atomic::Ordering::SeqCst);
    std::fs::remove_file(&filler).unwrap();
    poll(
        Duration::from_secs(20),
        "/readyz 200 after space was freed",
        || async {
            let (ready, _) = server.call(Method::GET, "/readyz", None, None).await;
            (ready == StatusCode::OK).then_some(())
        },
    )
    .await;
    let path = format!("{SOURCES}/{sid}/events/{first}/deliveries");
    let delivery = poll(
        Duration::from_secs(20),
        "the kept outcome recorded",
        || async {
            let (_, body) = server.get(&path).await;
            let d = body["data"][0].clone();
            (d["status"] == "succeeded").then_some(d)
        },
    )
    .await;
    // Outcomes are not individually durable (a lost one means one more
    // send, never a storm): the success the full disk kept from being
    // recorded is either recorded now or sent once more.
    assert!(
        !delivery["attempts"].as_array().unwrap().is_empty(),
        "{delivery}"
    );
    assert!(
        receiver.count() <= 2,
        "sent {} times for one delivery",
        receiver.count()
    );

    // Ingest and delivery carry on, with no restart.
    server.ingest_json(&slug, &json!({"type": "t.after"})).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    server.stop().await;
}

/// A request body that never yields a frame and never ends.
struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// 4e. An HTTP/2 stream that sends its headers and then no data is cut off
/// after `server.body_read_timeout` like an HTTP/1.1 body, while the same
/// connection serves other streams.
#[tokio::test]
async fn an_http2_stream_without_data_is_cut_off() {
    use http_body_util::{BodyExt, Empty};
    let server = TestServer::start_with(|c| {
        c.server.body_read_timeout = Duration::from_millis(800);
    })
    .await;
    let source = server.create_none_source("h2").await;
    let slug = source["slug"].as_str().unwrap().to_string();
    let stream = TcpStream::connect(addr_of(&server)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let base = format!("http://{}", addr_of(&server));
    let request = http::Request::post(format!("{base}/in/{slug}"))
        .header("content-type", "application/json")
        .body(Stalled.boxed())
        .unwrap();
    let started = Instant::now();
    let stalled = sender.send_request(request);
    let healthz = http::Request::get(format!("{base}/healthz"))
        .body(Empty::new().boxed())
        .unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(5), sender.clone().send_request(healthz))
        .await
        .expect("another stream answers")
        .unwrap();
    assert_eq!(ok.status(), 200);
    let response = tokio::time::timeout(Duration::from_secs(5), stalled)
        .await
        .expect("the stalled stream is answered within the body deadline")
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(started.elapsed() >= Duration::from_millis(700));
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("bad_request"));
}

/// SPEC §15 `storage.unhealthy`: when the disk fills and storage stops
/// accepting writes, the alert receiver hears of it once (sent from
/// memory: the store cannot queue it), signed like every alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_sends_one_storage_unhealthy_alert() {
    if common::redb_only("fills the filesystem under the redb file") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(scratch.path(), 24 * 1024 * 1024) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must run the full-disk test"
        );
        eprintln!(
            "SKIPPED a_full_disk_sends_one_storage_unhealthy_alert: mounting a tmpfs needs root"
        );
        return;
    };
    let receiver = Receiver::ok().await;
    let data = tmpfs.path.join("data");
    let alerts_url = receiver.url("/alerts");
    let server = TestServer::start_with(|c| {
        c.storage.path = data.clone();
        c.delivery.allow_private_networks = true;
        c.alerts.url = alerts_url;
        c.alerts.secret = crate::alerts::secret();
    })
    .await;
    let source = server.create_none_source("full").await;
    let slug = source["slug"].as_str().unwrap().to_string();
    let filler = tmpfs.fill();
    let body = serde_json::to_vec(&json!({"type": "t", "pad": "x".repeat(64 * 1024)})).unwrap();
    for _ in 0..3 {
        let refused = server
            .raw(
                Method::POST,
                &format!("/in/{slug}"),
                None,
                Some("application/json"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let alert = poll(Duration::from_secs(10), "storage.unhealthy", || async {
        receiver
            .requests_to("/alerts")
            .first()
            .map(crate::alerts::verified)
    })
    .await;
    assert_eq!(alert["type"], "storage.unhealthy");
    assert!(alert["data"]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    std::fs::remove_file(&filler).unwrap();
    poll(Duration::from_secs(20), "/readyz 200 again", || async {
        let (ready, _) = server.call(Method::GET, "/readyz", None, None).await;
        (ready == StatusCode::OK).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count_to("/alerts"), 1, "one alert per outage");
}
