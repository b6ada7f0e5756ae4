//! Sessions, revocations and throttle counters in Redis, beside an SQL store that keeps users,
//! signing keys and user changes: the part many instances share.
//!
//! Key layout, under a configurable prefix `P`:
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `P:{u:<user>}:s:<session>` | hash | one session; expires on its own (idle and absolute) |
//! | `P:{u:<user>}:sessions` | sorted set | the user's session ids, by creation time |
//! | `P:tok:<sha256 hex>` | string | `<user> <session>` for a current or previous secret |
//! | `P:sid:<session>` | string | `<user>`, to find a session by id |
//! | `P:expiry` | sorted set | `<user> <session>` by logical deadline, for the sweep |
//! | `P:{rev}:set` | sorted set | revoked session ids, by the time they would have expired |
//! | `P:{rev}:log` | sorted set | `<seq> <session> <expiry>`, the recent revocations in order |
//! | `P:{rev}:seq`, `P:{rev}:epoch` | strings | the log's position, and a random mark of this data set |
//! | `P:th:<key>` | hash | throttle counters |
//! | `P:once:<hex>` | string | a value used once (a DPoP proof), expiring with it |
//!
//! Redis Cluster: the keys one script or transaction touches share a hash tag (`{u:<user>}` for
//! a user's sessions and index, `{rev}` for the revocation log), so no command spans two slots.
//! The pointers (`tok`, `sid`, `expiry`) are read or written by separate commands.
//!
//! What makes a failure half-way safe is the order of writes: a pointer is written before the
//! session it points to (a dangling pointer finds nothing), and a revocation is logged and
//! published before the session is deleted (a session that survives is one every instance
//! refuses). Refresh rotation and the deletion of a user's sessions are single Lua scripts.

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::OffsetDateTime;

use super::{
    Change, ChangeFeed, EventStore, FactorStore, KeyStore, RevocationEvent, Store, StoreError,
    UserStore,
};
use crate::events::SecurityEvent;
use crate::factor::{Factor, FactorId, MfaChallenge, PasskeyUse};
use crate::jwt::StoredKey;
use crate::mail::{LinkPurpose, LinkToken, OutgoingMail, QueuedMail};
use crate::session::{SessionId, TokenHash};
use crate::user::{Email, Role, User, UserId};

mod feed;
mod sessions;
mod throttle;
pub use throttle::RedisThrottle;

/// How long one Redis command may take before the request that needed it fails (503).
const RESPONSE_TIMEOUT: StdDuration = StdDuration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(2);

/// Users, keys and user changes in an SQL store; sessions, revocations and their events in
/// Redis.
pub struct RedisStore {
    sql: Arc<dyn Store>,
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    /// Seconds a session outlives its logical deadline in Redis (activity is written late).
    grace_secs: i64,
    /// The mark of the data set seen at start.
    epoch: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

/// Names of the keys, under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    fn session(&self, user: &str, id: &str) -> String {
        format!("{}:{{u:{user}}}:s:{id}", self.prefix)
    }
    fn index(&self, user: &str) -> String {
        format!("{}:{{u:{user}}}:sessions", self.prefix)
    }
    fn token(&self, hash: &TokenHash) -> String {
        format!("{}:tok:{}", self.prefix, hex(&hash.0))
    }
    fn by_id(&self, id: SessionId) -> String {
        format!("{}:sid:{id}", self.prefix)
    }
    fn expiry(&self) -> String {
        format!("{}:expiry", self.prefix)
    }
    fn revoked(&self) -> String {
        format!("{}:{{rev}}:set", self.prefix)
    }
    fn log(&self) -> String {
        format!("{}:{{rev}}:log", self.prefix)
    }
    fn seq(&self) -> String {
        format!("{}:{{rev}}:seq", self.prefix)
    }
    fn epoch(&self) -> String {
        format!("{}:{{rev}}:epoch", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}:revocations", self.prefix)
    }
    fn throttle(&self, key: &str) -> String {
        format!("{}:th:{key}", self.prefix)
    }
    fn once(&self, key: &[u8; 32]) -> String {
        format!("{}:once:{}", self.prefix, hex(key))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Connection failures and timeouts mean "unavailable" (503); anything else is a backend error.
pub(crate) fn map_err(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// Checks a key prefix: letters, digits and `_-.:` only, so no prefix can forge a hash tag or
/// run into another prefix's keys.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

/// Opens a connection manager with bounded timeouts that reconnects by itself.
pub(crate) async fn connect(url: &str) -> Result<(redis::Client, ConnectionManager), StoreError> {
    let client = redis::Client::open(url).map_err(|e| StoreError::Backend(Box::new(e)))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(StdDuration::from_millis(500));
    let conn = tokio::time::timeout(
        RESPONSE_TIMEOUT + CONNECT_TIMEOUT,
        client.get_connection_manager_with_config(config),
    )
    .await
    .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    .map_err(map_err)?;
    Ok((client, conn))
}

impl RedisStore {
    /// Keeps sessions in Redis at `url` under `prefix`, and everything else in `sql`. Sessions
    /// stay in Redis `idle_grace` past their logical deadline, as activity is written late.
    pub async fn open(
        url: &str,
        prefix: &str,
        sql: Arc<dyn Store>,
        idle_grace: time::Duration,
    ) -> Result<Self, StoreError> {
        if !valid_prefix(prefix) {
            return Err(StoreError::Backend(
                "the Redis key prefix may hold only letters, digits and _-.:".into(),
            ));
        }
        let (client, mut conn) = connect(url).await?;
        let keys = Keys {
            prefix: prefix.to_string(),
        };
        let mut epoch = feed::ensure_epoch(&mut conn, &keys).await?;
        // A Redis restored from an older copy, found before anything is served from it.
        let head = feed::head(&mut conn, &keys).await?;
        if sql
            .raise_mark(&feed::mark_name(&keys, &epoch), head)
            .await?
            > head
        {
            epoch = feed::start_over(&mut conn, &keys).await?;
        }
        Ok(Self {
            sql,
            client,
            conn,
            keys,
            grace_secs: idle_grace.whole_seconds().max(0),
            epoch,
        })
    }

    /// Follows the revocations of the cloakroom whose Redis is at `url` under `prefix`, from
    /// another service (a remote verifier): every revocation so far, then
    /// [`RevocationEvent::Resynced`], then each one as it happens.
    pub async fn follow(
        url: &str,
        prefix: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<RevocationEvent>, StoreError> {
        if !valid_prefix(prefix) {
            return Err(StoreError::Backend(
                "the Redis key prefix may hold only letters, digits and _-.:".into(),
            ));
        }
        let (client, mut conn) = connect(url).await?;
        let keys = Keys {
            prefix: prefix.to_string(),
        };
        let epoch = feed::ensure_epoch(&mut conn, &keys).await?;
        Ok(feed::subscribe(client, conn, keys, epoch, false, None))
    }

    /// Throttle counters in the same Redis, under the same prefix.
    pub fn throttle(&self) -> RedisThrottle {
        RedisThrottle::new(self.conn.clone(), self.keys.clone())
    }
}

#[async_trait]
impl UserStore for RedisStore {
    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        self.sql.insert_user(user, password_hash).await
    }
    async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, String)>, StoreError> {
        self.sql.find_user_by_email(email).await
    }
    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.sql.find_user(id).await
    }
    async fn password_hash(&self, id: UserId) -> Result<Option<String>, StoreError> {
        self.sql.password_hash(id).await
    }
    async fn set_password(
        &self,
        id: UserId,
        password_hash: &str,
        notice: Option<&OutgoingMail>,
    ) -> Result<Option<i64>, StoreError> {
        self.sql.set_password(id, password_hash, notice).await
    }
    async fn delete_user(&self, id: UserId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.sql.delete_user(id, at).await
    }
    async fn rehash_password(&self, id: UserId, old: &str, new: &str) -> Result<bool, StoreError> {
        self.sql.rehash_password(id, old, new).await
    }
    async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError> {
        self.sql.set_disabled(id, disabled).await
    }
    async fn set_roles(&self, id: UserId, roles: &[Role]) -> Result<bool, StoreError> {
        self.sql.set_roles(id, roles).await
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.sql.list_users().await
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.sql.list_keys().await
    }
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.sql.add_signing_key(key).await
    }
    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sql.shared_secret(name, candidate).await
    }
    async fn replace_shared_secret(
        &self,
        name: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.sql.replace_shared_secret(name, old, new).await
    }
    async fn replace_private_key(
        &self,
        kid: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.sql.replace_private_key(kid, old, new).await
    }
    async fn delete_keys_retired_before(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.sql.delete_keys_retired_before(before).await
    }
}

/// Factors and login challenges live in the SQL store (they are read per login, not per
/// request).
#[async_trait]
impl FactorStore for RedisStore {
    async fn insert_factor(&self, f: &Factor, secret: Option<&[u8]>) -> Result<(), StoreError> {
        self.sql.insert_factor(f, secret).await
    }
    async fn list_factors(&self, user: UserId) -> Result<Vec<Factor>, StoreError> {
        self.sql.list_factors(user).await
    }
    async fn totp_secret(
        &self,
        user: UserId,
        id: FactorId,
    ) -> Result<Option<(Vec<u8>, Option<i64>)>, StoreError> {
        self.sql.totp_secret(user, id).await
    }
    async fn accept_step(
        &self,
        user: UserId,
        id: FactorId,
        step: i64,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.sql.accept_step(user, id, step, at).await
    }
    async fn delete_factor(&self, user: UserId, id: FactorId) -> Result<bool, StoreError> {
        self.sql.delete_factor(user, id).await
    }
    async fn delete_factors(&self, user: UserId) -> Result<u64, StoreError> {
        self.sql.delete_factors(user).await
    }
    async fn replace_recovery_codes(
        &self,
        f: &Factor,
        codes: &[TokenHash],
    ) -> Result<(), StoreError> {
        self.sql.replace_recovery_codes(f, codes).await
    }
    async fn use_recovery_code(
        &self,
        user: UserId,
        code: &TokenHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.sql.use_recovery_code(user, code, at).await
    }
    async fn recovery_codes_left(&self, user: UserId) -> Result<u64, StoreError> {
        self.sql.recovery_codes_left(user).await
    }
    async fn insert_mfa_challenge(&self, c: &MfaChallenge) -> Result<(), StoreError> {
        self.sql.insert_mfa_challenge(c).await
    }
    async fn try_mfa_challenge(
        &self,
        token: &TokenHash,
        now: OffsetDateTime,
        max_attempts: u32,
    ) -> Result<Option<MfaChallenge>, StoreError> {
        self.sql.try_mfa_challenge(token, now, max_attempts).await
    }
    async fn consume_mfa_challenge(&self, token: &TokenHash) -> Result<bool, StoreError> {
        self.sql.consume_mfa_challenge(token).await
    }
    async fn delete_expired_challenges(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.sql.delete_expired_challenges(now).await
    }
    async fn totp_secrets(&self) -> Result<Vec<(FactorId, Vec<u8>)>, StoreError> {
        self.sql.totp_secrets().await
    }
    async fn replace_totp_secret(
        &self,
        id: FactorId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.sql.replace_totp_secret(id, old, new).await
    }
    async fn insert_passkey(
        &self,
        f: &Factor,
        credential_id: &[u8],
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.sql.insert_passkey(f, credential_id, data).await
    }
    async fn passkeys(&self, user: UserId) -> Result<Vec<(Factor, Vec<u8>)>, StoreError> {
        self.sql.passkeys(user).await
    }
    async fn use_passkey(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        self.sql.use_passkey(used).await
    }
}

/// The outbox and link tokens live in the SQL store.
#[async_trait]
impl super::MailStore for RedisStore {
    async fn enqueue_mail(&self, mail: &OutgoingMail) -> Result<(), StoreError> {
        self.sql.enqueue_mail(mail).await
    }
    async fn issue_link(&self, link: &LinkToken, mail: &OutgoingMail) -> Result<(), StoreError> {
        self.sql.issue_link(link, mail).await
    }
    async fn take_link(
        &self,
        hash: &TokenHash,
        purpose: LinkPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<LinkToken>, StoreError> {
        self.sql.take_link(hash, purpose, now).await
    }
    async fn mark_email_verified(
        &self,
        user: UserId,
        email: &Email,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.sql.mark_email_verified(user, email, at).await
    }
    async fn change_email(
        &self,
        user: UserId,
        from: &Email,
        to: &Email,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.sql.change_email(user, from, to, at).await
    }
    async fn delete_expired_links(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.sql.delete_expired_links(now).await
    }
    async fn void_links(&self, user: UserId, purpose: LinkPurpose) -> Result<u64, StoreError> {
        self.sql.void_links(user, purpose).await
    }
    async fn claim_mail(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<QueuedMail>, StoreError> {
        self.sql.claim_mail(now, until, limit).await
    }
    async fn mail_delivered(&self, id: &str) -> Result<(), StoreError> {
        self.sql.mail_delivered(id).await
    }
    async fn mail_failed(
        &self,
        id: &str,
        retry_at: OffsetDateTime,
        error: &str,
    ) -> Result<(), StoreError> {
        self.sql.mail_failed(id, retry_at, error).await
    }
    async fn mail_backlog(&self) -> Result<u64, StoreError> {
        self.sql.mail_backlog().await
    }
}

/// `SET NX` with the value's own expiry: whether this was its first use.
async fn set_once(
    conn: &ConnectionManager,
    keys: &Keys,
    key: &[u8; 32],
    until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let ttl_ms = ((until - now).whole_milliseconds()).max(1);
    let set: Option<String> = redis::cmd("SET")
        .arg(keys.once(key))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
        .query_async(&mut conn.clone())
        .await
        .map_err(map_err)?;
    Ok(set.is_some())
}

/// The values-used-once memory of a cloakroom's Redis, for a remote verifier: the same keys as
/// the server's, so a DPoP proof counts once across cloakroom and every verifier sharing it.
#[derive(Clone)]
pub struct RedisOnce {
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for RedisOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOnce")
            .field("prefix", &self.keys.prefix)
            .finish()
    }
}

impl RedisOnce {
    /// The memory in Redis at `url` under `prefix` (cloakroom's `--redis-prefix`).
    pub async fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        if !valid_prefix(prefix) {
            return Err(StoreError::Backend(
                "the Redis key prefix may hold only letters, digits and _-.:".into(),
            ));
        }
        let (_, conn) = connect(url).await?;
        Ok(Self {
            conn,
            keys: Keys {
                prefix: prefix.to_string(),
            },
        })
    }

    /// Whether `key` is used here for the first time; it is remembered until `until`.
    pub async fn first_use(
        &self,
        key: &[u8; 32],
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        set_once(&self.conn, &self.keys, key, until, now).await
    }
}

/// Values used once live in Redis, each expiring on its own: `SET NX` answers who was first.
#[async_trait]
impl super::ReplayStore for RedisStore {
    async fn first_use(
        &self,
        key: &[u8; 32],
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        set_once(&self.conn, &self.keys, key, until, now).await
    }
    async fn delete_expired_uses(&self, _now: OffsetDateTime) -> Result<u64, StoreError> {
        // Each expires by itself.
        Ok(0)
    }
}

/// Security events live in the SQL store.
#[async_trait]
impl EventStore for RedisStore {
    async fn record_event(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        self.sql.record_event(event).await
    }
    async fn events(&self, user: UserId, limit: usize) -> Result<Vec<SecurityEvent>, StoreError> {
        self.sql.events(user, limit).await
    }
    async fn events_since(
        &self,
        user: Option<UserId>,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, StoreError> {
        self.sql.events_since(user, since, limit).await
    }
    async fn delete_events_before(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.sql.delete_events_before(before).await
    }
}

/// User changes come from the SQL store's log; session revocations are in Redis and pushed
/// through [`Store::revocations`].
#[async_trait]
impl ChangeFeed for RedisStore {
    async fn changes_since(&self, cursor: i64) -> Result<Vec<(i64, Change)>, StoreError> {
        self.sql.changes_since(cursor).await
    }
    async fn change_head(&self) -> Result<i64, StoreError> {
        self.sql.change_head().await
    }
    async fn revoked_sessions(
        &self,
        at: OffsetDateTime,
    ) -> Result<Vec<(SessionId, OffsetDateTime)>, StoreError> {
        feed::revoked_sessions(&mut self.conn.clone(), &self.keys, at).await
    }
    async fn prune_changes(&self, at: OffsetDateTime) -> Result<(), StoreError> {
        self.sql.prune_changes(at).await?;
        feed::prune(&mut self.conn.clone(), &self.keys, at).await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.sql.ping().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Option<i64>>>, StoreError> {
        self.sql.watch().await
    }

    async fn raise_mark(&self, name: &str, value: i64) -> Result<i64, StoreError> {
        self.sql.raise_mark(name, value).await
    }

    async fn revocations(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<RevocationEvent>>, StoreError> {
        Ok(Some(feed::subscribe(
            self.client.clone(),
            self.conn.clone(),
            self.keys.clone(),
            self.epoch.clone(),
            true,
            Some(Arc::clone(&self.sql)),
        )))
    }
}
