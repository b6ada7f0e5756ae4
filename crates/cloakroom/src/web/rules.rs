//! The one set of request rules (feature `engine`): which credential counts, the cross-site
//! checks, and the JWT cookie's renewal.

use axum::http::{HeaderMap, Method};
use std::sync::Arc;
use time::OffsetDateTime;

use super::{csrf, session_cookie, CredentialError, Credentials};
use crate::cookie::holds_jwt;
use crate::{Auth, AuthError, Authenticated, CookiePolicy};

/// How requests are read: the session cookie's policy and the origins that count as this
/// site's for the cross-site checks.
#[derive(Debug, Clone)]
pub struct RequestRules {
    cookie: CookiePolicy,
    origins: Arc<[String]>,
}

/// Why a request's credentials were refused.
#[derive(Debug)]
pub enum Refusal {
    /// A cookie-authenticated unsafe request that does not prove it is from this site, or any
    /// unsafe request a browser marks as cross-site: 403 `cross_origin_request`.
    CrossOrigin,
    /// No credentials, or none that are valid: 401 `unauthenticated`, without a challenge.
    Unauthenticated,
    /// A bearer token was sent and is refused: 401 with `WWW-Authenticate: Bearer
    /// error="invalid_token"` (RFC 6750 §3.1).
    InvalidToken,
    /// A DPoP-bound token was sent and is refused, or its proof is (RFC 9449 §7.1): 401 with
    /// `WWW-Authenticate: DPoP error="invalid_token"`, `"invalid_dpop_proof"` or
    /// `"use_dpop_nonce"` (then with a `DPoP-Nonce`).
    InvalidDpop(Option<crate::dpop::ProofError>),
    /// A device-bound cookie session without a current bound cookie (`bound`), or an unbound
    /// one where binding is required: 401 `session_binding_required`; for a bound session with
    /// a `Secure-Session-Challenge` for its refresh.
    DeviceBinding {
        /// The session.
        session: crate::SessionId,
        /// Whether it is bound.
        bound: bool,
        /// For a bound session, the `Secure-Session-Challenge` value for its next proof.
        challenge: Option<String>,
    },
    /// The engine could not decide (the store is down, the host is overloaded).
    Failed(AuthError),
}

/// A recognised caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, and by which session.
    pub who: Authenticated,
    /// A `Set-Cookie` value for the response: a fresh access JWT when the session cookie held
    /// one past half its lifetime, so an active browser keeps a valid one while its session lives.
    pub renewed_cookie: Option<String>,
}

impl RequestRules {
    /// Rules for a site whose pages are served from `origins` (scheme, host and port, as in
    /// `https://auth.example.com`).
    pub fn new(cookie: CookiePolicy, origins: Vec<String>) -> Self {
        Self {
            cookie,
            origins: origins.into(),
        }
    }

    /// The session cookie's policy.
    pub fn cookie(&self) -> &CookiePolicy {
        &self.cookie
    }

    /// The origins that count as this site's.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// The URL a request to `path` was addressed to, as a DPoP proof's `htu` must name it: on
    /// the origin of its `Host` when that is one of this site's, else on the first.
    pub fn request_url(&self, headers: &HeaderMap, path: &str) -> Option<String> {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin = self
            .origins
            .iter()
            .find(|o| host.is_some_and(|h| o.split_once("://").map(|(_, a)| a) == Some(h)))
            .or(self.origins.first())?;
        Some(format!("{origin}{path}"))
    }

    /// Whether a request is refused before anything else is looked at: an unsafe method that a
    /// browser marks as coming from another site, whoever it claims to be.
    pub fn refuses_cross_site(&self, method: &Method, headers: &HeaderMap) -> bool {
        csrf::is_unsafe(method) && csrf::looks_cross_site(headers, &self.origins)
    }

    /// The session cookie's value, if exactly one was sent (an ambiguous pair counts as none).
    pub fn session_cookie<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        session_cookie(headers, &self.cookie).ok().flatten()
    }

    /// Recognises the caller. A bearer token wins over a cookie; a session cookie holds the
    /// opaque session token, or an access JWT of a cookie session (it has dots). An unsafe
    /// method with a session cookie must prove it comes from this site even with a bearer
    /// token (see [`csrf`]).
    pub async fn authenticate(
        &self,
        auth: &Auth,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Caller, Refusal> {
        self.authenticate_at(auth, method, None, headers).await
    }

    /// [`RequestRules::authenticate`] for a request to `path` (on this site's first origin),
    /// which a DPoP-bound access token's proof must name (`htu`). Without a path a DPoP-bound
    /// token cannot be checked, and is refused.
    pub async fn authenticate_at(
        &self,
        auth: &Auth,
        method: &Method,
        path: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Caller, Refusal> {
        let creds = Credentials::read(headers, &self.cookie).map_err(|e| match e {
            CredentialError::InvalidBearer => Refusal::InvalidToken,
            CredentialError::OtherScheme | CredentialError::AmbiguousCookie => {
                Refusal::Unauthenticated
            }
        })?;
        if self.refuses_cross_site(method, headers)
            || (creds.cookie.is_some()
                && csrf::is_unsafe(method)
                && !csrf::proves_same_origin(headers, &self.origins))
        {
            return Err(Refusal::CrossOrigin);
        }
        if let Some((token, proof)) = creds.dpop {
            let (Some(proof), Some(url)) = (proof, path.and_then(|p| self.request_url(headers, p)))
            else {
                return Err(Refusal::InvalidDpop(None));
            };
            return match auth
                .authenticate_dpop(token, proof, method.as_str(), &url)
                .await
            {
                Ok(who) => Ok(Caller {
                    who,
                    renewed_cookie: None,
                }),
                Err(AuthError::Unauthenticated) => Err(Refusal::InvalidDpop(None)),
                Err(AuthError::DpopProof(e)) => Err(Refusal::InvalidDpop(Some(e))),
                Err(e) => Err(Refusal::Failed(e)),
            };
        }
        if let Some(token) = creds.bearer {
            return match auth.authenticate_bearer(token).await {
                Ok(who) => Ok(Caller {
                    who,
                    renewed_cookie: None,
                }),
                Err(AuthError::Unauthenticated) => Err(Refusal::InvalidToken),
                Err(e) => Err(Refusal::Failed(e)),
            };
        }
        let value = creds.cookie.ok_or(Refusal::Unauthenticated)?;
        let who = auth.authenticate_cookie(value).await.map_err(refused)?;
        auth.check_binding(&who, || super::bound_cookie(headers, &self.cookie))
            .map_err(|e| binding_refused(auth, &who, e))?;
        let renewed_cookie = if holds_jwt(value) && needs_renewal(value, auth.now()) {
            let (jwt, _) = auth
                .mint_access_token(&who.user, &who.session)
                .map_err(Refusal::Failed)?;
            Some(self.cookie.for_session(&jwt, &who.session, auth.now()))
        } else {
            None
        };
        Ok(Caller {
            who,
            renewed_cookie,
        })
    }

    /// The session of a browser's signed-in cookies, held to its device binding like any other
    /// cookie request (for pages anyone may see, which only ask whether someone is signed in).
    pub async fn browser_session(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
    ) -> Result<Authenticated, Refusal> {
        let value = self
            .session_cookie(headers)
            .ok_or(Refusal::Unauthenticated)?;
        let who = auth.authenticate_cookie(value).await.map_err(refused)?;
        auth.check_binding(&who, || super::bound_cookie(headers, &self.cookie))
            .map_err(|e| binding_refused(auth, &who, e))?;
        Ok(who)
    }

    /// The session a DBSC registration or refresh is for: the session cookie alone (the bound
    /// cookie is what these renew), refused if a browser marks the request cross-site. Their
    /// proofs answer challenges only this site gave out, which is what a same-origin check
    /// would otherwise prove.
    pub async fn session_to_bind(
        &self,
        auth: &Auth,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Authenticated, Refusal> {
        if self.refuses_cross_site(method, headers) {
            return Err(Refusal::CrossOrigin);
        }
        let value = session_cookie(headers, &self.cookie)
            .map_err(|_| Refusal::Unauthenticated)?
            .ok_or(Refusal::Unauthenticated)?;
        auth.authenticate_cookie(value).await.map_err(refused)
    }

    /// The `Set-Cookie` value that carries a session in the form the client already keeps: an
    /// access JWT when its session cookie held one, else the opaque token.
    pub fn cookie_like_before(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
        started: &crate::LoginOutcome,
    ) -> Result<String, AuthError> {
        let value = if self.session_cookie(headers).is_some_and(holds_jwt) {
            auth.mint_access_token(&started.user, &started.session)?.0
        } else {
            started.token.expose().to_string()
        };
        Ok(self
            .cookie
            .for_session(&value, &started.session, auth.now()))
    }
}

/// A refusal by [`Auth::check_binding`], with a bound session's refresh challenge.
fn binding_refused(auth: &Auth, who: &Authenticated, e: AuthError) -> Refusal {
    match e {
        AuthError::DeviceBinding { session, bound } => Refusal::DeviceBinding {
            session,
            bound,
            challenge: bound
                .then(|| auth.dbsc_challenge_header(&who.session))
                .flatten(),
        },
        e => refused(e),
    }
}

fn refused(e: AuthError) -> Refusal {
    match e {
        AuthError::Unauthenticated => Refusal::Unauthenticated,
        e => Refusal::Failed(e),
    }
}

/// Whether a JWT cookie should be replaced: past half of its lifetime.
fn needs_renewal(token: &str, now: OffsetDateTime) -> bool {
    // The token was verified just before; only its times are read here.
    let Ok((_, payload)) = crate::jwt::insecure_decode_without_verifying(token) else {
        return false;
    };
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) => now.unix_timestamp() >= iat + (exp - iat) / 2,
        _ => true,
    }
}
