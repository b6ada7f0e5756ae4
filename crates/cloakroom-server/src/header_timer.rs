//! The timer behind hyper's header-read timeout (the slowloris defence), one per connection.
//!
//! hyper asks its timer for a new sleep at the start of every request head and drops it when
//! the head is in. With `hyper_util`'s `TokioTimer` that is a tokio timer entry made, registered
//! and removed again for every request, which measured about 5 % of the throughput of a whole
//! `whoami` request. Here each connection keeps one tokio sleep, and every request head only
//! moves its deadline: tokio makes a later deadline cheap (the entry stays in the wheel and is
//! moved when it comes due), so nothing is registered or removed per request.

use hyper::rt::{Sleep, Timer};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A [`Timer`] for one connection.
#[derive(Clone)]
pub struct ConnectionTimer {
    shared: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
}

impl ConnectionTimer {
    /// A timer with nothing scheduled.
    pub fn new() -> Self {
        // Not registered with the runtime until first polled.
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        Self {
            shared: Arc::new(Mutex::new(Box::pin(tokio::time::sleep_until(far)))),
        }
    }
}

impl Default for ConnectionTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(ConnectionSleep {
            shared: Arc::clone(&self.shared),
            deadline,
        })
    }
}

/// One deadline on the connection's sleep; ready once the deadline has passed.
struct ConnectionSleep {
    shared: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
    deadline: Instant,
}

impl Future for ConnectionSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut sleep = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = tokio::time::Instant::from_std(self.deadline);
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        // Ready only when this deadline (not an older one) has passed; otherwise the shared
        // sleep is registered and wakes this task.
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) if Instant::now() >= self.deadline => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

impl Sleep for ConnectionSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_deadline_fires_at_its_time_and_not_before() {
        let ms = Duration::from_millis;
        let timer = ConnectionTimer::new();
        let start = Instant::now();
        // A first head that completes in time: its sleep is polled, then dropped unfired.
        let mut first = timer.sleep(ms(300));
        assert!(futures_poll_once(first.as_mut()).await.is_pending());
        tokio::time::sleep(ms(100)).await;
        drop(first);
        // The next head's deadline is later; the wait ends there, not at the first one.
        timer.sleep(ms(300)).await;
        let waited = start.elapsed();
        assert!(waited >= ms(400), "{waited:?}");
        assert!(waited < ms(700), "{waited:?}");
        // An earlier deadline after a later one still fires on time.
        let later = timer.sleep(ms(5_000));
        let t = Instant::now();
        timer.sleep(ms(20)).await;
        assert!(t.elapsed() < ms(300), "{:?}", t.elapsed());
        drop(later);
    }

    async fn futures_poll_once(mut sleep: Pin<&mut (dyn Sleep + 'static)>) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await
    }
}
