//! The rules every HTTP request meets, at the cloakroom server and in an app that embeds the
//! engine alike (feature `axum`): where its credentials are, which of them counts, the
//! cross-site request checks, the session cookie's renewal, and the error envelope. The server
//! and [`crate::extract`] both call [`RequestRules::authenticate`], so an embedding app refuses
//! exactly what the server refuses.

mod credentials;
pub mod csrf;
mod envelope;

pub use credentials::{bearer_token, bound_cookie, session_cookie, CredentialError, Credentials};
pub use envelope::{error_response, ErrorDetail, ErrorEnvelope};

#[cfg(feature = "engine")]
mod rules;
#[cfg(feature = "engine")]
pub use rules::{Caller, Refusal, RequestRules};
