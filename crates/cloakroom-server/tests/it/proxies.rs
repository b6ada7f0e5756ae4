//! Forward-auth through real reverse proxies from Debian's packages: nginx with `auth_request`
//! and Caddy with `forward_auth`, in front of a small upstream that shows the identity headers
//! it receives. Anonymous requests are refused, a session cookie or bearer token passes with
//! the identity, spoofed identity headers never reach the app, roles are enforced, and a logout
//! closes the door at once.

use crate::support::*;
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An upstream app that answers every request with the `x-auth-*` headers it was given, the
/// cookies that reached it and the host it was asked for.
pub(crate) async fn upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let get = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        axum::Json(serde_json::json!({
            "user_id": get("x-auth-user-id"),
            "email": get("x-auth-email"),
            "roles": get("x-auth-roles"),
            "session_id": get("x-auth-session-id"),
            "cookie": get("cookie"),
            "host": get("host"),
        }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Nginx,
    Caddy,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Self::Nginx => "/usr/sbin/nginx",
            Self::Caddy => "/usr/bin/caddy",
        }
    }
}

fn nginx_conf(dir: &Path, port: u16, cloakroom: u16, up: u16) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /_auth {{
      internal;
      proxy_pass http://127.0.0.1:{cloakroom}/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header Accept "application/json";
    }}
    location = /_auth_admin {{
      internal;
      proxy_pass http://127.0.0.1:{cloakroom}/auth/verify?role=admin;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header Accept "application/json";
    }}
    location = /_auth_aal2 {{
      internal;
      proxy_pass http://127.0.0.1:{cloakroom}/auth/verify?aal=2;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header Accept "application/json";
    }}
    location /login {{ proxy_pass http://127.0.0.1:{cloakroom}; }}
    location /auth/dbsc/ {{ proxy_pass http://127.0.0.1:{cloakroom}; }}
    location /secure {{
      auth_request /_auth_aal2;
      auth_request_set $auth_user $upstream_http_x_auth_user_id;
      proxy_set_header X-Auth-User-Id $auth_user;
      proxy_pass http://127.0.0.1:{up};
    }}
    location /admin {{
      auth_request /_auth_admin;
      auth_request_set $auth_user $upstream_http_x_auth_user_id;
      proxy_set_header X-Auth-User-Id $auth_user;
      proxy_pass http://127.0.0.1:{up};
    }}
    location / {{
      auth_request /_auth;
      auth_request_set $auth_user $upstream_http_x_auth_user_id;
      auth_request_set $auth_email $upstream_http_x_auth_email;
      auth_request_set $auth_roles $upstream_http_x_auth_roles;
      auth_request_set $auth_session $upstream_http_x_auth_session_id;
      proxy_set_header X-Auth-User-Id $auth_user;
      proxy_set_header X-Auth-Email $auth_email;
      proxy_set_header X-Auth-Roles $auth_roles;
      proxy_set_header X-Auth-Session-Id $auth_session;
      error_page 401 = @login;
      proxy_pass http://127.0.0.1:{up};
    }}
    location @login {{
      if ($http_accept ~* "text/html") {{ return 302 /login?next=$request_uri; }}
      return 401;
    }}
  }}
}}
"#
    )
}

fn caddyfile(dir: &Path, port: u16, cloakroom: u16, up: u16) -> String {
    let d = dir.display();
    format!(
        r#"{{
  admin off
  auto_https off
  storage file_system {d}/data
}}
http://127.0.0.1:{port} {{
  request_header -X-Auth-User-Id
  request_header -X-Auth-Email
  request_header -X-Auth-Roles
  request_header -X-Auth-Session-Id
  handle /login* {{
    reverse_proxy 127.0.0.1:{cloakroom}
  }}
  handle /secure* {{
    forward_auth 127.0.0.1:{cloakroom} {{
      uri /auth/verify?aal=2
      copy_headers X-Auth-User-Id
    }}
    reverse_proxy 127.0.0.1:{up}
  }}
  handle /admin* {{
    forward_auth 127.0.0.1:{cloakroom} {{
      uri /auth/verify?role=admin
      copy_headers X-Auth-User-Id X-Auth-Email X-Auth-Roles
    }}
    reverse_proxy 127.0.0.1:{up}
  }}
  handle {{
    forward_auth 127.0.0.1:{cloakroom} {{
      uri /auth/verify
      copy_headers X-Auth-User-Id X-Auth-Email X-Auth-Roles X-Auth-Session-Id
    }}
    reverse_proxy 127.0.0.1:{up}
  }}
}}
"#
    )
}

impl Proxy {
    /// `None`, after a SKIP line, when the proxy is not installed and not required.
    async fn start(kind: Kind, cloakroom: u16, up: u16) -> Option<Self> {
        if !Path::new(kind.binary()).exists() {
            assert!(
                !services_required(),
                "{kind:?} is required here: apt-get install nginx caddy"
            );
            cloakroom::testing::skip(&format!(
                "{kind:?} forward-auth: {} not installed",
                kind.binary()
            ));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = match kind {
            Kind::Nginx => {
                let conf = dir.path().join("nginx.conf");
                std::fs::write(&conf, nginx_conf(dir.path(), port, cloakroom, up)).unwrap();
                Command::new(kind.binary())
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
            Kind::Caddy => {
                let conf = dir.path().join("Caddyfile");
                std::fs::write(&conf, caddyfile(dir.path(), port, cloakroom, up)).unwrap();
                Command::new(kind.binary())
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&conf)
                    .env("HOME", dir.path())
                    .env("XDG_DATA_HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
        };
        let proxy = Self {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{kind:?} did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(proxy)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn through(kind: Kind) {
    let t =
        TestServer::start_with(|r| r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]))
            .await;
    let up = upstream().await;
    let Some(proxy) = Proxy::start(kind, t.server.as_ref().unwrap().addr.port(), up).await else {
        return;
    };
    let http = &t.http;
    let cookie = t.user("fwd@example.com").await;
    let who: Value = t.get("/auth/whoami", &cookie).await.json().await.unwrap();
    let id = who["user"]["id"].as_str().unwrap().to_string();

    // Anonymous: an API client gets 401, a browser is sent to the login page and back.
    let res = http.get(proxy.url("/app/page")).send().await.unwrap();
    assert_eq!(res.status(), 401, "{kind:?}");
    let res = http
        .get(proxy.url("/app/page"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{kind:?}");
    let location = res.headers()["location"].to_str().unwrap().to_string();
    // Caddy passes cloakroom's relative redirect on; nginx makes its own, absolute one.
    let path = location.trim_start_matches(&proxy.url(""));
    assert!(
        path == "/login?next=%2Fapp%2Fpage" || path == "/login?next=/app/page",
        "{kind:?}: {location}"
    );
    let login = http.get(proxy.url(path)).send().await.unwrap();
    assert_eq!(
        login.status(),
        200,
        "the login page is served through the proxy"
    );

    // Spoofed identity headers alone get nobody in.
    let res = http
        .get(proxy.url("/app/page"))
        .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000")
        .header("x-auth-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "{kind:?}");

    // A session cookie passes, with the real identity even when the client sends another one.
    let res = http
        .get(proxy.url("/app/page"))
        .header("cookie", format!("cloakroom_session={cookie}"))
        .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000")
        .header("x-auth-roles", "admin")
        .header("x-auth-session-id", "00000000-0000-0000-0000-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{kind:?}");
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["user_id"], id.as_str(), "{kind:?}");
    assert_eq!(
        seen["session_id"], who["session"]["id"],
        "{kind:?}: the session id is cloakroom's, never the client's"
    );
    assert_eq!(seen["email"], "fwd@example.com");
    assert_eq!(
        seen["roles"], "user",
        "{kind:?}: spoofed roles must not pass"
    );

    // A bearer token passes too; a role the user lacks is refused.
    let pair = t.token_login("fwd@example.com", PASSWORD).await;
    let bearer = pair["access_token"].as_str().unwrap().to_string();
    let res = http
        .get(proxy.url("/app/api"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{kind:?}");
    let res = http
        .get(proxy.url("/admin/panel"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "{kind:?}");

    // Logout closes the door at once, for the cookie and the bearer token.
    assert_eq!(t.post("/auth/logout", &cookie, None).await.status(), 204);
    let res = http
        .get(proxy.url("/app/page"))
        .header("cookie", format!("cloakroom_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "{kind:?}");
    assert_eq!(
        t.bearer(Method::POST, "/auth/logout", &bearer)
            .await
            .status(),
        204
    );
    let res = http
        .get(proxy.url("/app/api"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "{kind:?}");
}

/// `/secure` asks for two factors (`/auth/verify?aal=2`): a password session is refused, and
/// let through once it stepped up with a code.
async fn step_up_through(kind: Kind) {
    let t =
        TestServer::start_with(|r| r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]))
            .await;
    let up = upstream().await;
    let Some(proxy) = Proxy::start(kind, t.server.as_ref().unwrap().addr.port(), up).await else {
        return;
    };
    let mut enrolling = t.user("secure@example.com").await;
    // A password session of the user's, from before the app was added: aal1.
    let cookie = t.login("secure@example.com", PASSWORD).await;
    let app = crate::mfa::enroll(&t, &mut enrolling).await;
    let get = |cookie: &str| {
        t.http
            .get(proxy.url("/secure/page"))
            .header("cookie", format!("cloakroom_session={cookie}"))
            .send()
    };
    assert_eq!(
        get(&cookie).await.unwrap().status(),
        401,
        "{kind:?}: aal1 let through"
    );
    assert_eq!(t.get("/auth/verify", &cookie).await.status(), 200);
    let res = crate::mfa::post_json(
        &t,
        "/auth/reauthenticate",
        Some(&cookie),
        serde_json::json!({"code": app.code(&t, 0)}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let strong = session_token(res.headers()).unwrap();
    let res = get(&strong).await.unwrap();
    assert_eq!(res.status(), 200, "{kind:?}");
    let seen: Value = res.json().await.unwrap();
    assert!(seen["user_id"].is_string(), "{kind:?}: {seen}");
    assert_eq!(
        get(&cookie).await.unwrap().status(),
        401,
        "{kind:?}: the old session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_step_up_with_auth_request() {
    step_up_through(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_step_up_with_forward_auth() {
    step_up_through(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_in_front_of_an_app() {
    through(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_in_front_of_an_app() {
    through(Kind::Caddy).await;
}

/// A proxied app behind nginx, once the browser's session is bound (DBSC): a copy of the session
/// cookie alone is refused at once, the browser's own bound cookie until it runs out, and the
/// browser refreshes it through the proxy and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_refuses_a_copied_cookie_once_the_session_is_bound() {
    let t =
        TestServer::start_with(|r| r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]))
            .await;
    let up = upstream().await;
    let Some(proxy) = Proxy::start(Kind::Nginx, t.server.as_ref().unwrap().addr.port(), up).await
    else {
        return;
    };
    t.signup("bound-app@example.com", PASSWORD).await;
    let mut browser = crate::dbsc::Browser::new(cloakroom::jwt::Algorithm::ES256);
    let (path, challenge) = browser.login(&t, "bound-app@example.com").await.unwrap();
    let res = browser
        .register_at(&t.http, &proxy.url(""), &path, &challenge)
        .await;
    assert_eq!(res.status(), 200, "registration through the proxy");
    let i: Value = res.json().await.unwrap();
    browser.session = Some((
        i["session_identifier"].as_str().unwrap().into(),
        String::new(),
    ));
    let app = |cookie: String| {
        t.http
            .get(proxy.url("/app/page"))
            .header("cookie", cookie)
            .send()
    };
    let res = app(browser.cookie_header()).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert!(seen["user_id"].is_string(), "{seen}");
    let copy = format!("cloakroom_session={}", browser.cookies["cloakroom_session"]);
    assert_eq!(app(copy.clone()).await.unwrap().status(), 401, "a copy");

    t.clock.advance(time::Duration::minutes(10));
    assert_eq!(
        app(browser.cookie_header()).await.unwrap().status(),
        401,
        "a bound cookie that ran out"
    );
    browser.challenge = None;
    assert_eq!(browser.refresh(&t.http, &proxy.url("")).await, 200);
    assert_eq!(app(browser.cookie_header()).await.unwrap().status(), 200);
    assert_eq!(app(copy).await.unwrap().status(), 401);
}
