//! Second factors over HTTP: an authenticator app enrolled and confirmed, logins in two steps on
//! both transports, recovery codes, and the attacks on each (replayed codes and tokens, codes
//! two steps away, guessing, races). Codes are computed as an app would, from the otpauth://
//! URI enrolment gives, at the server's pinned clock.

use crate::support::*;
use cloakroom::Clock;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use time::Duration;
use totp_rs::TOTP;

/// An enrolled, confirmed authenticator app.
pub(crate) struct App {
    pub(crate) id: String,
    totp: TOTP,
}

impl App {
    /// The code at the server's time, shifted by `steps` time steps.
    pub(crate) fn code(&self, t: &TestServer, steps: i64) -> String {
        let at = t.clock.now().unix_timestamp() + steps * 30;
        self.totp.generate(u64::try_from(at).unwrap())
    }
}

pub(crate) async fn post_json(
    t: &TestServer,
    path: &str,
    cookie: Option<&str>,
    body: Value,
) -> Response {
    let rb = t.req(Method::POST, path).json(&body);
    let rb = match cookie {
        Some(c) => t.with_cookie(rb, c),
        None => rb,
    };
    rb.send().await.unwrap()
}

/// Adds and confirms an authenticator app for the user of `cookie`, which then holds the new
/// session the confirmation starts; the clock moves two time steps on, so that no code of the
/// window around it has been used.
pub(crate) async fn enroll(t: &TestServer, cookie: &mut String) -> App {
    let res = post_json(
        t,
        "/auth/factors/totp",
        Some(cookie),
        json!({"name": "phone"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let uri = body["otpauth_uri"].as_str().unwrap();
    let totp = TOTP::from_url(uri).unwrap_or_else(|e| panic!("{uri}: {e:?}"));
    assert_eq!(totp.algorithm, totp_rs::Algorithm::SHA1);
    assert_eq!((totp.digits, totp.step), (6, 30));
    assert_eq!(totp.get_secret_base32(), body["secret"].as_str().unwrap());
    let app = App {
        id: body["id"].as_str().unwrap().to_string(),
        totp,
    };
    let confirm = format!("/auth/factors/totp/{}/confirm", app.id);
    let res = post_json(t, &confirm, Some(&*cookie), json!({"code": app.code(t, 0)})).await;
    assert_eq!(res.status(), 204);
    let old = std::mem::replace(cookie, session_token(res.headers()).expect("a new session"));
    assert_eq!(
        t.whoami_status(&old).await,
        401,
        "the session before the confirmation"
    );
    t.clock.advance(Duration::seconds(60));
    app
}

/// The first step of a login: the `mfa_token` of a 202.
pub(crate) async fn first_step(t: &TestServer, email: &str) -> String {
    let res = t
        .login_raw(json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 202);
    assert!(
        set_cookie(res.headers()).is_none(),
        "a cookie before the second step"
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    body["mfa_token"].as_str().unwrap().to_string()
}

pub(crate) async fn second_step(t: &TestServer, token: &str, proof: Value) -> Response {
    let mut body = proof;
    body["mfa_token"] = json!(token);
    post_json(t, "/auth/login/mfa", None, body).await
}

#[tokio::test]
async fn an_app_is_enrolled_confirmed_and_then_asked_for_at_every_login() {
    let t = TestServer::start().await;
    let mut cookie = t.user("mfa@example.com").await;
    let who: Value = t.get("/auth/whoami", &cookie).await.json().await.unwrap();
    assert_eq!(who["session"]["amr"], json!(["pwd"]));
    assert_eq!(who["session"]["acr"], "aal1");
    assert!(who["session"]["auth_time"].is_string());

    // An app that no code confirmed does not count, and a wrong code confirms nothing.
    let res = post_json(&t, "/auth/factors/totp", Some(&cookie), json!({})).await;
    assert_eq!(res.status(), 200);
    let pending: Value = res.json().await.unwrap();
    let confirm = format!(
        "/auth/factors/totp/{}/confirm",
        pending["id"].as_str().unwrap()
    );
    let res = post_json(&t, &confirm, Some(&cookie), json!({"code": "12345"})).await;
    assert_eq!(error_code(res).await, "invalid_code");
    assert_eq!(
        t.login_raw(json!({"email": "mfa@example.com", "password": PASSWORD}))
            .await
            .status(),
        200
    );
    let app = enroll(&t, &mut cookie).await;
    let list: Value = t.get("/auth/factors", &cookie).await.json().await.unwrap();
    let confirmed: Vec<&Value> = list["factors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["confirmed"] == true)
        .collect();
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0]["id"], app.id.as_str());
    assert_eq!(confirmed[0]["kind"], "totp");
    assert_eq!(confirmed[0]["name"], "phone");
    assert!(list.to_string().find("secret").is_none());

    // A password alone: 202 and a token that is good for nothing else.
    let token = first_step(&t, "mfa@example.com").await;
    assert_eq!(t.whoami_status(&token).await, 401);
    assert_eq!(t.bearer_status(&token).await, 401);
    let res = second_step(&t, &token, json!({"code": "123456"})).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_code");
    let res = second_step(&t, &token, json!({"code": app.code(&t, 0)})).await;
    assert_eq!(res.status(), 200);
    let session = session_token(res.headers()).expect("a session cookie");
    let who: Value = t.get("/auth/whoami", &session).await.json().await.unwrap();
    assert_eq!(who["session"]["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(who["session"]["acr"], "aal2");
    // The token is spent.
    let res = second_step(&t, &token, json!({"code": app.code(&t, 1)})).await;
    assert_eq!(error_code(res).await, "invalid_mfa_token");
}

#[tokio::test]
async fn codes_are_accepted_one_step_either_side_and_each_step_once() {
    let t = TestServer::start().await;
    let mut cookie = t.user("window@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    for (steps, ok) in [(-2, false), (2, false), (-1, true), (0, true), (1, true)] {
        let token = first_step(&t, "window@example.com").await;
        let res = second_step(&t, &token, json!({"code": app.code(&t, steps)})).await;
        assert_eq!(res.status() == 200, ok, "{steps} steps away");
    }
    // Every step up to the next one is spent now: the current code again is a replay, as is
    // the previous step's.
    for steps in [-1, 0, 1] {
        let token = first_step(&t, "window@example.com").await;
        let res = second_step(&t, &token, json!({"code": app.code(&t, steps)})).await;
        assert_ne!(res.status(), 200, "{steps}: a code was accepted twice");
    }
    t.clock.advance(Duration::seconds(60));
    let token = first_step(&t, "window@example.com").await;
    let res = second_step(&t, &token, json!({"code": app.code(&t, 0)})).await;
    assert_eq!(res.status(), 200, "a new step is a new code");
}

#[tokio::test]
async fn wrong_codes_are_throttled_however_many_logins_they_span() {
    let t = TestServer::start().await;
    let mut cookie = t.user("guess@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    // Five tries per token, and the account's code failures are counted across tokens: a
    // right password does not reset them.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let token = first_step(&t, "guess@example.com").await;
        let res = second_step(&t, &token, json!({"code": format!("{:06}", 100_000 + i)})).await;
        statuses.push(res.status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        statuses[..5].iter().all(|s| *s == 401) && statuses[5] == 429,
        "the 6th wrong code must be throttled: {statuses:?}"
    );
    assert!(refused >= 7, "{statuses:?}");
    // One token allows five tries, then it is worn out even for the right code.
    t.clock.advance(Duration::hours(2));
    let token = first_step(&t, "guess@example.com").await;
    for i in 0..5 {
        let res = second_step(&t, &token, json!({"code": format!("{:06}", 200_000 + i)})).await;
        assert!(matches!(res.status().as_u16(), 401 | 429));
    }
    let res = second_step(&t, &token, json!({"code": app.code(&t, 0)})).await;
    assert_eq!(error_code(res).await, "invalid_mfa_token");
}

#[tokio::test]
async fn mfa_tokens_expire_and_die_with_a_password_change() {
    let t = TestServer::start().await;
    let mut cookie = t.user("expire@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    let token = first_step(&t, "expire@example.com").await;
    t.clock.advance(Duration::minutes(5));
    let res = second_step(&t, &token, json!({"code": app.code(&t, 0)})).await;
    assert_eq!(error_code(res).await, "invalid_mfa_token");

    // A token from before a password change is void.
    let token = first_step(&t, "expire@example.com").await;
    let res = post_json(
        &t,
        "/auth/password",
        Some(&cookie),
        json!({"current_password": PASSWORD, "new_password": "a whole new passphrase 42"}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = second_step(&t, &token, json!({"code": app.code(&t, 0)})).await;
    assert_eq!(error_code(res).await, "invalid_mfa_token");
    for (bad, what) in [
        ("", "empty"),
        ("x", "short"),
        (&"A".repeat(43) as &str, "unknown"),
    ] {
        let res = second_step(&t, bad, json!({"code": app.code(&t, 0)})).await;
        assert_eq!(error_code(res).await, "invalid_mfa_token", "{what}");
    }
    let res = second_step(&t, &token, json!({"code": "1", "recovery_code": "2"})).await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn recovery_codes_are_single_use_and_a_new_set_voids_the_old() {
    let t = TestServer::start().await;
    let mut cookie = t.user("codes@example.com").await;
    let res = post_json(&t, "/auth/factors/recovery-codes", Some(&cookie), json!({})).await;
    assert_eq!(res.status(), 200);
    let codes: Vec<String> = res.json::<Value>().await.unwrap()["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    // Recovery codes alone ask for nothing at login.
    assert_eq!(
        t.login_raw(json!({"email": "codes@example.com", "password": PASSWORD}))
            .await
            .status(),
        200
    );
    enroll(&t, &mut cookie).await;
    let token = first_step(&t, "codes@example.com").await;
    // Case, spaces and hyphens do not matter.
    let typed = codes[0].to_uppercase().replace('-', " ");
    let res = second_step(&t, &token, json!({"recovery_code": typed})).await;
    assert_eq!(res.status(), 200);
    let token = first_step(&t, "codes@example.com").await;
    let res = second_step(&t, &token, json!({"recovery_code": codes[0]})).await;
    assert_eq!(
        error_code(res).await,
        "invalid_code",
        "a recovery code used twice"
    );

    // A new set (the login above is fresh): the old codes are void.
    let res = post_json(&t, "/auth/factors/recovery-codes", Some(&cookie), json!({})).await;
    let fresh: Value = res.json().await.unwrap();
    let res = second_step(&t, &token, json!({"recovery_code": codes[1]})).await;
    assert_eq!(error_code(res).await, "invalid_code", "an old set's code");
    let res = second_step(
        &t,
        &token,
        json!({"recovery_code": fresh["codes"][0].as_str().unwrap()}),
    )
    .await;
    assert_eq!(res.status(), 200);

    // Each of these is on the user's security page, newest first, and no code is.
    let page = t
        .get("/settings/security", &cookie)
        .await
        .text()
        .await
        .unwrap();
    let activity = &page[page.find("Recent activity").expect("the activity list")..];
    let order: Vec<usize> = [
        "Recovery code used",
        "New recovery codes made",
        "Second factor added (authenticator app)",
    ]
    .iter()
    .map(|e| {
        activity
            .find(e)
            .unwrap_or_else(|| panic!("{e} is not listed"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let fresh_codes = fresh["codes"].as_array().unwrap().iter();
    for code in codes
        .iter()
        .map(String::as_str)
        .chain(fresh_codes.filter_map(Value::as_str))
    {
        assert!(!page.contains(code));
    }
}

#[tokio::test]
async fn the_token_transport_asks_for_the_second_factor_too() {
    let t = TestServer::start().await;
    let mut cookie = t.user("tok@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    let grant = |body: Value| t.req(Method::POST, "/auth/token").json(&body).send();
    let res = grant(
        json!({"grant_type": "password", "username": "tok@example.com", "password": PASSWORD}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "mfa_required");
    assert_eq!(body["methods"], json!(["totp"]));
    let token = body["mfa_token"].as_str().unwrap().to_string();
    assert!(body.get("access_token").is_none());

    // The cookie login's second step does not take a token login's mfa_token, nor the
    // reverse; a wrong code is invalid_grant.
    let res = second_step(&t, &token, json!({"code": app.code(&t, 0)})).await;
    assert_eq!(error_code(res).await, "invalid_mfa_token");
    let cookie_token = first_step(&t, "tok@example.com").await;
    let mfa = "urn:cloakroom:params:oauth:grant-type:mfa";
    let res = grant(json!({"grant_type": mfa, "mfa_token": cookie_token, "code": app.code(&t, 0)}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");

    let token = {
        let res = grant(
            json!({"grant_type": "password", "username": "tok@example.com", "password": PASSWORD}),
        )
        .await
        .unwrap();
        res.json::<Value>().await.unwrap()["mfa_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let res = grant(json!({"grant_type": mfa, "mfa_token": token, "code": "000000"}))
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let res = grant(json!({"grant_type": mfa, "mfa_token": token, "code": app.code(&t, 0)}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let pair: Value = res.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let (_, payload) = cloakroom::jwt::insecure_decode_without_verifying(access).unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert!(claims["auth_time"].is_i64());
    assert_eq!(t.bearer_status(access).await, 200);
}

#[tokio::test]
async fn changing_factors_needs_fresh_authentication() {
    let t = TestServer::start().await;
    let mut cookie = t.user("fresh@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    t.clock.advance(Duration::minutes(11));
    let res = post_json(&t, "/auth/factors/totp", Some(&cookie), json!({})).await;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "reauth_required");
    let res = post_json(&t, "/auth/factors/recovery-codes", Some(&cookie), json!({})).await;
    assert_eq!(error_code(res).await, "reauth_required");
    let delete = |body: Value| {
        t.with_cookie(
            t.req(Method::DELETE, &format!("/auth/factors/{}", app.id)),
            &cookie,
        )
        .json(&body)
        .send()
    };
    assert_eq!(delete(json!({})).await.unwrap().status(), 403);
    let res = delete(json!({"current_password": "not it at all"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A second factor proves a fresh login as well as the password does.
    let res = post_json(
        &t,
        "/auth/factors/recovery-codes",
        Some(&cookie),
        json!({"code": app.code(&t, 0)}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = delete(json!({"current_password": PASSWORD, "code": "123456"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = delete(json!({"current_password": PASSWORD})).await.unwrap();
    assert_eq!(res.status(), 204);
    // Gone: the password alone logs in again.
    assert_eq!(
        t.login_raw(json!({"email": "fresh@example.com", "password": PASSWORD}))
            .await
            .status(),
        200
    );
    // Another user's factor is not found, like one that does not exist.
    let mut other = t.user("other@example.com").await;
    let other_app = enroll(&t, &mut other).await;
    let res = t
        .with_cookie(
            t.req(Method::DELETE, &format!("/auth/factors/{}", other_app.id)),
            &cookie,
        )
        .json(&json!({"current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_code_raced_from_many_clients_starts_one_session() {
    let t = TestServer::start().await;
    let mut cookie = t.user("race@example.com").await;
    let app = enroll(&t, &mut cookie).await;
    // Twenty clients with one mfa_token and one code, then twenty with twenty tokens and the
    // same code: each round starts exactly one session.
    let token = first_step(&t, "race@example.com").await;
    let code = app.code(&t, 0);
    let tries = (0..20).map(|_| second_step(&t, &token, json!({"code": code})));
    let statuses: Vec<u16> = futures::future::join_all(tries)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );

    t.clock.advance(Duration::seconds(90));
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(first_step(&t, "race@example.com").await);
    }
    let code = app.code(&t, 0);
    let tries = tokens
        .iter()
        .map(|token| second_step(&t, token, json!({"code": code})));
    let statuses: Vec<u16> = futures::future::join_all(tries)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_role_that_requires_a_second_factor_reaches_only_enrolment_until_it_has_one() {
    let t = TestServer::start_with(|r| r.require_mfa_roles = Some(vec!["admin".into()])).await;
    t.auth()
        .create_user(
            "boss@example.com",
            PASSWORD,
            vec![cloakroom::Role::parse("admin").unwrap()],
        )
        .await
        .unwrap();
    let mut boss = t.login("boss@example.com", PASSWORD).await;
    let plain = t.user("plain@example.com").await;
    assert_eq!(t.get("/auth/sessions", &plain).await.status(), 200);
    assert_eq!(t.get("/auth/verify", &plain).await.status(), 200);

    // The admin's password session: whoami and enrolment only.
    assert_eq!(t.whoami_status(&boss).await, 200);
    for path in ["/auth/sessions", "/auth/verify"] {
        let res = t.get(path, &boss).await;
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(error_code(res).await, "second_factor_required");
    }
    let res = t
        .with_cookie(t.req(Method::GET, "/auth/verify"), &boss)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/settings/security"));
    let res = t
        .with_cookie(t.req(Method::GET, "/dashboard"), &boss)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "/settings/security");
    assert_eq!(t.get("/settings/security", &boss).await.status(), 200);
    assert_eq!(t.get("/auth/factors", &boss).await.status(), 200);

    // Enrolling proves the factor: the new session goes everywhere.
    enroll(&t, &mut boss).await;
    assert_eq!(t.get("/auth/sessions", &boss).await.status(), 200);
    assert_eq!(t.get("/auth/verify", &boss).await.status(), 200);
}

#[tokio::test]
async fn require_mfa_covers_everyone() {
    let t = TestServer::start_with(|r| r.require_mfa = Some(true)).await;
    let mut cookie = t.user("all@example.com").await;
    assert_eq!(t.get("/auth/sessions", &cookie).await.status(), 403);
    enroll(&t, &mut cookie).await;
    assert_eq!(t.get("/auth/sessions", &cookie).await.status(), 200);
}
