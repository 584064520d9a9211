//! Verification of a million-entry tenant log in memory (no database), with a signed
//! checkpoint every 10,000 entries; the cost of appending one leaf to a frontier; one inclusion
//! proof over the million leaves.
//!
//! `cargo bench -p codexos-audit --bench verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use codexos_audit::{
    Checkpoint, Frontier, GENESIS, Record, SigningKey, StoredCheckpoint, StoredEntry, Verdict, inclusion_proof,
    leaf_hash, verify,
};
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};

const ENTRIES: u64 = 1_000_000;
const CHECKPOINT_EVERY: u64 = 10_000;
const ORIGIN: &str = "codexos.bench/audit/acme";

/// A log of entries that look like the server's: short names, a request id, a small JSON body.
fn build_log(key: &SigningKey) -> (Vec<StoredEntry>, Vec<StoredCheckpoint>) {
    let mut entries = Vec::with_capacity(ENTRIES as usize);
    let mut checkpoints = Vec::new();
    let mut frontier = Frontier::new();
    let mut prev_hash = GENESIS;
    for seq in 1..=ENTRIES {
        let record = Record {
            tenant: "acme".into(),
            seq,
            actor: format!("user:{}", seq % 17),
            action: "execution.step".into(),
            target: format!("execution:{:08}", seq / 40),
            outcome: "ok".into(),
            request_id: Some(format!("req-{seq:012}")),
            details: format!(r#"{{"step":{},"tool":"shell","exit_code":0,"duration_ms":{}}}"#, seq % 40, seq % 997),
            created_at: 1_700_000_000_000 + seq as i64,
            prev_hash,
        };
        let stored_hash = record.entry_hash();
        frontier.push(stored_hash);
        prev_hash = stored_hash;
        entries.push(StoredEntry { record, stored_hash });
        if seq.is_multiple_of(CHECKPOINT_EVERY) {
            let checkpoint =
                Checkpoint { origin: ORIGIN.into(), size: seq, root: frontier.root(), time_ms: 1_700_000_000_000 };
            checkpoints.push(StoredCheckpoint { size: seq, note: key.sign(&checkpoint) });
        }
    }
    (entries, checkpoints)
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::generate("codexos.bench/audit").unwrap();
    let (entries, checkpoints) = build_log(&key);
    let verdict = verify(ORIGIN, key.verifier(), checkpoints.clone(), entries.clone());
    assert!(matches!(verdict, Verdict::Intact { size: ENTRIES, checkpoints: 100, .. }), "{verdict:?}");

    let mut group = c.benchmark_group("audit");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(30));
    // The entries are cloned outside the measurement; verify consumes (and drops) them, as it
    // would rows streamed from the database.
    group.bench_function("verify 1M entries, 100 checkpoints", |b| {
        b.iter_batched(
            || entries.clone(),
            |entries| verify(ORIGIN, key.verifier(), checkpoints.clone(), entries),
            BatchSize::PerIteration,
        )
    });

    let leaves: Vec<_> = entries.iter().map(|entry| entry.stored_hash).collect();
    drop(entries);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("inclusion_proof over 1M leaves", |b| {
        b.iter(|| inclusion_proof(black_box(&leaves), black_box(654_321)).unwrap())
    });
    group.finish();

    let leaf = leaf_hash(b"entry");
    let mut frontier = Frontier::new();
    c.bench_function("audit/frontier push (per entry)", |b| b.iter(|| frontier.push(black_box(leaf))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
