//! Criterion benchmarks of the per-event hot paths: signature verification,
//! filter matching, what the store reads per delivery attempt, and the W3C
//! trace context tracing reads and writes.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use krafter::ingest::providers::{self, Inbound, ProviderKind};
use krafter::model::filter;
use std::sync::Arc;

use krafter::config::StorageConfig;
use krafter::metrics::Metrics;
use krafter::model::ids::new_id;
use krafter::model::records::{DestinationRecord, EventRecord, SourceRecord};
use krafter::store::{IngestOutcome, Store};

fn stripe_verify(c: &mut Criterion) {
    // The Stripe vector from PROVIDERS.md, verified at its own timestamp.
    let body = br#"{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}"#;
    let mut headers = HeaderMap::new();
    headers.insert(
        "stripe-signature",
        "t=1614265330,v1=31fe7071853a3ce7cef4cf91041ccfde0db025f63c690910579c71cf94740b3d"
            .parse()
            .expect("header"),
    );
    let inbound = Inbound {
        headers: &headers,
        body,
        now_unix: 1_614_265_330,
        url: "https://hooks.example.com/in/wh_bench",
    };
    let secrets: [&[u8]; 1] = [b"whsec_test_secret"];
    let stripe = providers::get(ProviderKind::Stripe);
    assert!(stripe.verify(None, &inbound, &secrets).is_ok());
    c.bench_function("stripe verify (80-byte body)", |b| {
        b.iter(|| stripe.verify(None, black_box(&inbound), &secrets))
    });
}

/// The per-request provider calls of the ingest route for a Stripe source
/// (verify, event type, event id), with the kind hidden from the optimiser
/// as it is when read from the source record: measures the dispatch.
fn provider_dispatch(c: &mut Criterion) {
    let body = br#"{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}"#;
    let mut headers = HeaderMap::new();
    headers.insert(
        "stripe-signature",
        "t=1614265330,v1=31fe7071853a3ce7cef4cf91041ccfde0db025f63c690910579c71cf94740b3d"
            .parse()
            .expect("header"),
    );
    let inbound = Inbound {
        headers: &headers,
        body,
        now_unix: 1_614_265_330,
        url: "",
    };
    let json: serde_json::Value = serde_json::from_slice(body).expect("json");
    let secrets: [&[u8]; 1] = [b"whsec_test_secret"];
    c.bench_function("stripe verify + type + id (dispatched)", |b| {
        b.iter(|| {
            let kind = black_box(ProviderKind::Stripe);
            let provider = providers::get(kind);
            let ok = provider.verify(None, &inbound, &secrets).is_ok();
            let t = provider.event_type(None, &inbound, Some(&json));
            let id = provider.event_id(None, &inbound, Some(&json));
            black_box((ok, t, id))
        })
    });
    // Header-only lookups for every kind: no HMAC, so dispatch dominates.
    let empty = HeaderMap::new();
    let bare = Inbound {
        headers: &empty,
        body: b"",
        now_unix: 0,
        url: "",
    };
    c.bench_function("event id, all 12 kinds (dispatched)", |b| {
        b.iter(|| {
            for kind in black_box(ProviderKind::ALL) {
                black_box(providers::get(kind).event_id(None, &bare, None));
            }
        })
    });
}

fn filter_matching(c: &mut Criterion) {
    let patterns: Vec<String> = ["charge.*", "invoice.paid", "customer.*.updated", "*"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.bench_function("filter match (4 patterns)", |b| {
        b.iter(|| {
            filter::matches(
                black_box(&patterns[..3]),
                black_box("customer.subscription.updated"),
            )
        })
    });
}

/// What each delivery attempt reads before it sends: the event (headers
/// and a 1 KiB body) and its delivery, through the storage API (a snapshot,
/// two lookups, two record decodes).
fn attempt_inputs(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        path: dir.path().join("data"),
        ..StorageConfig::default()
    };
    let store = Store::open(&config, Arc::new(Metrics::new())).expect("store");
    let source = SourceRecord {
        id: new_id(),
        slug: "wh_bench000".into(),
        name: "bench".into(),
        provider: ProviderKind::None,
        provider_config: None,
        signing_secret: None,
        previous_secret: None,
        enabled: true,
        retention_days: 30,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    let destination = DestinationRecord {
        id: new_id(),
        source_id: source.id,
        url: "http://127.0.0.1:9/sink".into(),
        event_filter: vec![],
        enabled: true,
        secret: store.seal(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        previous_secret: None,
        rate_limit: None,
        disabled_reason: None,
        disabled_at_ms: None,
        failing_since_ms: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        options: Default::default(),
    };
    let id = new_id();
    let event = EventRecord {
        id,
        source_id: source.id,
        received_at_ms: id.timestamp_ms() as i64,
        event_type: "invoice.paid".into(),
        provider_event_id: Some("evt_123".into()),
        headers: vec![("content-type".into(), b"application/json".to_vec()); 8],
        body: vec![b'x'; 1024],
        trace: None,
    };
    let delivery = runtime.block_on(async {
        store.create_source(source).await.expect("source");
        store
            .create_destination(destination, 10)
            .await
            .expect("destination");
        match store.ingest(event).await.expect("ingest") {
            IngestOutcome::Stored { deliveries } => deliveries[0].id,
            IngestOutcome::Duplicate { .. } => unreachable!("a fresh store"),
        }
    });
    c.bench_function("store: attempt inputs (1 KiB event + delivery)", |b| {
        b.iter(|| runtime.block_on(store.attempt_inputs(black_box(id), black_box(delivery))))
    });
    runtime.block_on(store.close());
}

/// What tracing adds per event when it is on: reading an inbound
/// `traceparent` (ingest) and writing the attempt's (delivery). Off, neither
/// runs.
fn trace_context(c: &mut Criterion) {
    use krafter::model::trace::TraceContext;
    let inbound = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    c.bench_function("traceparent: parse inbound + format outbound", |b| {
        b.iter(|| {
            TraceContext::parse(black_box(inbound))
                .map(|c| c.to_traceparent())
                .expect("valid")
        })
    });
}

criterion_group!(
    benches,
    stripe_verify,
    provider_dispatch,
    filter_matching,
    attempt_inputs,
    trace_context
);
criterion_main!(benches);
