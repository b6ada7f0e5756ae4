//! The HTTP layer: the router, shared state, and the middleware every response passes through.

pub mod api;
pub mod csrf;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod pages;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cloakroom::{Auth, CookiePolicy};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use error::ApiError;

/// Largest JSON body accepted on auth routes.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Largest total of `Cookie` header bytes accepted.
pub const COOKIE_LIMIT: usize = 8 * 1024;
/// Longest time a client may take to send a request body (headers have their own timeout).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The contents of [`AppState`].
pub struct StateInner {
    /// The engine.
    pub auth: Arc<Auth>,
    /// How the session cookie is written.
    pub cookie: CookiePolicy,
    /// Origins whose requests count as ours (CSRF checks).
    pub origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Send HSTS (the public URL is https).
    pub hsts: bool,
    /// Request and propagation counters.
    pub metrics: Arc<metrics::Metrics>,
    /// Keys that may follow `GET /auth/revocations`.
    pub verifier_keys: Vec<cloakroom::Secret<String>>,
    /// Turns true when the server shuts down (ends long-lived streams).
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// Shared state for the router.
    pub fn new(inner: StateInner) -> Self {
        Self(Arc::new(inner))
    }
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::auth::router())
        .merge(api::sessions::router())
        .merge(api::health::router())
        .merge(api::token::router())
        .merge(api::forward::router())
        .merge(api::revocations::router())
        .merge(pages::router())
        .route("/metrics", axum::routing::get(metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed here",
    )
}

/// Checks every request before its handler, sets the headers every response carries, and
/// counts the answer for `/metrics` (one middleware rather than two: each costs allocations on
/// every request).
async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = metrics::route_of(&req);
    // A slot for a renewed JWT cookie, only when a cookie could be one (JWTs contain dots).
    let renewal = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().contains(&b'.'))
        .then(extract::CookieRenewal::default);
    if let Some(slot) = &renewal {
        req.extensions_mut().insert(slot.clone());
    }
    let cookie_bytes: usize = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.len())
        .sum();
    let mut res = if cookie_bytes > COOKIE_LIMIT {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "cookies_too_large",
            "the Cookie header is larger than 8 KiB",
        )
        .into_response()
    } else if csrf::is_unsafe(req.method()) && csrf::looks_cross_site(req.headers(), &state.origins)
    {
        if pages::wants_html(req.headers()) {
            pages::error_page(&ApiError::cross_origin()).into_response()
        } else {
            ApiError::cross_origin().into_response()
        }
    } else {
        next.run(req).await
    };
    let renewed = renewal.and_then(|r| r.0.lock().unwrap_or_else(|e| e.into_inner()).take());
    if let Some(cookie) = renewed.and_then(|c| HeaderValue::from_str(&c).ok()) {
        // Unless the handler already set or cleared the cookie (login, logout).
        if !res.headers().contains_key(header::SET_COOKIE) {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages set their own policy; everything else loads nothing and is framed nowhere.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if state.hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    state.metrics.count(route, res.status().as_u16());
    res
}
