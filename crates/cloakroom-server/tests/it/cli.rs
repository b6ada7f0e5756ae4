//! The admin CLI, run as a separate process against the same data as a running server.

use crate::support::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cloakroom(t: &TestServer, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.args(args)
        .env_remove("CLOAKROOM_CONFIG")
        .env("CLOAKROOM_DATA_DIR", t.dir.path())
        .env("CLOAKROOM_ARGON2_MEMORY_KIB", "64")
        .env("CLOAKROOM_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

async fn until_401(t: &TestServer, token: &str) -> Duration {
    let start = Instant::now();
    while t.whoami_status(token).await != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still valid after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn cli_manages_users_and_sessions_of_a_running_server() {
    let t = TestServer::start().await;
    let out = cloakroom(
        &t,
        &[
            "user",
            "add",
            "Admin@Example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server sees the account made by another process.
    let token = t.login("admin@example.com", PASSWORD).await;
    let who: serde_json::Value = t.get("/auth/whoami", &token).await.json().await.unwrap();
    assert_eq!(who["user"]["roles"], serde_json::json!(["admin"]));

    let out = cloakroom(&t, &["user", "list"], None);
    assert!(stdout(&out).contains("admin@example.com"));
    let out = cloakroom(&t, &["user", "list", "--json"], None);
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(users[0]["email"], "admin@example.com");
    assert!(!stdout(&out).contains("argon2"), "no hash is printed");

    let out = cloakroom(
        &t,
        &["user", "set-roles", "admin@example.com", "ops", "user"],
        None,
    );
    assert!(out.status.success());
    let start = Instant::now();
    loop {
        let who: serde_json::Value = t.get("/auth/whoami", &token).await.json().await.unwrap();
        if who["user"]["roles"] == serde_json::json!(["ops", "user"]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "roles not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // sessions list / revoke, seen by the server within a second.
    let out = cloakroom(&t, &["sessions", "list", "admin@example.com"], None);
    let sid = who["session"]["id"].as_str().unwrap();
    assert!(stdout(&out).contains(sid));
    let out = cloakroom(&t, &["sessions", "revoke", sid], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_401(&t, &token).await;

    let a = t.login("admin@example.com", PASSWORD).await;
    let b = t.login("admin@example.com", PASSWORD).await;
    let out = cloakroom(&t, &["sessions", "revoke-all", "admin@example.com"], None);
    assert!(stdout(&out).contains("ended 2 session"), "{}", stdout(&out));
    until_401(&t, &a).await;
    until_401(&t, &b).await;

    // Disabling ends sessions within a second; enabling lets the user log in again.
    let c = t.login("admin@example.com", PASSWORD).await;
    let out = cloakroom(&t, &["user", "disable", "admin@example.com"], None);
    assert!(out.status.success());
    until_401(&t, &c).await;
    let res = t
        .login_raw(serde_json::json!({"email": "admin@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401);
    let out = cloakroom(&t, &["user", "enable", "admin@example.com"], None);
    assert!(out.status.success());
    t.login("admin@example.com", PASSWORD).await;
}

#[tokio::test]
async fn cli_exit_codes_and_errors() {
    let t = TestServer::start().await;
    // No terminal and no --password-stdin: a usage error, not a hang.
    let out = cloakroom(&t, &["user", "add", "x@example.com"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    let out = cloakroom(
        &t,
        &["user", "add", "not-an-email", "--password-stdin"],
        Some(PASSWORD),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = cloakroom(
        &t,
        &["user", "add", "w@example.com", "--password-stdin"],
        Some("password"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("commonly used"));
    let out = cloakroom(
        &t,
        &[
            "user",
            "add",
            "y@example.com",
            "--role",
            "Bad Role",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = cloakroom(
        &t,
        &["user", "add", "dup@example.com", "--password-stdin"],
        Some(PASSWORD),
    );
    assert_eq!(out.status.code(), Some(0));
    let out = cloakroom(
        &t,
        &["user", "add", "DUP@example.com", "--password-stdin"],
        Some(PASSWORD),
    );
    assert_eq!(out.status.code(), Some(1));
    let out = cloakroom(&t, &["user", "disable", "ghost@example.com"], None);
    assert_eq!(out.status.code(), Some(1));
    let out = cloakroom(&t, &["sessions", "revoke", "not-a-uuid"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = cloakroom(
        &t,
        &["sessions", "revoke", "6f0e7d1c-0000-4000-8000-000000000000"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let out = cloakroom(&t, &["frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = cloakroom(
        &t,
        &["serve", "--public-url", "http://auth.example.com"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn cli_config_show_merges_and_redacts() {
    let t = TestServer::start().await;
    let file = t.dir.path().join("cloakroom.toml");
    std::fs::write(
        &file,
        "session_idle_secs = 600\nlisten = \"127.0.0.1:9999\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    let out = cmd
        .args(["config", "show", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:7777"])
        .env("CLOAKROOM_DATABASE_URL", "sqlite:///tmp/x.db?key=hunter2")
        .env("CLOAKROOM_SESSION_ABSOLUTE_SECS", "3600")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("listen = \"127.0.0.1:7777\""),
        "flag wins: {text}"
    );
    assert!(
        text.contains("session_idle_secs = 600"),
        "file applies: {text}"
    );
    assert!(
        text.contains("session_absolute_secs = 3600"),
        "environment applies: {text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    std::fs::write(&file, "sesion_idle_secs = 600\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sesion_idle_secs"));
}

#[tokio::test]
async fn cli_keys_rotate_reaches_a_running_server_and_token_inspect_audits() {
    let t = TestServer::start().await;
    let port = t.base.rsplit(':').next().unwrap().to_string();
    let listen = format!("127.0.0.1:{port}");
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--listen", listen.as_str()];
        all.extend_from_slice(args);
        cloakroom(&t, &all, stdin)
    };
    let out = cli(&["keys", "list", "--json"], None);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["status"], "active");
    let old_kid = keys[0]["kid"].as_str().unwrap().to_string();

    t.signup("cli-tok@example.com", PASSWORD).await;
    let old_at = t.token_login("cli-tok@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // inspect: sound token, as an argument and from stdin; JSON; against a JWKS file.
    let out = cli(&["token", "inspect", &old_at], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("the token is sound"));
    let out = cli(&["token", "inspect", "-", "--json"], Some(&old_at));
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["claims"]["sub"].as_str().map(str::len), Some(36));
    let jwks = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let jwks_file = t.dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let out = cli(
        &[
            "token",
            "inspect",
            &old_at,
            "--jwks",
            jwks_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Unsound tokens exit 1 and say why.
    let at = old_at.len() - 10;
    let swap = if &old_at[at..at + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swap}{}", &old_at[..at], &old_at[at + 1..]);
    let out = cli(&["token", "inspect", &tampered, "--json"], None);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "signature" && c["ok"] == false));
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    assert_eq!(
        cli(&["token", "inspect", none], None).status.code(),
        Some(1)
    );
    assert_eq!(
        cli(&["token", "inspect", "garbage"], None).status.code(),
        Some(1)
    );

    // rotate: the running server signs with the new key within seconds.
    let out = cli(&["keys", "rotate"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = std::time::Instant::now();
    loop {
        let at = t.token_login("cli-tok@example.com", PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let out = cli(&["token", "inspect", &at, "--json"], None);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if report["header"]["kid"] != old_kid.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the server still signs with the old key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(t.bearer_status(&old_at).await, 200, "old tokens stay valid");
    let out = cli(&["keys", "list"], None);
    assert!(stdout(&out).contains("retired") && stdout(&out).contains("active"));
}

#[tokio::test]
async fn admin_commands_create_nothing_and_inspect_with_a_jwks_needs_no_database() {
    let t = TestServer::start().await;
    let jwks = t
        .http
        .get(t.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    t.signup("cli-inspect@example.com", PASSWORD).await;
    let at = t.token_login("cli-inspect@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let port = t.base.rsplit(':').next().unwrap().to_string();
    let listen = format!("127.0.0.1:{port}");
    let jwks_file = t.dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();

    // An empty data directory: listing keys and users creates no signing key.
    let empty = tempfile::tempdir().unwrap();
    let in_empty = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(args)
            .env_remove("CLOAKROOM_CONFIG")
            .env("CLOAKROOM_DATA_DIR", empty.path())
            .output()
            .unwrap()
    };
    for args in [
        &["keys", "list", "--json"][..],
        &["user", "list", "--json"][..],
    ] {
        let out = in_empty(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keys: serde_json::Value =
        serde_json::from_slice(&in_empty(&["keys", "list", "--json"]).stdout).unwrap();
    assert_eq!(keys, serde_json::json!([]), "no signing key was created");

    // `token inspect --jwks` works where no database can be opened at all.
    let out = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args([
            "--listen",
            &listen,
            "token",
            "inspect",
            &at,
            "--jwks",
            jwks_file.to_str().unwrap(),
        ])
        .env_remove("CLOAKROOM_CONFIG")
        .env("CLOAKROOM_DATA_DIR", t.dir.path())
        .env(
            "CLOAKROOM_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn cli_lists_and_resets_a_users_second_factors() {
    let t = TestServer::start().await;
    let mut cookie = t.user("lost-phone@example.com").await;
    let app = crate::mfa::enroll(&t, &mut cookie).await;
    let out = cloakroom(&t, &["user", "factors", "lost-phone@example.com"], None);
    assert!(out.status.success(), "{out:?}");
    let listed = stdout(&out);
    assert!(
        listed.contains(&app.id) && listed.contains("totp") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.to_lowercase().contains("secret"));
    let out = cloakroom(
        &t,
        &["user", "factors", "lost-phone@example.com", "--json"],
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["id"], app.id.as_str());

    let out = cloakroom(
        &t,
        &["user", "reset-factors", "lost-phone@example.com"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("removed 1 second factor"),
        "{}",
        stdout(&out)
    );
    // The sessions end on the running server, and the password alone logs in again.
    until_401(&t, &cookie).await;
    let cookie = t.login("lost-phone@example.com", PASSWORD).await;
    let out = cloakroom(&t, &["user", "reset-factors", "nobody@example.com"], None);
    assert!(!out.status.success());

    // Both show in the audit, newest first, and in the user's own list.
    let out = cloakroom(
        &t,
        &["audit", "--user", "lost-phone@example.com", "--json"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let kinds: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(event["email"], "lost-phone@example.com");
            event["kind"].as_str().unwrap().to_string()
        })
        .filter(|k| k.starts_with("factor"))
        .collect();
    assert_eq!(kinds, ["factors_reset", "factor_added"]);
    assert!(!stdout(&out).contains(PASSWORD));
    let other = t.user("audit-other@example.com").await;
    let res = t.post("/auth/factors/recovery-codes", &other, None).await;
    assert_eq!(res.status(), 200);
    let everyone = stdout(&cloakroom(&t, &["audit"], None));
    assert!(
        everyone.contains("lost-phone@example.com")
            && everyone.contains("audit-other@example.com")
            && everyone.contains("recovery_codes_made"),
        "{everyone}"
    );
    let just_now = stdout(&cloakroom(
        &t,
        &[
            "audit",
            "--user",
            "audit-other@example.com",
            "--since",
            "1h",
        ],
        None,
    ));
    // A header, the login of `t.user`, the codes.
    assert_eq!(just_now.lines().count(), 3, "{just_now}");
    for bad in ["7y", "d", "-1d"] {
        let out = cloakroom(&t, &["audit", "--since", bad], None);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = cloakroom(&t, &["audit", "--user", "nobody@example.com"], None);
    assert_eq!(out.status.code(), Some(1));

    // The user sees their own, and only theirs.
    let res = t.get("/auth/events", &cookie).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"].to_str().unwrap(), "no-store");
    let mine: serde_json::Value = res.json().await.unwrap();
    let kinds: Vec<&str> = mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // Newest first: this login, then the reset, the factor, and the logins before.
    assert_eq!(kinds[..3], ["login", "factors_reset", "factor_added"]);
    assert_eq!(
        mine["events"][1]["description"],
        "Second factors reset by an administrator"
    );
    let one: serde_json::Value = t
        .get("/auth/events?limit=1", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    for bad in ["limit=0", "limit=201", "limit=x"] {
        let res = t.get(&format!("/auth/events?{bad}"), &cookie).await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    assert_eq!(t.get("/auth/events", "nonsense").await.status(), 401);
}
