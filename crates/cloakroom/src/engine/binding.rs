//! Device-bound cookie sessions (DBSC): challenges, the bound cookie, binding a session to a
//! browser's key and renewing its bound cookie. The wire formats are [`crate::dbsc`]'s.
//!
//! Challenges and bound cookies are MACs under a key every instance shares, so any instance
//! checks what another gave out without a store read: a registration challenge names the
//! unbound session, a refresh challenge the binding, each with the time it was given; a bound
//! cookie names the browser's key and its expiry. A challenge counts once on every instance
//! (one store write, the only one of a refresh).
//!
//! Binding starts a successor session (new id and secret, everything else kept) and ends the
//! unbound one, so a copy of the old cookie is void everywhere at once by the revocation every
//! instance already follows, and no cached copy of the session can miss the binding. The
//! browser knows the binding by the key's thumbprint ([`Auth::dbsc_id`]), not by the session
//! id: a successor of a bound session (step-up, a password change) keeps the key, so the
//! browser's bound cookie and refreshes carry on across it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::error::AuthError;
use super::request::{Authenticated, LoginOutcome};
use super::Auth;
use crate::dbsc::{self, DbscError, DbscMode};
use crate::events::EventKind;
use crate::session::{Session, SessionId, Transport};

/// How long a challenge may be answered beyond the bound cookie's lifetime: a challenge given
/// with one bound cookie serves the refresh when that cookie runs out.
const CHALLENGE_SLACK: Duration = Duration::minutes(5);

/// The MACs behind challenges and bound cookies.
pub(crate) struct Binder {
    key: hmac::Key,
}

impl Binder {
    pub(crate) fn new(shared: &[u8]) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, shared),
            b"cloakroom dbsc",
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A 16-byte MAC of `parts`, each length-prefixed so no two lists run together.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&ctx.sign().as_ref()[..16]);
        out
    }

    /// `time`, 96 random bits, and a MAC of both with `label` and `subject`, base64url: two
    /// stamps made in the same second differ.
    fn stamp(&self, label: &[u8], subject: &[u8], time: i64) -> String {
        let mut out = time.to_be_bytes().to_vec();
        let mut salt = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        out.extend_from_slice(&salt);
        out.extend_from_slice(&self.mac(&[label, subject, &out]));
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The time a stamp made by [`Binder::stamp`] with the same inputs carries, if it is one.
    fn read_stamp(&self, label: &[u8], subject: &[u8], value: &str) -> Option<i64> {
        let bytes = crate::jwt::STRICT.decode(value).ok()?;
        if bytes.len() != 36 {
            return None;
        }
        let (body, tag) = bytes.split_at(20);
        let want = self.mac(&[label, subject, body]);
        crate::secrets_equal(tag, &want)
            .then(|| i64::from_be_bytes(body[..8].try_into().unwrap_or_default()))
    }
}

impl Auth {
    /// How the deployment treats DBSC.
    pub fn dbsc_mode(&self) -> DbscMode {
        self.config.dbsc
    }

    /// The challenge an unbound session `id`'s registration proof must answer (given in the
    /// login's `Secure-Session-Registration`).
    pub fn dbsc_registration_challenge(&self, id: SessionId) -> String {
        self.binder
            .stamp(b"register", id.0.as_bytes(), self.now().unix_timestamp())
    }

    /// How the browser names a bound session's binding (`session_identifier`,
    /// `Sec-Secure-Session-Id`): its key's RFC 7638 thumbprint, which successors keep.
    pub fn dbsc_id(&self, session: &Session) -> Option<String> {
        let key: serde_json::Value = serde_json::from_str(session.dbsc_key.as_deref()?).ok()?;
        crate::dpop::thumbprint(&key).ok()
    }

    /// The `Secure-Session-Challenge` value giving a fresh challenge for a bound `session`'s
    /// next refresh.
    pub fn dbsc_challenge_header(&self, session: &Session) -> Option<String> {
        let id = self.dbsc_id(session)?;
        let challenge = self
            .binder
            .stamp(b"refresh", id.as_bytes(), self.now().unix_timestamp());
        dbsc::challenge_header(&challenge, &id)
    }

    /// A fresh bound cookie's value for `session` and how long it lasts, if it is bound.
    pub fn bound_cookie(&self, session: &Session) -> Option<(String, Duration)> {
        let key = session.dbsc_key.as_deref()?;
        let lifetime = self.config.bound_cookie_lifetime;
        let until = (self.now() + lifetime).unix_timestamp();
        Some((self.binder.stamp(b"bound", key.as_bytes(), until), lifetime))
    }

    /// Whether `who`'s session may be used with the cookies it came with: a bound session only
    /// with a bound cookie that has not run out; an unbound cookie session, when the deployment
    /// requires binding, only while it is new enough to be registering. Free for unbound
    /// sessions where binding is optional, and where DBSC is off (bindings are not enforced):
    /// `bound` (the bound cookie's value, if one came) is read only for a bound session.
    pub fn check_binding<'a>(
        &self,
        who: &Authenticated,
        bound: impl FnOnce() -> Option<&'a str>,
    ) -> Result<(), AuthError> {
        let session = &who.session;
        let mode = self.config.dbsc;
        if mode == DbscMode::Off || session.transport != Transport::Cookie {
            return Ok(());
        }
        let Some(key) = session.dbsc_key.as_deref() else {
            if mode == DbscMode::Required
                && self.now() - session.created_at >= self.config.bound_cookie_lifetime
            {
                return Err(AuthError::DeviceBinding {
                    session: session.id,
                    bound: false,
                });
            }
            return Ok(());
        };
        let now = self.now().unix_timestamp();
        let fresh = bound()
            .and_then(|v| self.binder.read_stamp(b"bound", key.as_bytes(), v))
            .is_some_and(|until| now < until);
        if fresh {
            Ok(())
        } else {
            Err(AuthError::DeviceBinding {
                session: session.id,
                bound: true,
            })
        }
    }

    /// Takes the challenge a proof answers: one this server gave (`label`) for `subject` (the
    /// unbound session's id, or the binding's), recent enough, and not answered before on any
    /// instance.
    async fn take_challenge(
        &self,
        label: &[u8],
        subject: &[u8],
        jti: &str,
    ) -> Result<(), AuthError> {
        let now = self.now();
        let issued = self
            .binder
            .read_stamp(label, subject, jti)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .ok_or(AuthError::Dbsc(DbscError::Challenge))?;
        let until = issued + self.config.bound_cookie_lifetime + CHALLENGE_SLACK;
        if now >= until || issued > now + Duration::minutes(1) {
            return Err(AuthError::Dbsc(DbscError::Challenge));
        }
        let mut h = Sha256::new();
        h.update(b"dbsc challenge\0");
        h.update(label);
        h.update(b"\0");
        h.update(subject);
        h.update(jti.as_bytes());
        if !self
            .store
            .first_use(&h.finalize().into(), until, now)
            .await?
        {
            return Err(AuthError::Dbsc(DbscError::Replayed));
        }
        Ok(())
    }

    /// Binds `who`'s cookie session to the key of a registration proof (`Secure-Session-Response`
    /// of `POST /auth/dbsc/register`), which must answer a challenge given for this session. The
    /// caller continues in a bound successor (new id and secret; lifetime, assurance and the
    /// rest kept), returned with its token; the unbound session ends everywhere. A session binds
    /// once: of two registrations, one wins.
    pub async fn bind_session(
        &self,
        who: &Authenticated,
        proof: &str,
    ) -> Result<LoginOutcome, AuthError> {
        let old = &who.session;
        if old.transport != Transport::Cookie {
            return Err(AuthError::Dbsc(DbscError::State(
                "only cookie sessions bind to a browser; tokens bind with DPoP",
            )));
        }
        if old.dbsc_key.is_some() {
            return Err(AuthError::Dbsc(DbscError::State(
                "the session is bound already",
            )));
        }
        let registration = match dbsc::verify_registration(proof) {
            Ok(r) => r,
            Err(e) => return Err(self.proof_refused(who, e).await),
        };
        self.take_challenge(b"register", old.id.0.as_bytes(), &registration.jti)
            .await?;
        let (session, token) = self
            .sessions
            .successor(old, Some(registration.jwk.to_string()));
        self.sessions.open(&session).await?;
        if !self.sessions.end_session_record(old.id).await? {
            // Another registration (or a logout) ended it first.
            self.sessions.end_session_record(session.id).await?;
            return Err(AuthError::Unauthenticated);
        }
        self.record(
            who.user.id,
            EventKind::SessionBound,
            old.ip.clone(),
            Some(&format!("key {}", registration.jkt)),
        )
        .await;
        tracing::info!(user = %who.user.id, session = %session.id, "session bound to a browser key");
        Ok(LoginOutcome {
            user: (*who.user).clone(),
            session,
            token,
        })
    }

    /// Checks a refresh of `who`'s bound session (`POST /auth/dbsc/refresh`): `session_id`
    /// (`Sec-Secure-Session-Id`) must name its binding ([`Auth::dbsc_id`]), and `proof` answer a
    /// current challenge with the session's key. Without a proof, or with one over a stale or spent challenge, the answer
    /// is [`DbscError::Challenge`]/[`DbscError::Replayed`]: the client asks again with a new
    /// challenge. The caller then hands out [`Auth::bound_cookie`].
    pub async fn refresh_binding(
        &self,
        who: &Authenticated,
        session_id: &str,
        proof: Option<&str>,
    ) -> Result<(), AuthError> {
        let Some(key) = who.session.dbsc_key.as_deref() else {
            return Err(AuthError::Dbsc(DbscError::State(
                "the session is not bound",
            )));
        };
        let id = self
            .dbsc_id(&who.session)
            .ok_or(AuthError::Dbsc(DbscError::State(
                "the session's key is unreadable",
            )))?;
        if session_id != id {
            return Err(AuthError::Dbsc(DbscError::WrongSession));
        }
        let proof = proof.ok_or(AuthError::Dbsc(DbscError::Challenge))?;
        let key: serde_json::Value = serde_json::from_str(key).map_err(|_| {
            AuthError::Store(crate::store::StoreError::Corrupt(
                "sessions.dbsc_key is not JSON".into(),
            ))
        })?;
        let jti = match dbsc::verify_refresh(proof, &key) {
            Ok(jti) => jti,
            Err(e) => return Err(self.proof_refused(who, e).await),
        };
        match self.take_challenge(b"refresh", id.as_bytes(), &jti).await {
            Err(AuthError::Dbsc(DbscError::Replayed)) => {
                Err(self.proof_refused(who, DbscError::Replayed).await)
            }
            other => other,
        }
    }

    /// Records a refused proof as a security event and gives the error.
    async fn proof_refused(&self, who: &Authenticated, why: DbscError) -> AuthError {
        tracing::warn!(user = %who.user.id, session = %who.session.id, error = %why, "a session proof was refused");
        self.record(
            who.user.id,
            EventKind::DbscProofRefused,
            who.session.ip.clone(),
            Some(&why.to_string()),
        )
        .await;
        AuthError::Dbsc(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_name_their_subject_and_purpose() {
        let b = Binder::new(b"one shared key of enough length..");
        let other = Binder::new(b"another shared key, just as long.");
        let v = b.stamp(b"bound", b"key", 1_800_000_000);
        assert_ne!(v, b.stamp(b"bound", b"key", 1_800_000_000));
        assert_eq!(b.read_stamp(b"bound", b"key", &v), Some(1_800_000_000));
        assert_eq!(b.read_stamp(b"bound", b"other key", &v), None);
        assert_eq!(b.read_stamp(b"refresh", b"key", &v), None);
        assert_eq!(other.read_stamp(b"bound", b"key", &v), None);
        // The time cannot be moved without the key.
        let mut bytes = URL_SAFE_NO_PAD.decode(&v).unwrap();
        bytes[7] ^= 1;
        let moved = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(b.read_stamp(b"bound", b"key", &moved), None);
        assert_eq!(b.read_stamp(b"bound", b"key", "not base64!"), None);
    }
}
