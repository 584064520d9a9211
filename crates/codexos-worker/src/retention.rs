//! The scheduled retention job: applies each tenant's retention policy,
//! prunes the checkpoint content no execution holds any more, and records
//! every purge on the tenant's audit log.

use codexos_core::now_millis;
use codexos_store::{AuditOutcome, NewAuditEntry, Store};

use crate::WorkerOptions;
use crate::execution::prune_checkpoint_store;

/// One pass over every tenant with a policy. Failures are logged per
/// tenant; the next pass tries again.
pub async fn apply_all(store: &Store, options: &WorkerOptions) {
    let policies = match store.retention_policies().await {
        Ok(policies) => policies,
        Err(err) => return tracing::warn!(error = %err, "cannot read the retention policies"),
    };
    for (tenant, policy) in policies {
        let purged = match store.purge_by_retention(tenant, &policy, now_millis()).await {
            Ok(purged) => purged,
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "cannot apply the retention policy");
                continue;
            }
        };
        if purged.is_empty() {
            continue;
        }
        tracing::info!(%tenant, ?purged, "retention purge");
        if (purged.checkpoints > 0 || purged.executions > 0)
            && let Some(root) = &options.checkpoint_root
        {
            prune_checkpoint_store(store, tenant, root).await;
        }
        let Some(auditor) = &options.auditor else { continue };
        let entry = NewAuditEntry {
            actor: "system".to_owned(),
            action: "retention.purge".to_owned(),
            target: format!("tenant:{tenant}"),
            outcome: AuditOutcome::Success,
            request_id: None,
            details: serde_json::json!({ "purged": purged, "policy": policy }),
        };
        if let Err(err) = auditor.record(tenant, &entry).await {
            tracing::error!(%tenant, error = %err, "cannot audit a retention purge");
        }
    }
}
