//! The session cookie: its name, its attributes, and how it is read back.
//!
//! In production the cookie is `__Host-cloakroom_session=<token>; HttpOnly; Secure;
//! SameSite=Lax; Path=/` with no `Domain`, so a sibling subdomain cannot set or shadow it. Over
//! plain-http localhost (development) it is `cloakroom_session` without `Secure`, because a
//! browser would drop a `Secure` cookie there. `Max-Age` is sent only for "remember me".
//!
//! A deployment whose apps live on sibling hosts (forward-auth for `app.example.com` with
//! cloakroom on `auth.example.com`) scopes the cookie to their parent domain instead:
//! `__Secure-cloakroom_session=<token>; Domain=example.com; …`. Every host of that domain then
//! receives it, which is the point and the price: see [`CookiePolicy::for_domain`].

use std::sync::Arc;
use time::{Duration, OffsetDateTime};

use crate::Session;

/// Whether a session cookie's value is an access JWT (a cookie session started with
/// `cookie: "jwt"`); the opaque session token has no dots.
pub fn holds_jwt(cookie_value: &str) -> bool {
    cookie_value.contains('.')
}

/// The production cookie name.
pub const SESSION_COOKIE: &str = "__Host-cloakroom_session";
/// The name used over plain-http localhost, where `__Host-` cookies cannot be set.
pub const DEV_SESSION_COOKIE: &str = "cloakroom_session";
/// The name of a cookie scoped to a parent domain (`__Host-` forbids `Domain`).
pub const DOMAIN_SESSION_COOKIE: &str = "__Secure-cloakroom_session";

/// The bound cookie of a device-bound session (DBSC), named like the session cookie.
pub const BOUND_COOKIE: &str = "__Host-cloakroom_bound";
/// The bound cookie over plain-http localhost.
pub const DEV_BOUND_COOKIE: &str = "cloakroom_bound";
/// The bound cookie scoped to a parent domain.
pub const DOMAIN_BOUND_COOKIE: &str = "__Secure-cloakroom_bound";

/// What a request's cookies say about the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No session cookie.
    None,
    /// Exactly one.
    One(&'a str),
    /// More than one cookie of that name: refused rather than guessing which one counts.
    Ambiguous,
}

/// How the session cookie is written and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookiePolicy {
    secure: bool,
    /// `Domain`, when the cookie is shared by the hosts of a parent domain.
    domain: Option<Arc<str>>,
}

impl CookiePolicy {
    /// The production policy: `__Host-` prefix and `Secure`, host-only.
    pub const SECURE: Self = Self {
        secure: true,
        domain: None,
    };
    /// Plain-http localhost development: no prefix, no `Secure`.
    pub const DEV: Self = Self {
        secure: false,
        domain: None,
    };

    /// A `Secure` cookie sent to `domain` and every host under it (`__Secure-` prefix, with
    /// `Domain`), so one login serves apps on sibling hosts behind a forward-auth proxy. Every
    /// server of those hosts receives the session token and must be trusted with it (or have
    /// the proxy strip it); a sibling host can also set a cookie of that name (cookie tossing),
    /// for instance to sign the browser into the tosser's own account. The caller
    /// checks that `domain` is a registrable domain that contains the public host.
    pub fn for_domain(domain: &str) -> Self {
        Self {
            secure: true,
            domain: Some(Arc::from(domain.to_ascii_lowercase())),
        }
    }

    /// Whether cookies carry `Secure` (and a `__Host-` or `__Secure-` prefix).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The parent domain the cookie is scoped to, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The cookie's name.
    pub fn name(&self) -> &'static str {
        match (self.secure, &self.domain) {
            (true, Some(_)) => DOMAIN_SESSION_COOKIE,
            (true, None) => SESSION_COOKIE,
            (false, _) => DEV_SESSION_COOKIE,
        }
    }

    /// The bound cookie's name (DBSC).
    pub fn bound_name(&self) -> &'static str {
        match (self.secure, &self.domain) {
            (true, Some(_)) => DOMAIN_BOUND_COOKIE,
            (true, None) => BOUND_COOKIE,
            (false, _) => DEV_BOUND_COOKIE,
        }
    }

    /// The attributes both cookies carry, as `Set-Cookie` writes them (`HttpOnly; …`).
    pub fn attributes_text(&self) -> String {
        match (self.secure, &self.domain) {
            (true, Some(domain)) => {
                format!("HttpOnly; Secure; SameSite=Lax; Path=/; Domain={domain}")
            }
            (true, None) => "HttpOnly; Secure; SameSite=Lax; Path=/".into(),
            (false, _) => "HttpOnly; SameSite=Lax; Path=/".into(),
        }
    }

    fn attributes(&self) -> String {
        format!("; {}", self.attributes_text())
    }

    /// A `Set-Cookie` value carrying a bound cookie that lasts `max_age`.
    pub fn set_bound(&self, value: &str, max_age: Duration) -> String {
        format!(
            "{}={}{}; Max-Age={}",
            self.bound_name(),
            value,
            self.attributes(),
            max_age.whole_seconds().max(0)
        )
    }

    /// A `Set-Cookie` value that removes the bound cookie.
    pub fn clear_bound(&self) -> String {
        format!("{}={}; Max-Age=0", self.bound_name(), self.attributes())
    }

    /// A `Set-Cookie` value carrying `value`; persistent for `max_age` if given (capped at 400
    /// days, rfc6265bis), else a browser-session cookie.
    pub fn set(&self, value: &str, max_age: Option<Duration>) -> String {
        let mut s = format!("{}={}{}", self.name(), value, self.attributes());
        if let Some(age) = max_age {
            let secs = age.whole_seconds().clamp(0, 400 * 24 * 3600);
            s.push_str(&format!("; Max-Age={secs}"));
        }
        s
    }

    /// A `Set-Cookie` value carrying `value` for `session`: persistent until the session's
    /// absolute deadline if it is remembered, else a browser-session cookie.
    pub fn for_session(&self, value: &str, session: &Session, now: OffsetDateTime) -> String {
        let max_age = session.remember.then(|| session.absolute_expires_at - now);
        self.set(value, max_age)
    }

    /// A `Set-Cookie` value that removes the cookie.
    pub fn clear(&self) -> String {
        format!("{}={}; Max-Age=0", self.name(), self.attributes())
    }

    /// Finds the session cookie among all `Cookie` header values (several header lines are all
    /// read, rfc6265bis K-6). Names match exactly: `__host-…` or an unprefixed copy planted by a
    /// sibling domain is not ours and is ignored.
    pub fn find<'a>(&self, headers: impl IntoIterator<Item = &'a str>) -> Presented<'a> {
        find_named(self.name(), headers)
    }

    /// Finds the bound cookie, as [`CookiePolicy::find`] the session cookie.
    pub fn find_bound<'a>(&self, headers: impl IntoIterator<Item = &'a str>) -> Presented<'a> {
        find_named(self.bound_name(), headers)
    }
}

fn find_named<'a>(wanted: &str, headers: impl IntoIterator<Item = &'a str>) -> Presented<'a> {
    let mut found = Presented::None;
    for header in headers {
        for pair in header.split(';') {
            // Header values that reach here are visible ASCII (`to_str`), so ASCII trimming is
            // the whole of it.
            let Some((name, value)) = pair.trim_ascii().split_once('=') else {
                continue;
            };
            if name == wanted {
                found = match found {
                    Presented::None => Presented::One(value),
                    _ => return Presented::Ambiguous,
                };
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c1_attributes_are_exact() {
        let c = CookiePolicy::SECURE.set("abc", None);
        assert_eq!(
            c,
            "__Host-cloakroom_session=abc; HttpOnly; Secure; SameSite=Lax; Path=/"
        );
        let r = CookiePolicy::SECURE.set("abc", Some(Duration::days(30)));
        assert!(r.ends_with("; Max-Age=2592000"));
        let capped = CookiePolicy::SECURE.set("abc", Some(Duration::days(1000)));
        assert!(capped.ends_with("; Max-Age=34560000"));
        assert!(!c.contains("Domain"));
    }

    #[test]
    fn a_domain_cookie_is_secure_prefixed_and_scoped() {
        let p = CookiePolicy::for_domain("Example.COM");
        assert_eq!(
            p.set("abc", None),
            "__Secure-cloakroom_session=abc; HttpOnly; Secure; SameSite=Lax; Path=/; \
             Domain=example.com"
        );
        assert_eq!(
            p.clear(),
            "__Secure-cloakroom_session=; HttpOnly; Secure; SameSite=Lax; Path=/; \
             Domain=example.com; Max-Age=0"
        );
        assert_eq!(
            p.find(["__Secure-cloakroom_session=T; __Host-cloakroom_session=U"]),
            Presented::One("T")
        );
        assert_eq!(p.find(["__Host-cloakroom_session=U"]), Presented::None);
    }

    #[test]
    fn c4_clear_expires_the_same_cookie() {
        assert_eq!(
            CookiePolicy::SECURE.clear(),
            "__Host-cloakroom_session=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0"
        );
    }

    #[test]
    fn c5_c6_c7_lookup_rules() {
        let p = CookiePolicy::SECURE;
        assert_eq!(
            p.find(["a=1; __Host-cloakroom_session=T"]),
            Presented::One("T")
        );
        assert_eq!(
            p.find(["a=1", "__Host-cloakroom_session=T"]),
            Presented::One("T")
        );
        assert_eq!(
            p.find(["__Host-cloakroom_session=A; __Host-cloakroom_session=B"]),
            Presented::Ambiguous
        );
        assert_eq!(
            p.find(["__Host-cloakroom_session=A", "__Host-cloakroom_session=B"]),
            Presented::Ambiguous
        );
        for tossed in [
            "__host-cloakroom_session=T",
            "__HOST-cloakroom_session=T",
            "cloakroom_session=T",
        ] {
            assert_eq!(p.find([tossed]), Presented::None, "{tossed}");
        }
    }
}
