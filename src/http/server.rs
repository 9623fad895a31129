//! Accept loop with graceful shutdown.
//!
//! Served by hyper-util directly (not `axum::serve`) to get what a public
//! listener needs: the header-read timeout actually armed (it needs a
//! timer, or hyper silently disables it), silent and idle connections
//! closed (see [`super::watch`]), a cap on open connections, TCP_NODELAY,
//! a TLS handshake timeout, and draining in-flight requests on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::watch::{Activity, Clock};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection that has sent nothing is closed after this long; HTTP/1
    /// also gives each request's head this long.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves for this long is closed.
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits up to the grace period for open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A client may shut its sending side and wait for the answer (a
        // short body, then half-close): it must get its 4xx. Without this,
        // hyper drops the connection as soon as it reads the end while the
        // handler is still busy (e.g. looking up the API key), and the
        // client sees no answer at all.
        .half_close(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Tells the watchdogs to drop connections that never sent a byte, which
    // graceful shutdown cannot reach (no protocol was detected on them yet).
    let (closing, _) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);

    loop {
        // Past max_connections the listener stops accepting: new
        // connections wait in the kernel's backlog, the ones being served
        // keep their file descriptors.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Handlers that limit per client (dashboard sign-in) read the peer
        // address from the request, as axum's `ConnectInfo`.
        let router = router.clone();
        let kill = ConnectionKill::default();
        let kill_switch = kill.0.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(kill.clone());
                router.clone().oneshot(request)
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let closing = closing.subscribe();
        match &tls {
            None => {
                tokio::spawn(async move {
                    let (io, clock) = Activity::new(stream);
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    guard(watcher.watch(conn), clock, limits, closing, kill_switch).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake_timeout = limits.tls_handshake_timeout;
                tokio::spawn(async move {
                    let tls_stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let (io, clock) = Activity::new(tls_stream);
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service)
                        .into_owned();
                    guard(watcher.watch(conn), clock, limits, closing, kill_switch).await;
                    drop(slot);
                });
            }
        }
    }

    drop(listener);
    closing.send_replace(true);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within the grace period");
    }
}

/// Lets a handler close its own connection at once: a long response (the
/// live event stream) whose client stopped reading cannot end through its
/// body, because the connection no longer asks the body for more. Found in
/// every request's extensions.
#[derive(Clone, Default)]
pub struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    /// Closes the connection this request came on (its watchdog drops it).
    pub fn kill(&self) {
        self.0.notify_one();
    }
}

/// Drives one connection, dropping (and so closing) it once it has been
/// silent past its limit, or, during shutdown, if it never sent a byte.
async fn guard(
    conn: impl Future,
    clock: Arc<Clock>,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    kill: Arc<Notify>,
) {
    tokio::pin!(conn);
    let killed = kill.notified();
    tokio::pin!(killed);
    loop {
        let deadline = clock.deadline(limits.header_read_timeout, limits.idle_timeout);
        tokio::select! {
            _ = &mut conn => return,
            () = &mut killed => {
                tracing::debug!("closing a connection its handler gave up on");
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if clock.deadline(limits.header_read_timeout, limits.idle_timeout)
                    <= tokio::time::Instant::now()
                {
                    tracing::debug!("closing a silent connection");
                    return;
                }
            }
            changed = closing.changed(), if !*closing.borrow() => {
                if changed.is_err() || !clock.heard() {
                    return;
                }
            }
        }
    }
}
