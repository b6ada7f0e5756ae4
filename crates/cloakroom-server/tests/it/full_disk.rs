//! The fault run's full disk (SQLite): writes that fail answer 503 with `Retry-After`, never
//! 500 and never a success that is lost; `/readyz` says not ready while writes fail; once space
//! is back everything works again, and after a restart every acknowledged write is there.
//!
//! Needs a tiny filesystem of its own: a tmpfs mounted by the test (root on Linux). Where that
//! cannot be done the test says so, and fails under `CI` or `CLOAKROOM_REQUIRE_SERVICES`.

use crate::support::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A tmpfs mounted for one test, unmounted when dropped.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    !services_required(),
                    "a tmpfs is required here but cannot be mounted: {why}"
                );
                cloakroom::testing::skip(&format!("full-disk test: cannot mount a tmpfs ({why})"));
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join(format!("filler-{}", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = vec![0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.flush();
    path
}

#[derive(Default)]
struct Acknowledged {
    users: Vec<String>,
    live: Vec<String>,
    ended: Vec<String>,
    refused: usize,
}

/// Signups, logins and logouts, several at a time; records what was acknowledged.
async fn storm(t: &Arc<TestServer>, round: &str, ack: &mut Acknowledged) {
    let mut tasks = Vec::new();
    for i in 0..12 {
        let t = Arc::clone(t);
        let email = format!("{round}-{i}@example.com");
        tasks.push(tokio::spawn(async move {
            let mut users = Vec::new();
            let mut live = Vec::new();
            let mut ended = Vec::new();
            let mut refused = 0;
            let res = t.signup(&email, PASSWORD).await;
            match res.status().as_u16() {
                201 => users.push(email.clone()),
                503 => {
                    assert!(res.headers().contains_key("retry-after"));
                    refused += 1;
                }
                other => panic!("signup answered {other}"),
            }
            if users.is_empty() {
                return (users, live, ended, refused);
            }
            for n in 0..4 {
                let res = t
                    .login_raw(json!({"email": email, "password": PASSWORD, "remember": true}))
                    .await;
                let token = match res.status().as_u16() {
                    200 => session_token(res.headers()).unwrap(),
                    503 => {
                        assert!(res.headers().contains_key("retry-after"));
                        refused += 1;
                        continue;
                    }
                    other => panic!("login answered {other}"),
                };
                if n % 2 == 0 {
                    live.push(token);
                    continue;
                }
                let res = t.post("/auth/logout", &token, None).await;
                match res.status().as_u16() {
                    204 => ended.push(token),
                    503 => {
                        assert!(res.headers().contains_key("retry-after"));
                        refused += 1;
                        live.push(token);
                    }
                    other => panic!("logout answered {other}"),
                }
            }
            (users, live, ended, refused)
        }));
    }
    for task in tasks {
        let (users, live, ended, refused) = task.await.unwrap();
        ack.users.extend(users);
        ack.live.extend(live);
        ack.ended.extend(ended);
        ack.refused += refused;
    }
}

async fn ready(t: &TestServer) -> u16 {
    t.http
        .get(t.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_write_and_recovers() {
    let Some(fs) = TinyFs::mount("32m") else {
        return;
    };
    let data = fs.path().join("data");
    let t = TestServer::start_with(|r| r.data_dir = Some(data.clone())).await;
    let t = Arc::new(t);
    let mut ack = Acknowledged::default();
    storm(&t, "before", &mut ack).await;
    assert_eq!(ack.refused, 0);

    // Full but for a little room: the first writes fit, the next ones fail part way.
    let filler = fill(fs.path());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(192 * 1024)).unwrap();
    drop(f);
    let mut full = Acknowledged::default();
    // Long enough for the activity flush (every 5 s) to hit the full disk too.
    let start = std::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < std::time::Duration::from_secs(7) {
        storm(&t, &format!("full{round}"), &mut full).await;
        round += 1;
        for token in ack.live.iter().chain(&full.live) {
            t.clock.advance(time::Duration::seconds(1));
            let _ = t.whoami_status(token).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(full.refused > 0, "the disk never filled up");
    // No room at all: not ready.
    let _more = fill(fs.path());
    let mut none = Acknowledged::default();
    storm(&t, "none", &mut none).await;
    assert_eq!(none.users.len() + none.live.len() + none.ended.len(), 0);
    assert_eq!(ready(&t).await, 503, "ready while no write can be stored");

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&_more).unwrap();
    let start = std::time::Instant::now();
    while ready(&t).await != 200 {
        assert!(
            start.elapsed().as_secs() < 20,
            "not ready again after space came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut after = Acknowledged::default();
    storm(&t, "after", &mut after).await;
    assert_eq!(after.refused, 0, "writes still fail after space came back");

    let Ok(t) = Arc::try_unwrap(t) else {
        panic!("the server is still shared")
    };
    let t = t.restart().await;
    for ack in [&ack, &full, &after] {
        for email in &ack.users {
            let res = t
                .login_raw(json!({"email": email, "password": PASSWORD}))
                .await;
            assert_eq!(res.status(), 200, "acknowledged signup {email} was lost");
        }
        for token in &ack.live {
            assert_eq!(
                t.whoami_status(token).await,
                200,
                "an acknowledged login was lost"
            );
        }
        for token in &ack.ended {
            assert_eq!(
                t.whoami_status(token).await,
                401,
                "an acknowledged logout was lost"
            );
        }
    }
    println!(
        "full disk: {} writes refused with 503; {} signups, {} logins, {} logouts acknowledged and kept",
        full.refused,
        ack.users.len() + full.users.len() + after.users.len(),
        ack.live.len() + full.live.len() + after.live.len(),
        ack.ended.len() + full.ended.len() + after.ended.len()
    );
    drop(t);
    drop(fs);
}

/// A change is answered by what was done: when its security event cannot be written after it
/// (here the events table refuses every insert, as a full disk would), a login still answers
/// with its session, a logout as done and a password change with the new session, never a 503
/// for a change the client would then believe did not happen.
#[tokio::test]
async fn a_security_event_that_cannot_be_written_undoes_no_answer() {
    use sqlx::Connection;
    let t = TestServer::start().await;
    let before = t.user("unrecorded@example.com").await;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", t.db_path().display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON security_events \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let kept = t.login("unrecorded@example.com", PASSWORD).await;
    let ended = t.login("unrecorded@example.com", PASSWORD).await;
    assert_eq!(t.post("/auth/logout", &ended, None).await.status(), 204);
    assert_eq!(t.whoami_status(&ended).await, 401);
    let res = t
        .post(
            "/auth/password",
            &kept,
            Some(json!({"current_password": PASSWORD, "new_password": "another long password"})),
        )
        .await;
    assert_eq!(res.status(), 204);
    let kept = session_token(res.headers()).unwrap();
    // A wrong password's event is written after the answer: it fails with nothing to undo.
    let res = t
        .login_raw(json!({"email": "unrecorded@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 401);
    assert!(t.auth().flush_activity().await.is_err());
    // Room again: the failed login kept in memory is written; the others were logged as lost.
    sqlx::query("DROP TRIGGER refuse_events")
        .execute(&mut db)
        .await
        .unwrap();
    t.auth().flush_activity().await.unwrap();

    let t = t.restart().await;
    assert_eq!(
        t.whoami_status(&kept).await,
        200,
        "the new session was lost"
    );
    assert_eq!(t.whoami_status(&ended).await, 401, "the logout was lost");
    assert_eq!(
        t.whoami_status(&before).await,
        401,
        "the password change was lost"
    );
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM security_events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    // The signup's login, and the failed login written once it could be.
    assert_eq!(count, 2);
}

/// A restart on a directory the server cannot write says so plainly.
#[tokio::test]
async fn a_read_only_data_directory_is_named_at_start() {
    let Some(fs) = TinyFs::mount("4m") else {
        return;
    };
    let data = fs.path().join("data");
    let t = TestServer::start_with(|r| r.data_dir = Some(data.clone())).await;
    t.signup("ro@example.com", PASSWORD).await;
    if let Some(s) = t.server {
        s.shutdown().await;
    }
    // The same files, seen through a read-only bind mount.
    let view = tempfile::tempdir().unwrap();
    for args in [
        vec!["--bind".to_string(), data.display().to_string()],
        vec!["-o".into(), "remount,bind,ro".into()],
    ] {
        let ok = Command::new("mount")
            .args(&args)
            .arg(view.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount {args:?}");
    }
    let data = view.path().to_path_buf();
    let mut raw = test_raw(t.dir.path());
    raw.data_dir = Some(data.clone());
    let settings = cloakroom_server::settings::Settings::resolve(raw).unwrap();
    let clock: Arc<dyn cloakroom::Clock> = Arc::new(cloakroom::ManualClock::starting_now());
    let Err(err) = cloakroom_server::app::Server::start(&settings, clock).await else {
        panic!("started on a read-only directory");
    };
    let msg = err.to_string();
    assert!(msg.contains("not writable"), "{msg}");
    assert!(msg.contains(&data.display().to_string()), "{msg}");
    let _ = Command::new("umount").arg(view.path()).status();
}
