//! Passkeys (WebAuthn Level 3): registering one (a discoverable credential, with user
//! verification) with webauthn-rs, the relying-party library Kanidm and Rauthy use, and
//! checking an assertion (see `assertion`), either for a passwordless login (discoverable: the
//! authenticator names the user) or as a second factor of a known user.
//!
//! A ceremony keeps no state on the server while it is under way. Its challenge says what it
//! is for and until when, under a MAC keyed by a secret every instance shares:
//! `deadline (8) ‖ sequence (8) ‖ nonce (16) ‖ purpose (1) ‖ tag (16)`, the tag covering the
//! rest and the user the ceremony was started for. A registration's state is rebuilt from the
//! challenge when the answer comes back, so starting a ceremony writes nothing and the options
//! cost microseconds. An assertion counts once: a passkey records the last challenge it
//! answered, in the same write as its signature counter, and the store takes only a later one
//! (challenges are ordered by their first 32 bytes: deadline, then a sequence that grows with
//! the wall clock in nanoseconds and never repeats in a process), on any instance. Two
//! ceremonies of one passkey answered out of order (two tabs) lose the older one: the user
//! starts it again. A registration counts once because a credential is registered once.
//!
//! Each instance keeps the passkeys it has read; a use checked against that copy is stored only
//! while the store's copy is the same, else it is checked again against the store's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use ring::hmac;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use webauthn_rs::prelude::{
    Passkey, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid,
    Webauthn, WebauthnBuilder,
};

use super::assertion::{Expected, StoredCredential};
use super::config::AuthConfig;
use super::error::AuthError;
use crate::clock::Clock;
use crate::factor::{Factor, FactorId, FactorKind, PasskeyUse};
use crate::store::{Store, StoreError};
use crate::user::{User, UserId};
use crate::Amr;

/// How long a ceremony may take (the browser's own timeout is 5 minutes).
const CEREMONY_TTL: Duration = Duration::minutes(5);
/// The name of the shared secret that keys the challenges' MAC.
pub(crate) const CHALLENGE_KEY: &str = "webauthn-challenge";

/// What a challenge was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Purpose {
    /// Registering a passkey for the user named in the tag.
    Register = 1,
    /// A login with any user's discoverable passkey.
    AnyUser = 2,
    /// An assertion by one of the passkeys of the user named in the tag.
    OneUser = 3,
}

impl Purpose {
    fn from_byte(b: u8) -> Option<Self> {
        [Self::Register, Self::AnyUser, Self::OneUser]
            .into_iter()
            .find(|p| *p as u8 == b)
    }
}

/// Deadline, sequence and nonce: what challenges are ordered by.
const ORDER: usize = 8 + 8 + 16;
const TAG: usize = 16;
const CHALLENGE_LEN: usize = ORDER + 1 + TAG;

/// The last sequence number this process gave a challenge.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next sequence number: the time `now` in nanoseconds, or one more than the last.
fn next_sequence(now: OffsetDateTime) -> u64 {
    use std::sync::atomic::Ordering;
    let wall = u64::try_from(now.unix_timestamp_nanos()).unwrap_or(0);
    let mut last = SEQUENCE.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last.saturating_add(1));
        match SEQUENCE.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A challenge this server made and has not seen expire, read back.
struct Challenge {
    bytes: Vec<u8>,
}

impl Challenge {
    /// Its place in time (what a passkey's last challenge is compared by).
    fn order(&self) -> Vec<u8> {
        self.bytes[..ORDER].to_vec()
    }
}

/// A verified assertion: whose passkey it was and what it proves. It counts once its use is
/// stored.
#[derive(Debug, Clone)]
pub(crate) struct Assertion {
    pub(crate) user: UserId,
    /// `hwk` (a device-bound key) or `swk` (a synced one), with `user` (verification).
    pub(crate) amr: Amr,
    pub(crate) used: PasskeyUse,
    /// Checked against this instance's copy of the credential rather than the store's.
    pub(crate) from_memory: bool,
    /// The credential after this use, to remember once the use is stored.
    after: Arc<Known>,
}

/// A passkey as this instance read it: its owner, factor, stored bytes and parsed credential.
/// A copy may be behind the store (used or removed on another instance): a use checked against
/// it is stored only while the stored bytes are still these (see [`PasskeyUse::previous`]), and
/// otherwise checked again against the store.
#[derive(Debug)]
struct Known {
    user: UserId,
    factor: FactorId,
    stored: Vec<u8>,
    credential: StoredCredential,
}

/// How many passkeys an instance keeps in memory (about 1 KiB each); past that it starts over.
const KNOWN_MAX: usize = 10_000;

pub(crate) struct Passkeys {
    webauthn: Webauthn,
    expected: Expected,
    /// Passkeys read before, by credential id.
    known: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Arc<Known>>>,
    mac: hmac::Key,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

fn bad(what: &str) -> AuthError {
    tracing::info!(reason = what, "passkey refused");
    AuthError::PasskeyRefused
}

/// The challenge a browser signed, read from its client data.
fn signed_challenge(client_data_json: &[u8]) -> Option<Vec<u8>> {
    let data: Value = serde_json::from_slice(client_data_json).ok()?;
    URL_SAFE_NO_PAD.decode(data["challenge"].as_str()?).ok()
}

fn corrupt(e: impl std::fmt::Display) -> AuthError {
    AuthError::Store(StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(value).map_err(corrupt)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

fn library(e: impl std::fmt::Display) -> AuthError {
    AuthError::Keys(format!("passkeys: {e}"))
}

/// A ceremony state of webauthn-rs with its challenge replaced by ours. The library makes its
/// own random challenge and keeps it in the state (`field` is the state's one member); the
/// state is serialisable (`danger-allow-state-serialisation`), and its challenge is a base64url
/// string there. A state whose shape is not that is an error, never a ceremony without a check.
fn with_challenge<S: Serialize + DeserializeOwned>(
    state: &S,
    field: &str,
    challenge: &[u8],
) -> Result<S, AuthError> {
    let mut json = serde_json::to_value(state).map_err(library)?;
    let slot = json
        .get_mut(field)
        .and_then(|inner| inner.get_mut("challenge"))
        .ok_or_else(|| library("a ceremony state without a challenge"))?;
    *slot = Value::String(URL_SAFE_NO_PAD.encode(challenge));
    serde_json::from_value(json).map_err(library)
}

impl Passkeys {
    /// Passkeys for the relying party `rp_id` (the host people sign in on) at `origin`, with
    /// challenges keyed by `challenge_key` (the same on every instance).
    pub(crate) fn new(
        config: &AuthConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        challenge_key: &[u8],
    ) -> Result<Self, AuthError> {
        let origin = Url::parse(&config.passkey_origin)
            .map_err(|e| AuthError::Keys(format!("passkey origin: {e}")))?;
        let webauthn = WebauthnBuilder::new(&config.passkey_rp_id, &origin)
            .and_then(|b| b.rp_name("cloakroom").build())
            .map_err(library)?;
        Ok(Self {
            expected: Expected::new(&config.passkey_rp_id, &origin),
            known: std::sync::Mutex::default(),
            webauthn,
            mac: hmac::Key::new(hmac::HMAC_SHA256, challenge_key),
            store,
            clock,
        })
    }

    /// The user's passkeys as stored.
    async fn stored(&self, user: UserId) -> Result<Vec<(Factor, Passkey)>, AuthError> {
        self.store
            .passkeys(user)
            .await?
            .into_iter()
            .map(|(f, data)| Ok((f, decode::<Passkey>(&data)?)))
            .collect()
    }

    fn tag(&self, purpose: Purpose, user: Option<UserId>, order: &[u8]) -> hmac::Tag {
        let mut mac = hmac::Context::with_key(&self.mac);
        mac.update(b"cloakroom webauthn challenge v1");
        mac.update(&[purpose as u8]);
        mac.update(&user.map_or([0; 16], |u| *u.0.as_bytes()));
        mac.update(order);
        mac.sign()
    }

    /// A new challenge for `purpose` (and `user`, when it names one).
    fn challenge(&self, purpose: Purpose, user: Option<UserId>) -> Vec<u8> {
        let mut order = [0u8; ORDER];
        let deadline = (self.clock.now_secs() + CEREMONY_TTL).unix_timestamp();
        order[..8].copy_from_slice(&deadline.to_be_bytes());
        order[8..16].copy_from_slice(&next_sequence(self.clock.now()).to_be_bytes());
        rand::rngs::OsRng.fill_bytes(&mut order[16..]);
        let tag = self.tag(purpose, user, &order);
        [&order[..], &[purpose as u8], &tag.as_ref()[..TAG]].concat()
    }

    /// Reads back the challenge a browser signed: made here, for one of `purposes`, for `user`
    /// (the tag says whether it names one), and not past its deadline.
    fn check(
        &self,
        client_data_json: &[u8],
        purposes: &[Purpose],
        user: Option<UserId>,
    ) -> Result<Challenge, AuthError> {
        let bytes = signed_challenge(client_data_json).ok_or_else(|| bad("no challenge"))?;
        if bytes.len() != CHALLENGE_LEN {
            return Err(bad("a challenge not made here"));
        }
        let (order, rest) = bytes.split_at(ORDER);
        let (purpose, tag) = rest.split_at(1);
        let purpose = Purpose::from_byte(purpose[0])
            .filter(|p| purposes.contains(p))
            .ok_or_else(|| bad("a challenge made for something else"))?;
        let named = (purpose != Purpose::AnyUser).then_some(user).flatten();
        let expected = self.tag(purpose, named, order);
        if !crate::secret::secrets_equal(&expected.as_ref()[..TAG], tag) {
            return Err(bad("a challenge not made here, or for another user"));
        }
        let deadline = <[u8; 8]>::try_from(&order[..8]).map_err(|_| bad("no deadline"))?;
        let expires_at = OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(deadline))
            .map_err(|_| bad("no deadline"))?;
        if expires_at <= self.clock.now_secs() {
            return Err(bad("an expired challenge"));
        }
        Ok(Challenge { bytes })
    }

    /// The creation options of a new passkey for `user` (as
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` takes them): a discoverable credential
    /// with user verification, none of the user's existing ones again.
    pub(crate) async fn register_options(&self, user: &User) -> Result<Value, AuthError> {
        let (mut options, _) = self.start_registration(user).await?;
        options.public_key.challenge = self.challenge(Purpose::Register, Some(user.id)).into();
        let mut json = serde_json::to_value(&options).map_err(library)?;
        // A passkey is a discoverable credential: it names its user at login.
        if let Some(selection) = json["publicKey"]["authenticatorSelection"].as_object_mut() {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        Ok(json)
    }

    async fn start_registration(
        &self,
        user: &User,
    ) -> Result<
        (
            webauthn_rs::prelude::CreationChallengeResponse,
            PasskeyRegistration,
        ),
        AuthError,
    > {
        let existing: Vec<_> = self
            .stored(user.id)
            .await?
            .iter()
            .map(|(_, p)| p.cred_id().clone())
            .collect();
        self.webauthn
            .start_passkey_registration(
                user.id.0,
                user.email.as_str(),
                user.email.as_str(),
                Some(existing),
            )
            .map_err(library)
    }

    /// Registers the passkey a browser made from [`Passkeys::register_options`].
    pub(crate) async fn register(
        &self,
        user: &User,
        credential: &Value,
        name: Option<String>,
    ) -> Result<Factor, AuthError> {
        let credential: RegisterPublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|_| AuthError::MalformedCredential)?;
        let challenge = self.check(
            credential.response.client_data_json.as_slice(),
            &[Purpose::Register],
            Some(user.id),
        )?;
        let (_, state) = self.start_registration(user).await?;
        let state = with_challenge(&state, "rs", &challenge.bytes)?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(|e| bad(&e.to_string()))?;
        let factor = Factor {
            id: FactorId::random(),
            user_id: user.id,
            kind: FactorKind::Passkey,
            name,
            confirmed: true,
            created_at: self.clock.now_secs(),
            last_used_at: None,
        };
        match self
            .store
            .insert_passkey(&factor, passkey.cred_id().as_ref(), &encode(&passkey)?)
            .await
        {
            Ok(()) => Ok(factor),
            Err(StoreError::Conflict) => Err(bad("a credential registered before")),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks an assertion by `user`'s passkeys ([`Passkeys::verify`]) and records it (the
    /// passkey's counter and last challenge): refused when the passkey answered this challenge,
    /// or a later one, before.
    pub(crate) async fn verify_and_use(
        &self,
        credential: &Value,
        user: UserId,
    ) -> Result<Assertion, AuthError> {
        let refused = || bad("an assertion over a challenge answered before");
        let mut assertion = self.verify(credential, Some(user), false).await?;
        if !self.store.use_passkey(&assertion.used).await? {
            if !assertion.from_memory {
                return Err(refused());
            }
            self.forget(&assertion);
            assertion = self.verify(credential, Some(user), true).await?;
            if !self.store.use_passkey(&assertion.used).await? {
                return Err(refused());
            }
        }
        self.remember(&assertion);
        Ok(assertion)
    }

    /// Keeps the credential as a stored use left it, for the next check on this instance.
    pub(crate) fn remember(&self, assertion: &Assertion) {
        self.keep(Arc::clone(&assertion.after));
    }

    fn keep(&self, passkey: Arc<Known>) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
            known.insert(passkey.credential.id().to_vec(), passkey);
        }
    }

    /// Drops this instance's copy of the credential an assertion was checked against.
    pub(crate) fn forget(&self, assertion: &Assertion) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(assertion.after.credential.id());
        }
    }

    /// The passkey with credential id `id`, if it is `user`'s: from memory unless `fresh`,
    /// else from the store (and then remembered).
    async fn known(
        &self,
        user: UserId,
        id: &[u8],
        fresh: bool,
    ) -> Result<Option<(Arc<Known>, bool)>, AuthError> {
        if !fresh {
            let hit = self.known.lock().ok().and_then(|k| k.get(id).cloned());
            if let Some(known) = hit.filter(|k| k.user == user) {
                return Ok(Some((known, true)));
            }
        }
        let rows = self.store.passkeys(user).await?;
        for (factor, stored) in rows {
            let passkey = decode::<Passkey>(&stored)?;
            if passkey.cred_id().as_slice() != id {
                continue;
            }
            let known = Arc::new(Known {
                user,
                factor: factor.id,
                credential: StoredCredential::new(&passkey).map_err(bad)?,
                stored,
            });
            self.keep(Arc::clone(&known));
            return Ok(Some((known, false)));
        }
        Ok(None)
    }

    /// Request options for a login: with no user, for any discoverable passkey (`conditional`
    /// for autofill, else a modal prompt); with a user, for that user's passkeys (a second
    /// factor, or a step-up). Nothing is stored.
    pub(crate) async fn login_options(
        &self,
        user: Option<UserId>,
        conditional: bool,
    ) -> Result<Value, AuthError> {
        let options = match user {
            None => {
                let (mut options, _) = self
                    .webauthn
                    .start_discoverable_authentication()
                    .map_err(library)?;
                if !conditional {
                    options.mediation = None;
                }
                options.public_key.challenge = self.challenge(Purpose::AnyUser, None).into();
                options
            }
            Some(user) => {
                let keys = self.keys_of(user).await?;
                if keys.is_empty() {
                    return Err(AuthError::NotFound);
                }
                let (mut options, _) = self
                    .webauthn
                    .start_passkey_authentication(&keys)
                    .map_err(library)?;
                options.public_key.challenge = self.challenge(Purpose::OneUser, Some(user)).into();
                options
            }
        };
        serde_json::to_value(&options).map_err(library)
    }

    async fn keys_of(&self, user: UserId) -> Result<Vec<Passkey>, AuthError> {
        Ok(self
            .stored(user)
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Checks an assertion made from [`Passkeys::login_options`], by `expected`'s passkeys when
    /// given (a second factor, a step-up) or else by the user the authenticator names: the
    /// challenge must be one made here and not expired, and a ceremony started for one user
    /// accepts only that user's passkeys; the rest (origin, RP ID, user verification, the
    /// signature with the credential's stored key, a counter that must not go back) is
    /// [`StoredCredential::check`]'s. The credential is this instance's copy unless `fresh`.
    /// Nothing is written: the use is stored with the login's session, or by
    /// [`Passkeys::verify_and_use`].
    pub(crate) async fn verify(
        &self,
        credential: &Value,
        expected: Option<UserId>,
        fresh: bool,
    ) -> Result<Assertion, AuthError> {
        let credential = PublicKeyCredential::deserialize(credential)
            .map_err(|_| AuthError::MalformedCredential)?;
        // The user handle is not signed: it only says whose passkeys to look among.
        let named = match credential.response.user_handle.as_ref() {
            Some(handle) => Some(
                Uuid::from_slice(handle.as_ref())
                    .map(UserId)
                    .map_err(|_| bad("a user handle that is not one of ours"))?,
            ),
            None => None,
        };
        let user = match (expected, named) {
            (Some(user), Some(named)) if named != user => {
                return Err(bad("another user's handle"));
            }
            (Some(user), _) | (None, Some(user)) => user,
            (None, None) => return Err(bad("no user handle")),
        };
        let challenge = self.check(
            credential.response.client_data_json.as_slice(),
            &[Purpose::AnyUser, Purpose::OneUser],
            Some(user),
        )?;
        let Some((known, from_memory)) = self
            .known(user, credential.raw_id.as_slice(), fresh)
            .await?
        else {
            return Err(bad("not one of the user's passkeys"));
        };
        let checked = known
            .credential
            .check(&credential, &challenge.bytes, &self.expected)
            .map_err(bad)?;
        let key = if checked.backup_eligible {
            Amr::SWK
        } else {
            Amr::HWK
        };
        let after = known.credential.after(&checked);
        let stored = encode(&after)?;
        Ok(Assertion {
            user,
            amr: key.with(Amr::USER),
            used: PasskeyUse {
                user,
                factor: known.factor,
                credential: stored.clone(),
                previous: known.stored.clone(),
                at: self.clock.now_secs(),
                challenge: challenge.order(),
            },
            from_memory,
            after: Arc::new(Known {
                user,
                factor: known.factor,
                credential: StoredCredential::new(&after).map_err(bad)?,
                stored,
            }),
        })
    }
}
