//! Pages for people: `/login`, `/signup`, `/dashboard`, `/profile` and `/settings`, rendered on
//! the server and usable without JavaScript. Every form carries a CSRF token (bound to the
//! session, or a double-submit cookie before there is one) and is origin-checked by the guard
//! like any other unsafe request; every page sends `Cache-Control: no-store` and a
//! Content-Security-Policy without inline scripts.

mod access;
mod handlers;
mod links;
mod security;
mod step_up;
mod templates;

pub use access::{login_url, safe_next};
pub use templates::{error_page, PAGE_CSP};

use crate::http::routes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::http::AppState;

/// The one stylesheet of the pages.
const STYLESHEET: &str = include_str!("../../../static/style.css");
/// The one script of the pages: passkeys.
const SCRIPT: &str = include_str!("../../../static/passkeys.js");

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::ROOT, get(|| async { Redirect::to(access::HOME) }))
        .route(
            routes::LOGIN_PAGE,
            get(handlers::login_page).post(handlers::login),
        )
        // The second step is the answer to the login form; on its own (a reload, a bookmark)
        // it starts over.
        .route(
            routes::LOGIN_MFA_PAGE,
            get(|| async { Redirect::to(routes::LOGIN_PAGE) }).post(handlers::login_mfa),
        )
        .route(
            routes::STEP_UP_PAGE,
            get(step_up::step_up).post(step_up::step_up_post),
        )
        .route(
            routes::SIGNUP_PAGE,
            get(handlers::signup_page).post(handlers::signup),
        )
        .route(routes::DASHBOARD_PAGE, get(handlers::dashboard))
        .route(routes::PROFILE_PAGE, get(handlers::profile))
        .route(routes::SETTINGS_PAGE, get(handlers::settings))
        .route(
            routes::LOGOUT_PAGE,
            get(handlers::logout_page).post(handlers::logout),
        )
        .route(routes::END_SESSION_PAGE, post(handlers::end_session))
        .route(
            routes::LOGOUT_EVERYWHERE_PAGE,
            post(handlers::logout_everywhere),
        )
        .route(routes::PASSWORD_PAGE, post(handlers::change_password))
        .route(
            routes::EMAIL_VERIFY_REQUEST_PAGE,
            post(handlers::request_verification),
        )
        .route(routes::EMAIL_CHANGE_PAGE, post(handlers::change_email))
        .route(routes::DELETE_ACCOUNT_PAGE, post(handlers::delete_account))
        .route(routes::SECURITY_PAGE, get(security::show))
        .route(routes::SECURITY_TOTP_PAGE, post(security::add_app))
        .route(
            routes::SECURITY_TOTP_CONFIRM_PAGE,
            post(security::confirm_app),
        )
        .route(routes::SECURITY_CODES_PAGE, post(security::new_codes))
        .route(routes::SECURITY_REMOVE_PAGE, post(security::remove))
        .route(
            routes::VERIFY_EMAIL_PAGE,
            get(links::verify_page).post(links::verify),
        )
        .route(
            routes::CONFIRM_EMAIL_CHANGE_PAGE,
            get(links::confirm_change_page).post(links::confirm_change),
        )
        .route(
            routes::CANCEL_EMAIL_CHANGE_PAGE,
            get(links::cancel_change_page).post(links::cancel_change),
        )
        .route(
            routes::FORGOT_PASSWORD_PAGE,
            get(links::forgot_page).post(links::forgot),
        )
        .route(
            routes::RESET_PASSWORD_PAGE,
            get(links::reset_page).post(links::reset),
        )
        .route(routes::STYLESHEET, get(stylesheet))
        .route(routes::SCRIPT, get(script))
}

/// Whether the client asked for HTML (a browser navigating), rather than JSON.
pub fn wants_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

async fn script() -> Response {
    let mut res = SCRIPT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

async fn stylesheet() -> Response {
    let mut res = STYLESHEET.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
