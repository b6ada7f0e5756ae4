//! Sessions: the server-side record of one login, and the secrets that name it.
//!
//! A [`SessionToken`] is 256 bits from the operating system's CSPRNG, base64url-encoded (43
//! characters). Only its SHA-256 ([`TokenHash`]) is stored. A token presented by a client is
//! checked for length and alphabet before anything looks it up.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::secret::Secret;
use crate::user::UserId;

/// A session's public identifier (used in listings, `DELETE /auth/sessions/{id}` and a JWT's
/// `sid`). It is not a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for SessionId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The secret a client holds for its session. Never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(Secret<String>);

/// Length of an encoded token: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;

impl SessionToken {
    /// 256 fresh bits from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(Secret::new(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts a presented token only if it has the exact shape of one we issue: 43 characters of
    /// the base64url alphabet that decode canonically to 32 bytes.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::well_formed(raw).then(|| Self(Secret::new(raw.to_string())))
    }

    /// The hash of a presented token of the right shape (see [`SessionToken::parse`]), without
    /// copying it: what a session lookup needs.
    pub fn hash_presented(raw: &str) -> Option<TokenHash> {
        Self::well_formed(raw).then(|| TokenHash(Sha256::digest(raw.as_bytes()).into()))
    }

    /// 43 characters of the base64url alphabet, in the one canonical spelling of 32 bytes: the
    /// last character carries 4 bits, so its 2 unused low bits must be zero (a decoder that
    /// allowed them would accept 4 spellings of each token).
    fn well_formed(raw: &str) -> bool {
        let b = raw.as_bytes();
        let sextet = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        };
        b.len() == TOKEN_LEN
            && b.iter().all(|&c| sextet(c).is_some())
            && sextet(b[TOKEN_LEN - 1]).is_some_and(|v| v & 0b11 == 0)
    }

    /// The family a refresh token claims: its first 16 bytes.
    pub fn family(&self) -> Lineage {
        let mut family = [0u8; 16];
        if let Ok(bytes) = URL_SAFE_NO_PAD.decode(self.0.expose()) {
            if let Some(head) = bytes.get(..16) {
                family.copy_from_slice(head);
            }
        }
        Lineage(family)
    }

    /// The encoded token, to hand to the client.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The SHA-256 of the token: what the store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.expose().as_bytes()).into())
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken([redacted])")
    }
}

/// A keyed check value inside every token cloakroom mints: the last 8 bytes are a MAC (HMAC-SHA256,
/// truncated) of the first 24 under a key every instance shares, so a token that cloakroom did
/// not mint is recognised as such with no store lookup. Tokens minted before the check existed
/// do not carry one; the engine looks those up within a small budget (see
/// `AuthConfig::unchecked_lookups_per_sec`).
pub struct TokenCheck {
    key: ring::hmac::Key,
}

impl fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCheck([redacted])")
    }
}

impl TokenCheck {
    /// A check under `key` (32 random bytes shared by every instance).
    pub fn new(key: &[u8]) -> Self {
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        }
    }

    fn tag(&self, body: &[u8]) -> [u8; 8] {
        let full = ring::hmac::sign(&self.key, body);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&full.as_ref()[..8]);
        tag
    }

    fn finish(&self, mut bytes: [u8; 32]) -> SessionToken {
        let tag = self.tag(&bytes[..24]);
        bytes[24..].copy_from_slice(&tag);
        SessionToken(Secret::new(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A new session token: 192 bits from the OS CSPRNG and the check value.
    pub fn mint(&self) -> SessionToken {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes[..24]);
        self.finish(bytes)
    }

    /// A new refresh token of `family`: the family's 128 bits, 64 fresh bits, the check value.
    pub fn mint_in_family(&self, family: &Lineage) -> SessionToken {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&family.0);
        OsRng.fill_bytes(&mut bytes[16..24]);
        self.finish(bytes)
    }

    /// Whether a presented token (already of the right shape) carries a valid check value. The
    /// comparison takes the same time wherever the values differ.
    pub fn verify(&self, raw: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(raw) else {
            return false;
        };
        let Some((body, tag)) = bytes.split_at_checked(24) else {
            return false;
        };
        let want = self.tag(body);
        crate::secret::secrets_equal(tag, &want)
    }
}

/// The secret shared by every refresh token of one token session: 128 random bits, known
/// only to whoever holds (or held) one of its tokens. Stored only as its hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Lineage([u8; 16]);

impl Lineage {
    /// A fresh family.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// What the store keeps to find the session of a family.
    pub fn hash(&self) -> TokenHash {
        let mut h = Sha256::new();
        h.update(b"cloakroom refresh lineage v1\0");
        h.update(self.0);
        TokenHash(h.finalize().into())
    }
}

impl fmt::Debug for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lineage([redacted])")
    }
}

/// The SHA-256 of a session or refresh token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell two apart in a test failure, not enough to matter.
        write!(f, "TokenHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// How the client carries its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The opaque session token in a cookie.
    Cookie,
    /// A short-lived access JWT plus a rotating refresh token.
    Token,
}

impl Transport {
    /// The name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::Token => "token",
        }
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cookie" => Ok(Self::Cookie),
            "token" => Ok(Self::Token),
            other => Err(format!("unknown transport {other:?}")),
        }
    }
}

/// How long a session may live: ended after `idle` without activity, and after `absolute` in
/// any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Longest time without a request.
    pub idle: Duration,
    /// Longest time since login.
    pub absolute: Duration,
}

impl Lifetime {
    /// 30 minutes idle, 12 hours absolute.
    pub const BROWSER: Self = Self {
        idle: Duration::minutes(30),
        absolute: Duration::hours(12),
    };
    /// "Remember me": 14 days idle, 30 days absolute.
    pub const REMEMBER: Self = Self {
        idle: Duration::days(14),
        absolute: Duration::days(30),
    };
}

/// One login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public id.
    pub id: SessionId,
    /// Whose session it is.
    pub user_id: UserId,
    /// How the client carries it.
    pub transport: Transport,
    /// Hash of the current secret (the cookie token, or the current refresh token).
    pub secret_hash: TokenHash,
    /// Whether the client asked to be remembered (a persistent cookie).
    pub remember: bool,
    /// When the session began.
    pub created_at: OffsetDateTime,
    /// When the user last proved who they are (`auth_time`).
    pub authenticated_at: OffsetDateTime,
    /// How they proved it (`amr`; `acr` follows from it).
    pub amr: crate::Amr,
    /// When the session was last used (kept in memory; written to the store in batches).
    pub last_seen_at: OffsetDateTime,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// The absolute deadline.
    pub absolute_expires_at: OffsetDateTime,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Client `User-Agent` at login.
    pub user_agent: Option<String>,
    /// The user's [`crate::User::credentials_gen`] when the password was checked; the session
    /// is void once the user's count has moved past it.
    pub credentials_gen: i64,
    /// A token session's [`Lineage`] (its hash): any of its refresh tokens, however old, finds
    /// the session. `None` for cookie sessions.
    pub refresh_family: Option<TokenHash>,
    /// The thumbprint (RFC 7638) of the DPoP key a token session's tokens are bound to
    /// (RFC 9449), if they are.
    pub dpop_jkt: Option<String>,
    /// The public key (a JWK, as JSON) a cookie session is bound to by DBSC, if it is: the
    /// session cookie then counts only beside a bound cookie that proof by this key renewed.
    pub dbsc_key: Option<String>,
}

impl Session {
    /// When the session ends if it is not used again after `last_seen`.
    pub fn expires_at(&self, last_seen: OffsetDateTime) -> OffsetDateTime {
        (last_seen + self.idle_timeout).min(self.absolute_expires_at)
    }

    /// Whether the session is over at `now`, given its last activity.
    pub fn is_expired(&self, last_seen: OffsetDateTime, now: OffsetDateTime) -> bool {
        now >= self.expires_at(last_seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn s1_tokens_are_unique_43_char_base64url() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let t = SessionToken::generate();
            assert_eq!(t.expose().len(), 43);
            assert!(t
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(
                SessionToken::parse(t.expose()).map(|p| p.hash()),
                Some(t.hash())
            );
            assert_eq!(SessionToken::hash_presented(t.expose()), Some(t.hash()));
            assert!(seen.insert(t.expose().to_string()));
        }
    }

    #[test]
    fn c9_malformed_tokens_are_refused_before_lookup() {
        let good = SessionToken::generate();
        let mut bad = vec![
            String::new(),
            "\"quoted\"".into(),
            "a".repeat(10_000),
            format!("{}=", &good.expose()[..42]),
            format!("{}+", &good.expose()[..42]),
            format!("{};", &good.expose()[..42]),
            format!("{}\0", &good.expose()[..42]),
            good.expose()[..42].to_string(),
        ];
        // Non-canonical last character: the unused low bits are set.
        let mut s = good.expose()[..42].to_string();
        s.push('B');
        if URL_SAFE_NO_PAD.decode(&s).is_err() {
            bad.push(s);
        }
        for b in bad {
            assert!(SessionToken::parse(&b).is_none(), "{b:?}");
            assert!(SessionToken::hash_presented(&b).is_none(), "{b:?}");
        }
    }

    #[test]
    fn the_shape_check_agrees_with_a_canonical_decoder() {
        let good = SessionToken::generate();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for last in alphabet.chars().chain("+/=.~ ".chars()) {
            let t = format!("{}{last}", &good.expose()[..42]);
            let decodes = URL_SAFE_NO_PAD.decode(&t).is_ok_and(|b| b.len() == 32);
            assert_eq!(SessionToken::well_formed(&t), decodes, "{t}");
        }
    }

    #[test]
    fn minted_tokens_carry_a_check_value_that_forgeries_lack() {
        let check = TokenCheck::new(&[7u8; 32]);
        let other = TokenCheck::new(&[8u8; 32]);
        for _ in 0..1000 {
            let t = check.mint();
            assert!(
                SessionToken::parse(t.expose()).is_some(),
                "the shape is unchanged"
            );
            assert!(check.verify(t.expose()));
            assert!(!other.verify(t.expose()));
            assert!(!check.verify(SessionToken::generate().expose()));
        }
        let family = Lineage::generate();
        let r = check.mint_in_family(&family);
        assert!(check.verify(r.expose()));
        assert_eq!(r.family(), family);
        // Any one character changed breaks it.
        let t = check.mint();
        for i in 0..TOKEN_LEN - 1 {
            let mut s = t.expose().to_string();
            let c = if &s[i..=i] == "A" { "B" } else { "A" };
            s.replace_range(i..=i, c);
            assert!(!check.verify(&s), "position {i}");
        }
    }

    #[test]
    fn refresh_tokens_of_one_family_share_it_and_nothing_else() {
        let family = Lineage::generate();
        let check = TokenCheck::new(&[1u8; 32]);
        let a = check.mint_in_family(&family);
        let b = check.mint_in_family(&family);
        assert_ne!(a, b);
        assert_eq!(a.family(), family);
        assert_eq!(b.family(), family);
        assert_eq!(
            SessionToken::parse(a.expose()).map(|t| t.family()),
            Some(family)
        );
        assert_ne!(SessionToken::generate().family(), family);
        assert_ne!(family.hash(), Lineage::generate().hash());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = SessionToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn expiry_is_the_earlier_of_idle_and_absolute() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let s = Session {
            id: SessionId::random(),
            user_id: UserId::random(),
            transport: Transport::Cookie,
            secret_hash: SessionToken::generate().hash(),
            remember: false,
            created_at: t0,
            authenticated_at: t0,
            last_seen_at: t0,
            idle_timeout: Duration::minutes(30),
            absolute_expires_at: t0 + Duration::hours(12),
            ip: None,
            user_agent: None,
            credentials_gen: 0,
            refresh_family: None,
            amr: crate::Amr::PWD,
            dpop_jkt: None,
            dbsc_key: None,
        };
        assert!(!s.is_expired(t0, t0 + Duration::minutes(29)));
        assert!(s.is_expired(t0, t0 + Duration::minutes(30)));
        let late = t0 + Duration::hours(12) - Duration::minutes(1);
        assert!(s.is_expired(late, t0 + Duration::hours(12)));
    }
}
