//! `/auth/passkeys/…`: adding a passkey (fresh authentication), and logging in with one,
//! passwordless. Options are WebAuthn's JSON, as `PublicKeyCredential.parseCreationOptionsFromJSON`
//! and `parseRequestOptionsFromJSON` take their `publicKey` member; credentials are what a
//! browser's `PublicKeyCredential.toJSON()` gives.

use crate::http::routes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{logged_in, CookieKind, ReauthBody};
use super::factors::FactorView;
use crate::http::error::ApiError;
use crate::http::extract::{held_token, ApiJson, Client, CurrentSession, OptionalJson};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::PASSKEY_REGISTER_OPTIONS, post(register_options))
        .route(routes::PASSKEY_REGISTER, post(register))
        .route(routes::PASSKEY_LOGIN_OPTIONS, post(login_options))
        .route(routes::PASSKEY_LOGIN, post(login))
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn register_options(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    OptionalJson(body): OptionalJson<ReauthBody>,
) -> Result<Response, ApiError> {
    let options = state
        .auth
        .passkey_register_options(&who, ReauthBody::into_reauth(body)?)
        .await?;
    Ok(no_store(Json(options).into_response()))
}

/// `POST /auth/passkeys/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct RegisterBody {
    #[cfg_attr(test, schemars(with = "serde_json::Map<String, serde_json::Value>"))]
    credential: Value,
    name: Option<String>,
}

async fn register(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let name = super::factors::factor_name(body.name)?;
    let factor = state
        .auth
        .register_passkey(&who, &body.credential, name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "factor": FactorView::from(&factor) })),
    )
        .into_response())
}

/// `POST /auth/passkeys/login/options`: for the second step of a login, its `mfa_token`;
/// `conditional` for autofill on a login form.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct LoginOptionsBody {
    mfa_token: Option<String>,
    #[serde(default)]
    conditional: bool,
}

async fn login_options(
    State(state): State<AppState>,
    Client(client): Client,
    OptionalJson(body): OptionalJson<LoginOptionsBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let options = state
        .auth
        .passkey_login_options(body.mfa_token.as_deref(), body.conditional, &client)
        .await?;
    Ok(no_store(Json(options).into_response()))
}

/// `POST /auth/passkeys/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct LoginBody {
    #[cfg_attr(test, schemars(with = "serde_json::Map<String, serde_json::Value>"))]
    credential: Value,
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
        .login_passkey(&body.credential, body.remember, client, current_token)
        .await?;
    logged_in(&state, outcome, body.cookie).await
}
