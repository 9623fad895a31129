//! API keys over real HTTP (SPEC §3, §4): creation, shown-once keys,
//! pagination, revocation, scopes and authentication failures.

use crate::common;

use std::collections::HashSet;

use crate::common::{assert_error, assert_invalid_field, assert_timestamp, TestServer};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEYS: &str = "/api/v1/api-keys";
const SOURCES: &str = "/api/v1/webhooks/sources";

fn object_keys(v: &Value) -> HashSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn assert_id(value: &Value, prefix: &str) -> String {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("id is not a string: {value}"));
    let rest = id
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("id {id} lacks prefix {prefix}"));
    assert_eq!(rest.len(), 26, "id suffix should be a 26-char ULID: {id}");
    assert!(rest.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    id.to_string()
}

/// Asserts a 401 `unauthorized` with a `WWW-Authenticate: Bearer` challenge.
fn assert_unauthorized(resp: &common::RawResponse) {
    assert_error(resp.status, &resp.json(), 401, "unauthorized");
    let challenge = resp
        .headers
        .get(reqwest::header::WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("401 without WWW-Authenticate: {}", resp.text))
        .to_str()
        .expect("ascii header");
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "challenge should name Bearer: {challenge}"
    );
}

async fn list_all_ids(server: &TestServer) -> Vec<String> {
    let (status, body) = server.get(&format!("{KEYS}?limit=250")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["next_cursor"], Value::Null, "{body}");
    body["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn create_returns_the_documented_shape_and_a_working_key() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(KEYS, json!({"name": "ci", "scopes": ["webhooks:write"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let data = &body["data"];
    assert_eq!(
        object_keys(data),
        set(&["id", "name", "scopes", "prefix", "created_at", "key"]),
        "{body}"
    );
    assert_id(&data["id"], "key_");
    assert_eq!(data["name"], "ci");
    assert_eq!(data["scopes"], json!(["webhooks:write"]));
    assert_timestamp(&data["created_at"]);

    let key = data["key"].as_str().expect("key is a string");
    let random = key.strip_prefix("krf_").expect("key starts with krf_");
    assert!(
        random.len() >= 32,
        "key too short: {} random chars",
        random.len()
    );
    assert!(
        random.chars().all(|c| c.is_ascii_alphanumeric()),
        "not base62: {key}"
    );
    assert_eq!(data["prefix"], key.chars().take(8).collect::<String>());

    // The new key authenticates right away, with its scope.
    let (status, body) = server.call(Method::GET, SOURCES, Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Two keys are never the same.
    let (_, other) = server.create_key(&["webhooks:write"]).await;
    assert_ne!(other, key);
}

#[tokio::test]
async fn several_scopes_are_kept() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            KEYS,
            json!({"name": "multi", "scopes": ["webhooks:read", "admin"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let scopes: HashSet<String> = body["data"]["scopes"]
        .as_array()
        .expect("scopes array")
        .iter()
        .map(|s| s.as_str().expect("scope string").to_string())
        .collect();
    assert_eq!(scopes, set(&["webhooks:read", "admin"]));
    // Having `admin` among its scopes, the key manages keys.
    let key = body["data"]["key"].as_str().unwrap();
    let (status, body) = server.call(Method::GET, KEYS, Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_key_is_shown_once_and_never_again() {
    let server = TestServer::start().await;
    let resp = server
        .call_raw(
            Method::POST,
            KEYS,
            Some(&server.admin_key),
            Some(json!({"name": "once", "scopes": ["webhooks:write"]})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let created = resp.json();
    let key = created["data"]["key"].as_str().expect("key").to_string();
    let id = created["data"]["id"].as_str().expect("id").to_string();
    // The bootstrap key never appears either (it only lives in admin.key).
    let secrets = [key.clone(), server.admin_key.clone()];
    let check = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} leaks a key: {text}"
            );
        }
    };

    // The list shows the key's metadata and prefix but never a `key` field.
    let list = server
        .call_raw(Method::GET, KEYS, Some(&server.admin_key), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    check("list", &list.text);
    let listed = list.json();
    let items = listed["data"].as_array().expect("data array");
    assert_eq!(items.len(), 2, "{listed}");
    for item in items {
        assert_eq!(
            object_keys(item),
            set(&["id", "name", "scopes", "prefix", "created_at"]),
            "{item}"
        );
    }
    let mine = items
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed");
    assert_eq!(mine["prefix"], &key[..8]);
    assert_eq!(mine["name"], "once");
    assert_eq!(mine["scopes"], json!(["webhooks:write"]));
    assert_eq!(mine["created_at"], created["data"]["created_at"]);

    // Responses to requests made with the key, successful or not, never echo it.
    let ok = server
        .call_raw(
            Method::POST,
            SOURCES,
            Some(&key),
            Some(json!({"name": "s", "provider": "none"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    check("source create", &ok.text);
    let forbidden = server.call_raw(Method::GET, KEYS, Some(&key), None).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    check("403", &forbidden.text);
    let invalid = server
        .call_raw(Method::POST, SOURCES, Some(&key), Some(json!({"name": ""})))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    check("422", &invalid.text);

    // Nor after a restart.
    let server = server.restart().await;
    let list = server
        .call_raw(Method::GET, KEYS, Some(&server.admin_key), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    check("list after restart", &list.text);
    let (status, _) = server.call(Method::GET, SOURCES, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "the key survives a restart");
}

#[tokio::test]
async fn list_paginates_newest_first_without_gaps_or_duplicates() {
    let server = TestServer::start().await;
    let bootstrap = list_all_ids(&server).await;
    assert_eq!(bootstrap.len(), 1, "only the bootstrap key at first");
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(server.create_key(&["webhooks:read"]).await.0);
    }
    // Newest first: the reverse of creation order, bootstrap key last.
    let mut expected: Vec<String> = created.iter().rev().cloned().collect();
    expected.push(bootstrap[0].clone());
    assert_eq!(list_all_ids(&server).await, expected);

    // Default page (no limit) holds all six.
    let (status, body) = server.get(KEYS).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 6);
    assert_eq!(body["next_cursor"], Value::Null);

    for limit in [1usize, 2, 4, 6] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("{KEYS}?limit={limit}&cursor={c}"),
                None => format!("{KEYS}?limit={limit}"),
            };
            let (status, body) = server.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = body["data"].as_array().expect("data");
            assert!(
                page.len() <= limit,
                "page larger than limit {limit}: {body}"
            );
            pages += 1;
            seen.extend(page.iter().map(|k| k["id"].as_str().unwrap().to_string()));
            match body["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(page.len(), limit, "a non-final page must be full");
                    cursor = Some(c.to_string());
                }
                None => {
                    assert!(body["next_cursor"].is_null(), "{body}");
                    break;
                }
            }
            assert!(pages <= 10, "pagination does not end");
        }
        assert_eq!(seen, expected, "limit={limit}");
        assert_eq!(pages, 6usize.div_ceil(limit), "limit={limit}");
    }
}

#[tokio::test]
async fn pagination_is_stable_while_keys_are_created() {
    let server = TestServer::start().await;
    for _ in 0..3 {
        server.create_key(&["webhooks:read"]).await;
    }
    let before = list_all_ids(&server).await;
    assert_eq!(before.len(), 4);
    let (_, first) = server.get(&format!("{KEYS}?limit=2")).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    // A key created between pages is newer than the cursor: it does not
    // shift the rest of the listing.
    let (newest, _) = server.create_key(&["webhooks:read"]).await;
    let (_, second) = server.get(&format!("{KEYS}?limit=2&cursor={cursor}")).await;
    let mut seen: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    assert_eq!(seen, before);
    seen.insert(0, newest);
    assert_eq!(list_all_ids(&server).await, seen);
}

#[tokio::test]
async fn revoking_a_key_stops_it_at_once() {
    let server = TestServer::start().await;
    let (id, key) = server.create_key(&["webhooks:write"]).await;
    let (status, _) = server.call(Method::GET, SOURCES, Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);

    let resp = server
        .call_raw(
            Method::DELETE,
            &format!("{KEYS}/{id}"),
            Some(&server.admin_key),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text);
    assert!(resp.text.is_empty(), "204 has no body: {}", resp.text);

    // The very next request with it is refused.
    let resp = server
        .call_raw(Method::GET, SOURCES, Some(&key), None)
        .await;
    assert_unauthorized(&resp);
    let resp = server
        .call_raw(
            Method::POST,
            SOURCES,
            Some(&key),
            Some(json!({"name": "s", "provider": "none"})),
        )
        .await;
    assert_unauthorized(&resp);
    assert!(!list_all_ids(&server).await.contains(&id));

    // Revoking it again, or an id that never existed: 404.
    let (status, body) = server.delete(&format!("{KEYS}/{id}")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .delete(&format!("{KEYS}/key_01ARZ3NDEKTSV4RRFFQ69G5FAV"))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.delete(&format!("{KEYS}/key_nope")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.delete(&format!("{KEYS}/not-an-id")).await;
    assert_error(status, &body, 404, "not_found");

    // The other keys are untouched, and revocation survives a restart.
    let server = server.restart().await;
    let (status, _) = server.get(SOURCES).await;
    assert_eq!(status, StatusCode::OK);
    let resp = server
        .call_raw(Method::GET, SOURCES, Some(&key), None)
        .await;
    assert_unauthorized(&resp);
}

#[tokio::test]
async fn an_admin_key_can_revoke_itself() {
    let server = TestServer::start().await;
    let (id, key) = server.create_key(&["admin"]).await;
    let (status, body) = server
        .call(Method::DELETE, &format!("{KEYS}/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let resp = server.call_raw(Method::GET, KEYS, Some(&key), None).await;
    assert_unauthorized(&resp);
}

#[tokio::test]
async fn read_scope_reads_but_cannot_write() {
    let server = TestServer::start().await;
    let source = server.create_source("s").await;
    let sid = source["id"].as_str().unwrap();
    let (_, read) = server.create_key(&["webhooks:read"]).await;
    let read = Some(read.as_str());

    for path in [
        SOURCES.to_string(),
        format!("{SOURCES}/{sid}"),
        format!("{SOURCES}/{sid}/destinations"),
    ] {
        let (status, body) = server.call(Method::GET, &path, read, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }

    let (status, body) = server
        .call(
            Method::POST,
            SOURCES,
            read,
            Some(json!({"name": "nope", "provider": "none"})),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("{SOURCES}/{sid}"),
            read,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = server
        .call(Method::DELETE, &format!("{SOURCES}/{sid}"), read, None)
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = server
        .call(
            Method::POST,
            &format!("{SOURCES}/{sid}/destinations"),
            read,
            Some(json!({"url": "https://93.184.216.34/hook"})),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = server.call(Method::GET, KEYS, read, None).await;
    assert_error(status, &body, 403, "forbidden");

    // Nothing was changed by the refused requests.
    let (_, list) = server.get(SOURCES).await;
    let items = list["data"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["name"], "s");
    assert_eq!(items[0]["destinations_count"], 0);
}

#[tokio::test]
async fn write_scope_writes_but_cannot_manage_keys() {
    let server = TestServer::start().await;
    let (_, write) = server.create_key(&["webhooks:write"]).await;
    let write = Some(write.as_str());

    let (status, body) = server
        .call(
            Method::POST,
            SOURCES,
            write,
            Some(json!({"name": "w", "provider": "none"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sid = body["data"]["id"].as_str().unwrap().to_string();
    let (status, body) = server
        .call(Method::GET, &format!("{SOURCES}/{sid}"), write, None)
        .await;
    assert_eq!(status, StatusCode::OK, "write includes read: {body}");

    let (status, body) = server.call(Method::GET, KEYS, write, None).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = server
        .call(
            Method::POST,
            KEYS,
            write,
            Some(json!({"name": "escalate", "scopes": ["admin"]})),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let bootstrap_id = list_all_ids(&server).await.pop().unwrap();
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("{KEYS}/{bootstrap_id}"),
            write,
            None,
        )
        .await;
    assert_error(status, &body, 403, "forbidden");

    // No key was made or revoked.
    assert_eq!(list_all_ids(&server).await.len(), 2);
}

#[tokio::test]
async fn missing_or_bad_credentials_get_401_with_a_challenge() {
    let server = TestServer::start().await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", server.admin_key))
    );
    let unknown = format!("Bearer krf_{}", "a".repeat(40));
    let headers: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Bearer garbage".into()),
        Some(unknown),
        Some(format!("Bearer {}x", server.admin_key)),
        Some(basic),
        Some(server.admin_key.clone()),
        Some(format!("Token {}", server.admin_key)),
    ];
    for (path, method) in [
        (SOURCES, Method::GET),
        (KEYS, Method::GET),
        (KEYS, Method::POST),
    ] {
        for header in &headers {
            let mut req = server
                .client
                .request(method.clone(), format!("{}{path}", server.base));
            if let Some(h) = header {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            }
            if method == Method::POST {
                req = req.json(&json!({"name": "x", "scopes": ["admin"]}));
            }
            let resp = req.send().await.expect("reaches server");
            let status = resp.status();
            let hdrs = resp.headers().clone();
            let text = resp.text().await.unwrap();
            let raw = common::RawResponse {
                status,
                headers: hdrs,
                text,
            };
            assert!(
                raw.status == StatusCode::UNAUTHORIZED,
                "{method} {path} with {header:?}: {} {}",
                raw.status,
                raw.text
            );
            assert_unauthorized(&raw);
        }
    }
    // None of those created a key.
    assert_eq!(list_all_ids(&server).await.len(), 1);

    // The scheme name is case-insensitive (RFC 9110).
    let resp = server
        .client
        .get(format!("{}{SOURCES}", server.base))
        .header(
            reqwest::header::AUTHORIZATION,
            format!("bearer {}", server.admin_key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn invalid_requests_are_422_naming_the_field() {
    let server = TestServer::start().await;
    let cases = [
        (json!({"name": "", "scopes": ["admin"]}), "name"),
        (json!({"name": "   ", "scopes": ["admin"]}), "name"),
        (
            json!({"name": "x".repeat(201), "scopes": ["admin"]}),
            "name",
        ),
        (json!({"scopes": ["admin"]}), "name"),
        (json!({"name": 5, "scopes": ["admin"]}), "name"),
        (json!({"name": "ci", "scopes": []}), "scopes"),
        (json!({"name": "ci"}), "scopes"),
        (json!({"name": "ci", "scopes": ["root"]}), "scopes"),
        (
            json!({"name": "ci", "scopes": ["webhooks:read", "webhooks:delete"]}),
            "scopes",
        ),
        (json!({"name": "ci", "scopes": "admin"}), "scopes"),
        (json!({"name": "ci", "scopes": [1]}), "scopes"),
    ];
    for (body, field) in cases {
        let (status, resp) = server.post(KEYS, body.clone()).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {status} {resp}"
        );
        assert_invalid_field(status, &resp, field);
    }
    // An unknown scope names its position.
    let (status, resp) = server
        .post(
            KEYS,
            json!({"name": "ci", "scopes": ["webhooks:read", "root"]}),
        )
        .await;
    assert_invalid_field(status, &resp, "scopes[1]");
    // Several problems are reported together.
    let (status, resp) = server.post(KEYS, json!({"name": "", "scopes": []})).await;
    assert_invalid_field(status, &resp, "name");
    assert_invalid_field(status, &resp, "scopes");

    // 200 characters (not bytes) is the limit.
    let (status, resp) = server
        .post(KEYS, json!({"name": "é".repeat(200), "scopes": ["admin"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    assert_eq!(resp["data"]["name"], "é".repeat(200));

    // Only that one key was made.
    assert_eq!(list_all_ids(&server).await.len(), 2);
}
