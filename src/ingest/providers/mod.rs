//! Inbound signature verification: one [`Provider`] per module, found by
//! [`get`] from a source's [`ProviderKind`].
//!
//! Every provider verifies exactly as its official SDK does (see
//! `shared/PROVIDERS.md`): over the raw body bytes, in constant time,
//! against every secret a source currently accepts (key rotation). All of
//! it is pure, synchronous and I/O-free, so the ingest route can call it
//! inline and tests need no server.
//!
//! The ingest route's order (SPEC §7):
//! 1. [`Provider::pre_verification_handshake`] → answer 200 and stop
//!    (nothing stored);
//! 2. [`Provider::verify`] → on `Err`, 401 `invalid_signature` (the error's
//!    message is safe to show: it never contains a secret or a signature);
//! 3. [`Provider::post_verification_handshake`] → answer 200 and stop;
//! 4. [`Provider::event_type`] and [`Provider::event_id`], then dedup and
//!    store.
//!
//! Adding a provider: its `ProviderKind` line in `model/provider.rs`, a
//! module here implementing [`Provider`], and its line in the registry at
//! the end of this file.

use std::borrow::Cow;

mod common;
mod discord;
mod generic_hmac;
mod github;
mod intercom;
mod linear;
mod mailgun;
mod none;
mod paddle;
mod sendgrid;
mod shopify;
mod slack;
mod square;
mod standard_webhooks;
mod stripe;
mod twilio;
mod twitch;
mod zoom;

pub use crate::model::provider::{GenericHmacConfig, ProviderKind, SignatureEncoding};
pub use common::{MAX_EVENT_FIELD_BYTES, MAX_SIGNATURE_HEADER_BYTES};
/// How long Mailgun's signed timestamp is accepted, either way (seconds);
/// single-use tokens are remembered for twice that.
pub(crate) use mailgun::TOLERANCE_SECS as SINGLE_USE_TOKEN_WINDOW_SECS;

/// What the ingest route hands a provider: the request as received. The
/// clock is passed in (not read) so verification stays pure and testable.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Request headers; looked up case-insensitively.
    pub headers: &'a http::HeaderMap,
    /// The raw body bytes exactly as received (signatures cover these, never
    /// a re-serialisation).
    pub body: &'a [u8],
    /// Current Unix time in seconds, for timestamp tolerance checks.
    pub now_unix: i64,
    /// The public URL the provider called: `<server.public_url>/in/<slug>`,
    /// plus `?<query>` when the request had one. Rebuilt from configuration,
    /// never from `Host` or `X-Forwarded-*` (which any caller controls);
    /// only built for providers whose [`Provider::signs_url`] is true
    /// (Square and Twilio), empty otherwise.
    pub url: &'a str,
}

/// Why a request failed verification. Every message is safe to return to
/// the caller: it names at most a header, never a secret or signature.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the scheme requires is absent or blank.
    #[error("missing required header `{0}`")]
    MissingHeader(Cow<'static, str>),
    /// A required header is unparseable, not visible ASCII, or longer than
    /// [`MAX_SIGNATURE_HEADER_BYTES`].
    #[error("malformed header `{0}`")]
    MalformedHeader(Cow<'static, str>),
    /// The signed timestamp is outside the provider's tolerance window
    /// (a replayed or badly delayed request).
    #[error("timestamp outside the allowed tolerance")]
    TimestampOutsideTolerance,
    /// No signature in the request matches any accepted secret.
    #[error("no matching signature")]
    NoMatchingSignature,
    /// The provider never signs an empty body (Shopify).
    #[error("empty body")]
    EmptyBody,
    /// The source has no usable secret (none, only empty ones, or, for
    /// Standard Webhooks/Svix, none that decodes), so nothing can verify.
    #[error("the source has no usable signing secret")]
    NoSecret,
    /// A `generic_hmac` source without its signature configuration.
    #[error("the source has no generic_hmac configuration")]
    MissingConfig,
    /// A signed body field the scheme requires (Linear's
    /// `webhookTimestamp`, Mailgun's `signature`) is absent, or the body is
    /// not the JSON it must be.
    #[error("missing or malformed body field `{0}`")]
    MalformedBodyField(Cow<'static, str>),
    /// A single-use signature token (Mailgun's) already came with another
    /// event: a replayed signature.
    #[error("the signature's token was already used")]
    ReusedToken,
}

/// A reply to a provider handshake, never stored or forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    /// 200, or 204 where the provider expects no body (Discord's
    /// webhook-events PING).
    pub status: http::StatusCode,
    /// Value of the `Content-Type` header (not sent with a 204).
    pub content_type: &'static str,
    /// Response body.
    pub body: Vec<u8>,
}

/// One provider's signing scheme and everything else that differs between
/// providers, so the ingest route, the API and the dashboard ask the
/// provider instead of matching on its kind.
///
/// Implementations are stateless `'static` values (see [`get`]); every
/// method is pure and I/O-free. `config` is the source's
/// `provider_config`, which only `generic_hmac` reads.
pub trait Provider: Sync {
    /// What people call the provider, shown by the dashboard.
    fn label(&self) -> &'static str;

    /// Where the dashboard tells the user to paste the ingest URL.
    fn setup_hint(&self) -> &'static str {
        "Paste this URL where your provider asks for a webhook endpoint."
    }

    /// Whether requests are verified at all. Only `none` says no: its
    /// sources need no signing secret, and every request it accepts is
    /// logged as a warning.
    fn verifies(&self) -> bool {
        true
    }

    /// Whether the public URL is part of what is signed (Square, Twilio).
    /// Only then does the ingest route build [`Inbound::url`], which costs an
    /// allocation per request.
    fn signs_url(&self) -> bool {
        false
    }

    /// Checks a signing secret when a source is created or its secret
    /// changed, so a secret that could never verify is refused with 422 up
    /// front rather than failing every ingest with 401. The message is safe
    /// to return. By default a verifying provider takes any non-empty
    /// secret.
    fn validate_secret(&self, secret: &[u8]) -> Result<(), &'static str> {
        if self.verifies() {
            common::non_empty_secret(secret)
        } else {
            Ok(())
        }
    }

    /// Checks a source's `provider_config` when it is created or updated;
    /// the message describes the `provider_config` field and is safe to
    /// return. By default a provider takes no configuration.
    fn validate_config(&self, config: Option<&GenericHmacConfig>) -> Result<(), Cow<'static, str>> {
        match config {
            Some(_) => Err("is only used by provider generic_hmac".into()),
            None => Ok(()),
        }
    }

    /// A request answered before verification and never stored (Slack's
    /// `ssl_check=1` probe, which carries no usable signature). None by
    /// default.
    fn pre_verification_handshake(&self, _inbound: &Inbound<'_>) -> Option<HandshakeReply> {
        None
    }

    /// Verifies `inbound`.
    ///
    /// `secrets` are the secrets the source currently accepts: the current
    /// one first, then the previous one during a 24 h rotation overlap; any
    /// may match. Each is the raw bytes of the secret as the user entered
    /// it (e.g. `b"whsec_..."`); providers that need decoding decode it
    /// themselves. Comparisons are constant time.
    fn verify(
        &self,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError>;

    /// A verified request answered and never stored (Slack
    /// `url_verification` → 200 `{"challenge": ...}`). `json` is the body
    /// parsed once by the caller (`None` when it is not JSON); `secrets` are
    /// the ones [`Provider::verify`] was given, for answers computed under
    /// the secret that verified (Zoom's `encryptedToken`). None by default.
    fn post_verification_handshake(
        &self,
        _inbound: &Inbound<'_>,
        _json: Option<&serde_json::Value>,
        _secrets: &[&[u8]],
    ) -> Option<HandshakeReply> {
        None
    }

    /// A value the signature covers that the provider uses once (Mailgun's
    /// `signature.token`, as Mailgun advises receivers to remember): the
    /// ingest route accepts a verified token with one event only, for
    /// `mailgun::TOLERANCE_SECS` either way. None by default.
    fn single_use_token(&self, _json: Option<&serde_json::Value>) -> Option<String> {
        None
    }

    /// The event type per SPEC §8 (destinations filter on it), or
    /// `"unknown"` (`"twilio.request"` for a Twilio request that names no
    /// event). Longer than [`MAX_EVENT_FIELD_BYTES`] → truncated at a
    /// character boundary.
    fn event_type(
        &self,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        json: Option<&serde_json::Value>,
    ) -> String;

    /// The provider's own event id, used to de-duplicate retries and
    /// redeliveries, if the provider has one (none by default). Blank ids
    /// and ids longer than [`MAX_EVENT_FIELD_BYTES`] give `None` (never
    /// truncated: two ids sharing a prefix must not be mistaken for
    /// duplicates).
    fn event_id(
        &self,
        _config: Option<&GenericHmacConfig>,
        _inbound: &Inbound<'_>,
        _json: Option<&serde_json::Value>,
    ) -> Option<String> {
        None
    }
}

/// Defines [`get`] and [`all`] from one list of `Kind => provider value`
/// lines. `get` is an exhaustive `match`, so a [`ProviderKind`] without a
/// provider does not compile, and the lookup is a table jump.
macro_rules! registry {
    ($($kind:ident => $provider:expr,)+) => {
        /// The provider that verifies a source of kind `kind`.
        pub fn get(kind: ProviderKind) -> &'static dyn Provider {
            match kind {
                $(ProviderKind::$kind => &$provider,)+
            }
        }

        /// Every provider with its kind, in the order the dashboard offers
        /// them.
        pub fn all() -> &'static [(ProviderKind, &'static dyn Provider)] {
            &[$((ProviderKind::$kind, &$provider),)+]
        }
    };
}

// One line per provider, in the order the dashboard lists them.
registry! {
    Stripe => stripe::Stripe,
    Github => github::Github,
    Shopify => shopify::Shopify,
    Slack => slack::Slack,
    Paddle => paddle::Paddle,
    Linear => linear::Linear,
    Square => square::Square,
    Twilio => twilio::Twilio,
    StandardWebhooks => standard_webhooks::StandardWebhooks,
    Svix => standard_webhooks::Svix,
    GenericHmac => generic_hmac::GenericHmac,
    Zoom => zoom::Zoom,
    Intercom => intercom::Intercom,
    Twitch => twitch::Twitch,
    Discord => discord::Discord,
    Mailgun => mailgun::Mailgun,
    Sendgrid => sendgrid::Sendgrid,
    None => none::NoVerification,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    const ALL: [ProviderKind; 18] = [
        ProviderKind::Stripe,
        ProviderKind::Github,
        ProviderKind::Shopify,
        ProviderKind::Slack,
        ProviderKind::StandardWebhooks,
        ProviderKind::Svix,
        ProviderKind::GenericHmac,
        ProviderKind::None,
        ProviderKind::Paddle,
        ProviderKind::Linear,
        ProviderKind::Square,
        ProviderKind::Twilio,
        ProviderKind::Zoom,
        ProviderKind::Intercom,
        ProviderKind::Twitch,
        ProviderKind::Discord,
        ProviderKind::Mailgun,
        ProviderKind::Sendgrid,
    ];

    // The dispatch tests below were written against one free function per
    // question; these shims ask the registry the same questions, so the
    // assertions stay exactly as they were.

    fn verify(
        kind: ProviderKind,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        secrets: &[&[u8]],
    ) -> Result<(), VerifyError> {
        get(kind).verify(config, inbound, secrets)
    }

    fn pre_verification_handshake(
        kind: ProviderKind,
        inbound: &Inbound<'_>,
    ) -> Option<HandshakeReply> {
        get(kind).pre_verification_handshake(inbound)
    }

    fn post_verification_handshake(
        kind: ProviderKind,
        inbound: &Inbound<'_>,
        json: Option<&serde_json::Value>,
    ) -> Option<HandshakeReply> {
        get(kind).post_verification_handshake(inbound, json, &[b"whsec_AAAA"])
    }

    fn event_type(
        kind: ProviderKind,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        json: Option<&serde_json::Value>,
    ) -> String {
        get(kind).event_type(config, inbound, json)
    }

    fn provider_event_id(
        kind: ProviderKind,
        config: Option<&GenericHmacConfig>,
        inbound: &Inbound<'_>,
        json: Option<&serde_json::Value>,
    ) -> Option<String> {
        get(kind).event_id(config, inbound, json)
    }

    fn validate_secret(kind: ProviderKind, secret: &[u8]) -> Result<(), &'static str> {
        get(kind).validate_secret(secret)
    }

    #[test]
    fn registry_holds_every_kind_once() {
        for kind in ProviderKind::ALL {
            let listed = all().iter().filter(|(k, _)| *k == kind).count();
            assert_eq!(listed, 1, "{kind:?}");
            assert!(!get(kind).label().is_empty(), "{kind:?}");
        }
        assert_eq!(all().len(), ProviderKind::ALL.len());
        // `get` and `all` hand out the same provider for a kind.
        for (kind, provider) in all() {
            assert_eq!(get(*kind).label(), provider.label());
            assert_eq!(get(*kind).setup_hint(), provider.setup_hint());
        }
    }

    /// Each SPEC §16 provider tells the dashboard where its URL and secret
    /// go, in its own words (not the generic hint).
    #[test]
    fn spec_16_providers_have_their_own_setup_hints() {
        struct Generic;
        impl Provider for Generic {
            fn label(&self) -> &'static str {
                "generic"
            }
            fn verify(
                &self,
                _: Option<&GenericHmacConfig>,
                _: &Inbound<'_>,
                _: &[&[u8]],
            ) -> Result<(), VerifyError> {
                Err(VerifyError::NoSecret)
            }
            fn event_type(
                &self,
                _: Option<&GenericHmacConfig>,
                _: &Inbound<'_>,
                _: Option<&serde_json::Value>,
            ) -> String {
                String::new()
            }
        }
        for (kind, name) in [
            (ProviderKind::Zoom, "Zoom"),
            (ProviderKind::Intercom, "Intercom"),
            (ProviderKind::Twitch, "Twitch"),
            (ProviderKind::Discord, "Discord"),
            (ProviderKind::Mailgun, "Mailgun"),
            (ProviderKind::Sendgrid, "SendGrid"),
        ] {
            let provider = get(kind);
            assert_eq!(provider.label(), name);
            let hint = provider.setup_hint();
            assert_ne!(hint, Generic.setup_hint(), "{kind:?}");
            assert!(hint.contains(name), "{kind:?}: {hint}");
            assert!(
                hint.contains("URL") && hint.contains("secret"),
                "{kind:?}: {hint}"
            );
        }
    }

    /// The properties the route and the API used to decide by matching on
    /// the kind.
    #[test]
    fn per_provider_properties() {
        for kind in ProviderKind::ALL {
            let provider = get(kind);
            assert_eq!(provider.verifies(), kind != ProviderKind::None, "{kind:?}");
            assert_eq!(
                provider.signs_url(),
                matches!(kind, ProviderKind::Square | ProviderKind::Twilio),
                "{kind:?}"
            );
            let config = generic_config();
            match kind {
                ProviderKind::GenericHmac => {
                    assert_eq!(
                        provider.validate_config(None),
                        Err("is required for provider generic_hmac".into())
                    );
                    assert_eq!(provider.validate_config(Some(&config)), Ok(()));
                    let mut bad = generic_config();
                    bad.signature_header = "bad header".to_owned();
                    assert_eq!(
                        provider.validate_config(Some(&bad)),
                        Err("signature_header must be a valid HTTP header name".into())
                    );
                }
                _ => {
                    assert_eq!(provider.validate_config(None), Ok(()));
                    assert_eq!(
                        provider.validate_config(Some(&config)),
                        Err("is only used by provider generic_hmac".into()),
                        "{kind:?}"
                    );
                }
            }
        }
        assert_eq!(
            validate_secret(ProviderKind::Stripe, b""),
            Err("signing_secret must not be empty")
        );
        assert_eq!(
            validate_secret(ProviderKind::Svix, b""),
            Err("signing_secret must not be empty")
        );
        assert_eq!(
            validate_secret(ProviderKind::Svix, b"whsec_"),
            Err("signing_secret must be `whsec_` followed by base64")
        );
    }

    fn generic_config() -> GenericHmacConfig {
        GenericHmacConfig {
            signature_header: "X-Signature".to_owned(),
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".to_owned()),
            event_type_pointer: Some("/type".to_owned()),
            event_type_header: None,
            event_id_header: None,
            event_id_pointer: Some("/id".to_owned()),
        }
    }

    #[test]
    fn none_always_verifies() {
        let h = HeaderMap::new();
        let inbound = Inbound {
            headers: &h,
            body: b"anything",
            now_unix: 0,
            url: "",
        };
        assert_eq!(verify(ProviderKind::None, None, &inbound, &[]), Ok(()));
    }

    #[test]
    fn signed_providers_reject_unsigned_requests() {
        let h = HeaderMap::new();
        let inbound = Inbound {
            headers: &h,
            body: b"{}",
            now_unix: 0,
            url: "",
        };
        let config = generic_config();
        for kind in ALL {
            if kind == ProviderKind::None {
                continue;
            }
            assert!(
                verify(kind, Some(&config), &inbound, &[b"whsec_AAAA"]).is_err(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn dispatch_reaches_each_provider() {
        // Stripe vector through the public entry point.
        let mut h = HeaderMap::new();
        h.insert(
            "stripe-signature",
            HeaderValue::from_static(
                "t=1614265330,v1=31fe7071853a3ce7cef4cf91041ccfde0db025f63c690910579c71cf94740b3d",
            ),
        );
        let body =
            br#"{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded"}"#;
        let inbound = Inbound {
            headers: &h,
            body,
            now_unix: 1614265330,
            url: "",
        };
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        assert_eq!(
            verify(
                ProviderKind::Stripe,
                None,
                &inbound,
                &[b"whsec_test_secret"]
            ),
            Ok(())
        );
        assert!(verify(
            ProviderKind::Github,
            None,
            &inbound,
            &[b"whsec_test_secret"]
        )
        .is_err());
        assert_eq!(
            event_type(ProviderKind::Stripe, None, &inbound, Some(&json)),
            "payment_intent.succeeded"
        );
        assert_eq!(
            provider_event_id(ProviderKind::Stripe, None, &inbound, Some(&json)).as_deref(),
            Some("evt_test_webhook")
        );
        assert_eq!(
            event_type(ProviderKind::None, None, &inbound, Some(&json)),
            "payment_intent.succeeded"
        );
        assert_eq!(
            provider_event_id(ProviderKind::None, None, &inbound, Some(&json)),
            None
        );
        let config = generic_config();
        assert_eq!(
            event_type(
                ProviderKind::GenericHmac,
                Some(&config),
                &inbound,
                Some(&json)
            ),
            "payment_intent.succeeded"
        );
        assert_eq!(
            provider_event_id(
                ProviderKind::GenericHmac,
                Some(&config),
                &inbound,
                Some(&json)
            )
            .as_deref(),
            Some("evt_test_webhook")
        );
        assert_eq!(
            event_type(ProviderKind::Github, None, &inbound, Some(&json)),
            "unknown"
        );
    }

    /// The P2 providers' PROVIDERS.md vectors through the public entry
    /// points, each refused by the other providers.
    #[test]
    fn dispatch_reaches_p2_providers() {
        struct Case {
            kind: ProviderKind,
            header: (&'static str, &'static str),
            body: &'static [u8],
            url: &'static str,
            now: i64,
            secret: &'static [u8],
            event_type: &'static str,
            event_id: Option<&'static str>,
        }
        let cases = [
            Case {
                kind: ProviderKind::Paddle,
                header: (
                    "paddle-signature",
                    "ts=1700000000;h1=65f474bb061912f5578c7938fc332996a48df09c2cef51d0d1b68ff02a746591",
                ),
                body: br#"{"event_id":"evt_1","event_type":"transaction.paid"}"#,
                url: "",
                now: 1_700_000_000,
                secret: b"pdl_ntfset_test",
                event_type: "transaction.paid",
                event_id: Some("evt_1"),
            },
            Case {
                kind: ProviderKind::Linear,
                header: (
                    "linear-signature",
                    "e703a3084e02594fcefcb912769531b6a916934cb298676c3ea037cb1b548930",
                ),
                body: br#"{"type":"Issue","action":"create","webhookTimestamp":1700000000000}"#,
                url: "",
                now: 1_700_000_000,
                secret: b"lin_wh_testsecret",
                event_type: "Issue.create",
                event_id: None,
            },
            Case {
                kind: ProviderKind::Square,
                header: (
                    "x-square-hmacsha256-signature",
                    "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=",
                ),
                body: br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#,
                url: "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
                now: 0,
                secret: b"Ibxx_5AKakO-3qeNVR61Dw",
                event_type: "webhooks.test_notification",
                event_id: Some("ac3ac95b-f97d-458c-a6e6-18981597e05f"),
            },
            Case {
                kind: ProviderKind::Twilio,
                header: ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                body: b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212",
                url: "https://mycompany.com/myapp.php?foo=1&bar=2",
                now: 0,
                secret: b"12345",
                event_type: "twilio.request",
                event_id: None,
            },
        ];
        for case in &cases {
            let mut h = HeaderMap::new();
            h.insert(case.header.0, HeaderValue::from_static(case.header.1));
            let inbound = Inbound {
                headers: &h,
                body: case.body,
                now_unix: case.now,
                url: case.url,
            };
            let json: Option<serde_json::Value> = serde_json::from_slice(case.body).ok();
            for kind in ALL {
                let result = verify(kind, None, &inbound, &[case.secret]);
                match kind {
                    ProviderKind::None => assert_eq!(result, Ok(())),
                    k if k == case.kind => assert_eq!(result, Ok(()), "{k:?}"),
                    k => assert!(result.is_err(), "{k:?} accepted {:?}", case.kind),
                }
            }
            assert_eq!(
                event_type(case.kind, None, &inbound, json.as_ref()),
                case.event_type
            );
            assert_eq!(
                provider_event_id(case.kind, None, &inbound, json.as_ref()).as_deref(),
                case.event_id
            );
        }
        // Linear's dedup id is its delivery header.
        let mut h = HeaderMap::new();
        h.insert("linear-delivery", HeaderValue::from_static("d-1"));
        let inbound = Inbound {
            headers: &h,
            body: b"{}",
            now_unix: 0,
            url: "",
        };
        assert_eq!(
            provider_event_id(ProviderKind::Linear, None, &inbound, None).as_deref(),
            Some("d-1")
        );
    }

    #[test]
    fn handshakes_are_slack_only() {
        let h = HeaderMap::new();
        let probe = Inbound {
            headers: &h,
            body: b"ssl_check=1&token=x",
            now_unix: 0,
            url: "",
        };
        let challenge = serde_json::json!({"type": "url_verification", "challenge": "c"});
        for kind in ALL {
            let pre = pre_verification_handshake(kind, &probe);
            let post = post_verification_handshake(kind, &probe, Some(&challenge));
            assert_eq!(pre.is_some(), kind == ProviderKind::Slack, "{kind:?}");
            assert_eq!(post.is_some(), kind == ProviderKind::Slack, "{kind:?}");
        }
        let reply = post_verification_handshake(ProviderKind::Slack, &probe, Some(&challenge));
        assert_eq!(
            reply.map(|r| r.body),
            Some(br#"{"challenge":"c"}"#.to_vec())
        );
    }

    /// Hostile input of every shape must give `Err`, never a panic.
    #[test]
    fn garbage_never_panics() {
        let names = [
            "stripe-signature",
            "x-hub-signature-256",
            "x-shopify-hmac-sha256",
            "shopify-hmac-sha256",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "x-signature",
            "paddle-signature",
            "linear-signature",
            "x-square-hmacsha256-signature",
            "x-twilio-signature",
            "x-zm-signature",
            "x-zm-request-timestamp",
            "x-hub-signature",
            "twitch-eventsub-message-signature",
            "twitch-eventsub-message-id",
            "twitch-eventsub-message-timestamp",
            "x-signature-ed25519",
            "x-signature-timestamp",
            "x-twilio-email-event-webhook-signature",
            "x-twilio-email-event-webhook-timestamp",
        ];
        let values: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b" ".to_vec(),
            b",".repeat(10_000),
            b"=".repeat(10_000),
            b"t=".to_vec(),
            b"v1,".to_vec(),
            b"v1, v1, v1,".to_vec(),
            b"sha256=".to_vec(),
            b"v0=".to_vec(),
            b"-9223372036854775808".to_vec(),
            b"9223372036854775807".to_vec(),
            b"\xff\xfe\x80".to_vec(),
            b"\xc3".to_vec(),
            b"a".repeat(100 * 1024),
            "t=1,v1=\u{e9}\u{e9}".as_bytes().to_vec(),
            b"ts=".to_vec(),
            b"ts=1;h1=".to_vec(),
            b";".repeat(10_000),
            b"ts=9223372036854775807;h1=00".to_vec(),
        ];
        let config = generic_config();
        for value in &values {
            let Ok(value) = HeaderValue::from_bytes(value) else {
                continue;
            };
            let mut h = HeaderMap::new();
            for name in names {
                h.insert(HeaderName::from_static(name), value.clone());
            }
            for (now, url) in [
                (0, ""),
                (i64::MIN, "https://h/in/wh_x?bodySHA256="),
                (i64::MAX, "https://[::1]:99999999999999999999/?%zz"),
            ] {
                let inbound = Inbound {
                    headers: &h,
                    body: b"",
                    now_unix: now,
                    url,
                };
                for kind in ALL {
                    let secrets: [&[u8]; 2] = [b"whsec_AAAA", b""];
                    if kind != ProviderKind::None {
                        assert!(verify(kind, Some(&config), &inbound, &secrets).is_err());
                    }
                    let _ = event_type(kind, Some(&config), &inbound, None);
                    let _ = provider_event_id(kind, Some(&config), &inbound, None);
                    let _ = pre_verification_handshake(kind, &inbound);
                }
            }
        }
    }

    #[test]
    fn error_messages_never_echo_input() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_static("sha256=deadbeef"),
        );
        let inbound = Inbound {
            headers: &h,
            body: b"x",
            now_unix: 0,
            url: "",
        };
        let err = verify(ProviderKind::Github, None, &inbound, &[b"topsecret"]);
        let message = err
            .map(|()| String::new())
            .unwrap_or_else(|e| e.to_string());
        assert!(!message.contains("deadbeef"));
        assert!(!message.contains("topsecret"));
        assert_eq!(message, "no matching signature");
    }

    #[test]
    fn secrets_are_validated_per_provider() {
        assert!(validate_secret(ProviderKind::None, b"").is_ok());
        assert!(validate_secret(ProviderKind::Stripe, b"").is_err());
        assert!(validate_secret(ProviderKind::Stripe, b"whsec_anything").is_ok());
        assert!(validate_secret(
            ProviderKind::StandardWebhooks,
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        )
        .is_ok());
        assert!(validate_secret(ProviderKind::Svix, b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(validate_secret(ProviderKind::Svix, b"whsec_not base64!").is_err());
        assert!(validate_secret(ProviderKind::StandardWebhooks, b"whsec_").is_err());
        for kind in [
            ProviderKind::Paddle,
            ProviderKind::Linear,
            ProviderKind::Square,
            ProviderKind::Twilio,
        ] {
            assert!(get(kind).verifies(), "{kind:?}");
            assert!(validate_secret(kind, b"").is_err(), "{kind:?}");
            assert!(validate_secret(kind, b"any-secret").is_ok(), "{kind:?}");
        }
    }

    #[test]
    fn generic_config_validation() {
        assert!(generic_config().validate().is_ok());
        let mut bad = generic_config();
        bad.signature_header = "bad header".to_owned();
        assert!(bad.validate().is_err());
        let mut bad = generic_config();
        bad.event_type_pointer = Some("type".to_owned());
        assert!(bad.validate().is_err());
        let mut bad = generic_config();
        bad.prefix = Some("sha 256=".to_owned());
        assert!(bad.validate().is_err());
        let mut bad = generic_config();
        bad.event_id_header = Some(String::new());
        assert!(bad.validate().is_err());
    }

    /// The stored (postcard) and API (JSON) shapes must not drift.
    #[test]
    fn stored_and_api_shapes_are_stable() {
        let json = serde_json::to_value(ALL).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!([
                "stripe",
                "github",
                "shopify",
                "slack",
                "standard_webhooks",
                "svix",
                "generic_hmac",
                "none",
                "paddle",
                "linear",
                "square",
                "twilio",
                "zoom",
                "intercom",
                "twitch",
                "discord",
                "mailgun",
                "sendgrid"
            ])
        );
        for kind in ALL {
            let name = serde_json::to_value(kind).unwrap_or_default();
            assert_eq!(name, serde_json::json!(kind.as_str()));
        }
        let config = generic_config();
        let bytes = postcard::to_allocvec(&config).unwrap_or_default();
        let back: Option<GenericHmacConfig> = postcard::from_bytes(&bytes).ok();
        assert_eq!(back, Some(config));
        // Variant indexes are what the database holds: append-only.
        for (index, kind) in ALL.iter().enumerate() {
            let kind_bytes = postcard::to_allocvec(kind).unwrap_or_default();
            assert_eq!(kind_bytes, vec![index as u8], "{kind:?}");
            let back: Option<ProviderKind> = postcard::from_bytes(&kind_bytes).ok();
            assert_eq!(back, Some(*kind));
        }
        let minimal: Result<GenericHmacConfig, _> =
            serde_json::from_value(serde_json::json!({"signature_header": "X-Sig"}));
        assert_eq!(
            minimal.map(|c| c.encoding).ok(),
            Some(SignatureEncoding::Hex)
        );
    }
}
