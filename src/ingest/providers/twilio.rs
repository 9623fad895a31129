//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 under the auth token.
//!
//! As Twilio's `RequestValidator` (twilio-python, twilio-node) verifies:
//! - **form bodies** (`application/x-www-form-urlencoded`, Twilio's usual
//!   webhooks): the signed string is the full URL followed by every POST
//!   parameter, sorted by name, as `name + value` with no delimiters
//!   (several values of one name sorted, duplicates counted once), decoded
//!   from the form encoding;
//! - **other bodies** (JSON): the URL carries `bodySHA256=<hex>` in its
//!   query; the signature covers the URL alone, and the SHA-256 of the raw
//!   body must equal that lowercase hex. A URL with `bodySHA256` is always
//!   verified this way, whatever the `Content-Type`;
//! - the URL is tried both without a port and with one (the scheme's
//!   default when none is given), because Twilio signs either form;
//! - the header is compared (constant time) with the standard, padded
//!   base64 of the MAC. No timestamp, so no tolerance window.
//!
//! The URL is [`Inbound::url`]: Krafter's configured `server.public_url` +
//! `/in/<slug>` + the query string as received, never one rebuilt from
//! `Host` or `X-Forwarded-*`. It must be the URL entered in Twilio.
//!
//! For form bodies the signature binds the decoded parameters, not the
//! exact bytes (parameter order and spelling such as `%20` vs `+` are not
//! signed): that is Twilio's scheme. The stored body is still byte for byte
//! what arrived.
//!
//! Event type (Twilio sends none as such): a JSON body's `type`; otherwise
//! the form's `EventType` (Conversations, TaskRouter: e.g.
//! `onMessageAdded`, `task.created`), else `message.<MessageStatus>` or
//! `message.<SmsStatus>` (e.g. `message.delivered`, `message.received`),
//! else `call.<CallStatus>` (e.g. `call.completed`); else `twilio.request`.
//! No provider event id: a message's or call's SID is shared by all of its
//! status callbacks, so de-duplicating on it would drop distinct events.

use std::borrow::Cow;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::common::{
    body_field, ct_eq, event_type_or_unknown, hmac_sha1, matched_or_refused, required_header,
    usable_secrets, BASE64_LENIENT,
};
use super::{GenericHmacConfig, Inbound, Provider, VerifyError};
use base64::Engine as _;

/// The header Twilio signs with.
const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The query parameter carrying the hex SHA-256 of a non-form body.
const BODY_HASH_PARAM: &str = "bodySHA256";
/// The event type when the request says nothing about what happened.
const DEFAULT_EVENT_TYPE: &str = "twilio.request";

/// The query string of `url` (between `?` and any `#`), if any.
fn query(url: &str) -> Option<&str> {
    let (_, after) = url.split_once('?')?;
    Some(after.split_once('#').map_or(after, |(q, _)| q))
}

/// The first `bodySHA256` value in the URL's query, if the parameter is
/// there at all (even empty, which then matches no body).
fn body_hash_param(url: &str) -> Option<String> {
    url::form_urlencoded::parse(query(url)?.as_bytes())
        .find(|(name, _)| name == BODY_HASH_PARAM)
        .map(|(_, value)| value.into_owned())
}

/// `host[:port]` split into host and port; IPv6 literals keep their
/// brackets. An empty port (`host:`) counts as none.
fn split_port(host_port: &str) -> (&str, Option<&str>) {
    let Some(colon) = host_port.rfind(':') else {
        return (host_port, None);
    };
    let (Some(host), Some(port)) = (host_port.get(..colon), host_port.get(colon + 1..)) else {
        return (host_port, None);
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        // `[::1]` without a port: the last colon is inside the brackets.
        return (host_port, None);
    }
    (host, (!port.is_empty()).then_some(port))
}

/// The URL without a port and with one (the explicit port, else 443 for
/// https and 80 otherwise), as Twilio's validators try both. A URL that is
/// not `scheme://authority...` is returned as it is.
fn url_variants(url: &str) -> [Cow<'_, str>; 2] {
    let Some((scheme, rest)) = url.split_once("://") else {
        return [Cow::Borrowed(url), Cow::Borrowed(url)];
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = split_port(host_port);
    let port = port.unwrap_or(if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    });
    [
        Cow::Owned(format!("{scheme}://{userinfo}{host}{tail}")),
        Cow::Owned(format!("{scheme}://{userinfo}{host}:{port}{tail}")),
    ]
}

/// The form parameters as Twilio signs them: decoded, sorted by name then
/// value, each distinct pair once.
fn sorted_params(body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Twilio's scheme, as the module documentation describes.
pub(crate) struct Twilio;

impl Provider for Twilio {
    fn label(&self) -> &'static str {
        "Twilio"
    }

    fn setup_hint(&self) -> &'static str {
        "In Twilio: paste exactly this URL as the webhook or status callback (Twilio signs it, query string included), and use your auth token as the secret. server.public_url must be the address Twilio calls."
    }

    fn signs_url(&self) -> bool {
        true
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
        json: Option<&Value>,
    ) -> String {
        event_type(inbound, json)
    }

    // No provider event id: see the module documentation.
}

/// Verifies a Twilio request against any of `secrets` (auth tokens).
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;

    let params = match body_hash_param(inbound.url) {
        Some(expected) => {
            let actual = hex::encode(Sha256::digest(inbound.body));
            if !ct_eq(actual.as_bytes(), expected.as_bytes()) {
                return Err(VerifyError::NoMatchingSignature);
            }
            Vec::new()
        }
        None => sorted_params(inbound.body),
    };
    let urls = url_variants(inbound.url);
    let matched = secrets.into_iter().any(|secret| {
        urls.iter().any(|url| {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * params.len());
            parts.push(url.as_bytes());
            for (name, value) in &params {
                parts.push(name.as_bytes());
                parts.push(value.as_bytes());
            }
            hmac_sha1(secret, &parts)
                .is_some_and(|mac| ct_eq(BASE64_LENIENT.encode(mac).as_bytes(), given.as_bytes()))
        })
    });
    matched_or_refused(matched)
}

/// See the module documentation: JSON `type`, else form `EventType`,
/// `MessageStatus`/`SmsStatus` (`message.<status>`), `CallStatus`
/// (`call.<status>`), else `twilio.request`.
fn event_type(inbound: &Inbound<'_>, json: Option<&Value>) -> String {
    if let Some(json) = json {
        return match body_field(Some(json), "type") {
            Some(kind) if !kind.trim().is_empty() => event_type_or_unknown(Some(&kind)),
            _ => DEFAULT_EVENT_TYPE.to_owned(),
        };
    }
    let mut found: [Option<String>; 4] = [None, None, None, None];
    for (name, value) in url::form_urlencoded::parse(inbound.body) {
        let slot = match name.as_ref() {
            "EventType" => 0,
            "MessageStatus" => 1,
            "SmsStatus" => 2,
            "CallStatus" => 3,
            _ => continue,
        };
        let value = value.trim();
        if let Some(entry) = found.get_mut(slot) {
            if entry.is_none() && !value.is_empty() {
                *entry = Some(value.to_owned());
            }
        }
    }
    let [event, message, sms, call] = found;
    let derived = event
        .or_else(|| message.or(sms).map(|s| format!("message.{s}")))
        .or_else(|| call.map(|s| format!("call.{s}")));
    match derived {
        Some(kind) => event_type_or_unknown(Some(&kind)),
        None => DEFAULT_EVENT_TYPE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::providers::common::test_support::one_header;
    use hmac::{Hmac, Mac};
    use http::HeaderMap;
    use sha1::Sha1;

    // ✅ Vectors from PROVIDERS.md (twilio RequestValidator).
    const TOKEN: &[u8] = b"12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    /// CallSid, Caller, Digits, From, To of the vector, form-encoded.
    const FORM: &[u8] = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    const FORM_SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const JSON_BODY: &[u8] = br#"{"property": "value", "boolean": true}"#;
    const BODY_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const JSON_SIG: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";

    fn json_url() -> String {
        format!("{URL}&bodySHA256={BODY_HASH}")
    }

    fn check(
        header: Option<&str>,
        url: &str,
        body: &[u8],
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = one_header("x-twilio-signature", header);
        verify(
            &Inbound {
                headers: &h,
                body,
                now_unix: 0,
                url,
            },
            secrets,
        )
    }

    /// An independent signer (the `hmac` and `sha1` crates, not the code
    /// under test): `url` + already sorted `name + value` pairs.
    fn sign(token: &[u8], url: &str, params: &[(&str, &str)]) -> String {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(token).expect("any key length");
        mac.update(url.as_bytes());
        for (name, value) in params {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        BASE64_LENIENT.encode(mac.finalize().into_bytes())
    }

    const VECTOR_PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn official_form_vector_verifies() {
        assert!(check(Some(FORM_SIG), URL, FORM, &[TOKEN]).is_ok());
    }

    #[test]
    fn official_json_vector_verifies() {
        assert!(check(Some(JSON_SIG), &json_url(), JSON_BODY, &[TOKEN]).is_ok());
    }

    #[test]
    fn independent_signer_matches_the_vectors() {
        assert_eq!(sign(TOKEN, URL, &VECTOR_PARAMS), FORM_SIG);
        assert_eq!(sign(TOKEN, &json_url(), &[]), JSON_SIG);
        assert_eq!(hex::encode(Sha256::digest(JSON_BODY)), BODY_HASH);
    }

    #[test]
    fn parameter_order_and_encoding_are_not_signed() {
        let shuffled = b"To=%2B18005551212&Digits=1234&CallSid=CA1234567890ABCDE&From=%2B14158675309&Caller=%2B14158675309";
        assert!(check(Some(FORM_SIG), URL, shuffled, &[TOKEN]).is_ok());
        // A repeated identical pair counts once, as in the SDKs.
        let repeated = [FORM, b"&Digits=1234".as_slice()].concat();
        assert!(check(Some(FORM_SIG), URL, &repeated, &[TOKEN]).is_ok());
    }

    #[test]
    fn form_values_are_decoded() {
        // A literal `+` is a space in a form body, so the value changes.
        let raw_plus = b"CallSid=CA1234567890ABCDE&Caller=+14158675309&Digits=1234&From=+14158675309&To=+18005551212";
        assert!(matches!(
            check(Some(FORM_SIG), URL, raw_plus, &[TOKEN]),
            Err(VerifyError::NoMatchingSignature)
        ));
        let body = b"Body=hello+world&Emoji=%F0%9F%91%8D";
        let sig = sign(TOKEN, URL, &[("Body", "hello world"), ("Emoji", "👍")]);
        assert!(check(Some(&sig), URL, body, &[TOKEN]).is_ok());
    }

    #[test]
    fn several_values_of_one_name_are_sorted() {
        let body = b"B=2&A=z&A=y&A=z";
        let sig = sign(TOKEN, URL, &[("A", "y"), ("A", "z"), ("B", "2")]);
        assert!(check(Some(&sig), URL, body, &[TOKEN]).is_ok());
    }

    #[test]
    fn url_is_tried_with_and_without_its_port() {
        // Signed without a port, received with the default one.
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(check(Some(FORM_SIG), with_port, FORM, &[TOKEN]).is_ok());
        // Signed with the default port, received without one.
        let sig = sign(TOKEN, with_port, &VECTOR_PARAMS);
        assert!(check(Some(&sig), URL, FORM, &[TOKEN]).is_ok());
        // A non-default port: Twilio may sign with or without it.
        let custom = "http://127.0.0.1:8080/in/wh_x";
        let sig = sign(TOKEN, "http://127.0.0.1/in/wh_x", &[("A", "1")]);
        assert!(check(Some(&sig), custom, b"A=1", &[TOKEN]).is_ok());
        let sig = sign(TOKEN, custom, &[("A", "1")]);
        assert!(check(Some(&sig), custom, b"A=1", &[TOKEN]).is_ok());
        // But never another port or host.
        let sig = sign(TOKEN, "http://127.0.0.1:9090/in/wh_x", &[("A", "1")]);
        assert!(check(Some(&sig), custom, b"A=1", &[TOKEN]).is_err());
        let sig = sign(TOKEN, "http://evil.example/in/wh_x", &[("A", "1")]);
        assert!(check(Some(&sig), custom, b"A=1", &[TOKEN]).is_err());
    }

    #[test]
    fn url_variants_handle_userinfo_ipv6_and_odd_input() {
        let [without, with] = url_variants("http://[::1]:8080/in?x=1#f");
        assert_eq!(without, "http://[::1]/in?x=1#f");
        assert_eq!(with, "http://[::1]:8080/in?x=1#f");
        let [without, with] = url_variants("https://[::1]/in");
        assert_eq!(without, "https://[::1]/in");
        assert_eq!(with, "https://[::1]:443/in");
        let [without, with] = url_variants("https://u:p@host:444");
        assert_eq!(without, "https://u:p@host");
        assert_eq!(with, "https://u:p@host:444");
        let [without, with] = url_variants("http://host:/x");
        assert_eq!(without, "http://host/x");
        assert_eq!(with, "http://host:80/x");
        let [same, again] = url_variants("no scheme");
        assert_eq!((same.as_ref(), again.as_ref()), ("no scheme", "no scheme"));
        // Odd input never panics.
        for odd in [
            "",
            "://",
            "a://",
            "x://@:",
            "h://[:",
            "h://]:1",
            "h://é:é/é",
        ] {
            let _ = url_variants(odd);
        }
    }

    #[test]
    fn the_url_and_its_query_are_signed() {
        for url in [
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            "https://mycompany.com/myapp.php?bar=2&foo=1",
            "https://mycompany.com/myapp.php",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            "https://evil.example/myapp.php?foo=1&bar=2",
            "",
        ] {
            assert!(check(Some(FORM_SIG), url, FORM, &[TOKEN]).is_err(), "{url}");
        }
    }

    #[test]
    fn tampered_form_and_wrong_token_are_rejected() {
        let tampered = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1235&From=%2B14158675309&To=%2B18005551212";
        assert!(matches!(
            check(Some(FORM_SIG), URL, tampered, &[TOKEN]),
            Err(VerifyError::NoMatchingSignature)
        ));
        let extra = [FORM, b"&Extra=1".as_slice()].concat();
        assert!(check(Some(FORM_SIG), URL, &extra, &[TOKEN]).is_err());
        assert!(check(Some(FORM_SIG), URL, b"", &[TOKEN]).is_err());
        assert!(check(Some(FORM_SIG), URL, FORM, &[b"54321"]).is_err());
    }

    #[test]
    fn json_body_must_match_its_hash() {
        let url = json_url();
        // Another body under the same URL and signature.
        let other = br#"{"property": "evil", "boolean": true}"#;
        assert!(matches!(
            check(Some(JSON_SIG), &url, other, &[TOKEN]),
            Err(VerifyError::NoMatchingSignature)
        ));
        // Pointing bodySHA256 at the new body breaks the URL's signature.
        let other_url = format!("{URL}&bodySHA256={}", hex::encode(Sha256::digest(other)));
        assert!(check(Some(JSON_SIG), &other_url, other, &[TOKEN]).is_err());
        // Uppercase or empty hashes match nothing.
        let upper = format!("{URL}&bodySHA256={}", BODY_HASH.to_uppercase());
        let sig = sign(TOKEN, &upper, &[]);
        assert!(check(Some(&sig), &upper, JSON_BODY, &[TOKEN]).is_err());
        let empty = format!("{URL}&bodySHA256=");
        let sig = sign(TOKEN, &empty, &[]);
        assert!(check(Some(&sig), &empty, JSON_BODY, &[TOKEN]).is_err());
        // A JSON body without bodySHA256 is read as a form and fails.
        let sig = sign(TOKEN, URL, &[]);
        assert!(check(Some(&sig), URL, JSON_BODY, &[TOKEN]).is_err());
    }

    #[test]
    fn rotation_second_token_matches() {
        assert!(check(Some(FORM_SIG), URL, FORM, &[b"new-token", TOKEN]).is_ok());
        assert!(check(Some(JSON_SIG), &json_url(), JSON_BODY, &[b"new", TOKEN]).is_ok());
    }

    #[test]
    fn signature_format_is_strict() {
        let bytes = BASE64_LENIENT.decode(FORM_SIG).unwrap_or_default();
        assert!(check(Some(&hex::encode(&bytes)), URL, FORM, &[TOKEN]).is_err());
        assert!(check(Some(FORM_SIG.trim_end_matches('=')), URL, FORM, &[TOKEN]).is_err());
        assert!(check(Some(&FORM_SIG.to_lowercase()), URL, FORM, &[TOKEN]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, URL, FORM, &[TOKEN]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(""), URL, FORM, &[TOKEN]),
            Err(VerifyError::MissingHeader(_))
        ));
        for garbage in ["===", "garbage", "!!!!", ",".repeat(5000).as_str(), "é"] {
            assert!(check(Some(garbage), URL, FORM, &[TOKEN]).is_err());
        }
        let huge = format!("{FORM_SIG}{}", "A".repeat(100 * 1024));
        assert!(matches!(
            check(Some(&huge), URL, FORM, &[TOKEN]),
            Err(VerifyError::MalformedHeader(_))
        ));
        // Hostile bodies and URLs do not panic.
        for body in [b"%".as_slice(), b"%zz=%", b"&&&===", b"\xff\xfe=\x80"] {
            assert!(check(Some(FORM_SIG), URL, body, &[TOKEN]).is_err());
        }
    }

    #[test]
    fn no_secret_fails_closed() {
        assert!(matches!(
            check(Some(FORM_SIG), URL, FORM, &[]),
            Err(VerifyError::NoSecret)
        ));
    }

    fn event_type_of(body: &[u8]) -> String {
        let h = HeaderMap::new();
        let inbound = Inbound {
            headers: &h,
            body,
            now_unix: 0,
            url: URL,
        };
        let json: Option<Value> = serde_json::from_slice(body).ok();
        event_type(&inbound, json.as_ref())
    }

    #[test]
    fn event_type_is_derived() {
        assert_eq!(event_type_of(FORM), "twilio.request");
        assert_eq!(
            event_type_of(b"MessageSid=SM1&SmsStatus=sent&MessageStatus=delivered"),
            "message.delivered"
        );
        assert_eq!(
            event_type_of(b"MessageSid=SM1&SmsStatus=received&Body=hi"),
            "message.received"
        );
        assert_eq!(
            event_type_of(b"CallSid=CA1&CallStatus=completed"),
            "call.completed"
        );
        assert_eq!(
            event_type_of(b"EventType=onMessageAdded&MessageStatus=x"),
            "onMessageAdded"
        );
        assert_eq!(
            event_type_of(b"MessageStatus=&CallStatus=ringing"),
            "call.ringing"
        );
        assert_eq!(
            event_type_of(br#"{"type":"com.twilio.messaging.message.delivered"}"#),
            "com.twilio.messaging.message.delivered"
        );
        assert_eq!(event_type_of(JSON_BODY), "twilio.request");
        assert_eq!(event_type_of(b""), "twilio.request");
        let long = format!("EventType={}", "a".repeat(1000));
        assert_eq!(event_type_of(long.as_bytes()).len(), 256);
    }
}
