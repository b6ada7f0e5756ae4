//! The outbox against a local SMTP server (aiosmtpd, discarding what it gets), in one process:
//! how fast the worker delivers a queue, and what a backlog of 100 000 messages costs a request
//! that queues one more (a signup's write) and a worker's lease, against the same with an empty
//! outbox, the process's memory before and after the backlog, and a signup's latency while the
//! worker delivers against the same with no worker.
//! Run: `taskset -c 0 cargo run --release -p cloakroom-bench --bin mail` (aiosmtpd runs as its
//! own process, outside the pin). Needs `python3 -m pip install aiosmtpd`.

use cloakroom::mail::{MailMetrics, MailWorker, OutgoingMail, SmtpMailer};
use cloakroom::{Auth, AuthConfig, Clock, SqliteStore, Store, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const DELIVERED: usize = 3_000;
const BACKLOG: usize = 100_000;
const SAMPLES: u32 = 500;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn message(i: usize, at: OffsetDateTime) -> OutgoingMail {
    OutgoingMail {
        id: format!("bench-{i}-{}", at.unix_timestamp_nanos()),
        to: format!("user{i}@example.test"),
        subject: "Confirm your email address".into(),
        text: "Open https://auth.example.test/verify-email?token=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
        html: "<p><a href=\"https://auth.example.test/verify-email?token=abc\">confirm</a></p>".into(),
        queued_at: at,
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Mean time of `n` calls of `f`.
async fn mean<F, Fut>(n: u32, mut f: F) -> Result<Duration, String>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    for i in 0..n {
        f(i).await?;
    }
    Ok(start.elapsed() / n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(err)?
        .port();
    let mut smtp = std::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Sink"])
        .spawn()
        .map_err(|e| format!("aiosmtpd: {e}"))?;
    let outcome = run(port).await;
    let _ = smtp.kill();
    let _ = smtp.wait();
    outcome
}

async fn run(port: u16) -> Result<(), String> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = std::env::temp_dir().join(format!("cloakroom-mail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.map_err(err)?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mailer = SmtpMailer::new(
        &format!("smtp://127.0.0.1:{port}?tls=none"),
        None,
        "bench <bench@example.test>",
    )
    .map_err(err)?;
    let metrics = Arc::new(MailMetrics::default());
    let worker = MailWorker::new(
        Arc::clone(&store),
        Arc::new(mailer),
        Arc::clone(&clock),
        Arc::clone(&metrics),
        Default::default(),
    );

    // Queueing one message with an empty outbox, and delivery of a queue.
    let enqueue_empty = mean(SAMPLES, |i| {
        let store = Arc::clone(&store);
        let m = message(i as usize, clock.now_secs());
        async move {
            store.enqueue_mail(&m).await.map_err(err)?;
            store.mail_delivered(&m.id).await.map_err(err)
        }
    })
    .await?;
    let lease_empty = mean(SAMPLES, |_| {
        let store = Arc::clone(&store);
        let now = clock.now_secs();
        async move {
            store
                .claim_mail(now, now + time::Duration::minutes(1), 32)
                .await
                .map(|_| ())
                .map_err(err)
        }
    })
    .await?;
    for i in 0..DELIVERED {
        store
            .enqueue_mail(&message(i, clock.now_secs()))
            .await
            .map_err(err)?;
    }
    let start = Instant::now();
    while worker.deliver_due().await.map_err(err)? > 0 {}
    let took = start.elapsed();
    let rate = DELIVERED as f64 / took.as_secs_f64();

    // A backlog: queued, not due for a day (a relay that is down).
    let rss_before = rss_kib();
    let later = clock.now_secs() + time::Duration::days(1);
    for i in 0..BACKLOG {
        store
            .enqueue_mail(&message(DELIVERED + i, later))
            .await
            .map_err(err)?;
    }
    let enqueue_backlog = mean(SAMPLES, |i| {
        let store = Arc::clone(&store);
        let m = message(10_000_000 + i as usize, clock.now_secs());
        async move {
            store.enqueue_mail(&m).await.map_err(err)?;
            store.mail_delivered(&m.id).await.map_err(err)
        }
    })
    .await?;
    let lease_backlog = mean(SAMPLES, |_| {
        let store = Arc::clone(&store);
        let now = clock.now_secs();
        async move {
            store
                .claim_mail(now, now + time::Duration::minutes(1), 32)
                .await
                .map(|_| ())
                .map_err(err)
        }
    })
    .await?;
    let rss_after = rss_kib();
    let backlog = store.mail_backlog().await.map_err(err)?;

    println!(
        "delivered {DELIVERED} messages to aiosmtpd in {:.2} s: {rate:.0} messages/s ({} delivered, {} failed)",
        took.as_secs_f64(),
        metrics.delivered.load(std::sync::atomic::Ordering::Relaxed),
        metrics.failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "queue one message and take it out: {:.1} µs empty, {:.1} µs with {backlog} waiting ({:.2}×)",
        enqueue_empty.as_secs_f64() * 1e6,
        enqueue_backlog.as_secs_f64() * 1e6,
        enqueue_backlog.as_secs_f64() / enqueue_empty.as_secs_f64()
    );
    println!(
        "a worker's lease of due mail: {:.1} µs empty, {:.1} µs with the backlog ({:.2}×)",
        lease_empty.as_secs_f64() * 1e6,
        lease_backlog.as_secs_f64() * 1e6,
        lease_backlog.as_secs_f64() / lease_empty.as_secs_f64()
    );
    println!(
        "resident memory: {rss_before} KiB before the backlog was queued, {rss_after} KiB after it and the leases"
    );
    let outcome = signups(port, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Signups through the engine, with its default password hashing, each queueing its
/// confirmation link: in alternating rounds with the outbox's worker delivering them over SMTP
/// as they come (on the same pinned core), and with no worker at all.
async fn signups(port: u16, dir: &std::path::Path) -> Result<(), String> {
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 25;
    let url = format!("sqlite://{}?mode=rwc", dir.join("signups.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.map_err(err)?);
    let config = AuthConfig {
        signup_limit: u32::MAX,
        ..AuthConfig::default()
    };
    let auth = Auth::new(store, config, Arc::new(SystemClock))
        .await
        .map_err(err)?;
    let mailer: Arc<dyn cloakroom::mail::Mailer> = Arc::new(
        SmtpMailer::new(
            &format!("smtp://127.0.0.1:{port}?tls=none"),
            None,
            "bench <bench@example.test>",
        )
        .map_err(err)?,
    );
    let metrics = Arc::new(MailMetrics::default());
    let (mut quiet, mut mailing) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let with_worker = round % 2 == 1;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = with_worker.then(|| {
            tokio::spawn(
                auth.mail_worker(Arc::clone(&mailer), Arc::clone(&metrics))
                    .run(stopped),
            )
        });
        for i in 0..PER_ROUND {
            let email = format!("signup{round}-{i}@example.test");
            let start = Instant::now();
            auth.signup(
                &email,
                "a bench password of some length",
                &cloakroom::ClientInfo::default(),
            )
            .await
            .map_err(err)?;
            let took = start.elapsed();
            if with_worker {
                mailing.push(took);
            } else {
                quiet.push(took);
            }
        }
        let _ = stop.send(true);
        if let Some(worker) = worker {
            let _ = worker.await;
        }
    }
    let (quiet, mailing) = (median(quiet), median(mailing));
    println!(
        "signup (default Argon2), median of {}: {:.2} ms with no mail worker, {:.2} ms while the worker delivers over SMTP ({:.2}×; {} delivered)",
        ROUNDS / 2 * PER_ROUND,
        quiet.as_secs_f64() * 1e3,
        mailing.as_secs_f64() * 1e3,
        mailing.as_secs_f64() / quiet.as_secs_f64(),
        metrics.delivered.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}
