//! The outbox's worker: leases due messages, hands them to the [`Mailer`], deletes the
//! delivered ones and puts the others back with a later time (back-off: 10 s, doubling, at
//! most an hour). A lease lasts a minute: a worker that dies holding one (a crash, a kill)
//! leaves its messages to be delivered by the next one after that.

use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use time::Duration;
use tokio::sync::{watch, Notify};

use super::Mailer;
use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// How long a leased message is the leaseholder's alone.
const LEASE: Duration = Duration::minutes(1);
/// Messages leased at a time.
const BATCH: usize = 32;
/// Messages handed to the relay at once, each on a connection of its own from the mailer's
/// pool: a send waits on the relay's answers (and lettre's writes on TCP acknowledgements), so
/// throughput comes from sends in flight, not from a busy worker.
pub const PARALLEL: usize = 32;
/// How often the worker looks when nobody wakes it.
const POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MailMetrics {
    /// Messages the relay took.
    pub delivered: AtomicU64,
    /// Attempts that failed (each will be tried again).
    pub failed: AtomicU64,
}

/// The delay before attempt `attempts + 1`, after `attempts` failed.
fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.clamp(1, 10) - 1).unwrap_or(0);
    (Duration::seconds(10) * 2_i32.pow(doublings)).min(Duration::hours(1))
}

/// Delivers the outbox.
pub struct MailWorker {
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    metrics: Arc<MailMetrics>,
    wake: Arc<Notify>,
}

impl MailWorker {
    /// A worker over `store`'s outbox, sending with `mailer`; `wake` starts a round at once
    /// (after a message was queued) instead of at its next look.
    pub fn new(
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
        clock: Arc<dyn Clock>,
        metrics: Arc<MailMetrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            mailer,
            clock,
            metrics,
            wake,
        }
    }

    /// One round: leases the due messages, delivers them, and says how many were delivered.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_secs();
        let leased = self.store.claim_mail(now, now + LEASE, BATCH).await?;
        let sends = leased.into_iter().map(|queued| async move {
            let sent = self.mailer.send(&queued.mail).await;
            (queued, sent)
        });
        let mut results = futures_util::stream::iter(sends).buffer_unordered(PARALLEL);
        let mut delivered = 0;
        while let Some((queued, sent)) = results.next().await {
            match sent {
                Ok(()) => {
                    self.store.mail_delivered(&queued.mail.id).await?;
                    self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                    delivered += 1;
                }
                Err(e) => {
                    self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                    let retry = self.clock.now_secs() + backoff(queued.attempts);
                    tracing::warn!(
                        message_id = %queued.mail.id,
                        attempts = queued.attempts,
                        error = %e,
                        "mail not delivered; it will be tried again"
                    );
                    self.store
                        .mail_failed(&queued.mail.id, retry, &e.to_string())
                        .await?;
                }
            }
        }
        Ok(delivered)
    }

    /// Delivers until `stop` turns true: at once when woken, else every second; a full batch
    /// is followed by the next one straight away.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let full = match self.deliver_due().await {
                Ok(n) => n == BATCH,
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox cannot be read");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_ten_seconds_to_an_hour() {
        assert_eq!(backoff(1), Duration::seconds(10));
        assert_eq!(backoff(2), Duration::seconds(20));
        assert_eq!(backoff(5), Duration::seconds(160));
        assert_eq!(backoff(50), Duration::hours(1));
    }
}
