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

/// An email address: trimmed, checked, in Unicode NFC, and with ASCII letters lower-cased so
/// `Ada@Example.com` and `ada@example.com` are one account, and so are `café@` typed with a
/// precomposed `é` and with `e` + U+0301. Other non-ASCII characters are kept as given: folding
/// them (`K` KELVIN SIGN to `k`, `ß` to `ss`) would let two different addresses collide.
/// Invisible characters (default-ignorable and format code points: zero-width space, bidi
/// overrides, BOM, soft hyphen, …) are refused, so an address cannot look like another one.
///
/// An address is a claim, not an identity, until it has been verified by mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Validates and normalises an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        use unicode_normalization::UnicodeNormalization;
        if raw.chars().any(invisible) {
            return Err(EmailError::Malformed);
        }
        let nfc: String = raw.trim().nfc().collect();
        let s = nfc.as_str();
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

    /// The spelling an account made before addresses were put in NFC was stored under (trimmed
    /// and ASCII-lower-cased only), when it differs from [`Email::parse`]'s: so such an account
    /// can still be found by the address typed as it was at signup. `None` when the two agree, or
    /// the address is not one `parse` accepts.
    pub fn stored_before_nfc(raw: &str) -> Option<Self> {
        let now = Self::parse(raw).ok()?;
        let before = raw.trim().to_ascii_lowercase();
        (before != now.0).then_some(Self(before))
    }

    /// An address read back from storage, as it was stored: stores only ever hold addresses
    /// that passed [`Email::parse`] when they were written, and an account made under older
    /// rules must stay readable.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` is a default-ignorable code point (Unicode's `Default_Ignorable_Code_Point`) or a
/// format character (`General_Category=Cf`): characters that render as nothing, or reorder what
/// is around them.
fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
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
    /// Whether the owner of the address confirmed it (by the link mailed to it).
    pub email_verified: bool,
    /// Counts the password's changes. A session proven against an older count is void, on every
    /// instance, whatever store holds it: a login that checked the old password while the
    /// password changed cannot leave a session behind.
    #[serde(skip)]
    pub credentials_gen: i64,
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
    fn l7_unicode_case_and_compatibility_forms_are_not_folded() {
        // Dotless i must not become 'i', fullwidth 'ａ' not 'a' (NFKC would), 'É' not 'é'.
        let dotless = Email::parse("\u{131}da@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(dotless.as_str(), "ida@example.com");
        let wide = Email::parse("\u{FF41}da@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(wide.as_str(), "ada@example.com");
        let upper = Email::parse("\u{C9}mile@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(upper.as_str(), "\u{E9}mile@example.com");
    }

    #[test]
    fn l7_canonically_equal_addresses_are_one_account() {
        let nfc = Email::parse("caf\u{E9}@example.com").unwrap_or_else(|e| panic!("{e}"));
        let nfd = Email::parse("cafe\u{301}@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nfc, nfd);
        assert_eq!(nfd.as_str(), "caf\u{E9}@example.com");
        // U+212A KELVIN SIGN is canonically equal to 'K' (a singleton decomposition).
        let kelvin = Email::parse("\u{212A}ate@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kelvin.as_str(), "kate@example.com");
    }

    #[test]
    fn accounts_from_before_nfc_keep_their_spelling() {
        assert_eq!(
            Email::stored_before_nfc("Cafe\u{301}@Example.com").map(|e| e.0),
            Some("cafe\u{301}@example.com".to_string())
        );
        assert_eq!(Email::stored_before_nfc("caf\u{E9}@example.com"), None);
        assert_eq!(Email::stored_before_nfc("ka\u{200B}te@example.com"), None);
    }

    #[test]
    fn l7_invisible_and_format_characters_are_refused() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{034F}',
            '\u{061C}',
            '\u{115F}',
            '\u{180E}',
            '\u{2060}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FFA0}',
            '\u{E0041}',
            '\u{1D173}',
        ] {
            for raw in [
                format!("ad{c}a@example.com"),
                format!("{c}ada@example.com"),
                format!("ada@exa{c}mple.com"),
            ] {
                assert_eq!(
                    Email::parse(&raw),
                    Err(EmailError::Malformed),
                    "U+{:04X} was accepted",
                    c as u32
                );
            }
        }
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
