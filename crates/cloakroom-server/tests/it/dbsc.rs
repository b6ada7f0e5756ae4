//! Device-bound browser sessions (DBSC), driven by a client that plays the browser's part of
//! the protocol: it makes its key when a login offers a binding, answers the registration and
//! refresh challenges, and keeps its cookies. The theft case is a second client with a copy of
//! the cookies and no key.

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cloakroom::jwt::{Algorithm, SigningKey};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use time::Duration;

/// The value of `name="…"` in a structured-field header.
fn param(header: &str, name: &str) -> Option<String> {
    let start = header.find(&format!("{name}=\""))? + name.len() + 2;
    let len = header[start..].find('"')?;
    Some(header[start..start + len].to_string())
}

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A browser that supports DBSC: a cookie jar, and once a login offers it, a key.
pub(crate) struct Browser {
    key: SigningKey,
    jwk: Value,
    alg: Algorithm,
    pub(crate) cookies: BTreeMap<String, String>,
    /// The bound session's id and refresh URL, once registered.
    pub(crate) session: Option<(String, String)>,
    /// The last challenge the server gave for the next proof.
    pub(crate) challenge: Option<String>,
}

impl Browser {
    pub(crate) fn new(alg: Algorithm) -> Self {
        let (key, _) = SigningKey::generate(alg, time::OffsetDateTime::UNIX_EPOCH).unwrap();
        let mut jwk = key.verify_key().to_jwk().unwrap();
        for member in ["kid", "alg", "use"] {
            jwk.as_object_mut().unwrap().remove(member);
        }
        Self {
            key,
            jwk,
            alg,
            cookies: BTreeMap::new(),
            session: None,
            challenge: None,
        }
    }

    /// A proof over `challenge`, with the public key in the header for a registration.
    pub(crate) fn proof(&self, challenge: &str, registration: bool) -> String {
        let mut header = json!({"typ": "dbsc+jwt", "alg": self.alg.as_str()});
        if registration {
            header["jwk"] = self.jwk.clone();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(json!({"jti": challenge}).to_string())
        );
        let sig = self.key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps what the response's `Set-Cookie` headers set, and drops what they clear.
    pub(crate) fn take_cookies(&mut self, res: &Response) {
        for v in res.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let (name, value) = text.split(';').next().unwrap().split_once('=').unwrap();
            if text.contains("Max-Age=0") || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        if let Some(c) = header(res, "secure-session-challenge") {
            self.challenge = cloakroom::dbsc::read_sf_string(&c);
        }
    }

    /// Logs in on `base`; returns the registration offer (`path`, `challenge`) if one came.
    pub(crate) async fn login(&mut self, t: &TestServer, email: &str) -> Option<(String, String)> {
        let res = t
            .req(Method::POST, "/auth/login")
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        self.take_cookies(&res);
        let offer = header(&res, "secure-session-registration")?;
        assert!(offer.starts_with("(ES256 RS256);"), "{offer}");
        Some((param(&offer, "path")?, param(&offer, "challenge")?))
    }

    /// Sends a registration proof over `challenge` to `base`'s `path`.
    pub(crate) async fn register_at(
        &mut self,
        http: &reqwest::Client,
        base: &str,
        path: &str,
        challenge: &str,
    ) -> Response {
        let res = http
            .post(format!("{base}{path}"))
            .header("cookie", self.cookie_header())
            .header(
                "secure-session-response",
                format!("\"{}\"", self.proof(challenge, true)),
            )
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            self.take_cookies(&res);
        }
        res
    }

    /// Logs in on `t` and binds the session; returns the instructions.
    pub(crate) async fn bind(&mut self, t: &TestServer, email: &str) -> Value {
        let (path, challenge) = self.login(t, email).await.expect("a registration offer");
        let res = self.register_at(&t.http, &t.base, &path, &challenge).await;
        assert_eq!(res.status(), 200);
        let instructions: Value = res.json().await.unwrap();
        self.session = Some((
            instructions["session_identifier"]
                .as_str()
                .unwrap()
                .to_string(),
            instructions["refresh_url"].as_str().unwrap().to_string(),
        ));
        instructions
    }

    /// One refresh request to `base`: with a proof over the cached challenge if there is one.
    pub(crate) async fn refresh_once(&mut self, http: &reqwest::Client, base: &str) -> Response {
        let (id, _) = self.session.clone().expect("a bound session");
        let mut rb = http
            .post(format!("{base}/auth/dbsc/refresh"))
            .header("cookie", self.cookie_header())
            .header("sec-secure-session-id", format!("\"{id}\""));
        if let Some(c) = self.challenge.take() {
            rb = rb.header(
                "secure-session-response",
                format!("\"{}\"", self.proof(&c, false)),
            );
        }
        let res = rb.send().await.unwrap();
        self.take_cookies(&res);
        res
    }

    /// Refreshes as a browser does: a 403 gives a challenge, answered once.
    pub(crate) async fn refresh(&mut self, http: &reqwest::Client, base: &str) -> u16 {
        let res = self.refresh_once(http, base).await;
        if res.status() != 403 {
            return res.status().as_u16();
        }
        assert!(self.challenge.is_some(), "a 403 carries a challenge");
        self.refresh_once(http, base).await.status().as_u16()
    }

    pub(crate) async fn get(&self, t: &TestServer, path: &str) -> Response {
        t.http
            .get(t.url(path))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap()
    }
}

/// The statuses of requests sent all at once.
async fn all_statuses(
    requests: impl Iterator<Item = impl std::future::Future<Output = reqwest::Result<Response>>>,
) -> Vec<u16> {
    futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect()
}

async fn events(t: &TestServer, b: &Browser) -> Vec<String> {
    let res = b.get(t, "/auth/events").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn binds_and_refreshes(alg: Algorithm) {
    let t = TestServer::start().await;
    t.signup("bound@example.com", PASSWORD).await;
    let mut b = Browser::new(alg);
    let (path, challenge) = b.login(&t, "bound@example.com").await.unwrap();
    assert_eq!(path, "/auth/dbsc/register");
    let unbound = b.cookies["cloakroom_session"].clone();
    let res = b.register_at(&t.http, &t.base, &path, &challenge).await;
    assert_eq!(res.status(), 200, "{alg}");
    assert!(header(&res, "secure-session-challenge").is_some());
    let i: Value = res.json().await.unwrap();
    assert_eq!(i["refresh_url"], format!("{}/auth/dbsc/refresh", t.origin));
    assert_eq!(i["scope"]["include_site"], false);
    assert_eq!(i["credentials"][0]["type"], "cookie");
    assert_eq!(i["credentials"][0]["name"], "cloakroom_bound");
    assert_eq!(
        i["credentials"][0]["attributes"],
        "HttpOnly; SameSite=Lax; Path=/"
    );
    let id = i["session_identifier"].as_str().unwrap().to_string();
    b.session = Some((id.clone(), String::new()));

    // The unbound session ended: its cookie is void at once; the bound one works.
    assert_ne!(b.cookies["cloakroom_session"], unbound);
    assert_eq!(t.whoami_status(&unbound).await, 401);
    // The browser knows the binding by its key's thumbprint.
    assert_eq!(id, cloakroom::dpop::thumbprint(&b.jwk).unwrap());
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);
    let list: Value = b.get(&t, "/auth/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"][0]["binding"], "dbsc", "{list}");
    assert!(events(&t, &b).await.contains(&"session_bound".to_string()));
    let page = b.get(&t, "/settings").await.text().await.unwrap();
    assert!(page.contains("bound to its device"));

    // The bound cookie runs out: the session cookie alone is refused, with a challenge.
    t.clock.advance(Duration::minutes(10));
    let res = b.get(&t, "/auth/whoami").await;
    assert_eq!(res.status(), 401);
    let c = header(&res, "secure-session-challenge").unwrap();
    assert_eq!(param(&c, "id").as_deref(), Some(id.as_str()));
    assert_eq!(error_code(res).await, "session_binding_required");
    // Pages send the browser to sign in again.
    assert_eq!(b.get(&t, "/dashboard").await.status(), 303);

    // A refresh without a proof gets a challenge; with a proof, a new bound cookie.
    b.challenge = None;
    let res = b.refresh_once(&t.http, &t.base).await;
    assert_eq!(res.status(), 403);
    assert!(b.challenge.is_some());
    let res = b.refresh_once(&t.http, &t.base).await;
    assert_eq!(res.status(), 200);
    let i: Value = res.json().await.unwrap();
    assert_eq!(i["session_identifier"], id.as_str());
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);
    // The challenge given with the cookie serves the next refresh in one round trip.
    t.clock.advance(Duration::minutes(10));
    assert_eq!(b.refresh_once(&t.http, &t.base).await.status(), 200);
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);
}

#[tokio::test]
async fn a_browser_binds_its_session_with_es256_and_refreshes_the_bound_cookie() {
    binds_and_refreshes(Algorithm::ES256).await;
}

#[tokio::test]
async fn a_browser_binds_its_session_with_rs256_and_refreshes_the_bound_cookie() {
    binds_and_refreshes(Algorithm::RS256).await;
}

#[tokio::test]
async fn proofs_with_the_wrong_key_an_old_challenge_or_a_replayed_one_fail() {
    let t = TestServer::start().await;
    t.signup("proofs@example.com", PASSWORD).await;
    let mut b = Browser::new(Algorithm::ES256);
    let (path, challenge) = b.login(&t, "proofs@example.com").await.unwrap();
    // A challenge given for another session (another login of the same user).
    let mut other = Browser::new(Algorithm::ES256);
    let (_, others) = other.login(&t, "proofs@example.com").await.unwrap();
    for (bad, why) in [
        (others.as_str(), "another session's challenge"),
        ("made-up", "a challenge never given"),
    ] {
        let res = b.register_at(&t.http, &t.base, &path, bad).await;
        assert_eq!(res.status(), 400, "{why}");
        assert_eq!(error_code(res).await, "invalid_session_proof", "{why}");
    }
    // No proof, or one that is not a structured-field string.
    let res = t
        .http
        .post(t.url(&path))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = t
        .http
        .post(t.url(&path))
        .header("cookie", b.cookie_header())
        .header("secure-session-response", b.proof(&challenge, true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "an unquoted proof");
    // Without the session cookie there is nothing to bind.
    let res = t
        .http
        .post(t.url(&path))
        .header(
            "secure-session-response",
            format!("\"{}\"", b.proof(&challenge, true)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // An expired challenge.
    let mut late = Browser::new(Algorithm::ES256);
    let (_, old) = late.login(&t, "proofs@example.com").await.unwrap();
    t.clock.advance(Duration::minutes(16));
    let res = late.register_at(&t.http, &t.base, &path, &old).await;
    assert_eq!(res.status(), 400, "an expired challenge");
    t.clock.advance(Duration::minutes(-16));

    // The right one binds, once: the same proof again finds the session ended.
    let res = b.register_at(&t.http, &t.base, &path, &challenge).await;
    assert_eq!(res.status(), 200);
    let id = res.json::<Value>().await.unwrap()["session_identifier"]
        .as_str()
        .unwrap()
        .to_string();
    b.session = Some((id.clone(), String::new()));
    let res = b.register_at(&t.http, &t.base, &path, &challenge).await;
    assert_eq!(res.status(), 400, "a bound session binds once");

    // Refresh: another key's proof is refused and recorded.
    let thief = Browser::new(Algorithm::ES256);
    b.challenge = None;
    assert_eq!(b.refresh_once(&t.http, &t.base).await.status(), 403);
    let c = b.challenge.clone().unwrap();
    let refresh = |proof: Option<String>, sid: &str| {
        let mut rb = t
            .http
            .post(t.url("/auth/dbsc/refresh"))
            .header("cookie", b.cookie_header())
            .header("sec-secure-session-id", format!("\"{sid}\""));
        if let Some(p) = proof {
            rb = rb.header("secure-session-response", format!("\"{p}\""));
        }
        rb.send()
    };
    let res = refresh(Some(thief.proof(&c, false)), &id).await.unwrap();
    assert_eq!(res.status(), 400, "another key");
    // A proof carrying its own key is refused too.
    let res = refresh(Some(thief.proof(&c, true)), &id).await.unwrap();
    assert_eq!(res.status(), 400, "a key in a refresh proof");
    // Another session's id.
    let res = refresh(Some(b.proof(&c, false)), &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "another session id");
    // The right proof passes once; the same again gets a new challenge.
    assert_eq!(
        refresh(Some(b.proof(&c, false)), &id)
            .await
            .unwrap()
            .status(),
        200
    );
    let res = refresh(Some(b.proof(&c, false)), &id).await.unwrap();
    assert_eq!(res.status(), 403, "a replayed challenge");
    assert!(header(&res, "secure-session-challenge").is_some());
    // A stale challenge also gets a new one.
    let res = refresh(Some(b.proof(&challenge, false)), &id)
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(events(&t, &b)
        .await
        .contains(&"dbsc_proof_refused".to_string()));
}

#[tokio::test]
async fn a_browser_that_never_registers_is_unaffected_unless_binding_is_required() {
    let t = TestServer::start().await;
    let cookie = t.user("plain@example.com").await;
    t.clock.advance(Duration::minutes(25));
    assert_eq!(t.whoami_status(&cookie).await, 200, "optional: unaffected");

    let t = TestServer::start_with(|r| r.dbsc = Some("required".into())).await;
    let cookie = t.user("required@example.com").await;
    assert_eq!(t.whoami_status(&cookie).await, 200, "time to register");
    t.clock.advance(Duration::minutes(10));
    let res = t.get("/auth/whoami", &cookie).await;
    assert_eq!(res.status(), 401);
    assert!(header(&res, "secure-session-challenge").is_none());
    assert_eq!(error_code(res).await, "session_binding_required");
    // Token sessions bind with DPoP instead and are not held to this.
    let pair = t.token_login("required@example.com", PASSWORD).await;
    t.clock.advance(Duration::minutes(2));
    assert_eq!(
        t.bearer_status(pair["access_token"].as_str().unwrap())
            .await,
        200
    );
    // A browser that binds is let in.
    let mut b = Browser::new(Algorithm::ES256);
    b.bind(&t, "required@example.com").await;
    t.clock.advance(Duration::minutes(9));
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);

    let t = TestServer::start_with(|r| r.dbsc = Some("off".into())).await;
    t.signup("off@example.com", PASSWORD).await;
    let mut b = Browser::new(Algorithm::ES256);
    assert!(b.login(&t, "off@example.com").await.is_none(), "no offer");
    let res = b
        .register_at(&t.http, &t.base, "/auth/dbsc/register", "x")
        .await;
    assert_eq!(res.status(), 404);

    let bad =
        cloakroom_server::settings::Settings::resolve(cloakroom_server::settings::RawSettings {
            dbsc: Some("sometimes".into()),
            ..test_raw(t.dir.path())
        });
    assert!(bad.is_err());
}

/// The theft case on two instances: a copy of the cookies, without the key, is refused on
/// both once the bound cookie it came with runs out, however many times it is tried at once;
/// the browser with the key refreshes on either and carries on on both.
pub(crate) async fn a_copied_cookie_is_refused_across(a: &TestServer, b: &TestServer) {
    a.signup("stolen@example.com", PASSWORD).await;
    let mut browser = Browser::new(Algorithm::ES256);
    browser.bind(a, "stolen@example.com").await;
    let copy = browser.cookie_header();
    let long_lived = format!("cloakroom_session={}", browser.cookies["cloakroom_session"]);
    for t in [a, b] {
        assert_eq!(browser.get(t, "/auth/whoami").await.status(), 200);
        let res = t
            .http
            .get(t.url("/auth/whoami"))
            .header("cookie", &long_lived)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "the session cookie alone");
    }
    for t in [a, b] {
        t.clock.advance(Duration::minutes(10));
    }
    // Many tries at once, on both instances, with the copy: none gets in.
    let tries = (0..64).map(|i| {
        let t = if i % 2 == 0 { a } else { b };
        let cookie = if i % 4 < 2 { &copy } else { &long_lived };
        t.http
            .get(t.url("/auth/whoami"))
            .header("cookie", cookie)
            .send()
    });
    let statuses = all_statuses(tries).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    // The thief's own key cannot refresh, on either instance.
    let mut thief = Browser::new(Algorithm::ES256);
    thief.cookies = browser.cookies.clone();
    thief.session = browser.session.clone();
    for t in [a, b] {
        thief.challenge = None;
        assert_eq!(thief.refresh(&t.http, &t.base).await, 400);
    }
    // The browser's one proof, sent to both at once: one fresh cookie, not two.
    browser.challenge = None;
    assert_eq!(browser.refresh_once(&b.http, &b.base).await.status(), 403);
    let c = browser.challenge.clone().unwrap();
    let (id, _) = browser.session.clone().unwrap();
    let racing = (0..16).map(|i| {
        let t = if i % 2 == 0 { a } else { b };
        t.http
            .post(t.url("/auth/dbsc/refresh"))
            .header("cookie", browser.cookie_header())
            .header("sec-secure-session-id", format!("\"{id}\""))
            .header(
                "secure-session-response",
                format!("\"{}\"", browser.proof(&c, false)),
            )
            .send()
    });
    let statuses = all_statuses(racing).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 403)),
        "{statuses:?}"
    );
    // And refreshing as a browser does works on either instance, for both.
    browser.challenge = None;
    assert_eq!(browser.refresh(&b.http, &b.base).await, 200);
    for t in [a, b] {
        assert_eq!(browser.get(t, "/auth/whoami").await.status(), 200);
    }
}

/// One registration proof sent to two instances at once, many times over: each session binds
/// once, so one answer is 200 and the rest find the challenge used or the session ended.
async fn a_session_binds_once_across(a: &TestServer, b: &TestServer) {
    a.signup("race-across@example.com", PASSWORD).await;
    for _ in 0..10 {
        let mut browser = Browser::new(Algorithm::ES256);
        let (path, challenge) = browser.login(a, "race-across@example.com").await.unwrap();
        let proof = format!("\"{}\"", browser.proof(&challenge, true));
        let cookies = browser.cookie_header();
        let racing = (0..8).map(|i| {
            let t = if i % 2 == 0 { a } else { b };
            t.http
                .post(t.url(&path))
                .header("cookie", &cookies)
                .header("secure-session-response", &proof)
                .send()
        });
        one_registration_won(&all_statuses(racing).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_cookie_is_refused_on_every_instance_on_postgresql() {
    let Some(schema) = PgSchema::create("a_copied_dbsc_cookie").await else {
        return;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let (a, b) = crate::postgres::pair(&schema.url, None).await;
        a_copied_cookie_is_refused_across(&a, &b).await;
        a_session_binds_once_across(&a, &b).await;
    }))
    .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_cookie_is_refused_on_every_instance_with_redis() {
    crate::with_redis::with_backends("a_copied_dbsc_cookie_with_redis", |url, redis| async move {
        let (a, b) = crate::postgres::pair(&url, Some(&redis)).await;
        a_copied_cookie_is_refused_across(&a, &b).await;
        a_session_binds_once_across(&a, &b).await;
    })
    .await;
}

/// Two registrations of one session at once (the same proof sent twice, to two instances'
/// worth of concurrency): one binds, the other finds nothing left to bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_binds_once_however_many_registrations_race() {
    let t = TestServer::start().await;
    t.signup("race@example.com", PASSWORD).await;
    for _ in 0..20 {
        let mut b = Browser::new(Algorithm::ES256);
        let (path, challenge) = b.login(&t, "race@example.com").await.unwrap();
        let proof = format!("\"{}\"", b.proof(&challenge, true));
        let racing = (0..8).map(|_| {
            t.http
                .post(t.url(&path))
                .header("cookie", b.cookie_header())
                .header("secure-session-response", &proof)
                .send()
        });
        one_registration_won(&all_statuses(racing).await);
    }
}

/// A bound session's successors (a step-up, a password change) keep the binding: the browser's
/// bound cookie and its refreshes carry on across them, and the copy of the old cookie is void.
#[tokio::test]
async fn the_binding_survives_a_step_up_and_a_password_change() {
    let t = TestServer::start().await;
    t.signup("successor@example.com", PASSWORD).await;
    let mut b = Browser::new(Algorithm::ES256);
    b.bind(&t, "successor@example.com").await;
    let before = b.cookies["cloakroom_session"].clone();
    let res = t
        .req(Method::POST, "/auth/reauthenticate")
        .header("cookie", b.cookie_header())
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    b.take_cookies(&res);
    assert_ne!(b.cookies["cloakroom_session"], before);
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);
    let list: Value = b.get(&t, "/auth/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"][0]["binding"], "dbsc");
    let res = t
        .req(Method::POST, "/auth/password")
        .header("cookie", b.cookie_header())
        .json(
            &json!({"current_password": PASSWORD, "new_password": "another horse battery staple"}),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    b.take_cookies(&res);
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);
    // The bound cookie runs out; the refresh names the same binding and renews it.
    t.clock.advance(Duration::minutes(10));
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 401);
    b.challenge = None;
    assert_eq!(b.refresh(&t.http, &t.base).await, 200);
    assert_eq!(b.get(&t, "/auth/whoami").await.status(), 200);
    assert_eq!(t.whoami_status(&before).await, 401);
}

/// Of registrations raced with one proof, one won; the others were refused, not failed.
fn one_registration_won(statuses: &[u16]) {
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 400 | 401)),
        "{statuses:?}"
    );
}
