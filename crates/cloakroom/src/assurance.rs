//! How a user proved who they are, and the assurance level that reaches: the `amr` values of
//! RFC 8176 a session records, and the `acr` derived from them (NIST SP 800-63B's AAL1 and AAL2).
//! `acr` is never stored: it follows from `amr` by one rule, here.

use std::fmt;

/// The authentication methods of a session (RFC 8176 §2), a small set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Amr(u8);

/// The assurance level of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Acr {
    /// One factor.
    Aal1,
    /// Two factors, or a passkey with user verification.
    Aal2,
}

const NAMES: [(u8, &str); 6] = [
    (Amr::PWD.0, "pwd"),
    (Amr::OTP.0, "otp"),
    (Amr::HWK.0, "hwk"),
    (Amr::SWK.0, "swk"),
    (Amr::USER.0, "user"),
    (Amr::MFA.0, "mfa"),
];

impl Amr {
    /// A password.
    pub const PWD: Self = Self(1);
    /// A one-time password (an authenticator app's code, or a recovery code).
    pub const OTP: Self = Self(2);
    /// A proof of possession of a hardware-bound key (a device-bound passkey).
    pub const HWK: Self = Self(4);
    /// A proof of possession of a software-bound key (a synced passkey).
    pub const SWK: Self = Self(8);
    /// User presence and verification at the authenticator (a PIN or biometric).
    pub const USER: Self = Self(16);
    /// More than one factor.
    pub const MFA: Self = Self(32);

    /// No method (nothing proved yet).
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Both sets.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every method of `other` is in this set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The methods' names, in RFC 8176's order (`pwd`, `otp`, `mfa`).
    pub fn iter(self) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .filter(move |(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
    }

    /// The methods' names, as [`Amr::iter`] gives them.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().collect()
    }

    /// Reads names as [`Amr::names`] gives them; an unknown name is an error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        names.into_iter().try_fold(Self::empty(), |set, name| {
            NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(bit, _)| set.with(Self(*bit)))
                .ok_or_else(|| format!("unknown authentication method {name:?}"))
        })
    }

    /// The stored form: the names joined by commas (`pwd,otp,mfa`).
    pub fn encode(self) -> String {
        self.names().join(",")
    }

    /// Reads the stored form.
    pub fn decode(stored: &str) -> Result<Self, String> {
        if stored.is_empty() {
            return Ok(Self::empty());
        }
        Self::from_names(stored.split(','))
    }

    /// The assurance level these methods reach: AAL2 for two factors, or for a key proof with
    /// user verification (a passkey is something held and something known or been); else AAL1.
    pub fn acr(self) -> Acr {
        let key = self.0 & (Self::HWK.0 | Self::SWK.0) != 0;
        if self.contains(Self::MFA) || (key && self.contains(Self::USER)) {
            Acr::Aal2
        } else {
            Acr::Aal1
        }
    }
}

/// What a resource demands of the caller's authentication (step-up): a level, and a login no
/// older than `max_age` seconds. `?aal=2&max_age=300` at forward-auth; the
/// [`RequireStepUp`](crate::extract::RequireStepUp) extractor in an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The lowest acceptable level.
    pub aal: Acr,
    /// The oldest acceptable `auth_time`, as an age in seconds.
    pub max_age: Option<i64>,
}

impl Requirement {
    /// Whether a session proven with `amr` at `auth_time` (seconds since the epoch) meets this
    /// at `now`.
    pub fn met_by(&self, amr: Amr, auth_time: i64, now: i64) -> bool {
        amr.acr() >= self.aal
            && self
                .max_age
                .is_none_or(|age| now.saturating_sub(auth_time) <= age)
    }

    /// The RFC 9470 challenge for a caller that does not meet it: the value of
    /// `WWW-Authenticate`.
    pub fn challenge(&self) -> String {
        let mut value = format!(
            "Bearer error=\"insufficient_user_authentication\", \
             error_description=\"a stronger or more recent authentication is required\", \
             acr_values=\"{}\"",
            self.aal
        );
        if let Some(age) = self.max_age {
            value.push_str(&format!(", max_age={age}"));
        }
        value
    }
}

impl Acr {
    /// `aal1` or `aal2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aal1 => "aal1",
            Self::Aal2 => "aal2",
        }
    }

    /// Reads `aal1` or `aal2` (also `1` and `2`, as `?aal=` takes them).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aal1" | "1" => Some(Self::Aal1),
            "aal2" | "2" => Some(Self::Aal2),
            _ => None,
        }
    }
}

impl fmt::Display for Acr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_unknown_names_are_refused() {
        let set = Amr::PWD.with(Amr::OTP).with(Amr::MFA);
        assert_eq!(set.names(), ["pwd", "otp", "mfa"]);
        assert_eq!(set.encode(), "pwd,otp,mfa");
        assert_eq!(Amr::decode("pwd,otp,mfa"), Ok(set));
        assert_eq!(Amr::decode(""), Ok(Amr::empty()));
        assert!(Amr::decode("pwd,sms").is_err());
        assert!(Amr::decode("pwd,").is_err());
    }

    #[test]
    fn requirements_weigh_level_and_age() {
        let strong = Amr::PWD.with(Amr::OTP).with(Amr::MFA);
        let fresh = Requirement {
            aal: Acr::Aal1,
            max_age: Some(300),
        };
        assert!(fresh.met_by(Amr::PWD, 1000, 1300));
        assert!(!fresh.met_by(Amr::PWD, 1000, 1301));
        let aal2 = Requirement {
            aal: Acr::Aal2,
            max_age: None,
        };
        assert!(!aal2.met_by(Amr::PWD, 1000, 1000));
        assert!(aal2.met_by(strong, 0, 1_000_000));
        assert_eq!(
            Requirement {
                aal: Acr::Aal2,
                max_age: Some(300)
            }
            .challenge(),
            "Bearer error=\"insufficient_user_authentication\", error_description=\"a stronger \
             or more recent authentication is required\", acr_values=\"aal2\", max_age=300"
        );
    }

    #[test]
    fn the_level_follows_from_the_methods() {
        assert_eq!(Amr::PWD.acr(), Acr::Aal1);
        assert_eq!(Amr::PWD.with(Amr::OTP).acr(), Acr::Aal1);
        assert_eq!(Amr::PWD.with(Amr::OTP).with(Amr::MFA).acr(), Acr::Aal2);
        assert_eq!(Amr::HWK.acr(), Acr::Aal1);
        assert_eq!(Amr::HWK.with(Amr::USER).acr(), Acr::Aal2);
        assert_eq!(Amr::SWK.with(Amr::USER).acr(), Acr::Aal2);
        assert!(Acr::Aal2 > Acr::Aal1);
        assert_eq!(Acr::parse("2"), Some(Acr::Aal2));
        assert_eq!(Acr::parse("aal3"), None);
    }
}
