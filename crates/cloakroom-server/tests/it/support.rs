//! A server on 127.0.0.1:0 with a pinned clock, cheap Argon2, and a temporary data directory.

use cloakroom::{Clock, ManualClock};
use cloakroom_server::app::Server;
use cloakroom_server::settings::{RawSettings, Settings};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

pub const PASSWORD: &str = "correct horse battery staple";

/// Settings every test server starts from: cheap hashing, loopback, its own directory.
pub fn test_raw(dir: &std::path::Path) -> RawSettings {
    RawSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        argon2_memory_kib: Some(64),
        argon2_iterations: Some(1),
        argon2_parallelism: Some(1),
        hash_threads: Some(2),
        hash_queue: Some(256),
        // Many servers share two cores during the tests; idle-priority hashing would make the
        // timing tests depend on what else runs.
        hash_idle_priority: Some(false),
        signups_per_hour: Some(1000),
        // Every test client is 127.0.0.1: tests of this limit set it themselves.
        hashing_per_client: Some(1000),
        ..Default::default()
    }
}

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub origin: String,
    pub clock: Arc<ManualClock>,
    pub dir: Arc<tempfile::TempDir>,
    pub raw: RawSettings,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut RawSettings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut raw = test_raw(dir.path());
        tweak(&mut raw);
        let clock = Arc::new(ManualClock::starting_now());
        Self::boot(raw, dir, clock).await
    }

    async fn boot(raw: RawSettings, dir: Arc<tempfile::TempDir>, clock: Arc<ManualClock>) -> Self {
        let settings = Settings::resolve(raw.clone()).unwrap();
        let server = Server::start(&settings, Arc::clone(&clock) as Arc<dyn Clock>)
            .await
            .unwrap();
        let port = server.addr.port();
        let origin = match &settings.public_url {
            Some(u) => u.origin().ascii_serialization(),
            None => format!("http://localhost:{port}"),
        };
        Self {
            base: format!("http://127.0.0.1:{port}"),
            origin,
            server: Some(server),
            clock,
            dir,
            raw,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Stops this server and starts a new one on the same data and clock.
    pub async fn restart(mut self) -> Self {
        if let Some(s) = self.server.take() {
            // Same address, so the same origin and token issuer.
            self.raw.listen = Some(s.addr);
            s.shutdown().await;
        }
        Self::boot(
            self.raw.clone(),
            Arc::clone(&self.dir),
            Arc::clone(&self.clock),
        )
        .await
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("cloakroom.db")
    }

    pub fn auth(&self) -> &cloakroom::Auth {
        &self.server.as_ref().unwrap().auth
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request that looks like it came from our own pages.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("origin", &self.origin)
    }

    pub fn with_cookie(&self, rb: RequestBuilder, token: &str) -> RequestBuilder {
        rb.header("cookie", format!("cloakroom_session={token}"))
    }

    pub async fn signup(&self, email: &str, password: &str) -> Response {
        self.req(Method::POST, "/auth/signup")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn login_raw(&self, body: Value) -> Response {
        self.req(Method::POST, "/auth/login")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the session token from `Set-Cookie`.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let res = self
            .login_raw(json!({"email": email, "password": password}))
            .await;
        assert_eq!(res.status(), 200, "login of {email} failed");
        session_token(res.headers()).expect("a session cookie")
    }

    /// Signs up and logs in a fresh user; returns the token.
    pub async fn user(&self, email: &str) -> String {
        assert_eq!(self.signup(email, PASSWORD).await.status(), 201);
        self.login(email, PASSWORD).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.with_cookie(self.req(Method::GET, path), token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Option<Value>) -> Response {
        let rb = self.with_cookie(self.req(Method::POST, path), token);
        let rb = match body {
            Some(b) => rb.json(&b),
            None => rb,
        };
        rb.send().await.unwrap()
    }

    pub async fn whoami_status(&self, token: &str) -> u16 {
        self.get("/auth/whoami", token).await.status().as_u16()
    }
}

/// The session token in a response's `Set-Cookie`, if one is set (non-empty).
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    set_cookie(headers).and_then(|c| {
        let v = c.split(';').next()?.split_once('=')?.1.to_string();
        (!v.is_empty()).then_some(v)
    })
}

pub fn set_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get("set-cookie")
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

pub async fn error_code(res: Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl TestServer {
    /// The password grant; returns the JSON answer.
    pub async fn token_login(&self, email: &str, password: &str) -> Value {
        let res = self
            .req(Method::POST, "/auth/token")
            .json(&json!({"grant_type": "password", "email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "token login of {email}");
        res.json().await.unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.req(Method::POST, "/auth/token")
            .json(&json!({"grant_type": "refresh_token", "refresh_token": refresh_token}))
            .send()
            .await
            .unwrap()
    }

    pub async fn bearer(&self, method: Method, path: &str, token: &str) -> Response {
        self.http
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn bearer_status(&self, token: &str) -> u16 {
        self.bearer(Method::GET, "/auth/whoami", token)
            .await
            .status()
            .as_u16()
    }
}

pub use cloakroom::testing::{services_required, PgSchema};
