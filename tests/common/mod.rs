//! Shared helpers for end-to-end tests: a real Krafter server on
//! 127.0.0.1:0 with a real redb file in a temp dir, and a real HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;

use krafter::app::{self, RunningServer};
use krafter::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

/// A running in-process server and what a test needs to talk to it.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub config: Config,
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
}

/// The default test configuration: loopback, ephemeral port, temp storage.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("literal address");
    config.storage.path = dir.path().join("data");
    config.storage.cache_size_bytes = 8 * 1024 * 1024;
    config
}

impl TestServer {
    /// Starts with the default test configuration.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with a configuration adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(&dir);
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    async fn start_in(dir: TempDir, config: Config) -> TestServer {
        let server = app::start(config.clone()).await.expect("server starts");
        let admin_key = std::fs::read_to_string(config.storage.path.join("admin.key"))
            .expect("admin.key exists once the server is up")
            .trim()
            .to_string();
        let base = format!("http://{}", server.addr());
        TestServer {
            server: Some(server),
            config,
            base,
            admin_key,
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops the server gracefully and starts it again on the same data.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let TestServer { config, dir, .. } = self;
        Self::start_in(dir, config).await
    }

    /// Stops the server (graceful shutdown).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.storage.path.clone()
    }

    /// Sends a request with `key` (or none) and returns status and JSON body
    /// (`Value::Null` when the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET with the admin key.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.admin_key), None)
            .await
    }

    /// POST JSON with the admin key.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.admin_key), Some(body))
            .await
    }

    /// PATCH JSON with the admin key.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(&self.admin_key), Some(body))
            .await
    }

    /// DELETE with the admin key.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(&self.admin_key), None)
            .await
    }

    /// Creates an API key with the given scopes and returns (id, key).
    pub async fn create_key(&self, scopes: &[&str]) -> (String, String) {
        let (status, body) = self
            .post(
                "/api/v1/api-keys",
                serde_json::json!({"name": "test", "scopes": scopes}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["data"]["id"].as_str().expect("id").to_string(),
            body["data"]["key"].as_str().expect("key").to_string(),
        )
    }

    /// Creates a Stripe source and returns its `data` object.
    pub async fn create_source(&self, name: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/webhooks/sources",
                serde_json::json!({"name": name, "provider": "stripe", "signing_secret": "whsec_test_secret"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"].clone()
    }
}

/// Asserts the SPEC's error envelope with the given status and code.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(
        status.as_u16(),
        want_status,
        "unexpected status; body: {body}"
    );
    assert_eq!(body["error"]["code"], want_code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message missing: {body}"
    );
}

/// Path of the built `krafter` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_krafter"))
}

/// A raw response: status, headers and the body exactly as sent.
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl RawResponse {
    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl TestServer {
    /// Sends raw bytes with an optional content type and key; returns the
    /// response untouched, for tests that grep bodies or check headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> RawResponse {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        RawResponse {
            status,
            headers,
            text,
        }
    }

    /// Like [`TestServer::call`] with JSON, but returns the raw response.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> RawResponse {
        let (ct, bytes) = match body {
            Some(v) => (
                Some("application/json"),
                Some(serde_json::to_vec(&v).expect("json")),
            ),
            None => (None, None),
        };
        self.raw(method, path, key, ct, bytes).await
    }
}

/// Asserts a 422 `validation_failed` whose `details` name `field` (exactly,
/// or as the parent of an indexed/nested field such as `scopes[0]`).
pub fn assert_invalid_field(status: StatusCode, body: &Value, field: &str) {
    assert_error(status, body, 422, "validation_failed");
    let details = body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("422 without details: {body}"));
    let named = details.iter().any(|d| {
        d["field"].as_str().is_some_and(|f| {
            f == field || f.starts_with(&format!("{field}[")) || f.starts_with(&format!("{field}."))
        }) && d["message"].as_str().is_some_and(|m| !m.is_empty())
    });
    assert!(named, "details do not name `{field}`: {body}");
}

/// Checks the SPEC's time format: RFC 3339 UTC with milliseconds and `Z`
/// (`2026-11-27T14:48:08.123Z`).
pub fn assert_timestamp(value: &Value) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string time: {value}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    let ok = b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z';
    assert!(ok, "not RFC 3339 UTC with milliseconds: {s}");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not a valid RFC 3339 time: {s}: {e}"));
}
