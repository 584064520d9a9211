//! Rollback: whatever happened to the workspace after a checkpoint, restoring it gives back
//! exactly the tree that was checkpointed.

use std::os::unix::fs::symlink;
use std::process::Command;

use codexos_checkpoint::{CheckpointId, Error, RestoreReport};
use pretty_assertions::assert_eq;

use super::{Fixture, chmod, non_utf8, walk, write};

/// A small workspace with one of everything a checkpoint keeps.
fn populate(ws: &std::path::Path) {
    write(&ws.join("README.md"), "# project\n");
    write(&ws.join("src/main.rs"), "fn main() {}\n");
    write(&ws.join("src/lib/util.rs"), "pub fn util() {}\n");
    write(&ws.join("scripts/build.sh"), "#!/bin/sh\necho build\n");
    chmod(&ws.join("scripts/build.sh"), 0o755);
    write(&ws.join("secret.key"), "k");
    chmod(&ws.join("secret.key"), 0o600);
    write(&ws.join("data/empty.bin"), "");
    std::fs::create_dir_all(ws.join("empty/nested-empty")).unwrap();
    std::fs::create_dir(ws.join("locked")).unwrap();
    write(&ws.join("locked/inside.txt"), "inside");
    chmod(&ws.join("locked"), 0o555);
    symlink("src/main.rs", ws.join("main-link")).unwrap();
    symlink("/nonexistent/absolute/target", ws.join("dangling")).unwrap();
    symlink("src", ws.join("dir-link")).unwrap();
    write(&ws.join(non_utf8("name")), "bytes, not UTF-8");
    write(&ws.join("d".repeat(255)).join("f".repeat(255)), "long names");
}

#[test]
fn restore_undoes_modifications_creations_deletions_modes_and_type_changes() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let before = walk(ws);
    let snapshot = fixture.store.snapshot(ws).unwrap();
    assert_eq!(snapshot.skipped, []);

    // Modified (same size and not), created, deleted.
    write(&ws.join("README.md"), "# PROJECT\n");
    write(&ws.join("src/main.rs"), "fn main() { println!(\"changed\"); }\n");
    write(&ws.join("new/deep/file.txt"), "created");
    write(&ws.join("src/new.rs"), "created");
    std::fs::remove_file(ws.join("src/lib/util.rs")).unwrap();
    std::fs::remove_dir_all(ws.join("empty")).unwrap();
    // Modes: +x, -x, a directory's.
    chmod(&ws.join("README.md"), 0o755);
    chmod(&ws.join("scripts/build.sh"), 0o644);
    chmod(&ws.join("locked"), 0o700);
    // Type changes: file -> symlink, dir -> file, symlink -> dir, file -> dir, link retargeted.
    std::fs::remove_file(ws.join("secret.key")).unwrap();
    symlink("/etc/passwd", ws.join("secret.key")).unwrap();
    std::fs::remove_dir_all(ws.join("data")).unwrap();
    write(&ws.join("data"), "was a directory");
    std::fs::remove_file(ws.join("dir-link")).unwrap();
    write(&ws.join("dir-link/x"), "was a link");
    std::fs::remove_file(ws.join(non_utf8("name"))).unwrap();
    write(&ws.join(non_utf8("name")).join("child"), "was a file");
    std::fs::remove_file(ws.join("main-link")).unwrap();
    symlink("README.md", ws.join("main-link")).unwrap();
    assert_ne!(walk(ws), before);

    let report = fixture.store.restore(&snapshot.checkpoint.id, ws).unwrap();
    assert_eq!(walk(ws), before);
    assert!(report.files_written >= 6, "{report:?}");
    assert!(report.removed >= 4, "{report:?}");
    assert_eq!(report.not_restored, []);

    // A second restore finds nothing to do.
    let again = fixture.store.restore(&snapshot.checkpoint.id, ws).unwrap();
    assert_eq!(again, RestoreReport { files_hashed: again.files_hashed, ..RestoreReport::default() });
    assert_eq!(walk(ws), before);
}

#[test]
fn restore_rolls_back_and_forward_between_checkpoints() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let first_tree = walk(ws);
    let first = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    write(&ws.join("src/main.rs"), "fn main() { step_two(); }\n");
    std::fs::remove_dir_all(ws.join("scripts")).unwrap();
    let second_tree = walk(ws);
    let second = fixture.store.snapshot(ws).unwrap().checkpoint.id;

    fixture.store.restore(&first, ws).unwrap();
    assert_eq!(walk(ws), first_tree);
    fixture.store.restore(&second, ws).unwrap();
    assert_eq!(walk(ws), second_tree);
    fixture.store.restore(&first, ws).unwrap();
    assert_eq!(walk(ws), first_tree);
}

/// The scenario: a shell command creates, modifies and deletes files in a folder that
/// is not a git repository; the rollback undoes all of it.
#[test]
fn rollback_undoes_what_a_shell_command_did_in_a_plain_folder() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let before = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let status = Command::new("sh")
        .arg("-c")
        .arg(
            "set -e; echo generated > out.txt; mkdir -p build/obj && : > build/obj/a.o; \
             sed -i 's/main/start/' src/main.rs; rm -r src/lib; chmod +x README.md; \
             ln -sf /tmp main-link; mv scripts tools",
        )
        .current_dir(ws)
        .status()
        .unwrap();
    assert!(status.success());

    fixture.store.restore(&checkpoint, ws).unwrap();
    assert_eq!(walk(ws), before);
}

#[test]
fn an_unchanged_workspace_is_not_rewritten() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    let inode = |path: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ws.join(path)).unwrap());
    let readme_inode = inode("README.md");

    let report = fixture.store.restore(&checkpoint, ws).unwrap();
    assert_eq!(report.files_written + report.symlinks_written + report.dirs_created + report.removed, 0, "{report:?}");
    assert_eq!(inode("README.md"), readme_inode, "the identical file was left in place");
}

#[test]
fn missing_workspaces_and_unknown_checkpoints_fail_cleanly() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;

    let gone = ws.join("deleted-workspace");
    match fixture.store.restore(&checkpoint, &gone) {
        Err(Error::Read { path, .. }) => assert_eq!(path, gone),
        other => panic!("expected a read error naming the workspace, got {other:?}"),
    }
    let unknown = CheckpointId::parse(&"0".repeat(64)).unwrap();
    let before = walk(ws);
    assert!(matches!(fixture.store.restore(&unknown, ws), Err(Error::NotFound { .. })));
    assert!(matches!(fixture.store.snapshot(&gone), Err(Error::Read { .. })));
    assert_eq!(walk(ws), before, "a failed restore leaves the workspace alone");
}

#[test]
fn a_file_left_by_an_interrupted_restore_is_removed_by_the_next() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    populate(ws);
    let before = walk(ws);
    let checkpoint = fixture.store.snapshot(ws).unwrap().checkpoint.id;
    write(&ws.join("src/.codexos-restore.1.0"), "half a file");

    fixture.store.restore(&checkpoint, ws).unwrap();
    assert_eq!(walk(ws), before);
}
