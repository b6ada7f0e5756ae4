//! Accounts: users, their passwords (hashing, the password policy, rehashing) and the
//! throttled checks of them.

use std::sync::Arc;

use super::attempts::{account_key, ip_key, Attempt, Attempts};
use super::config::AuthConfig;
use super::error::AuthError;
use super::request::{ClientInfo, LoginRequest};
use crate::clock::Clock;
use crate::password::{PasswordHasher, PasswordPolicy};
use crate::store::{Store, StoreError};
use crate::user::{Email, Role, User, UserId};

/// Failed logins' events held in memory at most, between two writes.
const MAX_PENDING_FAILED_LOGINS: usize = 10_000;

/// Users and passwords.
pub(crate) struct Accounts {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    attempts: Arc<Attempts>,
    config: Arc<AuthConfig>,
    clock: Arc<dyn Clock>,
    failed_logins: std::sync::Mutex<Vec<crate::events::SecurityEvent>>,
}

impl Accounts {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        attempts: Arc<Attempts>,
        config: Arc<AuthConfig>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            hasher,
            policy: PasswordPolicy,
            attempts,
            config,
            clock,
            failed_logins: std::sync::Mutex::default(),
        }
    }

    /// The password hasher.
    pub(crate) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Creates an account with the default role; throttled per client IP.
    pub(crate) async fn signup(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        if let Some(key) = ip_key(client.ip) {
            let key = format!("signup:{key}");
            let now = self.clock.now_secs();
            let window = self.config.signup_window;
            if let Some(wait) = self
                .attempts
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
    pub(crate) async fn create_user(
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
            created_at: self.clock.now_secs(),
            email_verified: false,
            credentials_gen: 0,
        };
        match self.store.insert_user(&user, &hash).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict) => Err(AuthError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// The account with this email.
    pub(crate) async fn find_user(&self, email: &str) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        match self.store.find_user_by_email(&email).await? {
            Some((user, _)) => Ok(user),
            None => Err(AuthError::NotFound),
        }
    }

    /// Every account.
    pub(crate) async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.store.list_users().await?)
    }

    /// Sets an account's disabled flag in the store.
    pub(crate) async fn set_disabled(
        &self,
        email: &str,
        disabled: bool,
    ) -> Result<User, AuthError> {
        let user = self.find_user(email).await?;
        self.store.set_disabled(user.id, disabled).await?;
        tracing::info!(user = %user.id, disabled, "user status changed");
        Ok(User { disabled, ..user })
    }

    /// Replaces an account's roles. (The facade makes its sessions see them.)
    pub(crate) async fn set_roles(&self, email: &str, roles: &[String]) -> Result<User, AuthError> {
        let mut roles = roles
            .iter()
            .map(|r| Role::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        let user = self.find_user(email).await?;
        self.store.set_roles(user.id, &roles).await?;
        tracing::info!(user = %user.id, "roles changed");
        Ok(User { roles, ..user })
    }

    /// Checks a login's password as one throttled attempt on its account and its client
    /// address. Unknown email, wrong password and disabled account get the same error after the
    /// same work; throttled callers do no hashing.
    pub(crate) async fn verify_login(&self, req: &LoginRequest) -> Result<User, AuthError> {
        let now = self.clock.now_secs();
        let email = Email::parse(&req.email).ok();
        let acct = email.as_ref().map(account_key);
        let ip = ip_key(req.client.ip);
        let keys = [
            Attempt::account(acct.as_deref(), &self.config.account_throttle),
            Attempt::client(ip.as_deref(), &self.config.ip_throttle),
        ];
        self.attempts
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
                    (found, _) => {
                        tracing::info!("login failed");
                        if let Some((user, _)) = found {
                            self.record_failed_login(user.id, &req.client);
                        }
                        Err(AuthError::InvalidCredentials)
                    }
                }
            })
            .await
    }

    /// Keeps a refused login's event, against the account its address named when it was
    /// checked, for the next [`Accounts::flush_failed_logins`]: a write on or right after the
    /// request would tell known addresses from unknown ones by its cost.
    fn record_failed_login(&self, user_id: UserId, client: &ClientInfo) {
        let event = crate::events::SecurityEvent {
            user_id,
            kind: crate::events::EventKind::LoginFailed,
            at: self.clock.now(),
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
            detail: None,
        };
        let mut pending = self
            .failed_logins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pending.len() >= MAX_PENDING_FAILED_LOGINS {
            // A flood of wrong passwords while the store is down: keep the newest.
            pending.remove(0);
        }
        pending.push(event);
    }

    /// Writes the failed logins' events kept since the last call; those the store refuses are
    /// kept for the next.
    pub(crate) async fn flush_failed_logins(&self) -> Result<usize, AuthError> {
        let pending = std::mem::take(
            &mut *self
                .failed_logins
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let mut written = 0;
        let mut events = pending.into_iter();
        for event in events.by_ref() {
            if let Err(e) = self.store.record_event(&event).await {
                let mut kept = self
                    .failed_logins
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let newer = std::mem::take(&mut *kept);
                kept.extend(std::iter::once(event).chain(events).chain(newer));
                let excess = kept.len().saturating_sub(MAX_PENDING_FAILED_LOGINS);
                kept.drain(..excess);
                return Err(e.into());
            }
            written += 1;
        }
        Ok(written)
    }

    /// Verifies the password of a signed-in user, as one throttled attempt on their account.
    pub(crate) async fn check_password(
        &self,
        user: &User,
        password: &str,
    ) -> Result<(), AuthError> {
        let acct = account_key(&user.email);
        let keys = [Attempt::account(Some(&acct), &self.config.account_throttle)];
        self.attempts
            .throttled(&keys, self.clock.now_secs(), async {
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

    /// Checks a new password against the policy (`email`, the account's, when known).
    pub(crate) fn check_new_password(&self, new: &str, email: &str) -> Result<(), AuthError> {
        Ok(self
            .policy
            .check_new(&PasswordPolicy::normalize(new), email)?)
    }

    /// Sets a new password for `user` (the policy first) and returns the user's new
    /// credentials generation: every session proven with an older password is void from now.
    pub(crate) async fn set_password(
        &self,
        user: &User,
        new: &str,
        notice: Option<&crate::mail::OutgoingMail>,
    ) -> Result<i64, AuthError> {
        let normalized = PasswordPolicy::normalize(new);
        self.policy.check_new(&normalized, user.email.as_str())?;
        let hash = self.hasher.hash(normalized).await?;
        self.store
            .set_password(user.id, &hash, notice)
            .await?
            .ok_or(AuthError::Unauthenticated)
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
}
