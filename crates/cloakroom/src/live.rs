//! What the engine keeps in memory so that recognising a session costs a hash-map lookup, not a
//! store round trip: the live sessions by token hash, the users they belong to, and the ids of
//! sessions revoked before their time (kept until their absolute deadline passes).

use dashmap::DashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use time::OffsetDateTime;

use crate::session::{Session, SessionId, TokenHash};
use crate::user::{User, UserId};

/// A session being used, with its last activity kept in memory.
#[derive(Debug)]
pub(crate) struct LiveSession {
    session: Arc<Session>,
    last_seen: AtomicI64,
    flushed: AtomicI64,
    /// The idle timeout and the absolute deadline in whole seconds, for the check on every
    /// request (the same rule as [`Session::expires_at`], in integers).
    idle_secs: i64,
    absolute_secs: i64,
}

impl LiveSession {
    fn new(session: Session) -> Self {
        let seen = session.last_seen_at.unix_timestamp();
        Self {
            idle_secs: session.idle_timeout.whole_seconds(),
            absolute_secs: session.absolute_expires_at.unix_timestamp(),
            session: Arc::new(session),
            last_seen: AtomicI64::new(seen),
            flushed: AtomicI64::new(seen),
        }
    }

    /// The session.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// When the session ends (unix seconds) if it is not used again after `seen`.
    fn deadline(&self, seen: i64) -> i64 {
        seen.saturating_add(self.idle_secs).min(self.absolute_secs)
    }

    /// Whether the session is over at `now` (unix seconds), given its last activity.
    pub(crate) fn is_expired(&self, now: i64) -> bool {
        now >= self.deadline(self.last_seen.load(Ordering::Relaxed))
    }

    /// When the session ends if it is used at `now` (unix seconds).
    pub(crate) fn expires_at(&self, now: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.deadline(now))
            .unwrap_or(self.session.absolute_expires_at)
    }

    pub(crate) fn last_seen(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.last_seen.load(Ordering::Relaxed))
            .unwrap_or(self.session.last_seen_at)
    }

    pub(crate) fn touch(&self, at: OffsetDateTime) {
        let at = at.unix_timestamp();
        // Seconds are the unit: most requests find the time already there and write nothing.
        if self.last_seen.load(Ordering::Relaxed) < at {
            self.last_seen.fetch_max(at, Ordering::Relaxed);
        }
    }
}

/// A concurrent map for keys this server made (token hashes, random ids, verified tokens).
///
/// foldhash instead of the standard SipHash: it is several times cheaper on the request path,
/// and its weaker resistance to chosen collisions does not matter when a client cannot choose
/// the keys: SHA-256 outputs of random tokens, random UUIDs, and tokens that carry our signature.
pub(crate) type ServerKeyed<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// The in-memory state shared by all requests.
#[derive(Debug, Default)]
pub(crate) struct LiveSessions {
    by_hash: ServerKeyed<TokenHash, Arc<LiveSession>>,
    by_id: ServerKeyed<SessionId, TokenHash>,
    revoked: ServerKeyed<SessionId, i64>,
    users: ServerKeyed<UserId, Arc<User>>,
    /// Moves on each time a user is forgotten, so a user read from the store before a change
    /// was applied is not cached after it (see [`LiveSessions::put_user`]).
    users_epoch: AtomicU64,
}

impl LiveSessions {
    pub(crate) fn get(&self, hash: &TokenHash) -> Option<Arc<LiveSession>> {
        self.by_hash.get(hash).map(|e| Arc::clone(e.value()))
    }

    pub(crate) fn get_by_id(&self, id: SessionId) -> Option<Arc<LiveSession>> {
        let hash = *self.by_id.get(&id)?;
        self.get(&hash)
    }

    /// Adds a session; refused (None) if it was revoked meanwhile, so a lookup that raced a
    /// revocation cannot bring the session back.
    pub(crate) fn insert(&self, session: Session) -> Option<Arc<LiveSession>> {
        if self.revoked.contains_key(&session.id) {
            return None;
        }
        let id = session.id;
        let hash = session.secret_hash;
        let live = Arc::new(LiveSession::new(session));
        if let Some(old) = self.by_id.insert(id, hash) {
            if old != hash {
                self.by_hash.remove(&old);
            }
        }
        self.by_hash.insert(hash, Arc::clone(&live));
        // Checked again: a revocation may have landed between the first check and the insert.
        if self.revoked.contains_key(&id) {
            self.remove(id);
            return None;
        }
        Some(live)
    }

    /// Forgets a session without marking it revoked (it expired, or its secret changed).
    pub(crate) fn remove(&self, id: SessionId) {
        if let Some((_, hash)) = self.by_id.remove(&id) {
            self.by_hash.remove(&hash);
        }
    }

    /// Marks a session revoked until `expires_at` and forgets it.
    pub(crate) fn revoke(&self, id: SessionId, expires_at: OffsetDateTime) {
        self.revoked.insert(id, expires_at.unix_timestamp());
        self.remove(id);
    }

    /// Forgets every session held, keeping the revocations (the store lost its sessions).
    pub(crate) fn clear_sessions(&self) {
        self.by_hash.clear();
        self.by_id.clear();
    }

    /// The revoked ids whose deadline is after `now`, with it.
    pub(crate) fn revoked(&self, now: OffsetDateTime) -> Vec<(SessionId, OffsetDateTime)> {
        let now = now.unix_timestamp();
        self.revoked
            .iter()
            .filter(|e| *e.value() > now)
            .filter_map(|e| {
                OffsetDateTime::from_unix_timestamp(*e.value())
                    .ok()
                    .map(|t| (*e.key(), t))
            })
            .collect()
    }

    pub(crate) fn is_revoked(&self, id: SessionId) -> bool {
        self.revoked.contains_key(&id)
    }

    pub(crate) fn user(&self, id: UserId) -> Option<Arc<User>> {
        self.users.get(&id).map(|u| Arc::clone(u.value()))
    }

    /// Where the cache of users stands: take it before reading a user from the store, and
    /// give it to [`LiveSessions::put_user`].
    pub(crate) fn users_epoch(&self) -> u64 {
        self.users_epoch.load(Ordering::Acquire)
    }

    /// Caches a user read from the store after `epoch` was taken, unless a user was forgotten
    /// meanwhile: the copy may predate that change, and caching it would undo the change here
    /// until the next one.
    pub(crate) fn put_user(&self, user: User, epoch: u64) -> Arc<User> {
        let user = Arc::new(user);
        if self.users_epoch() != epoch {
            return user;
        }
        self.users.insert(user.id, Arc::clone(&user));
        // A change applied between the check and the insert: undo the insert.
        if self.users_epoch() != epoch {
            self.users.remove(&user.id);
        }
        user
    }

    pub(crate) fn forget_user(&self, id: UserId) {
        self.users_epoch.fetch_add(1, Ordering::AcqRel);
        self.users.remove(&id);
    }

    /// Activity not yet written to the store.
    pub(crate) fn unflushed(&self) -> Vec<(SessionId, OffsetDateTime, Arc<LiveSession>)> {
        self.by_hash
            .iter()
            .filter_map(|e| {
                let live = e.value();
                let seen = live.last_seen.load(Ordering::Relaxed);
                (seen > live.flushed.load(Ordering::Relaxed))
                    .then(|| (live.session.id, live.last_seen(), Arc::clone(live)))
            })
            .collect()
    }

    pub(crate) fn mark_flushed(live: &LiveSession, at: OffsetDateTime) {
        live.flushed
            .fetch_max(at.unix_timestamp(), Ordering::Relaxed);
    }

    /// Drops expired sessions and revocations that no longer matter.
    pub(crate) fn sweep(&self, now: OffsetDateTime) {
        let expired: Vec<SessionId> = self
            .by_hash
            .iter()
            .filter(|e| e.value().session.is_expired(e.value().last_seen(), now))
            .map(|e| e.value().session.id)
            .collect();
        for id in expired {
            self.remove(id);
        }
        let now_ts = now.unix_timestamp();
        self.revoked.retain(|_, exp| *exp > now_ts);
        if self.by_hash.is_empty() {
            self.users.clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_hash.len()
    }
}
