//! Single-core verifications per second: cloakroom's whole access-token check (strict parse,
//! `kid` lookup, Ed25519 signature, RFC 9068 claims), and the remote verifier a service embeds
//! (the same, plus the revocation lookup), against the raw
//! Ed25519 verify of `ring` underneath, on the same token, measured alternately in one process.
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
    Ok(())
}
