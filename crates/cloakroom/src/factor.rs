//! Second factors as stored: an authenticator app (TOTP), a passkey or a set of recovery codes,
//! and the pending second step of a login (an MFA challenge). Secrets are not here: a TOTP secret is
//! kept sealed by the store and opened only by the engine.

use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::session::{TokenHash, Transport};
use crate::user::UserId;

/// A factor's public id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FactorId(pub Uuid);

impl FactorId {
    /// A new random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for FactorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for FactorId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s).map(Self)
    }
}

/// What kind of factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorKind {
    /// An authenticator app (RFC 6238).
    Totp,
    /// A passkey (WebAuthn).
    Passkey,
    /// Single-use recovery codes.
    RecoveryCodes,
}

impl FactorKind {
    /// `totp` or `recovery_codes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Passkey => "passkey",
            Self::RecoveryCodes => "recovery_codes",
        }
    }
}

impl FromStr for FactorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "totp" => Ok(Self::Totp),
            "passkey" => Ok(Self::Passkey),
            "recovery_codes" => Ok(Self::RecoveryCodes),
            other => Err(format!("unknown factor kind {other:?}")),
        }
    }
}

/// A factor, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    /// Id.
    pub id: FactorId,
    /// Whose factor it is.
    pub user_id: UserId,
    /// Its kind.
    pub kind: FactorKind,
    /// The name the user gave it.
    pub name: Option<String>,
    /// Whether it counts: a TOTP factor counts once a first code confirmed it (a passkey at
    /// once).
    pub confirmed: bool,
    /// When it was added.
    pub created_at: OffsetDateTime,
    /// When it last proved a login.
    pub last_used_at: Option<OffsetDateTime>,
}

/// A passkey's use: its stored credential as it is now (the signature counter moves), when, and
/// the challenge it answered (its deadline and nonce, which order challenges in time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyUse {
    /// Its owner.
    pub user: UserId,
    /// The factor.
    pub factor: FactorId,
    /// The credential, as the WebAuthn library stores it.
    pub credential: Vec<u8>,
    /// The credential as it was read for the check: the use is taken only while the stored one
    /// is still that (not used on another instance since, nor removed).
    pub previous: Vec<u8>,
    /// When it was used.
    pub at: OffsetDateTime,
    /// The challenge it answered: it must come after the last one the passkey answered.
    pub challenge: Vec<u8>,
}

/// The pending second step of a login: the password was right, a second factor is due. Its
/// token is the `mfa_token` the client holds (stored hashed); it is single-use, short-lived,
/// allows a few tries, and is good for nothing but that step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    /// Hash of the `mfa_token`.
    pub token_hash: TokenHash,
    /// Whose login it is.
    pub user_id: UserId,
    /// The user's credentials generation when the password was checked: a password change
    /// meanwhile voids the challenge.
    pub credentials_gen: i64,
    /// The transport the session will use.
    pub transport: Transport,
    /// "Remember me".
    pub remember: bool,
    /// Tries made so far.
    pub attempts: u32,
    /// When it stops being accepted.
    pub expires_at: OffsetDateTime,
}
