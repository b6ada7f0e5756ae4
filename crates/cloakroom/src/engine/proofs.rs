//! DPoP on the token transport (RFC 9449): checking a request's proof once on every instance,
//! the server's nonces, and recognising an access token bound to a key.

use ring::hmac;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

use super::error::AuthError;
use super::request::Authenticated;
use super::Auth;
use crate::dpop::{self, Proof, ProofError, ProofRules};

/// How far a proof's `iat` may be from now, either way (see [`dpop::WINDOW`]).
pub const DPOP_WINDOW: Duration = dpop::WINDOW;

/// How long a server nonce is current; the one before it is accepted too.
const NONCE_PERIOD: i64 = 300;

/// The server's DPoP nonces: a MAC of the current period under a key every instance shares, so
/// any instance accepts a nonce another gave out and none keeps state.
pub(crate) struct Nonces {
    key: hmac::Key,
}

impl Nonces {
    pub(crate) fn new(shared: &[u8]) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, shared),
            b"cloakroom dpop nonce",
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    fn for_period(&self, period: i64) -> String {
        use base64::Engine;
        let tag = hmac::sign(&self.key, &period.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    }

    /// The nonce to hand out now.
    pub(crate) fn current(&self, now: OffsetDateTime) -> String {
        self.for_period(now.unix_timestamp().div_euclid(NONCE_PERIOD))
    }

    /// The nonces a proof may carry now: the current one and the one before.
    pub(crate) fn accepted(&self, now: OffsetDateTime) -> [String; 2] {
        let period = now.unix_timestamp().div_euclid(NONCE_PERIOD);
        [self.for_period(period), self.for_period(period - 1)]
    }
}

impl Auth {
    /// Checks a `DPoP` proof for a request to `method` `url` (RFC 9449 §4.3), with the access
    /// token it comes with and the key that token is bound to, and takes its `jti`: a proof
    /// counts once on every instance sharing the store.
    pub async fn check_dpop_proof(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        bound_to: Option<&str>,
    ) -> Result<Proof, AuthError> {
        let now = self.now();
        let nonces = self
            .config
            .dpop_nonce_required
            .then(|| self.dpop.accepted(now));
        let rules = ProofRules {
            method,
            url,
            now,
            window: DPOP_WINDOW,
            access_token,
            bound_to,
            nonces: nonces.as_ref().map(|n| &n[..]),
        };
        let proof = dpop::verify_proof(proof, &rules).map_err(AuthError::DpopProof)?;
        let until = proof.iat.max(now) + DPOP_WINDOW;
        if !self
            .store
            .first_use(&proof.replay_key(), until, now)
            .await?
        {
            return Err(AuthError::DpopProof(ProofError::Replayed));
        }
        Ok(proof)
    }

    /// The server nonce a DPoP client should put in its next proof (`DPoP-Nonce`).
    pub fn dpop_nonce(&self) -> String {
        self.dpop.current(self.now())
    }

    /// Recognises a DPoP-bound access token (`Authorization: DPoP <token>`) with the proof that
    /// came with it, for a request to `method` `url`: the token's claims, then the proof, which
    /// must name the token (`ath`) and be signed by the key the token is bound to, then the
    /// session, which must be bound to the same key. An unbound token is refused here, as a
    /// bound one is as a bearer token.
    pub async fn authenticate_dpop(
        &self,
        token: &str,
        proof: &str,
        method: &str,
        url: &str,
    ) -> Result<Authenticated, AuthError> {
        let (jkt, user) = self
            .tokens
            .bound_key(token)?
            .ok_or(AuthError::Unauthenticated)?;
        match self
            .check_dpop_proof(proof, method, url, Some(token), Some(&jkt))
            .await
        {
            Ok(_) => {}
            // Asking for the server's nonce is the protocol, not an attack.
            Err(e @ AuthError::DpopProof(ProofError::UseNonce)) => return Err(e),
            Err(AuthError::DpopProof(why)) => {
                tracing::warn!(user = %user, error = %why, "a bound token's proof refused");
                let event = crate::events::SecurityEvent {
                    user_id: user,
                    kind: crate::events::EventKind::DpopProofRefused,
                    at: self.now(),
                    ip: None,
                    user_agent: None,
                    detail: Some(why.to_string()),
                };
                crate::events::record_after(&*self.store, &event).await;
                return Err(AuthError::DpopProof(why));
            }
            Err(e) => return Err(e),
        }
        let who = self.tokens.authenticate_bound(token).await?;
        if who.session.dpop_jkt.as_deref() != Some(&*jkt) {
            return Err(AuthError::Unauthenticated);
        }
        Ok(who)
    }
}

/// A token's key as the engine keeps it.
pub(crate) type Jkt = Arc<str>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_last_two_periods_and_differ_by_key() {
        let a = Nonces::new(b"one shared key of enough length..");
        let b = Nonces::new(b"another shared key, just as long.");
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let n = a.current(t);
        assert!(a.accepted(t + Duration::seconds(NONCE_PERIOD)).contains(&n));
        assert!(!a
            .accepted(t + Duration::seconds(2 * NONCE_PERIOD))
            .contains(&n));
        assert_ne!(n, b.current(t));
    }
}
