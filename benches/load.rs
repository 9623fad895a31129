//! Load tool: drives the real release server over loopback.
//!
//! `cargo bench --bench load -- [--scenario ingest|fanout|backlog|events|breakdown|recovery] [--connections 64] [--seconds 10] [--body-bytes 1024] [--events 250000] [--backend redb|postgres] [--nodes 1|2]`
//! (the scenario may also be given alone: `cargo bench --bench load -- fanout`;
//! `--help` lists everything). An unknown flag or scenario, or a value out of
//! range, is refused with a message and exit status 2: a typo never runs
//! some other load.
//!
//! - `ingest` (default): ingest throughput and latency, vs bare hyper.
//! - `fanout`: the same load with 4 destinations on a fast local sink:
//!   deliveries/s, ingest-to-delivery latency, and the relay rate (ingest
//!   requests + deliveries per second, first request to last delivery) as a
//!   ratio to bare hyper measured right after.
//! - `backlog`: queues `--events` × 4 deliveries to a sink that never
//!   answers, and reports the server's RSS with that backlog on disk.
//! - `events`: ingests `--events` into one source, then times listing the
//!   newest page and a deep page, and a bulk replay of all of them
//!   (deliveries queued/s).
//! - `breakdown`: where an ingest's cost goes — the same load against a
//!   source whose secret does not match (each request read whole, its
//!   signature checked and refused: 401), a source without destinations
//!   (adds parsing, the write-ahead log and storing the event) and a source
//!   with 2 queued deliveries (the `ingest` scenario's first figure), each
//!   on a fresh server, then bare hyper; the rate, Krafter's CPU per request
//!   and the ratio for each. (With `--backend postgres` the sources are not
//!   cached, so the 401 step also reads its source from the database.)
//! - `recovery` (redb): queues `--events` × 4 deliveries to a sink that never
//!   answers, then kills the server with SIGKILL in the middle of full ingest
//!   load (so the write-ahead log holds up to a checkpoint's worth of
//!   acknowledged events redb has not made durable) and times the restart
//!   until `/healthz` answers, per GiB of data directory.
//!
//! It starts `krafter serve` (release build) on a free loopback port with a
//! temp data dir, creates a Stripe source with two matching destinations
//! (pointing at a local sink that answers 200), then sends unique
//! Stripe-signed events over N keep-alive connections, signing each one as a
//! client would. It reports accepted events/s, latency percentiles, errors
//! and the server's RSS; then runs the same load against a bare hyper
//! server answering 200 on the same machine, and prints the ratio.
//! Every loop is bounded by count and time; only 127.0.0.1 is contacted.
//!
//! `--backend postgres` starts a private PostgreSQL cluster first (initdb
//! and pg_ctl in a temp dir, as the `postgres` user when run as root,
//! listening on 127.0.0.1 only, fsync and synchronous_commit as shipped),
//! gives each Krafter server a fresh database on it, and stops and removes
//! the cluster at the end. After each timed load it prints where the time
//! went: transactions and WAL flushes per event (from `pg_stat_database`
//! and `pg_stat_wal`) and the CPU time Krafter and PostgreSQL spent per
//! event. `--nodes 2` runs two Krafter servers on the one database and
//! splits the connections across them (each destination's deliveries are
//! run by one node at a time, under its lease).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};

/// The tests' PostgreSQL helpers; the load tool uses their program lookup
/// and watchdog (and runs the cluster its own way: durable, measured).
#[path = "../src/store/postgres/pg_cluster.rs"]
mod pg_cluster;
use pg_cluster::{as_postgres, pg_program, running_as_root, watchdog};

const SECRET: &str = "whsec_load_tool_secret";
/// Hard cap on requests per run, whatever the duration.
const MAX_REQUESTS: u64 = 20_000_000;

/// What one run does, as the scenarios read it.
struct Options {
    scenario: Scenario,
    connections: usize,
    seconds: u64,
    body_bytes: usize,
    events: u64,
    nodes: usize,
    /// The private PostgreSQL cluster (`--backend postgres`).
    postgres: Option<Arc<PgCluster>>,
}

/// Where the servers keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The embedded redb file (one node).
    Redb,
    /// A private PostgreSQL cluster started by the tool.
    Postgres,
}

/// The scenarios (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Ingest throughput and latency (queued only, then delivering), vs bare hyper.
    Ingest,
    /// The same load with 4 destinations on a fast local sink.
    Fanout,
    /// `--events` × 4 deliveries queued to a sink that never answers; RSS.
    Backlog,
    /// `--events` in one source; list pages and a bulk replay of them all.
    Events,
    /// Ingest against ever more of the ingest path, each vs bare hyper.
    Breakdown,
    /// `--events` × 4 deliveries pending, kill -9 under full ingest load,
    /// then time until the restarted server is ready (redb).
    Recovery,
}

impl Scenario {
    /// The name as typed on the command line (clap's, from the variant).
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// The command line. Parsed strictly so that a mistyped flag or scenario
/// stops the run with clap's message instead of silently measuring
/// something else.
#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "Krafter's load tool: drives the release server over loopback",
    override_usage = "cargo bench --bench load -- [SCENARIO | --scenario SCENARIO] [OPTIONS]"
)]
struct Args {
    /// The scenario to run (the same as `--scenario`).
    #[arg(value_enum, value_name = "SCENARIO", conflicts_with = "scenario")]
    scenario_positional: Option<Scenario>,
    /// The scenario to run.
    #[arg(long, value_enum, default_value = "ingest")]
    scenario: Scenario,
    /// Keep-alive HTTP/1.1 connections driving the load.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
    /// How long each timed load runs, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Size of each event body, in bytes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..=1 << 20))]
    body_bytes: u64,
    /// Events to store (`backlog` and `events` scenarios).
    #[arg(long, default_value_t = 250_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    events: u64,
    /// The storage backend of the servers under load.
    #[arg(long, value_enum, default_value = "redb")]
    backend: Backend,
    /// Krafter servers sharing the database (2 needs `--backend postgres`
    /// and runs the ingest and fanout scenarios).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    nodes: u64,
    /// Passed by `cargo bench` to every bench target; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Parses the command line; on an error (or `--help`) clap prints the
/// message and exits (status 2 for an error).
fn options() -> Options {
    let args = Args::parse();
    let usize_of = |v: u64| usize::try_from(v).expect("validated range fits usize");
    let scenario = args.scenario_positional.unwrap_or(args.scenario);
    if args.nodes > 1 && args.backend != Backend::Postgres {
        refuse("--nodes 2 needs --backend postgres (a redb file serves one node)");
    }
    if args.nodes > 1 && !matches!(scenario, Scenario::Ingest | Scenario::Fanout) {
        refuse("--nodes 2 runs the ingest and fanout scenarios");
    }
    let postgres = (args.backend == Backend::Postgres).then(|| Arc::new(PgCluster::start()));
    Options {
        scenario,
        connections: usize_of(args.connections),
        seconds: args.seconds,
        body_bytes: usize_of(args.body_bytes),
        events: args.events,
        nodes: usize_of(args.nodes),
        postgres,
    }
}

/// Stops before any load with a usage error (exit status 2, as clap's).
fn refuse(why: &str) -> ! {
    eprintln!("error: {why}");
    std::process::exit(2);
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&o));
    // The cluster (if any) is stopped and removed when `o` drops here.
}

async fn run(o: &Options) {
    println!(
        "load: scenario {}, {} connections, {} s, {}-byte bodies, backend {}, {} node(s), machine: {} cores",
        o.scenario.name(),
        o.connections,
        o.seconds,
        o.body_bytes,
        match &o.postgres {
            Some(pg) => format!("postgres {} (same box, fsync on)", pg.version),
            None => "redb".to_string(),
        },
        o.nodes,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    match o.scenario {
        Scenario::Ingest => ingest(o).await,
        Scenario::Fanout => fanout(o).await,
        Scenario::Backlog => backlog(o).await,
        Scenario::Events => events_listing(o).await,
        Scenario::Recovery => recovery(o).await,
        Scenario::Breakdown => breakdown(o).await,
    }
}

/// A Krafter release server on a free port with a temp data dir.
struct Server {
    child: Child,
    base: String,
    addr: SocketAddr,
    key: String,
    _dir: tempfile::TempDir,
}

/// The servers under load: one, or two sharing a PostgreSQL database.
struct Nodes {
    servers: Vec<Server>,
    /// The database's URL, on PostgreSQL.
    database: Option<String>,
}

impl Nodes {
    /// `o.nodes` servers on a fresh store: a redb file, or a new database
    /// on the private cluster that every node shares (the first node makes
    /// the secrets key and the bootstrap key; the others get a copy of the
    /// secrets key, as an operator would give them).
    async fn start(o: &Options) -> Nodes {
        let database = match &o.postgres {
            Some(pg) => Some(pg.database().await),
            None => None,
        };
        let mut env: Vec<(&str, String)> = Vec::new();
        if let Some(url) = &database {
            env.push(("KRAFTER_STORAGE__BACKEND", "postgres".to_string()));
            env.push(("KRAFTER_STORAGE__POSTGRES__URL", url.clone()));
        }
        let first = Server::start(&env, None).await;
        let mut servers = vec![first];
        for _ in 1..o.nodes {
            let key = servers[0]._dir.path().join("data/secrets.key");
            servers.push(Server::start(&env, Some(&key)).await);
        }
        Nodes { servers, database }
    }

    fn first(&self) -> &Server {
        &self.servers[0]
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// Each node's RSS, as `a + b MiB`.
    fn rss(&self) -> String {
        let each: Vec<String> = self
            .servers
            .iter()
            .map(|s| s.rss_mib().to_string())
            .collect();
        format!("{} MiB", each.join(" + "))
    }

    /// What the servers and the database have used so far.
    async fn usage(&self, o: &Options) -> Usage {
        let krafter_cpu = self.servers.iter().map(|s| cpu_seconds(s.child.id())).sum();
        let mut usage = Usage {
            krafter_cpu,
            ..Usage::default()
        };
        if o.postgres.is_none() {
            let server = self.first();
            usage.commits = server
                .metric("krafter_storage_commit_batch_size_count")
                .await;
            usage.committed_ops = server.metric("krafter_storage_commit_batch_size_sum").await;
            usage.commit_seconds = server
                .metric("krafter_storage_commit_duration_seconds_sum")
                .await;
            usage.wal_syncs = server
                .metric("krafter_storage_wal_sync_duration_seconds_count")
                .await;
            usage.wal_sync_seconds = server
                .metric("krafter_storage_wal_sync_duration_seconds_sum")
                .await;
        }
        if let (Some(pg), Some(url)) = (&o.postgres, &self.database) {
            usage.postgres = Some(pg.usage(url).await);
        }
        usage
    }
}

impl Server {
    /// Starts one node; `secrets_key` is copied into its data dir first
    /// (a second node of the same database).
    async fn start(env: &[(&str, String)], secrets_key: Option<&Path>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(key) = secrets_key {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            let data = dir.path().join("data");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&data)
                .expect("data dir");
            std::fs::copy(key, data.join("secrets.key")).expect("copy the secrets key");
            std::fs::set_permissions(
                data.join("secrets.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod the secrets key");
        }
        let port = free_port();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let child = spawn_krafter(dir.path(), port, &env);
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&base).await;
        // Only the node that made the bootstrap key wrote it.
        let key = std::fs::read_to_string(dir.path().join("data/admin.key")).unwrap_or_default();
        Server {
            child,
            base,
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            key: key.trim().to_string(),
            _dir: dir,
        }
    }

    fn rss_mib(&self) -> u64 {
        rss_kib(self.child.id()) / 1024
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ingest throughput twice: with both destinations on a sink that never
/// answers (the deliveries are stored and queued, only a few are in flight:
/// this isolates ingest), then with a live sink (the same box also delivers
/// two requests per event). Then bare hyper for the ratio. With two nodes
/// only the first (see the module documentation).
async fn ingest(o: &Options) {
    let sink = start_sink(Sink::default()).await;
    let hang = start_hanging_sink().await;
    let queued_only = {
        let nodes = Nodes::start(o).await;
        let slug = setup_source(nodes.first(), &[hang, hang]).await;
        let before = nodes.usage(o).await;
        let outcome = drive(&nodes.addrs(), format!("/in/{slug}"), o, true).await;
        let used = nodes.usage(o).await.since(&before, outcome.ok);
        (outcome, nodes.rss(), used)
    };
    let delivering = {
        let nodes = Nodes::start(o).await;
        let slug = setup_source(nodes.first(), &[sink, sink]).await;
        let before = nodes.usage(o).await;
        let outcome = drive(&nodes.addrs(), format!("/in/{slug}"), o, true).await;
        let used = nodes.usage(o).await.since(&before, outcome.ok);
        (outcome, nodes.rss(), used)
    };
    let bare = drive(&[sink], "/".to_string(), o, true).await;
    println!(
        "krafter ingest, 2 deliveries queued per event: {} (RSS {})",
        queued_only.0.describe(),
        queued_only.1
    );
    println!("  where the time went: {}", queued_only.2);
    println!(
        "krafter ingest while delivering 2 per event: {} (RSS {})",
        delivering.0.describe(),
        delivering.1
    );
    println!("  where the time went: {}", delivering.2);
    println!("bare hyper 200: {}", bare.describe());
    println!(
        "ratio krafter/bare: {:.2} (queued only), {:.2} (delivering)",
        queued_only.0.rate() / bare.rate().max(1.0),
        delivering.0.rate() / bare.rate().max(1.0)
    );
}

/// Where an ingest's cost goes (see the module documentation): each step
/// adds a part of the path, on a fresh server, so the differences between
/// steps are roughly what those parts cost on this box. The steps run one
/// after the other and bare hyper once at the end: the box's speed drifts
/// (README "Performance"), so compare several runs, not one.
async fn breakdown(o: &Options) {
    let hang = start_hanging_sink().await;
    let steps: [(&str, &str, &[SocketAddr], Accept); 3] = [
        ("forged signature (401)", FORGED_SECRET, &[], unauthorized),
        ("source without destinations", SECRET, &[], success),
        (
            "source with 2 queued deliveries",
            SECRET,
            &[hang, hang],
            success,
        ),
    ];
    let mut measured = Vec::new();
    for (name, secret, destinations, accept) in steps {
        let nodes = Nodes::start(o).await;
        let slug = create_source(nodes.first(), destinations, secret).await;
        let before = nodes.usage(o).await;
        let outcome = drive_with(
            &nodes.addrs(),
            format!("/in/{slug}"),
            o,
            Load { sign: true, accept },
            MAX_REQUESTS,
            Duration::from_secs(o.seconds),
        )
        .await;
        let used = nodes.usage(o).await.since(&before, outcome.ok);
        measured.push((name, outcome, used));
    }
    let bare = bare_hyper(o).await;
    for (name, outcome, used) in &measured {
        println!(
            "{name}: {}\n  {used}; ratio krafter/bare: {:.2}",
            outcome.describe(),
            outcome.rate() / bare.rate().max(1.0)
        );
    }
    println!("bare hyper 200: {}", bare.describe());
}

/// The signing secret of `breakdown`'s first source: the load signs with
/// [`SECRET`], so every request is read whole, checked and refused (401).
const FORGED_SECRET: &str = "whsec_not_what_the_load_tool_signs_with";

/// What `breakdown`'s first step expects: the signature check failed.
fn unauthorized(status: hyper::StatusCode) -> bool {
    status == hyper::StatusCode::UNAUTHORIZED
}

async fn fanout(o: &Options) {
    let sink = Sink::default();
    let addr = start_sink(sink.clone()).await;
    let nodes = Nodes::start(o).await;
    let server = nodes.first();
    let slug = setup_source(server, &[addr, addr, addr, addr]).await;
    let before = nodes.usage(o).await;
    let started = Instant::now();
    let sampler = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut per_second = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = sink.count.load(Ordering::Relaxed);
                per_second.push(now - last);
                last = now;
                if per_second.len() > 600 {
                    return per_second;
                }
            }
        })
    };
    let load = drive(&nodes.addrs(), format!("/in/{slug}"), o, true).await;
    let backlog_at_end = server.metric("krafter_deliveries_pending").await;
    let delivered_during = sink.count.load(Ordering::Relaxed);
    let during = started.elapsed();
    // Let the backlog drain (bounded).
    let expected = load.ok * 4;
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    while sink.count.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // First request to last delivery (within the 100 ms poll).
    let relay_elapsed = started.elapsed();
    let delivered = sink.count.load(Ordering::Relaxed);
    let drained_in = relay_elapsed.saturating_sub(during);
    let used = nodes.usage(o).await.since(&before, load.ok);
    sampler.abort();
    let rss = server.rss_mib();
    let mut latencies = sink
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    println!("ingest during fan-out: {}", load.describe());
    println!("  where the time went (ingest and all deliveries, per event): {used}");
    println!(
        "deliveries while ingesting: {:.0}/s ({} in {:.1} s); backlog at end of ingest: {backlog_at_end}",
        delivered_during as f64 / during.as_secs_f64(),
        delivered_during,
        during.as_secs_f64()
    );
    println!(
        "all {delivered} of {expected} deliveries done {:.1} s after ingest stopped; overall {:.0} deliveries/s",
        drained_in.as_secs_f64(),
        delivered as f64 / relay_elapsed.as_secs_f64()
    );
    println!(
        "ingest-to-delivery latency ms: p50 {:.1} p90 {:.1} p99 {:.1} (n={})",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.len()
    );
    println!("krafter RSS: {rss} MiB");
    // The relay figure (README "Performance"): every HTTP exchange Krafter
    // takes part in (ingest requests in, deliveries out), first request to
    // last delivery, against bare hyper measured right after on the same
    // box, with Krafter stopped so its after-load work does not slow it.
    drop(nodes);
    let exchanges = load.ok + delivered;
    let relay = exchanges as f64 / relay_elapsed.as_secs_f64();
    let bare = bare_hyper(o).await;
    println!("bare hyper 200: {}", bare.describe());
    if delivered < expected {
        println!("relay: not every delivery arrived within the drain deadline, no ratio");
        return;
    }
    println!(
        "relay: {exchanges} exchanges (ingest + deliveries) in {:.1} s = {relay:.0}/s; ratio krafter/bare: {:.2}",
        relay_elapsed.as_secs_f64(),
        relay / bare.rate().max(1.0)
    );
}

async fn backlog(o: &Options) {
    let hang_addr = start_hanging_sink().await;
    let nodes = Nodes::start(o).await;
    let server = nodes.first();
    let slug = setup_source(server, &[hang_addr, hang_addr, hang_addr, hang_addr]).await;
    let before = server.rss_mib();
    let target = o.events;
    let sent = drive_count(&[server.addr], format!("/in/{slug}"), o, target).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = server.metric("krafter_deliveries_pending").await;
    println!(
        "backlog: {} events accepted ({} errors) in {:.1} s; deliveries pending: {pending}",
        sent.ok,
        sent.errors,
        sent.elapsed.as_secs_f64()
    );
    println!(
        "krafter RSS: {before} MiB before, {} MiB with the backlog",
        server.rss_mib()
    );
}

async fn events_listing(o: &Options) {
    let hang_addr = start_hanging_sink().await;
    let nodes = Nodes::start(o).await;
    let server = nodes.first();
    let slug = setup_source(server, &[]).await;
    let client = reqwest::Client::new();
    let sources: Value = client
        .get(format!("{}/api/v1/webhooks/sources", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("sources")
        .json()
        .await
        .expect("json");
    let source = sources["data"][0]["id"]
        .as_str()
        .expect("source")
        .to_string();
    let start = time_now_rfc3339(0);
    let sent = drive_count(&[server.addr], format!("/in/{slug}"), o, o.events).await;
    println!(
        "stored {} events in {:.1} s ({:.0}/s)",
        sent.ok,
        sent.elapsed.as_secs_f64(),
        sent.rate()
    );
    let list = format!("{}/api/v1/webhooks/sources/{source}/events", server.base);
    let time_get = |url: String| {
        let (client, key) = (client.clone(), server.key.clone());
        async move {
            let mut samples = Vec::new();
            let mut last = Value::Null;
            for _ in 0..50 {
                let t0 = Instant::now();
                last = client
                    .get(&url)
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("list")
                    .json()
                    .await
                    .expect("json");
                samples.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            samples.sort_by(|a, b| a.total_cmp(b));
            (
                samples[samples.len() / 2],
                samples[samples.len() * 99 / 100],
                last,
            )
        }
    };
    let (p50, p99, newest) = time_get(format!("{list}?limit=50")).await;
    println!(
        "list newest page (50): p50 {p50:.2} ms, p99 {p99:.2} ms ({} items)",
        newest["data"].as_array().map_or(0, Vec::len)
    );
    let deep_before = time_now_rfc3339(-(sent.elapsed.as_secs() as i64) + 2);
    let _ = start;
    let (p50, p99, deep) = time_get(format!("{list}?limit=50&before={deep_before}")).await;
    println!(
        "list deep page (50, before the first ~2 s of ingest): p50 {p50:.2} ms, p99 {p99:.2} ms ({} items)",
        deep["data"].as_array().map_or(0, Vec::len)
    );
    if let Some(cursor) = deep["next_cursor"].as_str() {
        let (p50, p99, _) = time_get(format!("{list}?limit=50&cursor={cursor}")).await;
        println!("list deep page by cursor: p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    let status = client
        .post(format!(
            "{}/api/v1/webhooks/sources/{source}/destinations",
            server.base
        ))
        .bearer_auth(&server.key)
        .json(&json!({"url": format!("http://{hang_addr}/hang")}))
        .send()
        .await
        .expect("destination")
        .status();
    assert_eq!(status, 201);
    let t0 = Instant::now();
    let accepted: Value = client
        .post(format!(
            "{}/api/v1/webhooks/sources/{source}/replay",
            server.base
        ))
        .bearer_auth(&server.key)
        .json(&json!({"after": "2000-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("bulk replay")
        .json()
        .await
        .expect("json");
    let answered = t0.elapsed();
    let want = accepted["data"]["deliveries"].as_f64().unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while server.metric("krafter_deliveries_pending").await < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queued = server.metric("krafter_deliveries_pending").await;
    println!(
        "bulk replay: answered 202 in {:.0} ms; {queued} of {want} deliveries queued in {:.1} s ({:.0}/s)",
        answered.as_secs_f64() * 1000.0,
        t0.elapsed().as_secs_f64(),
        queued / t0.elapsed().as_secs_f64()
    );
    println!("krafter RSS: {} MiB", server.rss_mib());
}

async fn recovery(o: &Options) {
    if o.postgres.is_some() {
        refuse("the recovery scenario measures the redb backend's restart after a crash");
    }
    let hang_addr = start_hanging_sink().await;
    let mut server = Server::start(&[], None).await;
    let slug = setup_source(&server, &[hang_addr, hang_addr, hang_addr, hang_addr]).await;
    let stored = drive_count(&[server.addr], format!("/in/{slug}"), o, o.events).await;
    println!(
        "stored {} events ({} errors) in {:.1} s, {} deliveries pending",
        stored.ok,
        stored.errors,
        stored.elapsed.as_secs_f64(),
        server.metric("krafter_deliveries_pending").await
    );
    // Full load again, and SIGKILL in the middle of it: past the first
    // checkpoint interval, so the log holds what redb has not synced.
    let addrs = [server.addr];
    let child = &mut server.child;
    let kill = async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        child.kill().expect("kill -9");
        let _ = child.wait();
    };
    let load = drive_with(
        &addrs,
        format!("/in/{slug}"),
        o,
        SIGNED,
        MAX_REQUESTS,
        Duration::from_secs(4),
    );
    let (during, ()) = tokio::join!(load, kill);
    let data = server._dir.path().join("data");
    let size = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let (db_bytes, wal_bytes) = (size(&data), size(&data.join("wal")));
    let gib = (db_bytes + wal_bytes) as f64 / (1u64 << 30) as f64;
    println!(
        "killed (SIGKILL) under load: {} events acknowledged in the last {:.1} s; data directory {:.0} MiB (write-ahead log {:.1} MiB)",
        during.ok,
        during.elapsed.as_secs_f64(),
        (db_bytes + wal_bytes) as f64 / (1u64 << 20) as f64,
        wal_bytes as f64 / (1u64 << 20) as f64
    );
    let port = free_port();
    let started = Instant::now();
    let mut child = spawn_krafter(server._dir.path(), port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let ready = started.elapsed();
    println!(
        "recovery: ready {:.0} ms after the restart = {:.2} s per GiB of store (goal: at most 1 s per GiB)",
        ready.as_secs_f64() * 1000.0,
        ready.as_secs_f64() / gib.max(f64::EPSILON)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Now plus `offset_s` seconds, as RFC 3339.
fn time_now_rfc3339(offset_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    krafter::model::time::format_ms(now + offset_s * 1000)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn_krafter(dir: &std::path::Path, port: u16, extra_env: &[(&str, &str)]) -> Child {
    // `KRAFTER_LOAD_BINARY` runs another build (e.g. the last release's)
    // under the same load, for before/after figures in one session.
    let binary = std::env::var_os("KRAFTER_LOAD_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_krafter").into());
    let mut cmd = Command::new(binary);
    cmd.envs(extra_env.iter().copied());
    cmd.arg("serve")
        .env("KRAFTER_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("KRAFTER_STORAGE__PATH", dir.join("data"))
        .env("KRAFTER_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true")
        .env("KRAFTER_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn krafter (build it with `cargo build --release` first)")
}

async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("krafter did not start");
}

async fn setup_source(server: &Server, destinations: &[SocketAddr]) -> String {
    create_source(server, destinations, SECRET).await
}

/// A Stripe source verifying with `secret`, with a destination per address
/// in `destinations`; returns its ingest slug.
async fn create_source(server: &Server, destinations: &[SocketAddr], secret: &str) -> String {
    let client = reqwest::Client::new();
    let source: Value = client
        .post(format!("{}/api/v1/webhooks/sources", server.base))
        .bearer_auth(&server.key)
        .json(&json!({"name": "load", "provider": "stripe", "signing_secret": secret}))
        .send()
        .await
        .expect("create source")
        .json()
        .await
        .expect("source json");
    let id = source["data"]["id"].as_str().expect("source id");
    for (i, sink) in destinations.iter().enumerate() {
        let filter = if i % 2 == 0 {
            json!(["invoice.*"])
        } else {
            json!(["*"])
        };
        let status = client
            .post(format!(
                "{}/api/v1/webhooks/sources/{id}/destinations",
                server.base
            ))
            .bearer_auth(&server.key)
            .json(&json!({"url": format!("http://{sink}/sink/{i}"), "event_filter": filter}))
            .send()
            .await
            .expect("create destination")
            .status();
        assert_eq!(status, 201);
    }
    source["data"]["slug"].as_str().expect("slug").to_string()
}

/// What the sink saw: deliveries counted, and ingest-to-delivery latency
/// read from the send time the load generator put in each body.
#[derive(Clone, Default)]
struct Sink {
    count: Arc<AtomicU64>,
    latencies_us: Arc<std::sync::Mutex<Vec<u64>>>,
}

/// A hyper server that answers 200 to everything: the bare-HTTP baseline
/// and the delivery sink.
async fn start_sink(sink: Sink) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if let Some(sent) = sent_at_us(&body) {
                            let now = epoch().elapsed().as_micros() as u64;
                            if let Ok(mut l) = sink.latencies_us.lock() {
                                if l.len() < 5_000_000 {
                                    l.push(now.saturating_sub(sent));
                                }
                            }
                        }
                        sink.count.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A sink that accepts connections and never answers: deliveries to it
/// stay pending (in flight until the timeout, then retried later).
async fn start_hanging_sink() -> SocketAddr {
    let hang = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = hang.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hang.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// The process-wide time origin shared by generator and sink.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Reads `"sent_us":<n>` from a body made by [`event_body`].
fn sent_at_us(body: &[u8]) -> Option<u64> {
    let marker = b"\"sent_us\":";
    let at = body.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits: Vec<u8> = body[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

struct Outcome {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn describe(&self) -> String {
        format!(
            "{:.0} req/s ok ({} ok, {} errors in {:.1} s), latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
            self.rate(),
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.percentile(1.0)
        )
    }
}

/// Runs `o.connections` keep-alive HTTP/1.1 connections against `addrs`
/// (split evenly), each sending unique Stripe-signed events, for `o.seconds`.
async fn drive(addrs: &[SocketAddr], path: String, o: &Options, sign: bool) -> Outcome {
    drive_with(
        addrs,
        path,
        o,
        Load {
            sign,
            accept: success,
        },
        MAX_REQUESTS,
        Duration::from_secs(o.seconds),
    )
    .await
}

/// How the connections of [`drive_with`] send, and which answers they count.
#[derive(Clone, Copy)]
struct Load {
    /// Sign every event as Stripe would.
    sign: bool,
    /// The answers counted (the others are errors).
    accept: Accept,
}

/// Which statuses a load counts as answered.
type Accept = fn(hyper::StatusCode) -> bool;

/// The usual [`Load::accept`]: an event was taken.
fn success(status: hyper::StatusCode) -> bool {
    status.is_success()
}

/// Signed events, counted when taken: every scenario's load but one step
/// of `breakdown`.
const SIGNED: Load = Load {
    sign: true,
    accept: success,
};

/// Bare hyper under the same load on a fresh sink: the ratios' baseline.
async fn bare_hyper(o: &Options) -> Outcome {
    drive(
        &[start_sink(Sink::default()).await],
        "/".to_string(),
        o,
        true,
    )
    .await
}

/// Sends exactly `count` events (or stops after 10 minutes).
async fn drive_count(addrs: &[SocketAddr], path: String, o: &Options, count: u64) -> Outcome {
    drive_with(addrs, path, o, SIGNED, count, Duration::from_secs(600)).await
}

async fn drive_with(
    addrs: &[SocketAddr],
    path: String,
    o: &Options,
    load: Load,
    cap: u64,
    limit: Duration,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..o.connections {
        let (stop, sent, path) = (stop.clone(), sent.clone(), path.clone());
        let addr = addrs[conn % addrs.len()];
        let body_bytes = o.body_bytes;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let (mut ok, mut errors) = (0u64, 0u64);
            let Ok(stream) = TcpStream::connect(addr).await else {
                return (latencies, ok, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return (latencies, ok, 1);
            };
            tokio::spawn(connection);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < cap {
                let body = event_body(conn, n, body_bytes);
                n += 1;
                let mut req = Request::post(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json");
                if load.sign {
                    req = req.header("stripe-signature", stripe_signature(&body));
                }
                let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
                    errors += 1;
                    continue;
                };
                let t0 = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        if (load.accept)(status) {
                            ok += 1;
                            latencies.push(t0.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (latencies, ok, errors)
        }));
    }
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Outcome {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        if let Ok((latencies, ok, errors)) = task.await {
            outcome.latencies_us.extend(latencies);
            outcome.ok += ok;
            outcome.errors += errors;
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies_us.sort_unstable();
    outcome
}

fn event_body(conn: usize, n: u64, size: usize) -> String {
    let sent = epoch().elapsed().as_micros();
    let head = format!(
        r#"{{"id":"evt_load_{conn}_{n}","object":"event","type":"invoice.paid","sent_us":{sent},"pad":""#
    );
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Stripe's scheme, as a provider computes it.
fn stripe_signature(body: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from `/proc`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (1-based).
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// The parent pid of a process, from `/proc`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Resources used by the servers and their database, at one moment.
#[derive(Default, Clone)]
struct Usage {
    krafter_cpu: f64,
    /// Writer commits and the operations they held (the redb backend).
    commits: f64,
    committed_ops: f64,
    /// Time spent applying and committing those batches.
    commit_seconds: f64,
    /// Write-ahead log appends (each synced) and the time they took.
    wal_syncs: f64,
    wal_sync_seconds: f64,
    postgres: Option<PgUsage>,
}

/// What PostgreSQL reports about itself, plus its processes' CPU time.
#[derive(Default, Clone)]
struct PgUsage {
    commits: i64,
    wal_records: i64,
    wal_bytes: i64,
    wal_syncs: i64,
    wal_sync_ms: f64,
    cpu: f64,
}

/// The difference between two [`Usage`]s, per accepted event.
struct Used {
    events: u64,
    krafter_cpu: f64,
    commits: f64,
    committed_ops: f64,
    commit_seconds: f64,
    wal_syncs: f64,
    wal_sync_seconds: f64,
    postgres: Option<PgUsage>,
}

impl Usage {
    fn since(&self, before: &Usage, events: u64) -> Used {
        Used {
            events,
            krafter_cpu: self.krafter_cpu - before.krafter_cpu,
            commits: self.commits - before.commits,
            committed_ops: self.committed_ops - before.committed_ops,
            commit_seconds: self.commit_seconds - before.commit_seconds,
            wal_syncs: self.wal_syncs - before.wal_syncs,
            wal_sync_seconds: self.wal_sync_seconds - before.wal_sync_seconds,
            postgres: match (&self.postgres, &before.postgres) {
                (Some(a), Some(b)) => Some(PgUsage {
                    commits: a.commits - b.commits,
                    wal_records: a.wal_records - b.wal_records,
                    wal_bytes: a.wal_bytes - b.wal_bytes,
                    wal_syncs: a.wal_syncs - b.wal_syncs,
                    wal_sync_ms: a.wal_sync_ms - b.wal_sync_ms,
                    cpu: a.cpu - b.cpu,
                }),
                _ => None,
            },
        }
    }
}

impl std::fmt::Display for Used {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.events.max(1) as f64;
        write!(f, "krafter CPU {:.0} µs/event", self.krafter_cpu * 1e6 / n)?;
        if self.commits > 0.0 {
            write!(
                f,
                "; writer {:.0} commits, {:.1} operations each, {:.2} ms each",
                self.commits,
                self.committed_ops / self.commits,
                self.commit_seconds * 1e3 / self.commits
            )?;
        }
        if self.wal_syncs > 0.0 {
            write!(
                f,
                "; log {:.0} appends, {:.1} events and {:.2} ms each",
                self.wal_syncs,
                n / self.wal_syncs,
                self.wal_sync_seconds * 1e3 / self.wal_syncs
            )?;
        }
        if let Some(pg) = &self.postgres {
            write!(
                f,
                "; postgres CPU {:.0} µs/event, {:.2} transactions/event ({:.1} events/commit), \
                 {:.2} WAL records and {:.0} WAL bytes/event, {} WAL fsyncs ({:.2} ms each, {:.1} events/fsync)",
                pg.cpu * 1e6 / n,
                pg.commits as f64 / n,
                n / (pg.commits.max(1) as f64),
                pg.wal_records as f64 / n,
                pg.wal_bytes as f64 / n,
                pg.wal_syncs,
                pg.wal_sync_ms / (pg.wal_syncs.max(1) as f64),
                n / (pg.wal_syncs.max(1) as f64),
            )?;
        }
        Ok(())
    }
}

/// A private PostgreSQL cluster for `--backend postgres`: initdb and
/// pg_ctl in a temp dir (as the `postgres` user when we are root, since
/// PostgreSQL refuses root), on 127.0.0.1 and a free port, durable as
/// shipped (fsync and synchronous_commit on). Stopped and removed on drop,
/// and by a watchdog shell should this process be killed.
/// The binaries are found and run as the tests do (`pg_cluster`).
struct PgCluster {
    root: PathBuf,
    pg_ctl: PathBuf,
    port: u16,
    version: String,
    databases: AtomicU64,
}

impl PgCluster {
    /// Starts the cluster; a bench tool stops with a clear message when it
    /// cannot.
    fn start() -> PgCluster {
        let find = |name: &str| {
            pg_program(name).unwrap_or_else(|| {
                refuse(&format!(
                    "--backend postgres: no {name} on PATH or in /usr/lib/postgresql/*/bin"
                ))
            })
        };
        let (initdb, pg_ctl, postgres) = (find("initdb"), find("pg_ctl"), find("postgres"));
        let version = Command::new(&postgres)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|v| v.split_whitespace().nth(2).map(str::to_string))
            .unwrap_or_default();
        let root = std::env::temp_dir().join(format!("krafter-load-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).expect("cluster dir");
        watchdog(&root, &root.join("data"), &pg_ctl);
        if running_as_root() {
            must(
                Command::new("chown").arg("postgres:postgres").arg(&root),
                "chown of the cluster dir",
            );
        }
        let data = root.join("data");
        must(
            as_postgres(&initdb)
                .args([
                    "--auth=trust",
                    "--no-sync",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-D",
                ])
                .arg(&data)
                .current_dir(&root),
            "initdb",
        );
        let port = free_port();
        must(
            as_postgres(&pg_ctl)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(root.join("postgres.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
                     -c max_connections=100 -c track_wal_io_timing=on",
                    root.display()
                ))
                .arg("start")
                .current_dir(&root),
            "pg_ctl start",
        );
        PgCluster {
            root,
            pg_ctl,
            port,
            version,
            databases: AtomicU64::new(0),
        }
    }

    /// A fresh database for one server (or one pair of nodes).
    async fn database(&self) -> String {
        use sqlx::Connection;
        let name = format!(
            "krafter_load_{}",
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the load cluster");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a database");
        let _ = conn.close().await;
        self.url(&name)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Commits of `url`'s database, the cluster's WAL counters (flushed by
    /// the backends at most once a second, so this waits that long), and
    /// the CPU time of every PostgreSQL process.
    async fn usage(&self, url: &str) -> PgUsage {
        use sqlx::{Connection, Row};
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let mut out = PgUsage {
            cpu: self.cpu_seconds(),
            ..PgUsage::default()
        };
        let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
            return out;
        };
        if let Ok(row) = sqlx::query(
            "SELECT d.xact_commit, w.wal_records, w.wal_bytes::bigint AS wal_bytes, w.wal_sync, \
             w.wal_sync_time FROM pg_stat_database d, pg_stat_wal w \
             WHERE d.datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        {
            out.commits = row.try_get("xact_commit").unwrap_or(0);
            out.wal_records = row.try_get("wal_records").unwrap_or(0);
            out.wal_bytes = row.try_get("wal_bytes").unwrap_or(0);
            out.wal_syncs = row.try_get("wal_sync").unwrap_or(0);
            out.wal_sync_ms = row.try_get("wal_sync_time").unwrap_or(0.0);
        }
        let _ = conn.close().await;
        out
    }

    /// CPU seconds of the postmaster and its children (the backends).
    fn cpu_seconds(&self) -> f64 {
        let Some(postmaster) = std::fs::read_to_string(self.root.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return 0.0;
        };
        let mut total = cpu_seconds(postmaster);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if parent_of(pid) == Some(postmaster) {
                    total += cpu_seconds(pid);
                }
            }
        }
        total
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.pg_ctl)
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .current_dir(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs a set-up command; stops the tool with its output when it fails.
fn must(cmd: &mut Command, what: &str) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => refuse(&format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => refuse(&format!("{what}: {e}")),
    }
}
