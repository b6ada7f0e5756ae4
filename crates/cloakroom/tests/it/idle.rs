//! Idle timeouts across instances (catalogue S2, S4): an instance that has not seen a session
//! for a while never ends it for a user who is active on another instance.

use cloakroom::{
    Auth, AuthConfig, AuthError, ManualClock, Role, SessionToken, Store, User, UserId,
};
use futures::FutureExt;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use time::Duration;

use crate::store_contract::{postgres, redis, session, sqlite};

fn config() -> AuthConfig {
    crate::engine::cheap_config()
}

async fn ok(engine: &Auth, token: &SessionToken) -> bool {
    match engine.authenticate(token.expose()).await {
        Ok(_) => true,
        Err(AuthError::Unauthenticated) => false,
        Err(e) => panic!("{e}"),
    }
}

async fn active_elsewhere(store: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::starting_now());
    let a = Auth::new(Arc::clone(&store), config(), clock.clone())
        .await
        .unwrap();
    let b = Auth::new(Arc::clone(&store), config(), clock.clone())
        .await
        .unwrap();
    let user = User {
        id: UserId::random(),
        email: cloakroom::Email::parse("idle@example.com").unwrap(),
        roles: vec![Role::default_role()],
        disabled: false,
        created_at: a.now(),
        email_verified: false,
        credentials_gen: 0,
    };
    store.insert_user(&user, "$argon2id$unused").await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..200 {
        let (s, token) = session(user.id, a.now());
        store.insert_session(&s).await.unwrap();
        // B sees each session once, then never again while the user works on A.
        assert!(ok(&b, &token).await);
        tokens.push(token);
    }
    for _ in 0..3 {
        clock.advance(Duration::minutes(20));
        for token in &tokens {
            assert!(ok(&a, token).await);
        }
        a.flush_activity().await.unwrap();
    }
    // 60 minutes after B last saw them, 20 after A did: B reads the shared time and agrees.
    for token in &tokens {
        assert!(ok(&b, token).await, "B ended a session in use on A");
        assert!(ok(&a, token).await);
    }
    // Activity on A not yet written: B refuses (it cannot know) but ends nothing for A.
    clock.advance(Duration::minutes(20));
    for token in &tokens {
        assert!(ok(&a, token).await);
    }
    clock.advance(Duration::minutes(15));
    for token in &tokens {
        assert!(!ok(&b, token).await);
        assert!(
            ok(&a, token).await,
            "a stale instance logged an active user out"
        );
    }
    // Idle everywhere: refused everywhere.
    clock.advance(Duration::minutes(31));
    for token in &tokens {
        assert!(!ok(&a, token).await);
        assert!(!ok(&b, token).await);
    }
}

#[tokio::test]
async fn s2_an_instance_with_a_stale_idle_time_ends_nothing_on_sqlite() {
    let (store, _dir) = sqlite().await;
    active_elsewhere(store).await;
}

#[tokio::test]
async fn s2_an_instance_with_a_stale_idle_time_ends_nothing_on_postgresql() {
    let Some((store, schema)) = postgres("stale_idle").await else {
        return;
    };
    let outcome = AssertUnwindSafe(active_elsewhere(store))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

#[tokio::test]
async fn s2_an_instance_with_a_stale_idle_time_ends_nothing_with_redis() {
    let Some((store, prefix, _dir)) = redis("stale_idle").await else {
        return;
    };
    let outcome = AssertUnwindSafe(active_elsewhere(store))
        .catch_unwind()
        .await;
    prefix.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}
