//! Retention: each tenant's policy for how long finished executions, their
//! events and checkpoints, and semantic memory notes are kept, and the purge
//! that applies it. Only finished executions are ever touched, and an
//! execution a fork still points at stays until the fork goes.

use codexos_core::{TenantId, now_millis};
use sqlx::Row;

use crate::error::parse_id;
use crate::{Intent, Result, Store};

/// How long each kind of data is kept, in milliseconds; `None` keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetentionPolicy {
    /// Finished executions, with everything of theirs.
    pub executions_ms: Option<i64>,
    /// The timelines of finished executions (the executions and their
    /// totals stay).
    pub events_ms: Option<i64>,
    /// The workspace checkpoints of finished executions.
    pub checkpoints_ms: Option<i64>,
    /// Semantic memory notes, on top of each agent's own retention.
    pub memories_ms: Option<i64>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        *self == RetentionPolicy::default()
    }
}

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub executions: u64,
    pub events: u64,
    pub checkpoints: u64,
    pub memories: u64,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        *self == Purged::default()
    }
}

const FINAL: &str = "status IN ('succeeded', 'failed', 'cancelled')";

impl Store {
    /// The tenant's policy (all `None` when it has none).
    pub async fn retention_policy(&self, tenant: TenantId) -> Result<RetentionPolicy> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query(
            "SELECT executions_ms, events_ms, checkpoints_ms, memories_ms FROM tenant_retention WHERE tenant_id = $1",
        )
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map_or(Ok(RetentionPolicy::default()), |row| policy_from_row(&row))
    }

    /// Replaces the tenant's policy.
    pub async fn set_retention_policy(&self, tenant: TenantId, policy: &RetentionPolicy) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query(
            "INSERT INTO tenant_retention (tenant_id, executions_ms, events_ms, checkpoints_ms, memories_ms, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id) DO UPDATE SET \
             executions_ms = excluded.executions_ms, events_ms = excluded.events_ms, \
             checkpoints_ms = excluded.checkpoints_ms, memories_ms = excluded.memories_ms, updated_at = excluded.updated_at",
        )
        .bind(tenant.to_string())
        .bind(policy.executions_ms)
        .bind(policy.events_ms)
        .bind(policy.checkpoints_ms)
        .bind(policy.memories_ms)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every tenant with a policy (the scheduled job's work list).
    pub async fn retention_policies(&self) -> Result<Vec<(TenantId, RetentionPolicy)>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let rows = sqlx::query(
            "SELECT tenant_id, executions_ms, events_ms, checkpoints_ms, memories_ms FROM tenant_retention \
             WHERE executions_ms IS NOT NULL OR events_ms IS NOT NULL OR checkpoints_ms IS NOT NULL \
             OR memories_ms IS NOT NULL ORDER BY tenant_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let tenant: String = row.try_get("tenant_id")?;
                Ok((parse_id(&tenant, TenantId::parse)?, policy_from_row(row)?))
            })
            .collect()
    }

    /// Applies `policy` to the tenant's data as of `now`, in one
    /// transaction; returns what went.
    pub async fn purge_by_retention(&self, tenant: TenantId, policy: &RetentionPolicy, now: i64) -> Result<Purged> {
        let mut purged = Purged::default();
        // On PostgreSQL the finished executions are locked as they are
        // picked: one being rolled back (queued again) at the same moment is
        // either seen finished and purged first, or seen queued and spared.
        let lock = if self.backend == crate::Backend::Postgres { " FOR UPDATE" } else { "" };
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let tenant_text = tenant.to_string();
        if let Some(keep) = policy.executions_ms {
            // Their events and checkpoints go with them (ON DELETE CASCADE).
            let res = sqlx::query(&format!(
                "DELETE FROM executions WHERE tenant_id = $1 AND {FINAL} AND finished_at < $2 \
                 AND NOT EXISTS (SELECT 1 FROM executions fork WHERE fork.tenant_id = executions.tenant_id \
                   AND fork.parent_execution_id = executions.id)"
            ))
            .bind(&tenant_text)
            .bind(now.saturating_sub(keep))
            .execute(&mut *tx)
            .await?;
            purged.executions = res.rows_affected();
        }
        if let Some(keep) = policy.events_ms {
            let res = sqlx::query(&format!(
                "DELETE FROM execution_events WHERE tenant_id = $1 AND execution_id IN \
                 (SELECT id FROM executions WHERE tenant_id = $1 AND {FINAL} AND finished_at < $2{lock})"
            ))
            .bind(&tenant_text)
            .bind(now.saturating_sub(keep))
            .execute(&mut *tx)
            .await?;
            purged.events = res.rows_affected();
        }
        if let Some(keep) = policy.checkpoints_ms {
            let res = sqlx::query(&format!(
                "DELETE FROM checkpoints WHERE tenant_id = $1 AND execution_id IN \
                 (SELECT id FROM executions WHERE tenant_id = $1 AND {FINAL} AND finished_at < $2{lock})"
            ))
            .bind(&tenant_text)
            .bind(now.saturating_sub(keep))
            .execute(&mut *tx)
            .await?;
            purged.checkpoints = res.rows_affected();
        }
        if let Some(keep) = policy.memories_ms {
            let res = sqlx::query("DELETE FROM memories WHERE tenant_id = $1 AND created_at < $2")
                .bind(&tenant_text)
                .bind(now.saturating_sub(keep))
                .execute(&mut *tx)
                .await?;
            purged.memories = res.rows_affected();
        }
        tx.commit().await?;
        Ok(purged)
    }
}

fn policy_from_row(row: &sqlx::any::AnyRow) -> Result<RetentionPolicy> {
    Ok(RetentionPolicy {
        executions_ms: row.try_get("executions_ms")?,
        events_ms: row.try_get("events_ms")?,
        checkpoints_ms: row.try_get("checkpoints_ms")?,
        memories_ms: row.try_get("memories_ms")?,
    })
}
