//! cloakroom for axum services (feature `axum`): a layer that names the verifier, and
//! extractors that demand a signed-in caller ([`Authenticated`]) or one with a role
//! ([`RequireRole`]). Two modes:
//!
//! - **embedded**: the service runs the cloakroom engine ([`Auth`]) on its own database and
//!   recognises cloakroom's session cookie and bearer tokens as cloakroom itself does;
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

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::marker::PhantomData;
use std::sync::Arc;

use crate::{Auth, AuthError, CookiePolicy, Presented};

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
    /// The engine in this process; `cookie` names the session cookie.
    Embedded {
        /// The engine.
        auth: Arc<Auth>,
        /// The session cookie's policy.
        cookie: CookiePolicy,
    },
    /// Access tokens verified from the JWKS.
    #[cfg(feature = "remote")]
    Remote(Arc<crate::remote::RemoteVerifier>),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded { .. } => f.write_str("Verifier::Embedded"),
            #[cfg(feature = "remote")]
            Self::Remote(_) => f.write_str("Verifier::Remote"),
        }
    }
}

impl Verifier {
    /// The layer that makes this verifier available to the extractors.
    pub fn layer(self) -> axum::Extension<Arc<Verifier>> {
        axum::Extension(Arc::new(self))
    }

    /// Checks a request's credentials: the bearer token, else (embedded) the session cookie.
    pub async fn check(&self, method: &Method, headers: &HeaderMap) -> Result<Identity, Rejection> {
        let bearer = bearer(headers)?;
        match self {
            Self::Embedded { auth, cookie } => {
                let who = if let Some(token) = bearer {
                    auth.authenticate_bearer(token).await
                } else {
                    let values = headers
                        .get_all(header::COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok());
                    let token = match cookie.find(values) {
                        Presented::One(t) => t.to_string(),
                        _ => return Err(Rejection::Unauthenticated { bearer: false }),
                    };
                    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
                        && looks_cross_site(headers)
                    {
                        return Err(Rejection::CrossSite);
                    }
                    if token.contains('.') {
                        auth.authenticate_jwt_cookie(&token).await
                    } else {
                        auth.authenticate(&token).await
                    }
                };
                match who {
                    Ok(who) => Ok(Identity {
                        user_id: who.user.id.to_string(),
                        session_id: who.session.id.to_string(),
                        roles: who
                            .user
                            .roles
                            .iter()
                            .map(|r| r.as_str().to_string())
                            .collect(),
                        email: Some(who.user.email.as_str().to_string()),
                    }),
                    Err(AuthError::Store(_)) => Err(Rejection::Unavailable),
                    Err(_) => Err(Rejection::Unauthenticated {
                        bearer: bearer.is_some(),
                    }),
                }
            }
            #[cfg(feature = "remote")]
            Self::Remote(remote) => {
                let token = bearer.ok_or(Rejection::Unauthenticated { bearer: false })?;
                match remote.verify(token).await {
                    Ok(id) => Ok(Identity {
                        user_id: id.user_id,
                        session_id: id.session_id,
                        roles: id.roles,
                        email: None,
                    }),
                    Err(crate::remote::RemoteError::Unavailable)
                    | Err(crate::remote::RemoteError::Keys(_)) => Err(Rejection::Unavailable),
                    Err(_) => Err(Rejection::Unauthenticated { bearer: true }),
                }
            }
        }
    }
}

/// A browser marks the request as coming from another site (`Sec-Fetch-Site`), or its `Origin`
/// is not this host's.
fn looks_cross_site(headers: &HeaderMap) -> bool {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if matches!(
        get("sec-fetch-site"),
        Some("cross-site") | Some("same-site")
    ) {
        return true;
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => url::Url::parse(origin)
            .ok()
            .and_then(|u| {
                let h = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
            })
            .is_none_or(|o| o != host),
        (Some(_), None) => true,
        _ => false,
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = Rejection::Unauthenticated { bearer: true };
    if values.next().is_some() {
        return Err(invalid);
    }
    let value = value.to_str().map_err(|_| invalid.clone())?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer")
                && !token.is_empty()
                && !token.contains(' ') =>
        {
            Ok(Some(token))
        }
        _ => Err(invalid),
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
    /// A cookie-authenticated unsafe request from another site: 403.
    CrossSite,
    /// Credentials cannot be checked right now: 503.
    Unavailable,
    /// The layer is missing: 500 (a programming error).
    NoVerifier,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::Unauthenticated { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "not signed in, or the session has ended",
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this account does not have the role this resource needs",
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
            Self::NoVerifier => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side",
            ),
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        let mut res = (status, axum::Json(body)).into_response();
        if let Self::Unauthenticated { bearer } = self {
            let challenge = if bearer {
                "Bearer error=\"invalid_token\""
            } else {
                "Bearer"
            };
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
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
        let who = verifier.check(&parts.method, &parts.headers).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_rules() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("app.example:8080"));
        assert!(!looks_cross_site(&h));
        h.insert(
            "origin",
            HeaderValue::from_static("http://app.example:8080"),
        );
        assert!(!looks_cross_site(&h));
        h.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(looks_cross_site(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(looks_cross_site(&h));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer(&h).is_err());
    }
}
