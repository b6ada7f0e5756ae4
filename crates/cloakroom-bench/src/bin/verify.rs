//! Single-core verifications per second: cloakroom's whole access-token check (strict parse,
//! `kid` lookup, Ed25519 signature, RFC 9068 claims), and the remote verifier a service embeds
//! (the same, plus the revocation lookup), against the raw
//! Ed25519 verify of `ring` underneath, on the same token, measured alternately in one process;
//! then a DPoP proof's whole check (RFC 9449 §4.3 but the replay memory: strict parse, the key
//! from the header, the signature, the thumbprint, `htm`, `htu`, `iat`, `ath`) against the raw
//! verify of its signature, for an Ed25519 and a P-256 client key; then a DBSC refresh proof's
//! check (strict parse, the session's stored key, the signature, `jti`) against the raw P-256
//! verify underneath.
//! Run pinned: `taskset -c 0 cargo run --release -p cloakroom-bench --bin verify`.

use cloakroom::jwt;
use cloakroom::remote::{RemoteConfig, RemoteVerifier};
use cloakroom_bench::{sample, Sample, ISSUER};
use std::hint::black_box;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

fn rate(mut f: impl FnMut() -> bool, window: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..256 {
            assert!(black_box(f()));
        }
        n += 256;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[allow(clippy::disallowed_methods)] // a benchmark of real tokens reads the real clock
fn main() -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    let Sample {
        token,
        ring: ring_keys,
        policy,
        raw_key,
        signed: input,
        signature: sig,
    } = sample(now)?;
    let window = Duration::from_secs(2);
    // The remote verifier, fed the keys by a local JWKS endpoint.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let jwks = ring_keys.jwks();
    let remote = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut config = RemoteConfig::new(ISSUER, ISSUER);
        config.jwks_url = format!("http://{addr}/.well-known/jwks.json");
        let v = RemoteVerifier::start(config)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(v)
    })?;
    let mut remote_rates = Vec::new();
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        raw.push(rate(
            || raw_key.verify(input.as_bytes(), &sig).is_ok(),
            window,
        ));
        ours.push(rate(
            || {
                jwt::verify(&token, &ring_keys)
                    .and_then(|(h, p)| policy.validate(&h, &p, now))
                    .is_ok()
            },
            window,
        ));
        remote_rates.push(rt.block_on(async {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < window {
                for _ in 0..256 {
                    assert!(black_box(remote.verify(&token).await.is_ok()));
                }
                n += 256;
            }
            n as f64 / start.elapsed().as_secs_f64()
        }));
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (r, o) = (best(&raw), best(&ours));
    println!("raw ring Ed25519 verify:      {r:>10.0} /s");
    println!(
        "cloakroom access-token check: {o:>10.0} /s  = {:.3} of raw ({:.2}x its cost)",
        o / r,
        r / o
    );
    let m = best(&remote_rates);
    println!(
        "remote verifier (library):    {m:>10.0} /s  = {:.3} of raw ({:.2}x its cost)",
        m / r,
        r / m
    );
    for alg in ["EdDSA", "ES256"] {
        let (proof, check, raw_verify) = dpop_sample(alg, &token, now)?;
        let (mut raw, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            raw.push(rate(&raw_verify, window));
            ours.push(rate(
                || cloakroom::dpop::verify_proof(&proof, &check).is_ok(),
                window,
            ));
        }
        let (r, o) = (best(&raw), best(&ours));
        println!("raw ring {alg} verify:        {r:>10.0} /s");
        println!(
            "DPoP proof check ({alg}):      {o:>10.0} /s  = {:.3} of raw ({:.2}x its cost)",
            o / r,
            r / o
        );
    }
    let (proof, key, raw_verify) = dbsc_sample()?;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        raw.push(rate(&raw_verify, window));
        ours.push(rate(
            || cloakroom::dbsc::verify_refresh(&proof, &key).is_ok(),
            window,
        ));
    }
    let (r, o) = (best(&raw), best(&ours));
    println!("raw ring ES256 verify:        {r:>10.0} /s");
    println!(
        "DBSC refresh proof (ES256):   {o:>10.0} /s  = {:.3} of raw ({:.2}x its cost)",
        o / r,
        r / o
    );
    Ok(())
}

/// A DBSC refresh proof by a new P-256 browser key, that key as the server stores it, and the
/// raw verification of the proof's signature.
fn dbsc_sample() -> Result<(String, serde_json::Value, impl Fn() -> bool), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{self, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let fixed = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(fixed, &rng).map_err(|e| e.to_string())?;
    let pair = signature::EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref(), &rng)
        .map_err(|e| e.to_string())?;
    let public = pair.public_key().as_ref().to_vec();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65])});
    let header = serde_json::json!({"typ": "dbsc+jwt", "alg": "ES256"});
    let claims = serde_json::json!({"jti": "AAAAAGsQVp8MaiKVhQnTcp7OzmcnLwp1N1ysBfCAEDVO-UZs"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = pair
        .sign(&rng, input.as_bytes())
        .map_err(|e| e.to_string())?
        .as_ref()
        .to_vec();
    let proof = format!("{input}.{}", b64(&sig));
    let raw = move || {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
            .verify(input.as_bytes(), &sig)
            .is_ok()
    };
    Ok((proof, jwk, raw))
}

/// A client key: its JWK, how it signs, its raw public key and its algorithm for `ring`.
type ClientKey = (
    serde_json::Value,
    Box<dyn Fn(&[u8]) -> Vec<u8>>,
    Vec<u8>,
    &'static dyn ring::signature::VerificationAlgorithm,
);

/// A DPoP proof for `GET /auth/whoami` with `token`, signed by a new `alg` client key, the rules
/// it is checked by, and the raw verification of its signature.
fn dpop_sample(
    alg: &str,
    token: &str,
    now: OffsetDateTime,
) -> Result<
    (
        String,
        cloakroom::dpop::ProofRules<'static>,
        impl Fn() -> bool,
    ),
    String,
> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{self, KeyPair};
    const URL: &str = "https://auth.example.test/auth/whoami";
    let rng = ring::rand::SystemRandom::new();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let claims = serde_json::json!({
        "jti": "bench-proof",
        "htm": "GET",
        "htu": URL,
        "iat": now.unix_timestamp(),
        "ath": cloakroom::dpop::access_token_hash(token),
    });
    let (jwk, sign, public, algorithm): ClientKey = match alg {
        "EdDSA" => {
            let pkcs8 =
                signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
            let pair =
                signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
            let public = pair.public_key().as_ref().to_vec();
            (
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public)}),
                Box::new(move |m: &[u8]| pair.sign(m).as_ref().to_vec()),
                public,
                &signature::ED25519,
            )
        }
        _ => {
            let fixed = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 =
                signature::EcdsaKeyPair::generate_pkcs8(fixed, &rng).map_err(|e| e.to_string())?;
            let pair = signature::EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref(), &rng)
                .map_err(|e| e.to_string())?;
            let public = pair.public_key().as_ref().to_vec();
            (
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&public[1..33]), "y": b64(&public[33..65])}),
                Box::new(move |m: &[u8]| {
                    pair.sign(&ring::rand::SystemRandom::new(), m)
                        .map(|s| s.as_ref().to_vec())
                        .unwrap_or_default()
                }),
                public,
                &signature::ECDSA_P256_SHA256_FIXED,
            )
        }
    };
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    let proof = format!("{input}.{}", b64(&sig));
    let jkt = cloakroom::dpop::thumbprint(&jwk).map_err(|e| e.to_string())?;
    let check = cloakroom::dpop::ProofRules {
        method: "GET",
        url: URL,
        now,
        window: cloakroom::DPOP_WINDOW,
        access_token: Some(Box::leak(token.to_string().into_boxed_str())),
        bound_to: Some(Box::leak(jkt.into_boxed_str())),
        nonces: None,
    };
    let raw = move || {
        signature::UnparsedPublicKey::new(algorithm, &public)
            .verify(input.as_bytes(), &sig)
            .is_ok()
    };
    Ok((proof, check, raw))
}
