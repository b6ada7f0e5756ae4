//! DPoP proofs (RFC 9449): a client proves, request by request, that it holds the private key a
//! token is bound to. A proof is a JWT the client signs with that key, carrying the public key in
//! its header; it names the request (`htm`, `htu`), its time (`iat`), a unique `jti`, and with an
//! access token, the token's hash (`ath`).
//!
//! [`verify_proof`] runs RFC 9449 §4.3's checks in its order, but for the one that needs memory
//! shared by every instance (a `jti` seen before): the caller does that with what it returns, for
//! as long as [`ProofRules::window`] keeps a proof fresh, which is what bounds that memory.
//!
//! The proof is parsed as strictly as cloakroom's own tokens (see [`crate::jwt`]): strict
//! base64url, a header of `typ`, `alg` and `jwk` only (and an ignored `kid`), asymmetric
//! algorithms only, a public key without private members, and the signature checked by `ring`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::jwt::Algorithm;
use crate::key_proof::{self, KeyFrom, Members, OpenError, Opened};

/// The largest proof looked at.
pub const MAX_PROOF_BYTES: usize = key_proof::MAX_PROOF_BYTES;

/// How far a proof's `iat` may be from now, either way; a proof is remembered (against replay)
/// for as long as it could be accepted.
pub const WINDOW: Duration = Duration::seconds(60);

/// The longest `jti` accepted.
const MAX_JTI: usize = 256;

/// Why a proof was refused. Clients hear `invalid_dpop_proof` (or `use_dpop_nonce`); the
/// variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Longer than [`MAX_PROOF_BYTES`], not three strict base64url parts, or not JSON.
    #[error("the DPoP proof is not a compact JWS of JSON")]
    Malformed,
    /// `typ` is not `dpop+jwt`, or the header has members other than `typ`, `alg`, `jwk`, `kid`.
    #[error("the DPoP proof's header is not acceptable: {0}")]
    Header(String),
    /// `alg` is not an asymmetric algorithm we verify, or not the key's.
    #[error("the DPoP proof's algorithm is not allowed")]
    Algorithm,
    /// The `jwk` is not a public key we can use (or holds private members).
    #[error("the DPoP proof's key is not acceptable: {0}")]
    Key(String),
    /// The signature does not verify with the header's key.
    #[error("the DPoP proof's signature does not verify")]
    Signature,
    /// A claim is missing or of the wrong type.
    #[error("the DPoP proof's claims are not acceptable: {0}")]
    Claims(String),
    /// `htm` is not the request's method.
    #[error("the DPoP proof is for another method")]
    Method,
    /// `htu` is not the request's URL.
    #[error("the DPoP proof is for another URL")]
    Url,
    /// `iat` is outside the window around now.
    #[error("the DPoP proof is too old or from the future")]
    Stale,
    /// `ath` is missing or is not the presented access token's hash.
    #[error("the DPoP proof does not name this access token")]
    AccessTokenHash,
    /// The key is not the one the token is bound to.
    #[error("the DPoP proof is signed by another key than the token's")]
    WrongKey,
    /// The server's nonce is missing or not the current one.
    #[error("a DPoP nonce from the server is required")]
    UseNonce,
    /// The `jti` was seen before within the window.
    #[error("the DPoP proof was used before")]
    Replayed,
}

/// What a proof must match.
#[derive(Debug, Clone)]
pub struct ProofRules<'a> {
    /// The request's method (`htm`).
    pub method: &'a str,
    /// The request's URL as the client addressed it (`htu`): query and fragment are ignored.
    pub url: &'a str,
    /// Now, by the server's clock.
    pub now: OffsetDateTime,
    /// How far `iat` may be from now, either way.
    pub window: Duration,
    /// The access token the request carries, whose hash `ath` must be.
    pub access_token: Option<&'a str>,
    /// The thumbprint of the key the token is bound to (`cnf.jkt`), which must sign the proof.
    pub bound_to: Option<&'a str>,
    /// Nonces the server accepts now, when it requires one.
    pub nonces: Option<&'a [String]>,
}

/// A proof that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: what tokens are bound to.
    pub jkt: String,
    /// The proof's unique id.
    pub jti: String,
    /// When the client made it.
    pub iat: OffsetDateTime,
}

impl Proof {
    /// What replay memory keys this proof by: its key and `jti`, hashed (a client cannot make
    /// another client's proof look replayed).
    pub fn replay_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.jkt.as_bytes());
        h.update(b".");
        h.update(self.jti.as_bytes());
        h.finalize().into()
    }
}

/// The JWK SHA-256 thumbprint (RFC 7638) of a public key, base64url without padding: the
/// required members in lexicographic order, without whitespace.
pub fn thumbprint(jwk: &Value) -> Result<String, ProofError> {
    let member = |name: &str| -> Result<&str, ProofError> {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| ProofError::Key(format!("the key has no {name}")))
    };
    let kty = member("kty")?;
    let required: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        other => return Err(ProofError::Key(format!("key type {other:?}"))),
    };
    let mut canonical = Map::new();
    for name in required {
        canonical.insert(
            (*name).to_string(),
            Value::String(member(name)?.to_string()),
        );
    }
    // serde_json's map keeps keys sorted and writes no whitespace: RFC 7638's form.
    let text = Value::Object(canonical).to_string();
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes())))
}

/// `ath`: the base64url SHA-256 of an access token.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// A URL as `htu` compares it (RFC 9449 §4.3, RFC 3986 §6.2.2–6.2.3): scheme and host in lower
/// case, the default port dropped, an empty path as `/`, without query and fragment.
pub fn normalize_htu(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    let mut out = format!("{}://{}", parsed.scheme(), parsed.host_str()?);
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path());
    Some(out)
}

impl From<OpenError> for ProofError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Malformed => Self::Malformed,
            OpenError::Header(why) => Self::Header(why),
            OpenError::Algorithm => Self::Algorithm,
            OpenError::Key(why) => Self::Key(why),
            OpenError::Signature => Self::Signature,
        }
    }
}

/// The algorithms a DPoP proof may be signed with.
const ALGORITHMS: &[Algorithm] = &[Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

/// Checks a `DPoP` header's proof against the request (RFC 9449 §4.3, steps 1–11 but for
/// the `jti`'s uniqueness, which is the caller's with [`Proof::replay_key`]).
pub fn verify_proof(proof: &str, rules: &ProofRules<'_>) -> Result<Proof, ProofError> {
    let Opened { claims, jkt, .. } = key_proof::open(
        proof,
        "dpop+jwt",
        ALGORITHMS,
        KeyFrom::Header,
        Members::KidOnly,
    )?;

    let text = |name: &str| -> Result<&str, ProofError> {
        claims
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| ProofError::Claims(format!("no string {name}")))
    };
    let jti = text("jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI {
        return Err(ProofError::Claims("jti is empty or too long".into()));
    }
    if text("htm")? != rules.method {
        return Err(ProofError::Method);
    }
    match (normalize_htu(text("htu")?), normalize_htu(rules.url)) {
        (Some(got), Some(want)) if got == want => {}
        _ => return Err(ProofError::Url),
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or_else(|| ProofError::Claims("no integer iat".into()))?;
    if (iat - rules.now).abs() > rules.window {
        return Err(ProofError::Stale);
    }
    if let Some(nonces) = rules.nonces {
        let nonce = claims.get("nonce").and_then(Value::as_str);
        if !nonce.is_some_and(|n| {
            nonces
                .iter()
                .any(|ok| crate::secrets_equal(ok.as_bytes(), n.as_bytes()))
        }) {
            return Err(ProofError::UseNonce);
        }
    }
    if let Some(token) = rules.access_token {
        let ath = claims.get("ath").and_then(Value::as_str);
        if !ath.is_some_and(|a| {
            crate::secrets_equal(a.as_bytes(), access_token_hash(token).as_bytes())
        }) {
            return Err(ProofError::AccessTokenHash);
        }
    }
    if let Some(bound) = rules.bound_to {
        if !crate::secrets_equal(bound.as_bytes(), jkt.as_bytes()) {
            return Err(ProofError::WrongKey);
        }
    }
    Ok(Proof {
        jkt,
        jti: jti.to_string(),
        iat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    /// A client's key, as a DPoP client holds it.
    enum ClientKey {
        Es256(EcdsaKeyPair),
        EdDsa(Ed25519KeyPair),
    }

    impl ClientKey {
        fn es256() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap(),
            )
        }

        fn eddsa() -> Self {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Self::EdDsa(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        }

        fn jwk(&self) -> Value {
            let b = |x: &[u8]| URL_SAFE_NO_PAD.encode(x);
            match self {
                Self::Es256(k) => {
                    let p = k.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-256", "x": b(&p[1..33]), "y": b(&p[33..65])})
                }
                Self::EdDsa(k) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b(k.public_key().as_ref())})
                }
            }
        }

        fn alg(&self) -> &'static str {
            match self {
                Self::Es256(_) => "ES256",
                Self::EdDsa(_) => "EdDSA",
            }
        }

        fn sign_parts(&self, header: &Value, claims: &Value) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = match self {
                Self::Es256(k) => k
                    .sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Self::EdDsa(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            };
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        fn proof(&self, claims: &Value) -> String {
            let header = json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()});
            self.sign_parts(&header, claims)
        }
    }

    const URL: &str = "https://auth.example.test/auth/whoami";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn rules<'a>() -> ProofRules<'a> {
        ProofRules {
            method: "GET",
            url: URL,
            now: now(),
            window: Duration::seconds(60),
            access_token: None,
            bound_to: None,
            nonces: None,
        }
    }

    fn claims() -> Value {
        json!({"jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URL, "iat": now().unix_timestamp()})
    }

    #[test]
    fn thumbprints_follow_rfc_7638() {
        // RFC 7638 §3.1's example key and thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_proof_for_this_request_passes_with_es256_and_eddsa() {
        for key in [ClientKey::es256(), ClientKey::eddsa()] {
            let proof = verify_proof(&key.proof(&claims()), &rules()).unwrap();
            assert_eq!(proof.jkt, thumbprint(&key.jwk()).unwrap());
            assert_eq!(proof.jti, "e1j3V_bKic8-LAEB");
        }
        // The query and the fragment are not part of htu; case and default ports are not
        // differences.
        let key = ClientKey::es256();
        let mut c = claims();
        c["htu"] = json!("HTTPS://Auth.Example.Test:443/auth/whoami");
        let r = ProofRules {
            url: "https://auth.example.test/auth/whoami?x=1#f",
            ..rules()
        };
        verify_proof(&key.proof(&c), &r).unwrap();
    }

    #[test]
    fn each_check_of_rfc_9449_section_4_3_refuses_what_it_should() {
        let key = ClientKey::es256();
        let other = ClientKey::es256();
        let with = |name: &str, value: Value| {
            let mut c = claims();
            c[name] = value;
            key.proof(&c)
        };
        let without = |name: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(name);
            key.proof(&c)
        };
        let check = |proof: &str| verify_proof(proof, &rules()).unwrap_err();
        // 1–2: one well-formed JWT.
        assert_eq!(check("a.b"), ProofError::Malformed);
        assert_eq!(check(&"x".repeat(9000)), ProofError::Malformed);
        // 4: typ.
        let header = json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk()});
        assert!(matches!(
            check(&key.sign_parts(&header, &claims())),
            ProofError::Header(_)
        ));
        // 5: no symmetric or unknown algorithm, and not `none`.
        for alg in ["HS256", "none", "ES384"] {
            let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk()});
            assert_eq!(
                check(&key.sign_parts(&header, &claims())),
                ProofError::Algorithm,
                "{alg}"
            );
        }
        // 6: the signature, by the header's key.
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": other.jwk()});
        assert_eq!(
            check(&key.sign_parts(&header, &claims())),
            ProofError::Signature
        );
        // 7: no private key.
        let mut private = key.jwk();
        private["d"] = json!("AAAA");
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private});
        assert!(matches!(
            check(&key.sign_parts(&header, &claims())),
            ProofError::Key(_)
        ));
        // Nothing else in the header: a `jku` or `x5u` is refused, not followed.
        let header =
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk(), "jku": "https://x"});
        assert!(matches!(
            check(&key.sign_parts(&header, &claims())),
            ProofError::Header(_)
        ));
        // 3: the claims.
        for name in ["jti", "htm", "htu", "iat"] {
            assert!(
                matches!(
                    check(&without(name)),
                    ProofError::Claims(_) | ProofError::Url
                ),
                "{name}"
            );
        }
        // 8–9: the method and the URL.
        assert_eq!(check(&with("htm", json!("POST"))), ProofError::Method);
        assert_eq!(
            check(&with("htu", json!("https://auth.example.test/auth/verify"))),
            ProofError::Url
        );
        assert_eq!(
            check(&with("htu", json!("https://evil.example/auth/whoami"))),
            ProofError::Url
        );
        // 11: iat within the window.
        let old = now() - Duration::seconds(61);
        assert_eq!(
            check(&with("iat", json!(old.unix_timestamp()))),
            ProofError::Stale
        );
        let ahead = now() + Duration::seconds(61);
        assert_eq!(
            check(&with("iat", json!(ahead.unix_timestamp()))),
            ProofError::Stale
        );
        assert!(matches!(
            check(&with("iat", json!("1800000000"))),
            ProofError::Claims(_)
        ));
    }

    #[test]
    fn with_an_access_token_the_proof_names_it_and_is_signed_by_its_key() {
        let key = ClientKey::eddsa();
        let token = "eyJ.an.access-token";
        let jkt = thumbprint(&key.jwk()).unwrap();
        let r = ProofRules {
            access_token: Some(token),
            bound_to: Some(&jkt),
            ..rules()
        };
        let mut c = claims();
        assert_eq!(
            verify_proof(&key.proof(&c), &r).unwrap_err(),
            ProofError::AccessTokenHash,
            "ath missing"
        );
        c["ath"] = json!(access_token_hash("another token"));
        assert_eq!(
            verify_proof(&key.proof(&c), &r).unwrap_err(),
            ProofError::AccessTokenHash
        );
        c["ath"] = json!(access_token_hash(token));
        verify_proof(&key.proof(&c), &r).unwrap();
        // Another key, however valid its proof, is not the token's.
        let thief = ClientKey::eddsa();
        assert_eq!(
            verify_proof(&thief.proof(&c), &r).unwrap_err(),
            ProofError::WrongKey
        );
    }

    #[test]
    fn a_required_nonce_must_be_one_the_server_gave() {
        let key = ClientKey::es256();
        let nonces = vec!["n-current".to_string(), "n-previous".to_string()];
        let r = ProofRules {
            nonces: Some(&nonces),
            ..rules()
        };
        let mut c = claims();
        assert_eq!(
            verify_proof(&key.proof(&c), &r).unwrap_err(),
            ProofError::UseNonce
        );
        c["nonce"] = json!("n-stale");
        assert_eq!(
            verify_proof(&key.proof(&c), &r).unwrap_err(),
            ProofError::UseNonce
        );
        c["nonce"] = json!("n-previous");
        verify_proof(&key.proof(&c), &r).unwrap();
    }

    #[test]
    fn replay_keys_are_per_key_and_jti() {
        let a = Proof {
            jkt: "k1".into(),
            jti: "j".into(),
            iat: now(),
        };
        let b = Proof {
            jkt: "k2".into(),
            ..a.clone()
        };
        assert_ne!(a.replay_key(), b.replay_key());
        assert_eq!(a.replay_key(), a.clone().replay_key());
    }
}
