//! `codexos up`, `serve` and `worker`: the long-running processes.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use codexos_core::Settings;
use codexos_server::ServerOptions;
use codexos_store::Store;
use codexos_worker::WorkerOptions;
use secrecy::ExposeSecret;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::GlobalArgs;
use crate::commands::secrets::{KeyFileUse, load_keyring};
use crate::data_dir::{DataDir, Lock, OWNER_KEY_FILE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// API and worker in one process.
    Up,
    Serve,
    Worker,
}

impl Mode {
    fn serves_api(self) -> bool {
        self != Mode::Worker
    }

    fn runs_worker(self) -> bool {
        self != Mode::Serve
    }
}

/// Flags that override settings; absent flags leave the other sources be.
#[derive(Serialize)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<std::path::PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
}

pub fn load_settings(
    global: &GlobalArgs,
    listen: Option<String>,
    database_url: Option<String>,
) -> anyhow::Result<Settings> {
    let overrides = Overrides { data_dir: global.data_dir.clone(), listen, database_url };
    Ok(Settings::load(global.config.as_deref(), overrides)?)
}

pub async fn run(
    global: &GlobalArgs,
    mode: Mode,
    listen: Option<String>,
    database_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let settings = load_settings(global, listen, database_url)?;
    crate::logging::init(&settings.log.level, settings.log.format)?;

    // The embedded database belongs to one process at a time; API servers
    // sharing an external database may share a directory for `url`.
    let embedded = settings.database_url.is_none();
    let data_dir = match (mode, embedded) {
        (Mode::Up, _) | (_, true) => Some(DataDir::open(&settings.data_dir, Lock::Exclusive)?),
        (Mode::Serve, false) => Some(DataDir::open(&settings.data_dir, Lock::Shared)?),
        (Mode::Worker, false) => None,
    };

    // The same cached probe the sandbox itself consults: one per process.
    let capabilities = tokio::task::spawn_blocking(|| codexos_sandbox::host_capabilities().clone())
        .await
        .context("sandbox probe failed")?;
    if !capabilities.missing.is_empty() {
        tracing::warn!(missing = ?capabilities.missing, "sandbox protections unavailable on this host");
    }

    let store = Store::connect(settings.database_url().expose_secret()).await?;
    tracing::info!(backend = %store.backend(), "database ready");
    let auditor = open_auditor(&settings, &store)?;
    // The master keys that open the tenants' secrets; an API server creates
    // the key file at first start, a worker only reads it.
    let key_file_use = if mode == Mode::Worker { KeyFileUse::ReadIfPresent } else { KeyFileUse::CreateIfAbsent };
    let keyring = load_keyring(&settings, &store, key_file_use).await?;

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    tokio::spawn(sign_audit_checkpoints(auditor.clone(), settings.audit.checkpoint_interval, shutdown.clone()));

    // A worker that fails stops the whole process: running on without the
    // worker it was asked for would look healthy and do nothing.
    let runner = std::env::current_exe().context("cannot find this program's own path (the sandbox's tool runner)")?;
    let worker = mode.runs_worker().then(|| {
        let options = WorkerOptions {
            heartbeat_interval: settings.worker.heartbeat_interval,
            lease_timeout: settings.worker.lease_timeout,
            poll_interval: settings.worker.poll_interval,
            max_concurrent: settings.worker.max_concurrent,
            runner,
            hidden_paths: platform_paths(&settings),
            allow_weaker_sandbox: settings.worker.allow_weaker_sandbox,
            prices: settings.prices.clone(),
            model_endpoints: settings.model_endpoints.clone(),
            workspace_roots: settings.worker.workspace_roots.clone(),
            checkpoint_root: Some(settings.data_dir.join("checkpoints")),
            checkpoints_per_execution: settings.worker.checkpoints_per_execution,
            checkpoint_bytes_per_execution: settings.worker.checkpoint_bytes_per_execution,
            keyring: keyring.clone(),
            quotas: settings.quotas,
            auditor: Some(auditor.clone()),
            retention_interval: settings.worker.retention_interval,
        };
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let res = codexos_worker::run(store, options, shutdown.clone()).await;
            if res.is_err() {
                shutdown.cancel();
            }
            res
        })
    });

    let served = match (&data_dir, mode.serves_api()) {
        (Some(data_dir), true) => {
            match keyring.clone() {
                Some(keyring) => {
                    let auditor = auditor.clone();
                    serve_api(&settings, data_dir, store.clone(), auditor, keyring, capabilities, shutdown.clone())
                        .await
                }
                // An API server always has a key: it creates one when absent.
                None => Err(anyhow::anyhow!("the API server has no master key")),
            }
        }
        _ => {
            println!("CodexOS worker running ({} database); stop it with Ctrl-C or SIGTERM", store.backend());
            shutdown.cancelled().await;
            Ok(())
        }
    };
    // Whatever ended the API (a signal or an error), the worker stops too.
    shutdown.cancel();
    let worker_result = match worker {
        Some(worker) => worker.await.context("the worker task failed")?.context("the worker failed"),
        None => Ok(()),
    };
    // The last entries get their signed checkpoint before the process goes.
    if let Err(err) = auditor.checkpoint_all().await {
        tracing::error!(error = %err, "cannot sign the audit logs' checkpoints at shutdown");
    }
    store.close().await;
    served?;
    worker_result?;
    Ok(ExitCode::SUCCESS)
}

/// Signs a checkpoint of every tenant's log that grew since its last one,
/// every `interval`, until shutdown: what was appended since the last
/// checkpoint is the part of a log that could be cut from its end without
/// a trace, so it is kept short in time as well as in entries.
async fn sign_audit_checkpoints(auditor: codexos_store::Auditor, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(err) = auditor.checkpoint_all().await {
            tracing::warn!(error = %err, "cannot sign the audit logs' checkpoints; trying again at the next interval");
        }
    }
}

/// The platform's own files, which no tool may see: the data directory, the
/// settings file (it may hold the database password) and an SQLite database
/// kept elsewhere.
fn platform_paths(settings: &Settings) -> Vec<std::path::PathBuf> {
    let mut paths = vec![settings.data_dir.clone(), settings.audit_signing_key_file()];
    paths.extend(settings.config_file.clone());
    if let Ok(codexos_core::DatabaseBackend::Sqlite { path }) =
        codexos_core::settings::database_backend(settings.database_url().expose_secret())
        && let Ok(path) = std::path::absolute(&path)
        && !path.starts_with(&settings.data_dir)
    {
        // The database and its write-ahead log and shared-memory files.
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            paths.push(name.into());
        }
    }
    paths
}

/// The audit log's signer, with the key from its file (created on first start).
pub fn open_auditor(settings: &Settings, store: &Store) -> anyhow::Result<codexos_store::Auditor> {
    let path = settings.audit_signing_key_file();
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create the directory of {}", path.display()))?;
    }
    let key = codexos_audit::SigningKey::load_or_create(&path, AUDIT_KEY_NAME)
        .with_context(|| format!("cannot load the audit signing key {}", path.display()))?;
    Ok(codexos_store::Auditor::new(store.clone(), std::sync::Arc::new(key), settings.audit.checkpoint_every))
}

/// The name the audit checkpoints are signed under.
pub const AUDIT_KEY_NAME: &str = "codexos-audit";

async fn serve_api(
    settings: &Settings,
    data_dir: &DataDir,
    store: Store,
    auditor: codexos_store::Auditor,
    keyring: codexos_secrets::Keyring,
    capabilities: codexos_sandbox::HostCapabilities,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let options = ServerOptions {
        listen: settings.listen,
        max_body_bytes: settings.server.max_body_bytes,
        shutdown_grace: settings.server.shutdown_grace,
        lease_timeout: settings.worker.lease_timeout,
        model_endpoints: settings.model_endpoints.clone(),
        workspace_roots: settings.worker.workspace_roots.clone(),
        keyring,
        session_ttl: settings.server.session_ttl,
        quotas: settings.quotas,
        public_url: settings.server.public_url.clone(),
        sso_allow_loopback_http: settings.server.sso_allow_loopback_http,
    };
    let backend = store.backend();
    // Bind before bootstrapping, so a taken port fails before anything is created.
    let server = codexos_server::bind(&options, store.clone(), auditor, capabilities).await?;
    let url = format!("http://{}", server.local_addr());

    println!("CodexOS {} is up at {url}", env!("CARGO_PKG_VERSION"));
    println!("  data directory  {}", data_dir.path().display());
    println!("  database        {backend}");
    println!("  API reference   {url}/docs");
    if let Some(bootstrap) = store.bootstrap().await? {
        // Printed before it is saved: if saving fails, the key is not lost.
        let key_path = data_dir.path().join(OWNER_KEY_FILE);
        println!();
        println!("First start: created tenant '{}' with owner {}.", bootstrap.tenant.slug, bootstrap.owner_email);
        println!("Owner API key (shown once; saved to {}):", key_path.display());
        println!("  {}", bootstrap.owner_key.expose());
        data_dir.write_owner_key(bootstrap.owner_key.expose())?;
    }
    println!();
    println!("Stop with Ctrl-C or SIGTERM.");
    // Published last: whoever sees the URL can use the key next to it.
    data_dir.write_url(&url)?;
    tracing::info!(%url, "serving");

    let res = server.serve(shutdown).await;
    data_dir.remove_url();
    tracing::info!("server stopped");
    res.context("the server failed")
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
    }
    shutdown.cancel();
}
