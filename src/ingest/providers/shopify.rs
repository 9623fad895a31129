//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 of the raw body.
//!
//! As `@shopify/shopify-api` validates: an empty body is refused, and the
//! header is compared (constant time) with the standard base64 (padded) of
//! the MAC. Shopify's newer Events deliveries use the same scheme without
//! the `X-` prefix (`shopify-hmac-sha256`), so both spellings are accepted.
//! No timestamp, so no tolerance window.
//!
//! Deviation: the SDK also refuses a request lacking the Topic, Shop-Domain,
//! API-Version or Webhook-Id headers. Those headers are not signed, so
//! requiring them adds no security; Krafter only uses them descriptively
//! (a missing Topic gives event type `unknown`).

use http::HeaderMap;
use serde_json::Value;

use super::common::{
    cap_event_id, ct_eq, event_type_or_unknown, has_header, header_text, hmac_sha256,
    matched_or_refused, required_header, usable_secrets, BASE64_LENIENT,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};
use base64::Engine as _;

/// The classic header name.
const SIGNATURE_HEADER: &str = "x-shopify-hmac-sha256";
/// The header name used by Shopify's newer Events deliveries.
const SIGNATURE_HEADER_EVENTS: &str = "shopify-hmac-sha256";

/// Shopify's scheme, as the module documentation describes.
pub(crate) struct Shopify;

impl Provider for Shopify {
    fn label(&self) -> &'static str {
        "Shopify"
    }

    fn setup_hint(&self) -> &'static str {
        "In Shopify: Settings → Notifications → Webhooks (or your app's webhook subscriptions), and paste this URL."
    }

    fn verify(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(inbound, secrets)
    }

    fn event_type(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        _json: Option<&Value>,
    ) -> String {
        event_type(inbound.headers)
    }

    fn event_id(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        _json: Option<&Value>,
    ) -> Option<String> {
        event_id(inbound.headers)
    }
}

/// Verifies a Shopify request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let name = if !has_header(inbound.headers, SIGNATURE_HEADER)
        && has_header(inbound.headers, SIGNATURE_HEADER_EVENTS)
    {
        SIGNATURE_HEADER_EVENTS
    } else {
        SIGNATURE_HEADER
    };
    let given = required_header(inbound.headers, name)?;
    if inbound.body.is_empty() {
        return Err(VerifyError::EmptyBody);
    }
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[inbound.body]))
        .any(|mac| ct_eq(BASE64_LENIENT.encode(mac).as_bytes(), given.as_bytes()));
    matched_or_refused(matched)
}

/// The first present, non-blank header among `names`.
fn first_header<'h>(headers: &'h HeaderMap, names: &[&str]) -> Option<&'h str> {
    names.iter().find_map(|name| header_text(headers, name))
}

/// Header `X-Shopify-Topic` (e.g. `orders/create`).
fn event_type(headers: &HeaderMap) -> String {
    event_type_or_unknown(first_header(headers, &["x-shopify-topic", "shopify-topic"]))
}

/// Header `X-Shopify-Event-Id` (same for every subscription an event
/// reaches), else `X-Shopify-Webhook-Id` (one delivery, kept by retries).
fn event_id(headers: &HeaderMap) -> Option<String> {
    first_header(
        headers,
        &[
            "x-shopify-event-id",
            "shopify-event-id",
            "x-shopify-webhook-id",
            "shopify-webhook-id",
        ],
    )
    .and_then(cap_event_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // ✅ Vector from PROVIDERS.md (@shopify/shopify-api).
    const SECRET: &[u8] = b"hush";
    const BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    const SIG: &str = "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=";

    fn check_named(
        name: &'static str,
        value: Option<&str>,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let mut h = HeaderMap::new();
        if let Some(value) = value {
            h.insert(name, HeaderValue::from_str(value).expect("test header"));
        }
        verify(
            &Inbound {
                headers: &h,
                body,
                now_unix: 0,
                url: "",
            },
            secrets,
        )
    }

    fn check(value: Option<&str>, body: &[u8], secrets: &[&[u8]]) -> Result<(), VerifyError> {
        check_named("X-Shopify-Hmac-Sha256", value, body, secrets)
    }

    #[test]
    fn official_vector_verifies() {
        assert!(check(Some(SIG), BODY, &[SECRET]).is_ok());
    }

    #[test]
    fn events_header_name_is_accepted() {
        assert!(check_named("shopify-hmac-sha256", Some(SIG), BODY, &[SECRET]).is_ok());
        assert!(check_named("Shopify-Hmac-SHA256", Some(SIG), BODY, &[SECRET]).is_ok());
    }

    #[test]
    fn empty_body_is_rejected() {
        assert!(matches!(
            check(Some(SIG), b"", &[SECRET]),
            Err(VerifyError::EmptyBody)
        ));
    }

    #[test]
    fn tampered_body_and_wrong_secret_are_rejected() {
        let mut body = BODY.to_vec();
        body.pop();
        assert!(matches!(
            check(Some(SIG), &body, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(check(Some(SIG), BODY, &[b"hush2"]).is_err());
    }

    #[test]
    fn rotation_second_secret_matches() {
        assert!(check(Some(SIG), BODY, &[b"new-secret", SECRET]).is_ok());
    }

    #[test]
    fn hex_or_altered_encoding_is_rejected() {
        let hex_sig = {
            let bytes = BASE64_LENIENT.decode(SIG).unwrap_or_default();
            hex::encode(bytes)
        };
        assert!(check(Some(&hex_sig), BODY, &[SECRET]).is_err());
        assert!(check(Some(&SIG.to_lowercase()), BODY, &[SECRET]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(""), BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        for garbage in ["===", "garbage", "!!!!", ",".repeat(5000).as_str()] {
            assert!(check(Some(garbage), BODY, &[SECRET]).is_err());
        }
        let huge = "A".repeat(100 * 1024);
        assert!(matches!(
            check(Some(&huge), BODY, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn type_and_id_come_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("X-Shopify-Topic", HeaderValue::from_static("orders/create"));
        h.insert("X-Shopify-Webhook-Id", HeaderValue::from_static("wh-1"));
        assert_eq!(event_type(&h), "orders/create");
        assert_eq!(event_id(&h).as_deref(), Some("wh-1"));
        h.insert("X-Shopify-Event-Id", HeaderValue::from_static("ev-1"));
        assert_eq!(event_id(&h).as_deref(), Some("ev-1"));
        let empty = HeaderMap::new();
        assert_eq!(event_type(&empty), "unknown");
        assert_eq!(event_id(&empty), None);
    }
}
