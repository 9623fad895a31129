//! Linear: `Linear-Signature: <hex>`, HMAC-SHA256 of the raw body, and a
//! signed body field `webhookTimestamp` (Unix milliseconds).
//!
//! As `@linear/sdk`'s `LinearWebhookClient` verifies: the header is compared
//! (constant time) with the lowercase hex of the MAC, so uppercase hex is
//! refused; then the body's `webhookTimestamp` must be within ±60 s of now.
//!
//! Deviation: the SDK skips the time check when the body has no
//! `webhookTimestamp`. Linear puts it in every payload, so Krafter requires
//! it (a JSON number): a signed body without it is refused rather than
//! accepted with no replay protection. `now` has one-second resolution here,
//! so the window's edges are exact to within a second.

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::common::{
    body_field, ct_eq, event_type_or_unknown, header_event_id, hmac_sha256, matched_or_refused,
    required_header, usable_secrets,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The header Linear signs with.
const SIGNATURE_HEADER: &str = "linear-signature";
/// The signed body field carrying the send time, in Unix milliseconds.
const TIMESTAMP_FIELD: &str = "webhookTimestamp";
/// The SDK's window, both directions, in milliseconds.
const TOLERANCE_MS: i128 = 60_000;

/// The one body field verification needs; everything else is skipped
/// without being built into a JSON tree.
#[derive(Deserialize)]
struct Stamp {
    #[serde(rename = "webhookTimestamp")]
    webhook_timestamp: Option<serde_json::Number>,
}

/// The body's `webhookTimestamp` in milliseconds; `None` when the body is
/// not a JSON object or the field is absent or not a finite number.
fn body_timestamp_ms(body: &[u8]) -> Option<i128> {
    // serde would also read a struct from a JSON array; only an object
    // has named fields.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let number = serde_json::from_slice::<Stamp>(body)
        .ok()?
        .webhook_timestamp?;
    if let Some(ms) = number.as_i64() {
        return Some(i128::from(ms));
    }
    if let Some(ms) = number.as_u64() {
        return Some(i128::from(ms));
    }
    // A float: `as` saturates, and any saturated value is far outside the
    // window anyway.
    number.as_f64().filter(|f| f.is_finite()).map(|f| f as i128)
}

/// Linear's scheme, as the module documentation describes.
pub(crate) struct Linear;

impl Provider for Linear {
    fn label(&self) -> &'static str {
        "Linear"
    }

    fn setup_hint(&self) -> &'static str {
        "In Linear: Settings → API → Webhooks → New webhook, paste this URL, and use its signing secret here."
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
        inbound: &Inbound<'_>,
        _json: Option<&Value>,
    ) -> Option<String> {
        event_id(inbound.headers)
    }
}

/// Verifies a Linear request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[inbound.body]))
        .any(|mac| ct_eq(hex::encode(mac).as_bytes(), given.as_bytes()));
    matched_or_refused(matched)?;
    let sent_ms = body_timestamp_ms(inbound.body)
        .ok_or(VerifyError::MalformedBodyField(TIMESTAMP_FIELD.into()))?;
    let now_ms = i128::from(inbound.now_unix) * 1000;
    if (now_ms - sent_ms).abs() > TOLERANCE_MS {
        return Err(VerifyError::TimestampOutsideTolerance);
    }
    Ok(())
}

/// Body `type` and `action` joined with a dot, e.g. `Issue.create`, so a
/// destination can filter on `Issue.*` or on one action; `type` alone when
/// there is no action, `unknown` when there is no type.
fn event_type(json: Option<&Value>) -> String {
    let Some(kind) = body_field(json, "type").filter(|t| !t.trim().is_empty()) else {
        return event_type_or_unknown(None);
    };
    match body_field(json, "action").filter(|a| !a.trim().is_empty()) {
        Some(action) => event_type_or_unknown(Some(&format!("{}.{}", kind.trim(), action.trim()))),
        None => event_type_or_unknown(Some(&kind)),
    }
}

/// Header `Linear-Delivery`: one delivery, kept by Linear's retries.
fn event_id(headers: &HeaderMap) -> Option<String> {
    header_event_id(headers, "linear-delivery")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use hmac::{Hmac, Mac};
    use http::HeaderValue;
    use sha2::Sha256;

    // (c) Vector from PROVIDERS.md (plain HMAC; Linear's SDK only verifies).
    const SECRET: &[u8] = b"lin_wh_testsecret";
    const BODY: &[u8] = br#"{"type":"Issue","action":"create","webhookTimestamp":1700000000000}"#;
    const SIG: &str = "e703a3084e02594fcefcb912769531b6a916934cb298676c3ea037cb1b548930";
    /// `webhookTimestamp` of [`BODY`], in seconds.
    const TS: i64 = 1_700_000_000;

    fn check(
        header: Option<&str>,
        body: &[u8],
        now: i64,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = one_header("linear-signature", header);
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

    /// An independent signer (the `hmac` crate, not the code under test).
    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn documented_vector_verifies() {
        assert!(check(Some(SIG), BODY, TS, &[SECRET]).is_ok());
        assert!(check(Some(SIG), BODY, TS + 60, &[SECRET]).is_ok());
        assert!(check(Some(SIG), BODY, TS - 60, &[SECRET]).is_ok());
    }

    #[test]
    fn independent_signer_matches_the_vector() {
        assert_eq!(sign(SECRET, BODY), SIG);
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        for now in [TS + 61, TS - 61, TS + 86_400, i64::MIN, i64::MAX] {
            assert!(matches!(
                check(Some(SIG), BODY, now, &[SECRET]),
                Err(VerifyError::TimestampOutsideTolerance)
            ));
        }
    }

    #[test]
    fn timestamp_is_required_and_must_be_a_number() {
        let bodies: [&[u8]; 7] = [
            br#"{"type":"Issue","action":"create"}"#,
            br#"{"type":"Issue","webhookTimestamp":"1700000000000"}"#,
            br#"{"type":"Issue","webhookTimestamp":null}"#,
            br#"{"webhookTimestamp":1700000000000,"webhookTimestamp":1700000000000}"#,
            br#"[1700000000000]"#,
            b"not json",
            b"",
        ];
        for body in bodies {
            let sig = sign(SECRET, body);
            assert!(
                matches!(
                    check(Some(&sig), body, TS, &[SECRET]),
                    Err(VerifyError::MalformedBodyField(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // A float in the window is accepted (JavaScript numbers).
        let body = br#"{"type":"Issue","webhookTimestamp":1700000000000.5}"#;
        assert!(check(Some(&sign(SECRET, body)), body, TS, &[SECRET]).is_ok());
        let body = br#"{"type":"Issue","webhookTimestamp":1e400}"#;
        assert!(check(Some(&sign(SECRET, body)), body, TS, &[SECRET]).is_err());
        let body = br#"{"type":"Issue","webhookTimestamp":-1}"#;
        assert!(matches!(
            check(Some(&sign(SECRET, body)), body, TS, &[SECRET]),
            Err(VerifyError::TimestampOutsideTolerance)
        ));
    }

    #[test]
    fn signature_is_checked_before_the_timestamp() {
        // A forged request learns nothing about the window.
        let forged = "0".repeat(64);
        assert!(matches!(
            check(Some(&forged), BODY, TS + 1000, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn tampered_body_and_wrong_secret_are_rejected() {
        // Refreshing the timestamp of a captured request breaks the MAC.
        let fresh = br#"{"type":"Issue","action":"create","webhookTimestamp":1700000100000}"#;
        assert!(matches!(
            check(Some(SIG), fresh, TS + 100, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(matches!(
            check(Some(SIG), BODY, TS, &[b"lin_wh_other"]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn rotation_second_secret_matches() {
        assert!(check(Some(SIG), BODY, TS, &[b"lin_wh_new", SECRET]).is_ok());
    }

    #[test]
    fn signature_format_is_strict() {
        assert!(check(Some(&SIG.to_uppercase()), BODY, TS, &[SECRET]).is_err());
        assert!(check(Some(&format!("sha256={SIG}")), BODY, TS, &[SECRET]).is_err());
        assert!(check(Some(&SIG[..63]), BODY, TS, &[SECRET]).is_err());
        assert!(check(Some(&format!("{SIG},{SIG}")), BODY, TS, &[SECRET]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(""), BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        for garbage in ["garbage", "=", "zz", ",".repeat(5000).as_str(), "é"] {
            assert!(check(Some(garbage), BODY, TS, &[SECRET]).is_err());
        }
        let huge = format!("{SIG}{}", "0".repeat(100 * 1024));
        assert!(matches!(
            check(Some(&huge), BODY, TS, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn no_secret_fails_closed() {
        assert!(matches!(
            check(Some(SIG), BODY, TS, &[]),
            Err(VerifyError::NoSecret)
        ));
        assert!(matches!(
            check(Some(SIG), BODY, TS, &[b""]),
            Err(VerifyError::NoSecret)
        ));
    }

    #[test]
    fn type_joins_action_and_id_comes_from_the_delivery_header() {
        let json: Value = serde_json::from_slice(BODY).ok().unwrap_or_default();
        assert_eq!(event_type(Some(&json)), "Issue.create");
        let no_action = serde_json::json!({"type": "Issue"});
        assert_eq!(event_type(Some(&no_action)), "Issue");
        let blank_action = serde_json::json!({"type": "Issue", "action": " "});
        assert_eq!(event_type(Some(&blank_action)), "Issue");
        let action_only = serde_json::json!({"action": "create"});
        assert_eq!(event_type(Some(&action_only)), "unknown");
        assert_eq!(event_type(None), "unknown");

        let mut h = HeaderMap::new();
        h.insert(
            "Linear-Delivery",
            HeaderValue::from_static("234d1a4e-b617-4388-90fe-adc3633d6b72"),
        );
        assert_eq!(
            event_id(&h).as_deref(),
            Some("234d1a4e-b617-4388-90fe-adc3633d6b72")
        );
        assert_eq!(event_id(&HeaderMap::new()), None);
    }
}
