//! Random small trees, random changes: a restore always gives back exactly what was
//! checkpointed, backwards and forwards, in place and into a fork.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::{Fixture, chmod, walk};

/// Few names, so that random operations keep hitting the same paths; one not UTF-8 and one
/// `.git`, which is nothing special to a checkpoint.
const NAMES: [&[u8]; 4] = [b"a", b"b", b"c\xff", b".git"];
const FILE_MODES: [u32; 4] = [0o644, 0o755, 0o600, 0o400];
const DIR_MODES: [u32; 3] = [0o755, 0o700, 0o750];

#[derive(Clone, Debug)]
enum Change {
    File { content: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: &'static str },
    Remove,
    Chmod { file_mode: u32, dir_mode: u32 },
}

#[derive(Clone, Debug)]
struct Op {
    path: Vec<usize>,
    change: Change,
}

fn change() -> impl Strategy<Value = Change> {
    let file_mode = proptest::sample::select(FILE_MODES.to_vec());
    let dir_mode = proptest::sample::select(DIR_MODES.to_vec());
    prop_oneof![
        3 => (proptest::collection::vec(any::<u8>(), 0..48), file_mode.clone())
            .prop_map(|(content, mode)| Change::File { content, mode }),
        2 => dir_mode.clone().prop_map(|mode| Change::Dir { mode }),
        1 => proptest::sample::select(vec!["a", "../outside", "/etc", "b/c\u{e9}"]).prop_map(|target| Change::Symlink { target }),
        2 => Just(Change::Remove),
        1 => (file_mode, dir_mode).prop_map(|(file_mode, dir_mode)| Change::Chmod { file_mode, dir_mode }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    (proptest::collection::vec(0..NAMES.len(), 1..=3), change()).prop_map(|(path, change)| Op { path, change })
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Applies an operation the way a shell would get there: missing parents are created, and a
/// parent that is not a directory is replaced by one.
fn apply(root: &Path, op: &Op) {
    let mut path = root.to_owned();
    for &index in &op.path[..op.path.len() - 1] {
        path.push(OsStr::from_bytes(NAMES[index]));
        if !std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
            remove(&path);
            std::fs::create_dir(&path).unwrap();
        }
    }
    path.push(OsStr::from_bytes(NAMES[op.path[op.path.len() - 1]]));
    match &op.change {
        Change::File { content, mode } => {
            remove(&path);
            std::fs::write(&path, content).unwrap();
            chmod(&path, *mode);
        }
        Change::Dir { mode } => {
            if !std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
                remove(&path);
                std::fs::create_dir(&path).unwrap();
            }
            chmod(&path, *mode);
        }
        Change::Symlink { target } => {
            remove(&path);
            symlink(target, &path).unwrap();
        }
        Change::Remove => remove(&path),
        Change::Chmod { file_mode, dir_mode } => match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => chmod(&path, *dir_mode),
            Ok(meta) if meta.is_file() => chmod(&path, *file_mode),
            _ => {}
        },
    }
}

fn fork_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("fork")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn restoring_a_snapshot_gives_back_the_tree(
        build in proptest::collection::vec(op(), 1..24),
        changes in proptest::collection::vec(op(), 1..12),
    ) {
        let fixture = Fixture::new();
        let ws = fixture.ws();
        for op in &build {
            apply(ws, op);
        }
        let first_tree = walk(ws);
        let first = fixture.store.snapshot(ws).unwrap().checkpoint.id;
        for op in &changes {
            apply(ws, op);
        }
        let second_tree = walk(ws);
        let second = fixture.store.snapshot(ws).unwrap().checkpoint.id;

        fixture.store.restore(&first, ws).unwrap();
        prop_assert_eq!(walk(ws), first_tree.clone());
        fixture.store.restore(&second, ws).unwrap();
        prop_assert_eq!(walk(ws), second_tree);
        let forks = tempfile::tempdir().unwrap();
        fixture.store.restore_into(&first, &fork_path(&forks)).unwrap();
        prop_assert_eq!(walk(&fork_path(&forks)), first_tree);
    }
}
