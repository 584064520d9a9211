//! A log of 20 entries with a checkpoint every 5, tampered with as someone with write access to
//! the table could, and the exact verdict for each.

use codexos_audit::{
    Checkpoint, Frontier, GENESIS, Hash, Record, SigningKey, StoredCheckpoint, StoredEntry, Tamper, Verdict, Verifier,
    inclusion_proof, root, verify, verify_inclusion,
};
use pretty_assertions::assert_eq;

const ORIGIN: &str = "codexos.test/audit/acme";

struct Log {
    key: SigningKey,
    entries: Vec<StoredEntry>,
    checkpoints: Vec<StoredCheckpoint>,
}

fn record(seq: u64, prev_hash: Hash) -> Record {
    Record {
        tenant: "acme".into(),
        seq,
        actor: format!("user:{}", seq % 3),
        action: "agent.run".into(),
        target: format!("execution:{seq}"),
        outcome: "ok".into(),
        request_id: seq.is_multiple_of(2).then(|| format!("req-{seq}")),
        details: format!(r#"{{"step":{seq}}}"#),
        created_at: 1_700_000_000_000 + seq as i64,
        prev_hash,
    }
}

fn sign(key: &SigningKey, origin: &str, size: u64, root: Hash) -> String {
    key.sign(&Checkpoint { origin: origin.into(), size, root, time_ms: 1_700_000_100_000 + size as i64 })
}

/// `n` entries, a checkpoint after every `every`.
fn log_with(n: u64, every: u64) -> Log {
    let key = SigningKey::generate("codexos.test/audit").unwrap();
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    let mut frontier = Frontier::new();
    let mut prev_hash = GENESIS;
    for seq in 1..=n {
        let record = record(seq, prev_hash);
        let stored_hash = record.entry_hash();
        prev_hash = stored_hash;
        frontier.push(stored_hash);
        entries.push(StoredEntry { record, stored_hash });
        if seq.is_multiple_of(every) {
            checkpoints.push(StoredCheckpoint { size: seq, note: sign(&key, ORIGIN, seq, frontier.root()) });
        }
    }
    Log { key, entries, checkpoints }
}

fn log() -> Log {
    log_with(20, 5)
}

impl Log {
    fn verdict(&self) -> Verdict {
        verify(ORIGIN, self.key.verifier(), self.checkpoints.clone(), self.entries.clone())
    }

    /// The entry with this seq, as it is now.
    fn at(&mut self, seq: u64) -> &mut StoredEntry {
        self.entries.iter_mut().find(|entry| entry.record.seq == seq).unwrap()
    }

    fn remove(&mut self, seq: u64) {
        self.entries.retain(|entry| entry.record.seq != seq);
    }

    /// Sets the seq column to the rows' order, as `UPDATE ... SET seq = seq - 1` would.
    fn renumber(&mut self) {
        for (position, entry) in self.entries.iter_mut().enumerate() {
            entry.record.seq = position as u64 + 1;
        }
    }

    /// Recomputes the stored hash of every entry from the one at `position` on.
    fn rehash_from(&mut self, position: usize) {
        for entry in &mut self.entries[position..] {
            entry.stored_hash = entry.record.entry_hash();
        }
    }

    /// Recomputes links and hashes from the entry at `position` on: a chain with no seams.
    fn rechain_from(&mut self, position: usize) {
        for index in position..self.entries.len() {
            let prev_hash = if index == 0 { GENESIS } else { self.entries[index - 1].stored_hash };
            let entry = &mut self.entries[index];
            entry.record.prev_hash = prev_hash;
            entry.stored_hash = entry.record.entry_hash();
        }
    }

    fn checkpoint_at(&mut self, size: u64) -> &mut StoredCheckpoint {
        self.checkpoints.iter_mut().find(|checkpoint| checkpoint.size == size).unwrap()
    }

    fn leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|entry| entry.stored_hash).collect()
    }
}

/// Asserts the kind and place of a tampering and returns the detail for further checks.
#[track_caller]
fn assert_tampered(verdict: Verdict, seq: u64, problem: Tamper) -> String {
    match verdict {
        Verdict::Tampered { seq: found_seq, problem: found_problem, detail } => {
            assert_eq!((found_seq, found_problem), (seq, problem), "{detail}");
            detail
        }
        intact => panic!("expected {problem:?} at {seq}, got {intact:?}"),
    }
}

#[test]
fn an_untouched_log_is_intact() {
    let log = log();
    let expected = Verdict::Intact { size: 20, root: hex::encode(root(&log.leaves())), checkpoints: 4 };
    assert_eq!(log.verdict(), expected);

    // Checkpoints may come in any order.
    let mut reversed = log.checkpoints.clone();
    reversed.reverse();
    assert_eq!(verify(ORIGIN, log.key.verifier(), reversed, log.entries.clone()), expected);
}

#[test]
fn an_empty_log_is_intact() {
    let key = SigningKey::generate("codexos.test/audit").unwrap();
    let empty_root = root(&[]);
    let verdict = verify(ORIGIN, key.verifier(), Vec::new(), Vec::new());
    assert_eq!(verdict, Verdict::Intact { size: 0, root: hex::encode(empty_root), checkpoints: 0 });
    let checkpoints = vec![StoredCheckpoint { size: 0, note: sign(&key, ORIGIN, 0, empty_root) }];
    let verdict = verify(ORIGIN, key.verifier(), checkpoints, Vec::new());
    assert_eq!(verdict, Verdict::Intact { size: 0, root: hex::encode(empty_root), checkpoints: 1 });
}

#[test]
fn streaming_gives_the_same_verdict_and_the_leaves_for_proofs() {
    let log = log();
    let mut verifier = Verifier::new(ORIGIN, log.key.verifier(), log.checkpoints.clone());
    for entry in log.entries.clone() {
        verifier.push(entry);
    }
    let leaves = verifier.leaves().to_vec();
    assert_eq!(leaves, log.leaves());
    assert_eq!(verifier.finish(), log.verdict());

    // Entry 7 is in the tree the last checkpoint signed.
    let proof = inclusion_proof(&leaves, 6).unwrap();
    let checkpoint = codexos_audit::open_checkpoint(&log.checkpoints[3].note, &log.key.verifier()).unwrap();
    verify_inclusion(&log.entries[6].record.entry_hash(), 6, 20, &proof, &checkpoint.root).unwrap();
}

#[test]
fn an_edited_payload() {
    let mut log = log();
    log.at(7).record.details = r#"{"step":700}"#.into();
    assert_tampered(log.verdict(), 7, Tamper::Edited);
}

#[test]
fn an_edited_payload_with_its_hash_recomputed() {
    // Entry 8 still follows the old hash of entry 7, and the log goes on from entry 8.
    let mut log = log();
    log.at(7).record.outcome = "denied".into();
    log.rehash_from(6);
    let detail = assert_tampered(log.verdict(), 7, Tamper::Edited);
    assert!(detail.contains("entry 7 was changed"), "{detail}");
}

#[test]
fn an_edited_payload_with_everything_after_rechained_is_caught_by_the_next_checkpoint() {
    let mut log = log();
    log.at(7).record.actor = "user:mallory".into();
    log.rechain_from(6);
    let detail = assert_tampered(log.verdict(), 10, Tamper::Edited);
    assert!(detail.contains("6 to 10"), "{detail}");

    // With a checkpoint after every entry, the checkpoints name the entry.
    let mut log = log_with(20, 1);
    log.at(7).record.actor = "user:mallory".into();
    log.rechain_from(6);
    assert_tampered(log.verdict(), 7, Tamper::Edited);
}

#[test]
fn a_deleted_row() {
    let mut log = log();
    log.remove(7);
    let detail = assert_tampered(log.verdict(), 7, Tamper::Deleted);
    assert_eq!(detail, "entry 7 is missing");

    let mut log = self::log();
    log.remove(7);
    log.remove(8);
    let detail = assert_tampered(log.verdict(), 7, Tamper::Deleted);
    assert_eq!(detail, "entries 7 to 8 are missing");
}

#[test]
fn a_deleted_row_and_the_rest_renumbered() {
    let mut log = log();
    log.remove(7);
    log.renumber();
    assert_tampered(log.verdict(), 7, Tamper::Deleted);

    // The same with the renumbered rows' hashes recomputed (but not their links).
    log.rehash_from(6);
    assert_tampered(log.verdict(), 7, Tamper::Deleted);

    // Two rows.
    let mut log = self::log();
    log.remove(7);
    log.remove(8);
    log.renumber();
    let detail = assert_tampered(log.verdict(), 7, Tamper::Deleted);
    assert!(detail.contains("entries 7 to 8 were removed"), "{detail}");
}

#[test]
fn a_deleted_first_row() {
    let mut log = log();
    log.remove(1);
    assert_tampered(log.verdict(), 1, Tamper::Deleted);
    log.renumber();
    assert_tampered(log.verdict(), 1, Tamper::Deleted);
}

#[test]
fn swapped_rows_keeping_their_seq_column() {
    // Everything but the seq column swapped between the rows numbered 7 and 8.
    let mut log = log();
    log.entries.swap(6, 7);
    log.renumber();
    assert_tampered(log.verdict(), 7, Tamper::Reordered);
}

#[test]
fn swapped_rows_with_their_seqs() {
    // The rows read in storage order rather than by seq.
    let mut log = log();
    log.entries.swap(6, 7);
    let detail = assert_tampered(log.verdict(), 7, Tamper::Reordered);
    assert_eq!(detail, "entry 8 comes before entry 7");

    // A row moved two places later.
    let mut log = self::log();
    let moved = log.entries.remove(6);
    log.entries.insert(8, moved);
    assert_tampered(log.verdict(), 7, Tamper::Reordered);
    log.renumber();
    assert_tampered(log.verdict(), 7, Tamper::Reordered);
}

/// A well-formed entry that follows `prev_hash`, with its hash computed.
fn forged(seq: u64, prev_hash: Hash) -> StoredEntry {
    let mut record = record(seq, prev_hash);
    record.actor = "user:mallory".into();
    record.action = "secret.read".into();
    let stored_hash = record.entry_hash();
    StoredEntry { record, stored_hash }
}

#[test]
fn an_inserted_row_and_the_rest_renumbered() {
    let mut log = log();
    let after = log.at(7).stored_hash;
    log.entries.insert(7, forged(8, after));
    log.renumber();
    let detail = assert_tampered(log.verdict(), 8, Tamper::Inserted);
    assert!(detail.contains("added after entry 7"), "{detail}");

    // The same with the renumbered rows' hashes recomputed (but not their links).
    log.rehash_from(8);
    let detail = assert_tampered(log.verdict(), 8, Tamper::Inserted);
    assert_eq!(detail, "entry 9 follows entry 7, so entry 8 between them was added");
}

#[test]
fn an_inserted_row_under_an_existing_seq() {
    for position in [7, 8] {
        let mut log = log();
        let after = log.at(7).stored_hash;
        log.entries.insert(position, forged(8, after));
        let detail = assert_tampered(log.verdict(), 8, Tamper::Inserted);
        assert!(detail.contains("seq 8 appears twice"), "{detail}");
    }
}

#[test]
fn an_inserted_row_that_follows_nothing() {
    let mut log = log();
    log.entries.insert(7, forged(8, [0x5a; 32]));
    log.renumber();
    assert_tampered(log.verdict(), 8, Tamper::Inserted);

    // At the end.
    let mut log = self::log();
    log.entries.push(forged(21, [0x5a; 32]));
    assert_tampered(log.verdict(), 21, Tamper::Inserted);
}

#[test]
fn a_truncated_tail() {
    let mut log = log();
    log.entries.truncate(17);
    let detail = assert_tampered(log.verdict(), 18, Tamper::Truncated);
    assert!(detail.contains("entries 18 to 20 are gone"), "{detail}");

    let mut log = self::log();
    log.entries.truncate(19);
    assert_tampered(log.verdict(), 20, Tamper::Truncated);

    let mut log = self::log();
    log.entries.clear();
    assert_tampered(log.verdict(), 1, Tamper::Truncated);
}

#[test]
fn a_tail_after_the_last_checkpoint_can_be_cut_unseen() {
    // The documented limit: without a copy of a later checkpoint elsewhere, entries after the
    // last one can go without trace.
    let mut log = log_with(23, 5);
    log.entries.truncate(20);
    assert!(matches!(log.verdict(), Verdict::Intact { size: 20, checkpoints: 4, .. }));
}

#[test]
fn a_checkpoint_signed_by_another_key() {
    let mut log = log();
    let other = SigningKey::generate("codexos.test/audit").unwrap();
    let root = root(&log.leaves()[..15]);
    log.checkpoint_at(15).note = sign(&other, ORIGIN, 15, root);
    let detail = assert_tampered(log.verdict(), 15, Tamper::BadCheckpoint);
    assert!(detail.contains("no signature by codexos.test/audit+"), "{detail}");

    // The truncation it would prove is not believed either.
    let mut log = self::log();
    log.entries.truncate(17);
    let root = self::root(&log.leaves()[..15]);
    log.checkpoint_at(20).note = sign(&other, ORIGIN, 20, root);
    assert_tampered(log.verdict(), 20, Tamper::BadCheckpoint);
}

#[test]
fn a_checkpoint_with_a_modified_body() {
    let mut log = log();
    let note = log.checkpoint_at(15).note.clone();
    log.checkpoint_at(15).note = note.replacen("\ntime 1", "\ntime 2", 1);
    assert_tampered(log.verdict(), 15, Tamper::BadCheckpoint);

    let mut log = self::log();
    log.checkpoint_at(15).note.push_str("junk\n");
    assert_tampered(log.verdict(), 15, Tamper::BadCheckpoint);
}

#[test]
fn a_checkpoint_of_another_log_or_size() {
    let mut log = log();
    let root = root(&log.leaves()[..15]);
    let note = sign(&log.key, "codexos.test/audit/other", 15, root);
    log.checkpoint_at(15).note = note;
    let detail = assert_tampered(log.verdict(), 15, Tamper::BadCheckpoint);
    assert!(detail.contains("is for the log"), "{detail}");

    let mut log = self::log();
    let note = log.checkpoint_at(10).note.clone();
    log.checkpoint_at(15).note = note;
    let detail = assert_tampered(log.verdict(), 15, Tamper::BadCheckpoint);
    assert!(detail.contains("signs size 10"), "{detail}");
}

#[test]
fn a_valid_checkpoint_with_another_root_means_the_entries_changed() {
    let mut log = log();
    let note = sign(&log.key, ORIGIN, 15, [0x42; 32]);
    log.checkpoint_at(15).note = note;
    let detail = assert_tampered(log.verdict(), 15, Tamper::Edited);
    assert!(detail.contains("11 to 15"), "{detail}");
}

#[test]
fn the_first_problem_wins() {
    let mut log = log();
    log.at(12).record.details = "{}".into();
    let other = SigningKey::generate("codexos.test/audit").unwrap();
    log.checkpoint_at(5).note = sign(&other, ORIGIN, 5, [0; 32]);
    assert_tampered(log.verdict(), 5, Tamper::BadCheckpoint);

    let mut log = self::log();
    log.at(3).record.details = "{}".into();
    log.checkpoint_at(15).note = sign(&other, ORIGIN, 15, [0; 32]);
    log.entries.truncate(17);
    assert_tampered(log.verdict(), 3, Tamper::Edited);
}

#[test]
fn verdicts_serialize_for_the_api() {
    let verdict = Verdict::Tampered { seq: 3, problem: Tamper::BadCheckpoint, detail: "x".into() };
    assert_eq!(
        serde_json::to_value(&verdict).unwrap(),
        serde_json::json!({"Tampered": {"seq": 3, "problem": "bad_checkpoint", "detail": "x"}})
    );
}

proptest::proptest! {
    #[test]
    fn any_single_change_under_a_checkpoint_is_caught(
        n in 2u64..60,
        every in 1u64..8,
        position_seed in proptest::prelude::any::<usize>(),
        kind in 0u8..7,
    ) {
        proptest::prop_assume!(n >= every);
        let mut log = log_with(n, every);
        // Only what a checkpoint covers is protected against removal.
        let covered = (n / every * every) as usize;
        let position = position_seed % covered;
        let seq = position as u64 + 1;
        match kind {
            0 => log.entries[position].record.details.push(' '),
            1 => log.entries[position].stored_hash[0] ^= 1,
            2 => log.entries[position].record.prev_hash[31] ^= 1,
            3 => log.entries[position].record.seq += 1,
            4 => {
                log.entries.remove(position);
            }
            5 => {
                let other = if position + 1 < log.entries.len() { position + 1 } else { position - 1 };
                log.entries.swap(position, other);
            }
            _ => {
                let copy = log.entries[position].clone();
                log.entries.insert(position + 1, copy);
            }
        }
        let verdict = log.verdict();
        match kind {
            0 | 1 => proptest::prop_assert!(
                matches!(verdict, Verdict::Tampered { seq: found, problem: Tamper::Edited, .. } if found == seq),
                "{verdict:?}"
            ),
            _ => proptest::prop_assert!(matches!(verdict, Verdict::Tampered { .. }), "{verdict:?}"),
        }
    }
}
