//! Helpers shared by the provider modules: HMAC, constant-time comparison,
//! careful header reads, and bounded extraction of event types and ids.
//!
//! Everything here treats the request as hostile: no indexing that can
//! panic, no unwrap on input, and every header read is bounded.

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::VerifyError;

/// Longest signature-bearing header we look at. A legitimate header holds a
/// handful of signatures (well under 1 KiB); anything longer is refused
/// before any work is done, so a huge header costs nothing.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 8 * 1024;

/// Longest event type or provider event id we keep (bytes). An event type
/// longer than this is truncated (at a character boundary): it only drives
/// filters and display. An event id longer than this is dropped rather than
/// truncated, because two distinct ids that share a prefix must never be
/// taken for duplicates (that would silently lose an event); the event is
/// then stored without de-duplication.
pub const MAX_EVENT_FIELD_BYTES: usize = 256;

/// What `event_type` answers when the provider gives no usable type.
pub(crate) const UNKNOWN_EVENT_TYPE: &str = "unknown";

/// Standard base64 that accepts the value with or without `=` padding, as
/// the official SDKs' decoders do in practice.
pub(crate) const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// URL-safe base64, padding optional; some generic senders use it.
pub(crate) const BASE64_URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// HMAC-SHA256 of the concatenation of `parts` under `key`, so callers can
/// sign `"{t}." + body` without copying the body. `None` only if the MAC
/// refuses the key, which HMAC never does (any key length is valid); callers
/// treat it as "this secret does not match".
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// HMAC-SHA1 of the concatenation of `parts` under `key` (Twilio's
/// scheme). `None` only if the MAC refuses the key, which HMAC never does.
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 20]> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

/// Constant-time equality, so a caller cannot learn a signature byte by
/// byte from response timing. Unequal lengths compare unequal (the length of
/// a signature is public anyway).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether `expected` equals any of the `candidates` a header carried
/// (several during a secret roll), each compared in constant time.
pub(crate) fn ct_eq_any(expected: &[u8], candidates: &[&str]) -> bool {
    candidates
        .iter()
        .any(|given| ct_eq(expected, given.as_bytes()))
}

/// `Ok` when a signature matched, else [`VerifyError::NoMatchingSignature`].
pub(crate) fn matched_or_refused(matched: bool) -> Result<(), VerifyError> {
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Whether a signed timestamp is more than `tolerance_secs` away from now,
/// in either direction. Computed in `i128`, so extreme timestamps cannot
/// overflow.
pub(crate) fn outside_window(now_unix: i64, timestamp: i64, tolerance_secs: i64) -> bool {
    (i128::from(now_unix) - i128::from(timestamp)).abs() > i128::from(tolerance_secs)
}

/// The default secret check of a verifying provider: an empty secret could
/// only ever be refused (see [`usable_secrets`]).
pub(crate) fn non_empty_secret(secret: &[u8]) -> Result<(), &'static str> {
    if secret.is_empty() {
        Err("signing_secret must not be empty")
    } else {
        Ok(())
    }
}

/// The secrets worth trying: empty ones are skipped, because an HMAC under
/// an empty key is forgeable by anyone. Errs when nothing is left, so a
/// misconfigured source fails closed with a clear reason.
pub(crate) fn usable_secrets<'s>(
    secrets: &'s [&'s [u8]],
) -> Result<impl Iterator<Item = &'s [u8]> + 's, VerifyError> {
    if secrets.iter().all(|s| s.is_empty()) {
        return Err(VerifyError::NoSecret);
    }
    Ok(secrets.iter().copied().filter(|s| !s.is_empty()))
}

/// The first value of a signature-related header, as text.
///
/// Absent or blank → `MissingHeader`; not visible ASCII or longer than
/// [`MAX_SIGNATURE_HEADER_BYTES`] → `MalformedHeader`. Header names are
/// matched case-insensitively by `HeaderMap`. Only the first value is used
/// when a header is repeated, as the SDKs do.
pub(crate) fn required_header(
    headers: &HeaderMap,
    name: impl Into<Cow<'static, str>>,
) -> Result<&str, VerifyError> {
    let name = name.into();
    let Some(value) = headers.get(name.as_ref()) else {
        return Err(VerifyError::MissingHeader(name));
    };
    if value.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(VerifyError::MalformedHeader(name));
    }
    let Ok(text) = value.to_str() else {
        return Err(VerifyError::MalformedHeader(name));
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(VerifyError::MissingHeader(name));
    }
    Ok(text)
}

/// Whether a header is present with a non-blank value; used to choose
/// between alternative header sets (svix-* vs webhook-*).
pub(crate) fn has_header(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
}

/// A descriptive header's value (event type, delivery id), trimmed; `None`
/// when absent, blank or not visible ASCII.
pub(crate) fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    (!text.is_empty()).then_some(text)
}

/// A JSON value usable as an event type or id: strings as they are,
/// numbers in their JSON spelling (some providers use numeric types).
pub(crate) fn json_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// A top-level field of the JSON body, as text.
pub(crate) fn body_field<'j>(json: Option<&'j Value>, key: &str) -> Option<Cow<'j, str>> {
    json_text(json?.get(key)?)
}

/// The event type to store: trimmed, blank → `None`, capped at
/// [`MAX_EVENT_FIELD_BYTES`] by truncation at a character boundary.
pub(crate) fn cap_event_type(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut end = text.len().min(MAX_EVENT_FIELD_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).map(str::to_owned)
}

/// The event type, or `"unknown"` when the provider gave none.
pub(crate) fn event_type_or_unknown(text: Option<&str>) -> String {
    text.and_then(cap_event_type)
        .unwrap_or_else(|| UNKNOWN_EVENT_TYPE.to_owned())
}

/// The event type from a top-level body field, or `"unknown"`.
pub(crate) fn body_event_type(json: Option<&Value>, key: &str) -> String {
    event_type_or_unknown(body_field(json, key).as_deref())
}

/// The provider event id from a top-level body field.
pub(crate) fn body_event_id(json: Option<&Value>, key: &str) -> Option<String> {
    body_field(json, key).and_then(|id| cap_event_id(&id))
}

/// The provider event id from a header.
pub(crate) fn header_event_id(headers: &HeaderMap, name: &str) -> Option<String> {
    header_text(headers, name).and_then(cap_event_id)
}

/// The provider event id to de-duplicate on: trimmed, blank → `None`, and
/// longer than [`MAX_EVENT_FIELD_BYTES`] → `None` (never truncated, see the
/// constant).
pub(crate) fn cap_event_id(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text.len() <= MAX_EVENT_FIELD_BYTES).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 (key "Jefe"), an independent vector.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            mac.map(hex::encode).as_deref(),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn hmac_sha1_matches_rfc2202_case_2() {
        // RFC 2202 test case 2 (key "Jefe"), an independent vector.
        let mac = hmac_sha1(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            mac.map(hex::encode).as_deref(),
            Some("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
    }

    #[test]
    fn ct_eq_handles_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn usable_secrets_skips_empty_and_fails_closed() {
        assert!(matches!(usable_secrets(&[]), Err(VerifyError::NoSecret)));
        assert!(matches!(
            usable_secrets(&[b"".as_slice()]),
            Err(VerifyError::NoSecret)
        ));
        let secrets: [&[u8]; 2] = [b"", b"k"];
        let left: Vec<&[u8]> = usable_secrets(&secrets).into_iter().flatten().collect();
        assert_eq!(left, vec![b"k".as_slice()]);
    }

    #[test]
    fn required_header_is_case_insensitive_and_strict() {
        let mut h = HeaderMap::new();
        h.insert("x-sig", HeaderValue::from_static("abc"));
        h.insert("x-blank", HeaderValue::from_static("   "));
        h.insert(
            "x-bin",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap_or(HeaderValue::from_static("")),
        );
        h.insert(
            "x-huge",
            HeaderValue::from_str(&"a".repeat(MAX_SIGNATURE_HEADER_BYTES + 1))
                .unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(required_header(&h, "X-Sig").ok(), Some("abc"));
        assert!(matches!(
            required_header(&h, "x-none"),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            required_header(&h, "x-blank"),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            required_header(&h, "x-bin"),
            Err(VerifyError::MalformedHeader(_))
        ));
        assert!(matches!(
            required_header(&h, "x-huge"),
            Err(VerifyError::MalformedHeader(_))
        ));
        // A name that is not a valid header name is simply absent.
        assert!(matches!(
            required_header(&h, String::from("bad name")),
            Err(VerifyError::MissingHeader(_))
        ));
    }

    #[test]
    fn event_type_is_truncated_at_a_char_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let capped = cap_event_type(&long).unwrap_or_default();
        assert!(capped.len() <= MAX_EVENT_FIELD_BYTES);
        assert_eq!(capped.len(), MAX_EVENT_FIELD_BYTES);
        assert!(long.starts_with(&capped));
        assert_eq!(cap_event_type("  "), None);
        assert_eq!(event_type_or_unknown(None), "unknown");
        assert_eq!(event_type_or_unknown(Some(" ")), "unknown");
        assert_eq!(event_type_or_unknown(Some("a.b")), "a.b");
    }

    #[test]
    fn long_event_ids_are_dropped_not_truncated() {
        let at_cap = "a".repeat(MAX_EVENT_FIELD_BYTES);
        assert_eq!(cap_event_id(&at_cap), Some(at_cap.clone()));
        assert_eq!(cap_event_id(&format!("{at_cap}b")), None);
        assert_eq!(cap_event_id(""), None);
    }

    #[test]
    fn json_text_accepts_strings_and_numbers_only() {
        let v: Value = serde_json::json!({"s": "x", "n": 1, "o": {}, "b": true});
        assert_eq!(body_field(Some(&v), "s").as_deref(), Some("x"));
        assert_eq!(body_field(Some(&v), "n").as_deref(), Some("1"));
        assert_eq!(body_field(Some(&v), "o"), None);
        assert_eq!(body_field(Some(&v), "b"), None);
        assert_eq!(body_field(None, "s"), None);
    }
}

/// Shared by the providers' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// A header map holding `name: value`, or empty when `value` is `None`.
    pub(crate) fn one_header(name: &'static str, value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("test header"),
            );
        }
        headers
    }
}
