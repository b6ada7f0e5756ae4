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

/// An independent DPoP client (panva's `dpop` for JavaScript, in Node) obtains a bound token
/// pair, uses it, refreshes it and uses the new one: its proofs, thumbprint and `ath` are the
/// RFC's, not only ours.
#[tokio::test]
async fn dpop_tokens_work_with_an_independent_client_library() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/dpop");
    let ready = dir.join("node_modules/dpop").exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            !services_required(),
            "node and the dpop package are required here (npm install --prefix {})",
            dir.display()
        );
        cloakroom::testing::skip(&format!(
            "dpop_tokens_work_with_an_independent_client_library: npm install --prefix {}",
            dir.display()
        ));
        return;
    }
    let t = TestServer::start().await;
    t.signup("node@example.com", PASSWORD).await;
    let base = t.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("client.mjs"))
            .args([&base, "node@example.com", PASSWORD])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["granted"]["status"], 200, "{seen}");
    assert_eq!(seen["granted"]["body"]["token_type"], "DPoP");
    let token = seen["granted"]["body"]["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["cnf"]["jkt"], seen["thumbprint"]);
    assert_eq!(seen["used"]["status"], 200, "{seen}");
    assert_eq!(seen["used"]["body"]["user"]["email"], "node@example.com");
    assert_eq!(seen["refreshed"]["status"], 200, "{seen}");
    assert_eq!(seen["refreshed"]["token_type"], "DPoP");
    assert_eq!(seen["usedAgain"]["status"], 200, "{seen}");
    // The token is worth nothing without the key the client kept.
    assert_eq!(t.bearer_status(token).await, 401);
}
