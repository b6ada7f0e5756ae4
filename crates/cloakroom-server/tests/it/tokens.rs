//! The token transport over HTTP: grants, rotation, bearer use, revocation, JWT cookies, keys.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use time::Duration;

#[tokio::test]
async fn password_grant_json_and_form_then_bearer_whoami() {
    let t = TestServer::start().await;
    t.signup("tok@example.com", PASSWORD).await;
    let res = t
        .req(Method::POST, "/auth/token")
        .json(&json!({"grant_type": "password", "email": "tok@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    assert!(res.headers().get("set-cookie").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["refresh_token"].as_str().unwrap().len(), 43);
    let at = body["access_token"].as_str().unwrap();
    let res = t.bearer(Method::GET, "/auth/whoami", at).await;
    assert_eq!(res.status(), 200);
    let who: Value = res.json().await.unwrap();
    assert_eq!(who["user"]["email"], "tok@example.com");
    assert_eq!(who["session"]["transport"], "token");
    // Lower-case scheme is the same scheme (J21).
    let res = t
        .http
        .get(t.url("/auth/whoami"))
        .header("authorization", format!("bearer {at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // RFC 6749 §4.3 form encoding with `username`.
    let res = t
        .req(Method::POST, "/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username=tok%40example.com&password={}",
            PASSWORD.replace(' ', "+")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The token session is listed and revocable like any other.
    let list: Value = t
        .bearer(Method::GET, "/auth/sessions", at)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn token_errors_keep_the_oauth_shape() {
    let t = TestServer::start().await;
    t.signup("oauth@example.com", PASSWORD).await;
    let cases = [
        (
            json!({"grant_type": "password", "email": "oauth@example.com", "password": "wrong wrong"}),
            400,
            "invalid_grant",
        ),
        (
            json!({"grant_type": "password", "email": "nobody@example.com", "password": PASSWORD}),
            400,
            "invalid_grant",
        ),
        (
            json!({"grant_type": "password", "email": "oauth@example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"grant_type": "client_credentials"}),
            400,
            "unsupported_grant_type",
        ),
        (
            json!({"grant_type": "refresh_token", "refresh_token": "nope"}),
            400,
            "invalid_grant",
        ),
        (
            json!({"grant_type": "refresh_token"}),
            400,
            "invalid_request",
        ),
        (
            json!({"grant_type": "password", "email": "oauth@example.com", "password": PASSWORD, "roles": ["admin"]}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, error) in cases {
        let res = t
            .req(Method::POST, "/auth/token")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{body}");
        assert_eq!(res.headers()["pragma"], "no-cache");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"], error, "{body}");
    }
    let res = t
        .req(Method::POST, "/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&grant_type=refresh_token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = t
        .req(Method::POST, "/auth/token")
        .header("content-type", "text/plain")
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn j19_refresh_rotates_and_reuse_ends_the_session() {
    let t = TestServer::start().await;
    t.signup("rot@example.com", PASSWORD).await;
    let first = t.token_login("rot@example.com", PASSWORD).await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();
    let res = t.refresh(&rt1).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["pragma"], "no-cache");
    let second: Value = res.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    let at2 = second["access_token"].as_str().unwrap().to_string();
    assert_eq!(t.bearer_status(&at2).await, 200);

    // An honest retry within the grace window gets the same successor, not a logout.
    let retry: Value = t.refresh(&rt1).await.json().await.unwrap();
    assert_eq!(retry["refresh_token"], second["refresh_token"]);

    // Outside the window the spent token is theft: invalid_grant and the session ends.
    t.clock.advance(Duration::seconds(11));
    let res = t.refresh(&rt1).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(
        t.bearer_status(&at2).await,
        401,
        "JWTs naming the sid fail at once"
    );
    assert_eq!(
        t.refresh(&rt2).await.status(),
        400,
        "the successor is dead too"
    );
    assert_eq!(
        t.auth()
            .metrics
            .refresh_reuse
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The user can see it happened.
    let fresh = t.token_login("rot@example.com", PASSWORD).await;
    let events: Value = t
        .http
        .get(t.url("/auth/events"))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "refresh_reuse_detected")
            .count(),
        1,
        "{events}"
    );
}

#[tokio::test]
async fn j19_concurrent_refreshes_mint_one_successor() {
    let t = TestServer::start().await;
    t.signup("conc@example.com", PASSWORD).await;
    let pair = t.token_login("conc@example.com", PASSWORD).await;
    let rt = pair["refresh_token"].as_str().unwrap().to_string();
    let results = futures::future::join_all((0..10).map(|_| t.refresh(&rt))).await;
    let mut successors = std::collections::HashSet::new();
    for res in results {
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        successors.insert(v["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(successors.len(), 1, "{successors:?}");
}

#[tokio::test]
async fn j19_refresh_token_misuse() {
    let t = TestServer::start().await;
    t.signup("mis@example.com", PASSWORD).await;
    let pair = t.token_login("mis@example.com", PASSWORD).await;
    let rt = pair["refresh_token"].as_str().unwrap();
    let at = pair["access_token"].as_str().unwrap();
    // One character of the check value changed (not the last, whose unused bits must stay
    // zero): a token of the session's family that is not its current one can only come from
    // someone who held one of its tokens, so it ends the session like reuse.
    let mut changed = rt.to_string();
    let c = if &changed[40..41] == "A" { "B" } else { "A" };
    changed.replace_range(40..41, c);
    assert_eq!(t.refresh(&changed).await.status(), 400);
    assert_eq!(t.bearer_status(at).await, 401);
    assert_eq!(t.refresh(rt).await.status(), 400);
    // A token of no family at all is just unknown.
    let pair = t.token_login("mis@example.com", PASSWORD).await;
    let rt = pair["refresh_token"].as_str().unwrap();
    let at = pair["access_token"].as_str().unwrap();
    let mut changed = rt.to_string();
    let first = if changed.starts_with('A') { "B" } else { "A" };
    changed.replace_range(..1, first);
    assert_eq!(t.refresh(&changed).await.status(), 400);
    assert_eq!(t.bearer_status(at).await, 200);
    // A refresh token is not a bearer token, nor a cookie; an access token is not a refresh token.
    assert_eq!(t.bearer_status(rt).await, 401);
    assert_eq!(t.whoami_status(rt).await, 401);
    assert_eq!(t.refresh(at).await.status(), 400);
    let cookie_session = t.login("mis@example.com", PASSWORD).await;
    assert_eq!(t.refresh(&cookie_session).await.status(), 400);
    // After logout (by bearer) the refresh token is dead.
    let res = t.bearer(Method::POST, "/auth/logout", at).await;
    assert_eq!(res.status(), 204);
    assert_eq!(t.bearer_status(at).await, 401);
    assert_eq!(t.refresh(rt).await.status(), 400);
}

#[tokio::test]
async fn j19_refresh_never_outlives_the_session() {
    let t = TestServer::start().await;
    t.signup("dead@example.com", PASSWORD).await;
    let mut rt = t.token_login("dead@example.com", PASSWORD).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Refreshing every 25 minutes keeps it alive up to the 12-hour absolute deadline.
    for _ in 0..28 {
        t.clock.advance(Duration::minutes(25));
        let v: Value = t.refresh(&rt).await.json().await.unwrap();
        rt = v["refresh_token"].as_str().unwrap().to_string();
        let exp = v["expires_in"].as_i64().unwrap();
        assert!(exp <= 600 && exp > 0);
    }
    t.clock.advance(Duration::minutes(25));
    assert_eq!(
        t.refresh(&rt).await.status(),
        400,
        "past the absolute deadline"
    );
    // Idle: 30 minutes without a refresh ends it.
    let rt = t.token_login("dead@example.com", PASSWORD).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    t.clock.advance(Duration::minutes(31));
    assert_eq!(t.refresh(&rt).await.status(), 400);
}

#[tokio::test]
async fn j18_every_way_of_ending_a_session_kills_its_jwts_at_once() {
    let t = TestServer::start().await;
    t.signup("j18@example.com", PASSWORD).await;
    let at = |v: &Value| v["access_token"].as_str().unwrap().to_string();
    // logout-all by bearer (fresh login, so no password needed)
    let a = at(&t.token_login("j18@example.com", PASSWORD).await);
    let b = at(&t.token_login("j18@example.com", PASSWORD).await);
    assert_eq!(
        t.bearer(Method::POST, "/auth/logout-all", &a)
            .await
            .status(),
        204
    );
    assert_eq!(t.bearer_status(&a).await, 401);
    assert_eq!(t.bearer_status(&b).await, 401);
    // DELETE /auth/sessions/{id}
    let a = at(&t.token_login("j18@example.com", PASSWORD).await);
    let b = at(&t.token_login("j18@example.com", PASSWORD).await);
    let who_b: Value = t
        .bearer(Method::GET, "/auth/whoami", &b)
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/auth/sessions/{}",
        who_b["session"]["id"].as_str().unwrap()
    );
    assert_eq!(t.bearer(Method::DELETE, &path, &a).await.status(), 204);
    assert_eq!(t.bearer_status(&b).await, 401);
    assert_eq!(t.bearer_status(&a).await, 200);
    // password change by bearer ends every session, this one too, and answers a new pair
    let c = at(&t.token_login("j18@example.com", PASSWORD).await);
    let res = t
        .http
        .post(t.url("/auth/password"))
        .header("authorization", format!("Bearer {a}"))
        .json(&json!({"current_password": PASSWORD, "new_password": "an even better passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let a = at(&res.json().await.unwrap());
    assert_eq!(t.bearer_status(&c).await, 401);
    assert_eq!(t.bearer_status(&a).await, 200);
    // user disable
    t.auth()
        .set_disabled("j18@example.com", true)
        .await
        .unwrap();
    assert_eq!(t.bearer_status(&a).await, 401);
}

#[tokio::test]
async fn j21_a_401_challenges_only_when_a_token_was_sent() {
    let t = TestServer::start().await;
    let res = t.http.get(t.url("/auth/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("www-authenticate").is_none());
    let res = t.bearer(Method::GET, "/auth/whoami", "abc.def.ghi").await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    for auth in ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a b"] {
        let res = t
            .http
            .get(t.url("/auth/whoami"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{auth}");
    }
    t.signup("j21@example.com", PASSWORD).await;
    let at = t.token_login("j21@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Never from the query string; two Authorization headers are refused.
    let res = t
        .http
        .get(t.url(&format!("/auth/whoami?access_token={at}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = t
        .http
        .get(t.url("/auth/whoami"))
        .header("authorization", format!("Bearer {at}"))
        .header("authorization", format!("Bearer {at}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn x5_bearer_requests_are_exempt_from_csrf_but_cookies_are_not() {
    let t = TestServer::start().await;
    t.signup("x5@example.com", PASSWORD).await;
    let at = t.token_login("x5@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // No Origin at all: fine for a bearer-only request.
    let res = t.bearer(Method::POST, "/auth/logout", &at).await;
    assert_eq!(res.status(), 204);
    let at = t.token_login("x5@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = t.login("x5@example.com", PASSWORD).await;
    let res = t
        .http
        .post(t.url("/auth/logout"))
        .header("authorization", format!("Bearer {at}"))
        .header("cookie", format!("cloakroom_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "a cookie without proof of origin is still refused"
    );
}

#[tokio::test]
async fn jwt_cookie_is_renewed_while_the_session_lives() {
    let t = TestServer::start().await;
    t.signup("jc@example.com", PASSWORD).await;
    let res = t
        .login_raw(json!({"email": "jc@example.com", "password": PASSWORD, "cookie": "jwt"}))
        .await;
    assert_eq!(res.status(), 200);
    let jwt = session_token(res.headers()).unwrap();
    assert_eq!(jwt.split('.').count(), 3);
    assert!(jwt.len() < 4000);
    let res = t.get("/auth/whoami", &jwt).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "fresh: no renewal yet"
    );
    // Past half its life, the answer carries a renewed cookie.
    t.clock.advance(Duration::minutes(6));
    let res = t.get("/auth/whoami", &jwt).await;
    assert_eq!(res.status(), 200);
    let renewed = session_token(res.headers()).unwrap();
    assert_ne!(renewed, jwt);
    // Used every 6 minutes, the browser always holds a valid one.
    let mut latest = renewed;
    for _ in 0..5 {
        t.clock.advance(Duration::minutes(6));
        let res = t.get("/auth/whoami", &latest).await;
        assert_eq!(res.status(), 200);
        latest = session_token(res.headers()).unwrap();
    }
    // An expired one is refused like any expired access token (J15).
    t.clock.advance(Duration::minutes(12));
    assert_eq!(t.whoami_status(&latest).await, 401);
    let latest = {
        let res = t
            .login_raw(json!({"email": "jc@example.com", "password": PASSWORD, "cookie": "jwt"}))
            .await;
        session_token(res.headers()).unwrap()
    };
    assert_eq!(t.post("/auth/logout", &latest, None).await.status(), 204);
    assert_eq!(t.whoami_status(&latest).await, 401);
    assert_eq!(t.bearer_status(&latest).await, 401);
}

#[tokio::test]
async fn j20_jwks_and_key_rotation_with_a_running_server() {
    let t = TestServer::start().await;
    let res = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (
            k["kty"].as_str(),
            k["crv"].as_str(),
            k["alg"].as_str(),
            k["use"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig"))
    );
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(k.get(private).is_none(), "{private} published");
    }
    let old_kid = k["kid"].as_str().unwrap().to_string();

    t.signup("rot@example.com", PASSWORD).await;
    let old = t.token_login("rot@example.com", PASSWORD).await;
    let old_at = old["access_token"].as_str().unwrap().to_string();
    let new_kid = t.auth().rotate_keys().await.unwrap();
    assert_ne!(new_kid, old_kid);
    let fresh = t.token_login("rot@example.com", PASSWORD).await;
    let header = fresh["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(t.bearer_status(&old_at).await, 200, "old tokens stay valid");
    let jwks: Value = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "the retired key is still published"
    );
    // After the longest token lifetime plus leeway, the retired key is gone.
    t.clock
        .advance(Duration::minutes(11) + Duration::seconds(1));
    t.auth().reload_keys().await.unwrap();
    let jwks: Value = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
    assert_eq!(t.bearer_status(&old_at).await, 401);
}

#[tokio::test]
async fn a_cached_token_still_expires_and_still_needs_its_session() {
    let t = TestServer::start().await;
    t.signup("cache@example.com", PASSWORD).await;
    let pair = t.token_login("cache@example.com", PASSWORD).await;
    let at = pair["access_token"].as_str().unwrap().to_string();
    assert_eq!(t.bearer_status(&at).await, 200);
    assert_eq!(
        t.bearer_status(&at).await,
        200,
        "second use, from the cache"
    );
    t.clock
        .advance(Duration::minutes(10) + Duration::seconds(59));
    // Keep the session alive meanwhile so that only the token's own expiry counts.
    assert_eq!(t.bearer_status(&at).await, 200, "inside the 60 s leeway");
    t.clock.advance(Duration::seconds(2));
    assert_eq!(t.bearer_status(&at).await, 401, "expired, cached or not");
    let at = t.token_login("cache@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.bearer_status(&at).await, 200);
    t.auth()
        .set_disabled("cache@example.com", true)
        .await
        .unwrap();
    assert_eq!(
        t.bearer_status(&at).await,
        401,
        "the user is checked on every use"
    );
}

#[tokio::test]
async fn hs256_only_with_an_explicit_secret_and_never_published() {
    let t = TestServer::start_with(|r| {
        r.jwt_alg = Some("HS256".into());
        r.hs256_secret = Some("TS91DwafmQCHcPT74L5X4QWBxfPIOarsBdFk298qKC4=".into());
    })
    .await;
    t.signup("hs@example.com", PASSWORD).await;
    let at = t.token_login("hs@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(t.bearer_status(&at).await, 200);
    let jwks: Value = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"],
        json!([]),
        "a shared secret is never published"
    );
    for (alg, secret) in [
        ("HS256", None),
        ("HS256", Some("too short")),
        (
            "HS256",
            Some("a long passphrase is still only a passphrase, 64 characters"),
        ),
        (
            "EdDSA",
            Some("TS91DwafmQCHcPT74L5X4QWBxfPIOarsBdFk298qKC4="),
        ),
    ] {
        let raw = cloakroom_server::settings::RawSettings {
            jwt_alg: Some(alg.into()),
            hs256_secret: secret.map(str::to_string),
            ..Default::default()
        };
        assert!(
            cloakroom_server::settings::Settings::resolve(raw).is_err(),
            "{alg} {secret:?}"
        );
    }
}
