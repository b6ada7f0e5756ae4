//! DPoP (RFC 9449) on the token transport: tokens bound to the client's key at the token
//! endpoint, each request's proof checked by RFC 9449 §4.3's list, a proof counting once on
//! every instance, server nonces, and a bound token worth nothing as a bearer token.

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, Response};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// A DPoP client's key (ES256), making proofs as a client library would.
pub(crate) struct DpopKey {
    pair: EcdsaKeyPair,
}

impl DpopKey {
    pub(crate) fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
        })
    }

    pub(crate) fn jkt(&self) -> String {
        cloakroom::dpop::thumbprint(&self.jwk()).unwrap()
    }

    /// A proof of `claims` (the caller's own, for the negative cases).
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// The claims of a proof for `method` `url` at `iat`, naming `token` when given.
    fn claims(method: &str, url: &str, iat: i64, token: Option<&str>) -> Value {
        let mut c = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": url,
            "iat": iat,
        });
        if let Some(token) = token {
            c["ath"] = json!(cloakroom::dpop::access_token_hash(token));
        }
        c
    }

    pub(crate) fn proof(
        &self,
        t: &TestServer,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> String {
        self.sign(&Self::claims(method, &site_url(t, path), now(t), token))
    }
}

/// The URL a client addresses for `path`: the public URL's when there is one (several
/// instances behind one name), else the test server's own.
fn site_url(t: &TestServer, path: &str) -> String {
    match &t.raw.public_url {
        Some(_) => format!("{}{path}", t.origin),
        None => t.url(path),
    }
}

fn now(t: &TestServer) -> i64 {
    cloakroom::Clock::now(&*t.clock).unix_timestamp()
}

async fn token_grant(t: &TestServer, body: Value, proof: Option<&str>) -> Response {
    let mut req = t.req(Method::POST, "/auth/token").json(&body);
    if let Some(proof) = proof {
        req = req.header("dpop", proof);
    }
    req.send().await.unwrap()
}

fn password_grant(email: &str) -> Value {
    json!({"grant_type": "password", "username": email, "password": PASSWORD})
}

/// `GET /auth/whoami` with `Authorization: DPoP <token>` and `proof`.
async fn whoami(t: &TestServer, token: &str, proof: Option<&str>) -> Response {
    let mut req = t
        .http
        .get(t.url("/auth/whoami"))
        .header("authorization", format!("DPoP {token}"));
    if let Some(proof) = proof {
        req = req.header("dpop", proof);
    }
    req.send().await.unwrap()
}

fn challenge(res: &Response) -> String {
    res.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A bound token pair for `email` (signed up here), and its key.
async fn bound_pair(t: &TestServer, email: &str) -> (DpopKey, Value) {
    t.signup(email, PASSWORD).await;
    let key = DpopKey::new();
    let proof = key.proof(t, "POST", "/auth/token", None);
    let res = token_grant(t, password_grant(email), Some(&proof)).await;
    assert_eq!(res.status(), 200);
    let pair: Value = res.json().await.unwrap();
    assert_eq!(pair["token_type"], "DPoP");
    (key, pair)
}

#[tokio::test]
async fn tokens_are_bound_to_the_key_and_each_proof_is_checked() {
    let t = TestServer::start().await;
    let (key, pair) = bound_pair(&t, "dpop@example.com").await;
    let at = pair["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims_of(&at)["cnf"]["jkt"], key.jkt());

    let res = whoami(
        &t,
        &at,
        Some(&key.proof(&t, "GET", "/auth/whoami", Some(&at))),
    )
    .await;
    assert_eq!(res.status(), 200);
    // The session list says how each session is bound.
    let sessions: Value = t
        .http
        .get(t.url("/auth/sessions"))
        .header("authorization", format!("DPoP {at}"))
        .header("dpop", key.proof(&t, "GET", "/auth/sessions", Some(&at)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["binding"], "dpop", "{sessions}");
    // A copy of the token without the key is worthless: as a bearer token, or without a proof.
    assert_eq!(t.bearer_status(&at).await, 401);
    let res = whoami(&t, &at, None).await;
    assert_eq!(res.status(), 401);
    assert!(challenge(&res).starts_with("DPoP error=\"invalid_token\""));

    // RFC 9449 §4.3, case by case.
    let thief = DpopKey::new();
    let ts = now(&t);
    let url = t.url("/auth/whoami");
    let cases = [
        (
            "wrong htm",
            key.sign(&DpopKey::claims("POST", &url, ts, Some(&at))),
        ),
        (
            "wrong htu",
            key.sign(&DpopKey::claims(
                "GET",
                &t.url("/auth/sessions"),
                ts,
                Some(&at),
            )),
        ),
        (
            "stale iat",
            key.sign(&DpopKey::claims("GET", &url, ts - 120, Some(&at))),
        ),
        (
            "future iat",
            key.sign(&DpopKey::claims("GET", &url, ts + 120, Some(&at))),
        ),
        (
            "missing ath",
            key.sign(&DpopKey::claims("GET", &url, ts, None)),
        ),
        (
            "another token's ath",
            key.sign(&DpopKey::claims("GET", &url, ts, Some("another token"))),
        ),
        (
            "another key",
            thief.sign(&DpopKey::claims("GET", &url, ts, Some(&at))),
        ),
        ("not a JWT", "not.a.proof".to_string()),
    ];
    for (what, proof) in cases {
        let res = whoami(&t, &at, Some(&proof)).await;
        assert_eq!(res.status(), 401, "{what}");
        assert!(
            challenge(&res).contains("error=\"invalid_dpop_proof\""),
            "{what}: {}",
            challenge(&res)
        );
    }
    // A proof counts once.
    let proof = key.proof(&t, "GET", "/auth/whoami", Some(&at));
    assert_eq!(whoami(&t, &at, Some(&proof)).await.status(), 200);
    assert_eq!(
        whoami(&t, &at, Some(&proof)).await.status(),
        401,
        "replayed"
    );

    // The refresh token is bound too: no proof, or another key's, refreshes nothing.
    let rt = pair["refresh_token"].as_str().unwrap();
    let refresh = json!({"grant_type": "refresh_token", "refresh_token": rt});
    let res = token_grant(&t, refresh.clone(), None).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
    let res = token_grant(
        &t,
        refresh.clone(),
        Some(&thief.proof(&t, "POST", "/auth/token", None)),
    )
    .await;
    assert_eq!(res.status(), 400);
    let res = token_grant(
        &t,
        refresh,
        Some(&key.proof(&t, "POST", "/auth/token", None)),
    )
    .await;
    assert_eq!(res.status(), 200, "the holder of the key refreshes");
    let next: Value = res.json().await.unwrap();
    assert_eq!(next["token_type"], "DPoP");
    let at2 = next["access_token"].as_str().unwrap();
    assert_eq!(claims_of(at2)["cnf"]["jkt"], key.jkt());
    let res = whoami(
        &t,
        at2,
        Some(&key.proof(&t, "GET", "/auth/whoami", Some(at2))),
    )
    .await;
    assert_eq!(res.status(), 200);

    // The user sees the binding and the refused proofs among their security events.
    let events: Value = t
        .http
        .get(t.url("/auth/events"))
        .header("authorization", format!("DPoP {at2}"))
        .header("dpop", key.proof(&t, "GET", "/auth/events", Some(at2)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"tokens_bound"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == "dpop_proof_refused").count() >= 9,
        "{kinds:?}"
    );
    // An unbound token is not a DPoP token.
    let plain = t.token_login("dpop@example.com", PASSWORD).await;
    let plain = plain["access_token"].as_str().unwrap();
    let res = whoami(
        &t,
        plain,
        Some(&key.proof(&t, "GET", "/auth/whoami", Some(plain))),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(t.bearer_status(plain).await, 200);
    // A token request's proof is checked like any other.
    let res = token_grant(
        &t,
        password_grant("dpop@example.com"),
        Some(&key.proof(&t, "POST", "/auth/whoami", None)),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
}

#[tokio::test]
async fn server_nonces_are_asked_for_and_taken_and_binding_can_be_required() {
    let t = TestServer::start_with(|r| {
        r.dpop_nonce = Some(true);
        r.require_dpop = Some(true);
    })
    .await;
    t.signup("nonce@example.com", PASSWORD).await;
    let res = token_grant(&t, password_grant("nonce@example.com"), None).await;
    assert_eq!(res.status(), 400, "every token is bound");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );

    let key = DpopKey::new();
    let res = token_grant(
        &t,
        password_grant("nonce@example.com"),
        Some(&key.proof(&t, "POST", "/auth/token", None)),
    )
    .await;
    assert_eq!(res.status(), 400);
    let nonce = res.headers()["dpop-nonce"].to_str().unwrap().to_string();
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "use_dpop_nonce"
    );
    let mut c = DpopKey::claims("POST", &t.url("/auth/token"), now(&t), None);
    c["nonce"] = json!(nonce);
    let res = token_grant(&t, password_grant("nonce@example.com"), Some(&key.sign(&c))).await;
    assert_eq!(res.status(), 200);
    let at = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // The resource side asks the same way, with 401 and the DPoP challenge.
    let res = whoami(
        &t,
        &at,
        Some(&key.proof(&t, "GET", "/auth/whoami", Some(&at))),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert!(challenge(&res).contains("error=\"use_dpop_nonce\""));
    let nonce = res.headers()["dpop-nonce"].to_str().unwrap().to_string();
    let mut c = DpopKey::claims("GET", &t.url("/auth/whoami"), now(&t), Some(&at));
    c["nonce"] = json!(nonce);
    assert_eq!(whoami(&t, &at, Some(&key.sign(&c))).await.status(), 200);
    // A nonce the server did not give is refused the same way.
    let mut c = DpopKey::claims("GET", &t.url("/auth/whoami"), now(&t), Some(&at));
    c["nonce"] = json!("made-up");
    let res = whoami(&t, &at, Some(&key.sign(&c))).await;
    assert!(
        challenge(&res).contains("use_dpop_nonce"),
        "{}",
        challenge(&res)
    );
}

/// One proof sent to two instances at once, many times: it counts once.
async fn a_proof_counts_once_across(a: &TestServer, b: &TestServer) {
    let (key, pair) = bound_pair(a, "replay@example.com").await;
    let at = pair["access_token"].as_str().unwrap().to_string();
    let proof = key.proof(a, "GET", "/auth/whoami", Some(&at));
    // `htu` names the public URL, the same for both instances.
    let mut racing = Vec::new();
    for i in 0..16 {
        let t = if i % 2 == 0 { a } else { b };
        racing.push(
            t.http
                .get(t.url("/auth/whoami"))
                .header("authorization", format!("DPoP {at}"))
                .header("dpop", &proof)
                .send(),
        );
    }
    let statuses: Vec<u16> = futures::future::join_all(racing)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_counts_once_on_every_instance_on_postgresql() {
    let Some(schema) = PgSchema::create("a_dpop_proof_counts_once").await else {
        return;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let (a, b) = crate::postgres::pair(&schema.url, None).await;
        a_proof_counts_once_across(&a, &b).await;
    }))
    .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_counts_once_on_every_instance_with_redis() {
    crate::with_redis::with_backends(
        "a_dpop_proof_counts_once_with_redis",
        |url, redis| async move {
            let (a, b) = crate::postgres::pair(&url, Some(&redis)).await;
            a_proof_counts_once_across(&a, &b).await;
        },
    )
    .await;
}

/// Forward-auth with a DPoP-bound token: the proof names the request the client sent the proxy,
/// which `/auth/verify` learns from a trusted proxy's `X-Forwarded-*` headers.
#[tokio::test]
async fn forward_auth_checks_the_proof_of_the_proxied_request() {
    let t = TestServer::start_with(|r| {
        r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
    })
    .await;
    let (key, pair) = bound_pair(&t, "proxied@example.com").await;
    let at = pair["access_token"].as_str().unwrap();
    let app = "https://app.example.test/reports";
    let verify = |proof: String, method: &'static str| {
        t.http
            .get(t.url("/auth/verify"))
            .header("authorization", format!("DPoP {at}"))
            .header("dpop", proof)
            .header("x-forwarded-method", method)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example.test")
            .header("x-forwarded-uri", "/reports?year=2026")
            .send()
    };
    let res = verify(
        key.sign(&DpopKey::claims("GET", app, now(&t), Some(at))),
        "GET",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-auth-user-id"));
    // A proof for another request of the app, or for cloakroom's own URL, is refused.
    for (proof, method) in [
        (
            key.sign(&DpopKey::claims("POST", app, now(&t), Some(at))),
            "GET",
        ),
        (
            key.sign(&DpopKey::claims(
                "GET",
                "https://app.example.test/admin",
                now(&t),
                Some(at),
            )),
            "GET",
        ),
        (key.proof(&t, "GET", "/auth/verify", Some(at)), "GET"),
    ] {
        assert_eq!(verify(proof, method).await.unwrap().status(), 401);
    }
    // An app on cloakroom's own host: nginx passes the path and the method only.
    let own = format!("{}/wiki/page", t.origin);
    let res = t
        .http
        .get(t.url("/auth/verify"))
        .header("authorization", format!("DPoP {at}"))
        .header(
            "dpop",
            key.sign(&DpopKey::claims("GET", &own, now(&t), Some(at))),
        )
        .header("x-original-method", "GET")
        .header("x-original-uri", "/wiki/page")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // As a bearer token it is worth nothing there too.
    let res = t
        .http
        .get(t.url("/auth/verify"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
