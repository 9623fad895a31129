//! Twitch EventSub (webhook transport): `Twitch-Eventsub-Message-Signature:
//! sha256=<hex>`, HMAC-SHA256 of `message id + timestamp + raw body`.
//!
//! As Twitch's "Verifying the event message" documents: the signed content
//! is the `Twitch-Eventsub-Message-Id` and `Twitch-Eventsub-Message-Timestamp`
//! headers exactly as sent, then the body; the whole `sha256=<lowercase hex>`
//! string is compared in constant time; and a message whose timestamp
//! (RFC 3339, nanoseconds) is more than 10 minutes old is refused. The
//! signature is checked before the time, so a forged request learns nothing
//! about the window. A timestamp in the future is accepted, as Twitch's
//! rule only bounds the age.
//!
//! Handshake: a verified `webhook_callback_verification` message is
//! answered 200 `text/plain` with the body's raw `challenge` and never
//! stored. `notification` and `revocation` messages are stored; the event
//! type is `Twitch-Eventsub-Subscription-Type` and the dedup id
//! `Twitch-Eventsub-Message-Id` (Twitch resends a message with the same id).

use http::HeaderMap;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::common::{
    ct_eq, event_type_or_unknown, header_event_id, header_text, hmac_sha256, matched_or_refused,
    required_header, usable_secrets,
};
use super::{GenericHmacConfig, HandshakeReply, Inbound, Provider, VerifyError};

/// The header carrying `sha256=<hex>`.
const SIGNATURE_HEADER: &str = "twitch-eventsub-message-signature";
/// The header carrying the message id (signed, and the dedup id).
const ID_HEADER: &str = "twitch-eventsub-message-id";
/// The header carrying the RFC 3339 send time (signed).
const TIMESTAMP_HEADER: &str = "twitch-eventsub-message-timestamp";
/// The header naming the message kind.
const TYPE_HEADER: &str = "twitch-eventsub-message-type";
/// The header naming the subscription type (the event type).
const SUBSCRIPTION_TYPE_HEADER: &str = "twitch-eventsub-subscription-type";
/// Twitch's rule: refuse messages older than 10 minutes.
const MAX_AGE_SECS: i64 = 600;

/// Twitch's scheme and handshake, as the module documentation describes.
pub(crate) struct Twitch;

impl Provider for Twitch {
    fn label(&self) -> &'static str {
        "Twitch"
    }

    fn setup_hint(&self) -> &'static str {
        "Twitch EventSub: create the subscription (Create EventSub Subscription API or the Twitch CLI) with transport method webhook, this URL as transport.callback and the same secret (10–100 characters) as transport.secret; Krafter answers the verification challenge."
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
        _secrets: &[&[u8]],
    ) -> Option<HandshakeReply> {
        post_verification_handshake(inbound.headers, json)
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

/// Verifies a Twitch request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let id = required_header(inbound.headers, ID_HEADER)?;
    let timestamp = required_header(inbound.headers, TIMESTAMP_HEADER)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let sent = OffsetDateTime::parse(timestamp, &Rfc3339)
        .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP_HEADER.into()))?;
    let matched = secrets
        .filter_map(|secret| {
            hmac_sha256(secret, &[id.as_bytes(), timestamp.as_bytes(), inbound.body])
        })
        .any(|mac| {
            let expected = format!("sha256={}", hex::encode(mac));
            ct_eq(expected.as_bytes(), given.as_bytes())
        });
    matched_or_refused(matched)?;
    if i128::from(inbound.now_unix) - i128::from(sent.unix_timestamp()) > i128::from(MAX_AGE_SECS) {
        return Err(VerifyError::TimestampOutsideTolerance);
    }
    Ok(())
}

/// A verified `webhook_callback_verification`: the body's `challenge`,
/// raw, as `text/plain`. Without a string `challenge` there is nothing to
/// answer, and the message is stored like any other.
fn post_verification_handshake(
    headers: &HeaderMap,
    json: Option<&Value>,
) -> Option<HandshakeReply> {
    if header_text(headers, TYPE_HEADER) != Some("webhook_callback_verification") {
        return None;
    }
    let challenge = json?.get("challenge")?.as_str()?;
    Some(HandshakeReply {
        status: http::StatusCode::OK,
        content_type: "text/plain; charset=utf-8",
        body: challenge.as_bytes().to_vec(),
    })
}

/// Header `Twitch-Eventsub-Subscription-Type`, e.g. `channel.follow`.
fn event_type(headers: &HeaderMap) -> String {
    event_type_or_unknown(header_text(headers, SUBSCRIPTION_TYPE_HEADER))
}

/// Header `Twitch-Eventsub-Message-Id`: Twitch resends a message with the
/// same id, so dedup catches it.
fn event_id(headers: &HeaderMap) -> Option<String> {
    header_event_id(headers, ID_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use http::HeaderValue;
    use sha2::Sha256;

    // (c) Vector from PROVIDERS.md (plain HMAC, as Twitch documents).
    const SECRET: &[u8] = b"twitchsecret123";
    const ID: &str = "e76c6bd4-55c9-4987-8304-da1588d8988b";
    const TS: &str = "2019-11-16T10:11:12.634234626Z";
    const BODY: &[u8] = br#"{"subscription":{"type":"channel.follow"}}"#;
    const SIG: &str = "sha256=7b96b4bf06f0ce9143edd8d5d7747267517bb18a8ba571af5f914603f1ecb395";
    /// [`TS`] in Unix seconds.
    const TS_UNIX: i64 = 1_573_899_072;

    fn headers(id: Option<&str>, ts: Option<&str>, sig: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("Twitch-Eventsub-Message-Id", id),
            ("Twitch-Eventsub-Message-Timestamp", ts),
            ("Twitch-Eventsub-Message-Signature", sig),
        ] {
            if let Some(value) = value {
                h.insert(name, HeaderValue::from_str(value).expect("test header"));
            }
        }
        h
    }

    fn check_at(
        h: &HeaderMap,
        body: &[u8],
        now: i64,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(
            &Inbound {
                headers: h,
                body,
                now_unix: now,
                url: "",
            },
            secrets,
        )
    }

    fn check(sig: &str, body: &[u8], now: i64, secrets: &[&[u8]]) -> Result<(), VerifyError> {
        check_at(&headers(Some(ID), Some(TS), Some(sig)), body, now, secrets)
    }

    /// An independent signer (the `hmac` crate, not the code under test).
    fn sign(secret: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(ts.as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn documented_vector_verifies() {
        assert_eq!(sign(SECRET, ID, TS, BODY), SIG);
        assert_eq!(check(SIG, BODY, TS_UNIX, &[SECRET]), Ok(()));
        assert_eq!(check(SIG, BODY, TS_UNIX + 600, &[SECRET]), Ok(()));
        // The future is not bounded.
        assert_eq!(check(SIG, BODY, TS_UNIX - 86_400, &[SECRET]), Ok(()));
    }

    #[test]
    fn messages_older_than_ten_minutes_are_rejected() {
        for now in [TS_UNIX + 601, TS_UNIX + 86_400, i64::MAX] {
            assert_eq!(
                check(SIG, BODY, now, &[SECRET]),
                Err(VerifyError::TimestampOutsideTolerance)
            );
        }
    }

    #[test]
    fn signature_is_checked_before_the_age() {
        let forged = format!("sha256={}", "0".repeat(64));
        assert_eq!(
            check(&forged, BODY, TS_UNIX + 10_000, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tampered_body_id_timestamp_signature_and_wrong_secret_are_rejected() {
        let mut body = BODY.to_vec();
        body[5] ^= 1;
        assert_eq!(
            check(SIG, &body, TS_UNIX, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        let other_id = headers(Some("e76c6bd4-0000"), Some(TS), Some(SIG));
        assert_eq!(
            check_at(&other_id, BODY, TS_UNIX, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        // A refreshed timestamp (to dodge the age check) breaks the MAC.
        let fresh = "2019-11-16T10:21:12.634234626Z";
        let moved = headers(Some(ID), Some(fresh), Some(SIG));
        assert_eq!(
            check_at(&moved, BODY, TS_UNIX + 700, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        let flipped = SIG.replace("7b96", "7b97");
        assert_eq!(
            check(&flipped, BODY, TS_UNIX, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(SIG, BODY, TS_UNIX, &[b"othersecret123"]),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn rotation_any_secret_may_match() {
        assert_eq!(
            check(SIG, BODY, TS_UNIX, &[b"newsecret12345", SECRET]),
            Ok(())
        );
    }

    #[test]
    fn signature_format_is_strict() {
        let bare = SIG.trim_start_matches("sha256=");
        assert!(check(bare, BODY, TS_UNIX, &[SECRET]).is_err());
        assert!(check(
            &format!("sha256={}", bare.to_uppercase()),
            BODY,
            TS_UNIX,
            &[SECRET]
        )
        .is_err());
        assert!(check(&format!("sha1={bare}"), BODY, TS_UNIX, &[SECRET]).is_err());
    }

    #[test]
    fn missing_malformed_and_huge_headers_are_rejected() {
        for h in [
            headers(None, Some(TS), Some(SIG)),
            headers(Some(ID), None, Some(SIG)),
            headers(Some(ID), Some(TS), None),
        ] {
            assert!(matches!(
                check_at(&h, BODY, TS_UNIX, &[SECRET]),
                Err(VerifyError::MissingHeader(_))
            ));
        }
        for ts in [
            "1573899072",
            "2019-13-16T10:11:12Z",
            "garbage",
            "9999999999-11-16T10:11:12Z",
        ] {
            let h = headers(Some(ID), Some(ts), Some(SIG));
            assert!(
                matches!(
                    check_at(&h, BODY, TS_UNIX, &[SECRET]),
                    Err(VerifyError::MalformedHeader(_))
                ),
                "{ts}"
            );
        }
        let huge = "sha256=".repeat(100 * 1024 / 7);
        assert!(matches!(
            check(&huge, BODY, TS_UNIX, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert_eq!(check(SIG, BODY, TS_UNIX, &[]), Err(VerifyError::NoSecret));
    }

    #[test]
    fn other_offsets_are_understood() {
        // The same instant written with an offset is still one second old.
        let ts = "2019-11-16T12:11:12+02:00";
        let sig = sign(SECRET, ID, ts, BODY);
        let h = headers(Some(ID), Some(ts), Some(&sig));
        assert_eq!(check_at(&h, BODY, TS_UNIX + 600, &[SECRET]), Ok(()));
        assert_eq!(
            check_at(&h, BODY, TS_UNIX + 601, &[SECRET]),
            Err(VerifyError::TimestampOutsideTolerance)
        );
    }

    #[test]
    fn callback_verification_answers_the_raw_challenge() {
        let mut h = HeaderMap::new();
        h.insert(
            "Twitch-Eventsub-Message-Type",
            HeaderValue::from_static("webhook_callback_verification"),
        );
        let json = serde_json::json!({
            "challenge": "pogchamp-kappa-360noscope-vohiyo",
            "subscription": {"type": "channel.follow"}
        });
        let reply = post_verification_handshake(&h, Some(&json));
        let Some(reply) = reply else {
            panic!("expected a handshake reply");
        };
        assert!(reply.content_type.starts_with("text/plain"));
        assert_eq!(reply.body, b"pogchamp-kappa-360noscope-vohiyo");
        assert!(
            post_verification_handshake(&h, Some(&serde_json::json!({"challenge": 1}))).is_none()
        );
        assert!(post_verification_handshake(&h, None).is_none());
        let mut notification = HeaderMap::new();
        notification.insert(
            "Twitch-Eventsub-Message-Type",
            HeaderValue::from_static("notification"),
        );
        assert!(post_verification_handshake(&notification, Some(&json)).is_none());
    }

    #[test]
    fn type_and_id_come_from_the_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "Twitch-Eventsub-Subscription-Type",
            HeaderValue::from_static("channel.follow"),
        );
        h.insert("Twitch-Eventsub-Message-Id", HeaderValue::from_static(ID));
        assert_eq!(event_type(&h), "channel.follow");
        assert_eq!(event_id(&h).as_deref(), Some(ID));
        assert_eq!(event_type(&HeaderMap::new()), "unknown");
        assert_eq!(event_id(&HeaderMap::new()), None);
    }
}
