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

use crate::http::error::{ApiError, EMAIL_UNVERIFIED, SECOND_FACTOR_REQUIRED};
use crate::http::extract::{ApiQuery, CurrentSession};
use crate::http::pages::{safe_next, wants_html};
use crate::http::proxies::is_trusted;
use crate::http::AppState;
use cloakroom::{Acr, Requirement};

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route(routes::VERIFY, get(verify))
}

/// Other parameters are ignored, not refused: Caddy's `forward_auth` passes on the query string
/// of the page asked for (`/auth/verify?year=2026` for `/report?year=2026`). A client can add
/// only `role` that way, which can only narrow who gets in.
#[derive(Debug, Deserialize)]
pub(crate) struct VerifyQuery {
    role: Option<String>,
    /// The lowest acceptable assurance level: `aal1`/`1` or `aal2`/`2`.
    aal: Option<String>,
    /// The oldest acceptable login, in seconds.
    max_age: Option<i64>,
}

impl VerifyQuery {
    /// The step-up requirement the query names, if any.
    fn requirement(&self) -> Result<Option<Requirement>, ApiError> {
        let aal = match self.aal.as_deref() {
            None => None,
            Some(a) => Some(Acr::parse(a).ok_or_else(|| {
                ApiError::bad_request("invalid_query", "aal must be 1, 2, aal1 or aal2")
            })?),
        };
        if self.max_age.is_some_and(|m| m < 0) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "max_age must be a number of seconds, 0 or more",
            ));
        }
        Ok(
            (aal.is_some() || self.max_age.is_some()).then(|| Requirement {
                aal: aal.unwrap_or(Acr::Aal1),
                max_age: self.max_age,
            }),
        )
    }
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

/// The full URL the client originally asked the proxy for, believed only from a trusted proxy:
/// `X-Original-URL` (as the example nginx config sets it), else `X-Forwarded-Proto`, `-Host` and
/// `-Uri` (Caddy and Traefik send these). Whether it may be returned to is
/// [`ReturnTo::check`](crate::http::return_to::ReturnTo::check)'s call.
fn original_url(headers: &HeaderMap, from_trusted_proxy: bool) -> Option<String> {
    if !from_trusted_proxy {
        return None;
    }
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(url) = get("x-original-url") {
        return Some(url.to_string());
    }
    let uri = get("x-forwarded-uri").filter(|u| u.starts_with('/'))?;
    Some(format!(
        "{}://{}{uri}",
        get("x-forwarded-proto")?,
        get("x-forwarded-host")?
    ))
}

/// The caller of a proxied request that carries a DPoP-bound token (`Authorization: DPoP`), if
/// it does: its proof must name the request the client sent the proxy, which only a trusted
/// proxy can tell (`X-Forwarded-Method` or `X-Original-Method`, and the original URL).
async fn dpop_caller(
    state: &AppState,
    headers: &HeaderMap,
    trusted: bool,
) -> Option<Result<cloakroom::Authenticated, ApiError>> {
    let creds = cloakroom::web::Credentials::read(headers, state.rules.cookie()).ok()?;
    let (token, proof) = creds.dpop?;
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let method = get("x-forwarded-method").or_else(|| get("x-original-method"));
    // The app's URL; an app on cloakroom's own host gives only its path.
    let url = original_url(headers, trusted).or_else(|| {
        let path = original_path(headers, trusted)?;
        Some(format!("{}{path}", state.rules.origins().first()?))
    });
    let (Some(proof), Some(method), Some(url)) = (proof, method, url) else {
        return Some(Err(ApiError::invalid_dpop(None)));
    };
    Some(
        state
            .auth
            .authenticate_dpop(token, proof, method, &url)
            .await
            .map_err(|e| {
                let e = ApiError::from(e);
                if e.wants_dpop_nonce() {
                    e.with_dpop_nonce(state.auth.dpop_nonce())
                } else {
                    e
                }
            }),
    )
}

const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const X_AUTH_EMAIL_VERIFIED: HeaderName = HeaderName::from_static("x-auth-email-verified");
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
    let requirement = q.requirement()?;
    let who = match dpop_caller(&state, &parts.headers, trusted).await {
        Some(answer) => {
            answer.and_then(|who| crate::http::extract::admit(&state, who, parts.uri.path()))
        }
        None => CurrentSession::from_request_parts(&mut parts, &state)
            .await
            .map(|CurrentSession(who)| who),
    };
    let who = match who {
        Ok(who) => who,
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            return Ok(send_to_page(
                &state,
                &parts.headers,
                trusted,
                e,
                routes::LOGIN_PAGE,
                "",
            ))
        }
        Err(e) if e.code() == SECOND_FACTOR_REQUIRED && wants_html(&parts.headers) => {
            return Ok(send_to_page(
                &state,
                &parts.headers,
                trusted,
                e,
                routes::SECURITY_PAGE,
                "",
            ))
        }
        Err(e) if e.code() == EMAIL_UNVERIFIED && wants_html(&parts.headers) => {
            return Ok(send_to_page(
                &state,
                &parts.headers,
                trusted,
                e,
                routes::SETTINGS_PAGE,
                "",
            ))
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
    if let Some(requirement) = requirement {
        let met = requirement.met_by(
            who.session.amr,
            who.session.authenticated_at.unix_timestamp(),
            state.auth.now().unix_timestamp(),
        );
        if !met {
            let mut extra = format!("&aal={}", requirement.aal);
            if let Some(age) = requirement.max_age {
                extra.push_str(&format!("&max_age={age}"));
            }
            return Ok(send_to_page(
                &state,
                &parts.headers,
                trusted,
                ApiError::insufficient(&requirement),
                routes::STEP_UP_PAGE,
                &extra,
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
    h.insert(
        X_AUTH_EMAIL_VERIFIED,
        HeaderValue::from_static(if who.user.email_verified {
            "true"
        } else {
            "false"
        }),
    );
    h.insert(X_AUTH_ROLES, identity_header(&roles)?);
    h.insert(
        X_AUTH_SESSION_ID,
        identity_header(who.session.id.0.as_hyphenated().encode_lower(&mut uuid))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The answer to a request without a valid session (`page` is the login page) or without a
/// strong or recent enough one (the step-up page). For an app on another allowed host, the
/// page's absolute URL with `rd=` the page asked for: a browser is redirected there (302),
/// anything else gets the 401 with that URL in `Location`, for proxies that make the redirect
/// themselves (nginx's `auth_request` passes on only 2xx, 401 and 403). For a page on
/// cloakroom's own site, or when the original URL is unknown or not allowed, a browser is sent
/// to the relative `<page>?next=<path>`. `extra` is appended to the query (`&aal=2`).
fn send_to_page(
    state: &AppState,
    headers: &HeaderMap,
    trusted: bool,
    refusal: ApiError,
    page: &str,
    extra: &str,
) -> Response {
    let elsewhere = original_url(headers, trusted)
        .and_then(|url| state.return_to.check(&url))
        .filter(|url| !state.return_to.is_own(url));
    let html = wants_html(headers);
    let location = match (&elsewhere, html) {
        (Some(target), _) => format!("{}{extra}", state.return_to.page_url(page, target)),
        (None, true) => {
            let next = original_path(headers, trusted).unwrap_or_else(|| "/".into());
            let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            format!("{page}?next={encoded}{extra}")
        }
        (None, false) => return refusal.into_response(),
    };
    let mut res = if html {
        let mut res = Redirect::to(&location).into_response();
        *res.status_mut() = StatusCode::FOUND;
        res
    } else {
        refusal.into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, value);
    }
    res
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

    #[test]
    fn the_original_url_comes_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("app.example.test"),
        );
        h.insert("x-forwarded-uri", HeaderValue::from_static("/p?x=1"));
        assert_eq!(
            original_url(&h, true).as_deref(),
            Some("https://app.example.test/p?x=1")
        );
        assert_eq!(original_url(&h, false), None);
        h.insert("x-forwarded-uri", HeaderValue::from_static("@evil.test/"));
        assert_eq!(original_url(&h, true), None);
        h.insert(
            "x-original-url",
            HeaderValue::from_static("https://other.example.test/q"),
        );
        assert_eq!(
            original_url(&h, true).as_deref(),
            Some("https://other.example.test/q")
        );
    }
}
