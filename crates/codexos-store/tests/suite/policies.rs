use codexos_core::TenantId;
use codexos_store::{NewPolicyBundle, StoreError};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::{agent, fresh_store, queue, tenant};

fn bundle(rule: &str) -> NewPolicyBundle {
    NewPolicyBundle {
        modules: json!({ "main.rego": format!("package codexos\n\ndeny contains \"{rule}\" if input.x\n") }),
        data: json!({ "settings": { "nested": [1, "two", null] } }),
        sha256: format!("sha-of-{rule}"),
        created_by: None,
    }
}

#[tokio::test]
async fn policies_are_versioned_per_tenant_and_the_newest_is_current() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    assert_eq!(store.current_policy(acme).await.unwrap(), None);
    assert_eq!(store.policy_versions(acme).await.unwrap(), []);

    let first = store.put_policy(acme, &bundle("one")).await.unwrap();
    assert_eq!(first.version, 1);
    let second = store.put_policy(acme, &bundle("two")).await.unwrap();
    assert_eq!(second.version, 2);
    // Numbered per tenant.
    assert_eq!(store.put_policy(globex, &bundle("other")).await.unwrap().version, 1);

    let current = store.current_policy(acme).await.unwrap().unwrap();
    assert_eq!(current, second);
    assert_eq!(current.modules, bundle("two").modules);
    assert_eq!(current.data, bundle("two").data);
    assert_eq!(store.policy_version(acme, 1).await.unwrap(), first);
    assert!(matches!(store.policy_version(acme, 3).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.policy_version(globex, 2).await, Err(StoreError::NotFound(_))));

    let versions = store.policy_versions(acme).await.unwrap();
    let listed: Vec<(i64, &str)> = versions.iter().map(|version| (version.version, version.sha256.as_str())).collect();
    assert_eq!(listed, [(2, "sha-of-two"), (1, "sha-of-one")]);
    assert_eq!(store.current_policy(globex).await.unwrap().unwrap().sha256, "sha-of-other");
}

#[tokio::test]
async fn concurrent_puts_each_get_their_own_version() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let puts = (0..4).map(|index| {
        let store = store.clone();
        async move { store.put_policy(acme, &bundle(&format!("rule-{index}"))).await }
    });
    let mut versions: Vec<i64> =
        futures_util::future::join_all(puts).await.into_iter().map(|put| put.unwrap().version).collect();
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_policy_for_a_tenant_that_does_not_exist_is_refused() {
    let (store, _database) = fresh_store().await;
    let missing = TenantId::new();
    assert!(matches!(store.put_policy(missing, &bundle("x")).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn an_executions_creator_is_known() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let execution = queue(&store, acme, &version, "task").await;
    assert_eq!(store.execution_creator(acme, execution.id).await.unwrap(), None);
    let globex = tenant(&store, "globex").await;
    assert!(matches!(store.execution_creator(globex, execution.id).await, Err(StoreError::NotFound(_))));
}
