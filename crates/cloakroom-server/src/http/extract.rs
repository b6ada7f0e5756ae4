//! Request extractors: strict JSON bodies, the client's address, and the caller's session.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use cloakroom::web;
use cloakroom::{Authenticated, ClientInfo};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

use super::error::ApiError;
use super::proxies::{client_behind, ProxyRange};
use super::{AppState, BODY_TIMEOUT};

/// Longest `User-Agent` kept with a session.
const MAX_USER_AGENT: usize = 256;

/// A JSON body: `Content-Type: application/json` (charset utf-8 or none), at most the body limit,
/// a JSON object of exactly the expected fields (unknown and duplicate fields are errors).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let unsupported = || {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        )
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsupported)?;
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
    {
        return Err(unsupported());
    }
    for param in parts {
        let (k, v) = param.split_once('=').ok_or_else(unsupported)?;
        let v = v.trim_matches('"');
        if !(k.trim().eq_ignore_ascii_case("charset") && v.eq_ignore_ascii_case("utf-8")) {
            return Err(unsupported());
        }
    }
    Ok(())
}

/// Reads the body within the size limit and [`BODY_TIMEOUT`] (a slow body is cut off with 408).
pub(crate) async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let read = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, state))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body was not sent in time",
            )
        })?;
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than 16 KiB",
            )
        } else {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        // serde_json's messages name fields and positions, never our internals.
        ApiError::bad_request(code, format!("the JSON body is not valid: {e}"))
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A query string of exactly the expected parameters; anything else is a 400 in the JSON error
/// envelope (axum's own `Query` answers in plain text).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("the query string is not valid: {}", e.body_text()),
                )
            })
    }
}

/// Like [`ApiJson`], but an empty body is allowed and gives `None`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        check_json_content_type(&headers)?;
        parse_json(&bytes).map(|v| Self(Some(v)))
    }
}

/// The client's address and user agent. The address is the socket peer's, or, when the peer is
/// a trusted proxy, the nearest untrusted address in `X-Forwarded-For`.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

/// The client IP for a request, honouring `X-Forwarded-For` only from trusted proxies.
pub fn client_ip(parts: &Parts, trusted: &[ProxyRange]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    Some(client_behind(trusted, peer, hops.into_iter()))
}

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Ok(Client(ClientInfo {
            ip: client_ip(parts, &state.trusted_proxies),
            user_agent,
        }))
    }
}

/// The raw session cookie value a request carries, if exactly one.
pub fn session_cookie<'a>(
    headers: &'a HeaderMap,
    state: &AppState,
) -> Result<Option<&'a str>, ApiError> {
    web::session_cookie(headers, state.rules.cookie()).map_err(ApiError::from)
}

/// The session token a client already holds, which a new login ends; an ambiguous pair (two
/// cookies of our name) is simply not honoured.
pub fn held_token(headers: &HeaderMap, state: &AppState) -> Option<String> {
    session_cookie(headers, state)
        .unwrap_or(None)
        .map(str::to_string)
}

/// A bearer token from `Authorization` (see [`web::bearer_token`]).
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    web::bearer_token(headers).map_err(ApiError::from)
}

/// Where an extractor leaves a renewed JWT cookie for the response (see `guard`).
#[derive(Debug, Clone, Default)]
pub struct CookieRenewal(pub std::sync::Arc<std::sync::Mutex<Option<String>>>);

/// The caller's session, recognised by the library's one set of request rules
/// ([`web::RequestRules::authenticate`]): a bearer token wins over the session cookie, and an
/// unsafe method with a cookie must prove it comes from this site. A renewed JWT cookie is left
/// for the response.
#[derive(Debug, Clone)]
pub struct CurrentSession(pub Authenticated);

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = state
            .rules
            .authenticate_at(
                &state.auth,
                &parts.method,
                Some(parts.uri.path()),
                &parts.headers,
            )
            .await
            .map_err(|r| {
                let e = ApiError::from(r);
                if e.wants_dpop_nonce() {
                    e.with_dpop_nonce(state.auth.dpop_nonce())
                } else {
                    e
                }
            })?;
        if let (Some(cookie), Some(slot)) = (
            caller.renewed_cookie,
            parts.extensions.get::<CookieRenewal>(),
        ) {
            *slot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(cookie);
        }
        admit(state, caller.who, parts.uri.path()).map(CurrentSession)
    }
}

/// What a recognised caller may still be refused for at `path`: a second factor the deployment
/// requires and the session has not proven, or an address it requires confirmed.
pub fn admit(state: &AppState, who: Authenticated, path: &str) -> Result<Authenticated, ApiError> {
    let route = crate::http::routes::route_of(path);
    if state.auth.second_factor_due(&who) && !crate::http::routes::ENROLMENT.contains(&route) {
        return Err(ApiError::second_factor_required());
    }
    if state.auth.verification_due(&who) && !crate::http::routes::VERIFICATION.contains(&route) {
        return Err(ApiError::email_unverified());
    }
    Ok(who)
}
