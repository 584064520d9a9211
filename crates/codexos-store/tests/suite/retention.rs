use codexos_core::now_millis;
use codexos_store::{ControlAction, NewMemory, RetentionPolicy, StoreError};

use super::{agent, fresh_store, queue, tenant};

const HOUR: i64 = 3600 * 1000;
const DAY: i64 = 24 * HOUR;

#[tokio::test]
async fn finished_executions_go_after_their_time_and_nothing_else_does() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let done = queue(&store, acme, &version, "done").await;
    store.control_execution(acme, done.id, ControlAction::Cancel, "key k").await.unwrap();
    let waiting = queue(&store, acme, &version, "still queued").await;
    let other_version = agent(&store, globex, "fixer", "1.0.0").await;
    let other_done = queue(&store, globex, &other_version, "globex's").await;
    store.control_execution(globex, other_done.id, ControlAction::Cancel, "key k").await.unwrap();

    let policy = RetentionPolicy { executions_ms: Some(HOUR), ..RetentionPolicy::default() };
    // Too recent: kept.
    assert!(store.purge_by_retention(acme, &policy, now_millis()).await.unwrap().is_empty());
    // A day later: the finished execution goes, with its timeline.
    let purged = store.purge_by_retention(acme, &policy, now_millis() + DAY).await.unwrap();
    assert_eq!(purged.executions, 1, "{purged:?}");
    assert!(matches!(store.execution(acme, done.id).await, Err(StoreError::NotFound(_))));
    assert!(store.events(acme, done.id, 0, 100).await.map(|events| events.is_empty()).unwrap_or(true));
    // Unfinished executions and other tenants' stay.
    store.execution(acme, waiting.id).await.unwrap();
    store.execution(globex, other_done.id).await.unwrap();
}

#[tokio::test]
async fn timelines_and_notes_have_their_own_lifetimes() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "fixer", "1.0.0").await;
    let done = queue(&store, acme, &version, "done").await;
    store.control_execution(acme, done.id, ControlAction::Cancel, "key k").await.unwrap();
    assert!(!store.events(acme, done.id, 0, 100).await.unwrap().is_empty());
    let note = NewMemory {
        agent_name: "fixer".to_owned(),
        execution_id: None,
        content: "the build needs --locked".to_owned(),
        tags: vec![],
        expires_at: None,
    };
    store.remember(acme, &note).await.unwrap();

    let policy = RetentionPolicy { events_ms: Some(HOUR), memories_ms: Some(DAY), ..RetentionPolicy::default() };
    store.set_retention_policy(acme, &policy).await.unwrap();
    assert_eq!(store.retention_policy(acme).await.unwrap(), policy);
    assert_eq!(store.retention_policies().await.unwrap(), vec![(acme, policy)]);

    let purged = store.purge_by_retention(acme, &policy, now_millis() + 2 * HOUR).await.unwrap();
    assert!(purged.events > 0 && purged.memories == 0 && purged.executions == 0, "{purged:?}");
    assert!(store.events(acme, done.id, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.execution(acme, done.id).await.unwrap().status, codexos_core::ExecutionStatus::Cancelled);
    let purged = store.purge_by_retention(acme, &policy, now_millis() + 2 * DAY).await.unwrap();
    assert_eq!(purged.memories, 1, "{purged:?}");
}
