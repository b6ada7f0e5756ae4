//! An app protected by cloakroom in remote mode: it checks cloakroom's access tokens itself,
//! against the keys from cloakroom's JWKS, and refuses a revoked session's tokens as soon as
//! cloakroom publishes the revocation (`GET /auth/revocations`). No request to cloakroom is made
//! per request to the app.

use axum::routing::get;
use axum::{Json, Router};
use cloakroom::extract::{Authenticated, RequireRole, RoleName, Verifier};
use serde_json::{json, Value};

/// The `admin` role.
pub struct Admin;

impl RoleName for Admin {
    const NAME: &'static str = "admin";
}

async fn public() -> &'static str {
    "anyone may read this\n"
}

async fn me(Authenticated(who): Authenticated) -> Json<Value> {
    Json(json!({
        "user_id": who.user_id,
        "session_id": who.session_id,
        "roles": who.roles,
    }))
}

async fn admin(RequireRole(who, ..): RequireRole<Admin>) -> Json<Value> {
    Json(json!({ "admin": who.user_id }))
}

/// The app's routes, checked by `verifier`.
pub fn app(verifier: Verifier) -> Router {
    Router::new()
        .route("/", get(public))
        .route("/me", get(me))
        .route("/admin", get(admin))
        .layer(verifier.layer())
}
