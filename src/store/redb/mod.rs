//! The redb backend: one file, written only by the group-commit writer.
//!
//! Reads go straight to redb (MVCC, never blocked by the writer) and must
//! not hold a transaction across network I/O: the helpers here copy records
//! out and drop the transaction before returning.

mod api_keys;
mod audit;
mod backup;
mod deliveries;
mod destinations;
mod events;
#[cfg(test)]
mod fixtures;
mod hot;
mod intents;
mod overview;
pub(super) mod records;
mod replays;
mod retention;
mod sessions;
mod sources;
mod tables;
mod test_events;
mod wal;
mod writer;

use crate::model::ids::SourceId;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

pub(super) use backup::restore;
use writer::{Writer, WriterLimits, WriterSetup};

use super::crypto::SecretBox;
use super::{Page, StoreError};
use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// Name of the database file inside `storage.path`.
pub const DB_FILE: &str = "krafter.redb";

/// The open redb store: one database and one writer.
pub(super) struct RedbStore {
    db: Arc<DbSlot>,
    writer: Writer,
    secrets: SecretBox,
    dir: PathBuf,
    healthy: Arc<AtomicBool>,
}

impl RedbStore {
    /// Opens (creating on first start) the data directory and database and
    /// starts the writer. Fails with [`StoreError::InUse`] when another
    /// process holds the file.
    pub(super) fn open(
        config: &StorageConfig,
        metrics: Arc<Metrics>,
    ) -> Result<RedbStore, StoreError> {
        let dir = config.path.clone();
        create_private_dir(&dir)?;
        let file = dir.join(DB_FILE);
        create_private_file(&file)?;
        let db = Arc::new(DbSlot::open(file, config.cache_size_bytes)?);
        let secrets = SecretBox::load_or_create(&config.secrets_key_path())?;
        let healthy = Arc::new(AtomicBool::new(true));
        let limits = WriterLimits {
            max_batch_ops: config.max_batch_ops,
            max_batch_bytes: 8 * 1024 * 1024,
            queue_capacity: config.queue_capacity,
            quick_repair: config.quick_repair,
            enqueue_timeout: Duration::from_secs(5),
        };
        // Bring the database forward through whatever the log holds past
        // its last checkpoint (events acknowledged before a crash) before
        // anyone reads it.
        let wal_dir = dir.join(wal::WAL_DIR);
        let started = std::time::Instant::now();
        let checkpoint = applied_lsn(&*db.get()?)?;
        let mut log = wal::Wal::open(&wal_dir, checkpoint)?;
        let replayer: writer::Replayer = Arc::new(|tables, record| tables.replay_logged(record));
        let applied = writer::catch_up(&*db.get()?, &wal_dir, checkpoint, u64::MAX, &replayer)?;
        if applied > checkpoint {
            tracing::warn!(
                records = applied - checkpoint,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "applied the write-ahead log after an unclean stop"
            );
        }
        log.retire_through(applied);
        let writer = Writer::start(WriterSetup {
            db: db.clone(),
            wal: log,
            wal_dir,
            applied_lsn: applied,
            replayer,
            limits,
            healthy: healthy.clone(),
            metrics,
        });
        Ok(RedbStore {
            db,
            writer,
            secrets,
            dir,
            healthy,
        })
    }

    /// Runs `f` in the next group commit; see [`writer::Writer::write`] for
    /// the contract `f` must keep. Answers after the commit is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(0, f).await
    }

    /// Like [`Store::write`], telling the writer roughly how many bytes the
    /// operation adds so large bodies close a batch sooner.
    async fn write_sized<T, F>(&self, size_hint: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(size_hint, f).await
    }

    /// Runs `f` over a fresh read snapshot; the snapshot is dropped when `f`
    /// returns, so `f` must copy out what it needs.
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        read_with(&self.db, &self.healthy, f)
    }

    /// Writes a consistent backup (one snapshot, plus the secrets key) to
    /// `dest`, a path that must not exist. Blocking: call off the async
    /// threads.
    pub(super) fn backup_to(&self, dest: &Path) -> Result<u64, StoreError> {
        let db = self.db.get()?;
        let snapshot = db.begin_read()?;
        backup::write_backup(&snapshot, self.secrets.key_bytes(), dest)
    }

    /// Seals a secret for storage.
    pub(super) fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.secrets.seal(plaintext)
    }

    /// Opens a sealed secret.
    pub(super) fn open_secret(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.secrets.open(sealed)
    }

    /// The data directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Size of the database file, for metrics.
    pub(super) fn file_size(&self) -> u64 {
        std::fs::metadata(self.dir.join(DB_FILE))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// See [`writer::Writer::settings_version`].
    pub(super) fn settings_version(&self) -> u64 {
        self.writer.settings_version()
    }

    /// False from a failed commit until the writer has reopened the file
    /// and written to it again, and while the write-ahead log cannot be
    /// appended to; `/readyz` reports it.
    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst) && self.writer.log_healthy()
    }

    /// Commits queued writes and stops the writer.
    pub(super) async fn close(&self) {
        self.writer.stop().await;
    }
}

/// A read snapshot of the current database, for callers that hold the
/// pieces rather than the store (blocking tasks).
fn read_with<T>(
    db: &DbSlot,
    healthy: &AtomicBool,
    f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let unhealthy = |e: StoreError| match e {
        // After a failed commit redb fails reads too until the file is
        // reopened; callers get `Unavailable` (503), not an internal error.
        StoreError::Backend(_) if !healthy.load(Ordering::SeqCst) => {
            StoreError::Unavailable(RECOVERING)
        }
        other => other,
    };
    let db = db.get()?;
    let txn = db.begin_read().map_err(|e| unhealthy(e.into()))?;
    f(&txn).map_err(unhealthy)
}

/// The last write-ahead log record the database holds durably (0 for a
/// new or restored database).
fn applied_lsn(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    match txn.open_table(tables::WAL_STATE) {
        Ok(table) => Ok(table.get(tables::APPLIED_LSN)?.map_or(0, |v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Creates the data directory 0700. One that exists keeps its mode (the
/// operator chose it), with a warning when others may read it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dir) {
        if meta.is_dir() {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %dir.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the data directory is open to other users; it holds secrets (chmod 700 it)"
                );
            }
            return Ok(());
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))
}

/// Why storage answers `Unavailable` between a failed commit and the
/// writer's successful reopen.
const RECOVERING: &str = "a write failed (disk full or an I/O error); Krafter is reopening the database and retries by itself";

/// The open database. A failed commit latches redb into refusing every
/// later operation, so the writer swaps in a fresh handle (see
/// [`DbSlot::reopen`]); everyone else takes the current one per operation.
pub(crate) struct DbSlot {
    current: std::sync::RwLock<Option<Arc<Database>>>,
    file: PathBuf,
    cache_size: usize,
}

impl DbSlot {
    fn open(file: PathBuf, cache_size: usize) -> Result<DbSlot, StoreError> {
        let db = open_database(&file, cache_size)?;
        create_tables(&db)?;
        Ok(DbSlot {
            current: std::sync::RwLock::new(Some(Arc::new(db))),
            file,
            cache_size,
        })
    }

    /// The current database; `Unavailable` while it is being reopened.
    pub(crate) fn get(&self) -> Result<Arc<Database>, StoreError> {
        let current = match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        current.ok_or(StoreError::Unavailable(RECOVERING))
    }

    /// Closes the broken handle and opens the file again (redb repairs it
    /// as after a crash), then proves it writable with one small commit.
    /// Blocking; called only by the writer thread.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let old = match self.current.write() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(old) = old {
            // redb holds a lock on the file: the old handle must be gone
            // before the file can be opened again. Readers drop theirs
            // within one operation.
            let waited = std::time::Instant::now();
            while Arc::strong_count(&old) > 1 && waited.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(old);
        }
        let db = open_database(&self.file, self.cache_size)?;
        create_tables(&db)?;
        let txn = db.begin_write()?;
        txn.open_table(tables::HEALTH)?
            .insert("probe", crate::model::time::now_ms())?;
        txn.commit()?;
        match self.current.write() {
            Ok(mut guard) => *guard = Some(Arc::new(db)),
            Err(poisoned) => *poisoned.into_inner() = Some(Arc::new(db)),
        }
        Ok(())
    }
}

fn open_database(file: &Path, cache_size: usize) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(cache_size)
        .create(file)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::InUse(file.display().to_string())
            }
            other => StoreError::from(redb::Error::from(other)),
        })
}

/// Creates `file` 0600 (whatever the umask) when it does not exist yet, so
/// redb opens a file only its owner can read instead of making a 0644 one.
pub(crate) fn create_private_file(file: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(format!("creating {}", file.display()), e)),
    }
}

/// Creates every table up front so readers never meet a missing table.
fn create_tables(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(tables::API_KEYS)?;
    txn.open_table(tables::API_KEY_HASHES)?;
    txn.open_table(tables::SOURCES)?;
    txn.open_table(tables::SOURCE_SLUGS)?;
    txn.open_table(tables::DESTINATIONS)?;
    txn.open_table(tables::EVENTS)?;
    txn.open_table(tables::SOURCE_EVENTS)?;
    txn.open_table(tables::DEDUP)?;
    txn.open_table(tables::DELIVERIES)?;
    txn.open_table(tables::EVENT_DELIVERIES)?;
    txn.open_table(tables::DUE)?;
    txn.open_table(tables::ATTEMPTS)?;
    txn.open_table(tables::DASHBOARD_SESSIONS)?;
    txn.open_table(tables::KEY_SESSIONS)?;
    txn.open_table(tables::HEALTH)?;
    txn.open_table(tables::REPLAYS)?;
    txn.open_table(tables::AUDIT_LOG)?;
    txn.open_table(tables::ALERTS)?;
    txn.open_table(tables::MINUTE_STATS)?;
    txn.open_table(tables::WAL_STATE)?;
    txn.commit()?;
    Ok(())
}

/// Newest-first page over a table keyed by ULID, starting below `before`.
pub(crate) fn page_by_id<T: records::Record>(
    table: &impl ReadableTable<u128, &'static [u8]>,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<T>, StoreError> {
    let range = match before {
        Some(cursor) => table.range(..cursor)?,
        None => table.range::<u128>(..)?,
    };
    let mut items = Vec::with_capacity(limit.min(256));
    let mut last_key = None;
    let mut more = false;
    for entry in range.rev() {
        let (key, value) = entry?;
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(T::decode(value.value())?);
        last_key = Some(key.value());
    }
    Ok(Page {
        items,
        next: if more { last_key } else { None },
    })
}

/// Newest-first page of one source's rows in a table keyed (source id,
/// ULID), starting below `before` (exclusive).
pub(crate) fn page_in_source<T: records::Record>(
    table: &impl ReadableTable<(u128, u128), &'static [u8]>,
    source_id: SourceId,
    before: Option<u128>,
    limit: usize,
) -> Result<Page<T>, StoreError> {
    // With no cursor the range includes u128::MAX (never a real ULID, but
    // keep the bound honest).
    let range = match before {
        Some(cursor) => table.range((source_id.as_u128(), 0)..(source_id.as_u128(), cursor))?,
        None => table.range((source_id.as_u128(), 0)..=(source_id.as_u128(), u128::MAX))?,
    };
    let mut items = Vec::with_capacity(limit.min(256));
    let mut last = None;
    let mut more = false;
    for entry in range.rev() {
        let (key, value) = entry?;
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(T::decode(value.value())?);
        last = Some(key.value().1);
    }
    Ok(Page {
        items,
        next: if more { last } else { None },
    })
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
