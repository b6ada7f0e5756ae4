//! The server's work for second factors, against what it is built from, measured alternately in
//! one process: a passkey login (request options, then the assertion checked and the session
//! started) against one P-256 signature verification plus one store write, and a TOTP check
//! (three time steps computed and compared) in microseconds. The store write is given two ways:
//! a one-row insert, and the one write every login makes (a password login's too: the session
//! and its event in one transaction, the sessions past the cap read back), which a passkey's
//! login makes with the passkey's new counter and challenge in it. A software authenticator
//! makes the assertions between the timed parts. Neither touches the Argon2 pool.
//! Run pinned: `taskset -c 0 cargo run --release -p cloakroom-bench --bin factors`, on SQLite
//! (a file in the temporary directory), or with `-- --postgres` on the local PostgreSQL (a
//! schema of its own, dropped at the end).

use cloakroom::events::{EventKind, SecurityEvent};
use cloakroom::{Auth, AuthConfig, ClientInfo, NewLogin, Reauth, SqliteStore, Store, SystemClock};
use ring::rand::{SecureRandom, SystemRandom};
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
    let mut options_part = Duration::ZERO;
    let mut p256 = Duration::ZERO;
    let mut write = Duration::ZERO;
    let mut login_write = Duration::ZERO;
    let mut read = Duration::ZERO;
    // Alternating rounds, so both see the same machine.
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            public.verify(&message, sig.as_ref()).map_err(err)?;
        }
        p256 += start.elapsed() / ROUNDS as u32;
        // The store's parts and a passkey login, interleaved: each timed store operation
        // follows another one, as in a server, and all see the same database and caches.
        for _ in 0..ROUNDS {
            let start = Instant::now();
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
            write += start.elapsed();
            let start = Instant::now();
            store.passkeys(user.id).await.map_err(err)?;
            read += start.elapsed();
            // What a password login writes, in its one round trip: a session and its event
            // (and the sessions past the cap read back). The session is ended, untimed.
            let session = cloakroom::Session {
                id: cloakroom::SessionId::random(),
                secret_hash: cloakroom::TokenHash(random_bytes(&rng)?),
                ..(*who.session).clone()
            };
            let event = SecurityEvent {
                user_id: user.id,
                kind: EventKind::Login,
                at: auth.now(),
                ip: None,
                user_agent: None,
                detail: Some("pwd".into()),
            };
            let start = Instant::now();
            store
                .store_login(NewLogin {
                    session: &session,
                    event: &event,
                    passkey: None,
                    keep: AuthConfig::default().max_sessions_per_user,
                })
                .await
                .map_err(err)?;
            login_write += start.elapsed();
            store.revoke(session.id).await.map_err(err)?;
            // A passkey login: the options (timed), the assertion (the authenticator's work,
            // not timed), the check and the session (timed).
            let start = Instant::now();
            let mut options = auth
                .passkey_login_options(None, false, &ClientInfo::default())
                .await
                .map_err(err)?;
            options_part += start.elapsed();
            passkey += start.elapsed();
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
            passkey += start.elapsed();
            // The user logs out (not timed): the bench's user must not reach the cap on
            // sessions, where each login also ends the oldest one.
            let signed_in = auth
                .authenticate(outcome.token.expose())
                .await
                .map_err(err)?;
            auth.logout(&signed_in).await.map_err(err)?;
        }
    }
    p256 /= 3;
    let [passkey, options_part, write, login_write, read] =
        [passkey, options_part, write, login_write, read].map(|d| d / (3 * ROUNDS as u32));

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

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let row = |name: String, d: Duration| println!("{name:<52}{:>9.1} µs", us(d));
    row("P-256 signature verification (ring)".into(), p256);
    row(format!("one store write ({backend}, one row)"), write);
    row(
        format!("a login's store write ({backend}, session + event)"),
        login_write,
    );
    row(format!("one store read ({backend}, the passkeys)"), read);
    row("passkey login, server work".into(), passkey);
    row("  of which the options".into(), options_part);
    println!(
        "passkey login / (one verification + one one-row write)     {:>6.2}×",
        passkey.as_secs_f64() / (p256 + write).as_secs_f64()
    );
    println!(
        "passkey login / (one verification + a login's one write)   {:>6.2}×",
        passkey.as_secs_f64() / (p256 + login_write).as_secs_f64()
    );
    row("TOTP check (three steps computed)".into(), totp_check);
    drop(auth);
    drop(store);
    if let Some(schema) = schema {
        schema.drop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn random_bytes(rng: &SystemRandom) -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(err)?;
    Ok(bytes)
}
