//! `/auth/factors`: the caller's second factors. Listing needs a session; adding an
//! authenticator app, making recovery codes and removing a factor need fresh authentication (a
//! recent login, or the current password or a second factor in the body); confirming an app
//! needs a code from it.

use crate::http::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cloakroom::factor::{Factor, FactorId};
use cloakroom::SecondFactor;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::auth::ReauthBody;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Client, CurrentSession, OptionalJson};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::FACTORS, get(list))
        .route(routes::FACTOR, delete(remove))
        .route(routes::TOTP_FACTORS, post(enroll_totp))
        .route(routes::TOTP_CONFIRM, post(confirm_totp))
        .route(routes::RECOVERY_CODES, post(recovery_codes))
}

/// A second factor of the request: an authenticator app's `code`, a `recovery_code` or a
/// passkey's `credential`, at most one of them.
pub(crate) fn proof(
    code: Option<String>,
    recovery_code: Option<String>,
    credential: Option<serde_json::Value>,
) -> Result<Option<SecondFactor>, ApiError> {
    match (code, recovery_code, credential) {
        (Some(c), None, None) => Ok(Some(SecondFactor::Code(c))),
        (None, Some(r), None) => Ok(Some(SecondFactor::RecoveryCode(r))),
        (None, None, Some(c)) => Ok(Some(SecondFactor::Passkey(c))),
        (None, None, None) => Ok(None),
        _ => Err(ApiError::bad_request(
            "invalid_request",
            "send one of code, recovery_code and credential",
        )),
    }
}

/// A factor as the API shows it (never its secret).
#[derive(Debug, Serialize)]
pub struct FactorView {
    id: String,
    kind: &'static str,
    name: Option<String>,
    /// False for an authenticator app that no code has confirmed yet (it does not count).
    confirmed: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
}

impl From<&Factor> for FactorView {
    fn from(f: &Factor) -> Self {
        Self {
            id: f.id.to_string(),
            kind: f.kind.as_str(),
            name: f.name.clone(),
            confirmed: f.confirmed,
            created_at: f.created_at,
            last_used_at: f.last_used_at,
        }
    }
}

/// The name a user gives a factor: 1 to 64 characters, not blank, no control characters.
pub(crate) fn factor_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    match name {
        Some(n) if n.trim().is_empty() || n.chars().count() > 64 => Err(ApiError::bad_request(
            "invalid_name",
            "a factor's name is 1 to 64 characters",
        )),
        Some(n) if n.chars().any(char::is_control) => Err(ApiError::bad_request(
            "invalid_name",
            "a factor's name cannot hold control characters",
        )),
        other => Ok(other.map(|n| n.trim().to_string())),
    }
}

fn factor_id(raw: &str) -> Result<FactorId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

pub(crate) fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}

async fn list(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
) -> Result<Response, ApiError> {
    let factors = state.auth.factors(&who).await?;
    let views: Vec<FactorView> = factors.iter().map(FactorView::from).collect();
    Ok(no_store(Json(json!({ "factors": views })).into_response()))
}

/// `POST /auth/factors/totp`: a name for the app, and the proof of a fresh login.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TotpBody {
    name: Option<String>,
    current_password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    #[cfg_attr(
        test,
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    credential: Option<serde_json::Value>,
}

async fn enroll_totp(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    OptionalJson(body): OptionalJson<TotpBody>,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let name = factor_name(body.name)?;
    let reauth = ReauthBody::into_reauth(Some(ReauthBody::new(
        body.current_password,
        body.code,
        body.recovery_code,
        body.credential,
    )))?;
    let enrolment = state.auth.enroll_totp(&who, name, reauth).await?;
    Ok(no_store(
        Json(json!({
            "id": enrolment.factor.id.to_string(),
            "secret": enrolment.secret.expose(),
            "otpauth_uri": enrolment.otpauth_uri.expose(),
        }))
        .into_response(),
    ))
}

/// `POST /auth/factors/totp/{id}/confirm`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct ConfirmBody {
    code: String,
}

/// The code proves the app, so the caller continues in a new session that counts it: a new
/// cookie (204), or a new token pair (200).
async fn confirm_totp(
    State(state): State<AppState>,
    Client(client): Client,
    headers: axum::http::HeaderMap,
    CurrentSession(who): CurrentSession,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConfirmBody>,
) -> Result<Response, ApiError> {
    let id = factor_id(&id)?;
    let confirmed = state
        .auth
        .confirm_totp(&who, id, &body.code, &client)
        .await?;
    super::auth::continued(&state, &headers, confirmed)
}

async fn recovery_codes(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    OptionalJson(body): OptionalJson<ReauthBody>,
) -> Result<Response, ApiError> {
    let codes = state
        .auth
        .new_recovery_codes(&who, ReauthBody::into_reauth(body)?)
        .await?;
    Ok(no_store(Json(json!({ "codes": codes })).into_response()))
}

async fn remove(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ReauthBody>,
) -> Result<Response, ApiError> {
    let id = factor_id(&id)?;
    state
        .auth
        .delete_factor(&who, id, ReauthBody::into_reauth(body)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
