//! [`MailStore`](super::MailStore) in SQL, once for both SQL backends (`sql_mail_store!`
//! expands it for SQLite and PostgreSQL next to `sql_store!`, whose change log it writes to).

macro_rules! sql_mail_store {
    ($store:ty, $conn:ty) => {
        fn queued_row<R: super::rows::RowExt>(
            r: &R,
        ) -> Result<crate::mail::QueuedMail, super::StoreError> {
            Ok(crate::mail::QueuedMail {
                mail: crate::mail::OutgoingMail {
                    id: r.text("id")?,
                    to: r.text("recipient")?,
                    subject: r.text("subject")?,
                    text: r.text("text_body")?,
                    html: r.text("html_body")?,
                    queued_at: super::rows::from_ts(r.int("created_at")?)?,
                },
                attempts: r.int("attempts")?,
            })
        }

        async fn enqueue_on(
            conn: &mut $conn,
            mail: &crate::mail::OutgoingMail,
        ) -> Result<(), super::StoreError> {
            sqlx::query(
                "INSERT INTO outbox (id, recipient, subject, text_body, html_body, created_at, \
                 next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(&mail.id)
            .bind(&mail.to)
            .bind(&mail.subject)
            .bind(&mail.text)
            .bind(&mail.html)
            .bind(mail.queued_at.unix_timestamp())
            .execute(&mut *conn)
            .await
            .map_err(super::sql::map_err)?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl super::MailStore for $store {
            async fn enqueue_mail(
                &self,
                mail: &crate::mail::OutgoingMail,
            ) -> Result<(), super::StoreError> {
                let mut conn = self.pool.acquire().await.map_err(super::sql::map_err)?;
                enqueue_on(&mut conn, mail).await
            }

            async fn issue_link(
                &self,
                link: &crate::mail::LinkToken,
                mail: &crate::mail::OutgoingMail,
            ) -> Result<(), super::StoreError> {
                let mut tx = self.pool.begin().await.map_err(super::sql::map_err)?;
                sqlx::query(
                    "INSERT INTO link_tokens (token_hash, user_id, purpose, bound, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&link.hash.0[..])
                .bind(link.user_id.to_string())
                .bind(link.purpose.as_str())
                .bind(&link.bound)
                .bind(link.expires_at.unix_timestamp())
                .execute(&mut *tx)
                .await
                .map_err(super::sql::map_err)?;
                enqueue_on(&mut tx, mail).await?;
                tx.commit().await.map_err(super::sql::map_err)
            }

            async fn take_link(
                &self,
                hash: &crate::session::TokenHash,
                purpose: crate::mail::LinkPurpose,
                now: time::OffsetDateTime,
            ) -> Result<Option<crate::mail::LinkToken>, super::StoreError> {
                use super::rows::RowExt;
                let row = sqlx::query(
                    "DELETE FROM link_tokens WHERE token_hash = $1 \
                     RETURNING user_id, purpose, bound, expires_at",
                )
                .bind(&hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                let Some(row) = row else { return Ok(None) };
                if row.text("purpose")? != purpose.as_str()
                    || row.int("expires_at")? <= now.unix_timestamp()
                {
                    return Ok(None);
                }
                Ok(Some(crate::mail::LinkToken {
                    hash: *hash,
                    user_id: row
                        .text("user_id")?
                        .parse()
                        .map_err(|_| super::StoreError::Corrupt("link_tokens.user_id".into()))?,
                    purpose,
                    bound: row.text("bound")?,
                    expires_at: super::rows::from_ts(row.int("expires_at")?)?,
                }))
            }

            async fn mark_email_verified(
                &self,
                user: crate::user::UserId,
                email: &crate::user::Email,
                at: time::OffsetDateTime,
            ) -> Result<bool, super::StoreError> {
                let mut tx = self.pool.begin().await.map_err(super::sql::map_err)?;
                let changed = sqlx::query(
                    "UPDATE users SET email_verified_at = $1, updated_at = $2 \
                     WHERE id = $3 AND email = $4",
                )
                .bind(at.unix_timestamp())
                .bind(self.now())
                .bind(user.to_string())
                .bind(email.as_str())
                .execute(&mut *tx)
                .await
                .map_err(super::sql::map_err)?
                .rows_affected()
                    == 1;
                if changed {
                    record_user_change(&mut tx, user, self.now()).await?;
                }
                tx.commit().await.map_err(super::sql::map_err)?;
                Ok(changed)
            }

            async fn change_email(
                &self,
                user: crate::user::UserId,
                from: &crate::user::Email,
                to: &crate::user::Email,
                at: time::OffsetDateTime,
            ) -> Result<bool, super::StoreError> {
                let mut tx = self.pool.begin().await.map_err(super::sql::map_err)?;
                let changed = sqlx::query(
                    "UPDATE users SET email = $1, email_verified_at = $2, updated_at = $3 \
                     WHERE id = $4 AND email = $5",
                )
                .bind(to.as_str())
                .bind(at.unix_timestamp())
                .bind(self.now())
                .bind(user.to_string())
                .bind(from.as_str())
                .execute(&mut *tx)
                .await
                .map_err(super::sql::map_err)?
                .rows_affected()
                    == 1;
                if changed {
                    sqlx::query("DELETE FROM link_tokens WHERE user_id = $1 AND purpose <> $2")
                        .bind(user.to_string())
                        .bind(crate::mail::LinkPurpose::CancelEmailChange.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(super::sql::map_err)?;
                    record_user_change(&mut tx, user, self.now()).await?;
                }
                tx.commit().await.map_err(super::sql::map_err)?;
                Ok(changed)
            }

            async fn delete_expired_links(
                &self,
                now: time::OffsetDateTime,
            ) -> Result<u64, super::StoreError> {
                Ok(sqlx::query("DELETE FROM link_tokens WHERE expires_at <= $1")
                    .bind(now.unix_timestamp())
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?
                    .rows_affected())
            }

            async fn void_links(
                &self,
                user: crate::user::UserId,
                purpose: crate::mail::LinkPurpose,
            ) -> Result<u64, super::StoreError> {
                Ok(
                    sqlx::query("DELETE FROM link_tokens WHERE user_id = $1 AND purpose = $2")
                        .bind(user.to_string())
                        .bind(purpose.as_str())
                        .execute(&self.pool)
                        .await
                        .map_err(super::sql::map_err)?
                        .rows_affected(),
                )
            }

            async fn claim_mail(
                &self,
                now: time::OffsetDateTime,
                until: time::OffsetDateTime,
                limit: usize,
            ) -> Result<Vec<crate::mail::QueuedMail>, super::StoreError> {
                // The lease condition is repeated outside the subquery: PostgreSQL checks it
                // again on a row another claimer has just leased, and skips that row.
                let rows = sqlx::query(
                    "UPDATE outbox SET claimed_until = $1, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= $2 \
                       AND (claimed_until IS NULL OR claimed_until <= $2) \
                       ORDER BY next_attempt_at LIMIT $3) \
                     AND (claimed_until IS NULL OR claimed_until <= $2) \
                     RETURNING id, recipient, subject, text_body, html_body, created_at, attempts",
                )
                .bind(until.unix_timestamp())
                .bind(now.unix_timestamp())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                rows.iter().map(queued_row).collect()
            }

            async fn mail_delivered(&self, id: &str) -> Result<(), super::StoreError> {
                sqlx::query("DELETE FROM outbox WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?;
                Ok(())
            }

            async fn mail_failed(
                &self,
                id: &str,
                retry_at: time::OffsetDateTime,
                error: &str,
            ) -> Result<(), super::StoreError> {
                sqlx::query(
                    "UPDATE outbox SET claimed_until = NULL, next_attempt_at = $1, \
                     last_error = $2 WHERE id = $3",
                )
                .bind(retry_at.unix_timestamp())
                .bind(error)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(super::sql::map_err)?;
                Ok(())
            }

            async fn mail_backlog(&self) -> Result<u64, super::StoreError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(super::sql::map_err)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    };
}

pub(super) use sql_mail_store;
