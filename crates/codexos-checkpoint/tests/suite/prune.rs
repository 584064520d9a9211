//! Pruning and retention: what is not kept goes, what is kept still restores.

use codexos_checkpoint::{CheckpointId, Error, PruneReport, Retention};
use pretty_assertions::assert_eq;

use super::{Fixture, let_timestamps_settle, walk, write};

fn populate(ws: &std::path::Path) {
    write(&ws.join("shared.txt"), "in every checkpoint");
    write(&ws.join("dir/changes.txt"), "version 1");
}

#[test]
fn prune_removes_what_no_kept_checkpoint_references_and_only_that() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let first_tree = walk(ws);
    let first = fixture.store.snapshot(ws).unwrap().checkpoint;
    let usage_first = fixture.store.usage().unwrap();
    write(&ws.join("dir/changes.txt"), "version 2, longer");
    let second = fixture.store.snapshot(ws).unwrap().checkpoint;
    write(&ws.join("dir/changes.txt"), "version 3");
    write(&ws.join("third-only.txt"), "third");
    let third_tree = walk(ws);
    let third = fixture.store.snapshot(ws).unwrap().checkpoint;

    let report = fixture.store.prune(&[first.id, third.id]).unwrap();
    // The second checkpoint's own blob and its root and dir listings.
    assert_eq!(report, PruneReport { checkpoints: 1, blobs: 1, trees: 2, freed_bytes: report.freed_bytes });
    assert!(matches!(fixture.store.checkpoint(&second.id), Err(Error::NotFound { .. })));
    for (checkpoint, tree) in [(first.id, &first_tree), (third.id, &third_tree)] {
        fixture.store.verify(&checkpoint).unwrap();
        let fork = tempfile::tempdir().unwrap();
        fixture.store.restore_into(&checkpoint, &fork.path().join("ws")).unwrap();
        assert_eq!(&walk(&fork.path().join("ws")), tree);
    }

    fixture.store.prune(&[first.id]).unwrap();
    let usage = fixture.store.usage().unwrap();
    assert_eq!((usage.checkpoints, usage.blobs, usage.blob_bytes), (1, usage_first.blobs, usage_first.blob_bytes));
    assert_eq!((usage.trees, usage.tree_bytes), (usage_first.trees, usage_first.tree_bytes));
    fixture.store.prune(&[]).unwrap();
    let usage = fixture.store.usage().unwrap();
    assert_eq!((usage.checkpoints, usage.blobs, usage.trees), (0, 0, 0));
}

#[test]
fn prune_deletes_nothing_when_a_kept_checkpoint_is_unknown() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let usage = fixture.store.usage().unwrap();
    let unknown = CheckpointId::parse(&"ab".repeat(32)).unwrap();
    assert!(matches!(fixture.store.prune(&[unknown]), Err(Error::NotFound { .. })));
    assert_eq!(fixture.store.usage().unwrap(), usage);
    fixture.store.verify(&checkpoint).unwrap();
}

/// Regression: the stat cache vouched for files whose blobs a prune had deleted, so the next
/// snapshot named blobs the store no longer had.
#[test]
fn after_a_prune_the_stat_cache_no_longer_vouches_for_deleted_content() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let tree = walk(ws);
    let_timestamps_settle();
    fixture.store.snapshot(ws).unwrap();
    fixture.store.prune(&[]).unwrap();

    let snapshot = fixture.store.snapshot(ws).unwrap();
    assert_eq!(snapshot.hashed_files, 2);
    fixture.store.verify(&snapshot.checkpoint.id).unwrap();
    let fork = tempfile::tempdir().unwrap();
    fixture.store.restore_into(&snapshot.checkpoint.id, &fork.path().join("ws")).unwrap();
    assert_eq!(walk(&fork.path().join("ws")), tree);
}

#[test]
fn retention_keeps_the_newest_within_count_and_size() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("base.bin"), vec![1u8; 100_000]);
    let mut newest_first = Vec::new();
    for step in 0..4 {
        write(&ws.join("step.bin"), vec![step as u8; 10_000]);
        newest_first.insert(0, fixture.store.snapshot(ws).unwrap().checkpoint.id);
    }
    let select = |max_checkpoints, max_bytes| {
        fixture.store.select_retained(&newest_first, &Retention { max_checkpoints, max_bytes }).unwrap()
    };
    assert_eq!(select(None, None), newest_first);
    assert_eq!(select(Some(2), None), newest_first[..2]);
    // The newest holds the base and its step file; each older one adds a 10 kB step file (and
    // small listings), the base being shared.
    let newest_bytes = fixture.store.retained_bytes(&newest_first[..1]).unwrap();
    assert!(newest_bytes > 110_000);
    assert_eq!(select(None, Some(newest_bytes + 25_000)), newest_first[..3]);
    assert_eq!(select(None, Some(1)), newest_first[..1], "the newest is kept whatever its size");
    assert_eq!(select(Some(0), None), newest_first[..1]);

    let keep = select(Some(2), None);
    fixture.store.prune(&keep).unwrap();
    assert_eq!(
        fixture.store.checkpoints().unwrap().iter().map(|checkpoint| checkpoint.id).collect::<Vec<_>>().len(),
        2
    );
    assert_eq!(fixture.store.usage().unwrap().blob_bytes, 100_000 + 2 * 10_000);
}
