//! What is stored, and how.
//!
//! Values are `[version byte] + postcard`. redb has no schema migration, so
//! the version byte is what lets a later release read an older record: a
//! new layout gets a new version and a decoder for the old one.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;
pub use crate::model::records::*;

/// Encoding of a stored record.
pub trait Record: Serialize + DeserializeOwned {
    /// The layout version written by this release.
    const VERSION: u8 = 1;

    /// Bytes to store.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![Self::VERSION];
        // postcard cannot fail on our plain structs when writing to a Vec;
        // the empty fallback would be caught as corrupt on read.
        if let Ok(body) = postcard::to_stdvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Reads stored bytes back.
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.split_first() {
            Some((&v, body)) if v == Self::VERSION => postcard::from_bytes(body).map_err(|e| {
                StoreError::Corrupt(format!("{}: {e}", std::any::type_name::<Self>()))
            }),
            Some((v, _)) => Err(StoreError::Corrupt(format!(
                "{}: unknown record version {v}",
                std::any::type_name::<Self>()
            ))),
            None => Err(StoreError::Corrupt("empty record".into())),
        }
    }
}

impl Record for ApiKeyRecord {}
impl Record for SourceRecord {}
impl Record for DestinationRecord {}
impl Record for EventRecord {}
impl Record for EventSummary {}
impl Record for DeliveryRecord {}
impl Record for AttemptRecord {}
impl Record for ReplayRecord {}
impl Record for SessionRecord {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_a_version_byte_and_refuse_unknown_versions() {
        let rec = ApiKeyRecord {
            id: crate::model::ids::ApiKeyId::from_u128(7),
            name: "ci".into(),
            scopes: vec![Scope::Write],
            prefix: "krf_abcd".into(),
            hash: [1; 32],
            created_at_ms: 5,
        };
        let mut bytes = rec.encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(ApiKeyRecord::decode(&bytes).unwrap().name, "ci");
        bytes[0] = 9;
        assert!(ApiKeyRecord::decode(&bytes).is_err());
        assert!(ApiKeyRecord::decode(&[]).is_err());
        assert!(ApiKeyRecord::decode(&[1, 0xff]).is_err());
    }
}
