//! Sessions in Redis: one hash per session, an index per user, pointers from secrets and ids,
//! and Lua scripts where a change must be a single compare-and-set.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use redis::Script;
use std::collections::HashMap;
use std::sync::LazyLock;
use time::{Duration, OffsetDateTime};

use super::{feed, hex, map_err, RedisStore};
use crate::session::{Session, SessionId, TokenHash};
use crate::store::{Rotation, SessionStore, StoreError};
use crate::user::UserId;

/// Rotates a refresh token (KEYS: session; ARGV: presented, next, sealed successor, at, grace,
/// lineage; the session takes the lineage as its family if it has none):
/// the compare-and-set that makes concurrent rotations of one token mint one successor.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local h = redis.call('HMGET', KEYS[1], 'cur', 'prev', 'tr', 'seen', 'idle', 'abs')
        if not h[1] or h[3] ~= 'token' then return false end
        local at = tonumber(ARGV[4])
        if h[1] == ARGV[1] then
          local seen = tonumber(h[4])
          if tonumber(h[6]) <= at or seen + tonumber(h[5]) <= at then return false end
          redis.call('HSET', KEYS[1], 'prev', ARGV[1], 'cur', ARGV[2], 'sealed', ARGV[3], 'rot', ARGV[4])
          redis.call('HSETNX', KEYS[1], 'fam', ARGV[6])
          if at > seen then
            redis.call('HSET', KEYS[1], 'seen', ARGV[4])
            seen = at
          end
          local deadline = math.min(seen + tonumber(h[5]), tonumber(h[6]))
          redis.call('PEXPIRE', KEYS[1], math.max(1000, (deadline - at + tonumber(ARGV[5])) * 1000))
          return {'rotated', h[2] or '', unpack(redis.call('HGETALL', KEYS[1]))}
        end
        if h[2] == ARGV[1] then
          return {'spent', '', unpack(redis.call('HGETALL', KEYS[1]))}
        end
        return false
        ",
    )
});

/// Swaps a session's secret if it is still `old` (KEYS: session; ARGV: old, new, at).
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[1], 'cur') ~= ARGV[1] then return 0 end
        redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'prev', ARGV[1], 'rot', ARGV[3])
        return 1
        ",
    )
});

/// Moves last activity forward and extends the expiry (KEYS: session; ARGV: at, grace).
/// Never re-creates a deleted session. Sent with EVAL in a pipeline, which cannot fall back
/// from EVALSHA on NOSCRIPT.
const TOUCH: &str = r"
        local h = redis.call('HMGET', KEYS[1], 'seen', 'idle', 'abs')
        if not h[1] then return -1 end
        local at = tonumber(ARGV[1])
        if at <= tonumber(h[1]) then return 0 end
        redis.call('HSET', KEYS[1], 'seen', ARGV[1])
        local deadline = math.min(at + tonumber(h[2]), tonumber(h[3]))
        redis.call('PEXPIRE', KEYS[1], math.max(1000, (deadline - at + tonumber(ARGV[2])) * 1000))
        return 1
        ";

/// Deletes one session if it is over (KEYS: session, index; ARGV: at, grace, id). Answers -1
/// if it was already gone, -2 if deleted now, else its logical deadline.
const SWEEP_ONE: &str = r"
        local h = redis.call('HMGET', KEYS[1], 'seen', 'idle', 'abs')
        if not h[1] then
          redis.call('ZREM', KEYS[2], ARGV[3])
          return -1
        end
        local at = tonumber(ARGV[1])
        local idle_end = tonumber(h[1]) + tonumber(h[2])
        if tonumber(h[3]) <= at or idle_end + tonumber(ARGV[2]) <= at then
          redis.call('DEL', KEYS[1])
          redis.call('ZREM', KEYS[2], ARGV[3])
          return -2
        end
        return math.min(idle_end, tonumber(h[3]))
        ";

/// Deletes some of one user's sessions at once (KEYS: index, then the sessions; ARGV: their
/// ids); answers the ids that existed.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local gone = {}
        for i = 2, #KEYS do
          if redis.call('DEL', KEYS[i]) == 1 then table.insert(gone, ARGV[i - 1]) end
          redis.call('ZREM', KEYS[1], ARGV[i - 1])
        end
        return gone
        ",
    )
});

fn unhex(s: &str) -> Option<TokenHash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TokenHash(out))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("a session in Redis has a bad {what}"))
}

fn int(map: &HashMap<String, String>, field: &str) -> Result<i64, StoreError> {
    map.get(field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(field))
}

fn time(map: &HashMap<String, String>, field: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(int(map, field)?).map_err(|_| corrupt(field))
}

/// A session read back from its hash.
fn session_from(map: &HashMap<String, String>) -> Result<Session, StoreError> {
    let text = |f: &str| map.get(f).ok_or_else(|| corrupt(f));
    Ok(Session {
        id: text("id")?.parse().map_err(|_| corrupt("id"))?,
        user_id: text("uid")?.parse().map_err(|_| corrupt("uid"))?,
        transport: text("tr")?.parse().map_err(|_| corrupt("tr"))?,
        secret_hash: unhex(text("cur")?).ok_or_else(|| corrupt("cur"))?,
        remember: text("rem")? == "1",
        created_at: time(map, "created")?,
        authenticated_at: time(map, "authn")?,
        last_seen_at: time(map, "seen")?,
        idle_timeout: Duration::seconds(int(map, "idle")?),
        absolute_expires_at: time(map, "abs")?,
        ip: map.get("ip").cloned(),
        user_agent: map.get("ua").cloned(),
        dpop_jkt: map.get("jkt").cloned(),
        dbsc_key: map.get("dbsc").cloned(),
        // Sessions stored before the count existed were proven against the first password.
        credentials_gen: map
            .get("gen")
            .map(|v| v.parse().map_err(|_| corrupt("gen")))
            .transpose()?
            .unwrap_or(0),
        refresh_family: map.get("fam").and_then(|f| unhex(f)),
        // Sessions stored before `amr` existed were password logins.
        amr: match map.get("amr") {
            Some(v) => crate::Amr::decode(v).map_err(|_| corrupt("amr"))?,
            None => crate::Amr::PWD,
        },
    })
}

/// A flat `field value …` list (what HGETALL inside a script gives) as a map.
fn pairs(items: &[String]) -> HashMap<String, String> {
    items
        .chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

impl RedisStore {
    /// The token session whose family is `lineage`, as [`Rotation::Reused`]; a pointer is
    /// believed only if the session itself names that family.
    async fn reused(&self, lineage: &TokenHash) -> Result<Rotation, StoreError> {
        let Some((user, id)) = self
            .get(&self.keys.token(lineage))
            .await?
            .as_deref()
            .and_then(parse_pointer)
        else {
            return Ok(Rotation::Unknown);
        };
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.session(&user, &id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        if map.is_empty() || map.get("tr").map(String::as_str) != Some("token") {
            return Ok(Rotation::Unknown);
        }
        let session = session_from(&map)?;
        if session.refresh_family != Some(*lineage) {
            return Ok(Rotation::Unknown);
        }
        Ok(Rotation::Reused(session))
    }
}

/// `<user> <session>`, what the pointers hold.
fn pointer(s: &Session) -> String {
    format!("{} {}", s.user_id, s.id)
}

fn parse_pointer(p: &str) -> Option<(String, String)> {
    let (user, id) = p.split_once(' ')?;
    Some((user.to_string(), id.to_string()))
}

impl RedisStore {
    /// Milliseconds a key should live to cover `span` plus the grace.
    fn ttl_ms(&self, span: Duration) -> i64 {
        ((span.whole_seconds() + self.grace_secs) * 1000).max(1000)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    /// The session key for an id, through its pointer.
    async fn locate(&self, id: SessionId) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .get(&self.keys.by_id(id))
            .await?
            .map(|user| (self.keys.session(&user, &id.to_string()), user)))
    }

    async fn load(&self, key: &str) -> Result<Option<Session>, StoreError> {
        let map = self.hgetall(key).await?;
        if map.is_empty() {
            return Ok(None);
        }
        session_from(&map).map(Some)
    }

    /// Best-effort removal of pointers left behind by ended sessions (they expire anyway).
    async fn drop_pointers(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let done: Result<i64, _> = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "stale session pointers left to expire");
        }
    }

    /// Logs and publishes the revocation of `targets` (id, absolute deadline) of one user,
    /// then deletes them in one script; returns the ids that existed.
    async fn end(
        &self,
        user: &str,
        targets: &[(SessionId, i64)],
    ) -> Result<Vec<SessionId>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        // Logged first: if the deletion below fails, the sessions are refused everywhere anyway.
        feed::log_revocations(&mut conn, &self.keys, targets).await?;
        let mut inv = DELETE.prepare_invoke();
        inv.key(self.keys.index(user));
        for (id, _) in targets {
            inv.key(self.keys.session(user, &id.to_string()));
        }
        for (id, _) in targets {
            inv.arg(id.to_string());
        }
        let gone: Vec<String> = inv.invoke_async(&mut conn).await.map_err(map_err)?;
        gone.iter()
            .map(|id| id.parse().map_err(|_| corrupt("id")))
            .collect()
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        let user = s.user_id.to_string();
        let id = s.id.to_string();
        let key = self.keys.session(&user, &id);
        let deadline = s.expires_at(s.last_seen_at);
        let pointer_ttl = self.ttl_ms(s.absolute_expires_at - s.created_at);
        // Pointers first: without the session they point to they find nothing.
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.token(&s.secret_hash))
            .arg(pointer(s))
            .arg("PX")
            .arg(pointer_ttl)
            .ignore()
            .cmd("SET")
            .arg(self.keys.by_id(s.id))
            .arg(&user)
            .arg("PX")
            .arg(pointer_ttl)
            .ignore()
            .cmd("ZADD")
            .arg(self.keys.expiry())
            .arg(deadline.unix_timestamp())
            .arg(pointer(s))
            .ignore();
        if let Some(family) = &s.refresh_family {
            pipe.cmd("SET")
                .arg(self.keys.token(family))
                .arg(pointer(s))
                .arg("PX")
                .arg(pointer_ttl)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await.map_err(map_err)?;

        let mut fields: Vec<(&str, String)> = vec![
            ("id", id.clone()),
            ("uid", user.clone()),
            ("tr", s.transport.as_str().to_string()),
            ("cur", hex(&s.secret_hash.0)),
            ("rem", if s.remember { "1" } else { "0" }.to_string()),
            ("created", s.created_at.unix_timestamp().to_string()),
            ("authn", s.authenticated_at.unix_timestamp().to_string()),
            ("seen", s.last_seen_at.unix_timestamp().to_string()),
            ("idle", s.idle_timeout.whole_seconds().to_string()),
            ("abs", s.absolute_expires_at.unix_timestamp().to_string()),
            ("gen", s.credentials_gen.to_string()),
            ("amr", s.amr.encode()),
        ];
        if let Some(family) = &s.refresh_family {
            fields.push(("fam", hex(&family.0)));
        }
        if let Some(ip) = &s.ip {
            fields.push(("ip", ip.clone()));
        }
        if let Some(ua) = &s.user_agent {
            fields.push(("ua", ua.clone()));
        }
        if let Some(jkt) = &s.dpop_jkt {
            fields.push(("jkt", jkt.clone()));
        }
        if let Some(key) = &s.dbsc_key {
            fields.push(("dbsc", key.clone()));
        }
        let mut tx = redis::pipe();
        tx.atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, self.ttl_ms(deadline - s.last_seen_at))
            .ignore()
            .zadd(self.keys.index(&user), &id, s.created_at.unix_timestamp())
            .ignore();
        let _: () = tx.query_async(&mut conn).await.map_err(map_err)?;
        Ok(())
    }

    async fn find_by_token(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let Some((user, id)) = self
            .get(&self.keys.token(hash))
            .await?
            .as_deref()
            .and_then(parse_pointer)
        else {
            return Ok(None);
        };
        let session = self.load(&self.keys.session(&user, &id)).await?;
        Ok(session.filter(|s| s.secret_hash == *hash))
    }

    async fn find_session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        match self.locate(id).await? {
            Some((key, _)) => self.load(&key).await,
            None => Ok(None),
        }
    }

    async fn touch(&self, seen: &[(SessionId, OffsetDateTime)]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let pointers: Vec<Option<String>> = redis::cmd("MGET")
            .arg(
                seen.iter()
                    .map(|(id, _)| self.keys.by_id(*id))
                    .collect::<Vec<_>>(),
            )
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let mut pipe = redis::pipe();
        let mut any = false;
        for ((id, at), user) in seen.iter().zip(pointers) {
            let Some(user) = user else { continue };
            any = true;
            pipe.cmd("EVAL")
                .arg(TOUCH)
                .arg(1)
                .arg(self.keys.session(&user, &id.to_string()))
                .arg(at.unix_timestamp())
                .arg(self.grace_secs)
                .ignore();
        }
        if any {
            let _: () = pipe.query_async(&mut conn).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn sessions_past(&self, user: UserId, keep: usize) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.keys.index(&user.to_string()))
            .arg(keep)
            .arg(keep.saturating_add(999))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        ids.iter()
            .map(|id| id.parse().map_err(|_| corrupt("id")))
            .collect()
    }

    async fn list_for_user(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let user = user.to_string();
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.index(&user))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.session(&user, id));
        }
        let maps: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(map_err)?;
        let mut sessions = Vec::with_capacity(maps.len());
        for map in maps.iter().filter(|m| !m.is_empty()) {
            sessions.push(session_from(map)?);
        }
        sessions.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));
        Ok(sessions)
    }

    async fn replace_secret(
        &self,
        id: SessionId,
        old: &TokenHash,
        new: &TokenHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Some(session) = self.find_session(id).await? else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        let ttl = self.ttl_ms(session.absolute_expires_at - at);
        let _: () = redis::cmd("SET")
            .arg(self.keys.token(new))
            .arg(pointer(&session))
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let swapped: i64 = REPLACE
            .key(
                self.keys
                    .session(&session.user_id.to_string(), &id.to_string()),
            )
            .arg(hex(&old.0))
            .arg(hex(&new.0))
            .arg(at.unix_timestamp())
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        if swapped == 1 {
            self.drop_pointers(vec![self.keys.token(old)]).await;
        } else {
            self.drop_pointers(vec![self.keys.token(new)]).await;
        }
        Ok(swapped == 1)
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        lineage: &TokenHash,
        next: &TokenHash,
        sealed_next: &[u8],
        at: OffsetDateTime,
    ) -> Result<Rotation, StoreError> {
        let Some((user, id)) = self
            .get(&self.keys.token(presented))
            .await?
            .as_deref()
            .and_then(parse_pointer)
        else {
            return self.reused(lineage).await;
        };
        let key = self.keys.session(&user, &id);
        let mut conn = self.conn.clone();
        let abs: Option<i64> = redis::cmd("HGET")
            .arg(&key)
            .arg("abs")
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let Some(abs) = abs else {
            return Ok(Rotation::Unknown);
        };
        // The successor's pointer before the swap that makes it current, and the family's (the
        // presented token is the session's, so its family is too).
        let ttl = ((abs - at.unix_timestamp() + self.grace_secs) * 1000).max(1000);
        let mut pipe = redis::pipe();
        for pointer in [self.keys.token(next), self.keys.token(lineage)] {
            pipe.cmd("SET")
                .arg(pointer)
                .arg(format!("{user} {id}"))
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.map_err(map_err)?;
        let outcome: Option<Vec<String>> = ROTATE
            .key(&key)
            .arg(hex(&presented.0))
            .arg(hex(&next.0))
            .arg(STANDARD.encode(sealed_next))
            .arg(at.unix_timestamp())
            .arg(self.grace_secs)
            .arg(hex(&lineage.0))
            .invoke_async(&mut conn)
            .await
            .map_err(map_err)?;
        let Some(items) = outcome else {
            self.drop_pointers(vec![self.keys.token(next)]).await;
            return Ok(Rotation::Unknown);
        };
        let (Some(status), Some(dropped)) = (items.first(), items.get(1)) else {
            return Err(corrupt("rotation answer"));
        };
        let map = pairs(items.get(2..).unwrap_or_default());
        let session = session_from(&map)?;
        if status == "rotated" {
            // The token before the presented one can no longer be recognised as spent.
            if let Some(old) = unhex(dropped) {
                self.drop_pointers(vec![self.keys.token(&old)]).await;
            }
            return Ok(Rotation::Rotated(session));
        }
        self.drop_pointers(vec![self.keys.token(next)]).await;
        let sealed = map
            .get("sealed")
            .and_then(|s| STANDARD.decode(s).ok())
            .unwrap_or_default();
        Ok(Rotation::Spent {
            session,
            rotated_at: time(&map, "rot")?,
            sealed_next: sealed,
        })
    }

    async fn revoke(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let Some((key, user)) = self.locate(id).await? else {
            return Ok(None);
        };
        let Some(session) = self.load(&key).await? else {
            return Ok(None);
        };
        let ended = self
            .end(&user, &[(id, session.absolute_expires_at.unix_timestamp())])
            .await?;
        self.drop_pointers(vec![
            self.keys.by_id(id),
            self.keys.token(&session.secret_hash),
        ])
        .await;
        Ok(ended.contains(&id).then_some(session))
    }

    async fn revoke_all(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<Vec<SessionId>, StoreError> {
        let user_s = user.to_string();
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.index(&user_s))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let ids: Vec<SessionId> = ids
            .iter()
            .filter_map(|s| s.parse().ok())
            .filter(|id| Some(*id) != keep)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys.session(&user_s, &id.to_string()))
                .arg("abs")
                .arg("cur")
                .arg("prev");
        }
        let found: Vec<(Option<i64>, Option<String>, Option<String>)> =
            pipe.query_async(&mut conn).await.map_err(map_err)?;
        let mut targets = Vec::new();
        let mut pointers = Vec::new();
        for (id, (abs, cur, prev)) in ids.iter().zip(found) {
            let Some(abs) = abs else { continue };
            targets.push((*id, abs));
            pointers.push(self.keys.by_id(*id));
            for h in [cur, prev].iter().flatten().filter_map(|h| unhex(h)) {
                pointers.push(self.keys.token(&h));
            }
        }
        let ended = self.end(&user_s, &targets).await?;
        self.drop_pointers(pointers).await;
        Ok(ended)
    }

    async fn delete_expired(
        &self,
        at: OffsetDateTime,
        idle_grace: Duration,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let candidates: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.expiry())
            .arg("-inf")
            .arg(at.unix_timestamp())
            .arg("LIMIT")
            .arg(0)
            .arg(100_000)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        let candidates: Vec<(String, String, String)> = candidates
            .into_iter()
            .filter_map(|m| parse_pointer(&m).map(|(u, s)| (m, u, s)))
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (_, user, id) in &candidates {
            pipe.cmd("EVAL")
                .arg(SWEEP_ONE)
                .arg(2)
                .arg(self.keys.session(user, id))
                .arg(self.keys.index(user))
                .arg(at.unix_timestamp())
                .arg(idle_grace.whole_seconds())
                .arg(id);
        }
        let outcomes: Vec<i64> = pipe.query_async(&mut conn).await.map_err(map_err)?;
        let mut deleted = 0;
        let mut update = redis::pipe();
        for ((member, _, _), outcome) in candidates.iter().zip(outcomes) {
            match outcome {
                -1 | -2 => {
                    deleted += u64::from(outcome == -2);
                    update.zrem(self.keys.expiry(), member).ignore();
                }
                deadline => {
                    update.zadd(self.keys.expiry(), member, deadline).ignore();
                }
            }
        }
        let _: () = update.query_async(&mut conn).await.map_err(map_err)?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = TokenHash([0xab; 32]);
        assert_eq!(unhex(&hex(&h.0)), Some(h));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn transport_names_are_what_scripts_compare() {
        assert_eq!(crate::session::Transport::Token.as_str(), "token");
    }
}
