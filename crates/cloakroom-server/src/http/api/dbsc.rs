//! Device Bound Session Credentials (DBSC) for browser sessions: the registration offer on a
//! login's response, `POST /auth/dbsc/register` (the browser's key binds the session), `POST
//! /auth/dbsc/refresh` (a proof by that key for a fresh bound cookie), and the well-known
//! document a site-wide session needs. What a binding means is the engine's
//! (`Auth::bind_session`, `Auth::refresh_binding`, `Auth::check_binding`).

use crate::http::routes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::dbsc::{self, DbscError, DbscMode, Instructions};
use cloakroom::{AuthError, Session, Transport};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::DBSC_REGISTER, post(register))
        .route(routes::DBSC_REFRESH, post(refresh))
        .route(routes::DBSC_WELL_KNOWN, get(well_known))
}

/// The `Secure-Session-Registration` header a login's response carries for its new `session`,
/// when DBSC is on and the session is a cookie session.
pub fn offer(state: &AppState, session: &Session) -> Option<HeaderValue> {
    if state.auth.dbsc_mode() == DbscMode::Off || session.transport != Transport::Cookie {
        return None;
    }
    let value = dbsc::registration_header(
        routes::DBSC_REGISTER,
        &state.auth.dbsc_registration_challenge(session.id),
    )?;
    HeaderValue::from_str(&value).ok()
}

fn not_offered(state: &AppState) -> Result<(), ApiError> {
    if state.auth.dbsc_mode() == DbscMode::Off {
        return Err(ApiError::not_found());
    }
    Ok(())
}

/// What the bound cookie covers: this origin, or with a cookie domain the whole site (its
/// cookie goes to every host of the domain, and so must the bound cookie).
fn instructions(state: &AppState, session: &Session) -> Option<Instructions> {
    let cookie = state.rules.cookie();
    let public = state.rules.origins().first()?;
    let (origin, include_site) = match cookie.domain() {
        Some(domain) => (format!("https://{domain}"), true),
        None => (public.clone(), false),
    };
    Some(Instructions {
        session_identifier: state.auth.dbsc_id(session)?,
        refresh_url: format!("{public}{}", routes::DBSC_REFRESH),
        scope: dbsc::Scope {
            origin,
            include_site,
            scope_specification: Vec::new(),
        },
        credentials: vec![dbsc::Credential {
            kind: "cookie",
            name: cookie.bound_name().to_string(),
            attributes: cookie.attributes_text(),
        }],
    })
}

/// One header's structured-field string (`Sec-Secure-Session-Id`, `Secure-Session-Response`);
/// `Ok(None)` when absent, an error when repeated or not such a string.
fn sf_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::bad_request(
            "invalid_session_proof",
            format!("{name} must be one structured-field string"),
        )
    };
    if values.next().is_some() {
        return Err(malformed());
    }
    let text = value.to_str().map_err(|_| malformed())?;
    dbsc::read_sf_string(text).map(Some).ok_or_else(malformed)
}

/// A 200 with the session instructions, the bound cookie (and `extra` cookies), and the
/// challenge for the next refresh.
fn bound_answer(state: &AppState, session: &Session, extra: Option<String>) -> Response {
    let body = instructions(state, session).map_or_else(|| json!({}), |i| json!(i));
    let mut res = Json(body).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let bound = state
        .auth
        .bound_cookie(session)
        .map(|(value, lifetime)| state.rules.cookie().set_bound(&value, lifetime));
    for cookie in extra.into_iter().chain(bound) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    if let Some(v) = state
        .auth
        .dbsc_challenge_header(session)
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        h.insert(dbsc::CHALLENGE, v);
    }
    res
}

/// `POST /auth/dbsc/register`: the browser's answer to a login's `Secure-Session-Registration`,
/// a proof signed with its new key over the login's challenge. The session becomes a bound
/// successor (new cookie, the bound cookie beside it); the unbound one ends everywhere.
async fn register(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    not_offered(&state)?;
    let who = state
        .rules
        .session_to_bind(&state.auth, &Method::POST, &headers)
        .await?;
    let proof = sf_header(&headers, dbsc::RESPONSE)?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_session_proof",
            "send the proof in Secure-Session-Response",
        )
    })?;
    let outcome = state.auth.bind_session(&who, &proof).await?;
    let session_cookie = state
        .rules
        .cookie_like_before(&state.auth, &headers, &outcome)?;
    Ok(bound_answer(&state, &outcome.session, Some(session_cookie)))
}

/// `POST /auth/dbsc/refresh`: a bound session's browser asks for a fresh bound cookie. Without
/// a proof, or with one over a stale or spent challenge: 403 with a new challenge, which the
/// browser signs and sends again. With a valid proof: the bound cookie.
async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    not_offered(&state)?;
    let who = state
        .rules
        .session_to_bind(&state.auth, &Method::POST, &headers)
        .await?;
    let sid = sf_header(&headers, dbsc::SESSION_ID)?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_session_proof",
            "send the session's id in Sec-Secure-Session-Id",
        )
    })?;
    let proof = sf_header(&headers, dbsc::RESPONSE)?;
    match state
        .auth
        .refresh_binding(&who, &sid, proof.as_deref())
        .await
    {
        Ok(()) => Ok(bound_answer(&state, &who.session, None)),
        Err(AuthError::Dbsc(e @ (DbscError::Challenge | DbscError::Replayed))) => {
            let refusal = ApiError::new(StatusCode::FORBIDDEN, "session_challenge", e.to_string());
            Ok(match state.auth.dbsc_challenge_header(&who.session) {
                Some(c) => refusal.with_session_challenge(c),
                None => refusal,
            }
            .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /.well-known/device-bound-sessions`: with a cookie domain, sessions cover the whole
/// site, which the browser accepts only if the site's own host lists this origin here (the
/// proxy in front of the domain's host must route this path to cloakroom).
async fn well_known(State(state): State<AppState>) -> Result<Response, ApiError> {
    not_offered(&state)?;
    let (Some(_), Some(origin)) = (state.rules.cookie().domain(), state.rules.origins().first())
    else {
        return Err(ApiError::not_found());
    };
    Ok(Json(json!({ "registering_origins": [origin] })).into_response())
}
