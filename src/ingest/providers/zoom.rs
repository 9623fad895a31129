//! Zoom: `x-zm-signature: v0=<hex>` over `"v0:{ts}:" + raw body`, with
//! `x-zm-request-timestamp: <ts>`.
//!
//! As Zoom's documentation and its official webhook sample verify: the
//! signed content uses the timestamp header exactly as sent, the MAC is
//! HMAC-SHA256 under the app's secret token, and the whole
//! `v0=<lowercase hex>` string is compared (here in constant time). Zoom's
//! own verifier checks no time window, and neither does Krafter
//! (PROVIDERS.md); the timestamp must still be present, since it is signed.
//!
//! Handshake: a signed `endpoint.url_validation` request is answered 200
//! `{"plainToken": p, "encryptedToken": hex(HMAC-SHA256(secret, p))}`,
//! under the secret that verified the request (so it works during a
//! rotation), and is never stored.

use serde_json::Value;

use super::common::{
    body_event_type, ct_eq, hmac_sha256, matched_or_refused, required_header, usable_secrets,
};
use super::{GenericHmacConfig, HandshakeReply, Inbound, Provider, VerifyError};

/// The header carrying `v0=<hex>`.
const SIGNATURE_HEADER: &str = "x-zm-signature";
/// The header carrying the signed timestamp.
const TIMESTAMP_HEADER: &str = "x-zm-request-timestamp";
/// The `event` of Zoom's endpoint validation request.
const URL_VALIDATION: &str = "endpoint.url_validation";

/// Zoom's scheme and handshake, as the module documentation describes.
pub(crate) struct Zoom;

impl Provider for Zoom {
    fn label(&self) -> &'static str {
        "Zoom"
    }

    fn setup_hint(&self) -> &'static str {
        "In the Zoom App Marketplace: your app → Event Subscriptions, paste this URL as the event notification endpoint URL and press Validate (Krafter answers it); the signing secret is the app's Secret Token."
    }

    fn verify(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(inbound, secrets)
    }

    fn post_verification_handshake(
        &self,
        inbound: &Inbound<'_>,
        json: Option<&Value>,
        secrets: &[&[u8]],
    ) -> Option<HandshakeReply> {
        post_verification_handshake(inbound, json, secrets)
    }

    fn event_type(
        &self,
        _config: Option<&GenericHmacConfig>,
        _inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> String {
        event_type(json)
    }
}

/// Verifies a Zoom request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let timestamp = required_header(inbound.headers, TIMESTAMP_HEADER)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let matched = secrets
        .filter_map(|secret| sign(secret, timestamp, inbound.body))
        .any(|expected| ct_eq(expected.as_bytes(), given.as_bytes()));
    matched_or_refused(matched)
}

/// `v0=` + the lowercase hex HMAC of `"v0:{timestamp}:" + body`.
fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<String> {
    let mac = hmac_sha256(secret, &[b"v0:", timestamp.as_bytes(), b":", body])?;
    Some(format!("v0={}", hex::encode(mac)))
}

/// A verified `endpoint.url_validation`: `encryptedToken` is the hex
/// HMAC-SHA256 of `payload.plainToken` under the secret that verified the
/// request. A validation request without a string `plainToken` is not a
/// handshake Krafter can answer; it is stored like any event.
fn post_verification_handshake(
    inbound: &Inbound<'_>,
    json: Option<&Value>,
    secrets: &[&[u8]],
) -> Option<HandshakeReply> {
    let json = json?;
    if json.get("event").and_then(Value::as_str) != Some(URL_VALIDATION) {
        return None;
    }
    let plain = json
        .get("payload")
        .and_then(|p| p.get("plainToken"))
        .and_then(Value::as_str)?;
    let secret = secrets
        .iter()
        .copied()
        .find(|secret| !secret.is_empty() && verify(inbound, &[secret]).is_ok())?;
    let encrypted = hex::encode(hmac_sha256(secret, &[plain.as_bytes()])?);
    let body = serde_json::to_vec(&serde_json::json!({
        "plainToken": plain,
        "encryptedToken": encrypted,
    }))
    .ok()?;
    Some(HandshakeReply {
        status: http::StatusCode::OK,
        content_type: "application/json",
        body,
    })
}

/// Body `event`, e.g. `meeting.started`. Zoom gives no event id to
/// de-duplicate on (PROVIDERS.md), so every request is stored.
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "event")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use http::{HeaderMap, HeaderValue};
    use sha2::Sha256;

    // (c) Vector from PROVIDERS.md (plain HMAC, as Zoom documents it).
    const SECRET: &[u8] = b"zoomsecret";
    const TS: &str = "1700000000";
    const BODY: &[u8] = br#"{"event":"meeting.started","event_ts":1700000000000,"payload":{}}"#;
    const SIG: &str = "v0=81f03a644d5ce5525be371c504ee052fd55027fef3f88018a9e63b2f5ae32ca3";
    const PLAIN_TOKEN: &str = "qgg8vlvZRS6UYooatFL8Aw";
    const ENCRYPTED_TOKEN: &str =
        "83b2a60d4bbe49dc93763ed9e727a9a7690cbe4c1f8bb0adc0ffccd09ecb1384";

    fn headers(ts: Option<&str>, sig: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ts) = ts {
            h.insert(
                "X-Zm-Request-Timestamp",
                HeaderValue::from_str(ts).expect("test header"),
            );
        }
        if let Some(sig) = sig {
            h.insert(
                "X-ZM-Signature",
                HeaderValue::from_str(sig).expect("test header"),
            );
        }
        h
    }

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = headers(ts, sig);
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

    /// An independent signer (the `hmac` crate, not the code under test).
    fn independent(secret: &[u8], parts: &[&[u8]]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        for part in parts {
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn documented_vector_verifies() {
        assert_eq!(check(Some(TS), Some(SIG), BODY, &[SECRET]), Ok(()));
        // No time window: Zoom's verifier has none.
        for now in [0, i64::MAX, i64::MIN] {
            let h = headers(Some(TS), Some(SIG));
            let inbound = Inbound {
                headers: &h,
                body: BODY,
                now_unix: now,
                url: "",
            };
            assert_eq!(verify(&inbound, &[SECRET]), Ok(()));
        }
        assert_eq!(
            format!("v0={}", independent(SECRET, &[b"v0:1700000000:", BODY])),
            SIG
        );
    }

    #[test]
    fn tampered_body_timestamp_signature_and_wrong_secret_are_rejected() {
        let mut body = BODY.to_vec();
        body[2] ^= 1;
        assert_eq!(
            check(Some(TS), Some(SIG), &body, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(Some("1700000001"), Some(SIG), BODY, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        let mut sig = SIG.to_owned();
        sig.replace_range(10..11, "0");
        assert_ne!(sig, SIG);
        assert_eq!(
            check(Some(TS), Some(&sig), BODY, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(Some(TS), Some(SIG), BODY, &[b"othersecret"]),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn rotation_any_secret_may_match() {
        assert_eq!(check(Some(TS), Some(SIG), BODY, &[b"new", SECRET]), Ok(()));
        assert_eq!(check(Some(TS), Some(SIG), BODY, &[b"", SECRET]), Ok(()));
    }

    #[test]
    fn signature_format_is_strict() {
        let bare = SIG.trim_start_matches("v0=");
        assert!(check(Some(TS), Some(bare), BODY, &[SECRET]).is_err());
        let upper = format!("v0={}", bare.to_uppercase());
        assert!(check(Some(TS), Some(&upper), BODY, &[SECRET]).is_err());
        let v1 = format!("v1={bare}");
        assert!(check(Some(TS), Some(&v1), BODY, &[SECRET]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, Some(SIG), BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(TS), None, BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(" "), Some(SIG), BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        for sig in ["garbage", "v0=", "v0", &",".repeat(3000)] {
            assert!(check(Some(TS), Some(sig), BODY, &[SECRET]).is_err());
        }
        let huge = "v0=".repeat(100 * 1024 / 3);
        assert!(matches!(
            check(Some(TS), Some(&huge), BODY, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert_eq!(
            check(Some(TS), Some(SIG), BODY, &[]),
            Err(VerifyError::NoSecret)
        );
    }

    fn validation(plain: &str) -> (Vec<u8>, String) {
        let body = format!(
            r#"{{"payload":{{"plainToken":"{plain}"}},"event_ts":1700000000000,"event":"endpoint.url_validation"}}"#
        )
        .into_bytes();
        let sig = format!("v0={}", independent(SECRET, &[b"v0:1700000000:", &body]));
        (body, sig)
    }

    fn handshake(body: &[u8], sig: &str, secrets: &[&[u8]]) -> Option<HandshakeReply> {
        let h = headers(Some(TS), Some(sig));
        let inbound = Inbound {
            headers: &h,
            body,
            now_unix: 0,
            url: "",
        };
        let json: Option<Value> = serde_json::from_slice(body).ok();
        post_verification_handshake(&inbound, json.as_ref(), secrets)
    }

    #[test]
    fn url_validation_answers_the_documented_token() {
        let (body, sig) = validation(PLAIN_TOKEN);
        assert_eq!(check(Some(TS), Some(&sig), &body, &[SECRET]), Ok(()));
        let Some(reply) = handshake(&body, &sig, &[SECRET]) else {
            panic!("expected a handshake reply");
        };
        assert_eq!(reply.content_type, "application/json");
        let answer: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        assert_eq!(
            answer,
            serde_json::json!({"plainToken": PLAIN_TOKEN, "encryptedToken": ENCRYPTED_TOKEN})
        );
        assert_eq!(
            independent(SECRET, &[PLAIN_TOKEN.as_bytes()]),
            ENCRYPTED_TOKEN
        );
    }

    #[test]
    fn url_validation_uses_the_secret_that_verified() {
        let (body, sig) = validation(PLAIN_TOKEN);
        // During a rotation the new secret comes first; the request was
        // signed with the old one, so the answer must use the old one.
        let reply = handshake(&body, &sig, &[b"", b"newsecret", SECRET]);
        let answer: Value = reply
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or_default();
        assert_eq!(answer["encryptedToken"], ENCRYPTED_TOKEN);
    }

    #[test]
    fn other_events_and_unusable_validations_are_not_handshakes() {
        assert!(handshake(BODY, SIG, &[SECRET]).is_none());
        let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":7}}"#;
        let sig = format!("v0={}", independent(SECRET, &[b"v0:1700000000:", body]));
        assert!(handshake(body, &sig, &[SECRET]).is_none());
        let body = br#"{"event":"endpoint.url_validation"}"#;
        let sig = format!("v0={}", independent(SECRET, &[b"v0:1700000000:", body]));
        assert!(handshake(body, &sig, &[SECRET]).is_none());
        assert!(handshake(b"not json", SIG, &[SECRET]).is_none());
    }

    #[test]
    fn event_type_is_the_body_event() {
        let json: Value = serde_json::from_slice(BODY).unwrap_or_default();
        assert_eq!(event_type(Some(&json)), "meeting.started");
        assert_eq!(
            event_type(Some(&serde_json::json!({"type": "x"}))),
            "unknown"
        );
        assert_eq!(event_type(None), "unknown");
    }
}
