//! Slack: `X-Slack-Signature: v0=<hex>` over `"v0:{ts}:" + raw body`, with
//! `X-Slack-Request-Timestamp: <ts>`.
//!
//! As `slack_sdk.signature.SignatureVerifier` verifies: the timestamp must
//! be within ±300 s of now (checked first), the signed content uses the
//! timestamp header exactly as sent, and the whole `v0=<lowercase hex>`
//! string is compared in constant time.
//!
//! Handshakes: a form body with `ssl_check=1` is answered 200 before
//! verification (Slack does not sign it meaningfully and nothing is stored);
//! a signed `{"type": "url_verification", "challenge": ...}` is answered
//! 200 `{"challenge": ...}` after verification.

use serde_json::Value;

use super::common::{
    body_event_id, body_field, ct_eq, event_type_or_unknown, hmac_sha256, json_text,
    matched_or_refused, outside_window, required_header, usable_secrets,
};
use super::{GenericHmacConfig, HandshakeReply, Inbound, Provider, VerifyError};

/// The header carrying `v0=<hex>`.
const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The header carrying the signed Unix timestamp.
const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// slack_sdk's window, both directions, in seconds.
const TOLERANCE_SECS: i64 = 300;
/// Bodies longer than this are never an `ssl_check` probe (Slack's is a few
/// dozen bytes); skipping them bounds the pre-verification scan.
const MAX_SSL_CHECK_BODY: usize = 4096;

/// Slack's scheme and handshakes, as the module documentation describes.
pub(crate) struct Slack;

impl Provider for Slack {
    fn label(&self) -> &'static str {
        "Slack"
    }

    fn setup_hint(&self) -> &'static str {
        "In Slack: your app's Event Subscriptions → Request URL; Krafter answers the url_verification challenge."
    }

    fn pre_verification_handshake(&self, inbound: &Inbound<'_>) -> Option<HandshakeReply> {
        pre_verification_handshake(inbound)
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

    fn event_id(
        &self,
        _config: Option<&GenericHmacConfig>,
        _inbound: &Inbound<'_>,
        json: Option<&Value>,
    ) -> Option<String> {
        event_id(json)
    }
}

/// Verifies a Slack request against any of `secrets`.
fn verify(inbound: &Inbound<'_>, secrets: &[&[u8]]) -> Result<(), VerifyError> {
    let secrets = usable_secrets(secrets)?;
    let timestamp = required_header(inbound.headers, TIMESTAMP_HEADER)?;
    let given = required_header(inbound.headers, SIGNATURE_HEADER)?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP_HEADER.into()))?;
    if outside_window(inbound.now_unix, ts, TOLERANCE_SECS) {
        return Err(VerifyError::TimestampOutsideTolerance);
    }
    let matched = secrets
        .filter_map(|secret| {
            hmac_sha256(secret, &[b"v0:", timestamp.as_bytes(), b":", inbound.body])
        })
        .any(|mac| {
            let expected = format!("v0={}", hex::encode(mac));
            ct_eq(expected.as_bytes(), given.as_bytes())
        });
    matched_or_refused(matched)
}

/// `ssl_check=1` in a form-encoded body: Slack's certificate probe for
/// slash commands, answered with an empty 200 and never stored.
fn pre_verification_handshake(inbound: &Inbound<'_>) -> Option<HandshakeReply> {
    if inbound.body.len() > MAX_SSL_CHECK_BODY {
        return None;
    }
    inbound
        .body
        .split(|b| *b == b'&')
        .any(|pair| pair == b"ssl_check=1")
        .then(|| HandshakeReply {
            status: http::StatusCode::OK,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        })
}

/// A verified `url_verification` request: echo its `challenge`, as the
/// Events API requires to enable a request URL.
fn post_verification_handshake(json: Option<&Value>) -> Option<HandshakeReply> {
    let json = json?;
    if json.get("type").and_then(Value::as_str) != Some("url_verification") {
        return None;
    }
    let challenge = json.get("challenge").cloned().unwrap_or(Value::Null);
    let body = serde_json::to_vec(&serde_json::json!({ "challenge": challenge })).ok()?;
    Some(HandshakeReply {
        status: http::StatusCode::OK,
        content_type: "application/json",
        body,
    })
}

/// `event.type` for an `event_callback` (e.g. `app_mention`), else the
/// top-level `type`; form bodies (slash commands) give `unknown`.
fn event_type(json: Option<&Value>) -> String {
    let outer = body_field(json, "type");
    if outer.as_deref() == Some("event_callback") {
        let inner = json
            .and_then(|j| j.get("event"))
            .and_then(|e| e.get("type"))
            .and_then(json_text);
        if let Some(inner) = inner {
            return event_type_or_unknown(Some(&inner));
        }
    }
    event_type_or_unknown(outer.as_deref())
}

/// Body `event_id`: Slack's retries (`X-Slack-Retry-Num`) keep it, so
/// dedup catches them.
fn event_id(json: Option<&Value>) -> Option<String> {
    body_event_id(json, "event_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    // ✅ Vector from PROVIDERS.md (slack_sdk).
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TS: i64 = 1531420618;
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(ts: Option<&str>, sig: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ts) = ts {
            h.insert(
                "X-Slack-Request-Timestamp",
                HeaderValue::from_str(ts).expect("test header"),
            );
        }
        if let Some(sig) = sig {
            h.insert(
                "X-Slack-Signature",
                HeaderValue::from_str(sig).expect("test header"),
            );
        }
        h
    }

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now: i64,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let h = headers(ts, sig);
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

    const TS_STR: &str = "1531420618";

    #[test]
    fn official_vector_verifies() {
        assert!(check(Some(TS_STR), Some(SIG), BODY, TS, &[SECRET]).is_ok());
        assert!(check(Some(TS_STR), Some(SIG), BODY, TS + 300, &[SECRET]).is_ok());
        assert!(check(Some(TS_STR), Some(SIG), BODY, TS - 300, &[SECRET]).is_ok());
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        assert!(matches!(
            check(Some(TS_STR), Some(SIG), BODY, TS + 301, &[SECRET]),
            Err(VerifyError::TimestampOutsideTolerance)
        ));
        assert!(matches!(
            check(Some(TS_STR), Some(SIG), BODY, TS - 301, &[SECRET]),
            Err(VerifyError::TimestampOutsideTolerance)
        ));
    }

    #[test]
    fn tampered_body_wrong_secret_and_changed_ts_are_rejected() {
        let mut body = BODY.to_vec();
        body.extend_from_slice(b"&x=1");
        assert!(matches!(
            check(Some(TS_STR), Some(SIG), &body, TS, &[SECRET]),
            Err(VerifyError::NoMatchingSignature)
        ));
        assert!(check(Some(TS_STR), Some(SIG), BODY, TS, &[b"other"]).is_err());
        assert!(check(Some("1531420619"), Some(SIG), BODY, TS, &[SECRET]).is_err());
    }

    #[test]
    fn rotation_second_secret_matches() {
        assert!(check(Some(TS_STR), Some(SIG), BODY, TS, &[b"new", SECRET]).is_ok());
    }

    #[test]
    fn signature_format_is_strict() {
        let bare = SIG.trim_start_matches("v0=");
        assert!(check(Some(TS_STR), Some(bare), BODY, TS, &[SECRET]).is_err());
        let upper = format!("v0={}", bare.to_uppercase());
        assert!(check(Some(TS_STR), Some(&upper), BODY, TS, &[SECRET]).is_err());
        let v1 = format!("v1={bare}");
        assert!(check(Some(TS_STR), Some(&v1), BODY, TS, &[SECRET]).is_err());
    }

    #[test]
    fn missing_empty_garbage_and_huge_headers_are_rejected() {
        assert!(matches!(
            check(None, Some(SIG), BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(TS_STR), None, BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(""), Some(SIG), BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        assert!(matches!(
            check(Some(TS_STR), Some(""), BODY, TS, &[SECRET]),
            Err(VerifyError::MissingHeader(_))
        ));
        for ts in ["abc", "1e9", "99999999999999999999999", "-", ",,,,"] {
            assert!(matches!(
                check(Some(ts), Some(SIG), BODY, TS, &[SECRET]),
                Err(VerifyError::MalformedHeader(_))
            ));
        }
        // Extremes must not overflow.
        for ts in ["-9223372036854775808", "9223372036854775807"] {
            assert!(matches!(
                check(Some(ts), Some(SIG), BODY, TS, &[SECRET]),
                Err(VerifyError::TimestampOutsideTolerance)
            ));
        }
        for sig in [
            "garbage",
            "v0=",
            "v0",
            ",".repeat(3000).as_str(),
            "v0=,v0=,v0=",
        ] {
            assert!(check(Some(TS_STR), Some(sig), BODY, TS, &[SECRET]).is_err());
        }
        let huge = format!("{SIG}{}", " ".repeat(100 * 1024));
        assert!(check(Some(TS_STR), Some(&huge), BODY, TS, &[SECRET]).is_err());
        let huge = "v0=".repeat(100 * 1024 / 3);
        assert!(matches!(
            check(Some(TS_STR), Some(&huge), BODY, TS, &[SECRET]),
            Err(VerifyError::MalformedHeader(_))
        ));
    }

    #[test]
    fn ssl_check_is_answered_before_verification() {
        let h = HeaderMap::new();
        let probe = Inbound {
            headers: &h,
            body: b"token=abc&ssl_check=1",
            now_unix: 0,
            url: "",
        };
        let reply = pre_verification_handshake(&probe);
        assert_eq!(reply.map(|r| r.body), Some(Vec::new()));
        let bodies: [&[u8]; 5] = [
            BODY,
            b"ssl_check=0",
            b"xssl_check=1",
            b"",
            b"{\"ssl_check\":1}",
        ];
        for body in bodies {
            let other = Inbound {
                headers: &h,
                body,
                now_unix: 0,
                url: "",
            };
            assert!(pre_verification_handshake(&other).is_none());
        }
    }

    #[test]
    fn url_verification_echoes_the_challenge() {
        let json = serde_json::json!({
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification"
        });
        let reply = post_verification_handshake(Some(&json));
        let Some(reply) = reply else {
            panic!("expected a handshake reply");
        };
        assert_eq!(reply.content_type, "application/json");
        let echoed: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        assert_eq!(
            echoed,
            serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        );
        let event = serde_json::json!({"type": "event_callback", "event": {"type": "message"}});
        assert!(post_verification_handshake(Some(&event)).is_none());
        assert!(post_verification_handshake(None).is_none());
    }

    #[test]
    fn event_type_and_id() {
        let cb = serde_json::json!({
            "type": "event_callback",
            "event_id": "Ev0PV52K21",
            "event": {"type": "app_mention"}
        });
        assert_eq!(event_type(Some(&cb)), "app_mention");
        assert_eq!(event_id(Some(&cb)).as_deref(), Some("Ev0PV52K21"));
        let cb_no_inner = serde_json::json!({"type": "event_callback"});
        assert_eq!(event_type(Some(&cb_no_inner)), "event_callback");
        let other = serde_json::json!({"type": "app_rate_limited", "event": {"type": "x"}});
        assert_eq!(event_type(Some(&other)), "app_rate_limited");
        assert_eq!(event_type(None), "unknown");
        assert_eq!(event_id(None), None);
    }
}
