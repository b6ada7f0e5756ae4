//! Passkeys over HTTP with a software authenticator (webauthn-authenticator-rs) playing the
//! browser: adding one after a fresh login, logging in with it passwordless and as a second
//! factor, and the attacks: a replayed or expired challenge, another origin, no user
//! verification, tampered authenticator data, a user handle of another user, and a passkey
//! ceremony of one user finished by another.

use crate::mfa::{first_step, post_json, second_step};
use crate::support::*;
use reqwest::Response;
use serde_json::{json, Value};
use time::Duration;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// A browser's passkey store: one software authenticator at one origin.
pub(crate) struct Device {
    auth: WebauthnAuthenticator<SoftPasskey>,
    origin: Url,
    /// The credential made last, and its user, to play a discoverable credential (the soft
    /// authenticator needs the credential named and returns no user handle).
    credential: Option<(Value, String)>,
}

impl Device {
    pub(crate) fn new(t: &TestServer) -> Self {
        Self::at(&t.origin, true)
    }

    fn at(origin: &str, verifies_user: bool) -> Self {
        Self {
            auth: WebauthnAuthenticator::new(SoftPasskey::new(verifies_user)),
            origin: Url::parse(origin).unwrap(),
            credential: None,
        }
    }

    fn create(&mut self, mut options: Value) -> Value {
        let user = options["publicKey"]["user"]["id"].clone();
        // The soft authenticator makes no resident keys: `get` plays that part.
        options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("discouraged");
        options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
        let options: CreationChallengeResponse = serde_json::from_value(options).unwrap();
        let credential = self
            .auth
            .do_registration(self.origin.clone(), options)
            .unwrap();
        let credential = serde_json::to_value(credential).unwrap();
        self.credential = Some((credential["rawId"].clone(), user.as_str().unwrap().into()));
        credential
    }

    pub(crate) fn get(&mut self, mut options: Value) -> Value {
        let discoverable = options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        let (id, user) = self.credential.clone().expect("a credential");
        if discoverable {
            options["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": id}]);
        }
        options["mediation"] = Value::Null;
        let options: RequestChallengeResponse = serde_json::from_value(options).unwrap();
        let assertion = self
            .auth
            .do_authentication(self.origin.clone(), options)
            .unwrap();
        let mut assertion = serde_json::to_value(assertion).unwrap();
        if discoverable {
            // What a platform authenticator returns for a discoverable credential.
            assertion["response"]["userHandle"] = json!(user);
        }
        assertion
    }
}

pub(crate) async fn options(
    t: &TestServer,
    path: &str,
    cookie: Option<&str>,
    body: Value,
) -> Value {
    let res = post_json(t, path, cookie, body).await;
    assert_eq!(res.status(), 200, "{path}");
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

pub(crate) async fn register(t: &TestServer, cookie: &str, device: &mut Device) -> Response {
    let opts = options(
        t,
        "/auth/passkeys/register/options",
        Some(cookie),
        json!({}),
    )
    .await;
    assert_eq!(
        opts["publicKey"]["authenticatorSelection"]["residentKey"],
        "required"
    );
    assert_eq!(
        opts["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let credential = device.create(opts);
    post_json(
        t,
        "/auth/passkeys/register",
        Some(cookie),
        json!({"credential": credential, "name": "laptop"}),
    )
    .await
}

/// `POST /auth/passkeys/login` with an assertion.
pub(crate) async fn login_with(t: &TestServer, assertion: &Value) -> Response {
    post_json(
        t,
        "/auth/passkeys/login",
        None,
        json!({"credential": assertion}),
    )
    .await
}

async fn passkey_login(t: &TestServer, device: &mut Device) -> (Response, Value) {
    let opts = options(t, "/auth/passkeys/login/options", None, json!({})).await;
    let assertion = device.get(opts);
    (login_with(t, &assertion).await, assertion)
}

#[tokio::test]
async fn a_passkey_is_added_then_logs_in_without_a_password() {
    let t = TestServer::start().await;
    let cookie = t.user("pk@example.com").await;
    let mut device = Device::new(&t);
    let res = register(&t, &cookie, &mut device).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["factor"]["kind"], "passkey");
    assert_eq!(body["factor"]["name"], "laptop");

    let (res, assertion) = passkey_login(&t, &mut device).await;
    assert_eq!(res.status(), 200);
    let session = session_token(res.headers()).expect("a session cookie");
    let who: Value = t.get("/auth/whoami", &session).await.json().await.unwrap();
    assert_eq!(who["user"]["email"], "pk@example.com");
    assert_eq!(who["session"]["acr"], "aal2");
    assert_eq!(who["session"]["amr"], json!(["hwk", "user"]));

    // The same assertion again: its challenge is spent.
    let res = login_with(&t, &assertion).await;
    assert_eq!(res.status(), 401);
    // A password login now asks for the passkey as a second step.
    let token = first_step(&t, "pk@example.com").await;
    let opts = options(
        &t,
        "/auth/passkeys/login/options",
        None,
        json!({"mfa_token": token}),
    )
    .await;
    assert_eq!(
        opts["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let assertion = device.get(opts);
    let res = second_step(&t, &token, json!({"credential": assertion})).await;
    assert_eq!(res.status(), 200);
    let session = session_token(res.headers()).unwrap();
    let who: Value = t.get("/auth/whoami", &session).await.json().await.unwrap();
    assert_eq!(who["session"]["amr"], json!(["pwd", "hwk", "user", "mfa"]));
}

#[tokio::test]
async fn passkey_ceremonies_refuse_what_they_must() {
    let t = TestServer::start().await;
    let cookie = t.user("att@example.com").await;

    // Adding one needs a fresh login.
    t.clock.advance(Duration::minutes(11));
    let res = post_json(
        &t,
        "/auth/passkeys/register/options",
        Some(&cookie),
        json!({}),
    )
    .await;
    assert_eq!(error_code(res).await, "reauth_required");
    let cookie = {
        let res = post_json(
            &t,
            "/auth/reauthenticate",
            Some(&cookie),
            json!({"password": PASSWORD}),
        )
        .await;
        session_token(res.headers()).unwrap()
    };

    // Another origin (another port of the same host).
    let mut phished = Device::at("http://localhost:1", true);
    assert_eq!(register(&t, &cookie, &mut phished).await.status(), 401);
    // No user verification.
    let opts = options(
        &t,
        "/auth/passkeys/register/options",
        Some(&cookie),
        json!({}),
    )
    .await;
    let mut lazy = Device::at(&t.origin, false);
    let mut relaxed = opts.clone();
    relaxed["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let credential = lazy.create(relaxed);
    let res = post_json(
        &t,
        "/auth/passkeys/register",
        Some(&cookie),
        json!({"credential": credential}),
    )
    .await;
    assert_eq!(
        res.status(),
        401,
        "a credential made without user verification"
    );

    // A ceremony of one user cannot be finished by another.
    let other = t.user("other-pk@example.com").await;
    let opts = options(
        &t,
        "/auth/passkeys/register/options",
        Some(&cookie),
        json!({}),
    )
    .await;
    let mut device = Device::new(&t);
    let credential = device.create(opts);
    let res = post_json(
        &t,
        "/auth/passkeys/register",
        Some(&other),
        json!({"credential": credential}),
    )
    .await;
    assert_eq!(res.status(), 401);
    // Its own user may finish it, once.
    let register_again = || {
        post_json(
            &t,
            "/auth/passkeys/register",
            Some(&cookie),
            json!({"credential": credential}),
        )
    };
    assert_eq!(register_again().await.status(), 201);
    assert_eq!(register_again().await.status(), 401, "a spent challenge");

    // A good one; then login attacks.
    let mut device = Device::new(&t);
    assert_eq!(register(&t, &cookie, &mut device).await.status(), 201);
    // An expired challenge.
    let opts = options(&t, "/auth/passkeys/login/options", None, json!({})).await;
    let assertion = device.get(opts);
    t.clock.advance(Duration::minutes(6));
    let res = login_with(&t, &assertion).await;
    assert_eq!(res.status(), 401, "an expired challenge");
    assert_eq!(error_code(res).await, "passkey_refused");
    // A replayed assertion.
    let opts = options(&t, "/auth/passkeys/login/options", None, json!({})).await;
    let assertion = device.get(opts);
    assert_eq!(login_with(&t, &assertion).await.status(), 200);
    let res = login_with(&t, &assertion).await;
    assert_eq!(res.status(), 401, "a replayed assertion");
    // A challenge the server did not make, of the right length, and one made for adding a
    // passkey, signed by the right device: refused.
    let made_for_adding = options(
        &t,
        "/auth/passkeys/register/options",
        Some(&cookie),
        json!({}),
    )
    .await["publicKey"]["challenge"]
        .clone();
    let genuine = options(&t, "/auth/passkeys/login/options", None, json!({})).await;
    let length = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(genuine["publicKey"]["challenge"].as_str().unwrap())
            .unwrap()
            .len()
    };
    for (challenge, what) in [
        (json!(base64url(&vec![7u8; length])), "a forged challenge"),
        (made_for_adding, "a challenge for adding a passkey"),
    ] {
        let mut forged = genuine.clone();
        forged["publicKey"]["challenge"] = challenge;
        let assertion = device.get(forged);
        let res = login_with(&t, &assertion).await;
        assert_eq!(res.status(), 401, "{what}");
    }
    // The assertion claims to be another user's (the user handle is not signed).
    let opts = options(&t, "/auth/passkeys/login/options", None, json!({})).await;
    let mut assertion = device.get(opts);
    let other_id: Value = t.get("/auth/whoami", &other).await.json().await.unwrap();
    let other_uuid = uuid::Uuid::parse_str(other_id["user"]["id"].as_str().unwrap()).unwrap();
    assertion["response"]["userHandle"] = json!(base64url(other_uuid.as_bytes()));
    let res = login_with(&t, &assertion).await;
    assert_eq!(res.status(), 401, "another user's handle");
    // Authenticator data changed after signing (here its counter) does not verify.
    let opts = options(&t, "/auth/passkeys/login/options", None, json!({})).await;
    let mut tampered = device.get(opts);
    let older = authenticator_data_with_counter(&tampered, 0);
    tampered["response"]["authenticatorData"] = json!(older);
    let res = login_with(&t, &tampered).await;
    assert_eq!(res.status(), 401, "tampered authenticator data");
    let (res, _) = passkey_login(&t, &mut device).await;
    assert_eq!(res.status(), 200, "the device itself still gets in");
    // Not a credential at all: a clear 400.
    for bad in [json!({}), json!({"id": "x"}), json!("credential")] {
        let res = login_with(&t, &bad).await;
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(error_code(res).await, "invalid_credential", "{bad}");
    }
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The assertion's authenticator data with its signature counter set to `counter`, after it
/// was signed.
fn authenticator_data_with_counter(assertion: &Value, counter: u32) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut data = engine
        .decode(assertion["response"]["authenticatorData"].as_str().unwrap())
        .unwrap();
    data[33..37].copy_from_slice(&counter.to_be_bytes());
    engine.encode(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_assertion_raced_from_many_clients_starts_one_session() {
    let t = TestServer::start().await;
    let cookie = t.user("pk-race@example.com").await;
    let mut device = Device::new(&t);
    assert_eq!(register(&t, &cookie, &mut device).await.status(), 201);
    let opts = options(&t, "/auth/passkeys/login/options", None, json!({})).await;
    let assertion = device.get(opts);
    let tries = (0..20).map(|_| login_with(&t, &assertion));
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
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 401)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn one_client_may_start_120_passkey_ceremonies_a_minute() {
    let t = TestServer::start().await;
    let mut statuses = Vec::new();
    for _ in 0..125 {
        let res = post_json(&t, "/auth/passkeys/login/options", None, json!({})).await;
        statuses.push(res.status().as_u16());
    }
    assert!(statuses[..120].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[120..].iter().all(|s| *s == 429), "{statuses:?}");
    t.clock.advance(Duration::minutes(2));
    let res = post_json(&t, "/auth/passkeys/login/options", None, json!({})).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_token_transport_takes_a_passkey_as_the_second_step() {
    let t = TestServer::start().await;
    let cookie = t.user("pk-token@example.com").await;
    let mut device = Device::new(&t);
    assert_eq!(register(&t, &cookie, &mut device).await.status(), 201);
    let grant = |body: Value| post_json(&t, "/auth/token", None, body);
    let res = grant(json!({
        "grant_type": "password", "username": "pk-token@example.com", "password": PASSWORD,
    }))
    .await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["methods"], json!(["passkey"]));
    let token = body["mfa_token"].as_str().unwrap().to_string();
    let opts = options(
        &t,
        "/auth/passkeys/login/options",
        None,
        json!({"mfa_token": token}),
    )
    .await;
    let assertion = device.get(opts);
    let res = grant(json!({
        "grant_type": "urn:cloakroom:params:oauth:grant-type:mfa",
        "mfa_token": token,
        "credential": assertion,
    }))
    .await;
    assert_eq!(res.status(), 200);
    let pair: Value = res.json().await.unwrap();
    let (_, payload) =
        cloakroom::jwt::insecure_decode_without_verifying(pair["access_token"].as_str().unwrap())
            .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["amr"], json!(["pwd", "hwk", "user", "mfa"]));
    assert_eq!(claims["acr"], "aal2");
}
