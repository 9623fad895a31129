//! Prefixed, time-sortable identifiers (`src_01J...`).
//!
//! Internally an id is a ULID held as `u128`, so redb keys sort by creation
//! time and "newest first" is a reverse range scan. Outside, the prefix says
//! what kind of thing an id names, so a destination id pasted where a source
//! id belongs is a clean 404 rather than a surprise.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// The kinds of things that have ids, each with its public prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    ApiKey,
    Source,
    Destination,
    Event,
    Delivery,
    /// A bulk replay job.
    Replay,
}

impl IdKind {
    /// The prefix before the ULID, including the underscore.
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::ApiKey => "key_",
            IdKind::Source => "src_",
            IdKind::Destination => "dst_",
            IdKind::Event => "evt_",
            IdKind::Delivery => "dlv_",
            IdKind::Replay => "rpl_",
        }
    }
}

static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

/// A new id, strictly greater than every id made before in this process,
/// so ids made in the same millisecond still sort in creation order.
pub fn new_id() -> u128 {
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

/// The public form of an id.
pub fn format_id(kind: IdKind, id: u128) -> String {
    format!("{}{}", kind.prefix(), Ulid(id))
}

/// Parses a public id of the given kind; `None` for anything else, which
/// callers answer with 404.
pub fn parse_id(kind: IdKind, text: &str) -> Option<u128> {
    let rest = text.strip_prefix(kind.prefix())?;
    if rest.len() != 26 {
        return None;
    }
    Ulid::from_string(rest).ok().map(|u| u.0)
}

/// Milliseconds since the Unix epoch encoded in an id.
pub fn id_timestamp_ms(id: u128) -> u64 {
    Ulid(id).timestamp_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_kind() {
        let id = new_id();
        let text = format_id(IdKind::Source, id);
        assert!(text.starts_with("src_"));
        assert_eq!(text.len(), 4 + 26);
        assert_eq!(parse_id(IdKind::Source, &text), Some(id));
        assert_eq!(parse_id(IdKind::Destination, &text), None);
        assert_eq!(parse_id(IdKind::Source, "src_"), None);
        assert_eq!(
            parse_id(IdKind::Source, "src_!!!!!!!!!!!!!!!!!!!!!!!!!!"),
            None
        );
        assert_eq!(parse_id(IdKind::Source, "src_ü"), None);
    }

    #[test]
    fn ids_increase_within_one_millisecond() {
        let ids: Vec<u128> = (0..1000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
