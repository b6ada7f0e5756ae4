//! `GET /auth/sessions` and `DELETE /auth/sessions/{id}`: the caller's own sessions.

use crate::http::routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use cloakroom::SessionId;
use serde::Deserialize;
use serde_json::json;

use super::auth::{cleared, ReauthBody};
use super::views::SessionListEntry;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, CurrentSession, OptionalJson};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::SESSIONS, get(list))
        .route(routes::SESSION, delete(end))
}

/// Sessions in one answer when the client does not say how many (`?limit=`).
pub const DEFAULT_PAGE: usize = 50;
/// The most sessions in one answer.
pub const MAX_PAGE: usize = 200;

/// A page of the list: `?limit=` (1 to 200, default 50) and `?cursor=` (from the previous
/// answer's `next_cursor`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl Page {
    /// Where the page starts and how long it is, or why the query is refused.
    pub fn bounds(&self) -> Result<(usize, usize), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let start = match &self.cursor {
            None => 0,
            Some(c) => c.parse::<usize>().map_err(|_| {
                ApiError::bad_request("invalid_request", "cursor is not one this server gave")
            })?,
        };
        Ok((start, limit))
    }
}

async fn list(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (start, limit) = page.bounds()?;
    let all = state.auth.sessions(&who).await?;
    let total = all.len();
    let sessions: Vec<SessionListEntry> = all
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(s, seen)| SessionListEntry::of(s, seen, who.session.id))
        .collect();
    let mut body = json!({ "sessions": sessions, "total": total });
    if start + limit < total {
        body["next_cursor"] = json!((start + limit).to_string());
    }
    Ok(Json(body))
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
        .end_session(&who, id, ReauthBody::into_reauth(body)?)
        .await?;
    if id == who.session.id {
        Ok(cleared(&state))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}
