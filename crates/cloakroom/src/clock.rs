//! Where "now" comes from. Every expiry rule takes its time from a [`Clock`], so tests can pin it
//! with [`ManualClock`] and move it forward instead of sleeping.

use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current UTC time.
    fn now(&self) -> OffsetDateTime;

    /// The current time in whole seconds, as the stores keep it.
    fn now_secs(&self) -> OffsetDateTime {
        let now = self.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }

    /// The current time in milliseconds since the Unix epoch (what metrics of delays between
    /// machines compare).
    fn unix_ms(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// A clock held by a store: the system's unless a test gives it another.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Clone)]
pub(crate) struct SharedClock(std::sync::Arc<dyn Clock>);

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl SharedClock {
    pub(crate) fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self(clock)
    }

    /// The time in whole Unix seconds.
    pub(crate) fn unix_secs(&self) -> i64 {
        self.0.now_secs().unix_timestamp()
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Default for SharedClock {
    fn default() -> Self {
        Self(std::sync::Arc::new(SystemClock))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl std::fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the real clock
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Mutex::new(at))
    }

    /// A clock stopped at the current real time, truncated to whole seconds.
    pub fn starting_now() -> Self {
        let now = SystemClock.now();
        Self::new(now.replace_nanosecond(0).unwrap_or(now))
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_now();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::minutes(5));
        assert_eq!(clock.now(), t0 + Duration::minutes(5));
    }
}
