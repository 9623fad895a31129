//! The delivery engine: one lane per destination.
//!
//! A lane reads only its own destination's range of the durable `due`
//! queue, runs at most `max_in_flight_per_destination` attempts at once and
//! honours the destination's rate limit. Lanes share nothing but the HTTP
//! client and the writer, so a destination that hangs, fails or has a
//! million-delivery backlog cannot delay any other (the backlog stays on
//! disk; a lane holds only its in-flight deliveries in memory).
//!
//! At least once: a delivery leaves the queue only in the same commit that
//! records its success, final failure or cancellation. After a crash the
//! queue is read again from the start, so nothing not recorded as
//! succeeded is lost.
//!
//! Several nodes on one database (SPEC §12): every node has a lane for
//! every destination, but a lane sends only while its node holds the
//! destination's lease. One keeper task per node claims and renews leases
//! for all its lanes in one statement, every third of `delivery.lease_ttl`
//! (and right when another node's lease is due to expire, so a dead node's
//! destinations are taken over within the TTL). An attempt is recorded
//! only under the epoch it ran under; a node that lost the lane meanwhile
//! has its outcome refused and the new owner attempts again. Nodes tell
//! each other which lanes have work (`Store::announce_due`); lanes also
//! poll, so a lost hint only delays.

use crate::model::ids::{DeliveryId, DestinationId, SourceId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::client::{self, ClientError, DeliveryClient};
use super::oauth::{Grant, TokenCache};
use super::resolve::Resolver;
use super::retry;
use super::signer;
use super::worker::{self, AttemptRequest};
use crate::config::DeliveryConfig;
use crate::metrics::Metrics;
use crate::model::records::{
    AttemptRecord, AuthRecord, DeliveryStatus, DestinationRecord, ErrorKind, Ordering,
    RetiredSecret,
};
use crate::model::time::now_ms;
use crate::store::{Announcement, AttemptOutcome, DueItem, Next, Store, StoreError};

/// How long a lane sleeps at most before looking at its queue again, in
/// case a wake-up was missed (e.g. a retry scheduled by another process
/// before a restart).
const IDLE_RECHECK: Duration = Duration::from_secs(30);

/// How long an item that hit a storage error waits before the lane may
/// take it again.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

/// How often a lane looks again while storage refuses writes.
const UNHEALTHY_RECHECK: Duration = Duration::from_secs(1);

/// Longest wait between two tries to record an attempt's outcome.
const MAX_RECORD_RETRY: Duration = Duration::from_secs(5);

/// How often the lease keeper tries again after a failed claim.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// Shortest pause between two rounds of the lease keeper.
const MIN_CLAIM_GAP: Duration = Duration::from_millis(200);

/// Hears about attempts' outcomes once they are recorded: the alerts
/// (SPEC §15), set at start-up with [`Engine::set_alerts`]. A trait so
/// that delivery does not depend on who listens.
pub trait AttemptListener: Send + Sync {
    /// After an attempt's outcome was recorded (not stale, not fenced off).
    fn attempted<'a>(&'a self, url: &'a str, outcome: &'a AttemptOutcome) -> Listened<'a>;

    /// After `outcome` disabled its destination, for `reason`.
    fn disabled<'a>(
        &'a self,
        url: &'a str,
        outcome: &'a AttemptOutcome,
        reason: &'a str,
    ) -> Listened<'a>;
}

/// What an [`AttemptListener`] does, awaited by the attempt's task.
pub type Listened<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Handle to the running engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: DeliveryClient,
    /// What `client` resolves names with; destination creation asks it too.
    resolver: Resolver,
    config: DeliveryConfig,
    metrics: Arc<Metrics>,
    lanes: Mutex<HashMap<DestinationId, Arc<Lane>>>,
    stop: watch::Sender<bool>,
    tracker: TaskTracker,
    /// Several nodes share the store: lanes send only under a lease.
    shared: bool,
    /// Asks the lease keeper for a round now (a new lane, lost hints).
    claim_now: Notify,
    /// Clients of destinations with a client certificate (mTLS), by
    /// destination, with the `updated_at` they were built for.
    identity_clients: Mutex<HashMap<DestinationId, (i64, DeliveryClient)>>,
    /// Where attempts' outcomes are reported for alerts (set once at
    /// start-up; none in tools that run the engine alone).
    alerts: std::sync::OnceLock<Arc<dyn AttemptListener>>,
    /// The overview's counters (set once at start-up).
    stats: std::sync::OnceLock<crate::stats::Stats>,
    /// Tracing (set once at start-up when it is on): a span per attempt.
    telemetry: std::sync::OnceLock<crate::telemetry::Telemetry>,
    /// OAuth2 tokens of destinations using client credentials.
    tokens: TokenCache,
}

struct Lane {
    source_id: SourceId,
    destination_id: DestinationId,
    wake: Notify,
    /// Deliveries taken from the queue and not yet recorded.
    in_flight: Mutex<HashSet<DeliveryId>>,
    /// Attempts allowed at once (released when the HTTP exchange ends).
    permits: Arc<Semaphore>,
    lease: Mutex<Lease>,
}

/// Where this node stands on a lane's lease.
#[derive(Clone, Copy)]
struct Lease {
    /// The epoch held, and until when (local clock, counted from before
    /// the claim was sent) it may be used; `None` = for ever (one node).
    held: Option<(u64, Option<Instant>)>,
}

impl Lane {
    /// The epoch under which a new attempt may start now, if any: the
    /// lease must have `margin` left, so that an attempt normally ends
    /// (and is recorded) before another node could take the lane over.
    fn usable_epoch(&self, margin: Duration) -> Option<u64> {
        match lock(&self.lease).held {
            Some((epoch, None)) => Some(epoch),
            Some((epoch, Some(until))) if Instant::now() + margin < until => Some(epoch),
            _ => None,
        }
    }
}

impl Engine {
    /// Builds the HTTP client (resolving names with `resolver`) and starts a
    /// lane for every destination.
    pub async fn start(
        store: Store,
        config: DeliveryConfig,
        metrics: Arc<Metrics>,
        resolver: Resolver,
    ) -> Result<Engine, EngineError> {
        let client = client::build(&config, resolver.clone())?;
        let (stop, _) = watch::channel(false);
        let shared = store.is_shared();
        let announcements = store.announcements();
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                client,
                resolver,
                config,
                metrics,
                lanes: Mutex::new(HashMap::new()),
                stop,
                tracker: TaskTracker::new(),
                shared,
                claim_now: Notify::new(),
                identity_clients: Mutex::new(HashMap::new()),
                alerts: std::sync::OnceLock::new(),
                stats: std::sync::OnceLock::new(),
                telemetry: std::sync::OnceLock::new(),
                tokens: TokenCache::default(),
            }),
        };
        for (source_id, destination_id) in engine.inner.store.all_destination_ids().await? {
            engine.wake_local(source_id, destination_id);
        }
        if shared {
            let keeper = engine.clone();
            engine
                .inner
                .tracker
                .spawn(async move { keeper.keep_leases().await });
            if let Some(hints) = announcements {
                let listener = engine.clone();
                engine
                    .inner
                    .tracker
                    .spawn(async move { listener.follow_hints(hints).await });
            }
        }
        Ok(engine)
    }

    /// Counts attempts into `stats` from now on (the dashboard overview).
    pub fn set_stats(&self, stats: crate::stats::Stats) {
        let _ = self.inner.stats.set(stats);
    }

    /// Traces every attempt from now on (SPEC §15), each in the trace of
    /// the ingest that stored its event.
    pub fn set_telemetry(&self, telemetry: crate::telemetry::Telemetry) {
        let _ = self.inner.telemetry.set(telemetry);
    }

    /// Reports attempts' outcomes to `alerts` from now on (SPEC §15).
    pub fn set_alerts(&self, alerts: Arc<dyn AttemptListener>) {
        let _ = self.inner.alerts.set(alerts);
    }

    /// The resolver deliveries connect with, so that the SSRF check at
    /// destination creation judges the same answers.
    pub fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// Tells a destination's lane to look at its queue (starting the lane
    /// if needed). Called after commits that queue deliveries. With several
    /// nodes, the node holding the lane is told too.
    pub fn wake(&self, source_id: SourceId, destination_id: DestinationId) {
        let lane = self.wake_local(source_id, destination_id);
        if self.inner.shared && lane.and_then(|l| l.usable_epoch(Duration::ZERO)).is_none() {
            self.inner.store.announce_due(source_id, destination_id);
        }
    }

    /// Wakes (or starts) this node's lane of a destination.
    fn wake_local(&self, source_id: SourceId, destination_id: DestinationId) -> Option<Arc<Lane>> {
        if *self.inner.stop.borrow() {
            return None;
        }
        let lane = {
            let mut lanes = lock(&self.inner.lanes);
            if let Some(lane) = lanes.get(&destination_id) {
                lane.clone()
            } else {
                let lane = Arc::new(Lane {
                    source_id,
                    destination_id,
                    wake: Notify::new(),
                    in_flight: Mutex::new(HashSet::new()),
                    permits: Arc::new(Semaphore::new(
                        self.inner.config.max_in_flight_per_destination,
                    )),
                    lease: Mutex::new(Lease {
                        // One node holds every lane; shared ones wait for
                        // the keeper's claim.
                        held: (!self.inner.shared).then_some((0, None)),
                    }),
                });
                if self.inner.shared {
                    self.inner.claim_now.notify_one();
                }
                lanes.insert(destination_id, lane.clone());
                let inner = self.inner.clone();
                let run_lane = lane.clone();
                self.inner
                    .tracker
                    .spawn(async move { run(inner, run_lane).await });
                lane
            }
        };
        lane.wake.notify_one();
        Some(lane)
    }

    /// The lease keeper (several nodes only): claims and renews this node's
    /// leases on all its lanes in one statement per round, and finds
    /// destinations other nodes created.
    async fn keep_leases(&self) {
        let inner = &self.inner;
        let ttl = inner.config.lease_ttl;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let margin = inner.attempt_margin();
        let mut stop = inner.stop.subscribe();
        let mut next_full_scan = Instant::now() + ttl / 3;
        loop {
            if *stop.borrow() {
                return;
            }
            if Instant::now() >= next_full_scan {
                next_full_scan = Instant::now() + ttl / 3;
                match inner.store.all_destination_ids().await {
                    Ok(ids) => {
                        for (source_id, destination_id) in ids {
                            if !lock(&inner.lanes).contains_key(&destination_id) {
                                self.wake_local(source_id, destination_id);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot list destinations to claim"),
                }
            }
            let asked_at = Instant::now();
            let mut wait = ttl / 3;
            let alive = match inner.store.node_heartbeat(ttl_ms).await {
                Ok(alive) => alive,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the other nodes; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(CLAIM_RETRY) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            let lanes: Vec<Arc<Lane>> = lock(&inner.lanes).values().cloned().collect();
            let (shed, max_new) = self.rebalance(&lanes, alive).await;
            let wanted = lanes
                .iter()
                .map(|l| l.destination_id)
                .filter(|d| !shed.contains(d))
                .collect();
            match inner.store.claim_lanes(wanted, ttl_ms, max_new).await {
                Ok(claims) => {
                    let by_id: HashMap<DestinationId, &Arc<Lane>> =
                        lanes.iter().map(|l| (l.destination_id, l)).collect();
                    for claim in claims {
                        let Some(lane) = by_id.get(&claim.destination_id) else {
                            continue;
                        };
                        // A lane that could not send before this claim
                        // (no lease, or too little of it left) may now.
                        let was_usable = lane.usable_epoch(margin);
                        let gained = {
                            let mut lease = lock(&lane.lease);
                            lease.held = claim.held.map(|epoch| (epoch, Some(asked_at + ttl)));
                            if let Some(ms) = claim.others_expire_in_ms {
                                // Another node's: ask again right when its
                                // lease runs out (unless renewed, the lane
                                // is free then).
                                wait = wait.min(Duration::from_millis(ms));
                            }
                            claim.held.is_some() && was_usable != claim.held
                        };
                        if gained {
                            tracing::debug!(destination = %lane.destination_id.to_string(), "this node now runs the destination's deliveries");
                            lane.wake.notify_one();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim delivery leases; will retry");
                    wait = CLAIM_RETRY;
                }
            }
            let wait = wait.max(MIN_CLAIM_GAP);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = inner.claim_now.notified() => {
                    // Let a burst of new lanes gather into one claim.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = stop.changed() => {}
            }
        }
    }

    /// Each node runs about its share of the lanes (`lanes / alive`,
    /// rounded up). Holding more (a node joined), it hands idle lanes over
    /// — none with an attempt in flight, which would then be sent again —
    /// and answers them with how many new lanes it may take.
    async fn rebalance(&self, lanes: &[Arc<Lane>], alive: u64) -> (HashSet<DestinationId>, usize) {
        let share = lanes
            .len()
            .div_ceil(usize::try_from(alive).unwrap_or(1).max(1));
        let held: Vec<&Arc<Lane>> = lanes
            .iter()
            .filter(|l| lock(&l.lease).held.is_some())
            .collect();
        let mut shed = HashSet::new();
        if held.len() > share {
            for lane in held.iter().filter(|l| lock(&l.in_flight).is_empty()) {
                if shed.len() == held.len() - share {
                    break;
                }
                lock(&lane.lease).held = None;
                shed.insert(lane.destination_id);
            }
            if let Err(e) = self
                .inner
                .store
                .release_lanes(shed.iter().copied().collect())
                .await
            {
                tracing::warn!(error = %e, "could not hand lanes over; they move when their leases expire");
            }
        }
        (shed.clone(), share.saturating_sub(held.len() - shed.len()))
    }

    /// Wakes the lanes other nodes announce work for (several nodes only).
    async fn follow_hints(&self, mut hints: tokio::sync::mpsc::Receiver<Announcement>) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let hint = tokio::select! {
                hint = hints.recv() => hint,
                _ = stop.changed() => return,
            };
            match hint {
                Some(Announcement::Due(source_id, destination_id)) => {
                    self.wake_local(source_id, destination_id);
                }
                Some(Announcement::Missed) => {
                    let lanes: Vec<Arc<Lane>> = lock(&self.inner.lanes).values().cloned().collect();
                    for lane in lanes {
                        lane.wake.notify_one();
                    }
                    self.inner.claim_now.notify_one();
                }
                None => return,
            }
        }
    }

    /// Stops taking new attempts and waits (bounded) for in-flight ones to
    /// finish and be recorded; unfinished ones stay queued for next start.
    pub async fn shutdown(&self, grace: Duration) {
        // `send` would do nothing while no lane has subscribed yet (an idle
        // engine, or a lane spawned but not yet polled): that lane would then
        // never stop and keep the store open. `send_replace` always sets it.
        self.inner.stop.send_replace(true);
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "delivery attempts still running at shutdown stay queued for the next start"
            );
        }
        if self.inner.shared {
            // Another node takes these lanes over at once instead of after
            // the lease TTL.
            let held: Vec<DestinationId> = lock(&self.inner.lanes)
                .values()
                .filter(|l| lock(&l.lease).held.is_some())
                .map(|l| l.destination_id)
                .collect();
            let released = self.inner.store.release_lanes(held).await;
            if let Err(e) = released.and(self.inner.store.leave().await) {
                tracing::warn!(error = %e, "could not release delivery leases; other nodes take them over after delivery.lease_ttl");
            }
        }
    }

    /// Deliveries waiting, and the age in ms of the oldest one, for metrics.
    pub async fn queue_stats(&self) -> Result<(u64, Option<i64>), StoreError> {
        let destinations: Vec<DestinationId> = lock(&self.inner.lanes).keys().copied().collect();
        let (pending, oldest) = self.inner.store.queue_depth(destinations).await?;
        Ok((pending, oldest.map(|due| (now_ms() - due as i64).max(0))))
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Inner {
    /// How much lease a new attempt needs left: its timeout, but at most a
    /// third of the TTL (renewals come every third).
    fn attempt_margin(&self) -> Duration {
        self.config.timeout.min(self.config.lease_ttl / 3)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Due deliveries a lane (on one node) reads beyond its free slots, and
/// starts from memory as slots free up: one queue read then serves many
/// attempts instead of one read (skipping every in-flight entry) per
/// completed attempt.
const READ_AHEAD: usize = 64;

/// A lane's destination as last read, with its signing keys opened, used
/// again while [`Store::settings_version`] says nothing changed.
struct Current {
    version: Option<u64>,
    record: Arc<DestinationRecord>,
    /// The keys, or why they could not be opened.
    keys: Result<Arc<[Vec<u8>]>, String>,
    /// When the keys must be opened again (a retired secret expires).
    keys_until_ms: Option<i64>,
}

impl Current {
    /// The destination, read again only when something may have changed.
    async fn refresh(
        known: Option<Current>,
        inner: &Inner,
        lane: &Lane,
    ) -> Result<Current, StoreError> {
        // The version is read before the record: a change committed in
        // between moves it on, and the next pass reads again.
        let version = inner.store.settings_version();
        if let Some(known) = known {
            let keys_current = known.keys_until_ms.is_none_or(|until| until > now_ms());
            if version.is_some() && known.version == version && keys_current {
                return Ok(known);
            }
        }
        let record = inner
            .store
            .destination(lane.source_id, lane.destination_id)
            .await?;
        // One `now` for both: the keys opened are those live until then.
        let now = now_ms();
        let keys = signing_keys(&inner.store, &record, now)
            .map(Arc::from)
            .map_err(|e| e.to_string());
        let keys_until_ms = RetiredSecret::live_until(record.previous_secret.as_ref(), now);
        Ok(Current {
            version,
            record: Arc::new(record),
            keys,
            keys_until_ms,
        })
    }
}

/// A lane's loop: read what is due (up to the free slots, and on one node
/// [`READ_AHEAD`] more), start attempts as slots are free, sleep until
/// woken or until the next delivery falls due.
async fn run(inner: Arc<Inner>, lane: Arc<Lane>) {
    let mut stop = inner.stop.subscribe();
    let mut next_slot = Instant::now();
    let mut current: Option<Current> = None;
    // Read from the queue, marked in flight, not yet started.
    let mut ahead: VecDeque<DueItem> = VecDeque::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let destination = match Current::refresh(current.take(), &inner, &lane).await {
            Ok(c) => current.insert(c),
            Err(StoreError::NotFound) => break,
            Err(e) => {
                tracing::error!(error = %e, "delivery lane cannot read its destination");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut wait = IDLE_RECHECK;
        let free = lane.permits.available_permits();
        // While storage cannot record outcomes, nothing new is sent: an
        // attempt whose outcome cannot be recorded would be sent again.
        let writable = inner.store.is_healthy();
        if !writable {
            wait = UNHEALTHY_RECHECK;
        }
        // With several nodes, only while this one holds the lane's lease.
        let epoch = lane
            .usable_epoch(inner.attempt_margin())
            .filter(|_| destination.record.enabled && writable);
        let fifo = destination.record.options.ordering == Ordering::Fifo;
        if (epoch.is_none() || fifo) && !ahead.is_empty() {
            // Not sent now (or, the destination now `fifo`, maybe out of
            // order): back to the queue, read again when they may be.
            let mut in_flight = lock(&lane.in_flight);
            for item in ahead.drain(..) {
                in_flight.remove(&item.delivery_id);
            }
        }
        if let Some(epoch) = epoch.filter(|_| free > 0) {
            let now = now_ms().max(0) as u64;
            let read = if fifo {
                let in_flight = lock(&lane.in_flight).clone();
                Some(fifo_due(&inner.store, lane.destination_id, now, &in_flight).await)
            } else if ahead.len() < free {
                let in_flight = lock(&lane.in_flight).clone();
                // Several nodes: read no more than this one starts now, so
                // a lane it hands over has nothing waiting here.
                let extra = if inner.shared { 0 } else { READ_AHEAD };
                let limit = free - ahead.len() + extra;
                Some(
                    inner
                        .store
                        .due_for(lane.destination_id, now, &in_flight, limit)
                        .await,
                )
            } else {
                None
            };
            match read {
                Some(Ok((items, next_due))) => {
                    if let Some(due) = next_due {
                        wait = wait.min(Duration::from_millis(due.saturating_sub(now)));
                    }
                    let mut in_flight = lock(&lane.in_flight);
                    for item in items {
                        in_flight.insert(item.delivery_id);
                        ahead.push_back(item);
                    }
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "delivery lane cannot read its queue");
                    wait = Duration::from_secs(1);
                }
                None => {}
            }
            while let Some(item) = ahead.front().copied() {
                let Ok(permit) = lane.permits.clone().try_acquire_owned() else {
                    break;
                };
                if let Some(rate) = destination.record.rate_limit.filter(|r| *r > 0) {
                    let now = Instant::now();
                    if next_slot > now {
                        // Shutdown doesn't wait for a rate-limited
                        // backlog: what is not sent stays queued.
                        tokio::select! {
                            _ = tokio::time::sleep_until(next_slot) => {}
                            _ = stop.changed() => break,
                        }
                        if *stop.borrow() {
                            break;
                        }
                    }
                    next_slot = next_slot.max(now) + Duration::from_secs_f64(1.0 / f64::from(rate));
                }
                ahead.pop_front();
                let (inner, lane) = (inner.clone(), lane.clone());
                let (record, keys) = (destination.record.clone(), destination.keys.clone());
                inner.tracker.clone().spawn(async move {
                    deliver(&inner, &lane, &record, keys, item, epoch, permit).await;
                    lock(&lane.in_flight).remove(&item.delivery_id);
                    lane.wake.notify_one();
                });
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = lane.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    lock(&inner.lanes).remove(&lane.destination_id);
}

/// What a `fifo` destination may attempt now: nothing while one of its
/// attempts is in flight (or not yet recorded); else the first pending
/// delivery in event order, once it is due — a later one never overtakes
/// it, even while it waits for a retry (SPEC §13 `ordering`).
async fn fifo_due(
    store: &Store,
    destination: DestinationId,
    now: u64,
    in_flight: &HashSet<DeliveryId>,
) -> Result<(Vec<DueItem>, Option<u64>), StoreError> {
    if !in_flight.is_empty() {
        // The lane is woken when that attempt's outcome is recorded.
        return Ok((Vec::new(), None));
    }
    Ok(match store.fifo_head(destination).await? {
        Some(head) if head.due_ms <= now => (vec![head], None),
        Some(head) => (Vec::new(), Some(head.due_ms)),
        None => (Vec::new(), None),
    })
}

/// Runs one attempt of `item` and records its outcome.
async fn deliver(
    inner: &Inner,
    lane: &Lane,
    destination: &DestinationRecord,
    keys: Result<Arc<[Vec<u8>]>, String>,
    item: DueItem,
    lease_epoch: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let loaded = inner
        .store
        .attempt_inputs(item.event_id, item.delivery_id)
        .await;
    let (event, delivery) = match loaded {
        Ok(pair) => pair,
        // Deleted since it was queued (source deleted, retention).
        Err(StoreError::NotFound) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot load a delivery");
            // It stays queued; pause so the lane does not spin on it.
            tokio::time::sleep(ERROR_PAUSE).await;
            return;
        }
    };
    // Cancelled (destination disabled or deleted) while this item waited
    // for its rate-limit slot: it must not be sent.
    if delivery.status != DeliveryStatus::Pending {
        return;
    }
    let keys = match keys {
        Ok(keys) => keys,
        Err(e) => {
            tracing::error!(destination = %destination.id.to_string(), error = %e, "cannot open the destination secret");
            tokio::time::sleep(ERROR_PAUSE).await;
            return;
        }
    };
    let number = delivery.attempts + 1;
    let started_at_ms = now_ms();
    let span = inner
        .telemetry
        .get()
        .map(|t| t.attempt_span(&event, lane.destination_id, item.delivery_id, number));
    let trace = span.as_ref().and_then(|s| s.context());
    let result = attempt_with_options(inner, destination, &event, &keys, number, trace).await;
    if let Some(span) = span {
        span.finish(result.status, result.error_kind, result.duration);
    }
    drop(permit);
    // A slot is free: the lane can start another delivery while this
    // outcome is being committed.
    lane.wake.notify_one();
    inner.metrics.observe_attempt(
        result.error_kind.map_or("succeeded", ErrorKind::as_str),
        result.duration,
    );
    if let Some(kind) = result.error_kind {
        // Ids, numbers and the error only: never the URL (it may carry a
        // token), the body or the response.
        tracing::warn!(
            destination = %lane.destination_id.to_string(),
            event = %item.event_id.to_string(),
            delivery = %item.delivery_id.to_string(),
            attempt = number,
            error_kind = kind.as_str(),
            status = result.status,
            "delivery attempt failed"
        );
    }
    let finished_ms = started_at_ms + result.duration.as_millis() as i64;
    let next = if result.succeeded() {
        Next::Succeeded
    } else {
        retry::after_failure(
            &inner.config.retry_schedule,
            number,
            result.retry_after,
            finished_ms,
        )
    };
    let outcome = AttemptOutcome {
        destination_id: lane.destination_id,
        source_id: lane.source_id,
        item,
        attempt: AttemptRecord {
            number,
            started_at_ms,
            duration_ms: result.duration.as_millis() as u64,
            status_code: result.status,
            error_kind: result.error_kind,
            error_message: result.error_message,
            response_snippet: result.snippet,
        },
        next,
        disable_after_ms: inner.config.disable_after.as_millis() as i64,
        lease_epoch,
        lane_waits: destination.options.ordering == Ordering::Fifo,
    };
    // The item stays in the lane's in-flight set until its outcome is
    // recorded, so it is not handed out (and sent) again meanwhile. When
    // storage refuses the write (disk full, failed commit), keep the outcome
    // and try again: the store reopens itself once it can.
    let outcome = Arc::new(outcome);
    let mut stop = inner.stop.subscribe();
    let mut delay = Duration::from_millis(200);
    loop {
        match inner.store.record_attempt(outcome.as_ref().clone()).await {
            Ok(recorded) => {
                if recorded.fenced_off {
                    tracing::info!(
                        destination = %lane.destination_id.to_string(),
                        delivery = %item.delivery_id.to_string(),
                        "another node took this destination over; it attempts the delivery again"
                    );
                    let mut lease = lock(&lane.lease);
                    if lease.held.map(|(epoch, _)| epoch) == Some(lease_epoch) {
                        lease.held = None;
                    }
                }
                if recorded.disabled_destination {
                    inner.metrics.destinations_disabled.inc();
                    tracing::warn!(
                        destination = %lane.destination_id.to_string(),
                        "destination disabled: every delivery failed for delivery.disable_after"
                    );
                }
                if let Some(stats) = inner.stats.get() {
                    if !recorded.fenced_off && !recorded.stale {
                        stats.attempt(
                            lane.destination_id,
                            outcome.next == Next::Succeeded,
                            Duration::from_millis(outcome.attempt.duration_ms),
                        );
                    }
                }
                if let Some(alerts) = inner.alerts.get() {
                    if !recorded.fenced_off && !recorded.stale {
                        alerts.attempted(&destination.url, &outcome).await;
                    }
                    if recorded.disabled_destination {
                        let reason = format!(
                            "every delivery failed for {} (delivery.disable_after)",
                            humantime::format_duration(inner.config.disable_after)
                        );
                        alerts.disabled(&destination.url, &outcome, &reason).await;
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?delay, "cannot record a delivery attempt; delivery pauses until it can");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // At shutdown the delivery stays queued; it is attempted again
            // after the restart (at least once).
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        delay = (delay * 2).min(MAX_RECORD_RETRY);
    }
}

impl Inner {
    /// The client for `destination`: the shared one, or (with a client
    /// certificate) its own, built once per version of the destination.
    fn client_for(&self, destination: &DestinationRecord) -> Result<DeliveryClient, String> {
        let Some(cert) = &destination.options.tls_client_certificate else {
            return Ok(self.client.clone());
        };
        let mut clients = lock(&self.identity_clients);
        if let Some((version, client)) = clients.get(&destination.id) {
            if *version == destination.updated_at_ms {
                return Ok(client.clone());
            }
        }
        let key = self
            .store
            .open_secret(&cert.key_pem)
            .map_err(|e| format!("cannot open the client certificate key: {e}"))?;
        let key = String::from_utf8(key)
            .map_err(|_| "the client certificate key is not PEM".to_string())?;
        let identity = super::mtls::identity(&cert.cert_pem, &key).map_err(|e| e.to_string())?;
        let client =
            client::build_with_identity(&self.config, self.resolver.clone(), Some(identity))
                .map_err(|e| e.to_string())?;
        clients.insert(destination.id, (destination.updated_at_ms, client.clone()));
        Ok(client)
    }

    /// The `authorization` header value of the destination's `auth`; an
    /// OAuth2 token comes from the cache or its token endpoint.
    async fn authorization(
        &self,
        client: &DeliveryClient,
        destination: &DestinationRecord,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        let open = |sealed: &[u8]| -> Result<String, String> {
            let bytes = self
                .store
                .open_secret(sealed)
                .map_err(|e| format!("cannot open the destination's credentials: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "stored credentials are not text".to_string())
        };
        match &destination.options.auth {
            None => Ok(None),
            Some(AuthRecord::Basic { username, password }) => {
                use base64::Engine;
                let pair = format!("{username}:{}", open(password)?);
                Ok(Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            Some(AuthRecord::Bearer { token }) => Ok(Some(format!("Bearer {}", open(token)?))),
            Some(AuthRecord::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
            }) => {
                if let Some(token) = self
                    .tokens
                    .cached(destination.id, destination.updated_at_ms)
                {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let secret = open(client_secret)?;
                let grant = Grant {
                    token_url,
                    client_id,
                    client_secret: &secret,
                    scope: scope.as_deref(),
                    audience: audience.as_deref(),
                };
                let token = self
                    .tokens
                    .token(
                        client,
                        client::Reach::of(&self.config),
                        timeout,
                        destination.id,
                        destination.updated_at_ms,
                        &grant,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }
}

/// One attempt with the destination's options (SPEC §13): its client
/// (mTLS), timeout, headers and credentials. An OAuth2 destination that
/// answers 401 gets one more try with a freshly fetched token.
async fn attempt_with_options(
    inner: &Inner,
    destination: &DestinationRecord,
    event: &crate::model::records::EventRecord,
    keys: &[Vec<u8>],
    number: u32,
    trace: Option<crate::model::trace::TraceContext>,
) -> worker::AttemptResult {
    let started = std::time::Instant::now();
    let timeout = destination
        .options
        .timeout_ms
        .map_or(inner.config.timeout, Duration::from_millis);
    let client = match inner.client_for(destination) {
        Ok(c) => c,
        Err(message) => return worker::AttemptResult::failure(started, ErrorKind::Tls, message),
    };
    let authorization = match inner.authorization(&client, destination, timeout).await {
        Ok(a) => a,
        Err(message) => return worker::AttemptResult::failure(started, ErrorKind::Auth, message),
    };
    let send = |authorization: Option<String>| {
        let client = client.clone();
        async move {
            worker::attempt(
                &client,
                AttemptRequest {
                    url: &destination.url,
                    event,
                    keys,
                    attempt: number,
                    timeout,
                    reach: client::Reach::of(&inner.config),
                    headers: &destination.options.headers,
                    authorization: authorization.as_deref(),
                    trace,
                },
            )
            .await
        }
    };
    let oauth = matches!(
        destination.options.auth,
        Some(AuthRecord::OAuth2ClientCredentials { .. })
    );
    // Only an OAuth2 token is refetched after a 401, so only it is kept.
    let sent = if oauth { authorization.clone() } else { None };
    let mut result = send(authorization).await;
    if oauth && result.status == Some(401) {
        if let Some(rejected) = sent.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
            inner.tokens.forget(destination.id, rejected);
        }
        result = match inner.authorization(&client, destination, timeout).await {
            Ok(fresh) => send(fresh).await,
            Err(message) => worker::AttemptResult::failure(started, ErrorKind::Auth, message),
        };
        result.duration = started.elapsed();
    }
    result
}

/// The destination's HMAC keys: the current secret, plus the previous one
/// during the 24 h after a rotation.
fn signing_keys(
    store: &Store,
    d: &DestinationRecord,
    now: i64,
) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut keys = Vec::with_capacity(2);
    let current = String::from_utf8(store.open_secret(&d.secret)?)?;
    keys.push(signer::secret_key(&current)?);
    if let Some(RetiredSecret { sealed, until_ms }) = &d.previous_secret {
        if *until_ms > now {
            let previous = String::from_utf8(store.open_secret(sealed)?)?;
            keys.push(signer::secret_key(&previous)?);
        }
    }
    Ok(keys)
}
