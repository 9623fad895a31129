//! Operating Krafter: JSON logs that never carry secrets, metrics that move,
//! and backup/restore of a running server — with the real binary.

use crate::common;
use crate::common::metric_value;
use crate::common::receiver::Receiver;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const STRIPE_SECRET: &str = "whsec_ops_test_secret_4f1c9a";
const BODY_MARKER: &str = "body-marker-7b3e91";

struct Binary {
    child: Child,
    base: String,
    /// Reads the server's stderr as it is written: a pipe nobody drains
    /// fills up (64 KiB) and then blocks the server's logging, and with it
    /// the runtime thread that logs — the server would never exit.
    logs: std::thread::JoinHandle<String>,
}

/// `krafter serve` on a port the system picks, once it serves.
async fn spawn(data: &Path, env: &[(&str, &str)]) -> Binary {
    let addr_file = common::addr_file(data);
    let mut command = common::krafter();
    command
        .arg("serve")
        .arg("--addr-file")
        .arg(&addr_file)
        .env("KRAFTER_SERVER__LISTEN", "127.0.0.1:0")
        .env("KRAFTER_STORAGE__PATH", data)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    common::database_env(&mut command, common::database_for(data).as_deref());
    let mut child = command.spawn().expect("spawn krafter");
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).expect("logs");
        logs
    });
    let base = common::served_base(&mut child, &addr_file).await;
    Binary { child, base, logs }
}

/// SIGTERM, wait for exit 0, return everything it logged.
fn stop(mut b: Binary) -> String {
    Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .expect("kill");
    let status = b.child.wait().expect("wait");
    assert!(status.success(), "exit status {status:?}");
    b.logs.join().expect("the log reader")
}

/// POSTs JSON with a bearer key and returns the JSON answer.
async fn post_json(url: String, key: &str, body: &Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON answer")
}

/// Sends a Stripe-signed event; returns the status, the JSON answer and
/// the signature header it sent.
async fn ingest(base: &str, slug: &str, body: &str) -> (u16, Value, String) {
    let signature = common::stripe_signature(STRIPE_SECRET, body);
    let headers = [
        ("stripe-signature", signature.clone()),
        ("content-type", "application/json".to_string()),
    ];
    let url = format!("{base}/in/{slug}");
    let (status, resp) = common::post_to(&reqwest::Client::new(), &url, &headers, body).await;
    (status.as_u16(), resp, signature)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_no_secrets_and_metrics_move() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = spawn(
        &data,
        &[
            ("KRAFTER_LOG__FORMAT", "json"),
            ("KRAFTER_LOG__LEVEL", "debug"),
            ("KRAFTER_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true"),
        ],
    )
    .await;
    let admin = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let admin = admin.trim().to_string();
    let client = reqwest::Client::new();
    let api = format!("{}/api/v1", b.base);

    let key: Value = post_json(
        format!("{api}/api-keys"),
        &admin,
        &json!({"name": "ci", "scopes": ["webhooks:write"]}),
    )
    .await;
    let write_key = key["data"]["key"].as_str().unwrap().to_string();
    let source: Value = post_json(
        format!("{api}/webhooks/sources"),
        &write_key,
        &json!({"name": "s", "provider": "stripe", "signing_secret": STRIPE_SECRET}),
    )
    .await;
    let src = source["data"]["id"].as_str().unwrap().to_string();
    let slug = source["data"]["slug"].as_str().unwrap().to_string();
    let receiver = Receiver::ok().await;
    let url = receiver.url("/hook");
    let dest: Value = post_json(
        format!("{api}/webhooks/sources/{src}/destinations"),
        &write_key,
        &json!({"url": url}),
    )
    .await;
    let dest_secret = dest["data"]["secret"].as_str().unwrap().to_string();

    let mut signatures = Vec::new();
    for i in 0..3 {
        let body =
            format!(r#"{{"id":"evt_ops_{i}","type":"invoice.paid","note":"{BODY_MARKER}"}}"#);
        let (status, _, sig) = ingest(&b.base, &slug, &body).await;
        assert_eq!(status, 200);
        signatures.push(sig);
    }
    // One forged request, one unknown slug.
    let forged = client
        .post(format!("{}/in/{slug}", b.base))
        .header("stripe-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(forged, 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.count() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.count(), 3);

    // Metrics moved as expected.
    let text = common::scrape_metrics(&client, &b.base).await;
    let ingest = format!("krafter_ingest_requests_total{{source=\"{src}\",result=\"accepted\"}}");
    assert_eq!(metric_value(&text, &ingest), 3.0, "{text}");
    let invalid =
        format!("krafter_ingest_requests_total{{source=\"{src}\",result=\"invalid_signature\"}}");
    assert_eq!(metric_value(&text, &invalid), 1.0);
    assert_eq!(metric_value(&text, "krafter_events_stored_total"), 3.0);
    // The attempt is counted when the receiver answers and leaves the
    // queue a commit later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = text;
    while !(text.contains("krafter_delivery_attempts_total{result=\"succeeded\"} 3")
        && text.contains("krafter_deliveries_pending 0"))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = common::scrape_metrics(&client, &b.base).await;
    }
    assert_eq!(
        metric_value(
            &text,
            "krafter_delivery_attempts_total{result=\"succeeded\"}"
        ),
        3.0
    );
    assert_eq!(metric_value(&text, "krafter_deliveries_pending"), 0.0);
    assert!(metric_value(&text, "krafter_storage_commit_duration_seconds_count") >= 5.0);
    assert!(metric_value(&text, "krafter_storage_file_size_bytes") > 0.0);
    assert!(metric_value(&text, "krafter_delivery_attempt_duration_seconds_count") >= 3.0);
    for name in [
        "krafter_http_requests_total",
        "krafter_oldest_pending_age_seconds",
        "krafter_destinations_auto_disabled_total",
        "krafter_storage_commit_batch_size",
    ] {
        assert!(
            text.contains(&format!("# HELP {}", name.trim_end_matches("_total"))),
            "{name} has HELP"
        );
    }
    assert!(!text.contains(&slug), "slugs are not metric labels");

    let logs = stop(b);
    let mut lines = 0;
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        lines += 1;
    }
    assert!(lines > 10, "request logs present");
    assert!(
        logs.contains("\"route\":\"/in/{slug}\""),
        "request logs use the route template"
    );
    for secret in [
        admin.as_str(),
        write_key.as_str(),
        STRIPE_SECRET,
        dest_secret.as_str(),
        &dest_secret["whsec_".len()..],
        BODY_MARKER,
        &slug,
    ] {
        assert!(
            !logs.contains(secret),
            "the logs contain a secret or body: {secret}"
        );
    }
    for sig in &signatures {
        let v1 = sig.split("v1=").nth(1).unwrap();
        assert!(!logs.contains(v1), "the logs contain a signature");
    }
}

/// On postgres: `GET /api/v1/backup` is 501 `not_supported` naming
/// pg_dump, and `krafter backup` fails saying so, writing no file.
async fn backup_is_not_supported_on_postgres(b: Binary, file: &Path, admin: &str) {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/backup", b.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_supported", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pg_dump"),
        "{body}"
    );
    let port = b.base.rsplit(':').next().unwrap().to_string();
    let out = tokio::task::spawn_blocking({
        let (file, admin) = (file.to_path_buf(), admin.to_string());
        move || {
            common::krafter()
                .args(["backup", "--to"])
                .arg(&file)
                .env("KRAFTER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .env("KRAFTER_API_KEY", admin)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let _ = stop(b);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("pg_dump") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!file.exists(), "no backup file on postgres");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_running_server_restores_into_a_working_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = spawn(&data, &[]).await;
    let admin = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let client = reqwest::Client::new();
    let source: Value = post_json(
        format!("{}/api/v1/webhooks/sources", b.base),
        &admin,
        &json!({"name": "kept", "provider": "stripe", "signing_secret": STRIPE_SECRET}),
    )
    .await;
    let src = source["data"]["id"].as_str().unwrap().to_string();
    let slug = source["data"]["slug"].as_str().unwrap().to_string();
    if common::on_postgres() {
        // SPEC §12: PostgreSQL is backed up with pg_dump.
        backup_is_not_supported_on_postgres(b, &dir.path().join("krafter.backup"), &admin).await;
        return;
    }
    let body = r#"{"id":"evt_before_backup","type":"invoice.paid"}"#;
    let resp: Value = ingest(&b.base, &slug, body).await.1;
    let event = resp["data"]["event_id"].as_str().unwrap().to_string();

    // Ingest goes on while the backup is taken: (event id, acked before
    // the backup began).
    let stop_ingest = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backup_began = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let (base, slug) = (b.base.clone(), slug.clone());
        let (stop_ingest, backup_began) = (stop_ingest.clone(), backup_began.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop_ingest.load(std::sync::atomic::Ordering::SeqCst) && n < 2_000 {
                let before = !backup_began.load(std::sync::atomic::Ordering::SeqCst);
                let body = format!(r#"{{"id":"evt_bg_{n}","type":"invoice.paid"}}"#);
                let (status, resp, _) = ingest(&base, &slug, &body).await;
                if status == 200 {
                    let id = resp["data"]["event_id"].as_str().unwrap().to_string();
                    acked.push((id, before));
                }
                n += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Backup through the running server, with the real CLI.
    let file = dir.path().join("krafter.backup");
    let port = b.base.rsplit(':').next().unwrap().to_string();
    backup_began.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = tokio::task::spawn_blocking({
        let (file, data) = (file.clone(), data.clone());
        move || {
            common::krafter()
                .args(["backup", "--to"])
                .arg(&file)
                .env("KRAFTER_STORAGE__PATH", &data)
                .env("KRAFTER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    stop_ingest.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = background.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked_before: Vec<&String> = acked.iter().filter(|(_, b)| *b).map(|(id, _)| id).collect();
    assert!(
        acked_before.len() >= 5 && acked.len() > acked_before.len(),
        "ingest ran before ({}) and during ({}) the backup",
        acked_before.len(),
        acked.len() - acked_before.len()
    );
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    // Without an admin key it is refused.
    let refused = client
        .get(format!("{}/api/v1/backup", b.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(refused, 401);
    let _ = stop(b);
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("backup-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary backup files left behind");

    // Restore into a fresh directory, never over existing data.
    let restored = dir.path().join("restored");
    let restore = |target: &Path| {
        common::krafter()
            .args(["restore", "--from"])
            .arg(&file)
            .env("KRAFTER_STORAGE__PATH", target)
            .output()
            .unwrap()
    };
    let out = restore(&data);
    assert!(
        !out.status.success(),
        "restoring over live data must be refused"
    );
    let out = restore(&restored);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let b = spawn(&restored, &[]).await;
    // The old admin key works (its hash was restored; no new bootstrap key).
    assert!(!restored.join("admin.key").exists());
    let got: Value = client
        .get(format!(
            "{}/api/v1/webhooks/sources/{src}/events/{event}",
            b.base
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["body"], body, "{got}");
    // Every event acknowledged before the backup began is in it, and every
    // event the backup holds is whole (one consistent snapshot).
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{}/api/v1/webhooks/sources/{src}/events?limit=250&cursor={cursor}",
                b.base
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["data"].as_array().unwrap() {
            listed.push(e["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    for id in &acked_before {
        assert!(
            listed.contains(id),
            "{id} was acknowledged before the backup but is missing"
        );
    }
    for id in &listed {
        let event: Value = client
            .get(format!(
                "{}/api/v1/webhooks/sources/{src}/events/{id}",
                b.base
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            event["data"]["body"].is_string(),
            "{id} is not whole: {event}"
        );
    }
    // The sealed signing secret opens: a new signed event verifies, and
    // dedup state came along.
    let again: Value = ingest(&b.base, &slug, body).await.1;
    assert_eq!(again["data"]["duplicate"], true, "{again}");
    let fresh = r#"{"id":"evt_after_restore","type":"invoice.paid"}"#;
    let status = ingest(&b.base, &slug, fresh).await.0;
    assert_eq!(status, 200);
    let _ = stop(b);
}
