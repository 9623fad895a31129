//! Configuration: built-in defaults < TOML file < `KRAFTER_*` environment.
//!
//! Every struct denies unknown fields so a typo in a key is a startup error
//! that names the key, rather than a setting silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "KRAFTER_CONFIG";
/// Config file used when present in the working directory.
pub const LOCAL_CONFIG: &str = "krafter.toml";
/// Config file used by the packaged service.
pub const SYSTEM_CONFIG: &str = "/etc/krafter/krafter.toml";

/// Where the configuration file came from (SPEC §2's search order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// Named by `--config`.
    Flag(PathBuf),
    /// Named by `$KRAFTER_CONFIG`.
    Env(PathBuf),
    /// `./krafter.toml`, found in the working directory.
    Local(PathBuf),
    /// `/etc/krafter/krafter.toml`, found because nothing else was named.
    System(PathBuf),
    /// No file: built-in defaults and the environment.
    None,
}

impl ConfigFile {
    /// The file's path, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigFile::Flag(p)
            | ConfigFile::Env(p)
            | ConfigFile::Local(p)
            | ConfigFile::System(p) => Some(p),
            ConfigFile::None => None,
        }
    }

    /// How it was found, for humans.
    pub fn describe(&self) -> String {
        match self {
            ConfigFile::Flag(p) => format!("{} (from --config)", p.display()),
            ConfigFile::Env(p) => format!("{} (from ${CONFIG_ENV})", p.display()),
            ConfigFile::Local(p) => format!("{} (found in the working directory)", p.display()),
            ConfigFile::System(p) => format!(
                "{} (found implicitly: no --config, no ${CONFIG_ENV}, no ./{LOCAL_CONFIG})",
                p.display()
            ),
            ConfigFile::None => "none: built-in defaults".to_string(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is unknown, has the wrong type or an unparsable value; figment's
    /// message names the key and the source it came from.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A value parsed but makes no sense (e.g. an empty retry schedule).
    #[error("invalid configuration: `{key}`: {message}")]
    Value { key: &'static str, message: String },
    /// The file named by `--config` or `KRAFTER_CONFIG` does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

/// The whole configuration. Field names are the contract (SPEC §2).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    pub dashboard: DashboardConfig,
    pub log: LogConfig,
    pub audit: AuditConfig,
    pub alerts: AlertsConfig,
    pub telemetry: TelemetryConfig,
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Base URL the world reaches Krafter at; ingest URLs are built from it.
    /// Empty means "derived from `listen`" (http, or https when TLS is on).
    pub public_url: String,
    /// Largest request body accepted, on ingest and on the API.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, counted from
    /// the connection's start or the end of its previous request (slowloris
    /// guard; a connection that sends nothing is closed after it).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An open connection with no request in progress (HTTP/1.1 keep-alive,
    /// an HTTP/2 connection with no stream) is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this time after the
    /// headers; a body that stops arriving (or drips) is cut off.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections open at once; past it new ones wait in the kernel's
    /// backlog until one closes, so the server keeps its file descriptors.
    pub max_connections: usize,
    /// How long graceful shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub tls: TlsConfig,
}

/// PEM files for HTTPS; when both are set the listener speaks HTTPS only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
}

/// Where Krafter keeps its data: the embedded redb file (default) or a
/// PostgreSQL database (SPEC §12).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Which engine holds the data.
    pub backend: StorageBackend,
    /// Directory holding `krafter.redb`, `admin.key` and `secrets.key`
    /// (with PostgreSQL: `admin.key` and `secrets.key` only).
    pub path: PathBuf,
    /// redb page cache; redb's own default (1 GiB) is too much for a small VM.
    /// 32 MiB keeps the server under 100 MiB of RSS under full fan-out load
    /// (64 MiB measured 124–137 MiB, at the same throughput).
    pub cache_size_bytes: usize,
    /// Save allocator state with each commit so restart after a crash is
    /// near-instant instead of a walk of the whole file.
    pub quick_repair: bool,
    /// Most operations the writer folds into one durable commit.
    pub max_batch_ops: usize,
    /// Operations that may wait for the writer before callers are refused.
    pub queue_capacity: usize,
    /// How often expired events are looked for and removed.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// The database when `backend = "postgres"`.
    pub postgres: PostgresConfig,
    /// The key that seals stored secrets (default `<path>/secrets.key`).
    /// Every node of one PostgreSQL database must use the same key: the
    /// first node creates it, the others are given a copy.
    pub secrets_key_file: Option<PathBuf>,
}

impl StorageConfig {
    /// Where the secrets key is: `secrets_key_file`, or `secrets.key` in
    /// the data directory.
    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file
            .clone()
            .unwrap_or_else(|| self.path.join("secrets.key"))
    }
}

/// The storage engines (`storage.backend`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// One redb file in `storage.path`: one node, nothing to run beside it.
    #[default]
    Redb,
    /// A PostgreSQL database, which several nodes may share.
    Postgres,
}

/// The PostgreSQL connection (`storage.postgres`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`; `?sslmode=require`
    /// or `verify-full` connects over TLS (rustls).
    pub url: String,
    /// Connections the pool may open.
    pub max_connections: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            max_connections: 16,
        }
    }
}

/// Outgoing deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    pub max_in_flight_per_destination: usize,
    /// Allow destinations on loopback/private/link-local/... addresses.
    pub allow_private_networks: bool,
    /// PEM bundle trusted in addition to the system roots.
    pub extra_ca_path: Option<PathBuf>,
    /// A destination whose deliveries all fail for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// Refuse every destination address outside loopback (127.0.0.0/8,
    /// ::1) and resolve no name but `localhost`: for local development and
    /// test setups that must never reach another machine.
    pub loopback_only: bool,
    /// Several nodes on one database: how long a node's claim on a
    /// destination's deliveries lasts without renewal, so how soon another
    /// node takes over after it dies. Unused on redb (one node).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// An HTTP proxy (`http://host:port`) every delivery goes through, with
    /// a CONNECT tunnel for http and https alike (SPEC §13), e.g. for one
    /// static egress address. The SSRF check still applies: the
    /// destination's name is resolved and checked here, and the tunnel is
    /// asked for the checked address.
    pub proxy_url: Option<String>,
}

/// Caps that keep one tenant's data from slowing everyone else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Destinations one source may have; every ingest fans out over all of
    /// them inside the writer, so thousands would slow every source.
    pub destinations_per_source: usize,
    /// Events one bulk replay may cover (1,000,000 by default, as the README
    /// has always promised); a wider range is refused with 422 on `after`,
    /// so one call cannot start an unbounded job. A setting so that
    /// operators, and tests, can lower it.
    pub bulk_replay_events: usize,
}

/// The web dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Sign-in attempts one client address may make per minute (429 past it).
    pub sign_in_per_minute: u32,
}

/// The audit log (SPEC §15).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days an audit entry is kept; the retention loop removes older ones.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 365,
        }
    }
}

/// Alerts to an operator's webhook receiver (SPEC §15); off while `url`
/// is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are POSTed (checked against the SSRF rules of
    /// `delivery`, like a destination). Empty: no alerts.
    pub url: String,
    /// `whsec_…`: alerts are signed with it per Standard Webhooks.
    pub secret: String,
    /// Consecutive failed attempts of one destination before
    /// `destination.failing` (once, until a success).
    pub failing_after: u32,
    /// At most one `delivery.failed` per destination per this interval
    /// (the ones in between are counted into the next).
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Invalid signatures at one source within 5 minutes that make an
    /// `ingest.invalid_signatures` alert.
    pub invalid_signature_burst: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            url: String::new(),
            secret: String::new(),
            failing_after: 10,
            min_interval: Duration::from_secs(300),
            invalid_signature_burst: 20,
        }
    }
}

/// OpenTelemetry tracing (SPEC §15); off while `otlp_endpoint` is unset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL of a collector (`http://127.0.0.1:4318`); spans
    /// are POSTed as protobuf to `<otlp_endpoint>/v1/traces`. Unset or
    /// empty: tracing is off and costs nothing.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (several relays can tell
    /// themselves apart).
    pub service_name: String,
    /// Share of new traces recorded, 0.0–1.0 (by trace id). A trace that
    /// arrives with an inbound `traceparent` follows the sender's sampled
    /// flag instead, so a trace is never cut in half.
    pub sample_ratio: f64,
    /// Finished spans are sent in batches at most this far apart.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// One export's whole time budget (connect, send, answer), retries
    /// included; spans that cannot be sent in it are dropped.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "krafter".to_string(),
            sample_ratio: 1.0,
            batch_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl TelemetryConfig {
    /// The collector URL when tracing is on (an empty value is off).
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// Where spans are POSTed: the base URL plus `/v1/traces` (OTLP/HTTP's
    /// path for traces), when tracing is on.
    pub fn traces_url(&self) -> Option<String> {
        self.endpoint()
            .map(|e| format!("{}/v1/traces", e.trim_end_matches('/')))
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive: `info`, `debug`, `krafter=debug,info`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            max_body_bytes: 5 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(25),
            tls: TlsConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Redb,
            path: PathBuf::from("./krafter-data"),
            cache_size_bytes: 32 * 1024 * 1024,
            quick_repair: true,
            max_batch_ops: 1024,
            queue_capacity: 8192,
            retention_interval: Duration::from_secs(60),
            postgres: PostgresConfig::default(),
            secrets_key_file: None,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let schedule = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        DeliveryConfig {
            timeout: Duration::from_secs(15),
            retry_schedule: schedule.into_iter().map(Duration::from_secs).collect(),
            max_in_flight_per_destination: 16,
            allow_private_networks: false,
            extra_ca_path: None,
            disable_after: Duration::from_secs(5 * 24 * 3600),
            loopback_only: false,
            lease_ttl: Duration::from_secs(45),
            proxy_url: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            destinations_per_source: 100,
            bulk_replay_events: 1_000_000,
        }
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            sign_in_per_minute: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

impl Config {
    /// Loads the configuration the way `krafter serve` does: the explicit
    /// file, else `$KRAFTER_CONFIG`, else `./krafter.toml`, else
    /// `/etc/krafter/krafter.toml`, each only if present; then the
    /// environment on top.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let file = Self::find_file(explicit)?;
        Self::from_figment(Self::figment(file.as_deref()))
    }

    /// The file that [`Config::load`] reads, if any.
    pub fn find_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        Ok(Self::locate(explicit)?.path().map(Path::to_path_buf))
    }

    /// Which file [`Config::load`] reads and why, so `check-config` and
    /// `serve` can say so (an implicitly found `/etc/krafter/krafter.toml`
    /// surprises anyone running a checkout on a machine with the package).
    pub fn locate(explicit: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let named = match explicit {
            Some(path) => Some((path.to_path_buf(), true)),
            None => std::env::var_os(CONFIG_ENV).map(|p| (PathBuf::from(p), false)),
        };
        if let Some((path, flag)) = named {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path));
            }
            return Ok(if flag {
                ConfigFile::Flag(path)
            } else {
                ConfigFile::Env(path)
            });
        }
        if Path::new(LOCAL_CONFIG).is_file() {
            return Ok(ConfigFile::Local(PathBuf::from(LOCAL_CONFIG)));
        }
        if Path::new(SYSTEM_CONFIG).is_file() {
            return Ok(ConfigFile::System(PathBuf::from(SYSTEM_CONFIG)));
        }
        Ok(ConfigFile::None)
    }

    /// Defaults, then the file (if any), then the `KRAFTER_<SECTION>__<KEY>`
    /// variables. Only names with the double underscore are config keys:
    /// `KRAFTER_API_KEY`, `KRAFTER_URL` and any other single-underscore
    /// `KRAFTER_*` name belong to the CLI (SPEC §18) and are never read here,
    /// so they cannot break `serve`.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(
            Env::prefixed("KRAFTER_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
    }

    /// Extracts and validates a configuration from any figment, so tests can
    /// layer their own values.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key, message: &str| {
            Err(ConfigError::Value {
                key,
                message: message.to_string(),
            })
        };
        if self.server.max_body_bytes == 0 {
            return fail("server.max_body_bytes", "must be greater than 0");
        }
        if !self.server.public_url.is_empty() {
            match url::Url::parse(&self.server.public_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return fail("server.public_url", "must be an absolute http(s) URL"),
            }
        }
        for (key, value) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.body_read_timeout", self.server.body_read_timeout),
        ] {
            if value.is_zero() {
                return fail(key, "must be greater than 0");
            }
        }
        if self.server.max_connections == 0 {
            return fail("server.max_connections", "must be greater than 0");
        }
        if self.limits.destinations_per_source == 0 {
            return fail("limits.destinations_per_source", "must be greater than 0");
        }
        // An event's deliveries are numbered in 16 bits (their derived ids,
        // see `DeliveryId::for_fan_out`).
        if self.limits.destinations_per_source > 65_536 {
            return fail("limits.destinations_per_source", "must be at most 65536");
        }
        if self.limits.bulk_replay_events == 0 {
            return fail("limits.bulk_replay_events", "must be greater than 0");
        }
        if self.dashboard.sign_in_per_minute == 0 {
            return fail("dashboard.sign_in_per_minute", "must be greater than 0");
        }
        if self.server.tls.cert_path.is_some() != self.server.tls.key_path.is_some() {
            return fail("server.tls", "set both cert_path and key_path, or neither");
        }
        if self.storage.path.as_os_str().is_empty() {
            return fail("storage.path", "must not be empty");
        }
        if self.storage.max_batch_ops == 0 || self.storage.queue_capacity == 0 {
            return fail(
                "storage.max_batch_ops",
                "max_batch_ops and queue_capacity must be greater than 0",
            );
        }
        if self.storage.backend == StorageBackend::Postgres {
            let url = url::Url::parse(&self.storage.postgres.url);
            if !matches!(&url, Ok(u) if matches!(u.scheme(), "postgres" | "postgresql")) {
                return fail(
                    "storage.postgres.url",
                    "must be a postgres://user:password@host:port/database URL when storage.backend is \"postgres\"",
                );
            }
            if self.storage.postgres.max_connections == 0 {
                return fail("storage.postgres.max_connections", "must be greater than 0");
            }
        }
        if self.delivery.retry_schedule.is_empty() {
            return fail("delivery.retry_schedule", "must have at least one step");
        }
        if self.delivery.lease_ttl < Duration::from_secs(1) {
            return fail("delivery.lease_ttl", "must be at least 1s");
        }
        if self.delivery.timeout.is_zero() {
            return fail("delivery.timeout", "must be greater than 0");
        }
        if let Some(proxy) = &self.delivery.proxy_url {
            let ok = url::Url::parse(proxy).is_ok_and(|u| {
                u.scheme() == "http"
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none()
            });
            if !ok {
                return fail(
                    "delivery.proxy_url",
                    "must be http://host:port (no credentials, path or query)",
                );
            }
        }
        if self.delivery.max_in_flight_per_destination == 0 {
            return fail(
                "delivery.max_in_flight_per_destination",
                "must be greater than 0",
            );
        }
        if let Some(endpoint) = self.telemetry.endpoint() {
            let ok = url::Url::parse(endpoint).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            if !ok {
                return fail(
                    "telemetry.otlp_endpoint",
                    "must be an http(s)://host:port base URL (no credentials, query or fragment), e.g. http://127.0.0.1:4318",
                );
            }
        }
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return fail("telemetry.sample_ratio", "must be between 0.0 and 1.0");
        }
        if self.telemetry.service_name.trim().is_empty() {
            return fail("telemetry.service_name", "must not be empty");
        }
        for (key, value) in [
            ("telemetry.batch_interval", self.telemetry.batch_interval),
            ("telemetry.export_timeout", self.telemetry.export_timeout),
        ] {
            if value.is_zero() {
                return fail(key, "must be greater than 0");
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail("log.level", &e.to_string());
        }
        Ok(())
    }

    /// The public base URL without a trailing slash, derived from the
    /// listener when not configured.
    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            let scheme = if self.tls_enabled() { "https" } else { "http" };
            format!("{scheme}://{}", self.server.listen)
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    /// Whether the listener speaks HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.server.tls.cert_path.is_some() && self.server.tls.key_path.is_some()
    }

    /// The effective configuration as TOML, for `krafter check-config`.
    /// Nothing in the config is a secret today (TLS keys are paths), but the
    /// userinfo of `public_url` is masked in case someone put one there.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if let Ok(mut url) = url::Url::parse(&shown.server.public_url) {
            if url.password().is_some() {
                let _ = url.set_password(Some("****"));
                shown.server.public_url = url.to_string();
            }
        }
        shown.server.public_url = shown.public_url();
        toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render: {e}\n{shown:#?}"))
    }
}

/// Renders figment's errors as "`delivery.timeout`: <problem> (from <source>)",
/// lower-casing the path (environment keys arrive upper-case) and dropping
/// the profile name.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e
                .path
                .iter()
                .map(|p| p.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            let from = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{from}", e.kind)
            } else {
                format!("`{key}`: {}{from}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `["5s", "5m"]` ⇄ `Vec<Duration>` (humantime-serde handles one value only).
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        list.iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<humantime_serde::Serde<Duration>>::deserialize(d)
            .map(|list| list.into_iter().map(|x| x.into_inner()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(c.storage.path, PathBuf::from("./krafter-data"));
        assert_eq!(c.delivery.timeout, Duration::from_secs(15));
        let steps: Vec<u64> = c
            .delivery
            .retry_schedule
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(steps, vec![5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(c.delivery.max_in_flight_per_destination, 16);
        assert!(!c.delivery.allow_private_networks);
        assert_eq!(c.delivery.disable_after, Duration::from_secs(5 * 86400));
        // The README's promise: a bulk replay covers at most 1,000,000 events.
        assert_eq!(c.limits.bulk_replay_events, 1_000_000);
    }

    #[test]
    fn postgres_storage_needs_a_postgres_url_and_connections() {
        let c = Config::default();
        assert_eq!(c.storage.backend, StorageBackend::Redb);
        assert_eq!(c.storage.postgres.max_connections, 16);

        let err = from_toml("[storage]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(err.to_string().contains("storage.postgres.url"), "{err}");
        let err = from_toml(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"mysql://h/db\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("storage.postgres.url"), "{err}");
        let err = from_toml(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\n\
             url = \"postgres://k@127.0.0.1:5432/k\"\nmax_connections = 0\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("storage.postgres.max_connections"),
            "{err}"
        );
        let err = from_toml("[storage]\nbackend = \"sqlite\"\n").unwrap_err();
        assert!(err.to_string().contains("storage.backend"), "{err}");

        let c = from_toml(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\n\
             url = \"postgresql://k:pw@127.0.0.1:5432/k?sslmode=require\"\nmax_connections = 4\n",
        )
        .unwrap();
        assert_eq!(c.storage.backend, StorageBackend::Postgres);
        assert_eq!(c.storage.postgres.max_connections, 4);
        // Without the postgres backend the URL is not looked at.
        assert!(from_toml("[storage.postgres]\nurl = \"nonsense\"\n").is_ok());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = from_toml("[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = from_toml("[delivery]\ntimeout = \"soon\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("delivery.timeout"), "{text}");
    }

    #[test]
    fn durations_and_lists_parse() {
        let c = from_toml("[delivery]\ntimeout = \"2s\"\nretry_schedule = [\"1s\", \"5m\"]\ndisable_after = \"5d\"\n")
            .unwrap();
        assert_eq!(c.delivery.timeout, Duration::from_secs(2));
        assert_eq!(
            c.delivery.retry_schedule,
            vec![Duration::from_secs(1), Duration::from_secs(300)]
        );
    }

    #[test]
    fn a_bulk_replay_limit_below_one_is_refused() {
        let err = from_toml("[limits]\nbulk_replay_events = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("limits.bulk_replay_events"),
            "{err}"
        );
        let c = from_toml("[limits]\nbulk_replay_events = 1\n").unwrap();
        assert_eq!(c.limits.bulk_replay_events, 1);
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_values_are_checked() {
        let c = Config::default();
        assert_eq!(c.telemetry.endpoint(), None);
        assert_eq!(c.telemetry.traces_url(), None);
        assert_eq!(c.telemetry.service_name, "krafter");
        assert_eq!(c.telemetry.sample_ratio, 1.0);
        // An empty value (e.g. an empty environment variable) is off too.
        let c = from_toml("[telemetry]\notlp_endpoint = \"\"\n").unwrap();
        assert_eq!(c.telemetry.endpoint(), None);

        let c = from_toml("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\n").unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let c =
            from_toml("[telemetry]\notlp_endpoint = \"https://collector.invalid/otlp\"\n").unwrap();
        assert_eq!(
            c.telemetry.traces_url().as_deref(),
            Some("https://collector.invalid/otlp/v1/traces")
        );
        for bad in [
            "[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n",
            "[telemetry]\notlp_endpoint = \"grpc://127.0.0.1:4317\"\n",
            "[telemetry]\notlp_endpoint = \"http://u:p@127.0.0.1:4318\"\n",
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318?x=1\"\n",
        ] {
            let err = from_toml(bad).unwrap_err();
            assert!(
                err.to_string().contains("telemetry.otlp_endpoint"),
                "{bad}: {err}"
            );
        }
        for (bad, key) in [
            (
                "[telemetry]\nsample_ratio = 1.5\n",
                "telemetry.sample_ratio",
            ),
            (
                "[telemetry]\nsample_ratio = -0.1\n",
                "telemetry.sample_ratio",
            ),
            (
                "[telemetry]\nservice_name = \" \"\n",
                "telemetry.service_name",
            ),
            (
                "[telemetry]\nbatch_interval = \"0s\"\n",
                "telemetry.batch_interval",
            ),
            (
                "[telemetry]\nexport_timeout = \"0s\"\n",
                "telemetry.export_timeout",
            ),
        ] {
            let err = from_toml(bad).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn half_tls_is_refused() {
        let err = from_toml("[server.tls]\ncert_path = \"/tmp/c.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("server.tls"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn environment_overrides_file_with_double_underscore_nesting() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("k.toml", "[server]\nlisten = \"127.0.0.1:9000\"\n")?;
            jail.set_env("KRAFTER_SERVER__LISTEN", "127.0.0.1:9100");
            jail.set_env("KRAFTER_DELIVERY__RETRY_SCHEDULE", "[\"1s\",\"5s\"]");
            jail.set_env("KRAFTER_SERVER__MAX_BODY_BYTES", "1024");
            jail.set_env("KRAFTER_CONFIG", "ignored-by-the-extractor");
            let c = Config::from_figment(Config::figment(Some(Path::new("k.toml"))))
                .map_err(|e| e.to_string())?;
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:9100");
            assert_eq!(c.server.max_body_bytes, 1024);
            assert_eq!(
                c.delivery.retry_schedule,
                vec![Duration::from_secs(1), Duration::from_secs(5)]
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn cli_variables_are_not_config_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("KRAFTER_API_KEY", "krf_abc");
            jail.set_env("KRAFTER_URL", "http://127.0.0.1:1");
            jail.set_env("KRAFTER_SOMETHING_ELSE", "x");
            jail.set_env("KRAFTER_LOG__LEVEL", "debug");
            let c = Config::from_figment(Config::figment(None)).map_err(|e| e.to_string())?;
            assert_eq!(c.log.level, "debug");
            // A typo'd double-underscore key is still refused by name.
            jail.set_env("KRAFTER_SERVER__LISTEN_ADDR", "127.0.0.1:1");
            let err = Config::from_figment(Config::figment(None)).unwrap_err();
            assert!(err.to_string().contains("listen_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn public_url_derives_from_listener_and_tls() {
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:8443".parse().unwrap();
        c.server.tls.cert_path = Some("c".into());
        c.server.tls.key_path = Some("k".into());
        assert_eq!(c.public_url(), "https://0.0.0.0:8443");
        c.server.public_url = "https://hooks.example.com/".into();
        assert_eq!(c.public_url(), "https://hooks.example.com");
    }
}
