//! Malformed requests over real HTTP (SPEC §3): whatever arrives, the answer
//! is a 4xx in the SPEC's error envelope, never a 500; plus the operations
//! endpoints (SPEC §11).

use crate::common::{assert_error, assert_invalid_field, RawResponse, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEYS: &str = "/api/v1/api-keys";
const SOURCES: &str = "/api/v1/webhooks/sources";
const UNKNOWN_SRC: &str = "src_01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// Asserts the envelope and that `code` is the one SPEC §3 pairs with the status.
fn assert_envelope(resp: &RawResponse, what: &str) {
    let body = resp.json();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error envelope: {} {}", resp.status, resp.text));
    let expected = match resp.status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_failed",
        429 => "rate_limited",
        503 => "unavailable",
        other => panic!("{what}: unexpected status {other}: {}", resp.text),
    };
    assert_eq!(code, expected, "{what}: {}", resp.text);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: no message: {}",
        resp.text
    );
    let ct = resp
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct}"
    );
}

/// Sends `body` as JSON bytes with the admin key.
async fn send_json_bytes(
    server: &TestServer,
    method: Method,
    path: &str,
    body: &[u8],
) -> RawResponse {
    server
        .raw(
            method,
            path,
            Some(&server.admin_key),
            Some("application/json"),
            Some(body.to_vec()),
        )
        .await
}

struct Fixture {
    server: TestServer,
    source: String,
    destination: String,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(tweak: impl FnOnce(&mut krafter::config::Config)) -> Fixture {
    let server = TestServer::start_with(tweak).await;
    let source = server.create_source("fixture").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server
        .post(
            &format!("{SOURCES}/{source}/destinations"),
            json!({"url": "https://93.184.216.34/hook"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let destination = body["data"]["id"].as_str().unwrap().to_string();
    Fixture {
        server,
        source,
        destination,
    }
}

impl Fixture {
    /// Every (method, path) that takes a JSON body.
    fn json_endpoints(&self) -> Vec<(Method, String)> {
        let (s, d) = (&self.source, &self.destination);
        vec![
            (Method::POST, KEYS.to_string()),
            (Method::POST, SOURCES.to_string()),
            (Method::PATCH, format!("{SOURCES}/{s}")),
            (Method::POST, format!("{SOURCES}/{s}/destinations")),
            (Method::PATCH, format!("{SOURCES}/{s}/destinations/{d}")),
        ]
    }

    /// Every list endpoint.
    fn lists(&self) -> Vec<String> {
        vec![
            KEYS.to_string(),
            SOURCES.to_string(),
            format!("{SOURCES}/{}/destinations", self.source),
        ]
    }

    /// Nothing the malformed requests sent was stored.
    async fn assert_unchanged(&self) {
        let s = &self.server;
        let (_, keys) = s.get(KEYS).await;
        assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
        let (_, sources) = s.get(SOURCES).await;
        assert_eq!(sources["data"].as_array().unwrap().len(), 1, "{sources}");
        assert_eq!(sources["data"][0]["name"], "fixture");
        assert_eq!(sources["data"][0]["enabled"], true);
        assert_eq!(sources["data"][0]["retention_days"], 30);
        let (_, dests) = s
            .get(&format!("{SOURCES}/{}/destinations", self.source))
            .await;
        assert_eq!(dests["data"].as_array().unwrap().len(), 1, "{dests}");
        assert_eq!(dests["data"][0]["url"], "https://93.184.216.34/hook");
        assert_eq!(dests["data"][0]["enabled"], true);
    }
}

#[tokio::test]
async fn malformed_json_is_400_bad_request() {
    let f = fixture().await;
    let bodies: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"{\"name\":",
        b"{name: \"x\"}",
        b"{'name': 'x'}",
        b"{\"name\": \"x\",}",
        b"{\"name\": \"x\" \"provider\": \"none\"}",
        b"{\"name\": \"x\", \"provider\": \"none\"} trailing",
        b"{\"name\": \"x\", \"provider\": \"none\"}{}",
        b"{\"name\": \"unterminated}",
        b"{\"enabled\": tru}",
        b"{\"retention_days\": 01}",
        b"{\"retention_days\": NaN}",
        b"\xef\xbb\xbf{}",
        b"<xml/>",
    ];
    for (method, path) in f.json_endpoints() {
        for body in bodies {
            let resp = send_json_bytes(&f.server, method.clone(), &path, body).await;
            let what = format!("{method} {path} {:?}", String::from_utf8_lossy(body));
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                resp.text
            );
            assert_envelope(&resp, &what);
        }
    }
    f.assert_unchanged().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_json_body_is_400() {
    let f = fixture().await;
    let bodies: &[&[u8]] = &[
        b"{\"name\": \"\xff\xfe\", \"provider\": \"none\"}",
        b"{\"name\": \"ok\xc3\", \"provider\": \"none\"}",
        b"{\"name\": \"\xed\xa0\x80\", \"provider\": \"none\"}",
        b"{\"na\xffme\": \"x\", \"provider\": \"none\"}",
        b"\xff{}",
    ];
    for (method, path) in f.json_endpoints() {
        for body in bodies {
            let resp = send_json_bytes(&f.server, method.clone(), &path, body).await;
            let what = format!("{method} {path} {body:?}");
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                resp.text
            );
            assert_envelope(&resp, &what);
        }
    }
    // Escaped lone surrogates are not valid Unicode either: refused, not stored.
    let resp = send_json_bytes(
        &f.server,
        Method::POST,
        SOURCES,
        br#"{"name": "\ud800", "provider": "none"}"#,
    )
    .await;
    assert!(
        resp.status.is_client_error(),
        "{} {}",
        resp.status,
        resp.text
    );
    assert_envelope(&resp, "lone surrogate");
    f.assert_unchanged().await;
}

#[tokio::test]
async fn wrong_types_are_422_naming_the_field() {
    let f = fixture().await;
    let (s, d) = (&f.source, &f.destination);
    let cases: Vec<(Method, String, String, &str)> = vec![
        (
            Method::POST,
            KEYS.into(),
            r#"{"name": ["ci"], "scopes": ["admin"]}"#.into(),
            "name",
        ),
        (
            Method::POST,
            KEYS.into(),
            r#"{"name": "ci", "scopes": {"admin": true}}"#.into(),
            "scopes",
        ),
        (
            Method::POST,
            SOURCES.into(),
            r#"{"name": "x", "provider": 1}"#.into(),
            "provider",
        ),
        (
            Method::POST,
            SOURCES.into(),
            r#"{"name": "x", "provider": "none", "retention_days": true}"#.into(),
            "retention_days",
        ),
        (
            Method::POST,
            SOURCES.into(),
            r#"{"name": "x", "provider": "none", "retention_days": 18446744073709551616}"#.into(),
            "retention_days",
        ),
        (
            Method::POST,
            SOURCES.into(),
            r#"{"name": "x", "provider": "none", "retention_days": 4294967296}"#.into(),
            "retention_days",
        ),
        (
            Method::POST,
            SOURCES.into(),
            r#"{"name": null, "provider": "none"}"#.into(),
            "name",
        ),
        (
            Method::PATCH,
            format!("{SOURCES}/{s}"),
            r#"{"enabled": "false"}"#.into(),
            "enabled",
        ),
        (
            Method::PATCH,
            format!("{SOURCES}/{s}"),
            r#"{"retention_days": "7"}"#.into(),
            "retention_days",
        ),
        (
            Method::PATCH,
            format!("{SOURCES}/{s}"),
            r#"{"name": {"first": "a"}}"#.into(),
            "name",
        ),
        (
            Method::POST,
            format!("{SOURCES}/{s}/destinations"),
            r#"{"url": ["https://93.184.216.34/"]}"#.into(),
            "url",
        ),
        (
            Method::POST,
            format!("{SOURCES}/{s}/destinations"),
            r#"{"url": "https://93.184.216.34/", "event_filter": [null]}"#.into(),
            "event_filter",
        ),
        (
            Method::POST,
            format!("{SOURCES}/{s}/destinations"),
            r#"{"url": "https://93.184.216.34/", "rate_limit": "5"}"#.into(),
            "rate_limit",
        ),
        (
            Method::PATCH,
            format!("{SOURCES}/{s}/destinations/{d}"),
            r#"{"event_filter": {"a": 1}}"#.into(),
            "event_filter",
        ),
        (
            Method::PATCH,
            format!("{SOURCES}/{s}/destinations/{d}"),
            r#"{"rate_limit": 4294967296}"#.into(),
            "rate_limit",
        ),
    ];
    for (method, path, body, field) in cases {
        let resp = send_json_bytes(&f.server, method.clone(), &path, body.as_bytes()).await;
        let what = format!("{method} {path} {body}");
        assert_eq!(
            resp.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            resp.text
        );
        assert_envelope(&resp, &what);
        assert_invalid_field(resp.status, &resp.json(), field);
    }
    // Numbers too large for any machine type are refused too.
    let resp = send_json_bytes(
        &f.server,
        Method::POST,
        SOURCES,
        br#"{"name": "x", "provider": "none", "retention_days": 1e400}"#,
    )
    .await;
    assert!(
        resp.status.is_client_error(),
        "{} {}",
        resp.status,
        resp.text
    );
    assert_envelope(&resp, "1e400");
    f.assert_unchanged().await;
}

#[tokio::test]
async fn non_object_bodies_are_refused() {
    let f = fixture().await;
    let bodies: &[&[u8]] = &[b"null", b"[]", b"[1, 2]", b"\"a string\"", b"42", b"true"];
    for (method, path) in f.json_endpoints() {
        for body in bodies {
            let resp = send_json_bytes(&f.server, method.clone(), &path, body).await;
            let what = format!("{method} {path} {}", String::from_utf8_lossy(body));
            assert!(
                resp.status.is_client_error(),
                "{what}: {} {}",
                resp.status,
                resp.text
            );
            assert_envelope(&resp, &what);
        }
    }
    // An array holding exactly the fields, in order, is still not an object.
    let arrays: &[(&str, &[u8])] = &[
        (KEYS, b"[\"ci\", [\"admin\"]]"),
        (SOURCES, b"[\"s\", \"none\", null, null, null, null]"),
    ];
    for (path, body) in arrays {
        let resp = send_json_bytes(&f.server, Method::POST, path, body).await;
        let what = format!("POST {path} {}", String::from_utf8_lossy(body));
        assert!(
            resp.status.is_client_error(),
            "{what}: {} {}",
            resp.status,
            resp.text
        );
        assert_envelope(&resp, &what);
    }
    f.assert_unchanged().await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_crashing() {
    let f = fixture().await;
    let arrays = "[".repeat(10_000);
    let objects = "{\"a\":".repeat(10_000);
    let closed = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let in_field = format!(
        "{{\"name\": \"x\", \"provider\": \"none\", \"provider_config\": {}}}",
        "[".repeat(10_000)
    );
    for body in [&arrays, &objects, &closed, &in_field] {
        for (method, path) in f.json_endpoints() {
            let resp = send_json_bytes(&f.server, method.clone(), &path, body.as_bytes()).await;
            let what = format!("{method} {path} nested");
            assert!(
                resp.status.is_client_error(),
                "{what}: {} {}",
                resp.status,
                resp.text
            );
            assert_envelope(&resp, &what);
        }
    }
    // The server is still serving.
    let (status, _) = f.server.get(SOURCES).await;
    assert_eq!(status, StatusCode::OK);
    f.assert_unchanged().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let f = fixture().await;
    let body = br#"{"name": "x", "provider": "none", "scopes": ["admin"], "url": "https://93.184.216.34/"}"#;
    for (method, path) in f.json_endpoints() {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("json"),
        ] {
            let resp = f
                .server
                .raw(
                    method.clone(),
                    &path,
                    Some(&f.server.admin_key),
                    ct,
                    Some(body.to_vec()),
                )
                .await;
            let what = format!("{method} {path} content-type {ct:?}");
            assert_eq!(
                resp.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{what}: {}",
                resp.text
            );
            assert_envelope(&resp, &what);
        }
        // No body and no content type at all.
        let resp = f
            .server
            .raw(method.clone(), &path, Some(&f.server.admin_key), None, None)
            .await;
        assert_eq!(
            resp.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path}: {}",
            resp.text
        );
        assert_envelope(&resp, "no body");
    }
    f.assert_unchanged().await;

    // JSON with parameters, other casing, or a +json type is accepted.
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        let resp = f
            .server
            .raw(
                Method::PATCH,
                &format!("{SOURCES}/{}", f.source),
                Some(&f.server.admin_key),
                Some(ct),
                Some(br#"{"retention_days": 31}"#.to_vec()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{ct}: {}", resp.text);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let f = fixture_with(|c| c.server.max_body_bytes = 1024).await;
    let big = format!(
        "{{\"name\": \"{}\", \"provider\": \"none\"}}",
        "x".repeat(4096)
    );
    for (method, path) in f.json_endpoints() {
        let resp = send_json_bytes(&f.server, method.clone(), &path, big.as_bytes()).await;
        let what = format!("{method} {path} 4 KiB");
        assert_eq!(
            resp.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {}",
            resp.text
        );
        assert_envelope(&resp, &what);
    }

    // The limit is exact: 1024 bytes pass, 1025 do not.
    let fit = |len: usize| {
        let head = r#"{"name": "fits", "provider": "none"}"#;
        format!("{head}{}", " ".repeat(len - head.len()))
    };
    let resp = send_json_bytes(&f.server, Method::POST, SOURCES, fit(1025).as_bytes()).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);
    assert_envelope(&resp, "1025 bytes");
    f.assert_unchanged().await;
    let resp = send_json_bytes(&f.server, Method::POST, SOURCES, fit(1024).as_bytes()).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);

    // Without a content-length (chunked), the limit still holds.
    let body = big.as_bytes();
    let mut request = format!(
        "POST {SOURCES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        f.server.admin_key
    )
    .into_bytes();
    for chunk in body.chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_http(&f.server, &request).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
}

/// Writes raw bytes to the server and returns the status code and the rest.
async fn raw_http(server: &TestServer, request: &[u8]) -> (u16, String) {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before reading everything.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[tokio::test]
async fn unknown_routes_are_404_not_found() {
    let server = TestServer::start().await;
    // (`/` redirects to the dashboard: the `dashboard` module.)
    for path in [
        "/nope",
        "/api",
        "/api/v1",
        "/api/v1/nope",
        "/api/v2/webhooks/sources",
        "/api/v1/webhooks",
        "/api/v1/webhooks/sources/x/y",
        "/api/v1/webhooks/sources/x/destinations/y/z",
        "/api/v1/webhooks/sources/x/destinations/y/rotate-secret/now",
        "/api/v1/api-keys/x/y",
        "/in",
        "/in/wh_abc/extra",
        "/healthz/extra",
    ] {
        for key in [Some(server.admin_key.as_str()), None] {
            let resp = server.raw(Method::GET, path, key, None, None).await;
            assert_eq!(
                resp.status,
                StatusCode::NOT_FOUND,
                "GET {path}: {}",
                resp.text
            );
            assert_envelope(&resp, path);
        }
    }
}

#[tokio::test]
async fn wrong_methods_are_405() {
    let server = TestServer::start().await;
    let s = UNKNOWN_SRC;
    let d = "dst_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let cases = [
        (Method::PUT, KEYS.to_string()),
        (Method::DELETE, KEYS.to_string()),
        (
            Method::GET,
            format!("{KEYS}/key_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ),
        (
            Method::PATCH,
            format!("{KEYS}/key_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ),
        (Method::PUT, SOURCES.to_string()),
        (Method::DELETE, SOURCES.to_string()),
        (Method::PATCH, SOURCES.to_string()),
        (Method::POST, format!("{SOURCES}/{s}")),
        (Method::PUT, format!("{SOURCES}/{s}")),
        (Method::DELETE, format!("{SOURCES}/{s}/destinations")),
        (Method::PUT, format!("{SOURCES}/{s}/destinations/{d}")),
        (Method::POST, format!("{SOURCES}/{s}/destinations/{d}")),
        (
            Method::GET,
            format!("{SOURCES}/{s}/destinations/{d}/rotate-secret"),
        ),
        (Method::POST, "/healthz".to_string()),
        (Method::DELETE, "/readyz".to_string()),
        (Method::POST, "/metrics".to_string()),
        (Method::POST, "/api/v1/openapi.json".to_string()),
        (Method::GET, "/in/wh_abcdefgh".to_string()),
        (Method::PUT, "/in/wh_abcdefgh".to_string()),
    ];
    for (method, path) in cases {
        let resp = server
            .raw(method.clone(), &path, Some(&server.admin_key), None, None)
            .await;
        assert_eq!(
            resp.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            resp.text
        );
        assert_envelope(&resp, &format!("{method} {path}"));
        // RFC 9110: a 405 lists the methods the path does allow.
        let allow = resp
            .headers
            .get(reqwest::header::ALLOW)
            .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(!allow.is_empty(), "{method} {path}: empty Allow");
        assert!(
            !allow.contains(method.as_str()),
            "{method} {path}: Allow {allow}"
        );
    }
}

#[tokio::test]
async fn bad_query_strings_are_400() {
    let f = fixture().await;
    for list in f.lists() {
        for query in [
            "limit=abc",
            "limit=0",
            "limit=251",
            "limit=-1",
            "limit=1.5",
            "limit=",
            "limit=99999999999999999999",
            "limit=%FF",
            "cursor=!!",
            "cursor=zzz",
            "cursor=01ARZ3NDEKTSV4RRFFQ69G5FAV01",
            "cursor=%FF%FE",
            "limit=10&limit=20",
        ] {
            let path = format!("{list}?{query}");
            let resp = f
                .server
                .raw(Method::GET, &path, Some(&f.server.admin_key), None, None)
                .await;
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "GET {path}: {}",
                resp.text
            );
            assert_envelope(&resp, &path);
        }
        // The bounds themselves are fine, and so is an unrelated parameter.
        for query in ["limit=1", "limit=250", "cursor=", "unrelated=1"] {
            let (status, body) = f.server.get(&format!("{list}?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{list}?{query}: {body}");
        }
    }
}

#[tokio::test]
async fn garbage_path_ids_are_4xx() {
    let f = fixture().await;
    let long = "a".repeat(10_000);
    let garbage = [
        "%FF%FE",
        "%00",
        "%C0%AF",
        "%2F",
        "..",
        "%2E%2E",
        "src_%FF",
        "src_01ARZ3NDEKTSV4RRFFQ69G5FA%FF",
        "%F0%9F%92%A9",
        "%20",
        long.as_str(),
    ];
    let s = &f.source;
    for g in garbage {
        let paths = [
            (Method::GET, format!("{SOURCES}/{g}")),
            (Method::PATCH, format!("{SOURCES}/{g}")),
            (Method::DELETE, format!("{SOURCES}/{g}")),
            (Method::GET, format!("{SOURCES}/{g}/destinations")),
            (Method::GET, format!("{SOURCES}/{s}/destinations/{g}")),
            (Method::DELETE, format!("{SOURCES}/{s}/destinations/{g}")),
            (
                Method::POST,
                format!("{SOURCES}/{s}/destinations/{g}/rotate-secret"),
            ),
            (Method::DELETE, format!("{KEYS}/{g}")),
            (Method::POST, format!("/in/{g}")),
        ];
        for (method, path) in paths {
            let resp = send_json_bytes(&f.server, method.clone(), &path, b"{}").await;
            let what = format!("{method} {}", &path[..path.len().min(120)]);
            assert!(
                resp.status.is_client_error(),
                "{what}: {} {}",
                resp.status,
                resp.text
            );
            assert_envelope(&resp, &what);
        }
    }
    f.assert_unchanged().await;
}

#[tokio::test]
async fn malformed_requests_on_the_wire_never_get_a_500() {
    let server = TestServer::start().await;
    let admin = &server.admin_key;
    let requests: Vec<Vec<u8>> = vec![
        // An Authorization header that is not valid UTF-8.
        b"GET /api/v1/webhooks/sources HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
            .to_vec(),
        // A key that is far too long.
        format!(
            "GET {SOURCES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer krf_{}\r\nConnection: close\r\n\r\n",
            "a".repeat(6000)
        )
        .into_bytes(),
        // A content-length larger than what follows (the client then closes).
        format!(
            "POST {SOURCES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"name\""
        )
        .into_bytes(),
        // A content type that is not valid UTF-8.
        [
            format!("POST {SOURCES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json")
                .into_bytes(),
            b"\xff\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".to_vec(),
        ]
        .concat(),
    ];
    for request in requests {
        let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .unwrap();
        stream.write_all(&request).await.unwrap();
        // Half-close so a server waiting for more body sees the end.
        let _ = stream.shutdown().await;
        let mut out = Vec::new();
        let what = String::from_utf8_lossy(&request[..request.len().min(80)]).to_string();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut out),
        )
        .await
        .unwrap_or_else(|_| panic!("{what:?}: no answer and no close within 5 s"))
        .unwrap_or_else(|e| panic!("{what:?}: {e}"));
        let text = String::from_utf8_lossy(&out);
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{what:?}: no HTTP answer: {text:?}"));
        assert!((400..500).contains(&status), "{what:?} → {text}");
    }
    // Still healthy and nothing was stored.
    let (status, body) = server.get(SOURCES).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!([]));
}

#[tokio::test]
async fn authentication_is_checked_before_the_body() {
    let f = fixture().await;
    for (method, path) in f.json_endpoints() {
        for (ct, body) in [
            (Some("application/json"), b"{not json".to_vec()),
            (Some("text/plain"), b"hello".to_vec()),
            (Some("application/json"), b"{}".to_vec()),
        ] {
            let resp = f
                .server
                .raw(method.clone(), &path, None, ct, Some(body))
                .await;
            assert_error(resp.status, &resp.json(), 401, "unauthorized");
        }
    }
}

#[tokio::test]
async fn operations_endpoints_answer_without_a_key() {
    let server = TestServer::start().await;
    // A write, so a commit has been timed.
    server.create_source("metered").await;
    let sid = server.create_source("other").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = server.get(&format!("{SOURCES}/{sid}")).await;
    assert_eq!(status, StatusCode::OK);

    let resp = server.raw(Method::GET, "/healthz", None, None, None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json()["status"], "ok");
    let resp = server.raw(Method::GET, "/readyz", None, None, None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json()["status"], "ready");

    // A bad key on a public endpoint does not matter.
    let resp = server
        .raw(Method::GET, "/healthz", Some("krf_garbage"), None, None)
        .await;
    assert_eq!(resp.status, StatusCode::OK);

    let resp = server.raw(Method::GET, "/metrics", None, None, None).await;
    assert_eq!(resp.status, StatusCode::OK);
    let ct = resp.headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = &resp.text;
    assert!(
        text.contains("# TYPE krafter_http_requests_total counter")
            || text.contains("# TYPE krafter_http_requests counter"),
        "{text}"
    );
    assert!(text.contains("krafter_http_requests_total{"), "{text}");
    assert!(
        text.contains("krafter_storage_commit_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("krafter_storage_commit_duration_seconds_count"),
        "{text}"
    );
    assert!(
        text.ends_with("# EOF\n") || text.ends_with('\n'),
        "exposition ends with a newline"
    );

    // Every metric name carries the prefix.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("krafter_"), "unprefixed metric: {line}");
    }
    // Requests are labelled by route template, never by the raw id.
    assert!(!text.contains(&sid), "a raw id leaked into metric labels");
    assert!(
        text.contains(r#"route="/api/v1/webhooks/sources/{id}""#),
        "route template label missing: {text}"
    );
    // The storage commit histogram has observed the writes above.
    let count_line = text
        .lines()
        .find(|l| l.starts_with("krafter_storage_commit_duration_seconds_count"))
        .unwrap();
    let count: f64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{count_line}");
}
