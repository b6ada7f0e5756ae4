//! # cloakroom
//!
//! The engine of the cloakroom authentication server: users, passwords, server-side sessions and
//! the stores that keep them. Every login creates a [`Session`]; the client carries an opaque
//! token for it (in a cookie), and [`Auth::authenticate`] recognises that token on later requests
//! from memory, without a store round trip, until the session is ended, expires or is revoked.
//!
//! This crate has no HTTP server and no CLI; `cloakroom-server` builds both on top of it. Its
//! features pull in only what they need: `engine` (the engine, with Argon2), `sqlite` and
//! `postgres` (a SQL store, with the engine), `redis`, `axum` (the request rules in [`web`] and
//! the extractors in [`extract`]), `remote` (verifying access tokens in another service).
//!
//! ```no_run
//! use std::sync::Arc;
//! use cloakroom::{Auth, AuthConfig, ClientInfo, LoginRequest, SqliteStore, SystemClock};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(SqliteStore::open("sqlite://cloakroom.db?mode=rwc").await?);
//! let auth = Auth::new(store, AuthConfig::default(), Arc::new(SystemClock)).await?;
//! auth.signup("ada@example.com", "correct horse battery staple", &ClientInfo::default()).await?;
//! let login = auth
//!     .login(LoginRequest::new("ada@example.com", "correct horse battery staple"))
//!     .await?;
//! let who = auth.authenticate(login.token.expose()).await?;
//! assert_eq!(who.user.email.as_str(), "ada@example.com");
//! # Ok(()) }
//! ```

mod assurance;
mod clock;
mod cookie;
pub mod dbsc;
pub mod dpop;
#[cfg(feature = "engine")]
mod engine;
pub mod events;
#[cfg(all(feature = "axum", any(feature = "engine", feature = "remote")))]
pub mod extract;
pub mod factor;
pub mod feed;
pub mod jwt;
mod key_proof;
#[cfg(feature = "engine")]
mod live;
pub mod mail;
#[cfg(feature = "engine")]
pub mod maintenance;
#[cfg(feature = "engine")]
mod password;
#[cfg(feature = "remote")]
pub mod remote;
pub mod sealing;
mod secret;
mod session;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "engine")]
mod throttle;
mod user;
#[cfg(feature = "axum")]
pub mod web;

pub use assurance::{Acr, Amr, Requirement};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cookie::{
    holds_jwt, CookiePolicy, Presented, DEV_SESSION_COOKIE, DOMAIN_SESSION_COOKIE, SESSION_COOKIE,
};
#[cfg(feature = "engine")]
pub use engine::{
    Auth, AuthConfig, AuthError, AuthMetrics, Authenticated, ClientInfo, LoginOutcome,
    LoginRequest, MfaLogin, Reauth, Revocation, SecondFactor, TotpEnrolment, RECOVERY_CODES,
};
#[cfg(feature = "engine")]
pub use engine::{JwtConfig, KeyInfo, TokenPair, ACCESS_TOKEN_TYPE, DPOP_WINDOW};
#[cfg(feature = "engine")]
pub use maintenance::Maintenance;
#[cfg(feature = "engine")]
pub use password::{
    Argon2Config, PasswordError, PasswordHasher, PasswordPolicy, Verified, WeakPassword,
    MAX_PASSWORD_BYTES,
};
pub use secret::{secrets_equal, Secret};
pub use session::{
    Lifetime, Lineage, Session, SessionId, SessionToken, TokenCheck, TokenHash, Transport,
};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    Change, ChangeFeed, EventStore, FactorStore, KeyStore, NewLogin, ReplayStore, RevocationEvent,
    Rotation, SessionStore, Store, StoreError, UserStore,
};
#[cfg(feature = "redis")]
pub use store::{RedisOnce, RedisStore, RedisThrottle};
#[cfg(feature = "engine")]
pub use throttle::{MemoryThrottle, Throttle, ThrottlePolicy};
pub use user::{Email, EmailError, Role, RoleError, User, UserId};
