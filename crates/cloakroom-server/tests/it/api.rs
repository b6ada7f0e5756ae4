//! Every endpoint's happy path and its documented errors.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use time::Duration;

#[tokio::test]
async fn journey_signup_login_whoami_sessions_logout() {
    let t = TestServer::start().await;
    let res = t.signup("  Ada@Example.com ", PASSWORD).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["roles"], json!(["user"]));

    let res = t
        .login_raw(json!({"email": "ADA@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let cookie = set_cookie(res.headers()).unwrap();
    let token = session_token(res.headers()).unwrap();
    // C1 (development form over plain-http localhost): no Max-Age without "remember".
    assert_eq!(
        cookie,
        format!("cloakroom_session={token}; HttpOnly; SameSite=Lax; Path=/")
    );
    let body: Value = res.json().await.unwrap();
    assert!(
        !body.to_string().contains(&token),
        "the body never holds the token"
    );
    assert_eq!(body["session"]["transport"], "cookie");

    let res = t.get("/auth/whoami", &token).await;
    assert_eq!(res.status(), 200);
    let who: Value = res.json().await.unwrap();
    assert_eq!(who["user"]["email"], "ada@example.com");
    assert_eq!(who["session"]["id"], body["session"]["id"]);
    assert!(who["session"]["expires_at"].is_string());

    let res = t.get("/auth/sessions", &token).await;
    let list: Value = res.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
    assert!(!list.to_string().contains(&token));

    // C4: logout clears the cookie and ends the session on the server.
    let res = t.post("/auth/logout", &token, None).await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let cleared = set_cookie(res.headers()).unwrap();
    assert!(cleared.starts_with("cloakroom_session=;"));
    assert!(cleared.contains("Max-Age=0") && cleared.contains("Path=/"));
    assert_eq!(t.whoami_status(&token).await, 401);
}

#[tokio::test]
async fn remember_me_gets_a_persistent_cookie_and_the_long_lifetime() {
    let t = TestServer::start().await;
    t.signup("rem@example.com", PASSWORD).await;
    let res = t
        .login_raw(json!({"email": "rem@example.com", "password": PASSWORD, "remember": true}))
        .await;
    let cookie = set_cookie(res.headers()).unwrap();
    assert!(cookie.ends_with("; Max-Age=2592000"), "{cookie}");
    let token = session_token(res.headers()).unwrap();
    // S2: remember-me is 14 days idle…
    t.clock.advance(Duration::days(13));
    assert_eq!(t.whoami_status(&token).await, 200);
    t.clock.advance(Duration::days(13));
    assert_eq!(t.whoami_status(&token).await, 200);
    // …and 30 days absolute, however active.
    t.clock.advance(Duration::days(4) + Duration::seconds(1));
    assert_eq!(t.whoami_status(&token).await, 401);
}

#[tokio::test]
async fn signup_refuses_bad_input_with_spec_codes() {
    let t = TestServer::start().await;
    assert_eq!(t.signup("ok@example.com", PASSWORD).await.status(), 201);
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            400,
            "invalid_email",
        ),
        (
            json!({"email": "a@b.example", "password": "short"}),
            400,
            "weak_password",
        ),
        (
            json!({"email": "a@b.example", "password": "password123"}),
            400,
            "weak_password",
        ),
        (
            json!({"email": "a@b.example", "password": "x".repeat(1025)}),
            400,
            "weak_password",
        ),
        (
            json!({"email": "OK@example.com", "password": PASSWORD}),
            409,
            "email_taken",
        ),
        // L8: mass assignment is refused, not ignored.
        (
            json!({"email": "b@b.example", "password": PASSWORD, "roles": ["admin"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"email": "b@b.example", "password": PASSWORD, "disabled": false}),
            400,
            "invalid_request",
        ),
        (
            json!({"email": 5, "password": PASSWORD}),
            400,
            "invalid_request",
        ),
        (json!({"email": "b@b.example"}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let res = t
            .req(Method::POST, "/auth/signup")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{body}");
        assert_eq!(error_code(res).await, code, "{body}");
    }
    let res = t
        .login_raw(json!({"email": "b@b.example", "password": PASSWORD}))
        .await;
    assert_eq!(
        res.status(),
        401,
        "no account was made by the refused signups"
    );
}

#[tokio::test]
async fn own_sessions_can_be_listed_and_ended_others_are_404() {
    let t = TestServer::start().await;
    let a1 = t.user("a@example.com").await;
    let a2 = t.login("a@example.com", PASSWORD).await;
    let b = t.user("b@example.com").await;
    let list: Value = t.get("/auth/sessions", &a1).await.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    let other_id = other["id"].as_str().unwrap().to_string();
    let b_who: Value = t.get("/auth/whoami", &b).await.json().await.unwrap();
    let b_id = b_who["session"]["id"].as_str().unwrap().to_string();

    // S5: another user's session looks exactly like one that does not exist.
    let del = |token: String, id: String| {
        let rb = t.with_cookie(
            t.req(Method::DELETE, &format!("/auth/sessions/{id}")),
            &token,
        );
        async move { rb.send().await.unwrap() }
    };
    let res = del(a1.clone(), b_id.clone()).await;
    assert_eq!(res.status(), 404);
    let missing = del(a1.clone(), "6f0e7d1c-0000-4000-8000-000000000000".into()).await;
    assert_eq!(missing.status(), 404);
    let junk = del(a1.clone(), "../../etc".into()).await;
    assert_eq!(junk.status(), 404);
    assert_eq!(t.whoami_status(&b).await, 200);

    let res = del(a1.clone(), other_id).await;
    assert_eq!(res.status(), 204);
    assert_eq!(t.whoami_status(&a2).await, 401);
    assert_eq!(t.whoami_status(&a1).await, 200);
}

#[tokio::test]
async fn ending_other_sessions_needs_fresh_auth() {
    let t = TestServer::start().await;
    let a1 = t.user("fresh@example.com").await;
    let a2 = t.login("fresh@example.com", PASSWORD).await;
    t.clock.advance(Duration::minutes(11));
    // Keep both alive (idle timeout is 30 min).
    assert_eq!(t.whoami_status(&a2).await, 200);
    let list: Value = t.get("/auth/sessions", &a1).await.json().await.unwrap();
    let other = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/auth/sessions/{other}");
    let res = t
        .with_cookie(t.req(Method::DELETE, &path), &a1)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "reauth_required");
    let res = t.post("/auth/logout-all", &a1, None).await;
    assert_eq!(res.status(), 403);
    let res = t
        .post(
            "/auth/logout-all",
            &a1,
            Some(json!({"current_password": "wrong password!"})),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(t.whoami_status(&a2).await, 200);

    let res = t
        .with_cookie(t.req(Method::DELETE, &path), &a1)
        .json(&json!({"current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(t.whoami_status(&a2).await, 401);

    // A fresh login may end everything without the password.
    let a3 = t.login("fresh@example.com", PASSWORD).await;
    let res = t.post("/auth/logout-all", &a3, None).await;
    assert_eq!(res.status(), 204);
    assert!(set_cookie(res.headers()).unwrap().contains("Max-Age=0"));
    assert_eq!(t.whoami_status(&a1).await, 401);
    assert_eq!(t.whoami_status(&a3).await, 401);
}

#[tokio::test]
async fn s3_password_change_renews_this_session_and_ends_the_others() {
    let t = TestServer::start().await;
    let mine = t.user("pw@example.com").await;
    let other = t.login("pw@example.com", PASSWORD).await;
    let new_pw = "a much better passphrase";

    // L9: a wrong current password is refused.
    let res = t
        .post(
            "/auth/password",
            &mine,
            Some(json!({"current_password": "nope nope nope", "new_password": new_pw})),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_credentials");
    let res = t
        .post(
            "/auth/password",
            &mine,
            Some(json!({"current_password": PASSWORD, "new_password": "12345678"})),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "weak_password");
    let res = t
        .post(
            "/auth/password",
            &mine,
            Some(json!({"new_password": new_pw})),
        )
        .await;
    assert_eq!(res.status(), 400);

    let res = t
        .post(
            "/auth/password",
            &mine,
            Some(json!({"current_password": PASSWORD, "new_password": new_pw})),
        )
        .await;
    assert_eq!(res.status(), 204);
    let renewed = session_token(res.headers()).unwrap();
    assert_ne!(renewed, mine);
    assert_eq!(t.whoami_status(&renewed).await, 200);
    assert_eq!(
        t.whoami_status(&mine).await,
        401,
        "the old token value is dead"
    );
    assert_eq!(t.whoami_status(&other).await, 401, "other sessions ended");
    let res = t
        .login_raw(json!({"email": "pw@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401);
    t.login("pw@example.com", new_pw).await;
}

#[tokio::test]
async fn health_readiness_and_openapi() {
    let t = TestServer::start().await;
    let res = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = t.http.get(t.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/auth/signup", "post"),
        ("/auth/login", "post"),
        ("/auth/logout", "post"),
        ("/auth/logout-all", "post"),
        ("/auth/whoami", "get"),
        ("/auth/sessions", "get"),
        ("/auth/sessions/{id}", "delete"),
        ("/auth/password", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
        ("/auth/token", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/metrics", "get"),
        ("/auth/verify", "get"),
        ("/auth/revocations", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is undocumented"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_and_login_outcomes() {
    let t = TestServer::start().await;
    t.signup("m@example.com", PASSWORD).await;
    t.login("m@example.com", PASSWORD).await;
    let res = t
        .login_raw(json!({"email": "m@example.com", "password": "wrong password"}))
        .await;
    assert_eq!(res.status(), 401);
    t.http.get(t.url("/no/such/path")).send().await.unwrap();
    let res = t.http.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for line in [
        "cloakroom_http_requests_total{route=\"/auth/login\",status=\"200\"} 1",
        "cloakroom_http_requests_total{route=\"/auth/login\",status=\"401\"} 1",
        "cloakroom_http_requests_total{route=\"other\",status=\"404\"} 1",
        "cloakroom_logins_total{outcome=\"success\"} 1",
        "cloakroom_logins_total{outcome=\"invalid_credentials\"} 1",
        "cloakroom_logins_throttled_total 0",
        "cloakroom_refresh_reuse_total 0",
        "cloakroom_hash_queue 0",
        "cloakroom_revocation_propagation_seconds_count 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
