//! `krafter listen` and `krafter events tail` (SPEC §14): follow a source's
//! live event stream (`GET .../events/stream`, Server-Sent Events) from the
//! command line. `tail` prints each event's detail object as one JSON line;
//! `listen` forwards each event to a local URL, signed with Standard
//! Webhooks exactly as a delivery is (SPEC §9), and prints one line per
//! event.
//!
//! Both reconnect with a capped backoff when the stream breaks (the server
//! restarted, the network blinked) and resume after the last event they
//! handled, so nothing is missed and nothing is handled twice. An answer
//! that retrying cannot fix (401, 403, 404, 400) ends the command with the
//! server's message. Nothing about a listener is stored on the server.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http::Method;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::output::outln;
use super::remote::{enc, Api};
use crate::delivery::signer;

/// First wait before reconnecting; doubled after each failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between reconnection attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(15);
/// A stream silent this long (three missed heartbeats) is taken for dead.
const SILENCE: Duration = Duration::from_secs(45);
/// How long one forward may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The source whose events to forward (`src_...`).
    #[arg(long)]
    pub source: String,
    /// Where to POST each event (your app, e.g. http://localhost:3000/webhooks).
    #[arg(long, value_name = "URL")]
    pub forward_to: String,
    /// Only events whose type matches (exact, or with `*`).
    #[arg(long, value_name = "PATTERN")]
    pub events: Option<String>,
    /// Sign with this secret (`whsec_...`) instead of a new one per run.
    #[arg(long, value_name = "whsec_...")]
    pub secret: Option<String>,
    /// Try a failed forward this many more times (1 s, 2 s, 4 s ... apart)
    /// before reporting it and going on.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry: u32,
}

/// One message of a `text/event-stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An incremental `text/event-stream` parser (the WHATWG rules Krafter's
/// stream needs: `field: value` lines, `:` comments, a blank line ends a
/// message, `\n`, `\r\n` or `\r` line ends, multi-line `data` joined with
/// `\n`). Bytes may arrive split anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseMessage,
    has_fields: bool,
}

impl SseParser {
    /// Feeds bytes; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A `\r` at the very end may be the first half of `\r\n`.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                break;
            }
            let line: Vec<u8> = self.buf[..end].to_vec();
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            self.buf.drain(..end + skip);
            self.line(&String::from_utf8_lossy(&line), &mut out);
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseMessage>) {
        if line.is_empty() {
            if self.has_fields {
                out.push(std::mem::take(&mut self.current));
                self.has_fields = false;
            }
            return;
        }
        if line.starts_with(':') {
            return; // a comment (heartbeat)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.current.id = Some(value.to_string()),
            "event" => self.current.event = Some(value.to_string()),
            "data" => {
                if self.has_fields && !self.current.data.is_empty() {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
            }
            _ => return, // `retry` and unknown fields
        }
        self.has_fields = true;
    }
}

/// Why following the stream stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The server refused in a way retrying cannot fix.
    #[error("{0}")]
    Refused(String),
}

/// Follows a source's stream until Ctrl-C (or SIGTERM): calls `handle`
/// for each event in order, reconnecting after `last` when the stream
/// breaks. `handle` answers after it is done with an event, which then
/// counts as seen.
async fn follow<F, Fut>(
    api: &Api,
    source: &str,
    pattern: Option<&str>,
    mut handle: F,
) -> anyhow::Result<()>
where
    F: FnMut(String, Value) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut last: Option<String> = None;
    let mut backoff = BACKOFF_START;
    loop {
        let run = async {
            let connected = Instant::now();
            let outcome = stream_once(api, source, pattern, &mut last, &mut handle).await;
            (outcome, connected.elapsed())
        };
        let (outcome, lasted) = tokio::select! {
            result = run => result,
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
        };
        match outcome {
            Err(e) if e.downcast_ref::<FollowError>().is_some() => return Err(e),
            Err(e) => eprintln!(
                "stream lost ({}); reconnecting in {:.1} s",
                super::output::error_line(&e),
                backoff.as_secs_f64()
            ),
            Ok(()) => eprintln!(
                "stream ended by the server; reconnecting in {:.1} s",
                backoff.as_secs_f64()
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
        // A stream that stayed up a while resets the backoff.
        backoff = if lasted > BACKOFF_CAP {
            BACKOFF_START
        } else {
            (backoff * 2).min(BACKOFF_CAP)
        };
    }
}

/// One connection: reads events until the stream breaks or ends.
async fn stream_once<F, Fut>(
    api: &Api,
    source: &str,
    pattern: Option<&str>,
    last: &mut Option<String>,
    handle: &mut F,
) -> anyhow::Result<()>
where
    F: FnMut(String, Value) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut path = format!("/api/v1/webhooks/sources/{}/events/stream", enc(source));
    if let Some(p) = pattern {
        path.push_str(&format!("?type={}", enc(p)));
    }
    let mut request = api.request(Method::GET, &path);
    request = request.header(http::header::ACCEPT, "text/event-stream");
    if let Some(id) = last.as_deref() {
        request = request.header("last-event-id", id);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .context("building the request")?;
    let response = api
        .http()
        .request(request)
        .await
        .with_context(|| format!("connecting to {}", api.base()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let json: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let message = json["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string();
        let text = format!("{message} ({} {})", status.as_u16(), json["error"]["code"]);
        if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
            return Err(FollowError::Refused(text).into());
        }
        bail!("{text}");
    }
    let mut body = response.into_body();
    let mut parser = SseParser::default();
    loop {
        let frame = match tokio::time::timeout(SILENCE, body.frame()).await {
            Err(_) => bail!("no heartbeat for {} s", SILENCE.as_secs()),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(anyhow::Error::new(e).context("reading the stream")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for message in parser.push(&data) {
            if message.event.as_deref().unwrap_or("message") != "event" {
                continue;
            }
            let detail: Value = match serde_json::from_str(&message.data) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("skipping an event that is not JSON: {e}");
                    continue;
                }
            };
            let id = message
                .id
                .clone()
                .or_else(|| detail["id"].as_str().map(str::to_string))
                .unwrap_or_default();
            handle(id.clone(), detail).await?;
            *last = Some(id);
        }
    }
}

/// `krafter events tail`: each event's detail object as one JSON line.
pub async fn tail(api: &Api, source: &str, pattern: Option<&str>) -> anyhow::Result<()> {
    follow(api, source, pattern, |_, detail| async move {
        outln!("{detail}");
        Ok(())
    })
    .await
}

/// The body bytes of a detail object (`body`, or `body_base64`).
fn body_of(detail: &Value) -> anyhow::Result<Vec<u8>> {
    if let Some(text) = detail["body"].as_str() {
        return Ok(text.as_bytes().to_vec());
    }
    match detail["body_base64"].as_str() {
        Some(b64) => STANDARD
            .decode(b64)
            .context("the event's body_base64 is not base64"),
        None => Ok(Vec::new()),
    }
}

/// How one forward went.
enum Forwarded {
    Status(u16),
    Failed(String),
}

/// `krafter listen`.
pub async fn listen(api: &Api, args: ListenArgs) -> anyhow::Result<()> {
    let target: http::Uri = args
        .forward_to
        .parse()
        .with_context(|| format!("--forward-to {} is not a URL", args.forward_to))?;
    if !matches!(target.scheme_str(), Some("http" | "https")) || target.host().is_none() {
        bail!("--forward-to must be an http:// or https:// URL");
    }
    let secret = args.secret.clone().unwrap_or_else(signer::new_secret);
    let key = signer::secret_key(&secret).map_err(|_| {
        anyhow::anyhow!("--secret must be `whsec_` followed by base64 (as destination secrets are)")
    })?;
    let source = api
        .call(
            Method::GET,
            &format!("/api/v1/webhooks/sources/{}", enc(&args.source)),
            None,
        )
        .await?;
    let name = source["data"]["name"].as_str().unwrap_or("").to_string();
    let source_id = source["data"]["id"]
        .as_str()
        .unwrap_or(&args.source)
        .to_string();
    outln!("source:      {name} ({source_id})");
    outln!("forwarding:  {}", args.forward_to);
    outln!("secret:      {secret}");
    outln!("ready; Ctrl-C to stop");
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let target = args.forward_to.clone();
    let retry = args.retry;
    follow(api, &source_id, args.events.as_deref(), |id, detail| {
        let (key, target, source_id) = (key.clone(), target.clone(), source_id.clone());
        async move {
            let body = body_of(&detail)?;
            let event_type = detail["type"].as_str().unwrap_or("").to_string();
            let content_type = detail["headers"]["content-type"]
                .as_str()
                .map(str::to_string);
            let mut attempt = 0;
            let (outcome, ms) = loop {
                attempt += 1;
                let started = Instant::now();
                let outcome = forward(
                    api,
                    &target,
                    &key,
                    &id,
                    &event_type,
                    &source_id,
                    content_type.as_deref(),
                    &body,
                    attempt,
                )
                .await;
                let ms = started.elapsed().as_millis();
                let ok = matches!(outcome, Forwarded::Status(s) if (200..300).contains(&s));
                if ok || attempt > retry {
                    break (outcome, ms);
                }
                let wait = Duration::from_secs(1u64 << (attempt - 1).min(5));
                eprintln!(
                    "{id}: forward failed ({}); retrying in {} s",
                    describe(&outcome),
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            };
            let time = detail["received_at"].as_str().unwrap_or("").to_string();
            let result = describe(&outcome);
            let ok = matches!(outcome, Forwarded::Status(s) if (200..300).contains(&s));
            let result = match (colour, ok) {
                (false, _) => result,
                (true, true) => format!("\x1b[32m{result}\x1b[0m"),
                (true, false) => format!("\x1b[31m{result}\x1b[0m"),
            };
            outln!("{time}  {event_type}  {id}  -> {result}  {ms} ms");
            Ok(())
        }
    })
    .await
}

fn describe(outcome: &Forwarded) -> String {
    match outcome {
        Forwarded::Status(s) => s.to_string(),
        Forwarded::Failed(why) => format!("error: {why}"),
    }
}

/// POSTs one event to `target`, signed as SPEC §9 signs a delivery:
/// `webhook-id` = the event id, `webhook-timestamp` = now,
/// `webhook-signature` = `v1,` + HMAC-SHA256 of `id.timestamp.body`.
#[allow(clippy::too_many_arguments)]
async fn forward(
    api: &Api,
    target: &str,
    key: &[u8],
    id: &str,
    event_type: &str,
    source_id: &str,
    content_type: Option<&str>,
    body: &[u8],
    attempt: u32,
) -> Forwarded {
    let timestamp = crate::model::time::now_ms().div_euclid(1000);
    let signature = signer::signature_header(&[key.to_vec()], id, timestamp, body);
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(target)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header(
            http::header::USER_AGENT,
            format!("Krafter/{}", env!("CARGO_PKG_VERSION")),
        )
        .header("krafter-event-type", event_type)
        .header("krafter-source-id", source_id)
        .header("krafter-attempt", attempt.to_string());
    if let Some(ct) = content_type {
        request = request.header(http::header::CONTENT_TYPE, ct);
    }
    let request = match request.body(Full::new(Bytes::copy_from_slice(body))) {
        Ok(r) => r,
        Err(e) => return Forwarded::Failed(e.to_string()),
    };
    let call = async {
        let response = api.http().request(request).await?;
        let status = response.status().as_u16();
        // Read (and drop) the answer so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok::<u16, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
        Ok(Ok(status)) => Forwarded::Status(status),
        Ok(Err(e)) => Forwarded::Failed(
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        ),
        Err(_) => Forwarded::Failed(format!("timed out after {} s", FORWARD_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_split_anywhere_with_comments_and_line_ends() {
        let stream = b": open\n\nid: evt_1\nevent: event\ndata: {\"a\":1}\n\n: keep-alive\n\nid: evt_2\r\nevent: event\r\ndata: x\r\ndata: y\r\n\r\ndata:z\rretry: 10\r\r\n";
        // Every split point gives the same messages.
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream[..split]);
            got.extend(p.push(&stream[split..]));
            assert_eq!(
                got,
                vec![
                    SseMessage {
                        id: Some("evt_1".into()),
                        event: Some("event".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseMessage {
                        id: Some("evt_2".into()),
                        event: Some("event".into()),
                        data: "x\ny".into()
                    },
                    SseMessage {
                        id: None,
                        event: None,
                        data: "z".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_message_without_its_blank_line_is_not_emitted_yet() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: evt_1\ndata: {}\n").is_empty());
        assert_eq!(p.push(b"\n").len(), 1);
    }

    #[test]
    fn bodies_come_from_body_or_body_base64() {
        let text = serde_json::json!({"body": "héllo"});
        assert_eq!(body_of(&text).unwrap(), "héllo".as_bytes());
        let binary = serde_json::json!({"body_base64": STANDARD.encode([0u8, 255, 1])});
        assert_eq!(body_of(&binary).unwrap(), vec![0u8, 255, 1]);
        assert!(body_of(&serde_json::json!({"body_base64": "!!"})).is_err());
    }
}
