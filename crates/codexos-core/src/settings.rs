//! The one typed settings struct of a CodexOS process.
//!
//! Sources, later ones winning: built-in defaults, a TOML file (`--config`
//! or `CODEXOS_CONFIG`), `CODEXOS_*` environment variables (nested keys with
//! `__`, e.g. `CODEXOS_LOG__FORMAT=json`), then command-line flags. Unknown
//! keys are errors wherever they come from: a typo must not silently fall
//! back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The settings a process runs with, validated.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Holds the embedded database, `url`, `owner.key` and future artefacts.
    pub data_dir: PathBuf,
    /// Address the API listens on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`; when absent, SQLite in `data_dir`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub database_url: Option<SecretString>,
    pub log: LogSettings,
    pub server: ServerSettings,
    pub worker: WorkerSettings,
    pub audit: AuditSettings,
    /// Model prices in US dollars per million tokens, by model name, for
    /// the cost accounting of every step. A model without a price costs 0
    /// and its steps say so.
    pub prices: BTreeMap<String, ModelPrice>,
    /// The model servers agents may use, and which of the workers'
    /// environment variables may be sent to each as its API key. A manifest
    /// naming another server, or another variable, is refused: tenants
    /// choose manifests, so they must not choose where the operator's keys
    /// go.
    pub model_endpoints: Vec<ModelEndpoint>,
    /// The master key that wraps the tenants' secret keys.
    pub secrets: SecretsSettings,
    /// The quotas of every tenant without values of its own (an operator
    /// sets those with `codexos tenant quota`).
    pub quotas: crate::Quotas,
    /// The settings file this was loaded from, if any (kept from tools).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// A model server agents may call: a host (`api.openai.com`) or host and
/// port (`127.0.0.1:11434`), and the environment variable holding its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEndpoint {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

impl ModelEndpoint {
    /// Whether a URL's host and port are this endpoint's: the host alone
    /// matches any port, `host:port` only that port.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        match self.host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())) {
            Some((name, wanted)) => name.eq_ignore_ascii_case(host) && wanted.parse() == Ok(port),
            None => self.host.eq_ignore_ascii_case(host),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `codexos_server=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when standard error is not a terminal, human-readable otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// How long a shutdown waits for requests in flight before giving up.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a login session lasts (it is not extended by use).
    #[serde(with = "duration_text")]
    pub session_ttl: Duration,
    /// The URL browsers and identity providers reach this server at, e.g.
    /// `https://codexos.example.com` behind a proxy: single sign-on sends
    /// people back to `{public_url}/v1/sso/callback`. Default: `http://`
    /// and the address the server listens on.
    pub public_url: Option<String>,
    /// Lets a tenant's single sign-on use an identity provider on a
    /// loopback address (127.0.0.0/8, ::1, localhost) over plain HTTP, for
    /// tests and local development. Off: providers are reached over HTTPS
    /// only, and loopback not at all over HTTP.
    pub sso_allow_loopback_http: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// How often a worker proves it is alive.
    #[serde(with = "duration_text")]
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is considered dead; its leases expire.
    #[serde(with = "duration_text")]
    pub lease_timeout: Duration,
    /// How often an idle worker looks for queued executions.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// Executions one worker runs at the same time.
    pub max_concurrent: usize,
    /// Runs tool calls even where the host lacks a sandbox protection; every
    /// result then records which protections were absent. Off unless an
    /// operator turns it on.
    pub allow_weaker_sandbox: bool,
    /// The directories workspaces must lie in (relative paths are resolved
    /// against the directory the process starts in). An execution on any
    /// other directory is refused.
    pub workspace_roots: Vec<PathBuf>,
    /// The newest workspace checkpoints an execution keeps once it ends;
    /// older ones are pruned (rollback and fork need the step's checkpoint).
    pub checkpoints_per_execution: usize,
    /// The most new content (bytes) an execution's kept checkpoints may
    /// hold; the newest is kept whatever its size.
    pub checkpoint_bytes_per_execution: u64,
    /// How often the tenants' retention policies are applied.
    #[serde(with = "duration_text")]
    pub retention_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// The Ed25519 key that signs the audit log's checkpoints; created (mode
    /// 0600) on first start when missing. Default: `audit-signing.key` in
    /// the data directory. Every API server and worker of an installation
    /// must use the same key.
    pub signing_key_file: Option<PathBuf>,
    /// A checkpoint is signed every this many entries of a tenant's log (and
    /// at shutdown, and when a proof needs one).
    pub checkpoint_every: u64,
    /// And at least this often for a log that grew since its last one: the
    /// entries no signed checkpoint covers yet, the only ones that can be
    /// cut from the log's end unseen, are at most this old.
    #[serde(with = "duration_text")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { signing_key_file: None, checkpoint_every: 1000, checkpoint_interval: Duration::from_secs(10) }
    }
}

/// Where the master key comes from (docs/configuration.md). The master key
/// wraps each tenant's data key, which encrypts that tenant's secrets:
/// losing it loses every secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// The key file (32 random bytes, base64, mode 0600); created at first
    /// start when absent. Default: `master.key` in the data directory.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, base64 (e.g. `CODEXOS_SECRETS__MASTER_KEY`);
    /// when set, no key file is read or created.
    #[serde(serialize_with = "serialize_redacted_secret")]
    pub master_key: Option<SecretString>,
    /// Older master keys still accepted for unwrapping data keys, while a
    /// rotation is under way (docs/operations.md).
    pub previous_master_key_files: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".codexos"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            database_url: None,
            log: LogSettings::default(),
            server: ServerSettings::default(),
            worker: WorkerSettings::default(),
            audit: AuditSettings::default(),
            prices: BTreeMap::new(),
            model_endpoints: vec![
                ModelEndpoint { host: "api.openai.com".to_owned(), key_env: Some("OPENAI_API_KEY".to_owned()) },
                ModelEndpoint { host: "api.anthropic.com".to_owned(), key_env: Some("ANTHROPIC_API_KEY".to_owned()) },
            ],
            secrets: SecretsSettings::default(),
            quotas: crate::Quotas::default(),
            config_file: None,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Auto }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            max_body_bytes: 4 * 1024 * 1024,
            session_ttl: Duration::from_secs(12 * 3600),
            public_url: None,
            sso_allow_loopback_http: false,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            lease_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            max_concurrent: 4,
            allow_weaker_sandbox: false,
            workspace_roots: vec![PathBuf::from(".")],
            checkpoints_per_execution: 100,
            checkpoint_bytes_per_execution: 1 << 30,
            retention_interval: Duration::from_secs(600),
        }
    }
}

/// `path` made absolute against the current directory, without touching
/// the file system (the path need not exist yet).
fn absolute(path: &Path) -> Result<PathBuf, SettingsError> {
    std::path::absolute(path)
        .map_err(|err| SettingsError::Invalid(format!("cannot resolve the path {}: {err}", path.display())))
}

/// Which database a URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    Sqlite { path: PathBuf },
    Postgres,
}

/// A setting that cannot be used, with the source and key it came from.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Environment variables under our prefix that are not settings: the CLI
/// reads them (`CODEXOS_HOME` arrives here as the `data_dir` flag), or the
/// test harness does.
const NON_SETTING_VARS: [&str; 4] = ["url", "api_key", "config", "home"];

impl Settings {
    /// Loads settings from the file (if any), the environment and `overrides`
    /// (a serializable struct of the command line's flags; `None` fields are
    /// skipped by giving them `#[serde(skip_serializing_if = "Option::is_none")]`).
    pub fn load(config_file: Option<&Path>, overrides: impl Serialize) -> Result<Self, SettingsError> {
        Self::load_from_env(config_file, overrides, Env::prefixed("CODEXOS_"))
    }

    fn load_from_env(config_file: Option<&Path>, overrides: impl Serialize, env: Env) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            if !path.is_file() {
                return Err(SettingsError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = env
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                !NON_SETTING_VARS.contains(&key.as_str()) && !key.starts_with("test_")
            })
            .split("__");
        figment = figment.merge(env).merge(Serialized::defaults(overrides));
        let mut settings: Settings = figment.extract().map_err(|err| SettingsError::Invalid(one_line(&err)))?;
        settings.validate()?;
        // Paths are made absolute once, here: the sandbox, the lock and the
        // published files must agree on them whatever directory asks.
        settings.data_dir = absolute(&settings.data_dir)?;
        for root in &mut settings.worker.workspace_roots {
            *root = absolute(root)?;
        }
        if let Some(path) = &mut settings.secrets.master_key_file {
            *path = absolute(path)?;
        }
        for path in &mut settings.secrets.previous_master_key_files {
            *path = absolute(path)?;
        }
        settings.config_file = config_file.map(absolute).transpose()?;
        if let Some(path) = &mut settings.audit.signing_key_file {
            *path = absolute(path)?;
        }
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.database_url {
            database_backend(url.expose_secret()).map_err(SettingsError::Invalid)?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(SettingsError::Invalid("data_dir must not be empty".to_owned()));
        }
        if self.server.session_ttl < Duration::from_secs(60) {
            return Err(SettingsError::Invalid("server.session_ttl must be at least a minute".to_owned()));
        }
        if let Some(url) = &self.server.public_url {
            check_public_url(url).map_err(|reason| SettingsError::Invalid(format!("server.public_url: {reason}")))?;
        }
        if self.server.max_body_bytes == 0 {
            return Err(SettingsError::Invalid("server.max_body_bytes must be positive".to_owned()));
        }
        let worker = &self.worker;
        for (key, value) in [
            ("worker.heartbeat_interval", worker.heartbeat_interval),
            ("worker.lease_timeout", worker.lease_timeout),
            ("worker.poll_interval", worker.poll_interval),
            ("worker.retention_interval", worker.retention_interval),
            ("audit.checkpoint_interval", self.audit.checkpoint_interval),
        ] {
            if value.is_zero() {
                return Err(SettingsError::Invalid(format!("{key} must be longer than zero")));
            }
        }
        if worker.lease_timeout <= worker.heartbeat_interval {
            return Err(SettingsError::Invalid(
                "worker.lease_timeout must be longer than worker.heartbeat_interval".to_owned(),
            ));
        }
        if worker.workspace_roots.is_empty() {
            return Err(SettingsError::Invalid("worker.workspace_roots must name at least one directory".to_owned()));
        }
        for endpoint in &self.model_endpoints {
            let valid = !endpoint.host.is_empty()
                && endpoint.host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !valid {
                return Err(SettingsError::Invalid(format!(
                    "model_endpoints: '{}' is not a host or host:port",
                    endpoint.host
                )));
            }
        }
        if worker.checkpoints_per_execution == 0 {
            return Err(SettingsError::Invalid(
                "worker.checkpoints_per_execution must be at least 1 (rollback and fork need checkpoints)".to_owned(),
            ));
        }
        if self.audit.checkpoint_every == 0 {
            return Err(SettingsError::Invalid("audit.checkpoint_every must be at least 1".to_owned()));
        }
        if !(1..=256).contains(&worker.max_concurrent) {
            return Err(SettingsError::Invalid("worker.max_concurrent must be between 1 and 256".to_owned()));
        }
        if self.secrets.master_key_file.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
            return Err(SettingsError::Invalid("secrets.master_key_file must not be empty".to_owned()));
        }
        if self.secrets.master_key.as_ref().is_some_and(|key| key.expose_secret().trim().is_empty()) {
            return Err(SettingsError::Invalid("secrets.master_key must not be empty".to_owned()));
        }
        self.quotas.validate().map_err(|err| SettingsError::Invalid(format!("quotas.{err}")))?;
        for (model, price) in &self.prices {
            let valid = |value: f64| value.is_finite() && value >= 0.0;
            if !valid(price.input_per_million) || !valid(price.output_per_million) {
                return Err(SettingsError::Invalid(format!("prices.\"{model}\": prices must be zero or positive")));
            }
        }
        Ok(())
    }

    /// The audit signing key's file in effect.
    pub fn audit_signing_key_file(&self) -> PathBuf {
        self.audit.signing_key_file.clone().unwrap_or_else(|| self.data_dir.join("audit-signing.key"))
    }

    /// The master key file in effect: the configured one, or `master.key`
    /// in the data directory.
    pub fn master_key_file(&self) -> PathBuf {
        self.secrets.master_key_file.clone().unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// The database URL in effect: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> SecretString {
        match &self.database_url {
            Some(url) => url.clone(),
            None => SecretString::from(format!("sqlite://{}", self.data_dir.join("codexos.db").display())),
        }
    }
}

/// Whether `url` can be the server's public URL: http or https, a host, no
/// credentials, query or fragment (a path is kept, for a proxy's prefix).
pub fn check_public_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|err| format!("'{url}' is not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("'{url}' must start with https:// (or http://)"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{url}' has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("'{url}' must not hold credentials"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("'{url}' must not have a query or a fragment"));
    }
    Ok(())
}

/// Classifies a database URL, or explains why it is not one we can use.
pub fn database_backend(url: &str) -> Result<DatabaseBackend, String> {
    if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("database_url 'sqlite://' needs a file path, e.g. sqlite://./codexos.db".to_owned());
        }
        return Ok(DatabaseBackend::Sqlite { path: PathBuf::from(path) });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url::Url::parse(url).map_err(|err| format!("database_url is not a valid PostgreSQL URL: {err}"))?;
        return Ok(DatabaseBackend::Postgres);
    }
    let scheme = url.split(':').next().unwrap_or_default();
    Err(format!(
        "database_url scheme '{}' is not supported (expected sqlite:// or postgres://)",
        scheme.chars().take(32).collect::<String>()
    ))
}

/// A database URL with any password replaced, fit for logs and `doctor`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_some(&redact_url(url.expose_secret())),
        None => serializer.serialize_none(),
    }
}

fn serialize_redacted_secret<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_some("(redacted)"),
        None => serializer.serialize_none(),
    }
}

fn one_line(err: &figment::Error) -> String {
    err.clone().into_iter().map(|err| err.to_string()).collect::<Vec<_>>().join("; ")
}

/// Durations written as text (`"500ms"`, `"30s"`, `"15m"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*duration).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|err| {
            serde::de::Error::custom(format!("'{text}' is not a duration like 500ms, 30s or 15m: {err}"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[derive(Serialize, Default)]
    struct NoOverrides {}

    fn load_with(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codexos.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        // A private prefix keeps the test independent of the real environment.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("CXTEST{}X{call}_", std::process::id());
        for (key, value) in vars {
            // SAFETY: each call uses variable names of its own (a unique
            // prefix), and std serialises access to the environment.
            unsafe { std::env::set_var(format!("{prefix}{key}"), value) };
        }
        let env = Env::prefixed(&prefix);
        let res = Settings::load_from_env(file.map(|_| path.as_path()), NoOverrides::default(), env);
        for (key, _) in vars {
            // SAFETY: as above.
            unsafe { std::env::remove_var(format!("{prefix}{key}")) };
        }
        res
    }

    #[test]
    fn defaults_are_sqlite_in_the_data_dir() {
        let settings = load_with(None, &[]).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:7420");
        // Relative paths are resolved once, at load.
        let data_dir = std::env::current_dir().unwrap().join(".codexos");
        assert_eq!(settings.data_dir, data_dir);
        assert_eq!(settings.worker.workspace_roots, vec![std::env::current_dir().unwrap()]);
        assert_eq!(
            database_backend(settings.database_url().expose_secret()),
            Ok(DatabaseBackend::Sqlite { path: data_dir.join("codexos.db") })
        );
    }

    #[test]
    fn model_endpoints_come_from_the_environment_too() {
        let settings =
            load_with(None, &[("MODEL_ENDPOINTS", r#"[{host = "127.0.0.1:8080", key_env = "LOCAL_KEY"}]"#)]).unwrap();
        let endpoint = &settings.model_endpoints[0];
        assert_eq!(endpoint.key_env.as_deref(), Some("LOCAL_KEY"));
        assert!(endpoint.matches("127.0.0.1", 8080));
        assert!(!endpoint.matches("127.0.0.1", 8081));
        let any_port = ModelEndpoint { host: "api.openai.com".into(), key_env: None };
        assert!(any_port.matches("API.openai.com", 443));
        assert!(!any_port.matches("api.openai.com.evil.example", 443));
        let roots = load_with(None, &[("WORKER__WORKSPACE_ROOTS", r#"["/srv/ws", "rel"]"#)]).unwrap();
        assert_eq!(
            roots.worker.workspace_roots,
            vec![PathBuf::from("/srv/ws"), std::env::current_dir().unwrap().join("rel")]
        );
        assert!(load_with(None, &[("MODEL_ENDPOINTS", r#"[{host = "a b"}]"#)]).is_err());
    }

    #[test]
    fn file_then_env_then_flags() {
        #[derive(Serialize)]
        struct Flags {
            listen: &'static str,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\n[log]\nformat = \"json\"\n[worker]\nlease_timeout = \"2m\"\n")
            .unwrap();
        let settings =
            Settings::load_from_env(Some(&path), Flags { listen: "127.0.0.1:0" }, Env::prefixed("NOPE_NONE_")).unwrap();
        assert_eq!(settings.listen.port(), 0);
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.worker.lease_timeout, Duration::from_secs(120));

        let settings =
            load_with(Some("[log]\nlevel = \"debug\"\n"), &[("LOG__LEVEL", "warn"), ("DATA_DIR", "/srv/cx")]).unwrap();
        assert_eq!(settings.log.level, "warn");
        assert_eq!(settings.data_dir, PathBuf::from("/srv/cx"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = load_with(Some("listn = \"127.0.0.1:1\"\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        let err = load_with(None, &[("LISTN", "x")]).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("listn"), "{err}");
        let err = load_with(Some("[worker]\nspeed = 1\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("speed"), "{err}");
    }

    #[test]
    fn client_variables_are_not_settings() {
        let settings =
            load_with(None, &[("URL", "http://x"), ("API_KEY", "k"), ("HOME", "/h"), ("TEST_POSTGRES", "p")]).unwrap();
        assert_eq!(settings.listen.port(), 7420);
    }

    #[test]
    fn bad_values_are_named() {
        let err = load_with(None, &[("DATABASE_URL", "mysql://localhost/x")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: database_url scheme 'mysql' is not supported (expected sqlite:// or postgres://)"
        );
        let err = load_with(None, &[("LISTEN", "not-an-address")]).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("listen"), "{err}");
        let err = load_with(Some("[worker]\nlease_timeout = \"soon\"\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("soon") && err.contains("lease_timeout"), "{err}");
        let err = load_with(Some("[worker]\nlease_timeout = \"1s\"\nheartbeat_interval = \"2s\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease_timeout"), "{err}");
        let err = load_with(Some("this is not toml"), &[]).unwrap_err().to_string();
        assert!(err.starts_with("invalid configuration"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Settings::load_from_env(
            Some(Path::new("/nonexistent/c.toml")),
            NoOverrides::default(),
            Env::prefixed("NOPE_"),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "config file /nonexistent/c.toml does not exist");
    }

    #[test]
    fn the_master_key_comes_from_a_file_or_the_environment() {
        let settings = load_with(None, &[]).unwrap();
        assert_eq!(settings.master_key_file(), settings.data_dir.join("master.key"));
        assert!(settings.secrets.master_key.is_none());
        let key = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
        let settings = load_with(
            Some("[secrets]\nmaster_key_file = \"/srv/keys/m.key\"\nprevious_master_key_files = [\"old.key\"]\n"),
            &[("SECRETS__MASTER_KEY", key)],
        )
        .unwrap();
        assert_eq!(settings.master_key_file(), PathBuf::from("/srv/keys/m.key"));
        assert_eq!(settings.secrets.previous_master_key_files, vec![std::env::current_dir().unwrap().join("old.key")]);
        assert_eq!(settings.secrets.master_key.as_ref().unwrap().expose_secret(), key);
        // The key never prints, in Debug or in the effective configuration.
        assert!(!format!("{settings:?}").contains(key));
        assert!(!serde_json::to_string(&settings).unwrap().contains(key));
        let err = load_with(Some("[secrets]\nmaster_key_fil = \"x\"\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("master_key_fil"), "{err}");
    }

    #[test]
    fn quota_defaults_come_from_the_quotas_section() {
        let settings = load_with(None, &[]).unwrap();
        assert_eq!(settings.quotas, crate::Quotas::default());
        let settings = load_with(
            Some("[quotas]\nrequests_per_second = 5\nstorage_bytes = \"2GiB\"\n"),
            &[("QUOTAS__MAX_CONCURRENT_EXECUTIONS", "3")],
        )
        .unwrap();
        assert_eq!(
            settings.quotas,
            crate::Quotas {
                requests_per_second: 5,
                max_concurrent_executions: 3,
                storage_bytes: 2 << 30,
                ..crate::Quotas::default()
            }
        );
        assert_eq!(load_with(None, &[("QUOTAS__STORAGE_BYTES", "1024")]).unwrap().quotas.storage_bytes, 1024);
        let err = load_with(Some("[quotas]\nburst = 0\n"), &[]).unwrap_err().to_string();
        assert_eq!(err, "invalid configuration: quotas.burst must be between 1 and 1000000, not 0");
        let err = load_with(Some("[quotas]\nstorage_bytes = \"lots\"\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("lots"), "{err}");
        let err = load_with(Some("[quotas]\nrequests_per_minute = 5\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("requests_per_minute"), "{err}");
    }

    #[test]
    fn the_public_url_is_checked() {
        let settings = load_with(Some("[server]\npublic_url = \"https://codexos.example.com/\"\n"), &[]).unwrap();
        assert_eq!(settings.server.public_url.as_deref(), Some("https://codexos.example.com/"));
        assert!(!settings.server.sso_allow_loopback_http);
        for (url, reason) in [
            ("codexos.example.com", "is not a URL"),
            ("ftp://codexos.example.com", "must start with https://"),
            ("https://user:pw@codexos.example.com", "credentials"),
            ("https://codexos.example.com/?a=b", "query"),
        ] {
            let err = load_with(None, &[("SERVER__PUBLIC_URL", url)]).unwrap_err().to_string();
            assert!(err.contains("server.public_url") && err.contains(reason), "{url}: {err}");
        }
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/codexos"), "postgres://app:redacted@db:5432/codexos");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
