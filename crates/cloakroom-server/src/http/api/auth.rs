//! `/auth/signup`, `/auth/login`, `/auth/logout`, `/auth/logout-all`, `/auth/whoami` and
//! `/auth/password`.

use crate::http::routes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{LoginRequest, Reauth, Transport};
use serde::Deserialize;
use serde_json::json;

use super::views::{SessionView, UserView, WhoAmI};
use crate::http::error::ApiError;
use crate::http::extract::{session_cookie, ApiJson, Client, CurrentSession, OptionalJson};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::SIGNUP, post(signup))
        .route(routes::LOGIN, post(login))
        .route(routes::LOGOUT, post(logout))
        .route(routes::LOGOUT_ALL, post(logout_all))
        .route(routes::WHOAMI, get(whoami))
        .route(routes::PASSWORD, post(change_password))
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
enum CookieKind {
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
    // A session cookie the client already holds is ended by the new login; an ambiguous one
    // (two cookies of our name) is simply not honoured.
    let current_token = session_cookie(&headers, &state)
        .unwrap_or(None)
        .map(str::to_string);
    let outcome = state
        .auth
        .login(LoginRequest {
            email: body.email,
            password: body.password,
            remember: body.remember,
            transport: Transport::Cookie,
            client,
            current_token,
        })
        .await?;
    let value = match body.cookie {
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
    Ok(with_cookie(Json(body).into_response(), &cookie))
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

/// The optional proof of a fresh login for operations that end other sessions.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ReauthBody {
    current_password: Option<String>,
}

impl ReauthBody {
    /// As the engine's [`Reauth`].
    pub fn into_reauth(body: Option<Self>) -> Reauth {
        match body.and_then(|b| b.current_password) {
            Some(p) => Reauth::Password(p),
            None => Reauth::None,
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
        .logout_all(&who, ReauthBody::into_reauth(body))
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
    // A token session continues in a new one: its old refresh and access tokens are void, so
    // the client gets a new pair (200 instead of 204).
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
    let cookie = renewed_cookie(&state, &headers, &changed)?;
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
