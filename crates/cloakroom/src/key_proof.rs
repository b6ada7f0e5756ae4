//! Proof-of-possession JWTs, as DPoP (RFC 9449) and DBSC both use them: a compact JWS that a
//! client signs with a key it holds, the public key in the header (`jwk`) or already known to
//! the server. This module opens one: strict base64url, JSON objects, the expected `typ`, an
//! asymmetric algorithm from a list, a public key without private members, and the signature
//! checked by `ring`. What the claims must say is the caller's.

use serde_json::{Map, Value};

use crate::jwt::{Algorithm, VerifyKey};

/// The largest proof looked at.
pub(crate) const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Where the key that must have signed a proof comes from.
pub(crate) enum KeyFrom<'a> {
    /// The header's `jwk` (a DPoP proof, a DBSC registration).
    Header,
    /// A key registered before (a DBSC refresh): the header must not carry one.
    Known(&'a Value),
}

/// Which header members other than `typ`, `alg` and `jwk` are tolerated.
pub(crate) enum Members {
    /// Only `kid` (ignored): DPoP's header has nothing else.
    KidOnly,
    /// Any, ignored, but those that point at another key or demand understanding (`jku`,
    /// `x5u`, `x5c`, `crit`): a browser may add what a later draft defines.
    Ignored,
}

/// Why a proof could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too long, not three strict base64url parts, or not JSON objects.
    Malformed,
    /// `typ` is wrong, or the header has a member it must not.
    Header(String),
    /// `alg` is not one of the allowed algorithms, or not the key's.
    Algorithm,
    /// The key is missing, not a public key we can use, or has private members.
    Key(String),
    /// The signature does not verify.
    Signature,
}

/// An opened proof: its members, and the public key that signed it.
pub(crate) struct Opened {
    /// The payload's members.
    pub(crate) claims: Map<String, Value>,
    /// The public key (without `alg` and `kid`), as a JWK.
    pub(crate) jwk: Value,
    /// The key's JWK SHA-256 thumbprint (RFC 7638).
    pub(crate) jkt: String,
}

fn strict_b64(part: &str) -> Result<Vec<u8>, OpenError> {
    use base64::Engine;
    crate::jwt::STRICT
        .decode(part)
        .map_err(|_| OpenError::Malformed)
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, OpenError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(OpenError::Malformed),
    }
}

/// Opens `proof`, a JWS of type `typ` signed with one of `algs` by the key `key` names.
pub(crate) fn open(
    proof: &str,
    typ: &str,
    algs: &[Algorithm],
    key: KeyFrom<'_>,
    members: Members,
) -> Result<Opened, OpenError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(OpenError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OpenError::Malformed);
    };
    let header = object(&strict_b64(h)?)?;
    let claims = object(&strict_b64(p)?)?;
    let signature = strict_b64(s)?;

    let refused = |name: &str| match members {
        Members::KidOnly => !matches!(name, "typ" | "alg" | "jwk" | "kid"),
        Members::Ignored => matches!(name, "jku" | "x5u" | "x5c" | "crit"),
    };
    if let Some(extra) = header.keys().find(|k| refused(k)) {
        return Err(OpenError::Header(format!("unexpected member {extra:?}")));
    }
    if header.get("typ").and_then(Value::as_str) != Some(typ) {
        return Err(OpenError::Header(format!("typ is not {typ}")));
    }
    let alg: Algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse().ok())
        .filter(|a| algs.contains(a) && *a != Algorithm::HS256)
        .ok_or(OpenError::Algorithm)?;
    let jwk = match (key, header.get("jwk")) {
        (KeyFrom::Header, Some(jwk)) if jwk.is_object() => jwk,
        (KeyFrom::Header, _) => return Err(OpenError::Key("no jwk in the header".into())),
        (KeyFrom::Known(_), Some(_)) => {
            return Err(OpenError::Header("a jwk where the key is known".into()))
        }
        (KeyFrom::Known(jwk), None) => jwk,
    };
    // The key's own `alg`, if it names one, must be the header's.
    if jwk.get("alg").is_some_and(|a| a != alg.as_str()) {
        return Err(OpenError::Algorithm);
    }
    let mut public = jwk.clone();
    if let Some(map) = public.as_object_mut() {
        map.remove("alg");
        map.remove("kid");
    }
    let verifier = VerifyKey::from_jwk(&public, Some(alg), false)
        .map_err(|e| OpenError::Key(e.to_string()))?;
    verifier
        .verify(&proof.as_bytes()[..h.len() + 1 + p.len()], &signature)
        .map_err(|_| OpenError::Signature)?;
    let jkt = crate::dpop::thumbprint(&public).map_err(|e| OpenError::Key(e.to_string()))?;
    Ok(Opened {
        claims,
        jwk: public,
        jkt,
    })
}
