//! Load tool: drives the real release server over loopback.
//!
//! `cargo bench --bench load -- [--connections 64] [--seconds 10] [--body-bytes 1024]`
//!
//! It starts `krafter serve` (release build) on a free loopback port with a
//! temp data dir, creates a Stripe source with two matching destinations
//! (pointing at a local sink that answers 200), then sends unique
//! Stripe-signed events over N keep-alive connections, signing each one as a
//! client would. It reports accepted events/s, latency percentiles, errors
//! and the server's RSS; then runs the same load against a bare hyper
//! server answering 200 on the same machine, and prints the ratio.
//! Every loop is bounded by count and time; only 127.0.0.1 is contacted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec_load_tool_secret";
/// Hard cap on requests per run, whatever the duration.
const MAX_REQUESTS: u64 = 20_000_000;

struct Options {
    connections: usize,
    seconds: u64,
    body_bytes: usize,
}

fn options() -> Options {
    let mut o = Options {
        connections: 64,
        seconds: 10,
        body_bytes: 1024,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--connections", Some(v)) => o.connections = v.clamp(1, 1024) as usize,
            ("--seconds", Some(v)) => o.seconds = v.clamp(1, 600),
            ("--body-bytes", Some(v)) => o.body_bytes = v.clamp(64, 1 << 20) as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(o));
}

async fn run(o: Options) {
    println!(
        "load: {} connections, {} s, {}-byte bodies, machine: {} cores",
        o.connections,
        o.seconds,
        o.body_bytes,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let sink = start_bare_server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut server = spawn_krafter(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let slug = setup_source(&base, dir.path(), sink).await;

    let krafter = drive(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        format!("/in/{slug}"),
        &o,
        true,
    )
    .await;
    let rss = rss_kib(server.id());
    let _ = server.kill();
    let _ = server.wait();

    let bare = drive(sink, "/".to_string(), &o, true).await;

    println!("krafter ingest: {}", krafter.describe());
    println!("krafter RSS after run: {} MiB", rss / 1024);
    println!("bare hyper 200: {}", bare.describe());
    println!(
        "ratio krafter/bare: {:.2}",
        krafter.rate() / bare.rate().max(1.0)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn_krafter(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_krafter"))
        .arg("serve")
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

async fn setup_source(base: &str, dir: &std::path::Path, sink: SocketAddr) -> String {
    let key = std::fs::read_to_string(dir.join("data/admin.key")).expect("admin.key");
    let key = key.trim();
    let client = reqwest::Client::new();
    let source: Value = client
        .post(format!("{base}/api/v1/webhooks/sources"))
        .bearer_auth(key)
        .json(&json!({"name": "load", "provider": "stripe", "signing_secret": SECRET}))
        .send()
        .await
        .expect("create source")
        .json()
        .await
        .expect("source json");
    let id = source["data"]["id"].as_str().expect("source id");
    for filter in [json!(["invoice.*"]), json!(["*"])] {
        let status = client
            .post(format!("{base}/api/v1/webhooks/sources/{id}/destinations"))
            .bearer_auth(key)
            .json(&json!({"url": format!("http://{sink}/sink"), "event_filter": filter}))
            .send()
            .await
            .expect("create destination")
            .status();
        assert_eq!(status, 201);
    }
    source["data"]["slug"].as_str().expect("slug").to_string()
}

/// A hyper server that answers 200 to everything: the bare-HTTP baseline
/// and the delivery sink.
async fn start_bare_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
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

/// Runs `o.connections` keep-alive HTTP/1.1 connections against `addr`,
/// each sending unique Stripe-signed events, for `o.seconds`.
async fn drive(addr: SocketAddr, path: String, o: &Options, sign: bool) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..o.connections {
        let (stop, sent, path) = (stop.clone(), sent.clone(), path.clone());
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
            while !stop.load(Ordering::Relaxed)
                && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                let body = event_body(conn, n, body_bytes);
                n += 1;
                let mut req = Request::post(path.as_str())
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json");
                if sign {
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
                        if status.is_success() {
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
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
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
    let head =
        format!(r#"{{"id":"evt_load_{conn}_{n}","object":"event","type":"invoice.paid","pad":""#);
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
