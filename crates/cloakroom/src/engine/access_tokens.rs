//! Access tokens, the token transport: access JWTs bound to sessions, single-use refresh
//! tokens, and the checks of both. A token session is an ordinary [`Session`] whose secret is the
//! current refresh token; every access token names it in `sid`, so ending the session ends them
//! all. This component depends on [`Sessions`], never the reverse.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

use super::config::AuthConfig;
use super::error::AuthError;
use super::request::{AuthMetrics, Authenticated};
use super::sessions::Sessions;
use super::signing_keys::SigningKeys;
use crate::clock::Clock;
use crate::jwt::{self, AccessClaims, Audience, ClaimsPolicy};
use crate::live::ServerKeyed;
use crate::session::{Session, SessionId, SessionToken, Transport};
use crate::store::{Rotation, Store};
use crate::user::{User, UserId};

/// The media type of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// An access token and the refresh token that renews it (RFC 6749 §5.1).
#[derive(Debug)]
pub struct TokenPair {
    /// The access JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The single-use refresh token.
    pub refresh_token: SessionToken,
    /// The session.
    pub session: Session,
    /// The user.
    pub user: User,
}

fn successor_key(presented: &SessionToken) -> Result<LessSafeKey, AuthError> {
    let mut h = Sha256::new();
    h.update(b"cloakroom refresh successor v1\0");
    h.update(presented.expose().as_bytes());
    let key = UnboundKey::new(&aead::CHACHA20_POLY1305, &h.finalize())
        .map_err(|_| AuthError::Keys("cannot derive the sealing key".into()))?;
    Ok(LessSafeKey::new(key))
}

/// Seals `next` with a key derived from `presented`. Each key seals exactly one message, so the
/// fixed nonce is never reused under one key.
fn seal(presented: &SessionToken, next: &SessionToken) -> Result<Vec<u8>, AuthError> {
    let mut buf = next.expose().as_bytes().to_vec();
    successor_key(presented)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::empty(),
            &mut buf,
        )
        .map_err(|_| AuthError::Keys("cannot seal the successor".into()))?;
    Ok(buf)
}

fn open(presented: &SessionToken, sealed: &[u8]) -> Option<SessionToken> {
    let mut buf = sealed.to_vec();
    let plain = successor_key(presented)
        .ok()?
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::empty(),
            &mut buf,
        )
        .ok()?;
    SessionToken::parse(std::str::from_utf8(plain).ok()?)
}

/// What the cache of verified tokens keeps about a token that passed every check.
#[derive(Debug, Clone)]
struct VerifiedToken {
    sid: SessionId,
    sub: UserId,
    exp: i64,
    /// The DPoP key the token is bound to (`cnf.jkt`): usable only with that key's proof.
    jkt: Option<super::proofs::Jkt>,
}

impl VerifiedToken {
    fn expires_at(&self) -> i64 {
        self.exp
    }
}

/// At most this many verified tokens are cached (about 40 MB at 400 bytes a token); when full,
/// the cache starts over.
const VERIFIED_CACHE_MAX: usize = 100_000;

/// Access tokens and refresh tokens.
pub(crate) struct AccessTokens {
    keys: SigningKeys,
    claims_policy: ClaimsPolicy,
    verified: ServerKeyed<Box<str>, VerifiedToken>,
    sessions: Arc<Sessions>,
    store: Arc<dyn Store>,
    config: Arc<AuthConfig>,
    clock: Arc<dyn Clock>,
    metrics: Arc<AuthMetrics>,
}

impl AccessTokens {
    pub(crate) fn new(
        keys: SigningKeys,
        sessions: Arc<Sessions>,
        store: Arc<dyn Store>,
        config: Arc<AuthConfig>,
        clock: Arc<dyn Clock>,
        metrics: Arc<AuthMetrics>,
    ) -> Self {
        Self {
            claims_policy: config.jwt.policy(),
            keys,
            verified: Default::default(),
            sessions,
            store,
            config,
            clock,
            metrics,
        }
    }

    /// The signing keys.
    pub(crate) fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Rereads the signing keys; tokens verified with a key that stopped verifying are dropped
    /// from the cache of verified tokens.
    pub(crate) async fn reload_keys(&self) -> Result<(), AuthError> {
        if self.keys.reload().await? {
            self.verified.clear();
        }
        Ok(())
    }

    /// Forgets every verified token (every session was lost).
    pub(crate) fn forget_verified(&self) {
        self.verified.clear();
    }

    /// Drops expired tokens from the cache of verified tokens.
    pub(crate) fn sweep(&self, now: OffsetDateTime) {
        let leeway = self.claims_policy.leeway_secs;
        self.verified
            .retain(|_, v| v.expires_at().saturating_add(leeway) > now.unix_timestamp());
    }

    fn verify_access_token(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<VerifiedToken, AuthError> {
        let ring = self.keys.current();
        let refused = |e: jwt::VerifyError| {
            tracing::debug!(error = %e, "bearer token refused");
            AuthError::Unauthenticated
        };
        let (header, payload) = jwt::verify(token, &ring).map_err(refused)?;
        let claims = self
            .claims_policy
            .validate(&header, &payload, now)
            .map_err(refused)?;
        Ok(VerifiedToken {
            sid: claims.sid.parse().map_err(|_| AuthError::Unauthenticated)?,
            sub: claims.sub.parse().map_err(|_| AuthError::Unauthenticated)?,
            exp: claims.exp,
            jkt: claims.cnf.map(|c| c.jkt.into()),
        })
    }

    /// Mints an access token for a session, ending no later than the session's deadline.
    pub(crate) fn mint(&self, user: &User, session: &Session) -> Result<(String, i64), AuthError> {
        let ring = self.keys.current();
        let key = ring
            .signing()
            .ok_or_else(|| AuthError::Keys("no signing key".into()))?;
        let now = self.clock.now_secs();
        let exp = (now + self.config.jwt.access_ttl).min(session.absolute_expires_at);
        let claims = AccessClaims {
            iss: self.config.jwt.issuer.clone(),
            sub: user.id.to_string(),
            aud: Audience::One(self.config.jwt.audience.clone()),
            exp: exp.unix_timestamp(),
            iat: now.unix_timestamp(),
            nbf: None,
            jti: SessionId::random().to_string(),
            client_id: self.config.jwt.client_id.clone(),
            sid: session.id.to_string(),
            roles: user.roles.iter().map(|r| r.to_string()).collect(),
            auth_time: Some(session.authenticated_at.unix_timestamp()),
            acr: Some(session.amr.acr().as_str().into()),
            amr: session.amr.names().into_iter().map(String::from).collect(),
            email_verified: Some(user.email_verified),
            cnf: session
                .dpop_jkt
                .clone()
                .map(|jkt| crate::jwt::Confirmation { jkt }),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| AuthError::Keys(e.to_string()))?;
        let token = jwt::sign(key, ACCESS_TOKEN_TYPE, &payload).map_err(AuthError::from)?;
        Ok((token, (exp - now).whole_seconds()))
    }

    /// The refresh grant: rotates the refresh token (one compare-and-set in the store) and mints
    /// a new access token. A spent token presented again within the grace window gets the same
    /// successor back; later, it is theft, and the whole session ends.
    ///
    /// A session bound to a DPoP key rotates only for a request whose proof that key signed
    /// (`dpop_jkt`, checked by the caller): a copy of its refresh token is worth nothing alone.
    pub(crate) async fn refresh(
        &self,
        raw: &str,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenPair, AuthError> {
        let presented = SessionToken::parse(raw).ok_or(AuthError::InvalidGrant)?;
        if !self.sessions.may_look_up(raw) {
            return Err(AuthError::InvalidGrant);
        }
        let binding_holds = |session: &Session| match &session.dpop_jkt {
            Some(bound) => dpop_jkt == Some(bound.as_str()),
            None => true,
        };
        if let Some(session) = self.store.find_by_token(&presented.hash()).await? {
            if !binding_holds(&session) {
                return Err(AuthError::DpopProof(crate::dpop::ProofError::WrongKey));
            }
        }
        let family = presented.family();
        let next = self.sessions.mint_in_family(&family);
        let sealed = seal(&presented, &next)?;
        let now = self.clock.now_secs();
        let rotation = self
            .store
            .rotate_refresh(
                &presented.hash(),
                &family.hash(),
                &next.hash(),
                &sealed,
                now,
            )
            .await?;
        let (session, refresh_token) = match rotation {
            Rotation::Rotated(session) => (session, next),
            Rotation::Spent {
                session,
                rotated_at,
                sealed_next,
            } => {
                if now - rotated_at <= self.config.jwt.refresh_grace {
                    let successor =
                        open(&presented, &sealed_next).ok_or(AuthError::InvalidGrant)?;
                    (session, successor)
                } else {
                    return self.refresh_reused(&session).await;
                }
            }
            Rotation::Reused(session) => return self.refresh_reused(&session).await,
            Rotation::Unknown => return Err(AuthError::InvalidGrant),
        };
        if !binding_holds(&session) {
            return Err(AuthError::DpopProof(crate::dpop::ProofError::WrongKey));
        }
        let (session, user) = self
            .sessions
            .resume(session, now)
            .await?
            .ok_or(AuthError::InvalidGrant)?;
        let (access_token, expires_in) = self.mint(&user, &session)?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token,
            session: (*session).clone(),
            user: (*user).clone(),
        })
    }

    /// A spent refresh token of `session` came back (RFC 9700 §4.14.2): whoever holds the
    /// lineage now, the thief or the victim, the session ends.
    async fn refresh_reused(&self, session: &Session) -> Result<TokenPair, AuthError> {
        tracing::warn!(
            session = %session.id,
            user = %session.user_id,
            security_event = "refresh_token_reuse",
            "a spent refresh token was used again; the session is ended"
        );
        self.metrics
            .refresh_reuse
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions.end_session_record(session.id).await?;
        let event = crate::events::SecurityEvent {
            user_id: session.user_id,
            kind: crate::events::EventKind::RefreshReuseDetected,
            at: self.clock.now_secs(),
            ip: session.ip.clone(),
            user_agent: session.user_agent.clone(),
            detail: None,
        };
        crate::events::record_after(&*self.store, &event).await;
        Err(AuthError::InvalidGrant)
    }

    /// Recognises an access JWT carried as the session cookie: checked like a bearer token,
    /// and it must name a cookie session (one started with `cookie: "jwt"`). An access token of
    /// a token session is refused there, so a leaked one cannot be renewed through the cookie
    /// without its refresh token.
    pub(crate) async fn authenticate_jwt_cookie(
        &self,
        token: &str,
    ) -> Result<Authenticated, AuthError> {
        let who = self.authenticate_bearer(token).await?;
        if who.session.transport != Transport::Cookie {
            return Err(AuthError::Unauthenticated);
        }
        Ok(who)
    }

    /// The session an access JWT names, if it carries our valid signature and claims (the
    /// session itself is not looked at).
    pub(crate) fn session_named_by(&self, token: &str) -> Option<SessionId> {
        self.verify_access_token(token, self.clock.now_secs())
            .ok()
            .map(|v| v.sid)
    }

    /// Recognises an access JWT: signature by `kid` and the key's own algorithm, the RFC 9068
    /// claims, then the session it names, which must be live, unrevoked and the subject's.
    ///
    /// A token seen before is found in a bounded cache of verified tokens, keyed by its exact
    /// bytes: only a token that passed every check gets in, and a different byte string is a
    /// different key, so the cache cannot be fed a forgery. Expiry, revocation, the session and
    /// the user are still checked on every use. A token bound to a DPoP key is refused here.
    pub(crate) async fn authenticate_bearer(
        &self,
        token: &str,
    ) -> Result<Authenticated, AuthError> {
        self.authenticate_access(token, false).await
    }

    /// [`AccessTokens::authenticate_bearer`] for a token bound to a DPoP key whose proof the
    /// caller has checked: only a bound token passes here.
    pub(crate) async fn authenticate_bound(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.authenticate_access(token, true).await
    }

    /// The key a valid access token is bound to, if any, and its subject.
    pub(crate) fn bound_key(
        &self,
        token: &str,
    ) -> Result<Option<(super::proofs::Jkt, UserId)>, AuthError> {
        let v = self.verified(token, self.clock.now_secs())?;
        Ok(v.jkt.map(|jkt| (jkt, v.sub)))
    }

    /// A token's verified claims, from the cache or checked now.
    fn verified(&self, token: &str, now: OffsetDateTime) -> Result<VerifiedToken, AuthError> {
        if let Some(v) = self.verified.get(token).map(|v| v.clone()) {
            if now.unix_timestamp() >= v.exp.saturating_add(self.claims_policy.leeway_secs) {
                self.verified.remove(token);
                return Err(AuthError::Unauthenticated);
            }
            return Ok(v);
        }
        let v = self.verify_access_token(token, now)?;
        if self.verified.len() >= VERIFIED_CACHE_MAX {
            self.verified.clear();
        }
        self.verified.insert(token.into(), v.clone());
        Ok(v)
    }

    async fn authenticate_access(
        &self,
        token: &str,
        dpop: bool,
    ) -> Result<Authenticated, AuthError> {
        let now = self.clock.now_secs();
        let verified = self.verified(token, now)?;
        if verified.jkt.is_some() != dpop {
            tracing::debug!(
                dpop,
                "an access token presented with the other scheme than its binding refused"
            );
            return Err(AuthError::Unauthenticated);
        }
        self.sessions
            .authenticate_id(verified.sid, verified.sub, now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_successor_opens_only_with_the_presented_token() {
        let presented = SessionToken::generate();
        let next = SessionToken::generate();
        let sealed = seal(&presented, &next).unwrap_or_default();
        assert!(!sealed.windows(43).any(|w| w == next.expose().as_bytes()));
        assert_eq!(open(&presented, &sealed), Some(next));
        assert_eq!(open(&SessionToken::generate(), &sealed), None);
    }
}
