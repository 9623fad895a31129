//! Storage: the one seam between the product and the engine that keeps its
//! data.
//!
//! Everything above this module (ingest, delivery, operations, the API, the
//! dashboard, the CLI) talks to [`Store`] in intents — "ingest this event
//! with its fan-out", "record this attempt", "take what is due for this
//! destination" — never in transactions, tables or rows. Which engine
//! answers is decided once, when the store is opened; today that is the
//! embedded redb file (`store/redb`) by default, and a second backend is
//! one more variant of `Backend` plus its folder, with no change outside
//! `store`: `storage.backend = "postgres"` picks `store/postgres`.
//!
//! Every backend keeps the same contract, proven by one conformance suite
//! (`src/store/conformance.rs`): a method that answers `Ok` after a
//! change has made it durable; a fan-out sees each destination fully in or
//! fully out; cursors stay stable while new rows arrive.
//!
//! Why an enum and not a trait object: the hot paths (ingest, due queue,
//! attempt recording) call the store many thousand times a second, and a
//! `match` on one variant costs nothing, while `async` methods on a `dyn`
//! trait would box every future.

pub mod audit;
pub mod crypto;
mod error;
mod postgres;
mod redb;
pub mod types;

#[cfg(test)]
mod conformance;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

pub use audit::{AuditActor, AuditEntry, AuditQuery};
pub use error::StoreError;
pub use types::*;

use crate::config::{StorageBackend, StorageConfig};
use crate::metrics::Metrics;
use crate::model::ids::{ApiKeyId, DeliveryId, DestinationId, EventId, ReplayId, SourceId};
use crate::model::records::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DestinationRecord, EventRecord, EventSummary,
    ReplayRecord, SessionRecord, SourceRecord,
};

/// The open store; clones share one backend.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// The engines Krafter can keep its data in.
#[derive(Clone)]
enum Backend {
    /// One redb file in `storage.path` (the embedded default).
    Redb(Arc<redb::RedbStore>),
    /// A PostgreSQL database (`storage.postgres.url`), which several
    /// nodes may share.
    Postgres(Arc<postgres::PgStore>),
}

impl Store {
    /// Opens (creating on first start) the configured storage. Fails with
    /// [`StoreError::InUse`] when another process holds a redb file. A
    /// PostgreSQL store is migrated to this release's schema first; it must
    /// be opened inside a Tokio runtime.
    pub fn open(config: &StorageConfig, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let backend = match config.backend {
            StorageBackend::Redb => {
                Backend::Redb(Arc::new(redb::RedbStore::open(config, metrics)?))
            }
            StorageBackend::Postgres => {
                Backend::Postgres(Arc::new(postgres::PgStore::open(config, metrics)?))
            }
        };
        Ok(Store { backend })
    }

    /// Restores a backup made by [`Store::backup_to`] into `data_dir`
    /// (which must hold no data yet); returns the rows restored.
    pub fn restore(backup: &Path, data_dir: &Path) -> Result<u64, StoreError> {
        redb::restore(backup, data_dir)
    }

    /// Writes a consistent backup (one snapshot, plus the secrets key) to
    /// `dest`, a path that must not exist. Blocking: call off the async
    /// threads. [`StoreError::NotSupported`] on PostgreSQL (`pg_dump`).
    pub fn backup_to(&self, dest: &Path) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.backup_to(dest),
            Backend::Postgres(b) => b.backup_to(dest),
        }
    }

    /// Seals a secret for storage (destination and source secrets).
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        match &self.backend {
            Backend::Redb(b) => b.seal(plaintext),
            Backend::Postgres(b) => b.seal(plaintext),
        }
    }

    /// Opens a sealed secret.
    pub fn open_secret(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.backend {
            Backend::Redb(b) => b.open_secret(sealed),
            Backend::Postgres(b) => b.open_secret(sealed),
        }
    }

    /// The data directory (the bootstrap key file and backups go there).
    pub fn dir(&self) -> &Path {
        match &self.backend {
            Backend::Redb(b) => b.dir(),
            Backend::Postgres(b) => b.dir(),
        }
    }

    /// Bytes the store occupies on disk (PostgreSQL: the database's size,
    /// refreshed every half minute), for metrics.
    pub fn size_bytes(&self) -> u64 {
        match &self.backend {
            Backend::Redb(b) => b.file_size(),
            Backend::Postgres(b) => b.size_bytes(),
        }
    }

    /// False while the store cannot commit (a failed write being
    /// recovered); `/readyz` reports it and delivery pauses.
    pub fn is_healthy(&self) -> bool {
        match &self.backend {
            Backend::Redb(b) => b.is_healthy(),
            Backend::Postgres(b) => b.is_healthy(),
        }
    }

    /// A number that stays the same while no source, destination or key
    /// has changed, so a destination read earlier may be used again without
    /// a read; `None` when the backend cannot tell (several nodes: another
    /// one may change a destination at any time), and callers read again.
    pub fn settings_version(&self) -> Option<u64> {
        match &self.backend {
            Backend::Redb(b) => Some(b.settings_version()),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether several nodes may share this store (PostgreSQL): delivery
    /// then runs each destination under a lease ([`Store::claim_lanes`])
    /// and wake-ups travel between nodes ([`Store::announce_due`]).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Tells the other nodes that a destination has deliveries due (after
    /// the commit that queued them). Hints are gathered and sent together,
    /// outside any transaction; a lost hint only delays a delivery until
    /// the next poll. Nothing to do with one node.
    pub fn announce_due(&self, source_id: SourceId, destination_id: DestinationId) {
        match &self.backend {
            Backend::Redb(_) => {}
            Backend::Postgres(b) => b.announce_due(source_id, destination_id),
        }
    }

    /// The hints other nodes announce, for the delivery engine (the first
    /// caller gets them; `None` with one node).
    pub fn announcements(&self) -> Option<tokio::sync::mpsc::Receiver<Announcement>> {
        match &self.backend {
            Backend::Redb(_) => None,
            Backend::Postgres(b) => b.announcements(),
        }
    }

    /// Commits what is queued and stops background work.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Redb(b) => b.close().await,
            Backend::Postgres(b) => b.close().await,
        }
    }
}

/// Forwards each listed method to the backend. One line per method keeps
/// the contract readable in one place; the documentation of each intent is
/// here, its implementation in the backend's folder.
macro_rules! intents {
    ($(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match &self.backend {
                        Backend::Redb(b) => b.$name($($arg),*).await,
                        Backend::Postgres(b) => b.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

intents! {
    // ---- API keys ----

    /// Stores a new key (only its hash); `Conflict` if an identical key exists.
    fn create_api_key_audited(&self, key: ApiKeyRecord, audit: Option<AuditEntry>) -> ();
    /// The key whose SHA-256 is `hash` (compared in constant time), if any.
    fn api_key_by_hash(&self, hash: [u8; 32]) -> Option<ApiKeyRecord>;
    /// Keys, newest first, below the cursor `before`.
    fn list_api_keys(&self, before: Option<u128>, limit: usize) -> Page<ApiKeyRecord>;
    /// How many keys exist (the bootstrap key is made when there are none).
    fn count_api_keys(&self) -> u64;
    /// Stores `key` only if no API key exists yet, atomically (nodes
    /// starting at once make one bootstrap key); answers whether it did.
    fn create_first_api_key(&self, key: ApiKeyRecord) -> bool;
    /// Revokes a key and ends its dashboard sessions in the same commit.
    fn revoke_api_key_audited(&self, id: ApiKeyId, audit: Option<AuditEntry>) -> ();

    // ---- Audit log ----

    /// Audit entries, newest first, below the cursor `before`, that pass
    /// `query`. Every `*_audited` intent writes its entry in the same
    /// commit as its change: both are durable, or neither.
    fn list_audit(&self, query: AuditQuery, before: Option<u128>, limit: usize) -> Page<AuditEntry>;

    // ---- The alert queue (SPEC §15) ----

    /// Queues an alert durably (answers once it is stored).
    fn enqueue_alert(&self, alert: AlertRecord) -> ();
    /// Up to `limit` queued alerts due at `now_ms`, oldest first.
    fn due_alerts(&self, now_ms: i64, limit: usize) -> Vec<AlertRecord>;
    /// Removes a sent (or given up) alert, or stores its next attempt.
    fn settle_alert(&self, alert: AlertRecord, done: bool) -> ();

    // ---- Overview counters ----

    /// Adds `stats` into its minute's row (creating it) and drops rows
    /// older than [`STATS_KEEP_MINUTES`], in one commit.
    fn add_minute_stats(&self, stats: MinuteStats) -> ();
    /// The minute rows from `from_minute` on, oldest first.
    fn minute_stats(&self, from_minute: i64) -> Vec<MinuteStats>;
    /// A destination's pending deliveries (counted up to `max`) and the
    /// earliest due time among them (Unix ms).
    fn destination_backlog(&self, destination: DestinationId, max: usize) -> (u64, Option<i64>);

    // ---- Dashboard sessions ----

    /// Starts a session stored under `id_hash`; in the same commit the
    /// key's expired sessions go and, past `max_per_key`, its oldest.
    fn create_session(&self, id_hash: [u8; 32], session: SessionRecord, max_per_key: usize) -> ();
    /// A session that has not expired at `now_ms`, with its key (`None`
    /// when unknown, expired, or the key was revoked).
    fn live_session(&self, id_hash: [u8; 32], now_ms: i64) -> Option<(SessionRecord, ApiKeyRecord)>;
    /// Ends a session; ending one already gone is fine.
    fn end_session(&self, id_hash: [u8; 32], key_id: ApiKeyId, created_at_ms: i64) -> ();

    // ---- Sources ----

    /// Stores a new source; `Conflict` when its slug is taken.
    fn create_source_audited(&self, source: SourceRecord, audit: Option<AuditEntry>) -> ();
    /// One source.
    fn source(&self, id: SourceId) -> SourceRecord;
    /// The source an ingest slug names.
    fn source_by_slug(&self, slug: &str) -> SourceRecord;
    /// One source with how many destinations it has.
    fn source_with_destination_count(&self, id: SourceId) -> (SourceRecord, u64);
    /// Sources newest first, each with its number of destinations.
    fn list_sources(&self, before: Option<u128>, limit: usize) -> Page<(SourceRecord, u64)>;
    /// Applies `change` to a source; answers it with its destination count.
    fn update_source_audited(&self, id: SourceId, change: SourceChange, audit: Option<AuditEntry>) -> (SourceRecord, u64);
    /// Removes a source, its slug and destinations at once; its events and
    /// deliveries are purged afterwards by [`Store::purge_orphans`].
    fn delete_source_audited(&self, id: SourceId, audit: Option<AuditEntry>) -> ();

    // ---- Destinations ----

    /// Stores a new destination of an existing source; `LimitReached`
    /// when the source already has `max_per_source`.
    fn create_destination_audited(&self, destination: DestinationRecord, max_per_source: usize, audit: Option<AuditEntry>) -> ();
    /// One destination of a source.
    fn destination(&self, source_id: SourceId, id: DestinationId) -> DestinationRecord;
    /// A source's destinations, newest first (`NotFound` without the source).
    fn list_destinations(&self, source_id: SourceId, before: Option<u128>, limit: usize) -> Page<DestinationRecord>;
    /// Every destination of a source, oldest first (`NotFound` without the source).
    fn destinations_of_source(&self, source_id: SourceId) -> Vec<DestinationRecord>;
    /// Applies `change`; a destination that ends up disabled has its
    /// pending deliveries cancelled in the same commit.
    fn update_destination_audited(&self, source_id: SourceId, id: DestinationId, change: DestinationChange, audit: Option<AuditEntry>) -> DestinationUpdated;
    /// Removes a destination and cancels its pending deliveries; answers
    /// how many were cancelled.
    fn delete_destination_audited(&self, source_id: SourceId, id: DestinationId, audit: Option<AuditEntry>) -> u64;
    /// Every destination as (source id, destination id): the lanes to run.
    fn all_destination_ids(&self) -> Vec<(SourceId, DestinationId)>;

    // ---- Events ----

    /// Stores an inbound event with one pending delivery per enabled
    /// destination whose filter matches, or finds it a duplicate of the
    /// same provider event id. Destinations are read in the same commit,
    /// so one changed concurrently is fully in or fully out of the fan-out.
    fn ingest(&self, event: EventRecord) -> IngestOutcome;
    /// Stores a test event with a delivery to every enabled destination of
    /// its source (filters not applied, no dedup).
    fn store_test_event(&self, event: EventRecord) -> Vec<DeliveryRecord>;
    /// A page of a source's events, newest first, each with its
    /// deliveries (`NotFound` without the source).
    fn list_events(&self, source_id: SourceId, query: EventQuery, limit: usize) -> Page<ListedEvent>;
    /// A source's event ids with `after < id < before`, oldest first, of
    /// a type matching `type_pattern`: what the live stream (SPEC §14)
    /// sends next. `next` is the last id examined when the page was cut
    /// (continue after it); `None` means the whole range was examined.
    /// `NotFound` without the source.
    fn events_after(&self, source_id: SourceId, after: u128, before: u128, type_pattern: Option<String>, limit: usize) -> Page<EventId>;
    /// Events across every source (the overview), newest first, or those
    /// with an id / provider event id, each with its deliveries.
    fn search_events(&self, search: EventSearch, before: Option<u128>, limit: usize) -> Page<FoundEvent>;
    /// One event of a source with its body and deliveries.
    fn event_detail(&self, source_id: SourceId, event_id: EventId) -> (EventSummary, EventRecord, Vec<DeliveryRecord>);
    /// One event with its body (any source): what a delivery sends.
    fn event(&self, event_id: EventId) -> EventRecord;
    /// An event's deliveries, each with its attempts in order.
    fn deliveries_with_attempts(&self, source_id: SourceId, event_id: EventId) -> Vec<(DeliveryRecord, Vec<AttemptRecord>)>;
    /// How many events a source holds.
    fn event_count(&self, source_id: SourceId) -> u64;
    /// Queues a new delivery of a stored event to each of `destinations`
    /// that still exists and is enabled in the commit (checked there).
    fn replay_event_audited(&self, source_id: SourceId, event_id: EventId, destinations: Vec<DestinationId>, now_ms: i64, audit: Option<AuditEntry>) -> Vec<DeliveryRecord>;
    /// Makes a failed or waiting delivery of this event due now (see
    /// SPEC §10); `Conflict` for one that succeeded or was cancelled, or
    /// whose destination is disabled or deleted.
    fn retry_delivery_audited(&self, source_id: SourceId, event_id: EventId, delivery_id: DeliveryId, now_ms: i64, audit: Option<AuditEntry>) -> (DeliveryRecord, Vec<AttemptRecord>);

    // ---- Bulk replay jobs ----

    /// Counts what `job` would queue now; `None` when more than `max_matched`
    /// events fall in its range and type.
    fn count_replay(&self, job: ReplayRecord, max_matched: u64) -> Option<Totals>;
    /// Stores a new job of an existing source, dropping the oldest finished
    /// ones beyond the source's keep count.
    fn create_replay_audited(&self, job: ReplayRecord, audit: Option<AuditEntry>) -> ();
    /// One job of a source.
    fn replay(&self, source_id: SourceId, id: ReplayId) -> ReplayRecord;
    /// A source's jobs, newest first (`NotFound` without the source).
    fn list_replays(&self, source_id: SourceId, before: Option<u128>, limit: usize) -> Page<ReplayRecord>;
    /// Every running job as (source id, job id): what start-up resumes.
    fn running_replays(&self) -> Vec<(SourceId, ReplayId)>;
    /// Queues the next chunk of a job and moves its cursor in one commit.
    fn advance_replay(&self, source_id: SourceId, id: ReplayId, now_ms: i64, max_items: usize, max_scan: usize) -> Advanced;

    // ---- The delivery queue ----

    /// Up to `limit` deliveries of `destination` due at `now_ms`, earliest
    /// first, skipping `in_flight`; plus when the next one falls due.
    fn due_for(&self, destination: DestinationId, now_ms: u64, in_flight: &HashSet<DeliveryId>, limit: usize) -> (Vec<DueItem>, Option<u64>);
    /// The pending delivery of `destination` that comes first in event
    /// order (event id — its `received_at`, then the rest of the id — then
    /// delivery id), whenever it is due: the only one a `fifo` destination
    /// may attempt (SPEC §13 `ordering`).
    fn fifo_head(&self, destination: DestinationId) -> Option<DueItem>;
    /// What an attempt needs: the event and the delivery.
    fn attempt_inputs(&self, event_id: EventId, delivery_id: DeliveryId) -> (EventRecord, DeliveryRecord);
    /// Records an attempt: the attempt, the delivery's new state and queue
    /// place, and the destination's failure run (auto-disable).
    fn record_attempt(&self, outcome: AttemptOutcome) -> Recorded;
    /// Claims (or renews) this node's lease on each destination's lane for
    /// `ttl_ms`: every lane it holds is renewed, and at most `max_new` free
    /// or expired ones are taken (a change of owner raises the epoch).
    /// Answers where this node stands on each lane asked for.
    fn claim_lanes(&self, destinations: Vec<DestinationId>, ttl_ms: u64, max_new: usize) -> Vec<LaneClaim>;
    /// Marks this node alive for `ttl_ms` more; answers how many nodes are
    /// alive (itself included), for a fair share of the lanes.
    fn node_heartbeat(&self, ttl_ms: u64) -> u64;
    /// Gives up this node's leases on these lanes (more than its share, or
    /// at shutdown), so another node takes them over at once.
    fn release_lanes(&self, destinations: Vec<DestinationId>) -> ();
    /// This node stops: it no longer counts as alive.
    fn leave(&self) -> ();
    /// Claims (or renews) a background duty that one node at a time
    /// performs (retention); answers whether this node has it.
    fn claim_duty(&self, name: &'static str, ttl_ms: u64) -> bool;
    /// Deliveries waiting, and the earliest due time among `destinations`.
    fn queue_depth(&self, destinations: Vec<DestinationId>) -> (u64, Option<u64>);
    /// How many rows of each kind the store holds: what retention and
    /// deletion must leave behind is checkable from outside the engine.
    fn stats(&self) -> StoreStats;

    // ---- Retention ----

    /// Removes every event older than its source's retention as of
    /// `now_ms`, and the events of deleted sources, in short commits;
    /// answers how many went.
    fn sweep_retention(&self, now_ms: i64) -> u64;
    /// Removes audit entries older than `before_ms`, in short commits;
    /// answers how many went.
    fn sweep_audit(&self, before_ms: i64) -> u64;
    /// Purges, in short commits, what deleted sources left behind.
    fn purge_orphans(&self) -> u64;
    /// Removes these events with their deliveries, attempts and dedup
    /// entries in one commit (a retention chunk); unknown ids are skipped.
    fn purge_events(&self, event_ids: Vec<EventId>) -> ();
}

/// The plain forms of the audited intents.
impl Store {
    /// [`Store::create_api_key_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn create_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        self.create_api_key_audited(key, None).await
    }

    /// [`Store::revoke_api_key_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<(), StoreError> {
        self.revoke_api_key_audited(id, None).await
    }

    /// [`Store::create_source_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn create_source(&self, source: SourceRecord) -> Result<(), StoreError> {
        self.create_source_audited(source, None).await
    }

    /// [`Store::update_source_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn update_source(
        &self,
        id: SourceId,
        change: SourceChange,
    ) -> Result<(SourceRecord, u64), StoreError> {
        self.update_source_audited(id, change, None).await
    }

    /// [`Store::delete_source_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn delete_source(&self, id: SourceId) -> Result<(), StoreError> {
        self.delete_source_audited(id, None).await
    }

    /// [`Store::create_destination_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn create_destination(
        &self,
        destination: DestinationRecord,
        max_per_source: usize,
    ) -> Result<(), StoreError> {
        self.create_destination_audited(destination, max_per_source, None)
            .await
    }

    /// [`Store::update_destination_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn update_destination(
        &self,
        source_id: SourceId,
        id: DestinationId,
        change: DestinationChange,
    ) -> Result<DestinationUpdated, StoreError> {
        self.update_destination_audited(source_id, id, change, None)
            .await
    }

    /// [`Store::delete_destination_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn delete_destination(
        &self,
        source_id: SourceId,
        id: DestinationId,
    ) -> Result<u64, StoreError> {
        self.delete_destination_audited(source_id, id, None).await
    }

    /// [`Store::replay_event_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn replay_event(
        &self,
        source_id: SourceId,
        event_id: EventId,
        destinations: Vec<DestinationId>,
        now_ms: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.replay_event_audited(source_id, event_id, destinations, now_ms, None)
            .await
    }

    /// [`Store::retry_delivery_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn retry_delivery(
        &self,
        source_id: SourceId,
        event_id: EventId,
        delivery_id: DeliveryId,
        now_ms: i64,
    ) -> Result<(DeliveryRecord, Vec<AttemptRecord>), StoreError> {
        self.retry_delivery_audited(source_id, event_id, delivery_id, now_ms, None)
            .await
    }

    /// [`Store::create_replay_audited`] without an audit entry: for internal
    /// changes and tests; every user's change goes through `ops`, which
    /// always records one.
    pub async fn create_replay(&self, job: ReplayRecord) -> Result<(), StoreError> {
        self.create_replay_audited(job, None).await
    }
}
