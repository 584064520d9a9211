//! A restore writes and deletes inside the workspace only, whatever links the agent planted.

use std::os::unix::fs::{MetadataExt, symlink};

use codexos_checkpoint::{Error, Store};
use pretty_assertions::assert_eq;

use super::{Fixture, chmod, walk, write};

/// A directory outside the workspace that the agent would like us to write into or delete.
fn outside() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("precious.txt"), "do not touch");
    write(&dir.path().join("sub/file.txt"), "outside");
    write(&dir.path().join("victim.txt"), "outside victim");
    dir
}

#[test]
fn a_link_planted_where_a_directory_was_is_replaced_not_followed() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("sub/file.txt"), "inside");
    write(&ws.join("sub/new.txt"), "inside too");
    let before = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let outside = outside();
    let outside_before = walk(outside.path());

    std::fs::remove_dir_all(ws.join("sub")).unwrap();
    symlink(outside.path(), ws.join("sub")).unwrap();
    fixture.store.restore(&checkpoint, ws).unwrap();

    assert_eq!(walk(outside.path()), outside_before);
    assert_eq!(walk(ws), before);
}

#[test]
fn a_link_planted_where_nothing_was_is_removed_not_followed() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("keep.txt"), "inside");
    let before = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let outside = outside();
    let outside_before = walk(outside.path());

    symlink(outside.path(), ws.join("link")).unwrap();
    symlink(outside.path().join("precious.txt"), ws.join("file-link")).unwrap();
    std::fs::create_dir(ws.join("nested")).unwrap();
    symlink(outside.path(), ws.join("nested/deeper-link")).unwrap();
    fixture.store.restore(&checkpoint, ws).unwrap();

    assert_eq!(walk(outside.path()), outside_before);
    assert_eq!(walk(ws), before);
}

#[test]
fn a_link_planted_where_a_file_was_is_replaced_and_its_target_untouched() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("precious.txt"), "the workspace's own");
    write(&ws.join("script.sh"), "#!/bin/sh\n");
    chmod(&ws.join("script.sh"), 0o755);
    let before = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let outside = outside();
    let outside_before = walk(outside.path());

    std::fs::remove_file(ws.join("precious.txt")).unwrap();
    symlink(outside.path().join("precious.txt"), ws.join("precious.txt")).unwrap();
    std::fs::remove_file(ws.join("script.sh")).unwrap();
    symlink(outside.path().join("victim.txt"), ws.join("script.sh")).unwrap();
    fixture.store.restore(&checkpoint, ws).unwrap();

    assert_eq!(walk(outside.path()), outside_before);
    assert_eq!(walk(ws), before);
}

/// A hard link shares the inode with a file outside: changing that inode's content or mode in
/// place would change the outside file. The restore gives the workspace its own copy instead.
#[test]
fn a_hard_link_to_a_file_outside_is_replaced_not_written_through() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    let outside = outside();
    let victim = outside.path().join("victim.txt");
    write(&ws.join("same-content.txt"), "outside victim");
    chmod(&ws.join("same-content.txt"), 0o755);
    write(&ws.join("other-content.txt"), "the workspace's own");
    let before = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let outside_before = walk(outside.path());
    if std::fs::metadata(outside.path()).unwrap().dev() != std::fs::metadata(ws).unwrap().dev() {
        eprintln!("temporary directories on different file systems: no hard link to test");
        return;
    }

    for name in ["same-content.txt", "other-content.txt"] {
        std::fs::remove_file(ws.join(name)).unwrap();
        std::fs::hard_link(&victim, ws.join(name)).unwrap();
    }
    fixture.store.restore(&checkpoint, ws).unwrap();

    assert_eq!(walk(outside.path()), outside_before);
    assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
    assert_eq!(walk(ws), before);
}

#[test]
fn the_store_and_the_workspace_must_be_apart() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    let inside = Store::open(&ws.join(".checkpoints")).unwrap();
    assert!(matches!(inside.snapshot(ws), Err(Error::Overlap { .. })));

    write(&ws.join("file"), "x");
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let within_store = fixture.store.root().join("tmp/ws");
    assert!(matches!(fixture.store.restore_into(&checkpoint, &within_store), Err(Error::Overlap { .. })));
    assert!(matches!(fixture.store.restore(&checkpoint, fixture.store.root()), Err(Error::Overlap { .. })));
}
