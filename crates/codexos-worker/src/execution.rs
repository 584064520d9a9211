//! Running one leased execution: resolve what the engine needs, keep the
//! lease fresh, run the engine, record the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use codexos_core::{ExecutionStatus, SecretName, SignatureStatus, TenantId};
use codexos_engine::manifest::{AgentKind, ApiKeySource};
use codexos_engine::{
    AgentManifest, ExecutionSecrets, ExecutionSetup, Interrupted, JournalError, PauseSignal, RecordedEvent, Totals,
};
use codexos_store::{ControlRequest, Lease, LeasedExecution, NewEvent, Store, StoreError, UsageMetric};
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::WorkerOptions;
use crate::journal::{StoreJournal, engine_totals, store_totals};
use crate::memory::StoreMemory;

/// The events a fresh lease has written: `queued`, then `running`. More
/// means the execution ran before (a worker died, or it was paused) and
/// resumes from its timeline.
const EVENTS_OF_A_FRESH_START: i64 = 2;
pub async fn run_leased(
    store: Store,
    leased: LeasedExecution,
    options: Arc<WorkerOptions>,
    shutdown: CancellationToken,
) {
    let execution_id = leased.execution.id;
    let span = tracing::info_span!("execution", execution = %execution_id, tenant = %leased.lease.tenant);
    tracing::info!(parent: &span, agent = %leased.execution.agent_name, "execution started");
    let tenant_label = tenant_label(&store, leased.lease.tenant).await;
    metrics::counter!("codexos_executions_started_total", "tenant" => tenant_label.clone()).increment(1);

    // The lease is renewed in the background, and requests to pause or
    // cancel are watched for; losing the lease stops the engine.
    let stop = shutdown.child_token();
    let controls = Controls { stop: stop.clone(), pause: PauseSignal::default(), cancel: CancellationToken::new() };
    let renewer = tokio::spawn(keep_lease(store.clone(), leased.lease.clone(), Arc::clone(&options), controls.clone()));

    let lease = leased.lease.clone();
    let history = match load_history(&store, &leased).await {
        Ok(history) => history,
        Err(err) => {
            // The timeline cannot be read now; the lease lapses and another
            // attempt follows, rather than a run that could repeat effects.
            tracing::error!(parent: &span, error = %err, "cannot read the timeline to resume from");
            stop.cancel();
            let _ = renewer.await;
            return;
        }
    };
    let mut redactor = codexos_engine::Redactor::default();
    let ended = match prepare(&store, &leased, &options, &controls, history).await {
        Err(failure) => Ok(failure),
        Ok(setup) => {
            redactor = setup.secrets.redactor.clone();
            let journal = StoreJournal { store: store.clone(), lease: lease.clone(), redactor: redactor.clone() };
            let mut journal = MeteredJournal::new(journal, tenant_label.clone(), &leased.execution.totals);
            let memory = StoreMemory {
                store: store.clone(),
                tenant: lease.tenant,
                agent_name: leased.execution.agent_name.clone(),
                execution_id,
                retention: setup.manifest.memory_retention,
            };
            codexos_engine::run_execution(setup, &mut journal, &memory).await.map(|outcome| {
                journal.count_cpu(&outcome.totals);
                (outcome.status, outcome.summary, outcome.totals)
            })
        }
    };
    stop.cancel();
    let _ = renewer.await;

    match ended {
        Ok((status, mut summary, totals)) => {
            redactor.redact_json(&mut summary);
            match store.finish_execution(&lease, status, &summary, &store_totals(&totals)).await {
                Ok(_) => {
                    metrics::counter!(
                        "codexos_executions_finished_total",
                        "status" => status.as_str(),
                        "tenant" => tenant_label.clone()
                    )
                    .increment(1);
                    tracing::info!(parent: &span, %status, steps = totals.steps, "execution finished");
                    apply_checkpoint_retention(&store, &lease, &options).await;
                }
                Err(StoreError::LeaseLost) => {
                    tracing::warn!(parent: &span, "execution finished here, but its lease had passed to another worker")
                }
                Err(err) => tracing::error!(parent: &span, error = %err, "cannot record the execution's end"),
            }
        }
        Err(Interrupted::Paused) => match store.park_execution(&lease, ExecutionStatus::Paused, &[]).await {
            Ok(()) => tracing::info!(parent: &span, "execution paused"),
            Err(err) => tracing::warn!(parent: &span, error = %err, "cannot record the pause"),
        },
        Err(Interrupted::Park { status, events }) => {
            let events: Vec<NewEvent> = events
                .iter()
                .map(|event| {
                    let mut payload = event.payload();
                    redactor.redact_json(&mut payload);
                    NewEvent { kind: event.kind().to_owned(), payload }
                })
                .collect();
            match store.park_execution(&lease, status, &events).await {
                Ok(()) => tracing::info!(parent: &span, %status, "execution parked"),
                Err(err) => tracing::warn!(parent: &span, error = %err, "cannot park the execution"),
            }
        }
        Err(Interrupted::Shutdown | Interrupted::Cancelled) if shutdown.is_cancelled() => {
            tracing::info!(parent: &span, "execution interrupted by shutdown; its lease will expire")
        }
        Err(Interrupted::Shutdown | Interrupted::Cancelled) => {
            tracing::warn!(parent: &span, "execution stopped: its lease was lost")
        }
        Err(Interrupted::Journal(JournalError::Storage(error))) => {
            // The timeline cannot take the step: end the execution with the
            // reason rather than leave it to expire and be retried forever.
            tracing::error!(parent: &span, %error, "cannot record a step; failing the execution");
            let totals = match store.execution(lease.tenant, lease.execution_id).await {
                Ok(execution) => execution.totals,
                Err(_) => leased.execution.totals,
            };
            let outcome =
                json!({ "reason": "journal_error", "error": format!("a step could not be recorded: {error}") });
            if let Err(err) = store.finish_execution(&lease, ExecutionStatus::Failed, &outcome, &totals).await {
                tracing::error!(parent: &span, error = %err, "cannot record the execution's end");
            }
        }
        Err(Interrupted::Journal(JournalError::LeaseLost)) => {
            tracing::warn!(parent: &span, "execution stopped: its lease passed to another worker")
        }
    }
}

/// What the engine needs, or the failure to record when it cannot start.
async fn prepare(
    store: &Store,
    leased: &LeasedExecution,
    options: &WorkerOptions,
    controls: &Controls,
    history: Vec<RecordedEvent>,
) -> Result<ExecutionSetup, (ExecutionStatus, serde_json::Value, Totals)> {
    // What was recorded so far stays counted.
    let totals = engine_totals(&leased.execution.totals);
    let failed =
        |reason: &str, error: String| (ExecutionStatus::Failed, json!({ "reason": reason, "error": error }), totals);
    check_cpu_quota(store, leased.lease.tenant, &options.quotas)
        .await
        .map_err(|error| failed("quota_exceeded", error))?;
    // The manifest is what was registered, and its signature still holds,
    // before anything in it is used.
    check_manifest_hash(leased).map_err(|error| failed("manifest_tampered", error))?;
    let manifest = AgentManifest::parse(&leased.manifest)
        .map_err(|err| failed("invalid_manifest", format!("the stored manifest no longer parses: {err}")))?;
    check_signature(store, leased, &manifest).await.map_err(|(reason, error)| failed(reason, error))?;
    let requested = Path::new(&leased.execution.workspace);
    let parent_in_roots = requested.parent().and_then(|parent| parent.canonicalize().ok()).is_some_and(|parent| {
        options.workspace_roots.iter().filter_map(|root| root.canonicalize().ok()).any(|root| parent.starts_with(root))
    });
    // Only while the fork's workspace is still to be made: a fork whose
    // workspace disappeared later fails like any execution.
    let fork_pending = history
        .iter()
        .rev()
        .find(|event| matches!(event.kind.as_str(), "rollback_requested" | "rolled_back" | "rollback_failed"))
        .is_some_and(|event| event.kind == "rollback_requested" && event.payload.get("fork_of").is_some());
    if leased.execution.parent.is_some() && fork_pending && !requested.exists() && parent_in_roots {
        // A fork's workspace is made from its parent's checkpoint: an empty
        // directory first, checked like any workspace below.
        std::fs::create_dir(requested).map_err(|err| {
            failed("invalid_workspace", format!("cannot create the fork's workspace {}: {err}", requested.display()))
        })?;
    }
    let workspace = check_workspace(requested, &options.workspace_roots, &options.hidden_paths)
        .map_err(|error| failed("invalid_workspace", error))?;
    // Checked at registration too; checked again because the operator's list
    // may have changed since, and this is where keys are read.
    manifest
        .check_model_endpoint(&options.model_endpoints)
        .map_err(|problem| failed("model_not_allowed", format!("{}: {}", problem.key, problem.reason)))?;
    // Only the secrets this manifest names are opened, and only here.
    let opened = open_secrets(store, options.keyring.as_ref(), leased.lease.tenant, &manifest)
        .await
        .map_err(|(reason, error)| failed(reason, error))?;
    let api_key = match &manifest.kind {
        AgentKind::Llm(llm) => match &llm.model.api_key {
            None => None,
            Some(ApiKeySource::Env(variable)) => match std::env::var(variable) {
                Ok(key) if !key.is_empty() => Some(SecretString::from(key)),
                _ => {
                    return Err(failed(
                        "missing_api_key",
                        format!("the model's API key variable {variable} is not set in the worker's environment"),
                    ));
                }
            },
            Some(ApiKeySource::Secret(name)) => opened.value(name),
        },
        AgentKind::Workflow(_) => None,
    };
    let secrets = ExecutionSecrets {
        env: manifest
            .secrets
            .iter()
            .filter_map(|binding| Some((binding.variable.clone(), opened.value(binding.secret.as_str())?)))
            .collect(),
        redactor: codexos_engine::Redactor::new(&opened.values),
    };
    let price = match &manifest.kind {
        AgentKind::Llm(llm) => options.prices.get(&llm.model.name).copied(),
        AgentKind::Workflow(_) => None,
    };
    let policy = crate::policy::gate(store, leased, &manifest, &workspace)
        .await
        .map_err(|error| failed("policy_error", error))?;
    Ok(ExecutionSetup {
        task: leased.execution.task.clone(),
        manifest,
        workspace,
        runner: options.runner.clone(),
        hidden_paths: options.hidden_paths.clone(),
        allow_missing_protections: options.allow_weaker_sandbox,
        api_key,
        secrets,
        price,
        shutdown: controls.stop.clone(),
        pause: controls.pause.clone(),
        cancel: controls.cancel.clone(),
        history,
        totals: engine_totals(&leased.execution.totals),
        // One store per tenant: checkpoints share content within a tenant only.
        checkpoints: options.checkpoint_root.as_ref().map(|root| root.join(leased.lease.tenant.to_string())),
        policy: Some(policy),
    })
}

/// The stored manifest must have the SHA-256 its version recorded when it
/// was registered, and the one the execution recorded when it was created:
/// a manifest changed in the database since is not run.
fn check_manifest_hash(leased: &LeasedExecution) -> Result<(), String> {
    let execution = &leased.execution;
    let found = codexos_engine::signing::manifest_sha256(&leased.manifest);
    let recorded = [&leased.version_manifest_sha256, &execution.manifest_sha256];
    match recorded.into_iter().find(|recorded| **recorded != found) {
        None => Ok(()),
        Some(recorded) => Err(format!(
            "the stored manifest of {} {} was changed after it was registered: its SHA-256 is {found}, not {recorded}",
            execution.agent_name, execution.agent_version
        )),
    }
}

/// A signed version runs only while its signature matches the manifest
/// and the key that made it is still registered, not revoked, and (for a
/// version registered as `verified`) still trusted by the tenant. The
/// stored signature status must match what the manifest carries.
async fn check_signature(
    store: &Store,
    leased: &LeasedExecution,
    manifest: &AgentManifest,
) -> Result<(), (&'static str, String)> {
    let execution = &leased.execution;
    let what = format!("{} {}", execution.agent_name, execution.agent_version);
    let tampered = |error: String| ("manifest_tampered", error);
    let signature = match (execution.signature_status, &manifest.signature) {
        (SignatureStatus::Unsigned, None) => return Ok(()),
        (SignatureStatus::Unsigned, Some(_)) => {
            return Err(tampered(format!("{what} was registered unsigned, but its stored manifest is signed now")));
        }
        (status, None) => {
            return Err(tampered(format!("{what} was registered {status}, but its stored manifest has no signature")));
        }
        (_, Some(signature)) => signature,
    };
    if execution.publisher_key_id.as_ref() != Some(&signature.publisher) {
        return Err(tampered(format!(
            "the stored manifest of {what} is signed by key {}, not by the key it was registered with",
            signature.publisher
        )));
    }
    let untrusted = |error: String| ("publisher_untrusted", error);
    let key = match store.publisher_key(leased.lease.tenant, &signature.publisher).await {
        Ok(key) => key,
        Err(StoreError::NotFound(_)) => {
            return Err(untrusted(format!("key {} that signed {what} is not registered", signature.publisher)));
        }
        Err(err) => {
            return Err(untrusted(format!("cannot read key {} that signed {what}: {err}", signature.publisher)));
        }
    };
    if let Some(revoked_at) = key.revoked_at {
        return Err(untrusted(format!(
            "key {} ({}) that signed {what} was revoked on {}",
            key.key_id,
            key.name,
            codexos_core::format_millis(revoked_at)
        )));
    }
    if execution.signature_status == SignatureStatus::Verified && !key.trusted {
        return Err(untrusted(format!("key {} ({}) that signed {what} is no longer trusted", key.key_id, key.name)));
    }
    let public_key = codexos_engine::signing::PublicKey::parse(&key.public_key)
        .map_err(|err| untrusted(format!("key {} that signed {what} cannot be read: {err}", key.key_id)))?;
    codexos_engine::signing::verify_signature(&leased.manifest, signature, &public_key)
        .map_err(|err| tampered(format!("{what}: {err}")))
}

/// The tenant's slug, for metrics labels (its id if it cannot be read).
async fn tenant_label(store: &Store, tenant: TenantId) -> String {
    match store.tenant(tenant).await {
        Ok(found) => found.slug.to_string(),
        Err(_) => tenant.to_string(),
    }
}

/// An execution does not start, or resume, once its tenant used the
/// month's sandbox CPU (`cpu_seconds_per_month`). One that is running when
/// the quota is reached finishes: its CPU still counts. A quota that cannot
/// be read stops nothing (logged).
async fn check_cpu_quota(store: &Store, tenant: TenantId, defaults: &codexos_core::Quotas) -> Result<(), String> {
    let now = codexos_core::now_millis();
    let period = codexos_core::UsagePeriod::of(now);
    let read = async {
        let quotas = store.tenant_quotas(tenant).await?.over(defaults);
        let used_ms = store.usage(tenant, period).await?.get(UsageMetric::CpuMs.as_str()).copied().unwrap_or(0);
        Ok::<_, StoreError>((quotas, used_ms))
    };
    let (quotas, used_ms) = match read.await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the tenant's CPU quota; starting anyway");
            return Ok(());
        }
    };
    let limit_ms = i64::try_from(quotas.cpu_seconds_per_month.saturating_mul(1000)).unwrap_or(i64::MAX);
    if used_ms < limit_ms {
        return Ok(());
    }
    Err(format!(
        "the tenant used {} of its {} sandbox CPU seconds this month (cpu_seconds_per_month); the quota renews on {}",
        used_ms / 1000,
        quotas.cpu_seconds_per_month,
        codexos_core::format_millis(period.next().start_millis())
    ))
}

/// The store's journal, counting the sandbox CPU of each step in the
/// tenant's metrics as it is recorded (the store counts it in the tenant's
/// usage in the same transaction).
struct MeteredJournal {
    inner: StoreJournal,
    tenant: String,
    cpu_ms: u64,
}

impl MeteredJournal {
    fn new(inner: StoreJournal, tenant: String, recorded: &codexos_store::ExecutionTotals) -> Self {
        Self { inner, tenant, cpu_ms: u64::try_from(recorded.cpu_ms).unwrap_or(0) }
    }
}

impl codexos_engine::Journal for MeteredJournal {
    async fn append(&mut self, events: &[codexos_engine::TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        self.inner.append(events, totals).await?;
        self.count_cpu(totals);
        Ok(())
    }
}

impl MeteredJournal {
    /// Counts what `totals` add to the CPU counted so far.
    fn count_cpu(&mut self, totals: &Totals) {
        let added = totals.cpu_ms.saturating_sub(self.cpu_ms);
        if added > 0 {
            metrics::counter!("codexos_sandbox_cpu_milliseconds_total", "tenant" => self.tenant.clone())
                .increment(added);
        }
        self.cpu_ms = self.cpu_ms.max(totals.cpu_ms);
    }
}

/// The tenant secrets an execution opened, by name.
struct OpenedSecrets {
    values: Vec<(String, SecretString)>,
}

impl OpenedSecrets {
    fn value(&self, name: &str) -> Option<SecretString> {
        self.values.iter().find(|(opened, _)| opened == name).map(|(_, value)| value.clone())
    }
}

/// Opens the secrets the manifest names (the model's key, `[secrets]`)
/// with the tenant's data key; a missing one is the failure's reason,
/// named: `missing_api_key` for the model's key, `missing_secret` otherwise.
async fn open_secrets(
    store: &Store,
    keyring: Option<&codexos_secrets::Keyring>,
    tenant: TenantId,
    manifest: &AgentManifest,
) -> Result<OpenedSecrets, (&'static str, String)> {
    let api_key_secret = match &manifest.kind {
        AgentKind::Llm(llm) => match &llm.model.api_key {
            Some(ApiKeySource::Secret(name)) => Some(name.as_str()),
            _ => None,
        },
        AgentKind::Workflow(_) => None,
    };
    let mut wanted: Vec<(&str, Option<&str>)> = api_key_secret.map(|name| (name, None)).into_iter().collect();
    for binding in &manifest.secrets {
        if !wanted.iter().any(|(name, _)| *name == binding.secret.as_str()) {
            wanted.push((binding.secret.as_str(), Some(binding.variable.as_str())));
        }
    }
    let mut opened = OpenedSecrets { values: Vec::new() };
    if wanted.is_empty() {
        return Ok(opened);
    }
    let unavailable = |error: String| ("secret_unavailable", error);
    let Some(keyring) = keyring else {
        return Err(unavailable(
            "this worker has no master key to open the tenant's secrets (its secrets.master_key_file does not exist)"
                .to_owned(),
        ));
    };
    let stored_key =
        store.data_key(tenant).await.map_err(|err| unavailable(format!("cannot read the tenant's secrets: {err}")))?;
    let data_key = match &stored_key {
        None => None,
        Some(stored) => {
            let wrapped = codexos_secrets::WrappedKey {
                master_key_id: stored.master_key_id.clone(),
                nonce: stored.nonce.clone(),
                ciphertext: stored.wrapped_key.clone(),
            };
            Some(keyring.unwrap(tenant, &wrapped).map_err(|err| unavailable(err.to_string()))?)
        }
    };
    for (name, variable) in wanted {
        let missing = || match variable {
            None => (
                "missing_api_key",
                format!("the model's API key secret {name} is not set in this tenant (codexos secret set {name})"),
            ),
            Some(variable) => (
                "missing_secret",
                format!(
                    "the secret {name} ([secrets] {variable}) is not set in this tenant (codexos secret set {name})"
                ),
            ),
        };
        let secret_name = SecretName::parse(name).map_err(|err| unavailable(err.to_string()))?;
        let Some(data_key) = &data_key else { return Err(missing()) };
        let sealed = store
            .sealed_secret(tenant, &secret_name)
            .await
            .map_err(|err| unavailable(format!("cannot read the secret {name}: {err}")))?;
        let Some((_, sealed)) = sealed else { return Err(missing()) };
        let sealed = codexos_secrets::Sealed { nonce: sealed.nonce, ciphertext: sealed.ciphertext };
        let value = data_key.open(tenant, &secret_name, &sealed).map_err(|err| unavailable(err.to_string()))?;
        opened.values.push((name.to_owned(), value));
    }
    Ok(opened)
}

/// The timeline so far, when the execution has run before.
async fn load_history(store: &Store, leased: &LeasedExecution) -> Result<Vec<RecordedEvent>, StoreError> {
    if leased.last_seq <= EVENTS_OF_A_FRESH_START {
        return Ok(Vec::new());
    }
    let timeline = store.timeline(leased.lease.tenant, leased.execution.id).await?;
    Ok(timeline.into_iter().map(|event| RecordedEvent { kind: event.kind, payload: event.payload }).collect())
}

/// A workspace must be an existing directory inside a workspace root (with
/// symbolic links resolved), and must neither contain nor lie inside one of
/// the platform's own paths.
fn check_workspace(workspace: &Path, roots: &[PathBuf], hidden: &[PathBuf]) -> Result<PathBuf, String> {
    let resolved = workspace
        .canonicalize()
        .map_err(|err| format!("workspace {} cannot be used on this worker: {err}", workspace.display()))?;
    if !resolved.is_dir() {
        return Err(format!("workspace {} is not a directory", workspace.display()));
    }
    if resolved == Path::new("/") {
        return Err("the root directory cannot be a workspace".to_owned());
    }
    let inside_a_root = roots.iter().filter_map(|root| root.canonicalize().ok()).any(|root| resolved.starts_with(root));
    if !inside_a_root {
        return Err(format!("workspace {} is outside this worker's workspace roots", resolved.display()));
    }
    for hidden in hidden.iter().filter_map(|path| path.canonicalize().ok()) {
        if hidden.starts_with(&resolved) || resolved.starts_with(&hidden) {
            return Err(format!(
                "workspace {} overlaps the platform's data directory {}",
                workspace.display(),
                hidden.display()
            ));
        }
    }
    Ok(resolved)
}

/// Checkpoints younger than this are never pruned: one may have been taken
/// by a running execution and not indexed yet.
const FRESH_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Once an execution ends: keeps its newest checkpoints, and prunes from
/// the tenant's store what no execution holds any more. Failures are
/// logged; the next end prunes again.
async fn apply_checkpoint_retention(store: &Store, lease: &Lease, options: &WorkerOptions) {
    let Some(root) = &options.checkpoint_root else { return };
    let keep = i64::try_from(options.checkpoints_per_execution).unwrap_or(i64::MAX);
    let keep_bytes = i64::try_from(options.checkpoint_bytes_per_execution).unwrap_or(i64::MAX);
    if let Err(err) = store.trim_checkpoints(lease.tenant, lease.execution_id, keep, keep_bytes).await {
        tracing::warn!(execution = %lease.execution_id, error = %err, "cannot trim the checkpoints");
        return;
    }
    prune_checkpoint_store(store, lease.tenant, root).await;
}

/// Removes from the tenant's checkpoint store on this host what no
/// execution holds any more (the index says which it holds).
pub(crate) async fn prune_checkpoint_store(store: &Store, tenant: TenantId, root: &Path) {
    let held = match store.tenant_checkpoints(tenant).await {
        Ok(held) => held,
        Err(err) => return tracing::warn!(error = %err, "cannot list the tenant's checkpoints"),
    };
    let dir = root.join(tenant.to_string());
    let pruned = tokio::task::spawn_blocking(move || -> Result<u64, codexos_checkpoint::Error> {
        if !dir.exists() {
            return Ok(0);
        }
        let checkpoints = codexos_checkpoint::Store::open(&dir)?;
        let fresh_since = codexos_core::now_millis().saturating_sub(FRESH_CHECKPOINT.as_millis() as i64).max(0) as u64;
        // Only what this store has: the index also names checkpoints kept
        // on other workers' hosts, which a prune here must not trip on.
        let keep: Vec<codexos_checkpoint::CheckpointId> = checkpoints
            .checkpoints()?
            .into_iter()
            .filter(|checkpoint| checkpoint.created_at_ms >= fresh_since || held.contains(&checkpoint.id.to_string()))
            .map(|checkpoint| checkpoint.id)
            .collect();
        Ok(checkpoints.prune(&keep)?.checkpoints)
    })
    .await;
    match pruned {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(%tenant, removed, "old checkpoints pruned"),
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot prune the checkpoint store"),
        Err(_) => tracing::warn!("the prune thread ended abnormally"),
    }
}

/// The signals a running execution listens to.
#[derive(Clone)]
struct Controls {
    /// The worker stops, or the lease was lost: leave the execution as it is.
    stop: CancellationToken,
    pause: PauseSignal,
    cancel: CancellationToken,
}

/// Renews the lease every third of its timeout and polls for pause and
/// cancel requests at the worker's poll interval, until `stop`.
async fn keep_lease(store: Store, lease: Lease, options: Arc<WorkerOptions>, controls: Controls) {
    let mut renew = tokio::time::interval(options.lease_timeout / 3);
    renew.tick().await;
    let mut poll = tokio::time::interval(options.poll_interval);
    let lost = |controls: &Controls| {
        tracing::warn!(execution = %lease.execution_id, "lease lost; stopping the execution");
        controls.stop.cancel();
    };
    loop {
        tokio::select! {
            () = controls.stop.cancelled() => return,
            _ = renew.tick() => match store.renew_lease(&lease, options.lease_timeout).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost) => return lost(&controls),
                Err(err) => tracing::warn!(execution = %lease.execution_id, error = %err, "cannot renew the lease"),
            },
            _ = poll.tick() => match store.pending_control(&lease).await {
                Ok(Some(ControlRequest::Pause)) => controls.pause.set(true),
                Ok(Some(ControlRequest::Cancel)) => controls.cancel.cancel(),
                // A pause withdrawn before the loop reached a step boundary.
                Ok(None) => controls.pause.set(false),
                Err(StoreError::LeaseLost) => return lost(&controls),
                Err(err) => tracing::warn!(execution = %lease.execution_id, error = %err, "cannot read control requests"),
            },
        }
    }
}
