//! The OpenAPI document (SPEC §3) is public, is OpenAPI 3.1, and lists
//! exactly the routes the server serves: every route below must be in the
//! document and must answer on the real server, and the document may hold
//! nothing else. A new route without an entry here fails this test.

use std::collections::BTreeSet;

use crate::common::TestServer;
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
        (Method::GET, "/api/v1/audit-log", None, 200),
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
        // PostgreSQL is backed up with pg_dump (SPEC §12).
        (
            Method::GET,
            "/api/v1/backup",
            None,
            if crate::common::on_postgres() {
                501
            } else {
                200
            },
        ),
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
        // Endless: only its head is read (SPEC §14).
        (
            Method::GET,
            "/api/v1/webhooks/sources/{id}/events/stream",
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
        // The delivery is pending: it is made due now (issue #11).
        (
            Method::POST,
            "/api/v1/webhooks/sources/{id}/events/{event_id}/deliveries/{delivery_id}/retry",
            None,
            202,
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
        (Method::GET, "/api/v1/webhooks/events", None, 200),
        (
            Method::POST,
            "/api/v1/webhooks/sources/{id}/test-event",
            None,
            201,
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
        if template.ends_with("/events/stream") {
            // An endless text/event-stream: the head says it all.
            let head = server
                .client
                .get(format!("{}{path}", server.base))
                .bearer_auth(&server.admin_key)
                .send()
                .await
                .expect("the stream answers");
            assert_eq!(head.status().as_u16(), expected, "{template}");
            assert_eq!(head.headers()["content-type"], "text/event-stream");
        } else {
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

/// The document is as strict as the server (issue #10): the bounds, formats
/// and enums a client relies on are stated, error answers are listed per
/// status with the envelope, and bodies the server accepts absent are
/// optional. `tests/fuzz/schemathesis.sh` checks all of it against the
/// running server; this pins the ones the issue named.
#[tokio::test]
async fn the_document_states_the_servers_bounds() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let param = |op: &Value, name: &str| {
        op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("parameter {name} in {op}"))
    };

    // `limit` is 1..=250 on every list.
    for path in [
        "/api/v1/api-keys",
        "/api/v1/webhooks/sources",
        "/api/v1/webhooks/sources/{source_id}/destinations",
        "/api/v1/webhooks/sources/{id}/events",
        "/api/v1/webhooks/events",
    ] {
        let limit = param(&op(path, "get"), "limit");
        assert_eq!(limit["schema"]["minimum"], 1, "{path}: {limit}");
        assert_eq!(limit["schema"]["maximum"], 250, "{path}: {limit}");
    }
    let events = op("/api/v1/webhooks/sources/{id}/events", "get");
    let source_id = param(&events, "id");
    assert!(
        source_id["schema"]["pattern"]
            .as_str()
            .is_some_and(|p| p.starts_with("^src_")),
        "{source_id}"
    );
    assert_eq!(param(&events, "after")["schema"]["format"], "date-time");
    // Search across sources: an event id's shape, a bounded provider id.
    let all = op("/api/v1/webhooks/events", "get");
    assert!(
        param(&all, "id")["schema"]["pattern"]
            .as_str()
            .is_some_and(|p| p.starts_with("^evt_")),
        "{all}"
    );
    let pid = param(&all, "provider_event_id");
    assert_eq!(pid["schema"]["minLength"], 1, "{pid}");
    assert_eq!(pid["schema"]["maxLength"], 1024, "{pid}");
    let test_event = op("/api/v1/webhooks/sources/{id}/test-event", "post");
    assert!(test_event["responses"]["201"].is_object(), "{test_event}");
    assert!(test_event["responses"]["409"].is_object(), "{test_event}");

    // Names 1..=200 characters, retention 1..=3650, closed bodies.
    for name in ["CreateSource", "UpdateSource", "CreateApiKey"] {
        let s = schema(name);
        assert_eq!(s["properties"]["name"]["minLength"], 1, "{name}: {s}");
        assert_eq!(s["properties"]["name"]["maxLength"], 200, "{name}: {s}");
        assert_eq!(s["additionalProperties"], false, "{name}: {s}");
    }
    for name in ["CreateSource", "UpdateSource"] {
        let days = &schema(name)["properties"]["retention_days"];
        assert_eq!(days["minimum"], 1, "{name}: {days}");
        assert_eq!(days["maximum"], 3650, "{name}: {days}");
    }
    // Destination URLs: an http(s) URI of at most 2048 characters.
    let url = &schema("CreateDestination")["properties"]["url"];
    assert_eq!(url["format"], "uri", "{url}");
    assert_eq!(url["maxLength"], 2048, "{url}");
    // Enums: providers, scopes, delivery states.
    let providers = serde_json::to_string(&schema("ProviderKind")).unwrap();
    for p in [
        "stripe",
        "github",
        "standard_webhooks",
        "generic_hmac",
        "none",
    ] {
        assert!(providers.contains(&format!("\"{p}\"")), "{providers}");
    }
    assert_eq!(
        schema("ScopeName")["enum"],
        json!(["webhooks:read", "webhooks:write", "admin"])
    );
    assert_eq!(
        schema("DeliveryStatusName")["enum"],
        json!(["pending", "succeeded", "failed", "cancelled"])
    );
    // Every provider but `none` needs a signing secret.
    let create = serde_json::to_string(&schema("CreateSource")).unwrap();
    assert!(create.contains("signing_secret"), "{create}");

    // A replay's body is optional and, when sent, an object (never null).
    let replay = op(
        "/api/v1/webhooks/sources/{id}/events/{event_id}/replay",
        "post",
    );
    assert_eq!(replay["requestBody"]["required"], false, "{replay}");
    assert_eq!(
        replay["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ReplayRequest"
    );
    // Ingest takes any body, or none.
    let ingest = op("/in/{slug}", "post");
    assert_eq!(ingest["requestBody"]["required"], false, "{ingest}");

    // Errors are listed by status, never as a `4XX` range, each with the
    // envelope; operation ids are unique.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(params) = op.get("parameters") {
                assert!(params.is_array(), "{method} {path}: parameters {params}");
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.contains_key("4XX"), "{method} {path}");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorEnvelope",
                        "{method} {path} {status}"
                    );
                }
            }
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "duplicate operationId {id}");
        }
    }
    let create_source = op("/api/v1/webhooks/sources", "post");
    for status in ["400", "401", "403", "413", "415", "422", "503"] {
        assert!(
            create_source["responses"].get(status).is_some(),
            "POST sources lacks {status}: {}",
            create_source["responses"]
        );
    }
}

/// The bounds the document states are the ones the server enforces.
#[tokio::test]
async fn the_documented_bounds_are_enforced() {
    let server = TestServer::start().await;
    for limit in ["0", "251"] {
        let (status, body) = server
            .get(&format!("/api/v1/webhooks/sources?limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit={limit}: {body}");
    }
    let (status, _) = server.get("/api/v1/webhooks/sources?limit=250").await;
    assert_eq!(status, StatusCode::OK);
    for (body, field) in [
        (json!({"name": "", "provider": "none"}), "name"),
        (json!({"name": "x".repeat(201), "provider": "none"}), "name"),
        (
            json!({"name": "n", "provider": "none", "retention_days": 0}),
            "retention_days",
        ),
        (
            json!({"name": "n", "provider": "none", "retention_days": 3651}),
            "retention_days",
        ),
        (json!({"name": "n", "provider": "stripe"}), "signing_secret"),
    ] {
        let (status, answer) = server.post("/api/v1/webhooks/sources", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["details"][0]["field"], field, "{answer}");
    }
    // 200 characters (not bytes) is within bounds; 30.0 is the integer 30.
    let (status, answer) = server
        .post(
            "/api/v1/webhooks/sources",
            json!({"name": "é".repeat(200), "provider": "none", "retention_days": 3650.0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["data"]["retention_days"], 3650);
}
