//! `GET /healthz` (the process answers), `GET /readyz` (its store answers too) and
//! `GET /openapi.json`.

use crate::http::error::ApiError;
use crate::http::routes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::http::metrics::wall_ms;
use crate::http::AppState;

/// The OpenAPI 3 description of the API.
pub const OPENAPI: &str = include_str!("../../../openapi.json");

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::READYZ, get(readyz))
        .route(routes::OPENAPI, get(openapi))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.metrics.store_failing(wall_ms()) {
        tracing::warn!("not ready: requests failed for want of the store in the last seconds");
        return not_ready("the database cannot take writes");
    }
    match state.auth.ready().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            not_ready("the database is not reachable or cannot take writes")
        }
    }
}

fn not_ready(why: &str) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
        .retry_after(5)
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
