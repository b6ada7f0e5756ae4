//! Throttling: exponential back-off after failed logins, and fixed budgets (signups per IP).
//!
//! Keys are opaque strings chosen by the caller (`acct:<email>`, `ip:<addr>`). A held-back caller
//! is told how long to wait and nothing is hashed for it. [`MemoryThrottle`] keeps counters in
//! this process; a shared backend can implement [`Throttle`] so instances share them.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

use crate::store::StoreError;

/// How failures turn into waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// The first delay; it doubles with each further failure.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

impl ThrottlePolicy {
    /// Per account: 5 free failures, then 1 s doubling up to 15 min (so at most a few dozen
    /// failures an hour, under ASVS's 100).
    pub const ACCOUNT: Self = Self {
        free_failures: 5,
        base_delay: Duration::seconds(1),
        max_delay: Duration::minutes(15),
        window: Duration::hours(1),
    };
    /// Per client IP: more room for shared addresses, then the same back-off.
    pub const IP: Self = Self {
        free_failures: 20,
        base_delay: Duration::seconds(1),
        max_delay: Duration::minutes(15),
        window: Duration::hours(1),
    };
    /// Per client IP, for tokens of links sent by mail: a person mistypes a link rarely, and a
    /// guesser is what this is for.
    pub const LINKS: Self = Self {
        free_failures: 5,
        base_delay: Duration::seconds(5),
        max_delay: Duration::minutes(15),
        window: Duration::hours(1),
    };

    /// How long a caller with `failures` failures, the last at `last`, must still wait at `at`.
    pub fn wait(
        &self,
        failures: u32,
        last: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Option<Duration> {
        if at - last > self.window {
            return None;
        }
        let until = last + self.delay(failures)?;
        (until > at).then(|| until - at)
    }

    /// The wait after `failures` failures.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures <= self.free_failures {
            return None;
        }
        let exp = (failures - self.free_failures - 1).min(30);
        let delay = self.base_delay * 2i32.saturating_pow(exp);
        Some(delay.min(self.max_delay))
    }
}

/// Counters for throttling. Implementations must be safe to share between tasks.
#[async_trait]
pub trait Throttle: Send + Sync + 'static {
    /// How long `key` must still wait at `at`, if it is held back.
    async fn retry_after(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError>;
    /// Takes one attempt for `key` before the work it guards, in one atomic step: held back,
    /// it answers the wait and counts nothing; otherwise it counts the attempt as a failure
    /// at once. So a burst of parallel attempts cannot all pass one check before any of them
    /// has failed: at most `free_failures + 1` get through. A success then calls
    /// [`Throttle::clear`] or [`Throttle::release`].
    async fn reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError>;
    /// Gives back one attempt taken by [`Throttle::reserve`] that did not fail.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
    /// Forgets `key`'s failures (after a success).
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
    /// Spends one unit of `key`'s budget of `limit` per `window`; returns the wait when the
    /// budget is already spent.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError>;
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: OffsetDateTime,
    window_start: OffsetDateTime,
    hits: u32,
}

/// Throttle counters in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryThrottle {
    entries: Mutex<HashMap<String, Entry>>,
}

const MAX_ENTRIES: usize = 200_000;

impl MemoryThrottle {
    /// An empty set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }
}

fn fresh(at: OffsetDateTime) -> Entry {
    Entry {
        failures: 0,
        last_failure: at,
        window_start: at,
        hits: 0,
    }
}

fn count_failure(
    map: &mut HashMap<String, Entry>,
    key: &str,
    policy: &ThrottlePolicy,
    at: OffsetDateTime,
) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, e| at - e.last_failure <= policy.window || e.hits > 0);
    }
    let e = map.entry(key.to_string()).or_insert_with(|| fresh(at));
    if at - e.last_failure > policy.window {
        e.failures = 0;
    }
    e.failures = e.failures.saturating_add(1);
    e.last_failure = at;
}

#[async_trait]
impl Throttle for MemoryThrottle {
    async fn retry_after(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.with(|map| {
            let e = map.get(key)?;
            policy.wait(e.failures, e.last_failure, at)
        }))
    }

    async fn reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.with(|map| {
            if let Some(e) = map.get(key) {
                if let Some(wait) = policy.wait(e.failures, e.last_failure, at) {
                    return Some(wait);
                }
            }
            count_failure(map, key, policy, at);
            None
        }))
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.with(|map| {
            if let Some(e) = map.get_mut(key) {
                e.failures = e.failures.saturating_sub(1);
            }
        });
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.with(|map| map.remove(key));
        Ok(())
    }

    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.with(|map| {
            if map.len() >= MAX_ENTRIES {
                map.retain(|_, e| at - e.window_start <= window || e.failures > 0);
            }
            let e = map.entry(key.to_string()).or_insert_with(|| fresh(at));
            if at - e.window_start >= window {
                e.window_start = at;
                e.hits = 0;
            }
            if e.hits >= limit {
                return Some(e.window_start + window - at);
            }
            e.hits += 1;
            None
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_caps() {
        let p = ThrottlePolicy::ACCOUNT;
        assert_eq!(p.delay(5), None);
        assert_eq!(p.delay(6), Some(Duration::seconds(1)));
        assert_eq!(p.delay(7), Some(Duration::seconds(2)));
        assert_eq!(p.delay(10), Some(Duration::seconds(16)));
        assert_eq!(p.delay(100), Some(Duration::minutes(15)));
    }

    #[tokio::test]
    async fn failures_hold_back_then_clear() -> Result<(), StoreError> {
        let t = MemoryThrottle::new();
        let p = ThrottlePolicy::ACCOUNT;
        let t0 = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..6 {
            assert_eq!(t.reserve("k", &p, t0).await?, None);
        }
        assert_eq!(
            t.retry_after("k", &p, t0).await?,
            Some(Duration::seconds(1))
        );
        assert_eq!(
            t.reserve("k", &p, t0).await?,
            Some(Duration::seconds(1)),
            "held back: nothing counted"
        );
        t.release("k").await?;
        assert_eq!(t.retry_after("k", &p, t0).await?, None, "given back");
        assert_eq!(
            t.retry_after("k", &p, t0 + Duration::seconds(1)).await?,
            None
        );
        t.clear("k").await?;
        assert_eq!(t.reserve("k", &p, t0).await?, None);
        assert_eq!(t.retry_after("k", &p, t0).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn budgets_refill_per_window() -> Result<(), StoreError> {
        let t = MemoryThrottle::new();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let w = Duration::minutes(10);
        assert_eq!(t.hit("ip", 2, w, t0).await?, None);
        assert_eq!(t.hit("ip", 2, w, t0).await?, None);
        assert_eq!(t.hit("ip", 2, w, t0).await?, Some(w));
        assert_eq!(t.hit("ip", 2, w, t0 + w).await?, None);
        Ok(())
    }
}
