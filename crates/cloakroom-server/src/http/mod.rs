//! The HTTP layer: the router, shared state, and the middleware every response passes through.

pub mod api;
pub mod error;
pub mod extract;
pub mod guard;
pub mod metrics;
pub mod pages;
pub mod proxies;
pub mod return_to;
pub mod routes;

use axum::http::StatusCode;
use axum::Router;
use cloakroom::web::RequestRules;
use cloakroom::Auth;
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
    /// How requests are read: the session cookie, and the origins whose requests count as ours.
    pub rules: RequestRules,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<proxies::ProxyRange>,
    /// Where browsers may be sent back to on other hosts.
    pub return_to: return_to::ReturnTo,
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

/// The whole router, behind the checks every request passes; `/metrics` among its routes unless
/// `metrics_apart` (it is then served on a listener of its own, see [`metrics_router`]).
pub fn router(state: AppState, metrics_apart: bool) -> guard::Guarded {
    let mut app = Router::new()
        .merge(api::auth::router())
        .merge(api::sessions::router())
        .merge(api::factors::router())
        .merge(api::events::router())
        .merge(api::account::router())
        .merge(api::passkeys::router())
        .merge(api::health::router())
        .merge(api::token::router())
        .merge(api::dbsc::router())
        .merge(api::forward::router())
        .merge(api::revocations::router())
        .merge(pages::router());
    if !metrics_apart {
        app = app.route(routes::METRICS, axum::routing::get(metrics::render));
    }
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    guard::Guarded::new(state, app)
}

/// `GET /metrics` alone, for a private listener (`--metrics-listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(routes::METRICS, axum::routing::get(metrics::render))
        .fallback(not_found)
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
