//! Passwords: the policy a new password must meet ([`PasswordPolicy`]) and Argon2id hashing on a
//! bounded pool of threads ([`PasswordHasher`]).
//!
//! Passwords are normalised with Unicode NFKC (NIST SP 800-63B §5.1.1.2), so the composed and
//! decomposed forms of `mañana` are one password and compatibility forms (full-width letters,
//! ligatures) merge with their plain forms. Nothing is trimmed or truncated. Hashing runs on a
//! fixed number of threads with a bounded queue: when the queue is full the caller gets
//! [`PasswordError::Overloaded`] at once (the server answers 503 with `Retry-After`) instead of
//! piling up work that would stall everything else.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use unicode_normalization::UnicodeNormalization;

/// The longest password accepted, in bytes after NFKC normalisation.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The shortest password accepted, in characters after NFKC normalisation.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The most common passwords of 8 or more characters (from the zxcvbn project's frequency list,
/// MIT licence), refused at signup and password change (ASVS 5.0 6.2.4).
static COMMON: &str = include_str!("../data/common-passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().filter(|l| !l.is_empty()).collect())
}

/// Why a new password was refused; the message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    /// Fewer than 8 characters.
    #[error("the password must have at least 8 characters")]
    TooShort,
    /// More than 1024 bytes.
    #[error("the password must be at most 1024 bytes long")]
    TooLong,
    /// On the list of the most common passwords.
    #[error("this password is one of the most commonly used ones; choose another")]
    Common,
    /// The same as the email address or its name part.
    #[error("the password must not be your email address")]
    SameAsEmail,
}

/// The rules a new password must meet. No composition rules (ASVS 5.0 6.2.5).
#[derive(Debug, Clone, Copy, Default)]
pub struct PasswordPolicy;

impl PasswordPolicy {
    /// NFKC-normalises a password; this is the form that is hashed.
    pub fn normalize(raw: &str) -> String {
        raw.nfkc().collect()
    }

    /// Whether a password given at login can be hashed at all; longer ones are refused without
    /// hashing, for known and unknown accounts alike.
    pub fn acceptable_at_login(normalized: &str) -> bool {
        !normalized.is_empty() && normalized.len() <= MAX_PASSWORD_BYTES
    }

    /// Checks a new (already normalised) password.
    pub fn check_new(&self, normalized: &str, email: &str) -> Result<(), WeakPassword> {
        if normalized.len() > MAX_PASSWORD_BYTES {
            return Err(WeakPassword::TooLong);
        }
        if normalized.chars().count() < MIN_PASSWORD_CHARS {
            return Err(WeakPassword::TooShort);
        }
        let lower = normalized.to_lowercase();
        if common_passwords().contains(lower.as_str()) {
            return Err(WeakPassword::Common);
        }
        let local = email.split('@').next().unwrap_or(email);
        if lower == email.to_lowercase() || lower == local.to_lowercase() {
            return Err(WeakPassword::SameAsEmail);
        }
        Ok(())
    }
}

/// Argon2id cost. The default is OWASP's minimum: m = 19 MiB, t = 2, p = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Config {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Errors from hashing.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every hashing thread is busy and the queue is full; try again shortly.
    #[error("password hashing is overloaded")]
    Overloaded,
    /// The Argon2 parameters are invalid.
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed, or a stored hash could not be parsed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Argon2id hashing and verification on a fixed pool of threads with a bounded queue.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon: Argon2<'static>,
    config: Argon2Config,
    queue: SyncSender<Job>,
    queued: AtomicUsize,
    threads: usize,
    dummy_hash: String,
    starvation: Arc<Starvation>,
}

/// How long queued hashing may go without finishing a job before the idle-priority threads are
/// lifted to normal priority for one job each: under a flood that keeps the CPU busy, idle
/// threads would otherwise get no time at all and every login would fail.
const STARVED: std::time::Duration = std::time::Duration::from_millis(250);

/// What the starvation watch and the hashing threads share.
#[derive(Default)]
struct Starvation {
    /// When a job last finished, in ms since the watch started.
    last_done_ms: std::sync::atomic::AtomicU64,
    /// How many times the threads were lifted; a thread that sees a new count after a job
    /// goes back to idle priority.
    lifts: std::sync::atomic::AtomicU64,
    /// The hashing threads, by their native ids.
    #[cfg(target_os = "linux")]
    threads: Mutex<Vec<thread_priority::ThreadId>>,
    started: std::sync::OnceLock<std::time::Instant>,
}

impl Starvation {
    fn now_ms(&self) -> u64 {
        let start = self.started.get_or_init(std::time::Instant::now);
        start.elapsed().as_millis() as u64
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("config", &self.inner.config)
            .field("threads", &self.inner.threads)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Starts `threads` hashing threads that take work from a queue of at most `queue` jobs.
    /// On Linux they run at the lowest scheduling priority (`SCHED_IDLE`), so a flood of logins
    /// takes only the CPU time that requests do not need: session checks keep their latency,
    /// and when the CPU is saturated logins queue and then get 503 instead.
    pub fn new(config: Argon2Config, threads: usize, queue: usize) -> Result<Self, PasswordError> {
        Self::with_priority(config, threads, queue, true)
    }

    /// Like [`PasswordHasher::new`]; `idle`: run the threads at `SCHED_IDLE` (Linux) or at normal
    /// priority. Tests that time logins while many servers share the CPU use normal priority.
    pub fn with_priority(
        config: Argon2Config,
        threads: usize,
        queue: usize,
        idle: bool,
    ) -> Result<Self, PasswordError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let starvation = Arc::new(Starvation::default());
        starvation.now_ms();
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let starvation = Arc::clone(&starvation);
            std::thread::Builder::new()
                .name(format!("cloakroom-hash-{i}"))
                .spawn(move || {
                    if idle {
                        #[cfg(target_os = "linux")]
                        starvation
                            .threads
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(thread_priority::thread_native_id());
                        lowest_priority();
                    }
                    worker(&rx, &starvation, idle)
                })
                .map_err(|e| PasswordError::Hash(e.to_string()))?;
        }
        // A hash of a random password, verified against for unknown accounts so that they take
        // exactly as long as known ones.
        let mut random = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut random);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon
            .hash_password(&random, &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        let inner = Arc::new(Inner {
            argon,
            config,
            queue: tx,
            queued: AtomicUsize::new(0),
            threads,
            dummy_hash,
            starvation,
        });
        if idle {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("cloakroom-hash-watch".into())
                .spawn(move || watch_starvation(&weak))
                .map_err(|e| PasswordError::Hash(e.to_string()))?;
        }
        Ok(Self { inner })
    }

    /// The configured cost.
    pub fn config(&self) -> Argon2Config {
        self.inner.config
    }

    /// How many hashing jobs are waiting or running now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Hashes a normalised password into a PHC string.
    pub async fn hash(&self, normalized: String) -> Result<String, PasswordError> {
        let inner = Arc::clone(&self.inner);
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            inner
                .argon
                .hash_password(normalized.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hash(e.to_string()))
        })
        .await?
    }

    /// Verifies a normalised password against a stored PHC string, or against a dummy hash of
    /// the same cost when there is none (unknown account), so both take the same time.
    /// Returns whether it matched and whether the stored hash should be upgraded.
    pub async fn verify(
        &self,
        normalized: String,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let inner = Arc::clone(&self.inner);
        self.run(move || {
            let is_real = stored.is_some();
            let phc = stored.unwrap_or_else(|| inner.dummy_hash.clone());
            let parsed = PasswordHash::new(&phc).map_err(|e| PasswordError::Hash(e.to_string()))?;
            let matched = inner
                .argon
                .verify_password(normalized.as_bytes(), &parsed)
                .is_ok();
            Ok(Verified {
                matched: matched && is_real,
                needs_rehash: is_real && needs_rehash(&parsed, inner.config),
            })
        })
        .await?
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PasswordError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let job: Job = Box::new(move || {
            let result = f();
            // Counted out before the answer goes back, so whoever got it sees the queue without it.
            inner.queued.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(result);
        });
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        match self.inner.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.inner.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(PasswordError::Overloaded);
            }
        }
        rx.await
            .map_err(|_| PasswordError::Hash("hashing thread stopped".into()))
    }
}

/// The outcome of [`PasswordHasher::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The password matched a real stored hash.
    pub matched: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

fn needs_rehash(hash: &PasswordHash<'_>, want: Argon2Config) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return true;
    }
    match Params::try_from(hash) {
        Ok(p) => {
            p.m_cost() != want.memory_kib
                || p.t_cost() != want.iterations
                || p.p_cost() != want.parallelism
        }
        Err(_) => true,
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, starvation: &Starvation, idle: bool) {
    let mut lifts_seen = 0;
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|e| e.into_inner());
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
        starvation
            .last_done_ms
            .store(starvation.now_ms(), Ordering::Relaxed);
        let lifts = starvation.lifts.load(Ordering::Acquire);
        if idle && lifts != lifts_seen {
            // Lifted for one job: back to idle.
            lifts_seen = lifts;
            lowest_priority();
        }
    }
}

/// Runs at normal priority, wakes every 100 ms, and lifts the hashing threads to normal
/// priority for one job each when jobs are waiting and none finished for [`STARVED`]: a
/// guaranteed minimum share of the CPU for logins under a flood that leaves no idle time. When
/// the CPU has idle time, jobs finish and nothing is lifted, so request latency keeps its
/// priority over hashing. Ends with the hasher.
fn watch_starvation(inner: &std::sync::Weak<Inner>) {
    loop {
        // A thread of its own, outside the async runtime: sleeping blocks nothing else.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let s = &inner.starvation;
        let now = s.now_ms();
        let waiting = inner.queued.load(Ordering::Relaxed) > 0;
        if waiting
            && now.saturating_sub(s.last_done_ms.load(Ordering::Relaxed))
                >= STARVED.as_millis() as u64
        {
            s.lifts.fetch_add(1, Ordering::AcqRel);
            s.last_done_ms.store(now, Ordering::Relaxed);
            lift(s);
        }
    }
}

/// Moves every hashing thread to normal priority (until each has finished one job).
fn lift(_s: &Starvation) {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        let normal = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        for id in _s.threads.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Err(e) = set_thread_priority_and_policy(*id, ThreadPriority::Min, normal) {
                tracing::warn!(error = ?e, "cannot lift a starved hashing thread");
            }
        }
    }
}

/// Moves the calling thread to `SCHED_IDLE` (Linux), the lowest scheduling priority. The crate
/// `thread-priority` wraps the system call, so this crate stays free of `unsafe`.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) =
            set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
        {
            tracing::warn!(error = ?e, "hashing threads keep normal priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fault run: a flood that keeps every core busy leaves idle-priority threads no time at
    /// all; the starvation watch lifts them for one job at a time, so logins still complete.
    #[cfg(target_os = "linux")]
    #[test]
    fn hashing_at_idle_priority_still_progresses_when_the_cpu_is_saturated() {
        let config = Argon2Config {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
        };
        let hasher =
            PasswordHasher::with_priority(config, 1, 16, true).unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let spinners: Vec<_> = (0..cores * 2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    x
                })
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let start = std::time::Instant::now();
        let done = rt.block_on(async {
            let jobs = (0..4).map(|i| hasher.hash(format!("password number {i}")));
            futures_util::future::join_all(jobs).await
        });
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        for s in spinners {
            let _ = s.join();
        }
        assert!(done.iter().all(Result::is_ok));
        // Without the watch, these 4 hashes took 30 s here (an idle thread gets almost nothing);
        // with it about 1 s. The bound leaves room for a machine busy with other tests.
        assert!(
            took < std::time::Duration::from_secs(15),
            "4 hashes took {took:?} under a saturated CPU"
        );
    }

    fn cheap() -> Argon2Config {
        Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn l6_nfc_and_nfd_forms_are_one_password() {
        let nfc = PasswordPolicy::normalize("ma\u{f1}ana-secret");
        let nfd = PasswordPolicy::normalize("man\u{303}ana-secret");
        assert_eq!(nfc, nfd);
        // NUL is data, not a terminator.
        assert_ne!(PasswordPolicy::normalize("abc\0def"), "abc");
    }

    #[test]
    fn policy_refuses_short_long_common_and_email() {
        let p = PasswordPolicy;
        assert_eq!(p.check_new("short", "a@b.c"), Err(WeakPassword::TooShort));
        assert_eq!(
            p.check_new(&"x".repeat(1025), "a@b.c"),
            Err(WeakPassword::TooLong)
        );
        assert!(p.check_new(&"x".repeat(1024), "a@b.c").is_ok());
        assert_eq!(p.check_new("password", "a@b.c"), Err(WeakPassword::Common));
        assert_eq!(p.check_new("PassWord1", "a@b.c"), Err(WeakPassword::Common));
        assert_eq!(
            p.check_new("ada.lovelace", "ada.lovelace@example.com"),
            Err(WeakPassword::SameAsEmail)
        );
        // Twelve emoji are a fine password.
        assert!(p.check_new(&"\u{1F600}".repeat(12), "a@b.c").is_ok());
        assert!(p.check_new("correct horse battery staple", "a@b.c").is_ok());
    }

    #[tokio::test]
    async fn hash_verify_and_rehash() {
        let h = PasswordHasher::new(cheap(), 1, 4).unwrap_or_else(|e| panic!("{e}"));
        let phc = h
            .hash("open sesame 42".into())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let ok = h.verify("open sesame 42".into(), Some(phc.clone())).await;
        assert_eq!(
            ok.ok(),
            Some(Verified {
                matched: true,
                needs_rehash: false
            })
        );
        let bad = h.verify("open sesame 43".into(), Some(phc.clone())).await;
        assert_eq!(bad.ok().map(|v| v.matched), Some(false));
        let none = h.verify("open sesame 42".into(), None).await;
        assert_eq!(none.ok().map(|v| v.matched), Some(false));
        let stronger = PasswordHasher::new(
            Argon2Config {
                memory_kib: 128,
                ..cheap()
            },
            1,
            4,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = stronger.verify("open sesame 42".into(), Some(phc)).await;
        assert_eq!(
            v.ok(),
            Some(Verified {
                matched: true,
                needs_rehash: true
            })
        );
    }

    #[tokio::test]
    async fn l5_full_queue_is_refused_not_queued() {
        let h = PasswordHasher::new(
            Argon2Config {
                memory_kib: 4096,
                iterations: 3,
                parallelism: 1,
            },
            1,
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let jobs: Vec<_> = (0..20)
            .map(|i| h.hash(format!("password number {i}")))
            .collect();
        let results = futures_join_all(jobs).await;
        let overloaded = results
            .iter()
            .filter(|r| matches!(r, Err(PasswordError::Overloaded)))
            .count();
        assert!(overloaded > 0, "a saturated pool must refuse work");
        assert!(results.iter().any(|r| r.is_ok()));
    }

    async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
        // Poll every future once so all of them try to enqueue before any finishes.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut done: Vec<Option<F::Output>> = pinned
            .iter_mut()
            .map(|f| match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
            .collect();
        for (i, f) in pinned.into_iter().enumerate() {
            match done[i].take() {
                Some(v) => out.push(v),
                None => out.push(f.await),
            }
        }
        out
    }
}
