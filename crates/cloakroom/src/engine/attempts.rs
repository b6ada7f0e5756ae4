//! Throttled attempts: every password check counts against its account and its client
//! address (see [`Throttle::reserve`]), and each key may have only a few checks in progress at
//! once, so one client cannot fill the hashing queue that everyone shares.

use std::net::IpAddr;
use std::sync::Arc;
use time::OffsetDateTime;

use super::error::{AuthError, OVERLOAD_RETRY};
use crate::throttle::{Throttle, ThrottlePolicy};
use crate::user::Email;

/// The throttle counters and the checks in progress.
pub(crate) struct Attempts {
    throttle: Arc<dyn Throttle>,
    /// Password checks in progress, per throttle key (see `AuthConfig::hashing_per_client`).
    checking: dashmap::DashMap<String, usize>,
    per_key: usize,
}

/// A password check in progress for one key; freed when dropped (the check finished, failed,
/// or its request went away).
pub(crate) struct CheckSlot<'a> {
    map: &'a dashmap::DashMap<String, usize>,
    key: String,
}

impl Drop for CheckSlot<'_> {
    fn drop(&mut self) {
        self.map.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// One throttle key a password check counts against.
pub(crate) struct Attempt<'a> {
    key: Option<&'a str>,
    policy: &'a ThrottlePolicy,
    /// A success forgets the key's failures (an account), rather than only giving back its
    /// own attempt (a client address, shared by many people).
    clear_on_success: bool,
}

impl<'a> Attempt<'a> {
    pub(crate) fn account(key: Option<&'a str>, policy: &'a ThrottlePolicy) -> Self {
        Self {
            key,
            policy,
            clear_on_success: true,
        }
    }

    pub(crate) fn client(key: Option<&'a str>, policy: &'a ThrottlePolicy) -> Self {
        Self {
            key,
            policy,
            clear_on_success: false,
        }
    }
}

impl Attempts {
    /// Counters in `throttle`; at most `per_key` checks in progress per key.
    pub(crate) fn new(throttle: Arc<dyn Throttle>, per_key: usize) -> Self {
        Self {
            throttle,
            checking: Default::default(),
            per_key,
        }
    }

    /// Counts one event (a signup) against `key`: `Some(wait)` once `limit` were counted in
    /// `window`.
    pub(crate) async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Option<time::Duration>, AuthError> {
        Ok(self.throttle.hit(key, limit, window, now).await?)
    }

    /// Runs `work` (a password check) as one throttled attempt on each key: every key's
    /// attempt is taken before the work starts (see [`Throttle::reserve`]); a wrong password
    /// leaves them counted as failures, a success clears the account's failures and gives the
    /// others back, and any other outcome (overload, an outage) gives them all back.
    pub(crate) async fn throttled<T>(
        &self,
        keys: &[Attempt<'_>],
        now: OffsetDateTime,
        work: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let _slots = self.check_slots(keys)?;
        let mut taken: Vec<&Attempt<'_>> = Vec::with_capacity(keys.len());
        for attempt in keys {
            let Some(key) = attempt.key else { continue };
            let refused = match self.throttle.reserve(key, attempt.policy, now).await {
                Ok(None) => {
                    taken.push(attempt);
                    continue;
                }
                Ok(Some(wait)) => {
                    tracing::warn!(throttled = key.split(':').next(), "attempt throttled");
                    AuthError::TooManyAttempts { retry_after: wait }
                }
                Err(e) => e.into(),
            };
            self.give_back(&taken, false).await;
            return Err(refused);
        }
        let result = work.await;
        match &result {
            Ok(_) => self.give_back(&taken, true).await,
            Err(
                AuthError::InvalidCredentials | AuthError::InvalidCode | AuthError::InvalidLink,
            ) => {}
            Err(_) => self.give_back(&taken, false).await,
        }
        result
    }

    /// One slot per key among the password checks in progress, or a refusal when a key has
    /// all its slots taken; the slots free themselves when dropped.
    fn check_slots<'s>(&'s self, keys: &[Attempt<'_>]) -> Result<Vec<CheckSlot<'s>>, AuthError> {
        let mut slots = Vec::with_capacity(keys.len());
        for key in keys.iter().filter_map(|a| a.key) {
            let mut n = self.checking.entry(key.to_string()).or_insert(0);
            if *n >= self.per_key {
                tracing::warn!(
                    throttled = key.split(':').next(),
                    "password checks in progress"
                );
                return Err(AuthError::TooManyAttempts {
                    retry_after: OVERLOAD_RETRY,
                });
            }
            *n += 1;
            slots.push(CheckSlot {
                map: &self.checking,
                key: key.to_string(),
            });
        }
        Ok(slots)
    }

    async fn give_back(&self, taken: &[&Attempt<'_>], succeeded: bool) {
        for attempt in taken {
            let Some(key) = attempt.key else { continue };
            let done = if succeeded && attempt.clear_on_success {
                self.throttle.clear(key).await
            } else {
                self.throttle.release(key).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not update a throttle counter");
            }
        }
    }
}

/// The throttling key of an account.
pub(crate) fn account_key(email: &Email) -> String {
    format!("acct:{email}")
}

/// The throttling key of a client address: IPv4 (and IPv4-mapped) addresses whole, IPv6 by
/// their /64, the block one subscriber usually holds whole, so that stepping through it does
/// not give a client fresh counters.
pub(crate) fn ip_key(ip: Option<IpAddr>) -> Option<String> {
    ip.map(|ip| match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("ip:{net}/64")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Option<String> {
        ip_key(s.parse().ok())
    }

    #[test]
    fn l4_clients_are_keyed_by_ipv4_address_and_ipv6_slash_64() {
        assert_eq!(key("203.0.113.7").as_deref(), Some("ip:203.0.113.7"));
        assert_eq!(key("::ffff:203.0.113.7"), key("203.0.113.7"));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:eeee:dddd:cccc")
        );
        assert_eq!(
            key("2001:db8:1:2::1").as_deref(),
            Some("ip:2001:db8:1:2::/64")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(ip_key(None), None);
    }
}
