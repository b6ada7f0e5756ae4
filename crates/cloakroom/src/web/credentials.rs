//! Where a request's credentials are: the bearer token of `Authorization`, and the session
//! cookie, which carries either the opaque session token or an access JWT.

use axum::http::{header, HeaderMap};

use crate::{CookiePolicy, Presented};

/// Why a request's credentials cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// `Authorization` with the bearer scheme is malformed or repeated: a token was sent and is
    /// refused (401 with the RFC 6750 `invalid_token` challenge).
    InvalidBearer,
    /// `Authorization` names another scheme (`Basic …`): no token we know was sent.
    OtherScheme,
    /// Two session cookies of our name: refused rather than guessing which one counts.
    AmbiguousCookie,
}

/// The credentials a request carries, unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The bearer token, if one was sent. It wins over a cookie.
    pub bearer: Option<&'a str>,
    /// A DPoP-bound access token (`Authorization: DPoP …`, RFC 9449 §7.1), if one was sent,
    /// with the `DPoP` proof header's value if exactly one came. It wins over a cookie.
    pub dpop: Option<(&'a str, Option<&'a str>)>,
    /// The session cookie's value, if exactly one was sent.
    pub cookie: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// Reads them from `headers`.
    pub fn read(headers: &'a HeaderMap, cookie: &CookiePolicy) -> Result<Self, CredentialError> {
        let (bearer, dpop) = match authorization(headers, "bearer") {
            Err(CredentialError::OtherScheme) => (None, authorization(headers, "dpop")?),
            other => (other?, None),
        };
        Ok(Self {
            bearer,
            dpop: dpop.map(|token| (token, dpop_proof(headers))),
            cookie: session_cookie(headers, cookie)?,
        })
    }
}

/// The `DPoP` header's value, if exactly one was sent.
pub fn dpop_proof(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all("dpop").iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// A bearer token from `Authorization` (scheme case-insensitive), if one was sent. Two
/// `Authorization` headers, `Bearer` without a token, or another scheme are refused.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, CredentialError> {
    authorization(headers, "bearer")
}

/// The token of `Authorization` with `scheme` (lower case), as [`bearer_token`] reads it.
fn authorization<'a>(
    headers: &'a HeaderMap,
    scheme: &str,
) -> Result<Option<&'a str>, CredentialError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::InvalidBearer);
    }
    // Any UTF-8 passes here (cheaper than `to_str` on a long token); a token with bytes outside
    // the JWT alphabet then fails verification like any other forgery.
    let value =
        std::str::from_utf8(value.as_bytes()).map_err(|_| CredentialError::InvalidBearer)?;
    let Some((found, token)) = value.split_once(' ') else {
        return Err(CredentialError::InvalidBearer);
    };
    if !found.eq_ignore_ascii_case(scheme) {
        return Err(CredentialError::OtherScheme);
    }
    // A token with a space in it is not compact JWS and fails verification: no need to look.
    if token.is_empty() {
        return Err(CredentialError::InvalidBearer);
    }
    Ok(Some(token))
}

/// The session cookie's value, if exactly one was sent.
pub fn session_cookie<'a>(
    headers: &'a HeaderMap,
    policy: &CookiePolicy,
) -> Result<Option<&'a str>, CredentialError> {
    // UTF-8 rather than `to_str`'s visible ASCII (cheaper): what is found is then checked as a
    // token of our own shape, which admits nothing else.
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
    match policy.find(values) {
        Presented::None => Ok(None),
        Presented::One(v) => Ok(Some(v)),
        Presented::Ambiguous => Err(CredentialError::AmbiguousCookie),
    }
}

/// The bound cookie's value (DBSC), if exactly one was sent.
pub fn bound_cookie<'a>(headers: &'a HeaderMap, policy: &CookiePolicy) -> Option<&'a str> {
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
    match policy.find_bound(values) {
        Presented::One(v) => Some(v),
        Presented::None | Presented::Ambiguous => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn j21_bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), Ok(None));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), Err(CredentialError::OtherScheme));
        for bad in ["Bearer", "Bearer "] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(
                bearer_token(&h),
                Err(CredentialError::InvalidBearer),
                "{bad}"
            );
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_token(&h), Err(CredentialError::InvalidBearer));
    }

    #[test]
    fn c6_two_session_cookies_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("cloakroom_session=a; cloakroom_session=b"),
        );
        assert_eq!(
            session_cookie(&h, &CookiePolicy::DEV),
            Err(CredentialError::AmbiguousCookie)
        );
    }
}
