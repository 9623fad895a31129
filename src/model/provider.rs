//! Which provider signs a source's webhooks, and how a `generic_hmac`
//! source is configured: plain data shared by the API, storage and ingest
//! (verification itself lives in `crate::ingest::providers`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Defines [`ProviderKind`] and its names and codes from one table, so a
/// new provider is one line here: its doc, variant, stored code and public
/// name. The serde name is the same literal as [`ProviderKind::as_str`], so
/// the two cannot drift. (`$name` is a `tt`, not a `literal`: a `literal`
/// fragment reaches derive macros wrapped in an invisible group, which
/// utoipa's `ToSchema` does not see through, so the OpenAPI document would
/// show the variant names instead.)
macro_rules! provider_kinds {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal, $name:tt;)+) => {
        /// Which provider signs a source's webhooks. The snake_case names
        /// are part of the public API (SPEC §8) and are stored in the
        /// database.
        ///
        /// Stored by an explicit, stable code ([`ProviderKind::code`]), never
        /// by the position of a variant, so variants may be reordered freely;
        /// a new provider takes the next unused code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub enum ProviderKind {
            $($(#[doc = $doc])+ #[serde(rename = $name)] $variant,)+
        }

        impl ProviderKind {
            /// Every provider, for listings and round-trip tests.
            pub const ALL: [ProviderKind; [$(ProviderKind::$variant,)+].len()] =
                [$(ProviderKind::$variant,)+];

            /// The stored code. These equal the variant positions of
            /// releases that stored postcard's variant index (a one-byte
            /// varint below 128), so existing data reads unchanged. Never
            /// reuse or change a code.
            pub fn code(self) -> u8 {
                match self {
                    $(ProviderKind::$variant => $code,)+
                }
            }

            /// The public (serde) name, e.g. `standard_webhooks`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProviderKind::$variant => $name,)+
                }
            }
        }
    };
}

provider_kinds! {
    /// `Stripe-Signature` (`t=..,v1=..`), secret used as-is.
    Stripe = 0, "stripe";
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github = 1, "github";
    /// `X-Shopify-Hmac-Sha256: <base64>`.
    Shopify = 2, "shopify";
    /// `X-Slack-Signature: v0=<hex>` with `X-Slack-Request-Timestamp`.
    Slack = 3, "slack";
    /// Standard Webhooks `webhook-*` headers, `whsec_<base64>` secret.
    StandardWebhooks = 4, "standard_webhooks";
    /// Svix: Standard Webhooks under `svix-*` headers (falls back to
    /// `webhook-*`).
    Svix = 5, "svix";
    /// HMAC-SHA256 of the body as a [`GenericHmacConfig`] describes.
    GenericHmac = 6, "generic_hmac";
    /// No verification (testing only).
    None = 7, "none";
    /// `Paddle-Signature: ts=..;h1=..` (Paddle Billing), 5 s window.
    Paddle = 8, "paddle";
    /// `Linear-Signature: <hex>` with the body's `webhookTimestamp`.
    Linear = 9, "linear";
    /// `x-square-hmacsha256-signature: <base64>` over the public URL and
    /// the body.
    Square = 10, "square";
    /// `X-Twilio-Signature: <base64>` HMAC-SHA1 over the public URL and the
    /// form parameters (or `bodySHA256` for JSON bodies).
    Twilio = 11, "twilio";
    /// `x-zm-signature: v0=<hex>` over `"v0:{x-zm-request-timestamp}:" +
    /// body`; answers `endpoint.url_validation`.
    Zoom = 12, "zoom";
    /// `X-Hub-Signature: sha1=<hex>`, HMAC-SHA1 of the body.
    Intercom = 13, "intercom";
    /// `Twitch-Eventsub-Message-Signature: sha256=<hex>` over message id +
    /// timestamp + body; answers `webhook_callback_verification`.
    Twitch = 14, "twitch";
    /// `X-Signature-Ed25519: <hex>` over `X-Signature-Timestamp` + body,
    /// verified with the application's hex Ed25519 public key; answers PINGs.
    Discord = 15, "discord";
    /// Signature inside the JSON body (`signature.{timestamp,token,signature}`),
    /// hex HMAC-SHA256 of `timestamp + token`; tokens are single-use.
    Mailgun = 16, "mailgun";
    /// `X-Twilio-Email-Event-Webhook-Signature`: ECDSA P-256 / SHA-256 (base64
    /// DER) over the timestamp header + body, with the base64 SPKI public key.
    Sendgrid = 17, "sendgrid";
}

impl ProviderKind {
    /// The provider a stored code names, if this release knows it.
    pub fn from_code(code: u8) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|p| p.code() == code)
    }
}

/// How a `generic_hmac` source's requests are signed and described.
///
/// Stored with postcard, so no `skip_serializing_if`/`flatten`/`untagged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericHmacConfig {
    /// Header carrying the signature, e.g. `X-Signature`.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
    )]
    pub signature_header: String,
    /// `hex` or `base64`.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// Text before the signature in the header, e.g. `sha256=`.
    #[serde(default)]
    #[schema(max_length = 64, pattern = "^[!-~]*$")]
    pub prefix: Option<String>,
    /// JSON pointer (RFC 6901) to the event type in the body, e.g. `/type`.
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^/")]
    pub event_type_pointer: Option<String>,
    /// Header carrying the event type (used when no pointer is set).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
    )]
    pub event_type_header: Option<String>,
    /// Header carrying the provider's event id, for de-duplication.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
    )]
    pub event_id_header: Option<String>,
    /// JSON pointer to the provider's event id (used when no header is set).
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^/")]
    pub event_id_pointer: Option<String>,
}

/// Text encoding of a generic HMAC signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Hexadecimal, either case.
    #[default]
    Hex,
    /// Base64, standard or URL-safe, padding optional.
    Base64,
}

impl SignatureEncoding {
    /// The public (serde) name.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureEncoding::Hex => "hex",
            SignatureEncoding::Base64 => "base64",
        }
    }
}

/// Serde adapter that stores a [`ProviderKind`] as its stable code (use with
/// `#[serde(with = "stored_code")]` on stored records; the API keeps the
/// snake_case names).
pub mod stored_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ProviderKind;

    /// Writes the code.
    pub fn serialize<S: Serializer>(kind: &ProviderKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(kind.code())
    }

    /// Reads a code; an unknown one is an error (data from a newer release).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ProviderKind, D::Error> {
        let code = u8::deserialize(d)?;
        ProviderKind::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown provider code {code}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What older releases wrote: postcard's variant index.
    #[derive(Serialize)]
    struct ByIndex(ProviderKind);

    #[derive(Serialize, Deserialize)]
    struct ByCode(#[serde(with = "stored_code")] ProviderKind);

    #[test]
    fn stored_codes_read_what_older_releases_wrote() {
        for kind in ProviderKind::ALL {
            let old = postcard::to_stdvec(&ByIndex(kind)).unwrap();
            let new = postcard::to_stdvec(&ByCode(kind)).unwrap();
            assert_eq!(old, new, "{kind:?}");
            let back: ByCode = postcard::from_bytes(&old).unwrap();
            assert_eq!(back.0, kind);
        }
        let unknown: Result<ByCode, _> = postcard::from_bytes(&[200]);
        assert!(unknown.is_err());
    }

    /// The API, the OpenAPI document and `as_str` all use the same names.
    #[test]
    fn public_names_agree_everywhere() {
        let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
        let json: Vec<String> = ProviderKind::ALL
            .iter()
            .map(|k| {
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(json, names);
        let schema =
            serde_json::to_value(<ProviderKind as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(names));
        for name in names {
            let back: ProviderKind = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(back.as_str(), name);
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<u8> = ProviderKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ProviderKind::ALL.len());
    }
}
