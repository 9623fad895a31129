//! The PostgreSQL backend: the same intents as redb, each one transaction
//! (or one statement) on a connection pool.
//!
//! The schema is in `migrations/` (embedded in the binary, applied at open
//! under sqlx's advisory lock, so several nodes may start at once; a node
//! older than the database's schema refuses to start). Every query is
//! built at run time: no database is needed to compile Krafter.
//!
//! Atomicity where a contract asks for it comes from one transaction per
//! intent and row locks: ingest reads the source's enabled destinations
//! `FOR SHARE`, so a destination being disabled (its row locked `FOR
//! UPDATE` while its pending deliveries are cancelled) is either fully
//! before the ingest or fully after it.
//!
//! Ingest is written per group commit (`batch`): concurrent ingests share
//! one transaction of a few multi-row statements and one WAL flush.
//!
//! Several nodes may share the database (`nodes.rs`): each has a node id
//! (kept in its data directory, so a restart is the same node), holds
//! leases on destination lanes and duties, and tells the others (`NOTIFY`)
//! which lanes have work.

mod batch;
mod intents;
mod nodes;
mod rows;
// Self-contained (no `crate::` imports): tests/e2e/common includes it too.
#[cfg(test)]
mod pg_cluster;
#[cfg(test)]
pub(super) mod test_cluster;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::crypto::SecretBox;
use super::StoreError;
use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// The schema, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("src/store/postgres/migrations");

/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the health probe runs (`/readyz`, and the size metric).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Why storage answers `Unavailable` while the database cannot be reached.
pub(super) const UNREACHABLE: &str =
    "the PostgreSQL database cannot be reached; Krafter reconnects by itself";

/// The open PostgreSQL store.
pub(super) struct PgStore {
    pool: PgPool,
    metrics: Arc<Metrics>,
    secrets: SecretBox,
    dir: PathBuf,
    state: Arc<ProbeState>,
    /// The ingest batcher (see `batch`).
    ingester: batch::Ingester,
    /// This process among the nodes sharing the database (lease owner).
    node: Uuid,
    identity: nodes::NodeIdentity,
    announcer: Arc<nodes::Announcer>,
}

/// What the background probe last saw, and the stop signal of the
/// store's background tasks.
struct ProbeState {
    healthy: AtomicBool,
    size_bytes: AtomicU64,
    stop: CancellationToken,
}

impl PgStore {
    /// Connects, applies the embedded migrations (under sqlx's advisory
    /// lock) and opens the pool. Must be called inside a Tokio runtime; the
    /// migration runs on a helper thread, so this works on any runtime
    /// flavour and blocks the caller only for the start-up.
    pub(super) fn open(
        config: &StorageConfig,
        metrics: Arc<Metrics>,
    ) -> Result<PgStore, StoreError> {
        let pg = &config.postgres;
        let options = PgConnectOptions::from_str(&pg.url)
            .map_err(|e| StoreError::Backend(format!("storage.postgres.url: {e}").into()))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Backend("the PostgreSQL store must be opened inside a Tokio runtime".into())
        })?;
        super::redb::create_private_dir(&config.path)?;
        let key_path = config.secrets_key_path();
        let secrets = SecretBox::load_or_create(&key_path)?;
        let stored_check = migrate(options.clone(), secrets.seal(nodes::check_plaintext()))?;
        if secrets.open(&stored_check).ok().as_deref() != Some(nodes::check_plaintext()) {
            return Err(StoreError::Backend(
                format!(
                    "the secrets key {} does not open the secrets this database holds: every \
                     node of one database must use the same key (copy the first node's \
                     storage.secrets_key_file)",
                    key_path.display()
                )
                .into(),
            ));
        }
        let _entered = runtime.enter();
        let pool = PgPoolOptions::new()
            .max_connections(pg.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let state = Arc::new(ProbeState {
            healthy: AtomicBool::new(true),
            size_bytes: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        runtime.spawn(probe(pool.clone(), state.clone()));
        let ingester = batch::Ingester::start(&runtime, pool.clone(), metrics.clone());
        let identity = nodes::NodeIdentity::take(&config.path)?;
        let node = identity.id;
        let announcer = nodes::Announcer::start(&pool, node, state.clone(), &runtime);
        Ok(PgStore {
            ingester,
            pool,
            metrics,
            secrets,
            dir: config.path.clone(),
            state,
            node,
            identity,
            announcer,
        })
    }

    /// PostgreSQL data is backed up with `pg_dump`, not by Krafter.
    pub(super) fn backup_to(&self, _dest: &Path) -> Result<u64, StoreError> {
        Err(StoreError::NotSupported(
            "backups of a PostgreSQL store are made with pg_dump (or the database's own replication)",
        ))
    }

    /// Seals a secret for storage.
    pub(super) fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.secrets.seal(plaintext)
    }

    /// Opens a sealed secret.
    pub(super) fn open_secret(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.secrets.open(sealed)
    }

    /// The data directory (the secrets key and the bootstrap key file).
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database's size as of the last probe, for metrics.
    pub(super) fn size_bytes(&self) -> u64 {
        self.state.size_bytes.load(Ordering::Relaxed)
    }

    /// False while the last probe could not reach the database.
    pub(super) fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::SeqCst)
    }

    /// Writes the ingests queued, then stops the background tasks and
    /// closes every connection.
    pub(super) async fn close(&self) {
        self.ingester.stop().await;
        self.state.stop.cancel();
        self.pool.close().await;
        self.identity.release();
    }
}

/// Applies the embedded migrations over one connection of its own, on a
/// helper thread with its own runtime (the caller may be a current-thread
/// runtime that must not be blocked from inside). Then stores
/// `sealed_check` unless the first node stored one, and answers the stored
/// one (this node's key must open it).
fn migrate(options: PgConnectOptions, sealed_check: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let run = move || -> Result<Vec<u8>, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("starting the migration runtime", e))?;
        runtime.block_on(async move {
            let mut conn = PgConnection::connect_with(&options).await.map_err(|e| {
                StoreError::Backend(format!("connecting to PostgreSQL: {e}").into())
            })?;
            let applied = MIGRATOR.run(&mut conn).await.map_err(|e| match e {
                sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Backend(
                    format!(
                        "the database's schema is newer than this Krafter (it has migration \
                         {version}, which this release does not know): run the newer Krafter"
                    )
                    .into(),
                ),
                other => {
                    StoreError::Backend(format!("migrating the PostgreSQL schema: {other}").into())
                }
            });
            let checked = match applied {
                Ok(_) => nodes::secrets_check(&mut conn, sealed_check).await,
                Err(e) => Err(e),
            };
            // Closing politely is best effort; the result that matters is
            // the migration's.
            let _ = conn.close().await;
            checked
        })
    };
    std::thread::Builder::new()
        .name("krafter-pg-migrate".into())
        .spawn(run)
        .map_err(|e| StoreError::io("starting the migration thread", e))?
        .join()
        .map_err(|_| StoreError::Backend("the schema migration panicked".into()))?
}

/// Probes the database every [`PROBE_EVERY`] until the store closes:
/// `/readyz` reads the result, and the size metric comes with it.
async fn probe(pool: PgPool, state: Arc<ProbeState>) {
    let mut ticks: u64 = 0;
    while !state.stop.is_cancelled() {
        let ok = sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
            .fetch_one(&pool)
            .await;
        match ok {
            Ok(size) => {
                state.healthy.store(true, Ordering::SeqCst);
                if ticks.is_multiple_of(15) {
                    state
                        .size_bytes
                        .store(u64::try_from(size).unwrap_or(0), Ordering::Relaxed);
                }
            }
            Err(e) => {
                if state.healthy.swap(false, Ordering::SeqCst) {
                    tracing::warn!(error = %e, "PostgreSQL is unreachable");
                }
            }
        }
        ticks += 1;
        tokio::select! {
            _ = state.stop.cancelled() => break,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// Maps a client error: connection trouble is `Unavailable` (the caller
/// may retry; the API answers 503), anything else the engine's failure.
/// The server ending a connection (an administrator, a shutdown, a crash:
/// SQLSTATE class 08 and 57P01–57P03) is connection trouble too.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(UNREACHABLE),
        sqlx::Error::Database(db) if is_connection_loss(db.code().as_deref()) => {
            StoreError::Unavailable(UNREACHABLE)
        }
        other => StoreError::Backend(Box::new(other)),
    }
}

/// SQLSTATEs meaning the connection (or the server) went away.
fn is_connection_loss(code: Option<&str>) -> bool {
    match code {
        Some(code) => code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03"),
        None => false,
    }
}

/// Whether `e` is a unique-constraint violation (a taken slug, a duplicate
/// provider event id).
pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sqlx::{Connection, PgConnection};

    use super::test_cluster::scratch_database;
    use super::MIGRATOR;
    use crate::metrics::Metrics;
    use crate::store::{Store, StoreError};

    #[tokio::test]
    async fn backups_are_left_to_pg_dump() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let store = Store::open(&config, Arc::new(Metrics::new())).unwrap();
        assert!(store.is_healthy());
        let dest = config.path.join("backup.redb");
        match store.backup_to(&dest) {
            Err(StoreError::NotSupported(why)) => assert!(why.contains("pg_dump"), "{why}"),
            other => panic!("expected NotSupported, got {:?}", other.map(|_| ())),
        }
        assert!(!dest.exists());
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_at_once_migrate_once_and_an_older_node_refuses() {
        let Some((_guard, config)) = scratch_database().await else {
            return;
        };
        let (a, b) = (config.clone(), config.clone());
        let (one, two) = tokio::join!(
            tokio::task::spawn_blocking(move || Store::open(&a, Arc::new(Metrics::new()))),
            tokio::task::spawn_blocking(move || Store::open(&b, Arc::new(Metrics::new()))),
        );
        let (one, two) = (one.unwrap().unwrap(), two.unwrap().unwrap());
        let mut conn = PgConnection::connect(&config.postgres.url).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(applied as usize, MIGRATOR.iter().count());
        assert_eq!(one.count_api_keys().await.unwrap(), 0);
        assert_eq!(two.count_api_keys().await.unwrap(), 0);
        one.close().await;
        two.close().await;

        // A later release migrated this database: this one must not run
        // on a schema it does not know.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from a later release', true, '\\x00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let refused = Store::open(&config, Arc::new(Metrics::new()));
        match refused {
            Err(e) => assert!(e.to_string().contains("newer than this Krafter"), "{e}"),
            Ok(_) => panic!("a node older than the schema started"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_the_start_clearly() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::StorageConfig {
            backend: crate::config::StorageBackend::Postgres,
            path: dir.path().join("data"),
            postgres: crate::config::PostgresConfig {
                url: format!("postgres://krafter@127.0.0.1:{port}/krafter"),
                max_connections: 2,
            },
            ..crate::config::StorageConfig::default()
        };
        match Store::open(&config, Arc::new(Metrics::new())) {
            Err(e) => assert!(e.to_string().contains("connecting to PostgreSQL"), "{e}"),
            Ok(_) => panic!("opened a store with no database behind it"),
        }
    }
}
