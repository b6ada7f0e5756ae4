//! Device Bound Session Credentials (W3C DBSC draft, with the `Secure-Session-*` header names
//! Chrome ships): the wire formats. A browser that supports it answers a login's
//! `Secure-Session-Registration` header by making a key pair (in hardware where it can) and
//! sending a proof, a JWT signed with that key over the server's challenge; from then on the
//! session is bound to the key: the server hands out a short-lived bound cookie, and only a
//! fresh proof with the same key gets a new one.
//!
//! This module reads and writes the headers (RFC 9651 structured fields, only the shapes the
//! draft uses), checks proofs (`typ` `dbsc+jwt`, ES256 or RS256, the `jti` the caller compares
//! with its challenge), and builds the session instructions. Challenges, the bound cookie and
//! what a binding changes are the engine's.

use serde::Serialize;
use serde_json::Value;

use crate::jwt::Algorithm;
use crate::key_proof::{self, KeyFrom, Members, OpenError};

/// The response header that offers a binding (on a login's response).
pub const REGISTRATION: &str = "secure-session-registration";
/// The response header that gives a challenge for the next proof.
pub const CHALLENGE: &str = "secure-session-challenge";
/// The request header that carries a proof.
pub const RESPONSE: &str = "secure-session-response";
/// The request header naming the session a refresh is for.
pub const SESSION_ID: &str = "sec-secure-session-id";

/// How a deployment treats DBSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbscMode {
    /// Not offered, and bindings made earlier are not enforced.
    Off,
    /// Offered on every cookie login; a browser that binds is held to it, one that does not
    /// keeps working as before.
    #[default]
    Optional,
    /// Offered, and a cookie session that has not bound within the bound cookie's lifetime of
    /// its login is refused: only browsers that support DBSC can sign in.
    Required,
}

impl std::str::FromStr for DbscMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!("{other:?} is not off, optional or required")),
        }
    }
}

/// The algorithms cloakroom offers and accepts (the draft's two; `none` binds nothing).
const ALGORITHMS: &[Algorithm] = &[Algorithm::ES256, Algorithm::RS256];

/// The longest challenge (`jti`) looked at.
const MAX_JTI: usize = 256;

/// Why a DBSC proof or request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbscError {
    /// Not a compact JWS of JSON, or not a structured-field string.
    #[error("the session proof is not a compact JWS of JSON")]
    Malformed,
    /// `typ` is not `dbsc+jwt`, or the header names another key source.
    #[error("the session proof's header is not acceptable: {0}")]
    Header(String),
    /// `alg` is not ES256 or RS256, or not the key's.
    #[error("the session proof's algorithm is not allowed (ES256 or RS256)")]
    Algorithm,
    /// No usable public key (or private members in it).
    #[error("the session proof's key is not acceptable: {0}")]
    Key(String),
    /// The signature does not verify with the key.
    #[error("the session proof's signature does not verify")]
    Signature,
    /// No `jti`, or one that is not a string of sensible length.
    #[error("the session proof's claims are not acceptable: {0}")]
    Claims(String),
    /// The `jti` is not a challenge this server gave for this session, or it is too old.
    #[error("the session proof does not answer a current challenge")]
    Challenge,
    /// The challenge was answered before.
    #[error("the session proof's challenge was used before")]
    Replayed,
    /// The session is bound already (a registration), or not bound (a refresh).
    #[error("{0}")]
    State(&'static str),
    /// `Sec-Secure-Session-Id` does not name the session the cookie carries.
    #[error("the session id does not match the session cookie")]
    WrongSession,
}

impl From<OpenError> for DbscError {
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

/// A registration proof that verified: the browser's public key and the challenge it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The public key, as a JWK (what refresh proofs are then checked with).
    pub jwk: Value,
    /// Its RFC 7638 thumbprint.
    pub jkt: String,
    /// The challenge the proof answers.
    pub jti: String,
}

fn jti(claims: &serde_json::Map<String, Value>) -> Result<String, DbscError> {
    match claims.get("jti").and_then(Value::as_str) {
        Some(j) if !j.is_empty() && j.len() <= MAX_JTI => Ok(j.to_string()),
        _ => Err(DbscError::Claims("no jti of 1 to 256 characters".into())),
    }
}

/// Checks a registration proof (the `Secure-Session-Response` of a registration): signed by the
/// key in its header (`jwk`, as the draft has it; Chrome's first implementations put it in the
/// payload as `key`, which is read too). The caller checks the `jti` against its challenge.
pub fn verify_registration(proof: &str) -> Result<Registration, DbscError> {
    let opened = match key_proof::open(
        proof,
        "dbsc+jwt",
        ALGORITHMS,
        KeyFrom::Header,
        Members::Ignored,
    ) {
        Err(OpenError::Key(_)) => {
            let key = payload_key(proof).ok_or(DbscError::Key("no jwk in the proof".into()))?;
            key_proof::open(
                proof,
                "dbsc+jwt",
                ALGORITHMS,
                KeyFrom::Known(&key),
                Members::Ignored,
            )?
        }
        other => other?,
    };
    Ok(Registration {
        jti: jti(&opened.claims)?,
        jwk: opened.jwk,
        jkt: opened.jkt,
    })
}

/// The key an older browser puts in the payload (`key`), read before the signature is checked
/// with it: the proof is then checked as if the key had been known.
fn payload_key(proof: &str) -> Option<Value> {
    use base64::Engine;
    let payload = proof.split('.').nth(1)?;
    let bytes = crate::jwt::STRICT.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("key").filter(|k| k.is_object()).cloned()
}

/// Checks a refresh proof, signed by the session's registered key (`key`, as
/// [`Registration::jwk`] gave it); returns the challenge it answers.
pub fn verify_refresh(proof: &str, key: &Value) -> Result<String, DbscError> {
    let opened = key_proof::open(
        proof,
        "dbsc+jwt",
        ALGORITHMS,
        KeyFrom::Known(key),
        Members::Ignored,
    )?;
    jti(&opened.claims)
}

/// Reads a header holding one structured-field string (RFC 9651 §3.3.3), parameters ignored:
/// `"abc";id="x"` gives `abc`. Anything else is `None`.
pub fn read_sf_string(value: &str) -> Option<String> {
    let rest = value.trim_matches(' ').strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '\\' => match chars.next()? {
                c @ ('"' | '\\') => out.push(c),
                _ => return None,
            },
            '"' => break,
            c if (' '..='~').contains(&c) => out.push(c),
            _ => return None,
        }
    }
    let after = chars.as_str().trim_end_matches(' ');
    (after.is_empty() || after.starts_with(';')).then_some(out)
}

/// `s` as a structured-field string: quoted, with `"` and `\` escaped. `None` if `s` holds
/// a character a structured-field string cannot.
pub fn sf_string(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => return None,
        }
    }
    out.push('"');
    Some(out)
}

/// The `Secure-Session-Registration` value offering a binding: ES256 or RS256, the
/// registration endpoint's `path` and the `challenge` to sign.
pub fn registration_header(path: &str, challenge: &str) -> Option<String> {
    Some(format!(
        "(ES256 RS256);path={};challenge={}",
        sf_string(path)?,
        sf_string(challenge)?
    ))
}

/// The `Secure-Session-Challenge` value giving `challenge` for the session `id`.
pub fn challenge_header(challenge: &str, id: &str) -> Option<String> {
    Some(format!("{};id={}", sf_string(challenge)?, sf_string(id)?))
}

/// The JSON session instructions a registration (and a refresh) answers with.
#[derive(Debug, Clone, Serialize)]
pub struct Instructions {
    /// The session's identifier (cloakroom's public session id).
    pub session_identifier: String,
    /// Where refreshes go.
    pub refresh_url: String,
    /// Which requests need the bound cookie.
    pub scope: Scope,
    /// The bound cookie.
    pub credentials: Vec<Credential>,
}

/// The requests a session covers: an origin, or a whole site.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    /// `https://host[:port]`.
    pub origin: String,
    /// The whole registrable domain rather than the origin.
    pub include_site: bool,
    /// Refinements (none: the whole origin or site).
    pub scope_specification: Vec<Value>,
}

/// A cookie the session keeps fresh.
#[derive(Debug, Clone, Serialize)]
pub struct Credential {
    /// Always `cookie`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Its attributes as `Set-Cookie` gives them (`Max-Age` aside).
    pub attributes: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::SigningKey;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    fn key(alg: Algorithm) -> (SigningKey, Value) {
        let (key, _) = SigningKey::generate(alg, time::OffsetDateTime::UNIX_EPOCH).unwrap();
        let mut jwk = key.verify_key().to_jwk().unwrap();
        for member in ["kid", "alg", "use"] {
            jwk.as_object_mut().unwrap().remove(member);
        }
        (key, jwk)
    }

    fn sign(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn registration_and_refresh_proofs_verify_with_es256_and_rs256() {
        for alg in [Algorithm::ES256, Algorithm::RS256] {
            let (k, jwk) = key(alg);
            let header = json!({"typ": "dbsc+jwt", "alg": alg.as_str(), "jwk": jwk});
            let reg = verify_registration(&sign(&k, &header, &json!({"jti": "c1"}))).unwrap();
            assert_eq!(reg.jti, "c1");
            assert_eq!(reg.jkt, crate::dpop::thumbprint(&jwk).unwrap());
            let header = json!({"typ": "dbsc+jwt", "alg": alg.as_str()});
            let proof = sign(&k, &header, &json!({"jti": "c2"}));
            assert_eq!(verify_refresh(&proof, &reg.jwk).unwrap(), "c2");
            // Another key's proof fails the refresh.
            let (other, _) = key(alg);
            let forged = sign(&other, &header, &json!({"jti": "c2"}));
            assert_eq!(verify_refresh(&forged, &reg.jwk), Err(DbscError::Signature));
        }
    }

    #[test]
    fn the_key_may_come_in_the_payload_as_older_browsers_send_it() {
        let (k, jwk) = key(Algorithm::ES256);
        let header = json!({"typ": "dbsc+jwt", "alg": "ES256"});
        let proof = sign(&k, &header, &json!({"jti": "c", "key": jwk}));
        assert_eq!(verify_registration(&proof).unwrap().jwk, jwk);
    }

    #[test]
    fn proofs_that_bind_nothing_or_point_elsewhere_are_refused() {
        let (k, jwk) = key(Algorithm::ES256);
        let claims = json!({"jti": "c"});
        let cases = [
            (json!({"typ": "JWT", "alg": "ES256", "jwk": jwk}), "typ"),
            (
                json!({"typ": "dbsc+jwt", "alg": "none", "jwk": jwk}),
                "none",
            ),
            (
                json!({"typ": "dbsc+jwt", "alg": "HS256", "jwk": jwk}),
                "hs256",
            ),
            (
                json!({"typ": "dbsc+jwt", "alg": "EdDSA", "jwk": jwk}),
                "eddsa",
            ),
            (
                json!({"typ": "dbsc+jwt", "alg": "ES256", "jwk": jwk, "jku": "https://x"}),
                "jku",
            ),
            (json!({"typ": "dbsc+jwt", "alg": "ES256"}), "no key"),
        ];
        for (header, why) in cases {
            assert!(
                verify_registration(&sign(&k, &header, &claims)).is_err(),
                "{why}"
            );
        }
        let header = json!({"typ": "dbsc+jwt", "alg": "ES256", "jwk": jwk});
        assert!(matches!(
            verify_registration(&sign(&k, &header, &json!({"jti": ""}))),
            Err(DbscError::Claims(_))
        ));
        // A refresh proof may not bring its own key.
        assert!(matches!(
            verify_refresh(&sign(&k, &header, &claims), &jwk),
            Err(DbscError::Header(_))
        ));
        assert_eq!(verify_registration("a.b"), Err(DbscError::Malformed));
    }

    #[test]
    fn structured_field_strings_round_trip() {
        assert_eq!(read_sf_string(r#""abc""#).as_deref(), Some("abc"));
        assert_eq!(read_sf_string(r#""abc";id="x""#).as_deref(), Some("abc"));
        assert_eq!(read_sf_string(r#""a\"b\\c""#).as_deref(), Some(r#"a"b\c"#));
        for bad in ["abc", r#""abc"#, r#""a\nb""#, r#""abc" x"#, ""] {
            assert_eq!(read_sf_string(bad), None, "{bad}");
        }
        let s = sf_string(r#"a"b"#).unwrap();
        assert_eq!(read_sf_string(&s).as_deref(), Some(r#"a"b"#));
        assert_eq!(sf_string("é"), None);
        assert_eq!(
            registration_header("/auth/dbsc/register", "ch").unwrap(),
            r#"(ES256 RS256);path="/auth/dbsc/register";challenge="ch""#
        );
        assert_eq!(challenge_header("c", "id").unwrap(), r#""c";id="id""#);
    }
}
