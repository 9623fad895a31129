//! Signatures as a provider or a receiver computes them, written here from
//! the providers' documentation with plain `hmac`/`sha2`: never with
//! Krafter's own signer or verifier, so that a test catches a mistake on
//! either side instead of agreeing with it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of the concatenated `parts` under `key` (the building block
/// of nearly every provider's scheme).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The Unix time in seconds, for signature timestamps.
pub fn unix_secs() -> i64 {
    unix_ms() / 1000
}

/// The Unix time in milliseconds (the SPEC's time unit).
pub fn unix_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

/// A `Stripe-Signature` header for `body` at Unix time `t`: `t=<t>,v1=` and
/// the hex HMAC of `"{t}." + body` under the secret used as-is (Stripe's
/// documented scheme).
pub fn stripe_signature_at(secret: &str, t: i64, body: &[u8]) -> String {
    let sig = hmac_sha256(secret.as_bytes(), &[format!("{t}.").as_bytes(), body]);
    format!("t={t},v1={}", hex::encode(sig))
}

/// A `Stripe-Signature` header for `body` at the current time.
pub fn stripe_signature(secret: &str, body: impl AsRef<[u8]>) -> String {
    stripe_signature_at(secret, unix_secs(), body.as_ref())
}

/// A Standard Webhooks signature (what Krafter puts in
/// `webhook-signature` and what Standard Webhooks/Svix providers send):
/// `v1,` + base64 of the HMAC of `"{id}.{timestamp}." + body` under the
/// base64-decoded secret after `whsec_`.
pub fn standard_webhooks_signature(
    secret: &str,
    id: &str,
    timestamp: impl std::fmt::Display,
    body: &[u8],
) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("the secret after whsec_ is base64");
    let sig = hmac_sha256(&key, &[format!("{id}.{timestamp}.").as_bytes(), body]);
    format!("v1,{}", STANDARD.encode(sig))
}

/// Whether any of the space-separated signatures in a `webhook-signature`
/// header is the one `secret` gives (a receiver accepts any that matches,
/// which is how rotation keeps working).
pub fn standard_webhooks_verifies(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
) -> bool {
    let want = standard_webhooks_signature(secret, id, timestamp, body);
    header.split(' ').any(|s| s == want)
}
