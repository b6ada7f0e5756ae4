//! The store traits implemented once in SQL for both SQL backends. `sql_store!` expands the same
//! queries for SQLite and PostgreSQL; the only dialect differences are passed in: the expression
//! for "now" in seconds, the two-argument maximum, how to signal other processes and how to keep
//! the change log in commit order. Placeholders are `$N`, which both accept.
//!
//! The change log is read by position (`seq > cursor`), so a position must never become visible
//! after a higher one: a follower that saw the higher one would skip it for good. SQLite has one
//! writer at a time, so positions commit in order. PostgreSQL assigns an identity value when a row
//! is inserted, not when its transaction commits, so appends take a table lock that lasts until
//! commit: a second writer gets its position only after the first one's is visible. The lock
//! is taken last in each transaction, just before the append, so it is held for the append and
//! the commit only.

/// How long a user change stays in the log for followers that were briefly away.
pub(super) const USER_CHANGE_TTL_SECS: i64 = 24 * 3600;

/// Whether a database error will likely pass by itself: SQLite's full disk, locked or busy
/// database and I/O errors; PostgreSQL's insufficient resources (a full disk among them),
/// lost connections, shutdowns and serialisation failures. Those are "unavailable" (503 with
/// `Retry-After`), not bugs (500).
fn transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    if let Ok(extended) = code.parse::<i32>() {
        // SQLite: the primary result code is the low byte of the extended one.
        // SQLITE_BUSY 5, SQLITE_LOCKED 6, SQLITE_NOMEM 7, SQLITE_READONLY 8, SQLITE_IOERR 10,
        // SQLITE_FULL 13, SQLITE_CANTOPEN 14, SQLITE_PROTOCOL 15.
        return matches!(extended & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15);
    }
    code.starts_with("53")
        || code.starts_with("08")
        || code.starts_with("57P0")
        || code == "40001"
        || code == "40P01"
}

pub(super) fn map_err(e: sqlx::Error) -> super::StoreError {
    use super::StoreError;
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::Database(db) if transient(db.as_ref()) => StoreError::Unavailable(Box::new(e)),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Backend(Box::new(e)),
    }
}

macro_rules! sql_store {
    (
        $store:ty,
        $conn:ty,
        max = $max:literal,
        notify = $notify:expr,
        append_lock = $append_lock:expr
    ) => {
        use async_trait::async_trait;
        use time::{Duration, OffsetDateTime};

        use super::rows::{self, from_ts, roles_json, RowExt, SESSION_COLUMNS};
        use super::sql::{map_err, USER_CHANGE_TTL_SECS};
        use super::{Change, ChangeFeed, KeyStore, Rotation, SessionStore, StoreError, UserStore};
        use crate::jwt::StoredKey;
        use crate::session::{Session, SessionId, TokenHash};
        use crate::user::{Email, Role, User, UserId};

        fn ts(t: OffsetDateTime) -> i64 {
            t.unix_timestamp()
        }

        /// Tells other processes that the change log grew (delivered at commit).
        async fn notify(tx: &mut $conn) -> Result<(), StoreError> {
            let statement: Option<&str> = $notify;
            if let Some(sql) = statement {
                sqlx::query(sql).execute(tx).await.map_err(map_err)?;
            }
            Ok(())
        }

        /// Holds back every other append to the change log until this transaction ends, so
        /// positions become visible in order (see the module's comment).
        async fn lock_change_log(tx: &mut $conn) -> Result<(), StoreError> {
            let statement: Option<&str> = $append_lock;
            if let Some(sql) = statement {
                sqlx::query(sql).execute(tx).await.map_err(map_err)?;
            }
            Ok(())
        }

        async fn record_user_change(
            tx: &mut $conn,
            id: UserId,
            now: i64,
        ) -> Result<(), StoreError> {
            lock_change_log(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO changes (kind, subject, expires_at, created_at) \
                 VALUES ('user_changed', $1, $2, $3)",
            )
            .bind(id.to_string())
            .bind(now + USER_CHANGE_TTL_SECS)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            notify(tx).await
        }

        async fn record_revocation(
            tx: &mut $conn,
            id: &str,
            expires_at: i64,
            now: i64,
        ) -> Result<(), StoreError> {
            lock_change_log(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO changes (kind, subject, expires_at, created_at) \
                 VALUES ('session_revoked', $1, $2, $3)",
            )
            .bind(id)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            notify(tx).await
        }

        /// One change to a user row.
        enum UserUpdate {
            Disabled(bool),
            Roles(String),
        }

        impl $store {
            /// The same store, reading the time from `clock` (the time it writes in the change
            /// log and on changed users): tests pin it with the engine's [`crate::ManualClock`].
            pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::Clock>) -> Self {
                self.clock = crate::clock::SharedClock::new(clock);
                self
            }

            /// The store clock's time, in Unix seconds.
            fn now(&self) -> i64 {
                self.clock.unix_secs()
            }

            /// Closes the connections.
            pub async fn close(&self) {
                self.pool.close().await;
            }

            /// Readiness: the database answers and takes a write (a full disk or a database
            /// locked by a stuck writer is not ready, though reads may still work).
            async fn ping_pool(&self) -> Result<(), StoreError> {
                sqlx::query("UPDATE write_probe SET probes = probes + 1 WHERE id = 1")
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn raise_mark_sql(&self, name: &str, value: i64) -> Result<i64, StoreError> {
                sqlx::query_scalar(concat!(
                    "INSERT INTO marks (name, value) VALUES ($1, $2) ON CONFLICT (name) \
                     DO UPDATE SET value = ",
                    $max,
                    "(marks.value, excluded.value) RETURNING value"
                ))
                .bind(name)
                .bind(value)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)
            }

            async fn update_user(
                &self,
                id: UserId,
                update: UserUpdate,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let q = match update {
                    UserUpdate::Disabled(d) => {
                        sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
                            .bind(d)
                    }
                    UserUpdate::Roles(r) => {
                        sqlx::query("UPDATE users SET roles = $1, updated_at = $2 WHERE id = $3")
                            .bind(r)
                    }
                };
                let changed = q
                    .bind(self.now())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected()
                    > 0;
                if changed {
                    record_user_change(&mut tx, id, self.now()).await?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(changed)
            }
        }

        #[async_trait]
        impl UserStore for $store {
            async fn insert_user(
                &self,
                user: &User,
                password_hash: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, \
                     updated_at, credentials_gen) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
                )
                .bind(user.id.to_string())
                .bind(user.email.as_str())
                .bind(password_hash)
                .bind(roles_json(&user.roles)?)
                .bind(user.disabled)
                .bind(ts(user.created_at))
                .bind(user.credentials_gen)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn find_user_by_email(
                &self,
                email: &Email,
            ) -> Result<Option<(User, String)>, StoreError> {
                let row = sqlx::query("SELECT * FROM users WHERE email = $1")
                    .bind(email.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|r| Ok((rows::user(&r)?, r.text("password_hash")?)))
                    .transpose()
            }

            async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
                let row = sqlx::query("SELECT * FROM users WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|r| rows::user(&r)).transpose()
            }

            async fn password_hash(&self, id: UserId) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn set_password(
                &self,
                id: UserId,
                hash: &str,
                notice: Option<&crate::mail::OutgoingMail>,
            ) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let generation: Option<i64> = sqlx::query_scalar(
                    "UPDATE users SET password_hash = $1, credentials_gen = credentials_gen + 1, \
                     updated_at = $2 WHERE id = $3 RETURNING credentials_gen",
                )
                .bind(hash)
                .bind(self.now())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                if generation.is_some() {
                    record_user_change(&mut tx, id, self.now()).await?;
                    if let Some(mail) = notice {
                        enqueue_on(&mut tx, mail).await?;
                    }
                }
                tx.commit().await.map_err(map_err)?;
                Ok(generation)
            }

            async fn rehash_password(
                &self,
                id: UserId,
                old: &str,
                new: &str,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
                )
                .bind(new)
                .bind(id.to_string())
                .bind(old)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError> {
                self.update_user(id, UserUpdate::Disabled(disabled)).await
            }

            async fn set_roles(&self, id: UserId, roles: &[Role]) -> Result<bool, StoreError> {
                self.update_user(id, UserUpdate::Roles(roles_json(roles)?))
                    .await
            }

            async fn delete_user(
                &self,
                id: UserId,
                at: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let email: Option<String> =
                    sqlx::query_scalar("DELETE FROM users WHERE id = $1 RETURNING email")
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                let Some(email) = email else {
                    return Ok(false);
                };
                sqlx::query("DELETE FROM outbox WHERE recipient = $1")
                    .bind(&email)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query("INSERT INTO deleted_accounts (user_id, deleted_at) VALUES ($1, $2)")
                    .bind(id.to_string())
                    .bind(ts(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                record_user_change(&mut tx, id, self.now()).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn list_users(&self) -> Result<Vec<User>, StoreError> {
                let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, email")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(rows::user).collect()
            }
        }

        #[async_trait]
        impl SessionStore for $store {
            async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
                let query = sqlx::query(super::sql_login::INSERT_SESSION);
                super::sql_login::bind_session!(query, s)
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn find_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = $1");
                let row = sqlx::query(&sql)
                    .bind(&hash.0[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|r| rows::session(&r)).transpose()
            }

            async fn find_session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
                let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
                let row = sqlx::query(&sql)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.map(|r| rows::session(&r)).transpose()
            }

            async fn touch(&self, seen: &[(SessionId, OffsetDateTime)]) -> Result<(), StoreError> {
                if seen.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                for (id, at) in seen {
                    sqlx::query(
                        "UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1",
                    )
                    .bind(ts(*at))
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn list_for_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 \
                     ORDER BY created_at DESC, id"
                );
                let rows = sqlx::query(&sql)
                    .bind(user.to_string())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(rows::session).collect()
            }

            async fn sessions_past(
                &self,
                user: UserId,
                keep: usize,
            ) -> Result<Vec<SessionId>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id FROM sessions WHERE user_id = $1 \
                     ORDER BY created_at DESC, id LIMIT 1000 OFFSET $2",
                )
                .bind(user.to_string())
                .bind(i64::try_from(keep).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter().map(|r| rows::session_id(r, "id")).collect()
            }

            async fn replace_secret(
                &self,
                id: SessionId,
                old: &TokenHash,
                new: &TokenHash,
                at: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE sessions SET secret_hash = $1, previous_hash = $2, rotated_at = $3 \
                     WHERE id = $4 AND secret_hash = $2",
                )
                .bind(&new.0[..])
                .bind(&old.0[..])
                .bind(ts(at))
                .bind(id.to_string())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn rotate_refresh(
                &self,
                presented: &TokenHash,
                lineage: &TokenHash,
                next: &TokenHash,
                sealed_next: &[u8],
                at: OffsetDateTime,
            ) -> Result<Rotation, StoreError> {
                let sql = format!(
                    "UPDATE sessions SET previous_hash = secret_hash, secret_hash = $1, \
                     successor_box = $2, rotated_at = $3, last_seen_at = {}(last_seen_at, $3), \
                     refresh_family = COALESCE(refresh_family, $5) \
                     WHERE secret_hash = $4 AND transport = 'token' \
                     AND absolute_expires_at > $3 AND last_seen_at + idle_secs > $3 \
                     RETURNING {SESSION_COLUMNS}",
                    $max
                );
                let row = sqlx::query(&sql)
                    .bind(&next.0[..])
                    .bind(sealed_next)
                    .bind(ts(at))
                    .bind(&presented.0[..])
                    .bind(&lineage.0[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                if let Some(row) = row {
                    return Ok(Rotation::Rotated(rows::session(&row)?));
                }
                let sql = format!(
                    "SELECT {SESSION_COLUMNS}, rotated_at, successor_box FROM sessions \
                     WHERE previous_hash = $1 AND transport = 'token'"
                );
                let row = sqlx::query(&sql)
                    .bind(&presented.0[..])
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_err)?;
                let Some(row) = row else {
                    let sql = format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions \
                         WHERE refresh_family = $1 AND transport = 'token'"
                    );
                    let row = sqlx::query(&sql)
                        .bind(&lineage.0[..])
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                    return match row {
                        Some(row) => Ok(Rotation::Reused(rows::session(&row)?)),
                        None => Ok(Rotation::Unknown),
                    };
                };
                Ok(Rotation::Spent {
                    session: rows::session(&row)?,
                    rotated_at: from_ts(row.opt_int("rotated_at")?.unwrap_or_default())?,
                    sealed_next: row.opt_bytes("successor_box")?.unwrap_or_default(),
                })
            }

            async fn revoke(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let sql = format!("DELETE FROM sessions WHERE id = $1 RETURNING {SESSION_COLUMNS}");
                let row = sqlx::query(&sql)
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let session = row.map(|r| rows::session(&r)).transpose()?;
                if let Some(s) = &session {
                    record_revocation(
                        &mut tx,
                        &s.id.to_string(),
                        ts(s.absolute_expires_at),
                        self.now(),
                    )
                    .await?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(session)
            }

            async fn revoke_all(
                &self,
                user: UserId,
                keep: Option<SessionId>,
            ) -> Result<Vec<SessionId>, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let rows = sqlx::query(
                    "DELETE FROM sessions WHERE user_id = $1 AND id <> $2 \
                     RETURNING id, absolute_expires_at",
                )
                .bind(user.to_string())
                .bind(keep.map(|k| k.to_string()).unwrap_or_default())
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                let mut ended = Vec::with_capacity(rows.len());
                for row in rows {
                    let id = row.text("id")?;
                    let expires_at = row.int("absolute_expires_at")?;
                    record_revocation(&mut tx, &id, expires_at, self.now()).await?;
                    ended.push(rows::session_id(&row, "id")?);
                }
                tx.commit().await.map_err(map_err)?;
                Ok(ended)
            }

            async fn delete_expired(
                &self,
                at: OffsetDateTime,
                idle_grace: Duration,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "DELETE FROM sessions WHERE absolute_expires_at <= $1 \
                     OR last_seen_at + idle_secs + $2 <= $1",
                )
                .bind(ts(at))
                .bind(idle_grace.whole_seconds())
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl ChangeFeed for $store {
            async fn changes_since(&self, cursor: i64) -> Result<Vec<(i64, Change)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT seq, kind, subject, expires_at FROM changes WHERE seq > $1 \
                     ORDER BY seq LIMIT 10000",
                )
                .bind(cursor)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter().map(rows::change).collect()
            }

            async fn change_head(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS head FROM changes")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)?;
                row.int("head")
            }

            async fn revoked_sessions(
                &self,
                at: OffsetDateTime,
            ) -> Result<Vec<(SessionId, OffsetDateTime)>, StoreError> {
                let rows = sqlx::query(
                    "SELECT subject, expires_at FROM changes \
                     WHERE kind = 'session_revoked' AND expires_at > $1",
                )
                .bind(ts(at))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            rows::session_id(r, "subject")?,
                            from_ts(r.int("expires_at")?)?,
                        ))
                    })
                    .collect()
            }

            async fn prune_changes(&self, at: OffsetDateTime) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM changes WHERE expires_at <= $1")
                    .bind(ts(at))
                    .execute(&self.pool)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
                let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.iter().map(rows::key).collect()
            }

            async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(ts(key.created_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, private_pkcs8, created_at, retired_at) \
                     VALUES ($1, $2, $3, $4, NULL)",
                )
                .bind(&key.kid)
                .bind(key.alg.as_str())
                .bind(&key.private_pkcs8)
                .bind(ts(key.created_at))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn shared_secret(
                &self,
                name: &str,
                candidate: &[u8],
            ) -> Result<Vec<u8>, StoreError> {
                sqlx::query(
                    "INSERT INTO shared_secrets (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(candidate)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_err)
            }

            async fn replace_shared_secret(
                &self,
                name: &str,
                old: &[u8],
                new: &[u8],
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE shared_secrets SET value = $1 WHERE name = $2 AND value = $3",
                )
                .bind(new)
                .bind(name)
                .bind(old)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn replace_private_key(
                &self,
                kid: &str,
                old: &[u8],
                new: &[u8],
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE signing_keys SET private_pkcs8 = $1 \
                     WHERE kid = $2 AND private_pkcs8 = $3",
                )
                .bind(new)
                .bind(kid)
                .bind(old)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_keys_retired_before(
                &self,
                before: OffsetDateTime,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
                )
                .bind(ts(before))
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(super) use sql_store;
