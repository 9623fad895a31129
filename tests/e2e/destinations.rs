//! Destinations over real HTTP (SPEC §6): creation and its one-time
//! secret, updates, secret rotation, deletion, ownership, validation and the
//! SSRF guard. Only IP literals and RFC 6761 names are used: no test here
//! needs DNS or a network beyond loopback.

use std::collections::HashSet;

use crate::common::{assert_error, assert_invalid_field, assert_timestamp, TestServer};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SOURCES: &str = "/api/v1/webhooks/sources";
const PUBLIC_URL: &str = "https://93.184.216.34/hook";

fn dests(source_id: &str) -> String {
    format!("{SOURCES}/{source_id}/destinations")
}

fn dest(source_id: &str, id: &str) -> String {
    format!("{SOURCES}/{source_id}/destinations/{id}")
}

/// Asserts `whsec_` + standard base64 of at least 24 bytes; returns the key bytes.
fn assert_secret(value: &Value) -> Vec<u8> {
    let secret = value
        .as_str()
        .unwrap_or_else(|| panic!("secret not a string: {value}"));
    let encoded = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("secret lacks whsec_: {secret}"));
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("secret is not base64: {secret}: {e}"));
    assert!(key.len() >= 24, "secret key is only {} bytes", key.len());
    key
}

/// Asserts the SPEC §6 shape (without `secret`, which callers check).
fn assert_destination_shape(d: &Value, source_id: &str, with_secret: bool) {
    let keys: HashSet<&str> = d
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {d}"))
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "source_id",
        "url",
        "event_filter",
        "enabled",
        "created_at",
        "updated_at",
    ] {
        assert!(keys.contains(k), "missing {k}: {d}");
    }
    assert_eq!(keys.contains("secret"), with_secret, "secret presence: {d}");
    let id = d["id"].as_str().expect("id");
    assert_eq!(id.strip_prefix("dst_").map(str::len), Some(26), "{id}");
    assert_eq!(d["source_id"], source_id);
    assert!(d["url"].is_string());
    assert!(d["event_filter"].is_array());
    assert!(d["enabled"].is_boolean());
    assert_timestamp(&d["created_at"]);
    assert_timestamp(&d["updated_at"]);
}

async fn new_source(server: &TestServer) -> String {
    server.create_source("src").await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn create(server: &TestServer, source_id: &str, body: Value) -> Value {
    let (status, resp) = server.post(&dests(source_id), body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body} → {resp}");
    resp["data"].clone()
}

#[tokio::test]
async fn create_returns_the_destination_and_its_secret_once() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;

    let d = create(&server, &sid, json!({"url": PUBLIC_URL})).await;
    assert_destination_shape(&d, &sid, true);
    assert_eq!(d["url"], PUBLIC_URL);
    assert_eq!(d["event_filter"], json!([]), "default filter is empty");
    assert_eq!(d["enabled"], true);
    assert_eq!(d["created_at"], d["updated_at"]);
    assert_secret(&d["secret"]);

    let filtered = create(
        &server,
        &sid,
        json!({"url": "http://93.184.216.34:8080/in?x=1", "event_filter": ["invoice.paid", "charge.*", "*"]}),
    )
    .await;
    assert_eq!(
        filtered["event_filter"],
        json!(["invoice.paid", "charge.*", "*"])
    );
    assert_eq!(filtered["url"], "http://93.184.216.34:8080/in?x=1");
    assert_ne!(
        filtered["secret"], d["secret"],
        "every destination has its own secret"
    );
    assert_ne!(filtered["id"], d["id"]);

    let disabled = create(
        &server,
        &sid,
        json!({"url": PUBLIC_URL, "enabled": false, "rate_limit": 5, "event_filter": []}),
    )
    .await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["rate_limit"], 5);
    assert_eq!(disabled["event_filter"], json!([]));

    // The list is newest first and never carries a secret.
    let (status, list) = server.get(&dests(&sid)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["id"])
        .collect();
    assert_eq!(ids, vec![&disabled["id"], &filtered["id"], &d["id"]]);
    assert_eq!(list["next_cursor"], Value::Null);
    for item in list["data"].as_array().unwrap() {
        assert_destination_shape(item, &sid, false);
    }

    // The source counts them.
    let (_, source) = server.get(&format!("{SOURCES}/{sid}")).await;
    assert_eq!(source["data"]["destinations_count"], 3);
}

#[tokio::test]
async fn the_secret_never_appears_after_creation() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    let admin = Some(server.admin_key.as_str());
    let d = create(&server, &sid, json!({"url": PUBLIC_URL})).await;
    let id = d["id"].as_str().unwrap().to_string();
    let secret = d["secret"].as_str().unwrap().to_string();
    let encoded = secret.strip_prefix("whsec_").unwrap().to_string();
    let clean = |what: &str, text: &str| {
        assert!(!text.contains(&encoded), "{what} leaks the secret: {text}");
        assert!(!text.contains("whsec_"), "{what} shows a secret: {text}");
    };

    let resp = server
        .call_raw(Method::GET, &dest(&sid, &id), admin, None)
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    clean("get", &resp.text);
    assert_destination_shape(&resp.json()["data"], &sid, false);

    let resp = server
        .call_raw(Method::GET, &dests(&sid), admin, None)
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    clean("list", &resp.text);

    for body in [
        json!({"enabled": false}),
        json!({"url": "https://93.184.216.34/other"}),
        json!({"event_filter": ["a.*"]}),
        json!({"rate_limit": 3}),
        json!({}),
    ] {
        let resp = server
            .call_raw(Method::PATCH, &dest(&sid, &id), admin, Some(body.clone()))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{body}: {}", resp.text);
        clean("patch", &resp.text);
        assert_destination_shape(&resp.json()["data"], &sid, false);
    }
    let resp = server
        .call_raw(Method::GET, &format!("{SOURCES}/{sid}"), admin, None)
        .await;
    clean("source", &resp.text);

    let server = server.restart().await;
    let resp = server
        .call_raw(Method::GET, &dests(&sid), Some(&server.admin_key), None)
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    clean("list after restart", &resp.text);
    assert!(
        !server.stored_contains(encoded.as_bytes()).await,
        "the secret is stored in plaintext"
    );
}

#[tokio::test]
async fn patch_changes_each_field() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    let d = create(
        &server,
        &sid,
        json!({"url": PUBLIC_URL, "event_filter": ["a"]}),
    )
    .await;
    let path = dest(&sid, d["id"].as_str().unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let (status, body) = server
        .patch(&path, json!({"url": "https://[2606:4700:4700::1111]/new"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = &body["data"];
    assert_eq!(after["url"], "https://[2606:4700:4700::1111]/new");
    assert_eq!(
        after["event_filter"],
        json!(["a"]),
        "absent fields are kept"
    );
    assert_eq!(after["enabled"], true);
    assert_eq!(after["id"], d["id"]);
    assert_eq!(after["created_at"], d["created_at"]);
    assert!(after["updated_at"].as_str().unwrap() > d["updated_at"].as_str().unwrap());

    let (status, body) = server
        .patch(
            &path,
            json!({"event_filter": ["invoice.*", "charge.succeeded"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["event_filter"],
        json!(["invoice.*", "charge.succeeded"])
    );

    let (status, body) = server.patch(&path, json!({"event_filter": []})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["event_filter"], json!([]));

    let (status, body) = server.patch(&path, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["enabled"], false);
    let (_, got) = server.get(&path).await;
    assert_eq!(got["data"]["enabled"], false);

    let (status, body) = server.patch(&path, json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["enabled"], true);

    let (status, body) = server.patch(&path, json!({"rate_limit": 25})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["rate_limit"], 25);
    let (status, body) = server.patch(&path, json!({"rate_limit": 0})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["rate_limit"],
        Value::Null,
        "0 removes the limit"
    );

    let (status, last) = server.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(last["data"], body["data"], "GET shows what PATCH answered");
    assert_eq!(last["data"]["url"], "https://[2606:4700:4700::1111]/new");

    // Invalid updates are refused and change nothing.
    let cases = [
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "ftp://93.184.216.34/x"}), "url"),
        (json!({"url": "http://127.0.0.1/"}), "url"),
        (json!({"event_filter": [""]}), "event_filter"),
        (json!({"event_filter": "invoice.paid"}), "event_filter"),
        (json!({"enabled": 1}), "enabled"),
        (json!({"rate_limit": 10_001}), "rate_limit"),
        (json!({"secret": "whsec_mine"}), "secret"),
        (
            json!({"source_id": "src_01ARZ3NDEKTSV4RRFFQ69G5FAV"}),
            "source_id",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = server.patch(&path, body.clone()).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {status} {resp}"
        );
        assert_invalid_field(status, &resp, field);
    }
    let (_, unchanged) = server.get(&path).await;
    assert_eq!(unchanged["data"], last["data"]);
}

#[tokio::test]
async fn rotate_secret_issues_a_new_secret() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    let d = create(&server, &sid, json!({"url": PUBLIC_URL})).await;
    let id = d["id"].as_str().unwrap();
    let rotate = format!("{}/rotate-secret", dest(&sid, id));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let resp = server
        .call_raw(Method::POST, &rotate, Some(&server.admin_key), None)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let first = resp.json()["data"].clone();
    assert_destination_shape(&first, &sid, true);
    assert_eq!(first["id"], d["id"]);
    assert_eq!(first["url"], d["url"]);
    let old_key = assert_secret(&d["secret"]);
    let new_key = assert_secret(&first["secret"]);
    assert_ne!(first["secret"], d["secret"]);
    assert_ne!(old_key, new_key);
    assert!(first["updated_at"].as_str().unwrap() > d["updated_at"].as_str().unwrap());

    // An empty JSON body is fine too, and every rotation gives another secret.
    let (status, body) = server.post(&rotate, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = &body["data"]["secret"];
    assert_secret(second);
    assert_ne!(second, &first["secret"]);
    assert_ne!(second, &d["secret"]);

    // Afterwards GET still shows no secret.
    let resp = server
        .call_raw(Method::GET, &dest(&sid, id), Some(&server.admin_key), None)
        .await;
    assert!(!resp.text.contains("whsec_"), "{}", resp.text);

    // Only write scope may rotate.
    let (_, read) = server.create_key(&["webhooks:read"]).await;
    let (status, body) = server.call(Method::POST, &rotate, Some(&read), None).await;
    assert_error(status, &body, 403, "forbidden");

    // Unknown destination: 404.
    let (status, body) = server
        .post(
            &format!(
                "{}/rotate-secret",
                dest(&sid, "dst_01ARZ3NDEKTSV4RRFFQ69G5FAV")
            ),
            json!({}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn delete_removes_only_that_destination() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    let gone = create(&server, &sid, json!({"url": PUBLIC_URL})).await;
    let kept = create(&server, &sid, json!({"url": PUBLIC_URL})).await;
    let gone_path = dest(&sid, gone["id"].as_str().unwrap());

    let resp = server
        .call_raw(Method::DELETE, &gone_path, Some(&server.admin_key), None)
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text);
    assert!(resp.text.is_empty());

    let (status, body) = server.get(&gone_path).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.patch(&gone_path, json!({"enabled": false})).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .post(&format!("{gone_path}/rotate-secret"), json!({}))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.delete(&gone_path).await;
    assert_error(status, &body, 404, "not_found");

    let (_, list) = server.get(&dests(&sid)).await;
    let ids: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["id"])
        .collect();
    assert_eq!(ids, vec![&kept["id"]]);
    let (_, source) = server.get(&format!("{SOURCES}/{sid}")).await;
    assert_eq!(source["data"]["destinations_count"], 1);
}

#[tokio::test]
async fn destinations_of_another_source_are_404() {
    let server = TestServer::start().await;
    let a = new_source(&server).await;
    let b = new_source(&server).await;
    let da = create(&server, &a, json!({"url": PUBLIC_URL})).await;
    let da_id = da["id"].as_str().unwrap();
    let unknown_src = "src_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let unknown_dst = "dst_01ARZ3NDEKTSV4RRFFQ69G5FAV";

    let wrong_pairs = [
        (b.as_str(), da_id),
        (unknown_src, da_id),
        (a.as_str(), unknown_dst),
        (a.as_str(), a.as_str()),
        (da_id, da_id),
        (a.as_str(), "dst_nope"),
        ("src_nope", da_id),
    ];
    for (source, id) in wrong_pairs {
        let path = dest(source, id);
        let (status, body) = server.get(&path).await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = server.patch(&path, json!({"enabled": false})).await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = server
            .post(&format!("{path}/rotate-secret"), json!({}))
            .await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = server.delete(&path).await;
        assert_error(status, &body, 404, "not_found");
    }
    for source in [unknown_src, da_id, "src_nope"] {
        let (status, body) = server.get(&dests(source)).await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = server
            .post(&dests(source), json!({"url": PUBLIC_URL}))
            .await;
        assert_error(status, &body, 404, "not_found");
    }

    // B sees none of A's destinations; A's destination is untouched.
    let (_, list) = server.get(&dests(&b)).await;
    assert_eq!(list["data"], json!([]));
    let (status, got) = server.get(&dest(&a, da_id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["data"]["enabled"], true);
}

#[tokio::test]
async fn invalid_destinations_are_422_naming_the_field() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    let too_long = format!("https://93.184.216.34/{}", "a".repeat(2048));
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": ""}), "url"),
        (json!({"url": "/relative/path"}), "url"),
        (json!({"url": "93.184.216.34/hook"}), "url"),
        (json!({"url": "ftp://93.184.216.34/file"}), "url"),
        (json!({"url": "file:///etc/passwd"}), "url"),
        (json!({"url": "mailto:ops@acme.test"}), "url"),
        (json!({"url": "javascript:alert(1)"}), "url"),
        (json!({"url": "http://"}), "url"),
        (json!({"url": too_long}), "url"),
        (json!({"url": 42}), "url"),
        (
            json!({"url": PUBLIC_URL, "event_filter": [""]}),
            "event_filter",
        ),
        (
            json!({"url": PUBLIC_URL, "event_filter": ["ok", ""]}),
            "event_filter",
        ),
        (
            json!({"url": PUBLIC_URL, "event_filter": ["a\u{7}b"]}),
            "event_filter",
        ),
        (
            json!({"url": PUBLIC_URL, "event_filter": ["x".repeat(257)]}),
            "event_filter",
        ),
        (
            json!({"url": PUBLIC_URL, "event_filter": "invoice.paid"}),
            "event_filter",
        ),
        (
            json!({"url": PUBLIC_URL, "event_filter": [1]}),
            "event_filter",
        ),
        (json!({"url": PUBLIC_URL, "rate_limit": 0}), "rate_limit"),
        (json!({"url": PUBLIC_URL, "rate_limit": -1}), "rate_limit"),
        (
            json!({"url": PUBLIC_URL, "rate_limit": 10_001}),
            "rate_limit",
        ),
        (json!({"url": PUBLIC_URL, "enabled": "true"}), "enabled"),
        (
            json!({"url": PUBLIC_URL, "secret": "whsec_chosen"}),
            "secret",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = server.post(&dests(&sid), body.clone()).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {status} {resp}"
        );
        assert_invalid_field(status, &resp, field);
    }
    let (_, list) = server.get(&dests(&sid)).await;
    assert_eq!(list["data"], json!([]), "nothing was created");

    // 2048 characters is still accepted.
    let base = "https://93.184.216.34/";
    let exactly = format!("{base}{}", "b".repeat(2048 - base.len()));
    assert_eq!(exactly.len(), 2048);
    let d = create(&server, &sid, json!({"url": exactly})).await;
    assert_eq!(d["url"], exactly);
}

/// Destination URLs whose host is a forbidden address, written as IP
/// literals (or `localhost`, which never needs DNS).
const PRIVATE_URLS: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/hook",
    "https://10.1.2.3/hook",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:9/",
    // Alternative spellings that URL parsers turn into loopback.
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://LOCALHOST./",
];

#[tokio::test]
async fn private_network_urls_are_refused_by_default() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    let ok = create(&server, &sid, json!({"url": PUBLIC_URL})).await;
    let ok_path = dest(&sid, ok["id"].as_str().unwrap());
    for url in PRIVATE_URLS {
        let (status, body) = server.post(&dests(&sid), json!({"url": url})).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "create {url} → {status} {body}"
        );
        assert_invalid_field(status, &body, "url");

        let (status, body) = server.patch(&ok_path, json!({"url": url})).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "patch {url} → {status} {body}"
        );
        assert_invalid_field(status, &body, "url");
    }
    let (_, list) = server.get(&dests(&sid)).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["url"], PUBLIC_URL);
}

#[tokio::test]
async fn public_and_unresolvable_hosts_are_accepted() {
    let server = TestServer::start().await;
    let sid = new_source(&server).await;
    for url in [
        "https://93.184.216.34/hook",
        "http://93.184.216.34:8080/a/b?c=d",
        "https://[2606:4700:4700::1111]/",
        "https://8.8.8.8/",
        // A name that cannot resolve is accepted (deliveries retry until it does).
        "https://receiver.invalid/hook",
    ] {
        let d = create(&server, &sid, json!({"url": url})).await;
        assert_eq!(d["url"], url);
    }
}

#[tokio::test]
async fn private_networks_are_accepted_when_allowed() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let sid = new_source(&server).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/",
        "http://[::1]:8080/",
        "http://localhost:9/",
    ] {
        let d = create(&server, &sid, json!({"url": url})).await;
        assert_eq!(d["url"], url);
    }
    // Shape rules still apply.
    let (status, body) = server
        .post(&dests(&sid), json!({"url": "ftp://127.0.0.1/"}))
        .await;
    assert_invalid_field(status, &body, "url");
}
