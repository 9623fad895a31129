//! Ingest on PostgreSQL, one transaction per group of events.
//!
//! One event per transaction costs about seven round trips and one WAL
//! flush for every webhook received. Instead, concurrent `ingest` calls
//! queue here; a batcher task takes whatever is waiting (up to
//! [`MAX_BATCH`], never waiting on purpose when the queue is empty) and
//! writes it in one transaction of a few multi-row statements:
//!
//! 1. the batch's sources, locked `FOR KEY SHARE` (a source deleted
//!    meanwhile refuses only its own events, `NotFound`);
//! 2. the enabled destinations of all those sources, locked `FOR SHARE`
//!    (a destination disabled concurrently is fully before or after the
//!    whole batch, as for one event);
//! 3. the events, one `INSERT … SELECT FROM unnest(…) ON CONFLICT (source,
//!    dedup key) DO NOTHING RETURNING id`; a provider event id seen twice
//!    in one batch is settled in memory (the first one is written, the
//!    others are its duplicates); an event another transaction already
//!    holds the key for is looked up afterwards and answered `Duplicate`;
//! 4. the deliveries of every stored event, one more `unnest` insert;
//!
//! and each caller gets its own outcome once the COMMIT is durable. While
//! [`BATCHES_IN_FLIGHT`] batches wait for their WAL flush, the next batch
//! is already being gathered and written, so the CPU works while the disk
//! flushes.
//!
//! Failures stay the caller's own where they can: a lost connection (or a
//! COMMIT whose fate is unknown) answers every caller of that batch
//! `Unavailable`, never a success; a deadlock or serialization failure
//! retries the batch; any other database error splits the batch into
//! single events, so one bad event cannot fail the others.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::rows::{self, uid};
use super::{db_error, UNREACHABLE};
use crate::metrics::Metrics;
use crate::model::body_filter;
use crate::model::ids::{DeliveryId, EventId, SourceId};
use crate::model::records::{DeliveryRecord, DeliveryStatus, DestinationRecord, EventRecord};
use crate::store::redb::records::Record;
use crate::store::{IngestOutcome, StoreError};

/// Most events in one transaction. Past a few hundred, a bigger batch only
/// makes its callers wait longer for the same throughput.
pub(super) const MAX_BATCH: usize = 256;

/// Batches written at once: one gathers and writes while another waits
/// for its WAL flush.
pub(super) const BATCHES_IN_FLIGHT: usize = 2;

/// Events that may wait for a batch; a caller finding the queue full waits
/// up to [`ENQUEUE_TIMEOUT`] for room, then gets `Unavailable`.
const QUEUE_CAPACITY: usize = 8 * MAX_BATCH;
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a batch that hit a deadlock or a serialization failure (or
/// a dedup key released while it waited) is tried again.
const ATTEMPTS: usize = 3;

/// Why an event that kept losing its dedup key is refused.
const KEY_CHURN: &str =
    "the provider event id was taken and released repeatedly; send the event again";

type Answer = Result<IngestOutcome, StoreError>;

/// One caller waiting for its event's fate.
struct Pending {
    event: EventRecord,
    reply: oneshot::Sender<Answer>,
}

enum Job {
    Ingest(Pending),
    /// Write what is queued, wait for the batches in flight, then stop.
    Stop(oneshot::Sender<()>),
}

/// The handle to a store's batcher task.
pub(super) struct Ingester {
    tx: mpsc::Sender<Job>,
}

impl Ingester {
    /// Starts the batcher on `runtime`.
    pub(super) fn start(
        runtime: &tokio::runtime::Handle,
        pool: PgPool,
        metrics: Arc<Metrics>,
    ) -> Ingester {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        runtime.spawn(run(rx, pool, metrics));
        Ingester { tx }
    }

    /// Queues `event` for the next batch; answers once that batch is
    /// committed (or has failed).
    pub(super) async fn ingest(&self, event: EventRecord) -> Answer {
        let (reply, answer) = oneshot::channel();
        let job = Job::Ingest(Pending { event, reply });
        match self.tx.send_timeout(job, ENQUEUE_TIMEOUT).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(StoreError::Unavailable("the ingest queue is full"))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                return Err(StoreError::Unavailable("the store is closed"))
            }
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Unavailable("the ingest batcher stopped")))
    }

    /// Writes what is queued and waits for every batch in flight; later
    /// ingests are refused `Unavailable`.
    pub(super) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Job::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

/// The batcher: gathers, writes up to [`BATCHES_IN_FLIGHT`] batches at a
/// time, answers.
async fn run(mut rx: mpsc::Receiver<Job>, pool: PgPool, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // A free slot first: while every slot is busy, events pile up in
        // the queue and make the next batch bigger (the group commit).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::new();
        let mut stop = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Ingest(pending) => batch.push(pending),
                Job::Stop(done) => stop = Some(done),
            }
            if stop.is_none() && batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            drop(slot);
        } else {
            let (pool, metrics) = (pool.clone(), metrics.clone());
            tokio::spawn(async move {
                let events: Vec<EventRecord> = batch.iter().map(|p| p.event.clone()).collect();
                let answers = ingest_batch(&pool, &metrics, &events).await;
                // Answers go out only now, after the COMMIT (or failure).
                for (pending, answer) in batch.into_iter().zip(answers) {
                    // A caller that went away (client disconnected) is fine.
                    let _ = pending.reply.send(answer);
                }
                drop(slot);
            });
        }
        if let Some(done) = stop {
            let every = u32::try_from(BATCHES_IN_FLIGHT).unwrap_or(u32::MAX);
            let _all_done = slots.acquire_many(every).await;
            rx.close();
            // Anything that raced in after the stop is refused, not lost.
            while let Ok(job) = rx.try_recv() {
                match job {
                    Job::Ingest(pending) => {
                        let _ = pending
                            .reply
                            .send(Err(StoreError::Unavailable("the store is closed")));
                    }
                    Job::Stop(done) => {
                        let _ = done.send(());
                    }
                }
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Writes `events` in one transaction when it can; answers one outcome per
/// event, in order.
pub(super) async fn ingest_batch(
    pool: &PgPool,
    metrics: &Metrics,
    events: &[EventRecord],
) -> Vec<Answer> {
    match write_retrying(pool, metrics, events).await {
        Ok(answers) => answers,
        Err(BatchError::Unavailable(why)) => events
            .iter()
            .map(|_| Err(StoreError::Unavailable(why)))
            .collect(),
        Err(BatchError::Failed(e)) if events.len() == 1 => vec![Err(e)],
        Err(BatchError::Failed(e)) => {
            // Something in the batch broke the transaction: each event on
            // its own, so only the bad one fails.
            tracing::warn!(error = %e, events = events.len(),
                "an ingest batch failed; writing its events one by one");
            let mut answers = Vec::with_capacity(events.len());
            for event in events {
                answers.push(
                    match write_retrying(pool, metrics, std::slice::from_ref(event)).await {
                        Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Unavailable(
                            "the ingest batch answered nothing",
                        ))),
                        Err(BatchError::Unavailable(why)) => Err(StoreError::Unavailable(why)),
                        Err(BatchError::Failed(e)) => Err(e),
                    },
                );
            }
            answers
        }
    }
}

/// Why a whole batch failed.
enum BatchError {
    /// The database cannot be reached, or a COMMIT's fate is unknown.
    Unavailable(&'static str),
    /// Anything else (the transaction was rolled back).
    Failed(StoreError),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> BatchError {
        match db_error(e) {
            StoreError::Unavailable(why) => BatchError::Unavailable(why),
            other => BatchError::Failed(other),
        }
    }
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> BatchError {
        match e {
            StoreError::Unavailable(why) => BatchError::Unavailable(why),
            other => BatchError::Failed(other),
        }
    }
}

/// A deadlock or serialization failure: the transaction was rolled back
/// and may simply run again.
fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40P01") | Some("40001")))
}

async fn write_retrying(
    pool: &PgPool,
    metrics: &Metrics,
    events: &[EventRecord],
) -> Result<Vec<Answer>, BatchError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match write(pool, metrics, events).await {
            Err(Attempt::Sql(e)) if is_transient(&e) && tries < ATTEMPTS => continue,
            Err(Attempt::Sql(e)) => return Err(e.into()),
            Err(Attempt::Store(e)) => return Err(e.into()),
            Ok(answers) => return Ok(answers),
        }
    }
}

/// How one try of a batch failed.
enum Attempt {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Attempt {
        Attempt::Sql(e)
    }
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Attempt {
        Attempt::Store(e)
    }
}

/// What became of one event inside the transaction.
#[derive(Clone, Copy)]
enum Fate {
    /// Its source is gone.
    NoSource,
    /// To be written (or written: see `stored`).
    Candidate,
    /// Another event of this batch with the same source and provider event
    /// id (the index) goes first; this one is its duplicate.
    After(usize),
    /// Stored before by another transaction.
    Duplicate(EventId),
    /// Lost its key again and again (see [`KEY_CHURN`]).
    Churned,
}

/// One try: the whole batch in one transaction.
async fn write(
    pool: &PgPool,
    metrics: &Metrics,
    events: &[EventRecord],
) -> Result<Vec<Answer>, Attempt> {
    // No connection to be had (refused, the database not accepting any,
    // the pool closed): nothing was written, the database is unavailable.
    let mut tx = pool.begin().await.map_err(|e| {
        tracing::debug!(error = %e, "no connection for an ingest batch");
        Attempt::Store(StoreError::Unavailable(UNREACHABLE))
    })?;

    // 1. The sources, held until the commit.
    let mut source_ids: Vec<Uuid> = events.iter().map(|e| uid(e.source_id)).collect();
    source_ids.sort_unstable();
    source_ids.dedup();
    let present: HashSet<SourceId> =
        sqlx::query("SELECT id FROM sources WHERE id = ANY($1) ORDER BY id FOR KEY SHARE")
            .bind(&source_ids)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| rows::row_id(r, "id"))
            .collect::<Result<_, _>>()?;

    // 2. Their enabled destinations, each source's in id order.
    let mut destinations: HashMap<SourceId, Vec<body_filter::Target>> = HashMap::new();
    if !present.is_empty() {
        let found = sqlx::query(
            "SELECT record FROM destinations WHERE source_id = ANY($1) AND enabled \
             ORDER BY source_id, id FOR SHARE",
        )
        .bind(&source_ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in &found {
            let d = DestinationRecord::decode(&rows::bytes(row, "record")?)?;
            if d.enabled {
                destinations
                    .entry(d.source_id)
                    .or_default()
                    .push(body_filter::Target::of(&d));
            }
        }
    }

    // 3. Which events to write: the first of each (source, provider event
    // id) in arrival order; the rest follow it.
    let mut fates = Vec::with_capacity(events.len());
    let mut first_with_key: HashMap<(SourceId, &str), usize> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let fate = if !present.contains(&event.source_id) {
            Fate::NoSource
        } else if let Some(pid) = event.provider_event_id.as_deref() {
            match first_with_key.get(&(event.source_id, pid)) {
                Some(&first) => Fate::After(first),
                None => {
                    first_with_key.insert((event.source_id, pid), i);
                    Fate::Candidate
                }
            }
        } else {
            Fate::Candidate
        };
        fates.push(fate);
    }
    let mut stored: HashSet<usize> = HashSet::new();
    let mut to_write: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(fates[i], Fate::Candidate))
        .collect();
    // Keys in one order in every batch, so two batches waiting on each
    // other's keys cannot deadlock.
    to_write.sort_by(|&a, &b| {
        let key = |i: usize| {
            let e = &events[i];
            (
                e.provider_event_id.is_some(),
                uid(e.source_id),
                e.provider_event_id.as_deref().map(str::as_bytes),
            )
        };
        key(a).cmp(&key(b))
    });
    for round in 0..ATTEMPTS {
        if to_write.is_empty() {
            break;
        }
        let written = insert_events(&mut tx, events, &to_write).await?;
        let lost: Vec<usize> = to_write
            .iter()
            .copied()
            .filter(|&i| {
                if written.contains(&events[i].id) {
                    stored.insert(i);
                    false
                } else {
                    true
                }
            })
            .collect();
        if lost.is_empty() {
            break;
        }
        // Another transaction holds these keys (it committed while this
        // one waited on the unique index, or long ago): duplicates of it.
        let owners = key_owners(&mut tx, events, &lost).await?;
        to_write = Vec::new();
        for i in lost {
            let e = &events[i];
            let key = (
                e.source_id,
                e.provider_event_id.as_deref().unwrap_or_default(),
            );
            match owners.get(&key) {
                Some(&original) => fates[i] = Fate::Duplicate(original),
                // Released meanwhile (purged): try again, up to a bound.
                None if round + 1 < ATTEMPTS && e.provider_event_id.is_some() => to_write.push(i),
                None => fates[i] = Fate::Churned,
            }
        }
    }

    // 4. One pending delivery per stored event and matching destination.
    let mut deliveries: HashMap<usize, Vec<DeliveryRecord>> = HashMap::new();
    let mut order: Vec<usize> = stored.iter().copied().collect();
    order.sort_unstable();
    for &i in &order {
        let e = &events[i];
        let body = body_filter::Body::new(&e.body);
        let made: Vec<DeliveryRecord> = destinations
            .get(&e.source_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|d| d.accepts(&e.event_type, &body))
            .map(|d| DeliveryRecord {
                id: DeliveryId::new(),
                event_id: e.id,
                source_id: e.source_id,
                destination_id: d.id,
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_attempt_ms: Some(e.received_at_ms),
                created_at_ms: e.received_at_ms,
                updated_at_ms: e.received_at_ms,
            })
            .collect();
        deliveries.insert(i, made);
    }
    insert_deliveries(&mut tx, deliveries.values().flatten()).await?;

    let started = Instant::now();
    tx.commit().await.map_err(|e| match db_error(e) {
        // Whether a failed COMMIT committed is unknown: never a success.
        StoreError::Unavailable(_) => Attempt::Store(StoreError::Unavailable(UNREACHABLE)),
        other => Attempt::Store(other),
    })?;
    metrics.observe_commit(started.elapsed(), events.len());

    let mut answers: Vec<Answer> = Vec::with_capacity(events.len());
    for i in 0..events.len() {
        let answer = match fates[i] {
            Fate::NoSource => Err(StoreError::NotFound),
            Fate::Duplicate(original) => Ok(IngestOutcome::Duplicate { original }),
            Fate::Churned => Err(StoreError::Conflict(KEY_CHURN.into())),
            Fate::Candidate if stored.contains(&i) => Ok(IngestOutcome::Stored {
                deliveries: deliveries.remove(&i).unwrap_or_default(),
            }),
            // A candidate neither stored nor resolved cannot remain; say
            // so rather than answer a success.
            Fate::Candidate => Err(StoreError::Conflict(KEY_CHURN.into())),
            // The first with this key goes before every follower, so its
            // fate is settled by now.
            Fate::After(first) => match fates[first] {
                Fate::Candidate if stored.contains(&first) => Ok(IngestOutcome::Duplicate {
                    original: events[first].id,
                }),
                Fate::Duplicate(original) => Ok(IngestOutcome::Duplicate { original }),
                Fate::NoSource => Err(StoreError::NotFound),
                _ => Err(StoreError::Conflict(KEY_CHURN.into())),
            },
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// Inserts the events at `which` (with their dedup keys) in one statement;
/// answers the ids actually written (a taken key writes nothing).
async fn insert_events(
    tx: &mut sqlx::PgConnection,
    events: &[EventRecord],
    which: &[usize],
) -> Result<HashSet<EventId>, Attempt> {
    let n = which.len();
    let (mut sources, mut ids, mut received, mut types) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut pids, mut sizes, mut headers, mut bodies) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut traces: Vec<Option<String>> = Vec::with_capacity(n);
    for &i in which {
        let e = &events[i];
        sources.push(uid(e.source_id));
        ids.push(uid(e.id));
        received.push(e.received_at_ms);
        types.push(e.event_type.as_bytes());
        pids.push(e.provider_event_id.as_deref().map(str::as_bytes));
        sizes.push(i64::try_from(e.body.len()).unwrap_or(i64::MAX));
        headers.push(rows::encode_headers(&e.headers));
        bodies.push(e.body.as_slice());
        traces.push(e.trace.map(|t| t.to_traceparent()));
    }
    // The dedup key is the provider event id (ingest always de-duplicates).
    let written = sqlx::query(
        "INSERT INTO events (source_id, id, received_at_ms, event_type, provider_event_id, \
         dedup_key, size_bytes, headers, body, traceparent) \
         SELECT e.source_id, e.id, e.received_at_ms, e.event_type, e.pid, e.pid, e.size_bytes, \
         e.headers, e.body, e.traceparent \
         FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::bytea[], $5::bytea[], $6::int8[], \
         $7::bytea[], $8::bytea[], $9::text[]) WITH ORDINALITY \
         AS e(source_id, id, received_at_ms, event_type, pid, size_bytes, headers, body, \
         traceparent, n) \
         ORDER BY e.n \
         ON CONFLICT (source_id, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(&sources)
    .bind(&ids)
    .bind(&received)
    .bind(&types)
    .bind(&pids)
    .bind(&sizes)
    .bind(&headers)
    .bind(&bodies)
    .bind(&traces)
    .fetch_all(&mut *tx)
    .await?;
    Ok(written
        .iter()
        .map(|r| rows::row_id(r, "id"))
        .collect::<Result<_, _>>()?)
}

/// The events now holding the keys of the events at `which`.
async fn key_owners<'e>(
    tx: &mut sqlx::PgConnection,
    events: &'e [EventRecord],
    which: &[usize],
) -> Result<HashMap<(SourceId, &'e str), EventId>, Attempt> {
    let sources: Vec<Uuid> = which.iter().map(|&i| uid(events[i].source_id)).collect();
    let keys: Vec<&[u8]> = which
        .iter()
        .map(|&i| {
            events[i]
                .provider_event_id
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
        })
        .collect();
    let found = sqlx::query(
        "SELECT e.id, k.n FROM unnest($1::uuid[], $2::bytea[]) WITH ORDINALITY \
         AS k(source_id, dedup_key, n) \
         JOIN events e ON e.source_id = k.source_id AND e.dedup_key = k.dedup_key",
    )
    .bind(&sources)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    let mut owners = HashMap::with_capacity(found.len());
    for row in &found {
        let n: i64 = row.try_get("n")?;
        let Some(&i) = usize::try_from(n - 1).ok().and_then(|n| which.get(n)) else {
            continue;
        };
        let e = &events[i];
        owners.insert(
            (
                e.source_id,
                e.provider_event_id.as_deref().unwrap_or_default(),
            ),
            rows::row_id(row, "id")?,
        );
    }
    Ok(owners)
}

/// Queues `deliveries` (pending, due at their creation) in one statement.
async fn insert_deliveries<'d>(
    tx: &mut sqlx::PgConnection,
    deliveries: impl Iterator<Item = &'d DeliveryRecord>,
) -> Result<(), Attempt> {
    let (mut ids, mut events, mut sources, mut destinations, mut due) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in deliveries {
        ids.push(uid(d.id));
        events.push(uid(d.event_id));
        sources.push(uid(d.source_id));
        destinations.push(uid(d.destination_id));
        due.push(d.created_at_ms);
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, source_id, destination_id, status, attempts, \
         next_attempt_ms, due_ms, created_at_ms, updated_at_ms) \
         SELECT d.id, d.event_id, d.source_id, d.destination_id, 0, 0, d.at, greatest(d.at, 0), \
         d.at, d.at \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int8[]) \
         AS d(id, event_id, source_id, destination_id, at)",
    )
    .bind(&ids)
    .bind(&events)
    .bind(&sources)
    .bind(&destinations)
    .bind(&due)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sqlx::{Connection, PgConnection, PgPool};

    use super::super::test_cluster::scratch_database;
    use super::ingest_batch;
    use crate::config::StorageConfig;
    use crate::metrics::Metrics;
    use crate::model::ids::{new_id, EventId, SourceId};
    use crate::model::records::{DestinationRecord, EventRecord, SourceRecord};
    use crate::store::conformance::{self, source};
    use crate::store::{IngestOutcome, Store, StoreError};

    fn event(source_id: SourceId, pid: Option<&str>) -> EventRecord {
        let id = EventId::new();
        EventRecord {
            id,
            source_id,
            received_at_ms: id.timestamp_ms() as i64,
            event_type: "t".to_string(),
            provider_event_id: pid.map(str::to_string),
            headers: Vec::new(),
            body: b"{}".to_vec(),
            trace: None,
        }
    }

    /// A store with one source and one destination on a scratch database.
    async fn store_with_source(config: &StorageConfig) -> (Store, SourceRecord, DestinationRecord) {
        let store = Store::open(config, Arc::new(Metrics::new())).unwrap();
        let s = source("wh_batch0001");
        store.create_source(s.clone()).await.unwrap();
        let d = conformance::destination(s.id, &[]);
        store.create_destination(d.clone(), 10).await.unwrap();
        (store, s, d)
    }

    /// An event the database refuses outright (its id is taken) fails the
    /// batch's transaction; the others of the batch are still stored, and
    /// only that one is refused.
    #[tokio::test]
    async fn one_refused_event_does_not_fail_the_others_of_its_batch() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (store, s, d) = store_with_source(&config).await;
        let taken = event(s.id, None);
        store.ingest(taken.clone()).await.unwrap();

        let pool = PgPool::connect(&config.postgres.url).await.unwrap();
        let metrics = Metrics::new();
        let poison = EventRecord {
            provider_event_id: Some("evt_poison".into()),
            ..taken.clone()
        };
        let (first, dup, last) = (
            event(s.id, Some("evt_a")),
            event(s.id, Some("evt_a")),
            event(s.id, None),
        );
        let gone = event(new_id(), None);
        let batch = vec![first.clone(), poison, dup.clone(), gone, last.clone()];
        let answers = ingest_batch(&pool, &metrics, &batch).await;
        assert_eq!(answers.len(), 5);
        match &answers[0] {
            Ok(IngestOutcome::Stored { deliveries }) => {
                assert_eq!(deliveries.len(), 1);
                assert_eq!(deliveries[0].destination_id, d.id);
            }
            other => panic!("first: {other:?}"),
        }
        assert!(
            matches!(answers[1], Err(StoreError::Backend(_))),
            "{:?}",
            answers[1]
        );
        match &answers[2] {
            Ok(IngestOutcome::Duplicate { original }) => assert_eq!(*original, first.id),
            other => panic!("duplicate: {other:?}"),
        }
        assert!(matches!(answers[3], Err(StoreError::NotFound)));
        assert!(matches!(answers[4], Ok(IngestOutcome::Stored { .. })));
        assert_eq!(store.event_count(s.id).await.unwrap(), 3);
        // The refused event did not replace the one holding its id.
        assert_eq!(store.event(taken.id).await.unwrap().provider_event_id, None);
        pool.close().await;
        store.close().await;
    }

    /// While the database cannot be reached, every caller of a batch is
    /// answered `Unavailable` (never stored), and ingest works again by
    /// itself once it can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_database_answers_every_caller_unavailable_then_recovers() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (store, s, _) = store_with_source(&config).await;
        store.ingest(event(s.id, None)).await.unwrap();

        let url = url::Url::parse(&config.postgres.url).unwrap();
        let name = url.path().trim_start_matches('/').to_string();
        let mut admin_url = url.clone();
        admin_url.set_path("/postgres");
        let mut admin = PgConnection::connect(admin_url.as_str()).await.unwrap();
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap();

        let mut tasks = Vec::new();
        for n in 0..20 {
            let store = store.clone();
            let e = event(
                s.id,
                (n % 2 == 0).then(|| format!("evt_lost_{n}")).as_deref(),
            );
            tasks.push(tokio::spawn(async move { store.ingest(e).await }));
        }
        for task in tasks {
            match task.await.unwrap() {
                Err(StoreError::Unavailable(_)) => {}
                other => panic!("expected Unavailable, got {:?}", other.map(|_| "Ok")),
            }
        }

        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match store.ingest(event(s.id, None)).await {
                Ok(IngestOutcome::Stored { .. }) => break,
                Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("ingest did not recover: {:?}", other.map(|_| "Ok")),
            }
        }
        // The first event and the one after recovery; none of the refused.
        assert_eq!(store.event_count(s.id).await.unwrap(), 2);
        store.close().await;
    }
}
