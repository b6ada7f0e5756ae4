//! The example app in remote mode against a real cloakroom server, both on ephemeral ports:
//! tokens work, roles are enforced, a logout closes the app's door within a second, the key
//! set is not refetched for every unknown `kid`, and a verifier that lost its connection
//! resynchronises.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cloakroom::extract::Verifier;
use cloakroom::remote::{RemoteConfig, RemoteVerifier, RevocationSource};
use cloakroom::{Clock, SystemClock};
use cloakroom_server::app::Server;
use cloakroom_server::settings::{RawSettings, Settings};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "a-verifier-key-of-at-least-32-characters";
const PASSWORD: &str = "correct horse battery staple";

fn raw(dir: &std::path::Path, listen: &str) -> RawSettings {
    RawSettings {
        listen: Some(listen.parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        argon2_memory_kib: Some(64),
        argon2_iterations: Some(1),
        argon2_parallelism: Some(1),
        signups_per_hour: Some(1000),
        verifier_keys: Some(vec![KEY.into()]),
        ..Default::default()
    }
}

async fn start_server(dir: &std::path::Path, listen: &str) -> Server {
    let settings = Settings::resolve(raw(dir, listen)).unwrap();
    Server::start(&settings, Arc::new(SystemClock) as Arc<dyn Clock>)
        .await
        .unwrap()
}

/// The app on an ephemeral port; returns its base URL and verifier.
async fn start_app(auth_port: u16, min_refresh: Duration) -> (String, Arc<RemoteVerifier>) {
    let issuer = format!("http://localhost:{auth_port}");
    let mut config = RemoteConfig::new(&issuer, &issuer);
    config.jwks_url = format!("http://127.0.0.1:{auth_port}/.well-known/jwks.json");
    config.revocations = RevocationSource::Events {
        url: format!("http://127.0.0.1:{auth_port}/auth/revocations"),
        key: KEY.into(),
    };
    config.min_refresh = min_refresh;
    let verifier = RemoteVerifier::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = protected_app::app(Verifier::Remote(Arc::clone(&verifier)));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let start = Instant::now();
    while !verifier.synced() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the verifier never synced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (format!("http://{addr}"), verifier)
}

struct Auth {
    base: String,
    origin: String,
    http: reqwest::Client,
}

impl Auth {
    fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            origin: format!("http://localhost:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("origin", &self.origin)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn access_token(&self, email: &str) -> String {
        let res = self
            .post(
                "/auth/token",
                json!({"grant_type": "password", "email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn logout(&self, token: &str) {
        let res = self
            .http
            .post(format!("{}/auth/logout", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
}

async fn app_status(http: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let mut rb = http.get(url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_trusts_tokens_enforces_roles_and_honours_logout_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0").await;
    let port = server.addr.port();
    let auth = Auth::new(port);
    let (app, verifier) = start_app(port, Duration::from_secs(10)).await;
    let http = reqwest::Client::new();
    assert_eq!(
        auth.post(
            "/auth/signup",
            json!({"email": "app@example.com", "password": PASSWORD})
        )
        .await
        .status(),
        201
    );

    let token = auth.access_token("app@example.com").await;
    let me: Value = http
        .get(format!("{app}/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["user"]));
    assert_eq!(
        app_status(&http, &format!("{app}/admin"), Some(&token)).await,
        403
    );
    assert_eq!(app_status(&http, &format!("{app}/me"), None).await, 401);
    assert_eq!(app_status(&http, &format!("{app}/"), None).await, 200);
    // A token altered by one character is refused.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 5;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        app_status(&http, &format!("{app}/me"), Some(&forged)).await,
        401
    );

    // Tokens naming unknown keys, many of them: the JWKS is fetched at most once meanwhile.
    let fetches = verifier.jwks_fetches.load(Ordering::Relaxed);
    let (_, rest) = token.split_once('.').unwrap();
    for i in 0..200 {
        let header =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"k{i}"}}"#));
        let fake = format!("{header}.{rest}");
        assert_eq!(
            app_status(&http, &format!("{app}/me"), Some(&fake)).await,
            401
        );
    }
    let extra = verifier.jwks_fetches.load(Ordering::Relaxed) - fetches;
    assert!(extra <= 1, "{extra} JWKS fetches for 200 unknown kids");

    // Logout on cloakroom: the app refuses the token at once. 50 tries.
    let mut times = Vec::new();
    for _ in 0..50 {
        let token = auth.access_token("app@example.com").await;
        assert_eq!(
            app_status(&http, &format!("{app}/me"), Some(&token)).await,
            200
        );
        auth.logout(&token).await;
        let start = Instant::now();
        while app_status(&http, &format!("{app}/me"), Some(&token)).await != 401 {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "the app still accepts a logged-out token"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "logout -> first rejection by the remote verifier: median {:.2} ms, worst {:.2} ms (50 tries)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_that_lost_its_connection_resynchronises_and_fails_closed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0").await;
    let addr = server.addr;
    let auth = Auth::new(addr.port());
    let (app, verifier) = start_app(addr.port(), Duration::from_millis(100)).await;
    let http = reqwest::Client::new();
    auth.post(
        "/auth/signup",
        json!({"email": "re@example.com", "password": PASSWORD}),
    )
    .await;
    let token = auth.access_token("re@example.com").await;
    assert_eq!(
        app_status(&http, &format!("{app}/me"), Some(&token)).await,
        200
    );
    let sid = verifier.verify(&token).await.unwrap().session_id;

    // cloakroom goes away; while it is away, the session is ended by another process on the
    // same database (the CLI, say), so no event can reach the app.
    server.shutdown().await;
    let settings = Settings::resolve(raw(dir.path(), &addr.to_string())).unwrap();
    let engine = cloakroom_server::app::engine(&settings, Arc::new(SystemClock), addr.port())
        .await
        .unwrap();
    engine.admin_revoke(sid.parse().unwrap()).await.unwrap();
    drop(engine);
    // Past the allowed staleness with the feed down, nothing is trusted (503), not even a
    // token the app has never seen revoked.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        app_status(&http, &format!("{app}/me"), Some(&token)).await,
        503
    );

    // cloakroom is back: the app reconnects, gets the whole list, and refuses the token.
    let server = start_server(dir.path(), &addr.to_string()).await;
    let start = Instant::now();
    while app_status(&http, &format!("{app}/me"), Some(&token)).await != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no resynchronisation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = auth.access_token("re@example.com").await;
    assert_eq!(
        app_status(&http, &format!("{app}/me"), Some(&fresh)).await,
        200
    );
    server.shutdown().await;
}
