//! Consistent backups while the server runs, and restoring them offline.
//!
//! redb allows one process per file, so a backup cannot be taken by copying
//! the file under a running server. Instead every table is copied from one
//! read snapshot (MVCC: writers carry on) into a fresh redb file. The
//! backup also holds the data directory's `secrets.key`, without which the
//! sealed signing secrets could not be opened after a restore — so a backup
//! file must be protected like the data directory itself.

use std::path::Path;

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value,
    WriteTransaction,
};

use super::tables::*;
use super::{StoreError, DB_FILE};

/// Backup-only table: `secrets_key` → the 32-byte key of `secrets.key`.
const BACKUP_META: TableDefinition<&str, &[u8]> = TableDefinition::new("backup_meta");
const SECRETS_KEY: &str = "secrets_key";

/// Copies one table.
fn copy<K: Key + 'static, V: Value + 'static>(
    def: TableDefinition<K, V>,
    from: &ReadTransaction,
    to: &WriteTransaction,
) -> Result<u64, StoreError> {
    let source = from.open_table(def)?;
    let mut target = to.open_table(def)?;
    let mut n = 0;
    for entry in source.iter()? {
        let (k, v) = entry?;
        target.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Every table a backup carries. A test checks this covers every table
/// the store creates, so a new table cannot be silently left out.
fn copy_all(from: &ReadTransaction, to: &WriteTransaction) -> Result<u64, StoreError> {
    Ok(copy(API_KEYS, from, to)?
        + copy(API_KEY_HASHES, from, to)?
        + copy(SOURCES, from, to)?
        + copy(SOURCE_SLUGS, from, to)?
        + copy(DESTINATIONS, from, to)?
        + copy(EVENTS, from, to)?
        + copy(SOURCE_EVENTS, from, to)?
        + copy(DEDUP, from, to)?
        + copy(DELIVERIES, from, to)?
        + copy(EVENT_DELIVERIES, from, to)?
        + copy(DUE, from, to)?
        + copy(ATTEMPTS, from, to)?
        // A running job resumes after a restore, from the snapshot's cursor.
        + copy(REPLAYS, from, to)?
        // Who changed what survives a restore.
        + copy(AUDIT_LOG, from, to)?
        // Alerts not yet sent are still sent after a restore.
        + copy(ALERTS, from, to)?
        // The overview's charts survive a restore.
        + copy(MINUTE_STATS, from, to)?)
}

/// Tables deliberately not backed up (sessions of the dashboard: a
/// restored server signs everyone out; the writer's health probe; the
/// write-ahead log position, which belongs to the running server's log).
#[cfg(test)]
const NOT_BACKED_UP: &[&str] = &[
    "dashboard_sessions",
    "dashboard_key_sessions",
    "health",
    "wal_state",
];

/// Writes a consistent snapshot of `snapshot` (one read transaction) and
/// the secrets key into a new database file at `dest`. Returns rows copied.
pub fn write_backup(
    snapshot: &ReadTransaction,
    secrets_key: &[u8],
    dest: &Path,
) -> Result<u64, StoreError> {
    super::create_private_file(dest)?;
    let db = Database::builder()
        .set_cache_size(16 * 1024 * 1024)
        .create(dest)
        .map_err(|e| StoreError::from(redb::Error::from(e)))?;
    let txn = db.begin_write()?;
    let rows = copy_all(snapshot, &txn)?;
    txn.open_table(BACKUP_META)?
        .insert(SECRETS_KEY, secrets_key)?;
    txn.commit()?;
    Ok(rows)
}

/// Restores a backup into an empty data directory (the server stopped):
/// writes `krafter.redb` and `secrets.key`. Refuses to overwrite.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<u64, StoreError> {
    let target = data_dir.join(DB_FILE);
    let key_path = data_dir.join("secrets.key");
    // A write-ahead log left there would be replayed into the restored
    // database at the next start.
    let log = data_dir.join(super::wal::WAL_DIR);
    if target.exists() || key_path.exists() || log.exists() {
        return Err(StoreError::Conflict(format!(
            "{} already holds a database; restore into an empty data directory",
            data_dir.display()
        )));
    }
    let source = Database::builder()
        .set_cache_size(16 * 1024 * 1024)
        .open(backup)
        .map_err(|e| {
            StoreError::Corrupt(format!("{} is not a Krafter backup: {e}", backup.display()))
        })?;
    let from = source.begin_read()?;
    let key = from
        .open_table(BACKUP_META)
        .map_err(|_| StoreError::Corrupt(format!("{} is not a Krafter backup", backup.display())))?
        .get(SECRETS_KEY)?
        .map(|v| v.value().to_vec())
        .ok_or_else(|| StoreError::Corrupt("the backup holds no secrets key".into()))?;
    super::create_private_dir(data_dir)?;
    super::create_private_file(&target)?;
    let db = Database::builder()
        .create(&target)
        .map_err(|e| StoreError::from(redb::Error::from(e)))?;
    let txn = db.begin_write()?;
    let rows = copy_all(&from, &txn)?;
    txn.commit()?;
    crate::store::crypto::write_private_file(&key_path, &key)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::TableHandle;

    use super::*;
    use crate::config::StorageConfig;
    use crate::metrics::Metrics;
    use crate::store::redb::RedbStore as Store;

    /// A table added to the store must be backed up or listed as not.
    #[tokio::test]
    async fn a_backup_carries_every_table_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            path: dir.path().join("data"),
            ..StorageConfig::default()
        };
        let store = Store::open(&config, Arc::new(Metrics::new())).unwrap();
        let live: Vec<String> = store
            .read(|txn| Ok(txn.list_tables()?.map(|t| t.name().to_string()).collect()))
            .unwrap();
        let dest = dir.path().join("backup.redb");
        store.backup_to(&dest).unwrap();
        store.close().await;
        let backup = Database::open(&dest).unwrap();
        let txn = backup.begin_read().unwrap();
        let copied: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        for table in &live {
            assert!(
                copied.contains(table) || NOT_BACKED_UP.contains(&table.as_str()),
                "table {table} is not in backups; add it to copy_all or NOT_BACKED_UP"
            );
        }
        assert!(copied.contains(&"backup_meta".to_string()));
    }
}
