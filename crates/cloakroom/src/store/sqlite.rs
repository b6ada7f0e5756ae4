//! The embedded SQLite backend (the default): one file under the data directory, WAL mode so the
//! CLI can change it while a server runs, migrations applied on open.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};

use super::{Change, ChangeFeed, KeyStore, Rotation, SessionStore, Store, StoreError, UserStore};
use crate::jwt::{Algorithm, StoredKey};
use crate::session::{Session, SessionId, TokenHash};
use crate::user::{Email, Role, User, UserId};

/// Users, sessions and the change log in one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// How long a user change stays in the log for followers that were briefly away.
const USER_CHANGE_TTL_SECS: i64 = 24 * 3600;

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
            .busy_timeout(StdDuration::from_secs(5));
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

    /// Closes the connections (after writing what is pending).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(Box::new(e))
        }
        _ => StoreError::Backend(Box::new(e)),
    }
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn corrupt(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn hash_from(bytes: Vec<u8>) -> Result<TokenHash, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("token hash is not 32 bytes".into()))?;
    Ok(TokenHash(arr))
}

fn user_from(row: &SqliteRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id").map_err(corrupt("users.id"))?;
    let email: String = row.try_get("email").map_err(corrupt("users.email"))?;
    let roles: String = row.try_get("roles").map_err(corrupt("users.roles"))?;
    let roles: Vec<String> =
        serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let roles = roles
        .iter()
        .map(|r| Role::parse(r).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(User {
        id: UserId::from_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        email: Email::parse(&email).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        roles,
        disabled: row
            .try_get::<i64, _>("disabled")
            .map_err(corrupt("users.disabled"))?
            != 0,
        created_at: from_ts(
            row.try_get("created_at")
                .map_err(corrupt("users.created_at"))?,
        )?,
    })
}

fn session_from(row: &SqliteRow) -> Result<Session, StoreError> {
    let get_i = |name: &'static str| row.try_get::<i64, _>(name).map_err(corrupt(name));
    let id: String = row.try_get("id").map_err(corrupt("sessions.id"))?;
    let user: String = row
        .try_get("user_id")
        .map_err(corrupt("sessions.user_id"))?;
    let transport: String = row
        .try_get("transport")
        .map_err(corrupt("sessions.transport"))?;
    Ok(Session {
        id: SessionId::from_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        user_id: UserId::from_str(&user).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        transport: transport.parse().map_err(StoreError::Corrupt)?,
        secret_hash: hash_from(row.try_get("secret_hash").map_err(corrupt("secret_hash"))?)?,
        remember: get_i("remember")? != 0,
        created_at: from_ts(get_i("created_at")?)?,
        authenticated_at: from_ts(get_i("authenticated_at")?)?,
        last_seen_at: from_ts(get_i("last_seen_at")?)?,
        idle_timeout: Duration::seconds(get_i("idle_secs")?),
        absolute_expires_at: from_ts(get_i("absolute_expires_at")?)?,
        ip: row.try_get("ip").map_err(corrupt("sessions.ip"))?,
        user_agent: row
            .try_get("user_agent")
            .map_err(corrupt("sessions.user_agent"))?,
    })
}

const SESSION_COLUMNS: &str = "id, user_id, transport, secret_hash, remember, created_at, \
     authenticated_at, last_seen_at, idle_secs, absolute_expires_at, ip, user_agent";

async fn record_user_change(tx: &mut sqlx::SqliteConnection, id: UserId) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO changes (kind, subject, expires_at, created_at) \
         VALUES ('user_changed', ?1, unixepoch() + ?2, unixepoch())",
    )
    .bind(id.to_string())
    .bind(USER_CHANGE_TTL_SECS)
    .execute(tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn record_revocation(
    tx: &mut sqlx::SqliteConnection,
    id: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO changes (kind, subject, expires_at, created_at) \
         VALUES ('session_revoked', ?1, ?2, unixepoch())",
    )
    .bind(id)
    .bind(expires_at)
    .execute(tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// One change to a user row.
enum UserUpdate {
    Password(String),
    Disabled(bool),
    Roles(String),
}

impl SqliteStore {
    async fn update_user(&self, id: UserId, update: UserUpdate) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let q = match update {
            UserUpdate::Password(h) => sqlx::query(
                "UPDATE users SET password_hash = ?1, updated_at = unixepoch() WHERE id = ?2",
            )
            .bind(h),
            UserUpdate::Disabled(d) => sqlx::query(
                "UPDATE users SET disabled = ?1, updated_at = unixepoch() WHERE id = ?2",
            )
            .bind(i64::from(d)),
            UserUpdate::Roles(r) => {
                sqlx::query("UPDATE users SET roles = ?1, updated_at = unixepoch() WHERE id = ?2")
                    .bind(r)
            }
        };
        let changed = q
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected()
            > 0;
        if changed {
            record_user_change(&mut tx, id).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(changed)
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let roles: Vec<&str> = user.roles.iter().map(Role::as_str).collect();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )
        .bind(user.id.to_string())
        .bind(user.email.as_str())
        .bind(password_hash)
        .bind(serde_json::to_string(&roles).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(i64::from(user.disabled))
        .bind(ts(user.created_at))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| {
            let hash: String = r
                .try_get("password_hash")
                .map_err(corrupt("password_hash"))?;
            Ok((user_from(&r)?, hash))
        })
        .transpose()
    }

    async fn find_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| user_from(&r)).transpose()
    }

    async fn password_hash(&self, id: UserId) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn set_password(&self, id: UserId, password_hash: &str) -> Result<bool, StoreError> {
        self.update_user(id, UserUpdate::Password(password_hash.to_string()))
            .await
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError> {
        self.update_user(id, UserUpdate::Disabled(disabled)).await
    }

    async fn set_roles(&self, id: UserId, roles: &[Role]) -> Result<bool, StoreError> {
        let roles: Vec<&str> = roles.iter().map(Role::as_str).collect();
        let json = serde_json::to_string(&roles).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.update_user(id, UserUpdate::Roles(json)).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, email")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(user_from).collect()
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, transport, secret_hash, remember, created_at, \
             authenticated_at, last_seen_at, idle_secs, absolute_expires_at, ip, user_agent) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(s.id.to_string())
        .bind(s.user_id.to_string())
        .bind(s.transport.as_str())
        .bind(&s.secret_hash.0[..])
        .bind(i64::from(s.remember))
        .bind(ts(s.created_at))
        .bind(ts(s.authenticated_at))
        .bind(ts(s.last_seen_at))
        .bind(s.idle_timeout.whole_seconds())
        .bind(ts(s.absolute_expires_at))
        .bind(&s.ip)
        .bind(&s.user_agent)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn find_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = ?1");
        let row = sqlx::query(&sql)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| session_from(&r)).transpose()
    }

    async fn find_session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| session_from(&r)).transpose()
    }

    async fn touch(&self, seen: &[(SessionId, OffsetDateTime)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for (id, at) in seen {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = ?1 WHERE id = ?2 AND last_seen_at < ?1",
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
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(&sql)
            .bind(user.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(session_from).collect()
    }

    async fn replace_secret(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET secret_hash = ?1, previous_hash = ?2, rotated_at = ?3 \
             WHERE id = ?4 AND secret_hash = ?2",
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
        next: &TokenHash,
        sealed_next: &[u8],
        at: OffsetDateTime,
    ) -> Result<Rotation, StoreError> {
        let sql = format!(
            "UPDATE sessions SET previous_hash = secret_hash, secret_hash = ?1, \
             successor_box = ?2, rotated_at = ?3, last_seen_at = MAX(last_seen_at, ?3) \
             WHERE secret_hash = ?4 AND transport = 'token' \
             AND absolute_expires_at > ?3 AND last_seen_at + idle_secs > ?3 \
             RETURNING {SESSION_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&next.0[..])
            .bind(sealed_next)
            .bind(ts(at))
            .bind(&presented.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        if let Some(row) = row {
            return Ok(Rotation::Rotated(session_from(&row)?));
        }
        let sql = format!(
            "SELECT {SESSION_COLUMNS}, rotated_at, successor_box FROM sessions \
             WHERE previous_hash = ?1 AND transport = 'token'"
        );
        let row = sqlx::query(&sql)
            .bind(&presented.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            None => Ok(Rotation::Unknown),
            Some(row) => Ok(Rotation::Spent {
                session: session_from(&row)?,
                rotated_at: from_ts(row.try_get("rotated_at").map_err(corrupt("rotated_at"))?)?,
                sealed_next: row
                    .try_get::<Option<Vec<u8>>, _>("successor_box")
                    .map_err(corrupt("successor_box"))?
                    .unwrap_or_default(),
            }),
        }
    }

    async fn revoke(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let sql = format!("DELETE FROM sessions WHERE id = ?1 RETURNING {SESSION_COLUMNS}");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let session = row.map(|r| session_from(&r)).transpose()?;
        if let Some(s) = &session {
            record_revocation(&mut tx, &s.id.to_string(), ts(s.absolute_expires_at)).await?;
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
        let keep = keep.map(|k| k.to_string()).unwrap_or_default();
        let rows = sqlx::query(
            "DELETE FROM sessions WHERE user_id = ?1 AND id <> ?2 \
             RETURNING id, absolute_expires_at",
        )
        .bind(user.to_string())
        .bind(&keep)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut ended = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id").map_err(corrupt("sessions.id"))?;
            let exp: i64 = row
                .try_get("absolute_expires_at")
                .map_err(corrupt("deadline"))?;
            record_revocation(&mut tx, &id, exp).await?;
            ended.push(SessionId::from_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
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
            "DELETE FROM sessions WHERE absolute_expires_at <= ?1 \
             OR last_seen_at + idle_secs + ?2 <= ?1",
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
impl ChangeFeed for SqliteStore {
    async fn changes_since(&self, cursor: i64) -> Result<Vec<(i64, Change)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, subject, expires_at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT 10000",
        )
        .bind(cursor)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq").map_err(corrupt("changes.seq"))?;
            let kind: String = row.try_get("kind").map_err(corrupt("changes.kind"))?;
            let subject: String = row.try_get("subject").map_err(corrupt("changes.subject"))?;
            let expires: i64 = row
                .try_get("expires_at")
                .map_err(corrupt("changes.expires_at"))?;
            let change = match kind.as_str() {
                "session_revoked" => Change::SessionRevoked {
                    id: SessionId::from_str(&subject)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    expires_at: from_ts(expires)?,
                },
                "user_changed" => Change::UserChanged(
                    UserId::from_str(&subject).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ),
                other => return Err(StoreError::Corrupt(format!("unknown change {other}"))),
            };
            out.push((seq, change));
        }
        Ok(out)
    }

    async fn change_head(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn revoked_sessions(
        &self,
        at: OffsetDateTime,
    ) -> Result<Vec<(SessionId, OffsetDateTime)>, StoreError> {
        let rows = sqlx::query(
            "SELECT subject, expires_at FROM changes \
             WHERE kind = 'session_revoked' AND expires_at > ?1",
        )
        .bind(ts(at))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("subject").map_err(corrupt("changes.subject"))?;
                let exp: i64 = r
                    .try_get("expires_at")
                    .map_err(corrupt("changes.expires_at"))?;
                Ok((
                    SessionId::from_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    from_ts(exp)?,
                ))
            })
            .collect()
    }

    async fn prune_changes(&self, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM changes WHERE expires_at <= ?1")
            .bind(ts(at))
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

fn key_from(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    let alg: String = row.try_get("alg").map_err(corrupt("signing_keys.alg"))?;
    Ok(StoredKey {
        kid: row.try_get("kid").map_err(corrupt("signing_keys.kid"))?,
        alg: alg.parse::<Algorithm>().map_err(StoreError::Corrupt)?,
        private_pkcs8: row
            .try_get("private_pkcs8")
            .map_err(corrupt("private_pkcs8"))?,
        created_at: from_ts(row.try_get("created_at").map_err(corrupt("created_at"))?)?,
        retired_at: row
            .try_get::<Option<i64>, _>("retired_at")
            .map_err(corrupt("retired_at"))?
            .map(from_ts)
            .transpose()?,
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(key_from).collect()
    }

    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL")
            .bind(ts(key.created_at))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_pkcs8, created_at, retired_at) \
             VALUES (?1, ?2, ?3, ?4, NULL)",
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

    async fn delete_keys_retired_before(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
        )
        .bind(ts(before))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
