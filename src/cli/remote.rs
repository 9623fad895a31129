//! The everyday API calls from the command line, so nobody needs curl:
//! `sources`, `destinations`, `events`, `replay` talk to a running server's
//! REST API (SPEC §5, §6, §10) with `--url` and `--api-key`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::output::outln;
use crate::config::DeliveryConfig;

/// Where the server is and how to authenticate (SPEC §14's conventions).
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "KRAFTER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// An API key; default: the bootstrap key in `<storage.path>/admin.key`
    /// when readable (said on stderr).
    #[arg(long, global = true, env = "KRAFTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// How to print a result.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the API's raw `data` as JSON.
    #[arg(long, conflicts_with = "print")]
    pub json: bool,
    /// Print only this field of the result (strings bare), for `$(...)`.
    #[arg(long, value_name = "FIELD")]
    pub print: Option<String>,
}

/// Why an API call failed, from the SPEC §3 error envelope.
#[derive(Debug, thiserror::Error)]
#[error("{message}{details} ({status} {code})")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Already rendered: "; field: message" per detail.
    pub details: String,
}

type HttpClient = crate::delivery::client::DeliveryClient;

/// A client for one server's REST API.
pub struct Api {
    base: String,
    key: String,
    client: HttpClient,
}

impl Api {
    /// Resolves the key (flag, `$KRAFTER_API_KEY`, else `admin.key` in
    /// `data_dir`) and builds the HTTP client. `delivery` supplies the CA
    /// bundle and the network guard; private addresses are allowed (the
    /// server is usually on loopback).
    pub fn new(
        remote: &RemoteArgs,
        data_dir: &Path,
        delivery: &DeliveryConfig,
    ) -> anyhow::Result<Api> {
        let key = match &remote.api_key {
            Some(key) if !key.trim().is_empty() => key.trim().to_string(),
            _ => {
                let path: PathBuf = data_dir.join(crate::ops::api_keys::ADMIN_KEY_FILE);
                let key = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "no API key: pass --api-key or set KRAFTER_API_KEY \
                         (reading {} failed: {e})",
                        path.display()
                    )
                })?;
                eprintln!("using the API key in {}", path.display());
                key.trim().to_string()
            }
        };
        let mut delivery = delivery.clone();
        delivery.allow_private_networks = true;
        let client = crate::delivery::client::build_with_body::<Full<Bytes>>(
            &delivery,
            crate::delivery::resolve::Resolver::system(),
        )?;
        Ok(Api {
            base: remote.url.trim_end_matches('/').to_string(),
            key,
            client,
        })
    }

    /// One request; returns the parsed JSON answer (`Null` for 204). An
    /// error answer becomes an [`ApiFailure`] naming the message and details.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.request(method, path);
        let bytes = match body {
            Some(body) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(body)?)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .with_context(|| format!("bad URL {url}"))?;
        let response = self.client.request(request).await.with_context(|| {
            format!("connecting to {} (is `krafter serve` running?)", self.base)
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer from {}", self.base))?
            .to_bytes();
        let json: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(json);
        }
        let error = &json["error"];
        let Some(message) = error["message"].as_str() else {
            bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        };
        let details = error["details"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|d| {
                        format!(
                            "{}: {}",
                            d["field"].as_str().unwrap_or("?"),
                            d["message"].as_str().unwrap_or("?")
                        )
                    })
                    .filter(|detail| !message.contains(detail.as_str()))
                    .map(|detail| format!("; {detail}"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        Err(ApiFailure {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message: message.to_string(),
            details,
        }
        .into())
    }

    /// A request to `path` on the server with the key, for calls that
    /// read the answer themselves (the live stream).
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.key))
            // Names the door in the audit log (`via: "cli"`).
            .header(http::header::USER_AGENT, crate::ops::CLI_USER_AGENT)
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client (for requests outside the API, such as
    /// the ingest URL).
    pub fn http(&self) -> &HttpClient {
        &self.client
    }

    /// Every item of a list endpoint, following `next_cursor`.
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!("{path}{sep}limit=250&cursor={c}"),
                None => format!("{path}{sep}limit=250"),
            };
            let page = self.call(Method::GET, &page_path, None).await?;
            if let Some(list) = page["data"].as_array() {
                items.extend(list.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return Ok(items),
            }
        }
    }
}

/// Percent-encodes one path segment or query value (ids are already safe;
/// this guards against a pasted id with stray characters).
pub fn enc(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `krafter sources ...`
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// List every source.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Create a source; prints its id and ingest URL.
    Create(CreateSourceArgs),
    /// Show one source.
    Get {
        /// The source's id (`src_...`).
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a source with its destinations and events.
    Delete {
        /// The source's id (`src_...`).
        id: String,
    },
}

/// Arguments of `sources create`.
#[derive(Debug, Args)]
pub struct CreateSourceArgs {
    #[arg(long)]
    pub name: String,
    /// stripe, github, shopify, slack, standard_webhooks, svix,
    /// generic_hmac, paddle, linear, square, twilio, zoom, intercom, twitch,
    /// discord, mailgun, sendgrid or none.
    #[arg(long)]
    pub provider: String,
    /// The provider's signing secret (not for `none`; for discord and
    /// sendgrid, the public key the provider shows); never shown again.
    #[arg(long)]
    pub secret: Option<String>,
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// `generic_hmac` settings as JSON, e.g. '{"signature_header":"X-Sig"}'.
    #[arg(long, value_name = "JSON")]
    pub provider_config: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `krafter destinations ...`
#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// List a source's destinations.
    List {
        #[arg(long)]
        source: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Add a destination; prints its id and signing secret (shown only now).
    Create {
        #[arg(long)]
        source: String,
        /// Where deliveries go: your app's http(s) URL. (`--url` is the
        /// Krafter server's own address, as on every API command.)
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// Event-type pattern (`invoice.*`); repeat for several; none = all.
        #[arg(long = "filter", value_name = "PATTERN")]
        filters: Vec<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a destination (its pending deliveries are cancelled).
    Delete {
        #[arg(long)]
        source: String,
        /// The destination's id (`dst_...`).
        id: String,
    },
}

/// `krafter events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// A source's events, newest first.
    List {
        #[arg(long)]
        source: String,
        /// Event type, exact or with `*`.
        #[arg(long = "type", value_name = "PATTERN")]
        event_type: Option<String>,
        /// At most this many (1..=250).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Follow a source's new events live, one JSON line each (the event
    /// detail object), until Ctrl-C; reconnects and resumes by itself.
    Tail {
        #[arg(long)]
        source: String,
        /// Event type, exact or with `*`.
        #[arg(long = "type", value_name = "PATTERN")]
        event_type: Option<String>,
    },
    /// One event: headers, body, and each delivery with its attempts.
    Get {
        #[arg(long)]
        source: String,
        /// The event's id (`evt_...`).
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
}

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub source: String,
    #[arg(long)]
    pub event: String,
    /// Only these destinations (filter not applied); repeat for several.
    /// Default: every enabled destination whose filter matches.
    #[arg(long = "destination", value_name = "ID")]
    pub destinations: Vec<String>,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Prints `data` as `out` asks, else with `human`.
fn show(data: &Value, out: &OutputArgs, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if out.json {
        outln!("{}", serde_json::to_string_pretty(data)?);
    } else if let Some(field) = &out.print {
        match data.get(field) {
            Some(Value::String(s)) => outln!("{s}"),
            Some(other) => outln!("{other}"),
            None => bail!("the result has no field `{field}`"),
        }
    } else {
        human(data);
    }
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn source_line(src: &Value) {
    outln!(
        "{:<30}  {:<18}  {:<7}  {:>5}  {:<45}  {}",
        s(&src["id"]),
        s(&src["provider"]),
        src["enabled"].as_bool().unwrap_or(false),
        src["destinations_count"].as_u64().unwrap_or(0),
        s(&src["url"]),
        s(&src["name"])
    );
}

fn source_header() {
    outln!(
        "{:<30}  {:<18}  {:<7}  {:>5}  {:<45}  NAME",
        "ID",
        "PROVIDER",
        "ENABLED",
        "DESTS",
        "INGEST URL"
    );
}

/// Runs `sources ...`.
pub async fn sources(api: &Api, cmd: SourcesCommand) -> anyhow::Result<()> {
    match cmd {
        SourcesCommand::List { out } => {
            let items = api.list_all("/api/v1/webhooks/sources").await?;
            show(&Value::Array(items), &out, |items| {
                source_header();
                for src in items.as_array().into_iter().flatten() {
                    source_line(src);
                }
            })
        }
        SourcesCommand::Create(args) => {
            let mut body = json!({"name": args.name, "provider": args.provider});
            if let Some(secret) = args.secret {
                body["signing_secret"] = json!(secret);
            }
            if let Some(days) = args.retention_days {
                body["retention_days"] = json!(days);
            }
            if let Some(config) = args.provider_config {
                let config: Value =
                    serde_json::from_str(&config).context("--provider-config is not valid JSON")?;
                body["provider_config"] = config;
            }
            let answer = api
                .call(Method::POST, "/api/v1/webhooks/sources", Some(&body))
                .await?;
            let data = &answer["data"];
            show(data, &args.out, |d| {
                outln!("created source {} ({})", s(&d["id"]), s(&d["provider"]));
                outln!("ingest URL: {}", s(&d["url"]));
            })
        }
        SourcesCommand::Get { id, out } => {
            let answer = api
                .call(
                    Method::GET,
                    &format!("/api/v1/webhooks/sources/{}", enc(&id)),
                    None,
                )
                .await?;
            show(&answer["data"], &out, |d| {
                source_header();
                source_line(d);
            })
        }
        SourcesCommand::Delete { id } => {
            api.call(
                Method::DELETE,
                &format!("/api/v1/webhooks/sources/{}", enc(&id)),
                None,
            )
            .await?;
            eprintln!("deleted {id}");
            Ok(())
        }
    }
}

/// Runs `destinations ...`.
pub async fn destinations(api: &Api, cmd: DestinationsCommand) -> anyhow::Result<()> {
    let base = |source: &str| format!("/api/v1/webhooks/sources/{}/destinations", enc(source));
    match cmd {
        DestinationsCommand::List { source, out } => {
            let items = api.list_all(&base(&source)).await?;
            show(&Value::Array(items), &out, |items| {
                outln!("{:<30}  {:<7}  {:<24}  URL", "ID", "ENABLED", "FILTER");
                for d in items.as_array().into_iter().flatten() {
                    let filter = d["event_filter"]
                        .as_array()
                        .filter(|f| !f.is_empty())
                        .map(|f| f.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_else(|| "*".to_string());
                    outln!(
                        "{:<30}  {:<7}  {:<24}  {}",
                        s(&d["id"]),
                        d["enabled"].as_bool().unwrap_or(false),
                        filter,
                        s(&d["url"])
                    );
                }
            })
        }
        DestinationsCommand::Create {
            source,
            endpoint,
            filters,
            out,
        } => {
            let mut body = json!({"url": endpoint});
            if !filters.is_empty() {
                body["event_filter"] = json!(filters);
            }
            let answer = api.call(Method::POST, &base(&source), Some(&body)).await?;
            show(&answer["data"], &out, |d| {
                outln!("created destination {} -> {}", s(&d["id"]), s(&d["url"]));
                outln!("signing secret (shown only now): {}", s(&d["secret"]));
            })
        }
        DestinationsCommand::Delete { source, id } => {
            api.call(
                Method::DELETE,
                &format!("{}/{}", base(&source), enc(&id)),
                None,
            )
            .await?;
            eprintln!("deleted {id}");
            Ok(())
        }
    }
}

fn deliveries_summary(d: &Value) -> String {
    let n = |k: &str| d["deliveries"][k].as_u64().unwrap_or(0);
    format!(
        "{} ok, {} pending, {} failed",
        n("succeeded"),
        n("pending"),
        n("failed")
    )
}

/// Runs `events ...`.
pub async fn events(api: &Api, cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::Tail { source, event_type } => {
            super::listen::tail(api, &source, event_type.as_deref()).await
        }
        EventsCommand::List {
            source,
            event_type,
            limit,
            out,
        } => {
            let mut path = format!(
                "/api/v1/webhooks/sources/{}/events?limit={limit}",
                enc(&source)
            );
            if let Some(t) = event_type {
                path.push_str(&format!("&type={}", enc(&t)));
            }
            let answer = api.call(Method::GET, &path, None).await?;
            show(&answer["data"], &out, |items| {
                outln!(
                    "{:<30}  {:<24}  {:<24}  {:>8}  DELIVERIES",
                    "ID",
                    "RECEIVED",
                    "TYPE",
                    "BYTES"
                );
                for e in items.as_array().into_iter().flatten() {
                    outln!(
                        "{:<30}  {:<24}  {:<24}  {:>8}  {}",
                        s(&e["id"]),
                        s(&e["received_at"]),
                        s(&e["type"]),
                        e["size_bytes"].as_u64().unwrap_or(0),
                        deliveries_summary(e)
                    );
                }
            })
        }
        EventsCommand::Get { source, id, out } => {
            let path = format!(
                "/api/v1/webhooks/sources/{}/events/{}",
                enc(&source),
                enc(&id)
            );
            let mut event = api.call(Method::GET, &path, None).await?["data"].take();
            let deliveries = api
                .call(Method::GET, &format!("{path}/deliveries"), None)
                .await?["data"]
                .take();
            if let Some(obj) = event.as_object_mut() {
                obj.insert("delivery_details".to_string(), deliveries);
            }
            show(&event, &out, |e| {
                outln!(
                    "event {}  type {}  received {}",
                    s(&e["id"]),
                    s(&e["type"]),
                    s(&e["received_at"])
                );
                if let Some(pid) = e["provider_event_id"].as_str() {
                    outln!("provider event id: {pid}");
                }
                outln!("deliveries: {}", deliveries_summary(e));
                for d in e["delivery_details"].as_array().into_iter().flatten() {
                    outln!(
                        "  {} to {}: {}",
                        s(&d["id"]),
                        s(&d["destination_id"]),
                        s(&d["status"])
                    );
                    for a in d["attempts"].as_array().into_iter().flatten() {
                        let result = a["status_code"]
                            .as_u64()
                            .map(|c| c.to_string())
                            .or_else(|| {
                                a["error_kind"].as_str().map(|k| {
                                    format!("{k} ({})", a["error_message"].as_str().unwrap_or(""))
                                })
                            })
                            .unwrap_or_else(|| "-".to_string());
                        outln!(
                            "    attempt {} at {}: {} in {} ms",
                            a["number"].as_u64().unwrap_or(0),
                            s(&a["started_at"]),
                            result,
                            a["duration_ms"].as_u64().unwrap_or(0)
                        );
                    }
                }
                outln!("headers:");
                for (name, value) in e["headers"].as_object().into_iter().flatten() {
                    outln!("  {name}: {}", value.as_str().unwrap_or(""));
                }
                match (e["body"].as_str(), e["body_base64"].as_str()) {
                    (Some(body), _) => outln!("body:\n{body}"),
                    (None, Some(b64)) => outln!("body (base64):\n{b64}"),
                    _ => {}
                }
            })
        }
    }
}

/// Runs `replay`.
pub async fn replay(api: &Api, args: ReplayArgs) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/webhooks/sources/{}/events/{}/replay",
        enc(&args.source),
        enc(&args.event)
    );
    let body = if args.destinations.is_empty() {
        json!({})
    } else {
        json!({"destination_ids": args.destinations})
    };
    let answer = api.call(Method::POST, &path, Some(&body)).await?;
    show(&answer["data"], &args.out, |d| {
        let ids: Vec<&str> = d["destination_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        outln!(
            "replaying {} to {} destination(s): {}",
            args.event,
            d["count"].as_u64().unwrap_or(0),
            ids.join(" ")
        );
    })
}
