//! What a caller hands the engine and gets back: who is asking, a login attempt, its outcome,
//! a recognised session, proof for operations that need fresh authentication, and the
//! engine's counters.

use std::net::IpAddr;
use std::sync::Arc;
use time::OffsetDateTime;

use crate::session::{Session, SessionToken, Transport};
use crate::user::User;

/// Who is asking, as far as the transport can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client IP (from the socket, or a trusted proxy's header).
    pub ip: Option<IpAddr>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
}

/// A login attempt.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// Email as typed.
    pub email: String,
    /// Password as typed (normalised here).
    pub password: String,
    /// "Remember me": a persistent cookie and the longer lifetime.
    pub remember: bool,
    /// The transport the new session will use.
    pub transport: Transport,
    /// Who is asking.
    pub client: ClientInfo,
    /// The session token the client already holds, if any; that session ends on success.
    pub current_token: Option<String>,
    /// For the token transport: the DPoP key (its thumbprint, from a checked proof) the tokens
    /// are to be bound to.
    pub dpop_jkt: Option<String>,
}

impl LoginRequest {
    /// A cookie login with no remember-me and no client details.
    pub fn new(email: &str, password: &str) -> Self {
        Self {
            email: email.to_string(),
            password: password.to_string(),
            remember: false,
            transport: Transport::Cookie,
            client: ClientInfo::default(),
            current_token: None,
            dpop_jkt: None,
        }
    }
}

/// A successful login.
#[derive(Debug)]
pub struct LoginOutcome {
    /// Who logged in.
    pub user: User,
    /// The new session.
    pub session: Session,
    /// Its secret, for the client.
    pub token: SessionToken,
}

/// A recognised session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The session's user.
    pub user: Arc<User>,
    /// The session.
    pub session: Arc<Session>,
    /// When it ends unless used again.
    pub expires_at: OffsetDateTime,
}

/// Proof offered for an operation that needs fresh authentication.
#[derive(Debug, Clone, Default)]
pub enum Reauth {
    /// Nothing beyond the session; enough only if the login is recent.
    #[default]
    None,
    /// The current password.
    Password(String),
    /// A second factor of the user (an authenticator app's code, a recovery code).
    SecondFactor(crate::SecondFactor),
}

/// Counters of security-relevant events, for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Spent refresh tokens presented after the grace window.
    pub refresh_reuse: std::sync::atomic::AtomicU64,
    /// Successful logins (both transports).
    pub logins_ok: std::sync::atomic::AtomicU64,
    /// Logins refused for wrong credentials.
    pub logins_failed: std::sync::atomic::AtomicU64,
    /// Logins held back by throttling.
    pub logins_throttled: std::sync::atomic::AtomicU64,
    /// Logins refused because hashing was saturated.
    pub logins_overloaded: std::sync::atomic::AtomicU64,
}
