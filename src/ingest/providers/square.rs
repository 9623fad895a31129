//! Square: `x-square-hmacsha256-signature: <base64>`, HMAC-SHA256 of the
//! notification URL followed by the raw body.
//!
//! As the Square SDKs' `WebhooksHelper.isValidWebhookEventSignature`
//! verifies: the signed content is `notification URL + body` under the
//! signature key as entered, compared (constant time) with the standard,
//! padded base64 of the MAC. No timestamp, so no tolerance window.
//!
//! The notification URL is [`Inbound::url`]: Krafter's configured
//! `server.public_url` + `/in/<slug>` (+ the query string, if any), never
//! one rebuilt from `Host` or `X-Forwarded-*`. It must be exactly the URL
//! entered in the Square subscription, so `server.public_url` must be the
//! address Square calls. The legacy SHA-1 `x-square-signature` header is not
//! accepted.

use serde_json::Value;

use super::common::{
    body_event_id, body_event_type, ct_eq, hmac_sha256, matched_or_refused, required_header,
    usable_secrets, BASE64_LENIENT,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};
use base64::Engine as _;

/// The header Square signs with (HMAC-SHA256).
const SIGNATURE_HEADER: &str = "x-square-hmacsha256-signature";

/// Square's scheme, as the module documentation describes.
pub(crate) struct Square;

impl Provider for Square {
    fn label(&self) -> &'static str {
        "Square"
    }

    fn setup_hint(&self) -> &'static str {
        "In Square: Developer Dashboard → Webhooks → Add subscription, paste exactly this URL (Square signs it), and use its signature key here. server.public_url must be the address Square calls."
    }

    fn signs_url(&self) -> bool {
        true
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
        _inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> String {
        event_type(json)
    }

    fn event_id(
        &self,
        _config: Option<&GenericHmacConfig>,
        _inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> Option<String> {
        event_id(json)
    }
}

/// Verifies a Square request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[inbound.url.as_bytes(), inbound.body]))
        .any(|mac| ct_eq(BASE64_LENIENT.encode(mac).as_bytes(), given.as_bytes()));
    matched_or_refused(matched)
}

/// Body `type`, e.g. `payment.updated`.
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "type")
}

/// Body `event_id`: Square keeps it across retries of a notification.
fn event_id(json: Option<&Value>) -> Option<String> {
    body_event_id(json, "event_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use hmac::{Hmac, Mac};
    use http::{HeaderMap, HeaderValue};
    use sha2::Sha256;

    // ✅ Vector from PROVIDERS.md (Square SDK).
    const KEY: &[u8] = b"Ibxx_5AKakO-3qeNVR61Dw";
    const URL: &str = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
    const BODY: &[u8] = br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    const SIG: &str = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=";

    fn check(
        header: Option<&str>,
        url: &str,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = one_header("x-square-hmacsha256-signature", header);
        verify(
            &Inbound {
                headers: &h,
                body,
                now_unix: 0,
                url,
            },
            secrets,
        )
    }

    /// An independent signer (the `hmac` crate, not the code under test).
    fn sign(key: &[u8], url: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(url.as_bytes());
        mac.update(body);
        BASE64_LENIENT.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn official_vector_verifies() {
        assert!(check(Some(SIG), URL, BODY, &[KEY]).is_ok());
    }

    #[test]
    fn independent_signer_matches_the_vector() {
        assert_eq!(sign(KEY, URL, BODY), SIG);
    }

    #[test]
    fn no_time_window() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-square-hmacsha256-signature",
            HeaderValue::from_static(SIG),
        );
        for now in [i64::MIN, 0, i64::MAX] {
            let inbound = Inbound {
                headers: &h,
                body: BODY,
                now_unix: now,
                url: URL,
            };
            assert!(verify(&inbound, &[KEY]).is_ok());
        }
    }

    #[test]
    fn the_url_is_signed() {
        for url in [
            "",
            "http://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
            "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9/",
            "https://webhook.site:443/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
            "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9?x=1",
            "https://evil.example/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
        ] {
            assert!(
                matches!(
                    check(Some(SIG), url, BODY, &[KEY]),
                    Err(VerifyError::NoMatchingSignature)
                ),
                "{url}"
            );
        }
        // A query string is part of the signed URL.
        let url = format!("{URL}?a=1");
        assert!(check(Some(&sign(KEY, &url, BODY)), &url, BODY, &[KEY]).is_ok());
    }

    #[test]
    fn tampered_body_and_wrong_key_are_rejected() {
        let mut body = BODY.to_vec();
        body.pop();
        assert!(matches!(
            check(Some(SIG), URL, &body, &[KEY]),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(check(Some(SIG), URL, BODY, &[b"other-key"]).is_err());
    }

    #[test]
    fn rotation_second_key_matches() {
        assert!(check(Some(SIG), URL, BODY, &[b"new-key", KEY]).is_ok());
    }

    #[test]
    fn hex_or_altered_encoding_is_rejected() {
        let bytes = BASE64_LENIENT.decode(SIG).unwrap_or_default();
        assert!(check(Some(&hex::encode(&bytes)), URL, BODY, &[KEY]).is_err());
        assert!(check(Some(&SIG.to_lowercase()), URL, BODY, &[KEY]).is_err());
        assert!(check(Some(SIG.trim_end_matches('=')), URL, BODY, &[KEY]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, URL, BODY, &[KEY]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(""), URL, BODY, &[KEY]),
            Err(VerifyError::MissingHeader(_))
        ));
        for garbage in ["===", "garbage", "!!!!", ",".repeat(5000).as_str(), "é"] {
            assert!(check(Some(garbage), URL, BODY, &[KEY]).is_err());
        }
        let huge = format!("{SIG}{}", "A".repeat(100 * 1024));
        assert!(matches!(
            check(Some(&huge), URL, BODY, &[KEY]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn no_secret_fails_closed() {
        assert!(matches!(
            check(Some(SIG), URL, BODY, &[]),
            Err(VerifyError::NoSecret)
        ));
    }

    #[test]
    fn type_and_id_come_from_the_body() {
        let json: Value = serde_json::from_slice(BODY).ok().unwrap_or_default();
        assert_eq!(event_type(Some(&json)), "webhooks.test_notification");
        assert_eq!(
            event_id(Some(&json)).as_deref(),
            Some("ac3ac95b-f97d-458c-a6e6-18981597e05f")
        );
        assert_eq!(event_type(None), "unknown");
        assert_eq!(event_id(None), None);
    }
}
