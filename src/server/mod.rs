//! The wiring: starting and stopping a whole Krafter server in-process —
//! storage, the delivery engine, replay jobs, retention, operations, ingest,
//! and the router (`router.rs`) over the HTTP listener.
//!
//! `krafter serve` and the end-to-end tests use the same [`start`], so the
//! tests exercise exactly what users run.

mod router;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{AppParts, AppState};
use crate::config::Config;
use crate::delivery::engine::Engine;
use crate::delivery::resolve::Resolver;
use crate::http::server::{self, ConnectionLimits};
use crate::http::tls::{self, TlsError};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::engine::EngineError),
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertsError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A server that is accepting requests.
pub struct RunningServer {
    addr: SocketAddr,
    admin_key_file: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    store: Store,
    engine: Engine,
    replays: crate::replay::Replays,
    delivery_grace: Duration,
    retention: JoinHandle<()>,
    /// The alert sender, stopped through `alerts_stop`.
    alerts_task: JoinHandle<()>,
    stats_task: JoinHandle<()>,
    alerts_stop: tokio::sync::watch::Sender<bool>,
    /// Ends live event streams at shutdown (they would never finish).
    streams: Arc<crate::ops::stream::Hub>,
    /// Tracing, flushed last at shutdown (`None`: off).
    telemetry: Option<crate::telemetry::Telemetry>,
}

/// Binds the listener, opens storage, makes the bootstrap key if none
/// exists and starts serving. When this returns, `/healthz` answers and
/// `admin.key` (if made) is on disk.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with_resolver(config, Resolver::system()).await
}

/// [`start`], with destination host names resolved by `resolver` (at
/// destination creation and at every delivery connection) instead of the
/// system's: the seam that lets tests give a name changing answers (DNS
/// rebinding) without a DNS server.
pub async fn start_with_resolver(
    config: Config,
    resolver: Resolver,
) -> Result<RunningServer, StartError> {
    // Bind first: a port in use must fail before anything touches the data
    // directory (no bootstrap key for a server that never ran). Nothing
    // accepts until `serve` below, so connections wait in the backlog and
    // `/healthz` still answers only once `admin.key` is on disk (SPEC §2).
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
    // Unreadable TLS files, too, fail before the data directory is touched.
    let acceptor = match (&config.server.tls.cert_path, &config.server.tls.key_path) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    // A collector URL the exporter refuses fails before the data
    // directory is touched, too.
    let telemetry = crate::telemetry::Telemetry::start(&config.telemetry)?;
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(&config.storage, metrics.clone())?;
    let admin_key_file = crate::ops::api_keys::ensure_bootstrap_key(&store).await?;
    if let Some(path) = &admin_key_file {
        tracing::info!(path = %path.display(), "created the bootstrap admin API key; read it from this file");
    }
    let engine = Engine::start(
        store.clone(),
        config.delivery.clone(),
        metrics.clone(),
        resolver,
    )
    .await?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.server.listen,
        source,
    })?;
    let limits = ConnectionLimits {
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        tls_handshake_timeout: Duration::from_secs(10),
        shutdown_grace: config.server.shutdown_grace,
        max_connections: config.server.max_connections,
    };
    let mut public_url = config.public_url();
    if config.server.public_url.is_empty() && config.server.listen.port() == 0 {
        // An ephemeral port is only known now.
        let scheme = if config.tls_enabled() {
            "https"
        } else {
            "http"
        };
        public_url = format!("{scheme}://{addr}");
    }
    let retention_wake = Arc::new(tokio::sync::Notify::new());
    let replays = crate::replay::Replays::new(store.clone(), engine.clone());
    let config = Arc::new(config);
    let ops = crate::ops::Ops::new(
        store.clone(),
        config.clone(),
        engine.clone(),
        replays.clone(),
        retention_wake.clone(),
        metrics.clone(),
    );
    let public_url: Arc<str> = public_url.into();
    let ingest = crate::ingest::Ingest::new(
        store.clone(),
        engine.clone(),
        metrics.clone(),
        public_url.clone(),
    );
    let alerts = crate::alerts::Alerts::new(
        store.clone(),
        &config.alerts,
        &config.delivery,
        engine.resolver().clone(),
    )?;
    engine.set_alerts(Arc::new(alerts.clone()));
    if let Some(telemetry) = &telemetry {
        engine.set_telemetry(telemetry.clone());
    }
    let (alerts_stop, alerts_stopped) = tokio::sync::watch::channel(false);
    let alerts_task = tokio::spawn(alerts.clone().run(alerts_stopped.clone()));
    let stats = crate::stats::Stats::new(store.clone());
    engine.set_stats(stats.clone());
    // Stopped with the alerts (after delivery has drained), flushing last.
    let stats_task = tokio::spawn(stats.clone().run(alerts_stopped));
    let streams = ops.stream_hub().clone();
    let state = AppState::new(AppParts {
        ops,
        ingest,
        alerts,
        stats,
        store: store.clone(),
        config,
        metrics,
        public_url,
        engine: engine.clone(),
        telemetry: telemetry.clone(),
    });
    // In-flight attempts get their timeout to finish, within the 30 s that
    // SPEC §2 allows for the whole shutdown.
    let delivery_grace =
        (state.config.delivery.timeout + Duration::from_secs(1)).min(Duration::from_secs(20));
    let retention = tokio::spawn(retention_loop(
        store.clone(),
        state.config.storage.retention_interval,
        state.config.audit.retention_days,
        retention_wake,
    ));
    let dashboard_url = format!("{}/dashboard", state.public_url);
    let router = router::router(state);
    let tls_on = acceptor.is_some();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, router, acceptor, limits, async {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, tls = tls_on, "listening");
    // Bulk replays a previous run left unfinished go on in the background;
    // readiness does not wait for them.
    replays.resume_all();
    if store.is_shared() {
        replays.adopt_orphans_every(Duration::from_secs(30));
    }
    // The first thing a new user looks for: where to click. The URL is in
    // the message itself so text and JSON logs both show it plainly.
    tracing::info!("dashboard at {dashboard_url} (sign in with an API key)");
    Ok(RunningServer {
        addr,
        admin_key_file,
        stop: Some(stop),
        task,
        store,
        engine,
        replays,
        delivery_grace,
        retention,
        alerts_task,
        stats_task,
        alerts_stop,
        streams,
        telemetry,
    })
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Path of the bootstrap key file, when this start created it.
    pub fn admin_key_file(&self) -> Option<&PathBuf> {
        self.admin_key_file.as_ref()
    }

    /// Stops accepting, lets in-flight requests finish (within the grace
    /// period), commits queued writes and closes storage.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.streams.close();
        // Requests and delivery attempts drain side by side, so the whole
        // stop stays within SPEC §2's 30 s (HTTP grace 25 s, delivery ≤ 20 s).
        let http = async { (&mut self.task).await.ok() };
        // Replay jobs stop after their current chunk and resume next start.
        tokio::join!(
            http,
            self.engine.shutdown(self.delivery_grace),
            self.replays.stop()
        );
        self.retention.abort();
        // Abort is asynchronous: wait until the task (and its Store clone)
        // is dropped, or the database stays open after shutdown returns.
        let _ = (&mut self.retention).await;
        // The sender finishes the alert in hand (its queue is durable).
        let _ = self.alerts_stop.send(true);
        let _ = (&mut self.alerts_task).await;
        let _ = (&mut self.stats_task).await;
        self.store.close().await;
        // Last: the spans of every request and attempt drained above.
        if let Some(telemetry) = &self.telemetry {
            telemetry.shutdown().await;
        }
    }
}

/// Removes expired events (and deleted sources' events) every `interval`,
/// or at once when woken, for as long as the server runs. With several
/// nodes, one of them does it: the one holding the `retention` duty, which
/// it renews on every round and another takes over when it lapses.
///
/// The same round removes audit entries older than `audit_retention_days`.
async fn retention_loop(
    store: Store,
    interval: Duration,
    audit_retention_days: u32,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let duty_ttl_ms = u64::try_from((interval * 3).as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        match store.claim_duty("retention", duty_ttl_ms).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the retention duty; will retry");
                continue;
            }
        }
        match store.sweep_retention(crate::model::time::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "retention removed expired events"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
        }
        let day_ms = 24 * 3600 * 1000_i64;
        let cutoff = crate::model::time::now_ms() - i64::from(audit_retention_days) * day_ms;
        match store.sweep_audit(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "retention removed old audit entries"),
            Err(e) => tracing::warn!(error = %e, "audit retention sweep failed; will retry"),
        }
    }
}
