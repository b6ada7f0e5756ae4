//! The claims of an access token (RFC 9068 §2.2 plus `sid` and `roles`) and their validation.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::jws::Header;
use super::VerifyError;

/// `aud`: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `ours` exactly.
    pub fn contains(&self, ours: &str) -> bool {
        match self {
            Self::One(a) => a == ours,
            Self::Many(all) => all.iter().any(|a| a == ours),
        }
    }
}

/// A NumericDate that must be an integer, never a string, float, bool or null (CVE-2026-25537:
/// a string `exp` must not count as absent).
fn strict_date<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = i64::deserialize(d)?;
    if v < 0 {
        return Err(de::Error::custom("a NumericDate before 1970"));
    }
    Ok(v)
}

fn strict_opt_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    strict_date(d).map(Some)
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(de::Error::custom("empty string"));
    }
    Ok(s)
}

/// The claims cloakroom mints. Unknown and duplicated members are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// Issuer: the public URL.
    pub iss: String,
    /// Subject: the user id.
    #[serde(deserialize_with = "non_empty")]
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry (seconds since the epoch).
    #[serde(deserialize_with = "strict_date")]
    pub exp: i64,
    /// Issued at.
    #[serde(deserialize_with = "strict_date")]
    pub iat: i64,
    /// Not before (never minted, accepted if well-formed).
    #[serde(
        default,
        deserialize_with = "strict_opt_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// Token id.
    #[serde(deserialize_with = "non_empty")]
    pub jti: String,
    /// The client the token was issued to.
    #[serde(deserialize_with = "non_empty")]
    pub client_id: String,
    /// The session the token is bound to.
    #[serde(deserialize_with = "non_empty")]
    pub sid: String,
    /// The user's roles when the token was minted.
    pub roles: Vec<String>,
    /// When the user last proved who they are (RFC 9068 §2.2.1).
    #[serde(
        default,
        deserialize_with = "strict_opt_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_time: Option<i64>,
    /// The assurance level reached then: `aal1` or `aal2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// How they proved it (RFC 8176 names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Whether the owner of the address confirmed it (OpenID Connect's claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// What the token is bound to (RFC 7800): a DPoP key (RFC 9449 §6), whose proof must come
    /// with every use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf`: the key a token is bound to. cloakroom binds only to DPoP keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The DPoP key's JWK SHA-256 thumbprint (RFC 7638), base64url.
    #[serde(deserialize_with = "non_empty")]
    pub jkt: String,
}

impl AccessClaims {
    /// Refuses a token bound to a DPoP key when it is presented as a bearer token (RFC 9449
    /// §7.1): without a proof by its key, a copy of it is worth nothing.
    pub fn usable_as_bearer(&self) -> Result<(), VerifyError> {
        match self.cnf {
            Some(_) => Err(VerifyError::Bound),
            None => Ok(()),
        }
    }
}

/// What an access token must satisfy beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsPolicy {
    /// The exact `iss`.
    pub issuer: String,
    /// The audience that must be named.
    pub audience: String,
    /// Clock leeway, at most 60 s.
    pub leeway_secs: i64,
    /// The longest lifetime (`exp - iat`) we mint.
    pub max_lifetime_secs: i64,
}

/// Media types an access token may carry (RFC 9068 §4), compared case-insensitively.
fn is_access_token_type(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    })
}

impl ClaimsPolicy {
    /// Parses and checks the claims of a token whose signature was verified.
    pub fn validate(
        &self,
        header: &Header,
        payload: &[u8],
        now: OffsetDateTime,
    ) -> Result<AccessClaims, VerifyError> {
        if !is_access_token_type(header.typ.as_deref()) {
            return Err(VerifyError::Type);
        }
        let claims: AccessClaims =
            serde_json::from_slice(payload).map_err(|e| VerifyError::Claims(e.to_string()))?;
        self.check(&claims, now)?;
        Ok(claims)
    }

    /// The time and identity rules alone.
    pub fn check(&self, c: &AccessClaims, now: OffsetDateTime) -> Result<(), VerifyError> {
        let now = now.unix_timestamp();
        let l = self.leeway_secs.clamp(0, 60);
        if c.iss != self.issuer {
            return Err(VerifyError::Issuer);
        }
        if !c.aud.contains(&self.audience) {
            return Err(VerifyError::Audience);
        }
        if now >= c.exp.saturating_add(l) {
            return Err(VerifyError::Expired);
        }
        if c.nbf.is_some_and(|nbf| nbf > now.saturating_add(l)) || c.iat > now.saturating_add(l) {
            return Err(VerifyError::NotYetValid);
        }
        if c.exp.saturating_sub(c.iat) > self.max_lifetime_secs.saturating_add(l) {
            return Err(VerifyError::Lifetime);
        }
        Ok(())
    }
}
