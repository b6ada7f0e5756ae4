//! Runs the embedded example: `DATABASE_URL` (default `sqlite://embedded-app.db?mode=rwc`),
//! `LISTEN` (default `127.0.0.1:3001`), `ORIGIN` (default `http://localhost:3001`, the origin
//! browsers use; over plain http the cookie is the development one, without `Secure`).

use cloakroom::web::RequestRules;
use cloakroom::{Auth, AuthConfig, CookiePolicy, SqliteStore, SystemClock};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
    let url = env("DATABASE_URL", "sqlite://embedded-app.db?mode=rwc");
    let listen = env("LISTEN", "127.0.0.1:3001");
    let origin = env("ORIGIN", "http://localhost:3001");
    let cookie = if origin.starts_with("https://") {
        CookiePolicy::SECURE
    } else {
        CookiePolicy::DEV
    };
    let store = Arc::new(SqliteStore::open(&url).await?);
    let auth = Arc::new(Auth::new(store, AuthConfig::default(), Arc::new(SystemClock)).await?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let maintenance = auth.spawn_maintenance(stopped);
    let app = embedded_app::app(Arc::clone(&auth), RequestRules::new(cookie, vec![origin]));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, "embedded app listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let _ = stop.send(true);
    maintenance.finish().await;
    Ok(())
}
