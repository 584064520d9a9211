//! Execution leases: a worker holds an execution while it runs it.
//!
//! A worker takes the oldest queued execution, or one whose worker died (its
//! lease expired without renewal), and keeps it by renewing the lease. Every
//! write the worker makes about the execution (events, totals, the end)
//! checks in the same statement that it still holds the lease, so once
//! another worker has taken an execution over, the first one can write
//! nothing more. A lease that expired but was not yet taken over still
//! counts as held: nobody else has the execution, and the takeover (which
//! locks the row) is what ends it.

use std::time::Duration;

use codexos_core::{ExecutionId, ExecutionStatus, TenantId, now_millis};
use sqlx::Row;

use crate::error::parse_id;
use crate::events::{self, Event, NewEvent, encode};
use crate::executions::{Execution, ExecutionTotals, fetch_execution};
use crate::{Backend, Intent, Result, Store, StoreError, WorkerId};

/// A worker's hold on one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub worker: WorkerId,
    pub tenant: TenantId,
    pub execution_id: ExecutionId,
}

/// What a worker gets when it takes an execution: enough to start or resume it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedExecution {
    pub lease: Lease,
    /// As it is now: running, held by this worker.
    pub execution: Execution,
    /// The agent version's manifest (TOML).
    pub manifest: String,
    /// The SHA-256 the version recorded for its manifest when it was
    /// registered; the worker checks the manifest against it, and against
    /// the execution's `manifest_sha256`, before it starts.
    pub version_manifest_sha256: String,
    /// The sequence number of the last event, the `running` one just written.
    pub last_seq: i64,
}

/// The condition for "this worker holds this lease", with `$1` the tenant,
/// `$2` the execution and `$3` the worker; further parameters start at `$4`.
pub(crate) const HELD: &str = "tenant_id = $1 AND id = $2 AND lease_owner = $3 \
                    AND status NOT IN ('succeeded', 'failed', 'cancelled')";

/// Columns set from `ExecutionTotals`, in `bind_totals` order, from `$5` on.
const SET_TOTALS: &str = "steps = $5, input_tokens = $6, output_tokens = $7, cost_microdollars = $8, cpu_ms = $9, \
                          peak_memory_bytes = $10, wall_ms = $11";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_totals<'q>(query: AnyQuery<'q>, totals: &ExecutionTotals) -> AnyQuery<'q> {
    query
        .bind(totals.steps)
        .bind(totals.input_tokens)
        .bind(totals.output_tokens)
        .bind(totals.cost_microdollars)
        .bind(totals.cpu_ms)
        .bind(totals.peak_memory_bytes)
        .bind(totals.wall_ms)
}

pub(crate) fn bind_held<'q>(query: AnyQuery<'q>, lease: &Lease) -> AnyQuery<'q> {
    query.bind(lease.tenant.to_string()).bind(lease.execution_id.to_string()).bind(lease.worker.0.clone())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Takes an execution for `worker`, across tenants: first one whose lease
    /// expired (its worker died; it resumes), else the oldest queued one.
    /// Marks it running under this worker until `now + lease_timeout` and
    /// appends `status` `{"status": "running", "worker": ..., "resumed": ...}`
    /// in the same transaction; `resumed` says whether it had started before.
    ///
    /// On PostgreSQL the candidate is locked with `FOR UPDATE SKIP LOCKED`,
    /// so concurrent workers never take the same one and do not wait on each
    /// other; on SQLite the write transaction (`BEGIN IMMEDIATE`) serializes them.
    pub async fn lease_next_execution(
        &self,
        worker: &WorkerId,
        lease_timeout: Duration,
    ) -> Result<Option<LeasedExecution>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let now = now_millis();
        // Idle workers poll often: a plain read first, so that an empty queue
        // costs no write lock (on SQLite, the whole database's).
        let mut peek = self.system_tx(Intent::Read).await?;
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM executions WHERE status = 'queued' \
             OR (status = 'running' AND lease_expires_at < $1) LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut *peek)
        .await?;
        peek.commit().await?;
        if waiting.is_none() {
            return Ok(None);
        }
        // The queue spans tenants until a candidate is picked.
        let mut tx = self.system_tx(Intent::Write).await?;
        let expired = sqlx::query(&format!(
            "SELECT id, tenant_id, started_at FROM executions \
             WHERE status = 'running' AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT 1{lock}"
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let candidate = match expired {
            Some(row) => Some(row),
            None => {
                sqlx::query(&format!(
                    "SELECT id, tenant_id, started_at FROM executions \
                     WHERE status = 'queued' ORDER BY created_at, id LIMIT 1{lock}"
                ))
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let id: String = candidate.try_get("id")?;
        let tenant: String = candidate.try_get("tenant_id")?;
        let started_at: Option<i64> = candidate.try_get("started_at")?;
        let lease = Lease {
            worker: worker.clone(),
            tenant: parse_id(&tenant, TenantId::parse)?,
            execution_id: parse_id(&id, ExecutionId::parse)?,
        };
        // From here on the transaction works on one tenant's rows.
        self.set_tenant(&mut tx, lease.tenant).await?;
        let running = serde_json::json!({
            "status": ExecutionStatus::Running,
            "worker": worker.0,
            "resumed": started_at.is_some(),
        });
        let running_event = encode("status", &running)?;
        sqlx::query(
            "UPDATE executions SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
             started_at = COALESCE(started_at, $3), updated_at = $3 WHERE tenant_id = $4 AND id = $5",
        )
        .bind(&worker.0)
        .bind(now.saturating_add(millis(lease_timeout)))
        .bind(now)
        .bind(&tenant)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let running_event = events::append_one(&mut tx, lease.tenant, lease.execution_id, &running_event, now).await?;
        let execution = fetch_execution(&mut tx, lease.tenant, lease.execution_id).await?;
        let version =
            sqlx::query("SELECT manifest, manifest_sha256 FROM agent_versions WHERE tenant_id = $1 AND id = $2")
                .bind(&tenant)
                .bind(execution.agent_version_id.to_string())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Some(LeasedExecution {
            lease,
            execution,
            manifest: version.try_get("manifest")?,
            version_manifest_sha256: version.try_get("manifest_sha256")?,
            last_seq: running_event.seq,
        }))
    }

    /// Extends the lease to `now + lease_timeout`; `LeaseLost` if this worker
    /// no longer holds it (taken over, or the execution finished).
    pub async fn renew_lease(&self, lease: &Lease, lease_timeout: Duration) -> Result<()> {
        let mut tx = self.tenant_tx(lease.tenant, Intent::Write).await?;
        let renewed =
            bind_held(sqlx::query(&format!("UPDATE executions SET lease_expires_at = $4 WHERE {HELD}")), lease)
                .bind(now_millis().saturating_add(millis(lease_timeout)))
                .execute(&mut *tx)
                .await?;
        if renewed.rows_affected() == 0 {
            return Err(StoreError::LeaseLost);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends events to the execution's timeline and, if given, replaces its
    /// totals, atomically and only while the lease is held: otherwise
    /// `LeaseLost` and nothing is written. Payloads over
    /// `MAX_EVENT_PAYLOAD_BYTES` are refused (`PayloadTooLarge`) before
    /// anything is written.
    pub async fn append_events(
        &self,
        lease: &Lease,
        events: &[NewEvent],
        totals: Option<&ExecutionTotals>,
    ) -> Result<Vec<Event>> {
        let encoded = events.iter().map(|event| encode(&event.kind, &event.payload)).collect::<Result<Vec<_>>>()?;
        let mut tx = self.tenant_tx(lease.tenant, Intent::Write).await?;
        // The lease check is also the row lock that serializes this
        // execution's writers while the sequence numbers are assigned.
        let set_totals = if totals.is_some() { format!(", {SET_TOTALS}") } else { String::new() };
        let now = now_millis();
        let sql = format!("UPDATE executions SET updated_at = $4{set_totals} WHERE {HELD}");
        let query = bind_held(sqlx::query(&sql), lease).bind(now);
        let query = match totals {
            Some(totals) => bind_totals(query, totals),
            None => query,
        };
        if query.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(StoreError::LeaseLost);
        }
        let appended = events::append(&mut tx, lease.tenant, lease.execution_id, &encoded, now).await?;
        tx.commit().await?;
        Ok(appended)
    }

    /// Ends the execution in one transaction: its final `status` (else
    /// `NotFinal`), `outcome`, `totals` and `finished_at`; releases the lease;
    /// appends `status` `{"status": ..., ...outcome}` (an object outcome's
    /// fields sit beside the status, any other non-null outcome goes under
    /// `"outcome"`). `LeaseLost`, with nothing written, if the lease is not held.
    pub async fn finish_execution(
        &self,
        lease: &Lease,
        status: ExecutionStatus,
        outcome: &serde_json::Value,
        totals: &ExecutionTotals,
    ) -> Result<Event> {
        if !status.is_final() {
            return Err(StoreError::NotFinal(status));
        }
        let payload = status_payload(status, outcome);
        let event = encode("status", &payload)?;
        // A null outcome is no outcome.
        let outcome_text = (!outcome.is_null()).then(|| outcome.to_string());
        let now = now_millis();
        let mut tx = self.tenant_tx(lease.tenant, Intent::Write).await?;
        let sql = format!(
            "UPDATE executions SET updated_at = $4, {SET_TOTALS}, status = $12, outcome = $13, finished_at = $4, \
             lease_owner = NULL, lease_expires_at = NULL, control = NULL WHERE {HELD}"
        );
        let query = bind_held(sqlx::query(&sql), lease).bind(now);
        let finished = bind_totals(query, totals).bind(status.as_str()).bind(&outcome_text).execute(&mut *tx).await?;
        if finished.rows_affected() == 0 {
            return Err(StoreError::LeaseLost);
        }
        let event = events::append_one(&mut tx, lease.tenant, lease.execution_id, &event, now).await?;
        tx.commit().await?;
        Ok(event)
    }
}

/// `{"status": status, ...outcome}`; the status wins over an outcome field
/// of the same name.
fn status_payload(status: ExecutionStatus, outcome: &serde_json::Value) -> serde_json::Value {
    let mut payload = match outcome {
        serde_json::Value::Object(fields) => fields.clone(),
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("outcome".to_owned(), other.clone())]),
    };
    payload.insert("status".to_owned(), serde_json::json!(status));
    serde_json::Value::Object(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_final_status_event_carries_the_outcome() {
        let status = ExecutionStatus::Failed;
        assert_eq!(
            status_payload(status, &json!({"error": "boom", "status": "fine"})),
            json!({"status": "failed", "error": "boom"})
        );
        assert_eq!(status_payload(status, &json!(null)), json!({"status": "failed"}));
        assert_eq!(status_payload(status, &json!("boom")), json!({"status": "failed", "outcome": "boom"}));
    }
}
