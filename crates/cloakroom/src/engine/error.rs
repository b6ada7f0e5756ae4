//! What can go wrong, named by outcome.

use time::Duration;

use crate::password::{PasswordError, WeakPassword};
use crate::store::StoreError;
use crate::user::{EmailError, RoleError};

/// How long a client is asked to wait when hashing is saturated.
pub(crate) const OVERLOAD_RETRY: Duration = Duration::seconds(1);

/// What went wrong, named by outcome. The server maps each to a status and error code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password or disabled account: one answer for all three.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    /// Held back by throttling.
    #[error("too many attempts; try again later")]
    TooManyAttempts {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Signup with an email that has an account.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The email address is not valid.
    #[error("{0}")]
    InvalidEmail(#[from] EmailError),
    /// The new password does not meet the policy.
    #[error("{0}")]
    WeakPassword(#[from] WeakPassword),
    /// A role name is not valid.
    #[error("{0}")]
    InvalidRole(#[from] RoleError),
    /// No valid session.
    #[error("not signed in, or the session has ended")]
    Unauthenticated,
    /// The password was right and the account has a second factor: the login continues with
    /// the `mfa_token` (see `Auth::login_mfa`). No session exists yet.
    #[error("a second factor is required")]
    MfaRequired {
        /// The token of the second step: single-use, short-lived, good for nothing else.
        mfa_token: crate::Secret<String>,
        /// What the second step may be proved with (`totp`, `recovery_code`).
        methods: Vec<&'static str>,
    },
    /// A second factor's code is wrong, was already used, or is not the user's.
    #[error("the code is wrong or was already used")]
    InvalidCode,
    /// A passkey's credential was refused: an unknown, spent or expired challenge, another origin,
    /// no user verification, a bad signature, a counter that went back, another user's.
    #[error("the passkey was not accepted")]
    PasskeyRefused,
    /// What was sent as a passkey's credential is not one (`PublicKeyCredential.toJSON()`).
    #[error(
        "the credential is not a WebAuthn credential as PublicKeyCredential.toJSON() gives it"
    )]
    MalformedCredential,
    /// A link's token sent by mail that is unknown, expired, already used, for something else,
    /// or void since the account changed.
    #[error("this link is not valid (any more); ask for a new one")]
    InvalidLink,
    /// A DPoP proof that is missing where it is needed, or refused (RFC 9449 §4.3).
    #[error("the DPoP proof is not acceptable: {0}")]
    DpopProof(crate::dpop::ProofError),
    /// A DBSC proof or request that is refused (see [`crate::dbsc::DbscError`]).
    #[error("{0}")]
    Dbsc(crate::dbsc::DbscError),
    /// A cookie session that must be device-bound cannot be used as it came: a bound session
    /// without a current bound cookie (`bound`: the browser refreshes it with a proof), or an
    /// unbound one where the deployment requires binding.
    #[error("{}", if *bound { "this session is bound to a device; its bound cookie is missing or expired" } else { "this deployment requires a device-bound session; sign in with a browser that supports it" })]
    DeviceBinding {
        /// The session.
        session: crate::SessionId,
        /// Whether it is bound.
        bound: bool,
    },
    /// The address is confirmed already.
    #[error("the email address is confirmed already")]
    EmailAlreadyVerified,
    /// A change of address to the address the account has.
    #[error("that is the account's address already")]
    SameEmail,
    /// An `mfa_token` that is unknown, expired, already used or worn out.
    #[error("this sign-in attempt has expired; log in again")]
    InvalidMfaToken,
    /// The operation needs a fresh login or the current password.
    #[error("confirm your password to do this")]
    ReauthRequired,
    /// No such session or user (or not yours).
    #[error("not found")]
    NotFound,
    /// Password hashing is saturated.
    #[error("the server is busy; try again shortly")]
    Overloaded {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A refresh token that is unknown, spent, expired or revoked (RFC 6749 `invalid_grant`).
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// Signing keys could not be made, read or used.
    #[error("signing keys: {0}")]
    Keys(String),
    /// Hashing failed for another reason than load.
    #[error("password hashing failed")]
    Hashing(#[source] PasswordError),
}

impl From<PasswordError> for AuthError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Overloaded => Self::Overloaded {
                retry_after: OVERLOAD_RETRY,
            },
            other => Self::Hashing(other),
        }
    }
}

impl From<crate::jwt::KeyError> for AuthError {
    fn from(e: crate::jwt::KeyError) -> Self {
        Self::Keys(e.to_string())
    }
}
