//! [`FactorStore`](super::FactorStore) and [`EventStore`](super::EventStore) in SQL, once for
//! both SQL backends (`sql_factor_store!` and `sql_event_store!` expand them for SQLite and
//! PostgreSQL, as `sql_store!` does the other traits).

macro_rules! sql_factor_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl super::FactorStore for $store {
            async fn insert_factor(
                &self,
                f: &crate::factor::Factor,
                secret: Option<&[u8]>,
            ) -> Result<(), super::StoreError> {
                sqlx::query(
                    "INSERT INTO factors (id, user_id, kind, name, secret, confirmed, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(f.id.to_string())
                .bind(f.user_id.to_string())
                .bind(f.kind.as_str())
                .bind(&f.name)
                .bind(secret)
                .bind(f.confirmed)
                .bind(f.created_at.unix_timestamp())
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(())
            }

            async fn list_factors(
                &self,
                user: crate::user::UserId,
            ) -> Result<Vec<crate::factor::Factor>, super::StoreError> {
                let sql = format!(
                    "SELECT {} FROM factors WHERE user_id = $1 ORDER BY created_at, id",
                    super::rows::FACTOR_COLUMNS
                );
                sqlx::query(&sql)
                    .bind(user.to_string())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .iter()
                    .map(super::rows::factor)
                    .collect()
            }

            async fn totp_secret(
                &self,
                user: crate::user::UserId,
                id: crate::factor::FactorId,
            ) -> Result<Option<(Vec<u8>, Option<i64>)>, super::StoreError> {
                use super::rows::RowExt;
                let row = sqlx::query(
                    "SELECT secret, last_step FROM factors \
                     WHERE id = $1 AND user_id = $2 AND kind = 'totp'",
                )
                .bind(id.to_string())
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                row.map(|r| Ok((r.bytes("secret")?, r.opt_int("last_step")?)))
                    .transpose()
            }

            async fn accept_step(
                &self,
                user: crate::user::UserId,
                id: crate::factor::FactorId,
                step: i64,
                at: time::OffsetDateTime,
            ) -> Result<bool, super::StoreError> {
                let done = sqlx::query(
                    "UPDATE factors SET last_step = $1, last_used_at = $2, confirmed = TRUE \
                     WHERE id = $3 AND user_id = $4 AND kind = 'totp' \
                     AND (last_step IS NULL OR last_step < $1)",
                )
                .bind(step)
                .bind(at.unix_timestamp())
                .bind(id.to_string())
                .bind(user.to_string())
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_factor(
                &self,
                user: crate::user::UserId,
                id: crate::factor::FactorId,
            ) -> Result<bool, super::StoreError> {
                let done = sqlx::query("DELETE FROM factors WHERE id = $1 AND user_id = $2")
                    .bind(id.to_string())
                    .bind(user.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_factors(
                &self,
                user: crate::user::UserId,
            ) -> Result<u64, super::StoreError> {
                let done = sqlx::query("DELETE FROM factors WHERE user_id = $1")
                    .bind(user.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?;
                Ok(done.rows_affected())
            }

            async fn replace_recovery_codes(
                &self,
                f: &crate::factor::Factor,
                codes: &[crate::session::TokenHash],
            ) -> Result<(), super::StoreError> {
                let map = super::sql::map_err;
                let mut tx = self.pool.begin().await.map_err(map)?;
                sqlx::query("DELETE FROM factors WHERE user_id = $1 AND kind = 'recovery_codes'")
                    .bind(f.user_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map)?;
                sqlx::query(
                    "INSERT INTO factors (id, user_id, kind, name, confirmed, created_at) \
                     VALUES ($1, $2, 'recovery_codes', $3, $4, $5)",
                )
                .bind(f.id.to_string())
                .bind(f.user_id.to_string())
                .bind(&f.name)
                .bind(f.confirmed)
                .bind(f.created_at.unix_timestamp())
                .execute(&mut *tx)
                .await
                .map_err(map)?;
                for code in codes {
                    sqlx::query(
                        "INSERT INTO recovery_codes (code_hash, factor_id, user_id) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(&code.0[..])
                    .bind(f.id.to_string())
                    .bind(f.user_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map)?;
                }
                tx.commit().await.map_err(map)?;
                Ok(())
            }

            async fn use_recovery_code(
                &self,
                user: crate::user::UserId,
                code: &crate::session::TokenHash,
                at: time::OffsetDateTime,
            ) -> Result<bool, super::StoreError> {
                let map = super::sql::map_err;
                let mut tx = self.pool.begin().await.map_err(map)?;
                let spent = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1 \
                     WHERE code_hash = $2 AND user_id = $3 AND used_at IS NULL",
                )
                .bind(at.unix_timestamp())
                .bind(&code.0[..])
                .bind(user.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map)?
                .rows_affected()
                    == 1;
                if spent {
                    sqlx::query(
                        "UPDATE factors SET last_used_at = $1 \
                         WHERE user_id = $2 AND kind = 'recovery_codes'",
                    )
                    .bind(at.unix_timestamp())
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map)?;
                }
                tx.commit().await.map_err(map)?;
                Ok(spent)
            }

            async fn recovery_codes_left(
                &self,
                user: crate::user::UserId,
            ) -> Result<u64, super::StoreError> {
                use super::rows::RowExt;
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM recovery_codes \
                     WHERE user_id = $1 AND used_at IS NULL",
                )
                .bind(user.to_string())
                .fetch_one(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(u64::try_from(row.int("n")?).unwrap_or(0))
            }

            async fn insert_mfa_challenge(
                &self,
                c: &crate::factor::MfaChallenge,
            ) -> Result<(), super::StoreError> {
                sqlx::query(
                    "INSERT INTO mfa_challenges (token_hash, user_id, credentials_gen, \
                     transport, remember, attempts, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.token_hash.0[..])
                .bind(c.user_id.to_string())
                .bind(c.credentials_gen)
                .bind(c.transport.as_str())
                .bind(c.remember)
                .bind(i64::from(c.attempts))
                .bind(c.expires_at.unix_timestamp())
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(())
            }

            async fn try_mfa_challenge(
                &self,
                token: &crate::session::TokenHash,
                now: time::OffsetDateTime,
                max_attempts: u32,
            ) -> Result<Option<crate::factor::MfaChallenge>, super::StoreError> {
                let row = sqlx::query(
                    "UPDATE mfa_challenges SET attempts = attempts + 1 \
                     WHERE token_hash = $1 AND expires_at > $2 AND attempts < $3 \
                     RETURNING token_hash, user_id, credentials_gen, transport, remember, \
                     attempts - 1 AS attempts, expires_at",
                )
                .bind(&token.0[..])
                .bind(now.unix_timestamp())
                .bind(i64::from(max_attempts))
                .fetch_optional(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                row.as_ref().map(super::rows::mfa_challenge).transpose()
            }

            async fn consume_mfa_challenge(
                &self,
                token: &crate::session::TokenHash,
            ) -> Result<bool, super::StoreError> {
                let done = sqlx::query("DELETE FROM mfa_challenges WHERE token_hash = $1")
                    .bind(&token.0[..])
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_expired_challenges(
                &self,
                now: time::OffsetDateTime,
            ) -> Result<u64, super::StoreError> {
                let deleted = sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= $1")
                    .bind(now.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .rows_affected();
                Ok(deleted)
            }

            async fn totp_secrets(
                &self,
            ) -> Result<Vec<(crate::factor::FactorId, Vec<u8>)>, super::StoreError> {
                use super::rows::RowExt;
                sqlx::query("SELECT id, secret FROM factors WHERE kind = 'totp'")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .iter()
                    .map(|r| {
                        let id = r
                            .text("id")?
                            .parse()
                            .map_err(|e: uuid::Error| super::StoreError::Corrupt(e.to_string()))?;
                        Ok((id, r.bytes("secret")?))
                    })
                    .collect()
            }

            async fn replace_totp_secret(
                &self,
                id: crate::factor::FactorId,
                old: &[u8],
                new: &[u8],
            ) -> Result<bool, super::StoreError> {
                let done = sqlx::query(
                    "UPDATE factors SET secret = $1 WHERE id = $2 AND kind = 'totp' \
                     AND secret = $3",
                )
                .bind(new)
                .bind(id.to_string())
                .bind(old)
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_passkey(
                &self,
                f: &crate::factor::Factor,
                credential_id: &[u8],
                data: &[u8],
            ) -> Result<(), super::StoreError> {
                sqlx::query(
                    "INSERT INTO factors (id, user_id, kind, name, secret, confirmed, created_at, \
                     credential_id) VALUES ($1, $2, 'passkey', $3, $4, $5, $6, $7)",
                )
                .bind(f.id.to_string())
                .bind(f.user_id.to_string())
                .bind(&f.name)
                .bind(data)
                .bind(f.confirmed)
                .bind(f.created_at.unix_timestamp())
                .bind(credential_id)
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(())
            }

            async fn passkeys(
                &self,
                user: crate::user::UserId,
            ) -> Result<Vec<(crate::factor::Factor, Vec<u8>)>, super::StoreError> {
                use super::rows::RowExt;
                let sql = format!(
                    "SELECT {}, secret FROM factors WHERE user_id = $1 AND kind = 'passkey' \
                     ORDER BY created_at, id",
                    super::rows::FACTOR_COLUMNS
                );
                sqlx::query(&sql)
                    .bind(user.to_string())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .iter()
                    .map(|r| Ok((super::rows::factor(r)?, r.bytes("secret")?)))
                    .collect()
            }

            async fn use_passkey(
                &self,
                used: &crate::factor::PasskeyUse,
            ) -> Result<bool, super::StoreError> {
                let done = sqlx::query(
                    "UPDATE factors SET secret = $1, last_used_at = $2, last_challenge = $3 \
                     WHERE id = $4 AND user_id = $5 AND kind = 'passkey' \
                     AND (last_challenge IS NULL OR last_challenge < $3) AND secret = $6",
                )
                .bind(&used.credential)
                .bind(used.at.unix_timestamp())
                .bind(&used.challenge)
                .bind(used.factor.to_string())
                .bind(used.user.to_string())
                .bind(&used.previous)
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

/// [`EventStore`](super::EventStore) in SQL, for both SQL backends.
macro_rules! sql_event_store {
    ($store:ty) => {
        fn event_row<R: super::rows::RowExt>(
            r: &R,
        ) -> Result<crate::events::SecurityEvent, super::StoreError> {
            let corrupt = |e: String| super::StoreError::Corrupt(e);
            Ok(crate::events::SecurityEvent {
                user_id: r
                    .text("user_id")?
                    .parse()
                    .map_err(|_| corrupt("user id".into()))?,
                kind: r.text("kind")?.parse().map_err(corrupt)?,
                at: super::rows::from_ts(r.int("at")?)?,
                ip: r.opt_text("ip")?,
                user_agent: r.opt_text("user_agent")?,
                detail: r.opt_text("detail")?,
            })
        }

        #[async_trait::async_trait]
        impl super::EventStore for $store {
            async fn record_event(
                &self,
                e: &crate::events::SecurityEvent,
            ) -> Result<(), super::StoreError> {
                sqlx::query(
                    "INSERT INTO security_events (user_id, kind, at, ip, detail, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(e.user_id.to_string())
                .bind(e.kind.as_str())
                .bind(e.at.unix_timestamp())
                .bind(&e.ip)
                .bind(&e.detail)
                .bind(&e.user_agent)
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(())
            }

            async fn events(
                &self,
                user: crate::user::UserId,
                limit: usize,
            ) -> Result<Vec<crate::events::SecurityEvent>, super::StoreError> {
                let rows = sqlx::query(
                    "SELECT user_id, kind, at, ip, detail, user_agent FROM security_events \
                     WHERE user_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(user.to_string())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                rows.iter().map(event_row).collect()
            }

            async fn events_since(
                &self,
                user: Option<crate::user::UserId>,
                since: time::OffsetDateTime,
                limit: usize,
            ) -> Result<Vec<crate::events::SecurityEvent>, super::StoreError> {
                let rows = sqlx::query(
                    "SELECT user_id, kind, at, ip, detail, user_agent FROM security_events \
                     WHERE ($1 IS NULL OR user_id = $1) AND at >= $2 \
                     ORDER BY seq DESC LIMIT $3",
                )
                .bind(user.map(|u| u.to_string()))
                .bind(since.unix_timestamp())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                rows.iter().map(event_row).collect()
            }

            async fn delete_events_before(
                &self,
                before: time::OffsetDateTime,
            ) -> Result<u64, super::StoreError> {
                Ok(sqlx::query("DELETE FROM security_events WHERE at < $1")
                    .bind(before.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .rows_affected())
            }
        }
    };
}

pub(super) use sql_event_store;
pub(super) use sql_factor_store;
