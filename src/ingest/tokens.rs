//! Single-use signature tokens (Mailgun's `signature.token`): a provider
//! whose signature does not cover the body makes every captured signature
//! reusable with another body, so each verified token is accepted for one
//! event only.
//!
//! The memory is bounded in time and size: a token is kept for
//! `2 × window` seconds after it was first seen (the provider refuses its
//! timestamp after at most that, so an expired entry can never be
//! replayed), and at most [`MAX_TOKENS`] are held; when that many are live,
//! new tokens are refused for now (503, the provider retries) rather than
//! an old one forgotten early. Only verified requests reach it, so an
//! attacker without a valid signature cannot fill it.
//!
//! It is per process: on several nodes over PostgreSQL, a replay sent to a
//! different node within the window is not caught here (the event id is
//! still de-duplicated by the store).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::model::ids::SourceId;

/// Most tokens remembered at once per process (each well under 1 KiB).
pub const MAX_TOKENS: usize = 100_000;

/// What a token's use means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// First seen; now remembered.
    Fresh,
    /// Seen before with the same provider event id: the provider's own
    /// retry, to be de-duplicated as usual.
    SameEvent,
    /// Seen before with another (or no) event id: a replay.
    Reused,
    /// Too many live tokens to remember another one now.
    Full,
}

/// The tokens seen within their window; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct SeenTokens {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (source, token) → the event id it came with.
    seen: HashMap<(SourceId, String), Option<String>>,
    /// Keys in the order they were added, with their expiry (Unix
    /// seconds); expiries are non-decreasing, as `now` is.
    order: VecDeque<(i64, SourceId, String)>,
}

impl SeenTokens {
    /// Records `token` of `source` used by `event_id` at `now_unix`, kept
    /// for `2 × window_secs`, and says what the use means.
    pub fn check(
        &self,
        source: SourceId,
        token: &str,
        event_id: Option<&str>,
        now_unix: i64,
        window_secs: i64,
    ) -> TokenUse {
        // A poisoned lock only means another request panicked mid-check;
        // the map is still consistent (each step is a whole insert/remove).
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.expire(now_unix);
        let key = (source, token.to_owned());
        if let Some(first) = inner.seen.get(&key) {
            return match (first.as_deref(), event_id) {
                (Some(a), Some(b)) if a == b => TokenUse::SameEvent,
                _ => TokenUse::Reused,
            };
        }
        if inner.seen.len() >= MAX_TOKENS {
            return TokenUse::Full;
        }
        let expires = now_unix.saturating_add(window_secs.saturating_mul(2));
        inner.order.push_back((expires, source, token.to_owned()));
        inner.seen.insert(key, event_id.map(str::to_owned));
        TokenUse::Fresh
    }

    /// How many tokens are remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .map(|inner| inner.seen.len())
            .unwrap_or_default()
    }
}

impl Inner {
    /// Forgets the tokens whose time is past.
    fn expire(&mut self, now_unix: i64) {
        while let Some((expires, _, _)) = self.order.front() {
            if *expires > now_unix {
                break;
            }
            if let Some((_, source, token)) = self.order.pop_front() {
                self.seen.remove(&(source, token));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_for_one_event() {
        let tokens = SeenTokens::default();
        let a = SourceId::new();
        let b = SourceId::new();
        assert_eq!(
            tokens.check(a, "t1", Some("e1"), 1000, 300),
            TokenUse::Fresh
        );
        assert_eq!(
            tokens.check(a, "t1", Some("e1"), 1001, 300),
            TokenUse::SameEvent
        );
        assert_eq!(
            tokens.check(a, "t1", Some("e2"), 1002, 300),
            TokenUse::Reused
        );
        assert_eq!(tokens.check(a, "t1", None, 1002, 300), TokenUse::Reused);
        // Another source's token space is its own.
        assert_eq!(
            tokens.check(b, "t1", Some("e2"), 1002, 300),
            TokenUse::Fresh
        );
        // Without an event id, any reuse is a replay.
        assert_eq!(tokens.check(a, "t2", None, 1003, 300), TokenUse::Fresh);
        assert_eq!(tokens.check(a, "t2", None, 1004, 300), TokenUse::Reused);
    }

    #[test]
    fn tokens_are_forgotten_after_twice_the_window() {
        let tokens = SeenTokens::default();
        let a = SourceId::new();
        assert_eq!(tokens.check(a, "t", Some("e1"), 1000, 300), TokenUse::Fresh);
        assert_eq!(
            tokens.check(a, "t", Some("e2"), 1599, 300),
            TokenUse::Reused
        );
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens.check(a, "u", Some("e3"), 1600, 300), TokenUse::Fresh);
        assert_eq!(tokens.len(), 1, "t expired");
        assert_eq!(tokens.check(a, "t", Some("e2"), 1600, 300), TokenUse::Fresh);
    }

    #[test]
    fn a_full_memory_refuses_rather_than_forgets() {
        let tokens = SeenTokens::default();
        let a = SourceId::new();
        for i in 0..MAX_TOKENS {
            assert_eq!(
                tokens.check(a, &i.to_string(), None, 1000, 300),
                TokenUse::Fresh
            );
        }
        assert_eq!(tokens.check(a, "one more", None, 1000, 300), TokenUse::Full);
        // Still remembered, so still refused.
        assert_eq!(tokens.check(a, "0", Some("e"), 1000, 300), TokenUse::Reused);
        // Once they expire there is room again.
        assert_eq!(
            tokens.check(a, "one more", None, 1600, 300),
            TokenUse::Fresh
        );
        assert_eq!(tokens.len(), 1);
    }
}
