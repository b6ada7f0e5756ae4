//! The login and password parts of the attack catalogue: L1–L9.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Instant;

async fn login_status(t: &TestServer, email: &str, password: &str) -> (u16, Option<String>) {
    let res = t
        .login_raw(json!({"email": email, "password": password}))
        .await;
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (res.status().as_u16(), retry)
}

#[tokio::test]
async fn l1_unknown_wrong_and_disabled_look_the_same() {
    let t = TestServer::start().await;
    t.signup("known@example.com", PASSWORD).await;
    t.signup("disabled@example.com", PASSWORD).await;
    t.auth()
        .set_disabled("disabled@example.com", true)
        .await
        .unwrap();
    let mut answers = Vec::new();
    for (email, pw) in [
        ("nobody@example.com", PASSWORD),
        ("known@example.com", "wrong password here"),
        ("disabled@example.com", PASSWORD),
    ] {
        let res = t.login_raw(json!({"email": email, "password": pw})).await;
        let status = res.status();
        let mut headers: Vec<(String, String)> = res
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        let body = res.bytes().await.unwrap();
        answers.push((status, headers, body));
    }
    assert_eq!(answers[0].0, 401);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test]
async fn l2_unknown_email_takes_as_long_as_a_wrong_password() {
    // A cost high enough that hashing dominates the noise of a loaded test machine.
    let t = TestServer::start_with(|r| {
        r.argon2_memory_kib = Some(8 * 1024);
        r.argon2_iterations = Some(2);
        r.login_account_free_failures = Some(1000);
        r.login_ip_free_failures = Some(1000);
    })
    .await;
    t.signup("timing@example.com", PASSWORD).await;
    // Other tests share the two cores, so one measurement can be skewed by a burst of their
    // work. A real timing difference shows in every attempt; noise does not survive three.
    let mut last = String::new();
    for attempt in 0..3 {
        let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
        for i in 0..30 {
            for (email, out) in [
                ("timing-nobody@example.com", &mut unknown),
                ("timing@example.com", &mut wrong),
            ] {
                let start = Instant::now();
                let (status, _) =
                    login_status(&t, email, &format!("wrong password {attempt} {i}")).await;
                out.push(start.elapsed().as_secs_f64());
                assert_eq!(status, 401);
            }
        }
        let (u, w) = (median(unknown), median(wrong));
        if (u - w).abs() / w.max(u) < 0.15 {
            last.clear();
            break;
        }
        last = format!("median unknown {u:.4}s vs wrong password {w:.4}s");
    }
    assert!(last.is_empty(), "{last}");
    // The throttled path does no hashing at all, for both.
}

#[tokio::test]
async fn l3_per_account_throttling_grows_and_ignores_spoofed_ips() {
    let t = TestServer::start().await;
    t.signup("target@example.com", PASSWORD).await;
    // Five free failures, each from a different spoofed X-Forwarded-For (not trusted).
    for i in 0..6 {
        let res = t
            .req(Method::POST, "/auth/login")
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"email": "target@example.com", "password": "not the password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "attempt {i}");
    }
    let (status, retry) = login_status(&t, "target@example.com", PASSWORD).await;
    assert_eq!(status, 429, "even the right password waits");
    assert_eq!(retry.as_deref(), Some("1"));
    t.clock.advance(time::Duration::seconds(1));
    let (status, _) = login_status(&t, "target@example.com", "still wrong pass").await;
    assert_eq!(status, 401);
    let (status, retry) = login_status(&t, "target@example.com", PASSWORD).await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("2"), "the wait doubles");
    t.clock.advance(time::Duration::seconds(2));
    // Success clears the account's counter.
    t.login("target@example.com", PASSWORD).await;
    let (status, _) = login_status(&t, "target@example.com", "wrong again pass").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn l3_per_ip_throttling_stops_spraying() {
    let t = TestServer::start_with(|r| r.login_ip_free_failures = Some(3)).await;
    for i in 0..4 {
        let (status, _) = login_status(&t, &format!("spray{i}@example.com"), PASSWORD).await;
        assert_eq!(status, 401);
    }
    let (status, retry) = login_status(&t, "spray9@example.com", PASSWORD).await;
    assert_eq!(status, 429);
    assert!(retry.is_some());
}

#[tokio::test]
async fn l3_trusted_proxy_forwarded_for_is_the_client_ip() {
    let t = TestServer::start_with(|r| {
        r.trusted_proxies = Some(vec!["127.0.0.1".parse().unwrap()]);
        r.login_ip_free_failures = Some(2);
    })
    .await;
    t.signup("proxied@example.com", PASSWORD).await;
    let attempt = |ip: &'static str, email: &'static str, pw: &'static str| {
        let rb = t
            .req(Method::POST, "/auth/login")
            .header("x-forwarded-for", format!("198.51.100.77, {ip}"))
            .json(&json!({"email": email, "password": pw}));
        async move { rb.send().await.unwrap() }
    };
    for email in ["p1@example.com", "p2@example.com", "p3@example.com"] {
        assert_eq!(attempt("192.0.2.1", email, PASSWORD).await.status(), 401);
    }
    assert_eq!(
        attempt("192.0.2.1", "p4@example.com", PASSWORD)
            .await
            .status(),
        429
    );
    // Another client behind the same proxy is not held back.
    let res = attempt("192.0.2.2", "proxied@example.com", PASSWORD).await;
    assert_eq!(res.status(), 200);
    let token = session_token(res.headers()).unwrap();
    let list: Value = t.get("/auth/sessions", &token).await.json().await.unwrap();
    assert_eq!(list["sessions"][0]["ip"], "192.0.2.2");
}

/// On a dual-stack listener IPv4 peers arrive as `::ffff:a.b.c.d`: they still match the trusted
/// range, so each client behind the proxy keeps its own bucket. IPv6 clients share one per /64.
#[tokio::test]
async fn l3_ipv4_mapped_proxies_match_and_ipv6_clients_are_keyed_by_slash_64() {
    let t = TestServer::start_with(|r| {
        r.listen = Some("[::]:0".parse().unwrap());
        r.insecure_dev = Some(true);
        r.trusted_proxies = Some(vec!["127.0.0.0/8".parse().unwrap()]);
        r.login_ip_free_failures = Some(2);
    })
    .await;
    t.signup("mapped@example.com", PASSWORD).await;
    let attempt = |client: String, email: &str, pw: &'static str| {
        let rb = t
            .req(Method::POST, "/auth/login")
            .header("x-forwarded-for", client)
            .json(&json!({"email": email, "password": pw}));
        async move { rb.send().await.unwrap().status() }
    };
    // 25 bad logins from 25 clients: none is held back, and nobody else is either.
    for i in 0..25 {
        let email = format!("m{i}@example.com");
        assert_eq!(
            attempt(format!("198.51.100.{i}"), &email, PASSWORD).await,
            401
        );
    }
    assert_eq!(
        attempt("198.51.100.200".into(), "mapped@example.com", PASSWORD).await,
        200
    );
    // Stepping through one /64 does not give fresh counters.
    for i in 1..=3 {
        let client = format!("2001:db8:5:6::{i:x}");
        let email = format!("v6-{i}@example.com");
        assert_eq!(attempt(client, &email, PASSWORD).await, 401);
    }
    assert_eq!(
        attempt(
            "2001:db8:5:6:ffff::9".into(),
            "mapped@example.com",
            PASSWORD
        )
        .await,
        429
    );
    assert_eq!(
        attempt("2001:db8:5:7::1".into(), "mapped@example.com", PASSWORD).await,
        200
    );
}

#[tokio::test]
async fn l3_signups_are_throttled_per_ip() {
    let t = TestServer::start_with(|r| r.signups_per_hour = Some(2)).await;
    assert_eq!(t.signup("s1@example.com", PASSWORD).await.status(), 201);
    assert_eq!(t.signup("s2@example.com", PASSWORD).await.status(), 201);
    let res = t.signup("s3@example.com", PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(error_code(res).await, "too_many_attempts");
}

#[tokio::test]
async fn l4_length_limits() {
    let t = TestServer::start().await;
    let long_ok = "p".repeat(1024);
    assert_eq!(t.signup("long@example.com", &long_ok).await.status(), 201);
    t.login("long@example.com", &long_ok).await;
    // A passphrase with spaces is used exactly as typed: no trimming, no truncation.
    let spaced =
        "  a long passphrase with spaces that goes on for more than sixty-four characters  ";
    assert_eq!(t.signup("spaced@example.com", spaced).await.status(), 201);
    t.login("spaced@example.com", spaced).await;
    assert_eq!(
        login_status(&t, "spaced@example.com", spaced.trim())
            .await
            .0,
        401
    );
    assert_eq!(
        login_status(&t, "long@example.com", &"p".repeat(1023))
            .await
            .0,
        401
    );
    // Over the limit at login: refused for known and unknown accounts alike.
    let too_long = "p".repeat(1025);
    assert_eq!(login_status(&t, "long@example.com", &too_long).await.0, 401);
    assert_eq!(
        login_status(&t, "nobody@example.com", &too_long).await.0,
        401
    );
    // A 1 MiB body is refused before parsing.
    let res = t
        .req(Method::POST, "/auth/login")
        .header("content-type", "application/json")
        .body(format!(
            "{{\"email\":\"a@b.c\",\"password\":\"{}\"}}",
            "x".repeat(1 << 20)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "payload_too_large");
}

#[tokio::test]
async fn l5_a_saturated_hashing_pool_answers_503_and_the_rest_stays_fast() {
    let t = TestServer::start_with(|r| {
        r.argon2_memory_kib = Some(8 * 1024);
        r.argon2_iterations = Some(3);
        r.hash_threads = Some(1);
        r.hash_queue = Some(2);
        r.login_account_free_failures = Some(1000);
        r.login_ip_free_failures = Some(1000);
    })
    .await;
    t.signup("pool@example.com", PASSWORD).await;
    let token = t.login("pool@example.com", PASSWORD).await;
    let logins = (0..100).map(|_| {
        let rb = t
            .req(Method::POST, "/auth/login")
            .json(&json!({"email": "pool@example.com", "password": "wrong password"}));
        async move {
            let res = rb.send().await.unwrap();
            (
                res.status().as_u16(),
                res.headers().contains_key("retry-after"),
            )
        }
    });
    let flood = tokio::spawn(futures::future::join_all(logins.collect::<Vec<_>>()));
    let start = Instant::now();
    assert_eq!(t.whoami_status(&token).await, 200);
    let health = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let elapsed = start.elapsed();
    let results = flood.await.unwrap();
    let busy = results.iter().filter(|(s, _)| *s == 503).count();
    assert!(busy > 0, "some logins must be refused: {results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s == 503)
        .all(|(_, retry)| *retry));
    assert!(results.iter().all(|(s, _)| *s == 503 || *s == 401));
    assert!(
        elapsed.as_millis() < 1000,
        "whoami and healthz waited {elapsed:?}"
    );
}

#[tokio::test]
async fn l6_unicode_passwords() {
    let t = TestServer::start().await;
    let nfc = "ma\u{f1}ana ma\u{f1}ana";
    let nfd = "man\u{303}ana man\u{303}ana";
    assert_eq!(t.signup("uni@example.com", nfc).await.status(), 201);
    t.login("uni@example.com", nfd).await;
    t.login("uni@example.com", nfc).await;
    // NUL is part of the password, not its end.
    assert_eq!(
        t.signup("nul@example.com", "abcdefgh\u{0}ijkl")
            .await
            .status(),
        201
    );
    assert_eq!(login_status(&t, "nul@example.com", "abcdefgh").await.0, 401);
    t.login("nul@example.com", "abcdefgh\u{0}ijkl").await;
    let emoji = "\u{1F600}".repeat(12);
    assert_eq!(t.signup("emoji@example.com", &emoji).await.status(), 201);
    t.login("emoji@example.com", &emoji).await;
    // A lone surrogate is not text.
    let res = t
        .req(Method::POST, "/auth/signup")
        .header("content-type", "application/json")
        .body(r#"{"email":"sur@example.com","password":"abcdefgh\ud800"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn l7_email_case_and_unicode_collisions() {
    let t = TestServer::start().await;
    assert_eq!(t.signup("kate@example.com", PASSWORD).await.status(), 201);
    t.login("KATE@EXAMPLE.COM", PASSWORD).await;
    // KELVIN SIGN is canonically equal to 'K' (Unicode NFC): the same address, so no second
    // account that looks like kate's, and no way into hers without her password.
    let kelvin = "\u{212A}ate@example.com";
    assert_eq!(
        t.signup(kelvin, "another good passphrase").await.status(),
        409
    );
    assert_eq!(
        login_status(&t, kelvin, "another good passphrase").await.0,
        401
    );
    let tok = t.login(kelvin, PASSWORD).await;
    let who: Value = t.get("/auth/whoami", &tok).await.json().await.unwrap();
    assert_eq!(who["user"]["email"], "kate@example.com");
    // NFC and NFD spellings are one account; X-Auth-Email and whoami show the NFC form.
    assert_eq!(
        t.signup("caf\u{E9}@example.com", PASSWORD).await.status(),
        201
    );
    assert_eq!(
        t.signup("cafe\u{301}@example.com", PASSWORD).await.status(),
        409
    );
    let tok = t.login("cafe\u{301}@example.com", PASSWORD).await;
    let who: Value = t.get("/auth/whoami", &tok).await.json().await.unwrap();
    assert_eq!(who["user"]["email"], "caf\u{E9}@example.com");
    // Invisible characters make a lookalike: refused at signup, and at login like any bad email.
    for lookalike in [
        "ka\u{200B}te@example.com",
        "\u{FEFF}kate@example.com",
        "kate\u{202E}@example.com",
        "ka\u{AD}te@example.com",
    ] {
        let res = t.signup(lookalike, PASSWORD).await;
        assert_eq!(res.status(), 400, "{lookalike:?}");
        assert_eq!(error_code(res).await, "invalid_email");
        assert_eq!(login_status(&t, lookalike, PASSWORD).await.0, 401);
    }
    for hostile in [
        "' OR 1=1 --",
        "admin'--@x.io",
        "a\r\nb@example.com",
        &"a".repeat(300),
    ] {
        let res = t
            .login_raw(json!({"email": hostile, "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), 401, "{hostile:?}");
        let body = res.text().await.unwrap();
        assert!(!body.to_lowercase().contains("sql"), "{body}");
    }
    let res = t
        .login_raw(json!({"email": ["a@b.c"], "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 400);
}
