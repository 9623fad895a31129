//! The types of the storage API: what callers hand the store and what it
//! answers, the same for every backend.

use crate::model::ids::{DeliveryId, DestinationId, EventId, SourceId};
use crate::model::provider::GenericHmacConfig;
use crate::model::records::{
    AttemptRecord, DeliveryOptions, DeliveryRecord, DestinationRecord, EventSummary, ReplayState,
    RetiredSecret, SourceRecord,
};

/// A delivery waiting in a destination's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueItem {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    /// The due time it is queued under (its key in the queue).
    pub due_ms: u64,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    RetryAt(i64),
    Failed,
}

/// An attempt's result, to be recorded in one write.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub destination_id: DestinationId,
    pub source_id: SourceId,
    pub item: DueItem,
    pub attempt: AttemptRecord,
    pub next: Next,
    /// Auto-disable threshold (`delivery.disable_after`), in ms.
    pub disable_after_ms: i64,
    /// The epoch of the lane lease the attempt ran under ([`LaneClaim`]);
    /// a backend shared by several nodes records the outcome only while
    /// this node still holds that epoch.
    pub lease_epoch: u64,
    /// The lane starts nothing more for its destination until this is
    /// recorded (a `fifo` destination): a backend records it without
    /// delay; others may be held back briefly to share a commit.
    pub lane_waits: bool,
}

impl AttemptOutcome {
    /// When the attempt ended (its start plus its duration), in Unix ms.
    pub fn finished_at_ms(&self) -> i64 {
        self.attempt.started_at_ms + i64::try_from(self.attempt.duration_ms).unwrap_or(i64::MAX / 2)
    }

    /// Applies the attempt to its destination's failure run, the rule every
    /// backend keeps: a success ends the run, a first failure starts it, and
    /// a failure `disable_after` into it disables the destination. Answers
    /// `(changed, disabled)`: whether `d` must be written, and whether this
    /// attempt disabled it (its pending deliveries are then cancelled).
    pub fn apply_to_destination(&self, d: &mut DestinationRecord) -> (bool, bool) {
        let now = self.finished_at_ms();
        let changed = match (self.next == Next::Succeeded, d.failing_since_ms) {
            (true, Some(_)) => {
                d.failing_since_ms = None;
                true
            }
            (false, None) => {
                d.failing_since_ms = Some(self.attempt.started_at_ms);
                true
            }
            (false, Some(since)) if d.enabled && now - since >= self.disable_after_ms => {
                d.enabled = false;
                d.disabled_at_ms = Some(now);
                d.disabled_reason = Some(format!(
                    "every delivery attempt failed for {} (since {}); re-enable it once the endpoint works",
                    humantime::format_duration(std::time::Duration::from_millis(
                        (now - since).max(0) as u64 / 1000 * 1000
                    )),
                    crate::model::time::format_ms(since)
                ));
                d.updated_at_ms = now;
                return (true, true);
            }
            _ => false,
        };
        if changed {
            d.updated_at_ms = now;
        }
        (changed, false)
    }
}

/// What recording an attempt changed beyond the delivery itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The destination was disabled by this attempt (all failed for too long).
    pub disabled_destination: bool,
    /// The delivery was no longer pending (cancelled or deleted meanwhile).
    pub stale: bool,
    /// Nothing was recorded: another node took this destination's lane
    /// over since the attempt started (it attempts the delivery again).
    pub fenced_off: bool,
}

/// Where a node stands on one destination's lane after claiming it.
///
/// With several nodes on one database, each destination's deliveries are
/// run by one node at a time, under a lease it renews; a single-node
/// backend holds every lane for ever with epoch 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneClaim {
    pub destination_id: DestinationId,
    /// This node's lease epoch, when it holds the lane.
    pub held: Option<u64>,
    /// When the holder is another node: ms until its lease expires (if it
    /// is not renewed, the lane may be taken over then).
    pub others_expire_in_ms: Option<u64>,
}

/// A hint from another node that a destination has deliveries due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    Due(SourceId, DestinationId),
    /// Hints may have been lost (the listening connection dropped): look
    /// at every queue.
    Missed,
}

/// What storing an inbound event did.
#[derive(Debug)]
pub enum IngestOutcome {
    /// Stored, with one pending delivery per matching enabled destination.
    Stored { deliveries: Vec<DeliveryRecord> },
    /// The same provider event id was already stored for this source.
    Duplicate { original: EventId },
}

/// Which of a source's events to list.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only ids below this (the cursor), exclusive.
    pub before_id: Option<u128>,
    /// `received_at` bounds in Unix ms: `after` exclusive, `before` exclusive.
    pub after_ms: Option<i64>,
    pub before_ms: Option<i64>,
    /// Exact type or `*` pattern.
    pub type_pattern: Option<String>,
}

/// Most index entries one page may examine: a rare type over a huge
/// source returns a short page with a cursor instead of scanning it all.
pub const MAX_SCAN_PER_PAGE: usize = 20_000;

/// Events (that get deliveries) queued per write: small enough that ingest
/// commits keep interleaving with a large replay.
pub const CHUNK_EVENTS: usize = 200;

/// Index entries one chunk may examine, so a rare type over a huge range
/// does not turn one chunk into a long scan inside the writer.
pub const CHUNK_SCAN: usize = 5_000;

/// What a whole job would queue now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Events that get at least one delivery.
    pub events: u64,
    pub deliveries: u64,
    /// Events in the range and type (with or without deliveries).
    pub matched: u64,
}

/// Finished jobs kept per source (the oldest go as new ones arrive), so a
/// script replaying every few minutes does not grow the file forever.
pub const KEPT_PER_SOURCE: usize = 100;

/// What one step of a bulk replay job (`Store::advance_replay`) did.
#[derive(Debug, Default)]
pub struct Advanced {
    /// The job's state after this step (`Running`: call again).
    pub state: Option<ReplayState>,
    /// Destinations that got deliveries (each once), to wake their lanes.
    pub destinations: Vec<DestinationId>,
    pub events: u64,
    pub deliveries: u64,
}

/// One page of a newest-first list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts (exclusive), when there is one.
    pub next: Option<u128>,
}

/// Rows the store holds, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub sources: u64,
    pub destinations: u64,
    pub events: u64,
    pub deliveries: u64,
    /// Deliveries in the queue (pending).
    pub queued: u64,
    pub attempts: u64,
    /// Provider event ids remembered for de-duplication.
    pub dedup_keys: u64,
}

/// One event in a source's list, with its deliveries.
#[derive(Debug, Clone)]
pub struct ListedEvent {
    pub id: EventId,
    pub summary: EventSummary,
    pub deliveries: Vec<DeliveryRecord>,
}

/// Which events the cross-source overview lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSearch {
    /// Every event, newest first.
    All,
    /// The event with this id, when its provider event id (if given) matches.
    Id {
        id: EventId,
        provider_event_id: Option<String>,
    },
    /// The events (at most one per source) with this provider event id.
    ProviderEventId(String),
}

/// One event found across sources, with its deliveries.
#[derive(Debug, Clone)]
pub struct FoundEvent {
    pub source_id: SourceId,
    pub event_id: EventId,
    pub summary: EventSummary,
    pub deliveries: Vec<DeliveryRecord>,
}

/// A secret being replaced: the new one (sealed), and until when the
/// current one stays accepted.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub sealed: Vec<u8>,
    pub previous_until_ms: i64,
}

/// A change to a source; `None` fields stay as they are. Applied by
/// [`SourceChange::apply`] inside the backend's commit, so every backend
/// changes a source the same way.
#[derive(Debug, Clone, Default)]
pub struct SourceChange {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub retention_days: Option<u32>,
    pub provider_config: Option<GenericHmacConfig>,
    pub new_secret: Option<NewSecret>,
    /// Moves the end of the retired secret's overlap (to end it early,
    /// e.g. after that secret leaked); no effect without a retired secret.
    pub previous_secret_until_ms: Option<i64>,
    pub now_ms: i64,
}

impl SourceChange {
    /// Changes `source` as asked; a new secret retires the current one.
    pub fn apply(self, source: &mut SourceRecord) {
        if let Some(name) = self.name {
            source.name = name;
        }
        if let Some(enabled) = self.enabled {
            source.enabled = enabled;
        }
        if let Some(days) = self.retention_days {
            source.retention_days = days;
        }
        if let Some(config) = self.provider_config {
            source.provider_config = Some(config);
        }
        if let Some(secret) = self.new_secret {
            source.previous_secret = source.signing_secret.take().map(|old| RetiredSecret {
                sealed: old,
                until_ms: secret.previous_until_ms,
            });
            source.signing_secret = Some(secret.sealed);
        }
        if let (Some(until), Some(previous)) = (
            self.previous_secret_until_ms,
            source.previous_secret.as_mut(),
        ) {
            previous.until_ms = until;
        }
        source.updated_at_ms = self.now_ms;
    }
}

/// A change to a destination; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct DestinationChange {
    pub url: Option<String>,
    pub event_filter: Option<Vec<String>>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u32>>,
    pub enabled: Option<bool>,
    /// Rotation: the new signing secret; the current one keeps signing
    /// alongside it until `previous_until_ms`.
    pub new_secret: Option<NewSecret>,
    /// The delivery options as a whole, when they change (SPEC §13).
    pub options: Option<DeliveryOptions>,
    pub now_ms: i64,
}

impl DestinationChange {
    /// Changes `destination` as asked. Re-enabling clears why it was
    /// disabled and starts its failure run afresh.
    pub fn apply(self, d: &mut DestinationRecord) {
        if let Some(url) = self.url {
            d.url = url;
        }
        if let Some(filter) = self.event_filter {
            d.event_filter = filter;
        }
        if let Some(limit) = self.rate_limit {
            d.rate_limit = limit;
        }
        if let Some(options) = self.options {
            d.options = options;
        }
        if let Some(enabled) = self.enabled {
            if enabled && !d.enabled {
                d.disabled_reason = None;
                d.disabled_at_ms = None;
                d.failing_since_ms = None;
            }
            d.enabled = enabled;
        }
        if let Some(secret) = self.new_secret {
            let old = std::mem::replace(&mut d.secret, secret.sealed);
            d.previous_secret = Some(RetiredSecret {
                sealed: old,
                until_ms: secret.previous_until_ms,
            });
        }
        d.updated_at_ms = self.now_ms;
    }
}

/// A changed destination, and how many pending deliveries the change
/// cancelled (it was disabled).
#[derive(Debug, Clone)]
pub struct DestinationUpdated {
    pub destination: DestinationRecord,
    pub cancelled: u64,
}

/// One alert waiting to be sent to `alerts.url` (SPEC §15): the durable
/// alert queue's row. Kept apart from the delivery queue on purpose: an
/// alert has no source, event or destination of its own, and must keep
/// flowing while every destination is disabled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertRecord {
    /// A ULID (creation order); also the alert's `webhook-id`.
    pub id: u128,
    /// The JSON body `{"type", "timestamp", "data"}`, exactly as signed.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is next due (Unix ms).
    pub next_attempt_ms: i64,
}

impl AlertRecord {
    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<AlertRecord, crate::store::StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("alert: {e}")))
    }
}

/// Upper bounds (ms) of the attempt-latency buckets the overview keeps;
/// a last, open bucket holds the rest.
pub const LATENCY_BUCKETS_MS: [u64; 11] =
    [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];

/// One destination's attempts within one minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DestinationMinute {
    pub attempts: u64,
    pub succeeded: u64,
    /// Attempts per latency bucket ([`LATENCY_BUCKETS_MS`], then the rest).
    pub latency: Vec<u64>,
}

/// The dashboard overview's counters for one minute (SPEC §15): compact
/// (one row per minute, whatever the traffic) and stored, so the charts
/// survive restarts on every backend. Several nodes add into one row.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MinuteStats {
    /// Unix time in minutes.
    pub minute: i64,
    pub events_in: u64,
    /// Deliveries that succeeded.
    pub delivered: u64,
    pub failed_attempts: u64,
    /// By destination id (`dst_...`).
    pub destinations: std::collections::BTreeMap<String, DestinationMinute>,
}

impl MinuteStats {
    /// An empty row for `minute`.
    pub fn at(minute: i64) -> MinuteStats {
        MinuteStats {
            minute,
            ..Default::default()
        }
    }

    /// Adds `other`'s counts into this minute.
    pub fn merge(&mut self, other: &MinuteStats) {
        self.events_in += other.events_in;
        self.delivered += other.delivered;
        self.failed_attempts += other.failed_attempts;
        for (id, d) in &other.destinations {
            let mine = self.destinations.entry(id.clone()).or_default();
            mine.attempts += d.attempts;
            mine.succeeded += d.succeeded;
            if mine.latency.len() < d.latency.len() {
                mine.latency.resize(d.latency.len(), 0);
            }
            for (m, n) in mine.latency.iter_mut().zip(&d.latency) {
                *m += n;
            }
        }
    }

    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<MinuteStats, crate::store::StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("minute stats: {e}")))
    }
}

/// How long minute counters are kept: the week chart plus a day.
pub const STATS_KEEP_MINUTES: i64 = 8 * 24 * 60;
