//! Building the application from settings and serving it: the store, the engine, the router,
//! the engine's upkeep (see `cloakroom::maintenance`), and graceful shutdown.

use cloakroom::web::RequestRules;
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
use crate::http::return_to::ReturnTo;
use crate::http::{self, AppState, StateInner};
use crate::settings::Settings;

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
    /// Mail cannot be sent as configured.
    #[error("mail: {0}")]
    Mail(String),
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
    open_engine(settings, clock, port, true).await
}

/// The engine for an admin command: it creates nothing when it starts (see [`Auth::for_admin`]).
pub async fn admin_engine(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    port: u16,
) -> Result<Arc<Auth>, StartError> {
    open_engine(settings, clock, port, false).await
}

async fn open_engine(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    port: u16,
    serving: bool,
) -> Result<Arc<Auth>, StartError> {
    let mut config = settings.auth_config(port);
    config.sealing = settings
        .secrets
        .load()
        .map_err(StartError::Secrets)?
        .map(Arc::new);
    if config.sealing.is_none() && serving {
        tracing::warn!(
            "signing keys are stored in clear in the database: set --secrets-key-file or \
             CLOAKROOM_SECRETS_KEY (the same on every instance) to seal them"
        );
    }
    let (store, throttle) = open_stores(settings).await?;
    let throttle =
        throttle.unwrap_or_else(|| Arc::new(cloakroom::MemoryThrottle::new()) as Arc<dyn Throttle>);
    let auth = if serving {
        Auth::with_throttle(store, throttle, config, clock).await?
    } else {
        Auth::for_admin(store, throttle, config, clock).await?
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
        hsts: cookie.is_secure(),
        rules: RequestRules::new(cookie, origins(settings, bound)),
        trusted_proxies: settings.trusted_proxies.clone(),
        return_to: ReturnTo::new(
            &settings.public_origin(bound.port()),
            settings.allowed_return_hosts.clone(),
        ),
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
        let worker = auth.mail_worker(mailer(settings)?, Arc::clone(&metrics.mail));
        tokio::spawn(worker.run(stopped.clone()));
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

/// What delivers mail: the SMTP relay of `--smtp-url`, or the log.
fn mailer(settings: &Settings) -> Result<Arc<dyn cloakroom::mail::Mailer>, StartError> {
    let Some(url) = &settings.smtp_url else {
        return Ok(Arc::new(cloakroom::mail::LogMailer));
    };
    let password = match &settings.smtp_password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| StartError::Mail(format!("{}: {e}", path.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    let smtp =
        cloakroom::mail::SmtpMailer::new(url.expose(), password.as_deref(), &settings.mail_from())
            .map_err(|e| StartError::Mail(e.to_string()))?;
    Ok(Arc::new(smtp))
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
    let observed = Arc::clone(&metrics);
    let maintenance = auth.spawn_maintenance_observed(
        stop.clone(),
        Some(Arc::new(move |sent_ms| {
            observed.observe_propagation((wall_ms() - sent_ms) as f64 / 1000.0)
        })),
    );
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
    maintenance.finish().await;
}
