//! The OpenAPI document (SPEC §3) is public, is OpenAPI 3.1, and lists
//! exactly the routes the server serves: every route below must be in the
//! document and must answer on the real server, and the document may hold
//! nothing else. A new route without an entry here fails this test.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A loopback port nothing listens on: deliveries made by these calls fail
/// locally and are retried later; no traffic leaves the machine.
const DESTINATION_URL: &str = "http://127.0.0.1:9/hook";

/// Every route the server serves (src/api/mod.rs `documented_routes`), with
/// a body that makes it succeed and the status it then answers.
fn routes() -> Vec<(Method, &'static str, Option<Value>, u16)> {
    vec![
        (
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "n", "scopes": ["admin"]})),
            201,
        ),
        (Method::GET, "/api/v1/api-keys", None, 200),
        (Method::DELETE, "/api/v1/api-keys/{id}", None, 204),
        (
            Method::POST,
            "/api/v1/webhooks/sources",
            Some(json!({"name": "n", "provider": "none"})),
            201,
        ),
        (Method::GET, "/api/v1/webhooks/sources", None, 200),
        (Method::GET, "/api/v1/webhooks/sources/{id}", None, 200),
        (
            Method::PATCH,
            "/api/v1/webhooks/sources/{id}",
            Some(json!({"name": "m"})),
            200,
        ),
        (Method::DELETE, "/api/v1/webhooks/sources/{id}", None, 204),
        (
            Method::POST,
            "/api/v1/webhooks/sources/{source_id}/destinations",
            Some(json!({"url": DESTINATION_URL})),
            201,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{source_id}/destinations",
            None,
            200,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{source_id}/destinations/{id}",
            None,
            200,
        ),
        (
            Method::PATCH,
            "/api/v1/webhooks/sources/{source_id}/destinations/{id}",
            Some(json!({"enabled": false})),
            200,
        ),
        (
            Method::DELETE,
            "/api/v1/webhooks/sources/{source_id}/destinations/{id}",
            None,
            204,
        ),
        (
            Method::POST,
            "/api/v1/webhooks/sources/{source_id}/destinations/{id}/rotate-secret",
            None,
            200,
        ),
        (Method::GET, "/healthz", None, 200),
        (Method::GET, "/readyz", None, 200),
        (Method::GET, "/metrics", None, 200),
        (Method::GET, "/api/v1/openapi.json", None, 200),
        (Method::GET, "/api/v1/backup", None, 200),
        (
            Method::POST,
            "/in/{slug}",
            Some(json!({"type": "test.event"})),
            200,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{id}/events",
            None,
            200,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{id}/events/{event_id}",
            None,
            200,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{id}/events/{event_id}/deliveries",
            None,
            200,
        ),
        (
            Method::POST,
            "/api/v1/webhooks/sources/{id}/events/{event_id}/replay",
            None,
            202,
        ),
        // The delivery is pending, not failed: the route answers 409.
        (
            Method::POST,
            "/api/v1/webhooks/sources/{id}/events/{event_id}/deliveries/{delivery_id}/retry",
            None,
            409,
        ),
        (
            Method::POST,
            "/api/v1/webhooks/sources/{id}/replay",
            Some(json!({"after": "2020-01-01T00:00:00Z"})),
            202,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{id}/replays",
            None,
            200,
        ),
        (
            Method::GET,
            "/api/v1/webhooks/sources/{id}/replays/{replay_id}",
            None,
            200,
        ),
    ]
}

async fn fetch_document(server: &TestServer) -> Value {
    let resp = server
        .raw(Method::GET, "/api/v1/openapi.json", None, None, None)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let ct = resp.headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(ct.starts_with("application/json"), "{ct}");
    serde_json::from_str(&resp.text).expect("the document is JSON")
}

#[tokio::test]
async fn the_document_is_public_openapi_3_1() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3.1"), "{version}");
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"]
            .as_str()
            .map(str::to_ascii_lowercase),
        Some("bearer".to_string()),
        "bearer security scheme: {}",
        doc["components"]["securitySchemes"]
    );
    // The same document with a key, and a garbage key does not matter.
    let resp = server
        .raw(
            Method::GET,
            "/api/v1/openapi.json",
            Some("krf_nope"),
            None,
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&resp.text).unwrap(), doc);
}

#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    let paths = doc["paths"].as_object().expect("paths object");

    let listed: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|(m, p, _, _)| (m.as_str().to_ascii_lowercase(), p.to_string()))
        .collect();
    assert_eq!(
        listed.len(),
        routes().len(),
        "duplicate entries in the test's list"
    );

    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                documented.insert((method.to_string(), path.clone()));
            }
        }
    }
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let untested: Vec<_> = documented.difference(&listed).collect();
    assert!(
        untested.is_empty(),
        "documented but not in this test's route list (add it, with a call that succeeds): {untested:?}"
    );

    for (method, path) in &documented {
        let op = &paths[path][method];
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no responses"
        );
        // Every `{param}` in the path is declared as a path parameter.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_template, "{method} {path} path parameters");
        // The authenticated API says so; public endpoints do not.
        let public = !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json";
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|req| req.get("bearer").is_some()));
        assert_eq!(
            secured, !public,
            "{method} {path} security: {}",
            op["security"]
        );
    }
}

/// Fresh resources for one route call, so deletes do not disturb others.
struct Ids {
    key: String,
    source: String,
    slug: String,
    destination: String,
    event: String,
    delivery: String,
    replay: String,
}

async fn fresh_ids(server: &TestServer) -> Ids {
    let (key, _) = server.create_key(&["webhooks:read"]).await;
    let (status, body) = server
        .post(
            "/api/v1/webhooks/sources",
            json!({"name": "openapi", "provider": "none"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let source = body["data"]["id"].as_str().unwrap().to_string();
    let slug = body["data"]["slug"].as_str().unwrap().to_string();
    let (status, body) = server
        .post(
            &format!("/api/v1/webhooks/sources/{source}/destinations"),
            json!({"url": DESTINATION_URL}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let destination = body["data"]["id"].as_str().unwrap().to_string();
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/in/{slug}"),
            None,
            Some(json!({"type": "openapi.check"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event = body["data"]["event_id"].as_str().unwrap().to_string();
    let (status, body) = server
        .get(&format!(
            "/api/v1/webhooks/sources/{source}/events/{event}/deliveries"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let delivery = body["data"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = server
        .post(
            &format!("/api/v1/webhooks/sources/{source}/replay"),
            json!({"after": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let replay = body["data"]["id"].as_str().unwrap().to_string();
    Ids {
        key,
        source,
        slug,
        destination,
        event,
        delivery,
        replay,
    }
}

fn concrete(template: &str, ids: &Ids) -> String {
    let path = if template.starts_with("/api/v1/api-keys/") {
        template.replace("{id}", &ids.key)
    } else if template.contains("{source_id}") {
        template
            .replace("{source_id}", &ids.source)
            .replace("{id}", &ids.destination)
    } else {
        template.replace("{id}", &ids.source)
    };
    let path = path
        .replace("{slug}", &ids.slug)
        .replace("{event_id}", &ids.event)
        .replace("{delivery_id}", &ids.delivery)
        .replace("{replay_id}", &ids.replay);
    assert!(!path.contains('{'), "unfilled template {template}");
    path
}

#[tokio::test]
async fn every_listed_route_answers_on_the_server() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    // What the router answers for a path it does not serve.
    let (status, fallback) = server.get("/surely/not/a/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let no_route = fallback["error"]["message"].clone();
    assert!(no_route.is_string(), "{fallback}");
    for (method, template, body, expected) in routes() {
        let ids = fresh_ids(&server).await;
        let path = concrete(template, &ids);
        let resp = server
            .call_raw(method.clone(), &path, Some(&server.admin_key), body)
            .await;
        assert_eq!(
            resp.status.as_u16(),
            expected,
            "{method} {template} ({path}): {}",
            resp.text
        );
        if expected != 204 && template != "/metrics" && template != "/api/v1/backup" {
            let v = resp.json();
            assert!(!v.is_null(), "{method} {template}: not JSON: {}", resp.text);
        }
        // The same route with a well-formed unknown id is the route's own 404,
        // never the router's "no such route" or a 405.
        if template.contains('{') {
            let unknown = Ids {
                key: "key_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                source: "src_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                slug: "wh_Zz9Zz9Zz".into(),
                destination: "dst_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                event: "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                delivery: "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                replay: "rpl_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            };
            let path = concrete(template, &unknown);
            let body = routes()
                .into_iter()
                .find(|(m, t, _, _)| *m == method && *t == template)
                .and_then(|r| r.2);
            let resp = server
                .call_raw(method.clone(), &path, Some(&server.admin_key), body)
                .await;
            assert_eq!(
                resp.status,
                StatusCode::NOT_FOUND,
                "{method} {path}: {}",
                resp.text
            );
            let v = resp.json();
            assert_eq!(v["error"]["code"], "not_found");
            assert_ne!(
                v["error"]["message"], no_route,
                "{method} {template} is not routed"
            );
        }
    }
}
