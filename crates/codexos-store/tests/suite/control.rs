//! Pause, resume and cancel: at once for executions no worker holds, as a
//! request to the worker for running ones; every change an event.

use std::time::Duration;

use codexos_core::ExecutionStatus;
use codexos_store::{ControlAction, ControlRequest, Entity, StoreError, WorkerId};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::{agent, fresh_store, queue, tenant};

const LEASE: Duration = Duration::from_secs(600);

async fn last_event(
    store: &codexos_store::Store,
    tenant: codexos_core::TenantId,
    id: codexos_core::ExecutionId,
) -> (String, serde_json::Value) {
    let events = store.events(tenant, id, 0, 1000).await.unwrap();
    let last = events.last().unwrap();
    (last.kind.clone(), last.payload.clone())
}

#[tokio::test]
async fn executions_no_worker_holds_change_state_at_once() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "a", "1.0.0").await;
    let execution = queue(&store, acme, &version, "t").await;

    let paused = store.control_execution(acme, execution.id, ControlAction::Pause, "user u").await.unwrap();
    assert_eq!(paused.status, ExecutionStatus::Paused);
    assert_eq!(
        last_event(&store, acme, execution.id).await,
        ("status".into(), json!({"status": "paused", "by": "user u"}))
    );
    // A paused execution is not leased.
    assert!(store.lease_next_execution(&WorkerId("w".into()), LEASE).await.unwrap().is_none());
    let err = store.control_execution(acme, execution.id, ControlAction::Pause, "user u").await.unwrap_err();
    assert!(matches!(&err, StoreError::InvalidState(message) if message.contains("already paused")), "{err}");

    let resumed = store.control_execution(acme, execution.id, ControlAction::Resume, "user v").await.unwrap();
    assert_eq!(resumed.status, ExecutionStatus::Queued);
    assert_eq!(last_event(&store, acme, execution.id).await.1, json!({"status": "queued", "resumed_by": "user v"}));

    let cancelled = store.control_execution(acme, execution.id, ControlAction::Cancel, "key k").await.unwrap();
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(cancelled.outcome, Some(json!({"reason": "cancelled", "error": "cancelled by key k"})));
    for action in [ControlAction::Pause, ControlAction::Resume, ControlAction::Cancel] {
        let err = store.control_execution(acme, execution.id, action, "key k").await.unwrap_err();
        assert!(matches!(&err, StoreError::InvalidState(message) if message.contains("been cancelled")), "{err}");
    }
    // Nothing changed by the refused requests.
    assert_eq!(store.events(acme, execution.id, 0, 1000).await.unwrap().len(), 4);
}

#[tokio::test]
async fn running_executions_get_requests_their_worker_acts_on() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "a", "1.0.0").await;
    let execution = queue(&store, acme, &version, "t").await;
    let leased = store.lease_next_execution(&WorkerId("w".into()), LEASE).await.unwrap().unwrap();
    assert_eq!(store.pending_control(&leased.lease).await.unwrap(), None);

    let running = store.control_execution(acme, execution.id, ControlAction::Pause, "user u").await.unwrap();
    assert_eq!(running.status, ExecutionStatus::Running);
    assert_eq!(
        last_event(&store, acme, execution.id).await,
        ("control".into(), json!({"action": "pause_requested", "by": "user u"}))
    );
    assert_eq!(store.pending_control(&leased.lease).await.unwrap(), Some(ControlRequest::Pause));
    // Resuming before the worker paused withdraws the request.
    store.control_execution(acme, execution.id, ControlAction::Resume, "user u").await.unwrap();
    assert_eq!(store.pending_control(&leased.lease).await.unwrap(), None);

    store.control_execution(acme, execution.id, ControlAction::Pause, "user u").await.unwrap();
    store.park_execution(&leased.lease, ExecutionStatus::Paused, &[]).await.unwrap();
    let paused = store.execution(acme, execution.id).await.unwrap();
    assert_eq!(paused.status, ExecutionStatus::Paused);
    assert_eq!(last_event(&store, acme, execution.id).await.1, json!({"status": "paused"}));
    // The worker no longer holds it.
    assert!(matches!(store.pending_control(&leased.lease).await, Err(StoreError::LeaseLost)));

    // Resumed, leased again (as a resumption), then cancelled while running.
    store.control_execution(acme, execution.id, ControlAction::Resume, "user u").await.unwrap();
    let again = store.lease_next_execution(&WorkerId("w2".into()), LEASE).await.unwrap().unwrap();
    assert_eq!(last_event(&store, acme, execution.id).await.1["resumed"], true);
    store.control_execution(acme, execution.id, ControlAction::Cancel, "user u").await.unwrap();
    assert_eq!(store.pending_control(&again.lease).await.unwrap(), Some(ControlRequest::Cancel));
    let err = store.control_execution(acme, execution.id, ControlAction::Pause, "user u").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)));
}

#[tokio::test]
async fn another_tenant_cannot_control_an_execution() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "a", "1.0.0").await;
    let execution = queue(&store, acme, &version, "t").await;
    let err = store.control_execution(globex, execution.id, ControlAction::Cancel, "x").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Execution)), "{err}");
    assert_eq!(store.execution(acme, execution.id).await.unwrap().status, ExecutionStatus::Queued);
}

#[tokio::test]
async fn forks_copy_the_timeline_and_stay_within_the_tenant() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "a", "1.0.0").await;
    let parent = queue(&store, acme, &version, "t").await;
    let new_fork = codexos_store::NewFork {
        parent: parent.id,
        from_step: 1,
        workspace: "/srv/fork",
        instruction: Some("try again"),
        created_by: None,
        actor: "user u",
    };
    // Not started: nothing to fork from.
    assert!(matches!(store.fork_execution(acme, &new_fork).await, Err(StoreError::InvalidState(_))));
    let leased = store.lease_next_execution(&WorkerId("w".into()), LEASE).await.unwrap().unwrap();
    let step = codexos_store::NewEvent { kind: "tool_result".into(), payload: json!({ "call_id": "step-1" }) };
    store.append_events(&leased.lease, &[step], None).await.unwrap();
    for step in 1..=3 {
        store.record_checkpoint(acme, parent.id, step, &format!("c{step}"), 10).await.unwrap();
    }
    // Another tenant's execution is not found, and nothing is created.
    assert!(matches!(store.fork_execution(globex, &new_fork).await, Err(StoreError::NotFound(Entity::Execution))));

    let forked = store.fork_execution(acme, &new_fork).await.unwrap();
    assert_eq!(forked.parent, Some((parent.id, 1)));
    assert_eq!(forked.status, ExecutionStatus::Queued);
    assert_eq!(forked.task, "t");
    let kinds: Vec<String> = store.events(acme, forked.id, 0, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec!["status", "tool_result", "rollback_requested", "instruction"]);
    // The parent is untouched.
    assert_eq!(store.events(acme, parent.id, 0, 100).await.unwrap().len(), 3);
    // The fork holds the parent's checkpoints up to its step, adding no
    // content of its own: the parent's retention cannot take them away.
    assert_eq!(store.checkpoint_usage(acme, forked.id).await.unwrap().count, 1);
    assert_eq!(store.checkpoint_usage(acme, forked.id).await.unwrap().bytes, 0);
    store.trim_checkpoints(acme, parent.id, 1, 0).await.unwrap();
    assert!(store.tenant_checkpoints(acme).await.unwrap().contains(&"c1".to_owned()));
}
