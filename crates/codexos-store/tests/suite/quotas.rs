//! Quotas per tenant and the usage they are checked against.

use std::time::Duration;

use codexos_core::{QuotaOverrides, TenantId, UsagePeriod, now_millis};
use codexos_store::{
    ControlAction, ExecutionTotals, NewEvent, NewExecution, NewFork, NewMemory, StoreError, TenantUsage, UsageMetric,
    WorkerId,
};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::{agent, fresh_store, queue, tenant};

fn this_month() -> UsagePeriod {
    UsagePeriod::of(now_millis())
}

#[tokio::test]
async fn a_tenants_quotas_are_its_own_and_reset_to_the_defaults() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    assert_eq!(store.tenant_quotas(acme).await.unwrap(), QuotaOverrides::default());

    let quotas = QuotaOverrides {
        requests_per_second: Some(2),
        burst: Some(4),
        max_concurrent_executions: Some(0),
        cpu_seconds_per_month: None,
        storage_bytes: Some(10 << 30),
    };
    store.set_tenant_quotas(acme, &quotas).await.unwrap();
    assert_eq!(store.tenant_quotas(acme).await.unwrap(), quotas);
    assert_eq!(store.tenant_quotas(globex).await.unwrap(), QuotaOverrides::default());

    // Replaced whole, then back to the defaults.
    let fewer = QuotaOverrides { burst: Some(8), ..QuotaOverrides::default() };
    store.set_tenant_quotas(acme, &fewer).await.unwrap();
    assert_eq!(store.tenant_quotas(acme).await.unwrap(), fewer);
    store.set_tenant_quotas(acme, &QuotaOverrides::default()).await.unwrap();
    assert_eq!(store.tenant_quotas(acme).await.unwrap(), QuotaOverrides::default());
}

#[tokio::test]
async fn quotas_of_a_missing_tenant_or_beyond_the_database_are_refused() {
    let (store, _database) = fresh_store().await;
    let quotas = QuotaOverrides { burst: Some(1), ..QuotaOverrides::default() };
    let err = store.set_tenant_quotas(TenantId::new(), &quotas).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(codexos_store::Entity::Tenant)), "{err}");
    let acme = tenant(&store, "acme").await;
    let huge = QuotaOverrides { storage_bytes: Some(u64::MAX), ..QuotaOverrides::default() };
    let err = store.set_tenant_quotas(acme, &huge).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err}");
    assert_eq!(store.tenant_quotas(acme).await.unwrap(), QuotaOverrides::default());
}

#[tokio::test]
async fn usage_adds_up_per_tenant_and_month_even_concurrently() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let mut additions = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        additions.spawn(async move { store.add_usage(acme, UsageMetric::CpuMs, 250).await });
    }
    while let Some(added) = additions.join_next().await {
        added.unwrap().unwrap();
    }
    store.add_usage(globex, UsageMetric::CpuMs, 7).await.unwrap();
    // Nothing, or less than nothing, adds nothing.
    store.add_usage(acme, UsageMetric::CpuMs, 0).await.unwrap();
    store.add_usage(acme, UsageMetric::CpuMs, -100).await.unwrap();

    let usage = store.usage(acme, this_month()).await.unwrap();
    assert_eq!(usage.into_iter().collect::<Vec<_>>(), vec![("cpu_ms".to_owned(), 5000)]);
    assert_eq!(store.usage(globex, this_month()).await.unwrap()["cpu_ms"], 7);
    // Another month starts from nothing.
    assert!(store.usage(acme, this_month().next()).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_concurrency_quota_counts_executions_that_have_not_finished() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let new_execution = |task: &str| NewExecution {
        agent_version_id: version.id,
        task: task.to_owned(),
        workspace: "/srv/work".to_owned(),
        created_by: None,
    };
    let first = store.create_execution_within(acme, &new_execution("one"), Some(2)).await.unwrap();
    store.create_execution_within(acme, &new_execution("two"), Some(2)).await.unwrap();
    assert_eq!(store.active_executions(acme).await.unwrap(), 2);
    assert_eq!(store.active_executions(globex).await.unwrap(), 0);

    let err = store.create_execution_within(acme, &new_execution("three"), Some(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::ExecutionQuota { active: 2, limit: 2 }), "{err}");
    assert_eq!(err.to_string(), "the tenant runs 2 executions, its limit; wait for one to finish");
    // Nothing was created, nor counted.
    let all = store.list_executions(acme, &Default::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(store.usage(acme, this_month()).await.unwrap()["executions"], 2);

    // A finished one frees its place.
    store.control_execution(acme, first.id, ControlAction::Cancel, "test").await.unwrap();
    assert_eq!(store.active_executions(acme).await.unwrap(), 1);
    store.create_execution_within(acme, &new_execution("three"), Some(2)).await.unwrap();
    // No limit: the quota is the caller's choice.
    store.create_execution(acme, &new_execution("four")).await.unwrap();
    assert_eq!(store.active_executions(acme).await.unwrap(), 3);
}

#[tokio::test]
async fn concurrent_creations_never_pass_the_concurrency_quota_together() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let mut creations = tokio::task::JoinSet::new();
    for n in 0..12 {
        let store = store.clone();
        let new_execution = NewExecution {
            agent_version_id: version.id,
            task: format!("task {n}"),
            workspace: "/srv/work".to_owned(),
            created_by: None,
        };
        creations.spawn(async move { store.create_execution_within(acme, &new_execution, Some(3)).await });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(res) = creations.join_next().await {
        match res.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::ExecutionQuota { .. }) => refused += 1,
            Err(err) => panic!("{err}"),
        }
    }
    assert_eq!((created, refused), (3, 9));
    assert_eq!(store.active_executions(acme).await.unwrap(), 3);
}

#[tokio::test]
async fn a_fork_counts_against_the_concurrency_quota() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let parent = queue(&store, acme, &version, "parent").await;
    let leased = store.lease_next_execution(&WorkerId("w".to_owned()), Duration::from_secs(600)).await.unwrap();
    assert_eq!(leased.unwrap().execution.id, parent.id);
    let fork = NewFork {
        parent: parent.id,
        from_step: 1,
        workspace: "/srv/fork",
        instruction: None,
        created_by: None,
        actor: "test",
    };
    let err = store.fork_execution_within(acme, &fork, Some(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::ExecutionQuota { active: 1, limit: 1 }), "{err}");
    assert_eq!(store.list_executions(acme, &Default::default()).await.unwrap().len(), 1);
    let forked = store.fork_execution_within(acme, &fork, Some(2)).await.unwrap();
    assert_eq!(forked.parent, Some((parent.id, 1)));
    assert_eq!(store.usage(acme, this_month()).await.unwrap()["executions"], 2);
}

#[tokio::test]
async fn sandbox_cpu_counts_step_by_step_as_the_worker_records_it() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let execution = queue(&store, acme, &version, "work").await;
    let leased = store.lease_next_execution(&WorkerId("w".to_owned()), Duration::from_secs(600)).await.unwrap();
    let lease = leased.unwrap().lease;
    let step = NewEvent { kind: "step".to_owned(), payload: json!({}) };
    let cpu_used = |cpu_ms| ExecutionTotals { steps: 1, cpu_ms, ..ExecutionTotals::default() };

    store.append_events(&lease, std::slice::from_ref(&step), Some(&cpu_used(300))).await.unwrap();
    // Counted before the execution ends: a long one counts as it goes.
    assert_eq!(store.tenant_usage(acme, this_month()).await.unwrap().cpu_ms, 300);
    // Events without totals, or totals without more CPU, add nothing.
    store.append_events(&lease, std::slice::from_ref(&step), None).await.unwrap();
    store.append_events(&lease, std::slice::from_ref(&step), Some(&cpu_used(300))).await.unwrap();
    store.append_events(&lease, std::slice::from_ref(&step), Some(&cpu_used(1200))).await.unwrap();
    assert_eq!(store.tenant_usage(acme, this_month()).await.unwrap().cpu_ms, 1200);
    store
        .finish_execution(&lease, codexos_core::ExecutionStatus::Succeeded, &json!(null), &cpu_used(1500))
        .await
        .unwrap();
    assert_eq!(store.tenant_usage(acme, this_month()).await.unwrap().cpu_ms, 1500);

    // A write under a lost lease counts nothing.
    let err = store.append_events(&lease, std::slice::from_ref(&step), Some(&cpu_used(9000))).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    assert_eq!(store.tenant_usage(acme, this_month()).await.unwrap().cpu_ms, 1500);
    assert_eq!(store.execution(acme, execution.id).await.unwrap().totals.cpu_ms, 1500);
}

#[tokio::test]
async fn storage_counts_checkpoint_content_and_memory_bytes_of_the_tenant() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let execution = queue(&store, acme, &version, "work").await;
    assert_eq!(store.storage_bytes(acme).await.unwrap(), 0);
    store.record_checkpoint(acme, execution.id, 1, "c1", 1000).await.unwrap();
    store.record_checkpoint(acme, execution.id, 2, "c2", 24).await.unwrap();
    // Bytes, not characters: "é" is two.
    let note = NewMemory {
        agent_name: "fixer".to_owned(),
        execution_id: None,
        content: "café".to_owned(),
        tags: Vec::new(),
        expires_at: None,
    };
    store.remember(acme, &note).await.unwrap();
    assert_eq!(store.storage_bytes(acme).await.unwrap(), 1000 + 24 + 5);
    assert_eq!(store.storage_bytes(globex).await.unwrap(), 0);

    let usage = store.tenant_usage(acme, this_month()).await.unwrap();
    assert_eq!(
        usage,
        TenantUsage {
            period: this_month(),
            cpu_ms: 0,
            executions_created: 1,
            active_executions: 1,
            storage_bytes: 1029,
        }
    );
}
