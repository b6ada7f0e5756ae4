//! The server on PostgreSQL: the same journey as on SQLite, in a schema of its own.

use crate::support::*;
use futures::FutureExt;
use reqwest::Method;
use serde_json::Value;
use std::panic::{resume_unwind, AssertUnwindSafe};

async fn journey(schema_url: String) {
    let t = TestServer::start_with(|r| r.database_url = Some(schema_url.clone())).await;
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
    let outcome = AssertUnwindSafe(journey(schema.url.clone()))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        resume_unwind(panic)
    }
}
