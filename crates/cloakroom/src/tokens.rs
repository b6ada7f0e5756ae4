//! The token transport: access JWTs bound to sessions, single-use refresh tokens, and the keys
//! that sign them. A token session is an ordinary [`Session`] whose secret is the current refresh
//! token; every access token names it in `sid`, so ending the session ends them all.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

use crate::auth::{Auth, AuthError, Authenticated, LoginRequest};
use crate::jwt::{self, AccessClaims, Algorithm, Audience, ClaimsPolicy, KeyRing, SigningKey};
use crate::secret::Secret;
use crate::session::{Session, SessionId, SessionToken, Transport};
use crate::store::{Rotation, Store};
use crate::user::{User, UserId};

/// The media type of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

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

/// A stored key as `cloakroom keys list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// `active` (signing), `retired` (still verifying) or `expired` (to be deleted).
    pub status: &'static str,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stopped signing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
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

/// Builds the key ring from the store: the newest unretired key of the configured algorithm
/// signs (one is made if there is none and `create`), and every key retired less than the
/// horizon ago still verifies.
pub(crate) async fn load_ring(
    store: &dyn Store,
    auth: &crate::auth::AuthConfig,
    now: OffsetDateTime,
    create: bool,
) -> Result<KeyRing, AuthError> {
    let config = &auth.jwt;
    let sealing = auth.sealing.as_deref();
    if config.algorithm == Algorithm::HS256 {
        let secret = config
            .hs256_secret
            .as_ref()
            .ok_or_else(|| AuthError::Keys("HS256 needs a configured secret".into()))?;
        return Ok(KeyRing::new(
            Some(SigningKey::hs256(secret.expose()).map_err(AuthError::Keys)?),
            [],
        ));
    }
    let stored = store
        .list_keys()
        .await?
        .into_iter()
        .map(|k| unseal(k, sealing))
        .collect::<Result<Vec<_>, _>>()?;
    let current = stored
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none() && k.alg == config.algorithm);
    let signing = match current {
        Some(k) => Some(SigningKey::from_stored(k).map_err(AuthError::Keys)?),
        None if create => {
            let (key, record) =
                SigningKey::generate(config.algorithm, now).map_err(AuthError::Keys)?;
            store
                .add_signing_key(&seal_key(record.clone(), sealing)?)
                .await?;
            tracing::info!(kid = %record.kid, alg = %record.alg, "signing key created");
            Some(key)
        }
        None => None,
    };
    let horizon = config.key_horizon();
    let mut verify = Vec::new();
    for k in &stored {
        if k.retired_at.is_none_or(|r| r + horizon > now) {
            match SigningKey::from_stored(k) {
                Ok(key) => verify.push(key.verify_key().clone()),
                Err(e) => tracing::error!(kid = %k.kid, error = %e, "unreadable signing key"),
            }
        }
    }
    Ok(KeyRing::new(signing, verify))
}

/// A stored signing key with its private key in clear (see [`crate::sealing::open_stored`]).
fn unseal(
    mut key: crate::jwt::StoredKey,
    sealing: Option<&crate::sealing::KeySet>,
) -> Result<crate::jwt::StoredKey, AuthError> {
    key.private_pkcs8 =
        crate::sealing::open_stored(sealing, key.kid.as_bytes(), &key.private_pkcs8)
            .map_err(|e| AuthError::Keys(format!("signing key {}: {e}", key.kid)))?;
    Ok(key)
}

/// A signing key as the store should keep it: sealed when there are keys to seal it with.
fn seal_key(
    mut key: crate::jwt::StoredKey,
    sealing: Option<&crate::sealing::KeySet>,
) -> Result<crate::jwt::StoredKey, AuthError> {
    key.private_pkcs8 =
        crate::sealing::seal_stored(sealing, key.kid.as_bytes(), &key.private_pkcs8)
            .map_err(|e| AuthError::Keys(e.to_string()))?;
    Ok(key)
}

/// What the cache of verified tokens keeps about a token that passed every check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifiedToken {
    sid: SessionId,
    sub: UserId,
    exp: i64,
}

impl VerifiedToken {
    pub(crate) fn expires_at(&self) -> i64 {
        self.exp
    }
}

/// At most this many verified tokens are cached (about 40 MB at 400 bytes a token); when full,
/// the cache starts over.
const VERIFIED_CACHE_MAX: usize = 100_000;

impl Auth {
    fn verify_access_token(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<VerifiedToken, AuthError> {
        let ring = self.keys.load();
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
        })
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.load().jwks()
    }

    /// The current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// Rereads the keys from the store (another process may have rotated them). When a key
    /// stops verifying, tokens verified with it are dropped from the cache of verified tokens.
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        let ring = load_ring(&*self.store, &self.config, self.now(), true).await?;
        let old = self.keys.swap(Arc::new(ring));
        let current = self.keys.load();
        if old.keys().iter().any(|k| current.get(k.kid()).is_none()) {
            self.verified.clear();
        }
        Ok(())
    }

    /// Makes a new signing key; the old ones keep verifying until their tokens have expired.
    pub async fn rotate_keys(&self) -> Result<String, AuthError> {
        if self.config.jwt.algorithm == Algorithm::HS256 {
            return Err(AuthError::Keys(
                "HS256 uses the configured secret; rotate it in the configuration".into(),
            ));
        }
        let (_, record) =
            SigningKey::generate(self.config.jwt.algorithm, self.now()).map_err(AuthError::Keys)?;
        self.store
            .add_signing_key(&seal_key(record.clone(), self.config.sealing.as_deref())?)
            .await?;
        self.reload_keys().await?;
        tracing::info!(kid = %record.kid, "signing keys rotated");
        Ok(record.kid)
    }

    /// Seals every stored signing key with the current key-encryption key: keys in clear (from
    /// before sealing) and keys sealed with another KEK (after a new one was put first). Each
    /// is a compare-and-set, so instances doing it at once do no harm. Returns how many were
    /// re-sealed.
    pub async fn rekey(&self) -> Result<usize, AuthError> {
        self.reseal(true).await
    }

    /// Seals the signing keys still in clear (from before sealing was configured).
    pub(crate) async fn seal_clear_keys(&self) -> Result<usize, AuthError> {
        if self.config.sealing.is_none() {
            return Ok(0);
        }
        self.reseal(false).await
    }

    /// Re-seals with the current KEK every key in clear and, if `all`, every key sealed with
    /// another KEK.
    async fn reseal(&self, all: bool) -> Result<usize, AuthError> {
        let Some(sealing) = self.config.sealing.as_deref() else {
            return Err(AuthError::Keys(
                "no key-encryption key is configured".into(),
            ));
        };
        use crate::sealing::{needs_resealing, open_stored, seal_stored};
        let reseal = |context: &str, stored: &[u8]| {
            open_stored(Some(sealing), context.as_bytes(), stored)
                .and_then(|clear| seal_stored(Some(sealing), context.as_bytes(), &clear))
                .map_err(|e| AuthError::Keys(format!("{context}: {e}")))
        };
        let mut done = 0;
        for stored in self.store.list_keys().await? {
            if !needs_resealing(sealing, &stored.private_pkcs8, all) {
                continue;
            }
            let sealed = reseal(&stored.kid, &stored.private_pkcs8)?;
            if self
                .store
                .replace_private_key(&stored.kid, &stored.private_pkcs8, &sealed)
                .await?
            {
                tracing::info!(kid = %stored.kid, kek = sealing.current_id(), "signing key sealed");
                done += 1;
            }
        }
        // The tokens' check key, the same way.
        let name = crate::auth::TOKEN_CHECK;
        let stored = self.store.shared_secret(name, &[]).await?;
        if needs_resealing(sealing, &stored, all) {
            let sealed = reseal(name, &stored)?;
            if self
                .store
                .replace_shared_secret(name, &stored, &sealed)
                .await?
            {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Every stored key with its status.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, AuthError> {
        let now = self.now();
        let horizon = self.config.jwt.key_horizon();
        Ok(self
            .store
            .list_keys()
            .await?
            .into_iter()
            .map(|k| KeyInfo {
                status: match k.retired_at {
                    None => "active",
                    Some(r) if r + horizon > now => "retired",
                    Some(_) => "expired",
                },
                kid: k.kid,
                alg: k.alg.as_str().to_string(),
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect())
    }

    /// Mints an access token for a session, ending no later than the session's deadline.
    pub fn mint_access_token(
        &self,
        user: &User,
        session: &Session,
    ) -> Result<(String, i64), AuthError> {
        let ring = self.keys.load();
        let key = ring
            .signing()
            .ok_or_else(|| AuthError::Keys("no signing key".into()))?;
        let now = self.now();
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
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| AuthError::Keys(e.to_string()))?;
        let token = jwt::sign(key, ACCESS_TOKEN_TYPE, &payload).map_err(AuthError::Keys)?;
        Ok((token, (exp - now).whole_seconds()))
    }

    /// The password grant: checks the password like [`Auth::login`] and starts a token session.
    pub async fn login_tokens(&self, mut req: LoginRequest) -> Result<TokenPair, AuthError> {
        req.transport = Transport::Token;
        req.current_token = None;
        let out = self.login(req).await?;
        let (access_token, expires_in) = self.mint_access_token(&out.user, &out.session)?;
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
        let presented = SessionToken::parse(raw).ok_or(AuthError::InvalidGrant)?;
        if !self.may_look_up(raw) {
            return Err(AuthError::InvalidGrant);
        }
        let family = presented.family();
        let next = self.check.mint_in_family(&family);
        let sealed = seal(&presented, &next)?;
        let now = self.now();
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
        if self.live.is_revoked(session.id) || session.is_expired(session.last_seen_at, now) {
            return Err(AuthError::InvalidGrant);
        }
        let live = self.live.insert(session).ok_or(AuthError::InvalidGrant)?;
        live.touch(now);
        let user = self.user(live.session.user_id).await?;
        if user.disabled {
            return Err(AuthError::InvalidGrant);
        }
        let (access_token, expires_in) = self.mint_access_token(&user, &live.session)?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token,
            session: (*live.session).clone(),
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
        self.end_session_record(session.id).await?;
        Err(AuthError::InvalidGrant)
    }

    /// Recognises the session cookie's value: an access JWT (see
    /// [`Auth::authenticate_jwt_cookie`]) or the opaque session token.
    pub async fn authenticate_cookie(&self, value: &str) -> Result<Authenticated, AuthError> {
        if crate::cookie::holds_jwt(value) {
            self.authenticate_jwt_cookie(value).await
        } else {
            self.authenticate(value).await
        }
    }

    /// Recognises an access JWT carried as the session cookie: checked like a bearer token,
    /// and it must name a cookie session (one started with `cookie: "jwt"`). An access token of
    /// a token session is refused there, so a leaked one cannot be renewed through the cookie
    /// without its refresh token.
    pub async fn authenticate_jwt_cookie(&self, token: &str) -> Result<Authenticated, AuthError> {
        let who = self.authenticate_bearer(token).await?;
        if who.session.transport != Transport::Cookie {
            return Err(AuthError::Unauthenticated);
        }
        Ok(who)
    }

    /// The session an access JWT names, if it carries our valid signature and claims (the
    /// session itself is not looked at).
    pub(crate) fn session_named_by(&self, token: &str) -> Option<SessionId> {
        self.verify_access_token(token, self.now())
            .ok()
            .map(|v| v.sid)
    }

    /// Recognises an access JWT: signature by `kid` and the key's own algorithm, the RFC 9068
    /// claims, then the session it names, which must be live, unrevoked and the subject's.
    ///
    /// A token seen before is found in a bounded cache of verified tokens, keyed by its exact
    /// bytes: only a token that passed every check gets in, and a different byte string is a
    /// different key, so the cache cannot be fed a forgery. Expiry, revocation, the session and
    /// the user are still checked on every use.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Authenticated, AuthError> {
        let now = self.now();
        let cached = self.verified.get(token).map(|v| *v);
        let verified = match cached {
            Some(v) => {
                if now.unix_timestamp() >= v.exp.saturating_add(self.claims_policy.leeway_secs) {
                    self.verified.remove(token);
                    return Err(AuthError::Unauthenticated);
                }
                v
            }
            None => {
                let v = self.verify_access_token(token, now)?;
                if self.verified.len() >= VERIFIED_CACHE_MAX {
                    self.verified.clear();
                }
                self.verified.insert(token.into(), v);
                v
            }
        };
        let sid = verified.sid;
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
        if live.session.user_id != verified.sub {
            return Err(AuthError::Unauthenticated);
        }
        self.check_live(&live, now).await
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
