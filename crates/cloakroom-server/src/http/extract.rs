//! Request extractors: strict JSON bodies, the client's address, and the caller's session.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use cloakroom::{Authenticated, ClientInfo, Presented};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

use super::csrf;
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
    // UTF-8 rather than `to_str`'s visible ASCII (cheaper): what is found is then checked as a
    // token of our own shape, which admits nothing else.
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
    match state.cookie.find(values) {
        Presented::None => Ok(None),
        Presented::One(v) => Ok(Some(v)),
        Presented::Ambiguous => Err(ApiError::unauthenticated()),
    }
}

/// A bearer token from `Authorization` (scheme case-insensitive), if one was sent. Two
/// `Authorization` headers, another scheme, or an empty token are refused.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_token());
    }
    // Any UTF-8 passes here (cheaper than `to_str` on a long token); a token with bytes outside
    // the JWT alphabet then fails verification like any other forgery.
    let value = std::str::from_utf8(value.as_bytes()).map_err(|_| ApiError::invalid_token())?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(ApiError::invalid_token());
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthenticated());
    }
    // A token with a space in it is not compact JWS and fails verification: no need to look.
    if token.is_empty() {
        return Err(ApiError::invalid_token());
    }
    Ok(Some(token))
}

/// Where an extractor leaves a renewed JWT cookie for the response (see `guard`).
#[derive(Debug, Clone, Default)]
pub struct CookieRenewal(pub std::sync::Arc<std::sync::Mutex<Option<String>>>);

/// The caller's session: from a bearer token if one was sent (it wins over a cookie), else from
/// the session cookie, which carries the opaque session token or an access JWT. A JWT cookie is
/// verified exactly like a bearer token and replaced once past half its lifetime, so an active
/// browser keeps a valid one for as long as its session lives. Unsafe methods with a cookie must
/// also prove they come from this site (see [`csrf`]), even with a bearer.
#[derive(Debug, Clone)]
pub struct CurrentSession(pub Authenticated);

/// Whether a JWT cookie should be replaced: past half of its lifetime.
fn needs_renewal(token: &str, now: time::OffsetDateTime) -> bool {
    let Ok((_, payload)) = cloakroom::jwt::decode_unverified(token) else {
        return false;
    };
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(iat), Some(exp)) => now.unix_timestamp() >= iat + (exp - iat) / 2,
        _ => true,
    }
}

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = bearer_token(&parts.headers)?;
        let cookie = session_cookie(&parts.headers, state)?;
        if cookie.is_some()
            && csrf::is_unsafe(&parts.method)
            && !csrf::proves_same_origin(&parts.headers, &state.origins)
        {
            return Err(ApiError::cross_origin());
        }
        if let Some(token) = bearer {
            return match state.auth.authenticate_bearer(token).await {
                Ok(who) => Ok(CurrentSession(who)),
                Err(cloakroom::AuthError::Unauthenticated) => Err(ApiError::invalid_token()),
                Err(e) => Err(e.into()),
            };
        }
        let token = cookie.ok_or_else(ApiError::unauthenticated)?;
        if !token.contains('.') {
            return Ok(CurrentSession(state.auth.authenticate(token).await?));
        }
        let who = state.auth.authenticate_jwt_cookie(token).await?;
        if needs_renewal(token, state.auth.now()) {
            let (jwt, _) = state.auth.mint_access_token(&who.user, &who.session)?;
            if let Some(slot) = parts.extensions.get::<CookieRenewal>() {
                let max_age = who
                    .session
                    .remember
                    .then(|| who.session.absolute_expires_at - state.auth.now());
                *slot.0.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(state.cookie.set(&jwt, max_age));
            }
        }
        Ok(CurrentSession(who))
    }
}
