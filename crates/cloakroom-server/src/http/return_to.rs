//! Where a browser may be sent back to on another host (`rd=`): after logging in, after logging
//! out, and from forward-auth's redirect to the login page. Only `https` URLs (or `http` when
//! cloakroom itself is served over plain http) on cloakroom's own host or on a host of
//! `--allowed-return-hosts` qualify; anything else falls back to the caller's default. Paths on
//! this site (`next=`) follow their own, stricter rule (`pages::safe_next`).

use axum::http::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use url::Url;

/// One entry of `--allowed-return-hosts`: a host name (`app.example.com`), or every host under a
/// domain (`*.example.com`, which does not include `example.com` itself). Any port matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// The name, or for a wildcard the suffix with its leading dot (`.example.com`).
    name: String,
    wildcard: bool,
}

impl HostPattern {
    /// Whether `host` (lower case, as a parsed URL gives it) is one this pattern allows.
    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.name.len() && host.ends_with(&self.name)
        } else {
            host == self.name
        }
    }

    /// The pattern as a CSP host source for `scheme`, any port (`https://*.example.com:*`).
    fn csp_source(&self, scheme: &str) -> String {
        let star = if self.wildcard { "*" } else { "" };
        format!("{scheme}://{star}{}:*", self.name)
    }
}

/// Whether `name` is a host name: dot-separated labels of letters, digits and inner hyphens.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !is_host_name(name) {
            return Err(format!(
                "{s:?} is not a host name or *.domain (app.example.com, *.example.com)"
            ));
        }
        if wildcard && !name.contains('.') {
            return Err(format!(
                "{s:?} would allow every host of a top-level domain; name a domain under it"
            ));
        }
        Ok(Self {
            name: if wildcard {
                format!(".{name}")
            } else {
                name.to_string()
            },
            wildcard,
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The return-URL rule of one server: its own origin and the allowed hosts.
#[derive(Debug, Clone)]
pub struct ReturnTo {
    /// `https://auth.example.com` (with a port when not the scheme's default).
    own_origin: String,
    own_scheme: String,
    own_host: String,
    hosts: Vec<HostPattern>,
    page_csp: HeaderValue,
}

/// The policy of the pages whose forms may redirect to an allowed host (login, logout): the
/// pages' policy with `form-action` widened to those hosts, which Chromium enforces on the
/// redirect that follows a form post.
fn csp_with_form_action(sources: &str) -> String {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
         connect-src 'self'; form-action 'self'{sources}; frame-ancestors 'none'; base-uri 'none'"
    )
}

impl ReturnTo {
    /// The rule for a server whose public origin is `own_origin` (`https://auth.example.com`,
    /// as `Url::origin` serialises it).
    pub fn new(own_origin: &str, hosts: Vec<HostPattern>) -> Self {
        let (scheme, authority) = own_origin
            .split_once("://")
            .unwrap_or(("https", own_origin));
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        let sources: String = hosts
            .iter()
            .map(|h| format!(" {}", h.csp_source(scheme)))
            .collect();
        // Patterns are host names, so the policy is always a valid header; were it not, the
        // pages' own (stricter) policy stands.
        let page_csp = HeaderValue::from_str(&csp_with_form_action(&sources))
            .unwrap_or_else(|_| HeaderValue::from_static(crate::http::pages::PAGE_CSP));
        Self {
            own_origin: own_origin.to_string(),
            own_scheme: scheme.to_string(),
            own_host: host.to_string(),
            hosts,
            page_csp,
        }
    }

    /// The Content-Security-Policy of the pages that may redirect to an allowed host.
    pub fn page_csp(&self) -> &HeaderValue {
        &self.page_csp
    }

    /// `raw` as a URL a browser may be redirected to, or `None`. Refused: anything over 2 KiB or
    /// with spaces, control characters, non-ASCII or backslashes anywhere; a scheme other than
    /// https (or http when cloakroom is plain http); user info (`https://good@evil`); an
    /// authority that is not exactly `host[:port]` as written (percent-encoding, IDNA tricks);
    /// and a host that is not cloakroom's own or an allowed one. The URL returned is the parsed
    /// and re-serialised one, never the raw text.
    pub fn check(&self, raw: &str) -> Option<Url> {
        if raw.len() > 2048 || !raw.bytes().all(|b| b.is_ascii_graphic()) || raw.contains('\\') {
            return None;
        }
        let url = Url::parse(raw).ok()?;
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.own_scheme == "http",
            _ => false,
        };
        if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let written = raw
            .get(url.scheme().len() + 3..)?
            .split(['/', '?', '#'])
            .next()?;
        let default_port = url
            .port_or_known_default()
            .map(|port| format!("{host}:{port}"));
        if !raw[url.scheme().len()..].starts_with("://")
            || !(written.eq_ignore_ascii_case(&authority)
                || default_port.is_some_and(|d| written.eq_ignore_ascii_case(&d)))
        {
            return None;
        }
        let own = self.own_host == host;
        (own || self.hosts.iter().any(|p| p.matches(host))).then_some(url)
    }

    /// Whether `url` is on cloakroom's own origin.
    pub fn is_own(&self, url: &Url) -> bool {
        url.origin().ascii_serialization() == self.own_origin
    }

    /// The login page's absolute URL that returns to `target` afterwards.
    pub fn login_url(&self, target: &Url) -> String {
        self.page_url("/login", target)
    }

    /// The absolute URL of cloakroom's page `path` (`/login`, `/step-up`) that returns to
    /// `target` afterwards.
    pub fn page_url(&self, path: &str, target: &Url) -> String {
        let encoded: String =
            url::form_urlencoded::byte_serialize(target.as_str().as_bytes()).collect();
        format!("{}{path}?rd={encoded}", self.own_origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ReturnTo {
        let hosts = ["*.example.test", "wiki.other.test"]
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        ReturnTo::new("https://auth.example.test", hosts)
    }

    #[test]
    fn patterns_parse_strictly() {
        for good in [
            "app.example.com",
            "*.example.com",
            "APP.Example.com",
            "localhost",
        ] {
            assert!(good.parse::<HostPattern>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "*",
            "*.com",
            "*.*.example.com",
            "app.*.example.com",
            "https://app.example.com",
            "app.example.com/",
            "app.example.com:443",
            "-app.example.com",
            "app..example.com",
            "app.example.com.",
            ".example.com",
            "exa mple.com",
            "ex\u{e4}mple.com",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "*.Example.com".parse::<HostPattern>().unwrap().to_string(),
            "*.example.com"
        );
    }

    #[test]
    fn allowed_hosts_and_cloakroom_itself_pass() {
        let r = rule();
        for (good, as_sent) in [
            (
                "https://app.example.test/page?x=1&y=2#frag",
                "https://app.example.test/page?x=1&y=2#frag",
            ),
            (
                "https://app.example.test:8443/",
                "https://app.example.test:8443/",
            ),
            ("https://a.b.example.test", "https://a.b.example.test/"),
            ("https://wiki.other.test/x", "https://wiki.other.test/x"),
            (
                "https://auth.example.test/settings",
                "https://auth.example.test/settings",
            ),
            ("HTTPS://APP.example.test/A", "https://app.example.test/A"),
            ("https://app.example.test:443/", "https://app.example.test/"),
        ] {
            assert_eq!(
                r.check(good).map(|u| u.to_string()).as_deref(),
                Some(as_sent),
                "{good}"
            );
        }
    }

    #[test]
    fn look_alikes_and_tricks_are_refused() {
        let r = rule();
        for bad in [
            "https://example.test/",
            "https://example.test.evil.test/",
            "https://evil.test/.example.test",
            "https://evil.test/app.example.test",
            "https://evil.test?.example.test",
            "https://evil.test#.example.test",
            "https://app.example.test@evil.test/",
            "https://app.example.test:pw@evil.test/",
            "https://user@app.example.test/",
            "https://evil.test\\.example.test/",
            "https:\\\\evil.test/",
            "https:/\\evil.test/",
            "https://evil.test%2f.example.test/",
            "https://evil.test%2F@app.example.test/",
            "https://app%2eexample.test/",
            "https:%2f%2fapp.example.test/",
            "https:app.example.test/",
            "https:/app.example.test/",
            "//app.example.test/",
            "/dashboard",
            "http://app.example.test/",
            "javascript:alert(1)//app.example.test",
            "JavaScript:alert(1)",
            "data:text/html,hi",
            "ftp://app.example.test/",
            "https://app.example.test./",
            "https://xn--pp-xia.example.test.evil.test/",
            "https://app.example.test/ x",
            "https://app.example.test/\tx",
            "https://app.example.test/\r\nLocation: https://evil.test",
            "https://\u{430}pp.example.test/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://wiki.other.test.evil.test/",
            "https://other.test/",
        ] {
            assert_eq!(r.check(bad), None, "{bad:?}");
        }
        assert_eq!(
            r.check(&format!("https://app.example.test/{}", "a".repeat(2048))),
            None
        );
    }

    #[test]
    fn plain_http_only_when_cloakroom_is_plain_http() {
        let dev = ReturnTo::new(
            "http://localhost:8080",
            vec!["app.localhost".parse().unwrap()],
        );
        assert!(dev.check("http://app.localhost:3000/x").is_some());
        assert!(dev.check("https://app.localhost/x").is_some());
        assert!(rule().check("http://app.example.test/").is_none());
    }

    #[test]
    fn the_login_url_and_csp_name_the_allowed_hosts() {
        let r = rule();
        let target = r.check("https://app.example.test/p?a=1&b=2").unwrap();
        assert_eq!(
            r.login_url(&target),
            "https://auth.example.test/login?rd=https%3A%2F%2Fapp.example.test%2Fp%3Fa%3D1%26b%3D2"
        );
        let csp = r.page_csp().to_str().unwrap();
        assert!(
            csp.contains("form-action 'self' https://*.example.test:* https://wiki.other.test:*;"),
            "{csp}"
        );
        let none = ReturnTo::new("https://auth.example.test", vec![]);
        assert!(none
            .page_csp()
            .to_str()
            .unwrap()
            .contains("form-action 'self';"));
    }
}
