//! What only the Redis backend does: revocations pushed to every process (gaps filled from the
//! log, data loss noticed), expiry kept by Redis itself, and throttle counters shared.

use crate::store_contract::session;
use cloakroom::testing::RedisPrefix;
use cloakroom::{
    Email, RedisStore, RevocationEvent, Role, SessionId, SessionStore, SqliteStore, Store,
    Throttle, ThrottlePolicy, User, UserId, UserStore,
};
use futures::FutureExt;
use std::future::Future;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};
use tokio::sync::mpsc::Receiver;

fn now() -> OffsetDateTime {
    // Real time: Redis expires keys by its own clock.
    cloakroom::Clock::now_secs(&cloakroom::SystemClock)
}

async fn open(prefix: &RedisPrefix) -> (RedisStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let sql: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let store = RedisStore::open(&prefix.url, &prefix.prefix, sql, Duration::minutes(10))
        .await
        .unwrap();
    (store, dir)
}

async fn with_prefix<F, Fut>(test: &str, body: F)
where
    F: FnOnce(RedisPrefix) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(prefix) = RedisPrefix::create(test).await else {
        return;
    };
    let again = RedisPrefix {
        url: prefix.url.clone(),
        prefix: prefix.prefix.clone(),
    };
    let outcome = AssertUnwindSafe(body(prefix)).catch_unwind().await;
    again.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

async fn raw(prefix: &RedisPrefix) -> redis::aio::MultiplexedConnection {
    redis::Client::open(prefix.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn next_event(rx: &mut Receiver<RevocationEvent>) -> RevocationEvent {
    tokio::time::timeout(StdDuration::from_secs(5), rx.recv())
        .await
        .expect("no revocation event within 5 s")
        .expect("the feed ended")
}

async fn pushed(prefix: RedisPrefix) {
    let (a, _da) = open(&prefix).await;
    let (b, _db) = open(&prefix).await;
    let user = UserId::random();
    // Revoked before anyone listened: delivered from the revoked set on the first read.
    let (early, _) = session(user, now());
    b.insert_session(&early).await.unwrap();
    b.revoke(early.id).await.unwrap();
    let mut rx = a
        .revocations()
        .await
        .unwrap()
        .expect("Redis pushes revocations");
    match next_event(&mut rx).await {
        RevocationEvent::Revoked { id, sent_ms, .. } => {
            assert_eq!(id, early.id);
            assert_eq!(sent_ms, None, "read from the set, not a message");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Published as it happens, with the time it was sent.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let (s, _) = session(user, now());
    b.insert_session(&s).await.unwrap();
    b.revoke(s.id).await.unwrap();
    match next_event(&mut rx).await {
        RevocationEvent::Revoked {
            id,
            expires_at,
            sent_ms,
        } => {
            assert_eq!(id, s.id);
            assert_eq!(expires_at, s.absolute_expires_at);
            assert!(sent_ms.is_some());
        }
        other => panic!("unexpected {other:?}"),
    }
    // A message that never arrived: logged but not published. The follower's periodic check
    // reads the log and delivers it anyway.
    let mut conn = raw(&prefix).await;
    let missed = SessionId::random();
    let exp = (now() + Duration::hours(1)).unix_timestamp();
    let seq: i64 = redis::cmd("INCR")
        .arg(format!("{}:{{rev}}:seq", prefix.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .zadd(
            format!("{}:{{rev}}:log", prefix.prefix),
            format!("{seq} {missed} {exp}"),
            seq,
        )
        .ignore()
        .zadd(
            format!("{}:{{rev}}:set", prefix.prefix),
            missed.to_string(),
            exp,
        )
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    match next_event(&mut rx).await {
        RevocationEvent::Revoked { id, .. } => assert_eq!(id, missed),
        other => panic!("unexpected {other:?}"),
    }
    // revoke_all is pushed too, one event per session.
    let (x, _) = session(user, now());
    let (y, _) = session(user, now());
    b.insert_session(&x).await.unwrap();
    b.insert_session(&y).await.unwrap();
    let mut ended = b.revoke_all(user, None).await.unwrap();
    ended.sort();
    let mut got = Vec::new();
    for _ in 0..2 {
        match next_event(&mut rx).await {
            RevocationEvent::Revoked { id, .. } => got.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, ended);
    // Redis losing its data (a restart without persistence) is noticed and said.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", prefix.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx).await, RevocationEvent::Reset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_pushed_gaps_are_filled_and_data_loss_is_noticed() {
    with_prefix("revocations_are_pushed", pushed).await;
}

async fn expiry(prefix: RedisPrefix) {
    let (store, _d) = open(&prefix).await;
    let at = now();
    let (s, token) = session(UserId::random(), at);
    store.insert_session(&s).await.unwrap();
    let mut conn = raw(&prefix).await;
    let key = format!("{}:{{u:{}}}:s:{}", prefix.prefix, s.user_id, s.id);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Idle timeout (30 min) plus the grace (10 min).
    assert!((39 * 60_000..=40 * 60_000).contains(&pttl), "{pttl}");
    store
        .touch(&[(s.id, at + Duration::minutes(20))])
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (39 * 60_000..=40 * 60_000).contains(&pttl),
        "extended by activity: {pttl}"
    );
    // The secret's pointer lives as long as the session can.
    let pointer = format!(
        "{}:tok:{}",
        prefix.prefix,
        token
            .hash()
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&pointer)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 12 * 3_600_000 && pttl <= 12 * 3_600_000 + 600_000,
        "{pttl}"
    );
    // Gone from Redis means gone: nothing brings it back.
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(store.find_by_token(&token.hash()).await.unwrap().is_none());
    store
        .touch(&[(s.id, at + Duration::minutes(25))])
        .await
        .unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(
        store
            .delete_expired(at + Duration::hours(13), Duration::minutes(10))
            .await
            .unwrap(),
        0,
        "already gone"
    );
    assert!(store.list_for_user(s.user_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn sessions_expire_in_redis_by_themselves() {
    with_prefix("sessions_expire_in_redis_by_themselves", expiry).await;
}

async fn throttle(prefix: RedisPrefix) {
    let (a, _da) = open(&prefix).await;
    let (b, _db) = open(&prefix).await;
    let (ta, tb) = (a.throttle(), b.throttle());
    let p = ThrottlePolicy::ACCOUNT;
    let t0 = now();
    for _ in 0..3 {
        for t in [&ta, &tb] {
            assert_eq!(
                t.reserve("acct:eve@example.com", &p, t0).await.unwrap(),
                None
            );
        }
    }
    assert_eq!(
        ta.retry_after("acct:eve@example.com", &p, t0)
            .await
            .unwrap(),
        Some(Duration::seconds(1)),
        "six failures across two instances count as six"
    );
    assert_eq!(
        tb.retry_after("acct:eve@example.com", &p, t0 + Duration::seconds(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tb.retry_after("acct:eve@example.com", &p, t0 + Duration::hours(2))
            .await
            .unwrap(),
        None,
        "old failures are forgotten"
    );
    tb.clear("acct:eve@example.com").await.unwrap();
    assert_eq!(
        ta.retry_after("acct:eve@example.com", &p, t0)
            .await
            .unwrap(),
        None
    );
    let w = Duration::minutes(10);
    assert_eq!(ta.hit("ip:192.0.2.9", 2, w, t0).await.unwrap(), None);
    assert_eq!(tb.hit("ip:192.0.2.9", 2, w, t0).await.unwrap(), None);
    assert_eq!(ta.hit("ip:192.0.2.9", 2, w, t0).await.unwrap(), Some(w));
    assert_eq!(tb.hit("ip:192.0.2.9", 2, w, t0 + w).await.unwrap(), None);
    // Redis holds hashes of the keys, never the emails or addresses.
    let mut conn = raw(&prefix).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", prefix.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| !k.contains('@') && !k.contains("192.0.2.9")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn throttle_counters_are_shared_between_instances() {
    with_prefix("throttle_counters_are_shared", throttle).await;
}

async fn users_stay_in_sql(prefix: RedisPrefix) {
    let (store, _d) = open(&prefix).await;
    let u = User {
        id: UserId::random(),
        email: Email::parse("sql@example.com").unwrap(),
        roles: vec![Role::default_role()],
        disabled: false,
        created_at: now(),
        email_verified: false,
        credentials_gen: 0,
    };
    store.insert_user(&u, "h").await.unwrap();
    let mut conn = raw(&prefix).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", prefix.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys, vec![format!("{}:{{rev}}:epoch", prefix.prefix)]);
    assert!(store.find_user(u.id).await.unwrap().is_some());
}

#[tokio::test]
async fn users_and_keys_stay_in_the_database() {
    with_prefix("users_and_keys_stay_in_the_database", users_stay_in_sql).await;
}

#[tokio::test]
async fn a_bad_prefix_or_url_is_refused_clearly() {
    let sql: Arc<dyn Store> = Arc::new(SqliteStore::open("sqlite::memory:").await.unwrap());
    let err = RedisStore::open(
        "redis://127.0.0.1:6379",
        "a{b}",
        Arc::clone(&sql),
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("storage error"), "{err}");
    // Nothing listens on port 1: a bounded failure, not a hang.
    let start = std::time::Instant::now();
    let err = RedisStore::open("redis://127.0.0.1:1", "p", sql, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, cloakroom::StoreError::Unavailable(_)),
        "{err:?}"
    );
    assert!(start.elapsed() < StdDuration::from_secs(10));
}
