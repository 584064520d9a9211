//! Checkpoint time and storage for a 10,000-file workspace (issue 5's benchmark): the
//! snapshot after a one-file change, the rollback of that change, what the change costs in
//! storage, and the first full snapshot for reference.
//!
//! `cargo xtask bench checkpoint` (or `cargo bench -p codexos-checkpoint --bench checkpoint`).
//! The workspace is built under `CODEXOS_BENCH_DIR` if set (to compare file systems, e.g.
//! `/dev/shm`), else the system's temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codexos_checkpoint::Store;
use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};

const FILES: usize = 10_000;

/// A deterministic generator, so that every run builds the same workspace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A size drawn from a source tree's mix: mostly small text files, some medium ones, a few
/// large assets.
fn file_size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..750 => 100 + rng.below(6_000) as usize,
        750..970 => 6_000 + rng.below(26_000) as usize,
        970..999 => 32_000 + rng.below(224_000) as usize,
        _ => 1_000_000 + rng.below(3_000_000) as usize,
    }
}

/// 10,000 files in 8 top-level directories, each with 6 modules of 5 leaf directories (three
/// levels deep, about 40 files a leaf), a few in the intermediate directories; one file in 50
/// executable; a few symbolic links and empty directories. Returns the total bytes and the path
/// of a small file three levels deep, the one the benchmark changes.
fn build_workspace(ws: &Path) -> (u64, PathBuf) {
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut total = 0;
    let mut small_deep_file = None;
    for index in 0..FILES {
        let leaf = index % 240;
        let (top, module, sub) = (leaf / 30, (leaf / 5) % 6, leaf % 5);
        let dir = if index % 25 == 0 {
            ws.join(format!("pkg{top}/module{module}"))
        } else {
            ws.join(format!("pkg{top}/module{module}/part{sub}"))
        };
        std::fs::create_dir_all(&dir).unwrap();
        let size = file_size(&mut rng);
        let path = dir.join(format!("file{index:05}.rs"));
        std::fs::write(&path, rng.bytes(size)).unwrap();
        if index % 50 == 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        total += size as u64;
        if index % 25 != 0 && (2_000..4_000).contains(&size) && index > FILES / 2 {
            small_deep_file.get_or_insert(path);
        }
    }
    for n in 0..8 {
        symlink(format!("pkg{n}/module0/part0"), ws.join(format!("link{n}"))).unwrap();
        std::fs::create_dir_all(ws.join(format!("pkg{n}/empty"))).unwrap();
    }
    (total, small_deep_file.expect("a small file"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn benches(c: &mut Criterion) {
    let base = std::env::var_os("CODEXOS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let root = tempfile::tempdir_in(base).unwrap();
    let ws = root.path().join("workspace");
    let started = Instant::now();
    let (total, changed) = build_workspace(&ws);
    eprintln!("workspace: {FILES} files, {:.1} MiB, built in {:.1?}", mib(total), started.elapsed());
    // Files written less than two seconds before a snapshot are hashed again by the next one
    // (racy timestamps); an agent's workspace is older than that when its first step runs.
    std::thread::sleep(Duration::from_millis(2100));

    // (d) The first snapshot, into an empty store: every file read, hashed and copied.
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    let mut n_store = 0;
    group.bench_function("first snapshot (10,000 files, empty store)", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                n_store += 1;
                let store_dir = root.path().join(format!("first-store-{n_store}"));
                let store = Store::open(&store_dir).unwrap();
                let started = Instant::now();
                store.snapshot(&ws).unwrap();
                elapsed += started.elapsed();
                drop(store);
                std::fs::remove_dir_all(&store_dir).unwrap();
            }
            elapsed
        });
    });
    group.finish();

    let store = Store::open(&root.path().join("store")).unwrap();
    let first = store.snapshot(&ws).unwrap();
    let usage_first = store.usage().unwrap();

    // One file changes per step: always the same one, as when an agent edits a file; its
    // content differs every time, so every snapshot stores a new blob.
    let size = std::fs::metadata(&changed).unwrap().len() as usize;
    let mut rng = Rng(42);
    let mut change_one_file = || std::fs::write(&changed, rng.bytes(size)).unwrap();

    // (c) Storage added by a snapshot after a one-file change.
    change_one_file();
    let second = store.snapshot(&ws).unwrap();
    let usage_second = store.usage().unwrap();
    eprintln!(
        "first snapshot: {} files hashed, added {:.1} MiB ({} blobs); store {:.1} MiB",
        first.hashed_files,
        mib(first.checkpoint.added_bytes),
        first.checkpoint.added_blobs,
        mib(usage_first.total_bytes()),
    );
    eprintln!(
        "after a one-file change ({size} bytes): {} file hashed, added {} bytes ({} blob, {} bytes of listings); \
         store grew by {} bytes (stat cache {} bytes, rewritten, not per checkpoint)",
        second.hashed_files,
        second.checkpoint.added_bytes,
        second.checkpoint.added_blobs,
        second.checkpoint.added_bytes - size as u64,
        usage_second.total_bytes() - usage_first.total_bytes(),
        usage_second.index_bytes,
    );

    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(30).measurement_time(Duration::from_secs(6));
    // (a) Snapshot after a one-file change.
    group.bench_function("snapshot after a one-file change", |b| {
        b.iter_batched(&mut change_one_file, |()| store.snapshot(&ws).unwrap(), BatchSize::PerIteration);
    });
    group.bench_function("snapshot, nothing changed", |b| b.iter(|| store.snapshot(&ws).unwrap()));
    // (b) Rollback of a one-file change.
    let checkpoint = second.checkpoint.id;
    group.bench_function("restore after a one-file change", |b| {
        b.iter_batched(&mut change_one_file, |()| store.restore(&checkpoint, &ws).unwrap(), BatchSize::PerIteration);
    });
    group.bench_function("restore, nothing changed", |b| b.iter(|| store.restore(&checkpoint, &ws).unwrap()));
    group.finish();

    let report = {
        change_one_file();
        store.restore(&checkpoint, &ws).unwrap()
    };
    eprintln!("a one-file rollback: {report:?}");
    eprintln!("store after the benchmark: {:?}", store.usage().unwrap());
}

criterion_group!(checkpoint, benches);
criterion_main!(checkpoint);
