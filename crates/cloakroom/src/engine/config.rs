//! The engine's settings, and those of its token transport.

use std::sync::Arc;
use time::Duration;

use crate::jwt::{Algorithm, ClaimsPolicy};
use crate::password::Argon2Config;
use crate::secret::Secret;
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
    /// The key-encryption keys that seal the private signing keys and the TOTP secrets in the
    /// store; `None` keeps them in clear (see [`crate::sealing`]).
    pub sealing: Option<Arc<crate::sealing::KeySet>>,
    /// The issuer authenticator apps show beside a TOTP code (the server sets its public
    /// host).
    pub totp_issuer: String,
    /// Users with any of these roles must have a second factor: until a session of theirs has
    /// proven one, it may only enrol (see `Auth::second_factor_due`).
    pub mfa_required_roles: Vec<crate::Role>,
    /// Every user must have a second factor.
    pub mfa_required_for_everyone: bool,
    /// The WebAuthn relying party id of passkeys: the host people sign in on.
    pub passkey_rp_id: String,
    /// The origin passkey ceremonies must come from (the public URL's).
    pub passkey_origin: String,
    /// The public URL links in mail lead to (`{public_url}/verify-email?token=…`).
    pub public_url: String,
    /// A directory of mail templates replacing the built-in ones (see [`crate::mail::Templates`]).
    pub mail_templates: Option<std::path::PathBuf>,
    /// How long a link that confirms an address works.
    pub verify_email_ttl: Duration,
    /// How long a password reset link works.
    pub reset_password_ttl: Duration,
    /// Failed link tokens (a guess, a spent or expired one) one client address may present
    /// before it must wait.
    pub link_throttle: ThrottlePolicy,
    /// An account whose address is not confirmed may only confirm it (see
    /// `Auth::verification_due`).
    pub require_verified_email: bool,
    /// Security events older than this are deleted (`None`: kept as long as the account).
    pub event_retention: Option<Duration>,
    /// DPoP proofs must carry a nonce the server gave (`DPoP-Nonce`).
    pub dpop_nonce_required: bool,
    /// Every token the token endpoint issues must be bound to a DPoP key.
    pub dpop_required: bool,
    /// How DBSC (device-bound cookie sessions) is treated.
    pub dbsc: crate::dbsc::DbscMode,
    /// How long a bound cookie lasts before the browser must prove its key again.
    pub bound_cookie_lifetime: Duration,
    /// Mail the user when they sign in from a device (a `User-Agent`) none of their sessions
    /// or recorded logins has used.
    pub notify_new_device: bool,
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
            totp_issuer: "cloakroom".into(),
            mfa_required_roles: Vec::new(),
            mfa_required_for_everyone: false,
            passkey_rp_id: "localhost".into(),
            passkey_origin: "http://localhost".into(),
            public_url: "http://localhost".into(),
            mail_templates: None,
            verify_email_ttl: Duration::hours(24),
            reset_password_ttl: Duration::minutes(30),
            link_throttle: ThrottlePolicy::LINKS,
            require_verified_email: false,
            event_retention: None,
            notify_new_device: true,
            dpop_nonce_required: false,
            dpop_required: false,
            dbsc: crate::dbsc::DbscMode::Optional,
            bound_cookie_lifetime: Duration::minutes(10),
        }
    }
}

/// Settings of the token transport.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `iss`: the public URL.
    pub issuer: String,
    /// `aud` minted and required.
    pub audience: String,
    /// `client_id` minted (cloakroom serves first-party clients only).
    pub client_id: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Clock leeway when verifying (at most 60 s).
    pub leeway: Duration,
    /// How long after a rotation the previous refresh token may be retried for the same result.
    pub refresh_grace: Duration,
    /// The signing algorithm.
    pub algorithm: Algorithm,
    /// The HS256 secret, when `algorithm` is HS256.
    pub hs256_secret: Option<Secret<Vec<u8>>>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: "http://localhost:8080".into(),
            audience: "http://localhost:8080".into(),
            client_id: "cloakroom".into(),
            access_ttl: Duration::minutes(10),
            leeway: Duration::seconds(60),
            refresh_grace: Duration::seconds(10),
            algorithm: Algorithm::EdDSA,
            hs256_secret: None,
        }
    }
}

impl JwtConfig {
    /// The claim rules for verifying our access tokens.
    pub fn policy(&self) -> ClaimsPolicy {
        ClaimsPolicy {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway.whole_seconds().clamp(0, 60),
            max_lifetime_secs: self.access_ttl.whole_seconds(),
        }
    }

    /// How long a retired key must still verify: the longest token lifetime plus leeway.
    pub fn key_horizon(&self) -> Duration {
        self.access_ttl + self.leeway
    }
}
