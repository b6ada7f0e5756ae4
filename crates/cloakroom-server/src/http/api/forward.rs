//! `GET /auth/verify`: forward-auth for reverse proxies (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `ForwardAuth`). The proxy asks on each request; a 2xx lets it
//! through with the identity in `X-Auth-*` headers, which the proxy copies onto the request to
//! the app. Headers the client sent are never read as identity and never echoed back.

use crate::http::routes;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::net::SocketAddr;

use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, CurrentSession};
use crate::http::pages::{login_url, safe_next, wants_html};
use crate::http::proxies::is_trusted;
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route(routes::VERIFY, get(verify))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyQuery {
    role: Option<String>,
}

/// The path and query the client originally asked the proxy for: `X-Original-URI` (nginx) or
/// `X-Forwarded-Uri` (Caddy, Traefik), believed only from a trusted proxy and only if it is a
/// path on this site.
fn original_path(headers: &HeaderMap, from_trusted_proxy: bool) -> Option<String> {
    if !from_trusted_proxy {
        return None;
    }
    ["x-original-uri", "x-forwarded-uri"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok())
        .find_map(|p| safe_next(p).map(str::to_string))
}

const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");

fn identity_header(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|_| ApiError::unauthenticated())
}

pub(crate) async fn verify(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<VerifyQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let trusted = peer.is_some_and(|p| is_trusted(&state.trusted_proxies, p));
    let who = match CurrentSession::from_request_parts(&mut parts, &state).await {
        Ok(CurrentSession(who)) => who,
        Err(e) if e.status() == StatusCode::UNAUTHORIZED && wants_html(&parts.headers) => {
            // A browser: send it to the login page, and back here afterwards. The location is
            // relative, so it stays on the site the proxy serves.
            let next = original_path(&parts.headers, trusted).unwrap_or_else(|| "/".into());
            let mut res = Redirect::to(&login_url(&next)).into_response();
            *res.status_mut() = StatusCode::FOUND;
            return Ok(res);
        }
        Err(e) => return Err(e),
    };
    if let Some(role) = q.role.as_deref() {
        if !who.user.roles.iter().any(|r| r.as_str() == role) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this account does not have the role this resource needs",
            ));
        }
    }
    let mut roles = String::new();
    for (i, role) in who.user.roles.iter().enumerate() {
        if i > 0 {
            roles.push(',');
        }
        roles.push_str(role.as_str());
    }
    let mut uuid = uuid::Uuid::encode_buffer();
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    // Room for these and the headers every answer carries (see `guard`), allocated once.
    h.reserve(10);
    h.insert(
        X_AUTH_USER_ID,
        identity_header(who.user.id.0.as_hyphenated().encode_lower(&mut uuid))?,
    );
    h.insert(X_AUTH_EMAIL, identity_header(who.user.email.as_str())?);
    h.insert(X_AUTH_ROLES, identity_header(&roles)?);
    h.insert(
        X_AUTH_SESSION_ID,
        identity_header(who.session.id.0.as_hyphenated().encode_lower(&mut uuid))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_path_comes_only_from_trusted_proxies_and_stays_on_site() {
        let mut h = HeaderMap::new();
        h.insert("x-original-uri", HeaderValue::from_static("/app/page?x=1"));
        assert_eq!(original_path(&h, true).as_deref(), Some("/app/page?x=1"));
        assert_eq!(original_path(&h, false), None);
        h.insert(
            "x-original-uri",
            HeaderValue::from_static("//evil.example/"),
        );
        assert_eq!(original_path(&h, true), None);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-uri", HeaderValue::from_static("/from/caddy"));
        assert_eq!(original_path(&h, true).as_deref(), Some("/from/caddy"));
    }
}
