//! The engine's upkeep: what keeps this instance's memory and the store in step while it serves.
//! The server and apps that embed the engine start it the same way, with
//! [`Auth::spawn_maintenance`]:
//!
//! - the change log (revocations, password changes, disabled users and role changes made by
//!   other instances or the CLI) is read when the store pushes a notification, and every
//!   [`CHANGE_POLL`] in any case;
//! - revocations pushed by Redis are applied by a task of their own, so that they never wait
//!   behind a slow or hung database call;
//! - last-seen times are written every [`ACTIVITY_FLUSH`];
//! - signing keys are reread every [`KEY_RELOAD`] (a `keys rotate` from the CLI shows up within
//!   it), and expired sessions swept every [`SWEEP`].

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Auth, RevocationEvent};

/// How often the change log is read when nothing pushes notifications (SQLite; CLI revocations
/// show up within this, plus a query). PostgreSQL notifies at once and this is the safety net.
pub const CHANGE_POLL: Duration = Duration::from_millis(250);
/// How often last-seen times are written to the store.
pub const ACTIVITY_FLUSH: Duration = Duration::from_secs(5);
/// How often signing keys are reread.
pub const KEY_RELOAD: Duration = Duration::from_secs(2);
/// How often expired sessions are swept.
pub const SWEEP: Duration = Duration::from_secs(60);

/// Called with the sender's wall-clock time (Unix milliseconds) of each pushed change or
/// revocation once it is applied: the server turns it into its propagation-delay histogram.
pub type OnPropagated = Arc<dyn Fn(i64) + Send + Sync>;

/// The running upkeep of one engine; see [`Auth::spawn_maintenance`].
#[derive(Debug)]
pub struct Maintenance {
    auth: Arc<Auth>,
    task: JoinHandle<()>,
}

impl Maintenance {
    /// Waits for the upkeep to stop (after its stop signal turned true), then writes the
    /// activity still in memory. Call it after the last request was answered.
    pub async fn finish(self) {
        let _ = self.task.await;
        if let Err(e) = self.auth.flush_activity().await {
            tracing::warn!(error = %e, "could not write the last activity");
        }
    }
}

impl Auth {
    /// Starts the engine's upkeep (see [`crate::maintenance`]) until `stop` turns true.
    pub fn spawn_maintenance(self: &Arc<Self>, stop: watch::Receiver<bool>) -> Maintenance {
        self.spawn_maintenance_observed(stop, None)
    }

    /// [`Auth::spawn_maintenance`], telling `on_propagated` when each pushed change arrives.
    pub fn spawn_maintenance_observed(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
        on_propagated: Option<OnPropagated>,
    ) -> Maintenance {
        Maintenance {
            auth: Arc::clone(self),
            task: tokio::spawn(upkeep(Arc::clone(self), on_propagated, stop)),
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Applies each revocation event the store pushes, until told to stop or the feed ends.
async fn apply_revocations(
    auth: Arc<Auth>,
    on_propagated: Option<OnPropagated>,
    mut events: tokio::sync::mpsc::Receiver<RevocationEvent>,
    stop: watch::Receiver<bool>,
) {
    let mut stop_signal = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if let (RevocationEvent::Revoked { sent_ms: Some(sent_ms), .. }, Some(f)) =
                        (&event, &on_propagated)
                    {
                        f(*sent_ms);
                    }
                    auth.apply_revocation(event);
                }
                None => return,
            },
            _ = &mut stop_signal => return,
        }
    }
}

async fn upkeep(auth: Arc<Auth>, on_propagated: Option<OnPropagated>, stop: watch::Receiver<bool>) {
    let mut changes = tokio::time::interval(CHANGE_POLL);
    let mut flush = tokio::time::interval(ACTIVITY_FLUSH);
    let mut sweep = tokio::time::interval(SWEEP);
    let mut keys = tokio::time::interval(KEY_RELOAD);
    for i in [&mut changes, &mut flush, &mut sweep, &mut keys] {
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut pushed = match auth.watch_changes().await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(error = %e, "no change notifications; polling only");
            None
        }
    };
    match auth.revocation_events().await {
        Ok(Some(rx)) => {
            tokio::spawn(apply_revocations(
                Arc::clone(&auth),
                on_propagated.clone(),
                rx,
                stop.clone(),
            ));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "no revocation feed"),
    }
    let mut stop_signal = std::pin::pin!(stopped(stop));
    loop {
        let notified = async {
            match pushed.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = notified => {
                match auth.apply_changes().await {
                    Ok(_) => {
                        if let (Some(Some(sent_ms)), Some(f)) = (signal, &on_propagated) {
                            f(sent_ms);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the change log failed"),
                }
                if signal.is_none() {
                    pushed = None;
                }
            }
            _ = changes.tick() => {
                if let Err(e) = auth.apply_changes().await {
                    tracing::warn!(error = %e, "reading the change log failed");
                }
            }
            _ = flush.tick() => {
                if let Err(e) = auth.flush_activity().await {
                    tracing::warn!(error = %e, "writing activity failed");
                }
            }
            _ = sweep.tick() => {
                match auth.sweep().await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "expired sessions swept"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeping failed"),
                }
            }
            _ = keys.tick() => {
                if let Err(e) = auth.reload_keys().await {
                    tracing::warn!(error = %e, "reloading signing keys failed");
                }
            }
            _ = &mut stop_signal => return,
        }
    }
}
