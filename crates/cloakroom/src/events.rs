//! Security events: what happened to an account that its owner should be able to see (logins
//! and failed ones, logouts, sessions ended, password changes, the address confirmed, second
//! factors added or removed, a recovery code used, an administrator's changes). Kept per user,
//! newest first; they never hold a password, a secret, a code or a token.

use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

use crate::user::UserId;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A second factor was added (the detail names its kind).
    FactorAdded,
    /// A second factor was removed.
    FactorRemoved,
    /// A new set of recovery codes was made (the old set is void).
    RecoveryCodesMade,
    /// A recovery code was used to log in or to prove a fresh login.
    RecoveryCodeUsed,
    /// An administrator removed every second factor.
    FactorsReset,
    /// A login (the detail names how it was proven, RFC 8176 names).
    Login,
    /// A wrong password for this account.
    LoginFailed,
    /// The user logged out.
    Logout,
    /// Sessions ended by the user or an administrator (the detail says which).
    SessionsEnded,
    /// The password changed (the detail says how).
    PasswordChanged,
    /// The address was confirmed.
    EmailVerified,
    /// An administrator disabled the account.
    AccountDisabled,
    /// An administrator enabled the account again.
    AccountEnabled,
    /// An administrator changed the roles (the detail lists them).
    RolesChanged,
    /// A move to another address was asked for (the old address was told).
    EmailChangeRequested,
    /// The account moved to the address that confirmed it.
    EmailChanged,
    /// The old address cancelled a change (the detail says whether it had happened).
    EmailChangeCancelled,
    /// A spent refresh token came back (a copy in someone else's hands): the session ended.
    RefreshReuseDetected,
    /// A login's tokens were bound to the client's DPoP key.
    TokensBound,
    /// A bound token came with a proof that was refused (the detail says why: a replay, another
    /// key, …): someone may hold a copy of it.
    DpopProofRefused,
    /// A browser session was bound to the browser's key (DBSC).
    SessionBound,
    /// A browser's session proof was refused (the detail says why: another key, a replayed
    /// challenge, …): someone may hold a copy of the session cookie.
    DbscProofRefused,
}

const KINDS: [(EventKind, &str); 22] = [
    (EventKind::FactorAdded, "factor_added"),
    (EventKind::FactorRemoved, "factor_removed"),
    (EventKind::RecoveryCodesMade, "recovery_codes_made"),
    (EventKind::RecoveryCodeUsed, "recovery_code_used"),
    (EventKind::FactorsReset, "factors_reset"),
    (EventKind::Login, "login"),
    (EventKind::LoginFailed, "login_failed"),
    (EventKind::Logout, "logout"),
    (EventKind::SessionsEnded, "sessions_ended"),
    (EventKind::PasswordChanged, "password_changed"),
    (EventKind::EmailVerified, "email_verified"),
    (EventKind::AccountDisabled, "account_disabled"),
    (EventKind::AccountEnabled, "account_enabled"),
    (EventKind::RolesChanged, "roles_changed"),
    (EventKind::EmailChangeRequested, "email_change_requested"),
    (EventKind::EmailChanged, "email_changed"),
    (EventKind::EmailChangeCancelled, "email_change_cancelled"),
    (EventKind::RefreshReuseDetected, "refresh_reuse_detected"),
    (EventKind::TokensBound, "tokens_bound"),
    (EventKind::DpopProofRefused, "dpop_proof_refused"),
    (EventKind::SessionBound, "session_bound"),
    (EventKind::DbscProofRefused, "dbsc_proof_refused"),
];

impl EventKind {
    /// The stored name (`factor_added`, …).
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("unknown", |(_, n)| n)
    }

    /// What a mail tells the user when this happened, for the events they are told of by
    /// mail as soon as they happen (others have messages of their own, or none).
    pub fn notice(self) -> Option<&'static str> {
        Some(match self {
            Self::FactorAdded => "A second factor was added",
            Self::FactorRemoved => "A second factor was removed",
            Self::RecoveryCodeUsed => "A recovery code was used",
            Self::FactorsReset => "An administrator removed your second factors",
            _ => return None,
        })
    }

    /// In words, for the user.
    pub fn describe(self) -> &'static str {
        match self {
            Self::FactorAdded => "Second factor added",
            Self::FactorRemoved => "Second factor removed",
            Self::RecoveryCodesMade => "New recovery codes made",
            Self::RecoveryCodeUsed => "Recovery code used",
            Self::FactorsReset => "Second factors reset by an administrator",
            Self::Login => "Signed in",
            Self::LoginFailed => "Wrong password",
            Self::Logout => "Logged out",
            Self::SessionsEnded => "Sessions ended",
            Self::PasswordChanged => "Password changed",
            Self::EmailVerified => "Email address confirmed",
            Self::AccountDisabled => "Account disabled by an administrator",
            Self::AccountEnabled => "Account enabled by an administrator",
            Self::RolesChanged => "Roles changed by an administrator",
            Self::EmailChangeRequested => "Change of email address asked for",
            Self::EmailChanged => "Email address changed",
            Self::EmailChangeCancelled => "Change of email address cancelled",
            Self::RefreshReuseDetected => {
                "A used refresh token came back, so its session was ended"
            }
            Self::TokensBound => "An app's tokens were bound to its key",
            Self::DpopProofRefused => "A bound token came with a proof that was refused",
            Self::SessionBound => "A browser session was bound to this device",
            Self::DbscProofRefused => "A browser session's device proof was refused",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KINDS
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("unknown event {s:?}"))
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    /// Whose account.
    pub user_id: UserId,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: OffsetDateTime,
    /// From where (the client address), when known.
    pub ip: Option<String>,
    /// The client's `User-Agent`, when known.
    pub user_agent: Option<String>,
    /// More, in a word or two (the factor's kind or name); never a secret.
    pub detail: Option<String>,
}

/// Records `event` after the change it tells of is done. The change is answered as done either
/// way: an event that cannot be written (a full disk) is logged, never turned into a failure of
/// what already happened, which the client would take for a change that did not.
pub(crate) async fn record_after<S: crate::store::EventStore + ?Sized>(
    store: &S,
    event: &SecurityEvent,
) {
    if let Err(e) = store.record_event(event).await {
        tracing::warn!(
            user = %event.user_id,
            event = event.kind.as_str(),
            error = %e,
            "a security event was not recorded"
        );
    }
}
