//! One contract for every store backend (as Ory Kratos tests its persisters): each case is a
//! plain async function over `&dyn Store`, instantiated per backend by `contract!`.

use cloakroom::factor::{Factor, FactorId, FactorKind, MfaChallenge, PasskeyUse};
use cloakroom::{
    Change, Email, Lineage, RedisStore, Role, Rotation, Session, SessionId, SessionToken,
    SqliteStore, Store, StoreError, TokenHash, Transport, User, UserId,
};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn user(email: &str) -> User {
    User {
        id: UserId::random(),
        email: Email::parse(email).unwrap(),
        roles: vec![Role::default_role()],
        disabled: false,
        created_at: t0(),
        email_verified: false,
        credentials_gen: 0,
    }
}

pub(crate) fn session(user: UserId, at: OffsetDateTime) -> (Session, SessionToken) {
    let token = SessionToken::generate();
    let s = Session {
        id: SessionId::random(),
        user_id: user,
        transport: Transport::Cookie,
        secret_hash: token.hash(),
        remember: false,
        created_at: at,
        authenticated_at: at,
        last_seen_at: at,
        idle_timeout: Duration::minutes(30),
        absolute_expires_at: at + Duration::hours(12),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("test".into()),
        credentials_gen: 0,
        refresh_family: None,
        amr: cloakroom::Amr::PWD,
        dpop_jkt: None,
        dbsc_key: None,
    };
    (s, token)
}

async fn users_round_trip_and_unique_email(store: &dyn Store) {
    let u = user("a@example.com");
    store.insert_user(&u, "$argon2id$hash").await.unwrap();
    let (found, hash) = store
        .find_user_by_email(&Email::parse("A@EXAMPLE.COM").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, u);
    assert_eq!(hash, "$argon2id$hash");
    let dup = User {
        id: UserId::random(),
        ..user("a@example.com")
    };
    assert!(matches!(
        store.insert_user(&dup, "x").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.find_user(u.id).await.unwrap(), Some(u.clone()));
    assert!(store.find_user(UserId::random()).await.unwrap().is_none());

    let before = store.change_head().await.unwrap();
    assert!(store
        .set_roles(u.id, &[Role::parse("admin").unwrap()])
        .await
        .unwrap());
    assert!(store.set_disabled(u.id, true).await.unwrap());
    assert_eq!(
        store.set_password(u.id, "$new", None).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store
            .set_password(UserId::random(), "$x", None)
            .await
            .unwrap(),
        None
    );
    // A rehash is a compare-and-set on the hash, and leaves the count alone.
    assert!(!store.rehash_password(u.id, "$old", "$re").await.unwrap());
    assert!(store.rehash_password(u.id, "$new", "$re").await.unwrap());
    assert_eq!(
        store
            .find_user(u.id)
            .await
            .unwrap()
            .unwrap()
            .credentials_gen,
        1
    );
    assert!(!store.set_disabled(UserId::random(), true).await.unwrap());
    let u2 = store.find_user(u.id).await.unwrap().unwrap();
    assert!(u2.disabled);
    assert_eq!(u2.roles, vec![Role::parse("admin").unwrap()]);
    assert_eq!(
        store.password_hash(u.id).await.unwrap().as_deref(),
        Some("$re")
    );
    let changes = store.changes_since(before).await.unwrap();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|(_, c)| *c == Change::UserChanged(u.id)));
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn sessions_find_touch_list(store: &dyn Store) {
    let u = user("s@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (s, token) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    assert_eq!(
        store.find_by_token(&token.hash()).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(store.find_session(s.id).await.unwrap(), Some(s.clone()));
    assert!(store
        .find_by_token(&SessionToken::generate().hash())
        .await
        .unwrap()
        .is_none());
    // touch only moves forward.
    store
        .touch(&[(s.id, t0() + Duration::minutes(5))])
        .await
        .unwrap();
    store
        .touch(&[(s.id, t0() + Duration::minutes(1))])
        .await
        .unwrap();
    let seen = store
        .find_session(s.id)
        .await
        .unwrap()
        .unwrap()
        .last_seen_at;
    assert_eq!(seen, t0() + Duration::minutes(5));
    let (s2, _) = session(u.id, t0() + Duration::seconds(1));
    store.insert_session(&s2).await.unwrap();
    let listed = store.list_for_user(u.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![s2.id, s.id]
    );
    assert!(store
        .list_for_user(UserId::random())
        .await
        .unwrap()
        .is_empty());
}

async fn revoke_is_remembered_and_touch_never_resurrects(store: &dyn Store) {
    let u = user("r@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (s, token) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    assert_eq!(store.revoke(s.id).await.unwrap().map(|x| x.id), Some(s.id));
    assert!(
        store.revoke(s.id).await.unwrap().is_none(),
        "second revoke is a no-op"
    );
    assert!(store.revoke(SessionId::random()).await.unwrap().is_none());
    store
        .touch(&[(s.id, t0() + Duration::minutes(1))])
        .await
        .unwrap();
    assert!(store.find_by_token(&token.hash()).await.unwrap().is_none());
    assert!(store.find_session(s.id).await.unwrap().is_none());
    let revoked = store.revoked_sessions(t0()).await.unwrap();
    assert_eq!(revoked, vec![(s.id, s.absolute_expires_at)]);
    assert!(store
        .revoked_sessions(s.absolute_expires_at)
        .await
        .unwrap()
        .is_empty());
    store.prune_changes(s.absolute_expires_at).await.unwrap();
    assert!(store.revoked_sessions(t0()).await.unwrap().is_empty());
}

/// A revocation reaches the other instances: in the change log (SQL backends), or pushed as it
/// happens (Redis, whose sessions live outside the log).
async fn revoke_is_in_the_change_log(store: &dyn Store) {
    let u = user("log@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (s, _) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    let head = store.change_head().await.unwrap();
    if let Some(mut pushed) = store.revocations().await.unwrap() {
        store.revoke(s.id).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let event = tokio::time::timeout_at(deadline, pushed.recv())
                .await
                .expect("the revocation is pushed within 5 s")
                .expect("the feed stays open");
            if let cloakroom::RevocationEvent::Revoked { id, expires_at, .. } = event {
                if id == s.id {
                    assert_eq!(expires_at, s.absolute_expires_at);
                    return;
                }
            }
        }
    }
    store.revoke(s.id).await.unwrap();
    let changes = store.changes_since(head).await.unwrap();
    assert_eq!(
        changes.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
        vec![Change::SessionRevoked {
            id: s.id,
            expires_at: s.absolute_expires_at
        }]
    );
    store.prune_changes(s.absolute_expires_at).await.unwrap();
    assert!(store.changes_since(head).await.unwrap().is_empty());
}

async fn revoke_all_keeps_one(store: &dyn Store) {
    let u = user("all@example.com");
    let other = user("other@example.com");
    store.insert_user(&u, "h").await.unwrap();
    store.insert_user(&other, "h").await.unwrap();
    let ids: Vec<SessionId> = futures_ids(store, u.id, 3).await;
    let (o, _) = session(other.id, t0());
    store.insert_session(&o).await.unwrap();
    let mut ended = store.revoke_all(u.id, Some(ids[0])).await.unwrap();
    ended.sort();
    let mut expected = ids[1..].to_vec();
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(store.list_for_user(u.id).await.unwrap().len(), 1);
    assert_eq!(
        store.list_for_user(other.id).await.unwrap().len(),
        1,
        "others untouched"
    );
    assert_eq!(store.revoke_all(u.id, None).await.unwrap(), vec![ids[0]]);
}

async fn futures_ids(store: &dyn Store, user: UserId, n: usize) -> Vec<SessionId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, _) = session(user, t0() + Duration::seconds(i as i64));
        store.insert_session(&s).await.unwrap();
        ids.push(s.id);
    }
    ids
}

async fn replace_secret_is_compare_and_set(store: &dyn Store) {
    let u = user("cas@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (s, old) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    let a = SessionToken::generate();
    let b = SessionToken::generate();
    assert!(store
        .replace_secret(s.id, &old.hash(), &a.hash(), t0())
        .await
        .unwrap());
    assert!(!store
        .replace_secret(s.id, &old.hash(), &b.hash(), t0())
        .await
        .unwrap());
    assert!(store.find_by_token(&old.hash()).await.unwrap().is_none());
    assert_eq!(
        store.find_by_token(&a.hash()).await.unwrap().map(|s| s.id),
        Some(s.id)
    );
}

async fn concurrent_replace_secret_has_one_winner(store: Arc<dyn Store>) {
    let u = user("race@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (s, old) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&store);
        let old = old.hash();
        tasks.push(tokio::spawn(async move {
            let next = SessionToken::generate();
            store
                .replace_secret(s.id, &old, &next.hash(), t0())
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

async fn concurrent_rotations_mint_one_successor(store: Arc<dyn Store>) {
    let u = user("rot@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (mut s, presented) = session(u.id, t0());
    s.transport = Transport::Token;
    let family = Lineage::generate().hash();
    s.refresh_family = Some(family);
    store.insert_session(&s).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let store = Arc::clone(&store);
        let presented = presented.hash();
        tasks.push(tokio::spawn(async move {
            let next = SessionToken::generate();
            let rotation = store
                .rotate_refresh(
                    &presented,
                    &family,
                    &next.hash(),
                    &[i; 8],
                    t0() + Duration::seconds(1),
                )
                .await
                .unwrap();
            (rotation, next, i)
        }));
    }
    let mut winners = Vec::new();
    let mut sealed_seen = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (Rotation::Rotated(r), next, i) => {
                assert_eq!(r.id, s.id);
                assert_eq!(r.secret_hash, next.hash());
                winners.push((next, i));
            }
            (
                Rotation::Spent {
                    sealed_next,
                    session,
                    ..
                },
                _,
                _,
            ) => {
                assert_eq!(session.id, s.id);
                sealed_seen.push(sealed_next);
            }
            (Rotation::Unknown | Rotation::Reused(_), _, _) => {
                panic!("a racing rotation lost the session")
            }
        }
    }
    assert_eq!(winners.len(), 1, "one successor");
    let (next, i) = &winners[0];
    assert!(
        sealed_seen.iter().all(|b| *b == vec![*i; 8]),
        "every loser sees the winner's"
    );
    let found = store.find_by_token(&next.hash()).await.unwrap().unwrap();
    assert_eq!(found.id, s.id);
    assert!(store
        .find_by_token(&presented.hash())
        .await
        .unwrap()
        .is_none());
    // A token two rotations old is reuse, found by its family; the presented one is spent.
    let third = SessionToken::generate();
    assert!(matches!(
        store
            .rotate_refresh(
                &next.hash(),
                &family,
                &third.hash(),
                b"x",
                t0() + Duration::seconds(2)
            )
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));
    match store
        .rotate_refresh(
            &presented.hash(),
            &family,
            &SessionToken::generate().hash(),
            b"y",
            t0(),
        )
        .await
        .unwrap()
    {
        Rotation::Reused(r) => assert_eq!(r.id, s.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .rotate_refresh(
                &next.hash(),
                &family,
                &SessionToken::generate().hash(),
                b"z",
                t0()
            )
            .await
            .unwrap(),
        Rotation::Spent { .. }
    ));
    // A token nobody issued, of a family nobody has, is unknown.
    assert_eq!(
        store
            .rotate_refresh(
                &SessionToken::generate().hash(),
                &Lineage::generate().hash(),
                &SessionToken::generate().hash(),
                b"w",
                t0()
            )
            .await
            .unwrap(),
        Rotation::Unknown
    );
    // A session from before families takes the family of its first rotation.
    let (mut old, first) = session(u.id, t0());
    old.transport = Transport::Token;
    store.insert_session(&old).await.unwrap();
    let lineage = Lineage::generate().hash();
    let mut current = first.clone();
    for n in 0..2 {
        let next = SessionToken::generate();
        assert!(matches!(
            store
                .rotate_refresh(
                    &current.hash(),
                    &lineage,
                    &next.hash(),
                    b"l",
                    t0() + Duration::seconds(n)
                )
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        current = next;
    }
    assert!(matches!(
        store
            .rotate_refresh(
                &first.hash(),
                &lineage,
                &SessionToken::generate().hash(),
                b"l",
                t0()
            )
            .await
            .unwrap(),
        Rotation::Reused(_)
    ));
    // A cookie session is never rotated as a refresh token.
    let (c, cookie) = session(u.id, t0());
    store.insert_session(&c).await.unwrap();
    assert_eq!(
        store
            .rotate_refresh(
                &cookie.hash(),
                &Lineage::generate().hash(),
                &SessionToken::generate().hash(),
                b"c",
                t0()
            )
            .await
            .unwrap(),
        Rotation::Unknown
    );
}

async fn sessions_past_the_newest_are_listed_oldest_last(store: &dyn Store) {
    let u = user("past@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let (s, _) = session(u.id, t0() + Duration::seconds(i));
        store.insert_session(&s).await.unwrap();
        ids.push(s.id);
    }
    // Newest first: the last four inserted are kept; the two oldest are past them.
    assert_eq!(
        store.sessions_past(u.id, 4).await.unwrap(),
        vec![ids[1], ids[0]]
    );
    assert!(store.sessions_past(u.id, 6).await.unwrap().is_empty());
    assert_eq!(store.sessions_past(u.id, 0).await.unwrap().len(), 6);
    assert!(store
        .sessions_past(UserId::random(), 0)
        .await
        .unwrap()
        .is_empty());
}

async fn concurrent_revoke_all_ends_each_session_once(store: Arc<dyn Store>) {
    let u = user("everywhere@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let ids = futures_ids(&*store, u.id, 20).await;
    let (a, b) = tokio::join!(store.revoke_all(u.id, None), store.revoke_all(u.id, None));
    let mut ended = a.unwrap();
    ended.extend(b.unwrap());
    ended.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(ended, expected, "each session ended exactly once");
    assert!(store.list_for_user(u.id).await.unwrap().is_empty());
    let revoked: Vec<SessionId> = store
        .revoked_sessions(t0())
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(ids.iter().all(|id| revoked.contains(id)));
}

async fn delete_expired_respects_grace(store: &dyn Store) {
    let u = user("exp@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (s, _) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    let grace = Duration::minutes(10);
    let n = store
        .delete_expired(t0() + Duration::minutes(35), grace)
        .await
        .unwrap();
    assert_eq!(n, 0, "idle past the timeout but inside the grace");
    let n = store
        .delete_expired(t0() + Duration::minutes(41), grace)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (s2, _) = session(u.id, t0());
    store.insert_session(&s2).await.unwrap();
    store
        .touch(&[(s2.id, t0() + Duration::hours(11) + Duration::minutes(55))])
        .await
        .unwrap();
    let n = store
        .delete_expired(t0() + Duration::hours(12), grace)
        .await
        .unwrap();
    assert_eq!(n, 1, "absolute deadline, however recent the activity");
}

pub(crate) async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Arc::new(SqliteStore::open(&url).await.unwrap()), dir)
}

use cloakroom::testing::PgSchema;

pub(crate) async fn postgres(test: &str) -> Option<(Arc<dyn Store>, PgSchema)> {
    let schema = PgSchema::create(test).await?;
    let store = cloakroom::PostgresStore::open(&schema.url).await.unwrap();
    Some((Arc::new(store), schema))
}

use cloakroom::testing::RedisPrefix;

/// Redis for sessions in front of SQLite for users (PostgreSQL with Redis runs in the server's
/// tests).
pub(crate) async fn redis(test: &str) -> Option<(Arc<dyn Store>, RedisPrefix, tempfile::TempDir)> {
    let prefix = RedisPrefix::create(test).await?;
    let (sql, dir) = sqlite().await;
    let store = RedisStore::open(&prefix.url, &prefix.prefix, sql, Duration::minutes(10))
        .await
        .unwrap();
    Some((Arc::new(store), prefix, dir))
}

/// The backends every contract case runs on.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
    Redis,
}

/// Runs `case` on a fresh store of `backend` (its own PostgreSQL schema or Redis prefix, cleaned
/// up afterwards, even when the case fails).
async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    use std::panic::{resume_unwind, AssertUnwindSafe};
    let outcome = match backend {
        Backend::Sqlite => {
            let (store, _dir) = sqlite().await;
            AssertUnwindSafe(case(store)).catch_unwind().await
        }
        Backend::Postgres => {
            let Some((store, schema)) = postgres(name).await else {
                return;
            };
            let outcome = AssertUnwindSafe(case(store)).catch_unwind().await;
            schema.drop().await;
            outcome
        }
        Backend::Redis => {
            let Some((store, prefix, _dir)) = redis(name).await else {
                return;
            };
            let outcome = AssertUnwindSafe(case(store)).catch_unwind().await;
            prefix.drop().await;
            outcome
        }
    };
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

/// The contract, listed once: each case on every backend. Cases after `;` take the store
/// shared (they race it).
macro_rules! contract {
    ($($case:ident),* ; $($shared:ident),*) => {
        contract!(@on sqlite Sqlite; $($case),*; $($shared),*);
        contract!(@on postgres Postgres; $($case),*; $($shared),*);
        contract!(@on redis Redis; $($case),*; $($shared),*);
    };
    (@on $module:ident $backend:ident; $($case:ident),*; $($shared:ident),*) => {
        mod $module {
            use super::{run, Backend};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    run(Backend::$backend, stringify!($case), |s| async move {
                        super::$case(&*s).await
                    })
                    .await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    run(Backend::$backend, stringify!($shared), super::$shared).await
                }
            )*
        }
    };
}

fn factor(user: UserId, kind: FactorKind, at: OffsetDateTime) -> Factor {
    Factor {
        id: FactorId::random(),
        user_id: user,
        kind,
        name: Some("phone".into()),
        confirmed: kind == FactorKind::RecoveryCodes,
        created_at: at,
        last_used_at: None,
    }
}

fn code_hash(n: u8) -> TokenHash {
    TokenHash([n; 32])
}

async fn factors_round_trip_and_steps_are_accepted_once(store: &dyn Store) {
    let u = user("factors@example.com");
    let other = user("other-factors@example.com");
    store.insert_user(&u, "h").await.unwrap();
    store.insert_user(&other, "h").await.unwrap();
    let app = factor(u.id, FactorKind::Totp, t0());
    store.insert_factor(&app, Some(b"sealed")).await.unwrap();
    let listed = store.list_factors(u.id).await.unwrap();
    assert_eq!(listed, vec![app.clone()]);
    assert!(store.list_factors(other.id).await.unwrap().is_empty());
    assert_eq!(
        store.totp_secret(u.id, app.id).await.unwrap(),
        Some((b"sealed".to_vec(), None))
    );
    // Another user's factor is nobody's.
    assert_eq!(store.totp_secret(other.id, app.id).await.unwrap(), None);
    assert!(!store.accept_step(other.id, app.id, 5, t0()).await.unwrap());
    // Steps only move forward; accepting one confirms the factor.
    assert!(store.accept_step(u.id, app.id, 10, t0()).await.unwrap());
    assert!(!store.accept_step(u.id, app.id, 10, t0()).await.unwrap());
    assert!(!store.accept_step(u.id, app.id, 9, t0()).await.unwrap());
    assert!(store.accept_step(u.id, app.id, 11, t0()).await.unwrap());
    let now = store.list_factors(u.id).await.unwrap();
    assert!(now[0].confirmed);
    assert_eq!(now[0].last_used_at, Some(t0()));
    assert_eq!(
        store.totp_secret(u.id, app.id).await.unwrap(),
        Some((b"sealed".to_vec(), Some(11)))
    );
    assert!(!store.delete_factor(other.id, app.id).await.unwrap());
    assert!(store.delete_factor(u.id, app.id).await.unwrap());
    assert!(!store.delete_factor(u.id, app.id).await.unwrap());
    store
        .insert_factor(&factor(u.id, FactorKind::Totp, t0()), Some(b"x"))
        .await
        .unwrap();
    assert_eq!(store.delete_factors(u.id).await.unwrap(), 1);
}

async fn recovery_codes_are_spent_once_and_replaced_whole(store: &dyn Store) {
    let u = user("codes@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let first = factor(u.id, FactorKind::RecoveryCodes, t0());
    let codes: Vec<TokenHash> = (1..=10).map(code_hash).collect();
    store.replace_recovery_codes(&first, &codes).await.unwrap();
    assert_eq!(store.recovery_codes_left(u.id).await.unwrap(), 10);
    assert!(store
        .use_recovery_code(u.id, &code_hash(3), t0())
        .await
        .unwrap());
    assert!(!store
        .use_recovery_code(u.id, &code_hash(3), t0())
        .await
        .unwrap());
    assert!(!store
        .use_recovery_code(UserId::random(), &code_hash(4), t0())
        .await
        .unwrap());
    assert_eq!(store.recovery_codes_left(u.id).await.unwrap(), 9);
    assert_eq!(
        store.list_factors(u.id).await.unwrap()[0].last_used_at,
        Some(t0())
    );
    let second = factor(u.id, FactorKind::RecoveryCodes, t0() + Duration::seconds(1));
    let fresh: Vec<TokenHash> = (11..=20).map(code_hash).collect();
    store.replace_recovery_codes(&second, &fresh).await.unwrap();
    assert!(!store
        .use_recovery_code(u.id, &code_hash(4), t0())
        .await
        .unwrap());
    assert!(store
        .use_recovery_code(u.id, &code_hash(11), t0())
        .await
        .unwrap());
    let listed = store.list_factors(u.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, second.id);
}

async fn mfa_challenges_allow_a_few_tries_and_one_spend(store: &dyn Store) {
    let u = user("challenge@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let c = MfaChallenge {
        token_hash: code_hash(42),
        user_id: u.id,
        credentials_gen: 3,
        transport: Transport::Token,
        remember: true,
        attempts: 0,
        expires_at: t0() + Duration::minutes(5),
    };
    store.insert_mfa_challenge(&c).await.unwrap();
    for n in 0..3 {
        let got = store
            .try_mfa_challenge(&c.token_hash, t0(), 3)
            .await
            .unwrap()
            .expect("a try left");
        assert_eq!(
            got,
            MfaChallenge {
                attempts: n,
                ..c.clone()
            }
        );
    }
    assert_eq!(
        store
            .try_mfa_challenge(&c.token_hash, t0(), 3)
            .await
            .unwrap(),
        None
    );
    let d = MfaChallenge {
        token_hash: code_hash(43),
        ..c.clone()
    };
    store.insert_mfa_challenge(&d).await.unwrap();
    assert_eq!(
        store
            .try_mfa_challenge(&d.token_hash, d.expires_at, 3)
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert!(store.consume_mfa_challenge(&d.token_hash).await.unwrap());
    assert!(!store.consume_mfa_challenge(&d.token_hash).await.unwrap());
    assert_eq!(
        store.delete_expired_challenges(c.expires_at).await.unwrap(),
        1
    );
}

async fn concurrent_uses_of_one_code_or_step_have_one_winner(store: Arc<dyn Store>) {
    let u = user("code-race@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let app = factor(u.id, FactorKind::Totp, t0());
    store.insert_factor(&app, Some(b"s")).await.unwrap();
    store
        .replace_recovery_codes(
            &factor(u.id, FactorKind::RecoveryCodes, t0()),
            &[code_hash(7)],
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store.accept_step(u.id, app.id, 100, t0()).await.unwrap()
            } else {
                store
                    .use_recovery_code(u.id, &code_hash(7), t0())
                    .await
                    .unwrap()
            }
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 2, "one step and one code, each once");
}

async fn security_events_are_kept_per_user_newest_first(store: &dyn Store) {
    use cloakroom::events::{EventKind, SecurityEvent};
    let u = user("events@example.com");
    let other = user("other-events@example.com");
    store.insert_user(&u, "h").await.unwrap();
    store.insert_user(&other, "h").await.unwrap();
    for (i, kind) in [
        EventKind::FactorAdded,
        EventKind::RecoveryCodeUsed,
        EventKind::FactorRemoved,
    ]
    .into_iter()
    .enumerate()
    {
        store
            .record_event(&SecurityEvent {
                user_id: u.id,
                kind,
                at: t0() + Duration::seconds(i as i64),
                ip: Some("192.0.2.1".into()),
                user_agent: None,
                detail: Some("passkey".into()),
            })
            .await
            .unwrap();
    }
    let events = store.events(u.id, 2).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::FactorRemoved, EventKind::RecoveryCodeUsed]
    );
    assert_eq!(events[0].at, t0() + Duration::seconds(2));
    assert_eq!(events[0].detail.as_deref(), Some("passkey"));
    assert!(store.events(other.id, 10).await.unwrap().is_empty());
}

fn passkey_use(
    user: UserId,
    key: FactorId,
    challenge: u8,
    previous: &[u8],
    credential: &[u8],
) -> PasskeyUse {
    PasskeyUse {
        user,
        factor: key,
        credential: credential.to_vec(),
        previous: previous.to_vec(),
        at: t0() + Duration::seconds(i64::from(challenge)),
        challenge: vec![0, challenge, 0xff],
    }
}

async fn a_passkey_counts_each_challenge_once_and_only_later_ones(store: &dyn Store) {
    let u = user("passkey-use@example.com");
    let other = user("other-passkey-use@example.com");
    store.insert_user(&u, "h").await.unwrap();
    store.insert_user(&other, "h").await.unwrap();
    let key = factor(u.id, FactorKind::Passkey, t0());
    store.insert_passkey(&key, b"cred-id", b"v1").await.unwrap();
    // The same credential id is registered once, for anybody.
    assert!(matches!(
        store
            .insert_passkey(
                &factor(other.id, FactorKind::Passkey, t0()),
                b"cred-id",
                b"x"
            )
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(store
        .use_passkey(&passkey_use(u.id, key.id, 5, b"v1", b"v2"))
        .await
        .unwrap());
    let stored = store.passkeys(u.id).await.unwrap();
    assert_eq!(stored[0].1, b"v2");
    assert_eq!(stored[0].0.last_used_at, Some(t0() + Duration::seconds(5)));
    // The same challenge again, an earlier one, another user's claim, a stale copy: nothing
    // written.
    for refused in [
        passkey_use(u.id, key.id, 5, b"v2", b"v3"),
        passkey_use(u.id, key.id, 4, b"v2", b"v3"),
        passkey_use(other.id, key.id, 9, b"v2", b"v3"),
        // A later challenge, checked against a copy read before the last use.
        passkey_use(u.id, key.id, 9, b"v1", b"v3"),
    ] {
        assert!(!store.use_passkey(&refused).await.unwrap());
    }
    assert_eq!(store.passkeys(u.id).await.unwrap()[0].1, b"v2");
    assert!(store
        .use_passkey(&passkey_use(u.id, key.id, 6, b"v2", b"v4"))
        .await
        .unwrap());
    assert_eq!(store.passkeys(u.id).await.unwrap()[0].1, b"v4");
}

async fn one_assertion_raced_counts_once(store: Arc<dyn Store>) {
    let u = user("passkey-race@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let key = factor(u.id, FactorKind::Passkey, t0());
    store.insert_passkey(&key, b"race-id", b"v1").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .use_passkey(&passkey_use(u.id, key.id, 7, b"v1", b"v2"))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

async fn events_are_listed_since_a_time_for_one_user_or_all(store: &dyn Store) {
    use cloakroom::events::{EventKind, SecurityEvent};
    let a = user("audit-a@example.com");
    let b = user("audit-b@example.com");
    store.insert_user(&a, "h").await.unwrap();
    store.insert_user(&b, "h").await.unwrap();
    for (who, minutes, kind) in [
        (a.id, 0, EventKind::FactorAdded),
        (b.id, 10, EventKind::RecoveryCodesMade),
        (a.id, 20, EventKind::FactorRemoved),
    ] {
        store
            .record_event(&SecurityEvent {
                user_id: who,
                kind,
                at: t0() + Duration::minutes(minutes),
                ip: None,
                user_agent: None,
                detail: None,
            })
            .await
            .unwrap();
    }
    let kinds = |events: Vec<SecurityEvent>| -> Vec<(UserId, EventKind)> {
        events.into_iter().map(|e| (e.user_id, e.kind)).collect()
    };
    let all = store.events_since(None, t0(), 10).await.unwrap();
    assert_eq!(
        kinds(all),
        [
            (a.id, EventKind::FactorRemoved),
            (b.id, EventKind::RecoveryCodesMade),
            (a.id, EventKind::FactorAdded)
        ]
    );
    let recent = store
        .events_since(None, t0() + Duration::minutes(10), 10)
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let of_a = store.events_since(Some(a.id), t0(), 10).await.unwrap();
    assert_eq!(
        kinds(of_a),
        [
            (a.id, EventKind::FactorRemoved),
            (a.id, EventKind::FactorAdded)
        ]
    );
    assert_eq!(store.events_since(None, t0(), 1).await.unwrap().len(), 1);
}

fn mail(to: &str, at: OffsetDateTime) -> cloakroom::mail::OutgoingMail {
    cloakroom::mail::OutgoingMail {
        id: uuid::Uuid::new_v4().to_string(),
        to: to.into(),
        subject: "Subject".into(),
        text: "text".into(),
        html: "<p>html</p>".into(),
        queued_at: at,
    }
}

async fn mail_is_leased_retried_later_and_gone_once_delivered(store: &dyn Store) {
    let a = mail("a@example.com", t0());
    let b = mail("b@example.com", t0() + Duration::seconds(5));
    store.enqueue_mail(&a).await.unwrap();
    store.enqueue_mail(&b).await.unwrap();
    assert_eq!(store.mail_backlog().await.unwrap(), 2);
    // Only what is due; leased, it is nobody else's until the lease ends.
    let lease = t0() + Duration::minutes(1);
    let got = store.claim_mail(t0(), lease, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail, a);
    assert_eq!(got[0].attempts, 1);
    let later = t0() + Duration::seconds(10);
    let got = store
        .claim_mail(later, later + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|q| q.mail.id.as_str()).collect::<Vec<_>>(),
        [b.id.as_str()]
    );
    // A failure puts it back for later; a lease that ran out (a worker that died) too.
    store
        .mail_failed(&b.id, later + Duration::minutes(2), "connection refused")
        .await
        .unwrap();
    let at_lease_end = lease;
    let got = store
        .claim_mail(at_lease_end, at_lease_end + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|q| q.mail.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str()]
    );
    assert_eq!(got[0].attempts, 2);
    store.mail_delivered(&a.id).await.unwrap();
    let retry = later + Duration::minutes(2);
    let got = store
        .claim_mail(retry, retry + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|q| q.mail.id.as_str()).collect::<Vec<_>>(),
        [b.id.as_str()]
    );
    store.mail_delivered(&b.id).await.unwrap();
    assert_eq!(store.mail_backlog().await.unwrap(), 0);
}

async fn two_workers_never_lease_one_message(store: Arc<dyn Store>) {
    for i in 0..40 {
        store
            .enqueue_mail(&mail(&format!("m{i}@example.com"), t0()))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_mail(t0(), t0() + Duration::minutes(1), 3)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|q| q.mail.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: std::collections::BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 40, "each leased once");
    assert_eq!(unique.len(), 40);
}

async fn links_are_single_use_for_their_purpose_and_queued_with_their_mail(store: &dyn Store) {
    use cloakroom::mail::{LinkPurpose, LinkToken};
    let u = user("links@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let link = |n: u8, purpose| LinkToken {
        hash: code_hash(n),
        user_id: u.id,
        purpose,
        bound: u.email.to_string(),
        expires_at: t0() + Duration::hours(1),
    };
    let carrying = mail("links@example.com", t0());
    store
        .issue_link(&link(1, LinkPurpose::VerifyEmail), &carrying)
        .await
        .unwrap();
    assert_eq!(store.mail_backlog().await.unwrap(), 1);
    // Another purpose: refused, and spent.
    assert_eq!(
        store
            .take_link(&code_hash(1), LinkPurpose::ResetPassword, t0())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_link(&code_hash(1), LinkPurpose::VerifyEmail, t0())
            .await
            .unwrap(),
        None
    );
    store
        .issue_link(
            &link(2, LinkPurpose::VerifyEmail),
            &mail("links@example.com", t0()),
        )
        .await
        .unwrap();
    // Past its deadline: refused.
    assert_eq!(
        store
            .take_link(
                &code_hash(2),
                LinkPurpose::VerifyEmail,
                t0() + Duration::hours(1)
            )
            .await
            .unwrap(),
        None
    );
    store
        .issue_link(
            &link(3, LinkPurpose::VerifyEmail),
            &mail("links@example.com", t0()),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .take_link(&code_hash(3), LinkPurpose::VerifyEmail, t0())
            .await
            .unwrap(),
        Some(link(3, LinkPurpose::VerifyEmail))
    );
    assert_eq!(
        store
            .take_link(&code_hash(3), LinkPurpose::VerifyEmail, t0())
            .await
            .unwrap(),
        None,
        "single use"
    );
    // An address is confirmed only while it is the account's.
    let other = Email::parse("other@example.com").unwrap();
    assert!(!store.mark_email_verified(u.id, &other, t0()).await.unwrap());
    assert!(!store.find_user(u.id).await.unwrap().unwrap().email_verified);
    assert!(store
        .mark_email_verified(u.id, &u.email, t0())
        .await
        .unwrap());
    assert!(store.find_user(u.id).await.unwrap().unwrap().email_verified);
    // A password change queues its notice in the same step.
    let notice = mail("links@example.com", t0());
    store
        .set_password(u.id, "$new", Some(&notice))
        .await
        .unwrap();
    assert_eq!(store.mail_backlog().await.unwrap(), 4);
}

async fn a_deleted_user_leaves_only_its_id_and_frees_its_address(store: &dyn Store) {
    let u = user("deleted@example.com");
    let other = user("kept@example.com");
    store.insert_user(&u, "h").await.unwrap();
    store.insert_user(&other, "h").await.unwrap();
    let (s, _) = session(u.id, t0());
    store.insert_session(&s).await.unwrap();
    store
        .enqueue_mail(&mail("deleted@example.com", t0()))
        .await
        .unwrap();
    store
        .enqueue_mail(&mail("kept@example.com", t0()))
        .await
        .unwrap();
    assert!(store.delete_user(u.id, t0()).await.unwrap());
    assert!(!store.delete_user(u.id, t0()).await.unwrap());
    assert_eq!(store.find_user(u.id).await.unwrap(), None);
    assert_eq!(store.find_user_by_email(&u.email).await.unwrap(), None);
    assert!(store.list_factors(u.id).await.unwrap().is_empty());
    assert_eq!(
        store.mail_backlog().await.unwrap(),
        1,
        "only the other user's mail"
    );
    assert!(store.find_user(other.id).await.unwrap().is_some());
    // The address is free again.
    store
        .insert_user(&user("deleted@example.com"), "h")
        .await
        .unwrap();
}

async fn an_address_moves_only_from_where_it_is_and_only_to_a_free_one(store: &dyn Store) {
    use cloakroom::mail::{LinkPurpose, LinkToken};
    let u = user("moving@example.com");
    store.insert_user(&u, "h").await.unwrap();
    store
        .insert_user(&user("held@example.com"), "h")
        .await
        .unwrap();
    let (new, held) = (
        Email::parse("moved@example.com").unwrap(),
        Email::parse("held@example.com").unwrap(),
    );
    let link = |n: u8, purpose| LinkToken {
        hash: code_hash(n),
        user_id: u.id,
        purpose,
        bound: u.email.to_string(),
        expires_at: t0() + Duration::hours(1),
    };
    for (n, purpose) in [
        (1, LinkPurpose::VerifyEmail),
        (2, LinkPurpose::ResetPassword),
        (3, LinkPurpose::CancelEmailChange),
        (4, LinkPurpose::ChangeEmail),
        (5, LinkPurpose::ChangeEmail),
    ] {
        store
            .issue_link(&link(n, purpose), &mail("moving@example.com", t0()))
            .await
            .unwrap();
    }
    // Voiding one purpose leaves the others.
    assert_eq!(
        store
            .void_links(u.id, LinkPurpose::ChangeEmail)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store.change_email(u.id, &u.email, &held, t0()).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        !store
            .change_email(u.id, &new, &u.email, t0())
            .await
            .unwrap(),
        "not from there"
    );
    let before = store.changes_since(0).await.unwrap().len();
    assert!(store
        .change_email(u.id, &u.email, &new, t0())
        .await
        .unwrap());
    let moved = store.find_user(u.id).await.unwrap().unwrap();
    assert_eq!((moved.email, moved.email_verified), (new.clone(), true));
    assert!(store.find_user_by_email(&u.email).await.unwrap().is_none());
    assert!(
        store.changes_since(0).await.unwrap().len() > before,
        "other processes are told"
    );
    // Every link but the one that undoes the move died with the old address.
    for (n, purpose) in [
        (1, LinkPurpose::VerifyEmail),
        (2, LinkPurpose::ResetPassword),
    ] {
        assert_eq!(
            store.take_link(&code_hash(n), purpose, t0()).await.unwrap(),
            None
        );
    }
    assert!(store
        .take_link(&code_hash(3), LinkPurpose::CancelEmailChange, t0())
        .await
        .unwrap()
        .is_some());
    // The old address is free.
    store
        .insert_user(&user("moving@example.com"), "h")
        .await
        .unwrap();
}

async fn a_value_is_used_once_until_its_time_is_over(store: &dyn Store) {
    let key = [7u8; 32];
    let until = t0() + Duration::seconds(120);
    assert!(store.first_use(&key, until, t0()).await.unwrap());
    assert!(
        !store.first_use(&key, until, t0()).await.unwrap(),
        "replayed"
    );
    assert!(
        !store
            .first_use(&key, until, t0() + Duration::seconds(119))
            .await
            .unwrap(),
        "still within its time"
    );
    assert!(
        store.first_use(&[8u8; 32], until, t0()).await.unwrap(),
        "another value"
    );
    // Its time over, the sweep may forget it (Redis forgets it by itself).
    store
        .delete_expired_uses(t0() + Duration::seconds(121))
        .await
        .unwrap();
}

async fn concurrent_uses_of_one_value_have_one_winner(store: Arc<dyn Store>) {
    let key = [9u8; 32];
    let until = t0() + Duration::seconds(120);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.first_use(&key, until, t0()).await.unwrap()
        }));
    }
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1);
}

async fn a_dpop_binding_stays_with_its_session_through_rotation(store: &dyn Store) {
    let u = user("bound@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let (mut s, presented) = session(u.id, t0());
    s.transport = Transport::Token;
    let family = Lineage::generate().hash();
    s.refresh_family = Some(family);
    s.dpop_jkt = Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into());
    store.insert_session(&s).await.unwrap();
    assert_eq!(
        store.find_session(s.id).await.unwrap().unwrap().dpop_jkt,
        s.dpop_jkt
    );
    assert_eq!(
        store
            .find_by_token(&presented.hash())
            .await
            .unwrap()
            .unwrap()
            .dpop_jkt,
        s.dpop_jkt
    );
    let next = SessionToken::generate();
    match store
        .rotate_refresh(
            &presented.hash(),
            &family,
            &next.hash(),
            &[1; 8],
            t0() + Duration::seconds(1),
        )
        .await
        .unwrap()
    {
        Rotation::Rotated(rotated) => assert_eq!(rotated.dpop_jkt, s.dpop_jkt),
        other => panic!("not rotated: {other:?}"),
    }
    // An unbound session stays unbound.
    let (plain, _) = session(u.id, t0());
    store.insert_session(&plain).await.unwrap();
    assert_eq!(
        store
            .find_session(plain.id)
            .await
            .unwrap()
            .unwrap()
            .dpop_jkt,
        None
    );
}

fn login_event(s: &Session) -> cloakroom::events::SecurityEvent {
    cloakroom::events::SecurityEvent {
        user_id: s.user_id,
        kind: cloakroom::events::EventKind::Login,
        at: s.created_at,
        ip: s.ip.clone(),
        user_agent: s.user_agent.clone(),
        detail: Some("pwd".into()),
    }
}

async fn a_login_is_stored_whole_or_not_at_all(store: &dyn Store) {
    use cloakroom::NewLogin;
    let u = user("login-write@example.com");
    store.insert_user(&u, "h").await.unwrap();
    // Password logins: the session and its event; past the cap, the oldest are answered.
    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, _) = session(u.id, t0() + Duration::seconds(i));
        let event = login_event(&s);
        let login = NewLogin {
            session: &s,
            event: &event,
            passkey: None,
            keep: 2,
        };
        let past = store.store_login(login).await.unwrap().unwrap();
        assert!(store.find_session(s.id).await.unwrap().is_some());
        ids.push(s.id);
        let expected: Vec<SessionId> = if i == 2 { vec![ids[0]] } else { vec![] };
        assert_eq!(past, expected, "login {i}");
    }
    assert_eq!(store.events(u.id, 10).await.unwrap().len(), 3);
    let (s, _) = session(u.id, t0() + Duration::seconds(9));
    let event = login_event(&s);
    let all = NewLogin {
        session: &s,
        event: &event,
        passkey: None,
        keep: usize::MAX,
    };
    assert_eq!(store.store_login(all).await.unwrap(), Some(vec![]));

    // A passkey's login: stored with the passkey's use, or nothing at all.
    let key = factor(u.id, FactorKind::Passkey, t0());
    store
        .insert_passkey(&key, b"login-id", b"v1")
        .await
        .unwrap();
    let passkey_login = |used: PasskeyUse| async move {
        let (s, _) = session(u.id, t0() + Duration::seconds(20));
        let event = login_event(&s);
        let login = NewLogin {
            session: &s,
            event: &event,
            passkey: Some(&used),
            keep: 100,
        };
        let stored = store.store_login(login).await.unwrap();
        (stored, store.find_session(s.id).await.unwrap().is_some())
    };
    let events = store.events(u.id, 100).await.unwrap().len();
    assert_eq!(
        passkey_login(passkey_use(u.id, key.id, 5, b"v1", b"v2")).await,
        (Some(vec![]), true)
    );
    assert_eq!(store.passkeys(u.id).await.unwrap()[0].1, b"v2");
    for (refused, what) in [
        (
            passkey_use(u.id, key.id, 5, b"v2", b"v3"),
            "the same challenge",
        ),
        (
            passkey_use(u.id, key.id, 4, b"v2", b"v3"),
            "an earlier challenge",
        ),
        (passkey_use(u.id, key.id, 6, b"v1", b"v3"), "a stale copy"),
        (
            passkey_use(u.id, FactorId::random(), 6, b"v2", b"v3"),
            "no such passkey",
        ),
    ] {
        assert_eq!(passkey_login(refused).await, (None, false), "{what}");
    }
    assert_eq!(store.passkeys(u.id).await.unwrap()[0].1, b"v2");
    assert_eq!(
        store.events(u.id, 100).await.unwrap().len(),
        events + 1,
        "one event, for the one login stored"
    );
}

async fn one_passkey_login_raced_stores_one_session(store: Arc<dyn Store>) {
    let u = user("login-race@example.com");
    store.insert_user(&u, "h").await.unwrap();
    let key = factor(u.id, FactorKind::Passkey, t0());
    store
        .insert_passkey(&key, b"login-race-id", b"v1")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let (s, _) = session(u.id, t0());
            let event = login_event(&s);
            let used = passkey_use(u.id, key.id, 7, b"v1", b"v2");
            let login = cloakroom::NewLogin {
                session: &s,
                event: &event,
                passkey: Some(&used),
                keep: 100,
            };
            store.store_login(login).await.unwrap().is_some()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.list_for_user(u.id).await.unwrap().len(), 1);
    assert_eq!(store.events(u.id, 100).await.unwrap().len(), 1);
}

contract!(
    a_dpop_binding_stays_with_its_session_through_rotation,
    a_value_is_used_once_until_its_time_is_over,
    an_address_moves_only_from_where_it_is_and_only_to_a_free_one,
    a_deleted_user_leaves_only_its_id_and_frees_its_address,
    mail_is_leased_retried_later_and_gone_once_delivered,
    links_are_single_use_for_their_purpose_and_queued_with_their_mail,
    events_are_listed_since_a_time_for_one_user_or_all,
    a_passkey_counts_each_challenge_once_and_only_later_ones,
    a_login_is_stored_whole_or_not_at_all,
    security_events_are_kept_per_user_newest_first,
    factors_round_trip_and_steps_are_accepted_once,
    recovery_codes_are_spent_once_and_replaced_whole,
    mfa_challenges_allow_a_few_tries_and_one_spend,
    users_round_trip_and_unique_email,
    sessions_find_touch_list,
    revoke_is_remembered_and_touch_never_resurrects,
    revoke_is_in_the_change_log,
    revoke_all_keeps_one,
    replace_secret_is_compare_and_set,
    delete_expired_respects_grace,
    sessions_past_the_newest_are_listed_oldest_last;
    concurrent_uses_of_one_value_have_one_winner,
    concurrent_replace_secret_has_one_winner,
    concurrent_rotations_mint_one_successor,
    concurrent_revoke_all_ends_each_session_once,
    concurrent_uses_of_one_code_or_step_have_one_winner,
    one_assertion_raced_counts_once,
    one_passkey_login_raced_stores_one_session,
    two_workers_never_lease_one_message);
