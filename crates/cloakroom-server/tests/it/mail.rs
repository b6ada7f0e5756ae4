//! Mail through a real SMTP server (Python's aiosmtpd, storing into a Maildir): the links that
//! confirm an address and reset a password, read from the mailbox and followed; the outbox
//! surviving a kill between the commit and the delivery; reset tokens guessed in parallel.

use crate::support::*;
use reqwest::Response;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An SMTP server on localhost that stores what it receives in a Maildir.
pub(crate) struct MailServer {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A message as the mailbox holds it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) message_id: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

impl Received {
    /// The token of the link in the message.
    pub(crate) fn token(&self) -> String {
        let at = self.text.find("token=").expect("a link with a token");
        self.text[at + 6..]
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap()
            .to_string()
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl MailServer {
    /// A server on a free port; `None` (after saying why) where aiosmtpd is missing and not
    /// required.
    pub(crate) async fn start() -> Option<Self> {
        Self::start_on(free_port()).await
    }

    pub(crate) async fn start_on(port: u16) -> Option<Self> {
        let present = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            let why = "the mail tests need Python's aiosmtpd (pip install aiosmtpd)";
            assert!(!cloakroom::testing::services_required(), "{why}");
            cloakroom::testing::skip(why);
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("maildir");
        let server = Self {
            child: Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            port,
            dir,
            _tmp: tmp,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not start");
    }

    /// `--smtp-url` for this server (plain SMTP on localhost).
    pub(crate) fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Every message received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("new")) else {
            return Vec::new();
        };
        let mut out: Vec<(std::time::SystemTime, Received)> = entries
            .filter_map(|e| e.ok())
            .map(|e| {
                let modified = e.metadata().unwrap().modified().unwrap();
                (modified, parse(&e.path()))
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// The messages to `to`.
    pub(crate) fn to(&self, to: &str) -> Vec<Received> {
        self.received().into_iter().filter(|m| m.to == to).collect()
    }

    /// Waits (up to 15 s) until `to` has `n` messages, and returns them.
    pub(crate) async fn wait_for(&self, to: &str, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            let got = self.to(to);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{to} did not get {n} message(s): {:?}", self.to(to));
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(path: &Path) -> Received {
    let raw = std::fs::read(path).unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    let header = |name: &str| {
        mailparse::MailHeaderMap::get_first_value(&mail.headers[..], name).unwrap_or_default()
    };
    let part = |mime: &str| {
        mail.subparts
            .iter()
            .find(|p| p.ctype.mimetype == mime)
            .map(|p| p.get_body().unwrap())
            .unwrap_or_default()
    };
    Received {
        to: header("X-RcptTo"),
        subject: header("Subject"),
        message_id: header("Message-ID"),
        text: part("text/plain"),
        html: part("text/html"),
    }
}

async fn post(t: &TestServer, path: &str, body: Value) -> Response {
    t.req(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn error_code(res: Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_signup_gets_a_link_that_confirms_the_address_once() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let cookie = t.user("verify@example.com").await;
    let who: Value = t.get("/auth/whoami", &cookie).await.json().await.unwrap();
    assert_eq!(who["user"]["email_verified"], false);

    let mail = smtp.wait_for("verify@example.com", 1).await.remove(0);
    assert_eq!(mail.subject, "Confirm your email address");
    assert!(mail.message_id.starts_with('<') && mail.message_id.contains('@'));
    assert!(mail
        .text
        .contains(&format!("{}/verify-email?token=", t.origin)));
    assert!(mail.html.contains("verify-email?token="));
    let token = mail.token();
    assert_eq!(token.len(), 43, "256 bits");

    let res = post(&t, "/auth/email/verify", json!({"token": token})).await;
    assert_eq!(res.status(), 204);
    let who: Value = t.get("/auth/whoami", &cookie).await.json().await.unwrap();
    assert_eq!(who["user"]["email_verified"], true);
    // Forward-auth passes it on, and access tokens carry it.
    let res = t.get("/auth/verify", &cookie).await;
    assert_eq!(res.headers()["x-auth-email-verified"], "true");
    let grant: Value = post(
        &t,
        "/auth/token",
        json!({"grant_type": "password", "username": "verify@example.com", "password": PASSWORD}),
    )
    .await
    .json()
    .await
    .unwrap();
    let payload = grant["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    assert_eq!(claims["email_verified"], true);

    // Once only; a confirmed address asks for no more links.
    let res = post(&t, "/auth/email/verify", json!({"token": token})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_token");
    let res = t.post("/auth/email/verify/request", &cookie, None).await;
    assert_eq!(res.status(), 409);
    // Malformed bodies and tokens: clear 400s.
    for body in [
        json!({}),
        json!({"token": 5}),
        json!({"token": "x", "more": 1}),
    ] {
        let res = post(&t, "/auth/email/verify", body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
    }
}

#[tokio::test]
async fn a_verification_link_dies_when_it_is_used_late_or_for_something_else() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let cookie = t.user("late@example.com").await;
    let first = smtp.wait_for("late@example.com", 1).await.remove(0).token();
    // A second link, asked for; the first still works until its deadline.
    assert_eq!(
        t.post("/auth/email/verify/request", &cookie, None)
            .await
            .status(),
        202
    );
    let second = smtp.wait_for("late@example.com", 2).await.remove(1).token();
    // Used as a reset link: refused (and spent).
    let res = post(
        &t,
        "/auth/password/reset",
        json!({"token": first, "new_password": "another long password"}),
    )
    .await;
    assert_eq!(res.status(), 400);
    // Past its deadline.
    t.clock.advance(time::Duration::hours(25));
    let res = post(&t, "/auth/email/verify", json!({"token": second})).await;
    assert_eq!(res.status(), 400);
    let who: Value = t
        .get("/auth/whoami", &t.login("late@example.com", PASSWORD).await)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(who["user"]["email_verified"], false);
}

#[tokio::test]
async fn forgot_password_answers_alike_and_its_link_resets_once_everywhere() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let other_browser = t.user("forgot@example.com").await;
    let this_browser = t.login("forgot@example.com", PASSWORD).await;
    smtp.wait_for("forgot@example.com", 1).await;

    let known = post(
        &t,
        "/auth/password/forgot",
        json!({"email": "forgot@example.com"}),
    )
    .await;
    let unknown = post(
        &t,
        "/auth/password/forgot",
        json!({"email": "nobody@example.com"}),
    )
    .await;
    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), known.status());
    assert_eq!(
        known.bytes().await.unwrap(),
        unknown.bytes().await.unwrap(),
        "the same answer"
    );
    let mail = smtp.wait_for("forgot@example.com", 2).await.remove(1);
    assert_eq!(mail.subject, "Reset your password");
    assert!(mail.text.contains("/reset-password?token="));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(smtp.to("nobody@example.com").is_empty());

    // A password the policy refuses does not spend the link.
    let token = mail.token();
    let res = post(
        &t,
        "/auth/password/reset",
        json!({"token": token, "new_password": "short"}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "weak_password");
    let new_password = "a brand new password of some length";
    let res = post(
        &t,
        "/auth/password/reset",
        json!({"token": token, "new_password": new_password}),
    )
    .await;
    assert_eq!(res.status(), 204);
    // Every session ended; the old password is dead, the new one works; the user was told.
    for cookie in [&other_browser, &this_browser] {
        assert_eq!(t.get("/auth/whoami", cookie).await.status(), 401);
    }
    assert_eq!(
        t.login_raw(json!({"email": "forgot@example.com", "password": PASSWORD}))
            .await
            .status(),
        401
    );
    t.login("forgot@example.com", new_password).await;
    let notice = smtp.wait_for("forgot@example.com", 3).await.remove(2);
    assert_eq!(notice.subject, "Your password was changed");
    // The link again: refused.
    let res = post(
        &t,
        "/auth/password/reset",
        json!({"token": token, "new_password": "yet another long password"}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_token");
}

#[tokio::test]
async fn a_reset_link_dies_when_the_password_changes_by_any_path() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let cookie = t.user("changed@example.com").await;
    smtp.wait_for("changed@example.com", 1).await;
    post(
        &t,
        "/auth/password/forgot",
        json!({"email": "changed@example.com"}),
    )
    .await;
    let token = smtp
        .wait_for("changed@example.com", 2)
        .await
        .remove(1)
        .token();
    // The user changes the password while signed in: the link made before is void.
    let res = t
        .post(
            "/auth/password",
            &cookie,
            Some(json!({"current_password": PASSWORD, "new_password": "changed while signed in"})),
        )
        .await;
    assert_eq!(res.status(), 204);
    let res = post(
        &t,
        "/auth/password/reset",
        json!({"token": token, "new_password": "the attacker's password"}),
    )
    .await;
    assert_eq!(res.status(), 400);
    t.login("changed@example.com", "changed while signed in")
        .await;
}

#[tokio::test]
async fn a_reset_does_not_skip_the_second_factor() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let mut cookie = t.user("reset-mfa@example.com").await;
    crate::mfa::enroll(&t, &mut cookie).await;
    post(
        &t,
        "/auth/password/forgot",
        json!({"email": "reset-mfa@example.com"}),
    )
    .await;
    let token = nth(&smtp, "reset-mfa@example.com", "Reset your password", 1)
        .await
        .token();
    let new_password = "reset but still two factors";
    let res = post(
        &t,
        "/auth/password/reset",
        json!({"token": token, "new_password": new_password}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = post(
        &t,
        "/auth/login",
        json!({"email": "reset-mfa@example.com", "password": new_password}),
    )
    .await;
    assert_eq!(res.status(), 202, "the second factor is still asked for");
    assert!(session_token(res.headers()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_wrong_reset_tokens_evaluate_a_handful() {
    let t = TestServer::start().await;
    let guesses = (0..50).map(|i| {
        let token = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([i as u8; 32])
        };
        post(
            &t,
            "/auth/password/reset",
            json!({"token": token, "new_password": "a guesser's long password"}),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let evaluated = statuses.iter().filter(|s| **s == 400).count();
    assert!(evaluated <= 9, "{evaluated} evaluated: {statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, 400 | 429 | 503)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn queued_mail_survives_a_kill_and_is_delivered_after_the_restart() {
    // The relay is down when the message is queued; the server is killed (SIGKILL) before it
    // could deliver; after a restart, with the relay up, the message arrives.
    let smtp_port = free_port();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let smtp_url = format!("smtp://127.0.0.1:{smtp_port}?tls=none");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--smtp-url", &smtp_url])
            .env("CLOAKROOM_DATA_DIR", dir.path())
            .env("CLOAKROOM_ARGON2_MEMORY_KIB", "64")
            .env("CLOAKROOM_ARGON2_ITERATIONS", "1")
            .env("CLOAKROOM_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = || async {
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not start");
    };
    let mut child = spawn();
    ready().await;
    let res = http
        .post(format!("{base}/auth/signup"))
        .header("origin", format!("http://localhost:{port}"))
        .json(&json!({"email": "durable@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Let the worker fail once against the missing relay, then kill the server outright.
    let metrics = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    for _ in 0..100 {
        if metrics().await.contains("cloakroom_mail_failed_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics().await.contains("cloakroom_mail_failed_total 1"));
    child.kill().unwrap();
    child.wait().unwrap();

    let Some(smtp) = MailServer::start_on(smtp_port).await else {
        return;
    };
    let mut child = spawn();
    ready().await;
    let got = smtp.wait_for("durable@example.com", 1).await;
    assert_eq!(got[0].subject, "Confirm your email address");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.to("durable@example.com").len(), 1, "delivered once");
    let _ = child.kill();
    let _ = child.wait();
}

/// Deletion on `a`, with a session on `b` too: gone on both, and the address is free again.
async fn deletion_holds_across(a: &TestServer, b: &TestServer) {
    let on_a = a.user("leaving@example.com").await;
    let on_b = b.login("leaving@example.com", PASSWORD).await;
    let staying = a.user("staying@example.com").await;
    assert_eq!(
        a.post("/auth/factors/recovery-codes", &on_a, None)
            .await
            .status(),
        200
    );

    // The export holds exactly the user's own data.
    let res = a.get("/auth/account/export", &on_a).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let export: Value = res.json().await.unwrap();
    assert_eq!(export["user"]["email"], "leaving@example.com");
    assert!(export["user"]["created_at"].is_string());
    assert_eq!(export["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(
        export["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["current"] == true)
            .count(),
        1
    );
    assert_eq!(export["factors"][0]["kind"], "recovery_codes");
    assert_eq!(export["events"][0]["kind"], "recovery_codes_made");
    let text = export.to_string();
    assert!(!text.contains("staying@example.com"));
    assert!(!text.contains("secret") && !text.contains(PASSWORD));

    // A recent login is not enough; a wrong password is refused; the right one deletes.
    let res = a
        .req(reqwest::Method::DELETE, "/auth/account")
        .header("cookie", format!("cloakroom_session={on_a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await, "reauth_required");
    let delete = |password: &str| {
        a.req(reqwest::Method::DELETE, "/auth/account")
            .header("cookie", format!("cloakroom_session={on_a}"))
            .json(&json!({"current_password": password}))
            .send()
    };
    assert_eq!(delete("not the password").await.unwrap().status(), 401);
    assert_eq!(delete(PASSWORD).await.unwrap().status(), 204);

    for (t, cookie) in [(a, &on_a), (b, &on_b)] {
        assert_eq!(t.get("/auth/whoami", cookie).await.status(), 401);
        let res = t
            .login_raw(json!({"email": "leaving@example.com", "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 401);
    }
    assert_eq!(a.get("/auth/whoami", &staying).await.status(), 200);
    // The address can sign up again, as a new account with nothing of the old one.
    assert_eq!(
        b.signup("leaving@example.com", PASSWORD).await.status(),
        201
    );
    let again = b.login("leaving@example.com", PASSWORD).await;
    let export: Value = b
        .get("/auth/account/export", &again)
        .await
        .json()
        .await
        .unwrap();
    assert!(export["factors"].as_array().unwrap().is_empty());
    let kinds: Vec<&str> = export["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["login"], "only the new account's own login");
}

#[tokio::test]
async fn a_deleted_account_is_gone_with_its_sessions_and_its_address_is_free() {
    let t = TestServer::start().await;
    deletion_holds_across(&t, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_is_gone_on_every_instance_on_postgresql() {
    let Some(schema) =
        cloakroom::testing::PgSchema::create("a_deleted_account_is_gone_on_every_instance").await
    else {
        return;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let (a, b) = crate::postgres::pair(&schema.url, None).await;
        deletion_holds_across(&a, &b).await;
    }))
    .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_is_gone_on_every_instance_on_postgresql_and_redis() {
    crate::with_redis::with_backends(
        "a_deleted_account_is_gone_on_every_instance_with_redis",
        |url, redis| async move {
            let (a, b) = crate::postgres::pair(&url, Some(&redis)).await;
            deletion_holds_across(&a, &b).await;
        },
    )
    .await;
}

#[tokio::test]
async fn security_events_say_who_did_what_from_where_and_never_a_secret() {
    let t = TestServer::start().await;
    assert_eq!(t.signup("events@example.com", PASSWORD).await.status(), 201);
    let login = |password: &'static str, email: &'static str| {
        t.req(reqwest::Method::POST, "/auth/login")
            .header("user-agent", "EventsTest/1.0")
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    assert_eq!(
        login("a wrong password", "events@example.com")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        login(PASSWORD, "nobody-events@example.com")
            .await
            .unwrap()
            .status(),
        401
    );
    let res = login(PASSWORD, "events@example.com").await.unwrap();
    let first = session_token(res.headers()).unwrap();
    assert_eq!(t.post("/auth/logout", &first, None).await.status(), 204);
    let cookie = t.login("events@example.com", PASSWORD).await;
    let new_password = "a changed password for the events";
    let res = t
        .post(
            "/auth/password",
            &cookie,
            Some(json!({"current_password": PASSWORD, "new_password": new_password})),
        )
        .await;
    let cookie = session_token(res.headers()).unwrap_or(cookie);

    // Failed logins are written with the activity, not on their request.
    t.auth().flush_activity().await.unwrap();
    let events: Value = t.get("/auth/events", &cookie).await.json().await.unwrap();
    let list = events["events"].as_array().unwrap();
    let kinds: Vec<&str> = list.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["login", "login_failed", "logout", "password_changed"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let failed = list.iter().find(|e| e["kind"] == "login_failed").unwrap();
    assert_eq!(failed["user_agent"], "EventsTest/1.0");
    assert!(failed["ip"].is_string());
    let signed_in = list
        .iter()
        .find(|e| e["kind"] == "login" && e["user_agent"] == "EventsTest/1.0")
        .unwrap();
    assert_eq!(signed_in["detail"], "pwd");
    let text = events.to_string();
    for secret in [
        PASSWORD,
        new_password,
        "a wrong password",
        first.as_str(),
        cookie.as_str(),
    ] {
        assert!(!text.contains(secret), "an event holds {secret:?}");
    }
    // An unknown address is nobody's event.
    assert_eq!(kinds.iter().filter(|k| **k == "login_failed").count(), 1);
}

/// `post`, from client address 198.51.100.`n` (through a trusted proxy): the link tokens'
/// throttle counts per client, and these are many clients.
async fn post_from(t: &TestServer, n: u8, path: &str, body: Value) -> Response {
    t.req(reqwest::Method::POST, path)
        .header("x-forwarded-for", format!("198.51.100.{n}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `n`th message (from 1) to `to` whose subject is `subject`, waiting for it.
async fn nth(smtp: &MailServer, to: &str, subject: &str, n: usize) -> Received {
    for _ in 0..300 {
        let mut found: Vec<Received> = smtp
            .to(to)
            .into_iter()
            .filter(|m| m.subject == subject)
            .collect();
        if found.len() >= n {
            return found.swap_remove(n - 1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {n} {subject:?} to {to}: {:?}", smtp.to(to));
}

/// `whoami`, once it shows `email`: another instance learns of a changed address from the
/// change log (pushed by PostgreSQL, else read every 250 ms), within moments rather than by
/// the next request.
async fn whoami_once_it_says(t: &TestServer, cookie: &str, email: &str) -> Value {
    let mut who = Value::Null;
    for _ in 0..100 {
        who = t.get("/auth/whoami", cookie).await.json().await.unwrap();
        if who["user"]["email"] == email {
            return who;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("whoami does not show {email}: {who}");
}

/// A change of address through `a` and `b` (one server or two instances of one store): asked
/// for with a fresh login, confirmed by the new address once however many race to, undone by
/// the old address after it happened and before.
async fn email_change_holds_across(a: &TestServer, b: &TestServer, smtp: &MailServer) {
    let on_a = a.user("mover@example.com").await;
    let on_b = b.login("mover@example.com", PASSWORD).await;
    a.signup("taken@example.com", PASSWORD).await;
    let signup_link = nth(smtp, "mover@example.com", "Confirm your email address", 1).await;
    let change = |new_email: &str| {
        a.req(reqwest::Method::POST, "/auth/email/change")
            .header("cookie", format!("cloakroom_session={on_a}"))
            .json(&json!({"new_email": new_email}))
            .send()
    };
    for (new_email, status, code) in [
        ("mover@example.com", 400, "same_email"),
        ("Taken@Example.com", 409, "email_taken"),
        ("not an address", 400, "invalid_email"),
    ] {
        let res = change(new_email).await.unwrap();
        assert_eq!(res.status(), status, "{new_email}");
        assert_eq!(error_code(res).await, code);
    }
    // An old login needs a proof.
    a.clock.advance(time::Duration::minutes(11));
    let res = change("moved@example.com").await.unwrap();
    assert_eq!(error_code(res).await, "reauth_required");
    let res = a
        .req(reqwest::Method::POST, "/auth/email/change")
        .header("cookie", format!("cloakroom_session={on_a}"))
        .json(&json!({"new_email": "moved@example.com", "current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // The old address is told, with a link that undoes it; the new one confirms.
    let notice = nth(
        smtp,
        "mover@example.com",
        "Your email address is being changed",
        1,
    )
    .await;
    assert!(notice.text.contains("moved@example.com"));
    assert!(notice.text.contains("/cancel-email-change?token="));
    let confirm = nth(
        smtp,
        "moved@example.com",
        "Confirm your new email address",
        1,
    )
    .await;
    assert!(confirm.text.contains("/confirm-email-change?token="));
    assert_eq!(
        a.whoami_status(&on_a).await,
        200,
        "nothing changes before the new address confirms"
    );

    // Sixteen confirmations of one link race through both instances: one moves the account.
    let token = confirm.token();
    let mut racing = Vec::new();
    for i in 0..16 {
        let t = if i % 2 == 0 { a } else { b };
        racing.push(post_from(
            t,
            100 + i,
            "/auth/email/change/confirm",
            json!({"token": token}),
        ));
    }
    let statuses: Vec<u16> = futures::future::join_all(racing)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 400),
        "{statuses:?}"
    );
    for (t, cookie) in [(a, &on_a), (b, &on_b)] {
        let who = whoami_once_it_says(t, cookie, "moved@example.com").await;
        assert_eq!(who["user"]["email_verified"], true);
    }
    let res = b
        .login_raw(json!({"email": "mover@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401, "the old address logs in no more");
    b.login("moved@example.com", PASSWORD).await;
    // The old address's verification link died with it.
    let res = post_from(
        b,
        12,
        "/auth/email/verify",
        json!({"token": signup_link.token()}),
    )
    .await;
    assert_eq!(error_code(res).await, "invalid_token");

    // The old address undoes it: back to the old address, every session ended everywhere.
    let cancel = notice.token();
    assert_eq!(
        post_from(b, 1, "/auth/email/change/cancel", json!({"token": cancel}))
            .await
            .status(),
        204
    );
    assert_eq!(a.whoami_status(&on_a).await, 401);
    assert_eq!(b.whoami_status(&on_b).await, 401);
    let res = post_from(a, 2, "/auth/email/change/cancel", json!({"token": cancel})).await;
    assert_eq!(error_code(res).await, "invalid_token", "once only");
    let res = a
        .login_raw(json!({"email": "moved@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401);
    let again = a.login("mover@example.com", PASSWORD).await;
    let who = whoami_once_it_says(b, &again, "mover@example.com").await;
    assert_eq!(
        who["user"]["email_verified"], true,
        "the old address proved itself"
    );

    // Cancelled before it happens, the new address's link is void.
    let res = a
        .req(reqwest::Method::POST, "/auth/email/change")
        .header("cookie", format!("cloakroom_session={again}"))
        .json(&json!({"new_email": "elsewhere@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let notice = nth(
        smtp,
        "mover@example.com",
        "Your email address is being changed",
        2,
    )
    .await;
    let confirm = nth(
        smtp,
        "elsewhere@example.com",
        "Confirm your new email address",
        1,
    )
    .await;
    let res = post_from(
        b,
        13,
        "/auth/email/change/cancel",
        json!({"token": notice.token()}),
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = post_from(
        a,
        14,
        "/auth/email/change/confirm",
        json!({"token": confirm.token()}),
    )
    .await;
    assert_eq!(error_code(res).await, "invalid_token");
    assert_eq!(b.whoami_status(&again).await, 401);
    let last = a.login("mover@example.com", PASSWORD).await;
    let events: Value = a.get("/auth/events", &last).await.json().await.unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "email_change_requested",
        "email_changed",
        "email_change_cancelled",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn an_address_change_is_confirmed_by_the_new_address_and_undone_by_the_old() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| {
        raw.smtp_url = Some(smtp.url());
        raw.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
    })
    .await;
    email_change_holds_across(&t, &t, &smtp).await;
    // The pages of the links: a button, so that following the link changes nothing.
    let page = t
        .http
        .get(t.url("/confirm-email-change?token=abc"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("action=\"/confirm-email-change\""));
    assert!(page.contains("Move my account here"));
    let page = t
        .http
        .get(t.url("/cancel-email-change?token=abc"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("action=\"/cancel-email-change\""));
}

async fn email_change_on_two_instances(url: &str, redis: Option<&cloakroom::testing::RedisPrefix>) {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let stores = crate::postgres::backends(url, redis);
    let raw = |r: &mut cloakroom_server::settings::RawSettings| {
        stores(r);
        r.smtp_url = Some(smtp.url());
        r.public_url = Some("http://localhost:7443".into());
        r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
    };
    let a = TestServer::start_with(raw).await;
    let b = TestServer::start_with(raw).await;
    // One clock for both, as one wall clock would be.
    b.clock.set(cloakroom::Clock::now(&*a.clock));
    email_change_holds_across(&a, &b, &smtp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_change_holds_on_every_instance_on_postgresql() {
    let Some(schema) =
        cloakroom::testing::PgSchema::create("an_address_change_holds_on_every_instance").await
    else {
        return;
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        email_change_on_two_instances(&schema.url, None),
    ))
    .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_change_holds_on_every_instance_on_postgresql_and_redis() {
    crate::with_redis::with_backends(
        "an_address_change_holds_on_every_instance_with_redis",
        |url, redis| async move {
            email_change_on_two_instances(&url, Some(&redis)).await;
        },
    )
    .await;
}

/// What `to` received under `subject` so far.
fn subjects(smtp: &MailServer, to: &str, subject: &str) -> usize {
    smtp.to(to).iter().filter(|m| m.subject == subject).count()
}

#[tokio::test]
async fn notices_tell_of_second_factors_recovery_codes_and_new_devices() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let email = "noticed@example.com";
    let mut cookie = t.user(email).await;
    let login_with = |agent: &'static str| {
        t.req(reqwest::Method::POST, "/auth/login")
            .header("user-agent", agent)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
    };
    // A device none of the logins came from is news; the same device again is not.
    assert_eq!(login_with("Laptop/1.0").await.unwrap().status(), 200);
    let notice = nth(&smtp, email, "A sign-in from a new device", 1).await;
    assert!(notice.text.contains("Laptop/1.0"), "{}", notice.text);
    assert!(notice.text.contains("/forgot-password"));
    assert_eq!(login_with("Laptop/1.0").await.unwrap().status(), 200);

    // A second factor added, recovery codes made (no mail: they are shown at once), one used.
    crate::mfa::enroll(&t, &mut cookie).await;
    nth(&smtp, email, "A second factor was added", 1).await;
    let res = t.post("/auth/factors/recovery-codes", &cookie, None).await;
    let codes: Value = res.json().await.unwrap();
    let code = codes["codes"][0].as_str().unwrap().to_string();
    let res = login_with("Laptop/1.0").await.unwrap();
    assert_eq!(res.status(), 202);
    let mfa: Value = res.json().await.unwrap();
    let res = post(
        &t,
        "/auth/login/mfa",
        json!({"mfa_token": mfa["mfa_token"], "recovery_code": code}),
    )
    .await;
    assert_eq!(res.status(), 200);
    nth(&smtp, email, "A recovery code was used", 1).await;
    // Everything queued is delivered: nothing else came.
    t.auth().flush_activity().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subjects(&smtp, email, "A sign-in from a new device"), 1);
    assert_eq!(subjects(&smtp, email, "A second factor was added"), 1);
    assert_eq!(subjects(&smtp, email, "A recovery code was used"), 1);
}

#[tokio::test]
async fn new_device_notices_can_be_turned_off() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| {
        raw.smtp_url = Some(smtp.url());
        raw.notify_new_device = Some(false);
    })
    .await;
    t.user("quiet@example.com").await;
    let res = t
        .req(reqwest::Method::POST, "/auth/login")
        .header("user-agent", "Tablet/2.0")
        .json(&json!({"email": "quiet@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    smtp.wait_for("quiet@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        subjects(&smtp, "quiet@example.com", "A sign-in from a new device"),
        0
    );
}

#[tokio::test]
async fn an_unconfirmed_address_may_only_confirm_it_when_that_is_required() {
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| {
        raw.smtp_url = Some(smtp.url());
        raw.require_verified_email = Some(true);
    })
    .await;
    let email = "unconfirmed@example.com";
    let cookie = t.user(email).await;
    // Who one is, and what confirming takes, still answer; nothing else does.
    assert_eq!(t.whoami_status(&cookie).await, 200);
    for path in ["/auth/sessions", "/auth/factors", "/auth/verify"] {
        let res = t.get(path, &cookie).await;
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(error_code(res).await, "email_unverified", "{path}");
    }
    let res = t
        .http
        .get(t.url("/dashboard"))
        .header("cookie", format!("cloakroom_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/settings");
    let res = t
        .http
        .get(t.url("/settings"))
        .header("cookie", format!("cloakroom_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Send a new confirmation link"));
    let tokens = t.token_login(email, PASSWORD).await;
    let res = t
        .http
        .get(t.url("/auth/sessions"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "bearer tokens too");

    // New links: a few an hour.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            t.post("/auth/email/verify/request", &cookie, None)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    let link = nth(&smtp, email, "Confirm your email address", 6).await;
    let res = post(&t, "/auth/email/verify", json!({"token": link.token()})).await;
    assert_eq!(res.status(), 204);
    assert_eq!(t.get("/auth/sessions", &cookie).await.status(), 200);
    assert_eq!(t.get("/auth/verify", &cookie).await.status(), 200);
}

#[tokio::test]
async fn security_events_past_their_retention_are_swept() {
    let t = TestServer::start_with(|raw| raw.event_retention_days = Some(30)).await;
    t.user("retained@example.com").await;
    t.clock.advance(time::Duration::days(31));
    let cookie = t.login("retained@example.com", PASSWORD).await;
    t.auth().sweep().await.unwrap();
    let events: Value = t.get("/auth/events", &cookie).await.json().await.unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["login"], "only the login within 30 days");
}

#[tokio::test]
async fn the_settings_page_asks_for_links_moves_the_address_and_deletes_the_account() {
    use crate::pages::{hidden, location, post_form};
    let Some(smtp) = MailServer::start().await else {
        return;
    };
    let t = TestServer::start_with(|raw| raw.smtp_url = Some(smtp.url())).await;
    let email = "settings-page@example.com";
    let session = format!("cloakroom_session={}", t.user(email).await);
    let page = t
        .http
        .get(t.url("/settings"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("not confirmed"));
    assert!(page.contains("href=\"/auth/account/export\""));
    let csrf = hidden(&page, "csrf");

    let res = post_form(&t, "/settings/email/verify", &session, &[("csrf", &csrf)]).await;
    assert_eq!(location(&res), "/settings?done=verify_sent");
    nth(&smtp, email, "Confirm your email address", 2).await;

    let res = post_form(
        &t,
        "/settings/email",
        &session,
        &[("csrf", &csrf), ("new_email", "settings-moved@example.com")],
    )
    .await;
    assert_eq!(location(&res), "/settings?done=email_change_sent");
    nth(
        &smtp,
        "settings-moved@example.com",
        "Confirm your new email address",
        1,
    )
    .await;

    // Deleting asks for the password, even right after a login.
    let res = post_form(&t, "/settings/account/delete", &session, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("current password"));
    let res = post_form(
        &t,
        "/settings/account/delete",
        &session,
        &[("csrf", &csrf), ("current_password", PASSWORD)],
    )
    .await;
    assert_eq!(location(&res), "/login?done=deleted");
    let res = t
        .login_raw(json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401);
}
