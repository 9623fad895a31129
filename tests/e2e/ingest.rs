//! Ingest end to end (SPEC §7–§8): `POST /in/{slug}` over real HTTP against
//! a real server and a real redb file.
//!
//! Every signature here is computed in the test itself with the `hmac`,
//! `sha2`, `base64` and `hex` crates, following each provider's documented
//! scheme (PROVIDERS.md) — never with Krafter's own code. The signers are
//! first checked against the official vectors. What was stored is read by
//! restarting the server on the same data and asking its API, as a user
//! would.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use crate::common::{
    assert_error, hmac_sha256, metric_sample, standard_webhooks_signature, stripe_signature_at,
    unix_secs, TestServer,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use krafter::model::ids::{EventId, SourceId};
use krafter::store::SourceChange;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SOURCES: &str = "/api/v1/webhooks/sources";
const STRIPE_SECRET: &str = "whsec_test_secret";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const PADDLE_SECRET: &str = "pdl_ntfset_test";
const SQUARE_KEY: &str = "Ibxx_5AKakO-3qeNVR61Dw";
const LINEAR_SECRET: &str = "lin_wh_testsecret";
const TWILIO_TOKEN: &str = "12345";
/// Loopback, accepted because these tests allow private networks; nothing
/// listens on the discard port, and no test waits for a delivery.
const DEST_URL: &str = "http://127.0.0.1:9/x";
/// Headers that describe one hop (RFC 9110 §7.6.1); never stored.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

// ---------------------------------------------------------------------------
// Independent signers (PROVIDERS.md), checked against the official vectors.
// ---------------------------------------------------------------------------

/// `X-Hub-Signature-256`: `sha256=` + hex HMAC of the body.
fn github_header(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// `X-Shopify-Hmac-Sha256`: base64 HMAC of the body.
fn shopify_header(secret: &str, body: &[u8]) -> String {
    B64.encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// `X-Slack-Signature`: `v0=` + hex HMAC of `"v0:{ts}:" + body`.
fn slack_header(secret: &str, ts: i64, body: &[u8]) -> String {
    let sig = hmac_sha256(secret.as_bytes(), &[format!("v0:{ts}:").as_bytes(), body]);
    format!("v0={}", hex::encode(sig))
}

/// `Paddle-Signature`: `ts=<ts>;h1=` + hex HMAC of `"{ts}:" + body`.
fn paddle_header(secret: &str, ts: i64, body: &[u8]) -> String {
    let sig = hmac_sha256(secret.as_bytes(), &[format!("{ts}:").as_bytes(), body]);
    format!("ts={ts};h1={}", hex::encode(sig))
}

/// `x-square-hmacsha256-signature`: base64 HMAC of notification URL + body.
fn square_header(key: &str, url: &str, body: &[u8]) -> String {
    B64.encode(hmac_sha256(key.as_bytes(), &[url.as_bytes(), body]))
}

/// `Linear-Signature`: hex HMAC of the body.
fn linear_header(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// `X-Twilio-Signature`: base64 HMAC-SHA1 of the URL followed by each
/// parameter's name and value, sorted by name (Twilio's RequestValidator).
fn twilio_header(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut m =
        <Hmac<Sha1> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    m.update(url.as_bytes());
    for (name, value) in sorted {
        m.update(name.as_bytes());
        m.update(value.as_bytes());
    }
    B64.encode(m.finalize().into_bytes())
}

/// `application/x-www-form-urlencoded` encoding of `params`.
fn form(params: &[(&str, &str)]) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
        .into_bytes()
}

pub(crate) type Headers = Vec<(&'static str, String)>;

fn stripe_headers(secret: &str, t: i64, body: &[u8]) -> Headers {
    vec![
        ("Stripe-Signature", stripe_signature_at(secret, t, body)),
        ("Content-Type", "application/json".into()),
    ]
}

fn stripe_body(id: &str, event_type: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","object":"event","type":"{event_type}","data":{{"object":{{}}}}}}"#)
        .into_bytes()
}

fn slack_headers(secret: &str, ts: i64, body: &[u8]) -> Headers {
    vec![
        ("X-Slack-Request-Timestamp", ts.to_string()),
        ("X-Slack-Signature", slack_header(secret, ts, body)),
    ]
}

fn sw_headers(prefix: &'static str, id: &str, ts: i64, body: &[u8]) -> Headers {
    let (h_id, h_ts, h_sig) = match prefix {
        "svix" => ("svix-id", "svix-timestamp", "svix-signature"),
        _ => ("webhook-id", "webhook-timestamp", "webhook-signature"),
    };
    vec![
        (h_id, id.to_string()),
        (h_ts, ts.to_string()),
        (h_sig, standard_webhooks_signature(SW_SECRET, id, ts, body)),
    ]
}

#[test]
fn test_signers_reproduce_the_documented_vectors() {
    assert_eq!(
        stripe_signature_at(
            "whsec_test_secret",
            1614265330,
            br#"{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}"#
        ),
        "t=1614265330,v1=31fe7071853a3ce7cef4cf91041ccfde0db025f63c690910579c71cf94740b3d"
    );
    assert_eq!(
        github_header("It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    assert_eq!(
        github_header("mysecret", b"{\n  \"foo\": \"bar\"\n}\n"),
        "sha256=e3eccac34c43c7dc1cbb905488b1b81347fcc700a7b025697a9d07862256023f"
    );
    assert_eq!(
        shopify_header(
            "hush",
            br#"{"id":820982911946154508,"email":"jon@example.com"}"#
        ),
        "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8="
    );
    let slack_body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    assert_eq!(
        slack_header(SLACK_SECRET, 1531420618, slack_body),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
    assert_eq!(
        standard_webhooks_signature(
            SW_SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(
        paddle_header(
            PADDLE_SECRET,
            1700000000,
            br#"{"event_id":"evt_1","event_type":"transaction.paid"}"#
        ),
        "ts=1700000000;h1=65f474bb061912f5578c7938fc332996a48df09c2cef51d0d1b68ff02a746591"
    );
    assert_eq!(
        square_header(
            SQUARE_KEY,
            "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
            br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#
        ),
        "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
    );
    assert_eq!(
        linear_header(
            LINEAR_SECRET,
            br#"{"type":"Issue","action":"create","webhookTimestamp":1700000000000}"#
        ),
        "e703a3084e02594fcefcb912769531b6a916934cb298676c3ea037cb1b548930"
    );
    let twilio_params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    let twilio_url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        twilio_header(TWILIO_TOKEN, twilio_url, &twilio_params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
    let json_body = br#"{"property": "value", "boolean": true}"#;
    let body_hash = hex::encode(Sha256::digest(json_body));
    assert_eq!(
        body_hash,
        "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    );
    assert_eq!(
        twilio_header(
            TWILIO_TOKEN,
            &format!("{twilio_url}&bodySHA256={body_hash}"),
            &[]
        ),
        "a9nBmqA0ju/hNViExpshrM61xv4="
    );
}

// ---------------------------------------------------------------------------
// HTTP and store helpers.
// ---------------------------------------------------------------------------

/// Creates a source and returns `(id, slug)`.
pub(crate) async fn create_source(
    server: &TestServer,
    provider: &str,
    secret: Option<&str>,
    config: Option<Value>,
) -> (String, String) {
    let mut body = json!({"name": format!("{provider} test"), "provider": provider});
    if let Some(secret) = secret {
        body["signing_secret"] = json!(secret);
    }
    if let Some(config) = config {
        body["provider_config"] = config;
    }
    let (status, resp) = server.post(SOURCES, body).await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    let id = resp["data"]["id"].as_str().expect("id").to_string();
    let slug = resp["data"]["slug"].as_str().expect("slug").to_string();
    (id, slug)
}

/// Creates a destination and returns its id.
async fn create_destination(server: &TestServer, source_id: &str, filter: Option<Value>) -> String {
    let mut body = json!({"url": DEST_URL});
    if let Some(filter) = filter {
        body["event_filter"] = filter;
    }
    let (status, resp) = server
        .post(&format!("{SOURCES}/{source_id}/destinations"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    resp["data"]["id"].as_str().expect("id").to_string()
}

/// Asserts SPEC §7's answer `{"data": {"event_id": "evt_...", "duplicate": d}}`
/// and returns the event id.
pub(crate) fn assert_accepted(status: StatusCode, body: &Value, duplicate: bool) -> String {
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"]
        .as_object()
        .unwrap_or_else(|| panic!("no data object: {body}"));
    let keys: HashSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["event_id", "duplicate"]), "{body}");
    assert_eq!(data["duplicate"], json!(duplicate), "{body}");
    let id = data["event_id"].as_str().expect("event_id is a string");
    assert!(EventId::parse(id).is_some(), "not an evt_ id: {id}");
    id.to_string()
}

pub(crate) fn assert_invalid_signature(status: StatusCode, body: &Value, case: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "case `{case}`: {body}");
    assert_error(status, body, 401, "invalid_signature");
}

/// Sends every case and asserts each is refused with 401 `invalid_signature`.
pub(crate) async fn assert_all_rejected(
    server: &TestServer,
    slug: &str,
    cases: Vec<(&str, Headers, Vec<u8>)>,
) {
    for (case, headers, body) in cases {
        let (status, resp) = server.post_in(slug, &headers, body).await;
        assert_invalid_signature(status, &resp, case);
    }
}

/// An event as the API shows it after a restart (`GET .../events/{id}`):
/// what a user reads back, not our own decoding of the stored record.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    source_id: String,
    event_type: String,
    provider_event_id: Option<String>,
    /// Lower-case names, as listed (repeated headers joined with ", ").
    headers: Vec<(String, Vec<u8>)>,
    /// `body`, or `body_base64` decoded.
    body: Vec<u8>,
}

/// Reads `event_id` through the API of the (restarted) server, under
/// whichever source holds it (the API addresses events by source).
pub(crate) async fn stored_event(server: &TestServer, event_id: &str) -> StoredEvent {
    let (status, sources) = server.get(&format!("{SOURCES}?limit=250")).await;
    assert_eq!(status, StatusCode::OK, "{sources}");
    for source in sources["data"].as_array().expect("sources") {
        let sid = source["id"].as_str().expect("source id");
        let (status, body) = server
            .get(&format!("{SOURCES}/{sid}/events/{event_id}"))
            .await;
        if status == StatusCode::NOT_FOUND {
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        let data = &body["data"];
        let headers = data["headers"]
            .as_object()
            .expect("headers object")
            .iter()
            .map(|(n, v)| {
                let v = v.as_str().expect("header value is a string");
                (n.clone(), v.as_bytes().to_vec())
            })
            .collect();
        let body = match (data["body"].as_str(), data["body_base64"].as_str()) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(b64)) => B64.decode(b64).expect("body_base64 is base64"),
            _ => panic!("exactly one of body and body_base64: {data}"),
        };
        return StoredEvent {
            source_id: data["source_id"].as_str().expect("source_id").to_string(),
            event_type: data["type"].as_str().expect("type").to_string(),
            provider_event_id: data["provider_event_id"].as_str().map(str::to_string),
            headers,
            body,
        };
    }
    panic!("event {event_id} not stored (no source lists it)")
}

/// How many events the API lists for `source_id` (every page).
pub(crate) async fn stored_count(server: &TestServer, source_id: &str) -> u64 {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let (status, page) = server
            .get(&format!(
                "{SOURCES}/{source_id}/events?limit=250&cursor={cursor}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        count += page["data"].as_array().expect("events").len() as u64;
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = next.to_string(),
            _ => return count,
        }
    }
}

/// The deliveries of an event as the API lists them
/// (`GET .../events/{id}/deliveries`).
async fn stored_deliveries(server: &TestServer, event_id: &str) -> Vec<Value> {
    let event = stored_event(server, event_id).await;
    let (status, body) = server
        .get(&format!(
            "{SOURCES}/{}/events/{event_id}/deliveries",
            event.source_id
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().expect("deliveries").clone()
}

pub(crate) fn header<'e>(event: &'e StoredEvent, name: &str) -> Option<&'e [u8]> {
    event
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Asserts what every stored event must satisfy: lower-case names, no
/// hop-by-hop header, and our custom header kept.
fn assert_headers_clean(event: &StoredEvent) {
    for (name, _) in &event.headers {
        assert_eq!(name, &name.to_ascii_lowercase(), "header not lower-case");
        assert!(
            !HOP_BY_HOP.contains(&name.as_str()),
            "hop-by-hop header `{name}` stored"
        );
    }
    assert_eq!(
        header(event, "x-custom"),
        Some(b"1".as_slice()),
        "{:?}",
        event.headers
    );
}

pub(crate) fn assert_event(
    event: &StoredEvent,
    source_id: &str,
    body: &[u8],
    event_type: &str,
    provider_event_id: Option<&str>,
) {
    assert_eq!(event.source_id, source_id, "source");
    assert_eq!(event.body, body, "body not byte-identical");
    assert_eq!(event.event_type, event_type);
    assert_eq!(event.provider_event_id.as_deref(), provider_event_id);
    assert_headers_clean(event);
}

pub(crate) fn custom() -> (&'static str, String) {
    ("X-Custom", "1".to_string())
}

/// Writes a hand-made HTTP/1.1 request (head, then each part as written) and
/// reads one response; returns `(status, body)`. For what reqwest cannot
/// send: hop-by-hop headers, chunked bodies, bodies cut short.
async fn raw_request(server: &TestServer, head: &str, parts: &[Vec<u8>]) -> (u16, Value) {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    for part in parts {
        // The server may answer (413) and stop reading before all is sent.
        if stream.write_all(part).await.is_err() {
            break;
        }
    }
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let body = &buf[end + 4..end + 4 + length];
                    return Ok::<_, io::Error>((
                        status,
                        serde_json::from_slice(body).unwrap_or(Value::Null),
                    ));
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {} bytes", buf.len()),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers within 10 s")
        .expect("a whole response")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// Each provider, end to end.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stripe_event_is_verified_and_stored_exactly() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let body = stripe_body("evt_1Stripe", "payment_intent.succeeded");
    let mut headers = stripe_headers(STRIPE_SECRET, unix_secs(), &body);
    headers.push(custom());
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // Several v1 entries (key rotation at Stripe): any may match.
    let body2 = stripe_body("evt_2Stripe", "invoice.paid");
    let t = unix_secs();
    let good = stripe_signature_at(STRIPE_SECRET, t, &body2);
    let good_sig = good.split_once(",v1=").expect("v1").1;
    let multi = format!("t={t},v1={},v0={good_sig},v1={good_sig}", "0".repeat(64));
    let (status, resp) = server
        .post_in(
            &slug,
            &[("Stripe-Signature", multi), custom()],
            body2.clone(),
        )
        .await;
    let evt2 = assert_accepted(status, &resp, false);

    server.reopen().await;
    let event = stored_event(&server, &evt).await;
    assert_event(
        &event,
        &src,
        &body,
        "payment_intent.succeeded",
        Some("evt_1Stripe"),
    );
    assert_eq!(
        header(&event, "content-type"),
        Some(b"application/json".as_slice())
    );
    assert!(header(&event, "stripe-signature").is_some());
    let event2 = stored_event(&server, &evt2).await;
    assert_event(&event2, &src, &body2, "invoice.paid", Some("evt_2Stripe"));
    assert_eq!(stored_count(&server, &src).await, 2);
}

#[tokio::test]
async fn github_documented_vectors_verify_end_to_end() {
    let mut server = TestServer::start().await;
    let (src1, slug1) =
        create_source(&server, "github", Some("It's a Secret to Everybody"), None).await;
    let (src2, slug2) = create_source(&server, "github", Some("mysecret"), None).await;

    let body1 = b"Hello, World!".to_vec();
    let headers1 = vec![
        (
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_string(),
        ),
        ("X-GitHub-Event", "push".to_string()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
        ),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug1, &headers1, body1.clone()).await;
    let evt1 = assert_accepted(status, &resp, false);

    let body2 = b"{\n  \"foo\": \"bar\"\n}\n".to_vec();
    let headers2 = vec![
        (
            "X-Hub-Signature-256",
            "sha256=e3eccac34c43c7dc1cbb905488b1b81347fcc700a7b025697a9d07862256023f".to_string(),
        ),
        ("X-GitHub-Event", "ping".to_string()),
        ("X-GitHub-Delivery", "d-2".to_string()),
        ("Content-Type", "application/json".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug2, &headers2, body2.clone()).await;
    let evt2 = assert_accepted(status, &resp, false);

    // The first vector's signature does not open the second source.
    let (status, resp) = server.post_in(&slug2, &headers1, body1.clone()).await;
    assert_invalid_signature(status, &resp, "vector 1 on source 2");

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt1).await,
        &src1,
        &body1,
        "push",
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    );
    assert_event(
        &stored_event(&server, &evt2).await,
        &src2,
        &body2,
        "ping",
        Some("d-2"),
    );
    assert_eq!(stored_count(&server, &src1).await, 1);
    assert_eq!(stored_count(&server, &src2).await, 1);
}

#[tokio::test]
async fn shopify_documented_vector_verifies_end_to_end() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "shopify", Some("hush"), None).await;
    let body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#.to_vec();
    let base = vec![
        (
            "X-Shopify-Hmac-Sha256",
            "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=".to_string(),
        ),
        ("X-Shopify-Topic", "orders/create".to_string()),
        ("X-Shopify-Shop-Domain", "example.myshopify.com".to_string()),
        ("X-Shopify-API-Version", "2024-07".to_string()),
        ("Content-Type", "application/json".to_string()),
        custom(),
    ];
    let mut headers = base.clone();
    headers.push(("X-Shopify-Webhook-Id", "wh-123".to_string()));
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt1 = assert_accepted(status, &resp, false);

    // With an Event-Id too, that is the dedup id (PROVIDERS.md).
    let mut headers = base.clone();
    headers.push(("X-Shopify-Webhook-Id", "wh-124".to_string()));
    headers.push(("X-Shopify-Event-Id", "ev-9".to_string()));
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt2 = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt1).await,
        &src,
        &body,
        "orders/create",
        Some("wh-123"),
    );
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &body,
        "orders/create",
        Some("ev-9"),
    );
    assert_eq!(stored_count(&server, &src).await, 2);
}

#[tokio::test]
async fn slack_event_callback_is_verified_and_stored() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "slack", Some(SLACK_SECRET), None).await;
    let body = br#"{"token":"x","type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"}}"#.to_vec();
    let mut headers = slack_headers(SLACK_SECRET, unix_secs(), &body);
    headers.push(custom());
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // A Slack retry: same event_id, X-Slack-Retry-Num → duplicate.
    let mut headers = slack_headers(SLACK_SECRET, unix_secs(), &body);
    headers.push(("X-Slack-Retry-Num", "1".to_string()));
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    assert_eq!(assert_accepted(status, &resp, true), evt);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "app_mention",
        Some("Ev08MFMKH6"),
    );
    assert_eq!(stored_count(&server, &src).await, 1);
}

#[tokio::test]
async fn standard_webhooks_event_is_verified_and_stored() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "standard_webhooks", Some(SW_SECRET), None).await;
    let body = br#"{"type":"user.created","data":{"id":"u_1"}}"#.to_vec();
    let mut headers = sw_headers("webhook", "msg_2abc", unix_secs(), &body);
    headers.push(custom());
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // Several space-separated signatures (rotation): any v1 may match.
    let body2 = br#"{"type":"user.deleted"}"#.to_vec();
    let ts = unix_secs();
    let good = standard_webhooks_signature(SW_SECRET, "msg_3def", ts, &body2);
    let sig = format!(
        "v1,{} v2,{} {good}",
        B64.encode([7u8; 32]),
        good.trim_start_matches("v1,")
    );
    let headers2 = vec![
        ("webhook-id", "msg_3def".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug, &headers2, body2.clone()).await;
    let evt2 = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "user.created",
        Some("msg_2abc"),
    );
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &body2,
        "user.deleted",
        Some("msg_3def"),
    );
}

#[tokio::test]
async fn svix_event_is_verified_with_svix_headers() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "svix", Some(SW_SECRET), None).await;
    let body = br#"{"type":"invoice.created","data":{}}"#.to_vec();
    let mut headers = sw_headers("svix", "msg_svix1", unix_secs(), &body);
    headers.push(custom());
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // The svix library falls back to the webhook-* names.
    let body2 = br#"{"type":"invoice.paid"}"#.to_vec();
    let mut headers2 = sw_headers("webhook", "msg_svix2", unix_secs(), &body2);
    headers2.push(custom());
    let (status, resp) = server.post_in(&slug, &headers2, body2.clone()).await;
    let evt2 = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "invoice.created",
        Some("msg_svix1"),
    );
    assert!(header(&stored_event(&server, &evt).await, "svix-signature").is_some());
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &body2,
        "invoice.paid",
        Some("msg_svix2"),
    );
}

fn paddle_body(id: &str, event_type: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"{id}","event_type":"{event_type}","occurred_at":"2024-01-01T00:00:00Z","notification_id":"ntf_1","data":{{}}}}"#)
        .into_bytes()
}

#[tokio::test]
async fn paddle_event_is_verified_deduplicated_and_stored() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "paddle", Some(PADDLE_SECRET), None).await;
    let body = paddle_body("evt_01paddle", "transaction.paid");
    let headers = vec![
        (
            "Paddle-Signature",
            paddle_header(PADDLE_SECRET, unix_secs(), &body),
        ),
        ("Content-Type", "application/json".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // Paddle's retry of the same event (new ts, same event_id) → duplicate.
    let headers = vec![
        (
            "Paddle-Signature",
            paddle_header(PADDLE_SECRET, unix_secs(), &body),
        ),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    assert_eq!(assert_accepted(status, &resp, true), evt);

    // Several h1 entries (secret rotation at Paddle): any may match.
    let body2 = paddle_body("evt_02paddle", "subscription.created");
    let ts = unix_secs();
    let good = paddle_header(PADDLE_SECRET, ts, &body2);
    let good_sig = good.split_once(";h1=").expect("h1").1;
    let other = paddle_header("pdl_ntfset_other", ts, &body2);
    let other_sig = other.split_once(";h1=").expect("h1").1;
    let multi = format!("ts={ts};h1={other_sig};h1={good_sig}");
    let (status, resp) = server
        .post_in(
            &slug,
            &[("Paddle-Signature", multi), custom()],
            body2.clone(),
        )
        .await;
    let evt2 = assert_accepted(status, &resp, false);

    // Refused: stale (past the SDK's 5 s), tampered, wrong secret, malformed.
    let mut tampered = body.clone();
    tampered[3] ^= 1;
    let p = |value: String| vec![("Paddle-Signature", value)];
    let fresh = paddle_header(PADDLE_SECRET, unix_secs(), &body);
    let fresh_sig = fresh.split_once(";h1=").expect("h1").1.to_string();
    let cases = vec![
        (
            "stale by 60 s",
            p(paddle_header(PADDLE_SECRET, unix_secs() - 60, &body)),
            body.clone(),
        ),
        (
            "ts moved forward",
            p(format!("ts={};h1={fresh_sig}", unix_secs() + 30)),
            body.clone(),
        ),
        ("tampered body", p(fresh.clone()), tampered),
        (
            "wrong secret",
            p(paddle_header("pdl_ntfset_other", unix_secs(), &body)),
            body.clone(),
        ),
        (
            "uppercase hex",
            p(format!(
                "ts={};h1={}",
                unix_secs(),
                fresh_sig.to_uppercase()
            )),
            body.clone(),
        ),
        (
            "stripe-style header",
            p(format!("t={},v1={fresh_sig}", unix_secs())),
            body.clone(),
        ),
        ("no h1", p(format!("ts={}", unix_secs())), body.clone()),
        ("no ts", p(format!("h1={fresh_sig}")), body.clone()),
        ("missing header", Vec::new(), body.clone()),
        ("empty header", p(String::new()), body.clone()),
        ("1000 semicolons", p(";".repeat(1000)), body.clone()),
    ];
    assert_all_rejected(&server, &slug, cases).await;

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "transaction.paid",
        Some("evt_01paddle"),
    );
    assert!(header(&stored_event(&server, &evt).await, "paddle-signature").is_some());
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &body2,
        "subscription.created",
        Some("evt_02paddle"),
    );
    assert_eq!(stored_count(&server, &src).await, 2);
}

#[tokio::test]
async fn square_signs_the_public_url_and_is_verified_end_to_end() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "square", Some(SQUARE_KEY), None).await;
    // The notification URL is the server's public URL (what the API shows).
    let url = format!("{}/in/{slug}", server.base);
    let (status, shown) = server.get(&format!("{SOURCES}/{src}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["data"]["url"], json!(url));

    let body = br#"{"merchant_id":"MLEFBHHSJGVHD","type":"payment.updated","event_id":"6a8f5f28-54a1-4eb0-a98a-3111513fd4fc","created_at":"2024-01-01T00:00:00Z","data":{"type":"payment","id":"p1"}}"#.to_vec();
    let headers = vec![
        (
            "x-square-hmacsha256-signature",
            square_header(SQUARE_KEY, &url, &body),
        ),
        ("Content-Type", "application/json".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // Square's retry: same event_id → duplicate.
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    assert_eq!(assert_accepted(status, &resp, true), evt);

    // A query string is part of the signed URL.
    let body2 = br#"{"type":"refund.created","event_id":"ev-2"}"#.to_vec();
    let with_query = format!("{url}?tenant=a%20b&x=1");
    let headers2 = vec![
        (
            "X-Square-HmacSha256-Signature",
            square_header(SQUARE_KEY, &with_query, &body2),
        ),
        custom(),
    ];
    let (status, resp) = server
        .post_in(
            &format!("{slug}?tenant=a%20b&x=1"),
            &headers2,
            body2.clone(),
        )
        .await;
    let evt2 = assert_accepted(status, &resp, false);

    // Refused: a URL other than the configured one, even when the request's
    // Host / X-Forwarded-* headers claim it (they are never trusted).
    let evil = format!("https://evil.example/in/{slug}");
    let sq = |value: String| vec![("x-square-hmacsha256-signature", value)];
    let mut forwarded = sq(square_header(SQUARE_KEY, &evil, &body));
    forwarded.push(("X-Forwarded-Host", "evil.example".to_string()));
    forwarded.push(("X-Forwarded-Proto", "https".to_string()));
    forwarded.push(("Forwarded", "host=evil.example;proto=https".to_string()));
    let mut tampered = body.clone();
    tampered[5] ^= 1;
    let cases = vec![
        ("forwarded host", forwarded, body.clone()),
        (
            "body only (no URL)",
            sq(square_header(SQUARE_KEY, "", &body)),
            body.clone(),
        ),
        (
            "trailing slash",
            sq(square_header(SQUARE_KEY, &format!("{url}/"), &body)),
            body.clone(),
        ),
        (
            "tampered body",
            sq(square_header(SQUARE_KEY, &url, &body)),
            tampered,
        ),
        (
            "wrong key",
            sq(square_header("other-key", &url, &body)),
            body.clone(),
        ),
        (
            "hex instead of base64",
            sq(hex::encode(hmac_sha256(
                SQUARE_KEY.as_bytes(),
                &[url.as_bytes(), &body],
            ))),
            body.clone(),
        ),
        ("missing header", Vec::new(), body.clone()),
        ("empty header", sq(String::new()), body.clone()),
        ("garbage header", sq("!!!=é".to_string()), body.clone()),
    ];
    assert_all_rejected(&server, &slug, cases).await;
    let (status, resp) = server
        .post_in(
            &format!("{slug}?tenant=a%20b&x=1"),
            &sq(square_header(SQUARE_KEY, &url, &body2)),
            body2.clone(),
        )
        .await;
    assert_invalid_signature(status, &resp, "signed without the query");

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "payment.updated",
        Some("6a8f5f28-54a1-4eb0-a98a-3111513fd4fc"),
    );
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &body2,
        "refund.created",
        Some("ev-2"),
    );
    assert_eq!(stored_count(&server, &src).await, 2);
}

#[tokio::test]
async fn linear_event_is_verified_with_its_body_timestamp() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "linear", Some(LINEAR_SECRET), None).await;
    let linear_body = |ts_ms: i64| {
        format!(r#"{{"action":"create","type":"Issue","data":{{"id":"i1"}},"webhookTimestamp":{ts_ms}}}"#)
            .into_bytes()
    };
    let body = linear_body(unix_secs() * 1000);
    let headers = vec![
        ("Linear-Signature", linear_header(LINEAR_SECRET, &body)),
        (
            "Linear-Delivery",
            "b7e1c3d2-0000-4000-8000-000000000001".to_string(),
        ),
        ("Linear-Event", "Issue".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);
    // A redelivery keeps Linear-Delivery → duplicate.
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    assert_eq!(assert_accepted(status, &resp, true), evt);

    let l = |value: String| vec![("Linear-Signature", value)];
    let stale = linear_body((unix_secs() - 120) * 1000);
    let future = linear_body((unix_secs() + 120) * 1000);
    let untimed = br#"{"action":"create","type":"Issue"}"#.to_vec();
    let cases = vec![
        (
            "stale",
            l(linear_header(LINEAR_SECRET, &stale)),
            stale.clone(),
        ),
        (
            "future",
            l(linear_header(LINEAR_SECRET, &future)),
            future.clone(),
        ),
        (
            "no webhookTimestamp",
            l(linear_header(LINEAR_SECRET, &untimed)),
            untimed.clone(),
        ),
        (
            "wrong secret",
            l(linear_header("lin_wh_other", &body)),
            body.clone(),
        ),
        (
            "uppercase hex",
            l(linear_header(LINEAR_SECRET, &body).to_uppercase()),
            body.clone(),
        ),
        ("missing header", Vec::new(), body.clone()),
    ];
    assert_all_rejected(&server, &slug, cases).await;

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "Issue.create",
        Some("b7e1c3d2-0000-4000-8000-000000000001"),
    );
    assert_eq!(stored_count(&server, &src).await, 1);
}

#[tokio::test]
async fn twilio_form_and_json_requests_are_verified_against_the_public_url() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "twilio", Some(TWILIO_TOKEN), None).await;
    let url = format!("{}/in/{slug}?account=main", server.base);
    let params = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
        ("SmsStatus", "delivered"),
        ("To", "+15558675310"),
        ("From", "+15017122661"),
        ("Body", "Hello & welcome, 100% ✓"),
    ];
    let body = form(&params);
    let headers = vec![
        (
            "X-Twilio-Signature",
            twilio_header(TWILIO_TOKEN, &url, &params),
        ),
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        custom(),
    ];
    let target = format!("{slug}?account=main");
    let (status, resp) = server.post_in(&target, &headers, body.clone()).await;
    let evt1 = assert_accepted(status, &resp, false);
    // No dedup id: an identical callback is stored again, never dropped.
    let (status, resp) = server.post_in(&target, &headers, body.clone()).await;
    let evt1b = assert_accepted(status, &resp, false);
    assert_ne!(evt1, evt1b);

    // A JSON body: the URL carries bodySHA256 and alone is signed.
    let json_body = br#"{"type":"com.twilio.messaging.message.delivered","data":{}}"#.to_vec();
    let hash = hex::encode(Sha256::digest(&json_body));
    let json_url = format!("{}/in/{slug}?bodySHA256={hash}", server.base);
    let headers2 = vec![
        (
            "X-Twilio-Signature",
            twilio_header(TWILIO_TOKEN, &json_url, &[]),
        ),
        ("Content-Type", "application/json".to_string()),
        custom(),
    ];
    let target2 = format!("{slug}?bodySHA256={hash}");
    let (status, resp) = server.post_in(&target2, &headers2, json_body.clone()).await;
    let evt2 = assert_accepted(status, &resp, false);

    let tw = |value: String| vec![("X-Twilio-Signature", value)];
    let other_json = br#"{"type":"com.twilio.messaging.message.failed","data":{}}"#.to_vec();
    let mut tampered = params;
    tampered[1] = ("MessageStatus", "failed");
    let cases = vec![
        (
            "tampered parameter",
            tw(twilio_header(TWILIO_TOKEN, &url, &params)),
            form(&tampered),
        ),
        (
            "signed without the query",
            tw(twilio_header(
                TWILIO_TOKEN,
                &format!("{}/in/{slug}", server.base),
                &params,
            )),
            body.clone(),
        ),
        (
            "wrong token",
            tw(twilio_header("54321", &url, &params)),
            body.clone(),
        ),
        ("missing header", Vec::new(), body.clone()),
        ("empty header", tw(String::new()), body.clone()),
    ];
    assert_all_rejected(&server, &target, cases).await;
    let cases = vec![(
        "JSON body that does not match bodySHA256",
        tw(twilio_header(TWILIO_TOKEN, &json_url, &[])),
        other_json,
    )];
    assert_all_rejected(&server, &target2, cases).await;

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt1).await,
        &src,
        &body,
        "message.delivered",
        None,
    );
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &json_body,
        "com.twilio.messaging.message.delivered",
        None,
    );
    assert_eq!(stored_count(&server, &src).await, 3);
}

fn generic_config() -> Value {
    json!({
        "signature_header": "X-Signature",
        "encoding": "hex",
        "prefix": "sha256=",
        "event_type_pointer": "/event/kind",
        "event_id_header": "X-Request-Id"
    })
}

#[tokio::test]
async fn generic_hmac_follows_its_provider_config() {
    let mut server = TestServer::start().await;
    let secret = "generic-secret-1";
    let (src, slug) = create_source(
        &server,
        "generic_hmac",
        Some(secret),
        Some(generic_config()),
    )
    .await;
    let body = br#"{"event":{"kind":"order.created"},"id":"ignored"}"#.to_vec();
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[&body]))
    );
    let headers = vec![
        ("X-Signature", sig),
        ("X-Request-Id", "req-42".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug, &headers, body.clone()).await;
    let evt = assert_accepted(status, &resp, false);

    // Base64 variant, without prefix, id from a pointer, type from a header.
    let (src_b64, slug_b64) = create_source(
        &server,
        "generic_hmac",
        Some(secret),
        Some(json!({
            "signature_header": "X-Sig-B64",
            "encoding": "base64",
            "event_type_header": "X-Kind",
            "event_id_pointer": "/id"
        })),
    )
    .await;
    let body_b64 = br#"{"id":"ord_7"}"#.to_vec();
    let headers = vec![
        (
            "X-Sig-B64",
            B64.encode(hmac_sha256(secret.as_bytes(), &[&body_b64])),
        ),
        ("X-Kind", "order.paid".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&slug_b64, &headers, body_b64.clone()).await;
    let evt_b64 = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt).await,
        &src,
        &body,
        "order.created",
        Some("req-42"),
    );
    assert_event(
        &stored_event(&server, &evt_b64).await,
        &src_b64,
        &body_b64,
        "order.paid",
        Some("ord_7"),
    );
}

#[tokio::test]
async fn none_provider_accepts_unsigned_requests() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "none", None, None).await;
    let body = br#"{"type":"thing.happened","id":"not-a-dedup-id"}"#.to_vec();
    let (status, resp) = server.post_in(&slug, &[custom()], body.clone()).await;
    let evt1 = assert_accepted(status, &resp, false);
    // No provider event id: the same body again is a second event.
    let (status, resp) = server.post_in(&slug, &[custom()], body.clone()).await;
    let evt2 = assert_accepted(status, &resp, false);
    assert_ne!(evt1, evt2);
    let (status, resp) = server
        .post_in(&slug, &[custom()], b"not json".to_vec())
        .await;
    let evt3 = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt1).await,
        &src,
        &body,
        "thing.happened",
        None,
    );
    assert_event(
        &stored_event(&server, &evt2).await,
        &src,
        &body,
        "thing.happened",
        None,
    );
    assert_event(
        &stored_event(&server, &evt3).await,
        &src,
        b"not json",
        "unknown",
        None,
    );
    assert_eq!(stored_count(&server, &src).await, 3);
}

#[tokio::test]
async fn non_utf8_bodies_are_stored_byte_identical() {
    let mut server = TestServer::start().await;
    let bytes = vec![0xff, 0xfe, 0x00, 0x80, b'{', 0xc3];
    let (none_src, none_slug) = create_source(&server, "none", None, None).await;
    let (status, resp) = server
        .post_in(
            &none_slug,
            &[
                ("Content-Type", "application/octet-stream".to_string()),
                custom(),
            ],
            bytes.clone(),
        )
        .await;
    let evt_none = assert_accepted(status, &resp, false);

    let secret = "gh-binary-secret";
    let (gh_src, gh_slug) = create_source(&server, "github", Some(secret), None).await;
    let headers = vec![
        ("X-Hub-Signature-256", github_header(secret, &bytes)),
        ("X-GitHub-Event", "push".to_string()),
        ("X-GitHub-Delivery", "bin-1".to_string()),
        custom(),
    ];
    let (status, resp) = server.post_in(&gh_slug, &headers, bytes.clone()).await;
    let evt_gh = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_event(
        &stored_event(&server, &evt_none).await,
        &none_src,
        &bytes,
        "unknown",
        None,
    );
    assert_event(
        &stored_event(&server, &evt_gh).await,
        &gh_src,
        &bytes,
        "push",
        Some("bin-1"),
    );
}

/// Hop-by-hop headers (including one named by `Connection`) are dropped, and
/// a chunked body is stored as its de-chunked bytes.
#[tokio::test]
async fn hop_by_hop_headers_are_not_stored_and_chunked_bodies_are() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "none", None, None).await;
    let head = format!(
        "POST /in/{slug} HTTP/1.1\r\n\
         Host: 127.0.0.1\r\n\
         Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\
         Connection: keep-alive, X-Hop-Extra\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         X-Hop-Extra: per-hop\r\n\
         X-Custom: 1\r\n\
         X-MiXeD-Case: Value\r\n\
         \r\n"
    );
    let parts: [&[u8]; 3] = [br#"{"type":"#, br#""chunked.ok","#, b"\"n\":1}"];
    let mut wire: Vec<Vec<u8>> = parts.iter().map(|p| chunk(p)).collect();
    wire.push(b"0\r\n\r\n".to_vec());
    let (status, resp) = raw_request(&server, &head, &wire).await;
    let evt = assert_accepted(StatusCode::from_u16(status).expect("status"), &resp, false);

    server.reopen().await;
    let event = stored_event(&server, &evt).await;
    assert_event(&event, &src, &parts.concat(), "chunked.ok", None);
    let names: HashSet<&str> = event.headers.iter().map(|(n, _)| n.as_str()).collect();
    for gone in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "proxy-connection",
        "proxy-authorization",
        "x-hop-extra",
    ] {
        assert!(!names.contains(gone), "`{gone}` was stored: {names:?}");
    }
    assert_eq!(header(&event, "x-mixed-case"), Some(b"Value".as_slice()));
    assert_eq!(
        header(&event, "content-type"),
        Some(b"application/json".as_slice())
    );
}

// ---------------------------------------------------------------------------
// Refusals: 401 invalid_signature, nothing stored.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stripe_bad_signatures_are_refused_and_nothing_is_stored() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let body = stripe_body("evt_bad", "invoice.paid");
    let t = unix_secs();
    let good = stripe_signature_at(STRIPE_SECRET, t, &body);
    let good_sig = good.split_once(",v1=").expect("v1").1.to_string();
    let with = |value: String| vec![("Stripe-Signature", value)];
    let mut tampered = body.clone();
    tampered.push(b' ');
    let cases = vec![
        (
            "bad signature",
            with(format!("t={t},v1={}", "ab".repeat(32))),
            body.clone(),
        ),
        (
            "wrong secret",
            with(stripe_signature_at("whsec_other", t, &body)),
            body.clone(),
        ),
        ("tampered body", with(good.clone()), tampered),
        (
            "stale timestamp",
            with(stripe_signature_at(STRIPE_SECRET, unix_secs() - 301, &body)),
            body.clone(),
        ),
        (
            "signed t changed",
            with(format!("t={},v1={good_sig}", t + 1)),
            body.clone(),
        ),
        (
            "v0 only",
            with(format!("t={t},v0={good_sig}")),
            body.clone(),
        ),
        (
            "uppercase hex",
            with(format!("t={t},v1={}", good_sig.to_uppercase())),
            body.clone(),
        ),
        ("no t", with(format!("v1={good_sig}")), body.clone()),
        ("missing header", vec![], body.clone()),
        ("empty header", with(String::new()), body.clone()),
        (
            "garbage header",
            with("garbage=é,ÿ;;==".to_string()),
            body.clone(),
        ),
        ("1000 commas", with(",".repeat(1000)), body.clone()),
        (
            "1000 commas, bad v1",
            with(format!("t={t},{}v1={}", ",".repeat(1000), "0".repeat(64))),
            body.clone(),
        ),
        (
            "huge header",
            with(format!("{good},{}", "v1=00,".repeat(3000))),
            body.clone(),
        ),
        (
            "other provider's header",
            vec![("X-Hub-Signature-256", github_header(STRIPE_SECRET, &body))],
            body.clone(),
        ),
    ];
    assert_all_rejected(&server, &slug, cases).await;

    // A future timestamp is accepted, as the Stripe SDK does.
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs() + 3600, &body),
            body.clone(),
        )
        .await;
    let evt = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_eq!(
        stored_count(&server, &src).await,
        1,
        "only the valid request is stored"
    );
    assert_eq!(stored_event(&server, &evt).await.body, body);
}

#[tokio::test]
async fn github_and_shopify_bad_signatures_are_refused() {
    let mut server = TestServer::start().await;
    let (gh_src, gh_slug) = create_source(&server, "github", Some("gh-secret"), None).await;
    let (sh_src, sh_slug) = create_source(&server, "shopify", Some("sh-secret"), None).await;
    let body = br#"{"action":"opened"}"#.to_vec();
    let mut tampered = body.clone();
    tampered[2] ^= 1;

    let gh = |value: String| {
        vec![
            ("X-Hub-Signature-256", value),
            ("X-GitHub-Event", "issues".to_string()),
            ("X-GitHub-Delivery", "g-1".to_string()),
        ]
    };
    let good = github_header("gh-secret", &body);
    let cases = vec![
        (
            "bad signature",
            gh(format!("sha256={}", "0".repeat(64))),
            body.clone(),
        ),
        (
            "wrong secret",
            gh(github_header("other", &body)),
            body.clone(),
        ),
        ("tampered body", gh(good.clone()), tampered.clone()),
        (
            "uppercase hex",
            gh(format!("sha256={}", good[7..].to_uppercase())),
            body.clone(),
        ),
        ("bare hex", gh(good[7..].to_string()), body.clone()),
        (
            "sha1 prefix",
            gh(format!("sha1={}", &good[7..])),
            body.clone(),
        ),
        (
            "missing header",
            gh(String::new()).split_off(1),
            body.clone(),
        ),
        ("empty header", gh(String::new()), body.clone()),
        (
            "garbage header",
            gh("sha256=zz!é".to_string()),
            body.clone(),
        ),
        ("1000 commas", gh(",".repeat(1000)), body.clone()),
        (
            "signature + 1000 commas",
            gh(format!("{good}{}", ",".repeat(1000))),
            body.clone(),
        ),
    ];
    assert_all_rejected(&server, &gh_slug, cases).await;

    let sh = |value: String| {
        vec![
            ("X-Shopify-Hmac-Sha256", value),
            ("X-Shopify-Topic", "orders/create".to_string()),
            ("X-Shopify-Webhook-Id", "s-1".to_string()),
        ]
    };
    let good = shopify_header("sh-secret", &body);
    let cases = vec![
        ("bad signature", sh(B64.encode([0u8; 32])), body.clone()),
        (
            "wrong secret",
            sh(shopify_header("other", &body)),
            body.clone(),
        ),
        ("tampered body", sh(good.clone()), tampered.clone()),
        (
            "hex instead of base64",
            sh(hex::encode(hmac_sha256(b"sh-secret", &[&body]))),
            body.clone(),
        ),
        (
            "empty body",
            sh(shopify_header("sh-secret", b"")),
            Vec::new(),
        ),
        (
            "missing header",
            sh(String::new()).split_off(1),
            body.clone(),
        ),
        ("empty header", sh(String::new()), body.clone()),
        ("garbage header", sh("!!!=é".to_string()), body.clone()),
        ("1000 commas", sh(",".repeat(1000)), body.clone()),
        (
            "signature + 1000 commas",
            sh(format!("{good}{}", ",".repeat(1000))),
            body.clone(),
        ),
    ];
    assert_all_rejected(&server, &sh_slug, cases).await;

    // Positive controls: the same sources accept a correct signature.
    let (status, resp) = server
        .post_in(
            &gh_slug,
            &gh(github_header("gh-secret", &body)),
            body.clone(),
        )
        .await;
    assert_accepted(status, &resp, false);
    let (status, resp) = server.post_in(&sh_slug, &sh(good), body.clone()).await;
    assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_eq!(stored_count(&server, &gh_src).await, 1);
    assert_eq!(stored_count(&server, &sh_src).await, 1);
}

#[tokio::test]
async fn slack_bad_signatures_and_timestamps_are_refused() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "slack", Some(SLACK_SECRET), None).await;
    let body = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}"#.to_vec();
    let ts = unix_secs();
    let good = slack_header(SLACK_SECRET, ts, &body);
    let with = |ts: String, sig: String| {
        vec![
            ("X-Slack-Request-Timestamp", ts),
            ("X-Slack-Signature", sig),
        ]
    };
    let mut tampered = body.clone();
    tampered.push(b'\n');
    let stale = unix_secs() - 400;
    let future = unix_secs() + 400;
    let cases = vec![
        (
            "bad signature",
            with(ts.to_string(), format!("v0={}", "1".repeat(64))),
            body.clone(),
        ),
        (
            "wrong secret",
            with(ts.to_string(), slack_header("other", ts, &body)),
            body.clone(),
        ),
        (
            "tampered body",
            with(ts.to_string(), good.clone()),
            tampered,
        ),
        (
            "stale timestamp",
            with(stale.to_string(), slack_header(SLACK_SECRET, stale, &body)),
            body.clone(),
        ),
        (
            "future timestamp",
            with(
                future.to_string(),
                slack_header(SLACK_SECRET, future, &body),
            ),
            body.clone(),
        ),
        (
            "timestamp changed",
            with((ts - 1).to_string(), good.clone()),
            body.clone(),
        ),
        (
            "v1 prefix",
            with(ts.to_string(), good.replace("v0=", "v1=")),
            body.clone(),
        ),
        (
            "missing signature",
            with(ts.to_string(), String::new())[..1].to_vec(),
            body.clone(),
        ),
        (
            "missing timestamp",
            with(String::new(), good.clone()).split_off(1),
            body.clone(),
        ),
        (
            "empty signature",
            with(ts.to_string(), String::new()),
            body.clone(),
        ),
        (
            "garbage timestamp",
            with("soon".to_string(), good.clone()),
            body.clone(),
        ),
        (
            "garbage signature",
            with(ts.to_string(), "v0=é".to_string()),
            body.clone(),
        ),
        (
            "1000 commas",
            with(ts.to_string(), ",".repeat(1000)),
            body.clone(),
        ),
    ];
    assert_all_rejected(&server, &slug, cases).await;

    let (status, resp) = server
        .post_in(&slug, &with(ts.to_string(), good), body.clone())
        .await;
    assert_accepted(status, &resp, false);
    server.reopen().await;
    assert_eq!(stored_count(&server, &src).await, 1);
}

#[tokio::test]
async fn standard_webhooks_and_svix_bad_signatures_are_refused() {
    let mut server = TestServer::start().await;
    let (sw_src, sw_slug) =
        create_source(&server, "standard_webhooks", Some(SW_SECRET), None).await;
    let (svix_src, svix_slug) = create_source(&server, "svix", Some(SW_SECRET), None).await;
    let body = br#"{"type":"user.created"}"#.to_vec();
    let mut tampered = body.clone();
    tampered.insert(1, b' ');
    let other_secret = format!("whsec_{}", B64.encode([9u8; 24]));

    for (prefix, slug) in [("webhook", &sw_slug), ("svix", &svix_slug)] {
        let names = match prefix {
            "svix" => ["svix-id", "svix-timestamp", "svix-signature"],
            _ => ["webhook-id", "webhook-timestamp", "webhook-signature"],
        };
        let with = |id: &str, ts: i64, sig: String| {
            vec![
                (names[0], id.to_string()),
                (names[1], ts.to_string()),
                (names[2], sig),
            ]
        };
        let ts = unix_secs();
        let good = standard_webhooks_signature(SW_SECRET, "msg_1", ts, &body);
        let stale = unix_secs() - 400;
        let future = unix_secs() + 400;
        let without = |i: usize| {
            let mut h = with("msg_1", ts, good.clone());
            h.remove(i);
            h
        };
        let cases = vec![
            (
                "bad signature",
                with("msg_1", ts, format!("v1,{}", B64.encode([1u8; 32]))),
                body.clone(),
            ),
            (
                "wrong secret",
                with(
                    "msg_1",
                    ts,
                    standard_webhooks_signature(&other_secret, "msg_1", ts, &body),
                ),
                body.clone(),
            ),
            (
                "tampered body",
                with("msg_1", ts, good.clone()),
                tampered.clone(),
            ),
            ("id changed", with("msg_2", ts, good.clone()), body.clone()),
            (
                "stale timestamp",
                with(
                    "msg_1",
                    stale,
                    standard_webhooks_signature(SW_SECRET, "msg_1", stale, &body),
                ),
                body.clone(),
            ),
            (
                "future timestamp",
                with(
                    "msg_1",
                    future,
                    standard_webhooks_signature(SW_SECRET, "msg_1", future, &body),
                ),
                body.clone(),
            ),
            (
                "v2 only",
                with("msg_1", ts, good.replace("v1,", "v2,")),
                body.clone(),
            ),
            ("missing id", without(0), body.clone()),
            ("missing timestamp", without(1), body.clone()),
            ("missing signature", without(2), body.clone()),
            (
                "empty signature",
                with("msg_1", ts, String::new()),
                body.clone(),
            ),
            (
                "garbage signature",
                with("msg_1", ts, "v1,é v1 ,,, ".to_string()),
                body.clone(),
            ),
            (
                "1000 commas",
                with("msg_1", ts, ",".repeat(1000)),
                body.clone(),
            ),
            (
                "signature + 1000 commas",
                with("msg_1", ts, format!("{good}{}", ",".repeat(1000))),
                body.clone(),
            ),
        ];
        assert_all_rejected(&server, slug, cases).await;
        let (status, resp) = server
            .post_in(slug, &with("msg_1", ts, good), body.clone())
            .await;
        assert_accepted(status, &resp, false);
    }

    server.reopen().await;
    assert_eq!(stored_count(&server, &sw_src).await, 1);
    assert_eq!(stored_count(&server, &svix_src).await, 1);
}

#[tokio::test]
async fn generic_hmac_bad_signatures_are_refused() {
    let mut server = TestServer::start().await;
    let secret = "generic-secret-2";
    let (src, slug) = create_source(
        &server,
        "generic_hmac",
        Some(secret),
        Some(generic_config()),
    )
    .await;
    let body = br#"{"event":{"kind":"k"}}"#.to_vec();
    let hexsig = hex::encode(hmac_sha256(secret.as_bytes(), &[&body]));
    let with = |v: String| vec![("X-Signature", v), ("X-Request-Id", "r-1".to_string())];
    let mut tampered = body.clone();
    tampered.pop();
    let cases = vec![
        (
            "bad signature",
            with(format!("sha256={}", "0".repeat(64))),
            body.clone(),
        ),
        (
            "wrong secret",
            with(format!(
                "sha256={}",
                hex::encode(hmac_sha256(b"x", &[&body]))
            )),
            body.clone(),
        ),
        ("tampered body", with(format!("sha256={hexsig}")), tampered),
        ("missing prefix", with(hexsig.clone()), body.clone()),
        (
            "truncated",
            with(format!("sha256={}", &hexsig[..62])),
            body.clone(),
        ),
        (
            "missing header",
            with(String::new()).split_off(1),
            body.clone(),
        ),
        ("empty header", with(String::new()), body.clone()),
        ("prefix only", with("sha256=".to_string()), body.clone()),
        (
            "garbage header",
            with("sha256=é!".to_string()),
            body.clone(),
        ),
        ("1000 commas", with(",".repeat(1000)), body.clone()),
    ];
    assert_all_rejected(&server, &slug, cases).await;
    let (status, resp) = server
        .post_in(&slug, &with(format!("sha256={hexsig}")), body.clone())
        .await;
    assert_accepted(status, &resp, false);
    server.reopen().await;
    assert_eq!(stored_count(&server, &src).await, 1);
}

// ---------------------------------------------------------------------------
// Dedup and fan-out.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_stripe_event_answers_the_original_id_and_stores_once() {
    let mut server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let dst = create_destination(&server, &src, None).await;
    let body = stripe_body("evt_dup", "invoice.paid");
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs(), &body),
            body.clone(),
        )
        .await;
    let first = assert_accepted(status, &resp, false);
    // Stripe's retry: same id, a new signature timestamp, same body.
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs() + 1, &body),
            body.clone(),
        )
        .await;
    let second = assert_accepted(status, &resp, true);
    assert_eq!(first, second, "a duplicate answers the original event id");
    // Same id with a different payload is still the same provider event.
    let other = stripe_body("evt_dup", "invoice.updated");
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs(), &other),
            other.clone(),
        )
        .await;
    assert_eq!(assert_accepted(status, &resp, true), first);
    // A different id is a different event.
    let body2 = stripe_body("evt_dup_2", "invoice.paid");
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs(), &body2),
            body2.clone(),
        )
        .await;
    let third = assert_accepted(status, &resp, false);
    assert_ne!(third, first);

    server.reopen().await;
    assert_eq!(stored_count(&server, &src).await, 2);
    assert_eq!(
        stored_event(&server, &first).await.body,
        body,
        "the original is kept"
    );
    let deliveries = stored_deliveries(&server, &first).await;
    assert_eq!(deliveries.len(), 1, "duplicates create no deliveries");
    assert_eq!(deliveries[0]["destination_id"], dst.as_str());
    assert_eq!(stored_deliveries(&server, &third).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_event_store_it_once() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let body = stripe_body("evt_race", "charge.succeeded");
    let url = format!("{}/in/{slug}", server.base);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = server.client.clone();
        let url = url.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .header(
                    "Stripe-Signature",
                    stripe_signature_at(STRIPE_SECRET, unix_secs(), &body),
                )
                .body(body)
                .send()
                .await
                .expect("request");
            let status = resp.status();
            (status, resp.json::<Value>().await.expect("json"))
        }));
    }
    let mut originals = Vec::new();
    let mut ids = HashSet::new();
    for task in tasks {
        let (status, resp) = task.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{resp}");
        if resp["data"]["duplicate"] == json!(false) {
            originals.push(resp["data"]["event_id"].clone());
        }
        ids.insert(resp["data"]["event_id"].as_str().expect("id").to_string());
    }
    assert_eq!(originals.len(), 1, "exactly one copy is new");
    assert_eq!(
        ids.len(),
        1,
        "every copy answers the same event id: {ids:?}"
    );
    server.reopen().await;
    assert_eq!(stored_count(&server, &src).await, 1);
}

#[tokio::test]
async fn fan_out_creates_one_pending_delivery_per_matching_enabled_destination() {
    let mut server = TestServer::start_with(|c| c.delivery.allow_private_networks = true).await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let invoices = create_destination(&server, &src, Some(json!(["invoice.*"]))).await;
    let charges = create_destination(&server, &src, Some(json!(["charge.succeeded"]))).await;
    let everything = create_destination(&server, &src, None).await;
    let disabled = create_destination(&server, &src, Some(json!(["*"]))).await;
    let (status, resp) = server
        .patch(
            &format!("{SOURCES}/{src}/destinations/{disabled}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    // A destination of another source never receives this source's events.
    let (other_src, _) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    create_destination(&server, &other_src, None).await;

    let send = |id: &'static str, event_type: &'static str| {
        let body = stripe_body(id, event_type);
        let headers = stripe_headers(STRIPE_SECRET, unix_secs(), &body);
        let server = &server;
        let slug = slug.clone();
        async move {
            let (status, resp) = server.post_in(&slug, &headers, body).await;
            assert_accepted(status, &resp, false)
        }
    };
    let invoice = send("evt_inv", "invoice.paid").await;
    let charge = send("evt_chg", "charge.succeeded").await;
    let refund = send("evt_ref", "charge.refunded").await;

    server.reopen().await;
    let cases: [(&str, Vec<&str>); 3] = [
        (&invoice, vec![&invoices, &everything]),
        (&charge, vec![&charges, &everything]),
        (&refund, vec![&everything]),
    ];
    for (event_id, expected) in cases {
        let deliveries = stored_deliveries(&server, event_id).await;
        let got: HashSet<&str> = deliveries
            .iter()
            .map(|d| d["destination_id"].as_str().expect("destination_id"))
            .collect();
        let want: HashSet<&str> = expected.iter().copied().collect();
        assert_eq!(
            deliveries.len(),
            expected.len(),
            "{event_id}: {deliveries:?}"
        );
        assert_eq!(got, want, "{event_id}");
        // Nothing listens at DEST_URL: a delivery may have failed an
        // attempt since the restart, but none is over.
        for d in &deliveries {
            assert_eq!(d["status"], "pending", "{d}");
        }
        let unique: HashSet<&str> = deliveries
            .iter()
            .map(|d| d["id"].as_str().expect("delivery id"))
            .collect();
        assert_eq!(unique.len(), deliveries.len(), "delivery ids are unique");
    }
}

// ---------------------------------------------------------------------------
// Routing, size limit, handshakes, rotation.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_and_disabled_sources_are_404() {
    let mut server = TestServer::start().await;
    for slug in [
        "wh_nothere",
        "wh_",
        "x",
        &"a".repeat(300),
        "wh_%00abc",
        "wh_a%2Fb",
    ] {
        let (status, resp) = server.post_in(slug, &[], b"{}".to_vec()).await;
        assert_error(status, &resp, 404, "not_found");
    }
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let (status, resp) = server
        .patch(&format!("{SOURCES}/{src}"), json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let body = stripe_body("evt_off", "invoice.paid");
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs(), &body),
            body.clone(),
        )
        .await;
    assert_error(status, &resp, 404, "not_found");

    let (status, resp) = server
        .patch(&format!("{SOURCES}/{src}"), json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs(), &body),
            body.clone(),
        )
        .await;
    let evt = assert_accepted(status, &resp, false);

    server.reopen().await;
    assert_eq!(
        stored_count(&server, &src).await,
        1,
        "the 404 stored nothing"
    );
    assert_eq!(
        stored_event(&server, &evt)
            .await
            .provider_event_id
            .as_deref(),
        Some("evt_off")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_not_stored() {
    let mut server = TestServer::start_with(|c| c.server.max_body_bytes = 1024).await;
    let (src, slug) = create_source(&server, "none", None, None).await;

    // Exactly the limit is fine.
    let (status, resp) = server.post_in(&slug, &[], vec![b'a'; 1024]).await;
    assert_accepted(status, &resp, false);
    // One byte over, with a Content-Length.
    let (status, resp) = server.post_in(&slug, &[], vec![b'a'; 1025]).await;
    assert_error(status, &resp, 413, "payload_too_large");

    // A huge declared length is refused without waiting for the body.
    let head =
        format!("POST /in/{slug} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 104857600\r\n\r\n");
    let (status, resp) = raw_request(&server, &head, &[vec![b'a'; 100]]).await;
    assert_error(
        StatusCode::from_u16(status).expect("status"),
        &resp,
        413,
        "payload_too_large",
    );

    // Chunked (no Content-Length): complete, over the limit.
    let head = format!(
        "POST /in/{slug} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut parts: Vec<Vec<u8>> = (0..4).map(|_| chunk(&[b'b'; 512])).collect();
    parts.push(b"0\r\n\r\n".to_vec());
    let (status, resp) = raw_request(&server, &head, &parts).await;
    assert_error(
        StatusCode::from_u16(status).expect("status"),
        &resp,
        413,
        "payload_too_large",
    );

    // Chunked and never finished: answered once the limit is crossed.
    let parts: Vec<Vec<u8>> = (0..3).map(|_| chunk(&[b'c'; 512])).collect();
    let (status, resp) = raw_request(&server, &head, &parts).await;
    assert_error(
        StatusCode::from_u16(status).expect("status"),
        &resp,
        413,
        "payload_too_large",
    );

    // Chunked under the limit is accepted.
    let parts = vec![
        chunk(&[b'd'; 600]),
        chunk(&[b'd'; 424]),
        b"0\r\n\r\n".to_vec(),
    ];
    let (status, resp) = raw_request(&server, &head, &parts).await;
    let chunked = assert_accepted(StatusCode::from_u16(status).expect("status"), &resp, false);

    server.reopen().await;
    assert_eq!(
        stored_count(&server, &src).await,
        2,
        "only the two bodies within the limit"
    );
    assert_eq!(stored_event(&server, &chunked).await.body, vec![b'd'; 1024]);
}

#[tokio::test]
async fn slack_handshakes_are_answered_and_not_stored() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "slack", Some(SLACK_SECRET), None).await;

    // ssl_check: unsigned form body, answered before verification.
    let resp = server
        .client
        .post(format!("{}/in/{slug}", server.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("token=abc&ssl_check=1")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);

    // url_verification, signed: 200 {"challenge": ...}.
    let body = br#"{"token":"t","challenge":"abc","type":"url_verification"}"#.to_vec();
    let ts = unix_secs();
    let resp = server
        .client
        .post(format!("{}/in/{slug}", server.base))
        .header("X-Slack-Request-Timestamp", ts.to_string())
        .header("X-Slack-Signature", slack_header(SLACK_SECRET, ts, &body))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer, json!({"challenge": "abc"}));

    // Unsigned or badly signed url_verification: 401.
    let (status, resp) = server.post_in(&slug, &[], body.clone()).await;
    assert_invalid_signature(status, &resp, "unsigned url_verification");
    let (status, resp) = server
        .post_in(
            &slug,
            &slack_headers("wrong", unix_secs(), &body),
            body.clone(),
        )
        .await;
    assert_invalid_signature(status, &resp, "wrongly signed url_verification");

    server.reopen().await;
    assert_eq!(
        stored_count(&server, &src).await,
        0,
        "handshakes are not stored"
    );
}

#[tokio::test]
async fn previous_secret_keeps_verifying_after_rotation() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "stripe", Some("whsec_old"), None).await;
    let send = |secret: &'static str, id: &'static str| {
        let body = stripe_body(id, "invoice.paid");
        let headers = stripe_headers(secret, unix_secs(), &body);
        let server = &server;
        let slug = slug.clone();
        async move { server.post_in(&slug, &headers, body).await }
    };
    let (status, resp) = send("whsec_old", "evt_r1").await;
    assert_accepted(status, &resp, false);
    let (status, resp) = send("whsec_new", "evt_r2").await;
    assert_invalid_signature(status, &resp, "new secret before the rotation");

    let (status, resp) = server
        .patch(
            &format!("{SOURCES}/{src}"),
            json!({"signing_secret": "whsec_new"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp["data"].get("signing_secret").is_none(), "{resp}");

    let (status, resp) = send("whsec_new", "evt_r3").await;
    assert_accepted(status, &resp, false);
    let (status, resp) = send("whsec_old", "evt_r4").await;
    assert_accepted(status, &resp, false);
    let (status, resp) = send("whsec_never", "evt_r5").await;
    assert_invalid_signature(status, &resp, "unrelated secret");

    // A second rotation within the 24 h retires the oldest secret at once.
    let (status, resp) = server
        .patch(
            &format!("{SOURCES}/{src}"),
            json!({"signing_secret": "whsec_newer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = send("whsec_newer", "evt_r6").await;
    assert_accepted(status, &resp, false);
    let (status, resp) = send("whsec_new", "evt_r7").await;
    assert_accepted(status, &resp, false);
    let (status, resp) = send("whsec_old", "evt_r8").await;
    assert_invalid_signature(status, &resp, "the oldest secret after a second rotation");

    assert_eq!(stored_count(&server, &src).await, 5);

    // 24 h on, the previous secret stops verifying. Store-level: no API
    // can move a source's clock, so the overlap's end is written into the
    // stored source with the server stopped.
    let store = server.open_store().await;
    let source_id = SourceId::parse(&src).expect("source id");
    let aged = SourceChange {
        previous_secret_until_ms: Some(krafter::model::time::now_ms() - 1),
        now_ms: krafter::model::time::now_ms(),
        ..SourceChange::default()
    };
    let (source, _) = store.update_source(source_id, aged).await.expect("aged");
    assert!(source.previous_secret.is_some(), "a previous secret");
    store.close().await;
    drop(store);
    let server = server.restart().await;
    let send = |secret: &'static str, id: &'static str| {
        let body = stripe_body(id, "invoice.paid");
        let headers = stripe_headers(secret, unix_secs(), &body);
        let server = &server;
        let slug = slug.clone();
        async move { server.post_in(&slug, &headers, body).await }
    };
    let (status, resp) = send("whsec_new", "evt_r9").await;
    assert_invalid_signature(status, &resp, "the previous secret after its 24 h");
    let (status, resp) = send("whsec_newer", "evt_r10").await;
    assert_accepted(status, &resp, false);
}

// ---------------------------------------------------------------------------
// Metrics and group commit.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ingest_metrics_count_by_source_and_result() {
    let server = TestServer::start().await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let (other, other_slug) = create_source(&server, "none", None, None).await;
    for i in 0..3 {
        let body = stripe_body(&format!("evt_m{i}"), "invoice.paid");
        let (status, resp) = server
            .post_in(
                &slug,
                &stripe_headers(STRIPE_SECRET, unix_secs(), &body),
                body,
            )
            .await;
        assert_accepted(status, &resp, false);
    }
    let body = stripe_body("evt_m0", "invoice.paid");
    let (status, resp) = server
        .post_in(
            &slug,
            &stripe_headers(STRIPE_SECRET, unix_secs(), &body),
            body.clone(),
        )
        .await;
    assert_accepted(status, &resp, true);
    let (status, _) = server
        .post_in(
            &slug,
            &stripe_headers("whsec_x", unix_secs(), &body),
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, resp) = server.post_in(&other_slug, &[], b"{}".to_vec()).await;
    assert_accepted(status, &resp, false);

    let text = server.metrics_text().await;
    let series = |s: &str, result: &str| {
        format!("krafter_ingest_requests_total{{source=\"{s}\",result=\"{result}\"}}")
    };
    assert_eq!(
        metric_sample(&text, &series(&src, "accepted")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric_sample(&text, &series(&src, "duplicate")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_sample(&text, &series(&src, "invalid_signature")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_sample(&text, &series(&other, "accepted")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_sample(&text, "krafter_events_stored_total"),
        Some(4.0),
        "{text}"
    );
    assert!(
        !text.contains(&slug),
        "the slug (the URL's secret) must not appear in metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingest_is_stored_and_group_committed() {
    let mut server = TestServer::start().await;
    let (src, slug) = create_source(&server, "stripe", Some(STRIPE_SECRET), None).await;
    let before = server.metrics_text().await;
    let url = format!("{}/in/{slug}", server.base);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = server.client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("evt_c{i:03}");
            let body = stripe_body(&id, "invoice.paid");
            let resp = client
                .post(url)
                .header(
                    "Stripe-Signature",
                    stripe_signature_at(STRIPE_SECRET, unix_secs(), &body),
                )
                .body(body)
                .send()
                .await
                .expect("request");
            let status = resp.status();
            (
                id,
                status,
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        let (id, status, resp) = task.await.expect("task");
        accepted.push((id, assert_accepted(status, &resp, false)));
    }
    let after = server.metrics_text().await;
    let delta = |name: &str| {
        metric_sample(&after, name).expect(name) - metric_sample(&before, name).unwrap_or(0.0)
    };
    let ops = delta("krafter_storage_commit_batch_size_sum");
    let commits = delta("krafter_storage_commit_batch_size_count");
    assert!(ops >= 200.0, "every ingest went through the writer: {ops}");
    assert!(commits >= 1.0);
    // PostgreSQL commits each ingest on its own for now: batching its
    // ingest per group commit is a later step of issue #13 (in progress).
    if !crate::common::on_postgres() {
        assert!(
            ops / commits > 1.0,
            "group commit should fold concurrent ingests: {ops} ops in {commits} commits"
        );
    }

    server.reopen().await;
    assert_eq!(stored_count(&server, &src).await, 200);
    let distinct: HashSet<&str> = accepted.iter().map(|(_, evt)| evt.as_str()).collect();
    assert_eq!(distinct.len(), 200);
    for (id, evt) in &accepted {
        assert_eq!(
            stored_event(&server, evt)
                .await
                .provider_event_id
                .as_deref(),
            Some(id.as_str())
        );
    }
}
