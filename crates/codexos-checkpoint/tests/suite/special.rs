//! Sockets and FIFOs: reported, kept as placeholders, left alone by restores.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::process::Command;

use codexos_checkpoint::{SkipReason, Skipped};
use pretty_assertions::assert_eq;

use super::{Entry, Fixture, walk, write};

#[test]
fn special_files_are_reported_and_left_in_place() {
    let fixture = Fixture::new();
    let ws = fixture.ws();
    write(&ws.join("file.txt"), "content");
    let _listener = UnixListener::bind(ws.join("server.sock")).unwrap();
    std::fs::create_dir(ws.join("dir")).unwrap();
    assert!(Command::new("mkfifo").arg(ws.join("dir/pipe")).status().unwrap().success());
    let before = walk(ws);
    assert_eq!(before.get(std::path::Path::new("server.sock")), Some(&Entry::Other));

    let snapshot = fixture.store.snapshot(ws).unwrap();
    let mut skipped = snapshot.skipped.clone();
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        skipped,
        [
            Skipped { path: "dir/pipe".into(), reason: SkipReason::Fifo },
            Skipped { path: "server.sock".into(), reason: SkipReason::Socket },
        ]
    );
    assert_eq!(snapshot.checkpoint.uncaptured, 2);

    // Restoring leaves them be, and the rest is restored around them.
    write(&ws.join("file.txt"), "changed");
    let report = fixture.store.restore(&snapshot.checkpoint.id, ws).unwrap();
    assert_eq!(walk(ws), before);
    assert_eq!(report.not_restored, []);
    assert!(std::fs::symlink_metadata(ws.join("server.sock")).unwrap().file_type().is_socket());

    // Gone ones cannot be brought back, and the report says so; new ones are removed.
    std::fs::remove_file(ws.join("server.sock")).unwrap();
    assert!(Command::new("mkfifo").arg(ws.join("new-pipe")).status().unwrap().success());
    let report = fixture.store.restore(&snapshot.checkpoint.id, ws).unwrap();
    assert_eq!(report.not_restored, [Skipped { path: "server.sock".into(), reason: SkipReason::Socket }]);
    assert!(!ws.join("new-pipe").exists());
    assert!(std::fs::symlink_metadata(ws.join("dir/pipe")).unwrap().file_type().is_fifo());
}
