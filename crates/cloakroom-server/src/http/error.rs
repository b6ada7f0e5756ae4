//! API errors: every failure becomes `{"error": {"code": "snake_case", "message": "…"}}` with a
//! fitting status. A 500 logs its cause and tells the client only `internal`.

use super::metrics::StoreFailed;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cloakroom::{web, AuthError, StoreError};

/// The code of [`ApiError::second_factor_required`].
pub const SECOND_FACTOR_REQUIRED: &str = "second_factor_required";
/// The code of [`ApiError::email_unverified`].
pub const EMAIL_UNVERIFIED: &str = "email_unverified";

/// An error answer of the JSON API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<i64>,
    store_failed: bool,
    /// `WWW-Authenticate`, for a bearer token refused or a login not strong enough.
    challenge: Option<String>,
    /// What the client needs for its next try: `DPoP-Nonce` (the nonce a DPoP client must put
    /// in its next proof) or `Secure-Session-Challenge` (the challenge for a DBSC proof).
    next_try: Option<NextTry>,
}

/// A header that tells a client how to try again.
#[derive(Debug)]
enum NextTry {
    /// `DPoP-Nonce`.
    DpopNonce(String),
    /// `Secure-Session-Challenge`.
    SessionChallenge(String),
}

impl ApiError {
    /// An error with a status, a code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            store_failed: false,
            challenge: None,
            next_try: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "not signed in, or the session has ended",
        )
    }

    /// 401 for a bearer token that was sent and refused, with the RFC 6750 challenge.
    pub fn invalid_token() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the access token is invalid, expired or revoked",
        );
        e.challenge = Some("Bearer error=\"invalid_token\"".into());
        e
    }

    /// 401 for a DPoP-bound token, or its proof, refused (RFC 9449 §7.1), with the `DPoP`
    /// challenge: `invalid_token` (no proof or an invalid token), `use_dpop_nonce` (give it with
    /// [`ApiError::with_dpop_nonce`]) or `invalid_dpop_proof`.
    pub fn invalid_dpop(proof: Option<&cloakroom::dpop::ProofError>) -> Self {
        let (code, error, message) = match proof {
            None => (
                "unauthenticated",
                "invalid_token",
                "the access token is invalid, expired or revoked, or came without its DPoP proof"
                    .to_string(),
            ),
            Some(cloakroom::dpop::ProofError::UseNonce) => (
                "use_dpop_nonce",
                "use_dpop_nonce",
                "the DPoP proof must carry the nonce of the DPoP-Nonce header".to_string(),
            ),
            Some(e) => ("invalid_dpop_proof", "invalid_dpop_proof", e.to_string()),
        };
        let mut e = Self::new(StatusCode::UNAUTHORIZED, code, message);
        e.challenge = Some(format!(
            "DPoP error=\"{error}\", algs=\"ES256 EdDSA RS256\""
        ));
        e
    }

    /// The same error with a `DPoP-Nonce` header.
    pub fn with_dpop_nonce(mut self, nonce: String) -> Self {
        self.next_try = Some(NextTry::DpopNonce(nonce));
        self
    }

    /// 401 `session_binding_required` for a cookie session held to its device binding (DBSC):
    /// a bound session without a current bound cookie (with the `Secure-Session-Challenge` of
    /// its refresh, if given), or an unbound one where binding is required.
    pub fn device_binding(
        session: cloakroom::SessionId,
        bound: bool,
        challenge: Option<String>,
    ) -> Self {
        let message = cloakroom::AuthError::DeviceBinding { session, bound }.to_string();
        let e = Self::new(
            StatusCode::UNAUTHORIZED,
            "session_binding_required",
            message,
        );
        match challenge {
            Some(c) => e.with_session_challenge(c),
            None => e,
        }
    }

    /// The same error with a `Secure-Session-Challenge` header.
    pub fn with_session_challenge(mut self, value: String) -> Self {
        self.next_try = Some(NextTry::SessionChallenge(value));
        self
    }

    /// Whether this is a DPoP refusal that asks for the server's nonce.
    pub fn wants_dpop_nonce(&self) -> bool {
        self.code == "use_dpop_nonce"
    }

    /// 401 for a session whose login is too weak or too old for the resource, with RFC 9470's
    /// challenge.
    pub fn insufficient(requirement: &cloakroom::Requirement) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "insufficient_user_authentication",
            "a stronger or more recent authentication is required",
        );
        e.challenge = Some(requirement.challenge());
        e
    }

    /// 403 for a session that must add a second factor before going further.
    pub fn second_factor_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            SECOND_FACTOR_REQUIRED,
            "this account must add a second factor first (/settings/security, or POST \
             /auth/factors/totp)",
        )
    }

    /// 403 for a session whose account must confirm its address first.
    pub fn email_unverified() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            EMAIL_UNVERIFIED,
            "this account must confirm its email address first: open the link mailed to it, or \
             ask for a new one (/settings, or POST /auth/email/verify/request)",
        )
    }

    /// 403 for a request that did not come from this site.
    pub fn cross_origin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "cross_origin_request",
            "this request did not come from this site",
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 500 `internal`; the cause is logged, not sent.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, source = ?cause.source(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side",
        )
    }

    /// Adds a `Retry-After` in whole seconds (at least 1).
    pub fn retry_after(mut self, secs: i64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Marks the error as the store's failing (see [`StoreFailed`]).
    fn store_failed(mut self) -> Self {
        self.store_failed = true;
        self
    }

    /// Whether the store failed (the request may succeed once it is back).
    pub fn is_store_failure(&self) -> bool {
        self.store_failed
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after_secs(&self) -> Option<i64> {
        self.retry_after
    }
}

fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(e), "store unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable",
            )
            .retry_after(5)
            .store_failed()
        }
        StoreError::Conflict | StoreError::Corrupt(_) | StoreError::Backend(_) => {
            ApiError::internal(e)
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let msg = e.to_string();
        match e {
            AuthError::InvalidCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials", msg)
            }
            AuthError::TooManyAttempts { retry_after } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", msg)
                    .retry_after(ceil_secs(retry_after))
            }
            AuthError::EmailTaken => Self::new(StatusCode::CONFLICT, "email_taken", msg),
            AuthError::InvalidEmail(_) => Self::bad_request("invalid_email", msg),
            AuthError::WeakPassword(_) => Self::bad_request("weak_password", msg),
            AuthError::InvalidRole(_) => Self::bad_request("invalid_role", msg),
            AuthError::Unauthenticated => Self::unauthenticated(),
            // Answered as 202 by the login routes; anywhere else it is a refusal.
            AuthError::MfaRequired { .. } => {
                Self::new(StatusCode::UNAUTHORIZED, "mfa_required", msg)
            }
            AuthError::InvalidCode => Self::new(StatusCode::UNAUTHORIZED, "invalid_code", msg),
            AuthError::InvalidLink => Self::new(StatusCode::BAD_REQUEST, "invalid_token", msg),
            AuthError::SameEmail => Self::bad_request("same_email", msg),
            AuthError::DpopProof(e) => Self::invalid_dpop(Some(&e)),
            AuthError::Dbsc(_) => Self::bad_request("invalid_session_proof", msg),
            AuthError::DeviceBinding { session, bound } => {
                Self::device_binding(session, bound, None)
            }
            AuthError::EmailAlreadyVerified => {
                Self::new(StatusCode::CONFLICT, "email_already_verified", msg)
            }
            AuthError::PasskeyRefused => {
                Self::new(StatusCode::UNAUTHORIZED, "passkey_refused", msg)
            }
            AuthError::MalformedCredential => Self::bad_request("invalid_credential", msg),
            AuthError::InvalidMfaToken => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_mfa_token", msg)
            }
            AuthError::ReauthRequired => Self::new(StatusCode::FORBIDDEN, "reauth_required", msg),
            AuthError::NotFound => Self::not_found(),
            AuthError::Overloaded { retry_after } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", msg)
                    .retry_after(ceil_secs(retry_after))
            }
            AuthError::InvalidGrant => Self::bad_request("invalid_grant", msg),
            AuthError::Keys(_) => Self::internal(&e),
            AuthError::Store(ref s) => store_error(s),
            AuthError::Hashing(ref h) => Self::internal(h),
        }
    }
}

fn ceil_secs(d: time::Duration) -> i64 {
    let s = d.whole_seconds();
    if d.subsec_nanoseconds() > 0 {
        s + 1
    } else {
        s
    }
}

impl From<web::CredentialError> for ApiError {
    fn from(e: web::CredentialError) -> Self {
        match e {
            web::CredentialError::InvalidBearer => Self::invalid_token(),
            web::CredentialError::OtherScheme | web::CredentialError::AmbiguousCookie => {
                Self::unauthenticated()
            }
        }
    }
}

impl From<web::Refusal> for ApiError {
    fn from(r: web::Refusal) -> Self {
        match r {
            web::Refusal::CrossOrigin => Self::cross_origin(),
            web::Refusal::Unauthenticated => Self::unauthenticated(),
            web::Refusal::InvalidToken => Self::invalid_token(),
            web::Refusal::InvalidDpop(e) => Self::invalid_dpop(e.as_ref()),
            web::Refusal::DeviceBinding {
                session,
                bound,
                challenge,
            } => Self::device_binding(session, bound, challenge),
            web::Refusal::Failed(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = web::error_response(self.status, self.code, &self.message);
        let h = res.headers_mut();
        if let Some(challenge) = self.challenge.as_deref() {
            if let Ok(v) = HeaderValue::from_str(challenge) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        let next_try = match &self.next_try {
            Some(NextTry::DpopNonce(v)) => Some(("dpop-nonce", v)),
            Some(NextTry::SessionChallenge(v)) => Some((cloakroom::dbsc::CHALLENGE, v)),
            None => None,
        };
        if let Some((name, value)) = next_try {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if self.store_failed {
            res.extensions_mut().insert(StoreFailed);
        }
        res
    }
}
