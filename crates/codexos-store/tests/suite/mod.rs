mod agents;
mod api_keys;
mod audit;
mod checkpoints;
mod control;
mod executions;
mod isolation;
mod leases;
mod memories;
mod oidc;
mod policies;
mod publishers;
mod quotas;
mod retention;
mod schema;
mod secrets;
mod tenants;
mod workers;

use codexos_core::{TenantId, TenantSlug};
use codexos_store::{AgentVersion, Execution, NewAgentVersion, NewExecution, Store};
use codexos_test_support::TestDatabase;

/// A migrated store on a fresh database; keep the database alive as long as the store.
pub async fn fresh_store() -> (Store, TestDatabase) {
    let database = TestDatabase::create().await;
    let store = Store::connect(database.url()).await.expect("connect");
    (store, database)
}

/// A new tenant named `slug`.
pub async fn tenant(store: &Store, slug: &str) -> TenantId {
    store.create_tenant(&TenantSlug::parse(slug).unwrap(), slug).await.unwrap().id
}

/// A version to register, with a version key that sorts like the version
/// for the plain `x.y.z` versions the tests use.
pub fn new_version(name: &str, version: &str) -> NewAgentVersion {
    let version_key = version.split('.').map(|part| format!("{:0>6}", part)).collect::<Vec<_>>().join(".");
    NewAgentVersion {
        name: name.to_owned(),
        version: version.to_owned(),
        version_key,
        kind: "coder".to_owned(),
        description: format!("{name} {version}"),
        manifest: format!("name = \"{name}\"\nversion = \"{version}\"\n"),
        manifest_sha256: format!("sha-of-{name}-{version}"),
        signature_status: codexos_core::SignatureStatus::Unsigned,
        publisher_key_id: None,
        created_by: None,
    }
}

/// Registers `name` `version` for the tenant.
pub async fn agent(store: &Store, tenant: TenantId, name: &str, version: &str) -> AgentVersion {
    store.create_agent_version(tenant, &new_version(name, version)).await.unwrap()
}

/// Queues an execution of `agent` with `task`.
pub async fn queue(store: &Store, tenant: TenantId, agent: &AgentVersion, task: &str) -> Execution {
    let new_execution = NewExecution {
        agent_version_id: agent.id,
        task: task.to_owned(),
        workspace: "/srv/work".to_owned(),
        created_by: None,
    };
    store.create_execution(tenant, &new_execution).await.unwrap()
}
