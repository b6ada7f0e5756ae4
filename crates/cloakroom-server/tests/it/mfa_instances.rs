//! Second factors across instances on one PostgreSQL, with and without Redis: an app added on
//! one instance is asked for on the other at once, a code accepted on one is refused on the
//! other, a factor removed on one is gone on the other, and one code raced through both starts
//! one session, as does one passkey assertion. Passkey logins alternate between the instances,
//! whose copies in memory go stale, without a counter going back or a removed passkey counting.

use crate::mfa::{enroll, first_step, second_step};
use crate::postgres::pair;
use crate::support::*;
use cloakroom::testing::RedisPrefix;
use cloakroom::Clock;
use futures::FutureExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::panic::{resume_unwind, AssertUnwindSafe};

async fn factors_hold_across_instances(url: String, redis: Option<&RedisPrefix>) {
    let (a, b) = pair(&url, redis).await;
    // One clock for both, so both instances are in the same time step.
    b.clock.set(a.clock.now());
    let mut cookie = a.user("twice@example.com").await;
    let app = enroll(&a, &mut cookie).await;
    b.clock.set(a.clock.now());

    // Added on A: B asks for it, and a code B accepted is spent on A too.
    let token = first_step(&b, "twice@example.com").await;
    let code = app.code(&a, 0);
    assert_eq!(
        second_step(&b, &token, json!({"code": code}))
            .await
            .status(),
        200
    );
    let token = first_step(&a, "twice@example.com").await;
    let res = second_step(&a, &token, json!({"code": code})).await;
    assert_eq!(
        error_code(res).await,
        "invalid_code",
        "replayed on the other instance"
    );

    // Raced through both: one session.
    a.clock.advance(time::Duration::seconds(90));
    b.clock.set(a.clock.now());
    let mut tokens = Vec::new();
    for i in 0..20 {
        let t = if i % 2 == 0 { &a } else { &b };
        tokens.push((t, first_step(t, "twice@example.com").await));
    }
    let code = app.code(&a, 0);
    let tries = tokens
        .iter()
        .map(|(t, token)| second_step(t, token, json!({"code": code})));
    let ok = futures::future::join_all(tries)
        .await
        .iter()
        .filter(|r| r.status() == 200)
        .count();
    assert_eq!(ok, 1, "one code raced through two instances");

    // One passkey assertion raced through both instances: one session. (A passkey is a second
    // factor too, so it is removed before the password-only login below.)
    let mut device = crate::passkeys::Device::new(&a);
    let res = crate::passkeys::register(&a, &cookie, &mut device).await;
    assert_eq!(res.status(), 201);
    let passkey: Value = res.json().await.unwrap();
    let opts = crate::passkeys::options(&b, "/auth/passkeys/login/options", None, json!({})).await;
    let assertion = device.get(opts);
    let tries = (0..20).map(|i| {
        let t = if i % 2 == 0 { &a } else { &b };
        crate::passkeys::login_with(t, &assertion)
    });
    let ok = futures::future::join_all(tries)
        .await
        .iter()
        .filter(|r| r.status() == 200)
        .count();
    assert_eq!(ok, 1, "one assertion raced through two instances");

    // Each instance checks against the passkeys it keeps in memory, which the other's uses
    // make stale: logins alternating between them all get in.
    for i in 0..8 {
        let t = if i % 2 == 0 { &a } else { &b };
        let opts =
            crate::passkeys::options(t, "/auth/passkeys/login/options", None, json!({})).await;
        let assertion = device.get(opts);
        let res = crate::passkeys::login_with(t, &assertion).await;
        assert_eq!(res.status(), 200, "login {i}, alternating instances");
    }
    // A stale copy lets no counter go back: two assertions signed out of order (the later
    // challenge with the lower counter, as a copy of the key would); the higher counter is
    // used through B, then the lower one through A, whose copy is from before: refused.
    let earlier =
        crate::passkeys::options(&a, "/auth/passkeys/login/options", None, json!({})).await;
    let later = crate::passkeys::options(&a, "/auth/passkeys/login/options", None, json!({})).await;
    let lower = device.get(later);
    let higher = device.get(earlier);
    assert_eq!(crate::passkeys::login_with(&b, &higher).await.status(), 200);
    let res = crate::passkeys::login_with(&a, &lower).await;
    assert_eq!(
        res.status(),
        401,
        "a counter that went back, against A's stale copy"
    );
    let res = a
        .with_cookie(
            a.req(
                Method::DELETE,
                &format!(
                    "/auth/factors/{}",
                    passkey["factor"]["id"].as_str().unwrap()
                ),
            ),
            &cookie,
        )
        .json(&json!({"current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // Removed on A: B, which has it in memory, refuses it at once.
    let opts = crate::passkeys::options(&b, "/auth/passkeys/login/options", None, json!({})).await;
    let assertion = device.get(opts);
    let res = crate::passkeys::login_with(&b, &assertion).await;
    assert_eq!(res.status(), 401, "a passkey removed on the other instance");

    // Removed on A: B's next login asks for the password only.
    let res = a
        .with_cookie(
            a.req(Method::DELETE, &format!("/auth/factors/{}", app.id)),
            &cookie,
        )
        .json(&json!({"current_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    b.login("twice@example.com", PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factors_hold_across_instances_on_postgresql() {
    let Some(schema) = PgSchema::create("factors_hold_across_instances_on_postgresql").await else {
        return;
    };
    let outcome = AssertUnwindSafe(factors_hold_across_instances(schema.url.clone(), None))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factors_hold_across_instances_on_postgresql_and_redis() {
    crate::with_redis::with_backends(
        "factors_hold_across_instances_on_postgresql_and_redis",
        |url, redis| async move {
            factors_hold_across_instances(url, Some(&redis)).await;
        },
    )
    .await;
}
