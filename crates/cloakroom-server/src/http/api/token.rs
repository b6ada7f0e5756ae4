//! `POST /auth/token` (RFC 6749 password and refresh_token grants, for first-party clients, and
//! the extension grant [`MFA_GRANT`] that completes a password grant answered `mfa_required`)
//! and `GET /.well-known/jwks.json`. Errors here keep the RFC 6749 §5.2 shape.

use crate::http::routes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::{AuthError, LoginRequest, MfaLogin, TokenPair, Transport};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::extract::{body_bytes, Client};
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(routes::TOKEN, post(token))
        .route(routes::JWKS, get(jwks))
}

/// The extension grant (RFC 6749 §4.5) of a password grant's second step: `mfa_token` and
/// `code`, `recovery_code` or a passkey's `credential`.
pub const MFA_GRANT: &str = "urn:cloakroom:params:oauth:grant-type:mfa";

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<i64>,
    store_failed: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
            store_failed: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        let msg = e.to_string();
        match e {
            AuthError::InvalidCredentials
            | AuthError::InvalidGrant
            | AuthError::InvalidCode
            | AuthError::PasskeyRefused
            | AuthError::InvalidMfaToken => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_grant", msg)
            }
            AuthError::MalformedCredential => Self::invalid_request(msg),
            AuthError::DpopProof(cloakroom::dpop::ProofError::UseNonce) => {
                Self::new(StatusCode::BAD_REQUEST, "use_dpop_nonce", msg)
            }
            AuthError::DpopProof(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", msg)
            }
            AuthError::TooManyAttempts { retry_after } => Self {
                retry_after: Some(retry_after.whole_seconds().max(1)),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", msg)
            },
            AuthError::Overloaded { retry_after } => Self {
                retry_after: Some(retry_after.whole_seconds().max(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    msg,
                )
            },
            other => {
                // Everything else is ours, not the client's: say no more than "server_error".
                let api = ApiError::from(other);
                let error = if api.status() == StatusCode::SERVICE_UNAVAILABLE {
                    "temporarily_unavailable"
                } else {
                    "server_error"
                };
                Self {
                    retry_after: api.retry_after_secs(),
                    store_failed: api.is_store_failure(),
                    ..Self::new(api.status(), error, "the request could not be completed")
                }
            }
        }
    }
}

fn no_store(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut res = (self.status, Json(body)).into_response();
        no_store(&mut res);
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.store_failed {
            res.extensions_mut()
                .insert(crate::http::metrics::StoreFailed);
        }
        res
    }
}

/// The parameters of a token request, from JSON or a form. Unknown parameters are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TokenRequest {
    grant_type: String,
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    mfa_token: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    /// A passkey's assertion: a JSON object, or (in a form) the same as a string.
    #[cfg_attr(
        test,
        schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")
    )]
    credential: Option<Value>,
    /// Accepted and ignored: cloakroom has one first-party client.
    #[allow(dead_code)]
    client_id: Option<String>,
    /// Accepted and ignored: access tokens carry roles, not scopes.
    #[allow(dead_code)]
    scope: Option<String>,
}

fn parse_form(body: &[u8]) -> Result<Value, OAuthError> {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.2: parameters must not be repeated.
        if map
            .insert(k.to_string(), Value::String(v.to_string()))
            .is_some()
        {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k:?} is repeated"
            )));
        }
    }
    Ok(Value::Object(map))
}

async fn read_request(state: &AppState, req: Request) -> Result<TokenRequest, OAuthError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_form = content_type == "application/x-www-form-urlencoded";
    if !is_form {
        crate::http::extract::check_json_content_type(req.headers()).map_err(|_| {
            OAuthError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "send application/json or application/x-www-form-urlencoded",
            )
        })?;
    }
    let bytes = body_bytes(req, state).await.map_err(|e| {
        OAuthError::new(e.status(), "invalid_request", "the body could not be read")
    })?;
    let value = if is_form {
        parse_form(&bytes)?
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| OAuthError::invalid_request(format!("the JSON body is not valid: {e}")))?
    };
    serde_json::from_value(value)
        .map_err(|e| OAuthError::invalid_request(format!("the request is not valid: {e}")))
}

async fn token(State(state): State<AppState>, Client(client): Client, req: Request) -> Response {
    let mut res = grant(&state, client, req).await.into_response();
    // A nonce for the client's next proof, whatever this answer was.
    if state.auth.config().dpop_nonce_required {
        if let Ok(v) = HeaderValue::from_str(&state.auth.dpop_nonce()) {
            res.headers_mut().insert("dpop-nonce", v);
        }
    }
    res
}

/// The key a token request's `DPoP` proof (RFC 9449 §5) binds the tokens to, once the proof is
/// checked; `None` without a proof, unless every token must be bound.
async fn dpop_key(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, OAuthError> {
    let mut proofs = headers.get_all("dpop").iter();
    let Some(proof) = proofs.next() else {
        if state.auth.config().dpop_required {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "this server binds every token to a DPoP key: send a DPoP proof",
            ));
        }
        return Ok(None);
    };
    let proof = match (proof.to_str(), proofs.next()) {
        (Ok(proof), None) => proof,
        _ => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "send one DPoP proof",
            ))
        }
    };
    let url = state
        .rules
        .request_url(headers, routes::TOKEN)
        .unwrap_or_default();
    let checked = state
        .auth
        .check_dpop_proof(proof, "POST", &url, None, None)
        .await?;
    Ok(Some(checked.jkt))
}

async fn grant(
    state: &AppState,
    client: cloakroom::ClientInfo,
    req: Request,
) -> Result<Response, OAuthError> {
    let dpop = dpop_key(state, req.headers()).await?;
    let body = read_request(state, req).await?;
    let pair = match body.grant_type.as_str() {
        "password" => {
            let email = match (body.email, body.username) {
                (Some(e), None) | (None, Some(e)) => e,
                (Some(e), Some(u)) if e == u => e,
                _ => {
                    return Err(OAuthError::invalid_request(
                        "send email (or username), once",
                    ))
                }
            };
            let password = body
                .password
                .ok_or_else(|| OAuthError::invalid_request("password is missing"))?;
            let pair = state
                .auth
                .login_tokens(LoginRequest {
                    email,
                    password,
                    remember: false,
                    transport: Transport::Token,
                    client,
                    current_token: None,
                    dpop_jkt: dpop,
                })
                .await;
            match pair {
                Ok(pair) => pair,
                Err(AuthError::MfaRequired { mfa_token, methods }) => {
                    let mut res = (
                        StatusCode::FORBIDDEN,
                        Json(json!({
                            "error": "mfa_required",
                            "error_description": "a second factor is required: use the grant \
                                                  urn:cloakroom:params:oauth:grant-type:mfa",
                            "mfa_token": mfa_token.expose(),
                            "methods": methods,
                        })),
                    )
                        .into_response();
                    no_store(&mut res);
                    return Ok(res);
                }
                Err(e) => return Err(e.into()),
            }
        }
        MFA_GRANT => {
            let mfa_token = body
                .mfa_token
                .ok_or_else(|| OAuthError::invalid_request("mfa_token is missing"))?;
            let credential = match body.credential {
                Some(Value::String(text)) => {
                    Some(serde_json::from_str(&text).map_err(|_| {
                        OAuthError::invalid_request("credential is not a JSON object")
                    })?)
                }
                other => other,
            };
            let proof = super::factors::proof(body.code, body.recovery_code, credential)
                .map_err(|e| OAuthError::invalid_request(e.message()))?
                .ok_or_else(|| OAuthError::invalid_request("send code or recovery_code"))?;
            state
                .auth
                .login_tokens_mfa(MfaLogin {
                    mfa_token,
                    proof,
                    client,
                    current_token: None,
                    dpop_jkt: dpop,
                })
                .await?
        }
        "refresh_token" => {
            let rt = body
                .refresh_token
                .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
            state.auth.refresh_with_proof(&rt, dpop.as_deref()).await?
        }
        other => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported (password, refresh_token, \
                     {MFA_GRANT})"
                ),
            ))
        }
    };
    Ok(token_response(&pair))
}

/// The RFC 6749 §5.1 answer for a token pair: `token_type` `DPoP` for tokens bound to a key
/// (RFC 9449 §5).
pub(crate) fn token_response(pair: &TokenPair) -> Response {
    let token_type = if pair.session.dpop_jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    };
    let mut res = Json(json!({
        "access_token": pair.access_token,
        "token_type": token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token.expose(),
    }))
    .into_response();
    no_store(&mut res);
    res
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut res = Json(state.auth.jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    res
}
