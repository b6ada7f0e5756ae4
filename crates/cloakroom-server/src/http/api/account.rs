//! An account's life over mail: confirming the address (`/auth/email/verify…`), moving to
//! another (`/auth/email/change…`) and a forgotten password (`/auth/password/forgot`,
//! `/auth/password/reset`). The links' tokens are checked by
//! the engine; nothing here says whether an address has an account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::ReauthBody;
use super::events::EventView;
use super::factors::{no_store, FactorView};
use super::views::{SessionListEntry, UserView};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Client, CurrentSession, OptionalJson};
use crate::http::{routes, AppState};

/// Security events an export holds at most (the newest).
const EXPORTED_EVENTS: usize = 10_000;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::EMAIL_VERIFY_REQUEST, post(request_verification))
        .route(routes::EMAIL_VERIFY, post(verify))
        .route(routes::EMAIL_CHANGE, post(change_email))
        .route(routes::EMAIL_CHANGE_CONFIRM, post(confirm_change))
        .route(routes::EMAIL_CHANGE_CANCEL, post(cancel_change))
        .route(routes::PASSWORD_FORGOT, post(forgot))
        .route(routes::PASSWORD_RESET, post(reset))
        .route(routes::ACCOUNT, delete(delete_account))
        .route(routes::ACCOUNT_EXPORT, get(export))
}

/// `POST /auth/email/verify`: the token of the link.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TokenBody {
    token: String,
}

/// `POST /auth/email/change`: the new address, and the proof of a fresh login where the
/// login is not recent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct EmailChangeBody {
    new_email: String,
    current_password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    #[cfg_attr(
        test,
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    credential: Option<serde_json::Value>,
}

/// `POST /auth/password/forgot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct ForgotBody {
    email: String,
}

/// `POST /auth/password/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct ResetBody {
    token: String,
    new_password: String,
}

async fn request_verification(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
) -> Result<Response, ApiError> {
    state.auth.request_email_verification(&who).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn verify(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    state.auth.verify_email(&body.token, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn change_email(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    ApiJson(body): ApiJson<EmailChangeBody>,
) -> Result<Response, ApiError> {
    let reauth = ReauthBody::into_reauth(Some(ReauthBody::new(
        body.current_password,
        body.code,
        body.recovery_code,
        body.credential,
    )))?;
    state
        .auth
        .request_email_change(&who, &body.new_email, reauth)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn confirm_change(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    state
        .auth
        .confirm_email_change(&body.token, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn cancel_change(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    state.auth.cancel_email_change(&body.token, &client).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn forgot(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<ForgotBody>,
) -> Result<Response, ApiError> {
    state.auth.forgot_password(&body.email, &client).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn reset(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<ResetBody>,
) -> Result<Response, ApiError> {
    state
        .auth
        .reset_password(&body.token, &body.new_password, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_account(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    OptionalJson(body): OptionalJson<ReauthBody>,
) -> Result<Response, ApiError> {
    state
        .auth
        .delete_account(&who, ReauthBody::into_reauth(body)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller's own data: the account, its sessions, its factors (never a secret) and its
/// security events.
async fn export(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
) -> Result<Response, ApiError> {
    let sessions: Vec<SessionListEntry> = state
        .auth
        .sessions(&who)
        .await?
        .into_iter()
        .map(|(s, seen)| SessionListEntry::of(s, seen, who.session.id))
        .collect();
    let factors: Vec<FactorView> = state
        .auth
        .factors(&who)
        .await?
        .iter()
        .map(FactorView::from)
        .collect();
    let events: Vec<EventView> = state
        .auth
        .security_events(&who, EXPORTED_EVENTS)
        .await?
        .iter()
        .map(EventView::from)
        .collect();
    let mut user = json!(UserView::from(&*who.user));
    user["created_at"] = json!(who
        .user
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default());
    let body = json!({
        "user": user,
        "sessions": sessions,
        "factors": factors,
        "events": events,
    });
    let mut res = no_store(Json(body).into_response());
    res.headers_mut().insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"cloakroom-account.json\""),
    );
    Ok(res)
}
