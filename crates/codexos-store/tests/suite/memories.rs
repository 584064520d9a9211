//! Semantic memory: full-text recall per tenant and agent, expiry, purge.

use codexos_core::now_millis;
use codexos_store::{Entity, NewMemory, StoreError};
use pretty_assertions::assert_eq;

use super::{fresh_store, new_version, tenant};

fn note(agent: &str, content: &str, tags: &[&str], expires_at: Option<i64>) -> NewMemory {
    NewMemory {
        agent_name: agent.to_owned(),
        execution_id: None,
        content: content.to_owned(),
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        expires_at,
    }
}

#[tokio::test]
async fn recall_ranks_notes_by_relevance_within_one_agent_of_one_tenant() {
    let (store, _db) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let other = tenant(&store, "other").await;
    for (tenant, agent) in [(acme, "fixer"), (acme, "writer"), (other, "fixer")] {
        store.create_agent_version(tenant, &new_version(agent, "1.0.0")).await.unwrap();
    }
    store
        .remember(acme, &note("fixer", "The flaky test in parser.rs fails when run in parallel", &["tests"], None))
        .await
        .unwrap();
    store.remember(acme, &note("fixer", "Use cargo nextest to run the tests faster", &[], None)).await.unwrap();
    store.remember(acme, &note("fixer", "The release checklist lives in RELEASING.md", &["docs"], None)).await.unwrap();
    store.remember(acme, &note("writer", "Tests are for the weak", &[], None)).await.unwrap();
    store.remember(other, &note("fixer", "Other tenant's flaky test notes", &[], None)).await.unwrap();

    let found = store.recall(acme, "fixer", "why is the flaky test failing?", 10).await.unwrap();
    let contents: Vec<&str> = found.iter().map(|memory| memory.content.as_str()).collect();
    // Stemming: "failing" finds "fails"; the note matching more words ranks first;
    // other agents' and other tenants' notes never appear.
    assert_eq!(
        contents,
        vec!["The flaky test in parser.rs fails when run in parallel", "Use cargo nextest to run the tests faster"]
    );
    assert!(found[0].score > found[1].score, "{found:?}");
    assert_eq!(found[0].tags, vec!["tests"]);

    let by_tag = store.recall(acme, "fixer", "docs", 10).await.unwrap();
    assert_eq!(by_tag.len(), 1);
    assert_eq!(store.recall(acme, "fixer", "flaky", 1).await.unwrap().len(), 1);
    assert!(store.recall(acme, "fixer", "*** ()", 10).await.unwrap().is_empty());
    assert!(store.recall(acme, "fixer", "kubernetes", 10).await.unwrap().is_empty());
    // Query syntax of either backend is just text here.
    assert!(store.recall(acme, "fixer", "flaky\" OR content:* | !test", 10).await.is_ok());
}

#[tokio::test]
async fn expired_notes_are_not_recalled_and_are_purged() {
    let (store, _db) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    store.create_agent_version(acme, &new_version("fixer", "1.0.0")).await.unwrap();
    store.remember(acme, &note("fixer", "old lesson about migrations", &[], Some(now_millis() - 1))).await.unwrap();
    store
        .remember(acme, &note("fixer", "fresh lesson about migrations", &[], Some(now_millis() + 60_000)))
        .await
        .unwrap();
    store.remember(acme, &note("fixer", "permanent lesson about migrations", &[], None)).await.unwrap();
    let found = store.recall(acme, "fixer", "migrations", 10).await.unwrap();
    let mut contents: Vec<&str> = found.iter().map(|memory| memory.content.as_str()).collect();
    contents.sort();
    assert_eq!(contents, vec!["fresh lesson about migrations", "permanent lesson about migrations"]);
    assert_eq!(store.purge_expired_memories().await.unwrap(), 1);
    assert_eq!(store.purge_expired_memories().await.unwrap(), 0);
    assert_eq!(store.recall(acme, "fixer", "migrations", 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn notes_need_an_agent_of_the_tenant_and_a_sane_size() {
    let (store, _db) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let other = tenant(&store, "other").await;
    store.create_agent_version(other, &new_version("fixer", "1.0.0")).await.unwrap();
    let err = store.remember(acme, &note("fixer", "x", &[], None)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(Entity::Agent)), "{err}");
    store.create_agent_version(acme, &new_version("fixer", "1.0.0")).await.unwrap();
    let huge = "x".repeat(codexos_store::MAX_MEMORY_BYTES + 1);
    let err = store.remember(acme, &note("fixer", &huge, &[], None)).await.unwrap_err();
    assert!(matches!(err, StoreError::PayloadTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn tags_keep_their_spaces() {
    let (store, _db) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    store.create_agent_version(acme, &new_version("fixer", "1.0.0")).await.unwrap();
    store.remember(acme, &note("fixer", "release steps", &["release process", "docs"], None)).await.unwrap();
    let found = store.recall(acme, "fixer", "process", 5).await.unwrap();
    assert_eq!(found[0].tags, vec!["release process", "docs"]);
}
