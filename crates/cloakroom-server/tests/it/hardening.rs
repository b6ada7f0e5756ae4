//! What an outside attack run broke, held by tests that race it: three instances on one
//! PostgreSQL, without and with Redis. Catalogue: S3 (privilege change), S4 (concurrency),
//! J18 (reuse after revocation), C3 (re-login), L3/L4 (throttling).

use crate::postgres::backends;
use crate::support::*;
use cloakroom::testing::RedisPrefix;
use futures::FutureExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::future::Future;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OTHER: &str = "another horse battery staple";

/// Runs `body` against a fresh schema, once without Redis and once with it.
async fn on_postgres<F, Fut>(test: &str, body: F)
where
    F: Fn(String, Option<Arc<RedisPrefix>>) -> Fut,
    Fut: Future<Output = ()>,
{
    for with_redis in [false, true] {
        let Some(schema) = PgSchema::create(test).await else {
            return;
        };
        let redis = if with_redis {
            match RedisPrefix::create(test).await {
                Some(p) => Some(Arc::new(p)),
                None => {
                    schema.drop().await;
                    return;
                }
            }
        } else {
            None
        };
        let outcome = AssertUnwindSafe(body(schema.url.clone(), redis.clone()))
            .catch_unwind()
            .await;
        schema.drop().await;
        if let Some(redis) = redis {
            if let Ok(p) = Arc::try_unwrap(redis) {
                p.drop().await;
            }
        }
        if let Err(panic) = outcome {
            eprintln!("failed with Redis: {with_redis}");
            resume_unwind(panic)
        }
    }
}

async fn three(url: &str, redis: Option<&RedisPrefix>) -> [TestServer; 3] {
    three_with(url, redis, |_| {}).await
}

async fn three_with(
    url: &str,
    redis: Option<&RedisPrefix>,
    tweak: impl Fn(&mut cloakroom_server::settings::RawSettings) + Copy,
) -> [TestServer; 3] {
    let stores = backends(url, redis);
    let raw = |r: &mut cloakroom_server::settings::RawSettings| {
        stores(r);
        r.public_url = Some("http://localhost:7443".into());
        tweak(r);
    };
    [
        TestServer::start_with(raw).await,
        TestServer::start_with(raw).await,
        TestServer::start_with(raw).await,
    ]
}

/// Waits until `check` holds, for at most 3 s (revocations travel between instances).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(3), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a client holds for one session, and how it asks with it.
#[derive(Clone, Debug)]
enum Held {
    Cookie(String),
    Bearer { access: String, refresh: String },
}

impl Held {
    async fn status(&self, t: &TestServer) -> u16 {
        match self {
            Held::Cookie(c) => t.whoami_status(c).await,
            Held::Bearer { access, .. } => t.bearer_status(access).await,
        }
    }
}

async fn login_as(t: &TestServer, email: &str, password: &str, kind: &str) -> Held {
    match kind {
        "token" => {
            let pair = t.token_login(email, password).await;
            Held::Bearer {
                access: pair["access_token"].as_str().unwrap().into(),
                refresh: pair["refresh_token"].as_str().unwrap().into(),
            }
        }
        cookie => {
            let res = t
                .login_raw(json!({"email": email, "password": password, "cookie": cookie}))
                .await;
            assert_eq!(res.status(), 200);
            Held::Cookie(session_token(res.headers()).unwrap())
        }
    }
}

/// Changes the password with the credential held; returns what the client holds afterwards.
async fn change_password(t: &TestServer, held: &Held, from: &str, to: &str) -> Held {
    let body = json!({"current_password": from, "new_password": to});
    match held {
        Held::Cookie(c) => {
            let res = t.post("/auth/password", c, Some(body)).await;
            assert_eq!(res.status(), 204);
            Held::Cookie(session_token(res.headers()).expect("a new cookie"))
        }
        Held::Bearer { access, .. } => {
            let res = t
                .http
                .post(t.url("/auth/password"))
                .header("authorization", format!("Bearer {access}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "a token session gets a new pair");
            let pair: Value = res.json().await.unwrap();
            Held::Bearer {
                access: pair["access_token"].as_str().unwrap().into(),
                refresh: pair["refresh_token"].as_str().unwrap().into(),
            }
        }
    }
}

async fn evicts(url: String, redis: Option<Arc<RedisPrefix>>) {
    let [a, b, c] = three(&url, redis.as_deref()).await;
    let mut password = PASSWORD;
    for (i, kind) in ["session", "jwt", "token"]
        .iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let email = format!("evict{i}@example.com");
        assert_eq!(a.signup(&email, password).await.status(), 201);
        let stolen = login_as(&a, &email, password, kind).await;
        // The thief uses the copy on B and C, so both hold the session in memory.
        assert_eq!(stolen.status(&b).await, 200);
        assert_eq!(stolen.status(&c).await, 200);
        let next = if password == PASSWORD {
            OTHER
        } else {
            PASSWORD
        };
        let renewed = change_password(&a, &stolen, password, next).await;
        for t in [&a, &b, &c] {
            eventually(
                &format!("{kind}: the copy still works after a password change"),
                || async { stolen.status(t).await == 401 },
            )
            .await;
            assert_eq!(
                renewed.status(t).await,
                200,
                "{kind}: the owner is still in"
            );
        }
        if let Held::Bearer { refresh, .. } = &stolen {
            let res = c.refresh(refresh).await;
            assert_eq!(
                res.status(),
                400,
                "{kind}: the old refresh token still rotates"
            );
        }
        password = next;
    }
}

/// S3: a password change ends every copy of the session that made it, whatever carries it
/// (cookie, JWT cookie, bearer with refresh token), on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_password_change_evicts_every_copy_of_the_session_everywhere() {
    on_postgres("password_change_evicts", evicts).await;
}

async fn in_flight(url: String, redis: Option<Arc<RedisPrefix>>) {
    // Logins with the old password fail once it changed: throttling is not what is tested.
    let [a, b, c] = three_with(&url, redis.as_deref(), |r| {
        r.login_account_free_failures = Some(100_000);
        r.login_ip_free_failures = Some(100_000);
        // Hundreds of logins: the oldest, the owner's, must not be ended by the cap.
        r.max_sessions_per_user = Some(100_000);
    })
    .await;
    let (a, b, c) = (Arc::new(a), Arc::new(b), Arc::new(c));
    let email = "inflight@example.com";
    assert_eq!(a.signup(email, PASSWORD).await.status(), 201);
    let mut owner = login_as(&a, email, PASSWORD, "session").await;
    let mut old = PASSWORD;
    let mut made_with_old = Vec::new();
    for round in 0..6 {
        let new = if old == PASSWORD { OTHER } else { PASSWORD };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut loops = Vec::new();
        for i in 0..8 {
            let t = if i % 2 == 0 {
                Arc::clone(&b)
            } else {
                Arc::clone(&c)
            };
            let stop = Arc::clone(&stop);
            loops.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let res = t
                        .login_raw(json!({"email": email, "password": old, "remember": true}))
                        .await;
                    if res.status() == 200 {
                        got.push(session_token(res.headers()).unwrap());
                    }
                }
                got
            }));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        owner = change_password(&a, &owner, old, new).await;
        // Logins still in flight with the old password finish after the change returned.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut made = 0;
        for l in loops {
            let got = l.await.unwrap();
            made += got.len();
            made_with_old.extend(got);
        }
        assert!(made > 0, "round {round}: no login raced the change");
        old = new;
    }
    for t in [&a, &b, &c] {
        let t = Arc::clone(t);
        let tokens = made_with_old.clone();
        eventually("a session made with the old password survived", || {
            let (t, tokens) = (Arc::clone(&t), tokens.clone());
            async move {
                for token in &tokens {
                    if t.whoami_status(token).await != 401 {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        assert_eq!(owner.status(&t).await, 200);
    }
    let list: Value = a
        .get(
            "/auth/sessions",
            match &owner {
                Held::Cookie(c) => c,
                Held::Bearer { .. } => unreachable!(),
            },
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    println!(
        "{} sessions made with an old password during 6 changes, none valid afterwards",
        made_with_old.len()
    );
}

/// S3, S4: logins that checked the old password while it changed leave no session behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_logins_in_flight_with_the_old_password_do_not_survive_a_change() {
    on_postgres("logins_in_flight", in_flight).await;
}

/// J18: an access token of a token session, sent as the session cookie, is refused and never
/// renewed into a fresh one: without the refresh token it dies with its 10 minutes.
#[tokio::test]
async fn j18_an_access_token_sent_as_the_cookie_is_neither_accepted_nor_renewed() {
    let t = TestServer::start().await;
    t.signup("leak@example.com", PASSWORD).await;
    let pair = t.token_login("leak@example.com", PASSWORD).await;
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(t.bearer_status(access).await, 200);
    t.clock.advance(time::Duration::minutes(6));
    let res = t.get("/auth/whoami", access).await;
    assert_eq!(res.status(), 401);
    assert!(
        session_token(res.headers()).is_none(),
        "a renewed token was handed out"
    );
    // A JWT cookie of a cookie session is still renewed past half its life.
    let res = t
        .login_raw(json!({"email": "leak@example.com", "password": PASSWORD, "cookie": "jwt"}))
        .await;
    let jwt = session_token(res.headers()).unwrap();
    t.clock.advance(time::Duration::minutes(6));
    let res = t.get("/auth/whoami", &jwt).await;
    assert_eq!(res.status(), 200);
    assert!(session_token(res.headers()).is_some());
}

/// C3: logging in again while holding a JWT cookie ends the session it names.
#[tokio::test]
async fn c3_re_login_with_a_jwt_cookie_ends_the_old_session() {
    let t = TestServer::start().await;
    t.signup("relogin@example.com", PASSWORD).await;
    let res = t
        .login_raw(json!({"email": "relogin@example.com", "password": PASSWORD, "cookie": "jwt"}))
        .await;
    let first = session_token(res.headers()).unwrap();
    assert_eq!(t.whoami_status(&first).await, 200);
    let res = t
        .with_cookie(t.req(Method::POST, "/auth/login"), &first)
        .json(&json!({"email": "relogin@example.com", "password": PASSWORD, "cookie": "jwt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let second = session_token(res.headers()).unwrap();
    assert_eq!(t.whoami_status(&first).await, 401);
    assert_eq!(t.whoami_status(&second).await, 200);
    let list: Value = t.get("/auth/sessions", &second).await.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

async fn burst(url: String, redis: Option<Arc<RedisPrefix>>) {
    let [a, b, c] = three(&url, redis.as_deref()).await;
    // One instant on every instance: the policy's delays are what is counted, not clock skew.
    let now = cloakroom::Clock::now(&*a.clock);
    b.clock.set(now);
    c.clock.set(now);
    let servers = [Arc::new(a), Arc::new(b), Arc::new(c)];
    // Without Redis, each instance keeps its own counters: the burst goes to one of them.
    let shared = redis.is_some();
    servers[0].signup("burst@example.com", PASSWORD).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let t = Arc::clone(&servers[if shared { i % 3 } else { 0 }]);
        tasks.push(tokio::spawn(async move {
            t.login_raw(
                json!({"email": "burst@example.com", "password": format!("wrong guess {i}")}),
            )
            .await
            .status()
            .as_u16()
        }));
    }
    let mut guessed = 0;
    for task in tasks {
        match task.await.unwrap() {
            401 => guessed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        guessed, 6,
        "{guessed} guesses were checked; the policy allows 6"
    );

    // The same for the current password of a signed-in user.
    servers[0].signup("burst2@example.com", PASSWORD).await;
    let cookie = servers[0].login("burst2@example.com", PASSWORD).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let t = Arc::clone(&servers[if shared { i % 3 } else { 0 }]);
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"current_password": format!("wrong {i}"), "new_password": OTHER});
            t.post("/auth/password", &cookie, Some(body))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut checked = 0;
    for task in tasks {
        match task.await.unwrap() {
            401 | 403 => checked += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        checked, 6,
        "{checked} current-password guesses were checked"
    );
}

/// L4: a parallel burst of wrong passwords gets exactly the attempts the policy allows, on one
/// instance and across instances sharing Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_a_parallel_burst_gets_only_the_attempts_the_policy_allows() {
    on_postgres("throttle_burst", burst).await;
}

/// S4, fault run: with PostgreSQL hung on B and Redis up, a logout on A is refused on B at once:
/// applying Redis's revocation events never waits on a database call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_revocations_from_redis_do_not_wait_on_a_hung_postgresql() {
    let Some(schema) = PgSchema::create("hung_postgres").await else {
        return;
    };
    let Some(redis) = RedisPrefix::create("hung_postgres").await else {
        schema.drop().await;
        return;
    };
    let outcome = AssertUnwindSafe(async {
        let proxy = crate::postgres::Cuttable::start("127.0.0.1:5432").await;
        let via_proxy = schema
            .url
            .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
        let a = TestServer::start_with(|r| {
            backends(&schema.url, Some(&redis))(r);
            r.public_url = Some("http://localhost:7443".into());
        })
        .await;
        let b = TestServer::start_with(|r| {
            backends(&via_proxy, Some(&redis))(r);
            r.public_url = Some("http://localhost:7443".into());
        })
        .await;
        a.signup("hung@example.com", PASSWORD).await;
        let mut tokens = Vec::new();
        for _ in 0..20 {
            let token = a.login("hung@example.com", PASSWORD).await;
            assert_eq!(b.whoami_status(&token).await, 200);
            tokens.push(token);
        }
        proxy.hang();
        // B's next poll of the change log is now stuck on the database (up to 5 s a call: the
        // old single loop delayed revocations by that much; the bound below is under it).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut worst = Duration::ZERO;
        for token in &tokens {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(a.post("/auth/logout", token, None).await.status(), 204);
            let start = Instant::now();
            while b.whoami_status(token).await != 401 {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "B accepted a session logged out on A while its database hung"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            worst = worst.max(start.elapsed());
        }
        println!("with PostgreSQL hung, logouts reached B within {worst:?} (20 tries)");
        proxy.restore();
    })
    .catch_unwind()
    .await;
    schema.drop().await;
    redis.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

async fn lineage(url: String, redis: Option<Arc<RedisPrefix>>) {
    let [a, b, c] = three(&url, redis.as_deref()).await;
    a.signup("lineage@example.com", PASSWORD).await;
    for round in 0..30 {
        let pair = a.token_login("lineage@example.com", PASSWORD).await;
        let stolen = pair["refresh_token"].as_str().unwrap().to_string();
        // The thief rotates the stolen token twice (or more), on other instances.
        let mut thief = stolen.clone();
        let mut thief_access = String::new();
        for _ in 0..2 + round % 3 {
            let res = b.refresh(&thief).await;
            assert_eq!(res.status(), 200);
            let v: Value = res.json().await.unwrap();
            thief = v["refresh_token"].as_str().unwrap().to_string();
            thief_access = v["access_token"].as_str().unwrap().to_string();
        }
        for t in [&a, &b, &c] {
            t.clock.advance(time::Duration::seconds(30));
        }
        // The victim comes back with the token it holds: reuse, the whole session ends.
        let res = c.refresh(&stolen).await;
        assert_eq!(res.status(), 400);
        let res = a.refresh(&thief).await;
        assert_eq!(
            res.status(),
            400,
            "round {round}: the thief's lineage lives on"
        );
        for t in [&a, &b, &c] {
            eventually("the thief's access token still works", || async {
                t.bearer_status(&thief_access).await == 401
            })
            .await;
        }
    }
}

/// J19 RT1: a spent refresh token of any age ends the whole session, so a thief who rotated
/// twice loses it the moment the victim comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j19_reuse_of_any_spent_refresh_token_ends_the_session() {
    on_postgres("refresh_lineage", lineage).await;
}

/// One client logging in again and again with the right password holds at most its share of
/// the hashing queue: everyone else's logins still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_one_client_with_the_right_password_cannot_fill_the_hashing_queue() {
    let t = TestServer::start_with(|r| {
        r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
        r.argon2_memory_kib = Some(4096);
        r.argon2_iterations = Some(2);
        r.hash_threads = Some(1);
        r.hash_queue = Some(8);
        r.hashing_per_client = Some(2);
        r.login_ip_free_failures = Some(100_000);
    })
    .await;
    let t = Arc::new(t);
    let from = |t: &TestServer, ip: String, email: String| {
        t.req(Method::POST, "/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": PASSWORD}))
    };
    t.signup("flood@example.com", PASSWORD).await;
    for i in 0..40 {
        t.signup(&format!("other{i}@example.com"), PASSWORD).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..24 {
        let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
        flood.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = from(&t, "198.51.100.1".into(), "flood@example.com".into())
                    .send()
                    .await
                    .unwrap();
                match res.status().as_u16() {
                    200 => ok += 1,
                    429 | 503 => refused += 1,
                    other => panic!("the flood got {other}"),
                }
            }
            (ok, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other users log in one after another, each from an address of its own.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let res = from(
            &t,
            format!("203.0.113.{i}"),
            format!("other{i}@example.com"),
        )
        .send()
        .await
        .unwrap();
        statuses.push(res.status().as_u16());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for f in flood {
        let (o, r) = f.await.unwrap();
        ok += o;
        refused += r;
    }
    let good = statuses.iter().filter(|s| **s == 200).count();
    println!("flood: {ok} logins, {refused} refused; others: {good} of 40 logged in");
    assert_eq!(good, 40, "other users' logins were refused: {statuses:?}");
    assert!(refused > 0, "the flood was never held back");
}

/// Sessions per user are capped (the oldest end), and the list comes a page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_capped_and_listed_by_page() {
    let t = Arc::new(
        TestServer::start_with(|r| {
            r.max_sessions_per_user = Some(120);
            // Parallel logins hold attempts until they succeed: not what is tested here.
            r.login_ip_free_failures = Some(100_000);
            r.login_account_free_failures = Some(100_000);
        })
        .await,
    );
    t.signup("many@example.com", PASSWORD).await;
    let mut tokens = Vec::new();
    for _ in 0..15 {
        t.clock.advance(time::Duration::seconds(1));
        let mut batch = Vec::new();
        for _ in 0..10 {
            let t = Arc::clone(&t);
            batch.push(tokio::spawn(async move {
                t.login("many@example.com", PASSWORD).await
            }));
        }
        for b in batch {
            tokens.push(b.await.unwrap());
        }
    }
    let newest = tokens.last().unwrap().clone();
    assert_eq!(t.whoami_status(&newest).await, 200);
    let first: Value = t.get("/auth/sessions", &newest).await.json().await.unwrap();
    assert_eq!(first["total"], 120, "150 logins, a cap of 120");
    assert_eq!(first["sessions"].as_array().unwrap().len(), 50);
    let ended = {
        let mut n = 0;
        for token in &tokens[..20] {
            if t.whoami_status(token).await == 401 {
                n += 1;
            }
        }
        n
    };
    assert!(ended >= 10, "the oldest sessions were not the ones ended");
    // Follow the cursors: every session once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/auth/sessions?limit=50&cursor={c}"),
            None => "/auth/sessions?limit=50".into(),
        };
        let page: Value = t.get(&path, &newest).await.json().await.unwrap();
        for s in page["sessions"].as_array().unwrap() {
            assert!(seen.insert(s["id"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    for bad in ["limit=0", "limit=201", "cursor=xyz"] {
        let res = t.get(&format!("/auth/sessions?{bad}"), &newest).await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    // The settings page shows a page too, with a way to the older ones.
    let html = t.get("/settings", &newest).await.text().await.unwrap();
    assert!(
        html.contains("Showing 1–50 of 120"),
        "no paging on the settings page"
    );
    assert!(html.contains("/settings?from=50"));
}

/// `--metrics-listen`: the metrics leave the public listener for a private one.
#[tokio::test]
async fn metrics_can_be_served_on_a_private_listener_only() {
    let t =
        TestServer::start_with(|r| r.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let res = t.http.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 404, "metrics still on the public listener");
    let private = t.server.as_ref().unwrap().metrics_addr.unwrap();
    let res = t
        .http
        .get(format!("http://{private}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("cloakroom_http_requests_total"));
    let res = t
        .http
        .get(format!("http://{private}/auth/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "only metrics on the private listener");
}
