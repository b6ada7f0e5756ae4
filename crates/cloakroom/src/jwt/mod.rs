//! JSON Web Tokens: access tokens bound to sessions (RFC 9068 profile), signed and verified with
//! `ring`, parsed strictly.
//!
//! Why not a general JWT crate: the common ones accept more than we want (unknown header members,
//! `crit`, string-typed `exp`, last-wins duplicate members) or need care to configure safely.
//! cloakroom only ever verifies its own tokens, so the verifier accepts exactly the shape it
//! mints and nothing else, and the signatures come from `ring`, a small, well-kept, audited
//! library that is also Wycheproof-tested. Each key is bound to exactly one algorithm, found by
//! `kid` in a map built at start, and never from the token's own header.

mod claims;
mod jws;
mod keys;

pub use claims::{AccessClaims, Audience, ClaimsPolicy, Confirmation};
pub(crate) use jws::STRICT;
pub use jws::{
    insecure_decode_without_verifying, sign, verify, verify_with_key, Header, MAX_TOKEN_BYTES,
};
pub use keys::{Algorithm, KeyRing, SigningKey, StoredKey, VerifyKey};

/// Why a token was refused. The variants exist for logs and `token inspect`; clients only ever
/// hear "invalid token".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    /// Not three strict base64url parts.
    #[error("the token is not a compact JWS of three base64url parts")]
    Malformed,
    /// The header is not a JSON object of `alg`, `typ` and `kid` only.
    #[error("the header is not acceptable: {0}")]
    Header(String),
    /// `alg` is not one we verify, or is not the algorithm of the key named by `kid`.
    #[error("the algorithm is not allowed for this key")]
    Algorithm,
    /// No key has this `kid`.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Signature,
    /// The claims are not the JSON object we mint.
    #[error("the claims are not acceptable: {0}")]
    Claims(String),
    /// A token bound to a DPoP key, presented without the key's proof.
    #[error("the token is bound to a DPoP key and needs its proof")]
    Bound,
    /// `typ` is not `at+jwt`.
    #[error("the token type is not at+jwt")]
    Type,
    /// `iss` is not ours.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name us.
    #[error("wrong audience")]
    Audience,
    /// Expired (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// Not valid yet, or issued in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Lives longer than any token we mint.
    #[error("the token's lifetime is longer than allowed")]
    Lifetime,
}

/// Why a key could not be read, made or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An algorithm name that is not one of ours.
    #[error("unsupported algorithm {0:?} (EdDSA, ES256, RS256, HS256)")]
    UnsupportedAlgorithm(String),
    /// An HS256 secret that is too short or not random enough.
    #[error("{0}")]
    WeakSecret(&'static str),
    /// A JWK or JWKS that is not a usable public signing key.
    #[error("{0}")]
    InvalidJwk(String),
    /// A stored private key that cannot be read.
    #[error("{0}")]
    InvalidStoredKey(String),
    /// The operation does not apply to this algorithm.
    #[error("{0}")]
    NotApplicable(&'static str),
    /// The cryptography library could not make or use the key.
    #[error("{0}")]
    Crypto(String),
}
