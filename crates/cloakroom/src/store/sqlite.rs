//! The embedded SQLite backend (the default): one file under the data directory, WAL mode so the
//! CLI can change it while a server runs, migrations applied on open.
//!
//! Checkpoints (copying the WAL back into the database file) never run inside a request: SQLite
//! would otherwise run one in the commit of whichever write crosses 1 000 pages of WAL, and that
//! write waits for the copy and its fsync (the p99 of refresh rotations was ~30 ms for it). A
//! task of the store's own checkpoints in the background instead, on a connection of its own:
//! PASSIVE, which never blocks a writer, every 50 ms. Under a steady stream of writes a passive
//! checkpoint on a real disk never sees the WAL idle, and the WAL never starts over (it grew to
//! 700 MB in 10 s of refresh rotations); so once it holds more than 4 MiB, the task forces a
//! restart, which holds writers back for the moment it takes. Small and frequent is what keeps
//! that moment short: at 1 s and 64 MiB the refresh p99 was 46-82 ms, at 50 ms and 4 MiB 4-9 ms.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

/// Users, sessions and the change log in one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    clock: crate::clock::SharedClock,
    /// The background checkpointer, stopped when the last clone of the store is dropped.
    _checkpoints: Option<Arc<Checkpointer>>,
}

/// How often the background task checkpoints the WAL.
const CHECKPOINT_EVERY: StdDuration = StdDuration::from_millis(50);
/// WAL frames (4 KiB pages, 4 MiB) beyond which the background task makes the WAL start over.
const WAL_FRAMES_TO_RESTART: i64 = 1_024;

#[derive(Debug)]
struct Checkpointer(tokio::task::AbortHandle);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] on a connection of its own: PASSIVE, and a
/// RESTART when the WAL has grown past [`WAL_FRAMES_TO_RESTART`].
async fn checkpoint(options: SqliteConnectOptions) {
    use sqlx::ConnectOptions;
    let mut conn = None;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if conn.is_none() {
            conn = options.connect().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        // (busy, frames in the WAL, frames checkpointed)
        let passive: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *c)
            .await;
        let done = match passive {
            Ok((_, frames, _)) if frames > WAL_FRAMES_TO_RESTART => {
                sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&mut *c)
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "background checkpoint failed; reconnecting");
            conn = None;
        }
    }
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
            // No checkpoint inside a commit: the store's own task does them (see above).
            .pragma("wal_autocheckpoint", "0")
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
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let checkpoints = (!in_memory).then(|| {
            let task = tokio::spawn(checkpoint(options));
            Arc::new(Checkpointer(task.abort_handle()))
        });
        Ok(Self {
            pool,
            clock: crate::clock::SharedClock::default(),
            _checkpoints: checkpoints,
        })
    }
}

/// The pool's check of a connection given back: commands queued on it (a rollback on drop) run
/// first; a connection on which SQLite itself still has a transaction open, or that the driver
/// still counts inside one then, is closed rather than reused. That is what a failed `COMMIT`
/// or `ROLLBACK` (a full disk) leaves behind: reused, it would carry later writes into a
/// transaction that never commits, acknowledged and then lost. One round trip to the
/// connection's worker: `BEGIN` fails inside an open transaction (a deferred one takes no
/// lock), and the queued commands have run, updating the driver's count, once it answers.
async fn fit_for_reuse(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::{Connection, Executor};
    if conn.execute("BEGIN; ROLLBACK").await.is_err() || conn.is_in_transaction() {
        tracing::warn!("a connection left inside a transaction is closed");
        return Ok(false);
    }
    Ok(true)
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

super::sql::sql_store!(
    SqliteStore,
    sqlx::SqliteConnection,
    max = "MAX",
    notify = None,
    // One writer at a time: positions already commit in order.
    append_lock = None
);

super::sql_factors::sql_factor_store!(SqliteStore);
super::sql_factors::sql_event_store!(SqliteStore);
super::sql_mail::sql_mail_store!(SqliteStore, sqlx::SqliteConnection);
super::sql_replay::sql_replay_store!(SqliteStore);
super::sql_login::sql_login!(SqliteStore);

#[async_trait]
impl super::Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.ping_pool().await
    }

    async fn raise_mark(&self, name: &str, value: i64) -> Result<i64, StoreError> {
        self.raise_mark_sql(name, value).await
    }

    async fn store_login(
        &self,
        login: super::NewLogin<'_>,
    ) -> Result<Option<Vec<crate::session::SessionId>>, StoreError> {
        self.store_login_sql(login, super::sql_login::SQLITE, true)
            .await
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
                email_verified: false,
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

    /// The times the store writes (a user's `updated_at`, the change log's) come from its
    /// clock, not the database's.
    #[tokio::test]
    async fn written_times_come_from_the_store_clock() -> Result<(), StoreError> {
        use crate::store::ChangeFeed;
        let dir = tempfile::tempdir().map_err(|e| StoreError::Backend(Box::new(e)))?;
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let at = time::OffsetDateTime::from_unix_timestamp(1_000_000_000)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let clock = std::sync::Arc::new(crate::ManualClock::new(at));
        let store = SqliteStore::open(&url).await?.with_clock(clock);
        let user = User {
            id: UserId::random(),
            email: Email::parse("clock@example.com")
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            roles: vec![Role::default_role()],
            disabled: false,
            created_at: at,
            email_verified: false,
            credentials_gen: 0,
        };
        store.insert_user(&user, "$argon2id$x").await?;
        store.set_password(user.id, "$argon2id$y", None).await?;
        let updated: i64 = sqlx::query_scalar("SELECT updated_at FROM users")
            .fetch_one(&store.pool)
            .await
            .map_err(map_err)?;
        assert_eq!(updated, 1_000_000_000);
        let created: i64 = sqlx::query_scalar("SELECT MAX(created_at) FROM changes")
            .fetch_one(&store.pool)
            .await
            .map_err(map_err)?;
        assert_eq!(created, 1_000_000_000);
        assert_eq!(store.changes_since(0).await?.len(), 1);
        Ok(())
    }
}
