//! Mailgun: the signature is inside the JSON body,
//! `{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`,
//! and `signature` is the hex HMAC-SHA256 of `timestamp + token` under the
//! account's HTTP webhook signing key.
//!
//! As Mailgun's "Securing Webhooks" documents: concatenate the timestamp
//! and token as sent, HMAC-SHA256 under the signing key, compare with the
//! lowercase hex `signature` (here in constant time). For a subaccount's
//! event Mailgun adds `parent-signature`, the same HMAC under the primary
//! account's key; either may match, so a source can hold either key.
//!
//! The body is not signed, so a captured `(timestamp, token, signature)`
//! could carry any body. Mailgun's two optional defences are both on:
//! - the timestamp must be within ±300 s of now (SPEC §8's default; Mailgun
//!   gives no number and warns against being too strict — a refused
//!   delivery is answered 401 and retried by Mailgun);
//! - a token is single-use ([`Provider::single_use_token`]): the ingest
//!   route remembers each verified token for the window and refuses it
//!   with another `event-data.id` (401), while the same token with the same
//!   id (Mailgun's own retry) is de-duplicated as usual (SPEC §18). That
//!   memory is per process: on several nodes, a replay sent to another node
//!   within the window is not caught by it (the event itself is still
//!   de-duplicated by `event-data.id`).
//!
//! Only JSON webhooks are verified (Mailgun's current format); the legacy
//! form-encoded ones are refused. Type `event-data.event`, dedup id
//! `event-data.id`.

use serde::Deserialize;
use serde_json::Value;

use super::common::{
    ct_eq, event_type_or_unknown, hmac_sha256, json_text, matched_or_refused, outside_window,
    usable_secrets, MAX_EVENT_FIELD_BYTES,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// How far the signed timestamp may be from now, either way, in seconds;
/// also how long a token is remembered (see the ingest route).
pub(crate) const TOLERANCE_SECS: i64 = 300;

/// The fields verification reads; the rest of the body is skipped.
#[derive(Deserialize)]
struct Envelope {
    signature: Option<Signed>,
}

/// Mailgun's `signature` object.
#[derive(Deserialize)]
struct Signed {
    timestamp: Option<Value>,
    token: Option<Value>,
    signature: Option<Value>,
    #[serde(rename = "parent-signature")]
    parent_signature: Option<Value>,
}

/// Mailgun's scheme, as the module documentation describes.
pub(crate) struct Mailgun;

impl Provider for Mailgun {
    fn label(&self) -> &'static str {
        "Mailgun"
    }

    fn setup_hint(&self) -> &'static str {
        "In Mailgun: Send → Sending → Webhooks → Add webhook, pick the event types and paste this URL; the signing secret is your HTTP webhook signing key (not the API key)."
    }

    fn verify(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(inbound, secrets)
    }

    fn single_use_token(&self, json: Option<&Value>) -> Option<String> {
        single_use_token(json)
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

/// A `signature.*` field as the text that was signed: a string as is, a
/// number in its JSON spelling; `None` when absent, blank, another type or
/// longer than [`MAX_EVENT_FIELD_BYTES`].
fn field(value: Option<&Value>) -> Option<String> {
    let text = json_text(value?)?;
    let text = text.trim();
    (!text.is_empty() && text.len() <= MAX_EVENT_FIELD_BYTES).then(|| text.to_owned())
}

/// Verifies a Mailgun request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let missing = |name: &'static str| VerifyError::MalformedBodyField(name.into());
    // serde would also read a struct from a JSON array; Mailgun sends an
    // object.
    if inbound.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(missing("signature"));
    }
    let signed = serde_json::from_slice::<Envelope>(inbound.body)
        .ok()
        .and_then(|e| e.signature)
        .ok_or_else(|| missing("signature"))?;
    let timestamp =
        field(signed.timestamp.as_ref()).ok_or_else(|| missing("signature.timestamp"))?;
    let token = field(signed.token.as_ref()).ok_or_else(|| missing("signature.token"))?;
    let given: Vec<String> = [&signed.signature, &signed.parent_signature]
        .into_iter()
        .filter_map(|v| field(v.as_ref()))
        .collect();
    if given.is_empty() {
        return Err(missing("signature.signature"));
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| missing("signature.timestamp"))?;
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[timestamp.as_bytes(), token.as_bytes()]))
        .map(hex::encode)
        .any(|expected| {
            given
                .iter()
                .any(|g| ct_eq(expected.as_bytes(), g.as_bytes()))
        });
    matched_or_refused(matched)?;
    if outside_window(inbound.now_unix, ts, TOLERANCE_SECS) {
        return Err(VerifyError::TimestampOutsideTolerance);
    }
    Ok(())
}

/// `signature.token`, which the ingest route accepts once per event.
fn single_use_token(json: Option<&Value>) -> Option<String> {
    field(json?.get("signature")?.get("token"))
}

/// `event-data.event`, e.g. `delivered`.
fn event_type(json: Option<&Value>) -> String {
    let event = json
        .and_then(|j| j.get("event-data"))
        .and_then(|d| d.get("event"))
        .and_then(json_text);
    event_type_or_unknown(event.as_deref())
}

/// `event-data.id`: the same on Mailgun's retries, so dedup catches them.
fn event_id(json: Option<&Value>) -> Option<String> {
    let id = json?.get("event-data")?.get("id").and_then(json_text)?;
    super::common::cap_event_id(&id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    /// Made independently with Python's `hmac` by
    /// `tests/fixtures/providers/make_fixtures.py` (its `mailgun` entry):
    /// HMAC-SHA256 under `key-mailgunsecret` of `"1700000000" + TOKEN`.
    const SECRET: &[u8] = b"key-mailgunsecret";
    const TS: i64 = 1_700_000_000;
    const TOKEN: &str = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
    const SIG: &str = "c59b15eb957e8240431a7da7ba3c526b206427bbebebc5330a42b6065664bc02";

    fn body(ts: &str, token: &str, sig: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"signature":{{"timestamp":{ts},"token":"{token}","signature":"{sig}"{extra}}},"event-data":{{"event":"delivered","id":"CPgfbmQMTCKtHW6uIWtuVe","timestamp":1700000000.1}}}}"#
        )
        .into_bytes()
    }

    fn check(body: &[u8], now: i64, secrets: &[&[u8]]) -> Result<(), VerifyError> {
        let h = HeaderMap::new();
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

    fn good() -> Vec<u8> {
        body("\"1700000000\"", TOKEN, SIG, "")
    }

    /// The committed fixtures (see `tests/fixtures/providers/`).
    const FIXTURES: &str = include_str!("../../../tests/fixtures/providers/signed.json");

    #[test]
    fn independent_vector_verifies() {
        let fixture: Value = serde_json::from_str(FIXTURES).unwrap_or_default();
        let vector = &fixture["mailgun"];
        assert_eq!(vector["signing_key"], "key-mailgunsecret");
        assert_eq!(vector["timestamp"], "1700000000");
        assert_eq!(vector["token"], TOKEN);
        assert_eq!(vector["signature"], SIG);
        assert_eq!(check(&good(), TS, &[SECRET]), Ok(()));
        // A numeric timestamp signs its JSON spelling.
        assert_eq!(
            check(&body("1700000000", TOKEN, SIG, ""), TS, &[SECRET]),
            Ok(())
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_are_rejected() {
        assert_eq!(check(&good(), TS + 300, &[SECRET]), Ok(()));
        assert_eq!(check(&good(), TS - 300, &[SECRET]), Ok(()));
        for now in [TS + 301, TS - 301, i64::MAX, i64::MIN] {
            assert_eq!(
                check(&good(), now, &[SECRET]),
                Err(VerifyError::TimestampOutsideTolerance)
            );
        }
    }

    #[test]
    fn tampered_timestamp_token_signature_and_wrong_key_are_rejected() {
        let cases = [
            body("\"1700000001\"", TOKEN, SIG, ""),
            body("\"1700000000\"", &TOKEN.replace('e', "f"), SIG, ""),
            body("\"1700000000\"", TOKEN, &SIG.replace("c59b", "c59c"), ""),
            body("\"1700000000\"", TOKEN, &SIG.to_uppercase(), ""),
        ];
        for case in cases {
            assert_eq!(
                check(&case, TS, &[SECRET]),
                Err(VerifyError::NoMatchingSignature)
            );
        }
        assert_eq!(
            check(&good(), TS, &[b"key-other"]),
            Err(VerifyError::NoMatchingSignature)
        );
        // The signature never covered the event data (Mailgun's design):
        // that is what single-use tokens are for.
        let other_event = String::from_utf8(good())
            .unwrap_or_default()
            .replace("delivered", "failed");
        assert_eq!(check(other_event.as_bytes(), TS, &[SECRET]), Ok(()));
    }

    #[test]
    fn rotation_and_parent_signature() {
        assert_eq!(check(&good(), TS, &[b"key-new", SECRET]), Ok(()));
        // A subaccount's event: `signature` under the subaccount key,
        // `parent-signature` under the primary key, which the source holds.
        let parent = format!(r#","parent-signature":"{SIG}""#);
        let sub = body("\"1700000000\"", TOKEN, &"0".repeat(64), &parent);
        assert_eq!(check(&sub, TS, &[SECRET]), Ok(()));
        let sub = body("\"1700000000\"", TOKEN, &"0".repeat(64), "");
        assert_eq!(
            check(&sub, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        let cases: [&[u8]; 9] = [
            b"",
            b"not json",
            b"[]",
            br#"{"event-data":{}}"#,
            br#"{"signature":{}}"#,
            br#"{"signature":{"timestamp":"1700000000","token":"t"}}"#,
            br#"{"signature":{"timestamp":"x","token":"t","signature":"00"}}"#,
            br#"{"signature":{"timestamp":{},"token":"t","signature":"00"}}"#,
            b"timestamp=1700000000&token=t&signature=00",
        ];
        for case in cases {
            assert!(
                matches!(
                    check(case, TS, &[SECRET]),
                    Err(VerifyError::MalformedBodyField(_))
                ),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        let long = body("\"1700000000\"", &"t".repeat(300), SIG, "");
        assert!(matches!(
            check(&long, TS, &[SECRET]),
            Err(VerifyError::MalformedBodyField(_))
        ));
        assert_eq!(check(&good(), TS, &[b""]), Err(VerifyError::NoSecret));
    }

    #[test]
    fn token_type_and_id() {
        let json: Value = serde_json::from_slice(&good()).unwrap_or_default();
        assert_eq!(single_use_token(Some(&json)).as_deref(), Some(TOKEN));
        assert_eq!(event_type(Some(&json)), "delivered");
        assert_eq!(
            event_id(Some(&json)).as_deref(),
            Some("CPgfbmQMTCKtHW6uIWtuVe")
        );
        let empty = serde_json::json!({});
        assert_eq!(single_use_token(Some(&empty)), None);
        assert_eq!(event_type(Some(&empty)), "unknown");
        assert_eq!(event_id(Some(&empty)), None);
        assert_eq!(single_use_token(None), None);
    }
}
