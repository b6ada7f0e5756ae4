//! Users and the values that name them: [`UserId`], [`Email`] (validated at the edge) and
//! [`Role`]. Password hashes are not part of [`User`]; the store hands them out separately.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;
use uuid::Uuid;

/// A user's stable identifier (a random UUID; it is public, not a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Empty after trimming.
    #[error("the email address is empty")]
    Empty,
    /// Longer than 254 bytes (RFC 5321).
    #[error("the email address is longer than 254 characters")]
    TooLong,
    /// Not of the form `local@domain`, or contains characters no address has.
    #[error("the email address is not of the form name@example.com")]
    Malformed,
}

/// An email address: trimmed, checked, and with ASCII letters lower-cased so `Ada@Example.com` and
/// `ada@example.com` are one account. Non-ASCII characters are kept exactly as given: folding them
/// (`K` KELVIN SIGN to `k`, `ß` to `ss`) would let two different addresses collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Validates and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EmailError::Malformed);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Malformed)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(EmailError::Malformed);
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::Malformed);
        }
        if local.chars().any(|c| "\"(),:;<>[\\]".contains(c)) {
            return Err(EmailError::Malformed);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(EmailError::Malformed);
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-');
            if !ok {
                return Err(EmailError::Malformed);
            }
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a role name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a role is 1 to 64 characters of a-z, 0-9, '_', '-', ':' and '.'")]
pub struct RoleError;

/// A role name, such as `user` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Role(String);

impl Role {
    /// Validates a role name.
    pub fn parse(raw: &str) -> Result<Self, RoleError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b':' | b'.'));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(RoleError)
        }
    }

    /// The role every new user gets.
    pub fn default_role() -> Self {
        Self("user".to_string())
    }

    /// The role name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Normalised email address; unique.
    pub email: Email,
    /// Roles, sorted and without duplicates.
    pub roles: Vec<Role>,
    /// A disabled user cannot log in and has no sessions.
    pub disabled: bool,
    /// When the account was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_ascii_case_folded() {
        let e = Email::parse("  Ada.Lovelace@Example.COM ").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn l7_unicode_case_is_not_folded() {
        // U+212A KELVIN SIGN must not become 'k', nor dotless i become 'i'.
        let kelvin = Email::parse("\u{212A}ate@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(kelvin.as_str(), "kate@example.com");
        let dotless = Email::parse("\u{131}da@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(dotless.as_str(), "ida@example.com");
    }

    #[test]
    fn l7_hostile_emails_are_refused() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "a@",
            "a@b",
            "' OR 1=1 --",
            "a\r\nb@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-example.com",
            "a..b@example.com",
            "\"quoted\"@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
        // Odd but valid: the quote is fine in a local part and is just data to us.
        assert!(Email::parse("admin'--@x.io").is_ok());
    }

    #[test]
    fn roles_are_validated() {
        assert!(Role::parse("admin").is_ok());
        assert!(Role::parse("billing:read").is_ok());
        for bad in ["", "Admin", "a b", "x\n", &"r".repeat(65)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }
}
