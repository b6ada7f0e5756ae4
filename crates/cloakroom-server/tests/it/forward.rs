//! `GET /auth/verify` and `GET /auth/revocations` spoken to directly (the proxy tests in
//! proxies.rs go through nginx and Caddy).

use crate::support::*;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

const KEY: &str = "a-verifier-key-of-at-least-32-characters";

#[tokio::test]
async fn verify_answers_identity_headers_and_never_echoes_the_clients() {
    let t = TestServer::start().await;
    let cookie = t.user("v@example.com").await;
    let res = t
        .http
        .get(t.url("/auth/verify"))
        .header("cookie", format!("cloakroom_session={cookie}"))
        .header("x-auth-roles", "admin")
        .header("x-auth-email", "boss@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-auth-email"], "v@example.com");
    assert_eq!(res.headers()["x-auth-roles"], "user");
    assert_eq!(res.headers()["cache-control"], "no-store");
    // Without a session: 401 with no identity at all, whatever the client claims.
    let res = t
        .http
        .get(t.url("/auth/verify"))
        .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000")
        .header("x-auth-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("x-auth-")));
    // A role the user lacks: 403; a role they have: 200.
    let res = t.get("/auth/verify?role=admin", &cookie).await;
    assert_eq!(res.status(), 403);
    assert_eq!(t.get("/auth/verify?role=user", &cookie).await.status(), 200);
    // A bearer token works too.
    let pair = t.token_login("v@example.com", PASSWORD).await;
    let res = t
        .bearer(
            Method::GET,
            "/auth/verify",
            pair["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn verify_sends_browsers_to_login_and_trusts_the_original_uri_only_from_proxies() {
    let t = TestServer::start().await;
    let ask = |uri: &'static str| {
        t.http
            .get(t.url("/auth/verify"))
            .header("accept", "text/html")
            .header("x-original-uri", uri)
            .send()
    };
    // The test client is not a trusted proxy: its X-Original-URI is ignored.
    let res = ask("/app/secret").await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "/login?next=%2F");
    let proxied =
        TestServer::start_with(|r| r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]))
            .await;
    for (uri, next) in [
        ("/app/secret?x=1", "/login?next=%2Fapp%2Fsecret%3Fx%3D1"),
        ("//evil.example/", "/login?next=%2F"),
        ("https://evil.example/", "/login?next=%2F"),
    ] {
        let res = proxied
            .http
            .get(proxied.url("/auth/verify"))
            .header("accept", "text/html")
            .header("x-forwarded-uri", uri)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302, "{uri}");
        assert_eq!(res.headers()["location"], next, "{uri}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_stream_the_list_then_each_new_one_to_verifiers_with_a_key() {
    let t = TestServer::start_with(|r| r.verifier_keys = Some(vec![KEY.into()])).await;
    let early = t.user("ev@example.com").await;
    let early_id: Value = t.get("/auth/whoami", &early).await.json().await.unwrap();
    assert_eq!(t.post("/auth/logout", &early, None).await.status(), 204);
    // No key, a wrong key, a user's own access token: refused.
    let url = t.url("/auth/revocations");
    assert_eq!(t.http.get(&url).send().await.unwrap().status(), 401);
    let wrong = t
        .http
        .get(&url)
        .bearer_auth("x".repeat(40))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let pair = t.token_login("ev@example.com", PASSWORD).await;
    let user_token = pair["access_token"].as_str().unwrap();
    assert_eq!(
        t.http
            .get(&url)
            .bearer_auth(user_token)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let res = t.http.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: synced") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let early_sid = early_id["session"]["id"].as_str().unwrap();
    assert!(
        seen.contains("event: revoked") && seen.contains(early_sid),
        "{seen}"
    );
    // A new revocation arrives as it happens.
    let later = t.login("ev@example.com", PASSWORD).await;
    let later_id: Value = t.get("/auth/whoami", &later).await.json().await.unwrap();
    assert_eq!(t.post("/auth/logout", &later, None).await.status(), 204);
    let later_sid = later_id["session"]["id"].as_str().unwrap().to_string();
    let mut seen = String::new();
    while !seen.contains(&later_sid) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn short_verifier_keys_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = test_raw(dir.path());
    raw.verifier_keys = Some(vec!["too-short".into()]);
    let err = cloakroom_server::settings::Settings::resolve(raw).unwrap_err();
    assert!(err.0.contains("shorter than 32"), "{}", err.0);
}
