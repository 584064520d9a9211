//! The worker: the process side that runs executions.
//!
//! A worker registers itself in the store and proves it is alive with
//! heartbeats; an execution lease held by a worker whose heartbeat stops
//! expires after the lease timeout, which is how another worker takes over.
//! Running executions (lease, agent loop, events) arrives with the agent
//! engine; until then a worker registers and heartbeats, which is what
//! `/health/detailed` reports as workers alive.

use std::time::Duration;

use codexos_core::now_millis;
use codexos_store::{Store, StoreError, WorkerId};
use tokio_util::sync::CancellationToken;

/// How a worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
}

/// Runs a worker until `shutdown` is cancelled, then deregisters it.
pub async fn run(store: Store, options: WorkerOptions, shutdown: CancellationToken) -> Result<(), StoreError> {
    let hostname = hostname();
    let worker = store.register_worker(&hostname, std::process::id()).await?;
    tracing::info!(worker = %worker.0, %hostname, "worker registered");
    let mut heartbeat = tokio::time::interval(options.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_ms = millis(options.lease_timeout);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = heartbeat.tick() => beat(&store, &worker, &hostname).await,
        }
    }
    // Workers that died without deregistering are removed too, once they have
    // been silent for ten lease timeouts: nothing can still depend on them.
    let long_dead = now_millis() - 10 * lease_ms;
    store.deregister_worker(&worker, long_dead).await?;
    tracing::info!(worker = %worker.0, "worker stopped");
    Ok(())
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
