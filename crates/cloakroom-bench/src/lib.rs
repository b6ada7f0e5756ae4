//! What the benchmarks share: one access token signed like cloakroom's, with the pieces needed
//! to check it both the cloakroom way and as a bare Ed25519 signature.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cloakroom::jwt::{self, AccessClaims, Algorithm, Audience, ClaimsPolicy, KeyRing, SigningKey};
use ring::signature::{UnparsedPublicKey, ED25519};
use time::OffsetDateTime;

/// The issuer and audience of the sample token.
pub const ISSUER: &str = "https://auth.example.com";

/// A signed sample token and what checks it.
pub struct Sample {
    /// The compact JWS.
    pub token: String,
    /// The key ring with its signing key.
    pub ring: KeyRing,
    /// The claims rules it satisfies.
    pub policy: ClaimsPolicy,
    /// The raw Ed25519 public key.
    pub raw_key: UnparsedPublicKey<Vec<u8>>,
    /// The signed part (`header.payload`).
    pub signed: String,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// An EdDSA access token issued at `now`, valid for 10 minutes.
pub fn sample(now: OffsetDateTime) -> Result<Sample, String> {
    let (key, _) = SigningKey::generate(Algorithm::EdDSA, now).map_err(|e| e.to_string())?;
    let claims = AccessClaims {
        iss: ISSUER.into(),
        sub: "0b6c9f7e-1f7a-4c5e-9a57-3f1f0d7b2a11".into(),
        aud: Audience::One(ISSUER.into()),
        exp: now.unix_timestamp() + 600,
        iat: now.unix_timestamp(),
        nbf: None,
        jti: "2f3c1a52-8f0e-4a43-b1c4-0a7e5c1d9b20".into(),
        client_id: "cloakroom".into(),
        sid: "6f0e7d1c-2b4e-4b8e-8f9a-1c2d3e4f5a6b".into(),
        roles: vec!["user".into()],
        auth_time: Some(now.unix_timestamp()),
        acr: Some("aal1".into()),
        amr: vec!["pwd".into()],
        email_verified: Some(false),
        cnf: None,
    };
    let payload = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    let token = jwt::sign(&key, "at+jwt", &payload).map_err(|e| e.to_string())?;
    let jwk = key.verify_key().to_jwk().ok_or("no public key")?;
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().ok_or("no x")?)
        .map_err(|e| e.to_string())?;
    let (signed, sig) = token.rsplit_once('.').ok_or("no signature")?;
    let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    Ok(Sample {
        signed: signed.to_string(),
        signature,
        raw_key: UnparsedPublicKey::new(&ED25519, x),
        ring: KeyRing::new(Some(key), []),
        policy: ClaimsPolicy {
            issuer: ISSUER.into(),
            audience: ISSUER.into(),
            leeway_secs: 60,
            max_lifetime_secs: 600,
        },
        token,
    })
}
