//! SCRATCH PROBE, not to be committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::str::FromStr;
use std::time::{Duration, Instant};

use codexos_audit::{Checkpoint, Frontier, GENESIS, Record, SigningKey, StoredCheckpoint, StoredEntry, Verdict};
use codexos_core::{TenantId, TenantSlug};
use codexos_store::{Store, audit_origin};
use futures_util::TryStreamExt;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, QueryBuilder, Row};

const ENTRIES: u64 = 1_000_000;
const CHECKPOINT_EVERY: u64 = 10_000;
const ROWS_PER_INSERT: u64 = 1_000;
const ROWS_PER_TRANSACTION: u64 = 100_000;

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
            let mut insert = QueryBuilder::new(
                "INSERT INTO audit_entries (tenant_id, seq, actor, action, target, outcome, request_id, details, \
                 created_at, prev_hash, entry_hash) ",
            );
            insert.push_values(rows, |mut row, (record, hash)| {
                row.push_bind(tenant_text.clone())
                    .push_bind(record.seq as i64)
                    .push_bind(record.actor)
                    .push_bind(record.action)
                    .push_bind(record.target)
                    .push_bind(record.outcome)
                    .push_bind(record.request_id)
                    .push_bind(record.details)
                    .push_bind(record.created_at)
                    .push_bind(hex::encode(record.prev_hash))
                    .push_bind(hex::encode(hash));
            });
            insert.build().execute(&mut *tx).await.unwrap();
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

fn parse_hash(text: &str) -> codexos_audit::Hash {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).unwrap_or_else(|_| hash = [0xff; 32]);
    hash
}

const COLS: &str = "seq, actor, action, target, outcome, request_id, details, created_at, prev_hash, entry_hash";

async fn raw_fetch_all(pool: &AnyPool, tenant: &str, page: i64) -> u64 {
    let mut after = i64::MIN;
    let mut n = 0;
    loop {
        let mut tx = pool.begin().await.unwrap();
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant)
        .bind(after)
        .bind(page)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let full = rows.len() as i64 == page;
        n += rows.len() as u64;
        if let Some(last) = rows.last() {
            after = last.try_get::<i64, _>(0).unwrap();
        }
        if !full {
            return n;
        }
    }
}

async fn stream_scan(pool: &AnyPool, tenant: &str, page: i64, mut visit: impl FnMut(StoredEntry)) -> u64 {
    let mut after = i64::MIN;
    let mut n = 0;
    loop {
        let mut tx = pool.begin().await.unwrap();
        let mut got = 0i64;
        {
            let sql =
                format!("SELECT {COLS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3");
            let mut rows = sqlx::query(&sql).bind(tenant).bind(after).bind(page).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.unwrap() {
                got += 1;
                let seq: i64 = row.try_get(0).unwrap();
                after = seq;
                let prev: &str = row.try_get(8).unwrap();
                let entry: &str = row.try_get(9).unwrap();
                visit(StoredEntry {
                    record: Record {
                        tenant: tenant.to_owned(),
                        seq: seq as u64,
                        actor: row.try_get(1).unwrap(),
                        action: row.try_get(2).unwrap(),
                        target: row.try_get(3).unwrap(),
                        outcome: row.try_get(4).unwrap(),
                        request_id: row.try_get(5).unwrap(),
                        details: row.try_get(6).unwrap(),
                        created_at: row.try_get(7).unwrap(),
                        prev_hash: parse_hash(prev),
                    },
                    stored_hash: parse_hash(entry),
                });
            }
        }
        tx.commit().await.unwrap();
        n += got as u64;
        if got < page {
            return n;
        }
    }
}

fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

async fn fetch_all_scan(pool: &AnyPool, tenant: &str, page: i64, mut visit: impl FnMut(StoredEntry)) -> u64 {
    let mut after = i64::MIN;
    let mut n = 0;
    loop {
        let mut tx = pool.begin().await.unwrap();
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant)
        .bind(after)
        .bind(page)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let full = rows.len() as i64 == page;
        n += rows.len() as u64;
        for row in &rows {
            let seq: i64 = row.try_get(0).unwrap();
            after = seq;
            let prev: &str = row.try_get(8).unwrap();
            let entry: &str = row.try_get(9).unwrap();
            visit(StoredEntry {
                record: Record {
                    tenant: tenant.to_owned(),
                    seq: seq as u64,
                    actor: row.try_get(1).unwrap(),
                    action: row.try_get(2).unwrap(),
                    target: row.try_get(3).unwrap(),
                    outcome: row.try_get(4).unwrap(),
                    request_id: row.try_get(5).unwrap(),
                    details: row.try_get(6).unwrap(),
                    created_at: row.try_get(7).unwrap(),
                    prev_hash: parse_hash(prev),
                },
                stored_hash: parse_hash(entry),
            });
        }
        if !full {
            return n;
        }
    }
}

async fn fetch_page(pool: AnyPool, tenant: String, after: i64, page: i64) -> Vec<sqlx::any::AnyRow> {
    let mut tx = pool.begin().await.unwrap();
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(page)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    rows
}

async fn prefetch_scan(pool: &AnyPool, tenant: &str, page: i64, mut visit: impl FnMut(StoredEntry)) -> u64 {
    let mut n = 0;
    let mut rows = fetch_page(pool.clone(), tenant.to_owned(), i64::MIN, page).await;
    loop {
        let full = rows.len() as i64 == page;
        let next = match rows.last() {
            Some(last) if full => {
                Some(tokio::spawn(fetch_page(pool.clone(), tenant.to_owned(), last.try_get(0).unwrap(), page)))
            }
            _ => None,
        };
        n += rows.len() as u64;
        for row in &rows {
            let seq: i64 = row.try_get(0).unwrap();
            let prev: &str = row.try_get(8).unwrap();
            let entry: &str = row.try_get(9).unwrap();
            visit(StoredEntry {
                record: Record {
                    tenant: tenant.to_owned(),
                    seq: seq as u64,
                    actor: row.try_get(1).unwrap(),
                    action: row.try_get(2).unwrap(),
                    target: row.try_get(3).unwrap(),
                    outcome: row.try_get(4).unwrap(),
                    request_id: row.try_get(5).unwrap(),
                    details: row.try_get(6).unwrap(),
                    created_at: row.try_get(7).unwrap(),
                    prev_hash: parse_hash(prev),
                },
                stored_hash: parse_hash(entry),
            });
        }
        drop(rows);
        match next {
            Some(handle) => rows = handle.await.unwrap(),
            None => return n,
        }
    }
}

/// An exact copy of the store's scan before the change.
async fn old_scan(pool: &AnyPool, tenant_text: &str, mut visit: impl FnMut(StoredEntry)) {
    const PAGE: i64 = 10_000;
    let mut after = i64::MIN;
    loop {
        let mut tx = pool.begin().await.unwrap();
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant_text)
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let full = rows.len() as i64 == PAGE;
        for row in &rows {
            let seq: i64 = row.try_get("seq").unwrap();
            after = seq;
            let prev_hash: String = row.try_get("prev_hash").unwrap();
            let entry_hash: String = row.try_get("entry_hash").unwrap();
            visit(StoredEntry {
                record: Record {
                    tenant: tenant_text.to_owned(),
                    seq: u64::try_from(seq).unwrap_or(0),
                    actor: row.try_get("actor").unwrap(),
                    action: row.try_get("action").unwrap(),
                    target: row.try_get("target").unwrap(),
                    outcome: row.try_get("outcome").unwrap(),
                    request_id: row.try_get("request_id").unwrap(),
                    details: row.try_get("details").unwrap(),
                    created_at: row.try_get("created_at").unwrap(),
                    prev_hash: parse_hash(&prev_hash),
                },
                stored_hash: parse_hash(&entry_hash),
            });
        }
        if !full {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let dir = std::path::PathBuf::from("/root/.cache/codexos/target/tmp/audit-probe");
    let url = format!("sqlite://{}", dir.join("codexos.db").display());
    let fresh = !dir.join("codexos.db").exists();
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::connect(&url).await.unwrap();
    let key = SigningKey::load_or_create(&dir.join("key"), "codexos.bench/audit").unwrap();
    let tenant = if fresh {
        let t = store.create_tenant(&TenantSlug::parse("acme").unwrap(), "acme").await.unwrap().id;
        build_log(&url, t, &key).await;
        std::fs::write(dir.join("tenant"), t.to_string()).unwrap();
        t
    } else {
        TenantId::parse(std::fs::read_to_string(dir.join("tenant")).unwrap().trim()).unwrap()
    };
    let ts = tenant.to_string();
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;")
                    .await?;
                Ok(())
            })
        })
        .connect_with(AnyConnectOptions::from_str(&url).unwrap())
        .await
        .unwrap();
    let origin = audit_origin(&ts);
    let cps: Vec<StoredCheckpoint> = store
        .audit_checkpoints(tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|c| StoredCheckpoint { size: c.size, note: c.note })
        .collect();
    let variants: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = std::env::var("ROUNDS").map_or(3, |r| r.parse().unwrap());
    for round in 0..rounds {
        for v in &variants {
            let started = Instant::now();
            let cpu0 = cpu();
            let what = match v.as_str() {
                "store_verify" => format!(
                    "{:?}",
                    matches!(store.verify_audit(tenant, key.verifier()).await.unwrap(), Verdict::Intact { .. })
                ),
                "store_scan" => {
                    let mut n = 0;
                    store.scan_audit(tenant, |_| n += 1).await.unwrap();
                    n.to_string()
                }
                v if v.starts_with("fa_verify") => {
                    let mut verifier = codexos_audit::Verifier::new(&origin, key.verifier(), cps.clone());
                    fetch_all_scan(&pool, &ts, v[9..].parse().unwrap(), |e| verifier.push(e)).await;
                    format!("{:?}", matches!(verifier.finish(), Verdict::Intact { .. }))
                }
                v if v.starts_with("pf_verify") => {
                    let mut verifier = codexos_audit::Verifier::new(&origin, key.verifier(), cps.clone());
                    prefetch_scan(&pool, &ts, v[9..].parse().unwrap(), |e| verifier.push(e)).await;
                    format!("{:?}", matches!(verifier.finish(), Verdict::Intact { .. }))
                }
                "old_verify" => {
                    let mut verifier = codexos_audit::Verifier::new(&origin, key.verifier(), cps.clone());
                    old_scan(&pool, &ts, |e| verifier.push(e)).await;
                    format!("{:?}", matches!(verifier.finish(), Verdict::Intact { .. }))
                }
                "old_scan" => {
                    let mut n = 0u64;
                    old_scan(&pool, &ts, |_| n += 1).await;
                    n.to_string()
                }
                v if v.starts_with("fa_scan") => {
                    fetch_all_scan(&pool, &ts, v[7..].parse().unwrap(), |_| ()).await.to_string()
                }
                v if v.starts_with("fetch_all") => raw_fetch_all(&pool, &ts, v[9..].parse().unwrap()).await.to_string(),
                v if v.starts_with("stream_verify") => {
                    let mut verifier = codexos_audit::Verifier::new(&origin, key.verifier(), cps.clone());
                    stream_scan(&pool, &ts, v[13..].parse().unwrap(), |e| verifier.push(e)).await;
                    format!("{:?}", matches!(verifier.finish(), Verdict::Intact { .. }))
                }
                v if v.starts_with("stream") => {
                    stream_scan(&pool, &ts, v[6..].parse().unwrap(), |_| ()).await.to_string()
                }
                other => panic!("{other}"),
            };
            println!(
                "round {round} {v:<22} {:>8.3} s  cpu {:>6.2} s ({what})",
                started.elapsed().as_secs_f64(),
                cpu() - cpu0
            );
        }
    }
    let _ = Duration::ZERO;
}
