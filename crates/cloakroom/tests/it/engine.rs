//! The engine's rules with a pinned clock and no HTTP.

use cloakroom::{
    Argon2Config, Auth, AuthConfig, AuthError, ClientInfo, LoginRequest, ManualClock, SqliteStore,
    Store,
};
use std::sync::Arc;
use time::Duration;

const PW: &str = "correct horse battery staple";

/// The engine's settings for tests: a cheap Argon2 cost, one hashing thread.
pub(crate) fn cheap_config() -> AuthConfig {
    AuthConfig {
        argon2: Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 1,
        hash_queue: 16,
        // Tests put sessions in the store with tokens of their own, which carry no check value.
        unchecked_lookups_per_sec: u32::MAX,
        ..AuthConfig::default()
    }
}

async fn engine() -> (Auth, Arc<ManualClock>, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let clock = Arc::new(ManualClock::starting_now());
    let auth = Auth::new(Arc::clone(&store), cheap_config(), clock.clone())
        .await
        .unwrap();
    (auth, clock, store, dir)
}

#[tokio::test]
async fn a_second_engine_on_the_same_store_learns_revocations_from_the_change_log() {
    let (a, clock, store, _dir) = engine().await;
    a.signup("two@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    let login = a
        .login(LoginRequest::new("two@example.com", PW))
        .await
        .unwrap();
    let b = Auth::new(Arc::clone(&store), a.config().clone(), clock.clone())
        .await
        .unwrap();
    let token = login.token.expose().to_string();
    assert!(
        b.authenticate(&token).await.is_ok(),
        "found in the store, then kept in memory"
    );
    a.admin_revoke(login.session.id).await.unwrap();
    assert!(a.authenticate(&token).await.is_err());
    // b still has it in memory until it reads the change log…
    assert_eq!(b.apply_changes().await.unwrap(), 1);
    assert!(matches!(
        b.authenticate(&token).await,
        Err(AuthError::Unauthenticated)
    ));
    // …and an engine started later knows it from the start.
    let c = Auth::new(store, a.config().clone(), clock).await.unwrap();
    assert!(c.authenticate(&token).await.is_err());
}

#[tokio::test]
async fn sweep_forgets_expired_sessions_in_memory_and_store() {
    let (a, clock, _store, _dir) = engine().await;
    a.signup("sweep@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    a.login(LoginRequest::new("sweep@example.com", PW))
        .await
        .unwrap();
    assert_eq!(a.live_sessions(), 1);
    clock.advance(Duration::minutes(41));
    assert_eq!(a.sweep().await.unwrap(), 1);
    assert_eq!(a.live_sessions(), 0);
}

#[tokio::test]
async fn weaker_stored_hashes_are_upgraded_at_login() {
    let (a, clock, store, _dir) = engine().await;
    a.signup("up@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    let stronger = AuthConfig {
        argon2: Argon2Config {
            memory_kib: 128,
            iterations: 1,
            parallelism: 1,
        },
        ..a.config().clone()
    };
    let b = Auth::new(Arc::clone(&store), stronger, clock)
        .await
        .unwrap();
    let user = b.find_user("up@example.com").await.unwrap();
    let before = store.password_hash(user.id).await.unwrap().unwrap();
    assert!(before.contains("m=64,"));
    b.login(LoginRequest::new("up@example.com", PW))
        .await
        .unwrap();
    let after = store.password_hash(user.id).await.unwrap().unwrap();
    assert!(after.contains("m=128,"), "{after}");
    b.login(LoginRequest::new("up@example.com", PW))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_account_stored_before_emails_were_nfc_still_logs_in() {
    let (a, _clock, _store, dir) = engine().await;
    let user = a
        .signup("older@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    // As an older version stored an address typed with a combining accent.
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
        .bind("cafe\u{301}@example.com")
        .bind(user.id.to_string())
        .execute(&pool)
        .await
        .unwrap();
    let login = a
        .login(LoginRequest::new("Cafe\u{301}@Example.com", PW))
        .await
        .unwrap();
    assert_eq!(login.user.id, user.id);
}
