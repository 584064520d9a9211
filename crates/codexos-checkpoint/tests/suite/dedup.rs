//! Checkpoints share content: an unchanged workspace costs nothing more, a one-file change
//! costs that file and the directory listings above it, and unchanged files are not re-read.

use std::io::Write;

use pretty_assertions::assert_eq;

use super::{Fixture, let_timestamps_settle, write};

fn populate(ws: &std::path::Path) {
    for dir in ["a", "b", "a/deep/er"] {
        for n in 0..20 {
            write(&ws.join(dir).join(format!("file-{n}.txt")), format!("{dir} {n}\n").repeat(n + 1));
        }
    }
}

#[test]
fn a_second_snapshot_of_an_unchanged_tree_adds_nothing() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let first = fixture.store.snapshot(ws).unwrap().checkpoint;
    assert_eq!(first.files, 60);
    assert_eq!(first.added_blobs, 60);
    assert!(first.added_bytes > first.logical_bytes, "blobs and trees: {first:?}");
    let usage = fixture.store.usage().unwrap();

    let second = fixture.store.snapshot(ws).unwrap().checkpoint;
    assert_ne!(second.id, first.id);
    assert_eq!((second.added_bytes, second.added_blobs), (0, 0));
    assert_eq!(second.logical_bytes, first.logical_bytes);
    let after = fixture.store.usage().unwrap();
    assert_eq!(after.checkpoints, 2);
    assert_eq!(
        (after.blobs, after.blob_bytes, after.trees, after.tree_bytes),
        (usage.blobs, usage.blob_bytes, usage.trees, usage.tree_bytes)
    );
}

#[test]
fn a_one_byte_change_adds_one_blob_and_the_listings_above_it() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    fixture.store.snapshot(ws).unwrap();
    let usage = fixture.store.usage().unwrap();
    let path = ws.join("a/deep/er/file-3.txt");
    let mut content = std::fs::read(&path).unwrap();
    content[0] ^= 1;
    std::fs::write(&path, &content).unwrap();

    let second = fixture.store.snapshot(ws).unwrap().checkpoint;
    let after = fixture.store.usage().unwrap();
    assert_eq!(second.added_blobs, 1);
    assert_eq!(after.blobs, usage.blobs + 1);
    assert_eq!(after.blob_bytes, usage.blob_bytes + content.len() as u64);
    // The root, a, a/deep and a/deep/er have new listings; b's is shared.
    assert_eq!(after.trees, usage.trees + 4);
    assert_eq!(second.added_bytes, content.len() as u64 + (after.tree_bytes - usage.tree_bytes));
}

#[test]
fn content_is_shared_between_files_and_workspaces() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("one.txt"), "same content");
    write(&ws.join("dir/two.txt"), "same content");
    let snapshot = fixture.store.snapshot(ws).unwrap();
    assert_eq!((snapshot.checkpoint.files, snapshot.checkpoint.added_blobs), (2, 1));

    // A second workspace (a fork, another execution) with the same file adds no blob.
    let other = tempfile::tempdir().unwrap();
    write(&other.path().join("copy.txt"), "same content");
    assert_eq!(fixture.store.snapshot(other.path()).unwrap().checkpoint.added_blobs, 0);
}

#[test]
fn only_files_whose_stat_changed_are_read_again() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let_timestamps_settle();
    assert_eq!(fixture.store.snapshot(ws).unwrap().hashed_files, 60);
    assert_eq!(fixture.store.snapshot(ws).unwrap().hashed_files, 0);

    write(&ws.join("b/file-1.txt"), "changed");
    std::fs::OpenOptions::new().append(true).open(ws.join("a/file-2.txt")).unwrap().write_all(b"+").unwrap();
    let snapshot = fixture.store.snapshot(ws).unwrap();
    assert_eq!(snapshot.hashed_files, 2);
    assert_eq!(snapshot.checkpoint.added_blobs, 2);
}

/// The racy case: a file rewritten with the same size right after a snapshot, its mtime put
/// back to what it was. Its stat (ctime) still differs, and its entry was not settled anyway.
#[test]
fn a_same_size_rewrite_right_after_a_snapshot_is_seen() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    let path = ws.join("racy.txt");
    write(&path, "version 1");
    let first = fixture.store.snapshot(ws).unwrap().checkpoint;
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    write(&path, "version 2");
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();

    let second = fixture.store.snapshot(ws).unwrap();
    assert_eq!(second.hashed_files, 1);
    assert_eq!(second.checkpoint.added_blobs, 1);
    fixture.store.restore(&first.id, ws).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 1");
    fixture.store.restore(&second.checkpoint.id, ws).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "version 2");
}

#[test]
fn sizes_are_reported() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("x"), vec![b'x'; 1000]);
    write(&ws.join("big"), vec![7u8; 3 * 1024 * 1024]);
    std::os::unix::fs::symlink("x", ws.join("link")).unwrap();
    std::fs::create_dir(ws.join("empty")).unwrap();
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint;
    assert_eq!((checkpoint.files, checkpoint.dirs, checkpoint.symlinks), (2, 1, 1));
    assert_eq!(checkpoint.logical_bytes, 1000 + 3 * 1024 * 1024);
    assert_eq!(fixture.store.checkpoint(&checkpoint.id).unwrap(), checkpoint);
    assert_eq!(fixture.store.checkpoints().unwrap(), std::slice::from_ref(&checkpoint));
    let usage = fixture.store.usage().unwrap();
    assert_eq!(usage.blob_bytes, checkpoint.logical_bytes);
    assert_eq!(usage.blob_bytes + usage.tree_bytes, checkpoint.added_bytes);
    assert!(usage.index_bytes > 0);
    fixture.store.verify(&checkpoint.id).unwrap();
}
