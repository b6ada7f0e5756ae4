//! Building the application from settings and serving it: the store, the engine, the router,
//! the background tasks that keep memory and store in step, and graceful shutdown.

use cloakroom::{Auth, Clock, PostgresStore, RedisStore, SqliteStore, Store, Throttle};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::header_timer::ConnectionTimer;
use crate::http::metrics::{wall_ms, Metrics};
use crate::http::{self, AppState, StateInner};
use crate::settings::Settings;

/// How often the change log is read when nothing pushes notifications (SQLite; CLI revocations
/// show up within this, plus a query). PostgreSQL notifies at once and this is the safety net.
pub const CHANGE_POLL: Duration = Duration::from_millis(250);
/// How often last-seen times are written to the store.
pub const ACTIVITY_FLUSH: Duration = Duration::from_secs(5);
/// How often signing keys are reread (a `keys rotate` from the CLI shows up within this).
pub const KEY_RELOAD: Duration = Duration::from_secs(2);
/// How often expired sessions are swept.
pub const SWEEP: Duration = Duration::from_secs(60);
/// Longest wait for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Failures while starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be made.
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    /// The data directory cannot be written (SQLite needs to write its file and journal).
    #[error("the data directory {0} is not writable ({1}); give the server write access to it, or choose another with --data-dir")]
    ReadOnly(String, std::io::Error),
    /// The key-encryption keys could not be read or made.
    #[error("key-encryption keys: {0}")]
    Secrets(String),
    /// The store could not be opened.
    #[error("cannot open the database: {}", with_causes(.0))]
    Store(#[from] cloakroom::StoreError),
    /// The engine could not start.
    #[error("cannot start: {0}")]
    Auth(#[from] cloakroom::AuthError),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// An error followed by what caused it, as one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// Opens the stores the settings name: the database, and Redis in front of it for sessions and
/// throttle counters when configured.
pub async fn open_stores(
    settings: &Settings,
) -> Result<(Arc<dyn Store>, Option<Arc<dyn Throttle>>), StartError> {
    let sql = open_store(settings).await?;
    match &settings.redis_url {
        None => Ok((sql, None)),
        Some(url) => {
            let redis = RedisStore::open(
                url.expose(),
                &settings.redis_prefix,
                sql,
                settings.auth.idle_grace,
            )
            .await?;
            let throttle = Arc::new(redis.throttle());
            Ok((Arc::new(redis), Some(throttle)))
        }
    }
}

/// Opens the database the settings name, creating the data directory for an SQLite file.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    let url = settings.database_url.expose();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::open(url).await?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
                // Said plainly here: SQLite's own word for it is "unable to open database file".
                let probe = dir.join(format!(".cloakroom-write-test-{}", std::process::id()));
                std::fs::write(&probe, b"")
                    .map_err(|e| StartError::ReadOnly(dir.display().to_string(), e))?;
                let _ = std::fs::remove_file(&probe);
            }
        }
    }
    Ok(Arc::new(SqliteStore::open(url).await?))
}

/// The engine on the configured store, as served on `port`.
pub async fn engine(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    port: u16,
) -> Result<Arc<Auth>, StartError> {
    let mut config = settings.auth_config(port);
    config.sealing = settings
        .secrets
        .load()
        .map_err(StartError::Secrets)?
        .map(Arc::new);
    if config.sealing.is_none() {
        tracing::warn!(
            "signing keys are stored in clear in the database: set --secrets-key-file or \
             CLOAKROOM_SECRETS_KEY (the same on every instance) to seal them"
        );
    }
    let auth = match open_stores(settings).await? {
        (store, None) => Auth::new(store, config, clock).await?,
        (store, Some(throttle)) => Auth::with_throttle(store, throttle, config, clock).await?,
    };
    Ok(Arc::new(auth))
}

/// The origins whose requests count as this site's.
fn origins(settings: &Settings, bound: SocketAddr) -> Vec<String> {
    match &settings.public_url {
        Some(_) => vec![settings.public_origin(bound.port())],
        None => {
            let port = bound.port();
            vec![
                format!("http://localhost:{port}"),
                format!("http://127.0.0.1:{port}"),
                format!("http://[::1]:{port}"),
            ]
        }
    }
}

/// The router for `auth`, as served on `bound`, counting into `metrics`; long-lived streams
/// end when `stop` turns true.
pub fn router(
    settings: &Settings,
    auth: Arc<Auth>,
    bound: SocketAddr,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> http::guard::Guarded {
    http::router(
        state(settings, auth, bound, metrics, stop),
        settings.metrics_listen.is_some(),
    )
}

fn state(
    settings: &Settings,
    auth: Arc<Auth>,
    bound: SocketAddr,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> AppState {
    let cookie = settings.cookie_policy();
    AppState::new(StateInner {
        auth,
        cookie,
        origins: origins(settings, bound),
        trusted_proxies: settings.trusted_proxies.clone(),
        hsts: cookie.is_secure(),
        metrics,
        verifier_keys: settings.verifier_keys.clone(),
        stop,
    })
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when apart from `addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// The engine it runs.
    pub auth: Arc<Auth>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Opens the store, binds the listening address and starts serving in the background.
    pub async fn start(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(settings.listen, e))?;
        let auth = engine(settings, clock, addr.port()).await?;
        if settings.auth.jwt.algorithm == cloakroom::jwt::Algorithm::HS256 {
            tracing::warn!(
                "access tokens are signed with HS256: every verifier holds the signing secret; \
                 prefer EdDSA"
            );
        }
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = watch::channel(false);
        let metrics_addr = match settings.metrics_listen {
            None => None,
            Some(at) => {
                let private = TcpListener::bind(at)
                    .await
                    .map_err(|e| StartError::Bind(at, e))?;
                let bound = private.local_addr().map_err(|e| StartError::Bind(at, e))?;
                let app = http::metrics_router(state(
                    settings,
                    Arc::clone(&auth),
                    addr,
                    Arc::clone(&metrics),
                    stopped.clone(),
                ));
                let done = stopped.clone();
                tokio::spawn(async move {
                    let served = axum::serve(private, app)
                        .with_graceful_shutdown(self::stopped(done))
                        .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "the metrics listener stopped");
                    }
                });
                Some(bound)
            }
        };
        let router = router(
            settings,
            Arc::clone(&auth),
            addr,
            Arc::clone(&metrics),
            stopped.clone(),
        );
        let task = tokio::spawn(run(
            listener,
            router,
            Arc::clone(&auth),
            metrics,
            settings.header_timeout,
            stopped,
        ));
        Ok(Self {
            addr,
            metrics_addr,
            auth,
            stop,
            task,
        })
    }

    /// Stops accepting, lets in-flight requests finish, and writes pending activity.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn run(
    listener: TcpListener,
    router: http::guard::Guarded,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    let background = tokio::spawn(background(Arc::clone(&auth), metrics, stop.clone()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(header_timeout)
        // A header block over 64 KiB, or over hyper's default of 100 headers, gets 431.
        .max_header_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    let mut stop_signal = std::pin::pin!(stopped(stop.clone()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = router.for_peer(peer);
                let conn = http
                    .clone()
                    .timer(ConnectionTimer::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut stop_signal => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open at the end of the grace period");
    }
    let _ = background.await;
    if let Err(e) = auth.flush_activity().await {
        tracing::warn!(error = %e, "could not write the last activity");
    }
}

/// Applies each revocation event the store pushes, until told to stop or the feed ends.
async fn apply_revocations(
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    mut events: tokio::sync::mpsc::Receiver<cloakroom::RevocationEvent>,
    stop: watch::Receiver<bool>,
) {
    let mut stop_signal = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if let cloakroom::RevocationEvent::Revoked { sent_ms: Some(sent_ms), .. } = event {
                        metrics.observe_propagation((wall_ms() - sent_ms) as f64 / 1000.0);
                    }
                    auth.apply_revocation(event);
                }
                None => return,
            },
            _ = &mut stop_signal => return,
        }
    }
}

/// Keeps the in-memory state and the store in step until told to stop.
async fn background(auth: Arc<Auth>, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) {
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
        // Revocations pushed by Redis are applied by a task of their own, so that they never
        // wait behind a slow or hung database call of this loop.
        Ok(Some(rx)) => {
            tokio::spawn(apply_revocations(
                Arc::clone(&auth),
                Arc::clone(&metrics),
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
                        if let Some(Some(sent_ms)) = signal {
                            metrics.observe_propagation((wall_ms() - sent_ms) as f64 / 1000.0);
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
                if let Err(e) = auth.maintain().await {
                    tracing::warn!(error = %e, "store housekeeping failed");
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
