//! `GET /auth/sessions` and `DELETE /auth/sessions/{id}`: the caller's own sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use cloakroom::SessionId;
use serde_json::json;

use super::auth::{cleared, ReauthBody};
use super::views::SessionListEntry;
use crate::http::error::ApiError;
use crate::http::extract::{CurrentSession, OptionalJson};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/sessions", get(list))
        .route("/auth/sessions/{id}", delete(end))
}

async fn list(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sessions: Vec<SessionListEntry> = state
        .auth
        .sessions(&who)
        .await?
        .into_iter()
        .map(|(s, seen)| SessionListEntry {
            id: s.id.to_string(),
            transport: s.transport.as_str(),
            created_at: s.created_at,
            last_seen_at: seen,
            expires_at: s.expires_at(seen),
            current: s.id == who.session.id,
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

async fn end(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ReauthBody>,
) -> Result<Response, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::not_found())?;
    state
        .auth
        .end_session(&who, id, ReauthBody::into_reauth(body))
        .await?;
    if id == who.session.id {
        Ok(cleared(&state))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}
