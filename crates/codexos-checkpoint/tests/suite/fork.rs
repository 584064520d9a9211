//! Forks: a checkpoint restored into a new directory, independent of the original workspace
//! and of the store.

use std::io::{Seek, Write};
use std::os::unix::fs::{MetadataExt, symlink};

use codexos_checkpoint::Error;
use pretty_assertions::assert_eq;

use super::{Fixture, chmod, walk, write};

fn populate(ws: &std::path::Path) {
    write(&ws.join("src/main.rs"), "fn main() {}\n");
    write(&ws.join("run.sh"), "#!/bin/sh\n");
    chmod(&ws.join("run.sh"), 0o755);
    write(&ws.join("big.bin"), vec![3u8; 2 * 1024 * 1024]);
    std::fs::create_dir(ws.join("empty")).unwrap();
    symlink("src/main.rs", ws.join("link")).unwrap();
}

#[test]
fn a_fork_is_an_independent_copy_of_the_checkpoint() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let original = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    // The original goes on after the checkpoint.
    write(&ws.join("src/main.rs"), "fn main() { original_goes_on(); }\n");
    let original_now = walk(ws);

    let forks = tempfile::tempdir().unwrap();
    let fork = forks.path().join("executions/fork-1/workspace");
    let report = fixture.store.restore_into(&checkpoint, &fork).unwrap();
    assert_eq!(walk(&fork), original);
    assert_eq!((report.files_written, report.symlinks_written, report.dirs_created), (3, 1, 2));

    // The fork diverges, writing its files in place (as an agent's editor or `>>` would).
    for name in ["src/main.rs", "big.bin", "run.sh"] {
        let path = fork.join(name);
        assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 1, "{name} shares an inode");
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(b"fork was here").unwrap();
        chmod(&path, 0o777);
    }

    assert_eq!(walk(ws), original_now, "the original workspace is untouched");
    fixture.store.verify(&checkpoint).unwrap();
    let second_fork = forks.path().join("fork-2");
    fixture.store.restore_into(&checkpoint, &second_fork).unwrap();
    assert_eq!(walk(&second_fork), original);
}

#[test]
fn a_fork_goes_into_a_new_or_empty_directory_only() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;

    let target = tempfile::tempdir().unwrap();
    write(&target.path().join("existing.txt"), "someone's");
    let before = walk(target.path());
    assert!(matches!(fixture.store.restore_into(&checkpoint, target.path()), Err(Error::NotEmpty { .. })));
    assert_eq!(walk(target.path()), before);

    let empty = tempfile::tempdir().unwrap();
    fixture.store.restore_into(&checkpoint, empty.path()).unwrap();
    assert_eq!(walk(empty.path()), walk(ws));
}
