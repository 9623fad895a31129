//! `krafter send-test-event`: a sample event signed exactly as the source's
//! provider signs (SPEC §8), POSTed to the source's ingest URL, so the whole
//! path (verify, store, fan out, deliver) can be tried without the provider.

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use hmac::{Hmac, Mac};
use http::Method;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sha2::Sha256;

use super::output::outln;
use super::remote::{enc, Api};

/// Arguments of `send-test-event`.
#[derive(Debug, Args)]
pub struct SendTestEventArgs {
    /// The source (`src_...`) to send to.
    #[arg(long)]
    pub source: String,
    /// The event type to send.
    #[arg(long = "type", default_value = "krafter.test")]
    pub event_type: String,
    /// The source's signing secret, as given when it was created (the API
    /// never returns it). Not needed for provider `none`.
    #[arg(long, env = "KRAFTER_SOURCE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// Providers this command can sign for.
pub const SIGNABLE: &[&str] = &[
    "stripe",
    "github",
    "shopify",
    "slack",
    "standard_webhooks",
    "svix",
    "generic_hmac",
    "none",
];

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn random_token(len: usize) -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Puts `value` at a JSON pointer, making objects on the way.
fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    let mut node = target;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = json!({});
        }
        let Some(obj) = node.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            obj.insert(part.clone(), value);
            return;
        }
        node = obj.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

/// A signed request: body and headers, as the provider would send it.
#[derive(Debug)]
pub struct SignedEvent {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Builds and signs a sample event for `source` (the API's source object).
pub fn build(
    source: &Value,
    event_type: &str,
    secret: Option<&str>,
    now: i64,
) -> anyhow::Result<SignedEvent> {
    let provider = source["provider"].as_str().unwrap_or("");
    if !SIGNABLE.contains(&provider) {
        bail!(
            "send-test-event cannot sign as provider `{provider}` yet; it signs as {}",
            SIGNABLE.join(", ")
        );
    }
    let secret = match (provider, secret) {
        ("none", Some(_)) => {
            eprintln!("provider `none` verifies nothing: --secret is not used");
            ""
        }
        ("none", None) => "",
        (_, Some(s)) if !s.is_empty() => s,
        _ => bail!(
            "a `{provider}` source needs its signing secret to sign the event: pass --secret \
             with the secret you gave when creating the source (the API never returns it)"
        ),
    };
    let event_id = format!("evt_test_{}", random_token(16));
    let mut body = json!({
        "id": event_id,
        "type": event_type,
        "created": now,
        "livemode": false,
        "data": {"object": {"id": format!("obj_{}", random_token(10)), "note": "a test event sent by krafter send-test-event"}},
    });
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if provider == "slack" {
        body = json!({
            "type": "event_callback",
            "event_id": event_id,
            "event_time": now,
            "event": {"type": event_type, "text": "a test event sent by krafter send-test-event"},
        });
    }
    if provider == "generic_hmac" {
        let config = &source["provider_config"];
        if let Some(pointer) = config["event_type_pointer"].as_str() {
            set_pointer(&mut body, pointer, json!(event_type));
        } else if let Some(header) = config["event_type_header"].as_str() {
            headers.push((header.to_string(), event_type.to_string()));
        }
        if let Some(header) = config["event_id_header"].as_str() {
            headers.push((header.to_string(), event_id.clone()));
        } else if let Some(pointer) = config["event_id_pointer"].as_str() {
            set_pointer(&mut body, pointer, json!(event_id));
        }
    }
    let body = serde_json::to_vec(&body)?;
    let key = secret.as_bytes();
    match provider {
        "stripe" => {
            let t = now.to_string();
            let sig = hex::encode(hmac_sha256(key, &[t.as_bytes(), b".", &body]));
            headers.push(("stripe-signature".into(), format!("t={t},v1={sig}")));
        }
        "github" => {
            let sig = hex::encode(hmac_sha256(key, &[&body]));
            headers.push(("x-hub-signature-256".into(), format!("sha256={sig}")));
            headers.push(("x-github-event".into(), event_type.to_string()));
            headers.push(("x-github-delivery".into(), event_id.clone()));
        }
        "shopify" => {
            let sig = STANDARD.encode(hmac_sha256(key, &[&body]));
            headers.push(("x-shopify-hmac-sha256".into(), sig));
            headers.push(("x-shopify-topic".into(), event_type.to_string()));
            headers.push(("x-shopify-webhook-id".into(), event_id.clone()));
        }
        "slack" => {
            let t = now.to_string();
            let sig = hex::encode(hmac_sha256(key, &[b"v0:", t.as_bytes(), b":", &body]));
            headers.push(("x-slack-request-timestamp".into(), t));
            headers.push(("x-slack-signature".into(), format!("v0={sig}")));
        }
        "standard_webhooks" | "svix" => {
            let decoded = STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .ok()
                .filter(|k| !k.is_empty())
                .context("a Standard Webhooks secret is `whsec_` followed by base64")?;
            let msg_id = format!("msg_{}", random_token(20));
            let t = now.to_string();
            let sig = STANDARD.encode(hmac_sha256(
                &decoded,
                &[msg_id.as_bytes(), b".", t.as_bytes(), b".", &body],
            ));
            headers.push(("webhook-id".into(), msg_id));
            headers.push(("webhook-timestamp".into(), t));
            headers.push(("webhook-signature".into(), format!("v1,{sig}")));
        }
        "generic_hmac" => {
            let config = &source["provider_config"];
            let Some(header) = config["signature_header"].as_str() else {
                bail!("the source has no generic_hmac signature_header");
            };
            let mac = hmac_sha256(key, &[&body]);
            let encoded = match config["encoding"].as_str() {
                Some("base64") => STANDARD.encode(mac),
                _ => hex::encode(mac),
            };
            let prefix = config["prefix"].as_str().unwrap_or("");
            headers.push((header.to_string(), format!("{prefix}{encoded}")));
        }
        _ => {}
    }
    Ok(SignedEvent { body, headers })
}

/// Runs `send-test-event`: prints the stored event's id on stdout.
pub async fn run(api: &Api, args: SendTestEventArgs) -> anyhow::Result<()> {
    let source = api
        .call(
            Method::GET,
            &format!("/api/v1/webhooks/sources/{}", enc(&args.source)),
            None,
        )
        .await?["data"]
        .take();
    let Some(url) = source["url"].as_str().map(str::to_string) else {
        bail!("the server's answer has no ingest URL for {}", args.source);
    };
    let provider = source["provider"].as_str().unwrap_or("").to_string();
    let now = crate::model::time::now_ms() / 1000;
    let signed = build(&source, &args.event_type, args.secret.as_deref(), now)?;
    let mut request = http::Request::builder().method(Method::POST).uri(&url);
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(signed.body)))
        .with_context(|| format!("bad ingest URL {url}"))?;
    let response = api
        .http()
        .request(request)
        .await
        .with_context(|| format!("sending to {url}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = answer["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let hint = if status == http::StatusCode::UNAUTHORIZED {
            " (is --secret the source's signing secret?)"
        } else {
            ""
        };
        bail!("{url} refused the test event ({status}): {message}{hint}");
    }
    let event_id = answer["data"]["event_id"].as_str().unwrap_or("-");
    eprintln!(
        "sent a `{}` event signed as {provider} to {url}; stored as {event_id}",
        args.event_type
    );
    outln!("{event_id}");
    Ok(())
}
