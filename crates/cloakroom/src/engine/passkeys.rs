//! Passkeys (WebAuthn Level 3) with webauthn-rs, the relying-party library Kanidm and Rauthy
//! use: registering one (a discoverable credential, with user verification), and checking an
//! assertion, either for a passwordless login (discoverable: the authenticator names the user)
//! or as a second factor of a known user. Each ceremony's state lives in the store, keyed by the
//! hash of its challenge: single-use, short-lived, and good on every instance.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::Duration;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder,
};

use super::config::AuthConfig;
use super::error::AuthError;
use crate::clock::Clock;
use crate::factor::{Factor, FactorId, FactorKind};
use crate::session::TokenHash;
use crate::store::{Store, StoreError};
use crate::user::{User, UserId};
use crate::Amr;

/// How long a ceremony may take (the browser's own timeout is 5 minutes).
const CEREMONY_TTL: Duration = Duration::minutes(5);
const REGISTER: &str = "register";
const LOGIN: &str = "login";

/// A verified assertion: whose passkey it was and what it proves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Assertion {
    pub(crate) user: UserId,
    /// `hwk` (a device-bound key) or `swk` (a synced one), with `user` (verification).
    pub(crate) amr: Amr,
}

pub(crate) struct Passkeys {
    webauthn: Webauthn,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

fn bad(what: &str) -> AuthError {
    tracing::info!(reason = what, "passkey refused");
    AuthError::PasskeyRefused
}

/// The hash a ceremony is stored under: of its challenge's bytes.
fn ceremony_key(challenge: &[u8]) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"cloakroom webauthn ceremony:");
    h.update(challenge);
    TokenHash(h.finalize().into())
}

/// The challenge a browser signed, read from its client data.
fn signed_challenge(client_data_json: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let data: Value = serde_json::from_slice(client_data_json).ok()?;
    URL_SAFE_NO_PAD.decode(data["challenge"].as_str()?).ok()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(value).map_err(|e| AuthError::Store(StoreError::Corrupt(e.to_string())))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(bytes).map_err(|e| AuthError::Store(StoreError::Corrupt(e.to_string())))
}

impl Passkeys {
    /// Passkeys for the relying party `rp_id` (the host people sign in on) at `origin`.
    pub(crate) fn new(
        config: &AuthConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        let origin = Url::parse(&config.passkey_origin)
            .map_err(|e| AuthError::Keys(format!("passkey origin: {e}")))?;
        let webauthn = WebauthnBuilder::new(&config.passkey_rp_id, &origin)
            .and_then(|b| b.rp_name("cloakroom").build())
            .map_err(|e| AuthError::Keys(format!("passkeys: {e}")))?;
        Ok(Self {
            webauthn,
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

    async fn remember(
        &self,
        challenge: &[u8],
        user: Option<UserId>,
        purpose: &str,
        state: Vec<u8>,
    ) -> Result<(), AuthError> {
        let expires = self.clock.now_secs() + CEREMONY_TTL;
        self.store
            .insert_ceremony(&ceremony_key(challenge), user, purpose, &state, expires)
            .await?;
        Ok(())
    }

    async fn recall(
        &self,
        client_data_json: &[u8],
        purpose: &str,
    ) -> Result<(Option<UserId>, Vec<u8>), AuthError> {
        let challenge = signed_challenge(client_data_json).ok_or_else(|| bad("no challenge"))?;
        self.store
            .take_ceremony(&ceremony_key(&challenge), purpose, self.clock.now_secs())
            .await?
            .ok_or_else(|| bad("unknown, spent or expired challenge"))
    }

    /// The creation options of a new passkey for `user` (as
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` takes them): a discoverable credential
    /// with user verification, none of the user's existing ones again.
    pub(crate) async fn register_options(&self, user: &User) -> Result<Value, AuthError> {
        let existing: Vec<_> = self
            .stored(user.id)
            .await?
            .iter()
            .map(|(_, p)| p.cred_id().clone())
            .collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(
                user.id.0,
                user.email.as_str(),
                user.email.as_str(),
                Some(existing),
            )
            .map_err(|e| AuthError::Keys(format!("passkeys: {e}")))?;
        let challenge = options.public_key.challenge.as_slice().to_vec();
        self.remember(&challenge, Some(user.id), REGISTER, encode(&state)?)
            .await?;
        let mut json = serde_json::to_value(&options)
            .map_err(|e| AuthError::Keys(format!("passkeys: {e}")))?;
        // A passkey is a discoverable credential: it names its user at login.
        if let Some(selection) = json["publicKey"]["authenticatorSelection"].as_object_mut() {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        Ok(json)
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
        let (owner, state) = self
            .recall(credential.response.client_data_json.as_slice(), REGISTER)
            .await?;
        if owner != Some(user.id) {
            return Err(bad("a ceremony of another user"));
        }
        let state: PasskeyRegistration = decode(&state)?;
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

    /// Request options for a login: with no user, for any discoverable passkey (`conditional`
    /// for autofill, else a modal prompt); with a user, for that user's passkeys (a second
    /// factor, or a step-up).
    pub(crate) async fn login_options(
        &self,
        user: Option<UserId>,
        conditional: bool,
    ) -> Result<Value, AuthError> {
        let (options, state, owner) = match user {
            None => {
                let (mut options, state) = self
                    .webauthn
                    .start_discoverable_authentication()
                    .map_err(|e| AuthError::Keys(format!("passkeys: {e}")))?;
                if !conditional {
                    options.mediation = None;
                }
                (options, encode::<DiscoverableAuthentication>(&state)?, None)
            }
            Some(user) => {
                let keys: Vec<Passkey> = self
                    .stored(user)
                    .await?
                    .into_iter()
                    .map(|(_, p)| p)
                    .collect();
                if keys.is_empty() {
                    return Err(AuthError::NotFound);
                }
                let (options, state) = self
                    .webauthn
                    .start_passkey_authentication(&keys)
                    .map_err(|e| AuthError::Keys(format!("passkeys: {e}")))?;
                (
                    options,
                    encode::<PasskeyAuthentication>(&state)?,
                    Some(user),
                )
            }
        };
        let challenge = options.public_key.challenge.as_slice().to_vec();
        self.remember(&challenge, owner, LOGIN, state).await?;
        serde_json::to_value(&options).map_err(|e| AuthError::Keys(format!("passkeys: {e}")))
    }

    /// Checks an assertion made from [`Passkeys::login_options`]: the challenge is spent
    /// whatever the outcome, the signature must verify with the credential's stored key, user
    /// verification must have happened, the signature counter must not go back (for a
    /// credential that is not synced), and a ceremony started for one user accepts only that
    /// user's passkeys. The credential's counter is stored.
    pub(crate) async fn verify(&self, credential: &Value) -> Result<Assertion, AuthError> {
        let credential: PublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|_| AuthError::MalformedCredential)?;
        let (owner, state) = self
            .recall(credential.response.client_data_json.as_slice(), LOGIN)
            .await?;
        let user = match owner {
            Some(user) => user,
            None => {
                let (uuid, _) = self
                    .webauthn
                    .identify_discoverable_authentication(&credential)
                    .map_err(|_| bad("no user handle"))?;
                UserId(Uuid::from_bytes(*uuid.as_bytes()))
            }
        };
        let keys = self.stored(user).await?;
        let result = match owner {
            Some(_) => {
                let state: PasskeyAuthentication = decode(&state)?;
                self.webauthn
                    .finish_passkey_authentication(&credential, &state)
            }
            None => {
                let state: DiscoverableAuthentication = decode(&state)?;
                let discoverable: Vec<DiscoverableKey> =
                    keys.iter().map(|(_, p)| DiscoverableKey::from(p)).collect();
                self.webauthn
                    .finish_discoverable_authentication(&credential, state, &discoverable)
            }
        }
        .map_err(|e| bad(&e.to_string()))?;
        if !result.user_verified() {
            return Err(bad("no user verification"));
        }
        let Some((factor, mut passkey)) = keys
            .into_iter()
            .find(|(_, p)| p.cred_id() == result.cred_id())
        else {
            return Err(bad("not one of the user's passkeys"));
        };
        passkey.update_credential(&result);
        self.store
            .update_passkey(user, factor.id, &encode(&passkey)?, self.clock.now_secs())
            .await?;
        let key = if result.backup_eligible() {
            Amr::SWK
        } else {
            Amr::HWK
        };
        Ok(Assertion {
            user,
            amr: key.with(Amr::USER),
        })
    }
}
