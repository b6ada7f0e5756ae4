//! The engine's settings.

use std::sync::Arc;
use time::Duration;

use super::access_tokens::JwtConfig;
use crate::password::Argon2Config;
use crate::session::Lifetime;
use crate::throttle::ThrottlePolicy;

/// Settings of the engine. `Default` gives the SPEC's defaults.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Lifetime of an ordinary (browser-session) login.
    pub session: Lifetime,
    /// Lifetime of a "remember me" login.
    pub remember: Lifetime,
    /// How recent a login must be to end other sessions without giving the password again.
    pub fresh_auth: Duration,
    /// Back-off per account after failed logins.
    pub account_throttle: ThrottlePolicy,
    /// Back-off per client IP after failed logins.
    pub ip_throttle: ThrottlePolicy,
    /// Signups allowed per client IP per `signup_window`.
    pub signup_limit: u32,
    /// See `signup_limit`.
    pub signup_window: Duration,
    /// Argon2id cost.
    pub argon2: Argon2Config,
    /// Threads that hash passwords.
    pub hash_threads: usize,
    /// Hashing jobs that may wait; beyond that, logins get 503.
    pub hash_queue: usize,
    /// Run hashing threads at the lowest scheduling priority (`SCHED_IDLE` on Linux), so a
    /// login flood cannot slow session checks down.
    pub hash_idle_priority: bool,
    /// Password checks one client address, or one account, may have in progress at once in
    /// this process (queued or hashing); more are refused as too many attempts. So one client,
    /// even with the right password, cannot fill the hashing queue that everyone shares.
    pub hashing_per_client: usize,
    /// Live sessions one user may have; a login beyond it ends the oldest. `usize::MAX`: no
    /// cap (nothing is read at login).
    pub max_sessions_per_user: usize,
    /// Store lookups per second, per instance, of well-formed tokens that carry no valid check
    /// value: tokens minted before the check existed (every token now carries one), or forged
    /// ones. Beyond it they are refused with no lookup, so a flood of forged tokens cannot load
    /// the store. Once every session older than the check has expired, 0 refuses every such
    /// token outright.
    pub unchecked_lookups_per_sec: u32,
    /// Sessions idle longer than their timeout plus this are deleted from the store.
    pub idle_grace: Duration,
    /// Access and refresh tokens.
    pub jwt: JwtConfig,
    /// The key-encryption keys that seal the private signing keys in the store; `None` keeps
    /// them in clear (see [`crate::sealing`]).
    pub sealing: Option<Arc<crate::sealing::KeySet>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            session: Lifetime::BROWSER,
            remember: Lifetime::REMEMBER,
            fresh_auth: Duration::minutes(10),
            account_throttle: ThrottlePolicy::ACCOUNT,
            ip_throttle: ThrottlePolicy::IP,
            signup_limit: 10,
            signup_window: Duration::hours(1),
            argon2: Argon2Config::default(),
            hash_threads: threads,
            hash_queue: threads * 8,
            hash_idle_priority: true,
            hashing_per_client: 4,
            max_sessions_per_user: 100,
            unchecked_lookups_per_sec: 50,
            idle_grace: Duration::minutes(10),
            jwt: JwtConfig::default(),
            sealing: None,
        }
    }
}
