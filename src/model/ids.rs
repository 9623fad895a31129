//! Prefixed, time-sortable identifiers (`src_01J...`).
//!
//! Internally an id is a ULID held as `u128`, so redb keys sort by creation
//! time and "newest first" is a reverse range scan. Each kind of thing has
//! its own newtype ([`SourceId`], [`DestinationId`], ...), so a destination
//! id cannot be passed where a source id belongs, and its text form carries
//! a prefix saying what it names: a destination id pasted where a source id
//! belongs is a clean 404 rather than a surprise.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

/// A new raw ULID, strictly greater than every one made before in this
/// process, so ids made in the same millisecond still sort in creation order.
fn new_ulid() -> u128 {
    let mut guard = match GENERATOR.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let generator = guard.get_or_insert_with(Generator::new);
    // The generator only fails when 2^80 ids are made in one millisecond.
    generator
        .generate()
        .map(|u| u.0)
        .unwrap_or_else(|_| Ulid::new().0)
}

/// A new id of whichever kind the context asks for (or a bare `u128`),
/// greater than every id made before in this process. Each id type's own
/// `new()` says the same more plainly; this one lets generic code and tests
/// make "some unknown id" of any kind.
pub fn new_id<T: RawId>() -> T {
    T::from_raw(new_ulid())
}

/// Parses `prefix` followed by exactly one 26-character ULID.
fn parse_prefixed(prefix: &str, text: &str) -> Option<u128> {
    let rest = text.strip_prefix(prefix)?;
    if rest.len() != 26 {
        return None;
    }
    Ulid::from_string(rest).ok().map(|u| u.0)
}

/// Any id as the raw ULID a storage backend keys by, and back.
///
/// Lets a backend's row/key helpers be written once for every id type
/// (and for the bare `u128` of cursors and scan bounds); nothing above the
/// storage layer needs it.
pub trait RawId: Copy {
    /// Wraps a raw ULID read from storage.
    fn from_raw(raw: u128) -> Self;
    /// The raw ULID to store or key by.
    fn raw(self) -> u128;
}

impl RawId for u128 {
    fn from_raw(raw: u128) -> Self {
        raw
    }
    fn raw(self) -> u128 {
        self
    }
}

/// What every public id type offers generically: parsing its text form
/// and naming its kind, so a URL segment can be read as "an id of kind T"
/// with one 404 message per kind.
pub trait PublicId: RawId + std::fmt::Display {
    /// What the id names, for messages ("no such source").
    const NOUN: &'static str;
    /// Parses the public form; `None` for anything else.
    fn parse(text: &str) -> Option<Self>;
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $noun:literal) => {
        $(#[$doc])*
        ///
        /// Serialized exactly like the bare `u128` (`serde(transparent)`), so
        /// stored records keep their bytes.
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u128);

        impl $name {
            /// The public prefix before the ULID, including the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, greater than every id made before in this process.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(new_ulid())
            }

            /// Wraps a raw ULID; for storage backends' keys and columns only.
            pub const fn from_u128(raw: u128) -> Self {
                Self(raw)
            }

            /// The raw ULID; for storage backends' keys and columns only.
            pub const fn as_u128(self) -> u128 {
                self.0
            }

            /// Parses the public form; `None` for anything else (including
            /// another kind's id), which callers answer with 404.
            pub fn parse(text: &str) -> Option<Self> {
                parse_prefixed(Self::PREFIX, text).map(Self)
            }

            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn timestamp_ms(self) -> u64 {
                Ulid(self.0).timestamp_ms()
            }
        }

        impl PublicId for $name {
            const NOUN: &'static str = $noun;
            fn parse(text: &str) -> Option<Self> {
                $name::parse(text)
            }
        }

        impl RawId for $name {
            fn from_raw(raw: u128) -> Self {
                Self(raw)
            }
            fn raw(self) -> u128 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}{}", Self::PREFIX, Ulid(self.0))
            }
        }
    };
}

define_id!(
    /// An API key's id (`key_...`).
    ApiKeyId,
    "key_",
    "API key"
);
define_id!(
    /// A source's id (`src_...`).
    SourceId,
    "src_",
    "source"
);
define_id!(
    /// A destination's id (`dst_...`).
    DestinationId,
    "dst_",
    "destination"
);
define_id!(
    /// An event's id (`evt_...`).
    EventId,
    "evt_",
    "event"
);
define_id!(
    /// A delivery's id (`dlv_...`).
    DeliveryId,
    "dlv_",
    "delivery"
);
define_id!(
    /// An audit log entry's id (`aud_...`).
    AuditId,
    "aud_",
    "audit log entry"
);
define_id!(
    /// A bulk replay job's id (`rpl_...`).
    ReplayId,
    "rpl_",
    "replay"
);

impl DeliveryId {
    /// The id of the `index`-th delivery an event fans out to at ingest,
    /// derived from the event's id instead of drawn at random.
    ///
    /// Why: the redb backend acknowledges an event once it is in the
    /// write-ahead log and rebuilds its deliveries from the log after a
    /// crash; deriving the ids makes that rebuild give every delivery the
    /// id it had before (the one the API showed). The event's timestamp is
    /// kept and its random part shifted up 16 bits to make room for the
    /// index, so these ids still sort by event (deliveries of one
    /// destination stay in event order) and two events collide only if
    /// their random parts agree in 64 bits.
    pub fn for_fan_out(event: EventId, index: u16) -> DeliveryId {
        const RANDOM_BITS: u32 = 80;
        let raw = event.as_u128();
        let time = raw >> RANDOM_BITS;
        let random = raw & ((1u128 << RANDOM_BITS) - 1);
        let shifted = (random << 16) & ((1u128 << RANDOM_BITS) - 1);
        DeliveryId((time << RANDOM_BITS) | shifted | u128::from(index))
    }
}

/// The smallest ULID of a millisecond (Unix ms; negative counts as 0): a
/// key bound for "received at or after" on tables keyed by ULID.
pub fn ulid_floor(ms: i64) -> u128 {
    u128::from(ms.max(0) as u64) << 80
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[test]
    fn fan_out_ids_are_stable_unique_and_sorted_by_event() {
        let first = EventId::new();
        let second = EventId::new();
        let a0 = DeliveryId::for_fan_out(first, 0);
        assert_eq!(a0, DeliveryId::for_fan_out(first, 0), "derived, not drawn");
        assert_ne!(a0, DeliveryId::for_fan_out(first, 1));
        assert_eq!(a0.timestamp_ms(), first.timestamp_ms());
        // One destination's deliveries keep the order of their events.
        assert!(DeliveryId::for_fan_out(first, 7) < DeliveryId::for_fan_out(second, 7));
        assert!(DeliveryId::for_fan_out(first, 65535) < DeliveryId::for_fan_out(second, 0));
    }

    #[test]
    fn ids_round_trip_and_keep_their_kind() {
        let id = SourceId::new();
        let text = id.to_string();
        assert!(text.starts_with("src_"));
        assert_eq!(text.len(), 4 + 26);
        assert_eq!(SourceId::parse(&text), Some(id));
        assert_eq!(DestinationId::parse(&text), None);
        assert_eq!(SourceId::parse("src_"), None);
        assert_eq!(SourceId::parse("src_!!!!!!!!!!!!!!!!!!!!!!!!!!"), None);
        assert_eq!(SourceId::parse("src_ü"), None);
        let raw = id.as_u128();
        assert_eq!(
            DestinationId::from_u128(raw).to_string(),
            format!("dst_{}", Ulid(raw))
        );
        assert_eq!(EventId::from_u128(raw).to_string()[..4], *"evt_");
        assert_eq!(DeliveryId::from_u128(raw).to_string()[..4], *"dlv_");
        assert_eq!(ApiKeyId::from_u128(raw).to_string()[..4], *"key_");
        assert_eq!(ReplayId::from_u128(raw).to_string()[..4], *"rpl_");
    }

    #[test]
    fn ids_increase_within_one_millisecond() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn timestamp_is_the_ulids() {
        let raw = Ulid::from_parts(1_700_000_000_123, 42).0;
        assert_eq!(EventId::from_u128(raw).timestamp_ms(), 1_700_000_000_123);
    }

    /// Stored records must keep their bytes: a record holding the newtypes
    /// encodes exactly like one holding bare `u128`s.
    #[test]
    fn newtypes_encode_like_bare_u128() {
        #[derive(Serialize)]
        struct WithIds {
            id: DeliveryId,
            event_id: EventId,
            source_id: SourceId,
            destinations: Vec<DestinationId>,
            key: Option<ApiKeyId>,
            name: String,
        }
        #[derive(Serialize)]
        struct Raw {
            id: u128,
            event_id: u128,
            source_id: u128,
            destinations: Vec<u128>,
            key: Option<u128>,
            name: String,
        }
        let (a, b, c, d, e) = (
            u128::MAX - 7,
            Ulid::from_parts(1_700_000_000_000, 1).0,
            3,
            1 << 100,
            300,
        );
        let new = WithIds {
            id: DeliveryId::from_u128(a),
            event_id: EventId::from_u128(b),
            source_id: SourceId::from_u128(c),
            destinations: vec![DestinationId::from_u128(d), DestinationId::from_u128(e)],
            key: Some(ApiKeyId::from_u128(e)),
            name: "x".into(),
        };
        let raw = Raw {
            id: a,
            event_id: b,
            source_id: c,
            destinations: vec![d, e],
            key: Some(e),
            name: "x".into(),
        };
        let new_bytes = postcard::to_allocvec(&new).unwrap();
        assert_eq!(new_bytes, postcard::to_allocvec(&raw).unwrap());
        assert!(!new_bytes.is_empty());
    }
}
