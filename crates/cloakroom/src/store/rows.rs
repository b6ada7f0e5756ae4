//! Reading rows back into domain values, the same way for every SQL backend. Times are stored
//! as seconds since the epoch; anything that does not read back is [`StoreError::Corrupt`].

#[cfg(feature = "postgres")]
use sqlx::postgres::PgRow;
#[cfg(feature = "sqlite")]
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use std::str::FromStr;
use time::{Duration, OffsetDateTime};

use super::{Change, StoreError};
use crate::jwt::{Algorithm, StoredKey};
use crate::session::{Session, SessionId, TokenHash};
use crate::user::{Email, Role, User, UserId};

/// Typed column access shared by the SQL backends.
pub(super) trait RowExt {
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
}

fn corrupt(col: &str, e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(format!("{col}: {e}"))
}

macro_rules! row_ext {
    ($row:ty, $flag:expr) => {
        impl RowExt for $row {
            fn int(&self, col: &str) -> Result<i64, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn text(&self, col: &str) -> Result<String, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.try_get(col).map_err(|e| corrupt(col, e))
            }
            fn flag(&self, col: &str) -> Result<bool, StoreError> {
                $flag(self, col)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
row_ext!(SqliteRow, |r: &SqliteRow, col: &str| r
    .try_get::<bool, _>(col)
    .map_err(|e| corrupt(col, e)));
#[cfg(feature = "postgres")]
row_ext!(PgRow, |r: &PgRow, col: &str| r
    .try_get::<bool, _>(col)
    .map_err(|e| corrupt(col, e)));

pub(super) fn from_ts(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    T::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn hash(bytes: Vec<u8>) -> Result<TokenHash, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("token hash is not 32 bytes".into()))?;
    Ok(TokenHash(arr))
}

/// Roles are kept as a JSON array of names.
pub(super) fn roles_json(roles: &[Role]) -> Result<String, StoreError> {
    let names: Vec<&str> = roles.iter().map(Role::as_str).collect();
    serde_json::to_string(&names).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn user(row: &impl RowExt) -> Result<User, StoreError> {
    let roles: Vec<String> = serde_json::from_str(&row.text("roles")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(User {
        id: parse("users.id", &row.text("id")?)?,
        email: Email::from_stored(row.text("email")?),
        roles: roles
            .iter()
            .map(|r| Role::parse(r).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<_, _>>()?,
        disabled: row.flag("disabled")?,
        created_at: from_ts(row.int("created_at")?)?,
        email_verified: row.opt_int("email_verified_at")?.is_some(),
        credentials_gen: row.int("credentials_gen")?,
    })
}

/// The session columns every query reads, in the order [`session`] expects nothing of.
pub(super) const SESSION_COLUMNS: &str = "id, user_id, transport, secret_hash, remember, \
     created_at, authenticated_at, last_seen_at, idle_secs, absolute_expires_at, ip, user_agent, credentials_gen, refresh_family, amr, dpop_jkt, dbsc_key";

pub(super) fn session(row: &impl RowExt) -> Result<Session, StoreError> {
    Ok(Session {
        id: parse("sessions.id", &row.text("id")?)?,
        user_id: parse::<UserId>("sessions.user_id", &row.text("user_id")?)?,
        transport: row
            .text("transport")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        secret_hash: hash(row.bytes("secret_hash")?)?,
        remember: row.flag("remember")?,
        created_at: from_ts(row.int("created_at")?)?,
        authenticated_at: from_ts(row.int("authenticated_at")?)?,
        last_seen_at: from_ts(row.int("last_seen_at")?)?,
        idle_timeout: Duration::seconds(row.int("idle_secs")?),
        absolute_expires_at: from_ts(row.int("absolute_expires_at")?)?,
        ip: row.opt_text("ip")?,
        user_agent: row.opt_text("user_agent")?,
        credentials_gen: row.int("credentials_gen")?,
        refresh_family: row.opt_bytes("refresh_family")?.map(hash).transpose()?,
        amr: crate::Amr::decode(&row.text("amr")?).map_err(StoreError::Corrupt)?,
        dpop_jkt: row.opt_text("dpop_jkt")?,
        dbsc_key: row.opt_text("dbsc_key")?,
    })
}

pub(super) fn session_id(row: &impl RowExt, col: &str) -> Result<SessionId, StoreError> {
    parse(col, &row.text(col)?)
}

pub(super) fn change(row: &impl RowExt) -> Result<(i64, Change), StoreError> {
    let subject = row.text("subject")?;
    let change = match row.text("kind")?.as_str() {
        "session_revoked" => Change::SessionRevoked {
            id: parse("changes.subject", &subject)?,
            expires_at: from_ts(row.int("expires_at")?)?,
        },
        "user_changed" => Change::UserChanged(parse("changes.subject", &subject)?),
        other => return Err(StoreError::Corrupt(format!("unknown change {other}"))),
    };
    Ok((row.int("seq")?, change))
}

pub(super) fn key(row: &impl RowExt) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        kid: row.text("kid")?,
        alg: row
            .text("alg")?
            .parse::<Algorithm>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        private_pkcs8: row.bytes("private_pkcs8")?,
        created_at: from_ts(row.int("created_at")?)?,
        retired_at: row.opt_int("retired_at")?.map(from_ts).transpose()?,
    })
}

/// The factor columns every query reads.
pub(super) const FACTOR_COLUMNS: &str =
    "id, user_id, kind, name, confirmed, created_at, last_used_at";

pub(super) fn factor(row: &impl RowExt) -> Result<crate::factor::Factor, StoreError> {
    Ok(crate::factor::Factor {
        id: parse("factors.id", &row.text("id")?)?,
        user_id: parse("factors.user_id", &row.text("user_id")?)?,
        kind: parse("factors.kind", &row.text("kind")?)?,
        name: row.opt_text("name")?,
        confirmed: row.flag("confirmed")?,
        created_at: from_ts(row.int("created_at")?)?,
        last_used_at: row.opt_int("last_used_at")?.map(from_ts).transpose()?,
    })
}

pub(super) fn mfa_challenge(row: &impl RowExt) -> Result<crate::factor::MfaChallenge, StoreError> {
    Ok(crate::factor::MfaChallenge {
        token_hash: hash(row.bytes("token_hash")?)?,
        user_id: parse("mfa_challenges.user_id", &row.text("user_id")?)?,
        credentials_gen: row.int("credentials_gen")?,
        transport: row
            .text("transport")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        remember: row.flag("remember")?,
        attempts: u32::try_from(row.int("attempts")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        expires_at: from_ts(row.int("expires_at")?)?,
    })
}
