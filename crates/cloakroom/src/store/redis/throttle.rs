//! Throttle counters in Redis, so every instance counts the same failures. A key is stored as
//! its SHA-256, so Redis never holds the emails or addresses being throttled.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use time::{Duration, OffsetDateTime};

use super::{hex, map_err, Keys};
use crate::store::StoreError;
use crate::throttle::{Throttle, ThrottlePolicy};

/// Takes one attempt (KEYS: counters; ARGV: at, window, ttl, free failures, base delay, max
/// delay): the seconds to wait when held back (the rule of `ThrottlePolicy::wait`, in Lua), or
/// -1 after counting the attempt as a failure.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local h = redis.call('HMGET', KEYS[1], 'failures', 'last')
        local at = tonumber(ARGV[1])
        local window = tonumber(ARGV[2])
        local failures = tonumber(h[1]) or 0
        local last = tonumber(h[2])
        if last and at - last > window then failures = 0 end
        local free = tonumber(ARGV[4])
        if last and failures > free then
          local delay = tonumber(ARGV[5]) * 2 ^ math.min(failures - free - 1, 30)
          delay = math.min(delay, tonumber(ARGV[6]))
          if last + delay > at then return last + delay - at end
        end
        redis.call('HSET', KEYS[1], 'failures', failures + 1, 'last', ARGV[1])
        if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
          redis.call('EXPIRE', KEYS[1], ARGV[3])
        end
        return -1
        ",
    )
});

/// Gives back one attempt (KEYS: counters).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local n = tonumber(redis.call('HGET', KEYS[1], 'failures'))
        if n and n > 0 then redis.call('HSET', KEYS[1], 'failures', n - 1) end
        return 0
        ",
    )
});

/// Spends one unit of a budget (KEYS: counters; ARGV: at, limit, window): answers the seconds
/// to wait, or -1 when the unit was spent.
static HIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local h = redis.call('HMGET', KEYS[1], 'start', 'hits')
        local at = tonumber(ARGV[1])
        local window = tonumber(ARGV[3])
        local start = tonumber(h[1]) or at
        local hits = tonumber(h[2]) or 0
        if at - start >= window then
          start = at
          hits = 0
        end
        if hits >= tonumber(ARGV[2]) then return start + window - at end
        redis.call('HSET', KEYS[1], 'start', start, 'hits', hits + 1)
        if redis.call('TTL', KEYS[1]) < window then
          redis.call('EXPIRE', KEYS[1], window)
        end
        return -1
        ",
    )
});

/// Throttle counters shared through Redis.
#[derive(Clone)]
pub struct RedisThrottle {
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisThrottle").finish_non_exhaustive()
    }
}

impl RedisThrottle {
    pub(super) fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    fn key(&self, key: &str) -> String {
        self.keys.throttle(&hex(&Sha256::digest(key.as_bytes())))
    }
}

#[async_trait]
impl Throttle for RedisThrottle {
    async fn retry_after(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError> {
        let (failures, last): (Option<u32>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.key(key))
            .arg("failures")
            .arg("last")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        let (Some(failures), Some(last)) = (failures, last) else {
            return Ok(None);
        };
        let Ok(last) = OffsetDateTime::from_unix_timestamp(last) else {
            return Err(StoreError::Corrupt(
                "a throttle time is out of range".into(),
            ));
        };
        Ok(policy.wait(failures, last, at))
    }

    async fn reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError> {
        let ttl = (policy.window + policy.max_delay).whole_seconds().max(1);
        let wait: i64 = RESERVE
            .key(self.key(key))
            .arg(at.unix_timestamp())
            .arg(policy.window.whole_seconds())
            .arg(ttl)
            .arg(policy.free_failures)
            .arg(policy.base_delay.whole_seconds())
            .arg(policy.max_delay.whole_seconds())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok((wait >= 0).then(|| Duration::seconds(wait)))
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = RELEASE
            .key(self.key(key))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        at: OffsetDateTime,
    ) -> Result<Option<Duration>, StoreError> {
        let wait: i64 = HIT
            .key(self.key(key))
            .arg(at.unix_timestamp())
            .arg(limit)
            .arg(window.whole_seconds().max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok((wait >= 0).then(|| Duration::seconds(wait)))
    }
}
