//! Who may see a page and which form posts are genuine: the page session (a redirect to the
//! login page when there is none), CSRF tokens for forms, and the `next` parameter's rules.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cloakroom::{Authenticated, Session};
use ring::hmac;

use super::templates;
use crate::http::extract::CurrentSession;
use crate::http::AppState;

/// Where a login lands when no (acceptable) `next` is given.
pub const HOME: &str = "/dashboard";

/// The signed-in user of a page. Without a valid session the page answers a redirect to
/// `/login?next=<this page>`; when the store is down, an error page.
pub struct PageUser(pub Authenticated);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match CurrentSession::from_request_parts(parts, state).await {
            Ok(CurrentSession(who)) => Ok(PageUser(who)),
            Err(e) if e.code() == crate::http::error::SECOND_FACTOR_REQUIRED => {
                Err(Redirect::to(crate::http::routes::SECURITY_PAGE).into_response())
            }
            Err(e) if e.code() == crate::http::error::EMAIL_UNVERIFIED => {
                Err(Redirect::to(crate::http::routes::SETTINGS_PAGE).into_response())
            }
            Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
                let target = parts
                    .uri
                    .path_and_query()
                    .map(|pq| pq.as_str())
                    .and_then(safe_next)
                    .unwrap_or(HOME);
                Err(Redirect::to(&login_url(target)).into_response())
            }
            Err(e) => Err(templates::error_page(&e).into_response()),
        }
    }
}

/// `/login?next=<target>`, the target percent-encoded.
pub fn login_url(target: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("/login?next={encoded}")
}

/// `next` if it is a relative path on this site, else `None`. Refused: anything not starting
/// with one `/` (`https://…`, `//host`, `/\host`), backslashes, control characters and spaces
/// anywhere, percent-encoded slashes or backslashes (which some servers and browsers decode
/// into the forms above), anything a URL parser resolves to another host, and anything whose
/// path, once its dot segments are resolved, starts with `//` (`/.//evil.com`, `/..//evil.com`,
/// `/%2e%2e//evil.com`): a browser sent there asks this site for `//evil.com`, which a page or a
/// redirect may then treat as another host.
pub fn safe_next(next: &str) -> Option<&str> {
    if next.is_empty() || next.len() > 1024 || !next.starts_with('/') {
        return None;
    }
    let bytes = next.as_bytes();
    if matches!(bytes.get(1), Some(b'/') | Some(b'\\')) {
        return None;
    }
    if bytes
        .iter()
        .any(|&b| b == b'\\' || b == b' ' || b.is_ascii_control() || !b.is_ascii())
    {
        return None;
    }
    let lower = next.to_ascii_lowercase();
    if lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%09")
        || lower.contains("%0a")
        || lower.contains("%0d")
        || lower.contains("%00")
    {
        return None;
    }
    let base = url::Url::parse("http://cloakroom.invalid/").ok()?;
    let joined = base.join(next).ok()?;
    (joined.host_str() == Some("cloakroom.invalid")
        && joined.scheme() == "http"
        && !joined.path().starts_with("//"))
    .then_some(next)
}

/// The CSRF token of the forms shown to one session: an HMAC of its id under the hash of its
/// secret, so it is bound to the session, needs no storage, and holds on every instance.
pub fn session_csrf(session: &Session) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &session.secret_hash.0);
    let tag = hmac::sign(&key, format!("cloakroom-csrf:{}", session.id).as_bytes());
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// Compares two tokens without leaking, through timing, where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    // Comparing digests: the time taken tells nothing about the tokens themselves.
    let digest = |t: &str| ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
    !a.is_empty() && cloakroom::secrets_equal(digest(a).as_ref(), digest(b).as_ref())
}

/// Name of the cookie that carries the CSRF token of the login and signup forms (before there
/// is a session to bind one to): a double-submit token.
pub fn pre_session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-cloakroom_csrf"
    } else {
        "cloakroom_csrf"
    }
}

/// The pre-session CSRF token a request carries, if any.
pub fn pre_session_token(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = pre_session_cookie(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && v.len() == 43)
        .map(|(_, v)| v.to_string())
}

/// A fresh pre-session token and the `Set-Cookie` value that carries it.
pub fn new_pre_session_token(secure: bool) -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let attrs = if secure {
        "; Path=/; HttpOnly; Secure; SameSite=Strict"
    } else {
        "; Path=/; HttpOnly; SameSite=Strict"
    };
    let cookie = format!("{}={token}{attrs}", pre_session_cookie(secure));
    (token, cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_accepts_relative_paths_only() {
        for good in [
            "/dashboard",
            "/settings?tab=sessions",
            "/profile#top",
            "/a/b/../c",
        ] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "dashboard",
            "//evil.example",
            "//evil.example/dashboard",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http:/evil.example",
            "javascript:alert(1)",
            "/%2F%2Fevil.example",
            "/%2fevil.example",
            "/%5Cevil.example",
            "/\tevil",
            "/ /evil",
            "/\r\nLocation: https://evil.example",
            "/%0d%0aSet-Cookie:x=y",
            "/évil",
            "/settings\\..\\..\\evil",
            "/.//evil.com",
            "/..//evil.com",
            "/./..//evil.com",
            "/%2e%2e//evil.com",
            "/%2E//evil.com",
            "/a/..//evil.com",
            "/.%2e//evil.com",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn login_url_encodes_the_target() {
        assert_eq!(login_url(HOME), "/login?next=%2Fdashboard");
        assert_eq!(
            login_url("/settings?tab=a&b=c"),
            "/login?next=%2Fsettings%3Ftab%3Da%26b%3Dc"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
    }
}
