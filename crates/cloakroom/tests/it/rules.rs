//! The engine's rules, each on its own, with a pinned clock and no HTTP server: idle and
//! absolute timeouts, fresh authentication, the refresh grace window and reuse, and login
//! throttling.

use cloakroom::{
    Auth, AuthError, ClientInfo, LoginRequest, ManualClock, Reauth, SqliteStore, Store, Transport,
};
use std::sync::Arc;
use time::Duration;

const PW: &str = "correct horse battery staple";

struct Engine {
    auth: Auth,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn engine() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let clock = Arc::new(ManualClock::starting_now());
    let auth = Auth::new(store, crate::engine::cheap_config(), clock.clone())
        .await
        .unwrap();
    auth.signup("rules@example.com", PW, &ClientInfo::default())
        .await
        .unwrap();
    Engine {
        auth,
        clock,
        _dir: dir,
    }
}

fn login(remember: bool) -> LoginRequest {
    let mut req = LoginRequest::new("rules@example.com", PW);
    req.remember = remember;
    req
}

#[tokio::test]
async fn a_browser_session_ends_after_30_idle_minutes_and_lives_while_used() {
    let e = engine().await;
    let token = e.auth.login(login(false)).await.unwrap().token;
    // Used every 29 minutes, it stays alive past the idle timeout many times over.
    for _ in 0..5 {
        e.clock.advance(Duration::minutes(29));
        assert!(e.auth.authenticate(token.expose()).await.is_ok());
    }
    e.clock.advance(Duration::minutes(30));
    assert!(matches!(
        e.auth.authenticate(token.expose()).await,
        Err(AuthError::Unauthenticated)
    ));
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_deadline_however_busy() {
    let e = engine().await;
    let token = e.auth.login(login(false)).await.unwrap().token;
    // Used every 20 minutes for 11 h 40 min, then once more at 12 h.
    for _ in 0..35 {
        e.clock.advance(Duration::minutes(20));
        assert!(e.auth.authenticate(token.expose()).await.is_ok());
    }
    e.clock.advance(Duration::minutes(20));
    assert!(e.auth.authenticate(token.expose()).await.is_err());
    // "Remember me": 14 days idle, 30 days absolute.
    let remembered = e.auth.login(login(true)).await.unwrap().token;
    e.clock.advance(Duration::days(13));
    assert!(e.auth.authenticate(remembered.expose()).await.is_ok());
    e.clock.advance(Duration::days(14) + Duration::seconds(1));
    assert!(e.auth.authenticate(remembered.expose()).await.is_err());
}

#[tokio::test]
async fn ending_other_sessions_needs_a_login_of_the_last_10_minutes_or_the_password() {
    let e = engine().await;
    let mine = e.auth.login(login(false)).await.unwrap().token;
    let other = e.auth.login(login(false)).await.unwrap();
    let who = e.auth.authenticate(mine.expose()).await.unwrap();
    e.clock.advance(Duration::minutes(10));
    let who_fresh = e.auth.authenticate(mine.expose()).await.unwrap();
    assert!(e
        .auth
        .end_session(&who_fresh, other.session.id, Reauth::None)
        .await
        .is_ok());
    let third = e.auth.login(login(false)).await.unwrap();
    e.clock.advance(Duration::seconds(1));
    let stale = e.auth.authenticate(mine.expose()).await.unwrap();
    assert!(matches!(
        e.auth
            .end_session(&stale, third.session.id, Reauth::None)
            .await,
        Err(AuthError::ReauthRequired)
    ));
    assert!(matches!(
        e.auth
            .end_session(&stale, third.session.id, Reauth::Password("wrong".into()))
            .await,
        Err(AuthError::InvalidCredentials)
    ));
    e.auth
        .end_session(&stale, third.session.id, Reauth::Password(PW.into()))
        .await
        .unwrap();
    // Its own session needs nothing; logging out everywhere needs freshness too.
    assert!(matches!(
        e.auth.logout_all(&stale, Reauth::None).await,
        Err(AuthError::ReauthRequired)
    ));
    e.auth
        .end_session(&who, who.session.id, Reauth::None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_spent_refresh_token_is_answered_alike_within_the_grace_window_and_ends_the_session_after(
) {
    let e = engine().await;
    let mut req = login(false);
    req.transport = Transport::Token;
    let first = e.auth.login_tokens(req).await.unwrap();
    let second = e.auth.refresh(first.refresh_token.expose()).await.unwrap();
    // A retry inside the 10 s grace (a lost response) gets the same successor.
    e.clock.advance(Duration::seconds(10));
    let retry = e.auth.refresh(first.refresh_token.expose()).await.unwrap();
    assert_eq!(retry.refresh_token.expose(), second.refresh_token.expose());
    assert_eq!(retry.session.id, second.session.id);
    // After it, the spent token is theft: the session ends, the current token with it.
    e.clock.advance(Duration::seconds(1));
    assert!(matches!(
        e.auth.refresh(first.refresh_token.expose()).await,
        Err(AuthError::InvalidGrant)
    ));
    assert!(matches!(
        e.auth.refresh(second.refresh_token.expose()).await,
        Err(AuthError::InvalidGrant)
    ));
    assert!(e
        .auth
        .authenticate_bearer(&second.access_token)
        .await
        .is_err());
    assert_eq!(
        e.auth
            .metrics
            .refresh_reuse
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn failed_logins_back_off_per_account_and_a_success_clears_them() {
    let e = engine().await;
    let wrong = || LoginRequest::new("rules@example.com", "not the password at all");
    // Five free failures and one more get through; then the account is held back, the right
    // password too, for one second, then two.
    for _ in 0..6 {
        assert!(matches!(
            e.auth.login(wrong()).await,
            Err(AuthError::InvalidCredentials)
        ));
    }
    let Err(AuthError::TooManyAttempts { retry_after }) = e.auth.login(wrong()).await else {
        panic!("the 7th attempt is throttled");
    };
    assert_eq!(retry_after, Duration::seconds(1));
    assert!(matches!(
        e.auth.login(login(false)).await,
        Err(AuthError::TooManyAttempts { .. })
    ));
    e.clock.advance(Duration::seconds(1));
    assert!(matches!(
        e.auth.login(wrong()).await,
        Err(AuthError::InvalidCredentials)
    ));
    let Err(AuthError::TooManyAttempts { retry_after }) = e.auth.login(login(false)).await else {
        panic!("throttled again, for longer");
    };
    assert_eq!(retry_after, Duration::seconds(2));
    e.clock.advance(Duration::seconds(2));
    e.auth.login(login(false)).await.unwrap();
    // The success forgot the account's failures.
    for _ in 0..6 {
        assert!(matches!(
            e.auth.login(wrong()).await,
            Err(AuthError::InvalidCredentials)
        ));
    }
}
