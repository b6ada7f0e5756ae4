//! The embedded SQLite backend (the default): one file under the data directory, WAL mode so the
//! CLI can change it while a server runs, migrations applied on open.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration as StdDuration;

/// Users, sessions and the change log in one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(StdDuration::from_secs(5))
            // After a checkpoint, the WAL file is cut back to at most 64 MiB.
            .pragma("journal_size_limit", "67108864");
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(StdDuration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(StdDuration::from_secs(3600))
            })
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
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

super::sql::sql_store!(
    SqliteStore,
    sqlx::SqliteConnection,
    now = "unixepoch()",
    max = "MAX",
    notify = None,
    // One writer at a time: positions already commit in order.
    append_lock = None
);

#[async_trait]
impl super::Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.ping_pool().await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
