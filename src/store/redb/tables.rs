//! redb table definitions: the on-disk layout in one place.
//!
//! Ids are ULIDs as `u128`, so every id-keyed table is in creation order.

use redb::TableDefinition;

/// API key id → [`super::records::ApiKeyRecord`].
pub const API_KEYS: TableDefinition<u128, &[u8]> = TableDefinition::new("api_keys");
/// SHA-256 of a key → API key id: authentication is one point lookup.
pub const API_KEY_HASHES: TableDefinition<&[u8], u128> = TableDefinition::new("api_key_hashes");
/// Source id → [`super::records::SourceRecord`].
pub const SOURCES: TableDefinition<u128, &[u8]> = TableDefinition::new("sources");
/// Ingest slug → source id.
pub const SOURCE_SLUGS: TableDefinition<&str, u128> = TableDefinition::new("source_slugs");
/// (source id, destination id) → [`super::records::DestinationRecord`];
/// keyed by source first so a source's destinations are one range.
pub const DESTINATIONS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("destinations");
/// Event id → [`super::records::EventRecord`] (headers and raw body; immutable).
pub const EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("events");
/// (source id, event id) → [`super::records::EventSummary`]: a source's
/// events in time order without reading bodies (listing, retention).
pub const SOURCE_EVENTS: TableDefinition<(u128, u128), &[u8]> =
    TableDefinition::new("source_events");
/// (source id, provider event id) → event id, for de-duplication.
pub const DEDUP: TableDefinition<(u128, &str), u128> = TableDefinition::new("dedup");
/// Delivery id → [`super::records::DeliveryRecord`].
pub const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("deliveries");
/// (event id, delivery id) → (): an event's deliveries *other than its
/// first fan-out* (replays, retries of a whole event).
///
/// The deliveries an ingest creates have ids derived from the event's
/// ([`crate::model::ids::DeliveryId::for_fan_out`]), so they are already
/// one key range of [`DELIVERIES`]; leaving their rows out saves a B-tree
/// insert per delivery on the ingest path (issue #14). Databases written
/// before that change also hold rows for fan-out deliveries; readers go
/// through `events::stored_deliveries_of`, which takes both and lists each
/// delivery once.
pub const EVENT_DELIVERIES: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("event_deliveries");
/// (destination id, due time in Unix ms, delivery id) → event id: the
/// durable delay queue, one contiguous range per destination so a slow
/// destination's backlog never sits in front of another's. Everything in it
/// is pending; after a crash it is simply due again.
pub const DUE: TableDefinition<(u128, u64, u128), u128> = TableDefinition::new("due");
/// (delivery id, attempt number) → [`super::records::AttemptRecord`].
pub const ATTEMPTS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("attempts");
/// SHA-256 of a dashboard session id → the dashboard's session record
/// (`crate::dashboard::session`). Only the hash is stored, so a copy of the
/// database does not sign anyone in.
pub const DASHBOARD_SESSIONS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("dashboard_sessions");

/// (API key id, session created at ms, SHA-256 of the session id) → ():
/// a key's sessions oldest first, so a sign-in can cap and sweep that
/// key's sessions without scanning everyone's.
pub const KEY_SESSIONS: TableDefinition<(u128, i64, &[u8]), ()> =
    TableDefinition::new("dashboard_key_sessions");

/// `"probe"` → when the writer last proved a reopened file writable
/// (Unix ms). Nothing reads it; it exists so that proof is a real commit.
pub const HEALTH: TableDefinition<&str, i64> = TableDefinition::new("health");

/// (source id, replay id) → [`super::records::ReplayRecord`]: bulk replay
/// jobs, keyed by source first so a source's jobs are one range (newest
/// last), and small enough to scan whole for the running ones at start-up.
pub const REPLAYS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("replays");

/// `APPLIED_LSN` → the last write-ahead log record the database holds, as
/// of its last durable commit (a checkpoint): where replay starts after a
/// crash. Not backed up: a restored database starts a new log.
pub const WAL_STATE: TableDefinition<&str, u64> = TableDefinition::new("wal_state");
/// The one key of [`WAL_STATE`].
pub const APPLIED_LSN: &str = "applied_lsn";

/// Audit entry id (a ULID, so creation order) → the entry as JSON
/// ([`crate::store::AuditEntry::encode`]).
pub const AUDIT_LOG: TableDefinition<u128, &[u8]> = TableDefinition::new("audit_log");

/// Alert id → [`crate::store::AlertRecord`] as JSON: the durable queue of
/// alerts to `alerts.url`. Small (alerts are coalesced), so it is scanned.
pub const ALERTS: TableDefinition<u128, &[u8]> = TableDefinition::new("alerts");

/// Unix minute → [`crate::store::MinuteStats`] as JSON: the overview's
/// counters, one row per minute, kept [`crate::store::STATS_KEEP_MINUTES`].
pub const MINUTE_STATS: TableDefinition<i64, &[u8]> = TableDefinition::new("minute_stats");
