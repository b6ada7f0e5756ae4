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
            .after_release(|conn, _| Box::pin(fit_for_reuse(conn)))
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

/// The pool's check of a connection given back: commands queued on it (a rollback on drop) run
/// first; a connection that the driver still counts inside a transaction then, or on which
/// SQLite itself still has one open, is closed rather than reused. That is what a failed
/// `COMMIT` or `ROLLBACK` (a full disk) leaves behind: reused, it would carry later writes into
/// a transaction that never commits, acknowledged and then lost.
async fn fit_for_reuse(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::{Connection, Executor};
    conn.ping().await?;
    // `BEGIN` fails inside an open transaction; a deferred one takes no lock.
    if conn.is_in_transaction() || conn.execute("BEGIN").await.is_err() {
        tracing::warn!("a connection left inside a transaction is closed");
        return Ok(false);
    }
    conn.execute("ROLLBACK").await?;
    Ok(true)
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

    async fn raise_mark(&self, name: &str, value: i64) -> Result<i64, StoreError> {
        self.raise_mark_sql(name, value).await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserStore;
    use crate::user::{Email, Role, User, UserId};
    use sqlx::Executor;

    /// Fault run, full disk: a connection given back inside a transaction (what a failed
    /// `COMMIT` leaves) must not carry later writes into it: every acknowledged write is seen by
    /// another process, and none waits on a lock that is never released.
    #[tokio::test]
    async fn a_connection_left_inside_a_transaction_is_never_reused() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(Box::new(e)))?;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url).await?;
        for _ in 0..4 {
            let mut conn = store.pool.acquire().await.map_err(map_err)?;
            conn.execute("BEGIN IMMEDIATE").await.map_err(map_err)?;
        }
        let mut ids = Vec::new();
        for i in 0..8 {
            let user = User {
                id: UserId::random(),
                email: Email::parse(&format!("u{i}@example.com"))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                roles: vec![Role::default_role()],
                disabled: false,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                credentials_gen: 0,
            };
            store.insert_user(&user, "$argon2id$x").await?;
            ids.push(user.id);
        }
        let other = SqliteStore::open(&url).await?;
        for id in ids {
            assert!(
                other.find_user(id).await?.is_some(),
                "an acknowledged write is not there"
            );
        }
        Ok(())
    }
}
