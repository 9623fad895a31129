//! Paddle (Billing): `Paddle-Signature: ts=<ts>;h1=<hex>[;h1=<hex>...]`.
//!
//! As the official SDKs verify (paddle-python-sdk `Verifier` and
//! `PaddleSignature`, paddle-node-sdk `WebhooksValidator`): the header is
//! split on `;`, each part on its first `=`; every `h1` is a candidate
//! (Paddle sends several while a secret is rotated), other schemes are
//! ignored; the signed content is `"{ts}:" + raw body` (the `ts` text as
//! sent), HMAC-SHA256 under the secret as entered, compared in constant time
//! as lowercase hex.
//!
//! Time window: the SDKs' default `maximum_variance` of **5 s**, checked
//! first and in the past direction only (`now > ts + 5` is refused; a
//! future `ts` is accepted, as the SDKs do). It is a fixed setting, not a
//! per-source one: the host's clock must be NTP-synchronised, since a clock
//! running more than 5 s ahead refuses every Paddle event (Paddle then
//! retries, so nothing is lost once the clock is fixed).

use serde_json::Value;

use super::common::{
    body_event_id, body_event_type, ct_eq_any, hmac_sha256, matched_or_refused, required_header,
    usable_secrets,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The header Paddle signs with.
const SIGNATURE_HEADER: &str = "paddle-signature";

/// The SDKs' default `maximum_variance`, in seconds, for old timestamps.
const TOLERANCE_SECS: i128 = 5;

/// Paddle's scheme, as the module documentation describes.
pub(crate) struct Paddle;

impl Provider for Paddle {
    fn label(&self) -> &'static str {
        "Paddle"
    }

    fn setup_hint(&self) -> &'static str {
        "In Paddle: Developer tools → Notifications → New destination, paste this URL, and use its secret key here. Paddle signatures expire after 5 seconds, so keep this host's clock synchronised (NTP)."
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

/// Verifies a Paddle request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let header = required_header(inbound.headers, SIGNATURE_HEADER)?;

    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<&str> = Vec::new();
    for part in header.split(';') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        // Parts with an empty value are skipped, as paddle-node-sdk does.
        if value.is_empty() {
            continue;
        }
        match key {
            // The last `ts` wins, as in both SDKs.
            "ts" => timestamp = Some(value),
            "h1" => signatures.push(value),
            _ => {}
        }
    }
    let malformed = || VerifyError::MalformedHeader(SIGNATURE_HEADER.into());
    let timestamp = timestamp.ok_or_else(malformed)?;
    let ts: i64 = timestamp.parse().map_err(|_| malformed())?;
    if signatures.is_empty() {
        return Err(VerifyError::NoMatchingSignature);
    }
    if i128::from(inbound.now_unix) > i128::from(ts) + TOLERANCE_SECS {
        return Err(VerifyError::TimestampOutsideTolerance);
    }

    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[timestamp.as_bytes(), b":", inbound.body]))
        .map(hex::encode)
        .any(|expected| ct_eq_any(expected.as_bytes(), &signatures));
    matched_or_refused(matched)
}

/// Body `event_type`, e.g. `transaction.paid`.
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "event_type")
}

/// Body `event_id` (`evt_...`): the same on Paddle's retries and replays of
/// a notification, so dedup catches them.
fn event_id(json: Option<&Value>) -> Option<String> {
    body_event_id(json, "event_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    // ✅ Vector from PROVIDERS.md (Paddle SDK).
    const SECRET: &[u8] = b"pdl_ntfset_test";
    const TS: i64 = 1700000000;
    const BODY: &[u8] = br#"{"event_id":"evt_1","event_type":"transaction.paid"}"#;
    const SIG: &str = "65f474bb061912f5578c7938fc332996a48df09c2cef51d0d1b68ff02a746591";

    fn check(
        header: Option<&str>,
        body: &[u8],
        now: i64,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = one_header("paddle-signature", header);
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
        format!("ts={TS};h1={SIG}")
    }

    /// An independent signer (the `hmac` crate, not the code under test).
    fn sign(secret: &[u8], ts: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(format!("{ts}:").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn official_vector_verifies() {
        assert!(check(Some(&good_header()), BODY, TS, &[SECRET]).is_ok());
        assert!(check(Some(&good_header()), BODY, TS + 5, &[SECRET]).is_ok());
    }

    #[test]
    fn independent_signer_matches_the_vector() {
        assert_eq!(sign(SECRET, "1700000000", BODY), SIG);
    }

    #[test]
    fn stale_timestamp_is_rejected_after_five_seconds() {
        for now in [TS + 6, TS + 301, i64::MAX] {
            assert!(matches!(
                check(Some(&good_header()), BODY, now, &[SECRET]),
                Err(VerifyError::TimestampOutsideTolerance)
            ));
        }
    }

    #[test]
    fn future_timestamp_is_accepted_like_the_sdk() {
        assert!(check(Some(&good_header()), BODY, TS - 10_000, &[SECRET]).is_ok());
        assert!(check(Some(&good_header()), BODY, i64::MIN, &[SECRET]).is_ok());
    }

    #[test]
    fn tampered_body_wrong_secret_and_changed_ts_are_rejected() {
        let mut body = BODY.to_vec();
        body.push(b' ');
        assert!(matches!(
            check(Some(&good_header()), &body, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(matches!(
            check(Some(&good_header()), BODY, TS, &[b"pdl_ntfset_other"]),
            Err(VerifyError::NoMatchingSignature)
        ));
        // Moving ts forward (to make a stale request look fresh) breaks it.
        let header = format!("ts={};h1={SIG}", TS + 100);
        assert!(matches!(
            check(Some(&header), BODY, TS + 100, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn rotation_any_h1_and_any_secret_may_match() {
        let other = sign(b"pdl_ntfset_new", "1700000000", BODY);
        let header = format!("ts={TS};h1={other};h1={SIG}");
        assert!(check(Some(&header), BODY, TS, &[SECRET]).is_ok());
        let header = format!("ts={TS};h1={SIG};h1={other}");
        assert!(check(Some(&header), BODY, TS, &[SECRET]).is_ok());
        assert!(check(Some(&header), BODY, TS, &[b"pdl_ntfset_new"]).is_ok());
        assert!(check(Some(&good_header()), BODY, TS, &[b"pdl_ntfset_new", SECRET]).is_ok());
        let header = format!("ts={TS};h1={other};h1={}", "0".repeat(64));
        assert!(check(Some(&header), BODY, TS, &[SECRET]).is_err());
        // Other schemes and order do not matter.
        let header = format!("h2=abc;h1={SIG};x=1;ts={TS}");
        assert!(check(Some(&header), BODY, TS, &[SECRET]).is_ok());
    }

    #[test]
    fn signature_format_is_strict() {
        let upper = format!("ts={TS};h1={}", SIG.to_uppercase());
        assert!(check(Some(&upper), BODY, TS, &[SECRET]).is_err());
        let h2_only = format!("ts={TS};h2={SIG}");
        assert!(matches!(
            check(Some(&h2_only), BODY, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
        let comma = format!("ts={TS},h1={SIG}");
        assert!(check(Some(&comma), BODY, TS, &[SECRET]).is_err());
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
        let cases = [
            "garbage".to_owned(),
            "=".to_owned(),
            "ts=".to_owned(),
            ";;;;".repeat(1000),
            format!("h1={SIG}"),
            format!("ts=;h1={SIG}"),
            format!("ts=abc;h1={SIG}"),
            format!("ts=1700000000.5;h1={SIG}"),
            format!("ts=99999999999999999999999;h1={SIG}"),
            format!("ts={TS}"),
            format!("ts={TS};h1="),
            format!("ts={TS};h1=zz"),
            "ts=1;h1=é".to_owned(),
        ];
        for case in cases {
            assert!(
                check(Some(&case), BODY, TS, &[SECRET]).is_err(),
                "{case:.40}"
            );
        }
        // Extremes must not overflow.
        let header = format!("ts=-9223372036854775808;h1={SIG}");
        assert!(check(Some(&header), BODY, TS, &[SECRET]).is_err());
        let header = format!("ts=9223372036854775807;h1={SIG}");
        assert!(check(Some(&header), BODY, TS, &[SECRET]).is_err());
        let huge = format!("{}{}", good_header(), ";h1=00".repeat(100 * 1024 / 6));
        assert!(matches!(
            check(Some(&huge), BODY, TS, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn no_secret_fails_closed() {
        assert!(matches!(
            check(Some(&good_header()), BODY, TS, &[]),
            Err(VerifyError::NoSecret)
        ));
        assert!(matches!(
            check(Some(&good_header()), BODY, TS, &[b""]),
            Err(VerifyError::NoSecret)
        ));
    }

    #[test]
    fn type_and_id_come_from_the_body() {
        let json: Value = serde_json::from_slice(BODY).ok().unwrap_or_default();
        assert_eq!(event_type(Some(&json)), "transaction.paid");
        assert_eq!(event_id(Some(&json)).as_deref(), Some("evt_1"));
        let stripe_like = serde_json::json!({"type": "x", "id": "y"});
        assert_eq!(event_type(Some(&stripe_like)), "unknown");
        assert_eq!(event_id(Some(&stripe_like)), None);
        assert_eq!(event_type(None), "unknown");
        assert_eq!(event_id(None), None);
    }
}
