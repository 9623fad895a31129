//! Discord (interactions endpoint and webhook events):
//! `X-Signature-Ed25519: <hex>` over `X-Signature-Timestamp + raw body`,
//! verified with the application's Ed25519 public key.
//!
//! As Discord's `discord-interactions` libraries verify: the signed message
//! is the timestamp header exactly as sent followed by the body; the
//! signature is 64 bytes in hex, the key 32 bytes in hex (the source's
//! `signing_secret`: exactly 64 hex characters, checked when it is set,
//! the same rule the OpenAPI document states; a string of that shape that
//! is not a curve point can verify nothing, so such a source answers 401
//! "no usable signing secret"). Verification is strict
//! Ed25519 (`ed25519-dalek`'s `verify_strict`: no small-order keys, no
//! non-canonical signatures), which every signature Discord makes passes.
//! Discord checks no time window, and neither does Krafter (PROVIDERS.md).
//! A bad signature is 401, which Discord probes before it accepts a URL.
//!
//! Handshakes, answered after verification and never stored (SPEC §18):
//! an interaction PING (`{"type":1}`, no `event`) → 200 `{"type":1}`; a
//! webhook-events PING (`{"type":0}`) → 204. Other requests are stored:
//! webhook events with type `event.type` (e.g. `APPLICATION_AUTHORIZED`),
//! interactions with their numeric `type` as text (`"2"`). Discord gives
//! no dedup id (PROVIDERS.md). Krafter cannot answer an interaction with a
//! message: its answer is the usual `{"data": {"event_id": ...}}`.

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

use super::common::{
    body_field, event_type_or_unknown, json_text, matched_or_refused, required_header,
};
use super::{GenericHmacConfig, HandshakeReply, Inbound, Provider, VerifyError};

/// The header carrying the hex signature.
const SIGNATURE_HEADER: &str = "x-signature-ed25519";
/// The header carrying the signed timestamp.
const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// What `validate_secret` says about a secret that is not a public key.
const BAD_KEY: &str =
    "signing_secret must be the application's Ed25519 public key: 64 hex characters";

/// Discord's scheme and handshakes, as the module documentation describes.
pub(crate) struct Discord;

impl Provider for Discord {
    fn label(&self) -> &'static str {
        "Discord"
    }

    fn setup_hint(&self) -> &'static str {
        "In the Discord Developer Portal: your application → General Information, paste this URL as the Interactions Endpoint URL (or under Webhooks → Endpoint URL for webhook events); the signing secret is the Public Key shown there. Krafter answers Discord's PING."
    }

    fn validate_secret(&self, secret: &[u8]) -> Result<(), &'static str> {
        if secret.len() == 64 && secret.iter().all(u8::is_ascii_hexdigit) {
            Ok(())
        } else {
            Err(BAD_KEY)
        }
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
        _inbound: &Inbound<'_>,
        json: Option<&Value>,
        _secrets: &[&[u8]],
    ) -> Option<HandshakeReply> {
        post_verification_handshake(json)
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

/// The public key a secret holds: 64 hex characters (either case) that
/// decode to a valid Ed25519 point.
fn public_key(secret: &[u8]) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(secret, &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Verifies a Discord request against any of `secrets` (public keys).
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let keys: Vec<VerifyingKey> = secrets.iter().filter_map(|s| public_key(s)).collect();
    if keys.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let timestamp = required_header(inbound.headers, TIMESTAMP_HEADER)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let mut raw = [0u8; 64];
    if hex::decode_to_slice(given, &mut raw).is_err() {
        return Err(VerifyError::NoMatchingSignature);
    }
    let signature = Signature::from_bytes(&raw);
    let mut message = Vec::with_capacity(timestamp.len() + inbound.body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(inbound.body);
    let matched = keys
        .iter()
        .any(|key| key.verify_strict(&message, &signature).is_ok());
    matched_or_refused(matched)
}

/// Whether the body is a webhook-events request (it carries an `event`
/// object); interactions never do.
fn is_webhook_event(json: &Value) -> bool {
    json.get("event").is_some_and(Value::is_object)
}

/// The PINGs: interaction `type` 1 → `{"type":1}`; webhook-events `type` 0
/// → 204.
fn post_verification_handshake(json: Option<&Value>) -> Option<HandshakeReply> {
    let json = json?;
    match json.get("type").and_then(Value::as_u64) {
        Some(1) if !is_webhook_event(json) => Some(HandshakeReply {
            status: http::StatusCode::OK,
            content_type: "application/json",
            body: br#"{"type":1}"#.to_vec(),
        }),
        Some(0) => Some(HandshakeReply {
            status: http::StatusCode::NO_CONTENT,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        }),
        _ => None,
    }
}

/// `event.type` for a webhook event, else the interaction's numeric
/// `type` as text.
fn event_type(json: Option<&Value>) -> String {
    if let Some(json) = json.filter(|j| is_webhook_event(j)) {
        let inner = json
            .get("event")
            .and_then(|e| e.get("type"))
            .and_then(json_text);
        return event_type_or_unknown(inner.as_deref());
    }
    event_type_or_unknown(body_field(json, "type").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    /// The committed fixtures (see `tests/fixtures/providers/`).
    const FIXTURES: &str = include_str!("../../../tests/fixtures/providers/signed.json");
    // ✅ Vector from PROVIDERS.md: seed bytes 0..31.
    const KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const TS: &str = "1700000000";
    const PING: &[u8] = br#"{"type":1}"#;
    const PING_SIG: &str = "c1098e97d711377f30225d53d94b89d43537f92e5b3afaddc590781b1f9f9d4b2eeab335d370be3b9a090bc61a85b86448bc140dcd195f1569c2bff181257607";

    struct Case {
        timestamp: String,
        body: String,
        signature: String,
    }

    fn fixtures() -> Value {
        serde_json::from_str(FIXTURES).expect("fixture JSON")
    }

    fn case(name: &str) -> Case {
        let all = fixtures();
        let found = all["discord"]["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .expect("fixture case");
        let text = |k: &str| found[k].as_str().expect("text").to_owned();
        Case {
            timestamp: text("timestamp"),
            body: text("body"),
            signature: text("signature"),
        }
    }

    fn headers(ts: Option<&str>, sig: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ts) = ts {
            h.insert(
                "X-Signature-Timestamp",
                HeaderValue::from_str(ts).expect("test header"),
            );
        }
        if let Some(sig) = sig {
            h.insert(
                "X-Signature-Ed25519",
                HeaderValue::from_str(sig).expect("test header"),
            );
        }
        h
    }

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        keys: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = headers(ts, sig);
        verify(
            &Inbound {
                headers: &h,
                body,
                now_unix: 0,
                url: "",
            },
            keys,
        )
    }

    #[test]
    fn documented_vector_verifies() {
        assert_eq!(fixtures()["discord"]["public_key"], KEY);
        assert_eq!(
            check(Some(TS), Some(PING_SIG), PING, &[KEY.as_bytes()]),
            Ok(())
        );
        // Upper-case hex is fine.
        let upper = KEY.to_uppercase();
        assert_eq!(
            check(
                Some(TS),
                Some(&PING_SIG.to_uppercase()),
                PING,
                &[upper.as_bytes()]
            ),
            Ok(())
        );
    }

    #[test]
    fn every_fixture_verifies_under_its_key_only() {
        let all = fixtures();
        let other = all["discord"]["other_public_key"].as_str().expect("key");
        for name in [
            "interaction_ping",
            "interaction_command",
            "webhook_ping",
            "webhook_event",
        ] {
            let c = case(name);
            let body = c.body.as_bytes();
            assert_eq!(
                check(
                    Some(&c.timestamp),
                    Some(&c.signature),
                    body,
                    &[KEY.as_bytes()]
                ),
                Ok(()),
                "{name}"
            );
            assert_eq!(
                check(
                    Some(&c.timestamp),
                    Some(&c.signature),
                    body,
                    &[other.as_bytes()]
                ),
                Err(VerifyError::NoMatchingSignature),
                "{name}"
            );
        }
        let c = case("interaction_ping_other_key");
        assert_eq!(
            check(
                Some(&c.timestamp),
                Some(&c.signature),
                PING,
                &[KEY.as_bytes()]
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        // Rotation: either key may match.
        assert_eq!(
            check(
                Some(&c.timestamp),
                Some(&c.signature),
                PING,
                &[KEY.as_bytes(), other.as_bytes()]
            ),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_timestamp_and_signature_are_rejected() {
        let key: &[&[u8]] = &[KEY.as_bytes()];
        assert_eq!(
            check(Some(TS), Some(PING_SIG), br#"{"type":2}"#, key),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(Some("1700000001"), Some(PING_SIG), PING, key),
            Err(VerifyError::NoMatchingSignature)
        );
        let mut sig = PING_SIG.as_bytes().to_vec();
        sig[0] = b'd';
        let sig = String::from_utf8(sig).unwrap_or_default();
        assert_eq!(
            check(Some(TS), Some(&sig), PING, key),
            Err(VerifyError::NoMatchingSignature)
        );
        for garbage in [
            "zz",
            &PING_SIG[..126],
            &format!("{PING_SIG}00"),
            &"0".repeat(128),
        ] {
            assert_eq!(
                check(Some(TS), Some(garbage), PING, key),
                Err(VerifyError::NoMatchingSignature),
                "{garbage:.20}"
            );
        }
        assert!(matches!(
            check(Some(TS), Some("é"), PING, key),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert!(matches!(
            check(None, Some(PING_SIG), PING, key),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(TS), None, PING, key),
            Err(VerifyError::MissingHeader(_))
        ));
        let huge = "0".repeat(100 * 1024);
        assert!(matches!(
            check(Some(TS), Some(&huge), PING, key),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(Discord.validate_secret(KEY.as_bytes()), Ok(()));
        assert_eq!(
            Discord.validate_secret(KEY.to_uppercase().as_bytes()),
            Ok(())
        );
        for bad in [
            "",
            "not hex",
            &KEY[..62],
            &format!("{KEY}00"),
            &format!(" {KEY}"),
            "whsec_abc",
        ] {
            assert_eq!(
                Discord.validate_secret(bad.as_bytes()),
                Err(BAD_KEY),
                "{bad}"
            );
        }
        // The right shape but not a point on the curve (y = 2 has no x):
        // accepted as a secret (the OpenAPI pattern cannot tell), and it
        // verifies nothing.
        let not_a_point = "0200000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(Discord.validate_secret(not_a_point.as_bytes()), Ok(()));
        assert!(public_key(not_a_point.as_bytes()).is_none());
        assert_eq!(
            check(Some(TS), Some(PING_SIG), PING, &[not_a_point.as_bytes()]),
            Err(VerifyError::NoSecret)
        );
        assert_eq!(
            check(Some(TS), Some(PING_SIG), PING, &[b"not a key"]),
            Err(VerifyError::NoSecret)
        );
        assert_eq!(
            check(
                Some(TS),
                Some(PING_SIG),
                PING,
                &[b"not a key", KEY.as_bytes()]
            ),
            Ok(())
        );
    }

    #[test]
    fn pings_are_answered() {
        let ping: Value = serde_json::from_slice(PING).unwrap_or_default();
        let reply = post_verification_handshake(Some(&ping)).expect("interaction ping");
        assert_eq!(reply.status, http::StatusCode::OK);
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(reply.body, br#"{"type":1}"#);

        let webhook_ping: Value =
            serde_json::from_str(&case("webhook_ping").body).unwrap_or_default();
        let reply = post_verification_handshake(Some(&webhook_ping)).expect("webhook ping");
        assert_eq!(reply.status, http::StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());

        for name in ["webhook_event", "interaction_command"] {
            let json: Value = serde_json::from_str(&case(name).body).unwrap_or_default();
            assert!(post_verification_handshake(Some(&json)).is_none(), "{name}");
        }
        assert!(post_verification_handshake(None).is_none());
        assert!(post_verification_handshake(Some(&serde_json::json!({"type": "1"}))).is_none());
    }

    #[test]
    fn event_types() {
        let event: Value = serde_json::from_str(&case("webhook_event").body).unwrap_or_default();
        assert_eq!(event_type(Some(&event)), "APPLICATION_AUTHORIZED");
        let command: Value =
            serde_json::from_str(&case("interaction_command").body).unwrap_or_default();
        assert_eq!(event_type(Some(&command)), "2");
        let no_inner = serde_json::json!({"type": 1, "event": {}});
        assert_eq!(event_type(Some(&no_inner)), "unknown");
        assert_eq!(event_type(None), "unknown");
    }
}
