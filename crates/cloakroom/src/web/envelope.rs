//! The one shape of every error answer, the server's and an embedding app's alike:
//! `{"error": {"code": "snake_case", "message": "…"}}`, never cached.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of an error answer.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorEnvelope<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// What went wrong: a stable code for programs, a sentence for people.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail<'a> {
    /// Stable, snake_case.
    pub code: &'a str,
    /// For people; never names internals.
    pub message: &'a str,
}

/// An error answer with `status`, `code` and `message`, marked `Cache-Control: no-store`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorEnvelope {
        error: ErrorDetail { code, message },
    };
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
