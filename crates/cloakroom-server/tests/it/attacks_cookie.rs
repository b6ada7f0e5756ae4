//! The cookie and session parts of the attack catalogue: C1–C9, S1–S4.

use crate::support::*;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::Duration;

#[tokio::test]
async fn c1_production_cookie_is_host_prefixed_and_secure() {
    let t =
        TestServer::start_with(|r| r.public_url = Some("https://auth.example.com".into())).await;
    t.signup("prod@example.com", PASSWORD).await;
    let res = t
        .http
        .post(t.url("/auth/login"))
        .header("origin", "https://auth.example.com")
        .json(&json!({"email": "prod@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age=31536000"));
    let cookie = set_cookie(res.headers()).unwrap();
    let token = session_token(res.headers()).unwrap();
    assert_eq!(token.len(), 43);
    assert_eq!(
        cookie,
        format!("__Host-cloakroom_session={token}; HttpOnly; Secure; SameSite=Lax; Path=/")
    );
    let who = |cookie: String| {
        let rb = t.http.get(t.url("/auth/whoami")).header("cookie", cookie);
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(who(format!("__Host-cloakroom_session={token}")).await, 200);
    // C6: cookie tossing and case variants are not ours.
    for name in [
        "__host-cloakroom_session",
        "__HOST-cloakroom_session",
        "cloakroom_session",
    ] {
        assert_eq!(who(format!("{name}={token}")).await, 401, "{name}");
    }
}

#[tokio::test]
async fn c2_c3_fixation_and_relogin() {
    let t = TestServer::start().await;
    t.signup("victim@example.com", PASSWORD).await;
    let attacker = t.user("attacker@example.com").await;

    // A planted value that the server never issued is not adopted.
    let planted = "A".repeat(43);
    let res = t
        .with_cookie(t.req(Method::POST, "/auth/login"), &planted)
        .json(&json!({"email": "victim@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let fresh = session_token(res.headers()).unwrap();
    assert_ne!(fresh, planted);
    assert_eq!(t.whoami_status(&planted).await, 401);

    // The attacker's own valid session planted in the victim's browser: the victim's login
    // makes a new session and ends the planted one (C3), which never becomes the victim's.
    let res = t
        .with_cookie(t.req(Method::POST, "/auth/login"), &attacker)
        .json(&json!({"email": "victim@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let victim = session_token(res.headers()).unwrap();
    assert_ne!(victim, attacker);
    assert_eq!(t.whoami_status(&attacker).await, 401);
    let who: serde_json::Value = t.get("/auth/whoami", &victim).await.json().await.unwrap();
    assert_eq!(who["user"]["email"], "victim@example.com");
}

#[tokio::test]
async fn c5_c7_c8_c9_cookie_header_shapes() {
    let t = TestServer::start().await;
    let token = t.user("shapes@example.com").await;
    let junk = "B".repeat(43);
    let who = |cookies: Vec<String>| {
        let mut rb = t.http.get(t.url("/auth/whoami"));
        for c in cookies {
            rb = rb.header("cookie", c);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    // C5: two cookies of our name are ambiguous, in either order.
    let both = format!("cloakroom_session={token}; cloakroom_session={junk}");
    let both_rev = format!("cloakroom_session={junk}; cloakroom_session={token}");
    assert_eq!(who(vec![both]).await, 401);
    assert_eq!(who(vec![both_rev]).await, 401);
    // C7: split Cookie headers are all read.
    assert_eq!(
        who(vec![
            "theme=dark".into(),
            format!("cloakroom_session={token}")
        ])
        .await,
        200
    );
    assert_eq!(
        who(vec![
            format!("cloakroom_session={token}"),
            format!("cloakroom_session={junk}")
        ])
        .await,
        401
    );
    // C8: an oversized Cookie header is refused cleanly.
    let big = format!("pad={}; cloakroom_session={token}", "x".repeat(12 * 1024));
    assert_eq!(who(vec![big]).await, 431);
    // C9: malformed values are plain 401s.
    for bad in [
        String::new(),
        "\"quoted\"".into(),
        "!!!".into(),
        "a".repeat(5_000),
        format!("{}=", &token[..42]),
        format!("{}.", &token[..42]),
        token[..42].to_string(),
    ] {
        assert_eq!(
            who(vec![format!("cloakroom_session={bad}")]).await,
            401,
            "{bad:?}"
        );
    }
    assert_eq!(
        t.whoami_status(&token).await,
        200,
        "the real session is unharmed"
    );
}

#[tokio::test]
async fn s1_the_raw_token_never_reaches_the_database() {
    let t = TestServer::start().await;
    let token = t.user("dump@example.com").await;
    assert_eq!(t.whoami_status(&token).await, 200);
    t.auth().flush_activity().await.unwrap();
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", t.db_path().display());
        if let Ok(b) = std::fs::read(&path) {
            bytes.extend(b);
        }
    }
    assert!(!bytes.is_empty());
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(token.as_bytes()), "the raw token is stored");
    let hash = Sha256::digest(token.as_bytes());
    assert!(
        contains(&hash),
        "the SHA-256 of the token is what is stored"
    );
    assert!(!contains(PASSWORD.as_bytes()), "the raw password is stored");
}

#[tokio::test]
async fn s2_idle_and_absolute_timeouts() {
    let t = TestServer::start().await;
    let token = t.user("idle@example.com").await;
    // Activity at 29 minutes resets the idle timer.
    t.clock.advance(Duration::minutes(29));
    assert_eq!(t.whoami_status(&token).await, 200);
    t.clock.advance(Duration::minutes(29));
    assert_eq!(t.whoami_status(&token).await, 200);
    // 30 minutes and a second without activity ends it.
    t.clock
        .advance(Duration::minutes(30) + Duration::seconds(1));
    assert_eq!(t.whoami_status(&token).await, 401);

    // Absolute: 12 hours, however active.
    let token = t.login("idle@example.com", PASSWORD).await;
    for _ in 0..24 {
        t.clock.advance(Duration::minutes(29));
        assert_eq!(t.whoami_status(&token).await, 200);
    }
    t.clock
        .advance(Duration::hours(12) - Duration::minutes(29 * 24));
    assert_eq!(t.whoami_status(&token).await, 401);
}

#[tokio::test]
async fn s2_idle_timeout_holds_across_a_restart() {
    let t = TestServer::start().await;
    let token = t.user("restart-idle@example.com").await;
    t.clock.advance(Duration::minutes(20));
    assert_eq!(t.whoami_status(&token).await, 200);
    let t = t.restart().await;
    t.clock.advance(Duration::minutes(20));
    assert_eq!(
        t.whoami_status(&token).await,
        200,
        "the activity was saved at shutdown"
    );
    t.clock.advance(Duration::minutes(31));
    assert_eq!(t.whoami_status(&token).await, 401);
}

#[tokio::test]
async fn s4_no_request_succeeds_after_logout_returns() {
    let t = TestServer::start().await;
    let token = t.user("race@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let rb = t.with_cookie(t.http.get(t.url("/auth/whoami")), &token);
        tasks.push(tokio::spawn(async move {
            rb.send().await.unwrap().status().as_u16()
        }));
    }
    let res = t.post("/auth/logout", &token, None).await;
    assert_eq!(res.status(), 204);
    let after: Vec<u16> = futures::future::join_all((0..50).map(|_| t.whoami_status(&token))).await;
    assert!(after.iter().all(|s| *s == 401), "{after:?}");
    for task in tasks {
        let s = task.await.unwrap();
        assert!(s == 200 || s == 401);
    }
    // Last-seen writes never bring the session back.
    t.auth().flush_activity().await.unwrap();
    assert_eq!(t.whoami_status(&token).await, 401);
}

#[tokio::test]
async fn s3_disabling_a_user_ends_their_sessions_at_once() {
    let t = TestServer::start().await;
    let token = t.user("off@example.com").await;
    t.auth()
        .set_disabled("off@example.com", true)
        .await
        .unwrap();
    assert_eq!(t.whoami_status(&token).await, 401);
    let res = t
        .login_raw(json!({"email": "off@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401);
    t.auth()
        .set_disabled("off@example.com", false)
        .await
        .unwrap();
    assert_eq!(
        t.whoami_status(&token).await,
        401,
        "re-enabling does not revive sessions"
    );
    t.login("off@example.com", PASSWORD).await;
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let t = TestServer::start().await;
    let token = t.user("survive@example.com").await;
    let other = t.login("survive@example.com", PASSWORD).await;
    assert_eq!(t.post("/auth/logout", &other, None).await.status(), 204);
    let t = t.restart().await;
    assert_eq!(t.whoami_status(&token).await, 200);
    assert_eq!(t.whoami_status(&other).await, 401);
}

#[tokio::test]
async fn roles_changes_are_seen_by_live_sessions() {
    let t = TestServer::start().await;
    let token = t.user("roles@example.com").await;
    t.auth()
        .set_roles("roles@example.com", &["admin".into(), "user".into()])
        .await
        .unwrap();
    let who: serde_json::Value = t.get("/auth/whoami", &token).await.json().await.unwrap();
    assert_eq!(who["user"]["roles"], json!(["admin", "user"]));
}
