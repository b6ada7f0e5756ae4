//! Step-up (RFC 9470): `/auth/verify?aal=2&max_age=S` refuses a session that is too weak or too
//! old, with the challenge a client can act on, and sends a browser to `/step-up`;
//! `/auth/reauthenticate` and the step-up page prove the user again and continue in a new
//! session. The same through real nginx is in proxies.rs.

use crate::mfa::{enroll, post_json};
use crate::support::*;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use time::Duration;

async fn verify(t: &TestServer, query: &str, cookie: &str, html: bool) -> Response {
    let rb = t.with_cookie(t.req(Method::GET, &format!("/auth/verify{query}")), cookie);
    let rb = if html {
        rb.header("accept", "text/html")
    } else {
        rb
    };
    rb.send().await.unwrap()
}

fn challenge(res: &Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn verify_asks_for_the_level_and_age_it_is_given() {
    let t = TestServer::start().await;
    let cookie = t.user("step@example.com").await;
    assert_eq!(
        verify(&t, "?max_age=300", &cookie, false).await.status(),
        200
    );
    assert_eq!(
        verify(&t, "?aal=1&role=user", &cookie, false)
            .await
            .status(),
        200
    );
    t.clock.advance(Duration::seconds(301));
    let res = verify(&t, "?max_age=300", &cookie, false).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        challenge(&res),
        "Bearer error=\"insufficient_user_authentication\", error_description=\"a stronger or \
         more recent authentication is required\", acr_values=\"aal1\", max_age=300"
    );
    assert_eq!(error_code(res).await, "insufficient_user_authentication");
    let res = verify(&t, "?aal=2", &cookie, false).await;
    assert_eq!(res.status(), 401);
    assert!(
        challenge(&res).ends_with("acr_values=\"aal2\""),
        "{}",
        challenge(&res)
    );
    let res = verify(&t, "?aal=aal2&max_age=60", &cookie, true).await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        "/step-up?next=%2F&aal=aal2&max_age=60"
    );
    for bad in ["?aal=3", "?aal=", "?max_age=-1", "?max_age=soon"] {
        let res = verify(&t, bad, &cookie, false).await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    // The role is still checked first: 403, not a step-up, for a user without it.
    assert_eq!(
        verify(&t, "?role=admin&aal=2", &cookie, false)
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn reauthenticating_with_a_second_factor_meets_aal2_in_a_new_session() {
    let t = TestServer::start().await;
    let mut enrolling = t.user("up@example.com").await;
    // A password session of the user's, from before the app was added: aal1.
    let cookie = t.login("up@example.com", PASSWORD).await;
    let app = enroll(&t, &mut enrolling).await;
    assert_eq!(verify(&t, "?aal=2", &cookie, false).await.status(), 401);
    assert_eq!(
        verify(&t, "?aal=2", &enrolling, false).await.status(),
        200,
        "confirming the app proved it"
    );

    let res = post_json(&t, "/auth/reauthenticate", Some(&cookie), json!({})).await;
    assert_eq!(res.status(), 400);
    let res = post_json(
        &t,
        "/auth/reauthenticate",
        Some(&cookie),
        json!({"password": "wrong one!"}),
    )
    .await;
    assert_eq!(res.status(), 401);
    let res = post_json(
        &t,
        "/auth/reauthenticate",
        Some(&cookie),
        json!({"code": "000000"}),
    )
    .await;
    assert_eq!(error_code(res).await, "invalid_code");

    // The password alone makes the login recent, not stronger.
    t.clock.advance(Duration::minutes(20));
    let res = post_json(
        &t,
        "/auth/reauthenticate",
        Some(&cookie),
        json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let fresh = session_token(res.headers()).expect("a new session cookie");
    assert_ne!(fresh, cookie);
    assert_eq!(t.whoami_status(&cookie).await, 401, "the old session ended");
    assert_eq!(verify(&t, "?max_age=60", &fresh, false).await.status(), 200);
    assert_eq!(verify(&t, "?aal=2", &fresh, false).await.status(), 401);

    let res = post_json(
        &t,
        "/auth/reauthenticate",
        Some(&fresh),
        json!({"code": app.code(&t, 0)}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let strong = session_token(res.headers()).unwrap();
    assert_eq!(
        verify(&t, "?aal=2&max_age=60", &strong, false)
            .await
            .status(),
        200
    );
    let who: Value = t.get("/auth/whoami", &strong).await.json().await.unwrap();
    assert_eq!(who["session"]["acr"], "aal2");
    assert_eq!(who["session"]["amr"], json!(["pwd", "otp", "mfa"]));
    t.clock.advance(Duration::seconds(61));
    assert_eq!(
        verify(&t, "?aal=2&max_age=60", &strong, false)
            .await
            .status(),
        401
    );
    assert_eq!(verify(&t, "?aal=2", &strong, false).await.status(), 200);
}

#[tokio::test]
async fn a_token_session_steps_up_into_a_new_token_pair() {
    let t = TestServer::start().await;
    let mut cookie = t.user("tokup@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    // A token login before the app counted would have no second step: log in by the grant
    // and its second step.
    let res = t
        .req(Method::POST, "/auth/token")
        .json(&json!({"grant_type": "password", "username": "tokup@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let token: Value = res.json().await.unwrap();
    let res = t
        .req(Method::POST, "/auth/token")
        .json(&json!({
            "grant_type": "urn:cloakroom:params:oauth:grant-type:mfa",
            "mfa_token": token["mfa_token"], "code": app.code(&t, 0),
        }))
        .send()
        .await
        .unwrap();
    let pair: Value = res.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap().to_string();
    t.clock.advance(Duration::minutes(5));
    let res = t
        .bearer(Method::GET, "/auth/verify?aal=2&max_age=60", &access)
        .await;
    assert_eq!(res.status(), 401);
    let res = t
        .req(Method::POST, "/auth/reauthenticate")
        .bearer_auth(&access)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stepped: Value = res.json().await.unwrap();
    let fresh = stepped["access_token"].as_str().unwrap();
    assert_eq!(
        t.bearer_status(&access).await,
        401,
        "the old tokens are void"
    );
    let res = t
        .bearer(Method::GET, "/auth/verify?aal=2&max_age=60", fresh)
        .await;
    assert_eq!(res.status(), 200);
}

/// The hidden field `name` of a page.
fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    Some(body[start..].split('"').next()?.to_string())
}

#[tokio::test]
async fn the_step_up_page_proves_the_user_again_and_returns() {
    let t = TestServer::start().await;
    let mut enrolling = t.user("page@example.com").await;
    let cookie = t.login("page@example.com", PASSWORD).await;
    let app = enroll(&t, &mut enrolling).await;
    let res = t
        .get("/step-up?next=%2Fsettings&aal=2&max_age=60", &cookie)
        .await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("name=\"code\""), "the code field");
    let csrf = hidden(&body, "csrf").unwrap();
    assert_eq!(hidden(&body, "next").as_deref(), Some("/settings"));
    let post = |fields: Vec<(&'static str, String)>| {
        t.with_cookie(t.req(Method::POST, "/step-up"), &cookie)
            .form(&fields)
            .send()
    };
    let res = post(vec![("csrf", "forged".into()), ("code", app.code(&t, 0))])
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = post(vec![("csrf", csrf.clone()), ("code", "999999".into())])
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = post(vec![
        ("csrf", csrf.clone()),
        ("next", "/settings".into()),
        ("aal", "2".into()),
        ("code", app.code(&t, 0)),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings");
    let strong = session_token(res.headers()).unwrap();
    assert_eq!(
        verify(&t, "?aal=2&max_age=60", &strong, false)
            .await
            .status(),
        200
    );
    // Without a session, the page sends the browser to log in (forward-auth sends browsers
    // without a session to the login page, not here).
    let res = t
        .http
        .get(t.url("/step-up?next=%2Fsettings"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login?next="));
}
