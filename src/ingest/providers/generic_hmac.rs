//! Generic HMAC: for senders without a dedicated provider. HMAC-SHA256 of
//! the raw body, carried in a configurable header, hex (either case) or
//! base64 (standard or URL-safe, padding optional), after an optional
//! prefix such as `sha256=` (matched ASCII case-insensitively). No
//! timestamp, so no tolerance window; the decoded bytes are compared in
//! constant time.

use std::borrow::Cow;

use http::HeaderMap;
use serde_json::Value;

use super::common::{
    cap_event_id, ct_eq, event_type_or_unknown, header_text, hmac_sha256, json_text,
    matched_or_refused, required_header, usable_secrets, BASE64_LENIENT, BASE64_URL_LENIENT,
    MAX_EVENT_FIELD_BYTES,
};
use super::{GenericHmacConfig, Inbound, Provider, SignatureEncoding, VerifyError};
use base64::Engine as _;

/// The generic scheme, configured per source by a [`GenericHmacConfig`].
pub(crate) struct GenericHmac;

impl Provider for GenericHmac {
    fn label(&self) -> &'static str {
        "Generic HMAC"
    }

    /// The one provider that needs a configuration, so a source without
    /// one could never verify.
    fn validate_config(&self, config: Option<&GenericHmacConfig>) -> Result<(), Cow<'static, str>> {
        match config {
            None => Err("is required for provider generic_hmac".into()),
            Some(config) => config.validate().map_err(Cow::Owned),
        }
    }

    fn verify(
        &self,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        verify(config, inbound, secrets)
    }

    fn event_type(
        &self,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> String {
        event_type(config, inbound.headers, json)
    }

    fn event_id(
        &self,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> Option<String> {
        event_id(config, inbound.headers, json)
    }
}

impl GenericHmacConfig {
    /// Checks the configuration when a source is created or updated, so a
    /// config that can never verify or extract anything is refused with 422
    /// up front. The message is safe to return.
    pub fn validate(&self) -> Result<(), String> {
        fn header_ok(field: &str, name: &str) -> Result<(), String> {
            if name.len() > MAX_EVENT_FIELD_BYTES || http::HeaderName::try_from(name).is_err() {
                return Err(format!("{field} must be a valid HTTP header name"));
            }
            Ok(())
        }
        fn pointer_ok(field: &str, pointer: &str) -> Result<(), String> {
            // Counted in characters, as the API documents its lengths.
            if pointer.chars().count() > MAX_EVENT_FIELD_BYTES || !pointer.starts_with('/') {
                return Err(format!(
                    "{field} must be a JSON pointer starting with `/`, e.g. `/type`"
                ));
            }
            Ok(())
        }
        header_ok("signature_header", &self.signature_header)?;
        if let Some(prefix) = &self.prefix {
            if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("prefix must be at most 64 visible ASCII characters".to_owned());
            }
        }
        if let Some(name) = &self.event_type_header {
            header_ok("event_type_header", name)?;
        }
        if let Some(name) = &self.event_id_header {
            header_ok("event_id_header", name)?;
        }
        if let Some(pointer) = &self.event_type_pointer {
            pointer_ok("event_type_pointer", pointer)?;
        }
        if let Some(pointer) = &self.event_id_pointer {
            pointer_ok("event_id_pointer", pointer)?;
        }
        Ok(())
    }
}

/// `text` without `prefix`, compared ASCII case-insensitively; `None` when
/// `text` does not start with it.
fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// The signature bytes a header value encodes, per the source's config.
fn decode_signature(encoded: &str, encoding: SignatureEncoding) -> Option<Vec<u8>> {
    match encoding {
        SignatureEncoding::Hex => hex::decode(encoded).ok(),
        SignatureEncoding::Base64 => BASE64_LENIENT
            .decode(encoded)
            .or_else(|_| BASE64_URL_LENIENT.decode(encoded))
            .ok(),
    }
}

/// Verifies a request against any of `secrets` as `config` describes. A
/// `generic_hmac` source without a config fails closed.
fn verify(
    config: Option<&GenericHmacConfig>,
    inbound: &Inbound<'_>,
    secrets: &[&[u8]],
) -> Result<(), VerifyError> {
    let config = config.ok_or(VerifyError::MissingConfig)?;
    let secrets = usable_secrets(secrets)?;
    let header = config.signature_header.as_str();
    let malformed = || VerifyError::MalformedHeader(header.to_owned().into());
    let value = required_header(inbound.headers, header.to_owned())?;
    let encoded = match config.prefix.as_deref().filter(|p| !p.is_empty()) {
        Some(prefix) => strip_prefix_ignore_case(value, prefix).ok_or_else(malformed)?,
        None => value,
    }
    .trim();
    if encoded.is_empty() {
        return Err(malformed());
    }
    let given = decode_signature(encoded, config.encoding).ok_or_else(malformed)?;
    let matched = secrets
        .filter_map(|secret| hmac_sha256(secret, &[inbound.body]))
        .any(|mac| ct_eq(&mac, &given));
    matched_or_refused(matched)
}

/// A JSON pointer's target, as text.
fn pointer_text(json: Option<&Value>, pointer: Option<&str>) -> Option<String> {
    json_text(json?.pointer(pointer?)?).map(|t| t.into_owned())
}

/// The event type: the configured JSON pointer, else the configured header,
/// else `unknown`.
fn event_type(
    config: Option<&GenericHmacConfig>,
    headers: &HeaderMap,
    json: Option<&Value>,
) -> String {
    let Some(config) = config else {
        return event_type_or_unknown(None);
    };
    let from_body = pointer_text(json, config.event_type_pointer.as_deref());
    let text = from_body.as_deref().or_else(|| {
        config
            .event_type_header
            .as_deref()
            .and_then(|name| header_text(headers, name))
    });
    event_type_or_unknown(text)
}

/// The provider event id: the configured header, else the configured JSON
/// pointer, else none (no de-duplication).
fn event_id(
    config: Option<&GenericHmacConfig>,
    headers: &HeaderMap,
    json: Option<&Value>,
) -> Option<String> {
    let config = config?;
    config
        .event_id_header
        .as_deref()
        .and_then(|name| header_text(headers, name))
        .map(str::to_owned)
        .or_else(|| pointer_text(json, config.event_id_pointer.as_deref()))
        .and_then(|id| cap_event_id(&id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use hmac::{Hmac, Mac};
    use http::HeaderValue;
    use sha2::Sha256;

    const SECRET: &[u8] = b"krafter-generic-secret";
    const BODY: &[u8] = br#"{"type":"order.created","id":"ord_1"}"#;
    /// `printf '%s' '{"type":"order.created","id":"ord_1"}' |
    ///  openssl dgst -sha256 -hmac 'krafter-generic-secret'`
    const OPENSSL_HEX: &str = "f73cfc871b1c1dbf15763ca382760ae02c53ca98c6b0c29252b0b6d66c10eea4";
    /// Same, `-binary | base64`.
    const OPENSSL_B64: &str = "9zz8hxscHb8VdjyjgnYK4CxTypjGsMKSUrC21mwQ7qQ=";

    /// An independent computation with the `hmac` crate directly.
    fn reference_mac(key: &[u8], body: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    fn config(encoding: SignatureEncoding, prefix: Option<&str>) -> GenericHmacConfig {
        GenericHmacConfig {
            signature_header: "X-Signature".to_owned(),
            encoding,
            prefix: prefix.map(str::to_owned),
            event_type_pointer: None,
            event_type_header: None,
            event_id_header: None,
            event_id_pointer: None,
        }
    }

    fn check(
        config: &GenericHmacConfig,
        value: Option<&str>,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = one_header("x-signature", value);
        verify(
            Some(config),
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
    fn reference_computation_matches_openssl() {
        let mac = reference_mac(SECRET, BODY);
        assert_eq!(hex::encode(&mac), OPENSSL_HEX);
        assert_eq!(STANDARD.encode(&mac), OPENSSL_B64);
    }

    #[test]
    fn hex_verifies_in_either_case_with_and_without_prefix() {
        let hex_cfg = config(SignatureEncoding::Hex, None);
        assert!(check(&hex_cfg, Some(OPENSSL_HEX), BODY, &[SECRET]).is_ok());
        let upper = OPENSSL_HEX.to_uppercase();
        assert!(check(&hex_cfg, Some(&upper), BODY, &[SECRET]).is_ok());

        let prefixed = config(SignatureEncoding::Hex, Some("sha256="));
        let value = format!("sha256={OPENSSL_HEX}");
        assert!(check(&prefixed, Some(&value), BODY, &[SECRET]).is_ok());
        let value = format!("SHA256={OPENSSL_HEX}");
        assert!(check(&prefixed, Some(&value), BODY, &[SECRET]).is_ok());
        // Prefix required when configured.
        assert!(matches!(
            check(&prefixed, Some(OPENSSL_HEX), BODY, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
        // An empty prefix means no prefix.
        let empty_prefix = config(SignatureEncoding::Hex, Some(""));
        assert!(check(&empty_prefix, Some(OPENSSL_HEX), BODY, &[SECRET]).is_ok());
    }

    #[test]
    fn base64_verifies_standard_and_url_safe() {
        let cfg = config(SignatureEncoding::Base64, None);
        assert!(check(&cfg, Some(OPENSSL_B64), BODY, &[SECRET]).is_ok());
        let url = URL_SAFE_NO_PAD.encode(reference_mac(SECRET, BODY));
        assert!(check(&cfg, Some(&url), BODY, &[SECRET]).is_ok());
        // Hex where base64 is configured does not verify.
        assert!(check(&cfg, Some(OPENSSL_HEX), BODY, &[SECRET]).is_err());
    }

    #[test]
    fn other_bodies_match_the_independent_computation() {
        let cfg = config(SignatureEncoding::Hex, None);
        let long = [b'a'; 10_000];
        let bodies: [&[u8]; 4] = [b"", b"x", &[0u8, 255, 10, 13], &long];
        for body in bodies {
            let sig = hex::encode(reference_mac(SECRET, body));
            assert!(check(&cfg, Some(&sig), body, &[SECRET]).is_ok());
        }
    }

    #[test]
    fn tampered_body_wrong_secret_and_rotation() {
        let cfg = config(SignatureEncoding::Hex, None);
        assert!(matches!(
            check(
                &cfg,
                Some(OPENSSL_HEX),
                b"{\"type\":\"order.created\"}",
                &[SECRET]
            ),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(check(&cfg, Some(OPENSSL_HEX), BODY, &[b"other"]).is_err());
        assert!(check(&cfg, Some(OPENSSL_HEX), BODY, &[b"other", SECRET]).is_ok());
        assert!(matches!(
            check(&cfg, Some(OPENSSL_HEX), BODY, &[]),
            Err(VerifyError::NoSecret)
        ));
        // Truncated signature.
        assert!(check(&cfg, Some(&OPENSSL_HEX[..62]), BODY, &[SECRET]).is_err());
    }

    #[test]
    fn missing_config_fails_closed() {
        let h = HeaderMap::new();
        let inbound = Inbound {
            headers: &h,
            body: BODY,
            now_unix: 0,
            url: "",
        };
        assert!(matches!(
            verify(None, &inbound, &[SECRET]),
            Err(VerifyError::MissingConfig)
        ));
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        let prefixed = config(SignatureEncoding::Hex, Some("sha256="));
        let b64 = config(SignatureEncoding::Base64, None);
        assert!(matches!(
            check(&prefixed, None, BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(&prefixed, Some(""), BODY, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        let garbage = [
            "sha256=".to_owned(),
            "sha256=zz".to_owned(),
            "sha256=abc".to_owned(),
            "sha2".to_owned(),
            "é".to_owned(),
            format!("sha256={}", ",".repeat(3000)),
        ];
        for value in &garbage {
            assert!(check(&prefixed, Some(value), BODY, &[SECRET]).is_err());
            assert!(check(&b64, Some(value), BODY, &[SECRET]).is_err());
        }
        let huge = format!("sha256={}", "a".repeat(100 * 1024));
        assert!(matches!(
            check(&prefixed, Some(&huge), BODY, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn event_type_and_id_follow_the_config() {
        let json: Value = serde_json::from_slice(BODY).unwrap_or_default();
        let mut h = HeaderMap::new();
        h.insert("x-event", HeaderValue::from_static("from.header"));
        h.insert("x-delivery", HeaderValue::from_static("dlv_9"));

        let mut cfg = config(SignatureEncoding::Hex, None);
        assert_eq!(event_type(Some(&cfg), &h, Some(&json)), "unknown");
        assert_eq!(event_id(Some(&cfg), &h, Some(&json)), None);

        cfg.event_type_header = Some("X-Event".to_owned());
        cfg.event_id_pointer = Some("/id".to_owned());
        assert_eq!(event_type(Some(&cfg), &h, Some(&json)), "from.header");
        assert_eq!(
            event_id(Some(&cfg), &h, Some(&json)).as_deref(),
            Some("ord_1")
        );

        cfg.event_type_pointer = Some("/type".to_owned());
        cfg.event_id_header = Some("X-Delivery".to_owned());
        assert_eq!(event_type(Some(&cfg), &h, Some(&json)), "order.created");
        assert_eq!(
            event_id(Some(&cfg), &h, Some(&json)).as_deref(),
            Some("dlv_9")
        );

        // Pointer misses fall back to the header; nothing gives unknown/None.
        cfg.event_type_pointer = Some("/missing".to_owned());
        assert_eq!(event_type(Some(&cfg), &h, None), "from.header");
        let empty = HeaderMap::new();
        assert_eq!(event_type(Some(&cfg), &empty, None), "unknown");
        cfg.event_id_header = Some("x-none".to_owned());
        assert_eq!(event_id(Some(&cfg), &empty, None), None);
        assert_eq!(event_type(None, &h, Some(&json)), "unknown");
        assert_eq!(event_id(None, &h, Some(&json)), None);
    }
}
