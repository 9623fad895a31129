//! The audit log (SPEC §15): every change made through the API, the
//! dashboard and the CLI is listed for admins with its actor, action,
//! target and `[old, new]` fields, and no entry ever holds a secret.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::browser::Browser;
use crate::common::{self, krafter, TestServer};

const AUDIT: &str = "/api/v1/audit-log";

/// Every entry, newest first, following cursors (admin key).
async fn all_entries(server: &TestServer, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = server
            .get(&format!("{AUDIT}?limit=250&cursor={cursor}{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.extend(body["data"].as_array().expect("data").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return out,
        }
    }
}

/// The one entry with `action` and `target_id`.
fn entry<'a>(entries: &'a [Value], action: &str, target: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == action && e["target_id"] == target)
        .collect();
    assert_eq!(found.len(), 1, "one {action} of {target} in {entries:#?}");
    found[0]
}

/// The id of the API key `key` (matched by its prefix).
async fn key_id(server: &TestServer, key: &str) -> String {
    listed_key(server, key).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How the API lists `key` (its id, name, prefix...).
async fn listed_key(server: &TestServer, key: &str) -> Value {
    let (_, keys) = server.get("/api/v1/api-keys").await;
    keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == key[..8])
        .expect("key listed")
        .clone()
}

fn assert_no_secret(entries: &[Value], secrets: &[&str]) {
    let text = serde_json::to_string(entries).unwrap();
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(
            !text.contains(secret),
            "the audit log holds the secret {secret}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_are_recorded_with_actor_and_changes_and_no_secret() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let admin_id = key_id(&server, &server.admin_key).await;
    let receiver = common::receiver::Receiver::ok().await;

    let source = server.create_source("Shop").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let dest = server
        .create_destination(
            &sid,
            json!({
                "url": receiver.url("/a"),
                "headers": {"x-api-key": "hdr-SECRET-456"},
                "auth": {"type": "bearer", "token": "tok-SECRET-123"},
            }),
        )
        .await;
    let did = dest["id"].as_str().unwrap().to_string();
    let first_secret = dest["secret"].as_str().unwrap().to_string();
    let dpath = format!("/api/v1/webhooks/sources/{sid}/destinations/{did}");
    let (status, body) = server
        .patch(
            &dpath,
            json!({"url": receiver.url("/b"), "enabled": false,
                   "auth": {"type": "bearer", "token": "tok-SECRET-789"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, rotated) = server
        .post(&format!("{dpath}/rotate-secret"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second_secret = rotated["data"]["secret"].as_str().unwrap().to_string();
    let spath = format!("/api/v1/webhooks/sources/{sid}");
    let (status, body) = server
        .patch(&spath, json!({"signing_secret": "whsec_rotated_SECRET"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .patch(&spath, json!({"name": "Shop 2", "retention_days": 9}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (key_id_made, key_made) = server.create_key(&["webhooks:read"]).await;
    let (status, _) = server
        .delete(&format!("/api/v1/api-keys/{key_id_made}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.delete(&dpath).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.delete(&spath).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let entries = all_entries(&server, "").await;
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(
        actions,
        [
            "source.delete",
            "destination.delete",
            "api_key.revoke",
            "api_key.create",
            "source.update",
            "source.rotate_secret",
            "destination.rotate_secret",
            "destination.update",
            "destination.create",
            "source.create",
        ]
    );
    let admin_name = listed_key(&server, &server.admin_key).await["name"].clone();
    assert!(admin_name.as_str().is_some_and(|n| !n.is_empty()));
    for e in &entries {
        assert_eq!(
            e["actor"],
            json!({"api_key_id": admin_id, "name": admin_name, "via": "api"}),
            "{e}"
        );
        assert!(e["id"].as_str().unwrap().starts_with("aud_"), "{e}");
        common::assert_timestamp(&e["at"]);
    }

    let update = entry(&entries, "destination.update", &did);
    assert_eq!(
        update["changes"]["url"],
        json!([receiver.url("/a"), receiver.url("/b")])
    );
    assert_eq!(update["changes"]["enabled"], json!([true, false]));
    // Same kind of credentials, new token: the change shows, its value does not.
    assert_eq!(
        update["changes"]["auth"],
        json!(["(secret)", "(secret)"]),
        "{update}"
    );
    assert!(update["changes"].get("secret").is_none(), "{update}");
    let rotation = entry(&entries, "destination.rotate_secret", &did);
    assert_eq!(
        rotation["changes"],
        json!({"secret": ["(secret)", "(secret)"]})
    );
    let created = entry(&entries, "destination.create", &did);
    assert_eq!(created["changes"]["url"], json!([null, receiver.url("/a")]));
    assert_eq!(created["changes"]["source_id"], json!([null, sid]));
    assert_eq!(
        created["changes"]["headers"],
        json!([null, {"x-api-key": "(secret)"}])
    );
    assert_eq!(
        created["changes"]["auth"],
        json!([null, {"type": "bearer", "credentials": "(secret)"}])
    );
    let source_update = entry(&entries, "source.update", &sid);
    assert_eq!(
        source_update["changes"],
        json!({"name": ["Shop", "Shop 2"], "retention_days": [30, 9]})
    );
    assert_eq!(
        entry(&entries, "source.rotate_secret", &sid)["changes"],
        json!({"signing_secret": ["(secret)", "(secret)"]})
    );
    let made = entry(&entries, "api_key.create", &key_id_made);
    assert_eq!(made["changes"]["name"], json!([null, "test"]));
    assert_eq!(made["changes"]["scopes"], json!([null, ["webhooks:read"]]));
    entry(&entries, "api_key.revoke", &key_id_made);
    let deleted = entry(&entries, "destination.delete", &did);
    assert_eq!(deleted["changes"]["url"], json!([receiver.url("/b"), null]));
    entry(&entries, "source.delete", &sid);

    assert_no_secret(
        &entries,
        &[
            "whsec_test_secret",
            "whsec_rotated_SECRET",
            &first_secret,
            &second_secret,
            "tok-SECRET-123",
            "tok-SECRET-789",
            "hdr-SECRET-456",
            &key_made,
            &server.admin_key,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_keys_read_the_audit_log() {
    let server = TestServer::start().await;
    server.create_none_source("S").await;
    let (_, read) = server.create_key(&["webhooks:read"]).await;
    let (_, write) = server.create_key(&["webhooks:write"]).await;
    for key in [&read, &write] {
        let (status, body) = server.call(Method::GET, AUDIT, Some(key), None).await;
        common::assert_error(status, &body, 403, "forbidden");
    }
    let (status, body) = server.call(Method::GET, AUDIT, None, None).await;
    common::assert_error(status, &body, 401, "unauthorized");
    let (status, body) = server.get(AUDIT).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 3, "{body}");

    // The dashboard's audit page is an admin's too.
    let mut b = Browser::new(&server.base);
    b.signed_in(&read).await;
    assert_eq!(
        b.get("/dashboard/audit-log").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_cursors_page_through_the_log() {
    let server = TestServer::start().await;
    let (other_id, other) = server.create_key(&["admin"]).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let key = if i % 2 == 0 {
            &server.admin_key
        } else {
            &other
        };
        let (status, body) = server
            .call(
                Method::POST,
                "/api/v1/webhooks/sources",
                Some(key),
                Some(json!({"name": format!("S{i}"), "provider": "none"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        made.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();

    // Pages of two, following the cursor: every source once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, body) = server
            .get(&format!(
                "{AUDIT}?action=source.create&limit=2&cursor={cursor}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        let data = body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(
            data.iter()
                .map(|e| e["target_id"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    // By actor: the other key's id, or its name.
    let by_other = all_entries(&server, &format!("&actor={other_id}")).await;
    let targets: Vec<&str> = by_other
        .iter()
        .map(|e| e["target_id"].as_str().unwrap())
        .collect();
    assert_eq!(targets, [made[3].as_str(), made[1].as_str()]);
    assert!(by_other
        .iter()
        .all(|e| e["actor"]["api_key_id"] == other_id));
    // The admin made the other key and three sources.
    let admin_id = key_id(&server, &server.admin_key).await;
    let by_admin = all_entries(&server, &format!("&actor={admin_id}")).await;
    assert_eq!(by_admin.len(), 4);
    assert_eq!(by_admin[3]["action"], "api_key.create");
    assert_eq!(
        all_entries(&server, "&action=api_key.create").await.len(),
        1
    );
    assert!(all_entries(&server, "&action=nothing.such")
        .await
        .is_empty());

    // By time.
    assert_eq!(
        all_entries(&server, "&after=2000-01-01T00:00:00Z")
            .await
            .len(),
        6
    );
    assert!(all_entries(&server, "&before=2000-01-01T00:00:00Z")
        .await
        .is_empty());
    assert!(all_entries(&server, "&after=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    let newest = &all_entries(&server, "").await[0];
    let at = newest["at"].as_str().unwrap();
    let only = all_entries(&server, &format!("&after={at}&action=source.create")).await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["target_id"], made[4].as_str());
    let before = all_entries(&server, &format!("&before={at}")).await;
    assert!(before.iter().all(|e| e["id"] != newest["id"]));
    // Exactly the entries made earlier than the newest one (several may
    // share its millisecond, so the count comes from the full list).
    let earlier = all_entries(&server, "")
        .await
        .iter()
        .filter(|e| e["at"].as_str() < Some(at))
        .count();
    assert_eq!(before.len(), earlier);

    // A filter no entry can match (a NUL byte, which PostgreSQL text
    // cannot hold) is an empty page, not an error.
    assert!(all_entries(&server, "&actor=a%00b&action=x%00")
        .await
        .is_empty());

    // Bad input: the envelope, never a 500.
    for bad in [
        "after=yesterday",
        "before=1",
        "before=",
        "limit=0",
        "limit=251",
        "cursor=nope",
    ] {
        let (status, body) = server.get(&format!("{AUDIT}?{bad}")).await;
        common::assert_error(status, &body, 400, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_forms_are_recorded_as_the_dashboard() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let admin_id = key_id(&server, &server.admin_key).await;
    let mut b = Browser::new(&server.base);
    let csrf = b.signed_in(&server.admin_key).await;
    let page = b
        .post(
            "/dashboard/sources",
            &[
                ("csrf", &csrf),
                ("name", "Dash"),
                ("provider", "stripe"),
                ("signing_secret", "whsec_dash_SECRET"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let src = page.location().split('?').next().unwrap().to_string();
    let sid = src.rsplit('/').next().unwrap().to_string();
    let page = b
        .post(
            &format!("{src}/edit"),
            &[
                ("csrf", &csrf),
                ("name", "Dash 2"),
                ("retention_days", "30"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let page = b
        .post(
            &format!("{src}/destinations"),
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook"),
                ("event_filter", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let shown = page
        .text
        .split("id=\"new-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new secret is shown once")
        .to_string();
    assert!(shown.starts_with("whsec_"), "{shown}");

    let entries = all_entries(&server, "").await;
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["destination.create", "source.update", "source.create"]
    );
    for e in &entries {
        assert_eq!(e["actor"]["via"], "dashboard", "{e}");
        assert_eq!(e["actor"]["api_key_id"], admin_id.as_str(), "{e}");
    }
    assert_eq!(
        entry(&entries, "source.update", &sid)["changes"],
        json!({"name": ["Dash", "Dash 2"]})
    );
    assert_no_secret(&entries, &["whsec_dash_SECRET", &shown, &server.admin_key]);

    // The dashboard's page lists them, newest first, and filters.
    let page = b.get("/dashboard/audit-log").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let at = |needle: &str| page.text.find(needle).unwrap_or(usize::MAX);
    assert!(at("destination.create") < at("source.update"));
    assert!(at("source.update") < at("source.create"), "{}", page.text);
    assert!(page.text.contains(&sid));
    assert!(!page.text.contains("whsec_dash_SECRET"));
    let page = b.get("/dashboard/audit-log?action=source.update").await;
    assert!(page.text.contains("source.update"));
    assert!(!page.text.contains("destination.create"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_are_recorded_as_the_cli() {
    let mut server = TestServer::start().await;
    let admin_id = key_id(&server, &server.admin_key).await;

    // The API commands: recorded with the key they used, via the CLI.
    let (base, key) = (server.base.clone(), server.admin_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        krafter()
            .args([
                "sources",
                "create",
                "--name",
                "FromCli",
                "--provider",
                "none",
            ])
            .env("KRAFTER_URL", base)
            .env("KRAFTER_API_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The offline key commands, on the data directory of a stopped server:
    // the local operator, with no key.
    server.stop().await;
    let data = server.data_dir();
    let database = server.database.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut cli = krafter();
        cli.args(["api-keys", "create", "--name", "ops", "--scope", "admin"])
            .env("KRAFTER_STORAGE__PATH", &data);
        common::database_env(&mut cli, database.as_deref());
        cli.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(made.starts_with("krf_"), "{made}");
    server.reopen().await;

    let entries = all_entries(&server, "").await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let local = &entries[0];
    assert_eq!(local["action"], "api_key.create");
    assert_eq!(
        local["actor"],
        json!({"api_key_id": null, "name": "local operator", "via": "cli"})
    );
    assert_eq!(local["changes"]["name"], json!([null, "ops"]));
    let remote = &entries[1];
    assert_eq!(remote["action"], "source.create");
    assert_eq!(remote["actor"]["via"], "cli");
    assert_eq!(remote["actor"]["api_key_id"], admin_id.as_str());
    assert_eq!(remote["changes"]["name"], json!([null, "FromCli"]));
    assert_no_secret(&entries, &[&made, &server.admin_key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_retries_are_recorded() {
    let server = TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        c.delivery.retry_schedule = vec![];
    })
    .await;
    // A closed port: the delivery fails for good, so it can be retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let source = server.create_none_source("R").await;
    let sid = source["id"].as_str().unwrap().to_string();
    let dest = server
        .create_destination(&sid, json!({"url": format!("http://{closed}/x")}))
        .await;
    let did = dest["id"].as_str().unwrap().to_string();
    let eid = server
        .ingest_json(source["slug"].as_str().unwrap(), &json!({"type": "t"}))
        .await;
    let events = format!("/api/v1/webhooks/sources/{sid}/events/{eid}");
    let delivery = common::poll(Duration::from_secs(20), "the delivery fails", || async {
        let (_, body) = server.get(&format!("{events}/deliveries")).await;
        let d = &body["data"][0];
        (d["status"] == "failed").then(|| d["id"].as_str().unwrap().to_string())
    })
    .await;
    let (status, body) = server
        .post(&format!("{events}/deliveries/{delivery}/retry"), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = server
        .post(
            &format!("{events}/replay"),
            json!({"destination_ids": [did]}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = server
        .post(
            &format!("/api/v1/webhooks/sources/{sid}/replay"),
            json!({"after": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let job = body["data"]["id"].as_str().unwrap().to_string();

    let entries = all_entries(&server, "").await;
    entry(&entries, "delivery.retry", &delivery);
    let replay = entry(&entries, "event.replay", &eid);
    assert_eq!(replay["changes"]["destination_ids"], json!([null, [did]]));
    let bulk = entry(&entries, "source.bulk_replay", &sid);
    assert_eq!(bulk["changes"]["replay_id"], json!([null, job]));
    assert_eq!(bulk["changes"]["only_failed"], json!([null, false]));
}
