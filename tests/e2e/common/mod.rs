//! Shared helpers for end-to-end tests: a real Krafter server on
//! 127.0.0.1:0 with a real redb file in a temp dir (or, with
//! `KRAFTER_TEST_BACKEND=postgres`, a fresh PostgreSQL database: see
//! [`backend`]), and a real HTTP client;
//! the spawned binary; a recording receiver; the one metrics parser and
//! ingest sender; and independent signers ([`sign`]). Each is defined here
//! once and used by every capability module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use krafter::config::{Config, StorageBackend, StorageConfig};
use krafter::delivery::resolve::Resolver;
use krafter::metrics::Metrics;
use krafter::server::{self, RunningServer};
use krafter::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

pub mod browser;
pub mod sign;

/// The tests' PostgreSQL clusters, the very file the unit tests use (a
/// `mod` declared in a `mod.rs` resolves `#[path]` from this directory).
/// A test that must take PostgreSQL away and bring it back (several
/// nodes, an unreachable database) starts its own
/// `pg_cluster::DedicatedCluster` and points its servers at its `url()`.
#[path = "../../../src/store/postgres/pg_cluster.rs"]
pub mod pg_cluster;

pub use sign::{
    hmac_sha256, standard_webhooks_signature, standard_webhooks_verifies, stripe_signature,
    stripe_signature_at, unix_ms, unix_secs,
};

/// The storage backend the suite runs on: `KRAFTER_TEST_BACKEND` =
/// `redb` (the default) or `postgres` (a fresh database per
/// [`TestServer`] on the tests' cluster; see [`pg_cluster`]).
pub fn backend() -> StorageBackend {
    static BACKEND: std::sync::OnceLock<StorageBackend> = std::sync::OnceLock::new();
    *BACKEND.get_or_init(|| match std::env::var("KRAFTER_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("redb") => StorageBackend::Redb,
        Ok("postgres") => StorageBackend::Postgres,
        Ok(other) => panic!("KRAFTER_TEST_BACKEND={other:?}: expected redb or postgres"),
    })
}

/// Whether the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    backend() == StorageBackend::Postgres
}

/// For a test of redb-only behaviour (the redb file itself, `krafter
/// backup`/`restore` of it, …): on PostgreSQL says so in one line (past
/// the harness's output capture, so a passing run shows it too) and
/// answers `true`, and the test returns early:
/// `if common::redb_only("why") { return; }`.
pub fn redb_only(why: &str) -> bool {
    if on_postgres() {
        use std::io::Write;
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let line = format!("skipped on postgres: {test} (redb only: {why})\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    on_postgres()
}

/// A fresh scratch database when the suite runs on PostgreSQL (none on
/// redb). Asking for postgres without one is a failure, never a skip.
pub fn scratch_database() -> Option<Arc<pg_cluster::ScratchDatabase>> {
    if !on_postgres() {
        return None;
    }
    match pg_cluster::scratch_database() {
        Ok(database) => Some(Arc::new(database)),
        Err(why) => panic!("KRAFTER_TEST_BACKEND=postgres but no PostgreSQL: {why}"),
    }
}

/// The databases of data directories, for what finds a server's storage
/// by its data directory alone ([`serve_command`], [`open_store_at`]).
/// Weak: a [`TestServer`]'s database goes when the server does.
type Databases = std::collections::HashMap<PathBuf, std::sync::Weak<pg_cluster::ScratchDatabase>>;

fn databases() -> std::sync::MutexGuard<'static, Databases> {
    static DATABASES: std::sync::OnceLock<std::sync::Mutex<Databases>> = std::sync::OnceLock::new();
    DATABASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// On postgres, the database of the data directory `data`: a
/// [`TestServer`]'s own, or else a fresh one made now and kept for the
/// rest of the test process (a spawned `krafter` over `data` and a store
/// opened on it afterwards must meet in one database). On a private test
/// cluster everything goes with the process; on an external one
/// (`KRAFTER_TEST_POSTGRES_URL`) these kept databases stay behind.
pub fn database_for(data: &Path) -> Option<Arc<pg_cluster::ScratchDatabase>> {
    if !on_postgres() {
        return None;
    }
    static KEPT: std::sync::Mutex<Vec<Arc<pg_cluster::ScratchDatabase>>> =
        std::sync::Mutex::new(Vec::new());
    let mut all = databases();
    if let Some(database) = all.get(data).and_then(std::sync::Weak::upgrade) {
        return Some(database);
    }
    let database = scratch_database()?;
    all.insert(data.to_path_buf(), Arc::downgrade(&database));
    KEPT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(database.clone());
    Some(database)
}

/// Points `storage` at `database` (the postgres backend) if there is one.
pub fn use_database(storage: &mut StorageConfig, database: Option<&pg_cluster::ScratchDatabase>) {
    if let Some(database) = database {
        storage.backend = StorageBackend::Postgres;
        storage.postgres.url = database.url().to_string();
        storage.postgres.max_connections = 8;
    }
}

/// The environment that puts a spawned `krafter` on `database` (the
/// postgres backend), if there is one.
pub fn database_env(
    command: &mut std::process::Command,
    database: Option<&pg_cluster::ScratchDatabase>,
) {
    if let Some(database) = database {
        command
            .env("KRAFTER_STORAGE__BACKEND", "postgres")
            .env("KRAFTER_STORAGE__POSTGRES__URL", database.url())
            .env("KRAFTER_STORAGE__POSTGRES__MAX_CONNECTIONS", "8");
    }
}

/// A running in-process server and what a test needs to talk to it.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub config: Config,
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    /// Resolves destination host names (the system's unless a test injects
    /// one; under `loopback_only` it is never asked). Kept across restarts.
    pub resolver: Resolver,
    /// The server's PostgreSQL database when the suite runs on postgres
    /// (kept across restarts, dropped with the last holder).
    pub database: Option<Arc<pg_cluster::ScratchDatabase>>,
}

/// The default test configuration: loopback, ephemeral port, temp storage.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("literal address");
    config.storage.path = dir.path().join("data");
    config.storage.cache_size_bytes = 8 * 1024 * 1024;
    // The network guard: no test server reaches beyond loopback or asks DNS.
    config.delivery.loopback_only = true;
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
        let database = scratch_database();
        let mut config = test_config(&dir);
        use_database(&mut config.storage, database.as_deref());
        tweak(&mut config);
        Self::start_resolving(dir, config, Resolver::system(), database).await
    }

    /// Starts with `tweak` applied and destination host names answered by
    /// `resolver` (at creation and at every delivery connection).
    pub async fn start_with_resolver(
        tweak: impl FnOnce(&mut Config),
        resolver: Resolver,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = scratch_database();
        let mut config = test_config(&dir);
        use_database(&mut config.storage, database.as_deref());
        tweak(&mut config);
        Self::start_resolving(dir, config, resolver, database).await
    }

    /// Starts serving HTTPS only, with a fresh self-signed certificate for
    /// `names` (its files in the server's temp dir); returns the server and
    /// the certificate's PEM, which a client must trust. `base` stays
    /// `http://…`: a test builds its `https://localhost:<port>` itself.
    pub async fn start_tls(names: &[&str]) -> (TestServer, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, certified.cert.pem()).expect("write cert.pem");
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key.pem");
        let database = scratch_database();
        let mut config = test_config(&dir);
        use_database(&mut config.storage, database.as_deref());
        config.server.tls.cert_path = Some(cert_path);
        config.server.tls.key_path = Some(key_path);
        let server = Self::start_resolving(dir, config, Resolver::system(), database).await;
        (server, certified.cert.pem())
    }

    async fn start_resolving(
        dir: TempDir,
        config: Config,
        resolver: Resolver,
        database: Option<Arc<pg_cluster::ScratchDatabase>>,
    ) -> TestServer {
        if let Some(database) = &database {
            databases().insert(config.storage.path.clone(), Arc::downgrade(database));
        }
        let server = server::start_with_resolver(config.clone(), resolver.clone())
            .await
            .expect("server starts");
        assert!(
            database.is_none() || !config.storage.path.join("krafter.redb").exists(),
            "a server on postgres made a redb file"
        );
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
            resolver,
            database,
        }
    }

    /// Stops the server gracefully and starts it again on the same data.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let TestServer {
            config,
            dir,
            resolver,
            database,
            ..
        } = self;
        Self::start_resolving(dir, config, resolver, database).await
    }

    /// Stops the server gracefully and starts it again on the same data,
    /// in place (for a test that holds the server by `&mut`): what a test
    /// then reads through the API is what the stop left on disk, read as a
    /// user would read it.
    pub async fn reopen(&mut self) {
        self.stop().await;
        if let Some(database) = &self.database {
            databases().insert(self.config.storage.path.clone(), Arc::downgrade(database));
        }
        let server = server::start_with_resolver(self.config.clone(), self.resolver.clone())
            .await
            .expect("server starts again on the same data");
        self.base = format!("http://{}", server.addr());
        self.admin_key = std::fs::read_to_string(self.config.storage.path.join("admin.key"))
            .expect("admin.key survives a restart")
            .trim()
            .to_string();
        self.server = Some(server);
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

/// Path of the built `krafter` binary. Private: tests spawn it through
/// [`krafter`] (which turns the network guard on) or, from a shell, find it
/// through [`binary_dir`].
fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_krafter"))
}

/// The directory of the built binary, for shell scripts that run `krafter`
/// by name as a user types it (the README's blocks, a pipe). Such a script
/// must carry `KRAFTER_DELIVERY__LOOPBACK_ONLY=true` as [`krafter`] does.
pub fn binary_dir() -> PathBuf {
    let bin = binary();
    bin.parent().map(PathBuf::from).unwrap_or(bin)
}

/// A command running the built binary with the test network guard on
/// (`delivery.loopback_only`): whatever a test configures, the server it
/// starts can reach nothing but loopback and looks up no name in DNS.
pub fn krafter() -> std::process::Command {
    let mut command = std::process::Command::new(binary());
    command.env("KRAFTER_DELIVERY__LOOPBACK_ONLY", "true");
    command
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

// ---------------------------------------------------------------------------
// Delivery-side helpers: restarting with a changed config, `none` sources,
// destinations, ingest, metrics, and a programmable in-test HTTP receiver.
// ---------------------------------------------------------------------------

impl TestServer {
    /// Stops the server gracefully, lets `tweak` change the configuration,
    /// and starts it again on the same data directory.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        self.stop().await;
        let TestServer {
            mut config,
            dir,
            resolver,
            database,
            ..
        } = self;
        tweak(&mut config);
        Self::start_resolving(dir, config, resolver, database).await
    }

    /// Creates a source with provider `none` (no verification) and returns
    /// its `data` object (`id`, `slug`, ...).
    pub async fn create_none_source(&self, name: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/webhooks/sources",
                serde_json::json!({"name": name, "provider": "none"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"].clone()
    }

    /// Creates a destination of `source_id` from a JSON body (at least
    /// `url`) and returns its `data` object, including the one-time `secret`.
    pub async fn create_destination(&self, source_id: &str, body: Value) -> Value {
        let (status, resp) = self
            .post(
                &format!("/api/v1/webhooks/sources/{source_id}/destinations"),
                body.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {resp}");
        resp["data"].clone()
    }

    /// POSTs `body` to `/in/{slug}`, asserts a 200 with a new event, and
    /// returns the event id.
    pub async fn ingest_bytes(&self, slug: &str, content_type: &str, body: Vec<u8>) -> String {
        let resp = self
            .raw(
                Method::POST,
                &format!("/in/{slug}"),
                None,
                Some(content_type),
                Some(body),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "ingest: {}", resp.text);
        let json = resp.json();
        assert_eq!(json["data"]["duplicate"], false, "{json}");
        let id = json["data"]["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id: {json}"));
        assert!(id.starts_with("evt_"), "{id}");
        id.to_string()
    }

    /// POSTs `body` with `headers` (sent as given, any bytes a header may
    /// carry) to `/in/{slug}`; returns the status and JSON body, whatever
    /// they are.
    pub async fn post_in(
        &self,
        slug: &str,
        headers: &[(&str, String)],
        body: impl Into<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/in/{slug}", self.base);
        post_to(&self.client, &url, headers, body).await
    }

    /// Whether the stored data holds `needle` anywhere: on redb, the bytes
    /// of the database file; on PostgreSQL, every row of every table as
    /// PostgreSQL writes it out (text as is, `bytea` as hex, so `needle` is
    /// looked for both ways). For "never stored in plaintext" checks and
    /// their counterparts ("its hash is stored").
    pub async fn stored_contains(&self, needle: &[u8]) -> bool {
        let Some(database) = &self.database else {
            let file = std::fs::read(self.data_dir().join("krafter.redb")).expect("db file");
            return file.windows(needle.len()).any(|w| w == needle);
        };
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(database.url())
            .await
            .expect("connect to the test database");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list tables");
        assert!(!tables.is_empty(), "no tables in {}", database.url());
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        let text = String::from_utf8_lossy(needle).into_owned();
        let mut found = false;
        for table in tables {
            let rows = sqlx::query(&format!("SELECT t::text FROM \"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .expect("read a table");
            found |= rows.iter().any(|row| {
                let row: String = row.get(0);
                row.contains(&hex) || row.contains(&text)
            });
        }
        conn.close().await.expect("close");
        found
    }

    /// Stops the server and opens its store directly, to check what is on
    /// disk.
    pub async fn open_store(&mut self) -> Store {
        self.stop().await;
        Store::open(&self.config.storage, Arc::new(Metrics::new()))
            .expect("the store opens once the server has stopped")
    }

    /// Ingests `{"type": event_type, ...extra}` as JSON; returns the event id.
    pub async fn ingest_json(&self, slug: &str, body: &Value) -> String {
        self.ingest_bytes(
            slug,
            "application/json",
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> String {
        scrape_metrics(&self.client, &self.base).await
    }

    /// The value of one Prometheus series, written exactly as exposed
    /// (`krafter_delivery_attempts_total{result="timeout"}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        parse_metric(&self.metrics_text().await, series)
    }
}

/// The value of `series` in a Prometheus text exposition, written exactly
/// as exposed (`name` or `name{labels}`), or `None` when no sample has it.
/// The one metrics parser of the suite.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|value| value.parse::<f64>().ok())
        })
}

/// The value of `series` in a Prometheus text exposition (0 when absent,
/// as a counter nothing has touched yet reads).
pub fn parse_metric(text: &str, series: &str) -> f64 {
    metric_sample(text, series).unwrap_or(0.0)
}

/// The value of `series`, which must be exposed (panics naming it if not).
pub fn metric_value(text: &str, series: &str) -> f64 {
    metric_sample(text, series).unwrap_or_else(|| panic!("no metric sample {series} in:\n{text}"))
}

/// `GET <base>/metrics` as text, from any server (in-process or a spawned
/// binary); asserts a 200.
pub async fn scrape_metrics(client: &reqwest::Client, base: &str) -> String {
    let resp = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(resp.status(), StatusCode::OK, "GET /metrics");
    resp.text().await.expect("metrics text")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with
/// `what` after `within`.
pub async fn poll<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A real HTTP/1.1 server on 127.0.0.1:0 for delivery tests: it records
/// every request (headers, body bytes, arrival time) and answers as a
/// programmable script says (status, headers such as `Retry-After`, body,
/// delay or hang). Optionally speaks HTTPS with a given rustls config.
/// Dropping it closes the listener and every open connection.
pub mod receiver {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpListener;
    use tokio::task::{JoinHandle, JoinSet};

    /// One request as the receiver saw it.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub method: String,
        /// Path and query.
        pub path: String,
        pub headers: http::HeaderMap,
        pub body: Vec<u8>,
        /// When its head arrived.
        pub at: Instant,
        /// 0-based position among all requests to this receiver.
        pub index: usize,
        /// 0-based position among requests to the same path.
        pub path_index: usize,
    }

    impl Received {
        /// The single value of a header as text (panics if it repeats).
        pub fn header(&self, name: &str) -> Option<&str> {
            let mut values = self.headers.get_all(name).iter();
            let first = values.next()?;
            assert!(
                values.next().is_none(),
                "header {name} sent more than once: {:?}",
                self.headers
            );
            Some(first.to_str().expect("header value is text"))
        }

        /// The single value of a header, which must be present.
        pub fn must(&self, name: &str) -> &str {
            self.header(name)
                .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
        }
    }

    /// How to answer one request.
    #[derive(Debug, Clone)]
    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        /// Wait this long before answering (a very long delay is a hang).
        pub delay: Duration,
    }

    impl Reply {
        pub fn status(status: u16) -> Reply {
            Reply {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                delay: Duration::ZERO,
            }
        }

        pub fn ok() -> Reply {
            Reply::status(200)
        }

        pub fn header(mut self, name: &str, value: &str) -> Reply {
            self.headers.push((name.to_string(), value.to_string()));
            self
        }

        pub fn retry_after(self, value: &str) -> Reply {
            self.header("retry-after", value)
        }

        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
            self.body = body.into();
            self
        }

        pub fn delay(mut self, delay: Duration) -> Reply {
            self.delay = delay;
            self
        }
    }

    /// Decides the answer to each request.
    pub type Script = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

    /// Answers the n-th request (over all paths) with `replies[n]`, and
    /// every later one with `then`.
    pub fn sequence(replies: Vec<Reply>, then: Reply) -> impl Fn(&Received) -> Reply {
        move |r: &Received| {
            replies
                .get(r.index)
                .cloned()
                .unwrap_or_else(|| then.clone())
        }
    }

    struct State {
        received: Mutex<Vec<Received>>,
        per_path: Mutex<HashMap<String, usize>>,
        script: Mutex<Script>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        connections: AtomicUsize,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request as open until dropped (answered, or cancelled).
    struct Open(Arc<State>);

    impl Drop for Open {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A running receiver.
    pub struct Receiver {
        addr: SocketAddr,
        scheme: &'static str,
        state: Arc<State>,
        accept: JoinHandle<()>,
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.accept.abort();
        }
    }

    impl Receiver {
        /// Plain HTTP, answering per `script`.
        pub async fn start(
            script: impl Fn(&Received) -> Reply + Send + Sync + 'static,
        ) -> Receiver {
            Self::launch(None, Arc::new(script)).await
        }

        /// Plain HTTP, answering 200 to everything.
        pub async fn ok() -> Receiver {
            Self::start(|_| Reply::ok()).await
        }

        /// HTTPS with the given server config (HTTP/1.1).
        pub async fn start_tls(
            tls: Arc<rustls::ServerConfig>,
            script: impl Fn(&Received) -> Reply + Send + Sync + 'static,
        ) -> Receiver {
            Self::launch(Some(tokio_rustls::TlsAcceptor::from(tls)), Arc::new(script)).await
        }

        async fn launch(tls: Option<tokio_rustls::TlsAcceptor>, script: Script) -> Receiver {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind receiver");
            let addr = listener.local_addr().expect("receiver address");
            let state = Arc::new(State {
                received: Mutex::new(Vec::new()),
                per_path: Mutex::new(HashMap::new()),
                script: Mutex::new(script),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
            });
            let accept_state = state.clone();
            let accept = tokio::spawn(async move {
                // Owned here so that aborting this task closes every connection.
                let mut connections = JoinSet::new();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    while connections.try_join_next().is_some() {}
                    accept_state.connections.fetch_add(1, Ordering::SeqCst);
                    let (state, tls) = (accept_state.clone(), tls.clone());
                    connections.spawn(async move {
                        let _ = tcp.set_nodelay(true);
                        match tls {
                            None => serve(tcp, state).await,
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve(stream, state).await;
                                }
                            }
                        }
                    });
                }
            });
            Receiver {
                addr,
                scheme,
                state,
                accept,
            }
        }

        /// The bound address (127.0.0.1:port).
        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// `http(s)://127.0.0.1:<port><path>`.
        pub fn url(&self, path: &str) -> String {
            format!("{}://{}{path}", self.scheme, self.addr)
        }

        /// `http(s)://localhost:<port><path>`.
        pub fn localhost_url(&self, path: &str) -> String {
            format!("{}://localhost:{}{path}", self.scheme, self.addr.port())
        }

        /// Replaces the script for the requests that come next.
        pub fn set_script(&self, script: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
            *lock(&self.state.script) = Arc::new(script);
        }

        /// Every request so far, in arrival order.
        pub fn requests(&self) -> Vec<Received> {
            lock(&self.state.received).clone()
        }

        /// The requests to one path, in arrival order.
        pub fn requests_to(&self, path: &str) -> Vec<Received> {
            lock(&self.state.received)
                .iter()
                .filter(|r| r.path == path)
                .cloned()
                .collect()
        }

        pub fn count(&self) -> usize {
            lock(&self.state.received).len()
        }

        pub fn count_to(&self, path: &str) -> usize {
            lock(&self.state.received)
                .iter()
                .filter(|r| r.path == path)
                .count()
        }

        /// Requests open right now (arrived, not yet answered).
        pub fn in_flight(&self) -> usize {
            self.state.in_flight.load(Ordering::SeqCst)
        }

        /// The most requests that were ever open at once.
        pub fn max_in_flight(&self) -> usize {
            self.state.max_in_flight.load(Ordering::SeqCst)
        }

        /// TCP connections accepted so far.
        pub fn connections(&self) -> usize {
            self.state.connections.load(Ordering::SeqCst)
        }

        /// Waits until at least `n` requests arrived (panics after `within`).
        pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
            self.wait_until(within, &format!("{n} requests"), |all| all.len() >= n)
                .await
        }

        /// Waits until at least `n` requests to `path` arrived.
        pub async fn wait_for_path(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
            self.wait_until(within, &format!("{n} requests to {path}"), |all| {
                all.iter().filter(|r| r.path == path).count() >= n
            })
            .await;
            self.requests_to(path)
        }

        /// Waits until `done` holds over the requests so far.
        pub async fn wait_until(
            &self,
            within: Duration,
            what: &str,
            done: impl Fn(&[Received]) -> bool,
        ) -> Vec<Received> {
            let deadline = Instant::now() + within;
            loop {
                {
                    let all = lock(&self.state.received);
                    if done(&all) {
                        return all.clone();
                    }
                }
                if Instant::now() >= deadline {
                    panic!(
                        "receiver: timed out after {within:?} waiting for {what}; got {} requests",
                        self.count()
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn serve<S>(io: S, state: Arc<State>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(req, state).await) }
        });
        let _ = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service)
            .await;
    }

    async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
        let at = Instant::now();
        let now_open = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now_open, Ordering::SeqCst);
        let _open = Open(state.clone());
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(_) => Vec::new(),
        };
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let received = {
            let mut all = lock(&state.received);
            let mut per_path = lock(&state.per_path);
            let path_index = per_path.entry(path.clone()).or_insert(0);
            let received = Received {
                method: parts.method.to_string(),
                path: path.clone(),
                headers: parts.headers,
                body,
                at,
                index: all.len(),
                path_index: *path_index,
            };
            *path_index += 1;
            all.push(received.clone());
            received
        };
        let script = lock(&state.script).clone();
        let reply = script(&received);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut response = Response::builder().status(reply.status);
        for (name, value) in &reply.headers {
            response = response.header(name.as_str(), value.as_str());
        }
        response
            .body(Full::new(Bytes::from(reply.body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// `krafter serve` on a port the system picks (`127.0.0.1:0`) over the data
/// directory `data`, reporting its address in [`addr_file`]`(data)`,
/// delivering to loopback receivers, logging only warnings, output
/// discarded: what the crash tests start and kill. Add `.env(..)` before
/// [`spawn_serving`] for more settings.
pub fn serve_command(data: &std::path::Path) -> std::process::Command {
    let mut command = krafter();
    command
        .arg("serve")
        .arg("--addr-file")
        .arg(addr_file(data))
        .env("KRAFTER_SERVER__LISTEN", "127.0.0.1:0")
        .env("KRAFTER_STORAGE__PATH", data)
        .env("KRAFTER_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true")
        .env("KRAFTER_LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    database_env(&mut command, database_for(data).as_deref());
    command
}

/// Where a server started by [`serve_command`] over `data` reports its
/// address: beside the data directory, never inside it.
pub fn addr_file(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".addr");
    PathBuf::from(name)
}

/// Spawns `command` (from [`serve_command`] over `data`) and waits until it
/// serves; returns it and its base URL. No port is chosen before the child
/// binds, so none can be taken by someone else in between.
pub async fn spawn_serving(
    command: &mut std::process::Command,
    data: &Path,
) -> (KillOnDrop, String) {
    let path = addr_file(data);
    // A file left by an earlier (killed) run is not this one's address.
    let _ = std::fs::remove_file(&path);
    let mut child = KillOnDrop(command.spawn().expect("spawn krafter"));
    let base = served_base(&mut child.0, &path).await;
    (child, base)
}

/// Waits (up to 30 s) until `child`, a `krafter serve --addr-file path`,
/// reports the address it bound — it does so once `/healthz` answers —
/// and returns its base URL. Panics if the child exits first.
pub async fn served_base(child: &mut std::process::Child, path: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(base) = read_served(child, path) {
            return base;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "krafter did not report its address in {}",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// [`served_base`] for `#[test]` functions without a runtime.
pub fn served_base_blocking(child: &mut std::process::Child, path: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(base) = read_served(child, path) {
            return base;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "krafter did not report its address in {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn read_served(child: &mut std::process::Child, path: &Path) -> Option<String> {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("krafter exited ({status}) before reporting its address");
    }
    let text = std::fs::read_to_string(path).ok()?;
    let addr: std::net::SocketAddr = text
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("address file without its newline: {text:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("address file {text:?}: {e}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    Some(format!("http://{addr}"))
}

/// A loopback port for a spawned program that cannot report the port it
/// bound: the README's quickstart (run verbatim, ports substituted; it
/// runs once more on fresh ports if one was taken before it bound).
/// `krafter serve` binds port 0 and reports its address instead
/// ([`serve_command`], [`served_base`]), and so does chromedriver
/// (`--port=0`), which has no race at all.
///
/// Ports bound to `:0` (receivers, in-process servers, every outgoing
/// connection) come from the kernel's ephemeral range (32768+), so a port
/// taken that way and released could be handed to any of them before the
/// child binds it. These come from below that range instead, each at most
/// once per test process (a counter), starting at an offset derived from
/// the process id so concurrent test processes rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread so that processes with neighbouring ids start far apart.
    let offset = (std::process::id().wrapping_mul(2_654_435_761) % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = LOW + (offset + n) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

/// POSTs `body` with `headers` to `url` (an ingest URL of any server, as
/// the API gave it or built from a base); returns the status and the JSON
/// body (`Value::Null` when it is not JSON). The suite's one ingest sender:
/// header names and values go out byte for byte (obs-text included).
pub async fn post_to(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: impl Into<Vec<u8>>,
) -> (StatusCode, Value) {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut req = client.post(url).body(body.into());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_bytes(value.as_bytes()).expect("header value");
        req = req.header(name, value);
    }
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Opens the store in the data directory `data` of a server that is not
/// running (stopped or killed), with default settings otherwise (on
/// postgres: the database of `data`, see [`database_for`]).
pub fn open_store_at(data: &Path) -> Store {
    let mut config = StorageConfig {
        path: data.to_path_buf(),
        ..StorageConfig::default()
    };
    use_database(&mut config, database_for(data).as_deref());
    Store::open(&config, Arc::new(Metrics::new())).expect("the database opens")
}

/// A spawned `krafter` killed with SIGKILL (and reaped) when dropped, so a
/// failing assertion leaves no process behind, and a test can `kill -9` it
/// by dropping it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A blocking `GET` over plain TCP (for `#[test]` functions without a
/// runtime; reqwest's blocking client would need another feature); returns
/// the status code.
pub fn blocking_get_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))
}

/// A server that may deliver to loopback (the delivery tests' receivers),
/// with `tweak` applied on top.
pub async fn server_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.delivery.allow_private_networks = true;
        tweak(c);
    })
    .await
}

/// A source's id and ingest slug.
pub struct Source {
    pub id: String,
    pub slug: String,
}

/// A new unsigned (`none`) source.
pub async fn none_source(server: &TestServer) -> Source {
    let s = server.create_none_source("test source").await;
    Source {
        id: s["id"].as_str().expect("id").to_string(),
        slug: s["slug"].as_str().expect("slug").to_string(),
    }
}

/// A real `krafter serve` over `data`, logging to `dir/krafter.log`
/// (appended, so a restart's log follows the first), with `env` on top;
/// returns once it serves.
pub async fn spawn_logged_server(
    dir: &Path,
    data: &Path,
    env: &[(&str, &str)],
) -> (KillOnDrop, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("krafter.log"))
        .expect("log file");
    let mut command = serve_command(data);
    command
        .current_dir(dir)
        .env_remove("KRAFTER_CONFIG")
        .envs(env.iter().copied())
        .stderr(log);
    spawn_serving(&mut command, data).await
}
