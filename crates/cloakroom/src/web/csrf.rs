//! Cross-site request forgery checks for unsafe methods.
//!
//! Two layers. Every unsafe request that a browser marks as cross-site (`Sec-Fetch-Site:
//! cross-site` or `same-site`, or an `Origin` that is not ours, including `null`) is refused,
//! whoever it claims to be. A request authenticated by the session cookie must also *prove* it
//! is same-origin: `Sec-Fetch-Site: same-origin`, or an `Origin` of ours, or failing both a
//! `Referer` on our origin. With none of the three it is refused (fail-safe): every current
//! browser sends at least one of them, and non-browser clients can send `Origin`.
//! JSON routes also refuse the content types an HTML form can send (415), so a cross-site form
//! cannot reach them even through an older browser.

use axum::http::{HeaderMap, Method};

/// Whether `method` can change state.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn origin_of_referer(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer).ok()?;
    Some(url.origin().ascii_serialization())
}

/// The browser says the request comes from elsewhere.
pub fn looks_cross_site(headers: &HeaderMap, origins: &[String]) -> bool {
    if let Some(site) = header(headers, "sec-fetch-site") {
        if matches!(site, "cross-site" | "same-site") {
            return true;
        }
    }
    match header(headers, "origin") {
        Some(origin) => !origins.iter().any(|o| o == origin),
        None => headers.contains_key("origin"), // present but not text
    }
}

/// The request proves it comes from one of `origins`.
pub fn proves_same_origin(headers: &HeaderMap, origins: &[String]) -> bool {
    if looks_cross_site(headers, origins) {
        return false;
    }
    if header(headers, "sec-fetch-site") == Some("same-origin") {
        return true;
    }
    if let Some(origin) = header(headers, "origin") {
        return origins.iter().any(|o| o == origin);
    }
    header(headers, "referer")
        .and_then(origin_of_referer)
        .is_some_and(|o| origins.contains(&o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn x1_x2_origin_rules() {
        let ours = vec!["https://auth.example.com".to_string()];
        assert!(proves_same_origin(
            &h(&[("sec-fetch-site", "same-origin")]),
            &ours
        ));
        assert!(proves_same_origin(
            &h(&[("origin", "https://auth.example.com")]),
            &ours
        ));
        assert!(proves_same_origin(
            &h(&[("referer", "https://auth.example.com/settings")]),
            &ours
        ));
        for bad in [
            h(&[("origin", "https://evil.example")]),
            h(&[("origin", "null")]),
            h(&[("origin", "https://auth.example.com.evil")]),
            h(&[("sec-fetch-site", "cross-site")]),
            h(&[("sec-fetch-site", "same-site")]),
            h(&[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ]),
            h(&[("referer", "https://evil.example/")]),
            h(&[]),
        ] {
            assert!(!proves_same_origin(&bad, &ours), "{bad:?}");
        }
    }
}
