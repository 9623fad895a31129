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
/// Version 2 added [`DeliveryOptions`] at the end; version 1 records
/// (written before SPEC §13) read with the default options.
impl Record for DestinationRecord {
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode_or_upgrade(
            "DestinationRecord",
            Self::VERSION,
            bytes,
            DestinationRecordV1::upgrade,
        )
    }
}

/// Decodes a record written at `current` version, or at the version before
/// it as `Old`, upgraded: the shape of every record with one older layout.
fn decode_or_upgrade<T, Old>(
    name: &str,
    current: u8,
    bytes: &[u8],
    upgrade: fn(Old) -> T,
) -> Result<T, StoreError>
where
    T: serde::de::DeserializeOwned,
    Old: serde::de::DeserializeOwned,
{
    let corrupt = |e: postcard::Error| StoreError::Corrupt(format!("{name}: {e}"));
    match bytes.split_first() {
        Some((v, body)) if *v == current => postcard::from_bytes(body).map_err(corrupt),
        Some((v, body)) if *v + 1 == current => postcard::from_bytes::<Old>(body)
            .map(upgrade)
            .map_err(corrupt),
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "{name}: unknown record version {v}"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// A destination as record version 1 laid it out (before delivery options).
#[derive(serde::Serialize, serde::Deserialize)]
struct DestinationRecordV1 {
    id: crate::model::ids::DestinationId,
    source_id: crate::model::ids::SourceId,
    url: String,
    event_filter: Vec<String>,
    enabled: bool,
    secret: Vec<u8>,
    previous_secret: Option<RetiredSecret>,
    rate_limit: Option<u32>,
    disabled_reason: Option<String>,
    disabled_at_ms: Option<i64>,
    failing_since_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl DestinationRecordV1 {
    fn upgrade(self) -> DestinationRecord {
        DestinationRecord {
            id: self.id,
            source_id: self.source_id,
            url: self.url,
            event_filter: self.event_filter,
            enabled: self.enabled,
            secret: self.secret,
            previous_secret: self.previous_secret,
            rate_limit: self.rate_limit,
            disabled_reason: self.disabled_reason,
            disabled_at_ms: self.disabled_at_ms,
            failing_since_ms: self.failing_since_ms,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            options: DeliveryOptions::default(),
        }
    }
}
/// Version 2 added the ingest span's trace context at the end (SPEC §15);
/// version 1 events (and write-ahead log records written before) read
/// with none.
impl Record for EventRecord {
    const VERSION: u8 = 2;

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode_or_upgrade("EventRecord", Self::VERSION, bytes, EventRecordV1::upgrade)
    }
}

/// An event as record version 1 laid it out (before the trace context).
#[derive(serde::Serialize, serde::Deserialize)]
struct EventRecordV1 {
    id: crate::model::ids::EventId,
    source_id: crate::model::ids::SourceId,
    received_at_ms: i64,
    event_type: String,
    provider_event_id: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

impl EventRecordV1 {
    fn upgrade(self) -> EventRecord {
        EventRecord {
            id: self.id,
            source_id: self.source_id,
            received_at_ms: self.received_at_ms,
            event_type: self.event_type,
            provider_event_id: self.provider_event_id,
            headers: self.headers,
            body: self.body,
            trace: None,
        }
    }
}
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

    /// A destination stored by a release before delivery options (record
    /// version 1) still reads, with the default options; new ones carry
    /// their options through a round trip.
    #[test]
    fn old_destination_records_still_decode() {
        use crate::model::ids::{DestinationId, SourceId};
        let old = DestinationRecordV1 {
            id: DestinationId::from_u128(3),
            source_id: SourceId::from_u128(4),
            url: "http://127.0.0.1:9/hook".into(),
            event_filter: vec!["invoice.*".into()],
            enabled: true,
            secret: vec![1, 2, 3],
            previous_secret: Some(RetiredSecret {
                sealed: vec![9],
                until_ms: 77,
            }),
            rate_limit: Some(5),
            disabled_reason: None,
            disabled_at_ms: None,
            failing_since_ms: Some(11),
            created_at_ms: 100,
            updated_at_ms: 200,
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_stdvec(&old).unwrap());
        let read = DestinationRecord::decode(&bytes).unwrap();
        assert_eq!(read.url, "http://127.0.0.1:9/hook");
        assert_eq!(read.event_filter, vec!["invoice.*".to_string()]);
        assert_eq!(read.rate_limit, Some(5));
        assert_eq!(read.failing_since_ms, Some(11));
        assert_eq!(read.previous_secret.as_ref().unwrap().until_ms, 77);
        assert_eq!(read.updated_at_ms, 200);
        assert_eq!(read.options, DeliveryOptions::default());

        let mut new = read.clone();
        new.options.ordering = Ordering::Fifo;
        new.options.timeout_ms = Some(1500);
        new.options.headers = vec![("x-team".into(), "payments".into())];
        new.options.auth = Some(AuthRecord::Bearer { token: vec![7; 8] });
        new.options.body_filter = Some(r#"{"amount":{"$gt":10}}"#.into());
        let encoded = new.encode();
        assert_eq!(encoded[0], 2);
        assert_eq!(
            DestinationRecord::decode(&encoded).unwrap().options,
            new.options
        );
        assert!(DestinationRecord::decode(&[3, 0]).is_err());
    }

    /// An event as releases before tracing wrote it (record version 1), and
    /// before `serde_bytes`: the body as a plain sequence of bytes.
    #[derive(serde::Serialize)]
    struct EventWithPlainBody {
        id: crate::model::ids::EventId,
        source_id: crate::model::ids::SourceId,
        received_at_ms: i64,
        event_type: String,
        provider_event_id: Option<String>,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    }

    /// An event stored (or logged to the write-ahead log) by a release
    /// before tracing (record version 1), even one from before
    /// `serde_bytes`, still reads with every body byte and no trace
    /// context; new ones carry theirs through a round trip.
    #[test]
    fn old_event_records_still_decode() {
        use crate::model::ids::{EventId, SourceId};
        use crate::model::trace::TraceContext;
        let old = EventWithPlainBody {
            id: EventId::from_u128(5),
            source_id: SourceId::from_u128(6),
            received_at_ms: 1_700_000_000_000,
            event_type: "invoice.paid".into(),
            provider_event_id: Some("evt_1".into()),
            headers: vec![("x-a".into(), b"\xff\x00".to_vec())],
            body: (0..=255u8).chain(0..=255u8).collect(),
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_stdvec(&old).unwrap());
        let read = EventRecord::decode(&bytes).unwrap();
        assert_eq!(read.id, EventId::from_u128(5));
        assert_eq!(read.event_type, "invoice.paid");
        assert_eq!(read.provider_event_id.as_deref(), Some("evt_1"));
        assert_eq!(read.headers, old.headers);
        assert_eq!(read.body, old.body);
        assert_eq!(read.trace, None);

        let mut new = read.clone();
        new.trace = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert!(new.trace.is_some());
        let encoded = new.encode();
        assert_eq!(encoded[0], 2);
        let back = EventRecord::decode(&encoded).unwrap();
        assert_eq!(back.trace, new.trace);
        assert_eq!(back.body, new.body);
        // A version-2 record without a context reads back without one.
        let none = read.encode();
        assert_eq!(EventRecord::decode(&none).unwrap().trace, None);
        assert!(EventRecord::decode(&[3, 0]).is_err());
        assert!(EventRecord::decode(&[1, 0xff]).is_err());
    }
}
