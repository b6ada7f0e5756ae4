//! Storage: small traits, one concern each, with their contracts in the doc comments, and the
//! backends that implement them (SQLite, embedded, by default).
//!
//! The store is the source of truth; the engine keeps what the hot path needs in memory and
//! learns about changes made elsewhere (another process, the CLI) through the [`ChangeFeed`].

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::events::SecurityEvent;
use crate::factor::{Factor, FactorId, MfaChallenge, PasskeyUse};
use crate::jwt::StoredKey;
use crate::mail::{LinkPurpose, LinkToken, OutgoingMail, QueuedMail};
use crate::session::{Session, SessionId, TokenHash};
use crate::user::{Email, Role, User, UserId};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_factors;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_login;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_mail;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_replay;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use redis::{RedisOnce, RedisStore, RedisThrottle};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// A storage failure. Messages never carry SQL or data values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (an email already taken).
    #[error("already exists")]
    Conflict,
    /// The backend could not be reached or timed out; the caller should fail closed (503).
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be read back (a bug or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other backend error.
    #[error("storage error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Something that happened to a session or user, published so every process can update what
/// it keeps in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session ended before its time; remembered until `expires_at`, its absolute deadline.
    SessionRevoked {
        /// The ended session.
        id: SessionId,
        /// When it would have expired anyway.
        expires_at: OffsetDateTime,
    },
    /// A user's roles, status or password changed.
    UserChanged(UserId),
}

/// What a store that keeps sessions apart from the change log (Redis) pushes about revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// A session was ended somewhere.
    Revoked {
        /// The ended session.
        id: SessionId,
        /// When it would have expired anyway.
        expires_at: OffsetDateTime,
        /// When the revocation was published (ms since the epoch), when known.
        sent_ms: Option<i64>,
    },
    /// The feed is down: revocations made elsewhere may be missed until [`Self::Resynced`], so
    /// sessions held in memory must not be trusted meanwhile.
    Lost,
    /// The feed is back, and every revocation made while it was down has been delivered.
    Resynced,
    /// The store lost its data (a restart without persistence): every session held in memory
    /// is gone from the store and must be forgotten.
    Reset,
}

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Adds a user with a PHC password hash; [`StoreError::Conflict`] if the email is taken.
    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError>;
    /// The user with this (normalised) email, with their password hash.
    async fn find_user_by_email(&self, email: &Email)
        -> Result<Option<(User, String)>, StoreError>;
    /// The user with this id.
    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// The user's password hash.
    async fn password_hash(&self, id: UserId) -> Result<Option<String>, StoreError>;
    /// Replaces the password (a new password: a change or a reset) and moves the user's
    /// `credentials_gen` on by one, in one atomic step, queueing `notice` (mail that tells the
    /// user) in the same one; returns the new count, or `None` if there is no such user.
    /// Publishes `UserChanged`.
    async fn set_password(
        &self,
        id: UserId,
        password_hash: &str,
        notice: Option<&OutgoingMail>,
    ) -> Result<Option<i64>, StoreError>;
    /// Replaces the hash of the same password (stronger parameters) if the stored hash is still
    /// `old`: a compare-and-set, so it never undoes a password change that landed meanwhile.
    /// Sessions are not affected.
    async fn rehash_password(&self, id: UserId, old: &str, new: &str) -> Result<bool, StoreError>;
    /// Disables or enables; false if there is no such user. Publishes `UserChanged`.
    async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError>;
    /// Replaces the roles; false if there is no such user. Publishes `UserChanged`.
    async fn set_roles(&self, id: UserId, roles: &[Role]) -> Result<bool, StoreError>;
    /// Every user, oldest first.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Deletes the user and everything of theirs the store holds (sessions in SQL, factors,
    /// links, security events, mail still waiting for their address), keeping only the id and
    /// the time in `deleted_accounts`; publishes `UserChanged`. False if there is no such user.
    /// Sessions another backend holds (Redis) are the caller's to end first.
    async fn delete_user(&self, id: UserId, at: OffsetDateTime) -> Result<bool, StoreError>;
}

/// Sessions.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Adds a new session.
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    /// The session whose current secret hashes to `hash`.
    async fn find_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError>;
    /// The session with this id.
    async fn find_session(&self, id: SessionId) -> Result<Option<Session>, StoreError>;
    /// Records last activity for many sessions at once. Only moves `last_seen_at` forward and
    /// never re-creates a session that was deleted meanwhile.
    async fn touch(&self, seen: &[(SessionId, OffsetDateTime)]) -> Result<(), StoreError>;
    /// A user's sessions, newest first.
    async fn list_for_user(&self, user: UserId) -> Result<Vec<Session>, StoreError>;
    /// The ids of a user's sessions after the `keep` newest, oldest last (at most 1 000 of
    /// them): what a cap on sessions per user ends. Reads no more than it returns and skips.
    async fn sessions_past(&self, user: UserId, keep: usize) -> Result<Vec<SessionId>, StoreError>;
    /// Atomically swaps the session's secret from `old` to `new`; false if the session is gone
    /// or its secret is no longer `old`.
    async fn replace_secret(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Atomically rotates a token session's refresh token: if `presented` is the current secret,
    /// it becomes the previous one, `next` the current one, and `sealed_next` is kept beside it;
    /// the session's family becomes `lineage` if it had none (sessions from before families).
    /// A single compare-and-set, so concurrent rotations of one token mint one successor.
    /// A token that is neither current nor previous but of the session's family is
    /// [`Rotation::Reused`].
    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        lineage: &TokenHash,
        next: &TokenHash,
        sealed_next: &[u8],
        at: OffsetDateTime,
    ) -> Result<Rotation, StoreError>;
    /// Ends one session and publishes `SessionRevoked`; returns it if it existed.
    async fn revoke(&self, id: SessionId) -> Result<Option<Session>, StoreError>;
    /// Ends every session of `user` except `keep`, publishing `SessionRevoked` for each;
    /// returns the ids ended.
    async fn revoke_all(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionId>, StoreError>;
    /// Deletes sessions past their absolute deadline, or idle for longer than their timeout
    /// plus `idle_grace` (activity reaches the store late); returns how many.
    async fn delete_expired(
        &self,
        at: OffsetDateTime,
        idle_grace: time::Duration,
    ) -> Result<u64, StoreError>;
}

/// The outcome of [`SessionStore::rotate_refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current and has been replaced.
    Rotated(Session),
    /// The token was already rotated (at `rotated_at`); `sealed_next` is its successor, sealed
    /// with a key only the presented token gives.
    Spent {
        /// The session.
        session: Session,
        /// When the presented token was rotated.
        rotated_at: OffsetDateTime,
        /// The sealed successor.
        sealed_next: Vec<u8>,
    },
    /// An older spent token of the session's family (two or more rotations back): reuse.
    Reused(Session),
    /// No session knows this token.
    Unknown,
}

/// Signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Every stored key, oldest first.
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Adds a key and retires every other one at `key.created_at`, atomically.
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// The secret stored under `name`, storing `candidate` first if there is none: one atomic
    /// step, so every instance gets the same one.
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Replaces a shared secret's stored value if it is still `old` (re-sealing).
    async fn replace_shared_secret(
        &self,
        name: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// Replaces a key's stored private key if it is still `old` (re-sealing); false otherwise.
    async fn replace_private_key(
        &self,
        kid: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// Deletes keys retired before `before`.
    async fn delete_keys_retired_before(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// Second factors and the pending second steps of logins. Factors are read from the store on
/// every login and factor check (never cached), so a change on one instance holds on every
/// instance at once.
#[async_trait]
pub trait FactorStore: Send + Sync + 'static {
    /// Adds a factor; a TOTP factor with its sealed secret.
    async fn insert_factor(&self, factor: &Factor, secret: Option<&[u8]>)
        -> Result<(), StoreError>;
    /// A user's factors, oldest first, without secrets.
    async fn list_factors(&self, user: UserId) -> Result<Vec<Factor>, StoreError>;
    /// A TOTP factor's stored (sealed) secret and the last time step it accepted.
    async fn totp_secret(
        &self,
        user: UserId,
        id: FactorId,
    ) -> Result<Option<(Vec<u8>, Option<i64>)>, StoreError>;
    /// Records `step` as the factor's last accepted time step, and `at` as its last use, if
    /// no equal or later step was accepted before (a compare-and-set: of two requests with the
    /// same code, one wins); confirms the factor. False if refused or there is no such factor.
    async fn accept_step(
        &self,
        user: UserId,
        id: FactorId,
        step: i64,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Removes one of `user`'s factors (with its codes); false if there is none.
    async fn delete_factor(&self, user: UserId, id: FactorId) -> Result<bool, StoreError>;
    /// Removes every factor of `user`; returns how many.
    async fn delete_factors(&self, user: UserId) -> Result<u64, StoreError>;
    /// Replaces the user's recovery codes with `factor` and the codes hashing to `codes`, in
    /// one step: the old set is void when the new one exists.
    async fn replace_recovery_codes(
        &self,
        factor: &Factor,
        codes: &[TokenHash],
    ) -> Result<(), StoreError>;
    /// Spends one of `user`'s recovery codes (marks it used at `at`); false if there is no such
    /// unused code. Of two requests with the same code, one wins.
    async fn use_recovery_code(
        &self,
        user: UserId,
        code: &TokenHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// How many unused recovery codes `user` has.
    async fn recovery_codes_left(&self, user: UserId) -> Result<u64, StoreError>;
    /// Stores a pending second step of a login.
    async fn insert_mfa_challenge(&self, challenge: &MfaChallenge) -> Result<(), StoreError>;
    /// Counts one try at the challenge and returns it as it was, if it exists, is not past its
    /// deadline at `now` and has had fewer than `max_attempts` tries.
    async fn try_mfa_challenge(
        &self,
        token: &TokenHash,
        now: OffsetDateTime,
        max_attempts: u32,
    ) -> Result<Option<MfaChallenge>, StoreError>;
    /// Deletes the challenge; true for the one caller that did (single use).
    async fn consume_mfa_challenge(&self, token: &TokenHash) -> Result<bool, StoreError>;
    /// Deletes login challenges past their deadline; returns how many.
    async fn delete_expired_challenges(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
    /// Every authenticator app's stored (sealed) secret, for re-sealing with a new key.
    async fn totp_secrets(&self) -> Result<Vec<(FactorId, Vec<u8>)>, StoreError>;
    /// Replaces an authenticator app's stored secret if it is still `old`; false otherwise.
    async fn replace_totp_secret(
        &self,
        id: FactorId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// Adds a passkey: its credential (`data`, as the WebAuthn library stores it) and its id,
    /// unique among all users' ([`StoreError::Conflict`] otherwise).
    async fn insert_passkey(
        &self,
        factor: &Factor,
        credential_id: &[u8],
        data: &[u8],
    ) -> Result<(), StoreError>;
    /// The user's passkeys with their stored credentials.
    async fn passkeys(&self, user: UserId) -> Result<Vec<(Factor, Vec<u8>)>, StoreError>;
    /// Records a passkey's use (its stored credential and last use) if the challenge it
    /// answered comes after the last one it answered (compared as bytes) and the stored
    /// credential is still the one the check read; false, and nothing written, otherwise: an
    /// assertion counts once, on every instance, and never against a copy read before a change.
    async fn use_passkey(&self, used: &PasskeyUse) -> Result<bool, StoreError>;
}

/// The outbox of mail and the tokens of links sent by mail.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Queues a message.
    async fn enqueue_mail(&self, mail: &OutgoingMail) -> Result<(), StoreError>;
    /// Stores a link's token and queues the message that carries it, in one transaction.
    async fn issue_link(&self, link: &LinkToken, mail: &OutgoingMail) -> Result<(), StoreError>;
    /// Takes a link's token (deleting it: single use) if it exists for `purpose` and is not past
    /// its deadline at `now`.
    async fn take_link(
        &self,
        hash: &TokenHash,
        purpose: LinkPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<LinkToken>, StoreError>;
    /// Marks the user's address confirmed if it is still `email`, recording the change for
    /// other processes; false otherwise.
    async fn mark_email_verified(
        &self,
        user: UserId,
        email: &Email,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Moves the user from address `from` to `to`, confirmed at `at`, if the user's address is
    /// still `from` (false otherwise; [`StoreError::Conflict`] when `to` is another account's).
    /// Every link of the user but those that cancel an address change dies with it, and the
    /// change is recorded for other processes.
    async fn change_email(
        &self,
        user: UserId,
        from: &Email,
        to: &Email,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Deletes the links past their deadline at `now`; how many.
    async fn delete_expired_links(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
    /// Voids the user's links for `purpose`; how many there were.
    async fn void_links(&self, user: UserId, purpose: LinkPurpose) -> Result<u64, StoreError>;
    /// Leases up to `limit` messages due at `now` and not leased by anyone (or whose lease ran
    /// out) until `until`, counting an attempt on each: two callers never lease one message.
    async fn claim_mail(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError>;
    /// A message the relay took: it leaves the outbox.
    async fn mail_delivered(&self, id: &str) -> Result<(), StoreError>;
    /// A message the relay did not take: leased by nobody, due again at `retry_at`.
    async fn mail_failed(
        &self,
        id: &str,
        retry_at: OffsetDateTime,
        error: &str,
    ) -> Result<(), StoreError>;
    /// How many messages wait.
    async fn mail_backlog(&self) -> Result<u64, StoreError>;
}

/// Values that may be used once, shared by every instance: DPoP proofs' `jti`s, each kept for
/// as long as its proof could be presented.
#[async_trait]
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `key` until `until`: true the first time, false while an earlier use of it has
    /// not expired at `now`. Of two instances recording one key at once, one gets true.
    async fn first_use(
        &self,
        key: &[u8; 32],
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Forgets the uses past their time; how many.
    async fn delete_expired_uses(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// Security events, per user.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Records an event.
    async fn record_event(&self, event: &SecurityEvent) -> Result<(), StoreError>;
    /// The user's newest events, newest first, at most `limit`.
    async fn events(&self, user: UserId, limit: usize) -> Result<Vec<SecurityEvent>, StoreError>;
    /// Events at or after `since`, of one user or of everyone, newest first, at most `limit`.
    async fn events_since(
        &self,
        user: Option<UserId>,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, StoreError>;
    /// Deletes the events from before `before` (the retention); how many.
    async fn delete_events_before(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The ordered log of [`Change`]s, read by every process that caches sessions or users.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Changes after `cursor`, in order, with their positions.
    async fn changes_since(&self, cursor: i64) -> Result<Vec<(i64, Change)>, StoreError>;
    /// The position of the newest change (0 if none).
    async fn change_head(&self) -> Result<i64, StoreError>;
    /// Sessions revoked whose absolute deadline is still ahead of `at`.
    async fn revoked_sessions(
        &self,
        at: OffsetDateTime,
    ) -> Result<Vec<(SessionId, OffsetDateTime)>, StoreError>;
    /// Forgets changes about sessions that have expired anyway, and old user changes.
    async fn prune_changes(&self, at: OffsetDateTime) -> Result<(), StoreError>;
}

/// Everything the engine needs from storage.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + ChangeFeed
    + KeyStore
    + FactorStore
    + EventStore
    + MailStore
    + ReplayStore
{
    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A signal each time the change log may have grown, for backends that can push (PostgreSQL
    /// LISTEN/NOTIFY), with the time it was sent (ms since the epoch) when known. `None`: poll
    /// [`ChangeFeed::changes_since`] instead.
    async fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Option<i64>>>, StoreError> {
        Ok(None)
    }

    /// Raises the mark `name` to at least `value` and returns it: a number that only grows,
    /// kept durably, for what another store must not forget (how far Redis's revocation log had
    /// got, so that a Redis restored from an older snapshot is noticed).
    async fn raise_mark(&self, name: &str, value: i64) -> Result<i64, StoreError>;

    /// Revocations pushed as they happen, for backends whose sessions live outside the change
    /// log (Redis). `None`: revocations arrive through [`ChangeFeed::changes_since`].
    async fn revocations(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<RevocationEvent>>, StoreError> {
        Ok(None)
    }

    /// Stores a login: for a passkey's, its use first (when the passkey does not take it, see
    /// [`FactorStore::use_passkey`], nothing is written and the answer is `None`); then the
    /// session and its event. Answers the user's sessions past the `keep` newest, which the
    /// caller ends. An event that cannot be written is logged, not a failure of the login. The
    /// SQL backends do it in one transaction and one round trip, and step by step (this
    /// default) when that fails.
    async fn store_login(&self, login: NewLogin<'_>) -> Result<Option<Vec<SessionId>>, StoreError> {
        login_in_steps(self, login).await
    }
}

/// [`Store::store_login`] step by step.
pub(crate) async fn login_in_steps<S: Store + ?Sized>(
    store: &S,
    login: NewLogin<'_>,
) -> Result<Option<Vec<SessionId>>, StoreError> {
    if let Some(used) = login.passkey {
        if !store.use_passkey(used).await? {
            return Ok(None);
        }
    }
    store.insert_session(login.session).await?;
    crate::events::record_after(store, login.event).await;
    let past = if login.keep == usize::MAX {
        Vec::new()
    } else {
        store
            .sessions_past(login.session.user_id, login.keep)
            .await?
    };
    Ok(Some(past))
}

/// A login for [`Store::store_login`].
#[derive(Debug, Clone, Copy)]
pub struct NewLogin<'a> {
    /// The new session.
    pub session: &'a Session,
    /// Its login event.
    pub event: &'a SecurityEvent,
    /// The passkey's use, for a passkey's login.
    pub passkey: Option<&'a PasskeyUse>,
    /// How many of the user's sessions to keep, the newest (`usize::MAX`: all).
    pub keep: usize,
}
