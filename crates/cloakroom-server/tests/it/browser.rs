//! The pages in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! chromedriver. Cookie attributes, redirects, CSRF and logout are checked as the browser
//! enforces them. Screenshots of each page land in `target/screenshots/`.

use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver of the test's own, on a free port.
pub(crate) struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// `None`, after a SKIP line, when Chromium or chromedriver is missing and not required.
    pub(crate) async fn start(test: &str) -> Option<Self> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            assert!(
                !services_required(),
                "Chromium is required here: missing {missing:?} (apt-get install chromium chromium-driver)"
            );
            cloakroom::testing::skip(&format!(
                "{test}: {missing:?} not installed (apt-get install chromium chromium-driver)"
            ));
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Self {
            child,
            url,
            profiles: tempfile::tempdir().unwrap(),
        };
        let start = Instant::now();
        let http = reqwest::Client::new();
        while http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(driver)
    }

    /// A new browser: its own process and profile, so its own cookie jar.
    async fn browser(&self, name: &str) -> Client {
        self.browser_with(name, &[]).await
    }

    /// A new browser started with `extra` command-line switches too.
    pub(crate) async fn browser_with(&self, name: &str, extra: &[String]) -> Client {
        let profile = self.profiles.path().join(name);
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1024,800",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend_from_slice(extra);
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// Where people look at the pages.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn shoot(b: &Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// The server as the browser sees it: `http://localhost:<port>`, one of its own origins.
fn site(t: &TestServer) -> String {
    t.origin.clone()
}

pub(crate) async fn fill(b: &Client, css: &str, text: &str) {
    let field = b.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub(crate) async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits until the browser is on `path` (with its query), after a click that navigates.
async fn wait_path(b: &Client, want: &str) {
    let start = Instant::now();
    loop {
        let url = b.current_url().await.unwrap();
        let here = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        if here == want {
            return;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let page = text(b).await;
            panic!("at {here}, expected {want}; the page says: {page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page's visible text, read by script, so a navigation in between cannot make a found
/// element stale.
pub(crate) async fn text(b: &Client) -> String {
    let start = Instant::now();
    loop {
        let read = b
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await;
        match read {
            Ok(v) => return v.as_str().unwrap_or_default().to_string(),
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "cannot read the page: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn log_in(b: &Client, base: &str, email: &str, next: Option<&str>) {
    let url = match next {
        Some(n) => format!("{base}/login?next={n}"),
        None => format!("{base}/login"),
    };
    b.goto(&url).await.unwrap();
    fill(b, "#email", email).await;
    fill(b, "#password", PASSWORD).await;
    click(b, "form.card button[type=submit]").await;
}

/// Runs `body` with a fresh server and chromedriver.
macro_rules! browser_test {
    ($name:ident, |$t:ident, $driver:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some($driver) = Driver::start(stringify!($name)).await else {
                return;
            };
            let $t = TestServer::start().await;
            $body
        }
    };
}

browser_test!(
    the_journey_signup_login_dashboard_profile_settings_logout,
    |t, driver| {
        let base = site(&t);
        let b = driver.browser("journey").await;
        b.goto(&format!("{base}/signup")).await.unwrap();
        shoot(&b, "signup").await;
        fill(&b, "#email", "journey@example.com").await;
        fill(&b, "#password", PASSWORD).await;
        click(&b, "form.card button[type=submit]").await;
        wait_path(&b, "/login?done=signed_up").await;
        assert!(text(&b).await.contains("Your account is ready."));
        shoot(&b, "login").await;

        // A wrong password: said in plain words, the email kept, the password not.
        fill(&b, "#email", "journey@example.com").await;
        fill(&b, "#password", "wrong password, sorry").await;
        click(&b, "form.card button[type=submit]").await;
        wait_path(&b, "/login").await;
        assert!(text(&b).await.contains("The email or password is wrong."));
        let email = b.find(Locator::Css("#email")).await.unwrap();
        assert_eq!(
            email.prop("value").await.unwrap().as_deref(),
            Some("journey@example.com")
        );
        let password = b.find(Locator::Css("#password")).await.unwrap();
        assert_eq!(password.prop("value").await.unwrap().as_deref(), Some(""));
        assert!(!b.source().await.unwrap().contains("wrong password, sorry"));
        shoot(&b, "login-error").await;

        fill(&b, "#password", PASSWORD).await;
        click(&b, "form.card button[type=submit]").await;
        wait_path(&b, "/dashboard").await;
        assert!(text(&b).await.contains("Signed in as journey@example.com"));
        shoot(&b, "dashboard").await;

        // The session cookie is HttpOnly: invisible to scripts, Lax, host-only.
        let seen = b.execute("return document.cookie", vec![]).await.unwrap();
        assert!(
            !seen.as_str().unwrap_or("").contains("cloakroom_session"),
            "{seen}"
        );
        let cookie = b.get_named_cookie("cloakroom_session").await.unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(
            cookie.expires(),
            None,
            "a browser-session cookie without remember me"
        );

        click(&b, "a[href='/profile']").await;
        wait_path(&b, "/profile").await;
        assert!(text(&b).await.contains("journey@example.com"));
        shoot(&b, "profile").await;
        click(&b, "a[href='/settings']").await;
        wait_path(&b, "/settings").await;
        let page = text(&b).await;
        assert!(
            page.contains("this device") && page.contains("Headless Chrome"),
            "{page}"
        );
        shoot(&b, "settings").await;

        // Log out, then Back: the browser must ask again (no-store), and gets the login page.
        click(&b, "form.logout button").await;
        wait_path(&b, "/login?done=logged_out").await;
        assert!(
            b.get_named_cookie("cloakroom_session").await.is_err(),
            "cookie gone"
        );
        b.back().await.unwrap();
        wait_path(&b, "/login?next=%2Fsettings").await;
        let source = b.source().await.unwrap();
        assert!(
            !source.contains("journey@example.com"),
            "private data after Back"
        );
        assert!(!source.contains("Where you are logged in"));
        b.close().await.unwrap();
    }
);

browser_test!(log_out_everywhere_ends_the_other_browser, |t, driver| {
    let base = site(&t);
    t.signup("two@example.com", PASSWORD).await;
    let a = driver.browser("a").await;
    let other = driver.browser("b").await;
    log_in(&a, &base, "two@example.com", None).await;
    wait_path(&a, "/dashboard").await;
    log_in(&other, &base, "two@example.com", None).await;
    wait_path(&other, "/dashboard").await;
    a.goto(&format!("{base}/settings")).await.unwrap();
    assert_eq!(a.find_all(Locator::Css("tbody tr")).await.unwrap().len(), 2);
    click(&a, "form[action='/settings/logout-everywhere'] button").await;
    wait_path(&a, "/login?done=everywhere").await;
    assert!(text(&a)
        .await
        .contains("You have logged out on every device."));
    other.refresh().await.unwrap();
    wait_path(&other, "/login?next=%2Fdashboard").await;
    assert!(!other.source().await.unwrap().contains("two@example.com"));
    a.close().await.unwrap();
    other.close().await.unwrap();
});

/// A page on another origin (another port, and `127.0.0.1` rather than `localhost`) with a
/// form that posts to cloakroom: what a cross-site attacker would serve.
async fn evil_site(target: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let html = format!(
        "<!doctype html><title>win a prize</title>\
         <form id=f method=post action=\"{target}/settings/logout-everywhere\">\
         <input type=hidden name=csrf value=guess><button id=go>Claim</button></form>\
         <form id=g method=post action=\"{target}/logout\">\
         <input type=hidden name=csrf value=guess><button id=go2>Claim</button></form>"
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

browser_test!(
    cross_origin_form_posts_and_next_tricks_are_refused,
    |t, driver| {
        let base = site(&t);
        t.signup("x@example.com", PASSWORD).await;
        let b = driver.browser("x").await;
        // next= to another site: the login lands on this site's dashboard.
        for trick in [
            "%2F%2Fevil.example",
            "https%3A%2F%2Fevil.example",
            "%2F%5Cevil.example",
        ] {
            log_in(&b, &base, "x@example.com", Some(trick)).await;
            wait_path(&b, "/dashboard").await;
            assert_eq!(b.current_url().await.unwrap().host_str(), Some("localhost"));
            b.delete_all_cookies().await.unwrap();
        }
        // A good next is honoured.
        log_in(&b, &base, "x@example.com", Some("%2Fprofile")).await;
        wait_path(&b, "/profile").await;

        let evil = evil_site(&base).await;
        for button in ["#go", "#go2"] {
            b.goto(&evil).await.unwrap();
            click(&b, button).await;
            let start = Instant::now();
            while !text(&b).await.contains("did not come from this site") {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{}",
                    text(&b).await
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        shoot(&b, "cross-origin-refused").await;
        // Still logged in on the real site.
        b.goto(&format!("{base}/dashboard")).await.unwrap();
        wait_path(&b, "/dashboard").await;
        assert!(text(&b).await.contains("x@example.com"));
        // Phone-sized: the pages still read (no horizontal scrolling of the page).
        b.set_window_size(390, 844).await.unwrap();
        b.goto(&format!("{base}/settings")).await.unwrap();
        let wide = b
            .execute(
                "return document.documentElement.scrollWidth > window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            wide,
            serde_json::Value::Bool(false),
            "the page overflows a phone screen"
        );
        shoot(&b, "settings-phone").await;
        b.close().await.unwrap();
    }
);

/// The code an authenticator app shows for `secret` (base32) at the server's time.
fn app_code(t: &TestServer, secret: &str) -> String {
    use cloakroom::Clock;
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .unwrap();
    let app = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        0,
        30,
        bytes,
        None,
        String::new(),
    );
    app.generate(u64::try_from(t.clock.now().unix_timestamp()).unwrap())
}

browser_test!(
    an_authenticator_app_is_added_then_asked_for_at_login,
    |t, driver| {
        let base = site(&t);
        t.signup("app@example.com", PASSWORD).await;
        let b = driver.browser("app").await;
        log_in(&b, &base, "app@example.com", None).await;
        wait_path(&b, "/dashboard").await;
        b.goto(&format!("{base}/settings/security")).await.unwrap();
        fill(&b, "#name", "my phone").await;
        click(&b, "#add-app").await;
        let start = Instant::now();
        let secret = loop {
            if let Ok(el) = b.find(Locator::Css("#secret")).await {
                if let Ok(text) = el.text().await {
                    break text;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{}",
                text(&b).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            b.find(Locator::Css(".qr svg")).await.is_ok(),
            "the QR code is drawn"
        );
        shoot(&b, "security-add-app").await;
        fill(&b, "#code", &app_code(&t, &secret)).await;
        click(&b, "form[action$='/confirm'] button").await;
        wait_path(&b, "/settings/security?done=app_added").await;
        assert!(text(&b).await.contains("my phone"));
        click(&b, "#new-codes").await;
        let start = Instant::now();
        while b
            .find_all(Locator::Css("#recovery-codes li"))
            .await
            .map_or(0, |c| c.len())
            != 10
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{}",
                text(&b).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shoot(&b, "security-recovery-codes").await;

        // Log out; the password alone now leads to the second step.
        click(&b, "form.logout button").await;
        wait_path(&b, "/login?done=logged_out").await;
        t.clock.advance(time::Duration::seconds(60));
        log_in(&b, &base, "app@example.com", Some("%2Fprofile")).await;
        wait_path(&b, "/login").await;
        assert!(text(&b).await.contains("Two-step verification"));
        shoot(&b, "login-mfa").await;
        fill(&b, "#code", "000000").await;
        click(&b, "form.card button[type=submit]").await;
        let start = Instant::now();
        while !text(&b).await.contains("The code is wrong") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{}",
                text(&b).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        fill(&b, "#code", &app_code(&t, &secret)).await;
        click(&b, "form.card button[type=submit]").await;
        wait_path(&b, "/profile").await;
        b.close().await.unwrap();
    }
);

/// A command of WebDriver's WebAuthn extension (WebAuthn Level 3 §11): virtual authenticators
/// and the credentials in them.
#[derive(Debug)]
struct WebAuthnCommand {
    /// After `session/{id}/webauthn/`.
    path: String,
    body: Option<serde_json::Value>,
}

impl WebAuthnCommand {
    /// "Add Virtual Authenticator": a CTAP2 platform authenticator with resident keys that
    /// verifies its user, as a phone or laptop would.
    fn add_authenticator() -> Self {
        Self {
            path: "authenticator".into(),
            body: Some(serde_json::json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "isUserConsenting": true,
            })),
        }
    }

    /// "Get Credentials": every credential of an authenticator, private keys included.
    fn credentials(authenticator: &str) -> Self {
        Self {
            path: format!("authenticator/{authenticator}/credentials"),
            body: None,
        }
    }

    /// "Add Credential": a credential (as "Get Credentials" gives it) put into an
    /// authenticator.
    fn add_credential(authenticator: &str, credential: serde_json::Value) -> Self {
        Self {
            path: format!("authenticator/{authenticator}/credential"),
            body: Some(credential),
        }
    }
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        match &self.body {
            Some(body) => (axum::http::Method::POST, Some(body.to_string())),
            None => (axum::http::Method::GET, None),
        }
    }
}

/// Signs in with the browser's passkey to land on `next`: the login page offers it in the email
/// field's autofill (conditional mediation), which a virtual authenticator answers at once, as a
/// user picking the suggestion would; where it has not within 3 s, the button does the same.
/// The browser's cookies are dropped first, so no earlier page's autofill is still under way.
async fn passkey_sign_in(b: &Client, base: &str, next: &str) {
    b.delete_all_cookies().await.unwrap();
    let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    b.goto(&format!("{base}/login?next={encoded}"))
        .await
        .unwrap();
    let start = Instant::now();
    while b.current_url().await.unwrap().path() != next {
        if start.elapsed() > Duration::from_secs(3) {
            if let Ok(button) = b.find(Locator::Css("#passkey-login")).await {
                let _ = button.click().await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

browser_test!(
    a_passkey_is_added_then_signs_in_without_a_password,
    |t, driver| {
        let base = site(&t);
        t.signup("passkey@example.com", PASSWORD).await;
        let b = driver.browser("passkey").await;
        b.goto(&format!("{base}/login")).await.unwrap();
        b.issue_cmd(WebAuthnCommand::add_authenticator())
            .await
            .expect("a virtual authenticator");
        fill(&b, "#email", "passkey@example.com").await;
        fill(&b, "#password", PASSWORD).await;
        click(&b, "form.card button[type=submit]").await;
        wait_path(&b, "/dashboard").await;
        b.goto(&format!("{base}/settings/security")).await.unwrap();
        fill(&b, "#passkey-name", "this browser").await;
        click(&b, "#add-passkey").await;
        wait_path(&b, "/settings/security?done=passkey_added").await;
        assert!(text(&b).await.contains("this browser"));
        shoot(&b, "security-passkey").await;

        passkey_sign_in(&b, &base, "/profile").await;
        wait_path(&b, "/profile").await;
        assert!(text(&b).await.contains("passkey@example.com"));
        // The session proved a passkey with user verification.
        let who = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/auth/whoami').then(r => r.json()).then(j => done(j.session.acr + ' ' + j.session.amr.join(',')));",
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(who.as_str(), Some("aal2 hwk,user"));
        b.close().await.unwrap();
    }
);

browser_test!(
    a_cloned_passkey_whose_counter_went_back_is_refused,
    |t, driver| {
        let base = site(&t);
        t.signup("clone@example.com", PASSWORD).await;
        let b = driver.browser("original").await;
        b.goto(&format!("{base}/login")).await.unwrap();
        let original = b
            .issue_cmd(WebAuthnCommand::add_authenticator())
            .await
            .unwrap();
        let original = original
            .as_str()
            .unwrap_or_else(|| panic!("an authenticator id: {original}"))
            .to_string();
        log_in(&b, &base, "clone@example.com", None).await;
        wait_path(&b, "/dashboard").await;
        b.goto(&format!("{base}/settings/security")).await.unwrap();
        click(&b, "#add-passkey").await;
        wait_path(&b, "/settings/security?done=passkey_added").await;
        // Two logins with it: the server has seen its counter move on.
        for _ in 0..2 {
            passkey_sign_in(&b, &base, "/profile").await;
            wait_path(&b, "/profile").await;
        }
        // The credential copied, private key and all, into another browser's authenticator
        // with its counter back at the start: what cloning a device-bound key gives.
        let credentials = b
            .issue_cmd(WebAuthnCommand::credentials(&original))
            .await
            .unwrap();
        let mut copy = credentials[0].clone();
        assert!(copy["signCount"].as_u64().unwrap() >= 2, "{copy}");
        let mut ahead = copy.clone();
        copy["signCount"] = serde_json::json!(0);
        let thief = driver.browser("thief").await;
        thief.goto(&format!("{base}/login")).await.unwrap();
        let stolen = thief
            .issue_cmd(WebAuthnCommand::add_authenticator())
            .await
            .unwrap();
        thief
            .issue_cmd(WebAuthnCommand::add_credential(
                stolen.as_str().unwrap(),
                copy,
            ))
            .await
            .unwrap();
        passkey_sign_in(&thief, &base, "/profile").await;
        let start = Instant::now();
        while !text(&thief).await.contains("passkey was not accepted") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no refusal shown: {}",
                text(&thief).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = thief.current_url().await.unwrap();
        assert_eq!(url.path(), "/login", "the clone got in");
        // The control: the same copy with its counter ahead is taken for the device itself
        // (which is also the limit of counters: they catch a clone only once it lags).
        ahead["signCount"] = serde_json::json!(1000);
        let other = driver.browser("ahead").await;
        other.goto(&format!("{base}/login")).await.unwrap();
        let id = other
            .issue_cmd(WebAuthnCommand::add_authenticator())
            .await
            .unwrap();
        other
            .issue_cmd(WebAuthnCommand::add_credential(id.as_str().unwrap(), ahead))
            .await
            .unwrap();
        passkey_sign_in(&other, &base, "/profile").await;
        wait_path(&other, "/profile").await;
        b.close().await.unwrap();
        thief.close().await.unwrap();
        other.close().await.unwrap();
    }
);

/// The line of a message's text that holds the link to `path`.
fn link_in(text: &str, path: &str) -> String {
    text.lines()
        .find(|l| l.contains(path))
        .map(|l| l.trim().to_string())
        .expect("a link in the message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_in_mail_confirm_the_address_and_reset_the_password_in_a_browser() {
    let Some(driver) = Driver::start("links_in_mail").await else {
        return;
    };
    let Some(smtp) = crate::mail::MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let base = site(&t);
    let email = "browser-mail@example.com";
    let b = driver.browser("mail").await;
    b.goto(&format!("{base}/signup")).await.unwrap();
    fill(&b, "#email", email).await;
    fill(&b, "#password", PASSWORD).await;
    click(&b, "form.card button[type=submit]").await;
    wait_path(&b, "/login?done=signed_up").await;

    // The link from the mailbox: opening it changes nothing; the button confirms.
    let mail = smtp.wait_for(email, 1).await.remove(0);
    let link = link_in(&mail.text, "/verify-email?token=");
    b.goto(&link).await.unwrap();
    shoot(&b, "verify-email").await;
    let elsewhere = t.login(email, PASSWORD).await;
    let who: serde_json::Value = t
        .get("/auth/whoami", &elsewhere)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        who["user"]["email_verified"], false,
        "a GET confirms nothing"
    );
    click(&b, "form.card button[type=submit]").await;
    wait_path(&b, "/verify-email").await;
    assert!(
        text(&b).await.contains("Your email address is confirmed."),
        "{}",
        text(&b).await
    );
    let who: serde_json::Value = t
        .get("/auth/whoami", &elsewhere)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["user"]["email_verified"], true);

    // A forgotten password, through the pages; the other session ends.
    b.goto(&format!("{base}/login")).await.unwrap();
    click(&b, "a[href='/forgot-password']").await;
    wait_path(&b, "/forgot-password").await;
    fill(&b, "#email", email).await;
    click(&b, "form.card button[type=submit]").await;
    wait_path(&b, "/forgot-password").await;
    assert!(text(&b).await.contains("Check your mail"));
    let mail = smtp.wait_for(email, 2).await.remove(1);
    b.goto(&link_in(&mail.text, "/reset-password?token="))
        .await
        .unwrap();
    shoot(&b, "reset-password").await;
    let new_password = "a new password set in a browser";
    fill(&b, "#new_password", new_password).await;
    click(&b, "form.card button[type=submit]").await;
    wait_path(&b, "/login?done=reset").await;
    assert!(text(&b).await.contains("Your password is set"));
    assert_eq!(t.get("/auth/whoami", &elsewhere).await.status(), 401);
    fill(&b, "#email", email).await;
    fill(&b, "#password", new_password).await;
    click(&b, "form.card button[type=submit]").await;
    wait_path(&b, "/dashboard").await;
}
