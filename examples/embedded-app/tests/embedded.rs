//! The embedded example against the real thing: a session ended with the `cloakroom` CLI on the
//! app's own database is refused by the app within a second, and a cross-origin cookie POST is
//! refused exactly as the cloakroom server refuses it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use cloakroom::web::RequestRules;
use cloakroom::{
    Argon2Config, Auth, AuthConfig, Clock, CookiePolicy, Maintenance, SqliteStore, SystemClock,
};
use cloakroom_server::app::Server;
use cloakroom_server::settings::{RawSettings, Settings};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";

fn cheap() -> AuthConfig {
    AuthConfig {
        argon2: Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 1,
        ..AuthConfig::default()
    }
}

struct App {
    base: String,
    url: String,
    dir: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
    maintenance: Maintenance,
}

/// The app on an ephemeral port, on an SQLite file of its own, with its upkeep running.
async fn start_app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let store = Arc::new(SqliteStore::open(&url).await.unwrap());
    let auth = Arc::new(
        Auth::new(store, cheap(), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let maintenance = auth.spawn_maintenance(stopped);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let rules = RequestRules::new(CookiePolicy::DEV, vec![base.clone()]);
    let app = embedded_app::app(auth, rules);
    tokio::spawn(async move { axum::serve(listener, app).await });
    App {
        base,
        url,
        dir,
        stop,
        maintenance,
    }
}

/// Signs up and in at `{base}{prefix}/signup` and `…/login` (the app serves them at its root,
/// the server under `/auth`); returns the `Cookie` header value.
async fn sign_in(http: &reqwest::Client, base: &str, prefix: &str, email: &str) -> String {
    let body = json!({"email": email, "password": PASSWORD});
    let res = http
        .post(format!("{base}{prefix}/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = http
        .post(format!("{base}{prefix}/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set = res.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn me(http: &reqwest::Client, base: &str, cookie: &str) -> reqwest::Response {
    http.get(format!("{base}/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_with_the_cli_is_refused_within_a_second() {
    let app = start_app().await;
    let http = reqwest::Client::new();
    let cookie = sign_in(&http, &app.base, "", "cli@example.com").await;
    let res = me(&http, &app.base, &cookie).await;
    assert_eq!(res.status(), 200);
    let sid = res.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();

    // `cloakroom sessions revoke`, the admin CLI, on the app's database.
    let data_dir = app.dir.path().join("cli");
    let cli = cloakroom_server::cli::Cli::try_parse_from([
        "cloakroom",
        "--database-url",
        app.url.as_str(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "sessions",
        "revoke",
        sid.as_str(),
    ])
    .unwrap();
    let exit = cloakroom_server::cli::run(cli).await;
    assert_eq!(
        format!("{exit:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );

    let start = Instant::now();
    while me(&http, &app.base, &cookie).await.status() != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the app still accepts the session 1 s after the CLI ended it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = app.stop.send(true);
    app.maintenance.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_cookie_post_is_refused_exactly_as_the_server_refuses_it() {
    let app = start_app().await;
    let http = reqwest::Client::new();
    let app_cookie = sign_in(&http, &app.base, "", "xo@example.com").await;

    let server_dir = tempfile::tempdir().unwrap();
    let settings = Settings::resolve(RawSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(server_dir.path().to_path_buf()),
        argon2_memory_kib: Some(64),
        argon2_iterations: Some(1),
        argon2_parallelism: Some(1),
        ..Default::default()
    })
    .unwrap();
    let server = Server::start(&settings, Arc::new(SystemClock) as Arc<dyn Clock>)
        .await
        .unwrap();
    let server_base = format!("http://{}", server.addr);
    let server_cookie = sign_in(&http, &server_base, "/auth", "xo@example.com").await;

    // Another site's page, a page that proves nothing, a same-site sibling: each refused by
    // both, with the same status and body.
    for (what, headers) in [
        ("another origin", vec![("origin", "https://evil.example")]),
        ("no proof of origin", vec![]),
        ("a null origin", vec![("origin", "null")]),
        ("a same-site sibling", vec![("sec-fetch-site", "same-site")]),
    ] {
        let send = |url: String, cookie: &str, body: Value| {
            let mut req = http.post(url).header("cookie", cookie).json(&body);
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            req.send()
        };
        let at_app = send(
            format!("{}/notes", app.base),
            &app_cookie,
            json!({"text": "hi"}),
        )
        .await
        .unwrap();
        let at_server = send(
            format!("{server_base}/auth/logout-all"),
            &server_cookie,
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(at_app.status(), 403, "{what}");
        assert_eq!(at_app.status(), at_server.status(), "{what}");
        let (a, s): (Value, Value) = (
            at_app.json().await.unwrap(),
            at_server.json().await.unwrap(),
        );
        assert_eq!(a, s, "{what}");
        assert_eq!(a["error"]["code"], "cross_origin_request");
    }
    // From the app's own origin the POST passes.
    let res = http
        .post(format!("{}/notes", app.base))
        .header("cookie", &app_cookie)
        .header("origin", &app.base)
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    server.shutdown().await;
}
