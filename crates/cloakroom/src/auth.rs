//! The use cases: signup, login, recognising a session, logout, listing and ending sessions,
//! changing a password, and the administrator's operations behind the CLI.
//!
//! [`Auth`] owns no I/O of its own beyond the [`Store`] and [`Throttle`] it is given, reads the
//! time from its [`Clock`], and keeps live sessions in memory. A process that shares the store
//! with others calls [`Auth::apply_changes`] periodically to learn what they ended or changed,
//! [`Auth::flush_activity`] to write last-seen times in batches, and [`Auth::sweep`] to drop
//! expired sessions.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::jwt::{ClaimsPolicy, KeyRing};
use crate::live::{LiveSession, LiveSessions};
use crate::password::{Argon2Config, PasswordError, PasswordHasher, PasswordPolicy, WeakPassword};
use crate::session::{
    Lifetime, Lineage, Session, SessionId, SessionToken, TokenCheck, TokenHash, Transport,
};
use crate::store::{Change, RevocationEvent, Store, StoreError};
use crate::throttle::{MemoryThrottle, Throttle, ThrottlePolicy};
use crate::tokens::{load_ring, JwtConfig};
use crate::user::{Email, EmailError, Role, RoleError, User, UserId};

/// How long a client is asked to wait when hashing is saturated.
const OVERLOAD_RETRY: Duration = Duration::seconds(1);

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

/// What went wrong, named by outcome. The server maps each to a status and error code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password or disabled account: one answer for all three.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    /// Held back by throttling.
    #[error("too many attempts; try again later")]
    TooManyAttempts {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Signup with an email that has an account.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The email address is not valid.
    #[error("{0}")]
    InvalidEmail(#[from] EmailError),
    /// The new password does not meet the policy.
    #[error("{0}")]
    WeakPassword(#[from] WeakPassword),
    /// A role name is not valid.
    #[error("{0}")]
    InvalidRole(#[from] RoleError),
    /// No valid session.
    #[error("not signed in, or the session has ended")]
    Unauthenticated,
    /// The operation needs a fresh login or the current password.
    #[error("confirm your password to do this")]
    ReauthRequired,
    /// No such session or user (or not yours).
    #[error("not found")]
    NotFound,
    /// Password hashing is saturated.
    #[error("the server is busy; try again shortly")]
    Overloaded {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A refresh token that is unknown, spent, expired or revoked (RFC 6749 `invalid_grant`).
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// Signing keys could not be made, read or used.
    #[error("signing keys: {0}")]
    Keys(String),
    /// Hashing failed for another reason than load.
    #[error("password hashing failed")]
    Hashing(#[source] PasswordError),
}

impl From<PasswordError> for AuthError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Overloaded => Self::Overloaded {
                retry_after: OVERLOAD_RETRY,
            },
            other => Self::Hashing(other),
        }
    }
}

/// Who is asking, as far as the transport can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client IP (from the socket, or a trusted proxy's header).
    pub ip: Option<IpAddr>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
}

/// A login attempt.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// Email as typed.
    pub email: String,
    /// Password as typed (normalised here).
    pub password: String,
    /// "Remember me": a persistent cookie and the longer lifetime.
    pub remember: bool,
    /// The transport the new session will use.
    pub transport: Transport,
    /// Who is asking.
    pub client: ClientInfo,
    /// The session token the client already holds, if any; that session ends on success.
    pub current_token: Option<String>,
}

impl LoginRequest {
    /// A cookie login with no remember-me and no client details.
    pub fn new(email: &str, password: &str) -> Self {
        Self {
            email: email.to_string(),
            password: password.to_string(),
            remember: false,
            transport: Transport::Cookie,
            client: ClientInfo::default(),
            current_token: None,
        }
    }
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOutcome {
    /// Who logged in.
    pub user: User,
    /// The new session.
    pub session: Session,
    /// Its secret, for the client.
    pub token: SessionToken,
}

/// A recognised session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The session's user.
    pub user: Arc<User>,
    /// The session.
    pub session: Arc<Session>,
    /// When it ends unless used again.
    pub expires_at: OffsetDateTime,
}

/// Proof offered for an operation that needs fresh authentication.
#[derive(Debug, Clone, Default)]
pub enum Reauth {
    /// Nothing beyond the session; enough only if the login is recent.
    #[default]
    None,
    /// The current password.
    Password(String),
}

/// Counters of security-relevant events, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Spent refresh tokens presented after the grace window.
    pub refresh_reuse: std::sync::atomic::AtomicU64,
    /// Successful logins (both transports).
    pub logins_ok: std::sync::atomic::AtomicU64,
    /// Logins refused for wrong credentials.
    pub logins_failed: std::sync::atomic::AtomicU64,
    /// Logins held back by throttling.
    pub logins_throttled: std::sync::atomic::AtomicU64,
    /// Logins refused because hashing was saturated.
    pub logins_overloaded: std::sync::atomic::AtomicU64,
}

/// The authentication engine.
pub struct Auth {
    pub(crate) store: Arc<dyn Store>,
    throttle: Arc<dyn Throttle>,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    pub(crate) config: AuthConfig,
    clock: Arc<dyn Clock>,
    pub(crate) live: LiveSessions,
    cursor: AtomicI64,
    /// Set while a store that pushes revocations cannot: sessions in memory are not trusted.
    feed_down: AtomicBool,
    /// Every revocation this process learns of, for verifiers that follow them.
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    sync: tokio::sync::Mutex<()>,
    pub(crate) keys: ArcSwap<KeyRing>,
    pub(crate) claims_policy: ClaimsPolicy,
    pub(crate) verified: crate::live::ServerKeyed<Box<str>, crate::tokens::VerifiedToken>,
    /// Password checks in progress, per throttle key (see `AuthConfig::hashing_per_client`).
    checking: dashmap::DashMap<String, usize>,
    /// The key of the check value inside every token this engine mints.
    pub(crate) check: TokenCheck,
    unchecked: UncheckedBudget,
    /// Event counters.
    pub metrics: AuthMetrics,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .field("live_sessions", &self.live.len())
            .finish_non_exhaustive()
    }
}

/// How many revocations a follower may lag behind before it must start over.
const REVOCATION_BUFFER: usize = 16_384;

/// A revocation as followers of [`Auth::follow_revocations`] see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// A session ended before its time: its tokens must be refused until `expires_at`.
    Session {
        /// The session (`sid` of its access tokens).
        id: SessionId,
        /// When its tokens expire anyway.
        expires_at: OffsetDateTime,
    },
    /// Every session was lost (the session store restarted empty): refuse every token issued
    /// at or before this time.
    AllBefore(OffsetDateTime),
}

/// A password check in progress for one key; freed when dropped (the check finished, failed,
/// or its request went away).
struct CheckSlot<'a> {
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
struct Attempt<'a> {
    key: Option<&'a str>,
    policy: &'a ThrottlePolicy,
    /// A success forgets the key's failures (an account), rather than only giving back its
    /// own attempt (a client address, shared by many people).
    clear_on_success: bool,
}

impl<'a> Attempt<'a> {
    fn account(key: Option<&'a str>, policy: &'a ThrottlePolicy) -> Self {
        Self {
            key,
            policy,
            clear_on_success: true,
        }
    }

    fn client(key: Option<&'a str>, policy: &'a ThrottlePolicy) -> Self {
        Self {
            key,
            policy,
            clear_on_success: false,
        }
    }
}

/// The name of the shared secret that keys the tokens' check value.
pub(crate) const TOKEN_CHECK: &str = "token-check";

/// The check value's key, shared by every instance through the store (sealed when there are
/// key-encryption keys).
async fn load_token_check(
    store: &dyn Store,
    sealing: Option<&crate::sealing::KeySet>,
) -> Result<TokenCheck, AuthError> {
    use crate::sealing::{open_stored, seal_stored};
    let context = TOKEN_CHECK.as_bytes();
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    let candidate =
        seal_stored(sealing, context, &key).map_err(|e| AuthError::Keys(e.to_string()))?;
    let stored = store.shared_secret(TOKEN_CHECK, &candidate).await?;
    let key = open_stored(sealing, context, &stored)
        .map_err(|e| AuthError::Keys(format!("the tokens' check key: {e}")))?;
    Ok(TokenCheck::new(&key))
}

/// Store lookups of tokens without a valid check value, counted per second of real time (it
/// bounds load, so it follows the machine's clock, not the engine's).
#[derive(Debug)]
struct UncheckedBudget {
    start: std::time::Instant,
    second: AtomicI64,
    used: std::sync::atomic::AtomicU32,
}

impl Default for UncheckedBudget {
    fn default() -> Self {
        Self {
            start: std::time::Instant::now(),
            second: AtomicI64::new(0),
            used: Default::default(),
        }
    }
}

impl UncheckedBudget {
    /// Takes one lookup if fewer than `limit` were taken this second (roughly: two threads
    /// that see a new second at once may both reset the count).
    fn take(&self, limit: u32) -> bool {
        let now = self.start.elapsed().as_secs() as i64;
        if self.second.swap(now, Ordering::AcqRel) != now {
            self.used.store(0, Ordering::Release);
        }
        self.used.fetch_add(1, Ordering::AcqRel) < limit
    }
}

fn account_key(email: &Email) -> String {
    format!("acct:{email}")
}

/// The throttling key of a client address: IPv4 (and IPv4-mapped) addresses whole, IPv6 by
/// their /64, the block one subscriber usually holds whole, so that stepping through it does
/// not give a client fresh counters.
fn ip_key(ip: Option<IpAddr>) -> Option<String> {
    ip.map(|ip| match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("ip:{net}/64")
        }
    })
}

impl Auth {
    /// Starts the engine on `store`, with throttle counters in memory. Loads the revoked session
    /// ids and the change-log position, so changes from before the start are known.
    pub async fn new(
        store: Arc<dyn Store>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        Self::with_throttle(store, Arc::new(MemoryThrottle::new()), config, clock).await
    }

    /// Like [`Auth::new`] with other throttle counters (shared ones, for many instances).
    pub async fn with_throttle(
        store: Arc<dyn Store>,
        throttle: Arc<dyn Throttle>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        Self::start(store, throttle, config, clock, true).await
    }

    /// The engine for administration (the CLI): like [`Auth::with_throttle`], but starting it
    /// writes nothing: no signing key is created when there is none, keys stored in clear are
    /// left as they are (`rekey` seals them), and the tokens' check key is not stored, so
    /// this engine does not recognise session tokens.
    pub async fn for_admin(
        store: Arc<dyn Store>,
        throttle: Arc<dyn Throttle>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        Self::start(store, throttle, config, clock, false).await
    }

    async fn start(
        store: Arc<dyn Store>,
        throttle: Arc<dyn Throttle>,
        config: AuthConfig,
        clock: Arc<dyn Clock>,
        serving: bool,
    ) -> Result<Self, AuthError> {
        let hasher = PasswordHasher::with_priority(
            config.argon2,
            config.hash_threads,
            config.hash_queue,
            config.hash_idle_priority,
        )?;
        let head = store.change_head().await?;
        let live = LiveSessions::default();
        for (id, exp) in store.revoked_sessions(clock.now()).await? {
            live.revoke(id, exp);
        }
        let ring = load_ring(&*store, &config, clock.now(), serving).await?;
        let check = if serving {
            load_token_check(&*store, config.sealing.as_deref()).await?
        } else {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            TokenCheck::new(&key)
        };
        let claims_policy = config.jwt.policy();
        let auth = Self {
            keys: ArcSwap::from_pointee(ring),
            claims_policy,
            verified: Default::default(),
            checking: Default::default(),
            check,
            unchecked: UncheckedBudget::default(),
            metrics: AuthMetrics::default(),
            store,
            throttle,
            hasher,
            policy: PasswordPolicy,
            config,
            clock,
            live,
            cursor: AtomicI64::new(head),
            feed_down: AtomicBool::new(false),
            revocations: tokio::sync::broadcast::channel(REVOCATION_BUFFER).0,
            sync: tokio::sync::Mutex::new(()),
        };
        let sealed = if serving {
            auth.seal_clear_keys().await?
        } else {
            0
        };
        if sealed > 0 {
            tracing::info!(
                count = sealed,
                "signing keys sealed that were stored in clear"
            );
        }
        Ok(auth)
    }

    /// The engine's settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The password hasher (its queue length is a useful metric).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The current time, from the engine's clock, in whole seconds (what the store keeps).
    pub fn now(&self) -> OffsetDateTime {
        let now = self.clock.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }

    /// How many sessions are held in memory.
    pub fn live_sessions(&self) -> usize {
        self.live.len()
    }

    /// Whether the store answers and revocations reach this process.
    pub async fn ready(&self) -> Result<(), AuthError> {
        self.feed_ok()?;
        Ok(self.store.ping().await?)
    }

    fn feed_ok(&self) -> Result<(), AuthError> {
        if self.feed_down.load(Ordering::Acquire) {
            return Err(AuthError::Store(StoreError::Unavailable(
                "revocations cannot reach this process".into(),
            )));
        }
        Ok(())
    }

    // ----- accounts -------------------------------------------------------------------------

    /// Creates an account with the default role; throttled per client IP.
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        if let Some(key) = ip_key(client.ip) {
            let key = format!("signup:{key}");
            let now = self.now();
            let window = self.config.signup_window;
            if let Some(wait) = self
                .throttle
                .hit(&key, self.config.signup_limit, window, now)
                .await?
            {
                return Err(AuthError::TooManyAttempts { retry_after: wait });
            }
        }
        let user = self
            .create_user(email, password, vec![Role::default_role()])
            .await?;
        tracing::info!(user = %user.id, "signup");
        Ok(user)
    }

    /// Creates an account with the given roles (the CLI's `user add`); no throttling.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        mut roles: Vec<Role>,
    ) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        let normalized = PasswordPolicy::normalize(password);
        self.policy.check_new(&normalized, email.as_str())?;
        roles.sort();
        roles.dedup();
        let hash = self.hasher.hash(normalized).await?;
        let user = User {
            id: UserId::random(),
            email,
            roles,
            disabled: false,
            created_at: self.now(),
            credentials_gen: 0,
        };
        match self.store.insert_user(&user, &hash).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict) => Err(AuthError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// The account with this email.
    pub async fn find_user(&self, email: &str) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        match self.store.find_user_by_email(&email).await? {
            Some((user, _)) => Ok(user),
            None => Err(AuthError::NotFound),
        }
    }

    /// Every account.
    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.store.list_users().await?)
    }

    /// Disables (ending every session) or re-enables an account.
    pub async fn set_disabled(&self, email: &str, disabled: bool) -> Result<User, AuthError> {
        let user = self.find_user(email).await?;
        self.store.set_disabled(user.id, disabled).await?;
        self.live.forget_user(user.id);
        if disabled {
            self.end_all(user.id, None).await?;
        }
        tracing::info!(user = %user.id, disabled, "user status changed");
        Ok(User { disabled, ..user })
    }

    /// Replaces an account's roles. Its sessions stay, and see the new roles at once.
    pub async fn set_roles(&self, email: &str, roles: &[String]) -> Result<User, AuthError> {
        let mut roles = roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        let user = self.find_user(email).await?;
        self.store.set_roles(user.id, &roles).await?;
        self.live.forget_user(user.id);
        tracing::info!(user = %user.id, "roles changed");
        Ok(User { roles, ..user })
    }

    // ----- login and sessions -----------------------------------------------------------------

    /// Checks a password and starts a new session. Unknown email, wrong password and disabled
    /// account get the same error after the same work; throttled callers do no hashing.
    pub async fn login(&self, req: LoginRequest) -> Result<LoginOutcome, AuthError> {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.login_inner(req).await;
        let counter = match &result {
            Ok(_) => &self.metrics.logins_ok,
            Err(AuthError::InvalidCredentials) => &self.metrics.logins_failed,
            Err(AuthError::TooManyAttempts { .. }) => &self.metrics.logins_throttled,
            Err(AuthError::Overloaded { .. }) => &self.metrics.logins_overloaded,
            Err(_) => return result,
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    async fn login_inner(&self, req: LoginRequest) -> Result<LoginOutcome, AuthError> {
        let now = self.now();
        let email = Email::parse(&req.email).ok();
        let acct = email.as_ref().map(account_key);
        let ip = ip_key(req.client.ip);
        let keys = [
            Attempt::account(acct.as_deref(), &self.config.account_throttle),
            Attempt::client(ip.as_deref(), &self.config.ip_throttle),
        ];
        let user = self
            .throttled(&keys, now, async {
                let password = PasswordPolicy::normalize(&req.password);
                let found = match &email {
                    Some(email) => match self.store.find_user_by_email(email).await? {
                        Some(found) => Some(found),
                        // An account made before addresses were put in NFC.
                        None => match Email::stored_before_nfc(&req.email) {
                            Some(old) => self.store.find_user_by_email(&old).await?,
                            None => None,
                        },
                    },
                    None => None,
                };
                let verified = if email.is_some() && PasswordPolicy::acceptable_at_login(&password)
                {
                    let stored = found.as_ref().map(|(_, h)| h.clone());
                    Some(self.hasher.verify(password.clone(), stored).await?)
                } else {
                    None
                };
                match (found, verified) {
                    (Some((user, stored)), Some(v)) if v.matched && !user.disabled => {
                        if v.needs_rehash {
                            self.upgrade_hash(user.id, &stored, password).await;
                        }
                        Ok(user)
                    }
                    _ => {
                        tracing::info!("login failed");
                        Err(AuthError::InvalidCredentials)
                    }
                }
            })
            .await?;
        // Re-login ends the session the client held, whether its cookie carries the session
        // token or an access JWT (no session fixation, ASVS 5.0 7.2.4).
        if let Some(current) = req.current_token.as_deref() {
            let held = match SessionToken::hash_presented(current) {
                Some(hash) if self.may_look_up(current) => {
                    self.store.find_by_token(&hash).await?.map(|s| s.id)
                }
                Some(_) => None,
                None => self.session_named_by(current),
            };
            if let Some(id) = held {
                self.end_session_record(id).await?;
            }
        }
        let lifetime = if req.remember {
            self.config.remember
        } else {
            self.config.session
        };
        let (token, refresh_family) = self.new_secret(req.transport);
        let session = Session {
            id: SessionId::random(),
            user_id: user.id,
            transport: req.transport,
            secret_hash: token.hash(),
            remember: req.remember,
            created_at: now,
            authenticated_at: now,
            last_seen_at: now,
            idle_timeout: lifetime.idle,
            absolute_expires_at: now + lifetime.absolute,
            ip: req.client.ip.map(|ip| ip.to_string()),
            user_agent: req.client.user_agent.clone(),
            // The password was checked against this count: a change that lands before the
            // session is stored makes it void (see `check_live`).
            credentials_gen: user.credentials_gen,
            refresh_family,
        };
        self.store.insert_session(&session).await?;
        self.live.insert(session.clone());
        self.end_sessions_beyond_cap(user.id, session.id).await?;
        tracing::info!(user = %user.id, session = %session.id, "login");
        Ok(LoginOutcome {
            user,
            session,
            token,
        })
    }

    /// A new session's secret, with its check value: a token for a cookie session; for a token
    /// session, the first refresh token of a new family, and the family's hash for the store.
    fn new_secret(&self, transport: Transport) -> (SessionToken, Option<TokenHash>) {
        match transport {
            Transport::Cookie => (self.check.mint(), None),
            Transport::Token => {
                let family = Lineage::generate();
                (self.check.mint_in_family(&family), Some(family.hash()))
            }
        }
    }

    /// Whether a presented token (of the right shape) may be looked up in the store: it carries
    /// a valid check value, or the budget for tokens without one has room this second.
    pub(crate) fn may_look_up(&self, raw: &str) -> bool {
        if self.check.verify(raw) {
            return true;
        }
        let allowed = self.unchecked.take(self.config.unchecked_lookups_per_sec);
        if !allowed {
            tracing::debug!("a token without a check value refused without a lookup");
        }
        allowed
    }

    /// Ends a user's oldest sessions beyond `max_sessions_per_user`, never `new` (logins in
    /// the same second tie on their start time).
    async fn end_sessions_beyond_cap(&self, user: UserId, new: SessionId) -> Result<(), AuthError> {
        if self.config.max_sessions_per_user == usize::MAX {
            return Ok(());
        }
        let past = self
            .store
            .sessions_past(user, self.config.max_sessions_per_user)
            .await?;
        for old in past.into_iter().filter(|id| *id != new) {
            tracing::info!(user = %user, session = %old, "oldest session ended: too many");
            self.end_session_record(old).await?;
        }
        Ok(())
    }

    async fn upgrade_hash(&self, id: UserId, stored: &str, password: String) {
        match self.hasher.hash(password).await {
            Ok(hash) => match self.store.rehash_password(id, stored, &hash).await {
                Ok(true) => tracing::info!(user = %id, "password hash upgraded"),
                Ok(false) => tracing::debug!(user = %id, "password changed before the upgrade"),
                Err(e) => tracing::warn!(error = %e, "could not store the upgraded hash"),
            },
            Err(e) => tracing::debug!(error = %e, "hash upgrade postponed"),
        }
    }

    /// Runs `work` (a password check) as one throttled attempt on each key: every key's
    /// attempt is taken before the work starts (see [`Throttle::reserve`]); a wrong password
    /// leaves them counted as failures, a success clears the account's failures and gives the
    /// others back, and any other outcome (overload, an outage) gives them all back.
    async fn throttled<T>(
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
            Err(AuthError::InvalidCredentials) => {}
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
            if *n >= self.config.hashing_per_client {
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

    /// Recognises a session token: format first (a malformed token never reaches the store),
    /// then memory, then the store for a session this process has not seen yet.
    pub async fn authenticate(&self, raw_token: &str) -> Result<Authenticated, AuthError> {
        let hash = SessionToken::hash_presented(raw_token).ok_or(AuthError::Unauthenticated)?;
        let live = match self.live.get(&hash) {
            Some(live) => live,
            None => {
                if !self.may_look_up(raw_token) {
                    return Err(AuthError::Unauthenticated);
                }
                let session = self
                    .store
                    .find_by_token(&hash)
                    .await?
                    .ok_or(AuthError::Unauthenticated)?;
                self.live
                    .insert(session)
                    .ok_or(AuthError::Unauthenticated)?
            }
        };
        // A token session's secret is its refresh token, which is never a session cookie.
        if live.session.transport != Transport::Cookie {
            return Err(AuthError::Unauthenticated);
        }
        self.check_live(&live, self.now()).await
    }

    pub(crate) async fn check_live(
        &self,
        live: &Arc<LiveSession>,
        now: OffsetDateTime,
    ) -> Result<Authenticated, AuthError> {
        // Fail closed: while revocations may be missed, no session is trusted.
        self.feed_ok()?;
        let session = &live.session;
        if self.live.is_revoked(session.id) {
            self.live.remove(session.id);
            return Err(AuthError::Unauthenticated);
        }
        let now_secs = now.unix_timestamp();
        if live.is_expired(now_secs) && !self.used_elsewhere(live, now).await? {
            // Idle everywhere as far as anyone can tell. Not revoked: expiry follows from the
            // last-seen time, which every instance reads alike, and the sweep deletes it.
            self.live.remove(session.id);
            return Err(AuthError::Unauthenticated);
        }
        let user = self.user(session.user_id).await?;
        if user.disabled {
            return Err(AuthError::Unauthenticated);
        }
        if session.credentials_gen < user.credentials_gen {
            // Proven with a password that has changed since: void, here and in the store.
            self.end_session_record(session.id).await?;
            return Err(AuthError::Unauthenticated);
        }
        live.touch(now);
        Ok(Authenticated {
            user,
            session: Arc::clone(session),
            expires_at: live.expires_at(now_secs),
        })
    }

    /// Whether a session that looks idle here was used on another instance since: the store's
    /// last-seen time (written by every instance in batches) is the shared one. If so, this
    /// instance adopts it.
    async fn used_elsewhere(
        &self,
        live: &Arc<LiveSession>,
        now: OffsetDateTime,
    ) -> Result<bool, AuthError> {
        let Some(stored) = self.store.find_session(live.session.id).await? else {
            return Ok(false);
        };
        if stored.is_expired(stored.last_seen_at, now) {
            return Ok(false);
        }
        live.touch(stored.last_seen_at);
        Ok(true)
    }

    pub(crate) async fn user(&self, id: UserId) -> Result<Arc<User>, AuthError> {
        if let Some(user) = self.live.user(id) {
            return Ok(user);
        }
        let epoch = self.live.users_epoch();
        match self.store.find_user(id).await? {
            Some(user) => Ok(self.live.put_user(user, epoch)),
            None => Err(AuthError::Unauthenticated),
        }
    }

    pub(crate) async fn end_session_record(&self, id: SessionId) -> Result<bool, AuthError> {
        let ended = self.store.revoke(id).await?;
        match ended {
            Some(s) => {
                self.mark_revoked(id, s.absolute_expires_at);
                tracing::info!(session = %id, user = %s.user_id, "session ended");
                Ok(true)
            }
            None => {
                self.live.remove(id);
                Ok(false)
            }
        }
    }

    async fn end_all(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionId>, AuthError> {
        let ended = self.store.revoke_all(user, keep).await?;
        // The deadline is not known here; the change log carries it for other processes, and
        // this one keeps the id for the longest lifetime there is.
        let until = self.now()
            + self
                .config
                .remember
                .absolute
                .max(self.config.session.absolute);
        for id in &ended {
            self.mark_revoked(*id, until);
        }
        tracing::info!(user = %user, count = ended.len(), "sessions ended");
        Ok(ended)
    }

    /// Ends the caller's own session.
    pub async fn logout(&self, who: &Authenticated) -> Result<(), AuthError> {
        self.end_session_record(who.session.id).await?;
        Ok(())
    }

    /// Ends every session of the caller, this one included. Needs fresh authentication.
    pub async fn logout_all(
        &self,
        who: &Authenticated,
        reauth: Reauth,
    ) -> Result<Vec<SessionId>, AuthError> {
        self.require_fresh(who, reauth).await?;
        self.end_all(who.user.id, None).await
    }

    /// The caller's sessions, newest first, each with its last activity.
    pub async fn sessions(
        &self,
        who: &Authenticated,
    ) -> Result<Vec<(Session, OffsetDateTime)>, AuthError> {
        self.user_sessions(who.user.id).await
    }

    async fn user_sessions(
        &self,
        user: UserId,
    ) -> Result<Vec<(Session, OffsetDateTime)>, AuthError> {
        let now = self.now();
        let current = self.user(user).await?.credentials_gen;
        let sessions = self.store.list_for_user(user).await?;
        Ok(sessions
            .into_iter()
            .filter(|s| !self.live.is_revoked(s.id) && s.credentials_gen >= current)
            .map(|s| {
                let seen = self
                    .live
                    .get_by_id(s.id)
                    .map(|l| l.last_seen())
                    .unwrap_or(s.last_seen_at)
                    .max(s.last_seen_at);
                (s, seen)
            })
            .filter(|(s, seen)| !s.is_expired(*seen, now))
            .collect())
    }

    /// Ends one of the caller's sessions. Another user's session is [`AuthError::NotFound`],
    /// exactly like one that does not exist. Ending a session other than the caller's own
    /// needs fresh authentication.
    pub async fn end_session(
        &self,
        who: &Authenticated,
        id: SessionId,
        reauth: Reauth,
    ) -> Result<(), AuthError> {
        let target = self.store.find_session(id).await?;
        match target {
            Some(s) if s.user_id == who.user.id => {
                if s.id != who.session.id {
                    self.require_fresh(who, reauth).await?;
                }
                self.end_session_record(id).await?;
                Ok(())
            }
            _ => Err(AuthError::NotFound),
        }
    }

    async fn require_fresh(&self, who: &Authenticated, reauth: Reauth) -> Result<(), AuthError> {
        match reauth {
            Reauth::Password(password) => self.check_password(&who.user, &password).await,
            Reauth::None => {
                let age = self.now() - who.session.authenticated_at;
                if age <= self.config.fresh_auth {
                    Ok(())
                } else {
                    Err(AuthError::ReauthRequired)
                }
            }
        }
    }

    /// Verifies the password of a signed-in user, as one throttled attempt on their account.
    async fn check_password(&self, user: &User, password: &str) -> Result<(), AuthError> {
        let acct = account_key(&user.email);
        let keys = [Attempt::account(Some(&acct), &self.config.account_throttle)];
        self.throttled(&keys, self.now(), async {
            let normalized = PasswordPolicy::normalize(password);
            let stored = self.store.password_hash(user.id).await?;
            let ok = PasswordPolicy::acceptable_at_login(&normalized)
                && self.hasher.verify(normalized, stored).await?.matched;
            if ok {
                Ok(())
            } else {
                Err(AuthError::InvalidCredentials)
            }
        })
        .await
    }

    /// Changes the caller's password (the current one is always required) and ends every
    /// session of the user, the caller's included: the caller continues in a new session (new
    /// id, new secret, same transport), returned with its token. So nothing the old session
    /// handed out (a cookie, a JWT cookie, access and refresh tokens), copied by whoever else
    /// holds it, works anywhere afterwards.
    ///
    /// The new password and the user's new `credentials_gen` are stored in one step, before
    /// anything else: should the rest fail (a crash, an outage), every older session is already
    /// void by its count, on every instance.
    pub async fn change_password(
        &self,
        who: &Authenticated,
        current: &str,
        new: &str,
    ) -> Result<LoginOutcome, AuthError> {
        self.check_password(&who.user, current).await?;
        let normalized = PasswordPolicy::normalize(new);
        self.policy
            .check_new(&normalized, who.user.email.as_str())?;
        let hash = self.hasher.hash(normalized).await?;
        let generation = self
            .store
            .set_password(who.user.id, &hash)
            .await?
            .ok_or(AuthError::Unauthenticated)?;
        self.live.forget_user(who.user.id);
        let old = &who.session;
        let now = self.now();
        let lifetime = if old.remember {
            self.config.remember
        } else {
            self.config.session
        };
        let (token, refresh_family) = self.new_secret(old.transport);
        let session = Session {
            id: SessionId::random(),
            user_id: who.user.id,
            transport: old.transport,
            secret_hash: token.hash(),
            remember: old.remember,
            created_at: now,
            authenticated_at: now,
            last_seen_at: now,
            idle_timeout: lifetime.idle,
            absolute_expires_at: now + lifetime.absolute,
            ip: old.ip.clone(),
            user_agent: old.user_agent.clone(),
            credentials_gen: generation,
            refresh_family,
        };
        self.store.insert_session(&session).await?;
        self.end_all(who.user.id, Some(session.id)).await?;
        self.live.insert(session.clone());
        let user = (*self.user(who.user.id).await?).clone();
        tracing::info!(user = %user.id, session = %session.id, "password changed");
        Ok(LoginOutcome {
            user,
            session,
            token,
        })
    }

    // ----- administration -----------------------------------------------------------------

    /// Sessions of one user (by email), or of everyone.
    pub async fn admin_sessions(
        &self,
        email: Option<&str>,
    ) -> Result<Vec<(User, Session, OffsetDateTime)>, AuthError> {
        let users = match email {
            Some(e) => vec![self.find_user(e).await?],
            None => self.store.list_users().await?,
        };
        let mut out = Vec::new();
        for user in users {
            for (s, seen) in self.user_sessions(user.id).await? {
                out.push((user.clone(), s, seen));
            }
        }
        Ok(out)
    }

    /// Ends a session by id, whoever's it is.
    pub async fn admin_revoke(&self, id: SessionId) -> Result<(), AuthError> {
        if self.end_session_record(id).await? {
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    /// Ends every session of a user (by email).
    pub async fn admin_revoke_all(&self, email: &str) -> Result<Vec<SessionId>, AuthError> {
        let user = self.find_user(email).await?;
        self.end_all(user.id, None).await
    }

    // ----- keeping memory and store in step -----------------------------------------------

    /// Reads the change log past the last position seen and applies it: revoked sessions are
    /// forgotten and refused from now on, changed users are reloaded on next use.
    pub async fn apply_changes(&self) -> Result<usize, AuthError> {
        let _guard = self.sync.lock().await;
        let cursor = self.cursor.load(Ordering::Acquire);
        let changes = self.store.changes_since(cursor).await?;
        let count = changes.len();
        for (seq, change) in changes {
            match change {
                Change::SessionRevoked { id, expires_at } => self.mark_revoked(id, expires_at),
                Change::UserChanged(id) => self.live.forget_user(id),
            }
            self.cursor.store(seq, Ordering::Release);
        }
        Ok(count)
    }

    /// A signal whenever the store's change log may have grown, when the store can push one
    /// (PostgreSQL); call [`Auth::apply_changes`] on each. `None`: rely on polling.
    pub async fn watch_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Option<i64>>>, AuthError> {
        Ok(self.store.watch().await?)
    }

    /// Refuses a session from now on, and tells the followers of revocations.
    fn mark_revoked(&self, id: SessionId, expires_at: OffsetDateTime) {
        self.live.revoke(id, expires_at);
        // Nobody listening is not an error.
        let _ = self
            .revocations
            .send(Revocation::Session { id, expires_at });
    }

    /// Follows revocations, for verifiers elsewhere (`GET /auth/revocations`): the sessions
    /// revoked so far whose tokens may still be alive, then each revocation as it happens.
    /// Subscribes before taking the snapshot, so nothing falls between the two. A receiver that
    /// lags more than the buffer gets an error and must start over.
    pub fn follow_revocations(
        &self,
    ) -> (
        Vec<Revocation>,
        tokio::sync::broadcast::Receiver<Revocation>,
    ) {
        let rx = self.revocations.subscribe();
        let snapshot = self
            .live
            .revoked(self.now())
            .into_iter()
            .map(|(id, expires_at)| Revocation::Session { id, expires_at })
            .collect();
        (snapshot, rx)
    }

    /// Revocations pushed by the store as they happen (Redis); feed each to
    /// [`Auth::apply_revocation`]. `None`: the change log carries them.
    pub async fn revocation_events(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<RevocationEvent>>, AuthError> {
        Ok(self.store.revocations().await?)
    }

    /// Applies one pushed revocation event: a revoked session is refused from now on; while
    /// the feed is lost every session is refused (503), since a revocation could be missed; a
    /// store that lost its data makes this process forget every session it holds.
    pub fn apply_revocation(&self, event: RevocationEvent) {
        match event {
            RevocationEvent::Revoked { id, expires_at, .. } => self.mark_revoked(id, expires_at),
            RevocationEvent::Lost => self.feed_down.store(true, Ordering::Release),
            RevocationEvent::Resynced => self.feed_down.store(false, Ordering::Release),
            RevocationEvent::Reset => {
                self.live.clear_sessions();
                self.verified.clear();
                // Every session is gone: verifiers elsewhere must refuse every token minted so far.
                let _ = self.revocations.send(Revocation::AllBefore(self.now()));
            }
        }
    }

    /// Writes last-seen times gathered in memory to the store, in one batch.
    pub async fn flush_activity(&self) -> Result<usize, AuthError> {
        let pending = self.live.unflushed();
        if pending.is_empty() {
            return Ok(0);
        }
        let batch: Vec<_> = pending.iter().map(|(id, at, _)| (*id, *at)).collect();
        self.store.touch(&batch).await?;
        for (_, at, live) in &pending {
            LiveSessions::mark_flushed(live, *at);
        }
        Ok(pending.len())
    }

    /// The store's periodic housekeeping (see [`Store::maintain`]).
    pub async fn maintain(&self) -> Result<(), AuthError> {
        Ok(self.store.maintain().await?)
    }

    /// Forgets expired sessions in memory and deletes them from the store.
    pub async fn sweep(&self) -> Result<u64, AuthError> {
        let now = self.now();
        self.live.sweep(now);
        let leeway = self.claims_policy.leeway_secs;
        self.verified
            .retain(|_, v| v.expires_at().saturating_add(leeway) > now.unix_timestamp());
        let deleted = self
            .store
            .delete_expired(now, self.config.idle_grace)
            .await?;
        self.store.prune_changes(now).await?;
        self.store
            .delete_keys_retired_before(now - self.config.jwt.key_horizon())
            .await?;
        Ok(deleted)
    }
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
