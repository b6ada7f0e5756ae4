//! The change log on PostgreSQL, followed by several engines: a change is delivered to every
//! follower even when a transaction that took a later position commits first (catalogue S4,
//! J18: a revocation on one instance holds on the others; `set-roles` reaches them too).

use cloakroom::testing::PgSchema;
use cloakroom::{
    Auth, AuthConfig, AuthError, ManualClock, PostgresStore, Role, Store, User, UserId,
};
use futures::FutureExt;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::store_contract::session;

fn config() -> AuthConfig {
    crate::engine::cheap_config()
}

async fn engine(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Auth {
    Auth::new(Arc::clone(store), config(), clock.clone())
        .await
        .unwrap()
}

async fn with_schema<F, Fut>(test: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(schema) = PgSchema::create(test).await else {
        return;
    };
    let outcome = AssertUnwindSafe(body(schema.url.clone()))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

async fn new_user(store: &dyn Store, email: &str) -> User {
    let user = User {
        id: UserId::random(),
        email: cloakroom::Email::parse(email).unwrap(),
        roles: vec![Role::default_role(), Role::parse("admin").unwrap()],
        disabled: false,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        email_verified: false,
        credentials_gen: 0,
    };
    store.insert_user(&user, "$argon2id$unused").await.unwrap();
    user
}

/// A writer that has taken its position but not committed holds back a writer that comes after
/// it: the follower never sees the later position first, so it never skips the earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_commits_after_a_later_one_still_reaches_followers() {
    with_schema("change_log_out_of_order", |url| async move {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
        let clock = Arc::new(ManualClock::starting_now());
        let follower = engine(&store, &clock).await;
        let user = new_user(&*store, "order@example.com").await;
        let now = follower.now();
        let (slow, slow_token) = session(user.id, now);
        let (fast, fast_token) = session(user.id, now);
        store.insert_session(&slow).await.unwrap();
        store.insert_session(&fast).await.unwrap();
        for token in [&slow_token, &fast_token] {
            follower.authenticate(token.expose()).await.unwrap();
        }

        // Fault injection: the append for `slow` takes its position, then waits on a lock this
        // test holds, as a writer descheduled between its insert and its commit would.
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(&format!(
            "CREATE FUNCTION hold_slow() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.subject = '{}' THEN PERFORM pg_advisory_xact_lock(4242); END IF; \
             RETURN NEW; END $$"
        , slow.id))
        .execute(&admin)
        .await
        .unwrap();
        sqlx::query(
            "CREATE TRIGGER hold_slow AFTER INSERT ON changes FOR EACH ROW EXECUTE FUNCTION hold_slow()",
        )
        .execute(&admin)
        .await
        .unwrap();
        let mut gate = admin.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock(4242)")
            .execute(&mut *gate)
            .await
            .unwrap();

        let slow_writer = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.revoke(slow.id).await }
        });
        // Let the slow writer take its position before the fast one starts.
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        let fast_writer = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.revoke(fast.id).await }
        });
        // Meanwhile the follower reads the log as often as it can.
        for _ in 0..20 {
            follower.apply_changes().await.unwrap();
            tokio::time::sleep(StdDuration::from_millis(25)).await;
        }
        gate.rollback().await.unwrap();
        slow_writer.await.unwrap().unwrap();
        fast_writer.await.unwrap().unwrap();
        follower.apply_changes().await.unwrap();
        for token in [&slow_token, &fast_token] {
            assert!(
                matches!(
                    follower.authenticate(token.expose()).await,
                    Err(AuthError::Unauthenticated)
                ),
                "a revoked session is still accepted by a follower"
            );
        }
        admin.close().await;
    })
    .await;
}

/// Hundreds of sessions used on C and ended 16 at a time on A and B: C refuses every one.
/// Role removals made at the same time all reach C as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_on_two_instances_all_reach_the_third() {
    with_schema("change_log_concurrent", |url| async move {
        let clock = Arc::new(ManualClock::starting_now());
        let open =
            || async { Arc::new(PostgresStore::open(&url).await.unwrap()) as Arc<dyn Store> };
        let (sa, sb, sc) = (open().await, open().await, open().await);
        let a = Arc::new(engine(&sa, &clock).await);
        let b = Arc::new(engine(&sb, &clock).await);
        let c = Arc::new(engine(&sc, &clock).await);
        let mut users = Vec::new();
        for i in 0..40 {
            users.push(new_user(&*sa, &format!("u{i}@example.com")).await);
        }
        let mut sessions = Vec::new();
        for i in 0..400 {
            let (s, token) = session(users[i % users.len()].id, c.now());
            sa.insert_session(&s).await.unwrap();
            c.authenticate(token.expose()).await.unwrap();
            sessions.push((s, token));
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let follower = tokio::spawn({
            let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
            async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.apply_changes().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let ids: Vec<_> = sessions.iter().map(|(s, _)| s.id).collect();
        for (round, chunk) in ids.chunks(16).enumerate() {
            let mut writers = Vec::new();
            for (i, id) in chunk.iter().enumerate() {
                let engine = if i % 2 == 0 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                let id = *id;
                writers.push(tokio::spawn(async move { engine.admin_revoke(id).await }));
            }
            // A role change in the middle of every other burst.
            if round % 2 == 0 {
                let user = users[round / 2 % users.len()].clone();
                let engine = Arc::clone(&b);
                writers.push(tokio::spawn(async move {
                    engine
                        .set_roles(user.email.as_str(), &["user".to_string()])
                        .await
                        .map(|_| ())
                }));
            }
            for w in writers {
                w.await.unwrap().unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        follower.await.unwrap();
        c.apply_changes().await.unwrap();
        let accepted = {
            let mut n = 0;
            for (_, token) in &sessions {
                if c.authenticate(token.expose()).await.is_ok() {
                    n += 1;
                }
            }
            n
        };
        assert_eq!(
            accepted, 0,
            "{accepted} of 400 revoked sessions still accepted on C"
        );
        // Every role removal reached C: sessions of those users (new ones) see only `user`.
        for round in (0..ids.len().div_ceil(16)).step_by(2) {
            let user = &users[round / 2 % users.len()];
            let (s, token) = session(user.id, c.now());
            sa.insert_session(&s).await.unwrap();
            let who = c.authenticate(token.expose()).await.unwrap();
            assert_eq!(
                who.user.roles,
                vec![Role::default_role()],
                "a role removal never reached C"
            );
        }
    })
    .await;
}

/// Fault run: a crash between storing the new password and ending the old sessions. The state
/// it leaves (the password and its generation stored, nothing else) is safe: every session proven
/// with the old password is refused by every instance once the change reaches it.
async fn crash_after_the_password_was_stored(store: Arc<dyn Store>, extra: Option<Arc<dyn Store>>) {
    let clock = Arc::new(ManualClock::starting_now());
    let a = engine(&store, &clock).await;
    let b = engine(extra.as_ref().unwrap_or(&store), &clock).await;
    let user = new_user(&*store, "crash@example.com").await;
    let mut tokens = Vec::new();
    for _ in 0..100 {
        let (s, token) = session(user.id, a.now());
        store.insert_session(&s).await.unwrap();
        a.authenticate(token.expose()).await.unwrap();
        b.authenticate(token.expose()).await.unwrap();
        tokens.push(token);
    }
    // What `Auth::change_password` writes first, and then nothing more.
    assert!(store
        .set_password(user.id, "$argon2id$new", None)
        .await
        .unwrap()
        .is_some());
    a.apply_changes().await.unwrap();
    b.apply_changes().await.unwrap();
    for token in &tokens {
        for engine in [&a, &b] {
            assert!(
                matches!(
                    engine.authenticate(token.expose()).await,
                    Err(AuthError::Unauthenticated)
                ),
                "a session from before the password change outlived it"
            );
        }
    }
    // They are ended in the store too, on first sight.
    assert!(store.list_for_user(user.id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_crash_after_the_new_password_was_stored_leaves_no_old_session_on_postgresql() {
    with_schema("crash_password_change", |url| async move {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
        let other: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
        crash_after_the_password_was_stored(store, Some(other)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_crash_after_the_new_password_was_stored_leaves_no_old_session_with_redis() {
    let Some(prefix) = cloakroom::testing::RedisPrefix::create("crash_password_change").await
    else {
        return;
    };
    let keys = cloakroom::testing::RedisPrefix {
        url: prefix.url.clone(),
        prefix: prefix.prefix.clone(),
    };
    let outcome = AssertUnwindSafe(with_schema(
        "crash_password_change_redis",
        |url| async move {
            let open = |url: String, prefix: cloakroom::testing::RedisPrefix| async move {
                let sql: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
                Arc::new(
                    cloakroom::RedisStore::open(
                        &prefix.url,
                        &prefix.prefix,
                        sql,
                        time::Duration::minutes(10),
                    )
                    .await
                    .unwrap(),
                ) as Arc<dyn Store>
            };
            let again = cloakroom::testing::RedisPrefix {
                url: prefix.url.clone(),
                prefix: prefix.prefix.clone(),
            };
            let store = open(url.clone(), prefix).await;
            let other = open(url, again).await;
            crash_after_the_password_was_stored(store, Some(other)).await;
        },
    ))
    .catch_unwind()
    .await;
    keys.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}
