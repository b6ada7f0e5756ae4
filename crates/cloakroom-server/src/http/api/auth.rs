//! `/auth/signup`, `/auth/login` (and its second step, `/auth/login/mfa`), `/auth/logout`,
//! `/auth/logout-all`, `/auth/whoami`, `/auth/password` and `/auth/reauthenticate`.

use crate::http::routes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{AuthError, LoginOutcome, LoginRequest, MfaLogin, Reauth, Transport};
use serde::Deserialize;
use serde_json::json;

use super::views::{SessionView, UserView, WhoAmI};
use crate::http::error::ApiError;
use crate::http::extract::{held_token, ApiJson, Client, CurrentSession, OptionalJson};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::SIGNUP, post(signup))
        .route(routes::LOGIN, post(login))
        .route(routes::LOGIN_MFA, post(login_mfa))
        .route(routes::LOGOUT, post(logout))
        .route(routes::LOGOUT_ALL, post(logout_all))
        .route(routes::WHOAMI, get(whoami))
        .route(routes::PASSWORD, post(change_password))
        .route(routes::REAUTHENTICATE, post(reauthenticate))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct SignupBody {
    email: String,
    password: String,
}

async fn signup(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<Response, ApiError> {
    let user = state
        .auth
        .signup(&body.email, &body.password, &client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": UserView::from(&user) })),
    )
        .into_response())
}

/// What the login cookie carries.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) enum CookieKind {
    /// The opaque session token.
    #[default]
    Session,
    /// A short access JWT bound to the session.
    Jwt,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct LoginBody {
    email: String,
    password: String,
    #[serde(default)]
    remember: bool,
    #[serde(default)]
    cookie: CookieKind,
}

async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let current_token = held_token(&headers, &state);
    let outcome = state
        .auth
        .login(LoginRequest {
            email: body.email,
            password: body.password,
            remember: body.remember,
            transport: Transport::Cookie,
            client,
            current_token,
            dpop_jkt: None,
        })
        .await;
    match outcome {
        Ok(outcome) => logged_in(&state, outcome, body.cookie).await,
        Err(AuthError::MfaRequired { mfa_token, methods }) => {
            let body = json!({
                "mfa_required": true,
                "mfa_token": mfa_token.expose(),
                "methods": methods,
            });
            let mut res = (StatusCode::ACCEPTED, Json(body)).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct LoginMfaBody {
    mfa_token: String,
    code: Option<String>,
    recovery_code: Option<String>,
    #[cfg_attr(
        test,
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    credential: Option<serde_json::Value>,
    #[serde(default)]
    cookie: CookieKind,
}

/// `POST /auth/login/mfa`: the second step of a login that answered 202.
async fn login_mfa(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginMfaBody>,
) -> Result<Response, ApiError> {
    let proof = super::factors::proof(body.code, body.recovery_code, body.credential)?.ok_or_else(
        || ApiError::bad_request("invalid_request", "send code, recovery_code or credential"),
    )?;
    let current_token = held_token(&headers, &state);
    let outcome = state
        .auth
        .login_mfa(MfaLogin {
            mfa_token: body.mfa_token,
            proof,
            client,
            current_token,
            dpop_jkt: None,
        })
        .await?;
    logged_in(&state, outcome, body.cookie).await
}

/// The answer to a completed login: `{user, session}` and the session cookie.
pub(crate) async fn logged_in(
    state: &AppState,
    outcome: LoginOutcome,
    kind: CookieKind,
) -> Result<Response, ApiError> {
    let value = match kind {
        CookieKind::Session => outcome.token.expose().to_string(),
        CookieKind::Jwt => {
            let (jwt, _) = state
                .auth
                .mint_access_token(&outcome.user, &outcome.session)?;
            // Browsers ignore a cookie whose name and value exceed 4096 bytes (rfc6265bis).
            if state.rules.cookie().name().len() + 1 + jwt.len() > 4096 {
                state.auth.admin_revoke(outcome.session.id).await?;
                return Err(ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "cookie_too_large",
                    "the access token is too large for a cookie; use the session cookie",
                ));
            }
            jwt
        }
    };
    let cookie = state
        .rules
        .cookie()
        .for_session(&value, &outcome.session, state.auth.now());
    let expires = outcome.session.expires_at(outcome.session.last_seen_at);
    let body = json!({
        "user": UserView::from(&outcome.user),
        "session": SessionView::new(&outcome.session, expires),
    });
    let mut res = with_cookie(Json(body).into_response(), &cookie);
    if let Some(offer) = super::dbsc::offer(state, &outcome.session) {
        res.headers_mut()
            .insert(cloakroom::dbsc::REGISTRATION, offer);
    }
    Ok(res)
}

fn with_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A 204 that also removes the session cookie from the browser.
pub fn cleared(state: &AppState) -> Response {
    let mut res = with_cookie(
        StatusCode::NO_CONTENT.into_response(),
        &state.rules.cookie().clear(),
    );
    res.headers_mut()
        .insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    res
}

async fn logout(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
) -> Result<Response, ApiError> {
    state.auth.logout(&who).await?;
    Ok(cleared(&state))
}

/// The optional proof of a fresh login for operations that need one (ending other sessions,
/// changing factors): the current password, or a second factor.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ReauthBody {
    current_password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    #[cfg_attr(
        test,
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    credential: Option<serde_json::Value>,
}

impl ReauthBody {
    /// A proof from its parts.
    pub fn new(
        current_password: Option<String>,
        code: Option<String>,
        recovery_code: Option<String>,
        credential: Option<serde_json::Value>,
    ) -> Self {
        Self {
            current_password,
            code,
            recovery_code,
            credential,
        }
    }

    /// As the engine's [`Reauth`]; more than one proof is refused.
    pub fn into_reauth(body: Option<Self>) -> Result<Reauth, ApiError> {
        let Some(b) = body else {
            return Ok(Reauth::None);
        };
        let second = super::factors::proof(b.code, b.recovery_code, b.credential)?;
        match (b.current_password, second) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "invalid_request",
                "send current_password or a second factor, not both",
            )),
            (Some(p), None) => Ok(Reauth::Password(p)),
            (None, Some(f)) => Ok(Reauth::SecondFactor(f)),
            (None, None) => Ok(Reauth::None),
        }
    }
}

async fn logout_all(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    OptionalJson(body): OptionalJson<ReauthBody>,
) -> Result<Response, ApiError> {
    state
        .auth
        .logout_all(&who, ReauthBody::into_reauth(body)?)
        .await?;
    Ok(cleared(&state))
}

pub(crate) async fn whoami(CurrentSession(who): CurrentSession) -> Response {
    let mut res = Response::new(axum::body::Body::from(WhoAmI::json(&who)));
    let h = res.headers_mut();
    // Room for every header the answer will carry (see `guard`), allocated once.
    h.reserve(10);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct PasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    CurrentSession(who): CurrentSession,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<Response, ApiError> {
    let changed = state
        .auth
        .change_password(&who, &body.current_password, &body.new_password)
        .await?;
    continued(&state, &headers, changed)
}

/// `POST /auth/reauthenticate`: at least one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct ReauthenticateBody {
    password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    #[cfg_attr(
        test,
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    credential: Option<serde_json::Value>,
}

/// Step-up: the caller proves who they are again and continues in a new session whose
/// `auth_time` is now (and `acr` `aal2` when a second factor was used).
async fn reauthenticate(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    CurrentSession(who): CurrentSession,
    ApiJson(body): ApiJson<ReauthenticateBody>,
) -> Result<Response, ApiError> {
    let second = super::factors::proof(body.code, body.recovery_code, body.credential)?;
    if body.password.is_none() && second.is_none() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "send password, code or recovery_code",
        ));
    }
    let stepped = state
        .auth
        .reauthenticate(&who, body.password.as_deref(), second, &client)
        .await?;
    continued(&state, &headers, stepped)
}

/// The answer when the caller continues in a new session (a password change, a step-up): a
/// token session gets a new token pair (200: its old refresh and access tokens are void), a
/// cookie session a new cookie of the kind it had (204).
pub(crate) fn continued(
    state: &AppState,
    headers: &HeaderMap,
    changed: LoginOutcome,
) -> Result<Response, ApiError> {
    if changed.session.transport == Transport::Token {
        let (access_token, expires_in) = state
            .auth
            .mint_access_token(&changed.user, &changed.session)?;
        return Ok(super::token::token_response(&cloakroom::TokenPair {
            access_token,
            expires_in,
            refresh_token: changed.token,
            session: changed.session,
            user: changed.user,
        }));
    }
    let cookie = renewed_cookie(state, headers, &changed)?;
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), &cookie))
}

/// The session cookie for the session a password change started: its token, or an access JWT
/// for it when the client kept a JWT cookie; persistent if the session is.
pub fn renewed_cookie(
    state: &AppState,
    headers: &HeaderMap,
    changed: &cloakroom::LoginOutcome,
) -> Result<String, ApiError> {
    Ok(state
        .rules
        .cookie_like_before(&state.auth, headers, changed)?)
}
