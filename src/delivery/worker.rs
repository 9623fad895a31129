//! One delivery attempt: build the signed request, send it, classify the
//! result. No storage writes here; the engine records the outcome.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

use super::client::{guard_literal, is_ssrf_refusal, DeliveryClient, Reach};
use super::retry::parse_retry_after;
use super::signer;
use crate::model::records::{ErrorKind, EventRecord};
use crate::model::trace::{TraceContext, TRACEPARENT, TRACESTATE};

/// Largest part of a response body kept with the attempt.
pub const SNIPPET_BYTES: usize = 1024;

/// What the receiver (or the network) said.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub duration: Duration,
    pub status: Option<u16>,
    /// `None` on success.
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    pub snippet: Vec<u8>,
    pub retry_after: Option<Duration>,
}

impl AttemptResult {
    /// Whether the attempt delivered (2xx).
    pub fn succeeded(&self) -> bool {
        self.error_kind.is_none()
    }

    /// A failed attempt that got no response.
    pub fn failure(started: Instant, kind: ErrorKind, message: String) -> Self {
        AttemptResult {
            duration: started.elapsed(),
            status: None,
            error_kind: Some(kind),
            error_message: Some(message),
            snippet: Vec::new(),
            retry_after: None,
        }
    }
}

/// Everything one attempt needs.
pub struct AttemptRequest<'a> {
    pub url: &'a str,
    pub event: &'a EventRecord,
    /// Decoded destination keys, current first (two during a rotation).
    pub keys: &'a [Vec<u8>],
    pub attempt: u32,
    pub timeout: Duration,
    pub reach: Reach,
    /// The destination's own headers (validated: none of Krafter's).
    pub headers: &'a [(String, String)],
    /// The `authorization` value its `auth` makes, if any.
    pub authorization: Option<&'a str>,
    /// Tracing on: the attempt span's context, sent as `traceparent` in
    /// place of an inbound one (off: an inbound one is forwarded as is).
    pub trace: Option<TraceContext>,
}

/// Inbound headers forwarded: those kept with the event (events stored
/// before a header joined that rule are filtered again here), minus
/// `content-length` and the ones Krafter sets itself.
fn forwarded(name: &str) -> bool {
    crate::http::headers::is_kept_with_event(name, &[])
        && !(name == "content-length"
            || name == "user-agent"
            || name.starts_with("webhook-")
            || name.starts_with("krafter-"))
}

/// Sends one attempt and classifies what happened.
pub async fn attempt(client: &DeliveryClient, req: AttemptRequest<'_>) -> AttemptResult {
    let started = Instant::now();
    let url = match url::Url::parse(req.url) {
        Ok(url) => url,
        Err(e) => return AttemptResult::failure(started, ErrorKind::InvalidUrl, e.to_string()),
    };
    if let Err(e) = guard_literal(&url, req.reach) {
        return AttemptResult::failure(started, ErrorKind::SsrfRefused, e.to_string());
    }
    let request = match build_request(&req) {
        Ok(r) => r,
        Err(e) => return AttemptResult::failure(started, ErrorKind::InvalidRequest, e.to_string()),
    };
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let snippet = read_snippet(response.into_body()).await;
        Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, snippet))
    };
    match tokio::time::timeout(req.timeout, exchange).await {
        Err(_) => AttemptResult::failure(
            started,
            ErrorKind::Timeout,
            format!(
                "no complete response within {}",
                humantime::format_duration(req.timeout)
            ),
        ),
        Ok(Err(e)) => {
            let kind = if is_ssrf_refusal(&e) {
                ErrorKind::SsrfRefused
            } else if is_tls_failure(&e) {
                ErrorKind::Tls
            } else if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Http
            };
            AttemptResult::failure(started, kind, error_chain(&e))
        }
        Ok(Ok((status, retry_after, snippet))) => {
            let ok = status.is_success();
            AttemptResult {
                duration: started.elapsed(),
                status: Some(status.as_u16()),
                error_kind: (!ok).then_some(ErrorKind::HttpStatus),
                error_message: (!ok).then(|| format!("HTTP {status}")),
                snippet,
                retry_after: if matches!(status.as_u16(), 429 | 503) {
                    retry_after
                } else {
                    None
                },
            }
        }
    }
}

fn build_request(req: &AttemptRequest<'_>) -> Result<Request<Full<Bytes>>, http::Error> {
    let event_id = req.event.id.to_string();
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let signature = signer::signature_header(req.keys, &event_id, timestamp, &req.event.body);
    let mut builder = Request::builder().method(Method::POST).uri(req.url);
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &req.event.headers {
            if !forwarded(name) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        // The destination's own headers replace inbound ones of that name.
        for (name, value) in req.headers {
            if crate::http::headers::is_refused_destination_header(name) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        if let Some(trace) = req.trace {
            set_traceparent(headers, trace);
        }
        if let Some(auth) = req.authorization {
            let mut value = HeaderValue::from_str(auth)?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        set("webhook-id", event_id);
        set("webhook-timestamp", timestamp.to_string());
        set("webhook-signature", signature);
        set(
            "user-agent",
            format!("Krafter/{}", env!("CARGO_PKG_VERSION")),
        );
        set("krafter-event-type", req.event.event_type.clone());
        set("krafter-source-id", req.event.source_id.to_string());
        set("krafter-attempt", req.attempt.to_string());
        set("content-length", req.event.body.len().to_string());
    }
    builder.body(Full::new(Bytes::from(req.event.body.clone())))
}

/// Sends the attempt's own trace context. An inbound `tracestate` goes
/// along only while the trace is still the one it was sent with (W3C: vendor
/// data belongs to its trace); an inbound `traceparent` is replaced.
fn set_traceparent(headers: &mut http::HeaderMap, trace: TraceContext) {
    let inbound = TraceContext::from_headers(
        headers
            .get_all(TRACEPARENT)
            .iter()
            .map(|value| value.as_bytes()),
    );
    if inbound.map(|c| c.trace_id) != Some(trace.trace_id) {
        headers.remove(TRACESTATE);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.to_traceparent()) {
        headers.insert(HeaderName::from_static(TRACEPARENT), value);
    }
}

/// Reads at most [`SNIPPET_BYTES`] of a response; the rest is dropped.
async fn read_snippet(mut body: hyper::body::Incoming) -> Vec<u8> {
    let mut snippet = Vec::new();
    while snippet.len() < SNIPPET_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = SNIPPET_BYTES - snippet.len();
                    snippet.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    snippet
}

/// Whether a TLS handshake or certificate check failed.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // hyper-rustls nests io::Errors (Other around InvalidData around
        // the rustls error), and io::Error's `source()` skips what it wraps.
        current = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
