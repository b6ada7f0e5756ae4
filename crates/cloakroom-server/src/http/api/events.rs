//! `GET /auth/events`: the caller's recent security events, newest first.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cloakroom::events::SecurityEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::factors::no_store;
use super::sessions::{DEFAULT_PAGE, MAX_PAGE};
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, CurrentSession};
use crate::http::{routes, AppState};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route(routes::EVENTS, get(list))
}

/// `?limit=`: how many, 1 to 200 (default 50). Other parameters are ignored.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct EventsQuery {
    limit: Option<usize>,
}

/// An event as the API shows it.
#[derive(Debug, Serialize)]
pub struct EventView {
    kind: &'static str,
    description: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

impl From<&SecurityEvent> for EventView {
    fn from(e: &SecurityEvent) -> Self {
        Self {
            kind: e.kind.as_str(),
            description: e.kind.describe(),
            at: e.at,
            ip: e.ip.clone(),
            user_agent: e.user_agent.clone(),
            detail: e.detail.clone(),
        }
    }
}

async fn list(
    State(state): State<AppState>,
    CurrentSession(who): CurrentSession,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let events = state.auth.security_events(&who, limit).await?;
    let views: Vec<EventView> = events.iter().map(EventView::from).collect();
    Ok(no_store(Json(json!({ "events": views })).into_response()))
}
