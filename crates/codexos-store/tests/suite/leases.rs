use std::collections::BTreeSet;
use std::time::Duration;

use codexos_core::{ExecutionId, ExecutionStatus};
use codexos_store::{
    Event, Execution, ExecutionTotals, Lease, LeasedExecution, MAX_EVENT_PAYLOAD_BYTES, NewEvent, StoreError, WorkerId,
};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::{agent, fresh_store, queue, tenant};

const LONG_LEASE: Duration = Duration::from_secs(600);

fn worker(name: &str) -> WorkerId {
    WorkerId(name.to_owned())
}

fn step(n: i64) -> NewEvent {
    NewEvent { kind: "step".to_owned(), payload: json!({"step": n}) }
}

fn seqs(events: &[Event]) -> Vec<i64> {
    events.iter().map(|event| event.seq).collect()
}

#[tokio::test]
async fn a_worker_takes_the_oldest_queued_execution() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let globex_version = agent(&store, globex, "writer", "1.0.0").await;
    let first = queue(&store, acme, &version, "first").await;
    let second = queue(&store, globex, &globex_version, "second").await;

    let leased = store.lease_next_execution(&worker("a"), LONG_LEASE).await.unwrap().unwrap();
    let running = store.execution(acme, first.id).await.unwrap();
    assert_eq!(running.status, ExecutionStatus::Running);
    let started_at = running.started_at.unwrap();
    assert_eq!(
        running,
        Execution {
            status: ExecutionStatus::Running,
            started_at: Some(started_at),
            updated_at: started_at,
            ..first.clone()
        }
    );
    assert_eq!(
        leased,
        LeasedExecution {
            lease: Lease { worker: worker("a"), tenant: acme, execution_id: first.id },
            execution: running,
            manifest: version.manifest.clone(),
            version_manifest_sha256: version.manifest_sha256.clone(),
            last_seq: 2,
        }
    );
    let events = store.events(acme, first.id, 1, 100).await.unwrap();
    assert_eq!(
        events,
        vec![Event {
            execution_id: first.id,
            seq: 2,
            kind: "status".to_owned(),
            payload: json!({"status": "running", "worker": "a", "resumed": false}),
            created_at: started_at,
        }]
    );

    // Across tenants: the next one is globex's.
    let next = store.lease_next_execution(&worker("b"), LONG_LEASE).await.unwrap().unwrap();
    assert_eq!(next.lease, Lease { worker: worker("b"), tenant: globex, execution_id: second.id });
    assert_eq!(next.manifest, globex_version.manifest);
    assert_eq!(store.lease_next_execution(&worker("c"), LONG_LEASE).await.unwrap(), None);
    let stats = store.queue_stats(LONG_LEASE).await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 2));
}

#[tokio::test]
async fn a_renewed_lease_is_kept() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    queue(&store, acme, &version, "task").await;

    let leased = store.lease_next_execution(&worker("a"), Duration::from_millis(300)).await.unwrap().unwrap();
    store.renew_lease(&leased.lease, LONG_LEASE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.lease_next_execution(&worker("b"), LONG_LEASE).await.unwrap(), None);
    store.append_events(&leased.lease, &[step(1)], None).await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_first_worker_can_write_nothing() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;
    let first = store.lease_next_execution(&worker("a"), Duration::from_millis(1)).await.unwrap().unwrap();
    let totals = ExecutionTotals { steps: 1, input_tokens: 10, ..ExecutionTotals::default() };
    store.append_events(&first.lease, &[step(1)], Some(&totals)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Worker a died (as far as anyone can tell): b resumes the execution.
    let second = store.lease_next_execution(&worker("b"), LONG_LEASE).await.unwrap().unwrap();
    assert_eq!(second.lease, Lease { worker: worker("b"), tenant: acme, execution_id: created.id });
    assert_eq!(second.last_seq, 4);
    assert_eq!(second.execution.status, ExecutionStatus::Running);
    assert_eq!(second.execution.started_at, first.execution.started_at);
    assert_eq!(second.execution.totals, totals);
    let before = store.events(acme, created.id, 0, 100).await.unwrap();
    assert_eq!(before[3].payload, json!({"status": "running", "worker": "b", "resumed": true}));

    // Worker a wakes up: every write fails and leaves no trace.
    let more = ExecutionTotals { steps: 2, ..totals };
    let err = store.append_events(&first.lease, &[step(2)], Some(&more)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    let err = store.renew_lease(&first.lease, LONG_LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    let err = store.finish_execution(&first.lease, ExecutionStatus::Failed, &json!({}), &more).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    assert_eq!(store.events(acme, created.id, 0, 100).await.unwrap(), before);
    assert_eq!(store.execution(acme, created.id).await.unwrap(), second.execution);

    // Worker b carries on.
    let appended = store.append_events(&second.lease, &[step(2)], Some(&more)).await.unwrap();
    assert_eq!(seqs(&appended), [5]);
}

#[tokio::test]
async fn finishing_records_the_end_and_releases_the_lease() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;
    let leased = store.lease_next_execution(&worker("a"), LONG_LEASE).await.unwrap().unwrap();
    let running_totals = ExecutionTotals { steps: 1, input_tokens: 100, output_tokens: 20, ..Default::default() };
    let appended = store.append_events(&leased.lease, &[step(1), step(2)], Some(&running_totals)).await.unwrap();
    assert_eq!(seqs(&appended), [3, 4]);
    assert_eq!(store.execution(acme, created.id).await.unwrap().totals, running_totals);
    // Events alone leave the totals as they are.
    store.append_events(&leased.lease, &[step(3)], None).await.unwrap();
    assert_eq!(store.execution(acme, created.id).await.unwrap().totals, running_totals);

    let totals = ExecutionTotals {
        steps: 3,
        input_tokens: 300,
        output_tokens: 60,
        cost_microdollars: 1234,
        cpu_ms: 500,
        peak_memory_bytes: 64 << 20,
        wall_ms: 2000,
    };
    let outcome = json!({"summary": "all good", "status": "ignored"});
    let event = store.finish_execution(&leased.lease, ExecutionStatus::Succeeded, &outcome, &totals).await.unwrap();
    let finished = store.execution(acme, created.id).await.unwrap();
    let finished_at = finished.finished_at.unwrap();
    assert_eq!(
        finished,
        Execution {
            status: ExecutionStatus::Succeeded,
            updated_at: finished_at,
            finished_at: Some(finished_at),
            totals,
            outcome: Some(outcome),
            ..leased.execution.clone()
        }
    );
    assert_eq!(
        event,
        Event {
            execution_id: created.id,
            seq: 6,
            kind: "status".to_owned(),
            payload: json!({"status": "succeeded", "summary": "all good"}),
            created_at: finished_at,
        }
    );
    assert_eq!(store.events(acme, created.id, 5, 100).await.unwrap(), vec![event]);

    // Released: nothing more can be written, and no worker takes it again.
    let err = store.append_events(&leased.lease, &[step(4)], None).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    let err = store.renew_lease(&leased.lease, LONG_LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    let err = store.finish_execution(&leased.lease, ExecutionStatus::Failed, &json!(null), &totals).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost), "{err}");
    assert_eq!(store.lease_next_execution(&worker("b"), Duration::ZERO).await.unwrap(), None);
    let stats = store.queue_stats(LONG_LEASE).await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 0));
    assert_eq!(store.execution(acme, created.id).await.unwrap(), finished);
}

#[tokio::test]
async fn only_final_statuses_finish_and_a_null_outcome_is_none() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;
    let leased = store.lease_next_execution(&worker("a"), LONG_LEASE).await.unwrap().unwrap();
    let totals = ExecutionTotals::default();
    let err = store.finish_execution(&leased.lease, ExecutionStatus::Paused, &json!(null), &totals).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFinal(ExecutionStatus::Paused)), "{err}");
    assert_eq!(store.execution(acme, created.id).await.unwrap(), leased.execution);

    let event = store.finish_execution(&leased.lease, ExecutionStatus::Cancelled, &json!(null), &totals).await.unwrap();
    assert_eq!(event.payload, json!({"status": "cancelled"}));
    let finished = store.execution(acme, created.id).await.unwrap();
    assert_eq!((finished.status, finished.outcome), (ExecutionStatus::Cancelled, None));
}

#[tokio::test]
async fn an_oversized_payload_is_refused_and_nothing_is_written() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;
    let leased = store.lease_next_execution(&worker("a"), LONG_LEASE).await.unwrap().unwrap();
    let huge = NewEvent { kind: "tool_output".to_owned(), payload: json!("x".repeat(MAX_EVENT_PAYLOAD_BYTES)) };
    let totals = ExecutionTotals { steps: 1, ..Default::default() };
    let err = store.append_events(&leased.lease, &[step(1), huge], Some(&totals)).await.unwrap_err();
    assert!(matches!(err, StoreError::PayloadTooLarge { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "the 'tool_output' event payload is {} bytes, over the {MAX_EVENT_PAYLOAD_BYTES}-byte limit",
            MAX_EVENT_PAYLOAD_BYTES + 2
        )
    );
    assert_eq!(seqs(&store.events(acme, created.id, 0, 100).await.unwrap()), [1, 2]);
    assert_eq!(store.execution(acme, created.id).await.unwrap(), leased.execution);
}

#[tokio::test]
async fn concurrent_workers_never_take_the_same_execution() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let acme_version = agent(&store, acme, "reviewer", "1.0.0").await;
    let globex_version = agent(&store, globex, "reviewer", "1.0.0").await;
    let mut queued = BTreeSet::new();
    for n in 0..20 {
        let (tenant, version) = if n % 2 == 0 { (acme, &acme_version) } else { (globex, &globex_version) };
        queued.insert(queue(&store, tenant, version, &format!("task {n}")).await.id);
    }

    let mut workers = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let me = worker(&format!("worker-{n}"));
            let mut taken = Vec::new();
            while let Some(leased) = store.lease_next_execution(&me, LONG_LEASE).await.unwrap() {
                assert_eq!(leased.lease.worker, me);
                taken.push(leased);
            }
            taken
        }));
    }
    let mut taken: Vec<LeasedExecution> = Vec::new();
    for handle in workers {
        taken.extend(handle.await.unwrap());
    }
    let taken_ids: Vec<ExecutionId> = taken.iter().map(|leased| leased.lease.execution_id).collect();
    assert_eq!(taken_ids.len(), 20, "each execution is taken exactly once");
    assert_eq!(taken_ids.iter().copied().collect::<BTreeSet<_>>(), queued);
    for leased in &taken {
        let events = store.events(leased.lease.tenant, leased.lease.execution_id, 0, 100).await.unwrap();
        assert_eq!(seqs(&events), [1, 2]);
        assert_eq!(events[1].payload["worker"], json!(leased.lease.worker.0));
    }
}

#[tokio::test]
async fn concurrent_appends_get_gapless_sequence_numbers() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;
    let leased = store.lease_next_execution(&worker("a"), LONG_LEASE).await.unwrap().unwrap();

    let mut writers = Vec::new();
    for writer in 0..4 {
        let store = store.clone();
        let lease = leased.lease.clone();
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..10 {
                let appended = store.append_events(&lease, &[step(writer * 100 + n), step(-1)], None).await.unwrap();
                seqs.extend(appended.iter().map(|event| event.seq));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for handle in writers {
        let seqs = handle.await.unwrap();
        // A batch is contiguous.
        assert!(seqs.chunks(2).all(|pair| pair[1] == pair[0] + 1), "{seqs:?}");
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (3..=82).collect::<Vec<_>>());
    assert_eq!(seqs(&store.events(acme, created.id, 0, 1000).await.unwrap()), (1..=82).collect::<Vec<_>>());
}
