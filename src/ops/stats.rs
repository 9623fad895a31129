//! The dashboard overview's figures (SPEC §15): traffic per minute over
//! the last hour and per hour over the last week, and each destination's
//! success rate, p95 attempt latency, backlog and state, all read from
//! storage (`crate::stats` keeps the counters there).

use super::{Caller, OpError, Ops};
use crate::model::records::{DestinationRecord, Scope};
use crate::model::time::now_ms;
use crate::store::{MinuteStats, LATENCY_BUCKETS_MS};

/// Sources whose destinations the overview lists (the first page).
const MAX_SOURCES: usize = 250;
/// Destinations the overview lists at most.
const MAX_DESTINATIONS: usize = 200;
/// A backlog is counted up to this many deliveries.
pub const MAX_BACKLOG: usize = 100_000;

/// One bar of a chart: its start (Unix ms) and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bar {
    pub start_ms: i64,
    pub events_in: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
}

/// One destination's row.
#[derive(Debug, Clone)]
pub struct DestinationFigures {
    pub destination: DestinationRecord,
    pub source_name: String,
    /// Attempts in the last hour.
    pub attempts: u64,
    /// Share of those attempts that delivered, 0–1.
    pub success_rate: Option<f64>,
    /// Upper bound of the bucket holding the 95th percentile (ms);
    /// `Some(u64::MAX)` past the last bound.
    pub p95_ms: Option<u64>,
    pub backlog: u64,
    /// Earliest due time of a pending delivery (Unix ms).
    pub oldest_due_ms: Option<i64>,
    /// `enabled`, `failing` or `disabled`.
    pub state: &'static str,
}

/// Everything the overview page shows.
#[derive(Debug, Clone)]
pub struct Overview {
    /// 60 bars, one per minute, oldest first.
    pub last_hour: Vec<Bar>,
    /// 168 bars, one per hour, oldest first.
    pub last_week: Vec<Bar>,
    pub destinations: Vec<DestinationFigures>,
}

/// The 95th percentile's bucket bound from bucket counts.
pub fn p95(buckets: &[u64]) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let needed = (total * 95).div_ceil(100);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= needed {
            return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

fn bars(rows: &[MinuteStats], start_minute: i64, count: i64, width: i64) -> Vec<Bar> {
    let mut out: Vec<Bar> = (0..count)
        .map(|i| Bar {
            start_ms: (start_minute + i * width) * 60_000,
            ..Bar::default()
        })
        .collect();
    for row in rows {
        let slot = (row.minute - start_minute).div_euclid(width);
        if let Some(bar) = usize::try_from(slot).ok().and_then(|s| out.get_mut(s)) {
            bar.events_in += row.events_in;
            bar.delivered += row.delivered;
            bar.failed_attempts += row.failed_attempts;
        }
    }
    out
}

impl Ops {
    /// The overview's figures (read scope).
    pub async fn overview(&self, caller: &Caller) -> Result<Overview, OpError> {
        caller.require(Scope::Read)?;
        let now_minute = now_ms().div_euclid(60_000);
        let hour_start = now_minute - 59;
        let week_start = (now_minute.div_euclid(60) - 167) * 60;
        let rows = self.store().minute_stats(week_start).await?;
        let last_hour = bars(&rows, hour_start, 60, 1);
        let last_week = bars(&rows, week_start, 168, 60);

        let mut destinations = Vec::new();
        let sources = self.store().list_sources(None, MAX_SOURCES).await?;
        'sources: for (source, _) in sources.items {
            let Ok(list) = self.store().destinations_of_source(source.id).await else {
                continue; // deleted meanwhile
            };
            for destination in list {
                if destinations.len() == MAX_DESTINATIONS {
                    break 'sources;
                }
                let key = destination.id.to_string();
                let mut attempts = 0;
                let mut succeeded = 0;
                let mut buckets = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
                for row in rows.iter().filter(|r| r.minute >= hour_start) {
                    if let Some(d) = row.destinations.get(&key) {
                        attempts += d.attempts;
                        succeeded += d.succeeded;
                        for (b, n) in buckets.iter_mut().zip(&d.latency) {
                            *b += n;
                        }
                    }
                }
                let (backlog, oldest_due_ms) = self
                    .store()
                    .destination_backlog(destination.id, MAX_BACKLOG)
                    .await?;
                let state = if !destination.enabled {
                    "disabled"
                } else if destination.failing_since_ms.is_some() {
                    "failing"
                } else {
                    "enabled"
                };
                destinations.push(DestinationFigures {
                    source_name: source.name.clone(),
                    attempts,
                    success_rate: (attempts > 0).then(|| succeeded as f64 / attempts as f64),
                    p95_ms: p95(&buckets),
                    backlog,
                    oldest_due_ms,
                    state,
                    destination,
                });
            }
        }
        Ok(Overview {
            last_hour,
            last_week,
            destinations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_bucket_holding_the_95th_percentile() {
        assert_eq!(p95(&[0; 12]), None);
        let mut b = vec![0; 12];
        b[0] = 95;
        b[5] = 5;
        assert_eq!(p95(&b), Some(10));
        b[0] = 94;
        assert_eq!(p95(&b), Some(500));
        b[11] = 100;
        assert_eq!(p95(&b), Some(u64::MAX));
    }

    #[test]
    fn bars_put_each_minute_in_its_slot() {
        let row = |minute, events_in| MinuteStats {
            minute,
            events_in,
            ..Default::default()
        };
        let out = bars(
            &[row(100, 1), row(159, 2), row(160, 4), row(99, 8)],
            100,
            2,
            60,
        );
        assert_eq!(out[0].events_in, 3);
        assert_eq!(out[1].events_in, 4);
        assert_eq!(out[0].start_ms, 100 * 60_000);
    }
}
