//! Tracing end to end (SPEC §15 `telemetry.otlp_endpoint`): a real server
//! exports its spans over OTLP/HTTP to a collector on loopback inside the
//! test, which decodes them with the OpenTelemetry protobuf types (never
//! Krafter's own code). Checked: the ingest span's parent is a valid
//! inbound `traceparent`; each delivery attempt's span is its child, in the
//! same trace, also after a restart (the context came from storage); the
//! `traceparent` a destination receives names the attempt's span; invalid
//! inbound contexts are ignored; with tracing off nothing is invented.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::receiver::{sequence, Received, Receiver, Reply};
use crate::common::{assert_invalid_field, none_source, poll, server_with, Source, TestServer};

/// The trace and span the "sender" of our webhooks is in.
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// An OTLP/HTTP collector: a loopback server answering 200 to everything,
/// whose `/v1/traces` bodies are decoded here.
struct Collector {
    receiver: Receiver,
}

/// One exported span with what the tests look at.
#[derive(Debug, Clone)]
struct Exported {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, AttrValue)>,
    status: Option<(i32, String)>,
    service_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum AttrValue {
    Text(String),
    Int(i64),
    Bool(bool),
    Other,
}

impl Exported {
    fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn text(&self, key: &str) -> &str {
        match self.attr(key) {
            Some(AttrValue::Text(t)) => t,
            other => panic!("span {} attribute {key}: {other:?}", self.name),
        }
    }

    fn int(&self, key: &str) -> i64 {
        match self.attr(key) {
            Some(AttrValue::Int(n)) => *n,
            other => panic!("span {} attribute {key}: {other:?}", self.name),
        }
    }
}

impl Collector {
    async fn start() -> Collector {
        Collector {
            receiver: Receiver::start(|_| {
                Reply::ok().header("content-type", "application/x-protobuf")
            })
            .await,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.receiver.addr())
    }

    /// Every span exported so far.
    fn spans(&self) -> Vec<Exported> {
        let mut out = Vec::new();
        for request in self.receiver.requests_to("/v1/traces") {
            assert_eq!(request.method, "POST");
            assert_eq!(
                request.header("content-type"),
                Some("application/x-protobuf"),
                "OTLP/HTTP protobuf"
            );
            let export = ExportTraceServiceRequest::decode(request.body.as_slice())
                .expect("an OTLP ExportTraceServiceRequest");
            for resource_spans in export.resource_spans {
                let service_name = resource_spans.resource.as_ref().and_then(|r| {
                    r.attributes.iter().find_map(|kv| match &kv.value {
                        Some(v) if kv.key == "service.name" => match &v.value {
                            Some(AnyValue::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        },
                        _ => None,
                    })
                });
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        out.push(exported(span, service_name.clone()));
                    }
                }
            }
        }
        out
    }

    /// Waits until the spans exported include what `done` looks for.
    async fn wait_for<T>(&self, what: &str, done: impl Fn(&[Exported]) -> Option<T>) -> T {
        poll(Duration::from_secs(15), what, || async {
            done(&self.spans())
        })
        .await
    }
}

fn exported(span: Span, service_name: Option<String>) -> Exported {
    Exported {
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id: hex::encode(&span.parent_span_id),
        name: span.name,
        kind: span.kind,
        attributes: span
            .attributes
            .into_iter()
            .map(|kv| {
                let value = match kv.value.and_then(|v| v.value) {
                    Some(AnyValue::StringValue(s)) => AttrValue::Text(s),
                    Some(AnyValue::IntValue(n)) => AttrValue::Int(n),
                    Some(AnyValue::BoolValue(b)) => AttrValue::Bool(b),
                    _ => AttrValue::Other,
                };
                (kv.key, value)
            })
            .collect(),
        status: span.status.map(|s| (s.code, s.message)),
        service_name,
    }
}

/// A server exporting to `collector` every 100 ms, with a short retry
/// schedule.
async fn traced_server(collector: &Collector) -> TestServer {
    let endpoint = collector.endpoint();
    server_with(move |c| {
        c.telemetry.otlp_endpoint = Some(endpoint);
        c.telemetry.batch_interval = Duration::from_millis(100);
        c.telemetry.export_timeout = Duration::from_secs(2);
        c.delivery.retry_schedule = vec![Duration::from_millis(300)];
    })
    .await
}

async fn destination_to(server: &TestServer, source: &Source, url: &str) -> String {
    let d = server
        .create_destination(&source.id, json!({ "url": url }))
        .await;
    d["id"].as_str().expect("id").to_string()
}

/// Ingests `body` with `headers`; answers the event id.
async fn ingest(
    server: &TestServer,
    source: &Source,
    headers: &[(&str, String)],
    body: &str,
) -> String {
    let mut all = vec![("content-type", "application/json".to_string())];
    all.extend(headers.iter().cloned());
    let (status, answer) = server.post_in(&source.slug, &all, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["data"]["event_id"]
        .as_str()
        .expect("event_id")
        .to_string()
}

/// `traceparent` → (trace id, span id, flags), parsed by the test itself.
fn parse_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    assert_eq!(parts[1].len(), 32, "{value}");
    assert_eq!(parts[2].len(), 16, "{value}");
    assert!(
        value
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{value}"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn one<'a>(spans: &'a [Exported], what: &str, pick: impl Fn(&Exported) -> bool) -> &'a Exported {
    let found: Vec<&Exported> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {spans:#?}");
    found[0]
}

fn ingest_span_of<'a>(spans: &'a [Exported], event_id: &str) -> Option<&'a Exported> {
    spans.iter().find(|s| {
        s.name == "ingest" && s.attr("krafter.event.id") == Some(&AttrValue::Text(event_id.into()))
    })
}

fn attempt_spans_of<'a>(spans: &'a [Exported], event_id: &str) -> Vec<&'a Exported> {
    spans
        .iter()
        .filter(|s| {
            s.name == "delivery.attempt"
                && s.attr("krafter.event.id") == Some(&AttrValue::Text(event_id.into()))
        })
        .collect()
}

/// The delivery ids of an event, through the API.
async fn delivery_ids(server: &TestServer, source: &Source, event_id: &str) -> Vec<String> {
    let (status, body) = server
        .get(&format!(
            "/api/v1/webhooks/sources/{}/events/{event_id}/deliveries",
            source.id
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries: {body}"))
        .iter()
        .map(|d| d["id"].as_str().expect("delivery id").to_string())
        .collect()
}

#[tokio::test]
async fn an_inbound_traceparent_parents_the_ingest_span_and_the_attempt_joins_its_trace() {
    let collector = Collector::start().await;
    let destination = Receiver::ok().await;
    let mut server = traced_server(&collector).await;
    let source = none_source(&server).await;
    let destination_id = destination_to(&server, &source, &destination.url("/hook")).await;

    let body = r#"{"type":"invoice.paid","card":"secret-body-4242"}"#;
    let event_id = ingest(
        &server,
        &source,
        &[
            ("traceparent", format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "sender=abc".to_string()),
            ("x-private", "secret-header-value".to_string()),
        ],
        body,
    )
    .await;
    let received = destination
        .wait_for_path("/hook", 1, Duration::from_secs(10))
        .await;
    let (spans, ingest, attempt) = collector
        .wait_for("the ingest and attempt spans", |spans| {
            let ingest = ingest_span_of(spans, &event_id)?.clone();
            let attempt = (*attempt_spans_of(spans, &event_id).first()?).clone();
            Some((spans.to_vec(), ingest, attempt))
        })
        .await;

    // The ingest span: in the sender's trace, a child of the sender's span.
    assert_eq!(ingest.trace_id, TRACE);
    assert_eq!(ingest.parent_span_id, PARENT);
    assert_eq!(ingest.kind, SpanKind::Server as i32);
    assert_eq!(ingest.text("krafter.source.id"), source.id);
    assert_eq!(ingest.text("krafter.event.type"), "invoice.paid");
    assert_eq!(ingest.int("http.response.status_code"), 200);
    assert_eq!(ingest.service_name.as_deref(), Some("krafter"));

    // The attempt span: same trace, the ingest span its parent.
    assert_eq!(attempt.trace_id, TRACE);
    assert_eq!(attempt.parent_span_id, ingest.span_id);
    assert_ne!(attempt.span_id, ingest.span_id);
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(attempt.text("krafter.destination.id"), destination_id);
    assert_eq!(attempt.text("krafter.source.id"), source.id);
    assert_eq!(attempt.int("krafter.attempt"), 1);
    assert_eq!(attempt.int("http.response.status_code"), 200);
    assert_eq!(attempt.text("krafter.outcome"), "succeeded");
    assert!(attempt.attr("krafter.duration_ms").is_some());
    assert_eq!(
        attempt.status.as_ref().map(|s| s.0),
        Some(SpanStatus::Ok as i32)
    );
    assert_eq!(
        vec![attempt.text("krafter.delivery.id").to_string()],
        delivery_ids(&server, &source, &event_id).await
    );

    // What the destination got names the attempt span; the sender's
    // tracestate travels on, as the trace is still the sender's.
    let sent = &received[0];
    let (trace_id, span_id, flags) = parse_traceparent(sent.must("traceparent"));
    assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE, "01"));
    assert_eq!(span_id, attempt.span_id);
    assert_eq!(sent.header("tracestate"), Some("sender=abc"));

    // Never a body or a header value on a span.
    for span in &spans {
        for (key, value) in &span.attributes {
            if let AttrValue::Text(text) = value {
                assert!(
                    !text.contains("secret-body") && !text.contains("secret-header"),
                    "{key} = {text}"
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_ingest_span_names_the_event_first_stored() {
    let collector = Collector::start().await;
    let mut server = traced_server(&collector).await;
    let (status, created) = server
        .post(
            "/api/v1/webhooks/sources",
            json!({"name": "gh", "provider": "github", "signing_secret": "gh-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let slug = created["data"]["slug"].as_str().expect("slug").to_string();
    let body = br#"{"action":"opened"}"#;
    // GitHub's signature, computed here: sha256= hex HMAC-SHA256 of the body.
    let signature = format!(
        "sha256={}",
        hex::encode(crate::common::sign::hmac_sha256(b"gh-secret", &[body]))
    );
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-github-event", "issues".to_string()),
        (
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
        ),
        ("x-hub-signature-256", signature),
    ];
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (status, answer) = server.post_in(&slug, &headers, body.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answers.push(answer["data"].clone());
    }
    assert_eq!(answers[1]["duplicate"], true, "{answers:?}");
    let original = answers[0]["event_id"]
        .as_str()
        .expect("event id")
        .to_string();
    let spans = collector
        .wait_for("two ingest spans", |spans| {
            let named: Vec<Exported> = spans
                .iter()
                .filter(|s| s.name == "ingest" && s.attr("krafter.event.id").is_some())
                .cloned()
                .collect();
            (named.len() >= 2).then_some(named)
        })
        .await;
    let duplicate = one(&spans, "the duplicate's span", |s| {
        s.attr("krafter.duplicate") == Some(&AttrValue::Bool(true))
    });
    assert_eq!(duplicate.text("krafter.event.id"), original);
    assert_eq!(duplicate.text("krafter.event.type"), "issues");
    assert_eq!(duplicate.int("http.response.status_code"), 200);
    // Each attribute once: a collector must not have to pick between two.
    for span in &spans {
        let mut keys: Vec<&str> = span.attributes.iter().map(|(k, _)| k.as_str()).collect();
        let all = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all, "repeated attributes: {span:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_a_valid_traceparent_a_new_trace_starts_and_the_attempt_joins_it() {
    let collector = Collector::start().await;
    let destination = Receiver::ok().await;
    let mut server = traced_server(&collector).await;
    let source = none_source(&server).await;
    destination_to(&server, &source, &destination.url("/hook")).await;

    // None at all, then one that is invalid (upper-case hex), then two
    // valid ones at once (W3C: no context): each is ignored, never an error.
    let bogus = "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01".to_string();
    let twice = format!("00-{TRACE}-{PARENT}-01");
    let none = ingest(&server, &source, &[], r#"{"type":"a"}"#).await;
    let invalid = ingest(
        &server,
        &source,
        &[
            ("traceparent", bogus.clone()),
            ("tracestate", "sender=stale".to_string()),
        ],
        r#"{"type":"b"}"#,
    )
    .await;
    let doubled = ingest(
        &server,
        &source,
        &[
            ("traceparent", twice.clone()),
            ("traceparent", twice.clone()),
        ],
        r#"{"type":"c"}"#,
    )
    .await;
    let received = destination
        .wait_for_path("/hook", 3, Duration::from_secs(10))
        .await;
    let events = [none, invalid, doubled];
    let spans = collector
        .wait_for("three ingest and three attempt spans", |spans| {
            events
                .iter()
                .all(|e| {
                    ingest_span_of(spans, e).is_some() && !attempt_spans_of(spans, e).is_empty()
                })
                .then(|| spans.to_vec())
        })
        .await;
    let mut traces = Vec::new();
    for event_id in &events {
        let ingest = ingest_span_of(&spans, event_id).expect("ingest span");
        assert_eq!(ingest.parent_span_id, "", "a root span: {ingest:?}");
        assert_ne!(ingest.trace_id, TRACE.to_lowercase());
        assert_ne!(ingest.trace_id, "0".repeat(32));
        assert_eq!(ingest.int("http.response.status_code"), 200);
        let attempt = attempt_spans_of(&spans, event_id)[0];
        assert_eq!(attempt.trace_id, ingest.trace_id);
        assert_eq!(attempt.parent_span_id, ingest.span_id);
        // The destination got the attempt's context, not what came in.
        let sent = received
            .iter()
            .find(|r| r.must("webhook-id") == event_id)
            .expect("delivered");
        let (trace_id, span_id, _) = parse_traceparent(sent.must("traceparent"));
        assert_eq!(
            (trace_id, span_id),
            (attempt.trace_id.clone(), attempt.span_id.clone())
        );
        // A tracestate belongs to the trace it came with: not forwarded
        // into another one.
        assert_eq!(sent.header("tracestate"), None);
        traces.push(ingest.trace_id.clone());
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 3, "each ingest starts its own trace");
    server.stop().await;
}

#[tokio::test]
async fn an_attempt_after_a_restart_still_joins_the_ingest_trace() {
    let collector = Collector::start().await;
    // The destination refuses the first attempt; the retry comes after the
    // server restarted, when nothing of the ingest is left in memory.
    let destination = Receiver::start(sequence(vec![Reply::status(503)], Reply::ok())).await;
    let endpoint = collector.endpoint();
    let server = server_with(move |c| {
        c.telemetry.otlp_endpoint = Some(endpoint);
        c.telemetry.batch_interval = Duration::from_millis(100);
        c.telemetry.export_timeout = Duration::from_secs(2);
        // Long enough that the retry is never sent before the restart.
        c.delivery.retry_schedule = vec![Duration::from_secs(3)];
    })
    .await;
    let source = none_source(&server).await;
    destination_to(&server, &source, &destination.url("/hook")).await;
    let event_id = ingest(
        &server,
        &source,
        &[("traceparent", format!("00-{TRACE}-{PARENT}-01"))],
        r#"{"type":"invoice.paid"}"#,
    )
    .await;
    destination
        .wait_for_path("/hook", 1, Duration::from_secs(10))
        .await;
    let server = server.restart().await;
    let restarted = std::time::Instant::now();
    let received = destination
        .wait_for_path("/hook", 2, Duration::from_secs(15))
        .await;
    assert!(
        received[1].at > restarted,
        "the retry came from the restarted server"
    );
    let (ingest, attempts) = collector
        .wait_for("the ingest span and both attempts", |spans| {
            let ingest = ingest_span_of(spans, &event_id)?.clone();
            let attempts: Vec<Exported> = attempt_spans_of(spans, &event_id)
                .into_iter()
                .cloned()
                .collect();
            (attempts.len() >= 2).then_some((ingest, attempts))
        })
        .await;
    assert_eq!(ingest.trace_id, TRACE);
    let first = one(&attempts, "attempt 1", |s| s.int("krafter.attempt") == 1);
    let second = one(&attempts, "attempt 2", |s| s.int("krafter.attempt") == 2);
    for attempt in [first, second] {
        assert_eq!(attempt.trace_id, TRACE, "{attempt:?}");
        // The ingest span (from storage), not the sender's span that a
        // re-read of the inbound header would give.
        assert_eq!(attempt.parent_span_id, ingest.span_id, "{attempt:?}");
    }
    assert_eq!(first.int("http.response.status_code"), 503);
    assert_eq!(first.text("krafter.outcome"), "http_status");
    assert_eq!(
        first.status.as_ref().map(|s| s.0),
        Some(SpanStatus::Error as i32)
    );
    assert_eq!(second.text("krafter.outcome"), "succeeded");
    let sent: Vec<(String, String, String)> = received
        .iter()
        .map(|r: &Received| parse_traceparent(r.must("traceparent")))
        .collect();
    assert_eq!(sent[0].1, first.span_id);
    assert_eq!(sent[1].1, second.span_id);
    assert!(sent.iter().all(|(trace, _, _)| trace == TRACE));
    drop(server);
}

#[tokio::test]
async fn an_unsampled_inbound_trace_exports_nothing_but_still_propagates() {
    let collector = Collector::start().await;
    let destination = Receiver::ok().await;
    let mut server = traced_server(&collector).await;
    let source = none_source(&server).await;
    destination_to(&server, &source, &destination.url("/hook")).await;
    // The sender did not record its span (flags 00): neither do we, and
    // the destination is told so, in the same trace.
    ingest(
        &server,
        &source,
        &[("traceparent", format!("00-{TRACE}-{PARENT}-00"))],
        r#"{"type":"quiet"}"#,
    )
    .await;
    let received = destination
        .wait_for_path("/hook", 1, Duration::from_secs(10))
        .await;
    let (trace_id, span_id, flags) = parse_traceparent(received[0].must("traceparent"));
    assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE, "00"));
    assert_ne!(span_id, PARENT, "the attempt's own span id");
    // A sampled one afterwards shows the exporter works (and flushes in
    // order), so the absence above is real.
    let loud = ingest(
        &server,
        &source,
        &[("traceparent", format!("00-{TRACE}-{PARENT}-01"))],
        r#"{"type":"loud"}"#,
    )
    .await;
    collector
        .wait_for("the sampled ingest", |spans| {
            ingest_span_of(spans, &loud).map(|_| ())
        })
        .await;
    server.stop().await;
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .all(|s| s.attr("krafter.event.type") != Some(&AttrValue::Text("quiet".into()))),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn with_tracing_off_an_inbound_traceparent_is_forwarded_unchanged() {
    let destination = Receiver::ok().await;
    let mut server = server_with(|c| {
        c.delivery.retry_schedule = vec![Duration::from_millis(300)];
    })
    .await;
    assert!(
        server.config.telemetry.otlp_endpoint.is_none(),
        "off by default"
    );
    let source = none_source(&server).await;
    destination_to(&server, &source, &destination.url("/hook")).await;
    let inbound = format!("00-{TRACE}-{PARENT}-01");
    ingest(
        &server,
        &source,
        &[
            ("traceparent", inbound.clone()),
            ("tracestate", "sender=abc".to_string()),
        ],
        r#"{"type":"a"}"#,
    )
    .await;
    ingest(&server, &source, &[], r#"{"type":"b"}"#).await;
    let received = destination
        .wait_for_path("/hook", 2, Duration::from_secs(10))
        .await;
    let with = received
        .iter()
        .find(|r| r.body == br#"{"type":"a"}"#)
        .expect("a");
    assert_eq!(with.header("traceparent"), Some(inbound.as_str()));
    assert_eq!(with.header("tracestate"), Some("sender=abc"));
    let without = received
        .iter()
        .find(|r| r.body == br#"{"type":"b"}"#)
        .expect("b");
    assert_eq!(without.header("traceparent"), None, "nothing invented");
    server.stop().await;
}

#[tokio::test]
async fn a_destination_cannot_set_the_trace_context_headers() {
    let server = server_with(|_| {}).await;
    let source = none_source(&server).await;
    for name in ["traceparent", "TraceState"] {
        let (status, body): (StatusCode, Value) = server
            .post(
                &format!("/api/v1/webhooks/sources/{}/destinations", source.id),
                json!({
                    "url": "http://127.0.0.1:9/hook",
                    "headers": { name: format!("00-{TRACE}-{PARENT}-01") },
                }),
            )
            .await;
        assert_invalid_field(status, &body, &format!("headers.{name}"));
        assert!(body.to_string().contains("traceparent"), "{body}");
    }
}

#[tokio::test]
async fn a_collector_that_is_down_costs_neither_ingest_nor_shutdown() {
    // Nothing listens there: every export fails to connect.
    let endpoint = format!("http://127.0.0.1:{}", crate::common::free_port());
    let destination = Receiver::ok().await;
    let mut server = server_with(move |c| {
        c.telemetry.otlp_endpoint = Some(endpoint);
        c.telemetry.batch_interval = Duration::from_millis(100);
        c.telemetry.export_timeout = Duration::from_secs(2);
    })
    .await;
    let source = none_source(&server).await;
    destination_to(&server, &source, &destination.url("/hook")).await;
    for i in 0..20 {
        ingest(&server, &source, &[], &format!(r#"{{"type":"t{i}"}}"#)).await;
    }
    destination
        .wait_for_path("/hook", 20, Duration::from_secs(10))
        .await;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}
