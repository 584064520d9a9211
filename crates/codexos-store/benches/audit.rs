//! The audit log in the database (issue: "a benchmark ... of audit append
//! and verify; target: a million entries verified in under 5 s").
//!
//! - `audit_append`: one entry appended per iteration to one tenant's log on
//!   an embedded SQLite store (a file in a temporary directory under the
//!   target directory, the real migrations and pool), the store and the log
//!   living across iterations: `Store::append_audit` alone, then through
//!   `Auditor::record` with a signed checkpoint every 1,000 entries (the
//!   signing and its insert included, in one iteration of 1,000), and with
//!   one every entry (the cost of a checkpoint on its own).
//! - `audit_verify_1m`: `Store::verify_audit` of a log of 1,000,000 entries of
//!   one tenant, with a signed checkpoint every 10,000: exactly what
//!   `codexos audit verify` and `GET /v1/audit/verify` run (the checkpoints
//!   read, every entry read in pages and hashed, the chain followed, the
//!   tree rebuilt, each checkpoint opened and checked against the tree and
//!   the one before). Also `Store::scan_audit` alone, with a visitor that
//!   does nothing: the database's share of it. The log is built untimed:
//!   the records computed with `codexos_audit` as the store would, and
//!   inserted a thousand rows to an INSERT, a hundred thousand to a
//!   transaction, through a raw connection. On SQLite always; on
//!   PostgreSQL too when `CODEXOS_BENCH_POSTGRES` (or `CODEXOS_TEST_POSTGRES`)
//!   holds an admin URL: a database is created for the run and dropped after.
//!
//! The entries look like those of `codexos-audit`'s in-memory `verify`
//! bench (the same fields and sizes), so the two verify figures compare.
//!
//! `cargo xtask bench audit`; the figures are in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codexos_audit::{Checkpoint, Frontier, GENESIS, Record, SigningKey, Verdict};
use codexos_core::{TenantId, TenantSlug};
use codexos_store::{AuditOutcome, Auditor, NewAuditEntry, Store, audit_origin};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use sqlx::{AnyConnection, Connection, Executor};
use tokio::runtime::Runtime;

const ENTRIES: u64 = 1_000_000;
const CHECKPOINT_EVERY: u64 = 10_000;
/// Rows per INSERT (11 parameters each: under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement) and per transaction.
const ROWS_PER_INSERT: u64 = 1_000;
const ROWS_PER_TRANSACTION: u64 = 100_000;
const POSTGRES_ENV: [&str; 2] = ["CODEXOS_BENCH_POSTGRES", "CODEXOS_TEST_POSTGRES"];

/// Entry `seq` of the bench's log, shaped as in `codexos-audit`'s verify bench.
fn record(tenant: &str, seq: u64, prev_hash: codexos_audit::Hash) -> Record {
    Record {
        tenant: tenant.to_owned(),
        seq,
        actor: format!("user:{}", seq % 17),
        action: "execution.step".to_owned(),
        target: format!("execution:{:08}", seq / 40),
        outcome: "success".to_owned(),
        request_id: Some(format!("req-{seq:012}")),
        details: format!(r#"{{"step":{},"tool":"shell","exit_code":0,"duration_ms":{}}}"#, seq % 40, seq % 997),
        created_at: 1_700_000_000_000 + seq as i64,
        prev_hash,
    }
}

/// An entry to append, as the server writes them.
fn new_entry(n: u64) -> NewAuditEntry {
    NewAuditEntry {
        actor: format!("user:{}", n % 17),
        action: "execution.step".to_owned(),
        target: format!("execution:{:08}", n / 40),
        outcome: AuditOutcome::Success,
        request_id: Some(format!("req-{n:012}")),
        details: serde_json::json!({ "step": n % 40, "tool": "shell", "exit_code": 0, "duration_ms": n % 997 }),
    }
}

/// A database for the run: an SQLite file under the target directory, or a
/// PostgreSQL database created now and dropped by `drop`.
struct BenchDatabase {
    url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDatabase {
    fn sqlite() -> Self {
        // On disk, as the resume and engine benches keep theirs.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let url = format!("sqlite://{}", dir.path().join("codexos.db").display());
        Self { url, postgres: None, _dir: Some(dir) }
    }

    async fn postgres(admin_url: &str) -> Self {
        let name = format!("codexos_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        // The admin URL with its database name replaced, as in
        // codexos-test-support's `TestDatabase`.
        let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(base, query)| (base, Some(query)));
        let after_scheme = base.find("://").map_or(0, |at| at + 3);
        let host_end = base[after_scheme..].find('/').map_or(base.len(), |at| after_scheme + at);
        let mut url = format!("{}/{name}", &base[..host_end]);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        Self { url, postgres: Some((admin_url.to_owned(), name)), _dir: None }
    }

    fn label(&self) -> &'static str {
        if self.postgres.is_some() { "postgres" } else { "sqlite" }
    }

    async fn drop(self) {
        if let Some((admin_url, name)) = &self.postgres {
            let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
            let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            sqlx::query(&statement).execute(&mut admin).await.unwrap();
            admin.close().await.unwrap();
        }
    }
}

/// Writes a log of `ENTRIES` entries, a checkpoint every `CHECKPOINT_EVERY`
/// signed by `key`, and the log's head, straight into the tables.
async fn build_log(url: &str, tenant: TenantId, key: &SigningKey) {
    let tenant_text = tenant.to_string();
    let origin = audit_origin(&tenant_text);
    let mut conn = AnyConnection::connect(url).await.unwrap();
    let mut frontier = Frontier::new();
    let mut prev_hash = GENESIS;
    let mut seq = 0;
    while seq < ENTRIES {
        let mut tx = conn.begin().await.unwrap();
        let transaction_end = (seq + ROWS_PER_TRANSACTION).min(ENTRIES);
        while seq < transaction_end {
            let chunk_end = (seq + ROWS_PER_INSERT).min(transaction_end);
            let mut rows = Vec::with_capacity((chunk_end - seq) as usize);
            let mut checkpoints = Vec::new();
            for n in seq + 1..=chunk_end {
                let record = record(&tenant_text, n, prev_hash);
                let hash = record.entry_hash();
                frontier.push(hash);
                rows.push((record, hash));
                prev_hash = hash;
                if n.is_multiple_of(CHECKPOINT_EVERY) {
                    let checkpoint = Checkpoint {
                        origin: origin.clone(),
                        size: n,
                        root: frontier.root(),
                        time_ms: 1_700_000_000_000,
                    };
                    checkpoints.push((n, key.sign(&checkpoint)));
                }
            }
            // Numbered placeholders, which both SQLite and PostgreSQL read
            // (the `Any` query builder writes `?`, which PostgreSQL refuses).
            let mut sql = String::from(
                "INSERT INTO audit_entries (tenant_id, seq, actor, action, target, outcome, request_id, details, \
                 created_at, prev_hash, entry_hash) VALUES ",
            );
            for row in 0..rows.len() {
                let first = row * 11;
                let placeholders: Vec<String> = (1..=11).map(|column| format!("${}", first + column)).collect();
                sql.push_str(if row == 0 { "(" } else { ", (" });
                sql.push_str(&placeholders.join(", "));
                sql.push(')');
            }
            let mut insert = sqlx::query(&sql);
            for (record, hash) in rows {
                insert = insert
                    .bind(tenant_text.clone())
                    .bind(record.seq as i64)
                    .bind(record.actor)
                    .bind(record.action)
                    .bind(record.target)
                    .bind(record.outcome)
                    .bind(record.request_id)
                    .bind(record.details)
                    .bind(record.created_at)
                    .bind(hex::encode(record.prev_hash))
                    .bind(hex::encode(hash));
            }
            insert.execute(&mut *tx).await.unwrap();
            for (size, note) in checkpoints {
                sqlx::query(
                    "INSERT INTO audit_checkpoints (tenant_id, size, note, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&tenant_text)
                .bind(size as i64)
                .bind(note)
                .bind(1_700_000_000_000i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            seq = chunk_end;
        }
        tx.commit().await.unwrap();
    }
    sqlx::query(
        "INSERT INTO audit_heads (tenant_id, size, last_hash, frontier, updated_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&tenant_text)
    .bind(ENTRIES as i64)
    .bind(hex::encode(prev_hash))
    .bind(frontier.to_text())
    .bind(1_700_000_000_000i64)
    .execute(&mut conn)
    .await
    .unwrap();
    if url.starts_with("sqlite:") {
        // As a long-running server's file would be: the WAL folded back in.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await.unwrap();
    } else {
        conn.execute("ANALYZE audit_entries").await.unwrap();
    }
    conn.close().await.unwrap();
}

async fn new_tenant(store: &Store, slug: &str) -> TenantId {
    store.create_tenant(&TenantSlug::parse(slug).unwrap(), slug).await.unwrap().id
}

fn audit_append(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let database = BenchDatabase::sqlite();
    let store = runtime.block_on(Store::connect(&database.url)).unwrap();
    let key = Arc::new(SigningKey::generate("codexos.bench/audit").unwrap());
    let (plain, every_1000, every_1) = runtime.block_on(async {
        (new_tenant(&store, "plain").await, new_tenant(&store, "signed").await, new_tenant(&store, "each").await)
    });
    let entries: Vec<NewAuditEntry> = (0..1000).map(new_entry).collect();

    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("store.append_audit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for n in 0..iters {
                    store.append_audit(plain, &entries[(n % 1000) as usize]).await.unwrap();
                }
                started.elapsed()
            })
        })
    });
    for (name, tenant, every) in [
        ("auditor.record, checkpoint every 1000", every_1000, 1000),
        ("auditor.record, checkpoint every 1", every_1, 1),
    ] {
        let auditor = Auditor::new(store.clone(), Arc::clone(&key), every);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for n in 0..iters {
                        auditor.record(tenant, &entries[(n % 1000) as usize]).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    runtime.block_on(async {
        for (name, tenant) in [("append_audit", plain), ("every 1000", every_1000), ("every 1", every_1)] {
            let size = store.audit_head(tenant).await.unwrap().size;
            let checkpoints = store.audit_checkpoints(tenant).await.unwrap().len();
            let verdict = store.verify_audit(tenant, key.verifier()).await.unwrap();
            assert!(matches!(verdict, Verdict::Intact { .. }), "{verdict:?}");
            println!("audit_append/{name}: the log holds {size} entries and {checkpoints} checkpoints, intact");
        }
        store.close().await;
    });
    runtime.block_on(database.drop());
}

fn audit_verify_1m(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let mut databases = vec![BenchDatabase::sqlite()];
    if let Some(admin_url) = POSTGRES_ENV.iter().find_map(|var| std::env::var(var).ok().filter(|url| !url.is_empty())) {
        databases.push(runtime.block_on(BenchDatabase::postgres(&admin_url)));
    }
    let key = SigningKey::generate("codexos.bench/audit").unwrap();

    let mut group = c.benchmark_group("audit_verify_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(40))
        .throughput(Throughput::Elements(ENTRIES));
    for database in databases {
        let label = database.label();
        let (store, tenant) = runtime.block_on(async {
            let store = Store::connect(&database.url).await.unwrap();
            let tenant = new_tenant(&store, "acme").await;
            let started = Instant::now();
            build_log(&database.url, tenant, &key).await;
            println!("audit_verify_1m/{label}: built the log of {ENTRIES} entries in {:.1?}", started.elapsed());
            if let Some(dir) = &database._dir {
                let bytes: u64 = std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter_map(|entry| entry.ok()?.metadata().ok())
                    .map(|meta| meta.len())
                    .sum();
                println!("audit_verify_1m/{label}: the database is {:.0} MiB", bytes as f64 / (1 << 20) as f64);
            }
            // Once, outside the timing: the log must verify.
            let started = Instant::now();
            let verdict = store.verify_audit(tenant, key.verifier()).await.unwrap();
            println!("audit_verify_1m/{label}: first verification took {:.2?}: {verdict:?}", started.elapsed());
            assert!(
                matches!(verdict, Verdict::Intact { size: ENTRIES, checkpoints: 100, .. }),
                "the bench log does not verify: {verdict:?}"
            );
            (store, tenant)
        });
        let verifier = key.verifier();
        group.bench_function(format!("{label}/verify_audit"), |b| {
            b.iter(|| runtime.block_on(store.verify_audit(tenant, verifier.clone())).unwrap())
        });
        group.bench_function(format!("{label}/scan_audit only"), |b| {
            b.iter(|| {
                let mut rows = 0u64;
                runtime.block_on(store.scan_audit(tenant, |_| rows += 1)).unwrap();
                assert_eq!(rows, ENTRIES);
            })
        });
        runtime.block_on(async {
            store.close().await;
            database.drop().await;
        });
    }
    group.finish();
}

criterion_group!(benches, audit_append, audit_verify_1m);
criterion_main!(benches);
