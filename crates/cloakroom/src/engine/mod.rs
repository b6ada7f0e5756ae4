//! The engine: [`Auth`] is the facade the server and embedding apps call. It holds small
//! components that own their state, and runs the use cases that span them (login, logout
//! everywhere, password change, disabling a user):
//!
//! - [`accounts`]: users, passwords, the throttled checks of them ([`attempts`]);
//! - [`sessions`]: the live sessions, the store behind them, revocation and listing;
//! - [`access_tokens`]: access JWTs and refresh tokens, on top of `sessions`, with the keys
//!   that sign them ([`signing_keys`]);
//! - [`factors`]: second factors and the second step of a login; the use cases that need them
//!   are in [`mfa`].
//!
//! [`Auth`] owns no I/O of its own beyond the [`Store`] and [`Throttle`] it is given, reads the
//! time from its [`Clock`], and keeps live sessions in memory. A process that shares the store
//! with others calls [`Auth::apply_changes`] periodically (see [`crate::maintenance`]) to learn what they ended or changed,
//! [`Auth::flush_activity`] to write last-seen times in batches, and [`Auth::sweep`] to drop
//! expired sessions.

mod access_tokens;
mod accounts;
mod assertion;
mod attempts;
mod binding;
mod config;
mod error;
mod factors;
mod lifecycle;
mod mfa;
mod passkeys;
mod proofs;
mod request;
mod sessions;
mod signing_keys;

pub use access_tokens::{TokenPair, ACCESS_TOKEN_TYPE};
pub use config::{AuthConfig, JwtConfig};
pub use error::AuthError;
pub use factors::{SecondFactor, TotpEnrolment, RECOVERY_CODES};
pub use mfa::MfaLogin;
pub use proofs::DPOP_WINDOW;
pub use request::{AuthMetrics, Authenticated, ClientInfo, LoginOutcome, LoginRequest, Reauth};
pub use sessions::Revocation;
pub use signing_keys::KeyInfo;

use crate::events::{EventKind, SecurityEvent};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::jwt::KeyRing;
use crate::password::PasswordHasher;
use crate::session::{Session, SessionId, TokenCheck, Transport};
use crate::store::{RevocationEvent, Store};
use crate::throttle::{MemoryThrottle, Throttle};
use crate::user::{Role, User};
use access_tokens::AccessTokens;
use accounts::Accounts;
use attempts::Attempts;
use factors::Factors;
use sessions::{load_shared_key, NewSession, Sessions};
use signing_keys::SigningKeys;

/// The authentication engine.
pub struct Auth {
    store: Arc<dyn Store>,
    config: Arc<AuthConfig>,
    clock: Arc<dyn Clock>,
    accounts: Accounts,
    factors: Factors,
    sessions: Arc<Sessions>,
    tokens: AccessTokens,
    mails: Arc<lifecycle::Mails>,
    dpop: proofs::Nonces,
    binder: binding::Binder,
    /// Event counters.
    pub metrics: Arc<AuthMetrics>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .field("live_sessions", &self.sessions.count())
            .finish_non_exhaustive()
    }
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
        let config = Arc::new(config);
        let hasher = PasswordHasher::with_priority(
            config.argon2,
            config.hash_threads,
            config.hash_queue,
            config.hash_idle_priority,
        )?;
        // An admin engine stores no keys: it gets throwaway ones (it recognises no session
        // token and checks no passkey).
        let shared_key = |name| {
            let (store, config) = (Arc::clone(&store), Arc::clone(&config));
            async move {
                if serving {
                    load_shared_key(&*store, config.sealing.as_deref(), name).await
                } else {
                    let mut key = vec![0u8; 32];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
                    Ok(key)
                }
            }
        };
        let check = TokenCheck::new(&shared_key(sessions::TOKEN_CHECK).await?);
        let challenge_key = shared_key(passkeys::CHALLENGE_KEY).await?;
        let sessions = Arc::new(
            Sessions::load(
                Arc::clone(&store),
                check,
                Arc::clone(&config),
                Arc::clone(&clock),
            )
            .await?,
        );
        let keys = SigningKeys::load(
            Arc::clone(&store),
            Arc::clone(&config),
            Arc::clone(&clock),
            serving,
        )
        .await?;
        let metrics = Arc::new(AuthMetrics::default());
        let tokens = AccessTokens::new(
            keys,
            Arc::clone(&sessions),
            Arc::clone(&store),
            Arc::clone(&config),
            Arc::clone(&clock),
            Arc::clone(&metrics),
        );
        let attempts = Arc::new(Attempts::new(throttle, config.hashing_per_client));
        let accounts = Accounts::new(
            Arc::clone(&store),
            hasher,
            Arc::clone(&attempts),
            Arc::clone(&config),
            Arc::clone(&clock),
        );
        let mails = Arc::new(lifecycle::Mails::new(
            Arc::clone(&config),
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&attempts),
        )?);
        let factors = Factors::new(
            Arc::clone(&store),
            attempts,
            Arc::clone(&config),
            Arc::clone(&clock),
            &challenge_key,
            Arc::clone(&mails),
        )?;
        let auth = Self {
            store,
            config,
            clock,
            accounts,
            factors,
            sessions,
            tokens,
            mails,
            dpop: proofs::Nonces::new(&challenge_key),
            binder: binding::Binder::new(&challenge_key),
            metrics,
        };
        if serving {
            let sealed =
                auth.tokens.keys().seal_clear().await? + auth.factors.reseal(false).await?;
            if sealed > 0 {
                tracing::info!(
                    count = sealed,
                    "signing keys and TOTP secrets sealed that were stored in clear"
                );
            }
        }
        Ok(auth)
    }

    /// The engine's settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The password hasher (its queue length is a useful metric).
    pub fn hasher(&self) -> &PasswordHasher {
        self.accounts.hasher()
    }

    /// The current time, from the engine's clock, in whole seconds (what the store keeps).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now_secs()
    }

    /// How many sessions are held in memory.
    pub fn live_sessions(&self) -> usize {
        self.sessions.count()
    }

    /// Whether the store answers and revocations reach this process.
    pub async fn ready(&self) -> Result<(), AuthError> {
        self.sessions.feed_ok()?;
        Ok(self.store.ping().await?)
    }

    // ----- accounts -------------------------------------------------------------------------

    /// Creates an account with the default role; throttled per client IP.
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        let user = self.accounts.signup(email, password, client).await?;
        // The account exists either way: a verification mail that could not be queued is
        // asked for again with `request_email_verification`.
        if let Err(e) = self.send_verification(&user).await {
            tracing::warn!(user = %user.id, error = %e, "no verification mail was queued");
        }
        Ok(user)
    }

    /// The outbox's worker for this engine's store, sending with `mailer` and woken whenever
    /// this engine queues a message.
    pub fn mail_worker(
        &self,
        mailer: Arc<dyn crate::mail::Mailer>,
        metrics: Arc<crate::mail::MailMetrics>,
    ) -> crate::mail::MailWorker {
        crate::mail::MailWorker::new(
            Arc::clone(&self.store),
            mailer,
            Arc::clone(&self.clock),
            metrics,
            self.mails.waker(),
        )
    }

    /// Creates an account with the given roles (the CLI's `user add`); no throttling.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        roles: Vec<Role>,
    ) -> Result<User, AuthError> {
        self.accounts.create_user(email, password, roles).await
    }

    /// The account with this email.
    pub async fn find_user(&self, email: &str) -> Result<User, AuthError> {
        self.accounts.find_user(email).await
    }

    /// Every account.
    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        self.accounts.list_users().await
    }

    /// Disables (ending every session) or re-enables an account.
    pub async fn set_disabled(&self, email: &str, disabled: bool) -> Result<User, AuthError> {
        let user = self.accounts.set_disabled(email, disabled).await?;
        self.sessions.forget_user(user.id);
        if disabled {
            self.sessions.end_all(user.id, None).await?;
        }
        let kind = if disabled {
            EventKind::AccountDisabled
        } else {
            EventKind::AccountEnabled
        };
        self.record(user.id, kind, None, None).await;
        Ok(user)
    }

    /// Replaces an account's roles. Its sessions stay, and see the new roles at once.
    pub async fn set_roles(&self, email: &str, roles: &[String]) -> Result<User, AuthError> {
        let user = self.accounts.set_roles(email, roles).await?;
        self.sessions.forget_user(user.id);
        let names: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        self.record(
            user.id,
            EventKind::RolesChanged,
            None,
            Some(&names.join(" ")),
        )
        .await;
        Ok(user)
    }

    // ----- login and sessions -----------------------------------------------------------------

    /// Checks a password and starts a new session. Unknown email, wrong password and disabled
    /// account get the same error after the same work; throttled callers do no hashing. For an
    /// account with a second factor, a right password starts no session: it is
    /// [`AuthError::MfaRequired`], and [`Auth::login_mfa`] completes the login.
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
        let user = self.accounts.verify_login(&req).await?;
        let methods = self.factors.methods(user.id).await?;
        if !methods.is_empty() {
            let mfa_token = self
                .factors
                .challenge(&user, req.transport, req.remember)
                .await?;
            tracing::info!(user = %user.id, "password accepted; a second factor is due");
            return Err(AuthError::MfaRequired { mfa_token, methods });
        }
        self.start_session(user, &req, crate::Amr::PWD, None).await
    }

    /// Starts the session of a login whose proof is complete (`amr`), ending the session the
    /// client held and the user's sessions beyond the cap. A passkey's login stores the
    /// passkey's use with the session: [`AuthError::PasskeyRefused`] when the passkey does not
    /// take it (an assertion used before), and then nothing changes.
    async fn start_session(
        &self,
        user: crate::User,
        req: &LoginRequest,
        amr: crate::Amr,
        passkey: Option<&crate::factor::PasskeyUse>,
    ) -> Result<LoginOutcome, AuthError> {
        // The password was checked against the user's credentials generation: a change that
        // lands before the session is stored makes it void (see `check_live`).
        let (session, token) = self.sessions.new_session(NewSession {
            user: user.id,
            transport: req.transport,
            remember: req.remember,
            ip: req.client.ip.map(|ip| ip.to_string()),
            user_agent: req.client.user_agent.clone(),
            credentials_gen: user.credentials_gen,
            amr,
            dpop_jkt: req.dpop_jkt.clone(),
            dbsc_key: None,
        });
        let event = SecurityEvent {
            user_id: user.id,
            kind: EventKind::Login,
            at: self.now(),
            ip: req.client.ip.map(|ip| ip.to_string()),
            user_agent: req.client.user_agent.clone(),
            detail: Some(amr.names().join(" ")),
        };
        if !self.sessions.open_login(&session, &event, passkey).await? {
            return Err(AuthError::PasskeyRefused);
        }
        // Re-login ends the session the client held, whether its cookie carries the session
        // token or an access JWT (no session fixation, ASVS 5.0 7.2.4).
        if let Some(current) = req.current_token.as_deref() {
            let held = if crate::cookie::holds_jwt(current) {
                self.tokens.session_named_by(current)
            } else {
                self.sessions.named_by_token(current).await?
            };
            if let Some(id) = held {
                self.sessions.end_session_record(id).await?;
            }
        }
        if req.dpop_jkt.is_some() {
            self.record(
                user.id,
                EventKind::TokensBound,
                event.ip.clone(),
                Some("DPoP"),
            )
            .await;
        }
        self.mails.watch_for_new_device(&user, event);
        tracing::info!(user = %user.id, session = %session.id, "login");
        Ok(LoginOutcome {
            user,
            session,
            token,
        })
    }

    /// Recognises a session token: format first (a malformed token never reaches the store),
    /// then memory, then the store for a session this process has not seen yet.
    pub async fn authenticate(&self, raw_token: &str) -> Result<Authenticated, AuthError> {
        self.sessions.authenticate(raw_token).await
    }

    /// Recognises the session cookie's value: an access JWT (see
    /// [`Auth::authenticate_jwt_cookie`]) or the opaque session token.
    pub async fn authenticate_cookie(&self, value: &str) -> Result<Authenticated, AuthError> {
        if crate::cookie::holds_jwt(value) {
            self.tokens.authenticate_jwt_cookie(value).await
        } else {
            self.sessions.authenticate(value).await
        }
    }

    /// Recognises an access JWT carried as the session cookie: checked like a bearer token,
    /// and it must name a cookie session (one started with `cookie: "jwt"`).
    pub async fn authenticate_jwt_cookie(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.tokens.authenticate_jwt_cookie(token).await
    }

    /// Recognises an access JWT: signature by `kid` and the key's own algorithm, the RFC 9068
    /// claims, then the session it names, which must be live, unrevoked and the subject's.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.tokens.authenticate_bearer(token).await
    }

    /// Ends the caller's own session.
    pub async fn logout(&self, who: &Authenticated) -> Result<(), AuthError> {
        self.sessions.end_session_record(who.session.id).await?;
        self.record(who.user.id, EventKind::Logout, who.session.ip.clone(), None)
            .await;
        Ok(())
    }

    /// Ends every session of the caller, this one included. Needs fresh authentication.
    pub async fn logout_all(
        &self,
        who: &Authenticated,
        reauth: Reauth,
    ) -> Result<Vec<SessionId>, AuthError> {
        self.require_fresh(who, reauth).await?;
        self.sessions.end_all(who.user.id, None).await
    }

    /// The caller's sessions, newest first, each with its last activity.
    pub async fn sessions(
        &self,
        who: &Authenticated,
    ) -> Result<Vec<(Session, OffsetDateTime)>, AuthError> {
        self.sessions.user_sessions(who.user.id).await
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
                self.sessions.end_session_record(id).await?;
                self.record(
                    who.user.id,
                    EventKind::SessionsEnded,
                    who.session.ip.clone(),
                    Some("one, by the user"),
                )
                .await;
                Ok(())
            }
            _ => Err(AuthError::NotFound),
        }
    }

    async fn require_fresh(&self, who: &Authenticated, reauth: Reauth) -> Result<(), AuthError> {
        match reauth {
            Reauth::Password(password) => self.accounts.check_password(&who.user, &password).await,
            Reauth::SecondFactor(proof) => self
                .factors
                .verify(&who.user, &proof, None)
                .await
                .map(|_| ()),
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
        self.accounts.check_password(&who.user, current).await?;
        let notice = self
            .mails
            .password_changed(&who.user.email, "by you, signed in")?;
        let generation = self
            .accounts
            .set_password(&who.user, new, Some(&notice))
            .await?;
        self.mails.queued();
        self.sessions.forget_user(who.user.id);
        let old = &who.session;
        let (session, token) = self.sessions.new_session(NewSession {
            user: who.user.id,
            transport: old.transport,
            remember: old.remember,
            ip: old.ip.clone(),
            user_agent: old.user_agent.clone(),
            credentials_gen: generation,
            amr: old.amr,
            dpop_jkt: old.dpop_jkt.clone(),
            dbsc_key: old.dbsc_key.clone(),
        });
        self.sessions.open(&session).await?;
        self.sessions.end_all(who.user.id, Some(session.id)).await?;
        let user = (*self.sessions.user(who.user.id).await?).clone();
        self.record(
            user.id,
            EventKind::PasswordChanged,
            who.session.ip.clone(),
            Some("by the user"),
        )
        .await;
        tracing::info!(user = %user.id, session = %session.id, "password changed");
        Ok(LoginOutcome {
            user,
            session,
            token,
        })
    }

    // ----- access and refresh tokens -----------------------------------------------------

    /// The password grant: checks the password like [`Auth::login`] and starts a token session.
    pub async fn login_tokens(&self, mut req: LoginRequest) -> Result<TokenPair, AuthError> {
        req.transport = Transport::Token;
        req.current_token = None;
        let out = self.login(req).await?;
        let (access_token, expires_in) = self.tokens.mint(&out.user, &out.session)?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token: out.token,
            session: out.session,
            user: out.user,
        })
    }

    /// The refresh grant: rotates the refresh token (one compare-and-set in the store) and mints
    /// a new access token. A spent token presented again within the grace window gets the same
    /// successor back; later, it is theft, and the whole session ends.
    pub async fn refresh(&self, raw: &str) -> Result<TokenPair, AuthError> {
        self.tokens.refresh(raw, None).await
    }

    /// [`Auth::refresh`] for a request with a DPoP proof by the key `dpop_jkt` (checked by
    /// [`Auth::check_dpop_proof`]): a session bound to a key rotates only with that key's proof.
    pub async fn refresh_with_proof(
        &self,
        raw: &str,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenPair, AuthError> {
        self.tokens.refresh(raw, dpop_jkt).await
    }

    /// Mints an access token for a session, ending no later than the session's deadline.
    pub fn mint_access_token(
        &self,
        user: &User,
        session: &Session,
    ) -> Result<(String, i64), AuthError> {
        self.tokens.mint(user, session)
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> serde_json::Value {
        self.tokens.keys().current().jwks()
    }

    /// The current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.tokens.keys().ring()
    }

    /// Rereads the keys from the store (another process may have rotated them).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        self.tokens.reload_keys().await
    }

    /// Makes a new signing key; the old ones keep verifying until their tokens have expired.
    pub async fn rotate_keys(&self) -> Result<String, AuthError> {
        let kid = self.tokens.keys().rotate().await?;
        self.tokens.reload_keys().await?;
        Ok(kid)
    }

    /// Seals every stored signing key (and the tokens' check key) and every authenticator
    /// app's secret with the current key-encryption key; returns how many were re-sealed.
    pub async fn rekey(&self) -> Result<usize, AuthError> {
        let keys = self.tokens.keys().rekey().await?;
        Ok(keys + self.factors.reseal(true).await?)
    }

    /// Every stored key with its status.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, AuthError> {
        self.tokens.keys().list().await
    }

    // ----- administration -----------------------------------------------------------------

    /// Sessions of one user (by email), or of everyone.
    pub async fn admin_sessions(
        &self,
        email: Option<&str>,
    ) -> Result<Vec<(User, Session, OffsetDateTime)>, AuthError> {
        let users = match email {
            Some(e) => vec![self.find_user(e).await?],
            None => self.accounts.list_users().await?,
        };
        let mut out = Vec::new();
        for user in users {
            for (s, seen) in self.sessions.user_sessions(user.id).await? {
                out.push((user.clone(), s, seen));
            }
        }
        Ok(out)
    }

    /// Ends a session by id, whoever's it is.
    pub async fn admin_revoke(&self, id: SessionId) -> Result<(), AuthError> {
        let owner = self.store.find_session(id).await?.map(|s| s.user_id);
        match owner {
            Some(user) if self.sessions.end_session_record(id).await? => {
                self.record(
                    user,
                    EventKind::SessionsEnded,
                    None,
                    Some("one, by an administrator"),
                )
                .await;
                Ok(())
            }
            _ => Err(AuthError::NotFound),
        }
    }

    /// Ends every session of a user (by email).
    pub async fn admin_revoke_all(&self, email: &str) -> Result<Vec<SessionId>, AuthError> {
        let user = self.find_user(email).await?;
        let ended = self.sessions.end_all(user.id, None).await?;
        self.record(
            user.id,
            EventKind::SessionsEnded,
            None,
            Some("all, by an administrator"),
        )
        .await;
        Ok(ended)
    }

    // ----- keeping memory and store in step -----------------------------------------------

    /// Reads the change log past the last position seen and applies it: revoked sessions are
    /// forgotten and refused from now on, changed users are reloaded on next use.
    pub async fn apply_changes(&self) -> Result<usize, AuthError> {
        self.sessions.apply_changes().await
    }

    /// A signal whenever the store's change log may have grown, when the store can push one
    /// (PostgreSQL); call [`Auth::apply_changes`] on each. `None`: rely on polling.
    pub async fn watch_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Option<i64>>>, AuthError> {
        self.sessions.watch_changes().await
    }

    /// Follows revocations, for verifiers elsewhere (`GET /auth/revocations`): the sessions
    /// revoked so far whose tokens may still be alive, then each revocation as it happens.
    pub fn follow_revocations(
        &self,
    ) -> (
        Vec<Revocation>,
        tokio::sync::broadcast::Receiver<Revocation>,
    ) {
        self.sessions.follow_revocations()
    }

    /// Revocations pushed by the store as they happen (Redis); feed each to
    /// [`Auth::apply_revocation`]. `None`: the change log carries them.
    pub async fn revocation_events(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<RevocationEvent>>, AuthError> {
        self.sessions.revocation_events().await
    }

    /// Applies one pushed revocation event: a revoked session is refused from now on; while
    /// the feed is lost every session is refused (503), since a revocation could be missed; a
    /// store that lost its data makes this process forget every session and token it holds.
    pub fn apply_revocation(&self, event: RevocationEvent) {
        if matches!(event, RevocationEvent::Reset) {
            self.tokens.forget_verified();
        }
        self.sessions.apply_revocation(event);
    }

    /// Writes what is gathered in memory to the store: last-seen times, in one batch, and
    /// the events of failed logins.
    pub async fn flush_activity(&self) -> Result<usize, AuthError> {
        let seen = self.sessions.flush_activity().await;
        let failed = self.accounts.flush_failed_logins().await;
        Ok(seen? + failed?)
    }

    /// Forgets expired sessions and tokens in memory and deletes them from the store, with
    /// the change log's old entries, keys retired long ago, expired links in mail and security
    /// events past their retention.
    pub async fn sweep(&self) -> Result<u64, AuthError> {
        let now = self.now();
        self.sessions.sweep(now);
        self.tokens.sweep(now);
        let deleted = self
            .store
            .delete_expired(now, self.config.idle_grace)
            .await?;
        self.store.prune_changes(now).await?;
        self.store
            .delete_keys_retired_before(now - self.config.jwt.key_horizon())
            .await?;
        self.factors.sweep().await?;
        self.store.delete_expired_links(now).await?;
        self.store.delete_expired_uses(now).await?;
        if let Some(retention) = self.config.event_retention {
            self.store.delete_events_before(now - retention).await?;
        }
        Ok(deleted)
    }
}
