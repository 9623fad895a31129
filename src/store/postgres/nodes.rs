//! What several nodes on one database need from it (SPEC §12): leases on
//! destination lanes and on background duties, wake-up hints between
//! nodes, one bootstrap key, one secrets key.
//!
//! Lease times are the database's clock (`krafter_now_ms()`), never a
//! node's: two nodes' clocks may disagree, the database's is one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, Row};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use super::rows::{self, uid};
use super::{db_error, PgStore, ProbeState};
use crate::model::ids::{DestinationId, SourceId};
use crate::model::records::ApiKeyRecord;
use crate::store::{Announcement, LaneClaim, StoreError};

/// The channel hints travel on.
const CHANNEL: &str = "krafter_due";

/// How long announcements gather before one `NOTIFY` carries them.
const GATHER: Duration = Duration::from_millis(5);

/// A `NOTIFY` payload must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7_000;

/// How long the listener waits before reconnecting after an error.
const RELISTEN_PAUSE: Duration = Duration::from_secs(1);

/// The value sealed into `secrets_check`.
const CHECK_PLAINTEXT: &[u8] = b"krafter secrets check";

/// This process's id among the nodes, and the lock that makes it its own.
///
/// The id lives in `<storage.path>/node.id`, so a node restarted after a
/// crash is the same node: it takes its own leases back at once instead of
/// waiting `delivery.lease_ttl` for them (its previous life can have no
/// attempt left in flight). The file is locked while the store is open; a
/// second process on the same directory (the offline CLI beside a running
/// server, or a misconfigured second server) gets an id of its own, so
/// two processes never act as one node.
pub(super) struct NodeIdentity {
    pub(super) id: Uuid,
    lock: Mutex<Option<std::fs::File>>,
}

impl NodeIdentity {
    pub(super) fn take(dir: &std::path::Path) -> Result<NodeIdentity, StoreError> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("node.id");
        let context = || format!("opening {}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(context(), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Ok(NodeIdentity {
                    id: Uuid::from_u128(rand::random()),
                    lock: Mutex::new(None),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(context(), e)),
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| StoreError::io(context(), e))?;
        let id = match Uuid::parse_str(text.trim()) {
            Ok(id) => id,
            Err(_) => {
                let id = Uuid::from_u128(rand::random());
                file.set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| file.write_all(format!("{}\n", id.hyphenated()).as_bytes()))
                    .and_then(|()| file.sync_all())
                    .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
                id
            }
        };
        Ok(NodeIdentity {
            id,
            lock: Mutex::new(Some(file)),
        })
    }

    /// Lets the next process on this directory be this node.
    pub(super) fn release(&self) {
        lock(&self.lock).take();
    }
}

/// Hints waiting to be sent, and the hints received for the engine.
pub(super) struct Announcer {
    pending: Mutex<HashSet<(Uuid, Uuid)>>,
    send_now: Notify,
    received: Mutex<Option<mpsc::Receiver<Announcement>>>,
}

impl Announcer {
    /// Starts the sender and the listener on `pool`; they stop with the
    /// store's probe state.
    pub(super) fn start(
        pool: &PgPool,
        node: Uuid,
        state: Arc<ProbeState>,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Announcer> {
        let (tx, rx) = mpsc::channel(4096);
        let announcer = Arc::new(Announcer {
            pending: Mutex::new(HashSet::new()),
            send_now: Notify::new(),
            received: Mutex::new(Some(rx)),
        });
        runtime.spawn(send_loop(
            pool.clone(),
            node,
            announcer.clone(),
            state.clone(),
        ));
        runtime.spawn(listen_loop(pool.clone(), node, tx, state));
        announcer
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Sends gathered hints: one `NOTIFY` (outside any transaction, so ingest
/// commits never queue behind PostgreSQL's notification lock) per
/// [`GATHER`] at most. A failed send is dropped: the lanes also poll.
async fn send_loop(pool: PgPool, node: Uuid, announcer: Arc<Announcer>, state: Arc<ProbeState>) {
    loop {
        tokio::select! {
            _ = announcer.send_now.notified() => {}
            _ = state.stop.cancelled() => return,
        }
        if state.stop.is_cancelled() {
            return;
        }
        tokio::time::sleep(GATHER).await;
        let hints: Vec<(Uuid, Uuid)> = lock(&announcer.pending).drain().collect();
        for payload in payloads(node, &hints) {
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "could not announce due deliveries; the other nodes will poll");
            }
        }
    }
}

/// `<node> <source>/<destination> …`, split to fit a payload.
fn payloads(node: Uuid, hints: &[(Uuid, Uuid)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (source, destination) in hints {
        if current.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(&node.simple().to_string());
        }
        current.push(' ');
        current.push_str(&source.simple().to_string());
        current.push('/');
        current.push_str(&destination.simple().to_string());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The hints in a payload, unless this node sent it.
fn parse_payload(node: Uuid, payload: &str) -> Vec<Announcement> {
    let mut parts = payload.split(' ');
    let sender = parts.next().and_then(|s| Uuid::parse_str(s).ok());
    if sender.is_none() || sender == Some(node) {
        return Vec::new();
    }
    parts
        .filter_map(|pair| {
            let (source, destination) = pair.split_once('/')?;
            Some(Announcement::Due(
                SourceId::from_u128(Uuid::parse_str(source).ok()?.as_u128()),
                DestinationId::from_u128(Uuid::parse_str(destination).ok()?.as_u128()),
            ))
        })
        .collect()
}

/// Listens for other nodes' hints and hands them to the engine. Whenever
/// the connection was lost (hints sent meanwhile are gone), the engine is
/// told to look at every queue.
async fn listen_loop(
    pool: PgPool,
    node: Uuid,
    to_engine: mpsc::Sender<Announcement>,
    state: Arc<ProbeState>,
) {
    let mut listener: Option<PgListener> = None;
    while !state.stop.is_cancelled() {
        let Some(active) = listener.as_mut() else {
            match connect_listener(&pool).await {
                Ok(l) => {
                    listener = Some(l);
                    // Hints sent before this connection listened are lost.
                    if to_engine.send(Announcement::Missed).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for other nodes' hints yet");
                    tokio::select! {
                        _ = tokio::time::sleep(RELISTEN_PAUSE) => {}
                        _ = state.stop.cancelled() => return,
                    }
                }
            }
            continue;
        };
        let received = tokio::select! {
            r = active.try_recv() => r,
            _ = state.stop.cancelled() => return,
        };
        match received {
            Ok(Some(notification)) => {
                for hint in parse_payload(node, notification.payload()) {
                    // A full channel: the engine is behind; tell it to look
                    // at everything instead of queueing more.
                    if to_engine.try_send(hint).is_err()
                        && to_engine.send(Announcement::Missed).await.is_err()
                    {
                        return;
                    }
                }
            }
            // The connection dropped and was re-established.
            Ok(None) => {
                if to_engine.send(Announcement::Missed).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "lost the connection listening for other nodes' hints");
                listener = None;
                tokio::select! {
                    _ = tokio::time::sleep(RELISTEN_PAUSE) => {}
                    _ = state.stop.cancelled() => return,
                }
            }
        }
    }
}

async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Stores a value sealed with this node's key unless one is there, then
/// hands back the stored one: it must open with this node's key.
pub(super) async fn secrets_check(
    conn: &mut PgConnection,
    sealed_here: Vec<u8>,
) -> Result<Vec<u8>, StoreError> {
    sqlx::query("INSERT INTO secrets_check (sealed) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(sealed_here)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    let row = sqlx::query("SELECT sealed FROM secrets_check")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    rows::bytes(&row, "sealed")
}

/// What [`secrets_check`] stores, sealed with this node's key.
pub(super) fn check_plaintext() -> &'static [u8] {
    CHECK_PLAINTEXT
}

/// Whether this node still holds `epoch` of `destination`'s lane, read
/// inside an attempt's recording transaction. The row stays share-locked
/// until that commits, so a takeover waits for it: an outcome is recorded
/// before the new owner's epoch exists, or not at all.
pub(super) async fn holds_lane(
    tx: &mut PgConnection,
    node: Uuid,
    destination: DestinationId,
    epoch: u64,
) -> Result<bool, StoreError> {
    let row =
        sqlx::query("SELECT owner, epoch FROM lane_leases WHERE destination_id = $1 FOR SHARE")
            .bind(uid(destination))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
    let Some(row) = row else {
        return Ok(false);
    };
    let owner: Uuid = row.try_get("owner").map_err(db_error)?;
    let held: i64 = row.try_get("epoch").map_err(db_error)?;
    Ok(owner == node && u64::try_from(held).ok() == Some(epoch))
}

impl PgStore {
    pub(in crate::store) fn announce_due(
        &self,
        source_id: SourceId,
        destination_id: DestinationId,
    ) {
        let added = lock(&self.announcer.pending).insert((uid(source_id), uid(destination_id)));
        if added {
            self.announcer.send_now.notify_one();
        }
    }

    pub(in crate::store) fn announcements(&self) -> Option<mpsc::Receiver<Announcement>> {
        lock(&self.announcer.received).take()
    }

    pub(in crate::store) async fn create_first_api_key(
        &self,
        key: ApiKeyRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Nodes starting at once: the lock makes "none yet, so insert" one
        // step; it blocks only other writers of API keys, briefly.
        sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if any {
            return Ok(false);
        }
        super::intents::insert_api_key(&mut tx, &key).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    pub(in crate::store) async fn claim_lanes(
        &self,
        destinations: Vec<DestinationId>,
        ttl_ms: u64,
        max_new: usize,
    ) -> Result<Vec<LaneClaim>, StoreError> {
        let mut wanted: Vec<Uuid> = destinations.iter().map(|&d| uid(d)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX / 4);
        let max_new = i64::try_from(max_new).unwrap_or(i64::MAX);
        // Every lane this node holds (and has not released), plus at most
        // `max_new` free or expired ones picked at random (so that nodes claiming at once
        // spread out), taken in one order on every node so that two claims
        // never deadlock; a new owner gets the next epoch. The upsert's
        // condition is checked again on the locked row, so a lane another
        // node took meanwhile is left alone. The final select sees the
        // rows as they were before this statement: for a lane held by
        // another node, when its lease runs out.
        let found = sqlx::query(
            "WITH now AS (SELECT krafter_now_ms() AS ms), \
             candidates AS ( \
               SELECT w, (l.owner = $2 AND l.expires_at_ms > 0) IS TRUE AS mine \
               FROM unnest($1::uuid[]) AS w \
               LEFT JOIN lane_leases l ON l.destination_id = w \
               WHERE l.destination_id IS NULL OR l.owner = $2 \
                  OR l.expires_at_ms <= (SELECT ms FROM now)), \
             chosen AS ( \
               SELECT w FROM candidates WHERE mine \
               UNION ALL \
               (SELECT w FROM candidates WHERE NOT mine ORDER BY random() LIMIT $4)), \
             claimed AS ( \
               INSERT INTO lane_leases (destination_id, owner, epoch, expires_at_ms) \
               SELECT w, $2, 1, (SELECT ms FROM now) + $3 FROM chosen ORDER BY w \
               ON CONFLICT (destination_id) DO UPDATE SET \
                 epoch = CASE WHEN lane_leases.owner = EXCLUDED.owner \
                         THEN lane_leases.epoch ELSE lane_leases.epoch + 1 END, \
                 owner = EXCLUDED.owner, \
                 expires_at_ms = EXCLUDED.expires_at_ms \
               WHERE lane_leases.owner = EXCLUDED.owner \
                  OR lane_leases.expires_at_ms <= (SELECT ms FROM now) \
               RETURNING destination_id, epoch) \
             SELECT w AS destination_id, c.epoch AS held, \
                    l.expires_at_ms - (SELECT ms FROM now) AS others_left \
             FROM unnest($1::uuid[]) AS w \
             LEFT JOIN claimed c ON c.destination_id = w \
             LEFT JOIN lane_leases l ON l.destination_id = w",
        )
        .bind(&wanted)
        .bind(self.node)
        .bind(ttl)
        .bind(max_new)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut claims = Vec::with_capacity(found.len());
        for row in &found {
            let held: Option<i64> = row.try_get("held").map_err(db_error)?;
            let others_left: Option<i64> = row.try_get("others_left").map_err(db_error)?;
            claims.push(LaneClaim {
                destination_id: rows::row_id(row, "destination_id")?,
                held: held.and_then(|e| u64::try_from(e).ok()),
                others_expire_in_ms: match held {
                    Some(_) => None,
                    None => Some(others_left.map_or(0, |ms| u64::try_from(ms).unwrap_or(0))),
                },
            });
        }
        Ok(claims)
    }

    pub(in crate::store) async fn node_heartbeat(&self, ttl_ms: u64) -> Result<u64, StoreError> {
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX / 4);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO nodes (id, seen_at_ms) VALUES ($1, krafter_now_ms()) \
             ON CONFLICT (id) DO UPDATE SET seen_at_ms = EXCLUDED.seen_at_ms",
        )
        .bind(self.node)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Nodes gone for long are forgotten (a killed node leaves its row).
        sqlx::query("DELETE FROM nodes WHERE seen_at_ms < krafter_now_ms() - 10 * $1")
            .bind(ttl)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let alive: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM nodes WHERE seen_at_ms > krafter_now_ms() - $1",
        )
        .bind(ttl)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(u64::try_from(alive).unwrap_or(1).max(1))
    }

    pub(in crate::store) async fn release_lanes(
        &self,
        destinations: Vec<DestinationId>,
    ) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = destinations.iter().map(|&d| uid(d)).collect();
        // Expired, not deleted: the row keeps its epoch, so the next owner's
        // is higher than any this node used.
        sqlx::query(
            "UPDATE lane_leases SET expires_at_ms = 0 \
             WHERE destination_id = ANY($1) AND owner = $2",
        )
        .bind(&ids)
        .bind(self.node)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub(in crate::store) async fn leave(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(self.node)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub(in crate::store) async fn claim_duty(
        &self,
        name: &'static str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX / 4);
        let row = sqlx::query(
            "INSERT INTO duty_leases (name, owner, expires_at_ms) \
             VALUES ($1, $2, krafter_now_ms() + $3) \
             ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, \
               expires_at_ms = EXCLUDED.expires_at_ms \
             WHERE duty_leases.owner = EXCLUDED.owner \
                OR duty_leases.expires_at_ms <= krafter_now_ms() \
             RETURNING owner",
        )
        .bind(name)
        .bind(self.node)
        .bind(ttl)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::metrics::Metrics;
    use crate::store::conformance::{api_key, attempt, destination, event_now, outcome, source};
    use crate::store::postgres::test_cluster::scratch_database;
    use crate::store::{IngestOutcome, Next, Store};

    /// A second node's storage configuration: the same database and
    /// secrets key, a data directory of its own.
    fn second_node(first: &StorageConfig) -> StorageConfig {
        StorageConfig {
            path: first.path.with_file_name("second-node"),
            secrets_key_file: Some(first.secrets_key_path()),
            ..first.clone()
        }
    }

    fn open(config: &StorageConfig) -> Store {
        Store::open(config, Arc::new(Metrics::new())).unwrap()
    }

    #[tokio::test]
    async fn one_node_at_a_time_holds_a_lane_and_a_stale_owner_is_fenced_off() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (a, b) = (open(&config), open(&second_node(&config)));
        let s = source("wh_lease1");
        a.create_source(s.clone()).await.unwrap();
        let d = destination(s.id, &[]);
        a.create_destination(d.clone(), 10).await.unwrap();
        let IngestOutcome::Stored { deliveries } =
            a.ingest(event_now(s.id, "t", None)).await.unwrap()
        else {
            panic!("not stored");
        };

        let ttl = 400;
        let first = a.claim_lanes(vec![d.id], ttl, 1).await.unwrap();
        let epoch_a = first[0].held.expect("a free lane is taken");
        let refused = b.claim_lanes(vec![d.id], ttl, 1).await.unwrap();
        assert_eq!(refused[0].held, None, "a held lane is not taken");
        let left = refused[0].others_expire_in_ms.unwrap();
        assert!(left > 0 && left <= ttl, "{left}");
        // Renewing keeps the epoch.
        let renewed = a.claim_lanes(vec![d.id], ttl, 1).await.unwrap();
        assert_eq!(renewed[0].held, Some(epoch_a));

        // A stops renewing (as a killed node would): B takes over once the
        // lease has run out, under a new epoch.
        tokio::time::sleep(std::time::Duration::from_millis(ttl + 150)).await;
        let taken = b.claim_lanes(vec![d.id], 60_000, 1).await.unwrap();
        let epoch_b = taken[0].held.expect("an expired lane is taken over");
        assert!(epoch_b > epoch_a);
        assert_eq!(
            a.claim_lanes(vec![d.id], ttl, 1).await.unwrap()[0].held,
            None
        );

        // A's attempt, finished late, is not recorded.
        let (items, _) = a
            .due_for(d.id, u64::MAX / 2, &HashSet::new(), 10)
            .await
            .unwrap();
        assert_eq!(items.len(), 1);
        let mut late = outcome(&d, items[0], attempt(1, 1, true), Next::Succeeded);
        late.lease_epoch = epoch_a;
        let recorded = a.record_attempt(late).await.unwrap();
        assert!(recorded.fenced_off);
        let (_, _, listed) = a.event_detail(s.id, deliveries[0].event_id).await.unwrap();
        assert_eq!(listed[0].attempts, 0, "the fenced attempt left no trace");
        // B's, under its epoch, is.
        let mut current = outcome(&d, items[0], attempt(1, 1, true), Next::Succeeded);
        current.lease_epoch = epoch_b;
        assert!(!b.record_attempt(current).await.unwrap().fenced_off);
        let (_, _, listed) = b.event_detail(s.id, deliveries[0].event_id).await.unwrap();
        assert_eq!(listed[0].attempts, 1);

        // Released at shutdown: taken over at once, never with an old epoch.
        b.release_lanes(vec![d.id]).await.unwrap();
        let back = a.claim_lanes(vec![d.id], ttl, 1).await.unwrap();
        assert!(back[0].held.unwrap() > epoch_b);
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn nodes_take_a_share_of_the_lanes_each() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (a, b) = (open(&config), open(&second_node(&config)));
        let s = source("wh_share");
        a.create_source(s.clone()).await.unwrap();
        let mut all = Vec::new();
        for _ in 0..4 {
            let d = destination(s.id, &[]);
            a.create_destination(d.clone(), 10).await.unwrap();
            all.push(d.id);
        }
        assert_eq!(a.node_heartbeat(10_000).await.unwrap(), 1);
        assert_eq!(b.node_heartbeat(10_000).await.unwrap(), 2);
        assert_eq!(a.node_heartbeat(10_000).await.unwrap(), 2);

        let held = |claims: Vec<LaneClaim>| -> HashSet<DestinationId> {
            claims
                .into_iter()
                .filter(|c| c.held.is_some())
                .map(|c| c.destination_id)
                .collect()
        };
        let ttl = 60_000;
        let of_a = held(a.claim_lanes(all.clone(), ttl, 2).await.unwrap());
        assert_eq!(of_a.len(), 2, "at most max_new new lanes");
        let of_b = held(b.claim_lanes(all.clone(), ttl, 2).await.unwrap());
        assert_eq!(of_b.len(), 2);
        assert!(of_a.is_disjoint(&of_b));
        // Renewing keeps a's two and takes none of b's, whatever max_new.
        assert_eq!(
            held(a.claim_lanes(all.clone(), ttl, 4).await.unwrap()),
            of_a
        );

        // A lane a hands over is b's at b's next claim; a does not take it
        // back by renewing.
        let given = *of_a.iter().next().unwrap();
        a.release_lanes(vec![given]).await.unwrap();
        assert_eq!(
            held(a.claim_lanes(all.clone(), ttl, 0).await.unwrap()).len(),
            1
        );
        let now_b = held(b.claim_lanes(all.clone(), ttl, 1).await.unwrap());
        assert!(now_b.contains(&given) && now_b.len() == 3);

        b.leave().await.unwrap();
        assert_eq!(a.node_heartbeat(10_000).await.unwrap(), 1);
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn a_restarted_node_is_the_same_node_and_a_second_process_is_another() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::take(dir.path()).unwrap();
        let beside = NodeIdentity::take(dir.path()).unwrap();
        assert_ne!(first.id, beside.id, "the directory's id is taken");
        first.release();
        drop(beside);
        let again = NodeIdentity::take(dir.path()).unwrap();
        assert_eq!(again.id, first.id, "a restart keeps the id");
        drop(again);
        std::fs::write(dir.path().join("node.id"), "not an id").unwrap();
        let fresh = NodeIdentity::take(dir.path()).unwrap();
        assert_ne!(fresh.id, first.id);
        let text = std::fs::read_to_string(dir.path().join("node.id")).unwrap();
        assert_eq!(text.trim(), fresh.id.hyphenated().to_string());
    }

    #[tokio::test]
    async fn a_duty_has_one_node_until_it_lapses() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (a, b) = (open(&config), open(&second_node(&config)));
        assert!(a.claim_duty("retention", 300).await.unwrap());
        assert!(!b.claim_duty("retention", 300).await.unwrap());
        assert!(a.claim_duty("retention", 300).await.unwrap(), "renewed");
        tokio::time::sleep(std::time::Duration::from_millis(450)).await;
        assert!(b.claim_duty("retention", 300).await.unwrap(), "taken over");
        assert!(!a.claim_duty("retention", 300).await.unwrap());
        a.close().await;
        b.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_at_once_make_one_bootstrap_key() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (a, b) = (open(&config), open(&second_node(&config)));
        let (one, two) = tokio::join!(
            a.create_first_api_key(api_key("first", 1)),
            b.create_first_api_key(api_key("second", 2)),
        );
        assert!(
            one.unwrap() ^ two.unwrap(),
            "exactly one node stores its key"
        );
        assert_eq!(a.count_api_keys().await.unwrap(), 1);
        assert!(!a.create_first_api_key(api_key("third", 3)).await.unwrap());
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn a_node_with_another_secrets_key_refuses_to_start() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let a = open(&config);
        a.close().await;
        // Its own key (a copy was not given): refused, and why is said.
        let stranger = StorageConfig {
            path: config.path.with_file_name("stranger"),
            ..config.clone()
        };
        match Store::open(&stranger, Arc::new(Metrics::new())) {
            Err(e) => assert!(e.to_string().contains("same key"), "{e}"),
            Ok(_) => panic!("a node with another secrets key started"),
        }
        // With the shared key it starts.
        open(&second_node(&config)).close().await;
    }

    #[tokio::test]
    async fn hints_reach_the_other_nodes_but_not_their_sender() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (a, b) = (open(&config), open(&second_node(&config)));
        let mut from_a = a.announcements().unwrap();
        let mut at_b = b.announcements().unwrap();
        // Each listener says it may have missed hints when it connects.
        let within = std::time::Duration::from_secs(10);
        for rx in [&mut from_a, &mut at_b] {
            let first = tokio::time::timeout(within, rx.recv()).await.unwrap();
            assert_eq!(first, Some(Announcement::Missed));
        }
        let (s, d) = (SourceId::new(), DestinationId::new());
        a.announce_due(s, d);
        let got = tokio::time::timeout(within, at_b.recv()).await.unwrap();
        assert_eq!(got, Some(Announcement::Due(s, d)));
        let own = tokio::time::timeout(std::time::Duration::from_millis(300), from_a.recv()).await;
        assert!(own.is_err(), "a node is not told its own hints: {own:?}");
        a.close().await;
        b.close().await;
    }

    #[test]
    fn payloads_round_trip_and_skip_their_sender() {
        let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let hints: Vec<(Uuid, Uuid)> = (0..400u128)
            .map(|i| (Uuid::from_u128(1000 + i), Uuid::from_u128(5000 + i)))
            .collect();
        let sent = payloads(other, &hints);
        assert!(sent.len() > 1, "400 hints need more than one payload");
        assert!(sent.iter().all(|p| p.len() < 8000));
        let mut got = Vec::new();
        for p in &sent {
            got.extend(parse_payload(me, p));
            assert!(
                parse_payload(other, p).is_empty(),
                "a node ignores its own hints"
            );
        }
        assert_eq!(got.len(), 400);
        assert_eq!(
            got[7],
            Announcement::Due(SourceId::from_u128(1007), DestinationId::from_u128(5007))
        );
        assert!(parse_payload(me, "garbage").is_empty());
        assert!(parse_payload(me, &format!("{} not/ids", other.simple())).is_empty());
    }
}
