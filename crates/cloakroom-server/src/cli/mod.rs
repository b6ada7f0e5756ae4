//! The command line: `serve` and the admin commands. Exit codes: 0 success, 1 a failed
//! operation or check, 2 a usage error.

mod audit;
mod config;
mod keys;
mod sessions;
mod token;
mod user;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{self, Server};
use crate::settings::{RawSettings, Settings, SettingsError};
use cloakroom::{Auth, AuthError, SystemClock};

/// Command line of the `cloakroom` binary.
#[derive(Debug, Parser)]
#[command(
    name = "cloakroom",
    version,
    about = "Sessions, cookies and JWTs: an authentication server"
)]
pub struct Cli {
    /// Settings file (TOML); flags and CLOAKROOM_* variables override it
    #[arg(long, global = true, env = "CLOAKROOM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Settings
    #[command(flatten)]
    pub settings: RawSettings,
    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server
    Serve,
    /// Manage users
    #[command(subcommand)]
    User(user::UserCommand),
    /// See and end sessions
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Signing keys
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Inspect access tokens
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Inspect settings
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// List security events
    Audit(audit::AuditArgs),
}

/// A failure of a command, with its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage or settings: exit 2.
    Usage(String),
    /// The operation failed: exit 1.
    Failed(String),
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        Self::Usage(e.0)
    }
}

impl From<app::StartError> for CliError {
    fn from(e: app::StartError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<AuthError> for CliError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidEmail(_) | AuthError::WeakPassword(_) | AuthError::InvalidRole(_) => {
                Self::Usage(e.to_string())
            }
            AuthError::NotFound => Self::Failed("no such user or session".into()),
            AuthError::Store(ref s) => {
                Self::Failed(format!("{e}: {:?}", std::error::Error::source(s)))
            }
            other => Self::Failed(other.to_string()),
        }
    }
}

/// Merges flags/environment over the settings file and resolves them.
pub fn resolve(cli: &Cli) -> Result<Settings, CliError> {
    let file = match &cli.config {
        Some(path) => RawSettings::from_file(path)?,
        None => RawSettings::default(),
    };
    Ok(Settings::resolve(cli.settings.clone().or(file)?)?)
}

/// The engine for an admin command, on the same store a server would use.
async fn admin_engine(settings: &Settings) -> Result<Arc<Auth>, CliError> {
    let mut settings = settings.clone();
    settings.auth.hash_threads = 1;
    settings.auth.hash_queue = 1;
    Ok(app::admin_engine(&settings, Arc::new(SystemClock), settings.listen.port()).await?)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = dispatch(cli).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let settings = resolve(&cli)?;
    init_tracing(&settings, matches!(cli.command, Command::Serve));
    match cli.command {
        Command::Serve => serve(&settings).await,
        Command::User(cmd) => user::run(cmd, &*admin_engine(&settings).await?).await,
        Command::Sessions(cmd) => sessions::run(cmd, &*admin_engine(&settings).await?).await,
        Command::Keys(cmd) => keys::run(cmd, &*admin_engine(&settings).await?).await,
        Command::Token(cmd) => token::run(cmd, &settings).await,
        Command::Config(cmd) => config::run(cmd, &settings),
        Command::Audit(args) => audit::run(args, &*admin_engine(&settings).await?).await,
    }
}

fn init_tracing(settings: &Settings, serving: bool) {
    use tracing_subscriber::EnvFilter;
    // Admin commands stay quiet unless asked: their output is for people and scripts.
    let default = if serving {
        settings.log.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_new(default).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(settings: &Settings) -> Result<(), CliError> {
    let server = Server::start(settings, Arc::new(SystemClock)).await?;
    let scheme_url = match &settings.public_url {
        Some(u) => u.to_string(),
        None => format!("http://localhost:{}/", server.addr.port()),
    };
    println!(
        "cloakroom listening on http://{} — public URL {scheme_url}",
        server.addr
    );
    tracing::info!(addr = %server.addr, "listening");
    server.run_until(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
