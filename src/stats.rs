//! The dashboard overview's counters (SPEC §15 "figures from storage"):
//! events in, deliveries out and failed attempts per minute, and each
//! destination's attempts, successes and latency buckets per minute.
//!
//! Counted in memory and added into one stored row per minute every few
//! seconds (and at shutdown): one small write per interval whatever the
//! traffic, nothing added to the ingest or delivery commits, and the
//! figures survive restarts on every backend (a crash loses at most the
//! last interval's counts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::model::ids::DestinationId;
use crate::model::time::now_ms;
use crate::store::{MinuteStats, Store, LATENCY_BUCKETS_MS};

/// How often counts are added into storage.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The counters; cheap to clone.
#[derive(Clone)]
pub struct Stats {
    store: Store,
    pending: Arc<Mutex<HashMap<i64, MinuteStats>>>,
}

fn minute_now() -> i64 {
    now_ms().div_euclid(60_000)
}

/// The latency bucket of `ms` (the last one is open).
pub fn bucket_of(ms: u64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

impl Stats {
    /// Counters flushed into `store`.
    pub fn new(store: Store) -> Stats {
        Stats {
            store,
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, MinuteStats>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_minute(&self, f: impl FnOnce(&mut MinuteStats)) {
        let minute = minute_now();
        let mut pending = self.lock();
        let row = pending
            .entry(minute)
            .or_insert_with(|| MinuteStats::at(minute));
        f(row);
    }

    /// An event was stored.
    pub fn event_in(&self) {
        self.with_minute(|m| m.events_in += 1);
    }

    /// An attempt was recorded: `succeeded` when it delivered.
    pub fn attempt(&self, destination: DestinationId, succeeded: bool, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        // Formatted before the lock every attempt takes.
        let destination = destination.to_string();
        self.with_minute(|m| {
            if succeeded {
                m.delivered += 1;
            } else {
                m.failed_attempts += 1;
            }
            let d = m.destinations.entry(destination).or_default();
            d.attempts += 1;
            d.succeeded += u64::from(succeeded);
            if d.latency.len() <= LATENCY_BUCKETS_MS.len() {
                d.latency.resize(LATENCY_BUCKETS_MS.len() + 1, 0);
            }
            d.latency[bucket_of(ms)] += 1;
        });
    }

    /// Adds what was counted into storage; kept for the next try when the
    /// store refuses.
    pub async fn flush(&self) {
        let rows: Vec<MinuteStats> = self.lock().drain().map(|(_, row)| row).collect();
        for row in rows {
            if let Err(e) = self.store.add_minute_stats(row.clone()).await {
                tracing::warn!(error = %e, "cannot store the overview counters; will retry");
                let mut pending = self.lock();
                pending
                    .entry(row.minute)
                    .or_insert_with(|| MinuteStats::at(row.minute))
                    .merge(&row);
            }
        }
    }

    /// Flushes every few seconds until `stop`, then once more.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            self.flush().await;
            if stopping {
                return;
            }
        }
    }
}
