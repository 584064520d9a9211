use std::time::Duration;

use codexos_core::{ExecutionId, ExecutionStatus};
use codexos_store::{
    Entity, Event, Execution, ExecutionFilter, ExecutionTotals, NewEvent, NewExecution, StoreError, WorkerId,
};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::{agent, fresh_store, queue, tenant};

const LONG_LEASE: Duration = Duration::from_secs(600);

fn ids(executions: &[Execution]) -> Vec<ExecutionId> {
    executions.iter().map(|execution| execution.id).collect()
}

#[tokio::test]
async fn a_new_execution_is_queued_with_its_first_event() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.2.3").await;
    let created = queue(&store, acme, &version, "review the diff").await;

    assert_eq!(
        created,
        Execution {
            id: created.id,
            tenant: acme,
            agent_version_id: version.id,
            agent_name: "reviewer".to_owned(),
            agent_version: "1.2.3".to_owned(),
            manifest_sha256: version.manifest_sha256.clone(),
            signature_status: codexos_core::SignatureStatus::Unsigned,
            publisher_key_id: None,
            status: ExecutionStatus::Queued,
            task: "review the diff".to_owned(),
            workspace: "/srv/work".to_owned(),
            created_at: created.created_at,
            updated_at: created.created_at,
            started_at: None,
            finished_at: None,
            totals: ExecutionTotals::default(),
            outcome: None,
            parent: None,
        }
    );
    assert_eq!(store.execution(acme, created.id).await.unwrap(), created);
    assert_eq!(
        store.events(acme, created.id, 0, 100).await.unwrap(),
        vec![Event {
            execution_id: created.id,
            seq: 1,
            kind: "status".to_owned(),
            payload: json!({"status": "queued"}),
            created_at: created.created_at,
        }]
    );
    assert_eq!(store.queue_stats(LONG_LEASE).await.unwrap().queued, 1);
}

#[tokio::test]
async fn an_execution_needs_an_agent_version_of_the_tenant() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let acme_version = agent(&store, acme, "reviewer", "1.0.0").await;
    let new_execution = NewExecution {
        agent_version_id: acme_version.id,
        task: "t".to_owned(),
        workspace: "w".to_owned(),
        created_by: None,
    };
    let err = store.create_execution(globex, &new_execution).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::AgentVersion)), "{err}");
    assert_eq!(store.list_executions(globex, &ExecutionFilter::default()).await.unwrap(), vec![]);
}

#[tokio::test]
async fn executions_are_listed_newest_first_filtered_and_paged() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let reviewer = agent(&store, acme, "reviewer", "1.0.0").await;
    let reviewer_2 = agent(&store, acme, "reviewer", "2.0.0").await;
    let writer = agent(&store, acme, "writer", "1.0.0").await;
    let mut created = Vec::new();
    for (n, version) in [&reviewer, &writer, &reviewer_2, &reviewer, &writer, &reviewer].into_iter().enumerate() {
        created.push(queue(&store, acme, version, &format!("task {n}")).await);
    }
    // The oldest queued one starts running.
    let leased = store.lease_next_execution(&WorkerId("w".to_owned()), LONG_LEASE).await.unwrap().unwrap();
    assert_eq!(leased.execution.id, created[0].id);

    let newest_first: Vec<_> = created.iter().rev().map(|execution| execution.id).collect();
    let all = store.list_executions(acme, &ExecutionFilter::default()).await.unwrap();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all[5], leased.execution);
    assert_eq!(all[0], created[5]);

    let running = ExecutionFilter { status: Some(ExecutionStatus::Running), ..ExecutionFilter::default() };
    assert_eq!(ids(&store.list_executions(acme, &running).await.unwrap()), [created[0].id]);
    let queued = ExecutionFilter { status: Some(ExecutionStatus::Queued), ..ExecutionFilter::default() };
    assert_eq!(ids(&store.list_executions(acme, &queued).await.unwrap()), newest_first[..5]);
    // Every version of the agent counts.
    let reviews = ExecutionFilter { agent: Some("reviewer".to_owned()), ..ExecutionFilter::default() };
    assert_eq!(
        ids(&store.list_executions(acme, &reviews).await.unwrap()),
        [created[5].id, created[3].id, created[2].id, created[0].id]
    );
    let queued_reviews = ExecutionFilter { status: Some(ExecutionStatus::Queued), ..reviews.clone() };
    assert_eq!(
        ids(&store.list_executions(acme, &queued_reviews).await.unwrap()),
        [created[5].id, created[3].id, created[2].id]
    );
    let nobody = ExecutionFilter { agent: Some("nobody".to_owned()), ..ExecutionFilter::default() };
    assert_eq!(store.list_executions(acme, &nobody).await.unwrap(), vec![]);

    // Pages of two, each starting after the last one of the previous page.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = ExecutionFilter { limit: 2, before, ..ExecutionFilter::default() };
        let listed = store.list_executions(acme, &page).await.unwrap();
        let Some(last) = listed.last() else { break };
        before = Some(last.id);
        pages.push(ids(&listed));
    }
    assert_eq!(pages, newest_first.chunks(2).map(<[_]>::to_vec).collect::<Vec<_>>());
    let page = ExecutionFilter { limit: 2, before: Some(created[3].id), ..reviews };
    assert_eq!(ids(&store.list_executions(acme, &page).await.unwrap()), [created[2].id, created[0].id]);
    let empty = ExecutionFilter { limit: 0, ..ExecutionFilter::default() };
    assert_eq!(store.list_executions(acme, &empty).await.unwrap(), vec![]);
}

#[tokio::test]
async fn events_are_paged_by_sequence_number() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;
    let leased = store.lease_next_execution(&WorkerId("w".to_owned()), LONG_LEASE).await.unwrap().unwrap();
    let steps: Vec<_> =
        (0..5).map(|step| NewEvent { kind: "step".to_owned(), payload: json!({"step": step}) }).collect();
    let appended = store.append_events(&leased.lease, &steps, None).await.unwrap();
    assert_eq!(appended.iter().map(|event| event.seq).collect::<Vec<_>>(), [3, 4, 5, 6, 7]);

    let all = store.events(acme, created.id, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|event| event.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());
    assert_eq!(all[2..], appended[..]);
    assert_eq!(store.events(acme, created.id, 3, 2).await.unwrap(), appended[1..3]);
    assert_eq!(store.events(acme, created.id, 6, 100).await.unwrap(), appended[4..]);
    assert_eq!(store.events(acme, created.id, 7, 100).await.unwrap(), vec![]);
    assert_eq!(store.events(acme, created.id, 0, 0).await.unwrap(), vec![]);
}

#[tokio::test]
async fn another_tenants_execution_and_events_are_not_found() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let version = agent(&store, acme, "reviewer", "1.0.0").await;
    let created = queue(&store, acme, &version, "task").await;

    let err = store.execution(globex, created.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Execution)), "{err}");
    let err = store.events(globex, created.id, 0, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Execution)), "{err}");
    assert_eq!(err.to_string(), "execution not found");
    let err = store.events(acme, ExecutionId::new(), 0, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Execution)), "{err}");
    assert_eq!(store.list_executions(globex, &ExecutionFilter::default()).await.unwrap(), vec![]);
    // Paging from another tenant's id shows nothing of it either.
    let page = ExecutionFilter { before: Some(ExecutionId::new()), ..ExecutionFilter::default() };
    assert_eq!(store.list_executions(globex, &page).await.unwrap(), vec![]);
    assert_eq!(ids(&store.list_executions(acme, &page).await.unwrap()), [created.id]);
}
