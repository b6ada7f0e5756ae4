//! The server with Redis for sessions, revocations and throttle counters: the journey, two
//! instances on PostgreSQL + Redis acting as one, and a Redis restart that fails closed and
//! recovers by itself.

use crate::postgres::{journey, pair, two_instances};
use crate::support::*;
use cloakroom::testing::RedisPrefix;
use futures::FutureExt;
use serde_json::json;
use std::future::Future;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `body` with a PostgreSQL schema and a Redis prefix of its own, and cleans both up.
pub(crate) async fn with_backends<F, Fut>(test: &str, body: F)
where
    F: FnOnce(String, RedisPrefix) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(redis) = RedisPrefix::create(test).await else {
        return;
    };
    let Some(schema) = PgSchema::create(test).await else {
        return;
    };
    let keys = RedisPrefix {
        url: redis.url.clone(),
        prefix: redis.prefix.clone(),
    };
    let outcome = AssertUnwindSafe(body(schema.url.clone(), redis))
        .catch_unwind()
        .await;
    schema.drop().await;
    keys.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

#[tokio::test]
async fn the_journey_on_postgresql_and_redis() {
    with_backends(
        "the_journey_on_postgresql_and_redis",
        |url, redis| async move {
            journey(url, Some(&redis)).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_and_redis_act_as_one() {
    with_backends(
        "two_instances_on_postgresql_and_redis_act_as_one",
        |url, redis| async move {
            two_instances(url, Some(&redis)).await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_counts_failures_on_every_instance() {
    with_backends(
        "login_throttling_counts_failures",
        |url, redis| async move {
            let (a, b) = pair(&url, Some(&redis)).await;
            a.signup("slow@example.com", PASSWORD).await;
            let wrong = json!({"email": "slow@example.com", "password": "not the password at all"});
            // Five free failures, spread over both instances.
            for t in [&a, &b, &a, &b, &a] {
                assert_eq!(t.login_raw(wrong.clone()).await.status(), 401);
            }
            assert_eq!(b.login_raw(wrong.clone()).await.status(), 401);
            let right = json!({"email": "slow@example.com", "password": PASSWORD});
            assert_eq!(
                a.login_raw(right.clone()).await.status(),
                429,
                "A counts the failures made on B"
            );
            assert_eq!(b.login_raw(right).await.status(), 429);
        },
    )
    .await;
}

/// A redis-server of the test's own, to stop and start again (without persistence: a restart
/// loses every key, as with the machine's Redis).
struct OwnRedis {
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    /// `None` (after a SKIP line) when redis-server is not installed and not required.
    async fn start(test: &str) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut me = Self {
            port,
            child: None,
            _dir: tempfile::tempdir().unwrap(),
        };
        if let Err(e) = me.spawn().await {
            assert!(!services_required(), "redis-server is required here: {e}");
            cloakroom::testing::skip(&format!("{test}: cannot run redis-server ({e})"));
            return None;
        }
        Some(me)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                    {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("redis-server did not answer within 10 s".into())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_closed_then_recovers() {
    let test = "a_redis_restart_fails_closed_then_recovers";
    let Some(mut redis) = OwnRedis::start(test).await else {
        return;
    };
    let url = redis.url();
    let t = TestServer::start_with(|r| r.redis_url = Some(url.clone())).await;
    t.signup("restart@example.com", PASSWORD).await;
    let cookie = t.login("restart@example.com", PASSWORD).await;
    let pair = t.token_login("restart@example.com", PASSWORD).await;
    let bearer = pair["access_token"].as_str().unwrap().to_string();
    assert_eq!(t.whoami_status(&cookie).await, 200);
    assert_eq!(t.bearer_status(&bearer).await, 200);

    redis.stop();
    // Revocations could now be missed: sessions held in memory are refused, not trusted.
    wait_for(
        "cookie refused with 503",
        Duration::from_secs(5),
        async || t.whoami_status(&cookie).await == 503,
    )
    .await;
    let started = Instant::now();
    assert_eq!(t.bearer_status(&bearer).await, 503);
    let res = t
        .login_raw(json!({"email": "restart@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 503, "no login without the session store");
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(t.post("/auth/logout", &cookie, None).await.status(), 503);
    let ready = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );

    redis.spawn().await.unwrap();
    wait_for("ready again", Duration::from_secs(20), async || {
        t.http.get(t.url("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    // The restarted Redis kept nothing: every session is gone, so nobody is let in on an old
    // cookie or access token, and a fresh login works.
    wait_for("old cookie refused", Duration::from_secs(5), async || {
        t.whoami_status(&cookie).await == 401
    })
    .await;
    assert_eq!(t.bearer_status(&bearer).await, 401);
    let fresh = t.login("restart@example.com", PASSWORD).await;
    assert_eq!(t.whoami_status(&fresh).await, 200);
}

/// A connection to the test's Redis, and every key under its prefix.
async fn prefix_keys(redis: &RedisPrefix) -> (redis::aio::MultiplexedConnection, Vec<String>) {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", redis.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    (conn, keys)
}

/// Every key under the prefix with what `DUMP` gives and its time to live: a snapshot.
async fn snapshot(redis: &RedisPrefix) -> Vec<(String, Vec<u8>, i64)> {
    let (mut conn, keys) = prefix_keys(redis).await;
    let mut out = Vec::new();
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(dump) = dump {
            out.push((key, dump, ttl.max(0)));
        }
    }
    out
}

/// Puts the prefix back exactly as `snapshot` found it.
async fn restore(redis: &RedisPrefix, snap: &[(String, Vec<u8>, i64)]) {
    let (mut conn, keys) = prefix_keys(redis).await;
    for key in keys {
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for (key, dump, ttl) in snap {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(*ttl)
            .arg(dump.as_slice())
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

async fn rewound(url: String, redis: RedisPrefix) {
    // A fresh instance after the restore: the database remembers how far the log had got.
    let (a, _b) = pair(&url, Some(&redis)).await;
    a.signup("snap@example.com", PASSWORD).await;
    let mut ended = Vec::new();
    for _ in 0..6 {
        ended.push(a.login("snap@example.com", PASSWORD).await);
    }
    let snap = snapshot(&redis).await;
    for token in &ended {
        assert_eq!(a.post("/auth/logout", token, None).await.status(), 204);
    }
    // Recorded within a second by each instance.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(_b);
    let a = {
        let mut a = a;
        if let Some(s) = a.server.take() {
            s.shutdown().await;
        }
        a
    };
    restore(&redis, &snap).await;
    let c = TestServer::start_with(crate::postgres::backends(&url, Some(&redis))).await;
    for token in &ended {
        assert_eq!(
            c.whoami_status(token).await,
            401,
            "a fresh instance accepted a session ended after the snapshot"
        );
    }
    drop(a);

    // Running instances: revocations made after the restore still reach everyone.
    let (a, b) = pair(&url, Some(&redis)).await;
    let mut live = Vec::new();
    for _ in 0..6 {
        let token = a.login("snap@example.com", PASSWORD).await;
        assert_eq!(b.whoami_status(&token).await, 200);
        live.push(token);
    }
    let snap = snapshot(&redis).await;
    for _ in 0..4 {
        let token = a.login("snap@example.com", PASSWORD).await;
        assert_eq!(a.post("/auth/logout", &token, None).await.status(), 204);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    restore(&redis, &snap).await;
    for token in &live {
        let _ = a.post("/auth/logout", token, None).await;
    }
    let start = Instant::now();
    for token in &live {
        while b.whoami_status(token).await != 401 {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "B accepts a session logged out after Redis went back to an older copy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Service goes on: new logins work on both.
    let token = a.login("snap@example.com", PASSWORD).await;
    let start = Instant::now();
    while b.whoami_status(&token).await != 200 {
        assert!(start.elapsed() < Duration::from_secs(3), "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fault run: Redis restored from an older snapshot is noticed, by running instances and by
/// one started afterwards, and fails safe as an empty Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restored_from_an_older_snapshot_fails_safe() {
    with_backends("redis_rewound", rewound).await;
}
