//! The storage API (`crate::store::Store`'s intents) on PostgreSQL: each
//! intent is one statement or one transaction, with the same answers as
//! the redb backend (the conformance suite holds both to them).
//!
//! Reads that span several statements run in one `REPEATABLE READ READ
//! ONLY` transaction, so they see one snapshot as a redb read does. Writes
//! take row locks where the contract needs a concurrent change fully in or
//! fully out (see the module documentation of `postgres`).

use crate::model::ids::{ApiKeyId, DeliveryId, DestinationId, EventId, RawId, ReplayId, SourceId};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row, Transaction};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::rows::{self, uid, uids};
use super::{db_error, is_unique_violation, PgStore};
use crate::model::records::{
    ApiKeyRecord, AttemptRecord, DeliveryRecord, DeliveryStatus, DestinationRecord, EventRecord,
    EventSummary, ReplayRecord, ReplayState, SessionRecord, SourceRecord,
};
use crate::model::{body_filter, filter};
use crate::store::redb::records::Record;
use crate::store::{
    Advanced, AttemptOutcome, AuditEntry, AuditQuery, DestinationChange, DestinationUpdated,
    DueItem, EventQuery, EventSearch, FoundEvent, IngestOutcome, ListedEvent, Next, Page, Recorded,
    SourceChange, StoreError, StoreStats, Totals, KEPT_PER_SOURCE,
};

type Tx = Transaction<'static, Postgres>;

/// Events removed per retention transaction.
const RETENTION_CHUNK: usize = 500;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Rows a bulk-replay plan reads per statement.
const PLAN_BATCH: usize = 1_000;

/// A `LIMIT` one row past `limit`, to know whether another page follows.
fn limit_plus_one(limit: usize) -> i64 {
    i64::try_from(limit)
        .unwrap_or(i64::MAX - 1)
        .saturating_add(1)
}

/// A newest-first page from `limit + 1` rows.
fn page<T, I: RawId>(mut items: Vec<T>, limit: usize, id_of: impl Fn(&T) -> I) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|item| id_of(item).raw())
    } else {
        None
    };
    Page { items, next }
}

/// Records `entry` in the caller's transaction (no-op for `None`), so
/// the entry commits with the change it describes.
async fn insert_audit(
    conn: &mut PgConnection,
    entry: Option<&AuditEntry>,
) -> Result<(), StoreError> {
    let Some(entry) = entry else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO audit_log (id, at_ms, actor_key, actor_name, action, entry) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uid(entry.id.as_u128()))
    .bind(entry.at_ms)
    .bind(entry.actor.api_key_id.as_deref())
    .bind(&entry.actor.name)
    .bind(&entry.action)
    .bind(String::from_utf8_lossy(&entry.encode()).into_owned())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// A type filter (`invoice.paid`, `invoice.*`) as a `LIKE` pattern with
/// `\` as the escape: the same matches as `crate::model::filter`.
fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

fn decode<T: Record>(row: &PgRow) -> Result<T, StoreError> {
    T::decode(&rows::bytes(row, "record")?)
}

fn count_of(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let n: i64 = row.try_get(column).map_err(db_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Ends a read-only snapshot.
async fn done(tx: Tx) -> Result<(), StoreError> {
    tx.commit().await.map_err(db_error)
}

impl PgStore {
    async fn begin(&self) -> Result<Tx, StoreError> {
        self.pool.begin().await.map_err(db_error)
    }

    /// Commits a write; answers once it is durable. The commit's duration
    /// is the `storage_commit_duration_seconds` metric (one operation per
    /// commit; ingest's batches observe theirs in `batch`).
    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        let started = Instant::now();
        tx.commit().await.map_err(db_error)?;
        self.metrics.observe_commit(started.elapsed(), 1);
        Ok(())
    }

    /// Runs one write statement outside a transaction (it commits by
    /// itself), observed like [`PgStore::commit`].
    async fn write_one(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
        let started = Instant::now();
        let done = query.execute(&self.pool).await?;
        self.metrics.observe_commit(started.elapsed(), 1);
        Ok(done)
    }

    /// A read-only transaction over one snapshot.
    async fn snapshot(&self) -> Result<Tx, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        Ok(tx)
    }
}

// ---- Shared statements ----

/// `NotFound` unless the source exists; in a write it also keeps the
/// source from being deleted until the transaction ends.
async fn source_exists(
    conn: &mut PgConnection,
    id: SourceId,
    lock: bool,
) -> Result<(), StoreError> {
    let sql = if lock {
        "SELECT 1 FROM sources WHERE id = $1 FOR KEY SHARE"
    } else {
        "SELECT 1 FROM sources WHERE id = $1"
    };
    match sqlx::query(sql)
        .bind(uid(id))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound),
    }
}

async fn get_source(conn: &mut PgConnection, id: SourceId) -> Result<SourceRecord, StoreError> {
    let row = sqlx::query("SELECT record FROM sources WHERE id = $1")
        .bind(uid(id))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    decode(&row)
}

async fn destination_count(
    conn: &mut PgConnection,
    source_id: SourceId,
) -> Result<u64, StoreError> {
    let row = sqlx::query("SELECT count(*) AS n FROM destinations WHERE source_id = $1")
        .bind(uid(source_id))
        .fetch_one(conn)
        .await
        .map_err(db_error)?;
    count_of(&row, "n")
}

/// A source's enabled destinations, locked `FOR SHARE` until the
/// transaction ends: a concurrent disable or delete waits for this
/// transaction (or this one sees it done), never half of it.
async fn enabled_destinations(
    conn: &mut PgConnection,
    source_id: SourceId,
) -> Result<Vec<DestinationRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT record FROM destinations WHERE source_id = $1 AND enabled ORDER BY id FOR SHARE",
    )
    .bind(uid(source_id))
    .fetch_all(conn)
    .await
    .map_err(db_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let d: DestinationRecord = decode(row)?;
        if d.enabled {
            out.push(d);
        }
    }
    Ok(out)
}

/// Which of `ids` are enabled destinations of the source now (locked as in
/// [`enabled_destinations`]), in the order given.
async fn live_destinations(
    conn: &mut PgConnection,
    source_id: SourceId,
    ids: &[DestinationId],
) -> Result<Vec<DestinationId>, StoreError> {
    let rows = sqlx::query(
        "SELECT id FROM destinations WHERE source_id = $1 AND id = ANY($2) AND enabled FOR SHARE",
    )
    .bind(uid(source_id))
    .bind(uids(ids))
    .fetch_all(conn)
    .await
    .map_err(db_error)?;
    let live: HashSet<DestinationId> = rows
        .iter()
        .map(|r| rows::row_id(r, "id"))
        .collect::<Result<_, _>>()?;
    Ok(ids.iter().copied().filter(|id| live.contains(id)).collect())
}

/// A destination's record, read with `lock` (`""` or a locking clause).
async fn destination_row(
    conn: impl sqlx::PgExecutor<'_>,
    source_id: SourceId,
    id: DestinationId,
    lock: &str,
) -> Result<Option<DestinationRecord>, StoreError> {
    let sql = format!("SELECT record FROM destinations WHERE source_id = $1 AND id = $2 {lock}");
    let row = sqlx::query(&sql)
        .bind(uid(source_id))
        .bind(uid(id))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?;
    row.map(|r| decode::<DestinationRecord>(&r)).transpose()
}

/// Inserts a test event: it never de-duplicates (inbound events are
/// written by the batcher, `batch.rs`).
async fn insert_event(conn: &mut PgConnection, event: &EventRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (source_id, id, received_at_ms, event_type, provider_event_id, \
         dedup_key, size_bytes, headers, body, traceparent) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9)",
    )
    .bind(uid(event.source_id))
    .bind(uid(event.id))
    .bind(event.received_at_ms)
    .bind(event.event_type.as_bytes())
    .bind(event.provider_event_id.as_ref().map(|p| p.as_bytes()))
    .bind(i64::try_from(event.body.len()).unwrap_or(i64::MAX))
    .bind(rows::encode_headers(&event.headers))
    .bind(&event.body)
    .bind(event.trace.map(|t| t.to_traceparent()))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Queues one pending delivery per (event, destination), due at `due_ms`,
/// in one statement.
async fn insert_deliveries(
    conn: &mut PgConnection,
    source_id: SourceId,
    pairs: &[(EventId, DestinationId)],
    due_ms: i64,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let out: Vec<DeliveryRecord> = pairs
        .iter()
        .map(|&(event_id, destination_id)| DeliveryRecord {
            id: DeliveryId::new(),
            event_id,
            source_id,
            destination_id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: Some(due_ms),
            created_at_ms: due_ms,
            updated_at_ms: due_ms,
        })
        .collect();
    let ids: Vec<Uuid> = out.iter().map(|d| uid(d.id)).collect();
    let events: Vec<Uuid> = out.iter().map(|d| uid(d.event_id)).collect();
    let destinations: Vec<Uuid> = out.iter().map(|d| uid(d.destination_id)).collect();
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, source_id, destination_id, status, attempts, \
         next_attempt_ms, due_ms, created_at_ms, updated_at_ms) \
         SELECT d.id, d.event_id, $4, d.destination_id, 0, 0, $5, $6, $5, $5 \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS d(id, event_id, destination_id)",
    )
    .bind(ids)
    .bind(events)
    .bind(destinations)
    .bind(uid(source_id))
    .bind(due_ms)
    .bind(due_ms.max(0))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(out)
}

/// Cancels every pending delivery of a destination; answers how many.
async fn cancel_pending(
    conn: &mut PgConnection,
    destination: DestinationId,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 3, next_attempt_ms = NULL, due_ms = NULL, \
         updated_at_ms = $2 WHERE destination_id = $1 AND status = 0",
    )
    .bind(uid(destination))
    .bind(now_ms)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected())
}

/// The deliveries of each of `events`, each event's in id order.
async fn deliveries_of(
    conn: &mut PgConnection,
    events: &[EventId],
) -> Result<HashMap<EventId, Vec<DeliveryRecord>>, StoreError> {
    let mut out: HashMap<EventId, Vec<DeliveryRecord>> = HashMap::new();
    if events.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT {} FROM deliveries WHERE event_id = ANY($1) ORDER BY event_id, id",
        rows::DELIVERY_COLUMNS
    );
    let found = sqlx::query(&sql)
        .bind(uids(events))
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
    for row in &found {
        let d = rows::delivery(row)?;
        out.entry(d.event_id).or_default().push(d);
    }
    Ok(out)
}

async fn event_summary(
    conn: &mut PgConnection,
    source_id: SourceId,
    event_id: EventId,
    lock: bool,
) -> Result<EventSummary, StoreError> {
    let sql = format!(
        "SELECT {} FROM events WHERE source_id = $1 AND id = $2{}",
        rows::SUMMARY_COLUMNS,
        if lock { " FOR KEY SHARE" } else { "" }
    );
    let row = sqlx::query(&sql)
        .bind(uid(source_id))
        .bind(uid(event_id))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
    rows::summary(&row)
}

async fn attempts_of(
    conn: &mut PgConnection,
    delivery_id: DeliveryId,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let sql = format!(
        "SELECT {} FROM attempts WHERE delivery_id = $1 ORDER BY number",
        rows::ATTEMPT_COLUMNS
    );
    let found = sqlx::query(&sql)
        .bind(uid(delivery_id))
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
    found.iter().map(rows::attempt).collect()
}

/// What one chunk of a bulk replay would queue (the same walk as redb's
/// `replays::plan_chunk`): events after the cursor in id order, at most
/// `max_scan` looked at and `max_items` with deliveries.
#[derive(Debug, Default)]
struct ChunkPlan {
    items: Vec<(EventId, Vec<DestinationId>)>,
    matched: u64,
    last: Option<u128>,
    exhausted: bool,
}

async fn plan_chunk(
    conn: &mut PgConnection,
    destinations: &HashMap<DestinationId, DestinationRecord>,
    job: &ReplayRecord,
    max_items: usize,
    max_scan: usize,
) -> Result<ChunkPlan, StoreError> {
    let lower = crate::model::ids::ulid_floor(job.after_ms.saturating_add(1))
        .max(job.cursor.saturating_add(1));
    let upper = job
        .upper_id
        .min(crate::model::ids::ulid_floor(job.before_ms));
    let mut plan = ChunkPlan::default();
    if lower >= upper {
        plan.exhausted = true;
        return Ok(plan);
    }
    let patterns: Vec<String> = job.type_pattern.iter().cloned().collect();
    let usable = |id: &DestinationId| destinations.get(id).filter(|d| d.enabled);
    // Bodies are read only when a destination that may match filters on them.
    let needs_body = job.destination_ids.is_none()
        && job
            .candidates
            .iter()
            .any(|id| usable(id).is_some_and(|d| d.options.body_filter.is_some()));
    let mut from = lower;
    let mut scanned = 0usize;
    loop {
        // One row past what may be looked at, to tell "stopped at a limit"
        // from "the range ended".
        let want = PLAN_BATCH.min(max_scan.saturating_sub(scanned).saturating_add(1));
        let batch = sqlx::query(
            "SELECT id, event_type, received_at_ms, CASE WHEN $5 THEN body END AS body FROM events \
             WHERE source_id = $1 AND id >= $2 AND id < $3 ORDER BY id LIMIT $4",
        )
        .bind(uid(job.source_id))
        .bind(uid(from))
        .bind(uid(upper))
        .bind(i64::try_from(want).unwrap_or(i64::MAX))
        .bind(needs_body)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        let ids: Vec<EventId> = batch
            .iter()
            .map(|r| rows::row_id(r, "id"))
            .collect::<Result<_, _>>()?;
        let existing = if job.only_failed {
            deliveries_of(&mut *conn, &ids).await?
        } else {
            HashMap::new()
        };
        for (row, &event_id) in batch.iter().zip(&ids) {
            if scanned == max_scan || plan.items.len() == max_items {
                return Ok(plan);
            }
            scanned += 1;
            plan.last = Some(event_id.as_u128());
            let event_type = rows::string(row, "event_type")?;
            let received_at_ms: i64 = row.try_get("received_at_ms").map_err(db_error)?;
            let in_range = received_at_ms > job.after_ms && received_at_ms < job.before_ms;
            if !in_range || !filter::matches(&patterns, &event_type) {
                continue;
            }
            plan.matched += 1;
            let targets: Vec<DestinationId> = if job.only_failed {
                let list = existing.get(&event_id).map(Vec::as_slice).unwrap_or(&[]);
                let settled = |dest: DestinationId| {
                    list.iter().any(|d| {
                        d.destination_id == dest
                            && matches!(
                                d.status,
                                DeliveryStatus::Succeeded | DeliveryStatus::Pending
                            )
                    })
                };
                let mut failed: Vec<DestinationId> = list
                    .iter()
                    .filter(|d| d.status == DeliveryStatus::Failed)
                    .map(|d| d.destination_id)
                    .filter(|id| !settled(*id))
                    .filter(|id| job.candidates.contains(id))
                    .filter(|id| usable(id).is_some())
                    .collect();
                failed.sort_unstable();
                failed.dedup();
                failed
            } else {
                let stored_body: Option<Vec<u8>> = row.try_get("body").map_err(db_error)?;
                let body = body_filter::Body::new(stored_body.as_deref().unwrap_or_default());
                job.candidates
                    .iter()
                    .filter(|id| {
                        usable(id).is_some_and(|d| {
                            job.destination_ids.is_some()
                                || body_filter::destination_accepts(d, &event_type, &body)
                        })
                    })
                    .copied()
                    .collect()
            };
            if !targets.is_empty() {
                plan.items.push((event_id, targets));
            }
        }
        match ids.last() {
            Some(&last) if batch.len() == want => from = last.as_u128().saturating_add(1),
            _ => {
                plan.exhausted = true;
                return Ok(plan);
            }
        }
    }
}

/// Every destination of a source by id (for a replay plan); locked `FOR
/// SHARE` in a write so each is checked as of the commit.
async fn destinations_by_id(
    conn: &mut PgConnection,
    source_id: SourceId,
    lock: bool,
) -> Result<HashMap<DestinationId, DestinationRecord>, StoreError> {
    let sql = if lock {
        "SELECT record FROM destinations WHERE source_id = $1 ORDER BY id FOR SHARE"
    } else {
        "SELECT record FROM destinations WHERE source_id = $1 ORDER BY id"
    };
    let found = sqlx::query(sql)
        .bind(uid(source_id))
        .fetch_all(conn)
        .await
        .map_err(db_error)?;
    let mut out = HashMap::with_capacity(found.len());
    for row in &found {
        let d: DestinationRecord = decode(row)?;
        out.insert(d.id, d);
    }
    Ok(out)
}

/// A search hit before its deliveries are attached.
struct Found {
    source_id: SourceId,
    event_id: EventId,
    summary: EventSummary,
}

fn found(row: &PgRow) -> Result<Found, StoreError> {
    Ok(Found {
        source_id: rows::row_id(row, "source_id")?,
        event_id: rows::row_id(row, "id")?,
        summary: rows::summary(row)?,
    })
}

/// Newest first below the cursor, `limit` of them, as redb's overview does
/// for the short lists of one id.
fn page_of(mut found: Vec<Found>, cursor: Option<u128>, limit: usize) -> Page<Found> {
    found.sort_by_key(|f| std::cmp::Reverse(f.event_id));
    found.retain(|f| cursor.is_none_or(|c| f.event_id.as_u128() < c));
    page(found, limit, |f| f.event_id)
}

/// Inserts an API key; an identical key (same hash) is a conflict.
pub(super) async fn insert_api_key(
    conn: &mut PgConnection,
    key: &ApiKeyRecord,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO api_keys ({}) VALUES ($1, $2, $3, $4, $5, $6)",
        rows::API_KEY_COLUMNS
    );
    let done = sqlx::query(&sql)
        .bind(uid(key.id))
        .bind(key.name.as_bytes())
        .bind(rows::scope_names(&key.scopes))
        .bind(&key.prefix)
        .bind(key.hash.as_slice())
        .bind(key.created_at_ms)
        .execute(conn)
        .await;
    match done {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
            "an identical key already exists".into(),
        )),
        Err(e) => Err(db_error(e)),
    }
}

impl PgStore {
    // ---- API keys ----

    pub(in crate::store) async fn create_api_key_audited(
        &self,
        key: ApiKeyRecord,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_api_key(&mut tx, &key).await?;
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await
    }

    pub(in crate::store) async fn api_key_by_hash(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE hash = $1",
            rows::API_KEY_COLUMNS
        );
        let Some(row) = sqlx::query(&sql)
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let record = rows::api_key(&row)?;
        // Compared again in constant time, as on redb.
        Ok(bool::from(record.hash.ct_eq(&hash)).then_some(record))
    }

    pub(in crate::store) async fn list_api_keys(
        &self,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<ApiKeyRecord>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM api_keys",
            rows::API_KEY_COLUMNS
        ));
        if let Some(cursor) = before {
            qb.push(" WHERE id < ").push_bind(uid(cursor));
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&self.pool).await.map_err(db_error)?;
        let items = found
            .iter()
            .map(rows::api_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |k| k.id))
    }

    pub(in crate::store) async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT count(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        count_of(&row, "n")
    }

    pub(in crate::store) async fn revoke_api_key_audited(
        &self,
        id: ApiKeyId,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        // Its sessions go with it (ON DELETE CASCADE), in the same commit.
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(uid(id))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await
    }

    // ---- Audit log ----

    pub(in crate::store) async fn list_audit(
        &self,
        query: AuditQuery,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<AuditEntry>, StoreError> {
        // PostgreSQL text cannot hold U+0000, and no stored name holds one:
        // such a filter matches nothing (rather than failing the query).
        let has_nul = |f: &Option<String>| f.as_deref().is_some_and(|t| t.contains('\0'));
        if has_nul(&query.actor) || has_nul(&query.action) {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let mut qb = QueryBuilder::<Postgres>::new("SELECT entry FROM audit_log WHERE true");
        if let Some(cursor) = before {
            qb.push(" AND id < ").push_bind(uid(cursor));
        }
        if let Some(actor) = &query.actor {
            qb.push(" AND (actor_key = ")
                .push_bind(actor.clone())
                .push(" OR actor_name = ")
                .push_bind(actor.clone())
                .push(")");
        }
        if let Some(action) = &query.action {
            qb.push(" AND action = ").push_bind(action.clone());
        }
        if let Some(after) = query.after_ms {
            qb.push(" AND at_ms >= ").push_bind(after);
        }
        if let Some(before_ms) = query.before_ms {
            qb.push(" AND at_ms < ").push_bind(before_ms);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&self.pool).await.map_err(db_error)?;
        let items = found
            .iter()
            .map(|row| {
                let text: String = row.try_get("entry").map_err(db_error)?;
                AuditEntry::decode(text.as_bytes())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |e| e.id.as_u128()))
    }

    pub(in crate::store) async fn sweep_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = self
            .write_one(sqlx::query("DELETE FROM audit_log WHERE at_ms < $1").bind(before_ms))
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    // ---- The alert queue ----

    pub(in crate::store) async fn enqueue_alert(
        &self,
        alert: crate::store::AlertRecord,
    ) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query("INSERT INTO alerts (id, next_attempt_ms, record) VALUES ($1, $2, $3)")
                .bind(uid(alert.id))
                .bind(alert.next_attempt_ms)
                .bind(String::from_utf8_lossy(&alert.encode()).into_owned()),
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub(in crate::store) async fn due_alerts(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::AlertRecord>, StoreError> {
        let found = sqlx::query(
            "SELECT record FROM alerts WHERE next_attempt_ms <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        found
            .iter()
            .map(|row| {
                let text: String = row.try_get("record").map_err(db_error)?;
                crate::store::AlertRecord::decode(text.as_bytes())
            })
            .collect()
    }

    pub(in crate::store) async fn settle_alert(
        &self,
        alert: crate::store::AlertRecord,
        done: bool,
    ) -> Result<(), StoreError> {
        let query = if done {
            sqlx::query("DELETE FROM alerts WHERE id = $1").bind(uid(alert.id))
        } else {
            sqlx::query("UPDATE alerts SET next_attempt_ms = $2, record = $3 WHERE id = $1")
                .bind(uid(alert.id))
                .bind(alert.next_attempt_ms)
                .bind(String::from_utf8_lossy(&alert.encode()).into_owned())
        };
        self.write_one(query).await.map_err(db_error)?;
        Ok(())
    }

    // ---- Overview counters ----

    pub(in crate::store) async fn add_minute_stats(
        &self,
        stats: crate::store::MinuteStats,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Several nodes add into one row: insert it, then lock it.
        sqlx::query(
            "INSERT INTO minute_stats (minute, record) VALUES ($1, '{}') ON CONFLICT DO NOTHING",
        )
        .bind(stats.minute)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let row = sqlx::query("SELECT record FROM minute_stats WHERE minute = $1 FOR UPDATE")
            .bind(stats.minute)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let text: String = row.try_get("record").map_err(db_error)?;
        let mut current = if text == "{}" {
            crate::store::MinuteStats::at(stats.minute)
        } else {
            crate::store::MinuteStats::decode(text.as_bytes())?
        };
        current.merge(&stats);
        sqlx::query("UPDATE minute_stats SET record = $2 WHERE minute = $1")
            .bind(stats.minute)
            .bind(String::from_utf8_lossy(&current.encode()).into_owned())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM minute_stats WHERE minute < $1")
            .bind(stats.minute - crate::store::STATS_KEEP_MINUTES)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        self.commit(tx).await
    }

    pub(in crate::store) async fn minute_stats(
        &self,
        from_minute: i64,
    ) -> Result<Vec<crate::store::MinuteStats>, StoreError> {
        let found = sqlx::query(
            "SELECT record FROM minute_stats WHERE minute >= $1 AND record <> '{}' ORDER BY minute",
        )
        .bind(from_minute)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        found
            .iter()
            .map(|row| {
                let text: String = row.try_get("record").map_err(db_error)?;
                crate::store::MinuteStats::decode(text.as_bytes())
            })
            .collect()
    }

    pub(in crate::store) async fn destination_backlog(
        &self,
        destination: DestinationId,
        max: usize,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let row = sqlx::query(
            // The count stops at `max`; the oldest is over the whole
            // backlog (a due-queue index lookup), as on redb.
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM deliveries \
             WHERE destination_id = $1 AND status = 0 LIMIT $2) AS p) AS n, \
             (SELECT min(due_ms) FROM deliveries WHERE destination_id = $1 AND status = 0) AS first",
        )
        .bind(uid(destination))
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let n: i64 = row.try_get("n").map_err(db_error)?;
        let first: Option<i64> = row.try_get("first").map_err(db_error)?;
        Ok((u64::try_from(n).unwrap_or(0), first))
    }

    // ---- Dashboard sessions ----

    pub(in crate::store) async fn create_session(
        &self,
        id_hash: [u8; 32],
        session: SessionRecord,
        max_per_key: usize,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Locking the key serializes its sign-ins, so the cap holds.
        let key = sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
            .bind(uid(session.key_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if key.is_none() {
            // Revoked meanwhile: as on redb, the sign-in "succeeds" but the
            // session is never live (its key is gone), so nothing is kept.
            return Ok(());
        }
        let existing = sqlx::query(
            "SELECT id_hash, expires_at_ms FROM dashboard_sessions WHERE key_id = $1 \
             ORDER BY created_at_ms, id_hash",
        )
        .bind(uid(session.key_id))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut live = Vec::new();
        let mut ended = Vec::new();
        for row in &existing {
            let hash = rows::bytes(row, "id_hash")?;
            let expires: i64 = row.try_get("expires_at_ms").map_err(db_error)?;
            if expires > session.created_at_ms {
                live.push(hash);
            } else {
                ended.push(hash);
            }
        }
        let excess = (live.len() + 1).saturating_sub(max_per_key);
        ended.extend(live.into_iter().take(excess));
        if !ended.is_empty() {
            sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = ANY($1)")
                .bind(ended)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, key_id, csrf, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id_hash) DO UPDATE SET key_id = $2, \
             csrf = $3, created_at_ms = $4, expires_at_ms = $5",
        )
        .bind(id_hash.as_slice())
        .bind(uid(session.key_id))
        .bind(&session.csrf)
        .bind(session.created_at_ms)
        .bind(session.expires_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx).await
    }

    pub(in crate::store) async fn live_session(
        &self,
        id_hash: [u8; 32],
        now_ms: i64,
    ) -> Result<Option<(SessionRecord, ApiKeyRecord)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.key_id, s.csrf, s.created_at_ms AS session_created_at_ms, s.expires_at_ms, \
             k.id, k.name, k.scopes, k.prefix, k.hash, k.created_at_ms \
             FROM dashboard_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id_hash = $1 AND s.expires_at_ms > $2",
        )
        .bind(id_hash.as_slice())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut session = rows::session(&row)?;
        session.created_at_ms = row.try_get("session_created_at_ms").map_err(db_error)?;
        Ok(Some((session, rows::api_key(&row)?)))
    }

    pub(in crate::store) async fn end_session(
        &self,
        id_hash: [u8; 32],
        _key_id: ApiKeyId,
        _created_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.write_one(
            sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
                .bind(id_hash.as_slice()),
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }

    // ---- Sources ----

    pub(in crate::store) async fn create_source_audited(
        &self,
        source: SourceRecord,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        if source.slug.contains('\0') {
            return Err(StoreError::Conflict("a slug cannot hold U+0000".into()));
        }
        let mut tx = self.begin().await?;
        let done = sqlx::query("INSERT INTO sources (id, slug, record) VALUES ($1, $2, $3)")
            .bind(uid(source.id))
            .bind(&source.slug)
            .bind(source.encode())
            .execute(&mut *tx)
            .await;
        match done {
            Ok(_) => {
                insert_audit(&mut tx, audit.as_ref()).await?;
                self.commit(tx).await
            }
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "slug {} is taken",
                source.slug
            ))),
            Err(e) => Err(db_error(e)),
        }
    }

    pub(in crate::store) async fn source(&self, id: SourceId) -> Result<SourceRecord, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        get_source(&mut conn, id).await
    }

    pub(in crate::store) async fn source_by_slug(
        &self,
        slug: &str,
    ) -> Result<SourceRecord, StoreError> {
        // No slug holds U+0000 (and `text` cannot be asked about one).
        if slug.contains('\0') {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query("SELECT record FROM sources WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        decode(&row)
    }

    pub(in crate::store) async fn source_with_destination_count(
        &self,
        id: SourceId,
    ) -> Result<(SourceRecord, u64), StoreError> {
        let row = sqlx::query(
            "SELECT s.record, (SELECT count(*) FROM destinations d WHERE d.source_id = s.id) AS n \
             FROM sources s WHERE s.id = $1",
        )
        .bind(uid(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
        Ok((decode(&row)?, count_of(&row, "n")?))
    }

    pub(in crate::store) async fn list_sources(
        &self,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<(SourceRecord, u64)>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT s.id, s.record, \
             (SELECT count(*) FROM destinations d WHERE d.source_id = s.id) AS n FROM sources s",
        );
        if let Some(cursor) = before {
            qb.push(" WHERE s.id < ").push_bind(uid(cursor));
        }
        qb.push(" ORDER BY s.id DESC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&self.pool).await.map_err(db_error)?;
        let mut items = Vec::with_capacity(found.len());
        for row in &found {
            items.push((decode::<SourceRecord>(row)?, count_of(row, "n")?));
        }
        Ok(page(items, limit, |(s, _)| s.id))
    }

    pub(in crate::store) async fn update_source_audited(
        &self,
        id: SourceId,
        change: SourceChange,
        mut audit: Option<AuditEntry>,
    ) -> Result<(SourceRecord, u64), StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT record FROM sources WHERE id = $1 FOR NO KEY UPDATE")
            .bind(uid(id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        let mut source: SourceRecord = decode(&row)?;
        let old = source.clone();
        change.apply(&mut source);
        if let Some(entry) = audit.as_mut() {
            entry
                .changes
                .extend(crate::store::audit::source_changes(&old, &source));
        }
        insert_audit(&mut tx, audit.as_ref()).await?;
        sqlx::query("UPDATE sources SET record = $2 WHERE id = $1")
            .bind(uid(id))
            .bind(source.encode())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let count = destination_count(&mut tx, id).await?;
        self.commit(tx).await?;
        Ok((source, count))
    }

    pub(in crate::store) async fn delete_source_audited(
        &self,
        id: SourceId,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        // Its destinations go with it (ON DELETE CASCADE); its events are
        // purged afterwards by `purge_orphans`.
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM sources WHERE id = $1")
            .bind(uid(id))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await
    }

    // ---- Destinations ----

    pub(in crate::store) async fn create_destination_audited(
        &self,
        destination: DestinationRecord,
        max_per_source: usize,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Locking the source serializes creations, so the cap holds; NO
        // KEY UPDATE leaves concurrent ingest (KEY SHARE) unblocked.
        let source = sqlx::query("SELECT 1 FROM sources WHERE id = $1 FOR NO KEY UPDATE")
            .bind(uid(destination.source_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if source.is_none() {
            return Err(StoreError::NotFound);
        }
        let existing = destination_count(&mut tx, destination.source_id).await?;
        if existing >= max_per_source as u64 {
            return Err(StoreError::LimitReached(max_per_source));
        }
        sqlx::query(
            "INSERT INTO destinations (source_id, id, enabled, record) VALUES ($1, $2, $3, $4)",
        )
        .bind(uid(destination.source_id))
        .bind(uid(destination.id))
        .bind(destination.enabled)
        .bind(destination.encode())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await
    }

    pub(in crate::store) async fn destination(
        &self,
        source_id: SourceId,
        id: DestinationId,
    ) -> Result<DestinationRecord, StoreError> {
        destination_row(&self.pool, source_id, id, "")
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub(in crate::store) async fn list_destinations(
        &self,
        source_id: SourceId,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<DestinationRecord>, StoreError> {
        let mut tx = self.snapshot().await?;
        source_exists(&mut tx, source_id, false).await?;
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT record FROM destinations WHERE source_id = ");
        qb.push_bind(uid(source_id));
        if let Some(cursor) = before {
            qb.push(" AND id < ").push_bind(uid(cursor));
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        done(tx).await?;
        let items = found
            .iter()
            .map(decode::<DestinationRecord>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |d| d.id))
    }

    pub(in crate::store) async fn destinations_of_source(
        &self,
        source_id: SourceId,
    ) -> Result<Vec<DestinationRecord>, StoreError> {
        let mut tx = self.snapshot().await?;
        source_exists(&mut tx, source_id, false).await?;
        let found = destinations_by_id(&mut tx, source_id, false).await?;
        done(tx).await?;
        let mut all: Vec<DestinationRecord> = found.into_values().collect();
        all.sort_by_key(|d| d.id);
        Ok(all)
    }

    pub(in crate::store) async fn update_destination_audited(
        &self,
        source_id: SourceId,
        id: DestinationId,
        change: DestinationChange,
        mut audit: Option<AuditEntry>,
    ) -> Result<DestinationUpdated, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT record FROM destinations WHERE source_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(uid(source_id))
        .bind(uid(id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
        let mut destination: DestinationRecord = decode(&row)?;
        let old = destination.clone();
        change.apply(&mut destination);
        if let Some(entry) = audit.as_mut() {
            entry
                .changes
                .extend(crate::store::audit::destination_changes(&old, &destination));
        }
        write_destination(&mut tx, &destination).await?;
        insert_audit(&mut tx, audit.as_ref()).await?;
        let cancelled = if destination.enabled {
            0
        } else {
            cancel_pending(&mut tx, id, destination.updated_at_ms).await?
        };
        self.commit(tx).await?;
        Ok(DestinationUpdated {
            destination,
            cancelled,
        })
    }

    pub(in crate::store) async fn delete_destination_audited(
        &self,
        source_id: SourceId,
        id: DestinationId,
        audit: Option<AuditEntry>,
    ) -> Result<u64, StoreError> {
        let now = crate::model::time::now_ms();
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM destinations WHERE source_id = $1 AND id = $2")
            .bind(uid(source_id))
            .bind(uid(id))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let cancelled = cancel_pending(&mut tx, id, now).await?;
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await?;
        Ok(cancelled)
    }

    pub(in crate::store) async fn all_destination_ids(
        &self,
    ) -> Result<Vec<(SourceId, DestinationId)>, StoreError> {
        let found = sqlx::query("SELECT source_id, id FROM destinations ORDER BY source_id, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found
            .iter()
            .map(|r| Ok((rows::row_id(r, "source_id")?, rows::row_id(r, "id")?)))
            .collect()
    }

    // ---- Events ----

    /// Queued for the next group commit (see `batch`): answered once the
    /// transaction holding it is durable.
    pub(in crate::store) async fn ingest(
        &self,
        event: EventRecord,
    ) -> Result<IngestOutcome, StoreError> {
        self.ingester.ingest(event).await
    }

    pub(in crate::store) async fn store_test_event(
        &self,
        event: EventRecord,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut tx = self.begin().await?;
        source_exists(&mut tx, event.source_id, true).await?;
        let targets: Vec<(EventId, DestinationId)> = enabled_destinations(&mut tx, event.source_id)
            .await?
            .into_iter()
            .map(|d| (event.id, d.id))
            .collect();
        insert_event(&mut tx, &event).await?;
        let deliveries =
            insert_deliveries(&mut tx, event.source_id, &targets, event.received_at_ms).await?;
        self.commit(tx).await?;
        Ok(deliveries)
    }

    pub(in crate::store) async fn list_events(
        &self,
        source_id: SourceId,
        query: EventQuery,
        limit: usize,
    ) -> Result<Page<ListedEvent>, StoreError> {
        let mut tx = self.snapshot().await?;
        source_exists(&mut tx, source_id, false).await?;
        let mut upper = query.before_id;
        if let Some(before) = query.before_ms {
            let floor = crate::model::ids::ulid_floor(before);
            upper = Some(upper.map_or(floor, |u| u.min(floor)));
        }
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT id, {} FROM events WHERE source_id = ",
            rows::SUMMARY_COLUMNS
        ));
        qb.push_bind(uid(source_id));
        if let Some(upper) = upper {
            qb.push(" AND id < ").push_bind(uid(upper));
        }
        if let Some(after) = query.after_ms {
            qb.push(" AND id >= ")
                .push_bind(uid(crate::model::ids::ulid_floor(after.saturating_add(1))));
            qb.push(" AND received_at_ms > ").push_bind(after);
        }
        if let Some(before) = query.before_ms {
            qb.push(" AND received_at_ms < ").push_bind(before);
        }
        if let Some(pattern) = &query.type_pattern {
            // bytea LIKE, with the default escape (backslash).
            qb.push(" AND event_type LIKE ")
                .push_bind(like_pattern(pattern).into_bytes());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        let mut listed = Vec::with_capacity(found.len());
        for row in &found {
            listed.push((rows::row_id(row, "id")?, rows::summary(row)?));
        }
        let listed = page(listed, limit, |(id, _)| *id);
        let ids: Vec<EventId> = listed.items.iter().map(|(id, _)| *id).collect();
        let mut deliveries = deliveries_of(&mut tx, &ids).await?;
        done(tx).await?;
        Ok(Page {
            items: listed
                .items
                .into_iter()
                .map(|(id, summary)| ListedEvent {
                    id,
                    summary,
                    deliveries: deliveries.remove(&id).unwrap_or_default(),
                })
                .collect(),
            next: listed.next,
        })
    }

    pub(in crate::store) async fn events_after(
        &self,
        source_id: SourceId,
        after: u128,
        before: u128,
        type_pattern: Option<String>,
        limit: usize,
    ) -> Result<Page<EventId>, StoreError> {
        if after >= before {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let mut tx = self.snapshot().await?;
        source_exists(&mut tx, source_id, false).await?;
        let mut qb = QueryBuilder::<Postgres>::new("SELECT id FROM events WHERE source_id = ");
        qb.push_bind(uid(source_id));
        qb.push(" AND id > ").push_bind(uid(after));
        qb.push(" AND id < ").push_bind(uid(before));
        if let Some(pattern) = &type_pattern {
            qb.push(" AND event_type LIKE ")
                .push_bind(like_pattern(pattern).into_bytes());
        }
        qb.push(" ORDER BY id ASC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        done(tx).await?;
        let mut ids = Vec::with_capacity(found.len());
        for row in &found {
            ids.push(rows::row_id::<EventId>(row, "id")?);
        }
        // Oldest first: the page's last id is where the next one starts.
        Ok(page(ids, limit, |id| *id))
    }

    pub(in crate::store) async fn search_events(
        &self,
        search: EventSearch,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<FoundEvent>, StoreError> {
        let mut tx = self.snapshot().await?;
        // Only events of sources that exist: a deleted source's events
        // are on their way out.
        let page = match search {
            EventSearch::All => {
                let mut qb = QueryBuilder::<Postgres>::new(format!(
                    "SELECT e.source_id, e.id, {} FROM events e \
                     WHERE EXISTS (SELECT 1 FROM sources s WHERE s.id = e.source_id)",
                    prefixed_summary("e")
                ));
                if let Some(cursor) = before {
                    qb.push(" AND e.id < ").push_bind(uid(cursor));
                }
                qb.push(" ORDER BY e.id DESC LIMIT ")
                    .push_bind(limit_plus_one(limit));
                let rows = qb.build().fetch_all(&mut *tx).await.map_err(db_error)?;
                let items = rows.iter().map(found).collect::<Result<Vec<_>, _>>()?;
                page(items, limit, |f| f.event_id)
            }
            EventSearch::Id {
                id,
                provider_event_id,
            } => {
                let sql = format!(
                    "SELECT e.source_id, e.id, {} FROM events e \
                     WHERE e.id = $1 AND EXISTS (SELECT 1 FROM sources s WHERE s.id = e.source_id)",
                    prefixed_summary("e")
                );
                let rows = sqlx::query(&sql)
                    .bind(uid(id))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let mut hits = rows.iter().map(found).collect::<Result<Vec<_>, _>>()?;
                if let Some(p) = provider_event_id {
                    hits.retain(|f| f.summary.provider_event_id.as_deref() == Some(p.as_str()));
                }
                page_of(hits, before, limit)
            }
            EventSearch::ProviderEventId(p) => {
                // One index lookup per source, as the dedup index is keyed
                // by source first.
                let sql = format!(
                    "SELECT e.source_id, e.id, {} FROM sources s CROSS JOIN LATERAL \
                     (SELECT * FROM events x WHERE x.source_id = s.id AND x.dedup_key = $1) e",
                    prefixed_summary("e")
                );
                let rows = sqlx::query(&sql)
                    .bind(p.as_bytes())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let hits = rows.iter().map(found).collect::<Result<Vec<_>, _>>()?;
                page_of(hits, before, limit)
            }
        };
        let ids: Vec<EventId> = page.items.iter().map(|f| f.event_id).collect();
        let mut deliveries = deliveries_of(&mut tx, &ids).await?;
        done(tx).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|f| FoundEvent {
                    source_id: f.source_id,
                    event_id: f.event_id,
                    deliveries: deliveries.remove(&f.event_id).unwrap_or_default(),
                    summary: f.summary,
                })
                .collect(),
            next: page.next,
        })
    }

    pub(in crate::store) async fn event_detail(
        &self,
        source_id: SourceId,
        event_id: EventId,
    ) -> Result<(EventSummary, EventRecord, Vec<DeliveryRecord>), StoreError> {
        let mut tx = self.snapshot().await?;
        let sql = format!(
            "SELECT {}, size_bytes FROM events WHERE source_id = $1 AND id = $2",
            rows::EVENT_COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(uid(source_id))
            .bind(uid(event_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        let summary = rows::summary(&row)?;
        let event = rows::event(&row)?;
        let mut deliveries = deliveries_of(&mut tx, &[event_id]).await?;
        done(tx).await?;
        Ok((
            summary,
            event,
            deliveries.remove(&event_id).unwrap_or_default(),
        ))
    }

    pub(in crate::store) async fn event(
        &self,
        event_id: EventId,
    ) -> Result<EventRecord, StoreError> {
        let sql = format!("SELECT {} FROM events WHERE id = $1", rows::EVENT_COLUMNS);
        let row = sqlx::query(&sql)
            .bind(uid(event_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        rows::event(&row)
    }

    pub(in crate::store) async fn deliveries_with_attempts(
        &self,
        source_id: SourceId,
        event_id: EventId,
    ) -> Result<Vec<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
        let mut tx = self.snapshot().await?;
        event_summary(&mut tx, source_id, event_id, false).await?;
        let deliveries = deliveries_of(&mut tx, &[event_id])
            .await?
            .remove(&event_id)
            .unwrap_or_default();
        let ids: Vec<DeliveryId> = deliveries.iter().map(|d| d.id).collect();
        let sql = format!(
            "SELECT delivery_id, {} FROM attempts WHERE delivery_id = ANY($1) \
             ORDER BY delivery_id, number",
            rows::ATTEMPT_COLUMNS
        );
        let found = sqlx::query(&sql)
            .bind(uids(&ids))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        done(tx).await?;
        let mut attempts: HashMap<DeliveryId, Vec<AttemptRecord>> = HashMap::new();
        for row in &found {
            attempts
                .entry(rows::row_id(row, "delivery_id")?)
                .or_default()
                .push(rows::attempt(row)?);
        }
        Ok(deliveries
            .into_iter()
            .map(|d| {
                let of = attempts.remove(&d.id).unwrap_or_default();
                (d, of)
            })
            .collect())
    }

    pub(in crate::store) async fn event_count(
        &self,
        source_id: SourceId,
    ) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT count(*) AS n FROM events WHERE source_id = $1")
            .bind(uid(source_id))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        count_of(&row, "n")
    }

    pub(in crate::store) async fn replay_event_audited(
        &self,
        source_id: SourceId,
        event_id: EventId,
        destinations: Vec<DestinationId>,
        now_ms: i64,
        audit: Option<AuditEntry>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut tx = self.begin().await?;
        event_summary(&mut tx, source_id, event_id, true).await?;
        // Re-checked in the commit: a destination disabled or deleted
        // since the caller chose it gets no delivery.
        let live = live_destinations(&mut tx, source_id, &destinations).await?;
        let pairs: Vec<(EventId, DestinationId)> =
            live.into_iter().map(|d| (event_id, d)).collect();
        let deliveries = insert_deliveries(&mut tx, source_id, &pairs, now_ms).await?;
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await?;
        Ok(deliveries)
    }

    pub(in crate::store) async fn retry_delivery_audited(
        &self,
        source_id: SourceId,
        event_id: EventId,
        delivery_id: DeliveryId,
        now_ms: i64,
        audit: Option<AuditEntry>,
    ) -> Result<(DeliveryRecord, Vec<AttemptRecord>), StoreError> {
        let mut tx = self.begin().await?;
        event_summary(&mut tx, source_id, event_id, true).await?;
        let sql = format!(
            "SELECT {} FROM deliveries WHERE id = $1",
            rows::DELIVERY_COLUMNS
        );
        let seen = sqlx::query(&sql)
            .bind(uid(delivery_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        let seen = rows::delivery(&seen)?;
        if seen.event_id != event_id {
            return Err(StoreError::NotFound);
        }
        // The destination is locked before the delivery (the order every
        // writer keeps); it is re-checked in this commit.
        let live = !live_destinations(&mut tx, source_id, &[seen.destination_id])
            .await?
            .is_empty();
        let (mut d, _) = delivery_for_update(&mut tx, delivery_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        // A delivery queued to a destination that is gone or disabled
        // would wait forever (no lane sends it).
        let retryable = matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Pending);
        if retryable && !live {
            return Err(StoreError::Conflict(
                "its destination is disabled or was deleted; enable the destination (or replay the event to another) first".into(),
            ));
        }
        let requeue = match (d.status, d.next_attempt_ms) {
            (DeliveryStatus::Failed, _) => true,
            (DeliveryStatus::Pending, Some(at)) if at > now_ms => true,
            (DeliveryStatus::Pending, _) => false,
            (status, _) => {
                return Err(StoreError::Conflict(format!(
                    "only a failed or pending delivery can be retried; this one is {}",
                    status.as_str()
                )))
            }
        };
        if requeue {
            d.status = DeliveryStatus::Pending;
            d.next_attempt_ms = Some(now_ms);
            d.updated_at_ms = now_ms;
            sqlx::query(
                "UPDATE deliveries SET status = 0, next_attempt_ms = $2, due_ms = $3, \
                 updated_at_ms = $2 WHERE id = $1",
            )
            .bind(uid(delivery_id))
            .bind(now_ms)
            .bind(now_ms.max(0))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let attempts = attempts_of(&mut tx, delivery_id).await?;
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await?;
        Ok((d, attempts))
    }

    // ---- Bulk replay jobs ----

    pub(in crate::store) async fn count_replay(
        &self,
        job: ReplayRecord,
        max_matched: u64,
    ) -> Result<Option<Totals>, StoreError> {
        let mut tx = self.snapshot().await?;
        let destinations = destinations_by_id(&mut tx, job.source_id, false).await?;
        let mut cursor = job;
        let mut totals = Totals::default();
        loop {
            let plan = plan_chunk(&mut tx, &destinations, &cursor, 10_000, usize::MAX).await?;
            // One short snapshot per chunk: a count over a million events
            // must not hold back the database's transaction horizon (and
            // so vacuum, for every node) for its whole length. The job's
            // id bound keeps later events out; retention removing a chunk
            // not yet counted only makes the total smaller.
            done(tx).await?;
            totals.matched += plan.matched;
            if totals.matched > max_matched {
                return Ok(None);
            }
            totals.events += plan.items.len() as u64;
            totals.deliveries += plan.items.iter().map(|(_, t)| t.len() as u64).sum::<u64>();
            match plan.last {
                Some(last) if !plan.exhausted => cursor.cursor = last,
                _ => return Ok(Some(totals)),
            }
            tx = self.snapshot().await?;
        }
    }

    pub(in crate::store) async fn create_replay_audited(
        &self,
        job: ReplayRecord,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Locking the source serializes a source's job creations (the
        // keep count holds) and keeps it from being deleted meanwhile.
        let source = sqlx::query("SELECT 1 FROM sources WHERE id = $1 FOR NO KEY UPDATE")
            .bind(uid(job.source_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if source.is_none() {
            return Err(StoreError::NotFound);
        }
        let existing =
            sqlx::query("SELECT id, running FROM replays WHERE source_id = $1 ORDER BY id DESC")
                .bind(uid(job.source_id))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        let mut old: Vec<ReplayId> = Vec::new();
        for (seen, row) in existing.iter().enumerate() {
            let running: bool = row.try_get("running").map_err(db_error)?;
            if seen + 1 >= KEPT_PER_SOURCE && !running {
                old.push(rows::row_id(row, "id")?);
            }
        }
        sqlx::query("INSERT INTO replays (source_id, id, running, record) VALUES ($1, $2, $3, $4)")
            .bind(uid(job.source_id))
            .bind(uid(job.id))
            .bind(job.state == ReplayState::Running)
            .bind(job.encode())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if !old.is_empty() {
            sqlx::query("DELETE FROM replays WHERE source_id = $1 AND id = ANY($2)")
                .bind(uid(job.source_id))
                .bind(uids(&old))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        insert_audit(&mut tx, audit.as_ref()).await?;
        self.commit(tx).await
    }

    pub(in crate::store) async fn replay(
        &self,
        source_id: SourceId,
        id: ReplayId,
    ) -> Result<ReplayRecord, StoreError> {
        let row = sqlx::query("SELECT record FROM replays WHERE source_id = $1 AND id = $2")
            .bind(uid(source_id))
            .bind(uid(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        decode(&row)
    }

    pub(in crate::store) async fn list_replays(
        &self,
        source_id: SourceId,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Page<ReplayRecord>, StoreError> {
        let mut tx = self.snapshot().await?;
        source_exists(&mut tx, source_id, false).await?;
        let mut qb = QueryBuilder::<Postgres>::new("SELECT record FROM replays WHERE source_id = ");
        qb.push_bind(uid(source_id));
        if let Some(cursor) = before {
            qb.push(" AND id < ").push_bind(uid(cursor));
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit_plus_one(limit));
        let found = qb.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        done(tx).await?;
        let items = found
            .iter()
            .map(decode::<ReplayRecord>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit, |j| j.id))
    }

    pub(in crate::store) async fn running_replays(
        &self,
    ) -> Result<Vec<(SourceId, ReplayId)>, StoreError> {
        let found =
            sqlx::query("SELECT source_id, id FROM replays WHERE running ORDER BY source_id, id")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        found
            .iter()
            .map(|r| Ok((rows::row_id(r, "source_id")?, rows::row_id(r, "id")?)))
            .collect()
    }

    pub(in crate::store) async fn advance_replay(
        &self,
        source_id: SourceId,
        id: ReplayId,
        now_ms: i64,
        max_items: usize,
        max_scan: usize,
    ) -> Result<Advanced, StoreError> {
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT record FROM replays WHERE source_id = $1 AND id = $2 FOR UPDATE")
                .bind(uid(source_id))
                .bind(uid(id))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(Advanced::default());
        };
        let mut job: ReplayRecord = decode(&row)?;
        if job.state != ReplayState::Running {
            return Ok(Advanced {
                state: Some(job.state),
                ..Advanced::default()
            });
        }
        let mut out = Advanced::default();
        match source_exists(&mut tx, source_id, true).await {
            Err(StoreError::NotFound) => job.state = ReplayState::Cancelled,
            Err(e) => return Err(e),
            Ok(()) => {
                let destinations = destinations_by_id(&mut tx, source_id, true).await?;
                let plan = plan_chunk(&mut tx, &destinations, &job, max_items, max_scan).await?;
                let mut pairs = Vec::new();
                for (event_id, targets) in &plan.items {
                    out.events += 1;
                    out.deliveries += targets.len() as u64;
                    for d in targets {
                        pairs.push((*event_id, *d));
                        if !out.destinations.contains(d) {
                            out.destinations.push(*d);
                        }
                    }
                }
                insert_deliveries(&mut tx, source_id, &pairs, now_ms).await?;
                if let Some(last) = plan.last {
                    job.cursor = last;
                }
                job.events_done += out.events;
                job.deliveries_queued += out.deliveries;
                if plan.exhausted {
                    job.state = ReplayState::Completed;
                }
            }
        }
        job.updated_at_ms = now_ms;
        sqlx::query(
            "UPDATE replays SET running = $3, record = $4 WHERE source_id = $1 AND id = $2",
        )
        .bind(uid(source_id))
        .bind(uid(id))
        .bind(job.state == ReplayState::Running)
        .bind(job.encode())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx).await?;
        out.state = Some(job.state);
        Ok(out)
    }

    // ---- The delivery queue ----

    pub(in crate::store) async fn due_for(
        &self,
        destination: DestinationId,
        now_ms: u64,
        in_flight: &HashSet<DeliveryId>,
        limit: usize,
    ) -> Result<(Vec<DueItem>, Option<u64>), StoreError> {
        let skip: Vec<Uuid> = in_flight.iter().map(|&id| uid(id)).collect();
        let found = sqlx::query(
            "SELECT id, event_id, due_ms FROM deliveries \
             WHERE destination_id = $1 AND status = 0 AND id <> ALL($2) \
             ORDER BY due_ms, id LIMIT $3",
        )
        .bind(uid(destination))
        .bind(skip)
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut items = Vec::with_capacity(found.len().min(limit));
        for row in &found {
            let due: i64 = row.try_get("due_ms").map_err(db_error)?;
            let due_ms = u64::try_from(due).unwrap_or(0);
            if due_ms > now_ms || items.len() == limit {
                return Ok((items, Some(due_ms)));
            }
            items.push(DueItem {
                delivery_id: rows::row_id(row, "id")?,
                event_id: rows::row_id(row, "event_id")?,
                due_ms,
            });
        }
        Ok((items, None))
    }

    pub(in crate::store) async fn fifo_head(
        &self,
        destination: DestinationId,
    ) -> Result<Option<DueItem>, StoreError> {
        // Event ids are ULIDs stored as uuids, whose byte order is the
        // ids' order: `received_at`, then the rest of the id.
        let row = sqlx::query(
            "SELECT id, event_id, due_ms FROM deliveries \
             WHERE destination_id = $1 AND status = 0 \
             ORDER BY event_id, id LIMIT 1",
        )
        .bind(uid(destination))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            let due: i64 = row.try_get("due_ms").map_err(db_error)?;
            Ok(DueItem {
                delivery_id: rows::row_id(&row, "id")?,
                event_id: rows::row_id(&row, "event_id")?,
                due_ms: u64::try_from(due).unwrap_or(0),
            })
        })
        .transpose()
    }

    pub(in crate::store) async fn attempt_inputs(
        &self,
        event_id: EventId,
        delivery_id: DeliveryId,
    ) -> Result<(EventRecord, DeliveryRecord), StoreError> {
        // Two point reads, no snapshot: an event never changes, and the
        // delivery's state is checked again when the attempt is recorded.
        // (A transaction would cost three more round trips per attempt.)
        let sql = format!("SELECT {} FROM events WHERE id = $1", rows::EVENT_COLUMNS);
        let event = sqlx::query(&sql)
            .bind(uid(event_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        let sql = format!(
            "SELECT {} FROM deliveries WHERE id = $1",
            rows::DELIVERY_COLUMNS
        );
        let delivery = sqlx::query(&sql)
            .bind(uid(delivery_id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or(StoreError::NotFound)?;
        Ok((rows::event(&event)?, rows::delivery(&delivery)?))
    }

    pub(in crate::store) async fn record_attempt(
        &self,
        o: AttemptOutcome,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.begin().await?;
        // An outcome need not wait for its WAL flush: should PostgreSQL
        // itself crash in the next moment and lose it, the delivery is only
        // sent again (at least once allows it). That saves a flush per
        // attempt, the delivery side's largest cost. Ingest keeps waiting.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        // Most attempts leave the destination as it is (a success while it
        // is not failing, a failure inside a run): those lock only their
        // delivery, so attempts and ingest (which share-locks destination
        // rows) never queue behind each other. An attempt that changes the
        // destination locks it first, in the order every writer takes
        // locks: the destination, then its deliveries (a disable cancels
        // them while holding the destination).
        let mut destination = destination_row(&mut *tx, o.source_id, o.destination_id, "").await?;
        if let Some(d) = &destination {
            if o.apply_to_destination(&mut d.clone()).0 {
                destination =
                    destination_row(&mut *tx, o.source_id, o.destination_id, "FOR UPDATE").await?;
            }
        }
        // Another node took the lane over since this attempt started: its
        // owner attempts the delivery again, this outcome is not recorded.
        if !super::nodes::holds_lane(&mut tx, self.node, o.destination_id, o.lease_epoch).await? {
            return Ok(Recorded {
                fenced_off: true,
                ..Recorded::default()
            });
        }
        let Some((mut delivery, queued_at)) =
            delivery_for_update(&mut tx, o.item.delivery_id).await?
        else {
            return Ok(Recorded {
                stale: true,
                ..Recorded::default()
            });
        };
        let a = &o.attempt;
        let sql = format!(
            "INSERT INTO attempts (delivery_id, {}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (delivery_id, number) DO UPDATE SET started_at_ms = $3, \
             duration_ms = $4, status_code = $5, error_kind = $6, error_message = $7, \
             response_snippet = $8",
            rows::ATTEMPT_COLUMNS
        );
        sqlx::query(&sql)
            .bind(uid(delivery.id))
            .bind(i32::try_from(a.number).unwrap_or(i32::MAX))
            .bind(a.started_at_ms)
            .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
            .bind(a.status_code.map(i32::from))
            .bind(rows::text(a.error_kind.map(|k| k.as_str())))
            .bind(rows::text(a.error_message.as_deref()))
            .bind(&a.response_snippet)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let now = a.started_at_ms + a.duration_ms as i64;
        // The queue entry this attempt was taken from: still there only if
        // the delivery is pending, for this destination, at that due time.
        let queued = delivery.status == DeliveryStatus::Pending
            && delivery.destination_id == o.destination_id
            && queued_at == Some(o.item.due_ms as i64);
        let mut recorded = Recorded::default();
        if !queued {
            recorded.stale = true;
            delivery.attempts = delivery.attempts.max(a.number);
            if delivery.status == DeliveryStatus::Cancelled && o.next == Next::Succeeded {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.next_attempt_ms = None;
            }
            delivery.updated_at_ms = now;
            // A delivery still pending (queued at another time) keeps its
            // queue place.
            write_delivery(&mut tx, &delivery, queued_at).await?;
            self.commit(tx).await?;
            return Ok(recorded);
        }
        delivery.attempts = a.number;
        delivery.updated_at_ms = now;
        let due = match o.next {
            Next::Succeeded => {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.next_attempt_ms = None;
                None
            }
            Next::Failed => {
                delivery.status = DeliveryStatus::Failed;
                delivery.next_attempt_ms = None;
                None
            }
            Next::RetryAt(at) => {
                delivery.next_attempt_ms = Some(at);
                Some(at.max(0))
            }
        };
        write_delivery(&mut tx, &delivery, due).await?;

        if let Some(mut d) = destination {
            let (changed, disabled) = o.apply_to_destination(&mut d);
            recorded.disabled_destination = disabled;
            if changed {
                write_destination(&mut tx, &d).await?;
            }
            if recorded.disabled_destination {
                cancel_pending(&mut tx, o.destination_id, now).await?;
            }
        }
        self.commit(tx).await?;
        Ok(recorded)
    }

    pub(in crate::store) async fn queue_depth(
        &self,
        destinations: Vec<DestinationId>,
    ) -> Result<(u64, Option<u64>), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM deliveries WHERE status = 0) AS n, \
             (SELECT min(first.due_ms) FROM unnest($1::uuid[]) AS d(id) CROSS JOIN LATERAL \
               (SELECT due_ms FROM deliveries WHERE destination_id = d.id AND status = 0 \
                ORDER BY due_ms LIMIT 1) AS first) AS oldest",
        )
        .bind(uids(&destinations))
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(db_error)?;
        Ok((
            count_of(&row, "n")?,
            oldest.map(|o| u64::try_from(o).unwrap_or(0)),
        ))
    }

    pub(in crate::store) async fn stats(&self) -> Result<StoreStats, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM sources) AS sources, \
             (SELECT count(*) FROM destinations) AS destinations, \
             (SELECT count(*) FROM events) AS events, \
             (SELECT count(*) FROM deliveries) AS deliveries, \
             (SELECT count(*) FROM deliveries WHERE status = 0) AS queued, \
             (SELECT count(*) FROM attempts) AS attempts, \
             (SELECT count(*) FROM events WHERE dedup_key IS NOT NULL) AS dedup_keys",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(StoreStats {
            sources: count_of(&row, "sources")?,
            destinations: count_of(&row, "destinations")?,
            events: count_of(&row, "events")?,
            deliveries: count_of(&row, "deliveries")?,
            queued: count_of(&row, "queued")?,
            attempts: count_of(&row, "attempts")?,
            dedup_keys: count_of(&row, "dedup_keys")?,
        })
    }

    // ---- Retention ----

    pub(in crate::store) async fn sweep_retention(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut removed = self.purge_orphans().await?;
        let sources = sqlx::query("SELECT record FROM sources ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        for row in &sources {
            let source: SourceRecord = decode(row)?;
            let cutoff = now_ms - i64::from(source.retention_days) * DAY_MS;
            loop {
                let expired = self.oldest_events(source.id, Some(cutoff)).await?;
                if expired.is_empty() {
                    break;
                }
                let n = expired.len();
                removed += self.purge_chunk(&expired).await?;
                if n < RETENTION_CHUNK {
                    break;
                }
            }
        }
        Ok(removed)
    }

    pub(in crate::store) async fn purge_orphans(&self) -> Result<u64, StoreError> {
        // The distinct sources of events, by skipping through the primary
        // key (one probe per source, not a scan of every event).
        let orphaned = sqlx::query(
            "WITH RECURSIVE seen(id) AS ( \
               (SELECT source_id FROM events ORDER BY source_id LIMIT 1) \
               UNION ALL \
               SELECT (SELECT e.source_id FROM events e WHERE e.source_id > seen.id \
                       ORDER BY e.source_id LIMIT 1) FROM seen WHERE seen.id IS NOT NULL) \
             SELECT id FROM seen WHERE id IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.id = seen.id)",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut removed = 0;
        for row in &orphaned {
            let source = rows::row_id(row, "id")?;
            loop {
                let ids = self.oldest_events(source, None).await?;
                if ids.is_empty() {
                    break;
                }
                removed += self.purge_chunk(&ids).await?;
            }
        }
        sqlx::query(
            "DELETE FROM replays r WHERE NOT r.running \
             AND NOT EXISTS (SELECT 1 FROM sources s WHERE s.id = r.source_id)",
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(removed)
    }

    pub(in crate::store) async fn purge_events(
        &self,
        event_ids: Vec<EventId>,
    ) -> Result<(), StoreError> {
        self.purge_chunk(&event_ids).await.map(|_| ())
    }

    /// Up to a chunk of a source's oldest events, stopping at the first
    /// received at or after `cutoff_ms` (all of them without a cutoff).
    async fn oldest_events(
        &self,
        source_id: SourceId,
        cutoff_ms: Option<i64>,
    ) -> Result<Vec<EventId>, StoreError> {
        let found = sqlx::query(
            "SELECT id, received_at_ms FROM events WHERE source_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(uid(source_id))
        .bind(RETENTION_CHUNK as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut ids = Vec::with_capacity(found.len());
        for row in &found {
            let received: i64 = row.try_get("received_at_ms").map_err(db_error)?;
            if cutoff_ms.is_some_and(|c| received >= c) {
                break;
            }
            ids.push(rows::row_id(row, "id")?);
        }
        Ok(ids)
    }

    /// Removes one chunk of events with their deliveries and attempts
    /// (cascaded) and their dedup keys (columns of the event row), in one
    /// short statement.
    async fn purge_chunk(&self, ids: &[EventId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = self
            .write_one(sqlx::query("DELETE FROM events WHERE id = ANY($1)").bind(uids(ids)))
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

/// `SUMMARY_COLUMNS` of the events aliased `alias`.
fn prefixed_summary(alias: &str) -> String {
    rows::SUMMARY_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A delivery locked for update, with the due time it is queued under.
async fn delivery_for_update(
    conn: &mut PgConnection,
    id: DeliveryId,
) -> Result<Option<(DeliveryRecord, Option<i64>)>, StoreError> {
    let sql = format!(
        "SELECT {}, due_ms FROM deliveries WHERE id = $1 FOR UPDATE",
        rows::DELIVERY_COLUMNS
    );
    let row = sqlx::query(&sql)
        .bind(uid(id))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => {
            let due: Option<i64> = row.try_get("due_ms").map_err(db_error)?;
            Ok(Some((rows::delivery(&row)?, due)))
        }
        None => Ok(None),
    }
}

/// Writes a delivery's changing columns; `due_ms` is its queue place
/// (`None` unless it is pending).
async fn write_delivery(
    conn: &mut PgConnection,
    d: &DeliveryRecord,
    due_ms: Option<i64>,
) -> Result<(), StoreError> {
    let due = if d.status == DeliveryStatus::Pending {
        due_ms
    } else {
        None
    };
    sqlx::query(
        "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_ms = $4, due_ms = $5, \
         updated_at_ms = $6 WHERE id = $1",
    )
    .bind(uid(d.id))
    .bind(rows::status_code(d.status))
    .bind(i32::try_from(d.attempts).unwrap_or(i32::MAX))
    .bind(d.next_attempt_ms)
    .bind(due)
    .bind(d.updated_at_ms)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Writes a destination's record and its `enabled` column.
async fn write_destination(
    conn: &mut PgConnection,
    d: &DestinationRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE destinations SET enabled = $3, record = $4 WHERE source_id = $1 AND id = $2",
    )
    .bind(uid(d.source_id))
    .bind(uid(d.id))
    .bind(d.enabled)
    .bind(d.encode())
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn type_patterns_become_escaped_like_patterns() {
        assert_eq!(like_pattern("invoice.*"), "invoice.%");
        assert_eq!(like_pattern("a_b%c\\*"), "a\\_b\\%c\\\\%");
        assert_eq!(like_pattern("*"), "%");
    }
}
