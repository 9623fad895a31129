//! PostgreSQL for the tests, shared by the unit tests (through
//! `test_cluster`) and the end-to-end suite (`tests/e2e/common`, which
//! includes this very file with `#[path]`). It therefore imports nothing
//! from the crate: only std, sqlx, tokio, url and libc.
//!
//! Two kinds of cluster:
//!
//! - The **shared** one ([`scratch_database`]): the cluster named by
//!   `KRAFTER_TEST_POSTGRES_URL`, or else one private cluster per test
//!   process, started from the PostgreSQL binaries (on `PATH`, else
//!   Debian's `/usr/lib/postgresql/*/bin`) in a temp dir, as the `postgres`
//!   user when running as root (PostgreSQL refuses root), on 127.0.0.1 only.
//!   Each test gets a fresh database on it. A watchdog shell stops the
//!   private cluster and removes its directory once the test process is
//!   gone, however it ended.
//! - A **dedicated** one ([`DedicatedCluster`]): a private cluster of its
//!   own (data dir, port) for a test that must take PostgreSQL away and
//!   bring it back (`pg_ctl -m immediate stop`, then `start`).
//!
//! Without PostgreSQL, [`scratch_database`] answers why; the caller decides
//! whether that is a skip or a failure ([`postgres_required`]).

// Each includer uses part of this file.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use sqlx::{Connection, PgConnection};

/// Whether the tests must fail rather than skip without PostgreSQL
/// (`KRAFTER_REQUIRE_POSTGRES=1`, as CI sets it).
pub fn postgres_required() -> bool {
    std::env::var("KRAFTER_REQUIRE_POSTGRES").as_deref() == Ok("1")
}

/// A fresh, empty database on the shared cluster; dropped with the guard on
/// an external cluster (a private one goes away whole with the process).
pub struct ScratchDatabase {
    url: String,
    drop_on_exit: Option<(String, String)>,
}

impl ScratchDatabase {
    /// `postgres://…/krafter_test_…`: the scratch database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Whoever used the database has closed its pool by now; `FORCE`
        // ends any connection left over.
        let Some((admin_url, name)) = self.drop_on_exit.take() else {
            return;
        };
        let dropped = on_own_runtime(move || async move {
            let mut conn = PgConnection::connect(&admin_url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        });
        if let Err(why) = dropped {
            eprintln!("note: the scratch database could not be dropped: {why}");
        }
    }
}

/// A fresh, empty database on the shared cluster, or why there is none
/// (no URL and no PostgreSQL binaries, or the cluster would not start).
/// Blocking (it runs on a thread of its own), so it serves `#[test]` and
/// `#[tokio::test]` functions alike.
///
/// # Panics
/// When the cluster is there but refuses to create a database: that is
/// a broken test setup, not a missing PostgreSQL.
pub fn scratch_database() -> Result<ScratchDatabase, String> {
    let admin_url = shared_cluster()?.to_string();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "krafter_test_{}_{}_{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    );
    let (admin, create) = (admin_url.clone(), name.clone());
    on_own_runtime(move || async move {
        let mut conn = PgConnection::connect(&admin)
            .await
            .map_err(|e| format!("connecting to the test cluster: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {create}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("creating a scratch database: {e}"))?;
        conn.close().await.map_err(|e| e.to_string())
    })
    .unwrap_or_else(|why| panic!("{why}"));
    let mut url = url::Url::parse(&admin_url).expect("the test cluster URL parses");
    url.set_path(&name);
    Ok(ScratchDatabase {
        url: url.to_string(),
        drop_on_exit: external_url().map(|_| (admin_url, name)),
    })
}

/// Says once per process, past the test harness's output capture, that
/// the PostgreSQL tests did not run, and why.
pub fn announce_skip(why: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let line = format!(
            "\n*** SKIPPED: the PostgreSQL storage tests did not run ({why}). Install PostgreSQL \
             or set KRAFTER_TEST_POSTGRES_URL; KRAFTER_REQUIRE_POSTGRES=1 makes this a failure. ***\n\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
}

/// The admin URL of the shared cluster (started on first use), or why
/// there is none.
pub fn shared_cluster() -> Result<&'static str, String> {
    static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| match external_url() {
            Some(url) => Ok(url),
            None => Cluster::create().and_then(|mut cluster| {
                cluster.first_start()?;
                // Lives as long as the process; the watchdog cleans up.
                let url = cluster.url();
                std::mem::forget(cluster);
                Ok(url)
            }),
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn external_url() -> Option<String> {
    std::env::var("KRAFTER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A private PostgreSQL cluster of one test's own: its own data directory
/// and port on 127.0.0.1, superuser `postgres` with trust authentication.
/// [`DedicatedCluster::stop_immediate`] stops it as a crash would
/// (`pg_ctl -m immediate`: no checkpoint, connections cut);
/// [`DedicatedCluster::start`] brings it back on the same port, with
/// everything committed before the stop. Dropping it stops it and removes
/// its directory (a watchdog does so too if the test process dies).
///
/// Use it only for tests that take the database away; everything else
/// takes a [`scratch_database`] on the shared cluster, which is cheaper
/// (initdb takes a second or two).
pub struct DedicatedCluster(Cluster);

impl DedicatedCluster {
    /// initdb and start a new cluster; `Err` says why not (no PostgreSQL
    /// binaries, initdb or pg_ctl failed).
    pub fn new() -> Result<DedicatedCluster, String> {
        let mut cluster = Cluster::create()?;
        cluster.first_start()?;
        Ok(DedicatedCluster(cluster))
    }

    /// Like [`DedicatedCluster::new`], but accepting TCP connections over
    /// TLS only (`hostssl` in pg_hba.conf), with this certificate and key
    /// (PEM): a client that does not speak TLS, or does not trust the
    /// certificate, cannot connect.
    pub fn new_tls_only(cert_pem: &str, key_pem: &str) -> Result<DedicatedCluster, String> {
        let mut cluster = Cluster::create()?;
        let write = |name: &str, contents: &str| -> Result<(), String> {
            let path = cluster.data.join(name);
            std::fs::write(&path, contents).map_err(|e| format!("writing {name}: {e}"))?;
            let mut chmod = Command::new("chmod");
            chmod.arg("600").arg(&path);
            run(chmod, "chmod of a TLS file")?;
            if running_as_root() {
                let mut chown = Command::new("chown");
                chown.arg("postgres:postgres").arg(&path);
                run(chown, "chown of a TLS file to postgres")?;
            }
            Ok(())
        };
        write("server.crt", cert_pem)?;
        write("server.key", key_pem)?;
        write(
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )?;
        cluster.options = "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".into();
        cluster.first_start()?;
        Ok(DedicatedCluster(cluster))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (the cluster's
    /// default database; the whole cluster is this test's own).
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// Stops the cluster at once, as a crash would.
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.0.stop_immediate()
    }

    /// Starts the stopped cluster again on its port; returns once it
    /// accepts connections (after crash recovery).
    pub fn start(&self) -> Result<(), String> {
        self.0.start()
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        if self.0.data.join("postmaster.pid").exists() {
            let _ = self.0.stop_immediate();
        }
        let _ = std::fs::remove_dir_all(&self.0.root);
    }
}

/// One initdb'ed cluster directory, its port and its pg_ctl.
struct Cluster {
    root: PathBuf,
    data: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    /// More server options (`-c name=value …`).
    options: String,
}

impl Cluster {
    /// initdb in a fresh temp dir (owned by `postgres` when we are root),
    /// watched, not started; its port is chosen now.
    fn create() -> Result<Cluster, String> {
        let initdb = pg_program("initdb").ok_or("no initdb on PATH or in /usr/lib/postgresql")?;
        let pg_ctl = pg_program("pg_ctl").ok_or("no pg_ctl on PATH or in /usr/lib/postgresql")?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "krafter-pg-{}-{}-{:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let data = root.join("data");
        watchdog(&root, &data, &pg_ctl);
        if running_as_root() {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(&root);
            run(chown, "chown of the cluster directory to postgres")?;
        }
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
        Ok(Cluster {
            root,
            data,
            port: free_port()?,
            pg_ctl,
            options: String::new(),
        })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The first start: retried a few times on a fresh port, as the one
    /// chosen may have been taken meanwhile.
    fn first_start(&mut self) -> Result<(), String> {
        let mut last_error = String::new();
        for _ in 0..5 {
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            self.port = free_port()?;
        }
        Err(last_error)
    }

    /// `pg_ctl start` on this cluster's port; waits until it is ready.
    fn start(&self) -> Result<(), String> {
        let mut start = as_postgres(&self.pg_ctl);
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("postgres.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
                 -c fsync=off -c max_connections=200 {}",
                self.port,
                self.root.display(),
                self.options
            ))
            .arg("start")
            .current_dir(&self.root);
        run(start, "pg_ctl start")
    }

    fn stop_immediate(&self) -> Result<(), String> {
        let mut stop = as_postgres(&self.pg_ctl);
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(&self.root);
        run(stop, "pg_ctl stop -m immediate")
    }
}

/// Runs `work` to completion on a current-thread runtime of a thread of its
/// own, so a caller inside or outside a runtime may block on it.
fn on_own_runtime<F, Fut>(work: F) -> Result<(), String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime: {e}"))?
            .block_on(work())
    })
    .join()
    .unwrap_or_else(|_| Err("the helper thread panicked".to_string()))
}

/// A PostgreSQL program: on `PATH`, else in Debian's versioned directory
/// (newest version first).
pub fn pg_program(name: &str) -> Option<PathBuf> {
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

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program`, run as the `postgres` user when we are root.
pub fn as_postgres(program: &Path) -> Command {
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

/// Stops the cluster and removes its directory once this process is gone,
/// from a shell in its own session (it outlives a killed test run).
pub fn watchdog(root: &Path, data: &Path, pg_ctl: &Path) {
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
