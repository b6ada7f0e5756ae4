//! Wycheproof vectors (C2SP/wycheproof, Apache-2.0, see fixtures/wycheproof/LICENSE) at the
//! signature layer: every `invalid` case must be rejected; every `valid` case whose algorithm
//! and header members cloakroom supports must be accepted.

use cloakroom::jwt::{verify_with_key, Algorithm, VerifyKey};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/wycheproof/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn json_web_signature_vectors() {
    let doc = load("json_web_signature_test.json");
    let (mut rejected, mut accepted, mut unsupported) = (0, 0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        // The verification key: the public JWK, or the shared secret for MAC groups.
        let jwk = group.get("public").unwrap_or(&group["private"]);
        let key = VerifyKey::from_jwk(jwk, None, true);
        for case in group["tests"].as_array().unwrap() {
            let id = &case["tcId"];
            let jws = case["jws"].as_str();
            let outcome = match (&key, jws) {
                (Ok(k), Some(token)) => verify_with_key(token, k)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(format!("key not supported: {e}")),
                (_, None) => Err("JSON serialization is not supported".into()),
            };
            match (case["result"].as_str().unwrap(), outcome) {
                ("invalid", Ok(())) => panic!("tcId {id} ({}) was accepted", case["comment"]),
                ("invalid", Err(_)) => rejected += 1,
                ("valid", Ok(())) => accepted += 1,
                ("valid", Err(e)) => {
                    // Only what we deliberately do not support may fail: other algorithms
                    // (PS*, ES384/512, HS384/512, RSA under 2048 bits) or header members
                    // outside {alg, typ, kid}.
                    let token = jws.unwrap_or_default();
                    let header = token.split('.').next().unwrap_or_default();
                    let alg = jwk["alg"].as_str().unwrap_or_default();
                    let ours = alg.parse::<Algorithm>().is_ok();
                    assert!(
                        !ours
                            || e.contains("header")
                            || e.contains("key not supported")
                            || header.is_empty(),
                        "tcId {id} ({}) valid {alg} case rejected: {e}",
                        case["comment"]
                    );
                    unsupported += 1;
                }
                _ => unsupported += 1,
            }
        }
    }
    assert!(rejected > 250, "only {rejected} invalid cases seen");
    assert!(accepted > 0);
    println!("wycheproof JWS: {rejected} invalid rejected, {accepted} valid accepted, {unsupported} unsupported");
}

fn primitive(file: &str, alg: Algorithm) {
    let doc = load(file);
    let mut checked = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let jwk = match group.get("publicKeyJwk") {
            Some(j) if !j.is_null() => j.clone(),
            _ => {
                // Some groups give only the uncompressed point (04 ‖ x ‖ y).
                let point = hex(group["publicKey"]["uncompressed"].as_str().unwrap());
                let b64 = |b: &[u8]| {
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
                };
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
        };
        let key = VerifyKey::from_jwk(&jwk, Some(alg), false).unwrap();
        for case in group["tests"].as_array().unwrap() {
            let ok = key
                .verify(
                    &hex(case["msg"].as_str().unwrap()),
                    &hex(case["sig"].as_str().unwrap()),
                )
                .is_ok();
            match case["result"].as_str().unwrap() {
                "valid" => assert!(ok, "{file} tcId {} valid but rejected", case["tcId"]),
                "invalid" => assert!(
                    !ok,
                    "{file} tcId {} ({}) accepted",
                    case["tcId"], case["comment"]
                ),
                _ => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn ed25519_vectors() {
    primitive("ed25519_test.json", Algorithm::EdDSA);
}

#[test]
fn ecdsa_p256_p1363_vectors() {
    primitive("ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::ES256);
}
