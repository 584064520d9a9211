//! What an operator does on the installation's database directly (no
//! server, no API caller): `tenant create`, `tenant quota`, `secret
//! rotate-master-key`. Each is an entry on the tenant's audit log like any
//! API action, its actor `operator:ACCOUNT` (the local account that ran the
//! command). Appended unsigned: the next checkpoint a server or worker signs
//! (at most `audit.checkpoint_interval` later) covers it, and an operator's
//! machine needs no signing key.

use codexos_core::TenantId;
use codexos_store::{AuditOutcome, NewAuditEntry, Store};

pub async fn record(
    store: &Store,
    tenant: TenantId,
    action: &str,
    target: String,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let account = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|name| !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "unknown".to_owned());
    let entry = NewAuditEntry {
        actor: format!("operator:{account}"),
        action: action.to_owned(),
        target,
        outcome: AuditOutcome::Success,
        request_id: None,
        details,
    };
    store.append_audit(tenant, &entry).await.map(|_| ()).map_err(|err| {
        anyhow::anyhow!("the change is made, but it could not be recorded on the tenant's audit log: {err}")
    })
}
