//! Our access tokens verify in another language's standard JOSE library from the JWKS alone.

use crate::support::*;
use std::process::Command;

const VERIFY_PY: &str = r#"
import json, sys
import jwt
token, jwks, issuer = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
header = jwt.get_unverified_header(token)
key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
claims = jwt.decode(token, key.key, algorithms=[header["alg"]], audience=issuer, issuer=issuer,
                    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]})
assert header["typ"] == "at+jwt", header
print(json.dumps(claims))
"#;

#[tokio::test]
async fn access_tokens_verify_in_pyjwt_from_the_jwks() {
    let probe = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            !services_required(),
            "python3 with PyJWT and cryptography is required here"
        );
        cloakroom::testing::skip(
            "access_tokens_verify_in_pyjwt_from_the_jwks: python3 -m pip install 'pyjwt[crypto]'",
        );
        return;
    }
    for alg in ["EdDSA", "ES256", "RS256"] {
        let t = TestServer::start_with(|r| r.jwt_alg = Some(alg.into())).await;
        t.signup("py@example.com", PASSWORD).await;
        let pair = t.token_login("py@example.com", PASSWORD).await;
        let token = pair["access_token"].as_str().unwrap();
        let jwks = t
            .http
            .get(t.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let out = Command::new("python3")
            .args(["-c", VERIFY_PY, token, &jwks, &t.origin])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(claims["client_id"], "cloakroom");
        // A token with one byte of the payload changed must fail there too.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
        parts[1].pop();
        parts[1].push(flipped);
        let out = Command::new("python3")
            .args(["-c", VERIFY_PY, &parts.join("."), &jwks, &t.origin])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{alg}: PyJWT accepted a tampered token"
        );
    }
}
