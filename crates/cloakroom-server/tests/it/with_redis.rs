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
async fn with_backends<F, Fut>(test: &str, body: F)
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
            println!("SKIP {test}: cannot run redis-server ({e})");
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
