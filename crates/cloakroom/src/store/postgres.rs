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
    clock: crate::clock::SharedClock,
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
            // A connection the driver still counts inside a transaction (a failed `COMMIT`) is
            // closed rather than reused; the driver counts a rollback on drop at once.
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options)
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            pool,
            clock: crate::clock::SharedClock::default(),
        })
    }
}

super::sql::sql_store!(
    PostgresStore,
    sqlx::PgConnection,
    max = "GREATEST",
    notify = Some(
        "SELECT pg_notify('cloakroom_changes', \
         CAST(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS TEXT))"
    ),
    // Conflicts with itself and with plain inserts, not with readers: appends commit one at a
    // time, in the order of their positions.
    append_lock = Some("LOCK TABLE changes IN SHARE ROW EXCLUSIVE MODE")
);

super::sql_factors::sql_factor_store!(PostgresStore);
super::sql_factors::sql_event_store!(PostgresStore);
super::sql_mail::sql_mail_store!(PostgresStore, sqlx::PgConnection);
super::sql_replay::sql_replay_store!(PostgresStore);
super::sql_login::sql_login!(PostgresStore);

#[async_trait]
impl super::Store for PostgresStore {
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
        self.store_login_sql(login, super::sql_login::POSTGRES, false)
            .await
    }

    /// LISTEN on the change channel. Each notification (carrying the time it was sent, in ms
    /// since the epoch) and each reconnection after the connection was lost (events may have been
    /// missed meanwhile; no time) yields a signal; the caller then reads the change log, so
    /// nothing is missed for good.
    async fn watch(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Option<i64>>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(map_err)?;
        listener
            .listen("cloakroom_changes")
            .await
            .map_err(map_err)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let signal = match listener.try_recv().await {
                    Ok(Some(n)) => n.payload().parse::<i64>().ok(),
                    // The connection dropped; the next call reconnects. Resynchronise.
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "change notifications interrupted");
                        tokio::time::sleep(StdDuration::from_millis(500)).await;
                        None
                    }
                };
                if tx.try_send(signal).is_err() && tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}
