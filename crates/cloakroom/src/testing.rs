//! Helpers for tests that need real services (feature `testing`): the rule for skipping when a
//! service is absent, and a PostgreSQL schema per test.

// A helper for tests: failing loudly is its job.
#![allow(clippy::panic)]

/// Whether a missing service must fail the test rather than skip it: under `CI` or
/// `CLOAKROOM_REQUIRE_SERVICES`.
pub fn services_required() -> bool {
    ["CI", "CLOAKROOM_REQUIRE_SERVICES"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

/// Says that a test is skipped, and why, where a person running `cargo test` sees it: straight
/// to the process's standard error, which the test harness does not capture (it captures only
/// what `print!` and `eprint!` write).
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {why}");
}

/// The PostgreSQL database tests use: `CLOAKROOM_TEST_POSTGRES_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("CLOAKROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A PostgreSQL schema of one test's own; drop it with [`PgSchema::drop`].
#[derive(Debug)]
pub struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
    /// A database URL whose `search_path` is this schema.
    pub url: String,
}

impl PgSchema {
    /// Creates a fresh schema. `None`, after printing a SKIP line for `test`, when PostgreSQL is
    /// unreachable and not required; a panic when it is required.
    pub async fn create(test: &str) -> Option<Self> {
        let base = postgres_url();
        let admin = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(&base)
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                assert!(
                    !services_required(),
                    "PostgreSQL is required here but unreachable: {e}"
                );
                skip(&format!("{test}: PostgreSQL not reachable at {base} ({e})"));
                return None;
            }
        };
        let name = format!("cloakroom_t_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
        {
            panic!("cannot create the test schema: {e}");
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(Self { admin, name, url })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&self.admin)
            .await;
    }
}

/// The Redis tests use: `CLOAKROOM_TEST_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("CLOAKROOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix of one test's own; delete its keys with [`RedisPrefix::drop`].
#[derive(Debug)]
pub struct RedisPrefix {
    /// The Redis URL.
    pub url: String,
    /// The prefix (`cloakroom-t-<random>`).
    pub prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix. `None`, after printing a SKIP line for `test`, when Redis is unreachable
    /// and not required; a panic when it is required.
    pub async fn create(test: &str) -> Option<Self> {
        let url = redis_url();
        let reachable = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(3), reachable).await {
            Ok(Ok(_)) => {}
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                assert!(
                    !services_required(),
                    "Redis is required here but unreachable: {why}"
                );
                skip(&format!("{test}: Redis not reachable at {url} ({why})"));
                return None;
            }
        }
        let prefix = format!("cloakroom-t-{}", uuid::Uuid::new_v4().simple());
        Some(Self { url, prefix })
    }

    /// Deletes every key under the prefix.
    pub async fn drop(self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
            else {
                return;
            };
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
