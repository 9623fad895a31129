//! SendGrid (signed Event Webhook): `X-Twilio-Email-Event-Webhook-Signature`
//! is an ECDSA P-256 / SHA-256 signature (base64 DER) over
//! `X-Twilio-Email-Event-Webhook-Timestamp + raw body`, verified with the
//! webhook's public key (the source's `signing_secret`: base64 DER
//! SubjectPublicKeyInfo of an uncompressed P-256 point, exactly as SendGrid
//! shows it).
//!
//! As SendGrid's `EventWebhook` helpers verify: the timestamp header as
//! sent, then the body; no time window (PROVIDERS.md). Like those helpers
//! (OpenSSL, Node, Java, Go underneath), a signature with a "high" S is
//! accepted. The key's shape is checked when it is set (422 otherwise):
//! standard padded base64 of the 27-byte P-256 SPKI header and 64 bytes of
//! coordinates, the rule the OpenAPI document states as a pattern. A key
//! of that shape whose point is not on the curve verifies nothing (401 "no
//! usable signing secret").
//!
//! One request carries an array of SendGrid events and is stored as one
//! Krafter event (SPEC §18): its type is the items' common `event` (e.g.
//! `delivered`), else `sendgrid.batch` (mixed or empty batches); its dedup
//! id is the item's `sg_event_id` when the batch holds exactly one item,
//! else none (a batch has no id of its own, and SendGrid may regroup items
//! when it retries).

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde_json::Value;

use super::common::{
    cap_event_id, event_type_or_unknown, json_text, matched_or_refused, required_header,
    BASE64_LENIENT,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The header carrying the base64 DER signature.
const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
/// The header carrying the signed timestamp.
const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";
/// The type of a batch whose items do not share one `event`.
const BATCH_TYPE: &str = "sendgrid.batch";
/// What `validate_secret` says about a secret that is not a public key.
const BAD_KEY: &str = "signing_secret must be the Event Webhook's verification key: a base64 P-256 public key (SubjectPublicKeyInfo), as SendGrid shows it";

/// SendGrid's scheme, as the module documentation describes.
pub(crate) struct Sendgrid;

impl Provider for Sendgrid {
    fn label(&self) -> &'static str {
        "SendGrid"
    }

    fn setup_hint(&self) -> &'static str {
        "In SendGrid: Settings → Mail Settings → Event Webhooks, paste this URL as the Post URL and enable Signed Event Webhook; the signing secret is the verification key it then shows. A request's events are stored together as one event."
    }

    fn validate_secret(&self, secret: &[u8]) -> Result<(), &'static str> {
        let der = base64::engine::general_purpose::STANDARD.decode(secret);
        match der {
            Ok(der) if der.len() == SPKI_LEN && der.starts_with(&SPKI_PREFIX) => Ok(()),
            _ => Err(BAD_KEY),
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

/// The DER SubjectPublicKeyInfo of an uncompressed P-256 key up to its
/// coordinates: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 },
/// BIT STRING { 0x04, ... } }.
const SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// [`SPKI_PREFIX`] and 64 bytes of coordinates.
const SPKI_LEN: usize = 91;

/// The public key a secret holds: base64 of a DER SubjectPublicKeyInfo for
/// a point on P-256.
fn public_key(secret: &[u8]) -> Option<VerifyingKey> {
    let der = BASE64_LENIENT.decode(secret).ok()?;
    VerifyingKey::from_public_key_der(&der).ok()
}

/// Verifies a SendGrid request against any of `secrets` (public keys).
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let keys: Vec<VerifyingKey> = secrets.iter().filter_map(|s| public_key(s)).collect();
    if keys.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let timestamp = required_header(inbound.headers, TIMESTAMP_HEADER)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let Some(signature) = BASE64_LENIENT
        .decode(given)
        .ok()
        .and_then(|der| Signature::from_der(&der).ok())
    else {
        return Err(VerifyError::NoMatchingSignature);
    };
    let mut message = Vec::with_capacity(timestamp.len() + inbound.body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(inbound.body);
    let matched = keys
        .iter()
        .any(|key| key.verify(&message, &signature).is_ok());
    matched_or_refused(matched)
}

/// The SendGrid events a body holds: the items of an array, or an object
/// as a batch of one.
fn items(json: Option<&Value>) -> Option<Vec<&Value>> {
    match json? {
        Value::Array(items) => Some(items.iter().collect()),
        object @ Value::Object(_) => Some(vec![object]),
        _ => None,
    }
}

/// The items' common `event`, else `sendgrid.batch`; `unknown` when the
/// body is not JSON.
fn event_type(json: Option<&Value>) -> String {
    let Some(items) = items(json) else {
        return event_type_or_unknown(None);
    };
    let mut events = items
        .iter()
        .map(|item| item.get("event").and_then(json_text));
    let Some(Some(first)) = events.next() else {
        return BATCH_TYPE.to_owned();
    };
    if events.all(|e| e.as_deref() == Some(first.as_ref())) {
        event_type_or_unknown(Some(&first))
    } else {
        BATCH_TYPE.to_owned()
    }
}

/// The single item's `sg_event_id`; none for a batch of several.
fn event_id(json: Option<&Value>) -> Option<String> {
    match items(json)?.as_slice() {
        [item] => cap_event_id(&json_text(item.get("sg_event_id")?)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    /// The committed fixtures (see `tests/fixtures/providers/`), signed with
    /// Python's `cryptography`.
    const FIXTURES: &str = include_str!("../../../tests/fixtures/providers/signed.json");

    struct Case {
        timestamp: String,
        body: String,
        signature: String,
    }

    fn fixtures() -> Value {
        serde_json::from_str(FIXTURES).expect("fixture JSON")
    }

    fn key(field: &str) -> String {
        fixtures()["sendgrid"][field]
            .as_str()
            .expect("key")
            .to_owned()
    }

    fn case(name: &str) -> Case {
        let all = fixtures();
        let found = all["sendgrid"]["cases"]
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

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        keys: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let mut h = HeaderMap::new();
        if let Some(ts) = ts {
            h.insert(
                "X-Twilio-Email-Event-Webhook-Timestamp",
                HeaderValue::from_str(ts).expect("test header"),
            );
        }
        if let Some(sig) = sig {
            h.insert(
                "X-Twilio-Email-Event-Webhook-Signature",
                HeaderValue::from_str(sig).expect("test header"),
            );
        }
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

    fn check_case(c: &Case, keys: &[&[u8]]) -> Result<(), VerifyError> {
        check(
            Some(&c.timestamp),
            Some(&c.signature),
            c.body.as_bytes(),
            keys,
        )
    }

    #[test]
    fn fixtures_verify_under_their_key_only() {
        let key = key("public_key");
        let other = key_other();
        for name in [
            "same_event",
            "mixed_events",
            "single_event",
            "single_event_high_s",
        ] {
            let c = case(name);
            assert_eq!(check_case(&c, &[key.as_bytes()]), Ok(()), "{name}");
            assert_eq!(
                check_case(&c, &[other.as_bytes()]),
                Err(VerifyError::NoMatchingSignature),
                "{name}"
            );
        }
        let c = case("same_event_other_key");
        assert_eq!(
            check_case(&c, &[key.as_bytes()]),
            Err(VerifyError::NoMatchingSignature)
        );
        // Rotation: either key may match.
        assert_eq!(check_case(&c, &[key.as_bytes(), other.as_bytes()]), Ok(()));
    }

    fn key_other() -> String {
        key("other_public_key")
    }

    #[test]
    fn high_s_signatures_are_accepted_like_sendgrids_helpers() {
        let high = case("single_event_high_s");
        let low = case("single_event");
        assert_eq!(high.body, low.body);
        assert_ne!(high.signature, low.signature);
        let der = BASE64_LENIENT.decode(&high.signature).unwrap_or_default();
        let sig = Signature::from_der(&der).expect("DER");
        assert!(sig.normalize_s().is_some(), "the fixture is high-S");
        assert_eq!(check_case(&high, &[key("public_key").as_bytes()]), Ok(()));
    }

    #[test]
    fn tampered_body_timestamp_and_signature_are_rejected() {
        let key = key("public_key");
        let keys: &[&[u8]] = &[key.as_bytes()];
        let c = case("same_event");
        let tampered = c.body.replace("delivered", "bounce");
        assert_eq!(
            check(
                Some(&c.timestamp),
                Some(&c.signature),
                tampered.as_bytes(),
                keys
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        // The CRLF SendGrid ends its body with is signed too.
        let trimmed = c.body.trim_end();
        assert_eq!(
            check(
                Some(&c.timestamp),
                Some(&c.signature),
                trimmed.as_bytes(),
                keys
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(
                Some("1700000001"),
                Some(&c.signature),
                c.body.as_bytes(),
                keys
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        let other = case("mixed_events");
        assert_eq!(
            check(
                Some(&c.timestamp),
                Some(&other.signature),
                c.body.as_bytes(),
                keys
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        for garbage in ["", "not base64!", "AAAA", "MEQCIA==", &"A".repeat(4000)] {
            let result = check(Some(&c.timestamp), Some(garbage), c.body.as_bytes(), keys);
            assert!(result.is_err(), "{garbage:.20}");
        }
        assert!(matches!(
            check(None, Some(&c.signature), c.body.as_bytes(), keys),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(&c.timestamp), None, c.body.as_bytes(), keys),
            Err(VerifyError::MissingHeader(_))
        ));
    }

    #[test]
    fn keys_are_validated() {
        let good = key("public_key");
        assert_eq!(Sendgrid.validate_secret(good.as_bytes()), Ok(()));
        assert_eq!(
            Sendgrid.validate_secret(key("other_public_key").as_bytes()),
            Ok(())
        );
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{good}\n-----END PUBLIC KEY-----\n");
        // An Ed25519 key (Discord's kind) in SPKI form is not a P-256 key.
        let ed25519_spki = "MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
        for bad in [
            "",
            "not base64!",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &good[..good.len() - 8],
            &good[..good.len() - 2],
            &format!("{good}\n"),
            &pem,
            ed25519_spki,
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
        ] {
            assert_eq!(
                Sendgrid.validate_secret(bad.as_bytes()),
                Err(BAD_KEY),
                "{bad:.20}"
            );
        }
        // The right shape but not a point on the curve: accepted as a
        // secret (the OpenAPI pattern cannot tell), and it verifies nothing.
        let not_a_point = format!("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE{}AA==", "A".repeat(84));
        assert_eq!(Sendgrid.validate_secret(not_a_point.as_bytes()), Ok(()));
        let c = case("same_event");
        assert_eq!(
            check_case(&c, &[not_a_point.as_bytes()]),
            Err(VerifyError::NoSecret)
        );
        assert_eq!(check_case(&c, &[b"not a key"]), Err(VerifyError::NoSecret));
        assert_eq!(check_case(&c, &[b"not a key", good.as_bytes()]), Ok(()));
    }

    fn json(name: &str) -> Value {
        serde_json::from_str(&case(name).body).unwrap_or_default()
    }

    #[test]
    fn batches_are_typed_and_deduplicated_as_documented() {
        assert_eq!(event_type(Some(&json("same_event"))), "delivered");
        assert_eq!(event_id(Some(&json("same_event"))), None);
        assert_eq!(event_type(Some(&json("mixed_events"))), "sendgrid.batch");
        assert_eq!(event_id(Some(&json("mixed_events"))), None);
        assert_eq!(event_type(Some(&json("single_event"))), "bounce");
        assert_eq!(
            event_id(Some(&json("single_event"))).as_deref(),
            Some("sg_ev_5")
        );

        let empty = serde_json::json!([]);
        assert_eq!(event_type(Some(&empty)), "sendgrid.batch");
        assert_eq!(event_id(Some(&empty)), None);
        let one_without_event = serde_json::json!([{"email": "x"}]);
        assert_eq!(event_type(Some(&one_without_event)), "sendgrid.batch");
        let partly = serde_json::json!([{"event": "open"}, {"email": "x"}]);
        assert_eq!(event_type(Some(&partly)), "sendgrid.batch");
        let object = serde_json::json!({"event": "open", "sg_event_id": "e"});
        assert_eq!(event_type(Some(&object)), "open");
        assert_eq!(event_id(Some(&object)).as_deref(), Some("e"));
        assert_eq!(event_type(Some(&serde_json::json!("x"))), "unknown");
        assert_eq!(event_type(None), "unknown");
        assert_eq!(event_id(None), None);
    }
}
