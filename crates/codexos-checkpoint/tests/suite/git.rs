//! A workspace that is a git repository: snapshots never change its `.git`, and a rollback
//! undoes what the agent did to the repository (commits, branches, the index) with the rest.

use std::path::Path;
use std::process::Command;

use pretty_assertions::assert_eq;

use super::{Fixture, walk, write};

fn git(ws: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=Agent", "-c", "user.email=agent@example.invalid", "-c", "init.defaultBranch=main"])
        .args(["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"])
        .args(args)
        .current_dir(ws)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", ws)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// `.git` with the mtime of each entry: snapshotting must not even touch it.
fn git_dir_state(ws: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut pending = vec![ws.join(".git")];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.modified().unwrap()));
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn snapshots_leave_git_alone_and_rollback_undoes_the_agents_commits() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    git(ws, &["init", "-q"]);
    write(&ws.join("src/lib.rs"), "pub fn one() {}\n");
    write(&ws.join("notes.txt"), "user's uncommitted work\n");
    git(ws, &["add", "src/lib.rs"]);
    git(ws, &["commit", "-q", "-m", "user's commit"]);
    // `git status` refreshes the index: ask git first, then look at `.git`.
    let log_before = git(ws, &["log", "--format=%H %s", "--all"]);
    let status_before = git(ws, &["status", "--porcelain"]);
    let before = walk(ws);
    let git_before = git_dir_state(ws);

    let snapshot = fixture.store.snapshot(ws).unwrap();
    assert_eq!(git_dir_state(ws), git_before, "snapshotting changed .git");
    assert_eq!(walk(ws), before);

    // The agent commits, branches, stages, and edits.
    write(&ws.join("src/lib.rs"), "pub fn one() {}\npub fn two() {}\n");
    git(ws, &["add", "-A"]);
    git(ws, &["commit", "-q", "-m", "agent's commit"]);
    git(ws, &["branch", "agent-branch"]);
    write(&ws.join("src/scratch.rs"), "// agent\n");
    git(ws, &["add", "src/scratch.rs"]);
    git(ws, &["gc", "-q"]);
    assert_ne!(git(ws, &["log", "--format=%H %s", "--all"]), log_before);

    fixture.store.restore(&snapshot.checkpoint.id, ws).unwrap();
    assert_eq!(walk(ws), before);
    assert_eq!(git(ws, &["log", "--format=%H %s", "--all"]), log_before);
    assert_eq!(git(ws, &["status", "--porcelain"]), status_before);
    assert_eq!(git(ws, &["branch", "--list"]).trim(), "* main");
    git(ws, &["fsck", "--no-progress"]);
}

#[test]
fn the_store_is_nothing_git_can_see() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    git(ws, &["init", "-q"]);
    write(&ws.join("a.txt"), "a\n");
    git(ws, &["add", "a.txt"]);
    git(ws, &["commit", "-q", "-m", "one"]);
    let refs_before = git(ws, &["for-each-ref"]);
    fixture.store.snapshot(ws).unwrap();
    write(&ws.join("a.txt"), "b\n");
    fixture.store.snapshot(ws).unwrap();
    assert_eq!(git(ws, &["for-each-ref"]), refs_before);
    assert_eq!(git(ws, &["stash", "list"]), "");
    assert_eq!(git(ws, &["status", "--porcelain"]), " M a.txt\n");
}
