//! The audit log in the database: appends, checkpoints, proofs, and the
//! tampering of someone with direct write access to the database (an
//! attacker who first disables the append-only triggers), each detected.

use std::sync::Arc;

use codexos_audit::{SigningKey, Tamper, Verdict};
use codexos_core::TenantId;
use codexos_store::{AuditOutcome, Auditor, NewAuditEntry, Store};
use codexos_test_support::TestDatabase;
use sqlx::{AnyConnection, Connection, Executor};

use super::{fresh_store, tenant};

fn entry(action: &str, n: u64) -> NewAuditEntry {
    NewAuditEntry {
        actor: "key:test".to_owned(),
        action: action.to_owned(),
        target: format!("execution:{n}"),
        outcome: AuditOutcome::Success,
        request_id: Some(format!("req-{n}")),
        details: serde_json::json!({ "n": n }),
    }
}

fn auditor(store: &Store, every: u64) -> Auditor {
    Auditor::new(store.clone(), Arc::new(SigningKey::generate("codexos-audit").unwrap()), every)
}

/// A log of `n` entries with a checkpoint every 5.
async fn log_of(n: u64) -> (Store, TestDatabase, Auditor, TenantId) {
    let (store, database) = fresh_store().await;
    let tenant = tenant(&store, "acme").await;
    let auditor = auditor(&store, 5);
    for i in 1..=n {
        assert_eq!(auditor.record(tenant, &entry("execution.create", i)).await.unwrap(), i);
    }
    (store, database, auditor, tenant)
}

/// A raw connection with the append-only protection switched off: what an
/// attacker with the database's credentials can do.
async fn attacker(database: &TestDatabase) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(database.url()).await.unwrap();
    let disable = if database.is_postgres() {
        "ALTER TABLE audit_entries DISABLE TRIGGER USER; ALTER TABLE audit_checkpoints DISABLE TRIGGER USER;"
    } else {
        "DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete; \
         DROP TRIGGER audit_checkpoints_no_update; DROP TRIGGER audit_checkpoints_no_delete;"
    };
    conn.execute(disable).await.unwrap();
    conn
}

fn tampered(verdict: Verdict) -> (u64, Tamper) {
    match verdict {
        Verdict::Tampered { seq, problem, .. } => (seq, problem),
        intact => panic!("tampering went unnoticed: {intact:?}"),
    }
}

#[tokio::test]
async fn an_untouched_log_verifies_with_its_checkpoints() {
    let (store, _database, auditor, tenant) = log_of(12).await;
    let checkpoints = store.audit_checkpoints(tenant).await.unwrap();
    assert_eq!(checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(), vec![5, 10]);
    // The shutdown checkpoint covers the rest.
    assert_eq!(auditor.checkpoint_all().await.unwrap(), 1);
    assert_eq!(auditor.checkpoint_all().await.unwrap(), 0, "nothing left to sign");
    match auditor.verify(tenant).await.unwrap() {
        Verdict::Intact { size, checkpoints, .. } => assert_eq!((size, checkpoints), (12, 3)),
        tampered => panic!("{tampered:?}"),
    }
    let entries = store.audit_entries(tenant, 3, 2).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(entries[0].details, serde_json::json!({ "n": 4 }));
    assert_eq!(entries[1].prev_hash, entries[0].entry_hash, "each entry holds the previous one's hash");
}

#[tokio::test]
async fn logs_of_tenants_are_separate() {
    let (store, _database, auditor, acme) = log_of(3).await;
    let other = tenant(&store, "other").await;
    assert_eq!(auditor.record(other, &entry("key.create", 1)).await.unwrap(), 1, "a log of its own, from 1");
    assert_eq!(store.audit_entries(other, 0, 100).await.unwrap().len(), 1);
    assert_eq!(store.audit_entries(acme, 0, 100).await.unwrap().len(), 3);
    assert!(matches!(auditor.verify(other).await.unwrap(), Verdict::Intact { size: 1, .. }));
}

#[tokio::test]
async fn the_database_refuses_to_rewrite_history() {
    let (store, database, _auditor, _tenant) = log_of(5).await;
    drop(store);
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(database.url()).await.unwrap();
    for statement in [
        "UPDATE audit_entries SET details = '{}' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 2",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = conn.execute(statement).await.expect_err(statement).to_string();
        assert!(err.contains("append-only"), "{statement}: {err}");
    }
}

#[tokio::test]
async fn concurrent_appends_keep_one_chain() {
    let (store, _database) = fresh_store().await;
    let tenant = tenant(&store, "acme").await;
    let auditor = auditor(&store, 7);
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let auditor = auditor.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    auditor.record(tenant, &entry("execution.pause", writer * 100 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    auditor.checkpoint(tenant).await.unwrap();
    match auditor.verify(tenant).await.unwrap() {
        Verdict::Intact { size, .. } => assert_eq!(size, 40),
        tampered => panic!("{tampered:?}"),
    }
}

#[tokio::test]
async fn every_entry_has_a_proof_that_checks_without_the_database() {
    let (store, _database, auditor, tenant) = log_of(7).await;
    for seq in 1..=7 {
        // Entries 6 and 7 follow the last checkpoint: one is signed for them.
        let proof = auditor.proof(tenant, seq).await.unwrap();
        let checkpoint = proof.check(&auditor.verifier()).unwrap();
        assert!(checkpoint.size >= seq);
        // A proof travels as JSON and still checks.
        let copy: codexos_store::AuditProof = serde_json::from_str(&serde_json::to_string(&proof).unwrap()).unwrap();
        copy.check(&auditor.verifier()).unwrap();

        let mut forged = proof.clone();
        forged.entry.outcome = "denied".to_owned();
        assert!(forged.check(&auditor.verifier()).is_err(), "an edited entry must not check");
        let other_key = SigningKey::generate("codexos-audit").unwrap().verifier();
        assert!(proof.check(&other_key).is_err(), "a checkpoint must only check with its own key");
    }
    assert_eq!(store.audit_checkpoints(tenant).await.unwrap().last().unwrap().size, 7);
    assert!(auditor.proof(tenant, 8).await.is_err(), "no entry 8");
}

#[tokio::test]
async fn an_edited_payload_is_found() {
    let (_store, database, auditor, tenant) = log_of(12).await;
    let mut conn = attacker(&database).await;
    conn.execute("UPDATE audit_entries SET outcome = 'denied' WHERE seq = 7").await.unwrap();
    assert_eq!(tampered(auditor.verify(tenant).await.unwrap()), (7, Tamper::Edited));
}

#[tokio::test]
async fn an_edit_with_rehashed_links_is_found_by_the_checkpoints() {
    let (store, database, auditor, tenant) = log_of(10).await;
    // The attacker edits entry 3 and recomputes every hash after it, so the
    // chain alone looks whole; only the signed roots can tell.
    let mut entries = Vec::new();
    store.scan_audit(tenant, |entry| entries.push(entry)).await.unwrap();
    let mut conn = attacker(&database).await;
    let mut prev = entries[1].stored_hash;
    for stored in entries.iter_mut().skip(2) {
        if stored.record.seq == 3 {
            stored.record.target = "execution:forged".to_owned();
        }
        stored.record.prev_hash = prev;
        prev = stored.record.entry_hash();
        sqlx::query("UPDATE audit_entries SET target = $1, prev_hash = $2, entry_hash = $3 WHERE seq = $4")
            .bind(&stored.record.target)
            .bind(hex::encode(stored.record.prev_hash))
            .bind(hex::encode(prev))
            .bind(stored.record.seq as i64)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (seq, problem) = tampered(auditor.verify(tenant).await.unwrap());
    assert!(matches!(problem, Tamper::Edited | Tamper::BadCheckpoint), "{problem:?}");
    assert!(seq <= 5, "found at or before the first checkpoint after the edit, not at {seq}");
}

#[tokio::test]
async fn a_deleted_entry_is_found() {
    let (_store, database, auditor, tenant) = log_of(12).await;
    let mut conn = attacker(&database).await;
    conn.execute("DELETE FROM audit_entries WHERE seq = 4").await.unwrap();
    assert_eq!(tampered(auditor.verify(tenant).await.unwrap()), (4, Tamper::Deleted));
}

#[tokio::test]
async fn swapped_entries_are_found() {
    let (_store, database, auditor, tenant) = log_of(12).await;
    let mut conn = attacker(&database).await;
    // Swap rows 8 and 9 whole, sequence numbers included.
    conn.execute("UPDATE audit_entries SET seq = -8 WHERE seq = 8").await.unwrap();
    conn.execute("UPDATE audit_entries SET seq = 8 WHERE seq = 9").await.unwrap();
    conn.execute("UPDATE audit_entries SET seq = 9 WHERE seq = -8").await.unwrap();
    let (seq, problem) = tampered(auditor.verify(tenant).await.unwrap());
    assert_eq!(seq, 8);
    assert!(matches!(problem, Tamper::Reordered | Tamper::Edited), "{problem:?}");
}

/// Regression: SQLite's JSON functions decode a BLOB that looks like JSONB,
/// so a value replaced by the JSONB of the same text once verified intact.
#[tokio::test]
async fn a_value_stored_as_jsonb_is_not_taken_for_the_text_it_encodes() {
    let (_store, database, auditor, tenant) = log_of(6).await;
    if database.is_postgres() {
        eprintln!("skipping: storage classes are SQLite's");
        return;
    }
    let mut conn = attacker(&database).await;
    conn.execute("UPDATE audit_entries SET actor = jsonb(json_quote(actor)) WHERE seq = 3").await.unwrap();
    let verdict = auditor.verify(tenant).await;
    assert!(!matches!(verdict, Ok(Verdict::Intact { .. })), "{verdict:?}");
}

#[tokio::test]
async fn a_truncated_tail_is_found() {
    let (_store, database, auditor, tenant) = log_of(12).await;
    auditor.checkpoint_all().await.unwrap();
    let mut conn = attacker(&database).await;
    conn.execute("DELETE FROM audit_entries WHERE seq > 9").await.unwrap();
    let (seq, problem) = tampered(auditor.verify(tenant).await.unwrap());
    assert_eq!(problem, Tamper::Truncated);
    assert_eq!(seq, 10, "the first missing entry");
}

#[tokio::test]
async fn a_checkpoint_signed_by_another_key_is_refused() {
    let (store, _database, _auditor, tenant) = log_of(6).await;
    // Verified with a key other than the one that signed.
    let verdict = store.verify_audit(tenant, SigningKey::generate("codexos-audit").unwrap().verifier()).await.unwrap();
    assert_eq!(tampered(verdict).1, Tamper::BadCheckpoint);
}

#[tokio::test]
async fn a_witness_outside_the_database_finds_a_tail_cut_with_its_checkpoints() {
    let (store, database, auditor, tenant) = log_of(12).await;
    auditor.checkpoint_all().await.unwrap();
    let witness = store.audit_checkpoints(tenant).await.unwrap().pop().unwrap();
    assert_eq!(witness.size, 12);
    // The attacker cuts the tail and every checkpoint that could tell.
    let mut conn = attacker(&database).await;
    conn.execute("DELETE FROM audit_entries WHERE seq > 9").await.unwrap();
    conn.execute("DELETE FROM audit_checkpoints").await.unwrap();
    // The database alone now looks whole...
    assert!(matches!(auditor.verify(tenant).await.unwrap(), Verdict::Intact { size: 9, .. }));
    // ...but not against the checkpoint kept elsewhere.
    let witnesses = [codexos_audit::StoredCheckpoint { size: witness.size, note: witness.note }];
    let verdict = store.verify_audit_with_witnesses(tenant, auditor.verifier(), &witnesses).await.unwrap();
    assert_eq!(tampered(verdict), (10, Tamper::Truncated));
}
