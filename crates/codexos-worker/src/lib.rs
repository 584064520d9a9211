//! The worker: the process side that runs executions.
//!
//! A worker registers itself in the store and proves it is alive with
//! heartbeats. It leases queued executions (at most `max_concurrent` at a
//! time), keeps each lease fresh while the engine runs it, records the
//! engine's timeline through the store, and finishes the execution with its
//! outcome. A lease held by a worker that stops renewing expires after the
//! lease timeout, which is how another worker takes over.

mod execution;
pub mod journal;
mod memory;
mod policy;
mod retention;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use codexos_core::now_millis;
use codexos_core::settings::ModelPrice;
use codexos_store::{Store, StoreError, WorkerId};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a worker paces itself and what its executions may use.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
    /// How often an idle worker looks for queued executions.
    pub poll_interval: Duration,
    pub max_concurrent: usize,
    /// The binary that runs file tools inside the sandbox (this one).
    pub runner: PathBuf,
    /// Host paths no tool may see, such as the data directory.
    pub hidden_paths: Vec<PathBuf>,
    pub allow_weaker_sandbox: bool,
    /// Dollars per million tokens, by model name.
    pub prices: BTreeMap<String, ModelPrice>,
    /// The model servers agents may call, and the key variable of each.
    pub model_endpoints: Vec<codexos_core::ModelEndpoint>,
    /// The directories workspaces must lie in.
    pub workspace_roots: Vec<PathBuf>,
    /// Where checkpoint stores live (one per tenant below it), or `None` to
    /// take no checkpoints.
    pub checkpoint_root: Option<PathBuf>,
    /// The newest checkpoints each execution keeps once it ends; older
    /// ones are pruned from the tenant's store.
    pub checkpoints_per_execution: usize,
    /// The most new content an execution's kept checkpoints may hold.
    pub checkpoint_bytes_per_execution: u64,
    /// The master keys, to open the tenants' data keys (and with them the
    /// secrets an execution's manifest names); `None` on a worker without
    /// a key, which fails the executions that name a secret.
    pub keyring: Option<codexos_secrets::Keyring>,
    /// The quotas of tenants without values of their own: an execution
    /// whose tenant used its month's CPU fails when it starts or resumes.
    pub quotas: codexos_core::Quotas,
    /// Records retention purges on the tenants' audit logs.
    pub auditor: Option<codexos_store::Auditor>,
    /// How often the tenants' retention policies are applied.
    pub retention_interval: Duration,
}

/// Runs a worker until `shutdown` is cancelled, then deregisters it.
/// Executions in flight are interrupted and left leased: their leases
/// expire and another worker takes them.
pub async fn run(store: Store, options: WorkerOptions, shutdown: CancellationToken) -> Result<(), StoreError> {
    let hostname = hostname();
    let worker = store.register_worker(&hostname, std::process::id()).await?;
    tracing::info!(worker = %worker.0, %hostname, "worker registered");
    let options = Arc::new(options);
    let mut heartbeat = tokio::time::interval(options.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(options.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Expired notes of the agents' semantic memory are purged on schedule.
    let mut purge = tokio::time::interval(MEMORY_PURGE_INTERVAL);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(options.retention_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(Semaphore::new(options.max_concurrent));
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = heartbeat.tick() => beat(&store, &worker, &hostname).await,
            _ = purge.tick() => purge_expired_memories(&store).await,
            _ = retention.tick() => retention::apply_all(&store, &options).await,
            _ = poll.tick() => lease_while_free(&store, &worker, &options, &slots, &mut running, &shutdown).await,
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(err) = done {
                    tracing::error!(error = %err, "an execution task panicked");
                }
                // A slot is free: look for more work at once.
                lease_while_free(&store, &worker, &options, &slots, &mut running, &shutdown).await;
            }
        }
    }
    // The executions notice the shutdown at their next step or tool call.
    while running.join_next().await.is_some() {}
    // Workers that died without deregistering are removed too, once they have
    // been silent for ten lease timeouts: nothing can still depend on them.
    let long_dead = now_millis() - 10 * millis(options.lease_timeout);
    store.deregister_worker(&worker, long_dead).await?;
    tracing::info!(worker = %worker.0, "worker stopped");
    Ok(())
}

/// Leases queued executions while this worker has free slots.
async fn lease_while_free(
    store: &Store,
    worker: &WorkerId,
    options: &Arc<WorkerOptions>,
    slots: &Arc<Semaphore>,
    running: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let Ok(slot) = Arc::clone(slots).try_acquire_owned() else { return };
        match store.lease_next_execution(worker, options.lease_timeout).await {
            Ok(Some(leased)) => {
                let (store, options, shutdown) = (store.clone(), Arc::clone(options), shutdown.clone());
                running.spawn(async move {
                    execution::run_leased(store, leased, options, shutdown).await;
                    drop(slot);
                });
            }
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot lease an execution");
                return;
            }
        }
    }
}

/// How often a worker deletes expired memory notes. Every worker does it;
/// the deletes are idempotent, and recall never returns an expired note.
const MEMORY_PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);

async fn purge_expired_memories(store: &Store) {
    match store.purge_expired_memories().await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "expired memory notes purged"),
        Err(err) => tracing::warn!(error = %err, "cannot purge expired memory notes"),
    }
}

async fn beat(store: &Store, worker: &WorkerId, hostname: &str) {
    if let Err(err) = store.heartbeat_worker(worker, hostname, std::process::id()).await {
        tracing::warn!(worker = %worker.0, error = %err, "heartbeat failed");
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
