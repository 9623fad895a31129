//! Sources over real HTTP (SPEC §5): every provider, the response shape,
//! secrets never shown, validation, updates, deletion with its
//! destinations, pagination and persistence across a restart.

use std::collections::HashSet;

use crate::common::{self, assert_error, assert_invalid_field, assert_timestamp, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SOURCES: &str = "/api/v1/webhooks/sources";
/// A valid Standard Webhooks secret (`whsec_` + base64 of 24 bytes).
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A destination URL that passes the SSRF check without any DNS.
const PUBLIC_URL: &str = "https://93.184.216.34/hook";

fn documented_keys() -> HashSet<String> {
    [
        "id",
        "slug",
        "url",
        "name",
        "provider",
        "enabled",
        "retention_days",
        "destinations_count",
        "created_at",
        "updated_at",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Asserts the SPEC §5 shape of a source object.
fn assert_source_shape(server: &TestServer, s: &Value) {
    let keys: HashSet<String> = s
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {s}"))
        .keys()
        .cloned()
        .collect();
    let missing: Vec<_> = documented_keys().difference(&keys).cloned().collect();
    assert!(missing.is_empty(), "missing {missing:?} in {s}");
    let extra: Vec<_> = keys
        .difference(&documented_keys())
        .filter(|k| k.as_str() != "provider_config")
        .cloned()
        .collect();
    assert!(extra.is_empty(), "unexpected {extra:?} in {s}");

    let id = s["id"].as_str().expect("id");
    let rest = id.strip_prefix("src_").unwrap_or_else(|| panic!("id {id}"));
    assert_eq!(rest.len(), 26, "{id}");
    let slug = s["slug"].as_str().expect("slug");
    let random = slug
        .strip_prefix("wh_")
        .unwrap_or_else(|| panic!("slug {slug}"));
    assert_eq!(random.len(), 8, "slug {slug}");
    assert!(
        random.chars().all(|c| c.is_ascii_alphanumeric()),
        "slug {slug}"
    );
    assert_eq!(s["url"], format!("{}/in/{slug}", server.base));
    assert!(s["name"].is_string());
    assert!(s["provider"].is_string());
    assert!(s["enabled"].is_boolean());
    assert!(s["retention_days"].is_u64());
    assert!(s["destinations_count"].is_u64());
    assert_timestamp(&s["created_at"]);
    assert_timestamp(&s["updated_at"]);
}

async fn create(server: &TestServer, body: Value) -> Value {
    let (status, resp) = server.post(SOURCES, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body} → {resp}");
    resp["data"].clone()
}

async fn add_destination(server: &TestServer, source_id: &str) -> String {
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{source_id}/destinations"),
            json!({"url": PUBLIC_URL}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"]["id"].as_str().unwrap().to_string()
}

/// POSTs a small event to a source's ingest URL (as given by the API).
async fn ingest(server: &TestServer, url: &str) -> StatusCode {
    let content_type = [("content-type", "application/json".to_string())];
    common::post_to(
        &server.client,
        url,
        &content_type,
        r#"{"type": "test.event"}"#,
    )
    .await
    .0
}

async fn list_ids(server: &TestServer) -> Vec<String> {
    let (status, body) = server.get(&format!("{SOURCES}?limit=250")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn every_provider() -> Vec<(&'static str, Value)> {
    vec![
        (
            "stripe",
            json!({"name": "Stripe production", "provider": "stripe", "signing_secret": "whsec_stripe_abc123"}),
        ),
        (
            "github",
            json!({"name": "GitHub", "provider": "github", "signing_secret": "gh-hook-secret"}),
        ),
        (
            "shopify",
            json!({"name": "Shopify", "provider": "shopify", "signing_secret": "shpss_0123456789abcdef"}),
        ),
        (
            "slack",
            json!({"name": "Slack", "provider": "slack", "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"}),
        ),
        (
            "standard_webhooks",
            json!({"name": "Std", "provider": "standard_webhooks", "signing_secret": SW_SECRET}),
        ),
        (
            "svix",
            json!({"name": "Svix", "provider": "svix", "signing_secret": SW_SECRET}),
        ),
        (
            "generic_hmac",
            json!({
                "name": "Generic",
                "provider": "generic_hmac",
                "signing_secret": "generic-secret",
                "provider_config": {"signature_header": "X-Signature", "encoding": "hex"}
            }),
        ),
        ("none", json!({"name": "Testing", "provider": "none"})),
    ]
}

#[tokio::test]
async fn every_provider_can_be_created_with_the_documented_shape() {
    let server = TestServer::start().await;
    let mut slugs = HashSet::new();
    for (provider, body) in every_provider() {
        let data = create(&server, body.clone()).await;
        assert_source_shape(&server, &data);
        assert_eq!(data["provider"], provider, "{data}");
        assert_eq!(data["name"], body["name"]);
        assert_eq!(data["enabled"], true);
        assert_eq!(data["retention_days"], 30);
        assert_eq!(data["destinations_count"], 0);
        assert_eq!(data["created_at"], data["updated_at"]);
        assert!(
            slugs.insert(data["slug"].as_str().unwrap().to_string()),
            "slug reused"
        );
        if provider == "generic_hmac" {
            assert_eq!(data["provider_config"]["signature_header"], "X-Signature");
            assert_eq!(data["provider_config"]["encoding"], "hex");
        }

        // GET returns the same object.
        let (status, got) = server
            .get(&format!("{SOURCES}/{}", data["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["data"], data);
    }
    assert_eq!(list_ids(&server).await.len(), 8);
}

#[tokio::test]
async fn explicit_settings_and_public_url_are_used() {
    let server = TestServer::start_with(|c| {
        c.server.public_url = "https://hooks.acme.test/".to_string();
    })
    .await;
    let data = create(
        &server,
        json!({"name": "  Padded  ", "provider": "github", "signing_secret": "s",
               "retention_days": 3650, "enabled": false}),
    )
    .await;
    let slug = data["slug"].as_str().unwrap();
    assert_eq!(data["url"], format!("https://hooks.acme.test/in/{slug}"));
    assert_eq!(data["retention_days"], 3650);
    assert_eq!(data["enabled"], false);
    assert_eq!(data["name"], "Padded");

    let data = create(
        &server,
        json!({"name": "x".repeat(200), "provider": "none", "retention_days": 1}),
    )
    .await;
    assert_eq!(data["retention_days"], 1);
    assert_eq!(data["name"].as_str().unwrap().len(), 200);
}

#[tokio::test]
async fn the_signing_secret_never_appears_in_any_response() {
    let server = TestServer::start().await;
    let admin = Some(server.admin_key.as_str());
    let secrets = [
        "whsec_TopSecretStripeValue_9f8e7d",
        "whsec_RotatedStripeValue_1a2b3c",
        "generic-hmac-SECRET-4242",
    ];
    let assert_clean = |what: &str, text: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} leaks a secret: {text}");
        }
        assert!(
            !text.contains("signing_secret"),
            "{what} has a signing_secret field: {text}"
        );
    };

    let resp = server
        .call_raw(
            Method::POST,
            SOURCES,
            admin,
            Some(json!({"name": "s", "provider": "stripe", "signing_secret": secrets[0]})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_clean("create", &resp.text);
    let id = resp.json()["data"]["id"].as_str().unwrap().to_string();
    let one = format!("{SOURCES}/{id}");

    let resp = server
        .call_raw(
            Method::POST,
            SOURCES,
            admin,
            Some(
                json!({"name": "g", "provider": "generic_hmac", "signing_secret": secrets[2],
                        "provider_config": {"signature_header": "X-Signature", "encoding": "hex"}}),
            ),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_clean("create generic", &resp.text);

    let resp = server.call_raw(Method::GET, &one, admin, None).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_clean("get", &resp.text);

    let resp = server.call_raw(Method::GET, SOURCES, admin, None).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_clean("list", &resp.text);

    let resp = server
        .call_raw(Method::PATCH, &one, admin, Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_clean("patch name", &resp.text);

    let resp = server
        .call_raw(
            Method::PATCH,
            &one,
            admin,
            Some(json!({"signing_secret": secrets[1]})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_clean("patch secret", &resp.text);

    // A refused update that carries a secret does not echo it either.
    let resp = server
        .call_raw(
            Method::PATCH,
            &one,
            admin,
            Some(json!({"signing_secret": secrets[1], "retention_days": 0})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        resp.text
    );
    assert_clean("patch 422", &resp.text);
    let resp = server
        .call_raw(
            Method::POST,
            SOURCES,
            admin,
            Some(json!({"name": "", "provider": "stripe", "signing_secret": secrets[0]})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        resp.text
    );
    assert_clean("create 422", &resp.text);

    let server = server.restart().await;
    let admin = Some(server.admin_key.as_str());
    let resp = server.call_raw(Method::GET, SOURCES, admin, None).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_clean("list after restart", &resp.text);
    // The secret is also not stored in plaintext in the database.
    for secret in secrets {
        assert!(
            !server.stored_contains(secret.as_bytes()).await,
            "{secret} stored in plaintext"
        );
    }
}

#[tokio::test]
async fn invalid_creations_are_422_naming_the_field() {
    let server = TestServer::start().await;
    let long = "x".repeat(201);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"provider": "none"}), "name"),
        (json!({"name": "", "provider": "none"}), "name"),
        (json!({"name": "   ", "provider": "none"}), "name"),
        (json!({"name": long, "provider": "none"}), "name"),
        (json!({"name": 7, "provider": "none"}), "name"),
        (json!({"name": "s"}), "provider"),
        (
            json!({"name": "s", "provider": "paypal", "signing_secret": "x"}),
            "provider",
        ),
        (
            json!({"name": "s", "provider": "Stripe", "signing_secret": "x"}),
            "provider",
        ),
        (json!({"name": "s", "provider": "stripe"}), "signing_secret"),
        (
            json!({"name": "s", "provider": "stripe", "signing_secret": ""}),
            "signing_secret",
        ),
        (
            json!({"name": "s", "provider": "github", "signing_secret": null}),
            "signing_secret",
        ),
        (
            json!({"name": "s", "provider": "stripe", "signing_secret": 42}),
            "signing_secret",
        ),
        (
            json!({"name": "s", "provider": "none", "retention_days": 0}),
            "retention_days",
        ),
        (
            json!({"name": "s", "provider": "none", "retention_days": 3651}),
            "retention_days",
        ),
        (
            json!({"name": "s", "provider": "none", "retention_days": -1}),
            "retention_days",
        ),
        (
            json!({"name": "s", "provider": "none", "retention_days": "30"}),
            "retention_days",
        ),
        (
            json!({"name": "s", "provider": "none", "retention_days": 1.5}),
            "retention_days",
        ),
        (
            json!({"name": "s", "provider": "none", "enabled": "yes"}),
            "enabled",
        ),
        (
            json!({"name": "s", "provider": "standard_webhooks", "signing_secret": "whsec_not base64!!"}),
            "signing_secret",
        ),
        (
            json!({"name": "s", "provider": "svix", "signing_secret": "plainly-not-base64-%%%"}),
            "signing_secret",
        ),
        (
            json!({"name": "s", "provider": "generic_hmac", "signing_secret": "x"}),
            "provider_config",
        ),
        (
            json!({"name": "s", "provider": "generic_hmac", "signing_secret": "x",
                   "provider_config": {"signature_header": "X-Signature", "encoding": "rot13"}}),
            "provider_config",
        ),
        (
            json!({"name": "s", "provider": "generic_hmac", "signing_secret": "x",
                   "provider_config": {"signature_header": "bad header\n"}}),
            "provider_config",
        ),
        (
            json!({"name": "s", "provider": "generic_hmac", "signing_secret": "x",
                   "provider_config": {"encoding": "hex"}}),
            "provider_config",
        ),
        (
            json!({"name": "s", "provider": "stripe", "signing_secret": "x",
                   "provider_config": {"signature_header": "X-Signature", "encoding": "hex"}}),
            "provider_config",
        ),
        (
            json!({"name": "s", "provider": "none", "colour": "blue"}),
            "colour",
        ),
        (
            json!({"name": "s", "provider": "none", "slug": "wh_mine1234"}),
            "slug",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = server.post(SOURCES, body.clone()).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {status} {resp}"
        );
        assert_invalid_field(status, &resp, field);
    }
    // Several problems at once are all named.
    let (status, resp) = server
        .post(
            SOURCES,
            json!({"name": "", "provider": "stripe", "retention_days": 0}),
        )
        .await;
    for field in ["name", "signing_secret", "retention_days"] {
        assert_invalid_field(status, &resp, field);
    }
    assert!(list_ids(&server).await.is_empty(), "nothing was created");
}

#[tokio::test]
async fn patch_changes_fields_and_updated_at() {
    let server = TestServer::start().await;
    let created = create(
        &server,
        json!({"name": "before", "provider": "stripe", "signing_secret": "whsec_old"}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let one = format!("{SOURCES}/{id}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let (status, body) = server.patch(&one, json!({"name": "after"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after_name = body["data"].clone();
    assert_source_shape(&server, &after_name);
    assert_eq!(after_name["name"], "after");
    assert_eq!(after_name["id"], created["id"]);
    assert_eq!(after_name["slug"], created["slug"]);
    assert_eq!(after_name["url"], created["url"]);
    assert_eq!(after_name["provider"], "stripe");
    assert_eq!(after_name["enabled"], true);
    assert_eq!(after_name["retention_days"], 30);
    assert_eq!(after_name["created_at"], created["created_at"]);
    assert!(
        after_name["updated_at"].as_str().unwrap() > created["updated_at"].as_str().unwrap(),
        "updated_at must move forward: {created} → {after_name}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, body) = server
        .patch(&one, json!({"enabled": false, "retention_days": 90}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let d = &body["data"];
    assert_eq!(d["enabled"], false);
    assert_eq!(d["retention_days"], 90);
    assert_eq!(d["name"], "after", "absent fields are kept");
    assert!(d["updated_at"].as_str().unwrap() > after_name["updated_at"].as_str().unwrap());

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, body) = server
        .patch(
            &one,
            json!({"signing_secret": "whsec_new", "enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last = body["data"].clone();
    assert_eq!(last["enabled"], true);
    assert_eq!(last["retention_days"], 90);
    assert!(last["updated_at"].as_str().unwrap() > d["updated_at"].as_str().unwrap());

    // GET shows what PATCH answered.
    let (_, got) = server.get(&one).await;
    assert_eq!(got["data"], last);
}

#[tokio::test]
async fn the_ingest_url_works_and_follows_enabled() {
    let server = TestServer::start().await;
    let source = create(&server, json!({"name": "live", "provider": "none"})).await;
    let url = source["url"].as_str().unwrap();
    let path = format!("{SOURCES}/{}", source["id"].as_str().unwrap());
    assert_eq!(ingest(&server, url).await, StatusCode::OK);

    let (status, _) = server.patch(&path, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ingest(&server, url).await,
        StatusCode::NOT_FOUND,
        "disabled source"
    );

    let (status, _) = server.patch(&path, json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ingest(&server, url).await,
        StatusCode::OK,
        "re-enabled source"
    );

    // A source created disabled does not take webhooks until enabled.
    let off = create(
        &server,
        json!({"name": "off", "provider": "none", "enabled": false}),
    )
    .await;
    assert_eq!(
        ingest(&server, off["url"].as_str().unwrap()).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_patches_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let stripe = create(
        &server,
        json!({"name": "s", "provider": "stripe", "signing_secret": "whsec_x"}),
    )
    .await;
    let sw = create(
        &server,
        json!({"name": "sw", "provider": "standard_webhooks", "signing_secret": SW_SECRET}),
    )
    .await;
    let stripe_path = format!("{SOURCES}/{}", stripe["id"].as_str().unwrap());
    let sw_path = format!("{SOURCES}/{}", sw["id"].as_str().unwrap());
    let cases: Vec<(&str, Value, &str)> = vec![
        (&stripe_path, json!({"name": ""}), "name"),
        (&stripe_path, json!({"name": "y".repeat(201)}), "name"),
        (&stripe_path, json!({"retention_days": 0}), "retention_days"),
        (
            &stripe_path,
            json!({"retention_days": 3651}),
            "retention_days",
        ),
        (&stripe_path, json!({"enabled": "no"}), "enabled"),
        (
            &stripe_path,
            json!({"signing_secret": ""}),
            "signing_secret",
        ),
        (&stripe_path, json!({"provider": "github"}), "provider"),
        (
            &stripe_path,
            json!({"provider_config": {"signature_header": "X-Signature"}}),
            "provider_config",
        ),
        (
            &sw_path,
            json!({"signing_secret": "not-base64!!"}),
            "signing_secret",
        ),
    ];
    for (path, body, field) in cases {
        let (status, resp) = server.patch(path, body.clone()).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {status} {resp}"
        );
        assert_invalid_field(status, &resp, field);
    }
    let (_, got) = server.get(&stripe_path).await;
    assert_eq!(got["data"], stripe, "refused patches change nothing");
    let (_, got) = server.get(&sw_path).await;
    assert_eq!(got["data"], sw);

    // Unknown sources: 404, even with a valid body.
    let (status, body) = server
        .patch(
            &format!("{SOURCES}/src_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            json!({"name": "x"}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn unknown_or_malformed_ids_are_404() {
    let server = TestServer::start().await;
    let source = server.create_source("s").await;
    let dst = add_destination(&server, source["id"].as_str().unwrap()).await;
    for id in [
        "src_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
        "src_nope".to_string(),
        "src_".to_string(),
        "nothing-like-an-id".to_string(),
        // A real id of another kind is not a source id.
        dst.clone(),
        source["id"].as_str().unwrap().replace("src_", "dst_"),
        source["slug"].as_str().unwrap().to_string(),
    ] {
        for method in [Method::GET, Method::DELETE] {
            let (status, body) = server
                .call(
                    method.clone(),
                    &format!("{SOURCES}/{id}"),
                    Some(&server.admin_key),
                    None,
                )
                .await;
            assert_error(status, &body, 404, "not_found");
        }
        let (status, body) = server
            .patch(&format!("{SOURCES}/{id}"), json!({"name": "x"}))
            .await;
        assert_error(status, &body, 404, "not_found");
    }
    // The real one still exists.
    let (status, _) = server
        .get(&format!("{SOURCES}/{}", source["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn delete_removes_the_source_and_its_destinations() {
    let server = TestServer::start().await;
    let doomed = server.create_source("doomed").await;
    let kept = server.create_source("kept").await;
    let doomed_id = doomed["id"].as_str().unwrap();
    let kept_id = kept["id"].as_str().unwrap();
    let d1 = add_destination(&server, doomed_id).await;
    let _d2 = add_destination(&server, doomed_id).await;
    let k1 = add_destination(&server, kept_id).await;
    let doomed_url = create(&server, json!({"name": "doomed too", "provider": "none"})).await;
    let doomed_url_id = doomed_url["id"].as_str().unwrap().to_string();
    let doomed_url = doomed_url["url"].as_str().unwrap().to_string();
    assert_eq!(ingest(&server, &doomed_url).await, StatusCode::OK);
    let (status, _) = server.delete(&format!("{SOURCES}/{doomed_url_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Its ingest URL is closed with it.
    assert_eq!(ingest(&server, &doomed_url).await, StatusCode::NOT_FOUND);

    let resp = server
        .call_raw(
            Method::DELETE,
            &format!("{SOURCES}/{doomed_id}"),
            Some(&server.admin_key),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text);
    assert!(resp.text.is_empty());

    let (status, body) = server.get(&format!("{SOURCES}/{doomed_id}")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .get(&format!("{SOURCES}/{doomed_id}/destinations"))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .get(&format!("{SOURCES}/{doomed_id}/destinations/{d1}"))
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{doomed_id}/destinations"),
            json!({"url": PUBLIC_URL}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.delete(&format!("{SOURCES}/{doomed_id}")).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(list_ids(&server).await, vec![kept_id.to_string()]);

    // The other source and its destination are untouched.
    let (_, got) = server.get(&format!("{SOURCES}/{kept_id}")).await;
    assert_eq!(got["data"]["destinations_count"], 1);
    let (status, _) = server
        .get(&format!("{SOURCES}/{kept_id}/destinations/{k1}"))
        .await;
    assert_eq!(status, StatusCode::OK);

    // The ingest slug is gone too: the deletion survives a restart.
    let server = server.restart().await;
    let (status, body) = server.get(&format!("{SOURCES}/{doomed_id}")).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(list_ids(&server).await, vec![kept_id.to_string()]);
}

#[tokio::test]
async fn destinations_count_follows_creates_and_deletes() {
    let server = TestServer::start().await;
    let a = server.create_source("a").await;
    let b = server.create_source("b").await;
    let a_id = a["id"].as_str().unwrap();
    let b_id = b["id"].as_str().unwrap();
    let count = |body: &Value| body["data"]["destinations_count"].as_u64().unwrap();

    let d1 = add_destination(&server, a_id).await;
    let d2 = add_destination(&server, a_id).await;
    add_destination(&server, a_id).await;
    add_destination(&server, b_id).await;

    let (_, got) = server.get(&format!("{SOURCES}/{a_id}")).await;
    assert_eq!(count(&got), 3);
    let (_, got) = server.get(&format!("{SOURCES}/{b_id}")).await;
    assert_eq!(count(&got), 1);
    let (_, list) = server.get(SOURCES).await;
    let counts: Vec<(String, u64)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["destinations_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, vec![(b_id.to_string(), 1), (a_id.to_string(), 3)]);

    for d in [d1, d2] {
        let (status, body) = server
            .delete(&format!("{SOURCES}/{a_id}/destinations/{d}"))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (_, got) = server.get(&format!("{SOURCES}/{a_id}")).await;
    assert_eq!(count(&got), 1);
    let (_, patched) = server
        .patch(&format!("{SOURCES}/{a_id}"), json!({"name": "renamed"}))
        .await;
    assert_eq!(count(&patched), 1, "PATCH answers the real count");
}

#[tokio::test]
async fn list_paginates_newest_first() {
    let server = TestServer::start().await;
    let (status, body) = server.get(SOURCES).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": [], "next_cursor": null}));

    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(
            server.create_source(name).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..3 {
        let path = match &cursor {
            Some(c) => format!("{SOURCES}?limit=1&cursor={c}"),
            None => format!("{SOURCES}?limit=1"),
        };
        let (status, body) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["data"].as_array().unwrap();
        assert_eq!(items.len(), 1, "page {page}: {body}");
        assert_source_shape(&server, &items[0]);
        seen.push(items[0]["id"].as_str().unwrap().to_string());
        if page < 2 {
            cursor = Some(
                body["next_cursor"]
                    .as_str()
                    .expect("more pages")
                    .to_string(),
            );
        } else {
            assert_eq!(body["next_cursor"], Value::Null, "last page: {body}");
        }
    }
    assert_eq!(seen, ids, "newest first, no gaps or duplicates");

    let (_, body) = server.get(&format!("{SOURCES}?limit=2")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let c = body["next_cursor"].as_str().unwrap().to_string();
    let (_, body) = server.get(&format!("{SOURCES}?limit=2&cursor={c}")).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["id"], ids[2].as_str());
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn sources_and_their_destinations_survive_a_restart() {
    let server = TestServer::start().await;
    let mut before = Vec::new();
    for (_, body) in every_provider() {
        before.push(create(&server, body).await);
    }
    let first_id = before[0]["id"].as_str().unwrap().to_string();
    let dst = add_destination(&server, &first_id).await;
    let (status, patched) = server
        .patch(
            &format!("{SOURCES}/{first_id}"),
            json!({"name": "patched", "enabled": false, "retention_days": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    before[0] = patched["data"].clone();
    let old_base = server.base.clone();

    let server = server.restart().await;
    for old in &before {
        let id = old["id"].as_str().unwrap();
        let (status, got) = server.get(&format!("{SOURCES}/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{id} lost in restart");
        let got = &got["data"];
        assert_source_shape(&server, got);
        // The listener port may change; everything else is as it was.
        let mut expected = old.clone();
        expected["url"] = json!(old["url"]
            .as_str()
            .unwrap()
            .replace(&old_base, &server.base));
        assert_eq!(got, &expected);
    }
    let (status, got) = server
        .get(&format!("{SOURCES}/{first_id}/destinations/{dst}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let mut ids: Vec<String> = before
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    assert_eq!(list_ids(&server).await, ids);

    // New sources still get fresh ids that sort after the old ones.
    let newest = server.create_source("after restart").await;
    assert_eq!(list_ids(&server).await[0], newest["id"].as_str().unwrap());
}
