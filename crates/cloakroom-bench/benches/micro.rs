//! Micro-benchmarks (criterion): the access-token check against the raw Ed25519 verify under it,
//! and the cookie check of the engine with 1 000, 100 000 and 1 000 000 sessions in memory, and
//! with 100 000 revoked sessions (the per-request cost of the revocation check at scale). Each
//! check presents the next of up to 1 000 tokens spread over all the sessions, so a large table
//! is read where it is cold, not one hot entry.
//! `cargo bench -p cloakroom-bench` (pin it: `taskset -c 0 cargo bench -p cloakroom-bench`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cloakroom::jwt;
use cloakroom::{
    Argon2Config, Auth, AuthConfig, ClientInfo, LoginRequest, SqliteStore, Store, SystemClock,
};
use cloakroom_bench::{sample, Sample};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::sync::Arc;
use time::OffsetDateTime;

#[allow(clippy::disallowed_methods)] // real tokens need the real clock
fn tokens(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let Sample {
        token,
        ring: ring_keys,
        policy,
        raw_key: raw,
        signed: input,
        signature: sig,
    } = sample(now).unwrap();
    let mut g = c.benchmark_group("access_token");
    g.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| {
            raw.verify(black_box(input.as_bytes()), black_box(&sig))
                .is_ok()
        })
    });
    g.bench_function("cloakroom_check", |b| {
        b.iter(|| {
            jwt::verify(black_box(&token), &ring_keys)
                .and_then(|(h, p)| policy.validate(&h, &p, now))
                .is_ok()
        })
    });
    g.finish();
}

/// An engine with `sessions` live sessions of one user, and `revoked` more sessions revoked;
/// returns it with up to 1 000 live sessions' tokens, spread evenly over them.
async fn engine(sessions: usize, revoked: usize) -> (Auth, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let config = AuthConfig {
        argon2: Argon2Config {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 2,
        hash_queue: 1024,
        // A million sessions of one user: no cap.
        max_sessions_per_user: usize::MAX,
        ..AuthConfig::default()
    };
    let auth = Auth::new(store, config, Arc::new(SystemClock))
        .await
        .unwrap();
    let pw = "correct horse battery staple";
    auth.signup("bench@example.com", pw, &ClientInfo::default())
        .await
        .unwrap();
    let mut tokens = Vec::new();
    let every = (sessions / 1_000).max(1);
    for i in 0..sessions + revoked {
        let login = auth
            .login(LoginRequest::new("bench@example.com", pw))
            .await
            .unwrap();
        if i < revoked {
            auth.admin_revoke(login.session.id).await.unwrap();
        } else if (i - revoked) % every == 0 {
            tokens.push(login.token.expose().to_string());
        }
    }
    (auth, tokens, dir)
}

fn cookie_check(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("cookie_check");
    g.sample_size(30);
    for (sessions, revoked) in [(1_000, 0), (100_000, 0), (1_000_000, 0), (1_000, 100_000)] {
        let (auth, tokens, _dir) = rt.block_on(engine(sessions, revoked));
        let id = format!("{sessions}_live_{revoked}_revoked");
        g.bench_with_input(BenchmarkId::from_parameter(id), &tokens, |b, tokens| {
            let mut next = tokens.iter().cycle();
            b.iter(|| {
                let token = next.next().map_or("", String::as_str);
                rt.block_on(auth.authenticate(black_box(token))).is_ok()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tokens, cookie_check);
criterion_main!(benches);
