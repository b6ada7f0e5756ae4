//! Signing and verification keys. A key has one algorithm, fixed when it is made; the ring of
//! keys maps `kid` to key, and verification uses the key's algorithm, never the token's say-so.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use ring::{hmac, signature::UnparsedPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use time::OffsetDateTime;

use super::{KeyError, VerifyError};

/// A JWS algorithm cloakroom signs or verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 (the default).
    EdDSA,
    /// ECDSA P-256 with SHA-256, signature as r‖s.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys).
    RS256,
    /// HMAC-SHA-256 with a configured secret.
    HS256,
}

impl Algorithm {
    /// The `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;
    /// Exact, case-sensitive names only (`none`, `None`, `hs256` … are not algorithms).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(Self::EdDSA),
            "ES256" => Ok(Self::ES256),
            "RS256" => Ok(Self::RS256),
            "HS256" => Ok(Self::HS256),
            other => Err(KeyError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

#[derive(Clone)]
enum Public {
    Ed25519(Vec<u8>),
    Es256 { x: Vec<u8>, y: Vec<u8> },
    Rs256 { n: Vec<u8>, e: Vec<u8> },
    Hs256(hmac::Key),
}

/// A key that verifies signatures of exactly one algorithm.
#[derive(Clone)]
pub struct VerifyKey {
    kid: String,
    alg: Algorithm,
    public: Public,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Refuses HMAC secrets that are short or plainly not random (RFC 7518 §3.2, JW-3): fewer than
/// 32 bytes, or so repetitive (under 10 distinct byte values) that they cannot be random.
/// An HMAC secret must be at least 32 random bytes (RFC 7518 §3.2; catalogue J6): raw bytes
/// that look random, or text that is the base64 or hex spelling of such bytes. Text that is not
/// (a passphrase, however long) is refused: its entropy is far below its length.
fn check_hmac_secret(secret: &[u8]) -> Result<(), KeyError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    // 32 uniformly random bytes hold about 30 distinct values; under 20 is not random.
    let random =
        |b: &[u8]| b.len() >= 32 && b.iter().collect::<std::collections::HashSet<_>>().len() >= 20;
    if !secret.iter().all(u8::is_ascii_graphic) {
        return if random(secret) {
            Ok(())
        } else {
            Err(KeyError::WeakSecret(
                "an HS256 secret must have at least 32 random bytes",
            ))
        };
    }
    let text = std::str::from_utf8(secret).unwrap_or_default();
    let decoded = [
        decode_hex(text),
        STANDARD.decode(text).ok(),
        STANDARD_NO_PAD.decode(text).ok(),
        URL_SAFE.decode(text).ok(),
        URL_SAFE_NO_PAD.decode(text).ok(),
    ];
    if decoded.iter().flatten().any(|d| random(d)) {
        return Ok(());
    }
    Err(KeyError::WeakSecret(
        "an HS256 secret must be at least 32 random bytes written in base64 or hex \
         (for example the output of `openssl rand -base64 32`); a passphrase is not enough",
    ))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(v: &Value, field: &str) -> Result<Vec<u8>, KeyError> {
    let s = v[field]
        .as_str()
        .ok_or_else(|| KeyError::InvalidJwk(format!("the JWK has no string {field:?}")))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| KeyError::InvalidJwk(format!("the JWK's {field:?} is not base64url")))
}

impl VerifyKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// An HMAC-SHA-256 key.
    pub fn hs256(kid: &str, secret: &[u8]) -> Self {
        Self {
            kid: kid.to_string(),
            alg: Algorithm::HS256,
            public: Public::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        }
    }

    /// Reads a public JWK (RFC 7517/7518/8037). `alg` must be present or given, and must fit the
    /// key type; private members and symmetric keys are refused unless `allow_symmetric`.
    pub fn from_jwk(
        jwk: &Value,
        default_alg: Option<Algorithm>,
        allow_symmetric: bool,
    ) -> Result<Self, KeyError> {
        let kty = jwk["kty"]
            .as_str()
            .ok_or_else(|| KeyError::InvalidJwk("the JWK has no kty".into()))?;
        let alg = match jwk.get("alg") {
            Some(Value::String(a)) => a.parse::<Algorithm>()?,
            Some(_) => return Err(KeyError::InvalidJwk("the JWK's alg is not a string".into())),
            None => default_alg.ok_or_else(|| KeyError::InvalidJwk("the JWK has no alg".into()))?,
        };
        let kid = match jwk.get("kid") {
            Some(Value::String(k)) => k.clone(),
            Some(_) => return Err(KeyError::InvalidJwk("the JWK's kid is not a string".into())),
            None => String::new(),
        };
        if let Some(usage) = jwk.get("use") {
            if usage != "sig" {
                return Err(KeyError::InvalidJwk("the JWK is not for signatures".into()));
            }
        }
        let public = match (kty, alg) {
            ("OKP", Algorithm::EdDSA) => {
                if jwk["crv"] != "Ed25519" {
                    return Err(KeyError::InvalidJwk(
                        "only the Ed25519 curve is supported".into(),
                    ));
                }
                let x = unb64(jwk, "x")?;
                if x.len() != 32 {
                    return Err(KeyError::InvalidJwk("an Ed25519 key is 32 bytes".into()));
                }
                Public::Ed25519(x)
            }
            ("EC", Algorithm::ES256) => {
                if jwk["crv"] != "P-256" {
                    return Err(KeyError::InvalidJwk("ES256 needs a P-256 key".into()));
                }
                let (x, y) = (unb64(jwk, "x")?, unb64(jwk, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::InvalidJwk(
                        "a P-256 coordinate is 32 bytes".into(),
                    ));
                }
                Public::Es256 { x, y }
            }
            ("RSA", Algorithm::RS256) => {
                let n = unb64(jwk, "n")?;
                if n.iter().skip_while(|b| **b == 0).count() * 8 < 2048 {
                    return Err(KeyError::InvalidJwk(
                        "RSA keys must have at least 2048 bits".into(),
                    ));
                }
                Public::Rs256 {
                    n,
                    e: unb64(jwk, "e")?,
                }
            }
            ("oct", Algorithm::HS256) if allow_symmetric => {
                let k = unb64(jwk, "k")?;
                check_hmac_secret(&k)?;
                Public::Hs256(hmac::Key::new(hmac::HMAC_SHA256, &k))
            }
            (kty, alg) => {
                return Err(KeyError::InvalidJwk(format!(
                    "a {kty} key cannot be used with {alg}"
                )))
            }
        };
        if jwk.get("d").is_some() || jwk.get("p").is_some() {
            return Err(KeyError::InvalidJwk(
                "the JWK holds private key material".into(),
            ));
        }
        Ok(Self { kid, alg, public })
    }

    /// The public JWK (RFC 7517), with `kid`, `alg` and `use: "sig"`; `None` for a secret key.
    pub fn to_jwk(&self) -> Option<Value> {
        let mut jwk = match &self.public {
            Public::Ed25519(x) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
            Public::Es256 { x, y } => {
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
            Public::Rs256 { n, e } => json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
            Public::Hs256(_) => return None,
        };
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg.as_str());
        jwk["use"] = json!("sig");
        Some(jwk)
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        let ok = match &self.public {
            Public::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            Public::Es256 { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                sig.len() == 64
                    && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(message, sig)
                        .is_ok()
            }
            Public::Rs256 { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            Public::Hs256(key) => hmac::verify(key, message, sig).is_ok(),
        };
        ok.then_some(()).ok_or(VerifyError::Signature)
    }
}

#[derive(Clone)]
enum Private {
    Ed25519(Arc<Ed25519KeyPair>),
    Es256(Arc<EcdsaKeyPair>),
    Rs256(Arc<signature::RsaKeyPair>),
    Hs256(hmac::Key),
}

/// A key that signs, parsed once and kept in memory.
#[derive(Clone)]
pub struct SigningKey {
    private: Private,
    public: VerifyKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .field("alg", &self.public.alg)
            .finish_non_exhaustive()
    }
}

/// A key as kept in the store: its id, algorithm, private key (PKCS#8 DER) and lifecycle.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// Its one algorithm.
    pub alg: Algorithm,
    /// The private key, PKCS#8 DER.
    pub private_pkcs8: Vec<u8>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When a newer key replaced it for signing; it still verifies until `retired_at` plus the
    /// longest token lifetime.
    pub retired_at: Option<OffsetDateTime>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

fn kid_for(alg: Algorithm, public: &[u8]) -> String {
    let digest = Sha256::digest(public);
    format!("{}-{}", alg.as_str().to_lowercase(), b64(&digest[..12]))
}

impl SigningKey {
    /// A fresh key pair for `alg` (EdDSA, ES256 or RS256), returned with its stored form.
    pub fn generate(alg: Algorithm, at: OffsetDateTime) -> Result<(Self, StoredKey), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|e| KeyError::Crypto(e.to_string()))?
                .as_ref()
                .to_vec(),
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|e| KeyError::Crypto(e.to_string()))?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::RS256 => {
                // `ring` cannot make RSA keys: the `rsa` crate generates this one (generation is
                // not an online operation, so its timing cannot be probed); `ring` does all
                // signing with it.
                use rsa::pkcs8::EncodePrivateKey;
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .and_then(|k| k.to_pkcs8_der().map_err(rsa::Error::from))
                    .map_err(|e| KeyError::Crypto(e.to_string()))?
                    .as_bytes()
                    .to_vec()
            }
            Algorithm::HS256 => {
                return Err(KeyError::NotApplicable(
                    "HS256 keys come from the configured secret",
                ))
            }
        };
        let stored = StoredKey {
            kid: String::new(),
            alg,
            private_pkcs8: pkcs8,
            created_at: at,
            retired_at: None,
        };
        let key = Self::from_stored(&stored)?;
        let stored = StoredKey {
            kid: key.public.kid.clone(),
            ..stored
        };
        Ok((key, stored))
    }

    /// Parses a stored key (once; the result is kept).
    pub fn from_stored(stored: &StoredKey) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let (private, public) = match stored.alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&stored.private_pkcs8)
                    .map_err(|e| KeyError::InvalidStoredKey(format!("bad Ed25519 key: {e}")))?;
                let x = pair.public_key().as_ref().to_vec();
                (Private::Ed25519(Arc::new(pair)), Public::Ed25519(x))
            }
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &stored.private_pkcs8,
                    &rng,
                )
                .map_err(|e| KeyError::InvalidStoredKey(format!("bad P-256 key: {e}")))?;
                let point = pair.public_key().as_ref();
                let (x, y) = (point[1..33].to_vec(), point[33..65].to_vec());
                (Private::Es256(Arc::new(pair)), Public::Es256 { x, y })
            }
            Algorithm::RS256 => {
                let pair = signature::RsaKeyPair::from_pkcs8(&stored.private_pkcs8)
                    .map_err(|e| KeyError::InvalidStoredKey(format!("bad RSA key: {e}")))?;
                if pair.public().modulus_len() < 256 {
                    return Err(KeyError::InvalidStoredKey(
                        "RSA keys must have at least 2048 bits".into(),
                    ));
                }
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                (
                    Private::Rs256(Arc::new(pair)),
                    Public::Rs256 { n: c.n, e: c.e },
                )
            }
            Algorithm::HS256 => return Err(KeyError::NotApplicable("HS256 keys cannot be stored")),
        };
        let raw = match &public {
            Public::Ed25519(x) => x.clone(),
            Public::Es256 { x, y } => [x.as_slice(), y.as_slice()].concat(),
            Public::Rs256 { n, .. } => n.clone(),
            Public::Hs256(_) => Vec::new(),
        };
        let kid = if stored.kid.is_empty() {
            kid_for(stored.alg, &raw)
        } else {
            stored.kid.clone()
        };
        Ok(Self {
            private,
            public: VerifyKey {
                kid,
                alg: stored.alg,
                public,
            },
        })
    }

    /// An HS256 key from a configured secret of at least 32 bytes.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        check_hmac_secret(secret)?;
        let kid = kid_for(Algorithm::HS256, &Sha256::digest(secret));
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        Ok(Self {
            private: Private::Hs256(key.clone()),
            public: VerifyKey {
                kid,
                alg: Algorithm::HS256,
                public: Public::Hs256(key),
            },
        })
    }

    /// The matching verification key.
    pub fn verify_key(&self) -> &VerifyKey {
        &self.public
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.private {
            Private::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Private::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| KeyError::Crypto(e.to_string())),
            Private::Rs256(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(|e| KeyError::Crypto(e.to_string()))?;
                Ok(sig)
            }
            Private::Hs256(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
        }
    }
}

/// The keys a verifier trusts, by `kid`, and the one a signer signs with.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    verify: HashMap<String, VerifyKey>,
    signing: Option<SigningKey>,
}

/// Longest `kid` looked up at all.
const MAX_KID: usize = 128;

impl KeyRing {
    /// A ring that verifies with `keys` and signs with `signing` (which it also verifies with).
    pub fn new(signing: Option<SigningKey>, keys: impl IntoIterator<Item = VerifyKey>) -> Self {
        let mut verify: HashMap<String, VerifyKey> =
            keys.into_iter().map(|k| (k.kid.clone(), k)).collect();
        if let Some(s) = &signing {
            verify.insert(s.public.kid.clone(), s.public.clone());
        }
        Self { verify, signing }
    }

    /// The key with this id: a plain map lookup, nothing else (no files, no queries).
    pub fn get(&self, kid: &str) -> Option<&VerifyKey> {
        if kid.len() > MAX_KID {
            return None;
        }
        self.verify.get(kid)
    }

    /// The current signing key.
    pub fn signing(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }

    /// Every verification key, ordered by id.
    pub fn keys(&self) -> Vec<&VerifyKey> {
        let mut keys: Vec<_> = self.verify.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        keys
    }

    /// The JWKS document (RFC 7517 §5) of the public keys.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.keys().iter().filter_map(|k| k.to_jwk()).collect();
        json!({ "keys": keys })
    }

    /// Reads a JWKS document: every usable signature key in it.
    pub fn from_jwks(doc: &Value) -> Result<Self, KeyError> {
        let keys = doc["keys"]
            .as_array()
            .ok_or_else(|| KeyError::InvalidJwk("the JWKS has no \"keys\" array".into()))?;
        let parsed = keys
            .iter()
            .map(|k| VerifyKey::from_jwk(k, None, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(None, parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_key_signs_verifies_and_round_trips_through_storage() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
            let (key, stored) = SigningKey::generate(alg, OffsetDateTime::UNIX_EPOCH).unwrap();
            let again = SigningKey::from_stored(&stored).unwrap();
            assert_eq!(again.verify_key().kid(), key.verify_key().kid());
            let sig = key.sign(b"message").unwrap();
            assert!(again.verify_key().verify(b"message", &sig).is_ok(), "{alg}");
            assert!(
                again.verify_key().verify(b"massage", &sig).is_err(),
                "{alg}"
            );
            let jwk = key.verify_key().to_jwk().unwrap();
            let parsed = VerifyKey::from_jwk(&jwk, None, false).unwrap();
            assert!(parsed.verify(b"message", &sig).is_ok(), "{alg} via its JWK");
            assert_eq!(parsed.alg(), alg);
        }
    }

    #[test]
    fn j6_weak_hmac_secrets_are_refused() {
        assert!(SigningKey::hs256(b"").is_err());
        assert!(SigningKey::hs256(b"short secret").is_err());
        assert!(SigningKey::hs256(&[0u8; 64]).is_err());
        assert!(SigningKey::hs256(b"aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd").is_err());
        // Long passphrases and short encodings are refused.
        assert!(SigningKey::hs256(b"correct-horse-battery-staple-and-then-some-more").is_err());
        assert!(SigningKey::hs256(b"k7Q2x9Vd0pLr8sT3mZb6Nw1Yc4Hf5Ju0").is_err());
        // 32 random bytes, raw, in base64 (padded or not, either alphabet) or hex.
        let raw: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(97).wrapping_add(13))
            .collect();
        assert!(SigningKey::hs256(&raw).is_ok());
        assert!(SigningKey::hs256(b"TS91DwafmQCHcPT74L5X4QWBxfPIOarsBdFk298qKC4=").is_ok());
        assert!(SigningKey::hs256(b"TS91DwafmQCHcPT74L5X4QWBxfPIOarsBdFk298qKC4").is_ok());
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert!(SigningKey::hs256(hex.as_bytes()).is_ok());
    }
}
