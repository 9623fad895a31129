//! When to try again: `delivery.retry_schedule` with ±20% jitter, honouring
//! a longer `Retry-After` on 429/503 (capped at the schedule's largest step).

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::store::Next;

/// The next step after attempt `attempt` (1-based) failed at `now_ms`.
pub fn after_failure(
    schedule: &[Duration],
    attempt: u32,
    retry_after: Option<Duration>,
    now_ms: i64,
) -> Next {
    let Some(step) = schedule.get(attempt.saturating_sub(1) as usize) else {
        return Next::Failed;
    };
    let mut delay = jitter(*step);
    if let Some(asked) = retry_after {
        let largest = schedule.iter().max().copied().unwrap_or(*step);
        let asked = asked.min(largest);
        if asked > delay {
            delay = asked;
        }
    }
    Next::RetryAt(now_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2))
}

/// `d` scaled by a random factor in [0.8, 1.2], so retries of many
/// deliveries that failed together do not arrive together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_fails() {
        let schedule = secs(&[5, 300]);
        for _ in 0..200 {
            match after_failure(&schedule, 1, None, 1_000) {
                Next::RetryAt(at) => assert!((1_000 + 4_000..=1_000 + 6_000).contains(&at), "{at}"),
                other => panic!("{other:?}"),
            }
            match after_failure(&schedule, 2, None, 0) {
                Next::RetryAt(at) => assert!((240_000..=360_000).contains(&at), "{at}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(after_failure(&schedule, 3, None, 0), Next::Failed);
    }

    #[test]
    fn jitter_actually_varies() {
        let schedule = secs(&[100]);
        let seen: std::collections::HashSet<_> = (0..50)
            .map(|_| after_failure(&schedule, 1, None, 0))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|n| format!("{n:?}"))
            .collect();
        assert!(seen.len() > 10);
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let schedule = secs(&[1, 60]);
        assert_eq!(
            after_failure(&schedule, 1, Some(Duration::from_secs(30)), 0),
            Next::RetryAt(30_000)
        );
        // Capped at the largest step (60 s).
        assert_eq!(
            after_failure(&schedule, 1, Some(Duration::from_secs(3600)), 0),
            Next::RetryAt(60_000)
        );
        // Shorter than the step: the schedule wins.
        match after_failure(&secs(&[100]), 1, Some(Duration::from_secs(1)), 0) {
            Next::RetryAt(at) => assert!(at >= 80_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
