//! Single-core verifications per second: cloakroom's whole access-token check (strict parse,
//! `kid` lookup, Ed25519 signature, RFC 9068 claims), and the remote verifier a service embeds
//! (the same, plus the revocation lookup), against the raw
//! Ed25519 verify of `ring` underneath, on the same token, measured alternately in one process.
//! Run pinned: `taskset -c 0 cargo run --release -p cloakroom-bench --bin verify`.

use cloakroom::jwt::{self, AccessClaims, Algorithm, Audience, ClaimsPolicy, KeyRing, SigningKey};
use cloakroom::remote::{RemoteConfig, RemoteVerifier};
use ring::signature::{UnparsedPublicKey, ED25519};
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
    let (key, _) = SigningKey::generate(Algorithm::EdDSA, now)?;
    let claims = AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "0b6c9f7e-1f7a-4c5e-9a57-3f1f0d7b2a11".into(),
        aud: Audience::One("https://auth.example.com".into()),
        exp: now.unix_timestamp() + 600,
        iat: now.unix_timestamp(),
        nbf: None,
        jti: "2f3c1a52-8f0e-4a43-b1c4-0a7e5c1d9b20".into(),
        client_id: "cloakroom".into(),
        sid: "6f0e7d1c-2b4e-4b8e-8f9a-1c2d3e4f5a6b".into(),
        roles: vec!["user".into()],
    };
    let payload = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    let token = jwt::sign(&key, "at+jwt", &payload)?;
    let ring_keys = KeyRing::new(Some(key.clone()), []);
    let policy = ClaimsPolicy {
        issuer: claims.iss.clone(),
        audience: "https://auth.example.com".into(),
        leeway_secs: 60,
        max_lifetime_secs: 600,
    };
    let jwk = key.verify_key().to_jwk().ok_or("no public key")?;
    let x = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        jwk["x"].as_str().ok_or("no x")?,
    )
    .map_err(|e| e.to_string())?;
    let (input, sig) = token.rsplit_once('.').ok_or("no signature")?;
    let sig = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
        .map_err(|e| e.to_string())?;
    let raw_key = UnparsedPublicKey::new(&ED25519, x);
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
        let mut config = RemoteConfig::new(&claims.iss, "https://auth.example.com");
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
    Ok(())
}
