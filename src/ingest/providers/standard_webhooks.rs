//! Standard Webhooks (and Svix, which uses the same scheme under `svix-*`
//! header names).
//!
//! As the official `standardwebhooks` / `svix` libraries verify:
//! - headers `webhook-id`, `webhook-timestamp`, `webhook-signature`; for
//!   Svix the `svix-*` set is used when all three are present, else the
//!   `webhook-*` set (the svix library's fallback);
//! - the key is the base64 decoding of the secret after its `whsec_` prefix
//!   (a secret without the prefix is decoded as base64 too);
//! - the timestamp must be within ±300 s of now (checked first);
//! - the signed content is `"{id}.{ts}." + raw body`, HMAC-SHA256, base64;
//! - the signature header is split on spaces, each entry on its first `,`;
//!   only `v1` entries count; any of them may match (key rotation).

use base64::Engine as _;
use http::HeaderMap;
use serde_json::Value;

use super::common::{
    body_event_type, cap_event_id, ct_eq_any, has_header, header_text, hmac_sha256,
    matched_or_refused, non_empty_secret, outside_window, required_header, BASE64_LENIENT,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The libraries' window, both directions, in seconds.
const TOLERANCE_SECS: i64 = 300;
/// The prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &[u8] = b"whsec_";

/// Which header names carry id, timestamp and signature.
#[derive(Clone, Copy)]
struct HeaderSet {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: HeaderSet = HeaderSet {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

const SVIX: HeaderSet = HeaderSet {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

/// The header set a request is verified with: `webhook-*` for Standard
/// Webhooks; for Svix, `svix-*` when all three are present, else
/// `webhook-*`, as the svix library does.
fn header_set(svix: bool, headers: &HeaderMap) -> HeaderSet {
    let complete = |set: HeaderSet| {
        has_header(headers, set.id)
            && has_header(headers, set.timestamp)
            && has_header(headers, set.signature)
    };
    if svix && complete(SVIX) {
        SVIX
    } else {
        WEBHOOK
    }
}

/// Standard Webhooks under its own `webhook-*` header names.
pub(crate) struct StandardWebhooks;

/// Svix: the same scheme under `svix-*` header names, falling back to
/// `webhook-*`.
pub(crate) struct Svix;

impl Provider for StandardWebhooks {
    fn label(&self) -> &'static str {
        "Standard Webhooks"
    }

    fn validate_secret(&self, secret: &[u8]) -> Result<(), &'static str> {
        validate_secret(secret)
    }

    fn verify(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(false, inbound, secrets)
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
        event_id(false, inbound.headers)
    }
}

impl Provider for Svix {
    fn label(&self) -> &'static str {
        "Svix"
    }

    fn validate_secret(&self, secret: &[u8]) -> Result<(), &'static str> {
        validate_secret(secret)
    }

    fn verify(
        &self,
        _config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(true, inbound, secrets)
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
        event_id(true, inbound.headers)
    }
}

/// A secret must decode to a key, or it could never verify.
fn validate_secret(secret: &[u8]) -> Result<(), &'static str> {
    non_empty_secret(secret)?;
    decode_secret(secret)
        .map(|_| ())
        .ok_or("signing_secret must be `whsec_` followed by base64")
}

/// The HMAC key of a secret as the user entered it: base64 after an
/// optional `whsec_` prefix. `None` when that is not valid base64 or is
/// empty (such a secret can match nothing).
fn decode_secret(secret: &[u8]) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    BASE64_LENIENT
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
}

/// Verifies a Standard Webhooks (or, with `svix`, a Svix) request against
/// any of `secrets`.
fn verify(svix: bool, inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|secret| decode_secret(secret))
        .collect();
    if keys.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let set = header_set(svix, inbound.headers);
    let id = required_header(inbound.headers, set.id)?;
    let timestamp = required_header(inbound.headers, set.timestamp)?;
    let signatures = required_header(inbound.headers, set.signature)?;

    let ts: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::MalformedHeader(set.timestamp.into()))?;
    if outside_window(inbound.now_unix, ts, TOLERANCE_SECS) {
        return Err(VerifyError::TimestampOutsideTolerance);
    }

    // The libraries sign the integer they parsed, not the header's spelling.
    let prefix = format!("{id}.{ts}.");
    let candidates: Vec<&str> = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .map(|(_, signature)| signature)
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoMatchingSignature);
    }
    let matched = keys
        .iter()
        .filter_map(|key| hmac_sha256(key, &[prefix.as_bytes(), inbound.body]))
        .map(|mac| BASE64_LENIENT.encode(mac))
        .any(|expected| ct_eq_any(expected.as_bytes(), &candidates));
    matched_or_refused(matched)
}

/// Body `type` (the Standard Webhooks payload convention).
fn event_type(json: Option<&Value>) -> String {
    body_event_type(json, "type")
}

/// The message id header of the verified set (`webhook-id`; for Svix
/// `svix-id`, else `webhook-id`): the sender keeps it across retries.
fn event_id(svix: bool, headers: &HeaderMap) -> Option<String> {
    let set = header_set(svix, headers);
    header_text(headers, set.id)
        // svix-id present but the svix set incomplete: still the best id.
        .or_else(|| svix.then(|| header_text(headers, SVIX.id)).flatten())
        .and_then(cap_event_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // ✅ Vector from PROVIDERS.md (standard-webhooks javascript tests).
    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const TS_STR: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(prefix: &str, id: Option<&str>, ts: Option<&str>, sig: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [("id", id), ("timestamp", ts), ("signature", sig)] {
            if let Some(value) = value {
                let name = http::HeaderName::try_from(format!("{prefix}-{name}"))
                    .expect("test header name");
                h.insert(name, HeaderValue::from_str(value).expect("test header"));
            }
        }
        h
    }

    fn check_h(
        h: &HeaderMap,
        svix: bool,
        body: &[u8],
        now: i64,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(
            svix,
            &Inbound {
                headers: h,
                body,
                now_unix: now,
                url: "",
            },
            secrets,
        )
    }

    fn check_sig(sig: &str) -> Result<(), VerifyError> {
        let h = headers("webhook", Some(ID), Some(TS_STR), Some(sig));
        check_h(&h, false, BODY, TS, &[SECRET])
    }

    fn good() -> HeaderMap {
        headers("webhook", Some(ID), Some(TS_STR), Some(SIG))
    }

    #[test]
    fn official_vector_verifies() {
        assert!(check_h(&good(), false, BODY, TS, &[SECRET]).is_ok());
        assert!(check_h(&good(), false, BODY, TS + 300, &[SECRET]).is_ok());
        assert!(check_h(&good(), false, BODY, TS - 300, &[SECRET]).is_ok());
    }

    #[test]
    fn secret_without_prefix_is_accepted() {
        assert!(check_h(
            &good(),
            false,
            BODY,
            TS,
            &[b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
        )
        .is_ok());
    }

    #[test]
    fn secret_is_decoded_not_used_raw() {
        // A source whose secret does not decode can match nothing.
        assert!(matches!(
            check_h(&good(), false, BODY, TS, &[b"whsec_!!not base64!!"]),
            Err(VerifyError::NoSecret)
        ));
        assert!(matches!(
            check_h(&good(), false, BODY, TS, &[b"whsec_"]),
            Err(VerifyError::NoSecret)
        ));
        assert!(matches!(
            check_h(&good(), false, BODY, TS, &[]),
            Err(VerifyError::NoSecret)
        ));
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        for now in [TS + 301, TS - 301, i64::MIN, i64::MAX] {
            assert!(matches!(
                check_h(&good(), false, BODY, now, &[SECRET]),
                Err(VerifyError::TimestampOutsideTolerance)
            ));
        }
    }

    #[test]
    fn tampered_body_id_ts_and_wrong_secret_are_rejected() {
        assert!(matches!(
            check_h(&good(), false, br#"{"test": 2432232315}"#, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
        let h = headers("webhook", Some("msg_other"), Some(TS_STR), Some(SIG));
        assert!(check_h(&h, false, BODY, TS, &[SECRET]).is_err());
        let h = headers("webhook", Some(ID), Some("1614265331"), Some(SIG));
        assert!(check_h(&h, false, BODY, TS, &[SECRET]).is_err());
        assert!(matches!(
            check_h(
                &good(),
                false,
                BODY,
                TS,
                &[b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
            ),
            Err(VerifyError::NoMatchingSignature)
        ));
    }

    #[test]
    fn rotation_second_secret_matches() {
        assert!(check_h(
            &good(),
            false,
            BODY,
            TS,
            &[b"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", SECRET]
        )
        .is_ok());
        // An undecodable secret is skipped, not fatal.
        assert!(check_h(&good(), false, BODY, TS, &[b"whsec_***", SECRET]).is_ok());
    }

    #[test]
    fn several_signatures_any_v1_may_match() {
        let other = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(check_sig(&format!("{other} {SIG}")).is_ok());
        assert!(check_sig(&format!("{SIG} {other}")).is_ok());
        assert!(check_sig(&format!("v1a,xyz {SIG} v2,abc")).is_ok());
        // Only v1 counts.
        let sig_only = SIG.trim_start_matches("v1,");
        assert!(matches!(
            check_sig(&format!("v2,{sig_only}")),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(check_sig(sig_only).is_err());
        // Split on the first comma: a trailing `,x` makes the value differ.
        assert!(check_sig(&format!("{SIG},x")).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        for h in [
            headers("webhook", None, Some(TS_STR), Some(SIG)),
            headers("webhook", Some(ID), None, Some(SIG)),
            headers("webhook", Some(ID), Some(TS_STR), None),
            headers("webhook", Some(""), Some(TS_STR), Some(SIG)),
            headers("webhook", Some(ID), Some(""), Some(SIG)),
            headers("webhook", Some(ID), Some(TS_STR), Some("")),
        ] {
            assert!(matches!(
                check_h(&h, false, BODY, TS, &[SECRET]),
                Err(VerifyError::MissingHeader(_))
            ));
        }
        for ts in ["abc", "1614265330.5", "99999999999999999999999", ",,,"] {
            let h = headers("webhook", Some(ID), Some(ts), Some(SIG));
            assert!(matches!(
                check_h(&h, false, BODY, TS, &[SECRET]),
                Err(VerifyError::MalformedHeader(_))
            ));
        }
        let garbage = [
            "garbage".to_owned(),
            "v1,".to_owned(),
            ",".to_owned(),
            ",".repeat(5000),
            " ".repeat(10),
            "v1,v1,v1,v1".to_owned(),
        ];
        for sig in &garbage {
            assert!(check_sig(sig).is_err());
        }
        let huge = format!("{SIG} {}", "v1,AAAA ".repeat(100 * 1024 / 8));
        assert!(matches!(
            check_sig(&huge),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn svix_headers_verify_and_fall_back_to_webhook_headers() {
        let svix = headers("svix", Some(ID), Some(TS_STR), Some(SIG));
        assert!(check_h(&svix, true, BODY, TS, &[SECRET]).is_ok());
        // Standard Webhooks does not read svix-* headers.
        assert!(matches!(
            check_h(&svix, false, BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        // Svix falls back to webhook-* headers.
        assert!(check_h(&good(), true, BODY, TS, &[SECRET]).is_ok());
        // An incomplete svix set falls back as a whole.
        let mut mixed = good();
        mixed.insert("svix-id", HeaderValue::from_static("msg_other"));
        assert!(check_h(&mixed, true, BODY, TS, &[SECRET]).is_ok());
        assert_eq!(event_id(true, &mixed).as_deref(), Some(ID));
        // A complete svix set wins even if webhook-* headers are present.
        let mut both = svix.clone();
        both.insert("webhook-id", HeaderValue::from_static("msg_other"));
        assert!(check_h(&both, true, BODY, TS, &[SECRET]).is_ok());
        assert_eq!(event_id(true, &both).as_deref(), Some(ID));
        // Tampered svix request.
        let bad = headers("svix", Some(ID), Some(TS_STR), Some("v1,AAAA"));
        assert!(check_h(&bad, true, BODY, TS, &[SECRET]).is_err());
    }

    #[test]
    fn event_type_and_id() {
        let json = serde_json::json!({"type": "invoice.paid"});
        assert_eq!(event_type(Some(&json)), "invoice.paid");
        assert_eq!(event_type(None), "unknown");
        assert_eq!(event_id(false, &good()).as_deref(), Some(ID));
        let svix_only = headers("svix", Some("msg_svix"), None, None);
        assert_eq!(event_id(true, &svix_only).as_deref(), Some("msg_svix"));
        assert_eq!(event_id(false, &svix_only), None);
        assert_eq!(event_id(true, &HeaderMap::new()), None);
    }

    #[test]
    fn decode_secret_accepts_padded_and_unpadded() {
        assert_eq!(decode_secret(b"whsec_AAAA"), Some(vec![0, 0, 0]));
        assert_eq!(decode_secret(b"whsec_AA=="), Some(vec![0]));
        assert_eq!(decode_secret(b"whsec_AA"), Some(vec![0]));
        assert_eq!(decode_secret(b"AA=="), Some(vec![0]));
        assert_eq!(decode_secret(b"whsec_"), None);
        assert_eq!(decode_secret(b"whsec_@@"), None);
    }
}
