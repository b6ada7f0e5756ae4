//! Apps on other hosts (`--cookie-domain`, `--allowed-return-hosts`) spoken to over HTTP, as a
//! proxy and a browser would: forward-auth sends a browser to the login page with `rd=` the page
//! it asked for, login and logout send it back there, and every way of pointing `rd=` elsewhere
//! lands on `/dashboard` instead. The journey through real proxies in Chromium is in
//! multihost.rs.

use crate::support::*;
use reqwest::Response;

const AUTH: &str = "https://auth.example.test";

/// cloakroom as `https://auth.example.test`, sharing its cookie with `example.test`, trusting
/// the test client as a proxy when `trusted`.
async fn server(trusted: bool) -> TestServer {
    TestServer::start_with(|r| {
        r.public_url = Some(AUTH.into());
        r.cookie_domain = Some("example.test".into());
        r.allowed_return_hosts = Some(vec![
            "*.example.test".parse().unwrap(),
            "wiki.other.test".parse().unwrap(),
        ]);
        if trusted {
            r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
        }
    })
    .await
}

/// The attacks on `rd=` of the issue and a few more: none may leave the allowed hosts.
const HOSTILE: &[&str] = &[
    "https://evil.test/",
    "https://example.test.evil.test/",
    "https://app.example.test.evil.test/",
    "https://evil.test/.example.test",
    "https://evil.test?.example.test",
    "https://app.example.test@evil.test/",
    "https://example.test@evil.test",
    "https://evil.test\\.example.test/",
    "https:\\\\evil.test",
    "https://evil.test%2f.example.test/",
    "https:%2f%2fevil.test",
    "https://evil.test%2F%2Eexample.test/",
    "//evil.test/",
    "javascript:alert(document.cookie)",
    "javascript://app.example.test/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http://app.example.test/",
    "https://app.example.test/\r\nSet-Cookie: x=y",
];

fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Asks `/auth/verify` as a proxy would for `host` and `uri`, with the browser's `Accept`.
async fn verify_as_proxy(t: &TestServer, host: &str, uri: &str, html: bool) -> Response {
    t.http
        .get(t.url("/auth/verify"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", uri)
        .header(
            "accept",
            if html {
                "text/html"
            } else {
                "application/json"
            },
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn verify_sends_browsers_to_the_login_page_with_the_original_url() {
    let t = server(true).await;
    let res = verify_as_proxy(&t, "app.example.test", "/page?x=1&y=2", true).await;
    assert_eq!(res.status(), 302);
    let expected = format!(
        "{AUTH}/login?rd={}",
        encode("https://app.example.test/page?x=1&y=2")
    );
    assert_eq!(location(&res), expected);
    // For nginx, which redirects itself: the 401, with the same place in Location.
    let res = verify_as_proxy(&t, "app.example.test", "/page?x=1&y=2", false).await;
    assert_eq!(res.status(), 401);
    assert_eq!(location(&res), expected);
    // X-Original-URL, as the nginx example sends it.
    let res = t
        .http
        .get(t.url("/auth/verify"))
        .header("x-original-url", "https://wiki.other.test:8443/a?b=c")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&res),
        format!(
            "{AUTH}/login?rd={}",
            encode("https://wiki.other.test:8443/a?b=c")
        )
    );
    // A host outside the allow-list, or a look-alike: the relative login page, never a URL of
    // that host.
    for host in [
        "evil.test",
        "example.test.evil.test",
        "app.example.test.evil.test",
        "app.example.test@evil.test",
        "evil.test/.example.test",
        "evil.test\\.example.test",
    ] {
        let res = verify_as_proxy(&t, host, "/page", true).await;
        assert_eq!(res.status(), 302, "{host}");
        assert_eq!(location(&res), "/login?next=%2Fpage", "{host}");
        let res = verify_as_proxy(&t, host, "/page", false).await;
        assert_eq!(res.status(), 401, "{host}");
        assert!(res.headers().get("location").is_none(), "{host}");
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_host_from_an_untrusted_client_shapes_no_redirect() {
    let t = server(false).await;
    let res = verify_as_proxy(&t, "app.example.test", "/page", true).await;
    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), "/login?next=%2F");
    let res = t
        .http
        .get(t.url("/auth/verify"))
        .header("x-original-url", "https://app.example.test/page")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("location").is_none());
}

/// The pre-session CSRF cookie and token of `/login?…`, and the page.
async fn login_form(t: &TestServer, query: &str) -> (String, String, String, String) {
    let res = t
        .http
        .get(t.url(&format!("/login{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-cloakroom_csrf="))
        .expect("a CSRF cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = res.text().await.unwrap();
    let csrf = hidden(&body, "csrf").unwrap();
    (cookie, csrf, body, csp)
}

fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    Some(body[start..].split('"').next()?.to_string())
}

async fn form_login(t: &TestServer, email: &str, rd: &str) -> Response {
    let (cookie, csrf, _, _) = login_form(t, "").await;
    t.http
        .post(t.url("/login"))
        .header("origin", AUTH)
        .header("cookie", cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", PASSWORD),
            ("rd", rd),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_returns_to_allowed_hosts_only() {
    let t = server(true).await;
    assert_eq!(t.signup("rd@example.com", PASSWORD).await.status(), 201);

    // The form carries an allowed rd, and its policy lets the post end on that host.
    let target = "https://app.example.test/page?x=1&y=2";
    let (_, _, body, csp) = login_form(&t, &format!("?rd={}", encode(target))).await;
    assert_eq!(
        hidden(&body, "rd").as_deref(),
        Some("https://app.example.test/page?x=1&amp;y=2")
    );
    assert!(
        csp.contains("form-action 'self' https://*.example.test:* https://wiki.other.test:*;"),
        "{csp}"
    );
    let res = form_login(&t, "rd@example.com", target).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), target);
    let set = set_cookie(res.headers()).unwrap();
    assert!(
        set.starts_with("__Secure-cloakroom_session=")
            && set.contains("; Secure")
            && set.contains("; HttpOnly")
            && set.ends_with("; Domain=example.test"),
        "{set}"
    );

    for bad in HOSTILE {
        let (_, _, body, _) = login_form(&t, &format!("?rd={}", encode(bad))).await;
        assert_eq!(hidden(&body, "rd"), None, "{bad:?} reached the form");
        let res = form_login(&t, "rd@example.com", bad).await;
        assert_eq!(res.status(), 303, "{bad:?}");
        assert_eq!(location(&res), "/dashboard", "{bad:?}");
    }
}

#[tokio::test]
async fn a_logout_link_from_an_app_asks_then_ends_the_session_everywhere() {
    let t = server(true).await;
    assert_eq!(t.signup("out@example.com", PASSWORD).await.status(), 201);
    let res = form_login(&t, "out@example.com", "").await;
    let token = session_token(res.headers()).unwrap();
    let cookie = format!("__Secure-cloakroom_session={token}");
    let verify = |host: &'static str| {
        t.http
            .get(t.url("/auth/verify"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", host)
            .header("x-forwarded-uri", "/")
            .header("cookie", &cookie)
            .send()
    };
    for host in ["app.example.test", "other.example.test"] {
        assert_eq!(verify(host).await.unwrap().status(), 200, "{host}");
    }

    // The link a page on app.example.test shows: a question, not a logout.
    let back = "https://app.example.test/bye";
    let res = t
        .http
        .get(t.url(&format!("/logout?rd={}", encode(back))))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("https://*.example.test:*"));
    let body = res.text().await.unwrap();
    assert_eq!(hidden(&body, "rd").as_deref(), Some(back));
    let csrf = hidden(&body, "csrf").unwrap();
    for host in ["app.example.test", "other.example.test"] {
        assert_eq!(
            verify(host).await.unwrap().status(),
            200,
            "still in on {host}"
        );
    }

    // A post from another host, or without the form's token, ends nothing.
    let res = t
        .http
        .post(t.url("/logout"))
        .header("origin", "https://app.example.test")
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("rd", back)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = t
        .http
        .post(t.url("/logout"))
        .header("origin", AUTH)
        .header("cookie", &cookie)
        .form(&[("csrf", "forged"), ("rd", back)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(verify("app.example.test").await.unwrap().status(), 200);

    // The button: the session ends for every host at once, and the browser goes back.
    let res = t
        .http
        .post(t.url("/logout"))
        .header("origin", AUTH)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("rd", back)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), back);
    let cleared = set_cookie(res.headers()).unwrap();
    assert!(
        cleared.starts_with("__Secure-cloakroom_session=;")
            && cleared.contains("Domain=example.test")
            && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(res.headers()["clear-site-data"], "\"cache\"");
    for host in ["app.example.test", "other.example.test"] {
        assert_eq!(verify(host).await.unwrap().status(), 401, "{host}");
    }

    // Signed out, the link goes straight back; a hostile rd goes nowhere near it.
    let res = t
        .http
        .get(t.url(&format!("/logout?rd={}", encode(back))))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), back);
    for bad in HOSTILE {
        let res = t
            .http
            .get(t.url(&format!("/logout?rd={}", encode(bad))))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&res), "/login?done=logged_out", "{bad:?}");
    }
}

#[tokio::test]
async fn the_host_only_cookie_is_not_the_shared_one() {
    // A deployment without --cookie-domain keeps the `__Host-` cookie, and a `__Secure-` one
    // tossed in by a sibling host is not read.
    let t = TestServer::start_with(|r| r.public_url = Some(AUTH.into())).await;
    let token = {
        assert_eq!(t.signup("h@example.com", PASSWORD).await.status(), 201);
        let res = t
            .http
            .post(t.url("/auth/login"))
            .header("origin", AUTH)
            .json(&serde_json::json!({"email": "h@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let set = set_cookie(res.headers()).unwrap();
        assert!(set.starts_with("__Host-cloakroom_session=") && !set.contains("Domain"));
        session_token(res.headers()).unwrap()
    };
    let whoami = |cookie: String| {
        t.http
            .get(t.url("/auth/whoami"))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(
        whoami(format!("__Host-cloakroom_session={token}"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        whoami(format!("__Secure-cloakroom_session={token}"))
            .await
            .unwrap()
            .status(),
        401
    );
}
