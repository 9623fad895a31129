//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body.
//!
//! As `@octokit/webhooks-methods` verifies: the whole header string is
//! compared (constant time) with `"sha256=" + lowercase hex`, so uppercase
//! hex or another prefix is refused. One signature per header; GitHub has
//! no timestamp, so no tolerance window.

use http::HeaderMap;
use serde_json::Value;

use super::common::{
    ct_eq, event_type_or_unknown, header_event_id, header_text, hmac_sha256, matched_or_refused,
    required_header, usable_secrets,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};

/// The header GitHub signs with (SHA-256; the SHA-1 `X-Hub-Signature` is
/// legacy and not accepted).
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// GitHub's scheme, as the module documentation describes.
pub(crate) struct Github;

impl Provider for Github {
    fn label(&self) -> &'static str {
        "GitHub"
    }

    fn setup_hint(&self) -> &'static str {
        "In GitHub: Settings → Webhooks → Add webhook, content type application/json, and paste this URL."
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

/// Verifies a GitHub request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[inbound.body]))
        .any(|mac| {
            let expected = format!("sha256={}", hex::encode(mac));
            ct_eq(expected.as_bytes(), given.as_bytes())
        });
    matched_or_refused(matched)
}

/// Header `X-GitHub-Event` (e.g. `push`, `ping`).
fn event_type(headers: &HeaderMap) -> String {
    event_type_or_unknown(header_text(headers, "x-github-event"))
}

/// Header `X-GitHub-Delivery`: kept by manual redeliveries, so dedup
/// catches them.
fn event_id(headers: &HeaderMap) -> Option<String> {
    header_event_id(headers, "x-github-delivery")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use http::HeaderValue;

    // ✅ Vectors from PROVIDERS.md (@octokit/webhooks-methods).
    const SECRET_1: &[u8] = b"It's a Secret to Everybody";
    const BODY_1: &[u8] = b"Hello, World!";
    const SIG_1: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const SECRET_2: &[u8] = b"mysecret";
    const BODY_2: &[u8] = b"{\n  \"foo\": \"bar\"\n}\n";
    const SIG_2: &str = "sha256=e3eccac34c43c7dc1cbb905488b1b81347fcc700a7b025697a9d07862256023f";

    fn check(header: Option<&str>, body: &[u8], secrets: &[&[u8]]) -> Result<(), VerifyError> {
        let h = one_header("x-hub-signature-256", header);
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

    #[test]
    fn official_vectors_verify() {
        assert!(check(Some(SIG_1), BODY_1, &[SECRET_1]).is_ok());
        assert!(check(Some(SIG_2), BODY_2, &[SECRET_2]).is_ok());
    }

    #[test]
    fn no_time_window() {
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", HeaderValue::from_static(SIG_1));
        let inbound = Inbound {
            headers: &h,
            body: BODY_1,
            now_unix: i64::MAX,
            url: "",
        };
        assert!(verify(&inbound, &[SECRET_1]).is_ok());
    }

    #[test]
    fn tampered_body_is_rejected() {
        assert!(matches!(
            check(Some(SIG_1), b"Hello, World?", &[SECRET_1]),
            Err(VerifyError::NoMatchingSignature)
        ));
        // Vectors are not interchangeable.
        assert!(check(Some(SIG_1), BODY_2, &[SECRET_1]).is_err());
    }

    #[test]
    fn wrong_secret_is_rejected() {
        assert!(check(Some(SIG_1), BODY_1, &[SECRET_2]).is_err());
    }

    #[test]
    fn rotation_second_secret_matches() {
        assert!(check(Some(SIG_2), BODY_2, &[SECRET_1, SECRET_2]).is_ok());
        assert!(check(Some(SIG_1), BODY_1, &[SECRET_1, SECRET_2]).is_ok());
    }

    #[test]
    fn uppercase_hex_is_rejected() {
        let upper = format!(
            "sha256={}",
            SIG_1.trim_start_matches("sha256=").to_uppercase()
        );
        assert!(matches!(
            check(Some(&upper), BODY_1, &[SECRET_1]),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(check(
            Some(&SIG_1.replace("sha256", "SHA256")),
            BODY_1,
            &[SECRET_1]
        )
        .is_err());
    }

    #[test]
    fn bare_hex_or_other_prefix_is_rejected() {
        let bare = SIG_1.trim_start_matches("sha256=");
        assert!(check(Some(bare), BODY_1, &[SECRET_1]).is_err());
        assert!(check(Some(&format!("sha1={bare}")), BODY_1, &[SECRET_1]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, BODY_1, &[SECRET_1]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(""), BODY_1, &[SECRET_1]),
            Err(VerifyError::MissingHeader(_))
        ));
        for garbage in [
            "sha256=",
            "sha256",
            "=",
            "garbage",
            ",,,,,,,,,",
            "sha256=zz",
        ] {
            assert!(check(Some(garbage), BODY_1, &[SECRET_1]).is_err());
        }
        let many_commas = format!("{SIG_1}{}", ",".repeat(1000));
        assert!(check(Some(&many_commas), BODY_1, &[SECRET_1]).is_err());
        let huge = format!("{SIG_1}{}", "a".repeat(100 * 1024));
        assert!(matches!(
            check(Some(&huge), BODY_1, &[SECRET_1]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn no_secret_fails_closed() {
        assert!(matches!(
            check(Some(SIG_1), BODY_1, &[]),
            Err(VerifyError::NoSecret)
        ));
    }

    #[test]
    fn type_and_id_come_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("X-GitHub-Event", HeaderValue::from_static("push"));
        h.insert(
            "X-GitHub-Delivery",
            HeaderValue::from_static("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        );
        assert_eq!(event_type(&h), "push");
        assert_eq!(
            event_id(&h).as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        let empty = HeaderMap::new();
        assert_eq!(event_type(&empty), "unknown");
        assert_eq!(event_id(&empty), None);
    }
}
