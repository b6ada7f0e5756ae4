//! The pages over plain HTTP: redirects, `next=` rules, CSRF tokens, headers, and errors shown
//! in plain words. The browser tests (browser.rs) check the same journey in Chromium.

use crate::support::*;
use reqwest::{Method, Response};

/// A page client: the pre-session CSRF cookie and token from `/login`.
async fn form_token(t: &TestServer, path: &str) -> (String, String) {
    let res = t.http.get(t.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("cloakroom_csrf="))
        .expect("a CSRF cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = res.text().await.unwrap();
    (cookie, hidden(&body, "csrf"))
}

/// The value of the hidden field `name` in a page.
pub(crate) fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_string()
}

pub(crate) async fn post_form(
    t: &TestServer,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> Response {
    t.http
        .post(t.url(path))
        .header("origin", &t.origin)
        .header("cookie", cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
}

pub(crate) fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Logs in through the login form with `next`; returns the response.
async fn form_login(t: &TestServer, email: &str, next: &str) -> Response {
    let (cookie, csrf) = form_token(t, "/login").await;
    post_form(
        t,
        "/login",
        &cookie,
        &[
            ("csrf", &csrf),
            ("email", email),
            ("password", PASSWORD),
            ("next", next),
        ],
    )
    .await
}

#[tokio::test]
async fn protected_pages_redirect_to_login_with_next() {
    let t = TestServer::start().await;
    for (page, next) in [
        ("/dashboard", "%2Fdashboard"),
        ("/profile", "%2Fprofile"),
        ("/settings?x=1", "%2Fsettings%3Fx%3D1"),
    ] {
        let res = t.http.get(t.url(page)).send().await.unwrap();
        assert_eq!(res.status(), 303, "{page}");
        assert_eq!(location(&res), format!("/login?next={next}"));
    }
    // A forged or ended session is no better than none.
    let res = t
        .http
        .get(t.url("/dashboard"))
        .header("cookie", format!("cloakroom_session={}", "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn x6_next_accepts_only_paths_on_this_site() {
    let t = TestServer::start().await;
    t.signup("next@example.com", PASSWORD).await;
    for good in ["/settings", "/profile?tab=1"] {
        let res = form_login(&t, "next@example.com", good).await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), good);
    }
    for bad in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "http:evil.example",
        "/%2F%2Fevil.example",
        "/%5cevil.example",
        "%2F%2Fevil.example",
        "javascript:alert(1)",
        "/\r\nSet-Cookie: x=y",
        " //evil.example",
    ] {
        let res = form_login(&t, "next@example.com", bad).await;
        assert_eq!(res.status(), 303, "{bad:?}");
        assert_eq!(location(&res), "/dashboard", "{bad:?}");
    }
    // The login page does not even carry a refused `next` into its form.
    let res = t
        .http
        .get(t.url("/login?next=%2F%2Fevil.example"))
        .send()
        .await
        .unwrap();
    assert!(!res.text().await.unwrap().contains("evil.example"));
}

#[tokio::test]
async fn login_errors_are_plain_keep_the_email_and_never_the_password() {
    let t = TestServer::start().await;
    t.signup("plain@example.com", PASSWORD).await;
    let (cookie, csrf) = form_token(&t, "/login").await;
    let wrong = "not-the-right-password-42";
    let res = post_form(
        &t,
        "/login",
        &cookie,
        &[
            ("csrf", &csrf),
            ("email", "plain@example.com"),
            ("password", wrong),
        ],
    )
    .await;
    assert_eq!(res.status(), 401);
    assert!(res
        .headers()
        .get("set-cookie")
        .is_none_or(|c| !c.to_str().unwrap().contains("session")));
    let body = res.text().await.unwrap();
    assert!(body.contains("The email or password is wrong."), "{body}");
    assert!(body.contains("value=\"plain@example.com\""));
    assert!(!body.contains(wrong));
    // Signup errors too, with HTML in the email escaped.
    let (cookie, csrf) = form_token(&t, "/signup").await;
    let res = post_form(
        &t,
        "/signup",
        &cookie,
        &[
            ("csrf", &csrf),
            ("email", "<b>x</b>@example.com"),
            ("password", "password"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(!body.contains("<b>x</b>"), "escaped");
    assert!(body.contains("role=\"alert\""));
    let res = post_form(
        &t,
        "/signup",
        &cookie,
        &[
            ("csrf", &csrf),
            ("email", "new@example.com"),
            ("password", "password"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(body.contains("commonly used"), "{body}");
    assert!(body.contains("value=\"new@example.com\""));
}

#[tokio::test]
async fn x4_forms_without_their_token_are_refused() {
    let t = TestServer::start().await;
    let token = t.user("csrf@example.com").await;
    let session = format!("cloakroom_session={token}");
    // Login and signup: the double-submit token must match its cookie.
    let (cookie, _) = form_token(&t, "/login").await;
    for csrf in ["", "forged", &"A".repeat(43)] {
        let res = post_form(
            &t,
            "/login",
            &cookie,
            &[
                ("csrf", csrf),
                ("email", "csrf@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
        assert_eq!(res.status(), 403, "{csrf:?}");
    }
    // Signed-in forms: the token is bound to the session.
    let page = t.get("/settings", &token).await.text().await.unwrap();
    let good = hidden(&page, "csrf");
    let other = t.login("csrf@example.com", PASSWORD).await;
    let other_csrf = hidden(
        &t.get("/settings", &other).await.text().await.unwrap(),
        "csrf",
    );
    assert_ne!(good, other_csrf, "each session has its own token");
    for csrf in ["", "forged", other_csrf.as_str()] {
        let res = post_form(&t, "/logout", &session, &[("csrf", csrf)]).await;
        assert_eq!(res.status(), 403, "{csrf:?}");
    }
    assert_eq!(t.whoami_status(&token).await, 200, "still logged in");
    // Right token, foreign origin: refused before any handler, with a page.
    let res = t
        .http
        .post(t.url("/settings/logout-everywhere"))
        .header("origin", "https://evil.example")
        .header("accept", "text/html")
        .header("cookie", &session)
        .form(&[("csrf", good.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("did not come from this site"));
    assert_eq!(t.whoami_status(&token).await, 200);
    // Right token, our origin: logged out, cookie cleared, sent to the login page.
    let res = post_form(&t, "/logout", &session, &[("csrf", &good)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login?done=logged_out");
    assert!(set_cookie(res.headers()).unwrap().contains("Max-Age=0"));
    assert_eq!(t.whoami_status(&token).await, 401);
    // A field sent twice is refused.
    let res = post_form(
        &t,
        "/logout",
        &format!("cloakroom_session={other}"),
        &[("csrf", &other_csrf), ("csrf", &other_csrf)],
    )
    .await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn pages_send_no_store_and_a_strict_policy() {
    let t = TestServer::start().await;
    let token = t.user("headers@example.com").await;
    for page in ["/dashboard", "/profile", "/settings", "/login", "/signup"] {
        let res = if page.starts_with("/log") || page.starts_with("/sign") {
            t.http.get(t.url(page)).send().await.unwrap()
        } else {
            t.get(page, &token).await
        };
        assert_eq!(res.status(), 200, "{page}");
        let h = res.headers();
        assert_eq!(h["cache-control"], "no-store", "{page}");
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        // Scripts: the pages' own file only (passkeys), never inline.
        assert!(
            !csp.contains("unsafe") && csp.contains("script-src 'self';"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = res.text().await.unwrap();
        assert!(
            body.matches("<script").count()
                == body
                    .matches("<script src=\"/static/passkeys.js\" defer></script>")
                    .count()
                && !body.contains("style=\""),
            "{page}"
        );
        assert!(body.contains("<html lang=\"en\">"));
    }
    let css = t.http.get(t.url("/static/style.css")).send().await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn settings_end_devices_change_password_and_log_out_everywhere() {
    let t = TestServer::start().await;
    let me = t.user("set@example.com").await;
    let phone = t.login("set@example.com", PASSWORD).await;
    let session = format!("cloakroom_session={me}");
    let page = t.get("/settings", &me).await.text().await.unwrap();
    assert_eq!(page.matches("/end\"").count(), 2, "both devices listed");
    assert!(page.contains("this device"));
    let csrf = hidden(&page, "csrf");
    let phone_id = t
        .get("/auth/whoami", &phone)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Ending another device needs a fresh login: past 10 minutes it is refused, in words.
    t.clock.advance(time::Duration::minutes(11));
    let res = post_form(
        &t,
        &format!("/settings/sessions/{phone_id}/end"),
        &session,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(res.status(), 403);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("within the last 10 minutes"));
    assert_eq!(t.whoami_status(&phone).await, 200);
    // Changing the password: a mismatch is explained; then it works and ends the phone.
    let res = post_form(
        &t,
        "/settings/password",
        &session,
        &[
            ("csrf", &csrf),
            ("current_password", PASSWORD),
            ("new_password", "a brand new passphrase"),
            ("new_password_again", "a brand new passphrase!"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("not the same"));
    let res = post_form(
        &t,
        "/settings/password",
        &session,
        &[
            ("csrf", &csrf),
            ("current_password", PASSWORD),
            ("new_password", "a brand new passphrase"),
            ("new_password_again", "a brand new passphrase"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/settings?done=password");
    let renewed = session_token(res.headers()).expect("a new session token");
    assert_eq!(t.whoami_status(&phone).await, 401);
    assert_eq!(t.whoami_status(&renewed).await, 200);
    let page = t
        .get("/settings?done=password", &renewed)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Your password has been changed."));
    // Log out everywhere, with the password since the login is old.
    let csrf = hidden(&page, "csrf");
    let res = t
        .http
        .post(t.url("/settings/logout-everywhere"))
        .header("origin", &t.origin)
        .header("cookie", format!("cloakroom_session={renewed}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("current_password", "a brand new passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login?done=everywhere");
    assert_eq!(t.whoami_status(&renewed).await, 401);
    let res = t
        .req(Method::GET, "/login?done=everywhere")
        .send()
        .await
        .unwrap();
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("logged out on every device"));
}
