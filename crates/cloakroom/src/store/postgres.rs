//! The PostgreSQL backend: the same schema and behaviour as SQLite (one contract suite runs on
//! both), for deployments that run several instances or already run PostgreSQL.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration as StdDuration;

/// Users, sessions, keys and the change log in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/postgres");

impl PostgresStore {
    /// Connects to `url` (`postgres://…`; a `search_path` may be set with
    /// `?options=-c search_path%3Dname`) and applies pending migrations. Every statement is
    /// bounded by a 5 s timeout, so an unreachable database fails requests instead of hanging
    /// them.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(Box::new(e)))?
            .options([("statement_timeout", "5000")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(StdDuration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { pool })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

super::sql::sql_store!(
    PostgresStore,
    sqlx::PgConnection,
    now = "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)",
    max = "GREATEST"
);
