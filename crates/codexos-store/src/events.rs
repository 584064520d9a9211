//! The timeline of an execution: append-only events numbered 1, 2, 3, ...
//! without gaps.
//!
//! Sequence numbers are assigned inside the writing transaction, after the
//! writer has locked the execution's row (by inserting it, by leasing it with
//! `SELECT ... FOR UPDATE`, or by the lease-checking `UPDATE`), so two
//! writers of one execution are serialized and cannot pick the same number;
//! the primary key `(execution_id, seq)` would refuse it anyway.

use codexos_core::{ExecutionId, TenantId};
use sqlx::Row;

use crate::error::{Entity, parse_id};
use crate::{Intent, Result, Store, StoreError};

/// The largest event payload the store accepts, as JSON text. The engine
/// caps what it records well below this; a payload this large is a bug.
pub const MAX_EVENT_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: String,
    pub payload: serde_json::Value,
}

/// One recorded event of an execution's timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub execution_id: ExecutionId,
    pub seq: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: i64,
}

/// An event serialized and checked against the size limit, ready to write:
/// done before the transaction starts, so a bad payload costs no lock.
pub(crate) struct EncodedEvent<'a> {
    kind: &'a str,
    payload: &'a serde_json::Value,
    text: String,
}

pub(crate) fn encode<'a>(kind: &'a str, payload: &'a serde_json::Value) -> Result<EncodedEvent<'a>> {
    // `Display` of a `Value` is its compact JSON.
    let text = payload.to_string();
    if text.len() > MAX_EVENT_PAYLOAD_BYTES {
        return Err(StoreError::PayloadTooLarge {
            kind: kind.to_owned(),
            bytes: text.len(),
            limit: MAX_EVENT_PAYLOAD_BYTES,
        });
    }
    Ok(EncodedEvent { kind, payload, text })
}

/// The highest sequence number of an execution's events, 0 if none.
pub(crate) async fn last_seq(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    execution: ExecutionId,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(MAX(seq), 0) FROM execution_events WHERE tenant_id = $1 AND execution_id = $2",
    )
    .bind(tenant.to_string())
    .bind(execution.to_string())
    .fetch_one(&mut **tx)
    .await?)
}

/// Appends events after the execution's last one, created at `now`. The
/// caller must hold the execution's row lock in `tx` (see the module
/// documentation).
pub(crate) async fn append(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    execution: ExecutionId,
    events: &[EncodedEvent<'_>],
    now: i64,
) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let last = last_seq(tx, tenant, execution).await?;
    let mut appended = Vec::with_capacity(events.len());
    for (seq, event) in (last + 1..).zip(events) {
        appended.push(insert(tx, tenant, execution, seq, event, now).await?);
    }
    Ok(appended)
}

/// Appends one event after the execution's last one; as `append`.
pub(crate) async fn append_one(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    execution: ExecutionId,
    event: &EncodedEvent<'_>,
    now: i64,
) -> Result<Event> {
    let seq = last_seq(tx, tenant, execution).await? + 1;
    insert(tx, tenant, execution, seq, event, now).await
}

async fn insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    execution: ExecutionId,
    seq: i64,
    event: &EncodedEvent<'_>,
    now: i64,
) -> Result<Event> {
    sqlx::query(
        "INSERT INTO execution_events (tenant_id, execution_id, seq, kind, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.to_string())
    .bind(execution.to_string())
    .bind(seq)
    .bind(event.kind)
    .bind(&event.text)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(Event {
        execution_id: execution,
        seq,
        kind: event.kind.to_owned(),
        payload: event.payload.clone(),
        created_at: now,
    })
}

impl Store {
    /// Up to `limit` events of an execution with `seq > after_seq`, in order.
    /// `NotFound(Execution)` if the execution is not the tenant's.
    pub async fn events(
        &self,
        tenant: TenantId,
        execution_id: ExecutionId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(execution_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        if exists == 0 {
            return Err(StoreError::NotFound(Entity::Execution));
        }
        let rows = sqlx::query(
            "SELECT execution_id, seq, kind, payload, created_at FROM execution_events \
             WHERE tenant_id = $1 AND execution_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(tenant.to_string())
        .bind(execution_id.to_string())
        .bind(after_seq)
        .bind(limit.max(0))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(event_from_row).collect()
    }
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<Event> {
    let execution_id: String = row.try_get("execution_id")?;
    let seq: i64 = row.try_get("seq")?;
    let payload: String = row.try_get("payload")?;
    Ok(Event {
        execution_id: parse_id(&execution_id, ExecutionId::parse)?,
        seq,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload)
            .map_err(|err| StoreError::Corrupt(format!("event {seq} of execution {execution_id}: {err}")))?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Every event of an execution's timeline, in order, read in pages (for
    /// replaying it). `NotFound(Execution)` as for `events`.
    pub async fn timeline(&self, tenant: TenantId, execution_id: ExecutionId) -> Result<Vec<Event>> {
        const PAGE: i64 = 1000;
        let mut timeline = Vec::new();
        loop {
            let after = timeline.last().map_or(0, |event: &Event| event.seq);
            let page = self.events(tenant, execution_id, after, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            timeline.extend(page);
            if !full {
                return Ok(timeline);
            }
        }
    }
}
