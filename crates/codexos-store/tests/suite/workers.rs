use codexos_core::now_millis;

use super::fresh_store;

#[tokio::test]
async fn workers_are_alive_while_they_heartbeat() {
    let (store, _database) = fresh_store().await;
    let lease = std::time::Duration::from_secs(30);
    let before = store.queue_stats(lease).await.unwrap();
    assert_eq!((before.workers_alive, before.queued, before.oldest_queued_age_ms), (0, 0, None));

    let worker = store.register_worker("host-a", 42).await.unwrap();
    assert_eq!(store.queue_stats(lease).await.unwrap().workers_alive, 1);
    assert_eq!(store.live_workers(lease).await.unwrap(), vec![worker.0.clone()]);

    // A worker reaped while stalled comes back with its next heartbeat.
    store.deregister_worker(&worker, 0).await.unwrap();
    assert_eq!(store.queue_stats(lease).await.unwrap().workers_alive, 0);
    store.heartbeat_worker(&worker, "host-a", 42).await.unwrap();
    assert_eq!(store.queue_stats(lease).await.unwrap().workers_alive, 1);

    // With no lease at all, nobody counts as alive.
    assert_eq!(store.queue_stats(std::time::Duration::ZERO).await.unwrap().workers_alive, 0);
    store.deregister_worker(&worker, now_millis() - 1).await.unwrap();
    assert!(store.live_workers(lease).await.unwrap().is_empty());
}
