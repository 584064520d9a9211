//! The index of workspace checkpoints: recorded once, counted, trimmed to
//! the newest, listed per tenant.

use codexos_store::CheckpointUsage;
use pretty_assertions::assert_eq;

use super::{agent, fresh_store, queue, tenant};

#[tokio::test]
async fn checkpoints_are_counted_trimmed_and_kept_per_tenant() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "a", "1.0.0").await;
    let execution = queue(&store, acme, &version, "t").await;
    for step in 1..=5 {
        store.record_checkpoint(acme, execution.id, step, &format!("c{step}"), 100 * step).await.unwrap();
    }
    // A replayed append records nothing twice.
    store.record_checkpoint(acme, execution.id, 5, "c5", 500).await.unwrap();
    assert_eq!(store.checkpoint_usage(acme, execution.id).await.unwrap(), CheckpointUsage { count: 5, bytes: 1500 });
    assert_eq!(store.checkpoint_usage(globex, execution.id).await.unwrap(), CheckpointUsage::default());

    // By size: the newest (500 bytes) and the next (400) fit 900; c3 does not.
    assert_eq!(store.trim_checkpoints(acme, execution.id, 10, 900).await.unwrap(), 3);
    let mut kept = store.tenant_checkpoints(acme).await.unwrap();
    kept.sort();
    assert_eq!(kept, vec!["c4", "c5"]);
    // By count; the newest stays whatever the bounds.
    assert_eq!(store.trim_checkpoints(acme, execution.id, 1, 0).await.unwrap(), 1);
    assert_eq!(store.tenant_checkpoints(acme).await.unwrap(), vec!["c5"]);
    assert!(store.tenant_checkpoints(globex).await.unwrap().is_empty());
    assert_eq!(store.trim_checkpoints(globex, execution.id, 0, 0).await.unwrap(), 0);
}

#[tokio::test]
async fn every_execution_holding_a_checkpoint_indexes_it() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "a", "1.0.0").await;
    let first = queue(&store, acme, &version, "one").await;
    let second = queue(&store, acme, &version, "two").await;
    // Two executions reached the same workspace state: the same content-addressed id.
    store.record_checkpoint(acme, first.id, 1, "same", 100).await.unwrap();
    store.record_checkpoint(acme, second.id, 1, "same", 100).await.unwrap();
    store.record_checkpoint(acme, first.id, 2, "newer", 10).await.unwrap();
    assert_eq!(store.checkpoint_usage(acme, second.id).await.unwrap().count, 1);
    // The first one's retention drops its hold; the second still holds it.
    assert_eq!(store.trim_checkpoints(acme, first.id, 1, i64::MAX).await.unwrap(), 1);
    let mut held = store.tenant_checkpoints(acme).await.unwrap();
    held.sort();
    assert_eq!(held, vec!["newer", "same"]);
    assert!(store.checkpoint_indexed(acme, "same").await.unwrap());
}
