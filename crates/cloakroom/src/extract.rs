//! cloakroom for axum services (feature `axum`): a layer that names the verifier, and
//! extractors that demand a signed-in caller ([`Authenticated`]) or one with a role
//! ([`RequireRole`]). Two modes:
//!
//! - **embedded** (feature `engine`): the service runs the cloakroom engine on its own database
//!   and reads every request by the server's own rules ([`crate::web`]): the same credentials,
//!   the same cross-site checks, the same error envelope;
//! - **remote** (feature `remote`): the service verifies cloakroom's access JWTs from the JWKS
//!   and follows revocations ([`RemoteVerifier`](crate::remote::RemoteVerifier)), with no
//!   request per verification.
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::extract::{Authenticated, RequireRole, RoleName, Verifier};
//!
//! struct Admin;
//! impl RoleName for Admin {
//!     const NAME: &'static str = "admin";
//! }
//!
//! async fn me(Authenticated(who): Authenticated) -> String {
//!     format!("hello {}", who.user_id)
//! }
//!
//! async fn admin(RequireRole(who, ..): RequireRole<Admin>) -> String {
//!     format!("welcome, administrator {}", who.user_id)
//! }
//!
//! fn app(verifier: Verifier) -> Router {
//!     Router::new()
//!         .route("/me", get(me))
//!         .route("/admin", get(admin))
//!         .layer(verifier.layer())
//! }
//! ```

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::web::error_response;
#[cfg(feature = "engine")]
use crate::web::{Refusal, RequestRules};
#[cfg(feature = "engine")]
use crate::{Auth, AuthError};

/// Who is calling, as either mode knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub user_id: String,
    /// The session id.
    pub session_id: String,
    /// The user's roles.
    pub roles: Vec<String>,
    /// The email, when known (embedded mode; access tokens do not carry it).
    pub email: Option<String>,
    /// How the user proved who they are (`acr` follows from it).
    pub amr: crate::Amr,
    /// When (seconds since the epoch).
    pub auth_time: i64,
}

impl Identity {
    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// How requests are checked.
#[derive(Clone)]
pub enum Verifier {
    /// The engine in this process, reading requests by the same [`RequestRules`] as the
    /// cloakroom server: the same credentials, the same cross-site checks (feature `engine`).
    #[cfg(feature = "engine")]
    Embedded {
        /// The engine.
        auth: Arc<Auth>,
        /// The session cookie and the origins that count as this app's.
        rules: RequestRules,
    },
    /// Access tokens verified from the JWKS.
    #[cfg(feature = "remote")]
    Remote(Arc<crate::remote::RemoteVerifier>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "engine")]
            Self::Embedded { .. } => f.write_str("Verifier::Embedded"),
            #[cfg(feature = "remote")]
            Self::Remote(_) => f.write_str("Verifier::Remote"),
        }
    }
}

impl Verifier {
    /// The layer that makes this verifier available to the extractors (and sets a renewed JWT
    /// cookie on the response, in embedded mode).
    pub fn layer(self) -> VerifierLayer {
        VerifierLayer(Arc::new(self))
    }

    /// Checks a request's credentials. Embedded: the bearer token, else the session cookie;
    /// remote: the bearer token.
    pub async fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Identity, Rejection> {
        self.check_renewing(method, None, headers)
            .await
            .map(|(id, _)| id)
    }

    /// [`Verifier::check`] for a request to `path`, which a DPoP-bound token's proof must name
    /// (without a path such a token is refused).
    async fn check_renewing(
        &self,
        method: &Method,
        path: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(Identity, Option<String>), Rejection> {
        match self {
            #[cfg(feature = "engine")]
            Self::Embedded { auth, rules } => {
                let caller = rules
                    .authenticate_at(auth, method, path, headers)
                    .await
                    .map_err(Rejection::from)?;
                let who = caller.who;
                if auth.second_factor_due(&who) {
                    return Err(Rejection::SecondFactorRequired);
                }
                if auth.verification_due(&who) {
                    return Err(Rejection::EmailUnverified);
                }
                let id = Identity {
                    user_id: who.user.id.to_string(),
                    session_id: who.session.id.to_string(),
                    roles: who
                        .user
                        .roles
                        .iter()
                        .map(|r| r.as_str().to_string())
                        .collect(),
                    email: Some(who.user.email.as_str().to_string()),
                    amr: who.session.amr,
                    auth_time: who.session.authenticated_at.unix_timestamp(),
                };
                Ok((id, caller.renewed_cookie))
            }
            #[cfg(feature = "remote")]
            Self::Remote(remote) => {
                // Only `Authorization` counts here; cookies are cloakroom's own.
                let creds = crate::web::Credentials::read(headers, &crate::CookiePolicy::SECURE)
                    .map_err(|_| Rejection::Unauthenticated { bearer: true })?;
                let verified = match (creds.dpop, creds.bearer) {
                    (Some((token, Some(proof))), _) => match path {
                        Some(path) => {
                            remote
                                .verify_dpop(token, proof, method.as_str(), path)
                                .await
                        }
                        None => return Err(Rejection::Unauthenticated { bearer: true }),
                    },
                    (Some((_, None)), _) => {
                        return Err(Rejection::Unauthenticated { bearer: true })
                    }
                    (None, Some(token)) => remote.verify(token).await,
                    (None, None) => return Err(Rejection::Unauthenticated { bearer: false }),
                };
                match verified {
                    Ok(id) => Ok((
                        Identity {
                            user_id: id.user_id,
                            session_id: id.session_id,
                            roles: id.roles,
                            email: None,
                            // Names this version does not know prove nothing here.
                            amr: id
                                .claims
                                .amr
                                .iter()
                                .filter_map(|m| crate::Amr::from_names([m.as_str()]).ok())
                                .fold(crate::Amr::empty(), crate::Amr::with),
                            // A token without `auth_time` (minted before it existed) meets
                            // no `max_age`.
                            auth_time: id.claims.auth_time.unwrap_or(0),
                        },
                        None,
                    )),
                    Err(crate::remote::RemoteError::Unavailable)
                    | Err(crate::remote::RemoteError::Keys(_)) => Err(Rejection::Unavailable),
                    Err(_) => Err(Rejection::Unauthenticated { bearer: true }),
                }
            }
        }
    }
}

/// Makes a [`Verifier`] available to the extractors of the routes it wraps.
#[derive(Clone, Debug)]
pub struct VerifierLayer(Arc<Verifier>);

impl<S> tower_layer::Layer<S> for VerifierLayer {
    type Service = VerifierService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifierService {
            inner,
            verifier: self.0.clone(),
        }
    }
}

/// The service of [`VerifierLayer`].
#[derive(Clone, Debug)]
pub struct VerifierService<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

/// Where an extractor leaves a renewed JWT cookie for the response.
#[derive(Debug, Clone, Default)]
struct RenewalSlot(Arc<Mutex<Option<String>>>);

impl<S> tower_service::Service<Request> for VerifierService<S>
where
    S: tower_service::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let slot = RenewalSlot::default();
        req.extensions_mut().insert(self.verifier.clone());
        req.extensions_mut().insert(slot.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            let renewed = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(v) = renewed.and_then(|c| HeaderValue::from_str(&c).ok()) {
                if !res.headers().contains_key(header::SET_COOKIE) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            Ok(res)
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No valid credentials: 401 (with the RFC 6750 challenge when a bearer token was sent).
    Unauthenticated {
        /// A bearer token was sent and refused.
        bearer: bool,
    },
    /// Signed in without the role: 403.
    Forbidden,
    /// Signed in, but the deployment requires a second factor of this user and the session has
    /// not proven one: 403.
    SecondFactorRequired,
    /// Signed in, but the deployment requires a confirmed address and this account's is not:
    /// 403.
    EmailUnverified,
    /// Signed in, but not strongly or recently enough: 401 with RFC 9470's challenge.
    InsufficientAuthentication(crate::Requirement),
    /// A device-bound cookie session without a current bound cookie, or an unbound one where
    /// binding is required (DBSC): 401 `session_binding_required`.
    DeviceBinding,
    /// A cookie-authenticated unsafe request from another site: 403.
    CrossSite,
    /// Credentials cannot be checked right now: 503.
    Unavailable,
    /// The layer is missing: 500 (a programming error).
    NoVerifier,
    /// Checking failed for a reason of ours (logged): 500.
    Internal,
}

#[cfg(feature = "engine")]
impl From<Refusal> for Rejection {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::CrossOrigin => Self::CrossSite,
            Refusal::DeviceBinding { .. } => Self::DeviceBinding,
            Refusal::Unauthenticated => Self::Unauthenticated { bearer: false },
            Refusal::InvalidToken | Refusal::InvalidDpop(_) => {
                Self::Unauthenticated { bearer: true }
            }
            Refusal::Failed(AuthError::Store(_) | AuthError::Overloaded { .. }) => {
                Self::Unavailable
            }
            Refusal::Failed(e) => {
                tracing::error!(error = %e, "checking a request's credentials failed");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::Unauthenticated { bearer: false } => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "not signed in, or the session has ended",
            ),
            Self::Unauthenticated { bearer: true } => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the access token is invalid, expired or revoked",
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this account does not have the role this resource needs",
            ),
            Self::SecondFactorRequired => (
                StatusCode::FORBIDDEN,
                "second_factor_required",
                "this account must add a second factor first",
            ),
            Self::EmailUnverified => (
                StatusCode::FORBIDDEN,
                "email_unverified",
                "this account must confirm its email address first",
            ),
            Self::InsufficientAuthentication(_) => (
                StatusCode::UNAUTHORIZED,
                "insufficient_user_authentication",
                "a stronger or more recent authentication is required",
            ),
            Self::DeviceBinding => (
                StatusCode::UNAUTHORIZED,
                "session_binding_required",
                "this session must prove it is on the device it was bound to",
            ),
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "cross_origin_request",
                "this request did not come from this site",
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "sign-in cannot be checked right now; try again shortly",
            ),
            Self::NoVerifier | Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side",
            ),
        };
        let mut res = error_response(status, code, message);
        if self == (Self::Unauthenticated { bearer: true }) {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Self::InsufficientAuthentication(requirement) = self {
            if let Ok(v) = HeaderValue::from_str(&requirement.challenge()) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// A signed-in caller; refuses the request (401) otherwise.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        if let Some(who) = parts.extensions.get::<Identity>() {
            return Ok(Self(who.clone()));
        }
        let verifier = parts
            .extensions
            .get::<Arc<Verifier>>()
            .cloned()
            .ok_or(Rejection::NoVerifier)?;
        let (who, renewed) = verifier
            .check_renewing(&parts.method, Some(parts.uri.path()), &parts.headers)
            .await?;
        if let (Some(cookie), Some(slot)) = (renewed, parts.extensions.get::<RenewalSlot>()) {
            *slot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(cookie);
        }
        parts.extensions.insert(who.clone());
        Ok(Self(who))
    }
}

/// A role, named at compile time, for [`RequireRole`].
pub trait RoleName: Send + Sync + 'static {
    /// The role's name.
    const NAME: &'static str;
}

/// A signed-in caller with the role `R`: 401 without a session, 403 without the role.
#[derive(Debug, Clone)]
pub struct RequireRole<R: RoleName>(pub Identity, pub PhantomData<R>);

impl<S: Send + Sync, R: RoleName> FromRequestParts<S> for RequireRole<R> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let Authenticated(who) = Authenticated::from_request_parts(parts, state).await?;
        if !who.has_role(R::NAME) {
            return Err(Rejection::Forbidden);
        }
        Ok(Self(who, PhantomData))
    }
}

/// A step-up requirement named at compile time, for [`RequireStepUp`].
pub trait StepUp: Send + Sync + 'static {
    /// The lowest acceptable level.
    const AAL: crate::Acr;
    /// The oldest acceptable login, in seconds; `None` for any age.
    const MAX_AGE: Option<i64>;
}

/// A signed-in caller whose login meets `P` (RFC 9470): 401 without a session, 401 with
/// `WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values=…, max_age=…`
/// when the login is too weak or too old, so the client can step up and retry.
#[derive(Debug, Clone)]
pub struct RequireStepUp<P: StepUp>(pub Identity, pub PhantomData<P>);

impl<S: Send + Sync, P: StepUp> FromRequestParts<S> for RequireStepUp<P> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let Authenticated(who) = Authenticated::from_request_parts(parts, state).await?;
        let requirement = crate::Requirement {
            aal: P::AAL,
            max_age: P::MAX_AGE,
        };
        let now = match parts.extensions.get::<Arc<Verifier>>().map(|v| &**v) {
            #[cfg(feature = "engine")]
            Some(Verifier::Embedded { auth, .. }) => auth.now().unix_timestamp(),
            _ => crate::Clock::now_secs(&crate::SystemClock).unix_timestamp(),
        };
        if !requirement.met_by(who.amr, who.auth_time, now) {
            return Err(Rejection::InsufficientAuthentication(requirement));
        }
        Ok(Self(who, PhantomData))
    }
}
