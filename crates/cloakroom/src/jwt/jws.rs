//! The compact JWS layer: strict parsing, signing, and signature verification.
//!
//! Order of checks (RFC 7519 §7.2, RFC 8725): size first, then exactly three parts of strict
//! base64url (no padding, no other characters, canonical trailing bits), then the header as a
//! JSON object of `alg`, `typ` and `kid` only (any other member, `crit`, `jku`, `x5u`, `jwk`,
//! `x5c`, `b64`, `cty` included, is refused, and so is a duplicated member), then the key by
//! `kid` and the key's own algorithm, then the signature. Only then is the payload returned.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::{KeyRing, SigningKey, VerifyKey};
use super::{Algorithm, KeyError, VerifyError};

/// The largest token looked at.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// base64url as JWS needs it: no padding, no other characters, canonical trailing bits.
pub(crate) const STRICT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// The protected header: exactly these members and no others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The algorithm.
    pub alg: String,
    /// The media type of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// The key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

fn decode_part(part: &str) -> Result<Vec<u8>, VerifyError> {
    STRICT.decode(part).map_err(|_| VerifyError::Malformed)
}

/// A token split and decoded, not yet verified.
struct Parts<'a> {
    header: Header,
    payload: Vec<u8>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Splits and decodes a token without verifying it.
fn split(token: &str) -> Result<Parts<'_>, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    // An empty payload is a valid JWS (the claims check refuses it later); an empty header or
    // signature never is (`h.p.`: the stripped-signature attack).
    if h.is_empty() || s.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let header_bytes = decode_part(h)?;
    let payload = decode_part(p)?;
    let sig = decode_part(s)?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|e| VerifyError::Header(e.to_string()))?;
    Ok(Parts {
        header,
        payload,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: sig,
    })
}

/// Decodes header and payload **without checking the signature**: nothing it returns may be
/// trusted. For showing a token (`token inspect`) and for reading the times of a token that was
/// verified just before.
pub fn insecure_decode_without_verifying(token: &str) -> Result<(Header, Vec<u8>), VerifyError> {
    split(token).map(|p| (p.header, p.payload))
}

/// Verifies against one key, whose algorithm the header must name.
pub fn verify_with_key(token: &str, key: &VerifyKey) -> Result<(Header, Vec<u8>), VerifyError> {
    let parts = split(token)?;
    check_alg(&parts.header, key)?;
    key.verify(parts.signing_input.as_bytes(), &parts.signature)?;
    Ok((parts.header, parts.payload))
}

fn check_alg(header: &Header, key: &VerifyKey) -> Result<(), VerifyError> {
    let alg: Algorithm = header.alg.parse().map_err(|_| VerifyError::Algorithm)?;
    if alg == key.alg() {
        Ok(())
    } else {
        Err(VerifyError::Algorithm)
    }
}

/// Verifies against the ring: the key is the one named by `kid`, with its own algorithm.
pub fn verify(token: &str, ring: &KeyRing) -> Result<(Header, Vec<u8>), VerifyError> {
    let parts = split(token)?;
    let kid = parts.header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
    let key = ring.get(kid).ok_or(VerifyError::UnknownKey)?;
    check_alg(&parts.header, key)?;
    key.verify(parts.signing_input.as_bytes(), &parts.signature)?;
    Ok((parts.header, parts.payload))
}

/// Signs `payload` (JSON bytes) with `key`, typed `typ`.
pub fn sign(key: &SigningKey, typ: &str, payload: &[u8]) -> Result<String, KeyError> {
    let header = Header {
        alg: key.verify_key().alg().as_str().to_string(),
        typ: Some(typ.to_string()),
        kid: Some(key.verify_key().kid().to_string()),
    };
    let header = serde_json::to_vec(&header).map_err(|e| KeyError::Crypto(e.to_string()))?;
    let mut token = STRICT.encode(header);
    token.push('.');
    token.push_str(&STRICT.encode(payload));
    let sig = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&STRICT.encode(sig));
    Ok(token)
}
