//! The keys that sign access tokens: loaded from the store (sealed there when key-encryption
//! keys are configured), reread when another process rotates them, rotated, re-sealed, listed.

use arc_swap::ArcSwap;
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;

use super::config::AuthConfig;
use super::error::AuthError;
use super::passkeys::CHALLENGE_KEY;
use super::sessions::{new_shared_key, TOKEN_CHECK};
use crate::clock::Clock;
use crate::jwt::{Algorithm, KeyRing, SigningKey};
use crate::store::Store;

/// A stored key as `cloakroom keys list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: String,
    /// `active` (signing), `retired` (still verifying) or `expired` (to be deleted).
    pub status: &'static str,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stopped signing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
}

/// The signing keys of this instance.
pub(crate) struct SigningKeys {
    ring: ArcSwap<KeyRing>,
    store: Arc<dyn Store>,
    config: Arc<AuthConfig>,
    clock: Arc<dyn Clock>,
}

impl SigningKeys {
    /// The keys in the store; one is made if none signs and `create`.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        config: Arc<AuthConfig>,
        clock: Arc<dyn Clock>,
        create: bool,
    ) -> Result<Self, AuthError> {
        let ring = load_ring(&*store, &config, clock.now(), create).await?;
        Ok(Self {
            ring: ArcSwap::from_pointee(ring),
            store,
            config,
            clock,
        })
    }

    /// The current ring, for one signature or verification.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<KeyRing>> {
        self.ring.load()
    }

    /// The current ring, to keep.
    pub(crate) fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Rereads the keys from the store (another process may have rotated them); `true` when a
    /// key that verified before no longer does.
    pub(crate) async fn reload(&self) -> Result<bool, AuthError> {
        let ring = load_ring(&*self.store, &self.config, self.clock.now_secs(), true).await?;
        let old = self.ring.swap(Arc::new(ring));
        let current = self.ring.load();
        Ok(old.keys().iter().any(|k| current.get(k.kid()).is_none()))
    }

    /// Makes a new signing key; the old ones keep verifying until their tokens have expired.
    pub(crate) async fn rotate(&self) -> Result<String, AuthError> {
        if self.config.jwt.algorithm == Algorithm::HS256 {
            return Err(AuthError::Keys(
                "HS256 uses the configured secret; rotate it in the configuration".into(),
            ));
        }
        let (_, record) = SigningKey::generate(self.config.jwt.algorithm, self.clock.now_secs())
            .map_err(AuthError::from)?;
        self.store
            .add_signing_key(&seal_key(record.clone(), self.config.sealing.as_deref())?)
            .await?;
        self.reload().await?;
        tracing::info!(kid = %record.kid, "signing keys rotated");
        Ok(record.kid)
    }

    /// Seals every stored signing key with the current key-encryption key: keys in clear (from
    /// before sealing) and keys sealed with another KEK (after a new one was put first). Each
    /// is a compare-and-set, so instances doing it at once do no harm. Returns how many were
    /// re-sealed.
    pub(crate) async fn rekey(&self) -> Result<usize, AuthError> {
        self.reseal(true).await
    }

    /// Seals the signing keys still in clear (from before sealing was configured).
    pub(crate) async fn seal_clear(&self) -> Result<usize, AuthError> {
        if self.config.sealing.is_none() {
            return Ok(0);
        }
        self.reseal(false).await
    }

    /// Re-seals with the current KEK every key in clear and, if `all`, every key sealed with
    /// another KEK.
    async fn reseal(&self, all: bool) -> Result<usize, AuthError> {
        let Some(sealing) = self.config.sealing.as_deref() else {
            return Err(AuthError::Keys(
                "no key-encryption key is configured".into(),
            ));
        };
        use crate::sealing::{needs_resealing, open_stored, seal_stored};
        let reseal = |context: &str, stored: &[u8]| {
            open_stored(Some(sealing), context.as_bytes(), stored)
                .and_then(|clear| seal_stored(Some(sealing), context.as_bytes(), &clear))
                .map_err(|e| AuthError::Keys(format!("{context}: {e}")))
        };
        let mut done = 0;
        for stored in self.store.list_keys().await? {
            if !needs_resealing(sealing, &stored.private_pkcs8, all) {
                continue;
            }
            let sealed = reseal(&stored.kid, &stored.private_pkcs8)?;
            if self
                .store
                .replace_private_key(&stored.kid, &stored.private_pkcs8, &sealed)
                .await?
            {
                tracing::info!(kid = %stored.kid, kek = sealing.current_id(), "signing key sealed");
                done += 1;
            }
        }
        // The keys every instance shares, the same way.
        for name in [TOKEN_CHECK, CHALLENGE_KEY] {
            let candidate = new_shared_key(Some(sealing), name)?;
            let stored = self.store.shared_secret(name, &candidate).await?;
            if needs_resealing(sealing, &stored, all) {
                let sealed = reseal(name, &stored)?;
                if self
                    .store
                    .replace_shared_secret(name, &stored, &sealed)
                    .await?
                {
                    done += 1;
                }
            }
        }
        Ok(done)
    }

    /// Every stored key with its status.
    pub(crate) async fn list(&self) -> Result<Vec<KeyInfo>, AuthError> {
        let now = self.clock.now_secs();
        let horizon = self.config.jwt.key_horizon();
        Ok(self
            .store
            .list_keys()
            .await?
            .into_iter()
            .map(|k| KeyInfo {
                status: match k.retired_at {
                    None => "active",
                    Some(r) if r + horizon > now => "retired",
                    Some(_) => "expired",
                },
                kid: k.kid,
                alg: k.alg.as_str().to_string(),
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect())
    }
}

/// Builds the key ring from the store: the newest unretired key of the configured algorithm
/// signs (one is made if there is none and `create`), and every key retired less than the
/// horizon ago still verifies.
async fn load_ring(
    store: &dyn Store,
    auth: &AuthConfig,
    now: OffsetDateTime,
    create: bool,
) -> Result<KeyRing, AuthError> {
    let config = &auth.jwt;
    let sealing = auth.sealing.as_deref();
    if config.algorithm == Algorithm::HS256 {
        let secret = config
            .hs256_secret
            .as_ref()
            .ok_or_else(|| AuthError::Keys("HS256 needs a configured secret".into()))?;
        return Ok(KeyRing::new(
            Some(SigningKey::hs256(secret.expose()).map_err(AuthError::from)?),
            [],
        ));
    }
    let stored = store
        .list_keys()
        .await?
        .into_iter()
        .map(|k| unseal(k, sealing))
        .collect::<Result<Vec<_>, _>>()?;
    let current = stored
        .iter()
        .rev()
        .find(|k| k.retired_at.is_none() && k.alg == config.algorithm);
    let signing = match current {
        Some(k) => Some(SigningKey::from_stored(k).map_err(AuthError::from)?),
        None if create => {
            let (key, record) =
                SigningKey::generate(config.algorithm, now).map_err(AuthError::from)?;
            store
                .add_signing_key(&seal_key(record.clone(), sealing)?)
                .await?;
            tracing::info!(kid = %record.kid, alg = %record.alg, "signing key created");
            Some(key)
        }
        None => None,
    };
    let horizon = config.key_horizon();
    let mut verify = Vec::new();
    for k in &stored {
        if k.retired_at.is_none_or(|r| r + horizon > now) {
            match SigningKey::from_stored(k) {
                Ok(key) => verify.push(key.verify_key().clone()),
                Err(e) => tracing::error!(kid = %k.kid, error = %e, "unreadable signing key"),
            }
        }
    }
    Ok(KeyRing::new(signing, verify))
}

/// A stored signing key with its private key in clear (see [`crate::sealing::open_stored`]).
fn unseal(
    mut key: crate::jwt::StoredKey,
    sealing: Option<&crate::sealing::KeySet>,
) -> Result<crate::jwt::StoredKey, AuthError> {
    key.private_pkcs8 =
        crate::sealing::open_stored(sealing, key.kid.as_bytes(), &key.private_pkcs8)
            .map_err(|e| AuthError::Keys(format!("signing key {}: {e}", key.kid)))?;
    Ok(key)
}

/// A signing key as the store should keep it: sealed when there are keys to seal it with.
fn seal_key(
    mut key: crate::jwt::StoredKey,
    sealing: Option<&crate::sealing::KeySet>,
) -> Result<crate::jwt::StoredKey, AuthError> {
    key.private_pkcs8 =
        crate::sealing::seal_stored(sealing, key.kid.as_bytes(), &key.private_pkcs8)
            .map_err(|e| AuthError::Keys(e.to_string()))?;
    Ok(key)
}
