//! Sessions: the live map in memory, the store behind it, recognising a session token, ending
//! sessions (one, all of a user's, beyond the cap), listing them, and keeping this instance in
//! step with the others (the change log, pushed revocations, last-seen times).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use time::OffsetDateTime;

use super::config::AuthConfig;
use super::error::AuthError;
use super::request::Authenticated;
use crate::clock::Clock;
use crate::events::SecurityEvent;
use crate::factor::PasskeyUse;
use crate::live::{LiveSession, LiveSessions};
use crate::session::{Lineage, Session, SessionId, SessionToken, TokenCheck, TokenHash, Transport};
use crate::store::{Change, NewLogin, RevocationEvent, Store, StoreError};
use crate::user::{User, UserId};

/// How many revocations a follower may lag behind before it must start over.
const REVOCATION_BUFFER: usize = 16_384;

/// A revocation as followers of [`crate::Auth::follow_revocations`] see it.
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

/// The name of the shared secret that keys the tokens' check value.
pub(crate) const TOKEN_CHECK: &str = "token-check";

/// A 256-bit key that every instance shares, stored under `name` (sealed when there are
/// key-encryption keys): the one in the store, or a new one stored first.
pub(crate) async fn load_shared_key(
    store: &dyn Store,
    sealing: Option<&crate::sealing::KeySet>,
    name: &str,
) -> Result<Vec<u8>, AuthError> {
    use crate::sealing::open_stored;
    let stored = store
        .shared_secret(name, &new_shared_key(sealing, name)?)
        .await?;
    open_stored(sealing, name.as_bytes(), &stored)
        .map_err(|e| AuthError::Keys(format!("the shared key {name}: {e}")))
}

/// A new random shared key, as it is stored (sealed under `name` when there are keys).
pub(crate) fn new_shared_key(
    sealing: Option<&crate::sealing::KeySet>,
    name: &str,
) -> Result<Vec<u8>, AuthError> {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    crate::sealing::seal_stored(sealing, name.as_bytes(), &key)
        .map_err(|e| AuthError::Keys(e.to_string()))
}

/// Store lookups of tokens without a valid check value, counted per second of real time (it
/// bounds load, so it follows the machine's clock, not the engine's).
#[derive(Debug)]
pub(crate) struct UncheckedBudget {
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

/// What a new session is made of.
pub(crate) struct NewSession {
    pub(crate) user: UserId,
    pub(crate) transport: Transport,
    pub(crate) remember: bool,
    pub(crate) ip: Option<String>,
    pub(crate) user_agent: Option<String>,
    /// The user's credentials generation the session was proven against.
    pub(crate) credentials_gen: i64,
    /// How the user proved who they are.
    pub(crate) amr: crate::Amr,
    /// The DPoP key a token session's tokens are bound to.
    pub(crate) dpop_jkt: Option<String>,
    /// The DBSC key a cookie session is bound to.
    pub(crate) dbsc_key: Option<String>,
}

/// The sessions of this instance.
pub(crate) struct Sessions {
    store: Arc<dyn Store>,
    live: LiveSessions,
    cursor: AtomicI64,
    /// Set while a store that pushes revocations cannot: sessions in memory are not trusted.
    feed_down: AtomicBool,
    /// Every revocation this process learns of, for verifiers that follow them.
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    sync: tokio::sync::Mutex<()>,
    /// The key of the check value inside every token this engine mints.
    check: TokenCheck,
    unchecked: UncheckedBudget,
    config: Arc<AuthConfig>,
    clock: Arc<dyn Clock>,
}

impl Sessions {
    /// Sessions on `store`: the sessions revoked so far are refused from the start, and the
    /// change log is read from its current head.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        check: TokenCheck,
        config: Arc<AuthConfig>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        let head = store.change_head().await?;
        let live = LiveSessions::default();
        for (id, exp) in store.revoked_sessions(clock.now()).await? {
            live.revoke(id, exp);
        }
        Ok(Self {
            store,
            live,
            cursor: AtomicI64::new(head),
            feed_down: AtomicBool::new(false),
            revocations: tokio::sync::broadcast::channel(REVOCATION_BUFFER).0,
            sync: tokio::sync::Mutex::new(()),
            check,
            unchecked: UncheckedBudget::default(),
            config,
            clock,
        })
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now_secs()
    }

    /// How many sessions are held in memory.
    pub(crate) fn count(&self) -> usize {
        self.live.len()
    }

    /// Refuses with 503 while revocations may be missed.
    pub(crate) fn feed_ok(&self) -> Result<(), AuthError> {
        if self.feed_down.load(Ordering::Acquire) {
            return Err(AuthError::Store(StoreError::Unavailable(
                "revocations cannot reach this process".into(),
            )));
        }
        Ok(())
    }

    /// Stores a new session and holds it in memory.
    pub(crate) async fn open(&self, session: &Session) -> Result<(), AuthError> {
        self.store.insert_session(session).await?;
        self.live.insert(session.clone());
        Ok(())
    }

    /// The session a session token names, from the store (for ending it at a new login).
    pub(crate) async fn named_by_token(&self, raw: &str) -> Result<Option<SessionId>, AuthError> {
        match SessionToken::hash_presented(raw) {
            Some(hash) if self.may_look_up(raw) => {
                Ok(self.store.find_by_token(&hash).await?.map(|s| s.id))
            }
            _ => Ok(None),
        }
    }

    /// Forgets a user read before a change, so the next use reads it again.
    pub(crate) fn forget_user(&self, id: UserId) {
        self.live.forget_user(id);
    }

    /// A new session starting now, with its secret (not stored yet: see [`Sessions::open`]).
    pub(crate) fn new_session(&self, new: NewSession) -> (Session, SessionToken) {
        let now = self.now();
        let lifetime = if new.remember {
            self.config.remember
        } else {
            self.config.session
        };
        let (token, refresh_family) = self.new_secret(new.transport);
        let session = Session {
            id: SessionId::random(),
            user_id: new.user,
            transport: new.transport,
            secret_hash: token.hash(),
            remember: new.remember,
            created_at: now,
            authenticated_at: now,
            last_seen_at: now,
            idle_timeout: lifetime.idle,
            absolute_expires_at: now + lifetime.absolute,
            ip: new.ip,
            user_agent: new.user_agent,
            credentials_gen: new.credentials_gen,
            refresh_family,
            amr: new.amr,
            dpop_jkt: new.dpop_jkt,
            dbsc_key: new.dbsc_key,
        };
        (session, token)
    }

    /// A successor to `old`: a new id and secret, bound to the DBSC key `dbsc_key`, with
    /// everything else kept (lifetime, assurance, login time). Not stored yet.
    pub(crate) fn successor(
        &self,
        old: &Session,
        dbsc_key: Option<String>,
    ) -> (Session, SessionToken) {
        let (token, refresh_family) = self.new_secret(old.transport);
        let session = Session {
            id: SessionId::random(),
            secret_hash: token.hash(),
            last_seen_at: self.now(),
            refresh_family,
            dbsc_key,
            ..old.clone()
        };
        (session, token)
    }

    /// A token's next secret in `family` (refresh rotation), with its check value.
    pub(crate) fn mint_in_family(&self, family: &Lineage) -> SessionToken {
        self.check.mint_in_family(family)
    }

    /// Recognises the session an access token names (`sid`, for `sub`): live and unrevoked,
    /// read from the store if this instance has not seen it yet.
    pub(crate) async fn authenticate_id(
        &self,
        sid: SessionId,
        sub: UserId,
        now: OffsetDateTime,
    ) -> Result<Authenticated, AuthError> {
        if self.live.is_revoked(sid) {
            return Err(AuthError::Unauthenticated);
        }
        let live = match self.live.get_by_id(sid) {
            Some(live) => live,
            None => {
                let session = self
                    .store
                    .find_session(sid)
                    .await?
                    .ok_or(AuthError::Unauthenticated)?;
                self.live
                    .insert(session)
                    .ok_or(AuthError::Unauthenticated)?
            }
        };
        if live.session().user_id != sub {
            return Err(AuthError::Unauthenticated);
        }
        self.check_live(&live, now).await
    }

    /// Takes back a token session whose refresh token was just rotated: `None` if it was
    /// revoked or expired meanwhile, or its user is disabled.
    pub(crate) async fn resume(
        &self,
        session: Session,
        now: OffsetDateTime,
    ) -> Result<Option<(Arc<Session>, Arc<User>)>, AuthError> {
        if self.live.is_revoked(session.id) || session.is_expired(session.last_seen_at, now) {
            return Ok(None);
        }
        let Some(live) = self.live.insert(session) else {
            return Ok(None);
        };
        live.touch(now);
        let user = self.user(live.session().user_id).await?;
        if user.disabled {
            return Ok(None);
        }
        Ok(Some((Arc::clone(live.session()), user)))
    }

    /// Forgets expired sessions in memory.
    pub(crate) fn sweep(&self, now: OffsetDateTime) {
        self.live.sweep(now);
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

    /// Stores a login's session with its event (and, for a passkey's login, the passkey's use:
    /// `false` when the passkey does not take it, and then nothing is stored), then ends the
    /// user's oldest sessions beyond the cap.
    pub(crate) async fn open_login(
        &self,
        session: &Session,
        event: &SecurityEvent,
        passkey: Option<&PasskeyUse>,
    ) -> Result<bool, AuthError> {
        let login = NewLogin {
            session,
            event,
            passkey,
            keep: self.config.max_sessions_per_user,
        };
        let Some(past) = self.store.store_login(login).await? else {
            return Ok(false);
        };
        self.live.insert(session.clone());
        for old in past.into_iter().filter(|id| *id != session.id) {
            tracing::info!(user = %session.user_id, session = %old, "oldest session ended: too many");
            self.end_session_record(old).await?;
        }
        Ok(true)
    }

    /// Recognises a session token: format first (a malformed token never reaches the store),
    /// then memory, then the store for a session this process has not seen yet.
    pub(crate) async fn authenticate(&self, raw_token: &str) -> Result<Authenticated, AuthError> {
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
        if live.session().transport != Transport::Cookie {
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
        let session = live.session();
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
        let Some(stored) = self.store.find_session(live.session().id).await? else {
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

    pub(crate) async fn end_all(
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

    pub(crate) async fn user_sessions(
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

    /// Reads the change log past the last position seen and applies it: revoked sessions are
    /// forgotten and refused from now on, changed users are reloaded on next use.
    pub(crate) async fn apply_changes(&self) -> Result<usize, AuthError> {
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
    pub(crate) async fn watch_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Option<i64>>>, AuthError> {
        Ok(self.store.watch().await?)
    }

    /// Refuses a session from now on, and tells the followers of revocations.
    pub(crate) fn mark_revoked(&self, id: SessionId, expires_at: OffsetDateTime) {
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
    pub(crate) fn follow_revocations(
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
    pub(crate) async fn revocation_events(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<RevocationEvent>>, AuthError> {
        Ok(self.store.revocations().await?)
    }

    /// Applies one pushed revocation event: a revoked session is refused from now on; while
    /// the feed is lost every session is refused (503), since a revocation could be missed; a
    /// store that lost its data makes this process forget every session it holds.
    pub(crate) fn apply_revocation(&self, event: RevocationEvent) {
        match event {
            RevocationEvent::Revoked { id, expires_at, .. } => self.mark_revoked(id, expires_at),
            RevocationEvent::Lost => self.feed_down.store(true, Ordering::Release),
            RevocationEvent::Resynced => self.feed_down.store(false, Ordering::Release),
            RevocationEvent::Reset => {
                self.live.clear_sessions();
                // Every session is gone: verifiers elsewhere must refuse every token minted so far.
                let _ = self.revocations.send(Revocation::AllBefore(self.now()));
            }
        }
    }

    /// Writes last-seen times gathered in memory to the store, in one batch.
    pub(crate) async fn flush_activity(&self) -> Result<usize, AuthError> {
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
}
