//! Prometheus metrics: requests by route and status, logins by outcome, refresh reuse, the
//! hashing queue, live sessions, and how long revocations take to reach this instance.
//! `GET /metrics` serves them in the text exposition format; bind it privately.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::AppState;

/// Upper bounds (seconds) of the propagation histogram's buckets.
const BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Counters kept by the HTTP layer.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: DashMap<(&'static str, u16), AtomicU64, foldhash::fast::RandomState>,
    propagation_buckets: [AtomicU64; BUCKETS.len()],
    propagation_count: AtomicU64,
    propagation_sum_micros: AtomicU64,
    /// When a request last failed because the store could not take it (ms since the epoch).
    store_failed_ms: std::sync::atomic::AtomicI64,
    /// The outbox worker's deliveries.
    pub mail: std::sync::Arc<cloakroom::mail::MailMetrics>,
}

/// How long after a request failed for want of the store `/readyz` still says "not ready":
/// a probe may fit where real writes do not (a nearly full disk).
pub const STORE_FAILURE_MEMORY_MS: i64 = 10_000;

/// Marks an answer that failed because the store could not take the request (a response
/// extension, never sent).
#[derive(Debug, Clone, Copy)]
pub struct StoreFailed;

impl Metrics {
    /// Records how long a change took from its commit elsewhere to being applied here.
    pub fn observe_propagation(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.propagation_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.propagation_count.fetch_add(1, Relaxed);
        self.propagation_sum_micros
            .fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// Records that a request failed because the store could not take it, at `now_ms`.
    pub fn store_failed(&self, now_ms: i64) {
        self.store_failed_ms.fetch_max(now_ms, Relaxed);
    }

    /// Whether a request failed for want of the store in the last
    /// [`STORE_FAILURE_MEMORY_MS`] before `now_ms`.
    pub fn store_failing(&self, now_ms: i64) -> bool {
        let last = self.store_failed_ms.load(Relaxed);
        last > 0 && now_ms - last < STORE_FAILURE_MEMORY_MS
    }

    fn count_request(&self, route: &'static str, status: u16) {
        if let Some(c) = self.requests.get(&(route, status)) {
            c.fetch_add(1, Relaxed);
            return;
        }
        self.requests
            .entry((route, status))
            .or_default()
            .fetch_add(1, Relaxed);
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn wall_ms() -> i64 {
    cloakroom::Clock::unix_ms(&cloakroom::SystemClock)
}

pub use super::routes::route_of;

impl Metrics {
    /// Counts one answered request.
    pub fn count(&self, route: &'static str, status: u16) {
        self.count_request(route, status);
    }
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let auth = &state.auth;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cloakroom_http_requests_total Requests answered, by route and status."
    );
    let _ = writeln!(out, "# TYPE cloakroom_http_requests_total counter");
    let mut rows: Vec<_> = m
        .requests
        .iter()
        .map(|e| (e.key().0, e.key().1, e.value().load(Relaxed)))
        .collect();
    rows.sort();
    for (route, status, n) in rows {
        let _ = writeln!(
            out,
            "cloakroom_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let am = &auth.metrics;
    let _ = writeln!(
        out,
        "# HELP cloakroom_logins_total Password logins (cookie and token), by outcome."
    );
    let _ = writeln!(out, "# TYPE cloakroom_logins_total counter");
    for (outcome, c) in [
        ("success", &am.logins_ok),
        ("invalid_credentials", &am.logins_failed),
        ("throttled", &am.logins_throttled),
        ("overloaded", &am.logins_overloaded),
    ] {
        let _ = writeln!(
            out,
            "cloakroom_logins_total{{outcome=\"{outcome}\"}} {}",
            c.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP cloakroom_logins_throttled_total Logins held back by throttling."
    );
    let _ = writeln!(out, "# TYPE cloakroom_logins_throttled_total counter");
    let _ = writeln!(
        out,
        "cloakroom_logins_throttled_total {}",
        am.logins_throttled.load(Relaxed)
    );
    let _ = writeln!(out, "# HELP cloakroom_refresh_reuse_total Spent refresh tokens presented again (sessions ended).");
    let _ = writeln!(out, "# TYPE cloakroom_refresh_reuse_total counter");
    let _ = writeln!(
        out,
        "cloakroom_refresh_reuse_total {}",
        am.refresh_reuse.load(Relaxed)
    );
    let mail = &state.metrics.mail;
    let _ = writeln!(out, "# HELP cloakroom_mail_delivered_total Messages the mail relay took (or the log, without one).");
    let _ = writeln!(out, "# TYPE cloakroom_mail_delivered_total counter");
    let _ = writeln!(
        out,
        "cloakroom_mail_delivered_total {}",
        mail.delivered.load(Relaxed)
    );
    let _ = writeln!(out, "# HELP cloakroom_mail_failed_total Delivery attempts that failed (each is tried again later).");
    let _ = writeln!(out, "# TYPE cloakroom_mail_failed_total counter");
    let _ = writeln!(
        out,
        "cloakroom_mail_failed_total {}",
        mail.failed.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP cloakroom_hash_queue Password hashing jobs waiting or running."
    );
    let _ = writeln!(out, "# TYPE cloakroom_hash_queue gauge");
    let _ = writeln!(out, "cloakroom_hash_queue {}", auth.hasher().queued());
    let _ = writeln!(
        out,
        "# HELP cloakroom_live_sessions Sessions held in this instance's memory."
    );
    let _ = writeln!(out, "# TYPE cloakroom_live_sessions gauge");
    let _ = writeln!(out, "cloakroom_live_sessions {}", auth.live_sessions());
    let _ = writeln!(out, "# HELP cloakroom_revocation_propagation_seconds From a change committed by any instance to its application here.");
    let _ = writeln!(
        out,
        "# TYPE cloakroom_revocation_propagation_seconds histogram"
    );
    for (i, bound) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "cloakroom_revocation_propagation_seconds_bucket{{le=\"{bound}\"}} {}",
            m.propagation_buckets[i].load(Relaxed)
        );
    }
    let count = m.propagation_count.load(Relaxed);
    let _ = writeln!(
        out,
        "cloakroom_revocation_propagation_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "cloakroom_revocation_propagation_seconds_sum {}",
        m.propagation_sum_micros.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "cloakroom_revocation_propagation_seconds_count {count}"
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn labels_are_routes_or_other() {
        assert_eq!(route_of("/auth/whoami"), "/auth/whoami");
        assert_eq!(route_of("/auth/sessions/abc"), "/auth/sessions/{id}");
        assert_eq!(
            route_of("/settings/sessions/abc/end"),
            "/settings/sessions/{id}/end"
        );
        for other in [
            "/auth/whoami/",
            "/auth/sessions/",
            "/auth/sessions/a/b",
            "/settings/sessions//end",
            "/settings/sessions/a/b/end",
            "/nope",
            "",
        ] {
            assert_eq!(route_of(other), "other", "{other}");
        }
    }
}
