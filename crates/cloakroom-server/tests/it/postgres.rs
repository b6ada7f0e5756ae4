//! The server on PostgreSQL (and PostgreSQL with Redis): the same journey as on SQLite, in a
//! schema of its own; many instances acting as one; outages.

use crate::support::*;
use cloakroom::testing::RedisPrefix;
use futures::FutureExt;
use reqwest::Method;
use serde_json::Value;
use std::panic::{resume_unwind, AssertUnwindSafe};

/// Settings for the database at `url`, with Redis in front when given.
pub(crate) fn backends<'a>(
    url: &'a str,
    redis: Option<&'a RedisPrefix>,
) -> impl Fn(&mut cloakroom_server::settings::RawSettings) + Copy + 'a {
    move |r| {
        r.database_url = Some(url.to_string());
        if let Some(redis) = redis {
            r.redis_url = Some(redis.url.clone());
            r.redis_prefix = Some(redis.prefix.clone());
        }
    }
}

pub(crate) async fn journey(schema_url: String, redis: Option<&RedisPrefix>) {
    let t = TestServer::start_with(backends(&schema_url, redis)).await;
    let cookie = t.user("pg@example.com").await;
    let who: Value = t.get("/auth/whoami", &cookie).await.json().await.unwrap();
    assert_eq!(who["user"]["email"], "pg@example.com");
    assert_eq!(t.signup("PG@example.com", PASSWORD).await.status(), 409);
    let pair = t.token_login("pg@example.com", PASSWORD).await;
    let rt = pair["refresh_token"].as_str().unwrap().to_string();
    let next: Value = t.refresh(&rt).await.json().await.unwrap();
    let at = next["access_token"].as_str().unwrap().to_string();
    assert_eq!(t.bearer_status(&at).await, 200);
    let list: Value = t
        .bearer(Method::GET, "/auth/sessions", &at)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(t.post("/auth/logout", &cookie, None).await.status(), 204);
    assert_eq!(t.whoami_status(&cookie).await, 401);
    let t = t.restart().await;
    assert_eq!(
        t.bearer_status(&at).await,
        200,
        "sessions survive a restart"
    );
    assert_eq!(t.whoami_status(&cookie).await, 401, "and so do revocations");
    let res = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_journey_on_postgresql() {
    let Some(schema) = PgSchema::create("the_journey_on_postgresql").await else {
        return;
    };
    let outcome = AssertUnwindSafe(journey(schema.url.clone(), None))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

/// Two instances on one PostgreSQL schema (and Redis prefix), as behind a load balancer.
pub(crate) async fn pair(url: &str, redis: Option<&RedisPrefix>) -> (TestServer, TestServer) {
    let stores = backends(url, redis);
    let raw = |r: &mut cloakroom_server::settings::RawSettings| {
        stores(r);
        r.public_url = Some("http://localhost:7443".into());
    };
    let a = TestServer::start_with(raw).await;
    let b = TestServer::start_with(raw).await;
    (a, b)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub(crate) async fn two_instances(url: String, redis: Option<&RedisPrefix>) {
    let (a, b) = pair(&url, redis).await;
    b.signup("two@example.com", PASSWORD).await;
    // A session made on A works on B, cookie and bearer.
    let cookie = a.login("two@example.com", PASSWORD).await;
    assert_eq!(b.whoami_status(&cookie).await, 200);
    let pair_a = a.token_login("two@example.com", PASSWORD).await;
    let at = pair_a["access_token"].as_str().unwrap();
    assert_eq!(b.bearer_status(at).await, 200);

    // Concurrent refreshes of one token on both instances mint one successor.
    let rt = pair_a["refresh_token"].as_str().unwrap().to_string();
    let (ra, rb) = tokio::join!(a.refresh(&rt), b.refresh(&rt));
    let (va, vb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
    assert_eq!(va["refresh_token"], vb["refresh_token"]);

    // A logout on B is refused on A at once: measure it, cookie and bearer alternately.
    let mut times = Vec::new();
    for i in 0..100 {
        let bearer = i % 2 == 1;
        let (token, logout) = if bearer {
            let t = a.token_login("two@example.com", PASSWORD).await["access_token"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(a.bearer_status(&t).await, 200);
            let logout = b.bearer(Method::POST, "/auth/logout", &t).await;
            (t, logout)
        } else {
            let t = a.login("two@example.com", PASSWORD).await;
            assert_eq!(a.whoami_status(&t).await, 200);
            let logout = b.post("/auth/logout", &t, None).await;
            (t, logout)
        };
        assert_eq!(logout.status(), 204);
        let start = std::time::Instant::now();
        loop {
            let status = if bearer {
                a.bearer_status(&token).await
            } else {
                a.whoami_status(&token).await
            };
            if status == 401 {
                break;
            }
            assert!(
                start.elapsed().as_secs() < 2,
                "A still accepts a session ended on B"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let median = percentile(&mut times, 0.5);
    let worst = percentile(&mut times, 1.0);
    let over = if redis.is_some() {
        "Redis pub/sub"
    } else {
        "PostgreSQL NOTIFY"
    };
    println!("revocation propagation B -> A over {over}: median {median:.2} ms, worst {worst:.2} ms (100 tries)");
    assert!(median < 100.0, "median {median:.1} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgresql_act_as_one() {
    let Some(schema) = PgSchema::create("two_instances_on_one_postgresql_act_as_one").await else {
        return;
    };
    let outcome = AssertUnwindSafe(two_instances(schema.url.clone(), None))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

/// A TCP proxy that the test can cut and restore, to play an outage.
pub(crate) struct Cuttable {
    pub(crate) addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, connections are accepted and then left without an answer (a hung server).
    hung: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    pub(crate) async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hung = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, hung2, links2, target) =
            (up.clone(), hung.clone(), links.clone(), target.to_string());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection refused, in effect
                }
                if hung2.load(std::sync::atomic::Ordering::SeqCst) {
                    let held = tokio::spawn(async move {
                        let _open = inbound;
                        std::future::pending::<()>().await;
                    });
                    links2.lock().unwrap().push(held.abort_handle());
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            up,
            hung,
            links,
        }
    }

    /// Plays a hung server: open connections go silent, new ones get no answer.
    pub(crate) fn hang(&self) {
        self.hung.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub(crate) fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
        self.hung.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn outage(schema_url: String) {
    let proxy = Cuttable::start("127.0.0.1:5432").await;
    let url = schema_url.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let t = TestServer::start_with(|r| r.database_url = Some(url.clone())).await;
    t.signup("down@example.com", PASSWORD).await;
    let token = t.login("down@example.com", PASSWORD).await;
    proxy.cut();
    let start = std::time::Instant::now();
    let res = t
        .login_raw(serde_json::json!({"email": "down@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 503, "fail closed, never let anyone in");
    assert!(res.headers().contains_key("retry-after"));
    let res = t.signup("new@example.com", PASSWORD).await;
    assert_eq!(res.status(), 503);
    // The token endpoint and the pages say when to come back, as the API does.
    let res = t.refresh(&format!("{}A", "Q".repeat(42))).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let res = t.get("/dashboard", &format!("{}A", "R".repeat(42))).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let res = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let res = t.post("/auth/logout", &token, None).await;
    assert_eq!(
        res.status(),
        503,
        "a logout that cannot be stored is not acknowledged"
    );
    assert!(
        start.elapsed().as_secs() < 30,
        "bounded: {:?}",
        start.elapsed()
    );
    // A forged token is never let in, whatever the store does.
    let forged = format!("{}A", "Z".repeat(42));
    assert_eq!(
        t.whoami_status(&forged).await,
        503,
        "unknown to memory, the store is needed"
    );
    proxy.restore();
    let start = std::time::Instant::now();
    loop {
        if t.http.get(t.url("/readyz")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(start.elapsed().as_secs() < 20, "no recovery");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(t.post("/auth/logout", &token, None).await.status(), 204);
    assert_eq!(t.whoami_status(&token).await, 401);
    t.login("down@example.com", PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_fails_closed_and_recovers() {
    let Some(schema) = PgSchema::create("a_postgresql_outage_fails_closed_and_recovers").await
    else {
        return;
    };
    let outcome = AssertUnwindSafe(outage(schema.url.clone()))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

async fn forged_flood(schema_url: String) {
    let proxy = Cuttable::start("127.0.0.1:5432").await;
    let url = schema_url.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let t = TestServer::start_with(|r| {
        r.database_url = Some(url.clone());
        r.unchecked_token_lookups = Some(5);
    })
    .await;
    t.signup("forged@example.com", PASSWORD).await;
    let token = t.login("forged@example.com", PASSWORD).await;
    assert_eq!(t.whoami_status(&token).await, 200);
    // With the store unreachable, a request that reaches it answers 503: each 503 below is one
    // store lookup a forged token caused.
    proxy.cut();
    let mut looked_up = 0;
    for i in 0..300 {
        let forged = format!(
            "{:0>42}A",
            format!("{i}").replace(|c: char| !c.is_ascii_digit(), "")
        );
        match t.whoami_status(&forged).await {
            401 => {}
            503 => looked_up += 1,
            other => panic!("a forged token got {other}"),
        }
    }
    println!("300 forged tokens with the store down: {looked_up} reached it");
    assert!(
        looked_up <= 15,
        "{looked_up} forged tokens reached the store"
    );
    // A token cloakroom minted is still served from memory.
    assert_eq!(t.whoami_status(&token).await, 200);
    proxy.restore();
}

/// 13: a flood of well-formed forged session tokens costs (almost) no store lookups: tokens
/// carry a keyed check value, and those without one get a small budget of lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_fail_before_any_store_query() {
    let Some(schema) = PgSchema::create("forged_tokens").await else {
        return;
    };
    let outcome = AssertUnwindSafe(forged_flood(schema.url.clone()))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}
