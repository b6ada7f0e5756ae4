//! Security events: what happened to an account that its owner should be able to see (second
//! factors added or removed, a recovery code used, factors reset by an administrator). Kept per
//! user, newest first; they never hold a secret, a code or a token.

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
}

const KINDS: [(EventKind, &str); 5] = [
    (EventKind::FactorAdded, "factor_added"),
    (EventKind::FactorRemoved, "factor_removed"),
    (EventKind::RecoveryCodesMade, "recovery_codes_made"),
    (EventKind::RecoveryCodeUsed, "recovery_code_used"),
    (EventKind::FactorsReset, "factors_reset"),
];

impl EventKind {
    /// The stored name (`factor_added`, …).
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("unknown", |(_, n)| n)
    }

    /// In words, for the user.
    pub fn describe(self) -> &'static str {
        match self {
            Self::FactorAdded => "Second factor added",
            Self::FactorRemoved => "Second factor removed",
            Self::RecoveryCodesMade => "New recovery codes made",
            Self::RecoveryCodeUsed => "Recovery code used",
            Self::FactorsReset => "Second factors reset by an administrator",
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
    /// More, in a word or two (the factor's kind or name); never a secret.
    pub detail: Option<String>,
}
