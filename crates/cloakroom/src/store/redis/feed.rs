//! The revocation log in Redis and the task that follows it: every revocation is appended to a
//! numbered log and published in the same script; a follower delivers published revocations in
//! order, reads the log to fill any gap (a missed message, a reconnect), and notices when Redis
//! lost its data.
//!
//! It also notices a Redis restored from an older copy (a snapshot, an AOF cut short, a lagging
//! replica promoted): its log position went backwards, either below what this follower had
//! read, or below the mark kept in the database ([`crate::Store::raise_mark`], written every
//! second by a task of its own so that following never waits on the database). Such a copy
//! brings back sessions that were ended after it was taken, and there is no telling which: so
//! every session in it is deleted and a new epoch is set, exactly as if Redis had come back
//! empty.

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{map_err, Keys, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::session::SessionId;
use crate::store::{RevocationEvent, StoreError};

/// How many recent revocations the log keeps; a follower further behind reads the whole set.
const LOG_LIMIT: i64 = 100_000;
/// How often a follower checks the log's position even when no message came (a safety net
/// against a silently dead subscription).
const CHECK: Duration = Duration::from_secs(1);

/// Appends revocations (ARGV: channel, sent ms, then id/expiry pairs) to the revoked set and the
/// log, and publishes each with its position.
static LOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        for i = 3, #ARGV, 2 do
          local seq = redis.call('INCR', KEYS[3])
          redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
          local entry = seq .. ' ' .. ARGV[i] .. ' ' .. ARGV[i + 1]
          redis.call('ZADD', KEYS[2], seq, entry)
          redis.call('PUBLISH', ARGV[1], entry .. ' ' .. ARGV[2])
        end
        return 1
        ",
    )
});

fn wall_ms() -> i64 {
    crate::clock::Clock::unix_ms(&crate::clock::SystemClock)
}

/// Logs and publishes revocations. When this returns they hold on this instance and are
/// published, not yet applied elsewhere: each other instance applies them when its subscription
/// delivers the message (well under a millisecond on one host, tens of milliseconds under
/// load), or at its next check of the log (every second) if the message was lost. A request
/// that reaches another instance inside that window is still accepted there.
pub(super) async fn log_revocations(
    conn: &mut ConnectionManager,
    keys: &Keys,
    ended: &[(SessionId, i64)],
) -> Result<(), StoreError> {
    if ended.is_empty() {
        return Ok(());
    }
    let mut inv = LOG.prepare_invoke();
    inv.key(keys.revoked())
        .key(keys.log())
        .key(keys.seq())
        .arg(keys.channel())
        .arg(wall_ms());
    for (id, exp) in ended {
        inv.arg(id.to_string()).arg(*exp);
    }
    let _: i64 = inv.invoke_async(conn).await.map_err(map_err)?;
    let _: i64 = redis::cmd("ZREMRANGEBYRANK")
        .arg(keys.log())
        .arg(0)
        .arg(-LOG_LIMIT - 1)
        .query_async(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// The position of the newest revocation in the log (0 if none).
pub(super) async fn head(conn: &mut ConnectionManager, keys: &Keys) -> Result<i64, StoreError> {
    let head: Option<i64> = redis::cmd("GET")
        .arg(keys.seq())
        .query_async(conn)
        .await
        .map_err(map_err)?;
    Ok(head.unwrap_or(0))
}

/// The database mark that remembers how far the log of one data set (`epoch`) had got.
pub(super) fn mark_name(keys: &Keys, epoch: &str) -> String {
    format!("redis-revocation-log:{}:{epoch}", keys.prefix)
}

/// Starts a new data set after Redis went back to an older copy: every session (and each
/// user's index of them) is deleted and a new epoch is set, so every process forgets what it
/// holds. Answers the new epoch.
pub(super) async fn start_over(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<String, StoreError> {
    tracing::error!(
        security_event = "redis_rewound",
        "Redis's revocation log went backwards (restored from an older copy?): every session \
         in it is ended, as after a restart without data"
    );
    let pattern = format!("{}:{{u:*", keys.prefix);
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(map_err)?;
        // One key a command: keys of different users live in different Cluster slots.
        for key in found {
            let _: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(conn)
                .await
                .map_err(map_err)?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let fresh = super::hex(&rand::random::<[u8; 16]>());
    let _: () = redis::cmd("SET")
        .arg(keys.epoch())
        .arg(&fresh)
        .query_async(conn)
        .await
        .map_err(map_err)?;
    Ok(fresh)
}

/// Keeps the database's mark of the log position up to date, every second, until `alive` is
/// gone; raises `rewound` when the mark is past the position (Redis went back to an older copy).
async fn witness(
    mut conn: ConnectionManager,
    keys: Keys,
    sql: std::sync::Arc<dyn crate::store::Store>,
    rewound: std::sync::Arc<std::sync::atomic::AtomicBool>,
    alive: std::sync::Weak<()>,
) {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recorded: Option<(String, i64)> = None;
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        let read = async {
            let epoch: Option<String> = redis::cmd("GET")
                .arg(keys.epoch())
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            let head = head(&mut conn, &keys).await?;
            Ok::<_, StoreError>((epoch, head))
        };
        let (Some(epoch), head) = (match read.await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "revocation log position not read");
                continue;
            }
        }) else {
            continue;
        };
        // Nothing new since the last write: nothing to record.
        if recorded.as_ref() == Some(&(epoch.clone(), head)) {
            continue;
        }
        match sql.raise_mark(&mark_name(&keys, &epoch), head).await {
            Ok(mark) if mark > head => {
                rewound.store(true, std::sync::atomic::Ordering::Release);
            }
            Ok(_) => recorded = Some((epoch, head)),
            Err(e) => tracing::warn!(error = %e, "the revocation log position was not recorded"),
        }
    }
}

/// The mark of the current data set: set once, so a Redis that restarted empty gets a new one.
pub(super) async fn ensure_epoch(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<String, StoreError> {
    let fresh = super::hex(&rand::random::<[u8; 16]>());
    let _: Option<String> = redis::cmd("SET")
        .arg(keys.epoch())
        .arg(&fresh)
        .arg("NX")
        .query_async(conn)
        .await
        .map_err(map_err)?;
    let epoch: Option<String> = redis::cmd("GET")
        .arg(keys.epoch())
        .query_async(conn)
        .await
        .map_err(map_err)?;
    epoch.ok_or_else(|| StoreError::Corrupt("the revocation epoch vanished".into()))
}

fn parse_time(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| StoreError::Corrupt("a revocation time is out of range".into()))
}

fn parse_id(s: &str) -> Result<SessionId, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt("a revoked session id does not parse".into()))
}

/// Revoked sessions that would still be alive after `at`.
pub(super) async fn revoked_sessions(
    conn: &mut ConnectionManager,
    keys: &Keys,
    at: OffsetDateTime,
) -> Result<Vec<(SessionId, OffsetDateTime)>, StoreError> {
    let rows: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys.revoked())
        .arg(format!("({}", at.unix_timestamp()))
        .arg("+inf")
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .map_err(map_err)?;
    rows.into_iter()
        .map(|(id, exp)| Ok((parse_id(&id)?, parse_time(exp)?)))
        .collect()
}

/// Forgets revocations of sessions that have expired by `at`.
pub(super) async fn prune(
    conn: &mut ConnectionManager,
    keys: &Keys,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
        .arg(keys.revoked())
        .arg("-inf")
        .arg(at.unix_timestamp())
        .query_async(conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Starts following the revocations; the task ends when the receiver is dropped. `complete`:
/// whether the receiver already knows every revocation so far (an engine that loaded them);
/// if not, the follower says [`RevocationEvent::Resynced`] once its first read is delivered.
/// `sql`: where the log position is also recorded, when the follower is the server's own
/// (a remote verifier has no database and relies on its own position).
pub(super) fn subscribe(
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    epoch: String,
    complete: bool,
    sql: Option<std::sync::Arc<dyn crate::store::Store>>,
) -> mpsc::Receiver<RevocationEvent> {
    let (tx, rx) = mpsc::channel(4096);
    let alive = std::sync::Arc::new(());
    let rewound = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(sql) = sql {
        tokio::spawn(witness(
            conn.clone(),
            keys.clone(),
            sql,
            std::sync::Arc::clone(&rewound),
            std::sync::Arc::downgrade(&alive),
        ));
    }
    let follower = Follower {
        client,
        conn,
        keys,
        tx,
        epoch,
        cursor: None,
        healthy: complete,
        rewound,
        _alive: alive,
    };
    tokio::spawn(follower.run());
    rx
}

/// Why following stopped.
enum Stop {
    /// Nobody listens any more.
    Closed,
    /// Redis failed; reconnect.
    Failed(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

struct Follower {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    tx: mpsc::Sender<RevocationEvent>,
    /// The data set the cursor belongs to.
    epoch: String,
    /// The last log position delivered; `None` until the first read.
    cursor: Option<i64>,
    /// Whether the last thing said was that the feed is complete.
    healthy: bool,
    /// Set by the witness when the database's mark is past the log (see the module comment).
    rewound: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Ends the witness when the follower ends.
    _alive: std::sync::Arc<()>,
}

impl Follower {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.follow(&mut backoff).await {
                Stop::Closed => return,
                Stop::Failed(e) => {
                    if self.healthy {
                        tracing::warn!(error = %e, "revocation feed lost; refusing sessions until it is back");
                        self.healthy = false;
                        if self.tx.send(RevocationEvent::Lost).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn send(&self, event: RevocationEvent) -> Result<(), Stop> {
        self.tx.send(event).await.map_err(|_| Stop::Closed)
    }

    async fn follow(&mut self, backoff: &mut Duration) -> Stop {
        match self.follow_inner(backoff).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn follow_inner(
        &mut self,
        backoff: &mut Duration,
    ) -> Result<std::convert::Infallible, Stop> {
        let unavailable = |e: tokio::time::error::Elapsed| StoreError::Unavailable(Box::new(e));
        let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(unavailable)?
            .map_err(map_err)?;
        tokio::time::timeout(RESPONSE_TIMEOUT, pubsub.subscribe(self.keys.channel()))
            .await
            .map_err(unavailable)?
            .map_err(map_err)?;
        let mut messages = pubsub.into_on_message();
        // Subscribed first, then read: nothing published from here on can be missed.
        self.catch_up().await?;
        if !self.healthy {
            tracing::info!("revocation feed back and resynchronised");
            self.healthy = true;
            self.send(RevocationEvent::Resynced).await?;
        }
        *backoff = Duration::from_millis(50);
        let mut check = tokio::time::interval(CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    None => {
                        return Err(Stop::Failed(StoreError::Unavailable(
                            "the revocation subscription was closed".into(),
                        )))
                    }
                    Some(msg) => {
                        let payload: String = msg.get_payload().map_err(map_err)?;
                        self.on_message(&payload).await?;
                    }
                },
                _ = check.tick() => self.catch_up().await?,
                _ = self.tx.closed() => return Err(Stop::Closed),
            }
        }
    }

    async fn on_message(&mut self, payload: &str) -> Result<(), Stop> {
        let mut parts = payload.split(' ');
        let (Some(seq), Some(id), Some(exp), Some(sent)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(StoreError::Corrupt("a revocation message does not parse".into()).into());
        };
        let (Ok(seq), Ok(exp), Ok(sent)) = (seq.parse::<i64>(), exp.parse::<i64>(), sent.parse())
        else {
            return Err(StoreError::Corrupt("a revocation message does not parse".into()).into());
        };
        let cursor = self.cursor.unwrap_or(0);
        if seq == cursor + 1 {
            self.send(RevocationEvent::Revoked {
                id: parse_id(id)?,
                expires_at: parse_time(exp)?,
                sent_ms: Some(sent),
            })
            .await?;
            self.cursor = Some(seq);
        } else {
            // A gap, or a position already seen: a missed message, or a log gone backwards.
            self.catch_up().await?;
        }
        Ok(())
    }

    /// Reads what was logged past the cursor; after a data loss, says so and starts over.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        let mut epoch = ensure_epoch(&mut self.conn, &self.keys).await?;
        if epoch == self.epoch {
            let head = head(&mut self.conn, &self.keys).await?;
            let behind = self.cursor.is_some_and(|c| head < c);
            if self
                .rewound
                .swap(false, std::sync::atomic::Ordering::AcqRel)
                || behind
            {
                epoch = start_over(&mut self.conn, &self.keys).await?;
            }
        }
        if epoch != self.epoch {
            tracing::warn!("Redis lost its data: forgetting every session held in memory");
            self.epoch = epoch;
            self.cursor = None;
            self.send(RevocationEvent::Reset).await?;
        }
        let head = head(&mut self.conn, &self.keys).await?;
        let Some(cursor) = self.cursor else {
            // First read of this data set: everything revoked and not yet expired.
            self.deliver_all().await?;
            self.cursor = Some(head);
            return Ok(());
        };
        if head <= cursor {
            return Ok(());
        }
        let entries: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.log())
            .arg(format!("({cursor}"))
            .arg(head)
            .query_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        let first = entries
            .first()
            .and_then(|e| e.split(' ').next())
            .and_then(|s| s.parse::<i64>().ok());
        if first != Some(cursor + 1) {
            // The log was trimmed past the cursor: read the whole set instead.
            self.deliver_all().await?;
        } else {
            for entry in entries {
                let mut parts = entry.split(' ');
                let (Some(_), Some(id), Some(exp)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(StoreError::Corrupt(
                        "a revocation log entry does not parse".into(),
                    )
                    .into());
                };
                let exp = exp.parse::<i64>().map_err(|_| {
                    StoreError::Corrupt("a revocation log entry does not parse".into())
                })?;
                self.send(RevocationEvent::Revoked {
                    id: parse_id(id)?,
                    expires_at: parse_time(exp)?,
                    sent_ms: None,
                })
                .await?;
            }
        }
        self.cursor = Some(head);
        Ok(())
    }

    async fn deliver_all(&mut self) -> Result<(), Stop> {
        let all = revoked_sessions(&mut self.conn, &self.keys, OffsetDateTime::UNIX_EPOCH).await?;
        for (id, expires_at) in all {
            self.send(RevocationEvent::Revoked {
                id,
                expires_at,
                sent_ms: None,
            })
            .await?;
        }
        Ok(())
    }
}
