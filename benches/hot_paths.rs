//! Criterion benchmarks of the per-event hot paths: signature verification,
//! filter matching and record encoding.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use krafter::ingest::providers::{self, Inbound, ProviderKind};
use krafter::model::filter;
use krafter::model::records::EventRecord;
use krafter::store::records::Record;

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

fn record_encoding(c: &mut Criterion) {
    let event = EventRecord {
        id: 1,
        source_id: 2,
        received_at_ms: 3,
        event_type: "invoice.paid".into(),
        provider_event_id: Some("evt_123".into()),
        headers: vec![("content-type".into(), b"application/json".to_vec()); 8],
        body: vec![b'x'; 1024],
    };
    c.bench_function("event encode (1 KiB body)", |b| {
        b.iter(|| black_box(&event).encode())
    });
    let bytes = event.encode();
    c.bench_function("event decode (1 KiB body)", |b| {
        b.iter(|| EventRecord::decode(black_box(&bytes)))
    });
}

criterion_group!(
    benches,
    stripe_verify,
    provider_dispatch,
    filter_matching,
    record_encoding
);
criterion_main!(benches);
