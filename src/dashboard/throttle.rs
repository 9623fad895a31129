//! Sign-in throttling per client address.
//!
//! API keys are 190+ bits of randomness, so guessing one is hopeless; the
//! limit is there so a client cannot make the sign-in page (a key lookup
//! and, on success, a write) its way to load the server, and so password
//! managers and scripts gone wrong are slowed rather than served forever.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the per-minute budget applies to.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered before stale windows are dropped.
const PRUNE_AT: usize = 10_000;

/// Fixed one-minute windows of sign-in attempts, per client address (IPv6
/// per /64: one host usually holds a whole /64).
pub struct SignInThrottle {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl SignInThrottle {
    /// Allows `per_minute` attempts per address and minute.
    pub fn new(per_minute: u32) -> SignInThrottle {
        SignInThrottle {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt from `ip`. `Err` carries the seconds until the
    /// address may try again.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), u64> {
        let client = bucket(ip);
        let now = Instant::now();
        let mut windows = match self.windows.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let window = windows.entry(client).or_insert((now, 0));
        if now.duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        if window.1 >= self.per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(window.0));
            return Err(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        window.1 += 1;
        Ok(())
    }
}

fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_budget() {
        let throttle = SignInThrottle::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.attempt(a), Ok(()));
        }
        let retry = throttle.attempt(a).unwrap_err();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(throttle.attempt(b), Ok(()));
    }

    #[test]
    fn an_ipv6_host_is_counted_per_64() {
        let throttle = SignInThrottle::new(1);
        assert_eq!(throttle.attempt("2001:db8:1:2::1".parse().unwrap()), Ok(()));
        assert!(throttle
            .attempt("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_err());
        assert_eq!(throttle.attempt("2001:db8:1:3::1".parse().unwrap()), Ok(()));
        // A v4-mapped address counts as its IPv4 address.
        assert_eq!(throttle.attempt("192.0.2.7".parse().unwrap()), Ok(()));
        assert!(throttle
            .attempt("::ffff:192.0.2.7".parse().unwrap())
            .is_err());
    }
}
