//! Secrets at rest: the private signing keys in the database are sealed with a key-encryption
//! key kept apart from it, and that key can be replaced without downtime.

use crate::postgres::backends;
use crate::support::*;
use base64::Engine;
use futures::FutureExt;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::path::Path;

fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = uuid::Uuid::new_v4().as_bytes()[i % 16];
    }
    out
}

/// Every secret the database keeps: the signing keys' private parts and the shared secrets.
async fn stored_keys(url: &str) -> Vec<(String, Vec<u8>)> {
    const SQL: &str = "SELECT kid, private_pkcs8 FROM signing_keys \
                       UNION ALL SELECT name, value FROM shared_secrets";
    let rows: Vec<(String, Vec<u8>)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as(SQL).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_as(SQL).fetch_all(&pool).await.unwrap()
    };
    assert!(rows.len() >= 2, "{rows:?}");
    rows
}

/// The stored secrets of authenticator apps.
async fn stored_totp(url: &str) -> Vec<Vec<u8>> {
    const SQL: &str = "SELECT secret FROM factors WHERE kind = 'totp'";
    let rows: Vec<(Vec<u8>,)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as(SQL).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_as(SQL).fetch_all(&pool).await.unwrap()
    };
    rows.into_iter().map(|(s,)| s).collect()
}

fn sealed(value: &[u8]) -> bool {
    value.starts_with(b"cksealed1")
}

/// The embedded default: a key file made in the data directory, owner-only, and every signing
/// key sealed with it.
#[tokio::test]
async fn signing_keys_are_sealed_with_a_key_file_made_on_first_start() {
    let t = TestServer::start().await;
    t.signup("seal@example.com", PASSWORD).await;
    let at = t.token_login("seal@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let key_file = t.dir.path().join("secrets.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is readable by others");
    }
    let url = format!("sqlite://{}", t.db_path().display());
    for (kid, private) in stored_keys(&url).await {
        assert!(sealed(&private), "{kid} is stored in clear");
    }
    // A restart reads them back: tokens it signed still verify.
    let t = t.restart().await;
    assert_eq!(t.bearer_status(&at).await, 200);
}

async fn shared_and_rotated(url: String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    let old = new_key();
    std::fs::write(&file, format!("old {old}\n")).unwrap();
    let with_file = |path: &Path| {
        let path = path.to_path_buf();
        let url = url.clone();
        move |r: &mut cloakroom_server::settings::RawSettings| {
            backends(&url, None)(r);
            r.public_url = Some("http://localhost:7443".into());
            r.secrets_key_file = Some(path.clone());
        }
    };
    // Keys made before sealing was configured: in clear.
    let plain = TestServer::start_with(|r| {
        backends(&url, None)(r);
        r.public_url = Some("http://localhost:7443".into());
    })
    .await;
    plain.signup("kek@example.com", PASSWORD).await;
    let early = plain.token_login("kek@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(stored_keys(&url).await.iter().all(|(_, p)| !sealed(p)));
    // An authenticator app added then: its secret in clear too.
    let mut cookie = plain.user("app-kek@example.com").await;
    let app = crate::mfa::enroll(&plain, &mut cookie).await;
    let later = cloakroom::Clock::now(&*plain.clock) + time::Duration::seconds(60);
    assert!(stored_totp(&url).await.iter().all(|s| !sealed(s)));
    drop(plain);
    // Two instances sharing the key file: the clear key is sealed at start, both sign and verify.
    let a = TestServer::start_with(with_file(&file)).await;
    let b = TestServer::start_with(with_file(&file)).await;
    assert!(stored_keys(&url).await.iter().all(|(_, p)| sealed(p)));
    assert!(stored_totp(&url).await.iter().all(|s| sealed(s)));
    assert_eq!(b.bearer_status(&early).await, 200);
    let kid = a.auth().rotate_keys().await.unwrap();
    b.auth().reload_keys().await.unwrap();
    let fresh = a.token_login("kek@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // B's own reload (every 2 s) may race the one above with an older list: wait for it.
    let start = std::time::Instant::now();
    while b.bearer_status(&fresh).await != 200 {
        assert!(start.elapsed().as_secs() < 5, "B never verified key {kid}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An instance with another key-encryption key refuses to start, and says why.
    let other = dir.path().join("other");
    std::fs::write(&other, new_key()).unwrap();
    let settings = {
        let mut raw = test_raw(dir.path());
        with_file(&other)(&mut raw);
        cloakroom_server::settings::Settings::resolve(raw).unwrap()
    };
    let clock: std::sync::Arc<dyn cloakroom::Clock> =
        std::sync::Arc::new(cloakroom::ManualClock::starting_now());
    let Err(err) = cloakroom_server::app::Server::start(&settings, clock.clone()).await else {
        panic!("started with the wrong key-encryption key");
    };
    assert!(err.to_string().contains("\"old\""), "{err}");
    // Rotation without downtime: the new key first, the old one kept; rekey; the old one goes.
    let new = new_key();
    std::fs::write(&file, format!("new {new}\nold {old}\n")).unwrap();
    let c = TestServer::start_with(with_file(&file)).await;
    assert_eq!(
        c.auth().rekey().await.unwrap(),
        stored_keys(&url).await.len() + 1,
        "every signing key, the check key and the app's secret"
    );
    assert_eq!(
        a.bearer_status(&fresh).await,
        200,
        "old instances keep serving"
    );
    std::fs::write(&file, format!("new {new}\n")).unwrap();
    let d = TestServer::start_with(with_file(&file)).await;
    assert_eq!(d.bearer_status(&fresh).await, 200);
    assert_eq!(d.bearer_status(&early).await, 200);
    // The app's secret opens with the new key alone: its codes still log in.
    d.clock.set(later);
    let token = crate::mfa::first_step(&d, "app-kek@example.com").await;
    let res =
        crate::mfa::second_step(&d, &token, serde_json::json!({"code": app.code(&d, 0)})).await;
    assert_eq!(res.status(), 200);
    drop((a, b, c, d));
}

/// Several instances on PostgreSQL share one key file; a key in clear from before is sealed
/// at start; an instance with the wrong key says so; the key is replaced with `rekey`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_in_postgresql_are_sealed_and_the_kek_rotates() {
    let Some(schema) = PgSchema::create("kek_rotation").await else {
        return;
    };
    let outcome = AssertUnwindSafe(shared_and_rotated(schema.url.clone()))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}
