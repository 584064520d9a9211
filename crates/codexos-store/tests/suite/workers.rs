use codexos_core::now_millis;

use super::fresh_store;

#[tokio::test]
async fn workers_are_alive_while_they_heartbeat() {
    let (store, _database) = fresh_store().await;
    let lease_ms = 30_000;
    let before = store.queue_stats(lease_ms).await.unwrap();
    assert_eq!((before.workers_alive, before.queued, before.oldest_queued_age_ms), (0, 0, None));

    let worker = store.register_worker("host-a", 42).await.unwrap();
    assert_eq!(store.queue_stats(lease_ms).await.unwrap().workers_alive, 1);
    assert_eq!(store.live_workers(lease_ms).await.unwrap(), vec![worker.0.clone()]);

    // A worker reaped while stalled comes back with its next heartbeat.
    store.deregister_worker(&worker, 0).await.unwrap();
    assert_eq!(store.queue_stats(lease_ms).await.unwrap().workers_alive, 0);
    store.heartbeat_worker(&worker, "host-a", 42).await.unwrap();
    assert_eq!(store.queue_stats(lease_ms).await.unwrap().workers_alive, 1);

    // With a lease timeout in the past, nobody counts as alive.
    assert_eq!(store.queue_stats(-60_000).await.unwrap().workers_alive, 0);
    store.deregister_worker(&worker, now_millis() - 1).await.unwrap();
    assert!(store.live_workers(lease_ms).await.unwrap().is_empty());
}
