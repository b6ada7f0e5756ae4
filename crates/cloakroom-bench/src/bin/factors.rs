//! The server's work for second factors, against what it is built from, measured alternately in
//! one process: a passkey login (request options, then the assertion checked and the session
//! started) against one P-256 signature verification plus one store write, and a TOTP check
//! (three time steps computed and compared) in microseconds. A software authenticator makes the
//! assertions between the timed parts. Neither touches the Argon2 pool.
//! Run pinned: `taskset -c 0 cargo run --release -p cloakroom-bench --bin factors`, on SQLite
//! (a file in the temporary directory), or with `-- --postgres` on the local PostgreSQL (a
//! schema of its own, dropped at the end).

use cloakroom::events::{EventKind, SecurityEvent};
use cloakroom::{Auth, AuthConfig, ClientInfo, Reauth, SqliteStore, Store, SystemClock};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const ORIGIN: &str = "http://localhost:8080";
const ROUNDS: usize = 400;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("cloakroom-factors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    let postgres = std::env::args().any(|a| a == "--postgres");
    let (store, schema): (Arc<dyn Store>, _) = if postgres {
        let schema = cloakroom::testing::PgSchema::create("factors_bench")
            .await
            .ok_or("PostgreSQL is not reachable at 127.0.0.1:5432")?;
        let store = cloakroom::PostgresStore::open(&schema.url)
            .await
            .map_err(err)?;
        (Arc::new(store), Some(schema))
    } else {
        let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
        (Arc::new(SqliteStore::open(&url).await.map_err(err)?), None)
    };
    let backend = if postgres { "PostgreSQL" } else { "SQLite" };
    let config = AuthConfig {
        passkey_rp_id: "localhost".into(),
        passkey_origin: ORIGIN.into(),
        ..AuthConfig::default()
    };
    let auth = Arc::new(
        Auth::new(Arc::clone(&store), config, Arc::new(SystemClock))
            .await
            .map_err(err)?,
    );
    let user = auth
        .create_user(
            "bench@example.com",
            "a bench password of some length",
            vec![],
        )
        .await
        .map_err(err)?;
    let login = auth
        .login(cloakroom::LoginRequest::new(
            "bench@example.com",
            "a bench password of some length",
        ))
        .await
        .map_err(err)?;
    let who = auth.authenticate(login.token.expose()).await.map_err(err)?;

    // A passkey, made by a software authenticator.
    let origin = Url::parse(ORIGIN).map_err(err)?;
    let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let mut options = auth
        .passkey_register_options(&who, Reauth::None)
        .await
        .map_err(err)?;
    options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("discouraged");
    options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
    let creation: CreationChallengeResponse = serde_json::from_value(options).map_err(err)?;
    let made = device
        .do_registration(origin.clone(), creation)
        .map_err(|e| format!("{e:?}"))?;
    let made = serde_json::to_value(made).map_err(err)?;
    auth.register_passkey(&who, &made, None)
        .await
        .map_err(err)?;
    let credential_id = made["rawId"].clone();
    let user_handle = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.id.0.as_bytes())
    };

    // The baseline parts: one P-256 verification, one store write.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(err)?;
    let pair = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .map_err(err)?;
    let message = [7u8; 200];
    let sig = pair.sign(&rng, &message).map_err(err)?;
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        pair.public_key().as_ref().to_vec(),
    );

    let mut passkey = Duration::ZERO;
    let mut p256 = Duration::ZERO;
    let mut write = Duration::ZERO;
    let mut read = Duration::ZERO;
    // Alternating rounds, so both see the same machine.
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            public.verify(&message, sig.as_ref()).map_err(err)?;
        }
        p256 += start.elapsed() / ROUNDS as u32;
        let start = Instant::now();
        for _ in 0..ROUNDS {
            store
                .record_event(&SecurityEvent {
                    user_id: user.id,
                    kind: EventKind::FactorAdded,
                    at: auth.now(),
                    ip: None,
                    user_agent: None,
                    detail: None,
                })
                .await
                .map_err(err)?;
        }
        write += start.elapsed() / ROUNDS as u32;
        let start = Instant::now();
        for _ in 0..ROUNDS {
            store.passkeys(user.id).await.map_err(err)?;
        }
        read += start.elapsed() / ROUNDS as u32;
        // A passkey login: the options (timed), the assertion (the authenticator's work, not
        // timed), the check and the session (timed).
        let mut total = Duration::ZERO;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let mut options = auth
                .passkey_login_options(None, false, &ClientInfo::default())
                .await
                .map_err(err)?;
            total += start.elapsed();
            options["publicKey"]["allowCredentials"] =
                json!([{"type": "public-key", "id": credential_id}]);
            let request: RequestChallengeResponse = serde_json::from_value(options).map_err(err)?;
            let assertion = device
                .do_authentication(origin.clone(), request)
                .map_err(|e| format!("{e:?}"))?;
            let mut assertion = serde_json::to_value(assertion).map_err(err)?;
            assertion["response"]["userHandle"] = json!(user_handle);
            let start = Instant::now();
            let outcome = auth
                .login_passkey(&assertion, false, ClientInfo::default(), None)
                .await
                .map_err(err)?;
            total += start.elapsed();
            // The user logs out (not timed): the bench's user must not reach the cap on
            // sessions, where each login also ends the oldest one.
            let signed_in = auth
                .authenticate(outcome.token.expose())
                .await
                .map_err(err)?;
            auth.logout(&signed_in).await.map_err(err)?;
        }
        passkey += total / ROUNDS as u32;
    }
    let (passkey, p256, write, read) = (passkey / 3, p256 / 3, write / 3, read / 3);

    // A TOTP check's computation: three steps' codes, compared.
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        0,
        30,
        vec![9u8; 20],
        None,
        String::new(),
    );
    let start = Instant::now();
    let mut matched = 0;
    for i in 0..(ROUNDS as u64 * 10) {
        for step in 0..3u64 {
            if totp.generate((1_800_000_000 / 30 + i + step) * 30) == "000000" {
                matched += 1;
            }
        }
    }
    let totp_check = start.elapsed() / (ROUNDS as u32 * 10);
    std::hint::black_box(matched);

    let base = p256 + write;
    println!(
        "P-256 signature verification (ring)      {:>9.1} µs",
        p256.as_secs_f64() * 1e6
    );
    println!(
        "{:<41}{:>9.1} µs",
        format!("one store write ({backend}, one row)"),
        write.as_secs_f64() * 1e6
    );
    println!(
        "{:<41}{:>9.1} µs",
        format!("one store read ({backend}, the passkeys)"),
        read.as_secs_f64() * 1e6
    );
    println!(
        "passkey login, server work               {:>9.1} µs  ({:.2}× one verification + one write)",
        passkey.as_secs_f64() * 1e6,
        passkey.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "TOTP check (three steps computed)        {:>9.1} µs",
        totp_check.as_secs_f64() * 1e6
    );
    drop(auth);
    drop(store);
    if let Some(schema) = schema {
        schema.drop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
