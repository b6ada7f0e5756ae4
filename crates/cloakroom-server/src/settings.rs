//! Settings: raw values from flags, `CLOAKROOM_*` environment variables and an optional TOML
//! file (every field optional), merged in that order of precedence, then resolved into validated
//! [`Settings`] with the defaults applied.

use clap::Args;
use cloakroom::jwt::Algorithm;
use cloakroom::{Argon2Config, AuthConfig, CookiePolicy, JwtConfig, Lifetime, Secret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use time::Duration;
use url::Url;

use crate::http::proxies::ProxyRange;
use crate::http::return_to::{is_host_name, HostPattern};

/// Settings as given: flags and environment (through clap) or the TOML file (through serde).
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, global = true, env = "CLOAKROOM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded database [default: ./cloakroom-data]
    #[arg(long, global = true, env = "CLOAKROOM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (sqlite://… or postgres://…); default: an SQLite file in the data directory
    #[arg(long, global = true, env = "CLOAKROOM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL for sessions, revocations and throttling shared by many instances
    #[arg(long, global = true, env = "CLOAKROOM_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several deployments can share one Redis [default: cloakroom]
    #[arg(long, global = true, env = "CLOAKROOM_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// The public origin clients use, such as `https://auth.example.com`
    #[arg(long, global = true, env = "CLOAKROOM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Allow a plain-http public URL that is not localhost (never in production)
    #[arg(long, global = true, env = "CLOAKROOM_INSECURE_DEV", num_args = 0..=1,
          default_missing_value = "true")]
    pub insecure_dev: Option<bool>,
    /// Proxies whose X-Forwarded-For is believed (comma-separated addresses or CIDR ranges)
    #[arg(
        long,
        global = true,
        env = "CLOAKROOM_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<ProxyRange>>,
    /// Share the session cookie with every host under this domain (e.g. `example.com`, for apps
    /// on their own subdomains behind forward-auth); the public URL must be https on a host
    /// inside it. The cookie becomes `__Secure-cloakroom_session` with `Domain` [default: none,
    /// a host-only `__Host-` cookie]
    #[arg(long, global = true, env = "CLOAKROOM_COOKIE_DOMAIN")]
    pub cookie_domain: Option<String>,
    /// Hosts a browser may be sent back to after logging in or out (`rd=`): names or
    /// `*.example.com`, comma-separated [default: none, only cloakroom's own host]
    #[arg(
        long,
        global = true,
        env = "CLOAKROOM_ALLOWED_RETURN_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_return_hosts: Option<Vec<HostPattern>>,
    /// Run password hashing at the lowest scheduling priority [default: true]
    #[arg(long, global = true, env = "CLOAKROOM_HASH_IDLE_PRIORITY", num_args = 0..=1,
          default_missing_value = "true")]
    pub hash_idle_priority: Option<bool>,
    /// Keys that remote verifiers present to follow `GET /auth/revocations` (comma-separated,
    /// each at least 32 characters)
    #[arg(
        long,
        global = true,
        env = "CLOAKROOM_VERIFIER_KEYS",
        value_delimiter = ','
    )]
    pub verifier_keys: Option<Vec<String>>,
    /// Idle timeout of a session, in seconds [default: 1800]
    #[arg(long, global = true, env = "CLOAKROOM_SESSION_IDLE_SECS")]
    pub session_idle_secs: Option<i64>,
    /// Absolute lifetime of a session, in seconds [default: 43200]
    #[arg(long, global = true, env = "CLOAKROOM_SESSION_ABSOLUTE_SECS")]
    pub session_absolute_secs: Option<i64>,
    /// Idle timeout of a "remember me" session, in seconds [default: 1209600]
    #[arg(long, global = true, env = "CLOAKROOM_REMEMBER_IDLE_SECS")]
    pub remember_idle_secs: Option<i64>,
    /// Absolute lifetime of a "remember me" session, in seconds [default: 2592000]
    #[arg(long, global = true, env = "CLOAKROOM_REMEMBER_ABSOLUTE_SECS")]
    pub remember_absolute_secs: Option<i64>,
    /// Argon2id memory in KiB [default: 19456]
    #[arg(long, global = true, env = "CLOAKROOM_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// Argon2id passes [default: 2]
    #[arg(long, global = true, env = "CLOAKROOM_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<u32>,
    /// Argon2id lanes [default: 1]
    #[arg(long, global = true, env = "CLOAKROOM_ARGON2_PARALLELISM")]
    pub argon2_parallelism: Option<u32>,
    /// Threads that hash passwords [default: the number of cores]
    #[arg(long, global = true, env = "CLOAKROOM_HASH_THREADS")]
    pub hash_threads: Option<usize>,
    /// Hashing jobs that may wait before logins get 503 [default: 8 per thread]
    #[arg(long, global = true, env = "CLOAKROOM_HASH_QUEUE")]
    pub hash_queue: Option<usize>,
    /// Failed logins per account before back-off starts [default: 5]
    #[arg(long, global = true, env = "CLOAKROOM_LOGIN_ACCOUNT_FREE_FAILURES")]
    pub login_account_free_failures: Option<u32>,
    /// Failed logins per client IP before back-off starts [default: 20]
    #[arg(long, global = true, env = "CLOAKROOM_LOGIN_IP_FREE_FAILURES")]
    pub login_ip_free_failures: Option<u32>,
    /// Password checks one client address, or one account, may have in progress at once;
    /// more get 429 [default: 4]
    #[arg(long, global = true, env = "CLOAKROOM_HASHING_PER_CLIENT")]
    pub hashing_per_client: Option<usize>,
    /// Live sessions one user may have; a new login ends the oldest beyond it; 0: no cap
    /// [default: 100]
    #[arg(long, global = true, env = "CLOAKROOM_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<usize>,
    /// Store lookups per second of well-formed session or refresh tokens without a valid check
    /// value (minted before the check existed, or forged); beyond it they are refused with no
    /// lookup. 0 once every session older than the check has expired [default: 50]
    #[arg(long, global = true, env = "CLOAKROOM_UNCHECKED_TOKEN_LOOKUPS")]
    pub unchecked_token_lookups: Option<u32>,
    /// Users with any of these roles (comma-separated) must add a second factor: until a
    /// session of theirs proves one, it may only enrol [default: none]
    #[arg(
        long,
        global = true,
        env = "CLOAKROOM_REQUIRE_MFA_ROLES",
        value_delimiter = ','
    )]
    pub require_mfa_roles: Option<Vec<String>>,
    /// Every user must add a second factor (as --require-mfa-roles does for some)
    /// [default: false]
    #[arg(long, global = true, env = "CLOAKROOM_REQUIRE_MFA", num_args = 0..=1,
          default_missing_value = "true")]
    pub require_mfa: Option<bool>,
    /// Signups allowed per client IP per hour [default: 10]
    #[arg(long, global = true, env = "CLOAKROOM_SIGNUPS_PER_HOUR")]
    pub signups_per_hour: Option<u32>,
    /// JWT signing algorithm: EdDSA, ES256, RS256 or HS256 [default: EdDSA]
    #[arg(long, global = true, env = "CLOAKROOM_JWT_ALG")]
    pub jwt_alg: Option<String>,
    /// HS256 secret (at least 32 random bytes); only with --jwt-alg HS256
    #[arg(long, global = true, env = "CLOAKROOM_HS256_SECRET")]
    pub hs256_secret: Option<String>,
    /// Access token lifetime in seconds [default: 600]
    #[arg(long, global = true, env = "CLOAKROOM_ACCESS_TOKEN_SECS")]
    pub access_token_secs: Option<i64>,
    /// The `aud` of access tokens [default: the public URL]
    #[arg(long, global = true, env = "CLOAKROOM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds in which a spent refresh token may be retried for the same result [default: 10]
    #[arg(long, global = true, env = "CLOAKROOM_REFRESH_GRACE_SECS")]
    pub refresh_grace_secs: Option<i64>,
    /// File of key-encryption keys that seal the signing keys in the database (one key a line,
    /// `ID BASE64` or `BASE64`, 32 bytes; the first seals) [default: `secrets.key` in the data
    /// directory, made on first start, for SQLite; none for PostgreSQL]
    #[arg(long, global = true, env = "CLOAKROOM_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The key-encryption keys themselves, as the file would hold them (set it in the
    /// environment, not on a command line)
    #[arg(
        long,
        global = true,
        env = "CLOAKROOM_SECRETS_KEY",
        hide_env_values = true
    )]
    pub secrets_key: Option<String>,
    /// Serve `GET /metrics` on this address only (e.g. 127.0.0.1:9090), not on the public
    /// listener [default: on the public listener]
    #[arg(long, global = true, env = "CLOAKROOM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a client has to send its request headers [default: 10]
    #[arg(long, global = true, env = "CLOAKROOM_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Log filter, e.g. `info` or `cloakroom=debug` [default: info]
    #[arg(long, global = true, env = "CLOAKROOM_LOG")]
    pub log: Option<String>,
    /// SMTP relay for mail: `smtp://user@host:587` (STARTTLS), `smtps://user@host:465`
    /// (implicit TLS), `smtp://127.0.0.1:25?tls=none` (a relay on this machine) [default: none:
    /// mail is written to the log]
    #[arg(long, global = true, env = "CLOAKROOM_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// A file holding the SMTP password (instead of the one in the URL)
    #[arg(long, global = true, env = "CLOAKROOM_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// The sender of mail [default: cloakroom at the public URL's host]
    #[arg(long, global = true, env = "CLOAKROOM_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// A directory of mail templates that replace the built-in ones (NAME.subject, NAME.txt,
    /// NAME.html for verify_email, reset_password, password_changed, change_email,
    /// email_change_requested, security_notice)
    #[arg(long, global = true, env = "CLOAKROOM_MAIL_TEMPLATES")]
    pub mail_templates: Option<PathBuf>,
    /// Seconds a link that confirms an address works [default: 86400]
    #[arg(long, global = true, env = "CLOAKROOM_VERIFY_EMAIL_TTL_SECS")]
    pub verify_email_ttl_secs: Option<i64>,
    /// Seconds a password reset link works [default: 1800]
    #[arg(long, global = true, env = "CLOAKROOM_RESET_PASSWORD_TTL_SECS")]
    pub reset_password_ttl_secs: Option<i64>,
    /// An account whose address is not confirmed can log in only to confirm it
    /// [default: false]
    #[arg(long, global = true, env = "CLOAKROOM_REQUIRE_VERIFIED_EMAIL", num_args = 0..=1,
          default_missing_value = "true")]
    pub require_verified_email: Option<bool>,
    /// Days security events are kept; 0 keeps them as long as the account [default: 0]
    #[arg(long, global = true, env = "CLOAKROOM_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<u32>,
    /// Every token the token endpoint issues must be bound to a DPoP key (RFC 9449)
    /// [default: false]
    #[arg(long, global = true, env = "CLOAKROOM_REQUIRE_DPOP", num_args = 0..=1,
          default_missing_value = "true")]
    pub require_dpop: Option<bool>,
    /// DPoP proofs must carry a nonce the server gave in `DPoP-Nonce` [default: false]
    #[arg(long, global = true, env = "CLOAKROOM_DPOP_NONCE", num_args = 0..=1,
          default_missing_value = "true")]
    pub dpop_nonce: Option<bool>,
    /// Device-bound browser sessions (DBSC): `off`, `optional` (offered at every login; a
    /// browser that binds is held to it) or `required` (only browsers that bind can stay
    /// signed in) [default: optional]
    #[arg(long, global = true, env = "CLOAKROOM_DBSC")]
    pub dbsc: Option<String>,
    /// Seconds a bound session's bound cookie lasts before the browser proves its key again
    /// [default: 600]
    #[arg(long, global = true, env = "CLOAKROOM_DBSC_COOKIE_SECS")]
    pub dbsc_cookie_secs: Option<i64>,
    /// Mail the user when they sign in from a device not seen before [default: true]
    #[arg(long, global = true, env = "CLOAKROOM_NOTIFY_NEW_DEVICE", num_args = 0..=1,
          default_missing_value = "true")]
    pub notify_new_device: Option<bool>,
}

impl RawSettings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| SettingsError(format!("{}: {e}", path.display())))
    }

    /// Fills what `self` leaves open from `lower`, field by field (through serde, so that the
    /// fields are listed once, in the struct).
    pub fn or(self, lower: RawSettings) -> Result<RawSettings, SettingsError> {
        use serde_json::Value;
        let as_map = |raw: &RawSettings| match serde_json::to_value(raw) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(SettingsError("settings are not a table".into())),
            Err(e) => Err(SettingsError(format!("settings: {e}"))),
        };
        let mut high = as_map(&self)?;
        for (field, value) in as_map(&lower)? {
            let slot = high.entry(field).or_insert(Value::Null);
            if slot.is_null() {
                *slot = value;
            }
        }
        serde_json::from_value(Value::Object(high))
            .map_err(|e| SettingsError(format!("settings: {e}")))
    }
}

/// Where the key-encryption keys that seal the signing keys come from.
#[derive(Debug, Clone)]
pub enum SecretsSource {
    /// From `CLOAKROOM_SECRETS_KEY`.
    Given(Secret<String>),
    /// From `--secrets-key-file`.
    File(PathBuf),
    /// From a file in the data directory, made on first start (SQLite's default).
    Made(PathBuf),
    /// None: signing keys are stored in clear (PostgreSQL without a key; a warning says so).
    None,
}

impl SecretsSource {
    /// The key set, read (or made, for [`SecretsSource::Made`]).
    pub fn load(&self) -> Result<Option<cloakroom::sealing::KeySet>, String> {
        use cloakroom::sealing::KeySet;
        let keys = match self {
            Self::Given(text) => KeySet::parse(text.expose()),
            Self::File(path) => KeySet::load(path),
            Self::Made(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                KeySet::load_or_create(path)
            }
            Self::None => return Ok(None),
        };
        keys.map(Some).map_err(|e| e.to_string())
    }
}

/// An invalid setting, with a message that says which and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Validated settings with defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of the embedded database.
    pub data_dir: PathBuf,
    /// Where users and sessions are stored.
    pub database_url: Secret<String>,
    /// Where sessions, revocations and throttle counters are shared, if anywhere.
    pub redis_url: Option<Secret<String>>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// The public origin, if configured; otherwise derived from the bound address.
    pub public_url: Option<Url>,
    /// Plain http allowed beyond localhost.
    pub insecure_dev: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ProxyRange>,
    /// The parent domain the session cookie is shared with, if any.
    pub cookie_domain: Option<String>,
    /// Hosts a browser may be sent back to (besides cloakroom's own).
    pub allowed_return_hosts: Vec<HostPattern>,
    /// Keys that may follow `GET /auth/revocations`.
    pub verifier_keys: Vec<Secret<String>>,
    /// The engine's settings.
    pub auth: AuthConfig,
    /// Time a client has to send its request headers.
    pub header_timeout: std::time::Duration,
    /// The configured `aud`, if not the public URL.
    pub jwt_audience: Option<String>,
    /// Where `/metrics` is served instead of the public listener, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the key-encryption keys come from.
    pub secrets: SecretsSource,
    /// Log filter.
    pub log: String,
    /// The SMTP relay, if any (else mail goes to the log).
    pub smtp_url: Option<Secret<String>>,
    /// The file holding the SMTP password, if any.
    pub smtp_password_file: Option<PathBuf>,
    /// The sender of mail, if configured.
    pub mail_from: Option<String>,
}

fn secs(name: &str, v: Option<i64>, default: Duration) -> Result<Duration, SettingsError> {
    match v {
        None => Ok(default),
        Some(s) if s > 0 => Ok(Duration::seconds(s)),
        Some(s) => Err(SettingsError(format!("{name} must be positive, not {s}"))),
    }
}

fn is_local_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Settings {
    /// Applies defaults and checks every value.
    pub fn resolve(raw: RawSettings) -> Result<Self, SettingsError> {
        let listen = raw
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("cloakroom-data"));
        let database_url = match raw.database_url {
            None => format!("sqlite://{}", data_dir.join("cloakroom.db").display()),
            Some(u) if u.starts_with("sqlite:") => u,
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => u,
            Some(_) => {
                return Err(SettingsError(
                    "--database-url must start with sqlite: or postgres://".into(),
                ))
            }
        };
        let redis_url = match raw.redis_url {
            None => None,
            Some(u)
                if u.starts_with("redis://")
                    || u.starts_with("redis+unix://")
                    || u.starts_with("unix://") =>
            {
                Some(Secret::new(u))
            }
            Some(_) => {
                return Err(SettingsError(
                    "--redis-url must start with redis://, redis+unix:// or unix:// \
                     (TLS to Redis is not built in: reach it over a private network or a \
                     local TLS tunnel)"
                        .into(),
                ))
            }
        };
        let verifier_keys = raw.verifier_keys.unwrap_or_default();
        if let Some(short) = verifier_keys.iter().position(|k| k.len() < 32) {
            return Err(SettingsError(format!(
                "verifier key {} is shorter than 32 characters; use a random one \
                 (openssl rand -base64 32)",
                short + 1
            )));
        }
        let verifier_keys = verifier_keys.into_iter().map(Secret::new).collect();
        let redis_prefix = raw.redis_prefix.unwrap_or_else(|| "cloakroom".into());
        if redis_prefix.is_empty()
            || redis_prefix.len() > 64
            || !redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(SettingsError(
                "--redis-prefix must be 1 to 64 letters, digits or _-.:".into(),
            ));
        }
        let insecure_dev = raw.insecure_dev.unwrap_or(false);
        let public_url = match raw.public_url {
            None => {
                if !listen.ip().is_loopback() && !insecure_dev {
                    return Err(SettingsError(format!(
                        "listening on {listen}, which is not loopback: set --public-url to the \
                         https:// address clients use (or --insecure-dev for a test network)"
                    )));
                }
                None
            }
            Some(u) => {
                let url = Url::parse(&u)
                    .map_err(|e| SettingsError(format!("--public-url {u:?}: {e}")))?;
                match url.scheme() {
                    "https" => {}
                    "http" if is_local_host(&url) || insecure_dev => {}
                    "http" => {
                        return Err(SettingsError(format!(
                            "--public-url {u} is plain http on a non-local host; use https \
                             (or --insecure-dev, never in production)"
                        )))
                    }
                    other => {
                        return Err(SettingsError(format!(
                            "--public-url must be http or https, not {other}"
                        )))
                    }
                }
                if url.host().is_none() || url.path() != "/" || url.query().is_some() {
                    return Err(SettingsError(format!(
                        "--public-url {u} must be an origin such as https://auth.example.com"
                    )));
                }
                Some(url)
            }
        };
        let cookie_domain = raw
            .cookie_domain
            .map(|d| cookie_domain(&d, public_url.as_ref()))
            .transpose()?;
        let defaults = AuthConfig::default();
        let session = Lifetime {
            idle: secs(
                "session_idle_secs",
                raw.session_idle_secs,
                defaults.session.idle,
            )?,
            absolute: secs(
                "session_absolute_secs",
                raw.session_absolute_secs,
                defaults.session.absolute,
            )?,
        };
        let remember = Lifetime {
            idle: secs(
                "remember_idle_secs",
                raw.remember_idle_secs,
                defaults.remember.idle,
            )?,
            absolute: secs(
                "remember_absolute_secs",
                raw.remember_absolute_secs,
                defaults.remember.absolute,
            )?,
        };
        let argon2 = Argon2Config {
            memory_kib: raw.argon2_memory_kib.unwrap_or(defaults.argon2.memory_kib),
            iterations: raw.argon2_iterations.unwrap_or(defaults.argon2.iterations),
            parallelism: raw
                .argon2_parallelism
                .unwrap_or(defaults.argon2.parallelism),
        };
        argon2::Params::new(
            argon2.memory_kib,
            argon2.iterations,
            argon2.parallelism,
            None,
        )
        .map_err(|e| SettingsError(format!("Argon2 parameters: {e}")))?;
        let hash_threads = raw.hash_threads.unwrap_or(defaults.hash_threads);
        if hash_threads == 0 {
            return Err(SettingsError("hash_threads must be at least 1".into()));
        }
        let mut account_throttle = defaults.account_throttle;
        if let Some(n) = raw.login_account_free_failures {
            account_throttle.free_failures = n;
        }
        let mut ip_throttle = defaults.ip_throttle;
        if let Some(n) = raw.login_ip_free_failures {
            ip_throttle.free_failures = n;
        }
        let algorithm = match raw.jwt_alg.as_deref() {
            None => Algorithm::EdDSA,
            Some(a) => a
                .parse::<Algorithm>()
                .map_err(|e| SettingsError(e.to_string()))?,
        };
        let hs256_secret = match (algorithm, raw.hs256_secret) {
            (Algorithm::HS256, Some(secret)) => {
                cloakroom::jwt::SigningKey::hs256(secret.as_bytes())
                    .map_err(|e| SettingsError(format!("--hs256-secret: {e}")))?;
                Some(Secret::new(secret.into_bytes()))
            }
            (Algorithm::HS256, None) => {
                return Err(SettingsError(
                    "--jwt-alg HS256 needs --hs256-secret (at least 32 random bytes)".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(SettingsError(
                    "--hs256-secret is only used with --jwt-alg HS256".into(),
                ))
            }
            (_, None) => None,
        };
        let jwt = JwtConfig {
            access_ttl: secs(
                "access_token_secs",
                raw.access_token_secs,
                defaults.jwt.access_ttl,
            )?,
            refresh_grace: secs(
                "refresh_grace_secs",
                raw.refresh_grace_secs,
                defaults.jwt.refresh_grace,
            )?,
            algorithm,
            hs256_secret,
            ..defaults.jwt.clone()
        };
        let auth = AuthConfig {
            jwt,
            session,
            remember,
            account_throttle,
            ip_throttle,
            signup_limit: raw.signups_per_hour.unwrap_or(defaults.signup_limit),
            argon2,
            hash_threads,
            hash_queue: raw.hash_queue.unwrap_or(hash_threads * 8).max(1),
            hash_idle_priority: raw.hash_idle_priority.unwrap_or(true),
            hashing_per_client: raw
                .hashing_per_client
                .unwrap_or(defaults.hashing_per_client)
                .max(1),
            max_sessions_per_user: match raw.max_sessions_per_user {
                Some(0) => usize::MAX,
                Some(n) => n,
                None => defaults.max_sessions_per_user,
            },
            unchecked_lookups_per_sec: raw
                .unchecked_token_lookups
                .unwrap_or(defaults.unchecked_lookups_per_sec),
            mfa_required_roles: raw
                .require_mfa_roles
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    cloakroom::Role::parse(r)
                        .map_err(|e| SettingsError(format!("--require-mfa-roles {r:?}: {e}")))
                })
                .collect::<Result<_, _>>()?,
            mfa_required_for_everyone: raw.require_mfa.unwrap_or(false),
            mail_templates: raw.mail_templates,
            verify_email_ttl: secs(
                "verify_email_ttl_secs",
                raw.verify_email_ttl_secs,
                defaults.verify_email_ttl,
            )?,
            reset_password_ttl: secs(
                "reset_password_ttl_secs",
                raw.reset_password_ttl_secs,
                defaults.reset_password_ttl,
            )?,
            require_verified_email: raw
                .require_verified_email
                .unwrap_or(defaults.require_verified_email),
            event_retention: match raw.event_retention_days {
                None | Some(0) => None,
                Some(days) => Some(time::Duration::days(i64::from(days))),
            },
            notify_new_device: raw.notify_new_device.unwrap_or(defaults.notify_new_device),
            dpop_required: raw.require_dpop.unwrap_or(defaults.dpop_required),
            dpop_nonce_required: raw.dpop_nonce.unwrap_or(defaults.dpop_nonce_required),
            dbsc: match raw.dbsc.as_deref() {
                None => defaults.dbsc,
                Some(mode) => mode
                    .parse()
                    .map_err(|e| SettingsError(format!("--dbsc: {e}")))?,
            },
            bound_cookie_lifetime: secs(
                "dbsc_cookie_secs",
                raw.dbsc_cookie_secs,
                defaults.bound_cookie_lifetime,
            )?,
            ..defaults
        };
        let secrets = match (raw.secrets_key, raw.secrets_key_file) {
            (Some(text), _) => {
                cloakroom::sealing::KeySet::parse(&text)
                    .map_err(|e| SettingsError(format!("CLOAKROOM_SECRETS_KEY: {e}")))?;
                SecretsSource::Given(Secret::new(text))
            }
            (None, Some(path)) => SecretsSource::File(path),
            (None, None) if database_url.starts_with("sqlite:") => {
                SecretsSource::Made(data_dir.join("secrets.key"))
            }
            (None, None) => SecretsSource::None,
        };
        Ok(Self {
            listen,
            data_dir,
            database_url: Secret::new(database_url),
            redis_url,
            redis_prefix,
            public_url,
            insecure_dev,
            trusted_proxies: raw.trusted_proxies.unwrap_or_default(),
            cookie_domain,
            allowed_return_hosts: raw.allowed_return_hosts.unwrap_or_default(),
            verifier_keys,
            auth,
            jwt_audience: raw.jwt_audience,
            header_timeout: std::time::Duration::from_secs(match raw.header_timeout_secs {
                Some(0) => {
                    return Err(SettingsError("header_timeout_secs must be positive".into()))
                }
                Some(n) => n,
                None => 10,
            }),
            metrics_listen: raw.metrics_listen,
            secrets,
            log: raw.log.unwrap_or_else(|| "info".into()),
            smtp_url: raw.smtp_url.map(Secret::new),
            smtp_password_file: raw.smtp_password_file,
            mail_from: raw.mail_from,
        })
    }

    /// The public origin, for a server bound to `port` (`iss` and the CSRF origin).
    pub fn public_origin(&self, port: u16) -> String {
        match &self.public_url {
            Some(u) => u.origin().ascii_serialization(),
            None => format!("http://localhost:{port}"),
        }
    }

    /// The engine's settings for a server bound to `port`: `iss` and `aud` filled in.
    pub fn auth_config(&self, port: u16) -> AuthConfig {
        let mut auth = self.auth.clone();
        auth.jwt.issuer = self.public_origin(port);
        auth.jwt.audience = self
            .jwt_audience
            .clone()
            .unwrap_or_else(|| auth.jwt.issuer.clone());
        // Passkeys belong to the host people sign in on, and come from its origin.
        auth.passkey_origin = self.public_origin(port);
        auth.passkey_rp_id = match &self.public_url {
            Some(u) => u.host_str().unwrap_or("localhost").to_string(),
            None => "localhost".into(),
        };
        // Links in mail lead to the public URL.
        auth.public_url = match &self.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => self.public_origin(port),
        };
        // What authenticator apps show beside the code: the host people sign in on.
        auth.totp_issuer = match &self.public_url {
            Some(u) => u.host_str().unwrap_or("cloakroom").to_string(),
            None => "cloakroom (localhost)".into(),
        };
        auth
    }

    /// The sender of mail: the configured one, or `cloakroom@` the public URL's host.
    pub fn mail_from(&self) -> String {
        self.mail_from.clone().unwrap_or_else(|| {
            let host = self
                .public_url
                .as_ref()
                .and_then(|u| u.host_str().map(String::from))
                .unwrap_or_else(|| "localhost".into());
            format!("cloakroom <cloakroom@{host}>")
        })
    }

    /// The cookie policy: `__Host-` and `Secure` unless the public URL is plain http;
    /// `__Secure-` with `Domain` under `--cookie-domain`.
    pub fn cookie_policy(&self) -> CookiePolicy {
        match (&self.public_url, &self.cookie_domain) {
            (Some(u), Some(domain)) if u.scheme() == "https" => CookiePolicy::for_domain(domain),
            (Some(u), _) if u.scheme() == "https" => CookiePolicy::SECURE,
            _ => CookiePolicy::DEV,
        }
    }

    /// The effective settings as TOML, with secrets redacted (`cloakroom config show`): every
    /// field of [`RawSettings`], `none` where unset.
    pub fn show(&self) -> String {
        let shown = match serde_json::to_value(self.effective()) {
            Ok(serde_json::Value::Object(fields)) => fields
                .into_iter()
                .map(|(k, v)| (k, if v.is_null() { "none".into() } else { v }))
                .collect::<serde_json::Map<_, _>>(),
            _ => serde_json::Map::new(),
        };
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }

    /// These settings as the raw ones that would give them, secrets redacted. Every field is
    /// named (no `..`), so a new setting cannot be left out of `config show`.
    fn effective(&self) -> RawSettings {
        let a = &self.auth;
        let redacted = || "[redacted]".to_string();
        RawSettings {
            listen: Some(self.listen),
            data_dir: Some(self.data_dir.clone()),
            database_url: Some(redact_url(self.database_url.expose())),
            redis_url: self.redis_url.as_ref().map(|u| redact_url(u.expose())),
            redis_prefix: Some(self.redis_prefix.clone()),
            public_url: Some(self.public_url.as_ref().map_or_else(
                || format!("http://localhost:{} (derived)", self.listen.port()),
                |u| u.to_string(),
            )),
            insecure_dev: Some(self.insecure_dev),
            trusted_proxies: Some(self.trusted_proxies.clone()),
            cookie_domain: self.cookie_domain.clone(),
            allowed_return_hosts: Some(self.allowed_return_hosts.clone()),
            verifier_keys: Some(self.verifier_keys.iter().map(|_| redacted()).collect()),
            hash_idle_priority: Some(a.hash_idle_priority),
            session_idle_secs: Some(a.session.idle.whole_seconds()),
            session_absolute_secs: Some(a.session.absolute.whole_seconds()),
            remember_idle_secs: Some(a.remember.idle.whole_seconds()),
            remember_absolute_secs: Some(a.remember.absolute.whole_seconds()),
            argon2_memory_kib: Some(a.argon2.memory_kib),
            argon2_iterations: Some(a.argon2.iterations),
            argon2_parallelism: Some(a.argon2.parallelism),
            hash_threads: Some(a.hash_threads),
            hash_queue: Some(a.hash_queue),
            login_account_free_failures: Some(a.account_throttle.free_failures),
            login_ip_free_failures: Some(a.ip_throttle.free_failures),
            hashing_per_client: Some(a.hashing_per_client),
            max_sessions_per_user: Some(if a.max_sessions_per_user == usize::MAX {
                0
            } else {
                a.max_sessions_per_user
            }),
            unchecked_token_lookups: Some(a.unchecked_lookups_per_sec),
            signups_per_hour: Some(a.signup_limit),
            require_mfa_roles: Some(
                a.mfa_required_roles
                    .iter()
                    .map(|r| r.as_str().to_string())
                    .collect(),
            ),
            require_mfa: Some(a.mfa_required_for_everyone),
            jwt_alg: Some(a.jwt.algorithm.as_str().to_string()),
            hs256_secret: a.jwt.hs256_secret.as_ref().map(|_| redacted()),
            access_token_secs: Some(a.jwt.access_ttl.whole_seconds()),
            jwt_audience: Some(self.jwt_audience.clone().unwrap_or_else(|| {
                format!(
                    "{} (the public URL)",
                    self.public_origin(self.listen.port())
                )
            })),
            refresh_grace_secs: Some(a.jwt.refresh_grace.whole_seconds()),
            secrets_key_file: match &self.secrets {
                SecretsSource::File(p) | SecretsSource::Made(p) => Some(p.clone()),
                SecretsSource::Given(_) | SecretsSource::None => None,
            },
            secrets_key: match &self.secrets {
                SecretsSource::Given(_) => Some(redacted()),
                _ => None,
            },
            metrics_listen: self.metrics_listen,
            header_timeout_secs: Some(self.header_timeout.as_secs()),
            log: Some(self.log.clone()),
            smtp_url: self.smtp_url.as_ref().map(|u| redact_url(u.expose())),
            smtp_password_file: self.smtp_password_file.clone(),
            mail_from: Some(self.mail_from()),
            mail_templates: a.mail_templates.clone(),
            verify_email_ttl_secs: Some(a.verify_email_ttl.whole_seconds()),
            reset_password_ttl_secs: Some(a.reset_password_ttl.whole_seconds()),
            require_verified_email: Some(a.require_verified_email),
            event_retention_days: Some(
                a.event_retention
                    .map_or(0, |d| u32::try_from(d.whole_days()).unwrap_or(u32::MAX)),
            ),
            notify_new_device: Some(a.notify_new_device),
            require_dpop: Some(a.dpop_required),
            dpop_nonce: Some(a.dpop_nonce_required),
            dbsc: Some(
                match a.dbsc {
                    cloakroom::dbsc::DbscMode::Off => "off",
                    cloakroom::dbsc::DbscMode::Optional => "optional",
                    cloakroom::dbsc::DbscMode::Required => "required",
                }
                .into(),
            ),
            dbsc_cookie_secs: Some(a.bound_cookie_lifetime.whole_seconds()),
        }
    }
}

/// `--cookie-domain`, checked: a host name of at least two labels (a browser refuses a cookie for
/// a public suffix, and `Domain=com` must never be asked for), containing the public URL's host,
/// which must be https (the cookie is `Secure`).
fn cookie_domain(raw: &str, public_url: Option<&Url>) -> Result<String, SettingsError> {
    let domain = raw.trim().trim_start_matches('.').to_ascii_lowercase();
    if !is_host_name(&domain) || !domain.contains('.') {
        return Err(SettingsError(format!(
            "--cookie-domain {raw:?} must be a domain such as example.com"
        )));
    }
    let Some(url) = public_url.filter(|u| u.scheme() == "https") else {
        return Err(SettingsError(
            "--cookie-domain needs an https --public-url on a host inside that domain (the \
             shared cookie is Secure)"
                .into(),
        ));
    };
    let host = url.host_str().unwrap_or_default();
    if host != domain && !host.ends_with(&format!(".{domain}")) {
        return Err(SettingsError(format!(
            "--cookie-domain {domain} does not contain the public URL's host {host}: browsers \
             would refuse the cookie"
        )));
    }
    Ok(domain)
}

/// Hides the password (and any query string) of a URL.
fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) if u.password().is_some() || u.query().is_some() => {
            if u.password().is_some() {
                let _ = u.set_password(Some("[redacted]"));
            }
            if u.query().is_some() {
                u.set_query(Some("[redacted]"));
            }
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let s = Settings::resolve(RawSettings::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.auth.session.idle, Duration::minutes(30));
        assert_eq!(s.auth.remember.absolute, Duration::days(30));
        assert_eq!(s.auth.argon2, Argon2Config::default());
        assert_eq!(s.cookie_policy(), CookiePolicy::DEV);
        assert!(s
            .database_url
            .expose()
            .ends_with("cloakroom-data/cloakroom.db"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let flags = RawSettings {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..Default::default()
        };
        let file: RawSettings =
            toml::from_str("listen = \"127.0.0.1:7000\"\nsession_idle_secs = 60\n").unwrap();
        let s = Settings::resolve(flags.or(file).unwrap()).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.auth.session.idle, Duration::seconds(60));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<RawSettings>("lisen = \"x\"").is_err());
    }

    #[test]
    fn plain_http_is_refused_beyond_localhost() {
        let raw = |u: &str| RawSettings {
            public_url: Some(u.into()),
            ..Default::default()
        };
        assert!(Settings::resolve(raw("http://auth.example.com")).is_err());
        assert!(Settings::resolve(raw("http://localhost:8080")).is_ok());
        let s = Settings::resolve(raw("https://auth.example.com")).unwrap();
        assert_eq!(s.cookie_policy(), CookiePolicy::SECURE);
        let mut dev = raw("http://10.1.2.3:8080");
        dev.insecure_dev = Some(true);
        assert!(Settings::resolve(dev).is_ok());
        let open = RawSettings {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..Default::default()
        };
        assert!(Settings::resolve(open).is_err());
    }

    #[test]
    fn a_cookie_domain_must_contain_the_https_public_host() {
        let raw = |url: &str, domain: &str| RawSettings {
            public_url: Some(url.into()),
            cookie_domain: Some(domain.into()),
            allowed_return_hosts: Some(vec!["*.example.com".parse().unwrap()]),
            ..Default::default()
        };
        for (url, domain) in [
            ("https://auth.example.com", "example.com"),
            ("https://auth.example.com", ".Example.com"),
            ("https://example.com", "example.com"),
            ("https://a.b.example.com:8443", "b.example.com"),
        ] {
            let s = Settings::resolve(raw(url, domain)).unwrap_or_else(|e| panic!("{url}: {e}"));
            let policy = s.cookie_policy();
            assert_eq!(policy.name(), cloakroom::DOMAIN_SESSION_COOKIE);
            assert!(policy
                .domain()
                .is_some_and(|d| domain.to_ascii_lowercase().ends_with(d)));
        }
        for (url, domain) in [
            ("https://auth.example.com", "com"),
            ("https://auth.example.com", "other.com"),
            ("https://auth.example.com", "ample.com"),
            ("https://auth.example.com", "auth.example.com.evil"),
            ("https://auth.example.com", "exa mple.com"),
            ("https://auth.example.com", ""),
            ("http://localhost:8080", "localhost"),
            ("http://auth.localhost:8080", "auth.localhost"),
        ] {
            assert!(
                Settings::resolve(raw(url, domain)).is_err(),
                "{url} {domain}"
            );
        }
        let bad_host = toml::from_str::<RawSettings>("allowed_return_hosts = [\"*.com\"]");
        assert!(bad_host.is_err());
    }

    #[test]
    fn config_show_names_every_setting() {
        let shown: toml::Table =
            toml::from_str(&Settings::resolve(RawSettings::default()).unwrap().show()).unwrap();
        let fields = serde_json::to_value(RawSettings::default()).unwrap();
        for field in fields.as_object().unwrap().keys() {
            assert!(shown.contains_key(field), "config show omits {field}");
        }
    }

    #[test]
    fn config_show_redacts_secrets() {
        let s = Settings::resolve(RawSettings {
            database_url: Some("sqlite:///tmp/x.db?key=hunter2".into()),
            ..Default::default()
        })
        .unwrap();
        let shown = s.show();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("session_idle_secs = 1800"));
    }
}
