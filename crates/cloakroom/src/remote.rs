//! Verifying cloakroom's access tokens in another service (feature `remote`): the public keys
//! come from cloakroom's JWKS, and revocations from `GET /auth/revocations` (Server-Sent Events)
//! or straight from Redis. Verification itself makes no request: a signature check against keys
//! in memory, the claims, and a lookup in the revoked set kept current in the background.
//!
//! A DPoP-bound token (RFC 9449) is accepted only with its proof ([`RemoteVerifier::verify_dpop`])
//! for a request to [`RemoteConfig::service_origin`]; each proof counts once, in this process's
//! memory, or with revocations from Redis in that Redis, where cloakroom itself remembers proofs:
//! then a proof counts once across cloakroom and every verifier sharing it.
//!
//! ```no_run
//! use cloakroom::remote::{RemoteConfig, RemoteVerifier, RevocationSource};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = RemoteVerifier::start(RemoteConfig {
//!     revocations: RevocationSource::Events {
//!         url: "https://auth.example.com/auth/revocations".into(),
//!         key: std::env::var("CLOAKROOM_VERIFIER_KEY")?,
//!     },
//!     ..RemoteConfig::new("https://auth.example.com", "https://auth.example.com")
//! })
//! .await?;
//! let who = verifier.verify("eyJ…").await?;
//! println!("user {} in session {}", who.user_id, who.session_id);
//! # Ok(()) }
//! ```

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::feed::FeedEvent;
use crate::jwt::{self, AccessClaims, ClaimsPolicy, KeyRing, VerifyError};
#[cfg(feature = "redis")]
use crate::store::RevocationEvent;

/// Where a remote verifier learns of revocations.
#[derive(Debug, Clone)]
pub enum RevocationSource {
    /// Nowhere: a revoked session's tokens stay valid until they expire (at most the access
    /// token lifetime). Only for services that accept that.
    None,
    /// cloakroom's `GET /auth/revocations`, with a verifier key.
    Events {
        /// The endpoint's URL.
        url: String,
        /// A key from the server's `--verifier-keys`.
        key: String,
    },
    /// The Redis cloakroom uses, under its key prefix (feature `redis`).
    #[cfg(feature = "redis")]
    Redis {
        /// The Redis URL.
        url: String,
        /// cloakroom's `--redis-prefix`.
        prefix: String,
    },
}

/// How a remote verifier is set up.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The JWKS URL (`<cloakroom>/.well-known/jwks.json`).
    pub jwks_url: String,
    /// The exact `iss` (cloakroom's public URL).
    pub issuer: String,
    /// The audience that must be named (cloakroom's `--jwt-audience`, by default its URL).
    pub audience: String,
    /// Where revocations come from.
    pub revocations: RevocationSource,
    /// Clock leeway, at most 60 s.
    pub leeway_secs: i64,
    /// The shortest time between two JWKS fetches for unknown `kid`s: however many tokens name
    /// unknown keys, cloakroom is asked at most once per this.
    pub min_refresh: Duration,
    /// How long tokens are still accepted after the revocation feed is lost (then every token is
    /// refused until it is back).
    pub max_staleness: Duration,
    /// The origin clients address this service at (`https://api.example.com`), which a DPoP
    /// proof's `htu` must name with the request's path. Without it, DPoP-bound tokens are
    /// refused.
    pub service_origin: Option<String>,
}

impl RemoteConfig {
    /// Defaults for cloakroom at `base_url` with `audience`: its JWKS, no revocation feed, 60 s
    /// leeway, a JWKS fetch at most every 10 s, 10 s of staleness.
    pub fn new(base_url: &str, audience: &str) -> Self {
        let base = base_url.trim_end_matches('/');
        Self {
            jwks_url: format!("{base}/.well-known/jwks.json"),
            issuer: base.to_string(),
            audience: audience.to_string(),
            revocations: RevocationSource::None,
            leeway_secs: 60,
            min_refresh: Duration::from_secs(10),
            max_staleness: Duration::from_secs(10),
            service_origin: None,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIdentity {
    /// The user (`sub`).
    pub user_id: String,
    /// The session (`sid`).
    pub session_id: String,
    /// The roles when the token was minted.
    pub roles: Vec<String>,
    /// Every claim.
    pub claims: AccessClaims,
}

/// Why a remote verification failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The token is not valid (signature, claims, expiry); the caller should answer 401.
    #[error("invalid token: {0}")]
    Invalid(#[from] VerifyError),
    /// The token's session was ended.
    #[error("the session was ended")]
    Revoked,
    /// Revocations cannot be followed right now, so no token is trusted; answer 503.
    #[error("revocations are not reaching this verifier")]
    Unavailable,
    /// The keys could not be fetched.
    #[error("cannot fetch the signing keys: {0}")]
    Keys(String),
    /// A DPoP-bound token's proof is missing, refused or replayed (RFC 9449 §4.3), or an unbound
    /// token came as a DPoP one; the caller should answer 401.
    #[error("the DPoP proof is not acceptable: {0}")]
    Proof(crate::dpop::ProofError),
}

/// Where a verifier remembers the DPoP proofs it accepted, until they could no longer be.
enum Replay {
    /// This process's memory: proof keys and when they may be forgotten (unix seconds).
    Local(dashmap::DashMap<[u8; 32], i64, foldhash::fast::RandomState>),
    /// cloakroom's Redis, shared with the server and other verifiers.
    #[cfg(feature = "redis")]
    Redis(crate::store::RedisOnce),
}

impl Replay {
    async fn first_use(
        &self,
        key: &[u8; 32],
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, RemoteError> {
        match self {
            Self::Local(seen) => {
                if seen.len() % 1024 == 1023 {
                    seen.retain(|_, until| *until > now.unix_timestamp());
                }
                match seen.entry(*key) {
                    dashmap::Entry::Occupied(mut e) if *e.get() <= now.unix_timestamp() => {
                        e.insert(until.unix_timestamp());
                        Ok(true)
                    }
                    dashmap::Entry::Occupied(_) => Ok(false),
                    dashmap::Entry::Vacant(e) => {
                        e.insert(until.unix_timestamp());
                        Ok(true)
                    }
                }
            }
            #[cfg(feature = "redis")]
            Self::Redis(once) => once
                .first_use(key, until, now)
                .await
                .map_err(|_| RemoteError::Unavailable),
        }
    }
}

/// Verifies cloakroom access tokens locally, following revocations in the background.
pub struct RemoteVerifier {
    config: RemoteConfig,
    http: reqwest::Client,
    keys: ArcSwap<KeyRing>,
    policy: ClaimsPolicy,
    /// When the keys were last fetched, for the refresh limit.
    fetched: tokio::sync::Mutex<Instant>,
    revoked: dashmap::DashMap<String, i64, foldhash::fast::RandomState>,
    /// DPoP proofs accepted, against replay.
    replay: Replay,
    /// Tokens issued at or before this (unix seconds) are refused (the store lost its sessions).
    revoked_before: AtomicI64,
    /// Whether the revocation feed is complete right now.
    feed_up: AtomicBool,
    /// Since when it is not (ms since the verifier started); -1 if it never was.
    down_since_ms: AtomicI64,
    started: Instant,
    /// JWKS fetches made (for tests and metrics).
    pub jwks_fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RemoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("issuer", &self.config.issuer)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    SystemClock.now_secs()
}

impl RemoteVerifier {
    /// Fetches the keys and starts following revocations. Fails if the keys cannot be fetched.
    pub async fn start(config: RemoteConfig) -> Result<Arc<Self>, RemoteError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| RemoteError::Keys(e.to_string()))?;
        let policy = ClaimsPolicy {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway_secs.clamp(0, 60),
            // Lifetimes are cloakroom's business; a day bounds any sane one.
            max_lifetime_secs: 86_400,
        };
        let has_feed = !matches!(config.revocations, RevocationSource::None);
        let replay = match &config.revocations {
            #[cfg(feature = "redis")]
            RevocationSource::Redis { url, prefix } => Replay::Redis(
                crate::store::RedisOnce::open(url, prefix)
                    .await
                    .map_err(|e| RemoteError::Keys(format!("Redis: {e}")))?,
            ),
            _ => Replay::Local(Default::default()),
        };
        let verifier = Arc::new(Self {
            keys: ArcSwap::from_pointee(KeyRing::new(None, [])),
            policy,
            fetched: tokio::sync::Mutex::new(Instant::now()),
            revoked: Default::default(),
            replay,
            revoked_before: AtomicI64::new(i64::MIN),
            feed_up: AtomicBool::new(!has_feed),
            down_since_ms: AtomicI64::new(-1),
            started: Instant::now(),
            jwks_fetches: Default::default(),
            http,
            config,
        });
        verifier.fetch_keys().await?;
        match verifier.config.revocations.clone() {
            RevocationSource::None => {}
            RevocationSource::Events { url, key } => {
                tokio::spawn(follow_events(Arc::downgrade(&verifier), url, key));
            }
            #[cfg(feature = "redis")]
            RevocationSource::Redis { url, prefix } => {
                let rx = crate::store::RedisStore::follow(&url, &prefix)
                    .await
                    .map_err(|e| RemoteError::Keys(format!("Redis: {e}")))?;
                tokio::spawn(follow_redis(Arc::downgrade(&verifier), rx));
            }
        }
        Ok(verifier)
    }

    async fn fetch_keys(&self) -> Result<(), RemoteError> {
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let doc: serde_json::Value = self
            .http
            .get(&self.config.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| RemoteError::Keys(e.to_string()))?
            .json()
            .await
            .map_err(|e| RemoteError::Keys(e.to_string()))?;
        let ring = KeyRing::from_jwks(&doc).map_err(|e| RemoteError::Keys(e.to_string()))?;
        self.keys.store(Arc::new(ring));
        Ok(())
    }

    /// Refetches the keys for an unknown `kid`, at most once per `min_refresh` whatever the
    /// number of callers: the others wait for the fetch in flight, then use its result.
    async fn refresh_for_unknown_kid(&self) {
        let mut last = self.fetched.lock().await;
        if last.elapsed() < self.config.min_refresh {
            return;
        }
        *last = Instant::now();
        if let Err(e) = self.fetch_keys().await {
            tracing::warn!(error = %e, "refreshing the signing keys failed");
        }
    }

    /// Checks a token: signature by the key its `kid` names, claims, revocation. Makes no
    /// request, except a rate-limited key refresh when the `kid` is unknown. A DPoP-bound token
    /// is refused here (see [`RemoteVerifier::verify_dpop`]).
    pub async fn verify(&self, token: &str) -> Result<RemoteIdentity, RemoteError> {
        let claims = self.claims(token).await?;
        claims.usable_as_bearer()?;
        self.identity(claims)
    }

    /// Checks a DPoP-bound token (`Authorization: DPoP <token>`) with its `proof` (the `DPoP`
    /// header) for a request to `method` `path` on [`RemoteConfig::service_origin`]: the token
    /// as [`RemoteVerifier::verify`] does, then RFC 9449 §4.3: the proof's `htm`, `htu`, `iat`
    /// within 60 s, `ath`, its signature by the key the token is bound to (`cnf.jkt`), and its
    /// first use (see the module's notes on where proofs are remembered). Server nonces are not
    /// asked for here.
    pub async fn verify_dpop(
        &self,
        token: &str,
        proof: &str,
        method: &str,
        path: &str,
    ) -> Result<RemoteIdentity, RemoteError> {
        use crate::dpop::{self, ProofError, ProofRules};
        let origin = self
            .config
            .service_origin
            .as_deref()
            .ok_or(RemoteError::Proof(ProofError::Url))?;
        let url = format!("{}{path}", origin.trim_end_matches('/'));
        let claims = self.claims(token).await?;
        let jkt = claims
            .cnf
            .as_ref()
            .map(|c| c.jkt.clone())
            .ok_or(RemoteError::Proof(ProofError::WrongKey))?;
        let now = now();
        let rules = ProofRules {
            method,
            url: &url,
            now,
            window: dpop::WINDOW,
            access_token: Some(token),
            bound_to: Some(&jkt),
            nonces: None,
        };
        let proof = dpop::verify_proof(proof, &rules).map_err(RemoteError::Proof)?;
        let identity = self.identity(claims)?;
        let until = proof.iat.max(now) + dpop::WINDOW;
        if !self
            .replay
            .first_use(&proof.replay_key(), until, now)
            .await?
        {
            return Err(RemoteError::Proof(ProofError::Replayed));
        }
        Ok(identity)
    }

    /// A token's claims, verified: signature and policy.
    async fn claims(&self, token: &str) -> Result<AccessClaims, RemoteError> {
        let verified = match jwt::verify(token, &self.keys.load()) {
            Err(VerifyError::UnknownKey) => {
                // Refreshed by this call or, just before, by another one: try the keys again.
                self.refresh_for_unknown_kid().await;
                jwt::verify(token, &self.keys.load())
            }
            other => other,
        };
        let (header, payload) = verified?;
        Ok(self.policy.validate(&header, &payload, now())?)
    }

    /// Who verified `claims` speak for, unless their session was ended (or the feed is down).
    fn identity(&self, claims: AccessClaims) -> Result<RemoteIdentity, RemoteError> {
        self.check_feed()?;
        if self.revoked.contains_key(&claims.sid)
            || claims.iat <= self.revoked_before.load(Ordering::Acquire)
        {
            return Err(RemoteError::Revoked);
        }
        Ok(RemoteIdentity {
            user_id: claims.sub.clone(),
            session_id: claims.sid.clone(),
            roles: claims.roles.clone(),
            claims,
        })
    }

    /// Whether revocations are known to be complete, or were until recently enough. Never
    /// synced means nothing revoked is known yet, so nothing is trusted.
    fn check_feed(&self) -> Result<(), RemoteError> {
        if self.feed_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let since = self.down_since_ms.load(Ordering::Acquire);
        let now_ms = self.started.elapsed().as_millis() as i64;
        if since < 0 || now_ms - since > self.config.max_staleness.as_millis() as i64 {
            return Err(RemoteError::Unavailable);
        }
        Ok(())
    }

    /// Whether the revocation feed is complete right now.
    pub fn synced(&self) -> bool {
        self.feed_up.load(Ordering::Acquire)
    }

    /// How many revoked sessions are remembered.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    fn revoke(&self, sid: String, exp: i64) {
        self.revoked.insert(sid, exp);
        if self.revoked.len() % 1024 == 0 {
            let now = now().unix_timestamp() - 60;
            self.revoked.retain(|_, e| *e > now);
        }
    }

    fn reset_before(&self, before: i64) {
        self.revoked_before.fetch_max(before, Ordering::AcqRel);
    }

    fn set_feed(&self, up: bool) {
        if up {
            self.feed_up.store(true, Ordering::Release);
        } else if self.feed_up.swap(false, Ordering::AcqRel) {
            let now_ms = self.started.elapsed().as_millis().max(1) as i64;
            self.down_since_ms.store(now_ms, Ordering::Release);
        }
    }
}

/// Follows `GET /auth/revocations`, reconnecting with back-off; every connection starts with the
/// full list, so reconnecting is resynchronising.
async fn follow_events(verifier: std::sync::Weak<RemoteVerifier>, url: String, key: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(v) = verifier.upgrade() else { return };
        let outcome = read_events(&v, &url, &key).await;
        v.set_feed(false);
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "revocation events lost; reconnecting");
        } else {
            backoff = Duration::from_millis(100);
        }
        drop(v);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn read_events(v: &RemoteVerifier, url: &str, key: &str) -> Result<(), String> {
    use eventsource_stream::Eventsource;
    let res = v
        .http
        .get(url)
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    let mut events = res.bytes_stream().eventsource();
    // Keep-alives arrive every 15 s; silence beyond 40 s means a dead connection.
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(40), events.next()).await {
        let Some(event) = next else { return Ok(()) };
        let event = event.map_err(|e| e.to_string())?;
        match FeedEvent::parse(&event.event, &event.data) {
            Some(FeedEvent::Revoked(r)) => v.revoke(r.sid, r.exp),
            Some(FeedEvent::Reset(r)) => v.reset_before(r.before),
            Some(FeedEvent::Synced) => v.set_feed(true),
            None => {}
        }
    }
    Err("no event or keep-alive for 40 s".into())
}

#[cfg(feature = "redis")]
async fn follow_redis(
    verifier: std::sync::Weak<RemoteVerifier>,
    mut rx: tokio::sync::mpsc::Receiver<RevocationEvent>,
) {
    while let Some(event) = rx.recv().await {
        let Some(v) = verifier.upgrade() else { return };
        match event {
            RevocationEvent::Revoked { id, expires_at, .. } => {
                v.revoke(id.to_string(), expires_at.unix_timestamp())
            }
            RevocationEvent::Lost => v.set_feed(false),
            RevocationEvent::Resynced => v.set_feed(true),
            RevocationEvent::Reset => v.reset_before(now().unix_timestamp()),
        }
    }
}
