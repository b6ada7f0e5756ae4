//! [`ReplayStore`](super::ReplayStore) in SQL, once for both SQL backends (`sql_replay_store!`
//! expands it for SQLite and PostgreSQL).

macro_rules! sql_replay_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl super::ReplayStore for $store {
            async fn first_use(
                &self,
                key: &[u8; 32],
                until: time::OffsetDateTime,
                now: time::OffsetDateTime,
            ) -> Result<bool, super::StoreError> {
                // A new key is inserted; a key whose time is over is taken over; a live one
                // changes nothing. One statement, so two instances cannot both win.
                let written = sqlx::query(
                    "INSERT INTO used_once (key, until) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET until = excluded.until \
                     WHERE used_once.until <= $3",
                )
                .bind(&key[..])
                .bind(until.unix_timestamp())
                .bind(now.unix_timestamp())
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?
                .rows_affected();
                Ok(written == 1)
            }

            async fn delete_expired_uses(
                &self,
                now: time::OffsetDateTime,
            ) -> Result<u64, super::StoreError> {
                Ok(sqlx::query("DELETE FROM used_once WHERE until <= $1")
                    .bind(now.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .rows_affected())
            }
        }
    };
}

pub(super) use sql_replay_store;
