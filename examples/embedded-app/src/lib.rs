//! An app that embeds the cloakroom engine: it keeps its users and sessions in its own SQLite
//! database, signs people in itself, and checks every request with the library's request rules,
//! the very ones the cloakroom server uses (the same cookie, the same cross-site checks, the
//! same error envelope). The engine's upkeep runs beside it, so a session ended from the
//! `cloakroom` CLI on the same database, or by another instance, is refused within a second.

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloakroom::extract::{Authenticated, Verifier};
use cloakroom::web::{error_response, RequestRules};
use cloakroom::{Auth, AuthError, ClientInfo, LoginRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub auth: Arc<Auth>,
    /// The request rules (the session cookie and this app's origin).
    pub rules: RequestRules,
}

/// The app's routes: sign up, sign in and out, and two pages that need a session (one of
/// them an unsafe method, which must come from this site).
pub fn app(auth: Arc<Auth>, rules: RequestRules) -> Router {
    let verifier = Verifier::Embedded {
        auth: Arc::clone(&auth),
        rules: rules.clone(),
    };
    Router::new()
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/notes", post(note))
        .with_state(AppState { auth, rules })
        .layer(verifier.layer())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    text: String,
}

/// A JSON body, refused in the envelope when it is not one.
struct Body<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(|e| error_response(e.status(), "invalid_request", &e.body_text()))
    }
}

fn refused(e: AuthError) -> Response {
    let (status, code) = match e {
        AuthError::InvalidCredentials | AuthError::Unauthenticated => {
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        }
        AuthError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        AuthError::EmailTaken => (StatusCode::CONFLICT, "email_taken"),
        AuthError::InvalidEmail(_) => (StatusCode::BAD_REQUEST, "invalid_email"),
        AuthError::WeakPassword(_) => (StatusCode::BAD_REQUEST, "weak_password"),
        AuthError::Overloaded { .. } | AuthError::Store(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error_response(status, code, &e.to_string())
}

async fn signup(State(s): State<AppState>, Body(c): Body<Credentials>) -> Response {
    match s
        .auth
        .signup(&c.email, &c.password, &ClientInfo::default())
        .await
    {
        Ok(user) => (
            StatusCode::CREATED,
            Json(json!({"id": user.id.to_string()})),
        )
            .into_response(),
        Err(e) => refused(e),
    }
}

async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(c): Body<Credentials>,
) -> Response {
    let mut req = LoginRequest::new(&c.email, &c.password);
    req.current_token = s.rules.session_cookie(&headers).map(str::to_string);
    match s.auth.login(req).await {
        Ok(out) => {
            let cookie =
                s.rules
                    .cookie()
                    .for_session(out.token.expose(), &out.session, s.auth.now());
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({"session_id": out.session.id.to_string()})),
            )
                .into_response()
        }
        Err(e) => refused(e),
    }
}

async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let caller = s
        .rules
        .authenticate(&s.auth, &axum::http::Method::POST, &headers)
        .await;
    if let Ok(caller) = caller {
        if let Err(e) = s.auth.logout(&caller.who).await {
            return refused(e);
        }
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, s.rules.cookie().clear())],
    )
        .into_response()
}

async fn me(Authenticated(who): Authenticated) -> Json<Value> {
    Json(json!({
        "user_id": who.user_id,
        "session_id": who.session_id,
        "email": who.email,
    }))
}

async fn note(Authenticated(who): Authenticated, Body(note): Body<Note>) -> Json<Value> {
    Json(json!({"by": who.user_id, "text": note.text}))
}
