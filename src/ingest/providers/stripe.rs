//! Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`.
//!
//! As stripe-python/stripe-node verify: the header is split on `,` then on
//! the first `=`; every `v1` is a candidate (Stripe sends two during a
//! secret roll), `v0` and unknown schemes are ignored; the signed content is
//! `"{t}." + raw body`, HMAC-SHA256 under the secret string used as-is
//! (`whsec_...` is NOT base64-decoded), compared as lowercase hex. The
//! signature is checked first, then the timestamp, and only a timestamp
//! older than 300 s is refused: a future `t` is accepted, like the SDK.

use serde_json::Value;

use super::common::{
    body_event_id, body_event_type, ct_eq_any, hmac_sha256, matched_or_refused, required_header,
    usable_secrets,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The header Stripe signs with.
const SIGNATURE_HEADER: &str = "stripe-signature";

/// Stripe SDKs' default tolerance, in seconds, for old timestamps.
const TOLERANCE_SECS: i64 = 300;

/// Stripe's scheme, as the module documentation describes.
pub(crate) struct Stripe;

impl Provider for Stripe {
    fn label(&self) -> &'static str {
        "Stripe"
    }

    fn setup_hint(&self) -> &'static str {
        "In Stripe: Developers → Webhooks → Add endpoint, and paste this URL."
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

/// Verifies a Stripe request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let header = required_header(inbound.headers, SIGNATURE_HEADER)?;

    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<&str> = Vec::new();
    for pair in header.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        match key {
            // The first `t` wins, as in stripe-python.
            "t" if timestamp.is_none() => timestamp = Some(value),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp: i64 = timestamp
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| VerifyError::MalformedHeader(SIGNATURE_HEADER.into()))?;
    if signatures.is_empty() {
        return Err(VerifyError::NoMatchingSignature);
    }

    // The SDKs sign the integer they parsed, not the header's spelling.
    let signed_prefix = format!("{timestamp}.");
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[signed_prefix.as_bytes(), inbound.body]))
        .map(hex::encode)
        .any(|expected| ct_eq_any(expected.as_bytes(), &signatures));
    matched_or_refused(matched)?;
    if timestamp < inbound.now_unix.saturating_sub(TOLERANCE_SECS) {
        return Err(VerifyError::TimestampOutsideTolerance);
    }
    Ok(())
}

/// Body `type`, e.g. `payment_intent.succeeded`.
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "type")
}

/// Body `id` (`evt_...`), stable across Stripe's retries.
fn event_id(json: Option<&Value>) -> Option<String> {
    body_event_id(json, "id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    // ✅ Vector from PROVIDERS.md (stripe SDK).
    const SECRET: &[u8] = b"whsec_test_secret";
    const TS: i64 = 1614265330;
    const BODY: &[u8] =
        br#"{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}"#;
    const SIG: &str = "31fe7071853a3ce7cef4cf91041ccfde0db025f63c690910579c71cf94740b3d";

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "Stripe-Signature",
            HeaderValue::from_str(value).expect("test header"),
        );
        h
    }

    fn check(header: &str, body: &[u8], now: i64, secrets: &[&[u8]]) -> Result<(), VerifyError> {
        let h = headers(header);
        verify(
            &Inbound {
                headers: &h,
                body,
                now_unix: now,
                url: "",
            },
            secrets,
        )
    }

    fn good_header() -> String {
        format!("t={TS},v1={SIG}")
    }

    #[test]
    fn official_vector_verifies() {
        assert!(check(&good_header(), BODY, TS, &[SECRET]).is_ok());
        assert!(check(&good_header(), BODY, TS + 300, &[SECRET]).is_ok());
    }

    #[test]
    fn tampered_body_is_rejected() {
        let mut body = BODY.to_vec();
        body.push(b' ');
        assert!(matches!(
            check(&good_header(), &body, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn wrong_secret_is_rejected() {
        assert!(matches!(
            check(&good_header(), BODY, TS, &[b"whsec_other"]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn secret_is_not_base64_decoded() {
        // Using the decoded bytes of the part after `whsec_` must fail.
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode("test_secret")
            .unwrap_or_default();
        assert!(check(&good_header(), BODY, TS, &[&decoded]).is_err());
    }

    #[test]
    fn rotation_second_secret_matches() {
        assert!(check(&good_header(), BODY, TS, &[b"whsec_new", SECRET]).is_ok());
    }

    #[test]
    fn any_v1_may_match() {
        let bad = "0".repeat(64);
        let header = format!("t={TS},v1={bad},v1={SIG}");
        assert!(check(&header, BODY, TS, &[SECRET]).is_ok());
        let header = format!("t={TS},v0={bad},v1={SIG},x=1");
        assert!(check(&header, BODY, TS, &[SECRET]).is_ok());
        let header = format!("v1={SIG},t={TS}");
        assert!(check(&header, BODY, TS, &[SECRET]).is_ok());
    }

    #[test]
    fn v0_only_is_rejected() {
        let header = format!("t={TS},v0={SIG}");
        assert!(matches!(
            check(&header, BODY, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn uppercase_hex_is_rejected_like_the_sdk() {
        let header = format!("t={TS},v1={}", SIG.to_uppercase());
        assert!(check(&header, BODY, TS, &[SECRET]).is_err());
    }

    #[test]
    fn stale_timestamp_is_rejected() {
        assert!(matches!(
            check(&good_header(), BODY, TS + 301, &[SECRET]),
            Err(VerifyError::TimestampOutsideTolerance)
        ));
    }

    #[test]
    fn future_timestamp_is_accepted_like_the_sdk() {
        assert!(check(&good_header(), BODY, TS - 10_000, &[SECRET]).is_ok());
    }

    #[test]
    fn timestamp_is_signed() {
        // Changing t (to make a stale request look fresh) breaks the MAC.
        let header = format!("t={},v1={SIG}", TS + 1000);
        assert!(matches!(
            check(&header, BODY, TS + 1000, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn missing_and_empty_headers_are_rejected() {
        let h = HeaderMap::new();
        let inbound = Inbound {
            headers: &h,
            body: BODY,
            now_unix: TS,
            url: "",
        };
        assert!(matches!(
            verify(&inbound, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check("", BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
    }

    #[test]
    fn garbage_headers_are_rejected_without_panic() {
        let cases = [
            "garbage".to_owned(),
            "=".to_owned(),
            "t=".to_owned(),
            "t=abc,v1=00".to_owned(),
            format!("v1={SIG}"),
            format!("t={TS}"),
            format!("t=99999999999999999999999,v1={SIG}"),
            format!("t=-9223372036854775808,v1={SIG}"),
            ",".repeat(4000),
            format!("t={TS},{}v1={}", ",".repeat(3000), &SIG[..63]),
            "t=1,v1=é".to_owned(),
        ];
        for case in cases {
            assert!(check(&case, BODY, TS, &[SECRET]).is_err(), "{case:.40}");
        }
    }

    #[test]
    fn many_commas_around_a_valid_signature_still_verify() {
        let header = format!(",,t={TS},,,v1={SIG},,");
        assert!(check(&header, BODY, TS, &[SECRET]).is_ok());
        let header = format!("t={TS},{}v1={SIG}", ",".repeat(3000));
        assert!(check(&header, BODY, TS, &[SECRET]).is_ok());
    }

    #[test]
    fn huge_header_is_rejected() {
        let header = format!("t={TS},v1={SIG},{}", "v1=00,".repeat(100 * 1024 / 6));
        assert!(matches!(
            check(&header, BODY, TS, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn no_secret_fails_closed() {
        assert!(matches!(
            check(&good_header(), BODY, TS, &[]),
            Err(VerifyError::NoSecret)
        ));
        assert!(matches!(
            check(&good_header(), BODY, TS, &[b""]),
            Err(VerifyError::NoSecret)
        ));
    }

    #[test]
    fn type_and_id_come_from_the_body() {
        let json: Value = serde_json::from_slice(BODY).ok().unwrap_or_default();
        assert_eq!(event_type(Some(&json)), "payment_intent.succeeded");
        assert_eq!(event_id(Some(&json)).as_deref(), Some("evt_test_webhook"));
        assert_eq!(event_type(None), "unknown");
        assert_eq!(event_id(None), None);
    }
}
