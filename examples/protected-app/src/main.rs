//! Runs the protected app. Settings from the environment:
//! `CLOAKROOM_URL` (cloakroom's public URL, the tokens' `iss`), `CLOAKROOM_AUDIENCE` (default:
//! the URL), `CLOAKROOM_VERIFIER_KEY` (to follow revocations; without it, revoked tokens live
//! until they expire), `LISTEN` (default `127.0.0.1:3000`).

use cloakroom::extract::Verifier;
use cloakroom::remote::{RemoteConfig, RemoteVerifier, RevocationSource};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let Ok(base) = std::env::var("CLOAKROOM_URL") else {
        eprintln!("set CLOAKROOM_URL to cloakroom's public URL, such as https://auth.example.com");
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/').to_string();
    let audience = std::env::var("CLOAKROOM_AUDIENCE").unwrap_or_else(|_| base.clone());
    let mut config = RemoteConfig::new(&base, &audience);
    if let Ok(key) = std::env::var("CLOAKROOM_VERIFIER_KEY") {
        config.revocations = RevocationSource::Events {
            url: format!("{base}/auth/revocations"),
            key,
        };
    }
    let verifier = match RemoteVerifier::start(config).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot start verifying cloakroom tokens: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, "protected app listening");
    let app = protected_app::app(Verifier::Remote(verifier));
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
