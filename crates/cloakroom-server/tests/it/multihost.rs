//! One login for apps on their own hosts, in a real browser through real proxies: nginx
//! (`auth_request`) and Caddy (`forward_auth`) serve `auth.example.test` (cloakroom),
//! `app.example.test` and `other.example.test` (an app) over TLS on one loopback port, with a
//! certificate from a test CA made here with openssl; headless Chromium resolves the three names
//! to 127.0.0.1. cloakroom runs with `--cookie-domain example.test` and
//! `--allowed-return-hosts *.example.test`; the proxies run the configurations of `examples/`
//! (`nginx-multihost.conf`, `Caddyfile.multihost`), with only names, ports and certificates
//! changed.

use crate::browser::{click, fill, shoot, text, Driver};
use crate::proxies::{free_port, upstream};
use crate::support::*;
use fantoccini::Client;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OPENSSL: &str = "/usr/bin/openssl";
const HOSTS: [&str; 3] = [
    "auth.example.test",
    "app.example.test",
    "other.example.test",
];

/// A CA and a certificate for the three hosts, signed by it: `site.crt` and `site.key` in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new(OPENSSL)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run(&[
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cloakroom test CA",
        ][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.crt"],
    ]
    .concat());
    run(&[
        &["req", "-nodes", "-subj", "/CN=example.test"][..],
        &ec,
        &["-keyout", "site.key", "-out", "site.csr"],
    ]
    .concat());
    let names: Vec<String> = HOSTS.iter().map(|h| format!("DNS:{h}")).collect();
    std::fs::write(
        dir.join("site.ext"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
            names.join(",")
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "site.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "site.crt",
        "-extfile",
        "site.ext",
    ]);
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Nginx,
    Caddy,
}

/// The main nginx configuration of a test; the sites are examples/nginx-multihost.conf.
const NGINX_MAIN: &str = r#"daemon off;
master_process off;
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
  include DIR/sites.conf;
}
"#;

/// The global options of a test's Caddy; the sites are examples/Caddyfile.multihost.
const CADDY_GLOBAL: &str = "{\n\tadmin off\n\tauto_https off\n\tstorage file_system DIR/data\n}\n";

/// An example configuration of the repository, made to serve the test: `example.test` for
/// `example.com`, the test's ports for the usual ones, the test CA's certificate.
fn example(name: &str, replacements: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{name} no longer has {from:?}");
        text = text.replace(from, to);
    }
    text.replace("example.com", "example.test")
}

struct Proxy {
    child: Child,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    async fn start(kind: Kind, dir: &Path, port: u16, cloakroom: u16, up: u16) -> Self {
        let d = dir.display().to_string();
        let ports = [
            ("127.0.0.1:8080", format!("127.0.0.1:{cloakroom}")),
            ("127.0.0.1:3000", format!("127.0.0.1:{up}")),
        ];
        let child = match kind {
            Kind::Nginx => {
                let sites = example(
                    "nginx-multihost.conf",
                    &[
                        &ports[..],
                        &[
                            ("/etc/ssl/example.com.crt", format!("{d}/site.crt")),
                            ("/etc/ssl/example.com.key", format!("{d}/site.key")),
                            ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                        ],
                    ]
                    .concat(),
                );
                std::fs::write(dir.join("sites.conf"), sites).unwrap();
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, NGINX_MAIN.replace("DIR", &d)).unwrap();
                Command::new("/usr/sbin/nginx")
                    .arg("-p")
                    .arg(dir)
                    .arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
            Kind::Caddy => {
                let tls = format!("\n\ttls {d}/site.crt {d}/site.key");
                let sites = example(
                    "Caddyfile.multihost",
                    &[
                        &ports[..],
                        &[
                            (
                                "auth.example.com {",
                                format!("https://auth.example.com:{port} {{{tls}"),
                            ),
                            (
                                "app.example.com, other.example.com {",
                                format!(
                                    "https://app.example.com:{port}, \
                                     https://other.example.com:{port} {{{tls}"
                                ),
                            ),
                        ],
                    ]
                    .concat(),
                );
                let conf = dir.join("Caddyfile");
                std::fs::write(&conf, CADDY_GLOBAL.replace("DIR", &d) + &sites).unwrap();
                Command::new("/usr/bin/caddy")
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&conf)
                    .env("HOME", dir)
                    .env("XDG_DATA_HOME", dir)
                    .env("XDG_CONFIG_HOME", dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
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
        Self { child }
    }
}

/// Waits until the browser's whole URL satisfies `want`.
async fn wait_url(b: &Client, what: &str, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let url = b.current_url().await.unwrap().to_string();
        if want(&url) {
            return url;
        }
        if start.elapsed() > Duration::from_secs(10) {
            panic!(
                "at {url}, expected {what}; the page says: {}",
                text(b).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the app saw, read from the JSON it answered with.
async fn app_saw(b: &Client) -> Value {
    let body = text(b).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not the app's answer ({e}): {body}"))
}

fn missing(programs: &[&str]) -> Vec<String> {
    programs
        .iter()
        .filter(|p| !Path::new(p).exists())
        .map(|p| p.to_string())
        .collect()
}

async fn journey(kind: Kind) {
    let proxy_binary = match kind {
        Kind::Nginx => "/usr/sbin/nginx",
        Kind::Caddy => "/usr/bin/caddy",
    };
    let absent = missing(&[proxy_binary, OPENSSL]);
    if !absent.is_empty() {
        assert!(
            !services_required(),
            "{absent:?} required here: apt-get install nginx caddy openssl"
        );
        cloakroom::testing::skip(&format!("{kind:?} multi-host: {absent:?} not installed"));
        return;
    }
    let Some(driver) = Driver::start(&format!("{kind:?} multi-host")).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let port = free_port();
    let origin = |host: &str| format!("https://{host}:{port}");
    let auth = origin("auth.example.test");
    let app = origin("app.example.test");
    let other = origin("other.example.test");
    let t = TestServer::start_with(|r| {
        r.public_url = Some(auth.clone());
        r.cookie_domain = Some("example.test".into());
        r.allowed_return_hosts = Some(vec!["*.example.test".parse().unwrap()]);
        r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
    })
    .await;
    assert_eq!(t.signup("multi@example.com", PASSWORD).await.status(), 201);
    let up = upstream().await;
    let cloakroom_port = t.server.as_ref().unwrap().addr.port();
    let _proxy = Proxy::start(kind, dir.path(), port, cloakroom_port, up).await;

    let b = driver
        .browser_with(
            &format!("{kind:?}"),
            &[
                "--host-resolver-rules=MAP *.example.test 127.0.0.1".to_string(),
                // The test CA is not in the browser's trust store; these hosts are all it sees.
                "--ignore-certificate-errors".to_string(),
            ],
        )
        .await;

    // The app, anonymously: cloakroom's login page, which remembers the whole original URL.
    let page = format!("{app}/reports/q3?year=2026&view=full");
    b.goto(&page).await.unwrap();
    let login = wait_url(&b, "the login page", |u| {
        u.starts_with(&format!("{auth}/login?rd="))
    })
    .await;
    let rd: String = url::Url::parse(&login)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(rd, page, "{kind:?}");
    shoot(&b, &format!("multihost-{kind:?}-login")).await;

    // Logging in lands back on that URL, query string and all, with the identity from cloakroom
    // and without cloakroom's cookie.
    fill(&b, "#email", "multi@example.com").await;
    fill(&b, "#password", PASSWORD).await;
    click(&b, "form.card button[type=submit]").await;
    wait_url(&b, "the app's page", |u| u == page).await;
    let saw = app_saw(&b).await;
    assert_eq!(saw["email"], "multi@example.com", "{kind:?}: {saw}");
    assert_eq!(saw["host"], format!("app.example.test:{port}"), "{kind:?}");
    let cookies = saw["cookie"].as_str().unwrap_or_default();
    assert!(
        !cookies.contains("cloakroom_session"),
        "{kind:?}: the app received cloakroom's cookie: {cookies}"
    );
    // The app's own cookies still reach it, and identity headers a page sends are overwritten.
    b.execute("document.cookie = 'app_pref=dark; path=/'", vec![])
        .await
        .unwrap();
    let echoed = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/echo', {headers: {'X-Auth-Email': 'boss@example.com', 'X-Auth-Roles': 'admin',
                                       'X-Auth-User-Id': '00000000-0000-0000-0000-000000000000'}})
               .then(r => r.text()).then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    let echoed: Value = serde_json::from_str(echoed.as_str().unwrap()).unwrap();
    assert_eq!(echoed["email"], "multi@example.com", "{kind:?}: {echoed}");
    assert_eq!(echoed["roles"], "user", "{kind:?}: {echoed}");
    assert_eq!(echoed["user_id"], saw["user_id"], "{kind:?}: {echoed}");
    let cookies = echoed["cookie"].as_str().unwrap_or_default();
    assert!(
        cookies.contains("app_pref=dark") && !cookies.contains("cloakroom_session"),
        "{kind:?}: the app received {cookies:?}"
    );
    let cookie = b
        .get_named_cookie("__Secure-cloakroom_session")
        .await
        .expect("the shared session cookie");
    // Scoped to the parent domain (a host-only cookie would name auth.example.test).
    assert_eq!(
        cookie.domain().map(|d| d.trim_start_matches('.')),
        Some("example.test"),
        "{kind:?}"
    );
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));

    // A second app on another host: in at once, as the same session.
    b.goto(&format!("{other}/start")).await.unwrap();
    wait_url(&b, "the other app", |u| u == format!("{other}/start")).await;
    let saw_other = app_saw(&b).await;
    assert_eq!(saw_other["email"], "multi@example.com", "{kind:?}");
    assert_eq!(saw_other["session_id"], saw["session_id"], "{kind:?}");

    // A logout link on the other app's host: one question, one click, and every host is shut.
    let bye = format!("{other}/bye");
    let link = format!(
        "{auth}/logout?rd={}",
        url::form_urlencoded::byte_serialize(bye.as_bytes()).collect::<String>()
    );
    b.goto(&link).await.unwrap();
    wait_url(&b, "the logout question", |u| u == link).await;
    shoot(&b, &format!("multihost-{kind:?}-logout")).await;
    click(&b, "#logout").await;
    // Back on the other host, which no longer lets the browser in: the login page, returning
    // to where the logout link pointed.
    wait_url(&b, "the login page after logout", |u| {
        u.starts_with(&format!("{auth}/login?rd=")) && u.contains("bye")
    })
    .await;
    for host_page in [page.clone(), format!("{other}/start")] {
        b.goto(&host_page).await.unwrap();
        wait_url(&b, "the login page", |u| {
            u.starts_with(&format!("{auth}/login?"))
        })
        .await;
    }
    assert!(
        b.get_named_cookie("__Secure-cloakroom_session")
            .await
            .is_err(),
        "{kind:?}: the shared cookie outlived the logout"
    );

    // An rd outside the allow-list logs in to cloakroom's own dashboard, not there.
    b.goto(&format!(
        "{auth}/login?rd=https%3A%2F%2Fexample.test.evil.test%2F"
    ))
    .await
    .unwrap();
    fill(&b, "#email", "multi@example.com").await;
    fill(&b, "#password", PASSWORD).await;
    click(&b, "form.card button[type=submit]").await;
    wait_url(&b, "the dashboard", |u| u == format!("{auth}/dashboard")).await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_one_login_for_apps_on_other_hosts() {
    journey(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_one_login_for_apps_on_other_hosts() {
    journey(Kind::Caddy).await;
}
