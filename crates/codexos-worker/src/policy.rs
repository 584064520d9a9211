//! The tenant's policy for one execution: its current bundle compiled (or
//! the default one), and the facts about the execution that every
//! decision's input carries (docs/policy.md).

use std::path::Path;

use codexos_engine::AgentManifest;
use codexos_engine::policy::{PolicyGate, PolicySource, agent_facts, signature_facts};
use codexos_policy::{Bundle, Facts, Policy, TenantFacts, UserFacts};
use codexos_store::{LeasedExecution, Store};

/// The policy gate of a leased execution. A policy that cannot be read or
/// compiled fails the execution: no call runs unchecked.
pub(crate) async fn gate(
    store: &Store,
    leased: &LeasedExecution,
    manifest: &AgentManifest,
    workspace: &Path,
) -> Result<PolicyGate, String> {
    let tenant = leased.lease.tenant;
    let stored = store.current_policy(tenant).await.map_err(|err| format!("cannot read the tenant's policy: {err}"))?;
    let (bundle, source) = match stored {
        None => (Bundle::builtin_default(), PolicySource::Default),
        Some(stored) => {
            let modules = serde_json::from_value(stored.modules)
                .map_err(|err| format!("the tenant's policy version {} cannot be read: {err}", stored.version))?;
            (Bundle { modules, data: stored.data }, PolicySource::Tenant { version: stored.version })
        }
    };
    // Compiled once per bundle in the process (a cache by digest); the
    // first compile of a large bundle takes milliseconds, off the runtime.
    let policy = tokio::task::spawn_blocking(move || Policy::cached(&bundle))
        .await
        .map_err(|_| "the policy compiler stopped unexpectedly".to_owned())?
        .map_err(|err| format!("{} does not compile: {err}", source.describe()))?;
    let slug = store.tenant(tenant).await.map(|found| found.slug.to_string()).map_err(|err| err.to_string())?;
    let user = store.execution_creator(tenant, leased.execution.id).await.map_err(|err| err.to_string())?;
    let execution = &leased.execution;
    let publisher = match &execution.publisher_key_id {
        Some(key_id) => store.publisher_key(tenant, key_id).await.ok().map(|key| key.name),
        None => None,
    };
    let signature = signature_facts(execution.signature_status, execution.publisher_key_id.as_ref());
    let facts = Facts {
        tenant: TenantFacts { id: tenant.to_string(), slug },
        user: UserFacts { id: user.map(|user| user.to_string()), role: None },
        agent: agent_facts(manifest, publisher, signature),
        workspace: Some(workspace.display().to_string()),
    };
    Ok(PolicyGate { policy, source, facts })
}
