//! A PostgreSQL storage configuration for the unit tests: a fresh database
//! per test (see [`pg_cluster`](super::pg_cluster), shared with the
//! end-to-end suite) and a temp data directory for the secrets key. With
//! no PostgreSQL the tests print a loud skip line and pass — unless
//! `KRAFTER_REQUIRE_POSTGRES=1`, when they fail.

use super::pg_cluster::{self, ScratchDatabase};
use crate::config::{PostgresConfig, StorageBackend, StorageConfig};

/// The scratch database's guard: its data directory (the secrets key) and
/// the database itself.
pub(crate) struct ScratchDb {
    _dir: tempfile::TempDir,
    _database: ScratchDatabase,
}

/// A fresh, empty database and a storage configuration pointing at it (and
/// at a temp data directory for the secrets key); `None` when PostgreSQL
/// cannot be had and it is not required.
pub(crate) async fn scratch_database() -> Option<(ScratchDb, StorageConfig)> {
    let database = match pg_cluster::scratch_database() {
        Ok(database) => database,
        Err(why) if pg_cluster::postgres_required() => {
            panic!("KRAFTER_REQUIRE_POSTGRES=1 but no PostgreSQL for the tests: {why}")
        }
        Err(why) => {
            pg_cluster::announce_skip(&why);
            return None;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        backend: StorageBackend::Postgres,
        path: dir.path().join("data"),
        postgres: PostgresConfig {
            url: database.url().to_string(),
            max_connections: 8,
        },
        ..StorageConfig::default()
    };
    let guard = ScratchDb {
        _dir: dir,
        _database: database,
    };
    Some((guard, config))
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgConnection};

    use super::pg_cluster::{self, DedicatedCluster};

    /// What the multi-node tests rely on: a dedicated cluster stopped as a
    /// crash would refuses connections, and started again has everything
    /// committed before the stop.
    #[tokio::test]
    async fn a_dedicated_cluster_stops_at_once_and_comes_back_with_its_data() {
        let cluster = match DedicatedCluster::new() {
            Ok(cluster) => cluster,
            Err(why) if pg_cluster::postgres_required() => panic!("{why}"),
            Err(why) => return pg_cluster::announce_skip(&why),
        };
        let mut conn = PgConnection::connect(&cluster.url()).await.unwrap();
        sqlx::query("CREATE TABLE kept (n int)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept VALUES (7)")
            .execute(&mut conn)
            .await
            .unwrap();
        cluster.stop_immediate().unwrap();
        assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
        assert!(PgConnection::connect(&cluster.url()).await.is_err());
        cluster.start().unwrap();
        let mut conn = PgConnection::connect(&cluster.url()).await.unwrap();
        let n: i32 = sqlx::query_scalar("SELECT n FROM kept")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 7);
        conn.close().await.unwrap();
    }
}
