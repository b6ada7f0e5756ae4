//! `GET /auth/revocations`: Server-Sent Events for verifiers that check cloakroom's JWTs
//! themselves and cannot reach Redis. First every session revoked whose tokens may still be
//! alive, then `synced`, then each revocation as it happens. A verifier that reconnects gets the
//! whole list again, so a dropped connection never leaves a revoked token valid for long.
//!
//! The events are [`cloakroom::feed::FeedEvent`]s, the type the remote verifier reads.

use crate::http::routes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cloakroom::feed::FeedEvent;
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;

use crate::http::error::ApiError;
use crate::http::extract::bearer_token;
use crate::http::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route(routes::REVOCATIONS, get(follow))
}

fn event(e: FeedEvent) -> Event {
    Event::default().event(e.name()).data(e.data())
}

/// Whether `presented` is one of the configured verifier keys (compared by digest, so the time
/// taken says nothing about how much of a key matched).
fn known_key(state: &AppState, presented: &str) -> bool {
    let digest = |k: &str| ring::digest::digest(&ring::digest::SHA256, k.as_bytes());
    let presented = digest(presented);
    state.verifier_keys.iter().fold(false, |found, k| {
        found | cloakroom::secrets_equal(digest(k.expose()).as_ref(), presented.as_ref())
    })
}

async fn follow(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = bearer_token(&headers)?.ok_or_else(ApiError::invalid_token)?;
    if state.verifier_keys.is_empty() || !known_key(&state, key) {
        return Err(ApiError::invalid_token());
    }
    let (snapshot, rx) = state.auth.follow_revocations();
    let stop = state.stop.clone();
    let initial = stream::iter(snapshot.into_iter().map(|r| event(r.into())))
        .chain(stream::once(async { event(FeedEvent::Synced) }));
    let live = stream::unfold((rx, stop), |(mut rx, mut stop)| async move {
        let next = tokio::select! {
            got = rx.recv() => match got {
                Ok(r) => Some(event(r.into())),
                // Fell behind, or the engine is gone: end the stream; the verifier reconnects
                // and starts over with the whole list.
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => None,
            },
            // The server is shutting down: let the verifier reconnect elsewhere.
            _ = stop.wait_for(|s| *s) => None,
        };
        next.map(|e| (e, (rx, stop)))
    });
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(initial.chain(live).map(Ok));
    let mut res = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    *res.status_mut() = StatusCode::OK;
    Ok(res)
}
