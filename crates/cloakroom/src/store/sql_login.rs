//! A login stored in one round trip, for both SQL backends: the passkey's use (when the login
//! is a passkey's), the session and its event, and the user's sessions past the cap read back.
//! The statements differ by dialect: SQLite runs them as one script in a transaction (the
//! driver binds `$N` across its statements), PostgreSQL as one statement whose parts are
//! data-modifying `WITH` clauses. Both take the same parameters, bound by `sql_login!`. The
//! session's columns and their binding are also `insert_session`'s.

/// The session's columns, as `$1` to `$17` give them (see `bind_session!`).
macro_rules! session_columns {
    () => {
        "id, user_id, transport, secret_hash, remember, created_at, authenticated_at, \
         last_seen_at, idle_secs, absolute_expires_at, ip, user_agent, credentials_gen, \
         refresh_family, amr, dpop_jkt, dbsc_key"
    };
}

/// The session's values, then the passkey's use: whether there is one ($18), its new
/// credential ($19), time ($20), challenge ($21) and factor ($22); the event's kind ($23),
/// time ($24), detail ($25), address ($27) and user agent ($28); how many sessions to keep
/// ($26, the largest `i64` for all: then the sessions are not read); the passkey's
/// credential as it was read ($29). The passkey's update must match `FactorStore::use_passkey`.
macro_rules! session_values {
    () => {
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17"
    };
}

/// Binds a session's columns, in `session_columns!` order, to a query.
macro_rules! bind_session {
    ($query:expr, $s:expr) => {
        $query
            .bind($s.id.to_string())
            .bind($s.user_id.to_string())
            .bind($s.transport.as_str())
            .bind(&$s.secret_hash.0[..])
            .bind($s.remember)
            .bind($s.created_at.unix_timestamp())
            .bind($s.authenticated_at.unix_timestamp())
            .bind($s.last_seen_at.unix_timestamp())
            .bind($s.idle_timeout.whole_seconds())
            .bind($s.absolute_expires_at.unix_timestamp())
            .bind(&$s.ip)
            .bind(&$s.user_agent)
            .bind($s.credentials_gen)
            .bind($s.refresh_family.map(|f| f.0.to_vec()))
            .bind($s.amr.encode())
            .bind(&$s.dpop_jkt)
            .bind(&$s.dbsc_key)
    };
}

/// A session's insert, for `SessionStore::insert_session`.
pub(super) const INSERT_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ") VALUES (",
    session_values!(),
    ")"
);

pub(super) const SQLITE: &str = concat!(
    "BEGIN IMMEDIATE; \
     UPDATE factors SET secret = $19, last_used_at = $20, last_challenge = $21 \
     WHERE $18 AND id = $22 AND user_id = $2 AND kind = 'passkey' \
     AND (last_challenge IS NULL OR last_challenge < $21) AND secret = $29; \
     INSERT INTO sessions (",
    session_columns!(),
    ") SELECT ",
    session_values!(),
    " WHERE NOT $18 OR changes() = 1; \
     INSERT INTO security_events (user_id, kind, at, ip, detail, user_agent) \
     SELECT $2, $23, $24, $27, $25, $28 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1); \
     SELECT 'stored' AS what, id FROM sessions WHERE id = $1 \
     UNION ALL SELECT * FROM (SELECT 'past' AS what, id FROM sessions WHERE user_id = $2 \
     AND $26 < 9223372036854775807 AND EXISTS (SELECT 1 FROM sessions WHERE id = $1) \
     ORDER BY created_at DESC, id LIMIT 1000 OFFSET $26); \
     COMMIT;"
);

/// The `WITH` clauses see the tables as they were before the statement: the sessions past the
/// cap are the older ones past `keep - 1`, the new session being the newest.
pub(super) const POSTGRES: &str = concat!(
    "WITH used AS (\
     UPDATE factors SET secret = $19, last_used_at = $20, last_challenge = $21 \
     WHERE $18 AND id = $22 AND user_id = $2 AND kind = 'passkey' \
     AND (last_challenge IS NULL OR last_challenge < $21) AND secret = $29 RETURNING id), \
     started AS (INSERT INTO sessions (",
    session_columns!(),
    ") SELECT ",
    session_values!(),
    " WHERE NOT $18 OR EXISTS (SELECT 1 FROM used) RETURNING id), \
     recorded AS (INSERT INTO security_events (user_id, kind, at, ip, detail, user_agent) \
     SELECT $2, $23, $24, $27, $25, $28 FROM started) \
     SELECT 'stored' AS what, id FROM started \
     UNION ALL (SELECT 'past' AS what, id FROM sessions WHERE user_id = $2 \
     AND $26 < 9223372036854775807 AND EXISTS (SELECT 1 FROM started) \
     ORDER BY created_at DESC, id LIMIT 1000 OFFSET GREATEST($26 - 1, 0))"
);

/// `store_login_sql`, for a SQL store: runs `sql` (one of the above) on one connection; on a
/// failure, `rollback` ends what the script may have left open (SQLite), and the login is
/// stored step by step instead.
macro_rules! sql_login {
    ($store:ty) => {
        impl $store {
            async fn store_login_sql(
                &self,
                login: super::NewLogin<'_>,
                sql: &'static str,
                rollback: bool,
            ) -> Result<Option<Vec<crate::session::SessionId>>, super::StoreError> {
                match self.store_login_once(login, sql, rollback).await {
                    Ok(stored) => Ok(stored),
                    // Nothing was written: perhaps only the event could not be (a full disk
                    // with room for the session yet), which must not fail the login.
                    Err(e) => {
                        tracing::warn!(error = %e, "a login's write failed whole; stored step by step");
                        super::login_in_steps(self, login).await
                    }
                }
            }

            async fn store_login_once(
                &self,
                login: super::NewLogin<'_>,
                sql: &'static str,
                rollback: bool,
            ) -> Result<Option<Vec<crate::session::SessionId>>, super::StoreError> {
                use sqlx::Row;
                let s = login.session;
                let used = login.passkey;
                let e = login.event;
                let mut conn = self.pool.acquire().await.map_err(super::sql::map_err)?;
                let rows = super::sql_login::bind_session!(sqlx::query(sql), s)
                    .bind(used.is_some())
                    .bind(used.map(|u| u.credential.as_slice()))
                    .bind(used.map(|u| u.at.unix_timestamp()))
                    .bind(used.map(|u| u.challenge.as_slice()))
                    .bind(used.map(|u| u.factor.to_string()))
                    .bind(e.kind.as_str())
                    .bind(e.at.unix_timestamp())
                    .bind(&e.detail)
                    .bind(i64::try_from(login.keep).unwrap_or(i64::MAX))
                    .bind(&e.ip)
                    .bind(&e.user_agent)
                    .bind(used.map(|u| u.previous.as_slice()))
                    .fetch_all(&mut *conn)
                    .await;
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(err) => {
                        if rollback {
                            // Ignored: a connection that stays inside a transaction is closed
                            // when it is given back (see `fit_for_reuse`).
                            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                        }
                        return Err(super::sql::map_err(err));
                    }
                };
                let mut stored = false;
                let mut past = Vec::new();
                for row in &rows {
                    let what: String = row.try_get(0).map_err(super::sql::map_err)?;
                    if what == "stored" {
                        stored = true;
                    } else {
                        past.push(super::rows::session_id(row, "id")?);
                    }
                }
                Ok(stored.then_some(past))
            }
        }
    };
}

pub(super) use {bind_session, sql_login};
