use codexos_store::{AgentSummary, Entity, StoreError};
use pretty_assertions::assert_eq;

use super::{agent, fresh_store, new_version, tenant};

#[tokio::test]
async fn versions_are_kept_and_the_highest_key_is_latest() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    // Registered out of order: the latest is the highest version, not the newest row.
    let v1 = agent(&store, acme, "reviewer", "1.0.0").await;
    let v10 = agent(&store, acme, "reviewer", "10.0.0").await;
    let v2 = agent(&store, acme, "reviewer", "2.0.0").await;
    assert_eq!(v1.agent_id, v2.agent_id);
    assert_eq!(v1.agent_id, v10.agent_id);
    assert_eq!(
        (v2.name.as_str(), v2.version.as_str(), v2.kind.as_str(), v2.description.as_str()),
        ("reviewer", "2.0.0", "coder", "reviewer 2.0.0")
    );
    assert_eq!(v2.manifest, "name = \"reviewer\"\nversion = \"2.0.0\"\n");

    assert_eq!(store.agent_versions(acme, "reviewer").await.unwrap(), vec![v10.clone(), v2.clone(), v1.clone()]);
    assert_eq!(store.agent_version(acme, "reviewer", None).await.unwrap(), v10);
    assert_eq!(store.agent_version(acme, "reviewer", Some("1.0.0")).await.unwrap(), v1);
    assert_eq!(
        store.list_agents(acme).await.unwrap(),
        vec![AgentSummary {
            id: v1.agent_id,
            name: "reviewer".to_owned(),
            latest: v10.clone(),
            version_count: 3,
            created_at: v1.created_at,
        }]
    );

    let missing_version = store.agent_version(acme, "reviewer", Some("3.0.0")).await.unwrap_err();
    assert!(matches!(missing_version, StoreError::NotFound(Entity::AgentVersion)), "{missing_version}");
    let missing_agent = store.agent_version(acme, "writer", None).await.unwrap_err();
    assert!(matches!(missing_agent, StoreError::NotFound(Entity::Agent)), "{missing_agent}");
    let missing_agent = store.agent_versions(acme, "writer").await.unwrap_err();
    assert!(matches!(missing_agent, StoreError::NotFound(Entity::Agent)), "{missing_agent}");
}

#[tokio::test]
async fn registering_a_version_twice_conflicts() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let first = agent(&store, acme, "reviewer", "1.0.0").await;
    let mut again = new_version("reviewer", "1.0.0");
    again.manifest = "changed".to_owned();
    let err = store.create_agent_version(acme, &again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Entity::AgentVersion)), "{err}");
    assert_eq!(err.to_string(), "agent version already exists");
    assert_eq!(store.agent_versions(acme, "reviewer").await.unwrap(), vec![first]);

    // The same version of another agent is another version.
    agent(&store, acme, "writer", "1.0.0").await;
    let names: Vec<_> = store.list_agents(acme).await.unwrap().into_iter().map(|agent| agent.name).collect();
    assert_eq!(names, ["reviewer", "writer"]);
}

#[tokio::test]
async fn agents_are_listed_by_name_byte_wise_on_every_backend() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    for name in ["b", "a0", "a-b", "B"] {
        agent(&store, acme, name, "1.0.0").await;
    }
    let names: Vec<_> = store.list_agents(acme).await.unwrap().into_iter().map(|agent| agent.name).collect();
    assert_eq!(names, ["B", "a-b", "a0", "b"]);
}

#[tokio::test]
async fn another_tenants_agents_are_not_found() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let acme_version = agent(&store, acme, "reviewer", "1.0.0").await;

    assert_eq!(store.list_agents(globex).await.unwrap(), vec![]);
    let err = store.agent_versions(globex, "reviewer").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Agent)), "{err}");
    let err = store.agent_version(globex, "reviewer", Some("1.0.0")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Agent)), "{err}");

    // Globex registers the same name and version as its own agent.
    let globex_version = agent(&store, globex, "reviewer", "1.0.0").await;
    assert_ne!(globex_version.agent_id, acme_version.agent_id);
    assert_eq!(store.agent_versions(acme, "reviewer").await.unwrap(), vec![acme_version]);
    assert_eq!(store.agent_versions(globex, "reviewer").await.unwrap(), vec![globex_version]);
}
