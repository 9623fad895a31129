//! The storage conformance suite: every intent's contract, written against
//! [`Store`] alone, so every backend is held to the same behaviour.
//!
//! Each contract is one plain `async fn(&Store)` below; the
//! [`conformance_suite!`] macro turns the whole list into `#[tokio::test]`s
//! in a module named after a backend, over a store that backend's opener
//! makes. Adding a backend is one more line at the bottom:
//! `conformance_suite!(postgres, open_postgres);`, where the opener returns
//! a guard (dropped after the test: a temp dir, a scratch database) and an
//! open store. Nothing here may name an engine.
//!
//! Times are fixed Unix milliseconds around [`T0`] and event ids carry the
//! millisecond of their `received_at` (as ingest makes them), so every
//! expected value is exact.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{
    AttemptOutcome, DestinationChange, DueItem, EventQuery, EventSearch, IngestOutcome, NewSecret,
    Next, Recorded, SourceChange, Store, StoreError, Totals, KEPT_PER_SOURCE,
};
use crate::config::StorageConfig;
use crate::metrics::Metrics;
use crate::model::ids::{new_id, ApiKeyId, DeliveryId, DestinationId, EventId, RawId, SourceId};
use crate::model::provider::ProviderKind;
use crate::model::records::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryStatus, DestinationRecord, ErrorKind,
    EventRecord, ReplayRecord, ReplayState, Scope, SessionRecord, SourceRecord,
};

/// Defines one test module for a backend: `$open` is an async fn (or
/// closure) answering `Some((guard, Store))`, or `None` when the backend
/// cannot run here (the opener says so loudly; the test then passes). Tests that race tasks run on a
/// multi-thread runtime; the rest on the default one.
macro_rules! conformance_suite {
    ($backend:ident, $open:expr) => {
        conformance_suite!(@tests $backend, $open;
            current_thread:
                api_keys_are_found_by_hash_and_unique,
                api_keys_list_newest_first_with_a_cursor,
                revoking_a_key_ends_it_and_its_sessions,
                sessions_live_until_they_expire_and_end,
                sessions_per_key_are_capped_dropping_the_oldest,
                secrets_are_sealed_and_open_only_intact,
                sources_are_created_found_and_unique_by_slug,
                sources_list_newest_first_with_destination_counts,
                updating_a_source_applies_the_change_and_keeps_the_previous_secret,
                deleting_a_source_frees_its_slug_and_leaves_nothing_behind,
                destinations_are_capped_per_source,
                destinations_are_found_and_listed_with_a_cursor,
                disabling_a_destination_cancels_its_pending_deliveries,
                deleting_a_destination_cancels_its_pending_deliveries,
                ingest_fans_out_to_enabled_destinations_whose_filter_matches,
                ingest_deduplicates_provider_event_ids_per_source,
                strings_from_outside_keep_every_character,
                list_events_newest_first_with_bounds_pattern_and_cursor,
                events_after_oldest_first_within_bounds_and_pattern,
                search_events_across_sources,
                event_detail_event_and_deliveries_with_attempts,
                the_trace_context_is_kept_with_the_event,
                test_events_ignore_filters_and_reach_every_enabled_destination,
                replay_event_rechecks_destinations_in_its_commit,
                retry_delivery_makes_failed_or_waiting_deliveries_due_now,
                due_for_is_earliest_first_skips_in_flight_and_says_what_is_next,
                fifo_head_is_the_first_pending_delivery_in_event_order,
                ingest_applies_body_filters,
                record_attempt_moves_the_delivery_and_the_queue,
                auto_disable_counts_from_the_first_failure_after_the_last_success,
                an_outcome_for_a_delivery_no_longer_pending_is_stale,
                replay_jobs_are_stored_found_and_listed,
                count_replay_counts_what_a_job_would_queue,
                advance_replay_queues_chunks_to_completion,
                advance_replay_rechecks_destinations_per_chunk,
                a_replay_is_cancelled_when_its_source_is_deleted,
                finished_replays_are_kept_up_to_the_bound,
                sweep_retention_removes_only_expired_events,
                purge_events_removes_events_with_their_deliveries_and_dedup,
                audit_entries_commit_with_their_change_and_only_then,
                audit_entries_list_newest_first_filtered_and_are_swept,
                the_alert_queue_answers_what_is_due_and_settles,
                minute_stats_add_up_per_minute_and_old_ones_go;
            multi_thread:
                one_provider_event_id_ingested_concurrently_is_stored_once,
                a_destination_disabled_during_concurrent_ingest_is_fully_in_or_out,
                paging_while_new_events_arrive_has_no_duplicates_or_gaps,
                concurrent_duplicates_within_and_across_commits_are_stored_once,
                ingest_racing_a_source_deletion_refuses_only_that_sources_events,
                many_concurrent_ingests_are_all_stored_listed_and_queued
        );
    };
    (@tests $backend:ident, $open:expr;
        current_thread: $($test:ident),* $(,)?;
        multi_thread: $($mt_test:ident),* $(,)?
    ) => {
        mod $backend {
            // The opener is named from the invoking module.
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    let Some((guard, store)) = ($open)().await else {
                        return;
                    };
                    super::$test(&store).await;
                    store.close().await;
                    drop(guard);
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $mt_test() {
                    let Some((guard, store)) = ($open)().await else {
                        return;
                    };
                    super::$mt_test(&store).await;
                    store.close().await;
                    drop(guard);
                }
            )*
        }
    };
}

/// A real redb store in a fresh temp dir (removed with the guard).
async fn open_redb() -> Option<(tempfile::TempDir, Store)> {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().join("data"),
        ..StorageConfig::default()
    };
    let store = Store::open(&config, Arc::new(Metrics::new())).unwrap();
    Some((dir, store))
}

/// A real PostgreSQL store over a fresh database (see
/// `postgres::test_cluster`); `None` when PostgreSQL is not available here.
async fn open_postgres() -> Option<(super::postgres::test_cluster::ScratchDb, Store)> {
    let (guard, config) = super::postgres::test_cluster::scratch_database().await?;
    let store = Store::open(&config, Arc::new(Metrics::new())).unwrap();
    Some((guard, store))
}

conformance_suite!(redb, open_redb);
conformance_suite!(postgres, open_postgres);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fixed instant (2023-11-14) the tests count from.
const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// A fresh id whose timestamp is `ms` (as ingest gives an event received
/// then). Callers never make two at the same millisecond where order counts.
pub(super) fn id_at<T: RawId>(ms: i64) -> T {
    T::from_raw(((ms as u128) << 80) | (new_id::<u128>() & ((1u128 << 80) - 1)))
}

pub(super) fn source(slug: &str) -> SourceRecord {
    SourceRecord {
        id: new_id(),
        slug: slug.to_string(),
        name: format!("source {slug}"),
        provider: ProviderKind::None,
        provider_config: None,
        signing_secret: None,
        previous_secret: None,
        enabled: true,
        retention_days: 30,
        created_at_ms: T0,
        updated_at_ms: T0,
    }
}

pub(super) fn destination(source_id: SourceId, filter: &[&str]) -> DestinationRecord {
    DestinationRecord {
        id: new_id(),
        source_id,
        url: "http://127.0.0.1:9/hook".to_string(),
        event_filter: filter.iter().map(|f| f.to_string()).collect(),
        enabled: true,
        secret: b"sealed".to_vec(),
        previous_secret: None,
        rate_limit: None,
        disabled_reason: None,
        disabled_at_ms: None,
        failing_since_ms: None,
        created_at_ms: T0,
        updated_at_ms: T0,
        options: Default::default(),
    }
}

/// An event received at `ms`.
pub(super) fn event_at(
    source_id: SourceId,
    ms: i64,
    event_type: &str,
    pid: Option<&str>,
) -> EventRecord {
    EventRecord {
        id: id_at(ms),
        source_id,
        received_at_ms: ms,
        event_type: event_type.to_string(),
        provider_event_id: pid.map(str::to_string),
        headers: vec![("content-type".to_string(), b"application/json".to_vec())],
        body: format!("{{\"type\":\"{event_type}\"}}").into_bytes(),
        trace: None,
    }
}

/// An event received now (its id made now).
pub(super) fn event_now(source_id: SourceId, event_type: &str, pid: Option<&str>) -> EventRecord {
    let id = EventId::new();
    EventRecord {
        id,
        received_at_ms: id.timestamp_ms() as i64,
        ..event_at(source_id, 0, event_type, pid)
    }
}

pub(super) fn api_key(name: &str, hash_byte: u8) -> ApiKeyRecord {
    ApiKeyRecord {
        id: new_id(),
        name: name.to_string(),
        scopes: vec![Scope::Write],
        prefix: format!("krf_{hash_byte:04}"),
        hash: [hash_byte; 32],
        created_at_ms: T0,
    }
}

fn session(key_id: ApiKeyId, created_at_ms: i64, expires_at_ms: i64) -> SessionRecord {
    SessionRecord {
        key_id,
        csrf: format!("csrf-{created_at_ms}"),
        created_at_ms,
        expires_at_ms,
    }
}

fn job(
    source_id: SourceId,
    after_ms: i64,
    before_ms: i64,
    candidates: Vec<DestinationId>,
) -> ReplayRecord {
    ReplayRecord {
        id: new_id(),
        source_id,
        after_ms,
        before_ms,
        upper_id: u128::MAX,
        type_pattern: None,
        only_failed: false,
        destination_ids: None,
        candidates,
        cursor: 0,
        events_total: 0,
        deliveries_total: 0,
        events_done: 0,
        deliveries_queued: 0,
        state: ReplayState::Running,
        created_at_ms: T0,
        updated_at_ms: T0,
    }
}

pub(super) fn attempt(number: u32, started_at_ms: i64, ok: bool) -> AttemptRecord {
    AttemptRecord {
        number,
        started_at_ms,
        duration_ms: 0,
        status_code: Some(if ok { 200 } else { 500 }),
        error_kind: (!ok).then_some(ErrorKind::HttpStatus),
        error_message: (!ok).then(|| "500 Internal Server Error".to_string()),
        response_snippet: if ok { b"ok".to_vec() } else { b"boom".to_vec() },
    }
}

pub(super) fn outcome(
    d: &DestinationRecord,
    item: DueItem,
    attempt: AttemptRecord,
    next: Next,
) -> AttemptOutcome {
    AttemptOutcome {
        destination_id: d.id,
        source_id: d.source_id,
        item,
        attempt,
        next,
        // Far off: only the auto-disable test brings it near.
        disable_after_ms: DAY,
        // Set by `record_under_lease`, which holds the lane first.
        lease_epoch: 0,
        lane_waits: false,
    }
}

/// Records an attempt as the delivery engine does: under this node's
/// lease on the destination's lane.
async fn record_under_lease(store: &Store, mut o: AttemptOutcome) -> Result<Recorded, StoreError> {
    let claims = store.claim_lanes(vec![o.destination_id], 60_000, 1).await?;
    o.lease_epoch = claims
        .first()
        .and_then(|c| c.held)
        .expect("a lane no other node holds is this node's");
    store.record_attempt(o).await
}

fn disable(now_ms: i64) -> DestinationChange {
    DestinationChange {
        enabled: Some(false),
        now_ms,
        ..DestinationChange::default()
    }
}

/// Ingests an event that must be stored; answers its deliveries.
async fn ingest_stored(store: &Store, event: EventRecord) -> Vec<DeliveryRecord> {
    match store.ingest(event).await.unwrap() {
        IngestOutcome::Stored { deliveries } => deliveries,
        other => panic!("expected the event stored, got {other:?}"),
    }
}

/// Everything queued for a destination, earliest first.
async fn queued(store: &Store, destination: DestinationId) -> Vec<DueItem> {
    let (items, next) = store
        .due_for(destination, u64::MAX, &HashSet::new(), 10_000)
        .await
        .unwrap();
    assert_eq!(next, None, "everything was taken");
    items
}

/// The queue entry of one delivery.
async fn queued_item(store: &Store, destination: DestinationId, delivery: DeliveryId) -> DueItem {
    let items = queued(store, destination).await;
    match items.iter().find(|i| i.delivery_id == delivery) {
        Some(item) => *item,
        None => panic!("delivery {delivery} is not queued: {items:?}"),
    }
}

/// One delivery as the store now has it.
async fn delivery_of(store: &Store, event_id: EventId, delivery_id: DeliveryId) -> DeliveryRecord {
    store.attempt_inputs(event_id, delivery_id).await.unwrap().1
}

fn destinations_of(deliveries: &[DeliveryRecord]) -> Vec<DestinationId> {
    let mut out: Vec<DestinationId> = deliveries.iter().map(|d| d.destination_id).collect();
    out.sort_unstable();
    out
}

fn sorted<T: Ord>(mut ids: Vec<T>) -> Vec<T> {
    ids.sort_unstable();
    ids
}

/// Asserts a result is the given error.
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "expected {}, got {:?}",
                stringify!($pattern),
                other.map(|_| "Ok(..)")
            ),
        }
    };
}

// ---------------------------------------------------------------------------
// API keys and dashboard sessions
// ---------------------------------------------------------------------------

async fn api_keys_are_found_by_hash_and_unique(store: &Store) {
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    let key = api_key("ci", 1);
    store.create_api_key(key.clone()).await.unwrap();

    let found = store.api_key_by_hash([1; 32]).await.unwrap().unwrap();
    assert_eq!(found.id, key.id);
    assert_eq!(found.name, "ci");
    assert_eq!(found.scopes, vec![Scope::Write]);
    assert_eq!(found.prefix, key.prefix);
    assert_eq!(found.hash, [1; 32]);
    assert_eq!(found.created_at_ms, T0);
    assert!(store.api_key_by_hash([2; 32]).await.unwrap().is_none());

    // The same key (same hash) again, under another id and name.
    assert_err!(
        store.create_api_key(api_key("copy", 1)).await,
        StoreError::Conflict(_)
    );
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    assert_eq!(
        store.api_key_by_hash([1; 32]).await.unwrap().unwrap().id,
        key.id
    );
}

async fn api_keys_list_newest_first_with_a_cursor(store: &Store) {
    let mut ids = Vec::new();
    for n in 1..=5 {
        let key = api_key(&format!("k{n}"), n);
        ids.push(key.id);
        store.create_api_key(key).await.unwrap();
    }
    assert_eq!(store.count_api_keys().await.unwrap(), 5);
    let names = |page: &super::Page<ApiKeyRecord>| -> Vec<String> {
        page.items.iter().map(|k| k.name.clone()).collect()
    };

    let first = store.list_api_keys(None, 2).await.unwrap();
    assert_eq!(names(&first), ["k5", "k4"]);
    assert_eq!(first.next, Some(ids[3].as_u128()));
    let second = store.list_api_keys(first.next, 2).await.unwrap();
    assert_eq!(names(&second), ["k3", "k2"]);
    assert_eq!(second.next, Some(ids[1].as_u128()));
    let last = store.list_api_keys(second.next, 2).await.unwrap();
    assert_eq!(names(&last), ["k1"]);
    assert_eq!(last.next, None);

    let whole = store.list_api_keys(None, 5).await.unwrap();
    assert_eq!(names(&whole), ["k5", "k4", "k3", "k2", "k1"]);
    assert_eq!(whole.next, None, "no page follows a full last page");
}

async fn revoking_a_key_ends_it_and_its_sessions(store: &Store) {
    let (a, b) = (api_key("a", 1), api_key("b", 2));
    store.create_api_key(a.clone()).await.unwrap();
    store.create_api_key(b.clone()).await.unwrap();
    let expires = T0 + DAY;
    store
        .create_session([10; 32], session(a.id, T0, expires), 10)
        .await
        .unwrap();
    store
        .create_session([11; 32], session(a.id, T0 + 1, expires), 10)
        .await
        .unwrap();
    store
        .create_session([20; 32], session(b.id, T0, expires), 10)
        .await
        .unwrap();
    assert!(store
        .live_session([10; 32], T0 + 5)
        .await
        .unwrap()
        .is_some());

    store.revoke_api_key(a.id).await.unwrap();
    assert!(store.api_key_by_hash([1; 32]).await.unwrap().is_none());
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    let listed = store.list_api_keys(None, 10).await.unwrap();
    assert_eq!(
        listed.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        [b.id]
    );
    assert!(store
        .live_session([10; 32], T0 + 5)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .live_session([11; 32], T0 + 5)
        .await
        .unwrap()
        .is_none());
    let (kept, key) = store.live_session([20; 32], T0 + 5).await.unwrap().unwrap();
    assert_eq!((kept.key_id, key.id), (b.id, b.id));

    assert_err!(store.revoke_api_key(a.id).await, StoreError::NotFound);
    // A sign-in that races the revocation never gives a live session.
    store
        .create_session([12; 32], session(a.id, T0 + 2, expires), 10)
        .await
        .unwrap();
    assert!(store
        .live_session([12; 32], T0 + 5)
        .await
        .unwrap()
        .is_none());
}

async fn sessions_live_until_they_expire_and_end(store: &Store) {
    let key = api_key("dash", 1);
    store.create_api_key(key.clone()).await.unwrap();
    store
        .create_session([7; 32], session(key.id, T0, T0 + 1_000), 5)
        .await
        .unwrap();

    let (found, found_key) = store
        .live_session([7; 32], T0 + 999)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key_id, key.id);
    assert_eq!(found.csrf, format!("csrf-{T0}"));
    assert_eq!((found.created_at_ms, found.expires_at_ms), (T0, T0 + 1_000));
    assert_eq!(found_key.id, key.id);
    assert_eq!(found_key.scopes, vec![Scope::Write]);
    assert!(
        store
            .live_session([7; 32], T0 + 1_000)
            .await
            .unwrap()
            .is_none(),
        "a session is over at its expiry"
    );
    assert!(store.live_session([8; 32], T0).await.unwrap().is_none());

    store.end_session([7; 32], key.id, T0).await.unwrap();
    assert!(store.live_session([7; 32], T0 + 1).await.unwrap().is_none());
    // Ending it again (or one never made) is fine.
    store.end_session([7; 32], key.id, T0).await.unwrap();
    store.end_session([9; 32], key.id, T0).await.unwrap();
}

async fn sessions_per_key_are_capped_dropping_the_oldest(store: &Store) {
    let (a, b) = (api_key("a", 1), api_key("b", 2));
    store.create_api_key(a.clone()).await.unwrap();
    store.create_api_key(b.clone()).await.unwrap();
    let expires = T0 + DAY;
    store
        .create_session([20; 32], session(b.id, T0, expires), 2)
        .await
        .unwrap();
    for (n, hash) in [[1u8; 32], [2; 32], [3; 32]].into_iter().enumerate() {
        store
            .create_session(hash, session(a.id, T0 + n as i64, expires), 2)
            .await
            .unwrap();
    }
    let now = T0 + 10;
    assert!(
        store.live_session([1; 32], now).await.unwrap().is_none(),
        "the oldest of three went"
    );
    assert!(store.live_session([2; 32], now).await.unwrap().is_some());
    assert!(store.live_session([3; 32], now).await.unwrap().is_some());
    assert!(
        store.live_session([20; 32], now).await.unwrap().is_some(),
        "another key's sessions do not count"
    );

    // A key's expired sessions make room first: the two live ones stay.
    let c = api_key("c", 3);
    store.create_api_key(c.clone()).await.unwrap();
    store
        .create_session([30; 32], session(c.id, T0, T0 + 100), 2)
        .await
        .unwrap();
    store
        .create_session([31; 32], session(c.id, T0 + 200, expires), 2)
        .await
        .unwrap();
    store
        .create_session([32; 32], session(c.id, T0 + 300, expires), 2)
        .await
        .unwrap();
    assert!(store
        .live_session([31; 32], T0 + 400)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .live_session([32; 32], T0 + 400)
        .await
        .unwrap()
        .is_some());
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

async fn secrets_are_sealed_and_open_only_intact(store: &Store) {
    assert!(store.is_healthy());
    let sealed = store.seal(b"whsec_plain");
    assert!(
        !sealed.windows(11).any(|w| w == b"whsec_plain"),
        "the plaintext is not stored"
    );
    assert_ne!(store.seal(b"whsec_plain"), sealed, "each seal is fresh");
    assert_eq!(store.open_secret(&sealed).unwrap(), b"whsec_plain");
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_err!(store.open_secret(&tampered), StoreError::Corrupt(_));
    assert_err!(store.open_secret(b"short"), StoreError::Corrupt(_));
}

async fn sources_are_created_found_and_unique_by_slug(store: &Store) {
    let mut s = source("wh_first001");
    s.retention_days = 7;
    s.signing_secret = Some(store.seal(b"whsec_one"));
    store.create_source(s.clone()).await.unwrap();

    let got = store.source(s.id).await.unwrap();
    assert_eq!(got.id, s.id);
    assert_eq!(got.slug, "wh_first001");
    assert_eq!(got.name, "source wh_first001");
    assert_eq!(got.provider, ProviderKind::None);
    assert!(got.enabled);
    assert_eq!(got.retention_days, 7);
    assert_eq!(
        store
            .open_secret(got.signing_secret.as_deref().unwrap())
            .unwrap(),
        b"whsec_one"
    );
    assert_eq!((got.created_at_ms, got.updated_at_ms), (T0, T0));
    assert_eq!(store.source_by_slug("wh_first001").await.unwrap().id, s.id);

    let taken = source("wh_first001");
    assert_err!(
        store.create_source(taken.clone()).await,
        StoreError::Conflict(_)
    );
    assert_err!(store.source(taken.id).await, StoreError::NotFound);
    assert_err!(store.source(new_id()).await, StoreError::NotFound);
    assert_err!(
        store.source_by_slug("wh_nothing0").await,
        StoreError::NotFound
    );

    let (with, count) = store.source_with_destination_count(s.id).await.unwrap();
    assert_eq!((with.id, count), (s.id, 0));
    for _ in 0..2 {
        store
            .create_destination(destination(s.id, &[]), 10)
            .await
            .unwrap();
    }
    let (_, count) = store.source_with_destination_count(s.id).await.unwrap();
    assert_eq!(count, 2);
    assert_err!(
        store.source_with_destination_count(new_id()).await,
        StoreError::NotFound
    );
}

async fn sources_list_newest_first_with_destination_counts(store: &Store) {
    let (s1, s2, s3) = (
        source("wh_list0001"),
        source("wh_list0002"),
        source("wh_list0003"),
    );
    for s in [&s1, &s2, &s3] {
        store.create_source(s.clone()).await.unwrap();
    }
    for _ in 0..2 {
        store
            .create_destination(destination(s1.id, &[]), 10)
            .await
            .unwrap();
    }
    store
        .create_destination(destination(s3.id, &[]), 10)
        .await
        .unwrap();
    let rows = |page: &super::Page<(SourceRecord, u64)>| -> Vec<(SourceId, u64)> {
        page.items.iter().map(|(s, n)| (s.id, *n)).collect()
    };

    let first = store.list_sources(None, 2).await.unwrap();
    assert_eq!(rows(&first), [(s3.id, 1), (s2.id, 0)]);
    assert_eq!(first.next, Some(s2.id.as_u128()));
    let last = store.list_sources(first.next, 2).await.unwrap();
    assert_eq!(rows(&last), [(s1.id, 2)]);
    assert_eq!(last.next, None);
    let whole = store.list_sources(None, 3).await.unwrap();
    assert_eq!(rows(&whole), [(s3.id, 1), (s2.id, 0), (s1.id, 2)]);
    assert_eq!(whole.next, None);
}

async fn updating_a_source_applies_the_change_and_keeps_the_previous_secret(store: &Store) {
    let mut s = source("wh_update01");
    s.signing_secret = Some(store.seal(b"whsec_old"));
    store.create_source(s.clone()).await.unwrap();
    store
        .create_destination(destination(s.id, &[]), 10)
        .await
        .unwrap();

    let change = SourceChange {
        name: Some("renamed".to_string()),
        enabled: Some(false),
        retention_days: Some(90),
        provider_config: None,
        new_secret: Some(NewSecret {
            sealed: store.seal(b"whsec_new"),
            previous_until_ms: T0 + DAY,
        }),
        previous_secret_until_ms: None,
        now_ms: T0 + 5,
    };
    let (updated, count) = store.update_source(s.id, change).await.unwrap();
    assert_eq!(count, 1);
    for got in [updated, store.source(s.id).await.unwrap()] {
        assert_eq!(got.name, "renamed");
        assert!(!got.enabled);
        assert_eq!(got.retention_days, 90);
        assert_eq!(got.slug, "wh_update01");
        assert_eq!((got.created_at_ms, got.updated_at_ms), (T0, T0 + 5));
        let current = store
            .open_secret(got.signing_secret.as_deref().unwrap())
            .unwrap();
        assert_eq!(current, b"whsec_new");
        let previous = got.previous_secret.unwrap();
        assert_eq!(store.open_secret(&previous.sealed).unwrap(), b"whsec_old");
        assert_eq!(previous.until_ms, T0 + DAY);
    }

    // An empty change only moves `updated_at`.
    let (same, _) = store
        .update_source(
            s.id,
            SourceChange {
                now_ms: T0 + 9,
                ..SourceChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((same.name.as_str(), same.retention_days), ("renamed", 90));
    assert_eq!(same.updated_at_ms, T0 + 9);
    assert_eq!(same.previous_secret.unwrap().until_ms, T0 + DAY);

    // Ending the overlap early moves only the retired secret's end.
    let (ended, _) = store
        .update_source(
            s.id,
            SourceChange {
                previous_secret_until_ms: Some(T0 + 10),
                now_ms: T0 + 10,
                ..SourceChange::default()
            },
        )
        .await
        .unwrap();
    let previous = ended.previous_secret.unwrap();
    assert_eq!(previous.until_ms, T0 + 10);
    assert_eq!(store.open_secret(&previous.sealed).unwrap(), b"whsec_old");
    assert_eq!(
        store
            .open_secret(ended.signing_secret.as_deref().unwrap())
            .unwrap(),
        b"whsec_new"
    );

    assert_err!(
        store.update_source(new_id(), SourceChange::default()).await,
        StoreError::NotFound
    );
}

async fn deleting_a_source_frees_its_slug_and_leaves_nothing_behind(store: &Store) {
    let (s, other) = (source("wh_delete01"), source("wh_other001"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let kept_d = destination(other.id, &[]);
    store.create_destination(kept_d.clone(), 10).await.unwrap();
    let mut gone = Vec::new();
    for n in 0..3 {
        let e = event_at(s.id, T0 + n, "t", Some(&format!("p{n}")));
        gone.push(e.id);
        ingest_stored(store, e).await;
    }
    let kept_event = event_at(other.id, T0 + 10, "t", Some("p0"));
    ingest_stored(store, kept_event.clone()).await;
    let mut job_of_source = job(s.id, 0, T0 + DAY, vec![d.id]);
    job_of_source.state = ReplayState::Completed;
    store.create_replay(job_of_source.clone()).await.unwrap();

    store.delete_source(s.id).await.unwrap();
    assert_err!(store.source(s.id).await, StoreError::NotFound);
    assert_err!(
        store.source_by_slug("wh_delete01").await,
        StoreError::NotFound
    );
    assert_err!(store.destination(s.id, d.id).await, StoreError::NotFound);
    assert_err!(
        store.destinations_of_source(s.id).await,
        StoreError::NotFound
    );
    assert_err!(
        store.list_events(s.id, EventQuery::default(), 10).await,
        StoreError::NotFound
    );
    assert_eq!(
        store.all_destination_ids().await.unwrap(),
        [(other.id, kept_d.id)]
    );
    assert_err!(
        store.ingest(event_now(s.id, "t", None)).await,
        StoreError::NotFound
    );
    assert_err!(store.delete_source(s.id).await, StoreError::NotFound);

    // The slug is free at once, for a new source that starts empty.
    let reborn = source("wh_delete01");
    store.create_source(reborn.clone()).await.unwrap();
    assert_eq!(
        store.source_by_slug("wh_delete01").await.unwrap().id,
        reborn.id
    );
    assert_eq!(store.event_count(reborn.id).await.unwrap(), 0);
    ingest_stored(store, event_at(reborn.id, T0 + 20, "t", Some("p0"))).await;

    // Whatever the deletion left is purged afterwards (a backend may purge
    // at once: then there is nothing left to count).
    let left = store.event_count(s.id).await.unwrap();
    assert_eq!(store.purge_orphans().await.unwrap(), left);
    assert_eq!(store.event_count(s.id).await.unwrap(), 0);
    for id in gone {
        assert_err!(store.event(id).await, StoreError::NotFound);
    }
    assert!(queued(store, d.id).await.is_empty());
    // Only the other source's delivery is still waiting.
    assert_eq!(store.queue_depth(vec![d.id]).await.unwrap(), (1, None));
    assert_err!(
        store.replay(s.id, job_of_source.id).await,
        StoreError::NotFound
    );
    assert_eq!(store.purge_orphans().await.unwrap(), 0);
    // Nothing of the other sources went.
    assert_eq!(store.event_count(other.id).await.unwrap(), 1);
    assert_eq!(
        store.event(kept_event.id).await.unwrap().body,
        kept_event.body
    );
    assert_eq!(queued(store, kept_d.id).await.len(), 1);
}

// ---------------------------------------------------------------------------
// Destinations
// ---------------------------------------------------------------------------

async fn destinations_are_capped_per_source(store: &Store) {
    let (s, other) = (source("wh_cap00001"), source("wh_cap00002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    store
        .create_destination(destination(s.id, &[]), 2)
        .await
        .unwrap();
    store
        .create_destination(destination(s.id, &[]), 2)
        .await
        .unwrap();
    let third = destination(s.id, &[]);
    assert_err!(
        store.create_destination(third.clone(), 2).await,
        StoreError::LimitReached(2)
    );
    assert_err!(
        store.destination(s.id, third.id).await,
        StoreError::NotFound
    );
    assert_eq!(store.destinations_of_source(s.id).await.unwrap().len(), 2);
    // The cap is per source.
    store
        .create_destination(destination(other.id, &[]), 2)
        .await
        .unwrap();
    // A source that does not exist has no destinations to add to.
    let orphan = destination(new_id(), &[]);
    assert_err!(
        store.create_destination(orphan.clone(), 2).await,
        StoreError::NotFound
    );
    assert_eq!(store.all_destination_ids().await.unwrap().len(), 3);
}

async fn destinations_are_found_and_listed_with_a_cursor(store: &Store) {
    let (s, other) = (source("wh_dlist001"), source("wh_dlist002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let mut ds = Vec::new();
    for filter in [&["invoice.*"][..], &[], &["a", "b"]] {
        let mut d = destination(s.id, filter);
        d.rate_limit = Some(5);
        store.create_destination(d.clone(), 10).await.unwrap();
        ds.push(d);
    }
    let elsewhere = destination(other.id, &[]);
    store
        .create_destination(elsewhere.clone(), 10)
        .await
        .unwrap();

    let got = store.destination(s.id, ds[0].id).await.unwrap();
    assert_eq!((got.id, got.source_id), (ds[0].id, s.id));
    assert_eq!(got.url, "http://127.0.0.1:9/hook");
    assert_eq!(got.event_filter, ["invoice.*"]);
    assert!(got.enabled);
    assert_eq!(got.secret, b"sealed");
    assert_eq!(got.rate_limit, Some(5));
    assert_eq!((got.created_at_ms, got.updated_at_ms), (T0, T0));
    // A destination is found only under its own source.
    assert_err!(
        store.destination(other.id, ds[0].id).await,
        StoreError::NotFound
    );
    assert_err!(
        store.destination(s.id, new_id()).await,
        StoreError::NotFound
    );

    let ids = |items: &[DestinationRecord]| -> Vec<_> { items.iter().map(|d| d.id).collect() };
    let first = store.list_destinations(s.id, None, 2).await.unwrap();
    assert_eq!(ids(&first.items), [ds[2].id, ds[1].id]);
    assert_eq!(first.next, Some(ds[1].id.as_u128()));
    let last = store.list_destinations(s.id, first.next, 2).await.unwrap();
    assert_eq!(ids(&last.items), [ds[0].id]);
    assert_eq!(last.next, None);
    assert_eq!(
        ids(&store.destinations_of_source(s.id).await.unwrap()),
        [ds[0].id, ds[1].id, ds[2].id],
        "oldest first"
    );
    assert_err!(
        store.list_destinations(new_id(), None, 2).await,
        StoreError::NotFound
    );
    assert_err!(
        store.destinations_of_source(new_id()).await,
        StoreError::NotFound
    );
    let mut expected: Vec<(_, _)> = ds.iter().map(|d| (s.id, d.id)).collect();
    expected.push((other.id, elsewhere.id));
    expected.sort_unstable();
    let mut all = store.all_destination_ids().await.unwrap();
    all.sort_unstable();
    assert_eq!(all, expected);
}

async fn disabling_a_destination_cancels_its_pending_deliveries(store: &Store) {
    let s = source("wh_disable1");
    store.create_source(s.clone()).await.unwrap();
    let (off, on) = (destination(s.id, &[]), destination(s.id, &[]));
    store.create_destination(off.clone(), 10).await.unwrap();
    store.create_destination(on.clone(), 10).await.unwrap();
    let mut events = Vec::new();
    for n in 0..3 {
        let e = event_at(s.id, T0 + 1_000 * (n + 1), "t", None);
        assert_eq!(ingest_stored(store, e.clone()).await.len(), 2);
        events.push(e);
    }

    let change = DestinationChange {
        enabled: Some(false),
        url: Some("http://127.0.0.1:9/other".to_string()),
        now_ms: T0 + 50_000,
        ..DestinationChange::default()
    };
    let updated = store
        .update_destination(s.id, off.id, change)
        .await
        .unwrap();
    assert_eq!(updated.cancelled, 3);
    assert!(!updated.destination.enabled);
    assert_eq!(updated.destination.url, "http://127.0.0.1:9/other");
    assert_eq!(updated.destination.updated_at_ms, T0 + 50_000);
    let stored = store.destination(s.id, off.id).await.unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.url, "http://127.0.0.1:9/other");

    for e in &events {
        let (_, _, deliveries) = store.event_detail(s.id, e.id).await.unwrap();
        assert_eq!(deliveries.len(), 2);
        for d in deliveries {
            if d.destination_id == off.id {
                assert_eq!(d.status, DeliveryStatus::Cancelled);
                assert_eq!(d.next_attempt_ms, None);
            } else {
                assert_eq!(d.status, DeliveryStatus::Pending);
                assert_eq!(d.next_attempt_ms, Some(e.received_at_ms));
            }
        }
    }
    assert!(queued(store, off.id).await.is_empty(), "nothing is due");
    assert_eq!(queued(store, on.id).await.len(), 3);
    assert_eq!(
        store.queue_depth(vec![off.id, on.id]).await.unwrap(),
        (3, Some((T0 + 1_000) as u64))
    );
    assert_eq!(store.queue_depth(vec![off.id]).await.unwrap(), (3, None));

    // Changing it again while disabled cancels nothing more, and new
    // events pass it by.
    let again = store
        .update_destination(s.id, off.id, disable(T0 + 60_000))
        .await
        .unwrap();
    assert_eq!(again.cancelled, 0);
    let later = ingest_stored(store, event_at(s.id, T0 + 70_000, "t", None)).await;
    assert_eq!(destinations_of(&later), [on.id]);
    assert_err!(
        store.update_destination(s.id, new_id(), disable(T0)).await,
        StoreError::NotFound
    );
}

async fn deleting_a_destination_cancels_its_pending_deliveries(store: &Store) {
    let s = source("wh_ddelete1");
    store.create_source(s.clone()).await.unwrap();
    let (gone, kept) = (destination(s.id, &[]), destination(s.id, &[]));
    store.create_destination(gone.clone(), 10).await.unwrap();
    store.create_destination(kept.clone(), 10).await.unwrap();
    let e1 = event_at(s.id, T0 + 1, "t", None);
    let e2 = event_at(s.id, T0 + 2, "t", None);
    ingest_stored(store, e1.clone()).await;
    ingest_stored(store, e2.clone()).await;

    assert_eq!(store.delete_destination(s.id, gone.id).await.unwrap(), 2);
    assert_err!(store.destination(s.id, gone.id).await, StoreError::NotFound);
    assert_eq!(
        store
            .destinations_of_source(s.id)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        [kept.id]
    );
    assert_eq!(
        store.source_with_destination_count(s.id).await.unwrap().1,
        1
    );
    for e in [&e1, &e2] {
        let (_, _, deliveries) = store.event_detail(s.id, e.id).await.unwrap();
        let to_gone: Vec<_> = deliveries
            .iter()
            .filter(|d| d.destination_id == gone.id)
            .collect();
        assert_eq!(to_gone.len(), 1);
        assert_eq!(to_gone[0].status, DeliveryStatus::Cancelled);
        assert_eq!(to_gone[0].next_attempt_ms, None);
    }
    assert!(queued(store, gone.id).await.is_empty());
    assert_eq!(queued(store, kept.id).await.len(), 2);
    assert_eq!(store.queue_depth(vec![]).await.unwrap(), (2, None));
    assert_err!(
        store.delete_destination(s.id, gone.id).await,
        StoreError::NotFound
    );
    assert_err!(
        store.delete_destination(new_id(), kept.id).await,
        StoreError::NotFound
    );
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

async fn ingest_fans_out_to_enabled_destinations_whose_filter_matches(store: &Store) {
    let s = source("wh_fanout01");
    store.create_source(s.clone()).await.unwrap();
    let all = destination(s.id, &[]);
    let invoices = destination(s.id, &["invoice.*"]);
    let charges = destination(s.id, &["charge.succeeded", "charge.failed"]);
    let mut off = destination(s.id, &[]);
    off.enabled = false;
    for d in [&all, &invoices, &charges, &off] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }

    let e = event_at(s.id, T0 + 1_000, "invoice.paid", Some("in_1"));
    let deliveries = ingest_stored(store, e.clone()).await;
    assert_eq!(
        destinations_of(&deliveries),
        sorted(vec![all.id, invoices.id])
    );
    for d in &deliveries {
        assert_eq!((d.event_id, d.source_id), (e.id, s.id));
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.next_attempt_ms, Some(T0 + 1_000), "due at once");
    }
    // What was answered is what is stored and queued.
    let (_, _, stored) = store.event_detail(s.id, e.id).await.unwrap();
    assert_eq!(
        sorted(stored.iter().map(|d| d.id).collect()),
        sorted(deliveries.iter().map(|d| d.id).collect())
    );
    for d in &deliveries {
        let item = queued_item(store, d.destination_id, d.id).await;
        assert_eq!((item.event_id, item.due_ms), (e.id, (T0 + 1_000) as u64));
    }

    let charge = ingest_stored(store, event_at(s.id, T0 + 2_000, "charge.succeeded", None)).await;
    assert_eq!(destinations_of(&charge), sorted(vec![all.id, charges.id]));
    let other = ingest_stored(store, event_at(s.id, T0 + 3_000, "customer.created", None)).await;
    assert_eq!(destinations_of(&other), [all.id]);
    assert!(queued(store, off.id).await.is_empty());
    assert_eq!(store.event_count(s.id).await.unwrap(), 3);

    assert_err!(
        store.ingest(event_now(new_id(), "t", None)).await,
        StoreError::NotFound
    );
}

async fn ingest_deduplicates_provider_event_ids_per_source(store: &Store) {
    let (s, other) = (source("wh_dedup001"), source("wh_dedup002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();

    let first = event_at(s.id, T0 + 1, "t", Some("evt_1"));
    ingest_stored(store, first.clone()).await;
    let again = event_at(s.id, T0 + 2, "t", Some("evt_1"));
    match store.ingest(again.clone()).await.unwrap() {
        IngestOutcome::Duplicate { original } => assert_eq!(original, first.id),
        stored => panic!("expected a duplicate, got {stored:?}"),
    }
    assert_err!(store.event(again.id).await, StoreError::NotFound);
    assert_eq!(store.event_count(s.id).await.unwrap(), 1);
    assert_eq!(queued(store, d.id).await.len(), 1, "no second delivery");

    // Another source may hold the same provider event id; events without
    // one are never duplicates.
    ingest_stored(store, event_at(other.id, T0 + 3, "t", Some("evt_1"))).await;
    ingest_stored(store, event_at(s.id, T0 + 4, "t", None)).await;
    ingest_stored(store, event_at(s.id, T0 + 5, "t", None)).await;
    ingest_stored(store, event_at(s.id, T0 + 6, "t", Some("evt_2"))).await;
    assert_eq!(store.event_count(s.id).await.unwrap(), 4);
    assert_eq!(store.event_count(other.id).await.unwrap(), 1);
}

/// What callers hand over from the outside world (an event's type and
/// provider event id from a payload, a key's name, a slug from a URL) may
/// hold any character, U+0000 included; it is kept and matched exactly.
async fn strings_from_outside_keep_every_character(store: &Store) {
    let mut key = api_key("nul\0name ü", 1);
    key.name = "nul\0name ü".to_string();
    store.create_api_key(key.clone()).await.unwrap();
    let listed = store.list_api_keys(None, 10).await.unwrap();
    assert_eq!(listed.items[0].name, "nul\0name ü");

    let s = source("wh_strings1");
    store.create_source(s.clone()).await.unwrap();
    assert_err!(
        store.source_by_slug("wh_\0strings").await,
        StoreError::NotFound
    );
    let d = destination(s.id, &["t\0*"]);
    store.create_destination(d.clone(), 10).await.unwrap();

    let odd = event_at(s.id, T0 + 1, "t\0ype ✓", Some("p\0id"));
    let deliveries = ingest_stored(store, odd.clone()).await;
    assert_eq!(destinations_of(&deliveries), [d.id], "the filter matched");
    match store
        .ingest(event_at(s.id, T0 + 2, "t", Some("p\0id")))
        .await
        .unwrap()
    {
        IngestOutcome::Duplicate { original } => assert_eq!(original, odd.id),
        stored => panic!("expected a duplicate, got {stored:?}"),
    }
    ingest_stored(store, event_at(s.id, T0 + 3, "t", Some("p"))).await;

    let back = store.event(odd.id).await.unwrap();
    assert_eq!(back.event_type, "t\0ype ✓");
    assert_eq!(back.provider_event_id.as_deref(), Some("p\0id"));
    let typed = EventQuery {
        type_pattern: Some("t\0*".to_string()),
        ..EventQuery::default()
    };
    let page = store.list_events(s.id, typed, 10).await.unwrap();
    assert_eq!(
        page.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        [odd.id]
    );
    assert_eq!(page.items[0].summary.event_type, "t\0ype ✓");
    let found = store
        .search_events(EventSearch::ProviderEventId("p\0id".into()), None, 10)
        .await
        .unwrap();
    assert_eq!(
        found.items.iter().map(|f| f.event_id).collect::<Vec<_>>(),
        [odd.id]
    );
}

/// The live stream's read: ids strictly between two bounds, oldest first,
/// type-filtered, cut pages saying where to go on; another source's events
/// never appear; an unknown source is `NotFound`.
async fn events_after_oldest_first_within_bounds_and_pattern(store: &Store) {
    let s = source("wh_after01");
    store.create_source(s.clone()).await.unwrap();
    let other = source("wh_after02");
    store.create_source(other.clone()).await.unwrap();
    let kinds = [
        "invoice.paid",
        "charge.x",
        "invoice.failed",
        "charge.y",
        "invoice.paid",
    ];
    let mut e = Vec::new();
    for (n, kind) in kinds.iter().enumerate() {
        let event = event_at(s.id, T0 + 1_000 * (n as i64 + 1), kind, None);
        ingest_stored(store, event.clone()).await;
        e.push(event.id);
        // Interleaved: the other source's events share the id range.
        let foreign = event_at(other.id, T0 + 1_000 * (n as i64 + 1) + 1, kind, None);
        ingest_stored(store, foreign).await;
    }
    let raw = |n: usize| e[n].as_u128();
    let all = store
        .events_after(s.id, 0, u128::MAX, None, 10)
        .await
        .unwrap();
    assert_eq!(all.items, e);
    assert_eq!(all.next, None);

    // Both bounds exclusive.
    let mid = store
        .events_after(s.id, raw(0), raw(4), None, 10)
        .await
        .unwrap();
    assert_eq!(mid.items, [e[1], e[2], e[3]]);
    assert_eq!(mid.next, None);

    // A cut page names the last id examined; going on from it adds up.
    let first = store
        .events_after(s.id, 0, u128::MAX, None, 2)
        .await
        .unwrap();
    assert_eq!(first.items, [e[0], e[1]]);
    assert_eq!(first.next, Some(raw(1)));
    let rest = store
        .events_after(s.id, raw(1), u128::MAX, None, 10)
        .await
        .unwrap();
    assert_eq!(rest.items, [e[2], e[3], e[4]]);

    // Type pattern, same syntax as destination filters.
    let invoices = store
        .events_after(s.id, 0, u128::MAX, Some("invoice.*".into()), 10)
        .await
        .unwrap();
    assert_eq!(invoices.items, [e[0], e[2], e[4]]);
    let exact = store
        .events_after(s.id, raw(0), u128::MAX, Some("invoice.paid".into()), 10)
        .await
        .unwrap();
    assert_eq!(exact.items, [e[4]]);

    // Empty and inverted ranges are empty, not errors.
    let none = store
        .events_after(s.id, raw(4), u128::MAX, None, 10)
        .await
        .unwrap();
    assert!(none.items.is_empty());
    let inverted = store
        .events_after(s.id, raw(3), raw(1), None, 10)
        .await
        .unwrap();
    assert!(inverted.items.is_empty());

    assert_err!(
        store
            .events_after(new_id::<SourceId>(), 0, u128::MAX, None, 10)
            .await,
        StoreError::NotFound
    );
}

async fn list_events_newest_first_with_bounds_pattern_and_cursor(store: &Store) {
    let s = source("wh_events01");
    store.create_source(s.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let specs = [
        (1_000, "invoice.paid"),
        (2_000, "invoice.failed"),
        (3_000, "charge.x"),
        (4_000, "invoice.paid"),
        (5_000, "charge.y"),
    ];
    let mut e = Vec::new();
    for (n, (at, kind)) in specs.iter().enumerate() {
        let event = event_at(s.id, T0 + at, kind, Some(&format!("p{n}")));
        ingest_stored(store, event.clone()).await;
        e.push(event);
    }
    let id = |n: usize| e[n].id;
    let source_id = s.id;
    let list = |query: EventQuery, limit: usize| async move {
        let page = store.list_events(source_id, query, limit).await.unwrap();
        let ids: Vec<_> = page.items.iter().map(|i| i.id).collect();
        (ids, page.next, page.items)
    };

    let (ids, next, items) = list(EventQuery::default(), 10).await;
    assert_eq!(ids, [id(4), id(3), id(2), id(1), id(0)]);
    assert_eq!(next, None);
    let newest = &items[0];
    assert_eq!(newest.summary.event_type, "charge.y");
    assert_eq!(newest.summary.provider_event_id.as_deref(), Some("p4"));
    assert_eq!(newest.summary.received_at_ms, T0 + 5_000);
    assert_eq!(newest.summary.size_bytes, e[4].body.len() as u64);
    assert_eq!(newest.deliveries.len(), 1);
    assert_eq!(newest.deliveries[0].destination_id, d.id);
    assert_eq!(newest.deliveries[0].status, DeliveryStatus::Pending);

    // Paging by the cursor.
    let (ids, next, _) = list(EventQuery::default(), 2).await;
    assert_eq!(ids, [id(4), id(3)]);
    assert_eq!(next, Some(id(3).as_u128()));
    let (ids, next, _) = list(
        EventQuery {
            before_id: next,
            ..EventQuery::default()
        },
        2,
    )
    .await;
    assert_eq!(ids, [id(2), id(1)]);
    assert_eq!(next, Some(id(1).as_u128()));
    let (ids, next, _) = list(
        EventQuery {
            before_id: next,
            ..EventQuery::default()
        },
        2,
    )
    .await;
    assert_eq!(ids, [id(0)]);
    assert_eq!(next, None);

    // Time bounds are exclusive on both ends.
    let after = |ms| EventQuery {
        after_ms: Some(ms),
        ..EventQuery::default()
    };
    let (ids, _, _) = list(after(T0 + 2_000), 10).await;
    assert_eq!(ids, [id(4), id(3), id(2)]);
    let (ids, _, _) = list(
        EventQuery {
            before_ms: Some(T0 + 4_000),
            ..EventQuery::default()
        },
        10,
    )
    .await;
    assert_eq!(ids, [id(2), id(1), id(0)]);
    let (ids, _, _) = list(
        EventQuery {
            after_ms: Some(T0 + 1_000),
            before_ms: Some(T0 + 5_000),
            ..EventQuery::default()
        },
        10,
    )
    .await;
    assert_eq!(ids, [id(3), id(2), id(1)]);
    let (ids, _, _) = list(after(T0 + 5_000), 10).await;
    assert!(ids.is_empty());

    // Type: exact or pattern; paged, the pages still add up.
    let typed = |pattern: &str, before_id| EventQuery {
        type_pattern: Some(pattern.to_string()),
        before_id,
        ..EventQuery::default()
    };
    let (ids, _, _) = list(typed("charge.x", None), 10).await;
    assert_eq!(ids, [id(2)]);
    let (ids, _, _) = list(typed("invoice.*", None), 10).await;
    assert_eq!(ids, [id(3), id(1), id(0)]);
    let mut paged = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let (ids, next, _) = list(typed("invoice.*", cursor), 1).await;
        paged.extend(ids);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, [id(3), id(1), id(0)]);
    let (ids, _, _) = list(
        EventQuery {
            type_pattern: Some("invoice.*".to_string()),
            after_ms: Some(T0 + 1_000),
            ..EventQuery::default()
        },
        10,
    )
    .await;
    assert_eq!(ids, [id(3), id(1)]);

    assert_err!(
        store.list_events(new_id(), EventQuery::default(), 10).await,
        StoreError::NotFound
    );
}

async fn search_events_across_sources(store: &Store) {
    let (s1, s2) = (source("wh_search01"), source("wh_search02"));
    store.create_source(s1.clone()).await.unwrap();
    store.create_source(s2.clone()).await.unwrap();
    let d = destination(s1.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let a1 = event_at(s1.id, T0 + 1_000, "a", Some("p1"));
    let b1 = event_at(s2.id, T0 + 2_000, "b", Some("shared"));
    let a2 = event_at(s1.id, T0 + 3_000, "a", Some("shared"));
    let b2 = event_at(s2.id, T0 + 4_000, "b", None);
    for e in [&a1, &b1, &a2, &b2] {
        ingest_stored(store, e.clone()).await;
    }
    let search = |what: EventSearch, before, limit| async move {
        let page = store.search_events(what, before, limit).await.unwrap();
        let found: Vec<(_, _)> = page
            .items
            .iter()
            .map(|f| (f.source_id, f.event_id))
            .collect();
        (found, page.next, page.items)
    };

    let (found, next, items) = search(EventSearch::All, None, 10).await;
    assert_eq!(
        found,
        [
            (s2.id, b2.id),
            (s1.id, a2.id),
            (s2.id, b1.id),
            (s1.id, a1.id)
        ]
    );
    assert_eq!(next, None);
    assert_eq!(
        items[1].summary.provider_event_id.as_deref(),
        Some("shared")
    );
    assert_eq!(items[1].summary.received_at_ms, T0 + 3_000);
    assert_eq!(items[1].deliveries.len(), 1);
    assert_eq!(items[1].deliveries[0].destination_id, d.id);
    assert!(items[0].deliveries.is_empty());

    let (found, next, _) = search(EventSearch::All, None, 3).await;
    assert_eq!(found.len(), 3);
    assert_eq!(next, Some(b1.id.as_u128()));
    let (found, next, _) = search(EventSearch::All, next, 3).await;
    assert_eq!(found, [(s1.id, a1.id)]);
    assert_eq!(next, None);

    let by_id = |id, pid: Option<&str>| EventSearch::Id {
        id,
        provider_event_id: pid.map(str::to_string),
    };
    assert_eq!(
        search(by_id(a2.id, None), None, 10).await.0,
        [(s1.id, a2.id)]
    );
    assert_eq!(
        search(by_id(a2.id, Some("shared")), None, 10).await.0,
        [(s1.id, a2.id)]
    );
    assert!(search(by_id(a2.id, Some("p1")), None, 10)
        .await
        .0
        .is_empty());
    assert!(search(by_id(new_id(), None), None, 10).await.0.is_empty());

    let by_pid = |pid: &str| EventSearch::ProviderEventId(pid.to_string());
    assert_eq!(
        search(by_pid("shared"), None, 10).await.0,
        [(s1.id, a2.id), (s2.id, b1.id)]
    );
    let (found, next, _) = search(by_pid("shared"), None, 1).await;
    assert_eq!(found, [(s1.id, a2.id)]);
    assert_eq!(next, Some(a2.id.as_u128()));
    let (found, next, _) = search(by_pid("shared"), next, 1).await;
    assert_eq!(found, [(s2.id, b1.id)]);
    assert_eq!(next, None);
    assert_eq!(search(by_pid("p1"), None, 10).await.0, [(s1.id, a1.id)]);
    assert!(search(by_pid("nope"), None, 10).await.0.is_empty());
}

async fn event_detail_event_and_deliveries_with_attempts(store: &Store) {
    let (s, other) = (source("wh_detail01"), source("wh_detail02"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let mut e = event_at(s.id, T0 + 1_000, "invoice.paid", Some("in_9"));
    e.headers
        .push(("x-raw".to_string(), vec![0xff, 0x00, 0x7f]));
    e.body = vec![0, 159, 146, 150, b'{'];
    let deliveries = ingest_stored(store, e.clone()).await;

    let (summary, record, listed) = store.event_detail(s.id, e.id).await.unwrap();
    assert_eq!(summary.event_type, "invoice.paid");
    assert_eq!(summary.provider_event_id.as_deref(), Some("in_9"));
    assert_eq!(summary.received_at_ms, T0 + 1_000);
    assert_eq!(summary.size_bytes, 5);
    assert_eq!((record.id, record.source_id), (e.id, s.id));
    assert_eq!(record.headers, e.headers, "headers byte for byte");
    assert_eq!(record.body, e.body, "body byte for byte");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, deliveries[0].id);
    assert_err!(
        store.event_detail(other.id, e.id).await,
        StoreError::NotFound
    );
    assert_err!(
        store.event_detail(s.id, new_id()).await,
        StoreError::NotFound
    );

    // `event` finds it without its source; `attempt_inputs` with a delivery.
    assert_eq!(store.event(e.id).await.unwrap().body, e.body);
    assert_err!(store.event(new_id()).await, StoreError::NotFound);
    let (event, delivery) = store.attempt_inputs(e.id, deliveries[0].id).await.unwrap();
    assert_eq!((event.id, delivery.id), (e.id, deliveries[0].id));
    assert_err!(
        store.attempt_inputs(e.id, new_id()).await,
        StoreError::NotFound
    );

    let item = queued_item(store, d.id, deliveries[0].id).await;
    let retry_at = T0 + 60_000;
    record_under_lease(
        store,
        outcome(
            &d,
            item,
            attempt(1, T0 + 2_000, false),
            Next::RetryAt(retry_at),
        ),
    )
    .await
    .unwrap();
    let item = queued_item(store, d.id, deliveries[0].id).await;
    record_under_lease(
        store,
        outcome(&d, item, attempt(2, retry_at, true), Next::Succeeded),
    )
    .await
    .unwrap();
    let with = store.deliveries_with_attempts(s.id, e.id).await.unwrap();
    assert_eq!(with.len(), 1);
    let (delivery, attempts) = &with[0];
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(delivery.attempts, 2);
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(attempts[0].started_at_ms, T0 + 2_000);
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[0].error_kind, Some(ErrorKind::HttpStatus));
    assert_eq!(
        attempts[0].error_message.as_deref(),
        Some("500 Internal Server Error")
    );
    assert_eq!(attempts[0].response_snippet, b"boom");
    assert_eq!(attempts[1].status_code, Some(200));
    assert_eq!(attempts[1].error_kind, None);
    assert_err!(
        store.deliveries_with_attempts(other.id, e.id).await,
        StoreError::NotFound
    );
}

/// SPEC §15: the ingest span's context is stored with the event, so that
/// every attempt (after a restart, on another node) joins its trace; an
/// event stored without one reads back without one.
async fn the_trace_context_is_kept_with_the_event(store: &Store) {
    use crate::model::trace::TraceContext;
    let s = source("wh_trace001");
    store.create_source(s.clone()).await.unwrap();
    store
        .create_destination(destination(s.id, &[]), 10)
        .await
        .unwrap();
    let sampled =
        TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    let unsampled =
        TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    let mut traced = event_at(s.id, T0 + 1_000, "invoice.paid", Some("in_t1"));
    traced.trace = Some(sampled);
    let mut quiet = event_at(s.id, T0 + 2_000, "invoice.paid", Some("in_t2"));
    quiet.trace = Some(unsampled);
    let untraced = event_at(s.id, T0 + 3_000, "invoice.paid", Some("in_t3"));
    let mut deliveries = Vec::new();
    for e in [&traced, &quiet, &untraced] {
        deliveries.push(ingest_stored(store, e.clone()).await[0].id);
    }
    for (e, delivery) in [&traced, &quiet, &untraced].into_iter().zip(&deliveries) {
        assert_eq!(store.event(e.id).await.unwrap().trace, e.trace);
        let (event, _) = store.attempt_inputs(e.id, *delivery).await.unwrap();
        assert_eq!(event.trace, e.trace, "what an attempt is built from");
        let (_, record, _) = store.event_detail(s.id, e.id).await.unwrap();
        assert_eq!(record.trace, e.trace);
    }
    // Test events are written another way on some backends.
    let mut test = event_at(s.id, T0 + 4_000, "krafter.test", None);
    test.trace = Some(sampled);
    store.store_test_event(test.clone()).await.unwrap();
    assert_eq!(store.event(test.id).await.unwrap().trace, Some(sampled));
}

async fn test_events_ignore_filters_and_reach_every_enabled_destination(store: &Store) {
    let s = source("wh_testev01");
    store.create_source(s.clone()).await.unwrap();
    let all = destination(s.id, &[]);
    let invoices = destination(s.id, &["invoice.*"]);
    let mut off = destination(s.id, &[]);
    off.enabled = false;
    for d in [&all, &invoices, &off] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }
    let test = event_at(s.id, T0 + 1_000, "krafter.test", None);
    let deliveries = store.store_test_event(test.clone()).await.unwrap();
    assert_eq!(
        destinations_of(&deliveries),
        sorted(vec![all.id, invoices.id])
    );
    assert!(deliveries
        .iter()
        .all(|d| d.status == DeliveryStatus::Pending && d.event_id == test.id));
    let (summary, _, stored) = store.event_detail(s.id, test.id).await.unwrap();
    assert_eq!(summary.event_type, "krafter.test");
    assert_eq!(stored.len(), 2);
    assert_eq!(queued(store, invoices.id).await.len(), 1);
    assert!(queued(store, off.id).await.is_empty());
    assert_err!(
        store
            .store_test_event(event_now(new_id(), "krafter.test", None))
            .await,
        StoreError::NotFound
    );
}

async fn replay_event_rechecks_destinations_in_its_commit(store: &Store) {
    let (s, other) = (source("wh_replay001"), source("wh_replay002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let (d1, d2) = (destination(s.id, &[]), destination(s.id, &[]));
    let mut d3 = destination(s.id, &[]);
    d3.enabled = false;
    let foreign = destination(other.id, &[]);
    for d in [&d1, &d2, &d3, &foreign] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }
    let e = event_at(s.id, T0 + 1_000, "t", None);
    assert_eq!(ingest_stored(store, e.clone()).await.len(), 2);

    // The caller chooses while both are enabled; one is disabled before
    // the replay commits.
    let chosen: Vec<_> = store
        .destinations_of_source(s.id)
        .await
        .unwrap()
        .iter()
        .filter(|d| d.enabled)
        .map(|d| d.id)
        .collect();
    assert_eq!(sorted(chosen.clone()), sorted(vec![d1.id, d2.id]));
    store
        .update_destination(s.id, d2.id, disable(T0 + 2_000))
        .await
        .unwrap();
    let mut asked = chosen;
    asked.extend([d3.id, foreign.id, new_id()]);
    let now = T0 + 3_000;
    let replayed = store.replay_event(s.id, e.id, asked, now).await.unwrap();
    assert_eq!(destinations_of(&replayed), [d1.id]);
    let r = &replayed[0];
    assert_eq!((r.event_id, r.source_id), (e.id, s.id));
    assert_eq!(r.status, DeliveryStatus::Pending);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.next_attempt_ms, Some(now));

    let (_, _, all) = store.event_detail(s.id, e.id).await.unwrap();
    assert_eq!(all.len(), 3, "a replay is a new delivery");
    assert_eq!(all.iter().filter(|d| d.destination_id == d1.id).count(), 2);
    let queue = queued(store, d1.id).await;
    assert_eq!(queue.len(), 2);
    assert_eq!(queued_item(store, d1.id, r.id).await.due_ms, now as u64);
    assert!(queued(store, d2.id).await.is_empty());
    assert!(queued(store, d3.id).await.is_empty());
    assert!(queued(store, foreign.id).await.is_empty());

    // Nothing to replay to: no delivery, no error.
    let none = store
        .replay_event(s.id, e.id, vec![d2.id], now)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_err!(
        store
            .replay_event(other.id, e.id, vec![foreign.id], now)
            .await,
        StoreError::NotFound
    );
    assert_err!(
        store.replay_event(s.id, new_id(), vec![d1.id], now).await,
        StoreError::NotFound
    );
}

async fn retry_delivery_makes_failed_or_waiting_deliveries_due_now(store: &Store) {
    let (s, other) = (source("wh_retry0001"), source("wh_retry0002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let e1 = event_at(s.id, T0 + 1_000, "t", None);
    let d1 = ingest_stored(store, e1.clone()).await[0].id;

    // Failed → pending, due now, its attempts kept.
    let item = queued_item(store, d.id, d1).await;
    record_under_lease(
        store,
        outcome(&d, item, attempt(1, T0 + 1_100, false), Next::Failed),
    )
    .await
    .unwrap();
    assert_eq!(
        delivery_of(store, e1.id, d1).await.status,
        DeliveryStatus::Failed
    );
    assert!(queued(store, d.id).await.is_empty());
    let now = T0 + 5_000;
    let (retried, attempts) = store.retry_delivery(s.id, e1.id, d1, now).await.unwrap();
    assert_eq!(retried.id, d1);
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.next_attempt_ms, Some(now));
    assert_eq!(retried.attempts, 1);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].number, 1);
    let (due, next) = store
        .due_for(d.id, now as u64, &HashSet::new(), 10)
        .await
        .unwrap();
    assert_eq!(
        due,
        [DueItem {
            delivery_id: d1,
            event_id: e1.id,
            due_ms: now as u64
        }]
    );
    assert_eq!(next, None);
    // Already due: left as it is (not queued twice).
    let (same, _) = store
        .retry_delivery(s.id, e1.id, d1, now + 10)
        .await
        .unwrap();
    assert_eq!(same.next_attempt_ms, Some(now));
    assert_eq!(queued(store, d.id).await.len(), 1);

    // Succeeded: a conflict.
    let item = queued_item(store, d.id, d1).await;
    record_under_lease(
        store,
        outcome(&d, item, attempt(2, now, true), Next::Succeeded),
    )
    .await
    .unwrap();
    assert_err!(
        store.retry_delivery(s.id, e1.id, d1, now).await,
        StoreError::Conflict(_)
    );
    assert_eq!(
        delivery_of(store, e1.id, d1).await.status,
        DeliveryStatus::Succeeded
    );

    // Pending, waiting for a later retry: moves to the front, once.
    let e2 = event_at(s.id, T0 + 2_000, "t", None);
    let d2 = ingest_stored(store, e2.clone()).await[0].id;
    let item = queued_item(store, d.id, d2).await;
    record_under_lease(
        store,
        outcome(
            &d,
            item,
            attempt(1, T0 + 2_100, false),
            Next::RetryAt(T0 + HOUR),
        ),
    )
    .await
    .unwrap();
    let (moved, _) = store
        .retry_delivery(s.id, e2.id, d2, T0 + 6_000)
        .await
        .unwrap();
    assert_eq!(moved.next_attempt_ms, Some(T0 + 6_000));
    assert_eq!(
        queued(store, d.id).await,
        [DueItem {
            delivery_id: d2,
            event_id: e2.id,
            due_ms: (T0 + 6_000) as u64
        }]
    );

    // The delivery must belong to the event, and the event to the source.
    assert_err!(
        store.retry_delivery(s.id, e1.id, d2, now).await,
        StoreError::NotFound
    );
    assert_err!(
        store.retry_delivery(other.id, e2.id, d2, now).await,
        StoreError::NotFound
    );
    assert_err!(
        store.retry_delivery(s.id, e2.id, new_id(), now).await,
        StoreError::NotFound
    );

    // A failed delivery stays failed when its destination is disabled.
    let e3 = event_at(s.id, T0 + 3_000, "t", None);
    let d3 = ingest_stored(store, e3.clone()).await[0].id;
    let item = queued_item(store, d.id, d3).await;
    record_under_lease(
        store,
        outcome(&d, item, attempt(1, T0 + 3_100, false), Next::Failed),
    )
    .await
    .unwrap();

    // Cancelled: a conflict.
    store
        .update_destination(s.id, d.id, disable(T0 + 7_000))
        .await
        .unwrap();
    assert_err!(
        store.retry_delivery(s.id, e2.id, d2, T0 + 8_000).await,
        StoreError::Conflict(_)
    );
    // Failed, but its destination is disabled, then deleted: a conflict
    // (no lane would ever send it), and nothing is queued.
    assert_err!(
        store.retry_delivery(s.id, e3.id, d3, T0 + 8_000).await,
        StoreError::Conflict(_)
    );
    store.delete_destination(s.id, d.id).await.unwrap();
    assert_err!(
        store.retry_delivery(s.id, e3.id, d3, T0 + 8_000).await,
        StoreError::Conflict(_)
    );
    assert_eq!(
        delivery_of(store, e3.id, d3).await.status,
        DeliveryStatus::Failed
    );
    assert!(queued(store, d.id).await.is_empty());
}

// ---------------------------------------------------------------------------
// The delivery queue
// ---------------------------------------------------------------------------

async fn due_for_is_earliest_first_skips_in_flight_and_says_what_is_next(store: &Store) {
    let s = source("wh_due00001");
    store.create_source(s.clone()).await.unwrap();
    let (d, idle) = (destination(s.id, &[]), destination(s.id, &["never"]));
    store.create_destination(d.clone(), 10).await.unwrap();
    store.create_destination(idle.clone(), 10).await.unwrap();
    let mut items = Vec::new();
    // Stored out of time order: the queue orders by due time.
    for at in [3_000, 1_000, 2_000] {
        let e = event_at(s.id, T0 + at, "t", None);
        let delivery = ingest_stored(store, e.clone()).await[0].id;
        items.push(DueItem {
            delivery_id: delivery,
            event_id: e.id,
            due_ms: (T0 + at) as u64,
        });
    }
    let (i3, i1, i2) = (items[0], items[1], items[2]);
    let none = HashSet::new();
    let at = |ms: i64| (T0 + ms) as u64;

    assert_eq!(
        store.due_for(d.id, at(2_500), &none, 10).await.unwrap(),
        (vec![i1, i2], Some(at(3_000)))
    );
    assert_eq!(
        store.due_for(d.id, at(5_000), &none, 1).await.unwrap(),
        (vec![i1], Some(at(2_000))),
        "limited: the next one is already due"
    );
    assert_eq!(
        store.due_for(d.id, at(5_000), &none, 10).await.unwrap(),
        (vec![i1, i2, i3], None)
    );
    let in_flight: HashSet<_> = [i1.delivery_id].into();
    assert_eq!(
        store
            .due_for(d.id, at(2_500), &in_flight, 10)
            .await
            .unwrap(),
        (vec![i2], Some(at(3_000)))
    );
    let in_flight: HashSet<_> = [i1.delivery_id, i2.delivery_id].into();
    assert_eq!(
        store.due_for(d.id, at(5_000), &in_flight, 1).await.unwrap(),
        (vec![i3], None),
        "in-flight ones do not count against the limit"
    );
    let all: HashSet<_> = items.iter().map(|i| i.delivery_id).collect();
    assert_eq!(
        store.due_for(d.id, at(5_000), &all, 10).await.unwrap(),
        (vec![], None)
    );
    assert_eq!(
        store.due_for(d.id, at(500), &none, 10).await.unwrap(),
        (vec![], Some(at(1_000)))
    );
    assert_eq!(
        store.due_for(idle.id, u64::MAX, &none, 10).await.unwrap(),
        (vec![], None)
    );
    assert_eq!(
        store.queue_depth(vec![d.id, idle.id]).await.unwrap(),
        (3, Some(at(1_000)))
    );
    assert_eq!(store.queue_depth(vec![idle.id]).await.unwrap(), (3, None));
}

async fn fifo_head_is_the_first_pending_delivery_in_event_order(store: &Store) {
    let s = source("wh_fifo0001");
    store.create_source(s.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    assert_eq!(store.fifo_head(d.id).await.unwrap(), None);
    // Stored out of event order: the head follows events, not storage.
    let later = event_at(s.id, T0 + 2_000, "t", None);
    let earlier = event_at(s.id, T0 + 1_000, "t", None);
    let later_delivery = ingest_stored(store, later.clone()).await[0].id;
    let earlier_delivery = ingest_stored(store, earlier.clone()).await[0].id;
    let head = store.fifo_head(d.id).await.unwrap().expect("a head");
    assert_eq!(
        (head.event_id, head.delivery_id, head.due_ms),
        (earlier.id, earlier_delivery, (T0 + 1_000) as u64)
    );
    // A replay of the later event due long after: still behind the earlier.
    store
        .replay_event(s.id, later.id, vec![d.id], T0 + 9_000)
        .await
        .unwrap();
    assert_eq!(
        store.fifo_head(d.id).await.unwrap().map(|h| h.event_id),
        Some(earlier.id)
    );
    // Once the earlier one leaves the queue, the later event is first,
    // its original delivery before the replay.
    let finish = |delivery_id, event_id, due_ms| AttemptOutcome {
        destination_id: d.id,
        source_id: s.id,
        item: DueItem {
            delivery_id,
            event_id,
            due_ms,
        },
        attempt: AttemptRecord {
            number: 1,
            started_at_ms: T0 + 3_000,
            duration_ms: 5,
            status_code: Some(200),
            error_kind: None,
            error_message: None,
            response_snippet: Vec::new(),
        },
        next: Next::Succeeded,
        disable_after_ms: i64::MAX / 4,
        lease_epoch: 0,
        lane_waits: false,
    };
    record_under_lease(
        store,
        finish(earlier_delivery, earlier.id, (T0 + 1_000) as u64),
    )
    .await
    .unwrap();
    let head = store.fifo_head(d.id).await.unwrap().expect("a head");
    assert_eq!(
        (head.event_id, head.delivery_id),
        (later.id, later_delivery)
    );
    store
        .update_destination(s.id, d.id, disable(T0 + 10_000))
        .await
        .unwrap();
    assert_eq!(store.fifo_head(d.id).await.unwrap(), None, "cancelled");
}

async fn ingest_applies_body_filters(store: &Store) {
    let s = source("wh_bodyf001");
    store.create_source(s.clone()).await.unwrap();
    let all = destination(s.id, &[]);
    let mut paid = destination(s.id, &[]);
    paid.options.body_filter = Some(r#"{"type":{"$startsWith":"invoice."}}"#.to_string());
    for d in [&all, &paid] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }
    let invoice = ingest_stored(store, event_at(s.id, T0 + 1_000, "invoice.paid", None)).await;
    assert_eq!(destinations_of(&invoice), sorted(vec![all.id, paid.id]));
    let charge = ingest_stored(store, event_at(s.id, T0 + 2_000, "charge.paid", None)).await;
    assert_eq!(destinations_of(&charge), [all.id]);
    let mut not_json = event_at(s.id, T0 + 3_000, "invoice.paid", None);
    not_json.body = b"type=invoice.paid".to_vec();
    let not_json = ingest_stored(store, not_json).await;
    assert_eq!(destinations_of(&not_json), [all.id]);
    // The stored destination keeps its options.
    let back = store.destination(s.id, paid.id).await.unwrap();
    assert_eq!(back.options, paid.options);
}

async fn record_attempt_moves_the_delivery_and_the_queue(store: &Store) {
    let s = source("wh_attempt1");
    store.create_source(s.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let mut e = Vec::new();
    for at in [1_000, 2_000, 3_000] {
        let event = event_at(s.id, T0 + at, "t", None);
        let delivery = ingest_stored(store, event.clone()).await[0].id;
        e.push((event.id, delivery));
    }
    let failing_since = |store: &Store| {
        let (source_id, id) = (s.id, d.id);
        let store = store.clone();
        async move {
            store
                .destination(source_id, id)
                .await
                .unwrap()
                .failing_since_ms
        }
    };

    // Succeeded: out of the queue for good.
    let item = queued_item(store, d.id, e[0].1).await;
    let recorded = record_under_lease(
        store,
        outcome(&d, item, attempt(1, T0 + 10_000, true), Next::Succeeded),
    )
    .await
    .unwrap();
    assert_eq!(recorded, Recorded::default());
    let done = delivery_of(store, e[0].0, e[0].1).await;
    assert_eq!(done.status, DeliveryStatus::Succeeded);
    assert_eq!((done.attempts, done.next_attempt_ms), (1, None));
    assert_eq!(failing_since(store).await, None);

    // RetryAt: pending, requeued at that time; a failure run starts.
    let item = queued_item(store, d.id, e[1].1).await;
    let recorded = record_under_lease(
        store,
        outcome(
            &d,
            item,
            attempt(1, T0 + 11_000, false),
            Next::RetryAt(T0 + 20_000),
        ),
    )
    .await
    .unwrap();
    assert_eq!(recorded, Recorded::default());
    let waiting = delivery_of(store, e[1].0, e[1].1).await;
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    assert_eq!(
        (waiting.attempts, waiting.next_attempt_ms),
        (1, Some(T0 + 20_000))
    );
    let (due, next) = store
        .due_for(d.id, (T0 + 15_000) as u64, &HashSet::new(), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|i| i.delivery_id).collect::<Vec<_>>(),
        [e[2].1]
    );
    assert_eq!(next, Some((T0 + 20_000) as u64));
    assert_eq!(failing_since(store).await, Some(T0 + 11_000));

    // Failed: out of the queue; the run goes on from its start.
    let item = queued_item(store, d.id, e[2].1).await;
    record_under_lease(
        store,
        outcome(&d, item, attempt(1, T0 + 12_000, false), Next::Failed),
    )
    .await
    .unwrap();
    let failed = delivery_of(store, e[2].0, e[2].1).await;
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!((failed.attempts, failed.next_attempt_ms), (1, None));
    assert_eq!(failing_since(store).await, Some(T0 + 11_000));
    assert_eq!(
        queued(store, d.id).await,
        [DueItem {
            delivery_id: e[1].1,
            event_id: e[1].0,
            due_ms: (T0 + 20_000) as u64
        }]
    );
    assert_eq!(
        store.queue_depth(vec![d.id]).await.unwrap(),
        (1, Some((T0 + 20_000) as u64))
    );

    // The retry succeeds: the queue is empty and the run is over.
    let item = queued_item(store, d.id, e[1].1).await;
    record_under_lease(
        store,
        outcome(&d, item, attempt(2, T0 + 20_000, true), Next::Succeeded),
    )
    .await
    .unwrap();
    let done = delivery_of(store, e[1].0, e[1].1).await;
    assert_eq!((done.status, done.attempts), (DeliveryStatus::Succeeded, 2));
    assert_eq!(store.queue_depth(vec![d.id]).await.unwrap(), (0, None));
    assert_eq!(failing_since(store).await, None);
    let with = store.deliveries_with_attempts(s.id, e[1].0).await.unwrap();
    assert_eq!(
        with[0].1.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2]
    );
}

async fn auto_disable_counts_from_the_first_failure_after_the_last_success(store: &Store) {
    let s = source("wh_autodis1");
    store.create_source(s.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let mut e = Vec::new();
    for n in 0..3 {
        let event = event_at(s.id, T0 + n, "t", None);
        let delivery = ingest_stored(store, event.clone()).await[0].id;
        e.push((event.id, delivery));
    }
    // One attempt of a queued delivery, started at T0 + `at`; failures
    // retry 50 ms later. `disable_after` is 1 s.
    let run = |(event, delivery): (EventId, DeliveryId), at: i64, ok: bool| {
        let (store, d) = (store.clone(), d.clone());
        async move {
            let item = queued_item(&store, d.id, delivery).await;
            let number = delivery_of(&store, event, delivery).await.attempts + 1;
            let next = if ok {
                Next::Succeeded
            } else {
                Next::RetryAt(T0 + at + 50)
            };
            let mut o = outcome(&d, item, attempt(number, T0 + at, ok), next);
            o.disable_after_ms = 1_000;
            record_under_lease(&store, o).await.unwrap()
        }
    };
    let kept = Recorded::default();

    // A failure at 10.0 s, a success at 10.5 s (the run ends), a new run
    // from 10.9 s.
    assert_eq!(run(e[0], 10_000, false).await, kept);
    assert_eq!(run(e[1], 10_500, true).await, kept);
    assert_eq!(run(e[0], 10_900, false).await, kept);
    // 1.5 s after the first failure but 0.6 s into the new run: kept.
    assert_eq!(run(e[2], 11_500, false).await, kept);
    assert!(store.destination(s.id, d.id).await.unwrap().enabled);
    // 1.1 s into the new run: disabled, and what was queued is cancelled.
    let disabled = run(e[0], 12_000, false).await;
    assert_eq!(
        disabled,
        Recorded {
            disabled_destination: true,
            stale: false,
            fenced_off: false,
        }
    );
    let off = store.destination(s.id, d.id).await.unwrap();
    assert!(!off.enabled);
    assert_eq!(off.disabled_at_ms, Some(T0 + 12_000));
    assert!(off
        .disabled_reason
        .as_deref()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(off.failing_since_ms, Some(T0 + 10_900));
    assert!(queued(store, d.id).await.is_empty());
    let statuses: Vec<DeliveryStatus> = {
        let mut out = Vec::new();
        for (event, delivery) in &e {
            out.push(delivery_of(store, *event, *delivery).await.status);
        }
        out
    };
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Cancelled,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Cancelled
        ]
    );
    assert!(ingest_stored(store, event_at(s.id, T0 + 12_500, "t", None))
        .await
        .is_empty());

    // Re-enabled: why it was disabled is cleared and the run starts afresh.
    let on = store
        .update_destination(
            s.id,
            d.id,
            DestinationChange {
                enabled: Some(true),
                now_ms: T0 + 13_000,
                ..DestinationChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(on.cancelled, 0);
    for got in [on.destination, store.destination(s.id, d.id).await.unwrap()] {
        assert!(got.enabled);
        assert_eq!(got.disabled_reason, None);
        assert_eq!(got.disabled_at_ms, None);
        assert_eq!(got.failing_since_ms, None);
        assert_eq!(got.updated_at_ms, T0 + 13_000);
    }
    let event = event_at(s.id, T0 + 14_000, "t", None);
    let fresh = (event.id, ingest_stored(store, event).await[0].id);
    assert_eq!(run(fresh, 20_000, false).await, kept);
    assert_eq!(run(fresh, 20_600, false).await, kept);
    assert!(store.destination(s.id, d.id).await.unwrap().enabled);
    assert!(run(fresh, 21_200, false).await.disabled_destination);
}

async fn an_outcome_for_a_delivery_no_longer_pending_is_stale(store: &Store) {
    let s = source("wh_stale001");
    store.create_source(s.clone()).await.unwrap();
    let (d1, d2, d3) = (
        destination(s.id, &[]),
        destination(s.id, &["two"]),
        destination(s.id, &["three"]),
    );
    for d in [&d1, &d2, &d3] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }
    let stale = Recorded {
        disabled_destination: false,
        stale: true,
        fenced_off: false,
    };

    // Cancelled while the attempt was on the wire, and the attempt failed:
    // it stays cancelled, and the attempt is on record.
    let e1 = event_at(s.id, T0 + 1_000, "one", None);
    let l1 = ingest_stored(store, e1.clone()).await[0].id;
    let item = queued_item(store, d1.id, l1).await;
    store
        .update_destination(s.id, d1.id, disable(T0 + 1_500))
        .await
        .unwrap();
    let recorded = record_under_lease(
        store,
        outcome(
            &d1,
            item,
            attempt(1, T0 + 2_000, false),
            Next::RetryAt(T0 + 9_000),
        ),
    )
    .await
    .unwrap();
    assert_eq!(recorded, stale);
    let (delivery, attempts) = &store.deliveries_with_attempts(s.id, e1.id).await.unwrap()[0];
    assert_eq!(delivery.status, DeliveryStatus::Cancelled);
    assert_eq!(delivery.next_attempt_ms, None);
    assert_eq!(attempts.len(), 1);
    assert!(queued(store, d1.id).await.is_empty(), "not requeued");

    // Cancelled meanwhile, but the receiver took it: it was delivered.
    let e2 = event_at(s.id, T0 + 3_000, "two", None);
    let l2 = ingest_stored(store, e2.clone()).await[0].id;
    let item = queued_item(store, d2.id, l2).await;
    store
        .update_destination(s.id, d2.id, disable(T0 + 3_500))
        .await
        .unwrap();
    let recorded = record_under_lease(
        store,
        outcome(&d2, item, attempt(1, T0 + 4_000, true), Next::Succeeded),
    )
    .await
    .unwrap();
    assert_eq!(recorded, stale);
    let delivered = delivery_of(store, e2.id, l2).await;
    assert_eq!(delivered.status, DeliveryStatus::Succeeded);
    assert_eq!(delivered.next_attempt_ms, None);

    // The event was purged meanwhile: nothing to record, and no error.
    let e3 = event_at(s.id, T0 + 5_000, "three", None);
    let l3 = ingest_stored(store, e3.clone()).await[0].id;
    let item = queued_item(store, d3.id, l3).await;
    store.purge_events(vec![e3.id]).await.unwrap();
    let recorded = record_under_lease(
        store,
        outcome(&d3, item, attempt(1, T0 + 6_000, false), Next::Failed),
    )
    .await
    .unwrap();
    assert_eq!(recorded, stale);
    assert_err!(store.attempt_inputs(e3.id, l3).await, StoreError::NotFound);
    assert!(store.destination(s.id, d3.id).await.unwrap().enabled);
}

// ---------------------------------------------------------------------------
// Bulk replay jobs
// ---------------------------------------------------------------------------

async fn replay_jobs_are_stored_found_and_listed(store: &Store) {
    let (s, other) = (source("wh_jobs00001"), source("wh_jobs00002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let mut jobs = Vec::new();
    for n in 0..3 {
        let mut j = job(s.id, T0 + n, T0 + DAY, vec![d.id]);
        j.type_pattern = Some("invoice.*".to_string());
        j.events_total = 10 + n as u64;
        j.deliveries_total = 20 + n as u64;
        store.create_replay(j.clone()).await.unwrap();
        jobs.push(j);
    }

    let got = store.replay(s.id, jobs[0].id).await.unwrap();
    assert_eq!((got.id, got.source_id), (jobs[0].id, s.id));
    assert_eq!((got.after_ms, got.before_ms), (T0, T0 + DAY));
    assert_eq!(got.upper_id, u128::MAX);
    assert_eq!(got.type_pattern.as_deref(), Some("invoice.*"));
    assert!(!got.only_failed);
    assert_eq!(got.destination_ids, None);
    assert_eq!(got.candidates, [d.id]);
    assert_eq!(got.cursor, 0);
    assert_eq!((got.events_total, got.deliveries_total), (10, 20));
    assert_eq!((got.events_done, got.deliveries_queued), (0, 0));
    assert_eq!(got.state, ReplayState::Running);
    assert_err!(
        store.replay(other.id, jobs[0].id).await,
        StoreError::NotFound
    );
    assert_err!(store.replay(s.id, new_id()).await, StoreError::NotFound);

    let ids = |items: &[ReplayRecord]| -> Vec<_> { items.iter().map(|j| j.id).collect() };
    let first = store.list_replays(s.id, None, 2).await.unwrap();
    assert_eq!(ids(&first.items), [jobs[2].id, jobs[1].id]);
    assert_eq!(first.next, Some(jobs[1].id.as_u128()));
    let last = store.list_replays(s.id, first.next, 2).await.unwrap();
    assert_eq!(ids(&last.items), [jobs[0].id]);
    assert_eq!(last.next, None);
    let empty = store.list_replays(other.id, None, 2).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next, None);
    assert_err!(
        store.list_replays(new_id(), None, 2).await,
        StoreError::NotFound
    );
    assert_err!(
        store.create_replay(job(new_id(), 0, T0, vec![])).await,
        StoreError::NotFound
    );

    let mut finished = job(other.id, 0, T0, vec![]);
    finished.state = ReplayState::Completed;
    store.create_replay(finished).await.unwrap();
    let mut running = store.running_replays().await.unwrap();
    running.sort_unstable();
    assert_eq!(
        running,
        sorted(ids(&jobs))
            .into_iter()
            .map(|j| (s.id, j))
            .collect::<Vec<_>>()
    );
}

/// A source with two destinations (`invoice.*`, everything) and a disabled
/// third, and five events: on the after bound (T0+500), three inside
/// (invoice, charge, invoice) and one on the before bound (T0+4000).
async fn replay_fixture(
    store: &Store,
    slug: &str,
) -> (SourceRecord, [DestinationRecord; 3], Vec<EventRecord>) {
    let s = source(slug);
    store.create_source(s.clone()).await.unwrap();
    let (d1, d2) = (destination(s.id, &["invoice.*"]), destination(s.id, &[]));
    let mut d3 = destination(s.id, &[]);
    d3.enabled = false;
    for d in [&d1, &d2, &d3] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }
    let mut events = Vec::new();
    for (at, kind) in [
        (500, "invoice.paid"),
        (1_000, "invoice.paid"),
        (2_000, "charge.x"),
        (3_000, "invoice.paid"),
        (4_000, "invoice.paid"),
    ] {
        let e = event_at(s.id, T0 + at, kind, None);
        ingest_stored(store, e.clone()).await;
        events.push(e);
    }
    (s, [d1, d2, d3], events)
}

async fn count_replay_counts_what_a_job_would_queue(store: &Store) {
    let (s, [d1, d2, d3], e) = replay_fixture(store, "wh_count0001").await;
    let base = job(s.id, T0 + 500, T0 + 4_000, vec![d1.id, d2.id, d3.id]);
    let totals = |events, deliveries, matched| Totals {
        events,
        deliveries,
        matched,
    };

    // e1 → d1, d2; e2 → d2; e3 → d1, d2 (d3 is disabled; bounds exclusive).
    assert_eq!(
        store.count_replay(base.clone(), 3).await.unwrap(),
        Some(totals(3, 5, 3))
    );
    assert_eq!(store.count_replay(base.clone(), 2).await.unwrap(), None);

    let mut typed = base.clone();
    typed.type_pattern = Some("invoice.*".to_string());
    assert_eq!(
        store.count_replay(typed, 10).await.unwrap(),
        Some(totals(2, 4, 2))
    );
    // Named destinations: their filters are not applied.
    let mut named = base.clone();
    named.destination_ids = Some(vec![d1.id]);
    named.candidates = vec![d1.id];
    assert_eq!(
        store.count_replay(named, 10).await.unwrap(),
        Some(totals(3, 3, 3))
    );
    // Events stored after the job was accepted are not part of it.
    let mut bounded = base.clone();
    bounded.upper_id = e[3].id.as_u128();
    assert_eq!(
        store.count_replay(bounded, 10).await.unwrap(),
        Some(totals(2, 3, 2))
    );

    // Only failed: e1's delivery to d2 failed; e3's to d1 failed but was
    // queued again since.
    let (_, _, of_e1) = store.event_detail(s.id, e[1].id).await.unwrap();
    let l = of_e1.iter().find(|d| d.destination_id == d2.id).unwrap().id;
    let item = queued_item(store, d2.id, l).await;
    record_under_lease(
        store,
        outcome(&d2, item, attempt(1, T0 + 9_000, false), Next::Failed),
    )
    .await
    .unwrap();
    let (_, _, of_e3) = store.event_detail(s.id, e[3].id).await.unwrap();
    let l = of_e3.iter().find(|d| d.destination_id == d1.id).unwrap().id;
    let item = queued_item(store, d1.id, l).await;
    record_under_lease(
        store,
        outcome(&d1, item, attempt(1, T0 + 9_000, false), Next::Failed),
    )
    .await
    .unwrap();
    store
        .replay_event(s.id, e[3].id, vec![d1.id], T0 + 9_500)
        .await
        .unwrap();
    let mut failed = base.clone();
    failed.only_failed = true;
    assert_eq!(
        store.count_replay(failed, 10).await.unwrap(),
        Some(totals(1, 1, 3))
    );
}

async fn advance_replay_queues_chunks_to_completion(store: &Store) {
    let (s, [d1, d2, _], e) = replay_fixture(store, "wh_advance01").await;
    let mut j = job(s.id, T0 + 500, T0 + 4_000, vec![d1.id, d2.id]);
    let totals = store.count_replay(j.clone(), 100).await.unwrap().unwrap();
    j.events_total = totals.events;
    j.deliveries_total = totals.deliveries;
    store.create_replay(j.clone()).await.unwrap();
    assert_eq!(store.running_replays().await.unwrap(), [(s.id, j.id)]);
    let now = T0 + HOUR;

    let step = store.advance_replay(s.id, j.id, now, 2, 100).await.unwrap();
    assert_eq!(step.state, Some(ReplayState::Running));
    assert_eq!((step.events, step.deliveries), (2, 3));
    assert_eq!(
        sorted(step.destinations.clone()),
        sorted(vec![d1.id, d2.id])
    );
    let got = store.replay(s.id, j.id).await.unwrap();
    assert_eq!(got.cursor, e[2].id.as_u128());
    assert_eq!((got.events_done, got.deliveries_queued), (2, 3));
    assert_eq!(got.state, ReplayState::Running);
    assert_eq!(got.updated_at_ms, now);

    let step = store
        .advance_replay(s.id, j.id, now + 1, 2, 100)
        .await
        .unwrap();
    assert_eq!(step.state, Some(ReplayState::Completed));
    assert_eq!((step.events, step.deliveries), (1, 2));
    let got = store.replay(s.id, j.id).await.unwrap();
    assert_eq!(got.cursor, e[3].id.as_u128());
    assert_eq!(
        (got.events_done, got.deliveries_queued),
        (got.events_total, got.deliveries_total)
    );
    assert_eq!((got.events_done, got.deliveries_queued), (3, 5));
    assert_eq!(got.state, ReplayState::Completed);
    assert!(store.running_replays().await.unwrap().is_empty());

    // What was queued: new pending deliveries due at the chunk's time.
    let replayed = |deliveries: &[DeliveryRecord]| -> Vec<DestinationId> {
        let mut out: Vec<_> = deliveries
            .iter()
            .filter(|d| d.created_at_ms >= now && d.status == DeliveryStatus::Pending)
            .map(|d| d.destination_id)
            .collect();
        out.sort_unstable();
        out
    };
    let (_, _, of_e1) = store.event_detail(s.id, e[1].id).await.unwrap();
    assert_eq!(of_e1.len(), 4);
    assert_eq!(replayed(&of_e1), sorted(vec![d1.id, d2.id]));
    let (_, _, of_e2) = store.event_detail(s.id, e[2].id).await.unwrap();
    assert_eq!(replayed(&of_e2), [d2.id]);
    for outside in [&e[0], &e[4]] {
        let (_, _, of) = store.event_detail(s.id, outside.id).await.unwrap();
        assert_eq!(of.len(), 2, "outside the range: nothing new");
    }
    // Originals: d1 got 4 invoice events, d2 all 5; replays: 2 and 3.
    assert_eq!(queued(store, d1.id).await.len(), 6);
    assert_eq!(queued(store, d2.id).await.len(), 8);

    // Done is done; an unknown job has no state.
    let again = store
        .advance_replay(s.id, j.id, now + 2, 2, 100)
        .await
        .unwrap();
    assert_eq!(again.state, Some(ReplayState::Completed));
    assert_eq!((again.events, again.deliveries), (0, 0));
    assert!(again.destinations.is_empty());
    assert_eq!(store.queue_depth(vec![]).await.unwrap().0, 14);
    let unknown = store
        .advance_replay(s.id, new_id(), now, 2, 100)
        .await
        .unwrap();
    assert_eq!(unknown.state, None);

    // `max_scan` bounds the index entries one chunk examines.
    let k = job(s.id, T0 + 500, T0 + 4_000, vec![d1.id, d2.id]);
    store.create_replay(k.clone()).await.unwrap();
    let step = store.advance_replay(s.id, k.id, now, 10, 1).await.unwrap();
    assert_eq!(step.state, Some(ReplayState::Running));
    assert_eq!((step.events, step.deliveries), (1, 2));
    assert_eq!(
        store.replay(s.id, k.id).await.unwrap().cursor,
        e[1].id.as_u128()
    );
}

async fn advance_replay_rechecks_destinations_per_chunk(store: &Store) {
    let (s, [d1, d2, _], _) = replay_fixture(store, "wh_advance02").await;
    let j = job(s.id, T0 + 500, T0 + 4_000, vec![d1.id, d2.id]);
    store.create_replay(j.clone()).await.unwrap();
    let now = T0 + HOUR;
    let mut steps = Vec::new();
    let step = store.advance_replay(s.id, j.id, now, 1, 100).await.unwrap();
    steps.push((step.state, step.events, step.deliveries));
    store
        .update_destination(s.id, d1.id, disable(now))
        .await
        .unwrap();
    for _ in 0..2 {
        let step = store.advance_replay(s.id, j.id, now, 1, 100).await.unwrap();
        assert_eq!(step.destinations, [d2.id]);
        steps.push((step.state, step.events, step.deliveries));
    }
    let running = Some(ReplayState::Running);
    assert_eq!(
        steps,
        [
            (running, 1, 2),
            (running, 1, 1),
            (Some(ReplayState::Completed), 1, 1)
        ]
    );
    let got = store.replay(s.id, j.id).await.unwrap();
    assert_eq!((got.events_done, got.deliveries_queued), (3, 4));
    assert!(queued(store, d1.id).await.is_empty());
}

async fn a_replay_is_cancelled_when_its_source_is_deleted(store: &Store) {
    let (s, [d1, d2, _], _) = replay_fixture(store, "wh_cancel001").await;
    let j = job(s.id, T0, T0 + 4_000, vec![d1.id, d2.id]);
    store.create_replay(j.clone()).await.unwrap();
    assert_eq!(store.running_replays().await.unwrap(), [(s.id, j.id)]);

    store.delete_source(s.id).await.unwrap();
    let step = store
        .advance_replay(s.id, j.id, T0 + HOUR, 10, 100)
        .await
        .unwrap();
    assert_eq!(step.state, Some(ReplayState::Cancelled));
    assert_eq!((step.events, step.deliveries), (0, 0));
    assert!(step.destinations.is_empty());
    assert!(store.running_replays().await.unwrap().is_empty());
    store.purge_orphans().await.unwrap();
    assert_err!(store.replay(s.id, j.id).await, StoreError::NotFound);
    assert_eq!(store.queue_depth(vec![]).await.unwrap(), (0, None));
}

async fn finished_replays_are_kept_up_to_the_bound(store: &Store) {
    let (s, other) = (source("wh_kept00001"), source("wh_kept00002"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let elsewhere = {
        let mut j = job(other.id, 0, T0, vec![]);
        j.state = ReplayState::Completed;
        j
    };
    store.create_replay(elsewhere.clone()).await.unwrap();
    let running = job(s.id, 0, T0, vec![]);
    store.create_replay(running.clone()).await.unwrap();
    let mut finished = Vec::new();
    for n in 0..=KEPT_PER_SOURCE {
        let mut j = job(s.id, n as i64, T0, vec![]);
        j.state = if n % 2 == 0 {
            ReplayState::Completed
        } else {
            ReplayState::Cancelled
        };
        store.create_replay(j.clone()).await.unwrap();
        finished.push(j.id);
    }

    let listed = store
        .list_replays(s.id, None, 10 * KEPT_PER_SOURCE)
        .await
        .unwrap();
    let ids: Vec<_> = listed.items.iter().map(|j| j.id).collect();
    // The newest KEPT_PER_SOURCE finished ones, and the running one.
    let mut expected: Vec<_> = finished[1..].iter().rev().copied().collect();
    expected.push(running.id);
    assert_eq!(ids.len(), KEPT_PER_SOURCE + 1);
    assert_eq!(ids, expected);
    assert_err!(store.replay(s.id, finished[0]).await, StoreError::NotFound);
    assert_eq!(
        store.replay(other.id, elsewhere.id).await.unwrap().state,
        ReplayState::Completed
    );
}

// ---------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------

async fn sweep_retention_removes_only_expired_events(store: &Store) {
    let now = T0 + 100 * DAY;
    let (mut month, mut day) = (source("wh_retain001"), source("wh_retain002"));
    month.retention_days = 30;
    day.retention_days = 1;
    store.create_source(month.clone()).await.unwrap();
    store.create_source(day.clone()).await.unwrap();
    let d = destination(month.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let mut m = Vec::new();
    for (n, age) in [40 * DAY, 31 * DAY, 29 * DAY, HOUR].into_iter().enumerate() {
        let e = event_at(month.id, now - age, "t", Some(&format!("m{n}")));
        ingest_stored(store, e.clone()).await;
        m.push(e);
    }
    let (old, fresh) = (
        event_at(day.id, now - 2 * DAY, "t", None),
        event_at(day.id, now - HOUR, "t", None),
    );
    ingest_stored(store, old.clone()).await;
    ingest_stored(store, fresh.clone()).await;

    assert_eq!(store.sweep_retention(now).await.unwrap(), 3);
    assert_eq!(store.event_count(month.id).await.unwrap(), 2);
    assert_eq!(store.event_count(day.id).await.unwrap(), 1);
    for gone in [&m[0], &m[1], &old] {
        assert_err!(store.event(gone.id).await, StoreError::NotFound);
    }
    let listed = store
        .list_events(month.id, EventQuery::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        [m[3].id, m[2].id]
    );
    assert_eq!(
        queued(store, d.id)
            .await
            .iter()
            .map(|i| i.event_id)
            .collect::<Vec<_>>(),
        [m[2].id, m[3].id],
        "the expired events' deliveries went with them"
    );
    assert_eq!(store.event(fresh.id).await.unwrap().body, fresh.body);
    // The provider event id of an expired event is free again.
    ingest_stored(store, event_at(month.id, now, "t", Some("m0"))).await;
    assert_eq!(store.sweep_retention(now).await.unwrap(), 0);
}

async fn purge_events_removes_events_with_their_deliveries_and_dedup(store: &Store) {
    let s = source("wh_purge0001");
    store.create_source(s.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    let mut e = Vec::new();
    for n in 0..3 {
        let event = event_at(s.id, T0 + 1_000 * (n + 1), "t", Some(&format!("p{n}")));
        let delivery = ingest_stored(store, event.clone()).await[0].id;
        e.push((event, delivery));
    }
    let item = queued_item(store, d.id, e[0].1).await;
    record_under_lease(
        store,
        outcome(
            &d,
            item,
            attempt(1, T0 + 5_000, false),
            Next::RetryAt(T0 + 9_000),
        ),
    )
    .await
    .unwrap();

    store
        .purge_events(vec![e[0].0.id, e[1].0.id, new_id()])
        .await
        .unwrap();
    assert_eq!(store.event_count(s.id).await.unwrap(), 1);
    for (event, delivery) in &e[..2] {
        assert_err!(store.event(event.id).await, StoreError::NotFound);
        assert_err!(
            store.event_detail(s.id, event.id).await,
            StoreError::NotFound
        );
        assert_err!(
            store.attempt_inputs(event.id, *delivery).await,
            StoreError::NotFound
        );
    }
    let listed = store
        .list_events(s.id, EventQuery::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        [e[2].0.id]
    );
    assert_eq!(
        queued(store, d.id).await,
        [DueItem {
            delivery_id: e[2].1,
            event_id: e[2].0.id,
            due_ms: (T0 + 3_000) as u64
        }]
    );
    assert_eq!(store.queue_depth(vec![]).await.unwrap().0, 1);
    assert!(store
        .search_events(EventSearch::ProviderEventId("p0".to_string()), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    // Its provider event id is free again.
    let again = event_at(s.id, T0 + 10_000, "t", Some("p0"));
    ingest_stored(store, again.clone()).await;
    let found = store
        .search_events(EventSearch::ProviderEventId("p0".to_string()), None, 10)
        .await
        .unwrap();
    assert_eq!(
        found.items.iter().map(|f| f.event_id).collect::<Vec<_>>(),
        [again.id]
    );
    store.purge_events(vec![]).await.unwrap();
    assert_eq!(store.event_count(s.id).await.unwrap(), 2);
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

async fn one_provider_event_id_ingested_concurrently_is_stored_once(store: &Store) {
    const TASKS: usize = 16;
    let s = source("wh_race00001");
    store.create_source(s.clone()).await.unwrap();
    let d = destination(s.id, &[]);
    store.create_destination(d.clone(), 10).await.unwrap();
    for round in 0..3u64 {
        let pid = format!("evt_race_{round}");
        let start = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (store, start) = (store.clone(), start.clone());
            let event = event_now(s.id, "t", Some(&pid));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let id = event.id;
                (id, store.ingest(event).await.unwrap())
            }));
        }
        let (mut stored, mut originals) = (Vec::new(), Vec::new());
        for task in tasks {
            match task.await.unwrap() {
                (id, IngestOutcome::Stored { deliveries }) => {
                    assert_eq!(destinations_of(&deliveries), [d.id]);
                    stored.push(id);
                }
                (_, IngestOutcome::Duplicate { original }) => originals.push(original),
            }
        }
        assert_eq!(stored.len(), 1, "exactly one stored: {stored:?}");
        assert_eq!(originals, vec![stored[0]; TASKS - 1]);
        assert_eq!(store.event_count(s.id).await.unwrap(), round + 1);
        let found = store
            .search_events(EventSearch::ProviderEventId(pid.clone()), None, 10)
            .await
            .unwrap();
        assert_eq!(
            found.items.iter().map(|f| f.event_id).collect::<Vec<_>>(),
            [stored[0]]
        );
    }
    assert_eq!(
        queued(store, d.id).await.len(),
        3,
        "one delivery per stored event"
    );
}

async fn a_destination_disabled_during_concurrent_ingest_is_fully_in_or_out(store: &Store) {
    const TASKS: usize = 4;
    const PER_TASK: usize = 40;
    const BEFORE_DISABLE: usize = 20;
    let s = source("wh_race00002");
    store.create_source(s.clone()).await.unwrap();
    let (keep, off) = (destination(s.id, &[]), destination(s.id, &[]));
    store.create_destination(keep.clone(), 10).await.unwrap();
    store.create_destination(off.clone(), 10).await.unwrap();

    let stored = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, stored, source_id) = (store.clone(), stored.clone(), s.id);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..PER_TASK {
                let event = event_now(source_id, "t", None);
                let id = event.id;
                let deliveries = ingest_stored(&store, event).await;
                stored.fetch_add(1, Ordering::SeqCst);
                out.push((id, destinations_of(&deliveries)));
            }
            out
        }));
    }
    let waited = std::time::Instant::now();
    while stored.load(Ordering::SeqCst) < BEFORE_DISABLE {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "ingest is stuck"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cancelled = store
        .update_destination(s.id, off.id, disable(T0))
        .await
        .unwrap()
        .cancelled;
    // Stored after the disable returned: never fanned out to it.
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let event = event_now(s.id, "t", None);
        let id = event.id;
        let deliveries = ingest_stored(store, event).await;
        assert_eq!(destinations_of(&deliveries), [keep.id]);
        outcomes.push((id, destinations_of(&deliveries)));
    }
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    assert_eq!(outcomes.len(), TASKS * PER_TASK + 5);

    let mut to_off = 0;
    for (event, answered) in &outcomes {
        let (_, _, deliveries) = store.event_detail(s.id, *event).await.unwrap();
        let kept: Vec<_> = deliveries
            .iter()
            .filter(|d| d.destination_id == keep.id)
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].status, DeliveryStatus::Pending);
        let of_off: Vec<_> = deliveries
            .iter()
            .filter(|d| d.destination_id == off.id)
            .collect();
        match of_off.as_slice() {
            [] => assert_eq!(answered, &[keep.id]),
            [one] => {
                assert_eq!(one.status, DeliveryStatus::Cancelled, "never pending");
                assert_eq!(answered, &sorted(vec![keep.id, off.id]));
                to_off += 1;
            }
            more => panic!("{} deliveries of one event to one destination", more.len()),
        }
    }
    // Every delivery to it was made before the disable committed and
    // cancelled by it; the events acknowledged before it began all had one.
    assert_eq!(cancelled, to_off);
    assert!(cancelled >= BEFORE_DISABLE as u64, "{cancelled}");
    assert!(queued(store, off.id).await.is_empty());
    assert_eq!(queued(store, keep.id).await.len(), outcomes.len());
}

async fn paging_while_new_events_arrive_has_no_duplicates_or_gaps(store: &Store) {
    const INITIAL: usize = 60;
    let (s, other) = (source("wh_race00003"), source("wh_race00004"));
    store.create_source(s.clone()).await.unwrap();
    store.create_source(other.clone()).await.unwrap();
    let mut initial = Vec::new();
    let mut batch = Vec::new();
    for n in 0..INITIAL {
        let event = event_now(if n % 3 == 0 { other.id } else { s.id }, "t", None);
        initial.push((event.source_id, event.id));
        let store = store.clone();
        batch.push(tokio::spawn(
            async move { ingest_stored(&store, event).await },
        ));
    }
    for task in batch {
        task.await.unwrap();
    }
    let newest_initial = initial.iter().map(|(_, id)| *id).max().unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop, ids) = (store.clone(), stop.clone(), [s.id, other.id]);
        tokio::spawn(async move {
            let mut added = 0;
            while !stop.load(Ordering::SeqCst) && added < 500 {
                ingest_stored(&store, event_now(ids[added % 2], "t", None)).await;
                added += 1;
            }
            added
        })
    };

    // One source's list.
    let mut listed = Vec::new();
    let mut query = EventQuery::default();
    for _ in 0..100 {
        let page = store.list_events(s.id, query.clone(), 7).await.unwrap();
        listed.extend(page.items.iter().map(|i| i.id));
        match page.next {
            Some(next) => query.before_id = Some(next),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Every source's.
    let mut searched = Vec::new();
    let mut before = None;
    for _ in 0..100 {
        let page = store
            .search_events(EventSearch::All, before, 7)
            .await
            .unwrap();
        searched.extend(page.items.iter().map(|f| (f.source_id, f.event_id)));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let added = writer.await.unwrap();
    assert!(added > 0, "events arrived while paging");

    let check = |paged: Vec<_>, existed: Vec<_>| {
        assert!(
            paged.windows(2).all(|w| w[0] > w[1]),
            "newest first, no duplicates"
        );
        let paged_set: HashSet<_> = paged.iter().copied().collect();
        let missing: Vec<_> = existed
            .iter()
            .filter(|id| !paged_set.contains(*id))
            .collect();
        assert!(missing.is_empty(), "gaps: {missing:?}");
        let existed: HashSet<_> = existed.into_iter().collect();
        assert!(
            paged
                .iter()
                .all(|id| existed.contains(id) || *id > newest_initial),
            "only events that existed, or arrived since"
        );
    };
    let of_s: Vec<_> = initial
        .iter()
        .filter(|(source, _)| *source == s.id)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(of_s.len(), 40);
    check(listed, of_s);
    assert!(searched
        .iter()
        .all(|(source, _)| [s.id, other.id].contains(source)));
    check(
        searched.iter().map(|(_, id)| *id).collect(),
        initial.iter().map(|(_, id)| *id).collect(),
    );
}

/// Ingests every event at once (all tasks released together), answering
/// each event with its outcome, in the order given.
async fn ingest_all_at_once(
    store: &Store,
    events: Vec<EventRecord>,
) -> Vec<(EventRecord, Result<IngestOutcome, StoreError>)> {
    let start = Arc::new(tokio::sync::Barrier::new(events.len()));
    let mut tasks = Vec::new();
    for event in events {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let outcome = store.ingest(event.clone()).await;
            (event, outcome)
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// Far more concurrent ingests than one commit takes, many sharing a
/// provider event id (within one commit, across commits, and the same id
/// in two sources): each (source, id) is stored once, every other sender
/// is told the one stored, and only it has deliveries.
async fn concurrent_duplicates_within_and_across_commits_are_stored_once(store: &Store) {
    const EVENTS: usize = 600;
    const KEYS: usize = 25;
    let (a, b) = (source("wh_dups00001"), source("wh_dups00002"));
    store.create_source(a.clone()).await.unwrap();
    store.create_source(b.clone()).await.unwrap();
    let (da, db) = (destination(a.id, &[]), destination(b.id, &[]));
    store.create_destination(da.clone(), 10).await.unwrap();
    store.create_destination(db.clone(), 10).await.unwrap();
    // Keys from an earlier commit too: their later senders are duplicates.
    let early = event_now(a.id, "t", Some("evt_dup_0"));
    ingest_stored(store, early.clone()).await;

    let events: Vec<EventRecord> = (0..EVENTS)
        .map(|n| {
            let source = if n % 3 == 0 { b.id } else { a.id };
            event_now(source, "t", Some(&format!("evt_dup_{}", n % KEYS)))
        })
        .collect();
    let outcomes = ingest_all_at_once(store, events).await;

    let mut stored: std::collections::HashMap<(SourceId, String), EventId> =
        std::collections::HashMap::new();
    stored.insert((a.id, "evt_dup_0".to_string()), early.id);
    for (event, outcome) in &outcomes {
        if let IngestOutcome::Stored { deliveries } = outcome.as_ref().unwrap() {
            let key = (event.source_id, event.provider_event_id.clone().unwrap());
            assert!(
                stored.insert(key.clone(), event.id).is_none(),
                "{key:?} stored twice"
            );
            let want = if event.source_id == a.id {
                da.id
            } else {
                db.id
            };
            assert_eq!(destinations_of(deliveries), [want]);
        }
    }
    // Every key of both sources, each once.
    assert_eq!(stored.len(), 2 * KEYS);
    for (event, outcome) in &outcomes {
        let key = (event.source_id, event.provider_event_id.clone().unwrap());
        let winner = stored[&key];
        match outcome.as_ref().unwrap() {
            IngestOutcome::Stored { .. } => assert_eq!(event.id, winner),
            IngestOutcome::Duplicate { original } => {
                assert_eq!(*original, winner, "{key:?}");
                assert_err!(store.event(event.id).await, StoreError::NotFound);
            }
        }
    }
    assert_eq!(store.event_count(a.id).await.unwrap(), KEYS as u64);
    assert_eq!(store.event_count(b.id).await.unwrap(), KEYS as u64);
    assert_eq!(queued(store, da.id).await.len(), KEYS);
    assert_eq!(queued(store, db.id).await.len(), KEYS);
}

/// Events of a deleted source are refused, each on its own: events of
/// another source written in the same commits are stored, and an event
/// of the deleted source is either stored before the deletion (and then
/// purged with it) or refused, never half.
async fn ingest_racing_a_source_deletion_refuses_only_that_sources_events(store: &Store) {
    let (keep, gone, early) = (
        source("wh_keep00001"),
        source("wh_gone00001"),
        source("wh_gone00002"),
    );
    for s in [&keep, &gone, &early] {
        store.create_source(s.clone()).await.unwrap();
        store
            .create_destination(destination(s.id, &[]), 10)
            .await
            .unwrap();
    }
    // Deleted before: every one of its events refused, the others stored.
    store.delete_source(early.id).await.unwrap();
    let mixed: Vec<EventRecord> = (0..120)
        .map(|n| {
            let s = if n % 4 == 0 { early.id } else { keep.id };
            event_now(
                s,
                "t",
                (n % 8 == 1).then(|| format!("evt_mix_{n}")).as_deref(),
            )
        })
        .collect();
    for (event, outcome) in ingest_all_at_once(store, mixed).await {
        if event.source_id == early.id {
            assert_err!(outcome, StoreError::NotFound);
            assert_err!(store.event(event.id).await, StoreError::NotFound);
        } else {
            match outcome.unwrap() {
                IngestOutcome::Stored { deliveries } => assert_eq!(deliveries.len(), 1),
                other => panic!("expected the event stored, got {other:?}"),
            }
        }
    }
    assert_eq!(store.event_count(keep.id).await.unwrap(), 90);

    // Deleted while its events arrive.
    let mut tasks = Vec::new();
    for n in 0..200 {
        let task_store = store.clone();
        let s = if n % 2 == 0 { gone.id } else { keep.id };
        tasks.push(tokio::spawn(async move {
            let event = event_now(s, "t", None);
            let outcome = task_store.ingest(event.clone()).await;
            (event, outcome)
        }));
        if n == 100 {
            store.delete_source(gone.id).await.unwrap();
        }
    }
    let (mut refused, mut kept) = (0, 0);
    for task in tasks {
        let (event, outcome) = task.await.unwrap();
        match outcome {
            Ok(IngestOutcome::Stored { deliveries }) => {
                assert_eq!(deliveries.len(), 1);
                if event.source_id == keep.id {
                    kept += 1;
                }
            }
            Err(StoreError::NotFound) => {
                assert_eq!(event.source_id, gone.id, "only the deleted source's");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kept, 100);
    assert!(refused > 0, "events sent after the deletion were refused");
    assert_err!(
        store.ingest(event_now(gone.id, "t", None)).await,
        StoreError::NotFound
    );
    assert_eq!(store.event_count(keep.id).await.unwrap(), 190);
}

/// Hundreds of events at once, over two sources with filters: every one
/// answered stored with the deliveries its filters call for, and exactly
/// those are listed and queued afterwards.
async fn many_concurrent_ingests_are_all_stored_listed_and_queued(store: &Store) {
    const EVENTS: usize = 700;
    let (a, b) = (source("wh_many00001"), source("wh_many00002"));
    store.create_source(a.clone()).await.unwrap();
    store.create_source(b.clone()).await.unwrap();
    let all = destination(a.id, &[]);
    let invoices = destination(a.id, &["invoice.*"]);
    let of_b = destination(b.id, &[]);
    for d in [&all, &invoices, &of_b] {
        store.create_destination(d.clone(), 10).await.unwrap();
    }
    let events: Vec<EventRecord> = (0..EVENTS)
        .map(|n| {
            let s = if n % 5 == 0 { b.id } else { a.id };
            let kind = if n % 2 == 0 {
                "invoice.paid"
            } else {
                "charge.failed"
            };
            let pid = (n % 3 == 0).then(|| format!("evt_many_{n}"));
            event_now(s, kind, pid.as_deref())
        })
        .collect();
    let outcomes = ingest_all_at_once(store, events).await;
    let mut answered = Vec::new();
    for (event, outcome) in &outcomes {
        let IngestOutcome::Stored { deliveries } = outcome.as_ref().unwrap() else {
            panic!("expected {} stored", event.id);
        };
        let want = if event.source_id == b.id {
            vec![of_b.id]
        } else if event.event_type == "invoice.paid" {
            sorted(vec![all.id, invoices.id])
        } else {
            vec![all.id]
        };
        assert_eq!(destinations_of(deliveries), want);
        for d in deliveries {
            assert_eq!((d.event_id, d.source_id), (event.id, event.source_id));
            answered.push(d.id);
        }
    }

    for s in [&a, &b] {
        let mut listed = Vec::new();
        let mut query = EventQuery::default();
        for _ in 0..100 {
            let page = store.list_events(s.id, query.clone(), 100).await.unwrap();
            for item in &page.items {
                listed.push(item.id);
            }
            match page.next {
                Some(next) => query.before_id = Some(next),
                None => break,
            }
        }
        let want: Vec<EventId> = outcomes
            .iter()
            .filter(|(e, _)| e.source_id == s.id)
            .map(|(e, _)| e.id)
            .collect();
        assert_eq!(sorted(listed), sorted(want));
    }
    let mut queued_ids = Vec::new();
    for d in [&all, &invoices, &of_b] {
        queued_ids.extend(queued(store, d.id).await.iter().map(|i| i.delivery_id));
    }
    assert_eq!(sorted(queued_ids), sorted(answered));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.events, EVENTS as u64);
}

/// An entry dated `at_ms` (in the past, to be swept), whatever its id says.
fn audit_entry(action: &str, target: String, at_ms: i64) -> super::AuditEntry {
    let mut entry = super::AuditEntry::new(
        super::AuditActor {
            api_key_id: Some("key_test".into()),
            name: "tester".into(),
            via: "api".into(),
        },
        action,
        target,
    );
    entry.at_ms = at_ms;
    entry
}

async fn all_audit(store: &Store) -> Vec<super::AuditEntry> {
    store
        .list_audit(super::AuditQuery::default(), None, 250)
        .await
        .unwrap()
        .items
}

/// An audit entry is part of its change's commit: a change that commits
/// has its entry (with the fields the commit changed, diffed inside it),
/// and a change refused inside the commit leaves no entry behind.
async fn audit_entries_commit_with_their_change_and_only_then(store: &Store) {
    let s = source("wh_audit001");
    store
        .create_source_audited(
            s.clone(),
            Some(audit_entry("source.create", s.id.to_string(), T0)),
        )
        .await
        .unwrap();
    let d = destination(s.id, &[]);
    store
        .create_destination_audited(
            d.clone(),
            1,
            Some(audit_entry("destination.create", d.id.to_string(), T0 + 1)),
        )
        .await
        .unwrap();
    // Refused inside the commit: past the cap, a taken slug, a missing
    // destination, a missing key. None of them leaves an entry.
    let over = destination(s.id, &[]);
    let refused = store
        .create_destination_audited(
            over.clone(),
            1,
            Some(audit_entry(
                "destination.create",
                over.id.to_string(),
                T0 + 2,
            )),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::LimitReached(1))),
        "{refused:?}"
    );
    let mut twin = source("wh_audit001");
    twin.id = SourceId::new();
    assert!(store
        .create_source_audited(
            twin.clone(),
            Some(audit_entry("source.create", twin.id.to_string(), T0 + 3))
        )
        .await
        .is_err());
    let missing = DestinationId::new();
    let change = DestinationChange {
        url: Some("http://127.0.0.1:9/else".into()),
        now_ms: T0 + 4,
        ..DestinationChange::default()
    };
    assert!(matches!(
        store
            .update_destination_audited(
                s.id,
                missing,
                change,
                Some(audit_entry(
                    "destination.update",
                    missing.to_string(),
                    T0 + 4
                )),
            )
            .await,
        Err(StoreError::NotFound)
    ));
    let gone = ApiKeyId::new();
    assert!(store
        .revoke_api_key_audited(
            gone,
            Some(audit_entry("api_key.revoke", gone.to_string(), T0 + 5))
        )
        .await
        .is_err());
    let actions: Vec<String> = all_audit(store)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["destination.create", "source.create"]);

    // A committed update: its entry carries what the commit changed, old
    // and new, and a rotated secret only as "(secret)".
    let change = DestinationChange {
        url: Some("http://127.0.0.1:9/new".into()),
        enabled: Some(false),
        new_secret: Some(NewSecret {
            sealed: store.seal(b"whsec_new"),
            previous_until_ms: T0 + 10,
        }),
        now_ms: T0 + 6,
        ..DestinationChange::default()
    };
    let updated = store
        .update_destination_audited(
            s.id,
            d.id,
            change,
            Some(audit_entry("destination.update", d.id.to_string(), T0 + 6)),
        )
        .await
        .unwrap();
    assert!(!updated.destination.enabled);
    let entries = all_audit(store).await;
    assert_eq!(entries.len(), 3);
    let newest = &entries[0];
    assert_eq!(newest.action, "destination.update");
    assert_eq!(newest.target_id, d.id.to_string());
    assert_eq!(
        newest.changes["url"],
        [
            serde_json::json!(d.url),
            serde_json::json!("http://127.0.0.1:9/new")
        ]
    );
    assert_eq!(
        newest.changes["enabled"],
        [serde_json::json!(true), serde_json::json!(false)]
    );
    assert_eq!(
        newest.changes["secret"],
        [serde_json::json!("(secret)"), serde_json::json!("(secret)")]
    );
    assert_eq!(newest.changes.len(), 3, "{newest:?}");
    // The stored change and the entry agree.
    let stored = store.destination(s.id, d.id).await.unwrap();
    assert_eq!(stored.url, "http://127.0.0.1:9/new");

    // A source's update is diffed the same way; unchanged fields are not listed.
    let change = SourceChange {
        name: Some(s.name.clone()),
        retention_days: Some(s.retention_days + 1),
        now_ms: T0 + 7,
        ..SourceChange::default()
    };
    store
        .update_source_audited(
            s.id,
            change,
            Some(audit_entry("source.update", s.id.to_string(), T0 + 7)),
        )
        .await
        .unwrap();
    let newest = all_audit(store).await.remove(0);
    assert_eq!(newest.action, "source.update");
    assert_eq!(
        newest.changes.keys().collect::<Vec<_>>(),
        ["retention_days"],
        "{newest:?}"
    );
}

/// The list is newest first with a stable cursor, applies every filter,
/// and the retention sweep removes only entries older than its cutoff.
async fn audit_entries_list_newest_first_filtered_and_are_swept(store: &Store) {
    let key = api_key("audited", 71);
    let mut ids = Vec::new();
    for i in 0..7_i64 {
        let mut entry = audit_entry(
            if i % 2 == 0 {
                "api_key.create"
            } else {
                "api_key.revoke"
            },
            format!("key_{i}"),
            T0 + i * 1000,
        );
        if i == 3 {
            entry.actor.api_key_id = Some("key_other".into());
            entry.actor.name = "other".into();
        }
        ids.push(entry.id);
        // Only the first carries a real change; the rest ride on revokes
        // of keys that exist.
        let k = api_key(&format!("k{i}"), 80 + i as u8);
        store.create_api_key(k.clone()).await.unwrap();
        if i == 0 {
            store
                .create_api_key_audited(key.clone(), Some(entry))
                .await
                .unwrap();
        } else {
            store
                .revoke_api_key_audited(k.id, Some(entry))
                .await
                .unwrap();
        }
    }
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(super::AuditQuery::default(), cursor, 3)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    let query = |q: super::AuditQuery| async move {
        store
            .list_audit(q, None, 250)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.target_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        query(super::AuditQuery {
            action: Some("api_key.revoke".into()),
            ..Default::default()
        })
        .await,
        ["key_5", "key_3", "key_1"]
    );
    assert_eq!(
        query(super::AuditQuery {
            actor: Some("key_other".into()),
            ..Default::default()
        })
        .await,
        ["key_3"]
    );
    assert_eq!(
        query(super::AuditQuery {
            actor: Some("other".into()),
            ..Default::default()
        })
        .await,
        ["key_3"]
    );
    assert_eq!(
        query(super::AuditQuery {
            after_ms: Some(T0 + 2000),
            before_ms: Some(T0 + 5000),
            ..Default::default()
        })
        .await,
        ["key_4", "key_3", "key_2"]
    );
    assert_eq!(store.sweep_audit(T0 + 3000).await.unwrap(), 3);
    assert_eq!(
        query(super::AuditQuery::default()).await,
        ["key_6", "key_5", "key_4", "key_3"]
    );
    assert_eq!(store.sweep_audit(T0 + 3000).await.unwrap(), 0);
}

/// Alerts wait until due, oldest first; a retry moves one, a sent one goes.
async fn the_alert_queue_answers_what_is_due_and_settles(store: &Store) {
    let alert = |raw: u128, due: i64| super::AlertRecord {
        id: raw,
        body: format!("{{\"n\":{raw}}}"),
        attempts: 0,
        next_attempt_ms: due,
    };
    let (a, b, c) = (
        alert(new_id::<u128>(), T0),
        alert(new_id::<u128>(), T0 + 10),
        alert(new_id::<u128>(), T0 + 100),
    );
    for x in [&c, &a, &b] {
        store.enqueue_alert(x.clone()).await.unwrap();
    }
    assert_eq!(store.due_alerts(T0 - 1, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.due_alerts(T0 + 10, 10).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        store.due_alerts(T0 + 100, 1).await.unwrap(),
        vec![a.clone()]
    );
    let mut retried = a.clone();
    retried.attempts = 1;
    retried.next_attempt_ms = T0 + 500;
    store.settle_alert(retried.clone(), false).await.unwrap();
    store.settle_alert(b.clone(), true).await.unwrap();
    assert_eq!(
        store.due_alerts(T0 + 100, 10).await.unwrap(),
        vec![c.clone()]
    );
    assert_eq!(
        store.due_alerts(T0 + 500, 10).await.unwrap(),
        vec![retried, c]
    );
}

/// Counts added twice into one minute add up (several nodes share a row);
/// rows older than the kept span go with the next addition.
async fn minute_stats_add_up_per_minute_and_old_ones_go(store: &Store) {
    let minute = T0 / 60_000;
    let stats = |m: i64, events_in: u64| {
        let mut s = super::MinuteStats {
            minute: m,
            events_in,
            delivered: 1,
            ..Default::default()
        };
        s.destinations.insert(
            "dst_a".into(),
            super::DestinationMinute {
                attempts: 2,
                succeeded: 1,
                latency: vec![1, 0, 1],
            },
        );
        s
    };
    store.add_minute_stats(stats(minute - 5, 7)).await.unwrap();
    store.add_minute_stats(stats(minute, 2)).await.unwrap();
    store.add_minute_stats(stats(minute, 3)).await.unwrap();
    let rows = store.minute_stats(minute - 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].minute, rows[0].events_in), (minute - 5, 7));
    let now = &rows[1];
    assert_eq!((now.minute, now.events_in, now.delivered), (minute, 5, 2));
    assert_eq!(
        now.destinations["dst_a"],
        super::DestinationMinute {
            attempts: 4,
            succeeded: 2,
            latency: vec![2, 0, 2],
        }
    );
    assert_eq!(store.minute_stats(minute).await.unwrap().len(), 1);
    // A week and a day later, the old rows are gone.
    let later = minute + super::STATS_KEEP_MINUTES + 1;
    store.add_minute_stats(stats(later, 1)).await.unwrap();
    let rows = store.minute_stats(0).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.minute).collect::<Vec<_>>(), [later]);
}
