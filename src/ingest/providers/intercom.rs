//! Intercom: `X-Hub-Signature: sha1=<hex>`, HMAC-SHA1 of the raw body.
//!
//! As Intercom documents its signed notifications: the key is the app's
//! `client_secret` (or a subscription's `hub_secret`), the signature is the
//! 40-character lowercase hex digest after `sha1=`; the whole header is
//! compared in constant time. Intercom signs no timestamp, so there is no
//! time window; its retries keep the notification `id`, which dedup
//! catches. The `ping` notification Intercom sends when a webhook is set up
//! is stored and forwarded like any event (PROVIDERS.md).

use serde_json::Value;

use super::common::{
    body_event_id, body_event_type, ct_eq, hmac_sha1, matched_or_refused, required_header,
    usable_secrets,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The header Intercom signs with.
const SIGNATURE_HEADER: &str = "x-hub-signature";

/// Intercom's scheme, as the module documentation describes.
pub(crate) struct Intercom;

impl Provider for Intercom {
    fn label(&self) -> &'static str {
        "Intercom"
    }

    fn setup_hint(&self) -> &'static str {
        "In the Intercom Developer Hub: your app → Webhooks, paste this URL as the endpoint URL and pick the topics; the signing secret is the app's client_secret (its Basic Info page)."
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

/// Verifies an Intercom request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let matched = secrets
        .filter_map(|secret| hmac_sha1(secret, &[inbound.body]))
        .any(|mac| {
            let expected = format!("sha1={}", hex::encode(mac));
            ct_eq(expected.as_bytes(), given.as_bytes())
        });
    matched_or_refused(matched)
}

/// Body `topic`, e.g. `conversation.user.created` or `ping`.
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "topic")
}

/// Body `id` (`notif_...`), the same on Intercom's retries.
fn event_id(json: Option<&Value>) -> Option<String> {
    body_event_id(json, "id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use hmac::{Hmac, Mac};
    use sha1::Sha1;

    // (c) Vector from PROVIDERS.md (plain HMAC-SHA1, as Intercom documents).
    const SECRET: &[u8] = b"intercomsecret";
    const BODY: &[u8] = br#"{"type":"notification_event","topic":"ping","id":"notif_1"}"#;
    const SIG: &str = "sha1=d6d3cd87dfe3f0c17e462ce5a235d4c90ec84656";

    fn check(header: Option<&str>, body: &[u8], secrets: &[&[u8]]) -> Result<(), VerifyError> {
        let h = one_header("x-hub-signature", header);
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
    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn documented_vector_verifies() {
        assert_eq!(check(Some(SIG), BODY, &[SECRET]), Ok(()));
        assert_eq!(sign(SECRET, BODY), SIG);
    }

    #[test]
    fn tampered_body_signature_and_wrong_secret_are_rejected() {
        let mut body = BODY.to_vec();
        body.push(b'\n');
        assert_eq!(
            check(Some(SIG), &body, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        let flipped = SIG.replace("d6d3", "d6d4");
        assert_eq!(
            check(Some(&flipped), BODY, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(Some(SIG), BODY, &[b"othersecret"]),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn rotation_any_secret_may_match() {
        assert_eq!(check(Some(SIG), BODY, &[b"new", SECRET]), Ok(()));
        let new = sign(b"new", BODY);
        assert_eq!(check(Some(&new), BODY, &[b"new", SECRET]), Ok(()));
    }

    #[test]
    fn signature_format_is_strict() {
        let bare = SIG.trim_start_matches("sha1=");
        assert!(check(Some(bare), BODY, &[SECRET]).is_err());
        assert!(check(
            Some(&format!("sha1={}", bare.to_uppercase())),
            BODY,
            &[SECRET]
        )
        .is_err());
        assert!(check(Some(&format!("sha256={bare}")), BODY, &[SECRET]).is_err());
        // A SHA-256 MAC (GitHub's header scheme) is not Intercom's.
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET).expect("any key length");
        mac.update(BODY);
        let sha256 = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
        assert!(check(Some(&sha256), BODY, &[SECRET]).is_err());
    }

    #[test]
    fn missing_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(" "), BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        for garbage in ["sha1=", "sha1", "=", "é", &",".repeat(4000)] {
            assert!(
                check(Some(garbage), BODY, &[SECRET]).is_err(),
                "{garbage:.20}"
            );
        }
        let huge = format!("{SIG}{}", "0".repeat(100 * 1024));
        assert!(matches!(
            check(Some(&huge), BODY, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert_eq!(check(Some(SIG), BODY, &[b""]), Err(VerifyError::NoSecret));
    }

    #[test]
    fn type_is_the_topic_and_id_the_notification_id() {
        let json: Value = serde_json::from_slice(BODY).unwrap_or_default();
        assert_eq!(event_type(Some(&json)), "ping");
        assert_eq!(event_id(Some(&json)).as_deref(), Some("notif_1"));
        let other = serde_json::json!({"type": "notification_event"});
        assert_eq!(event_type(Some(&other)), "unknown");
        assert_eq!(event_id(Some(&other)), None);
        assert_eq!(event_type(None), "unknown");
    }
}
