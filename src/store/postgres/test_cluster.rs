//! A PostgreSQL for the tests: a fresh database per test, on the cluster
//! named by `KRAFTER_TEST_POSTGRES_URL`, or else on one private cluster
//! per test process, started from the PostgreSQL binaries in a temp dir
//! (as the `postgres` user when running as root: PostgreSQL refuses root),
//! listening on 127.0.0.1 only.
//!
//! The private cluster is stopped and its directory removed by a small
//! watchdog shell once the test process is gone (however it ended). With
//! neither a URL nor the binaries, the PostgreSQL tests print a loud skip
//! line and pass — unless `KRAFTER_REQUIRE_POSTGRES=1`, when they fail.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::{Connection, PgConnection};

use crate::config::{PostgresConfig, StorageBackend, StorageConfig};
use crate::model::ids::new_id;

/// The scratch database's guard: its data directory (the secrets key), and
/// on an external cluster the database to drop afterwards.
pub(crate) struct ScratchDb {
    _dir: tempfile::TempDir,
    drop_on_exit: Option<(String, String)>,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // A private cluster goes away whole; an external one keeps no
        // litter. The store is closed by now (the suite closes it first).
        let Some((admin_url, name)) = self.drop_on_exit.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: the scratch database could not be dropped");
        }
    }
}

/// The admin URL of the cluster the tests use, or why there is none.
fn cluster() -> &'static Result<String, String> {
    static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
    CLUSTER.get_or_init(|| match external_url() {
        Some(url) => Ok(url),
        None => start_private_cluster(),
    })
}

fn external_url() -> Option<String> {
    std::env::var("KRAFTER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh, empty database and a storage configuration pointing at it (and
/// at a temp data directory for the secrets key); `None` when PostgreSQL
/// cannot be had and it is not required.
pub(crate) async fn scratch_database() -> Option<(ScratchDb, StorageConfig)> {
    let admin_url = match cluster() {
        Ok(url) => url.clone(),
        Err(why) => {
            if std::env::var("KRAFTER_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("KRAFTER_REQUIRE_POSTGRES=1 but no PostgreSQL for the tests: {why}");
            }
            announce_skip(why);
            return None;
        }
    };
    let name = format!("krafter_test_{:x}", new_id::<u128>());
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .expect("connect to the test cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a scratch database");
    conn.close().await.expect("close the admin connection");
    let mut url = url::Url::parse(&admin_url).expect("the test cluster URL parses");
    url.set_path(&name);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StorageConfig {
        backend: StorageBackend::Postgres,
        path: dir.path().join("data"),
        postgres: PostgresConfig {
            url: url.to_string(),
            max_connections: 8,
        },
        ..StorageConfig::default()
    };
    let guard = ScratchDb {
        _dir: dir,
        drop_on_exit: external_url().map(|_| (admin_url, name)),
    };
    Some((guard, config))
}

/// Says once per process, past the test harness's output capture, that
/// the PostgreSQL tests did not run.
fn announce_skip(why: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let line = format!(
            "\n*** SKIPPED: the PostgreSQL storage tests did not run ({why}). Install PostgreSQL \
             or set KRAFTER_TEST_POSTGRES_URL; KRAFTER_REQUIRE_POSTGRES=1 makes this a failure. ***\n\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// A PostgreSQL program: on `PATH`, else in Debian's versioned directory
/// (newest version first).
fn pg_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(found) = on_path
        .iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return Some(found);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort_by_key(|p| {
        std::cmp::Reverse(
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    versions
        .into_iter()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program`, run as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

/// initdb + pg_ctl start in a fresh temp dir, on 127.0.0.1 and a free
/// port; answers the admin URL.
fn start_private_cluster() -> Result<String, String> {
    let initdb = pg_program("initdb").ok_or("no initdb on PATH or in /usr/lib/postgresql")?;
    let pg_ctl = pg_program("pg_ctl").ok_or("no pg_ctl on PATH or in /usr/lib/postgresql")?;
    let root = std::env::temp_dir().join(format!(
        "krafter-pg-{}-{:x}",
        std::process::id(),
        new_id::<u128>() as u64
    ));
    std::fs::create_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    watchdog(&root, &pg_ctl);
    if running_as_root() {
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(&root);
        run(chown, "chown of the cluster directory to postgres")?;
    }
    let data = root.join("data");
    let mut init = as_postgres(&initdb);
    init.args([
        "--auth=trust",
        "--no-sync",
        "--username=postgres",
        "--encoding=UTF8",
        "--locale=C",
        "-D",
    ])
    .arg(&data)
    .current_dir(&root);
    run(init, "initdb")?;
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let mut start = as_postgres(&pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.join("postgres.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
                 -c fsync=off -c max_connections=200",
                root.display()
            ))
            .arg("start")
            .current_dir(&root);
        match run(start, "pg_ctl start") {
            Ok(()) => return Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            // Most likely the port was taken meanwhile: try another.
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Stops the cluster and removes its directory once this process is gone,
/// from a shell in its own session (it outlives a killed test run).
fn watchdog(root: &Path, pg_ctl: &Path) {
    let data = root.join("data");
    let stop = format!(
        "{}'{}' -D '{}' -m immediate stop",
        if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl.display(),
        data.display()
    );
    let script = format!(
        "cd /; while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ -f '{data}/postmaster.pid' ]; then {stop} >/dev/null 2>&1; fi; rm -rf '{root}'",
        pid = std::process::id(),
        data = data.display(),
        root = root.display(),
    );
    let spawned = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if spawned.is_err() {
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}
