//! Alerts to the operator (SPEC §15): signed Standard Webhooks POSTs to
//! `alerts.url` when a destination is disabled or keeps failing, when
//! deliveries fail for good, when a source receives a burst of invalid
//! signatures, and when storage stops accepting writes.
//!
//! Why a queue of its own rather than the delivery queue: an alert belongs
//! to no source or destination (a delivery does), and alerts must keep
//! flowing when every destination is disabled. The queue is durable (a
//! store table on both backends, `AlertRecord`), retried on the
//! `delivery.retry_schedule`, and sent by one node at a time (the `alerts`
//! duty). Coalescing (once per failure run, at most one `delivery.failed`
//! per destination per `alerts.min_interval`, one burst alert per source
//! per window) happens before queueing, in memory, so the receiver never
//! sees a storm. `storage.unhealthy` cannot be queued in a store that
//! refuses writes: it is sent straight from memory, retried the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::config::{AlertsConfig, DeliveryConfig};
use crate::delivery::client::{self, guard_literal, DeliveryClient, Reach};
use crate::delivery::resolve::Resolver;
use crate::delivery::signer;
use crate::model::ids::{DeliveryId, DestinationId, EventId, SourceId};
use crate::model::time::{format_ms, now_ms};
use crate::store::{AlertRecord, AttemptOutcome, Next, Store};

/// The window of `ingest.invalid_signatures` (SPEC §15: "in 5 min").
pub const INVALID_SIGNATURE_WINDOW: Duration = Duration::from_secs(300);
/// How often the sender looks for due alerts and coalesced counts.
const TICK: Duration = Duration::from_millis(250);
/// Alerts sent per round.
const BATCH: usize = 20;

/// Why alerts could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(
        "alerts.secret must be a whsec_ secret (base64 after the prefix) when alerts.url is set"
    )]
    BadSecret,
    #[error("alerts.url {0:?} is not an absolute http(s) URL")]
    BadUrl(String),
    #[error(transparent)]
    Client(#[from] client::ClientError),
}

/// The alert service; cheap to clone. [`Alerts::off`] does nothing.
#[derive(Clone)]
pub struct Alerts {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    store: Store,
    config: AlertsConfig,
    delivery: DeliveryConfig,
    client: DeliveryClient,
    key: Vec<u8>,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

/// What coalescing remembers (bounded by the number of destinations and
/// sources; only existing sources reach signature checks).
#[derive(Default)]
struct State {
    /// Consecutive failed attempts per destination, and whether
    /// `destination.failing` was sent for this run.
    failing: HashMap<DestinationId, (u32, bool)>,
    failed: HashMap<DestinationId, Coalesced>,
    /// Window start, count, alerted.
    invalid: HashMap<SourceId, (i64, u64, bool)>,
    unhealthy: bool,
}

/// `delivery.failed` of one destination, counted between alerts.
struct Coalesced {
    source_id: SourceId,
    last_sent_ms: Option<i64>,
    count: u64,
    last_delivery: DeliveryId,
    last_event: EventId,
}

impl Alerts {
    /// No alerts (`alerts.url` empty).
    pub fn off() -> Alerts {
        Alerts { inner: None }
    }

    /// The service for `config`, sending through a client with the
    /// delivery SSRF rules; off when `alerts.url` is empty.
    pub fn new(
        store: Store,
        config: &AlertsConfig,
        delivery: &DeliveryConfig,
        resolver: Resolver,
    ) -> Result<Alerts, AlertsError> {
        if config.url.is_empty() {
            return Ok(Alerts::off());
        }
        match url::Url::parse(&config.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(AlertsError::BadUrl(config.url.clone())),
        }
        if !config.secret.starts_with("whsec_") {
            return Err(AlertsError::BadSecret);
        }
        let key = signer::secret_key(&config.secret).map_err(|_| AlertsError::BadSecret)?;
        let client = client::build(delivery, resolver)?;
        Ok(Alerts {
            inner: Some(Arc::new(Inner {
                store,
                config: config.clone(),
                delivery: delivery.clone(),
                client,
                key,
                state: Mutex::new(State::default()),
                wake: tokio::sync::Notify::new(),
            })),
        })
    }

    /// A destination was disabled (auto-disable).
    pub async fn destination_disabled(
        &self,
        destination_id: DestinationId,
        source_id: SourceId,
        url: &str,
        reason: &str,
    ) {
        let Some(inner) = &self.inner else { return };
        inner
            .queue(
                "destination.disabled",
                json!({
                    "destination_id": destination_id.to_string(),
                    "source_id": source_id.to_string(),
                    "url": url,
                    "reason": reason,
                }),
            )
            .await;
    }

    /// After every recorded attempt: the failure run (`destination.failing`)
    /// and deliveries that failed for good (`delivery.failed`, coalesced).
    pub async fn after_attempt(&self, url: &str, outcome: &AttemptOutcome) {
        let Some(inner) = &self.inner else { return };
        let now = now_ms();
        let (failing, failed_now) = {
            let mut state = inner.lock();
            let run = state
                .failing
                .entry(outcome.destination_id)
                .or_insert((0, false));
            let mut failing = None;
            if outcome.next == Next::Succeeded {
                *run = (0, false);
            } else {
                run.0 = run.0.saturating_add(1);
                if run.0 >= inner.config.failing_after.max(1) && !run.1 {
                    run.1 = true;
                    failing = Some(run.0);
                }
            }
            let mut failed_now = None;
            if outcome.next == Next::Failed {
                let c = state
                    .failed
                    .entry(outcome.destination_id)
                    .or_insert(Coalesced {
                        source_id: outcome.source_id,
                        last_sent_ms: None,
                        count: 0,
                        last_delivery: outcome.item.delivery_id,
                        last_event: outcome.item.event_id,
                    });
                c.count += 1;
                c.last_delivery = outcome.item.delivery_id;
                c.last_event = outcome.item.event_id;
                failed_now = inner.take_due(outcome.destination_id, c, now);
            }
            (failing, failed_now)
        };
        if let Some(consecutive) = failing {
            inner
                .queue(
                    "destination.failing",
                    json!({
                        "destination_id": outcome.destination_id.to_string(),
                        "source_id": outcome.source_id.to_string(),
                        "url": url,
                        "consecutive_failures": consecutive,
                        "last_error": outcome.attempt.error_message,
                    }),
                )
                .await;
        }
        if let Some(data) = failed_now {
            inner.queue("delivery.failed", data).await;
        }
    }

    /// A request to `source_id` failed signature verification.
    pub async fn invalid_signature(&self, source_id: SourceId) {
        let Some(inner) = &self.inner else { return };
        let now = now_ms();
        let window_ms = INVALID_SIGNATURE_WINDOW.as_millis() as i64;
        let burst = {
            let mut state = inner.lock();
            let entry = state.invalid.entry(source_id).or_insert((now, 0, false));
            if now - entry.0 >= window_ms {
                *entry = (now, 0, false);
            }
            entry.1 += 1;
            let reached = entry.1 >= u64::from(inner.config.invalid_signature_burst.max(1));
            if reached && !entry.2 {
                entry.2 = true;
                Some(entry.1)
            } else {
                None
            }
        };
        if let Some(count) = burst {
            inner
                .queue(
                    "ingest.invalid_signatures",
                    json!({
                        "source_id": source_id.to_string(),
                        "count": count,
                        "window_seconds": INVALID_SIGNATURE_WINDOW.as_secs(),
                    }),
                )
                .await;
        }
    }

    /// Sends queued alerts until `stop` turns true: one node at a time on
    /// a shared store. Also flushes coalesced `delivery.failed` counts and
    /// watches storage health.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(inner) = self.inner else { return };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = inner.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            inner.watch_health();
            for data in inner.flush_coalesced(now_ms()) {
                inner.queue("delivery.failed", data).await;
            }
            let ours = !inner.store.is_shared()
                || inner
                    .store
                    .claim_duty("alerts", 10_000)
                    .await
                    .unwrap_or(false);
            if ours {
                inner.send_due().await;
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `delivery.failed` data to send now for `c`, if its interval has
    /// passed (the count restarts).
    fn take_due(
        &self,
        destination_id: DestinationId,
        c: &mut Coalesced,
        now: i64,
    ) -> Option<Value> {
        let interval = self.config.min_interval.as_millis() as i64;
        let due = c.count > 0 && c.last_sent_ms.is_none_or(|at| now - at >= interval);
        if !due {
            return None;
        }
        let data = json!({
            "destination_id": destination_id.to_string(),
            "source_id": c.source_id.to_string(),
            "count": c.count,
            "last_delivery_id": c.last_delivery.to_string(),
            "last_event_id": c.last_event.to_string(),
        });
        c.count = 0;
        c.last_sent_ms = Some(now);
        Some(data)
    }

    fn flush_coalesced(&self, now: i64) -> Vec<Value> {
        let mut state = self.lock();
        let mut out = Vec::new();
        let ids: Vec<DestinationId> = state.failed.keys().copied().collect();
        for id in ids {
            if let Some(c) = state.failed.get_mut(&id) {
                if let Some(data) = self.take_due(id, c, now) {
                    out.push(data);
                }
            }
        }
        out
    }

    /// Queues an alert durably; a store that refuses the write loses it
    /// (logged), as it would lose the change that caused it.
    async fn queue(&self, kind: &str, data: Value) {
        let alert = alert_record(kind, data);
        if let Err(e) = self.store.enqueue_alert(alert).await {
            tracing::warn!(alert = kind, error = %e, "cannot queue an alert");
        }
        self.wake.notify_one();
    }

    /// On storage turning unhealthy, sends `storage.unhealthy` from memory
    /// (the store cannot queue it), retried in the background.
    fn watch_health(self: &Arc<Self>) {
        let healthy = self.store.is_healthy();
        let turned_bad = {
            let mut state = self.lock();
            let turned = !healthy && !state.unhealthy;
            state.unhealthy = !healthy;
            turned
        };
        if turned_bad {
            let inner = self.clone();
            tokio::spawn(async move {
                let mut alert = alert_record(
                    "storage.unhealthy",
                    json!({"reason": "storage is not accepting writes; delivery is paused"}),
                );
                loop {
                    if inner.send(&alert).await.is_ok() {
                        return;
                    }
                    alert.attempts += 1;
                    match inner.next_delay(alert.attempts) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return,
                    }
                }
            });
        }
    }

    fn next_delay(&self, attempts: u32) -> Option<Duration> {
        self.delivery
            .retry_schedule
            .get(attempts.saturating_sub(1) as usize)
            .copied()
    }

    async fn send_due(&self) {
        let due = match self.store.due_alerts(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alert queue");
                return;
            }
        };
        for mut alert in due {
            let result = self.send(&alert).await;
            alert.attempts += 1;
            let done = match result {
                Ok(()) => true,
                Err(message) => match self.next_delay(alert.attempts) {
                    Some(delay) => {
                        tracing::warn!(error = %message, attempt = alert.attempts, "alert not accepted; will retry");
                        alert.next_attempt_ms = now_ms() + delay.as_millis() as i64;
                        false
                    }
                    None => {
                        tracing::error!(error = %message, attempts = alert.attempts, "alert given up after delivery.retry_schedule");
                        true
                    }
                },
            };
            if let Err(e) = self.store.settle_alert(alert, done).await {
                tracing::warn!(error = %e, "cannot record an alert's outcome");
            }
        }
    }

    /// One signed POST; `Err` with why it was not accepted.
    async fn send(&self, alert: &AlertRecord) -> Result<(), String> {
        let url = url::Url::parse(&self.config.url).map_err(|e| e.to_string())?;
        guard_literal(&url, Reach::of(&self.delivery)).map_err(|e| e.to_string())?;
        let id = alert_id(alert.id);
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let body = alert.body.as_bytes();
        let signature =
            signer::signature_header(std::slice::from_ref(&self.key), &id, timestamp, body);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.config.url.as_str())
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set("content-type", "application/json");
        set("webhook-id", &id);
        set("webhook-timestamp", &timestamp.to_string());
        set("webhook-signature", &signature);
        set("user-agent", concat!("Krafter/", env!("CARGO_PKG_VERSION")));
        let exchange = self.client.request(request);
        match tokio::time::timeout(self.delivery.timeout, exchange).await {
            Err(_) => Err("no response in time".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("HTTP {}", response.status())),
        }
    }
}

/// The public id of an alert (`webhook-id`).
fn alert_id(raw: u128) -> String {
    format!("alert_{}", ulid::Ulid(raw))
}

fn alert_record(kind: &str, data: Value) -> AlertRecord {
    let now = now_ms();
    let body = json!({"type": kind, "timestamp": format_ms(now), "data": data});
    AlertRecord {
        id: ulid::Ulid::new().0,
        body: body.to_string(),
        attempts: 0,
        next_attempt_ms: now,
    }
}

impl crate::delivery::engine::AttemptListener for Alerts {
    fn attempted<'a>(
        &'a self,
        url: &'a str,
        outcome: &'a AttemptOutcome,
    ) -> crate::delivery::engine::Listened<'a> {
        Box::pin(self.after_attempt(url, outcome))
    }

    fn disabled<'a>(
        &'a self,
        url: &'a str,
        outcome: &'a AttemptOutcome,
        reason: &'a str,
    ) -> crate::delivery::engine::Listened<'a> {
        Box::pin(self.destination_disabled(outcome.destination_id, outcome.source_id, url, reason))
    }
}
