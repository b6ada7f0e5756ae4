//! The library inside another axum service: extractors in embedded mode, and the remote
//! verifier following revocations straight from Redis.

use axum::routing::{get, post};
use axum::Router;
use cloakroom::extract::{Authenticated, RequireRole, RoleName, Verifier};
use cloakroom::remote::{RemoteConfig, RemoteError, RemoteVerifier, RevocationSource};
use cloakroom::testing::RedisPrefix;
use cloakroom::web::RequestRules;
use cloakroom::{
    Auth, AuthConfig, ClientInfo, CookiePolicy, LoginRequest, RedisStore, SqliteStore, Store,
    SystemClock, Transport,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PW: &str = "correct horse battery staple";

struct Admin;
impl RoleName for Admin {
    const NAME: &'static str = "admin";
}

fn config() -> AuthConfig {
    crate::engine::cheap_config()
}

async fn serve(app: Router) -> String {
    let (listener, base) = listen().await;
    serve_on(listener, app);
    base
}

/// A listener on an ephemeral port and its origin (an embedding app names its origin first).
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("http://{addr}"))
}

fn serve_on(listener: tokio::net::TcpListener, app: Router) {
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_recognises_cookies_and_bearers_and_enforces_roles() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let auth = Arc::new(
        Auth::new(store, config(), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    auth.signup("emb@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    let login = auth
        .login(LoginRequest::new("emb@example.com", PW))
        .await
        .unwrap();
    let mut req = LoginRequest::new("emb@example.com", PW);
    req.transport = Transport::Token;
    let pair = auth.login_tokens(req).await.unwrap();

    let (listener, base) = listen().await;
    let app = Router::new()
        .route(
            "/me",
            get(|Authenticated(who): Authenticated| async move { who.email.unwrap_or_default() }),
        )
        .route(
            "/admin",
            get(|RequireRole(who, ..): RequireRole<Admin>| async move { who.user_id }),
        )
        .route(
            "/do",
            post(|Authenticated(_): Authenticated| async { "done" }),
        )
        .layer(
            Verifier::Embedded {
                auth: Arc::clone(&auth),
                rules: RequestRules::new(CookiePolicy::DEV, vec![base.clone()]),
            }
            .layer(),
        );
    serve_on(listener, app);
    let http = reqwest::Client::new();
    let cookie = format!("cloakroom_session={}", login.token.expose());
    let res = http
        .get(format!("{base}/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "emb@example.com");
    let res = http
        .get(format!("{base}/me"))
        .bearer_auth(&pair.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http.get(format!("{base}/me")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    // No credentials, no challenge (as the server: SECURITY.md J21).
    assert!(res.headers().get("www-authenticate").is_none());
    let res = http
        .get(format!("{base}/me"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let res = http
        .get(format!("{base}/admin"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    auth.set_roles("emb@example.com", &["user".into(), "admin".into()])
        .await
        .unwrap();
    let res = http
        .get(format!("{base}/admin"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "role changes apply at once");
    // A cookie-authenticated POST from another site is refused, and so is one that does not
    // prove where it comes from (the server's fail-safe rule); from this one it passes.
    let res = http
        .post(format!("{base}/do"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "cross_origin_request"
    );
    let res = http
        .post(format!("{base}/do"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = http
        .post(format!("{base}/do"))
        .header("cookie", &cookie)
        .header("origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Without the layer, the extractor fails loudly (500), never open.
    let bare =
        serve(Router::new().route("/me", get(|Authenticated(_): Authenticated| async { "?" })))
            .await;
    let res = http
        .get(format!("{bare}/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
}

/// An engine on SQLite in `dir` with Redis under `prefix` in front, its JWKS served, and the
/// settings of a remote verifier of its tokens (following revocations from that Redis when
/// asked).
async fn engine_on_redis(
    prefix: &RedisPrefix,
    dir: &std::path::Path,
) -> (Arc<Auth>, impl Fn(bool) -> RemoteConfig) {
    let url = format!("sqlite://{}", dir.join("r.db").display());
    let sql: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::open(
            &prefix.url,
            &prefix.prefix,
            sql,
            time::Duration::minutes(10),
        )
        .await
        .unwrap(),
    );
    let cfg = config();
    let (issuer, audience) = (cfg.jwt.issuer.clone(), cfg.jwt.audience.clone());
    let auth = Arc::new(Auth::new(store, cfg, Arc::new(SystemClock)).await.unwrap());
    let jwks = auth.jwks();
    let keys = serve(Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    ))
    .await;
    let (redis_url, redis_prefix) = (prefix.url.clone(), prefix.prefix.clone());
    let verifier_config = move |redis: bool| {
        let mut config = RemoteConfig::new(&issuer, &audience);
        config.jwks_url = format!("{keys}/.well-known/jwks.json");
        if redis {
            config.revocations = RevocationSource::Redis {
                url: redis_url.clone(),
                prefix: redis_prefix.clone(),
            };
        }
        config
    };
    (auth, verifier_config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_verifier_follows_revocations_from_redis() {
    let Some(prefix) =
        RedisPrefix::create("the_remote_verifier_follows_revocations_from_redis").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (auth, verifier_config) = engine_on_redis(&prefix, dir.path()).await;
    let verifier = RemoteVerifier::start(verifier_config(true)).await.unwrap();
    let start = Instant::now();
    while !verifier.synced() {
        assert!(start.elapsed() < Duration::from_secs(5), "never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    auth.signup("rr@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    let login = auth
        .login(LoginRequest::new("rr@example.com", PW))
        .await
        .unwrap();
    let (token, _) = auth.mint_access_token(&login.user, &login.session).unwrap();
    assert_eq!(
        verifier.verify(&token).await.unwrap().session_id,
        login.session.id.to_string()
    );
    let who = auth.authenticate(login.token.expose()).await.unwrap();
    auth.logout(&who).await.unwrap();
    let start = Instant::now();
    loop {
        match verifier.verify(&token).await {
            Err(RemoteError::Revoked) => break,
            Ok(_) => assert!(start.elapsed() < Duration::from_secs(1), "still accepted"),
            Err(e) => panic!("unexpected {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    prefix.drop().await;
}

struct RecentLogin;
impl cloakroom::extract::StepUp for RecentLogin {
    const AAL: cloakroom::Acr = cloakroom::Acr::Aal1;
    const MAX_AGE: Option<i64> = Some(300);
}

struct TwoFactors;
impl cloakroom::extract::StepUp for TwoFactors {
    const AAL: cloakroom::Acr = cloakroom::Acr::Aal2;
    const MAX_AGE: Option<i64> = None;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_demands_step_up_per_route_and_a_required_second_factor() {
    use cloakroom::extract::RequireStepUp;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let clock = Arc::new(cloakroom::ManualClock::starting_now());
    let mut config = config();
    config.mfa_required_roles = vec![cloakroom::Role::parse("admin").unwrap()];
    let auth = Arc::new(
        Auth::new(
            store,
            config,
            Arc::clone(&clock) as Arc<dyn cloakroom::Clock>,
        )
        .await
        .unwrap(),
    );
    auth.signup("step@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    let login = auth
        .login(LoginRequest::new("step@example.com", PW))
        .await
        .unwrap();
    let (listener, base) = listen().await;
    let app = Router::new()
        .route(
            "/fresh",
            get(|RequireStepUp(who, ..): RequireStepUp<RecentLogin>| async move { who.user_id }),
        )
        .route(
            "/strong",
            get(
                |RequireStepUp(who, ..): RequireStepUp<TwoFactors>| async move {
                    who.amr.names().join(",")
                },
            ),
        )
        .route(
            "/me",
            get(|Authenticated(who): Authenticated| async move { who.user_id }),
        )
        .layer(
            Verifier::Embedded {
                auth: Arc::clone(&auth),
                rules: RequestRules::new(CookiePolicy::DEV, vec![base.clone()]),
            }
            .layer(),
        );
    serve_on(listener, app);
    let http = reqwest::Client::new();
    let get = |path: &'static str, token: String| {
        http.get(format!("{base}{path}"))
            .header("cookie", format!("cloakroom_session={token}"))
            .send()
    };
    let weak = login.token.expose().to_string();
    assert_eq!(get("/fresh", weak.clone()).await.unwrap().status(), 200);
    clock.advance(time::Duration::seconds(301));
    let res = get("/fresh", weak.clone()).await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("acr_values=\"aal1\", max_age=300"));
    let res = get("/strong", weak.clone()).await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("acr_values=\"aal2\""));

    // An authenticator app, confirmed by its first code: the new session is aal2.
    let who = auth.authenticate(&weak).await.unwrap();
    let enrolment = auth
        .enroll_totp(&who, None, cloakroom::Reauth::Password(PW.into()))
        .await
        .unwrap();
    let app_code = totp_rs::TOTP::from_url(enrolment.otpauth_uri.expose())
        .unwrap()
        .generate(u64::try_from(cloakroom::Clock::now(&*clock).unix_timestamp()).unwrap());
    let strong = auth
        .confirm_totp(&who, enrolment.factor.id, &app_code, &ClientInfo::default())
        .await
        .unwrap();
    let res = get("/strong", strong.token.expose().to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "pwd,otp,mfa");

    // An admin without a second factor reaches nothing in the app.
    auth.create_user(
        "admin@example.com",
        PW,
        vec![cloakroom::Role::parse("admin").unwrap()],
    )
    .await
    .unwrap();
    let admin = auth
        .login(LoginRequest::new("admin@example.com", PW))
        .await
        .unwrap();
    let res = get("/me", admin.token.expose().to_string()).await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "second_factor_required");
}

/// A DPoP client's ES256 key, signing proofs as a client library would.
struct ClientKey(cloakroom::jwt::SigningKey, serde_json::Value);

impl ClientKey {
    fn new() -> Self {
        let (key, _) = cloakroom::jwt::SigningKey::generate(
            cloakroom::jwt::Algorithm::ES256,
            time::OffsetDateTime::UNIX_EPOCH,
        )
        .unwrap();
        let mut jwk = key.verify_key().to_jwk().unwrap();
        for member in ["kid", "alg", "use"] {
            jwk.as_object_mut().unwrap().remove(member);
        }
        Self(key, jwk)
    }

    fn jkt(&self) -> String {
        cloakroom::dpop::thumbprint(&self.1).unwrap()
    }

    fn proof(&self, method: &str, url: &str, token: &str, iat: i64) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.1});
        let claims = serde_json::json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "htm": method,
            "htu": url,
            "iat": iat,
            "ath": cloakroom::dpop::access_token_hash(token),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.0.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A remote verifier checks a DPoP-bound token's proof (RFC 9449 §4.3) and remembers it in
/// cloakroom's Redis, so a proof counts once across the server and every verifier; without
/// Redis, once in its own memory. The extractor takes `Authorization: DPoP` with the proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_verifier_checks_dpop_proofs_once_across_verifiers_and_the_server() {
    use cloakroom::dpop::ProofError;
    let Some(prefix) = RedisPrefix::create("the_remote_verifier_checks_dpop_proofs").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (auth, verifier_config) = engine_on_redis(&prefix, dir.path()).await;
    let service = "https://api.example.test";
    let verifier = |redis: bool| {
        let mut config = verifier_config(redis);
        config.service_origin = Some(service.into());
        RemoteVerifier::start(config)
    };
    let (one, two, local) = (
        verifier(true).await.unwrap(),
        verifier(true).await.unwrap(),
        verifier(false).await.unwrap(),
    );
    let start = Instant::now();
    while !(one.synced() && two.synced()) {
        assert!(start.elapsed() < Duration::from_secs(5), "never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    auth.signup("dpop-remote@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    let key = ClientKey::new();
    let mut req = LoginRequest::new("dpop-remote@example.com", PW);
    req.dpop_jkt = Some(key.jkt());
    let pair = auth.login_tokens(req).await.unwrap();
    let token = pair.access_token.clone();
    let now = cloakroom::Clock::now(&SystemClock).unix_timestamp();
    let orders = format!("{service}/orders");

    // As a bearer token it is refused.
    assert!(matches!(
        one.verify(&token).await,
        Err(RemoteError::Invalid(_))
    ));
    // With its proof it passes, once on every verifier sharing the Redis, and the server
    // itself finds that proof used.
    let proof = key.proof("GET", &orders, &token, now);
    assert!(one
        .verify_dpop(&token, &proof, "GET", "/orders")
        .await
        .is_ok());
    for v in [&one, &two] {
        assert!(matches!(
            v.verify_dpop(&token, &proof, "GET", "/orders").await,
            Err(RemoteError::Proof(ProofError::Replayed))
        ));
    }
    assert!(auth
        .check_dpop_proof(&proof, "GET", &orders, Some(&token), Some(&key.jkt()))
        .await
        .is_err());
    // A verifier without Redis remembers in its own memory.
    let fresh = key.proof("GET", &orders, &token, now);
    assert!(local
        .verify_dpop(&token, &fresh, "GET", "/orders")
        .await
        .is_ok());
    assert!(matches!(
        local.verify_dpop(&token, &fresh, "GET", "/orders").await,
        Err(RemoteError::Proof(ProofError::Replayed))
    ));
    // RFC 9449 §4.3 case by case.
    let other = ClientKey::new();
    let cases = [
        (key.proof("POST", &orders, &token, now), ProofError::Method),
        (
            key.proof("GET", &format!("{service}/other"), &token, now),
            ProofError::Url,
        ),
        (
            key.proof("GET", &orders, &token, now - 120),
            ProofError::Stale,
        ),
        (
            key.proof("GET", &orders, "another token", now),
            ProofError::AccessTokenHash,
        ),
        (
            other.proof("GET", &orders, &token, now),
            ProofError::WrongKey,
        ),
    ];
    for (proof, want) in cases {
        match one.verify_dpop(&token, &proof, "GET", "/orders").await {
            Err(RemoteError::Proof(got)) => assert_eq!(got, want),
            other => panic!("{want:?}: {other:?}"),
        }
    }
    // An unbound token does not pass as a DPoP one.
    let login = auth
        .login(LoginRequest::new("dpop-remote@example.com", PW))
        .await
        .unwrap();
    let (plain, _) = auth.mint_access_token(&login.user, &login.session).unwrap();
    let proof = key.proof("GET", &orders, &plain, now);
    assert!(one
        .verify_dpop(&plain, &proof, "GET", "/orders")
        .await
        .is_err());

    // The extractor of a service in remote mode.
    let app = Router::new()
        .route(
            "/orders",
            get(|Authenticated(id): Authenticated| async move { id.user_id }),
        )
        .layer(Verifier::Remote(Arc::clone(&one)).layer());
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let call = |proof: Option<String>| {
        let mut rb = http
            .get(format!("{base}/orders"))
            .header("authorization", format!("DPoP {token}"));
        if let Some(p) = proof {
            rb = rb.header("dpop", p);
        }
        rb.send()
    };
    let proof = key.proof("GET", &orders, &token, now);
    assert_eq!(call(Some(proof.clone())).await.unwrap().status(), 200);
    assert_eq!(call(Some(proof)).await.unwrap().status(), 401, "replayed");
    assert_eq!(call(None).await.unwrap().status(), 401, "no proof");
    prefix.drop().await;
}
