//! The index of workspace checkpoints: which checkpoint each execution took
//! at which step, and its size. The checkpoints themselves live in the
//! workers' checkpoint stores (`codexos-checkpoint`); this index decides
//! which of them retention keeps.

use codexos_core::{ExecutionId, TenantId, now_millis};
use sqlx::Row;

use crate::{Intent, Result, Store};

/// How many checkpoints an execution holds and what they added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointUsage {
    pub count: i64,
    /// The bytes of new content they added to their store.
    pub bytes: i64,
}

impl Store {
    /// Records a checkpoint an execution took before a call of `step`.
    /// Recording one twice (a replayed append) changes nothing.
    pub async fn record_checkpoint(
        &self,
        tenant: TenantId,
        execution: ExecutionId,
        step: i64,
        checkpoint: &str,
        added_bytes: i64,
    ) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query(
            "INSERT INTO checkpoints (id, tenant_id, execution_id, step, tree_id, size_bytes, created_at) \
             VALUES ($1, $2, $3, $4, $1, $5, $6) ON CONFLICT (tenant_id, execution_id, id) DO NOTHING",
        )
        .bind(checkpoint)
        .bind(tenant.to_string())
        .bind(execution.to_string())
        .bind(step)
        .bind(added_bytes)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The checkpoints an execution holds.
    pub async fn checkpoint_usage(&self, tenant: TenantId, execution: ExecutionId) -> Result<CheckpointUsage> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS count, CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes FROM checkpoints \
             WHERE tenant_id = $1 AND execution_id = $2",
        )
        .bind(tenant.to_string())
        .bind(execution.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CheckpointUsage { count: row.try_get("count")?, bytes: row.try_get("bytes")? })
    }

    /// Forgets an execution's older checkpoints: it keeps its newest ones,
    /// at most `keep` of them and at most `keep_bytes` of content they added
    /// (the newest is always kept). Returns how many it forgot. The store's
    /// content goes at the next prune.
    pub async fn trim_checkpoints(
        &self,
        tenant: TenantId,
        execution: ExecutionId,
        keep: i64,
        keep_bytes: i64,
    ) -> Result<u64> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        // Newest first: each checkpoint's rank and the bytes of it and every
        // newer one; a checkpoint goes when either passes its bound.
        let res = sqlx::query(
            "DELETE FROM checkpoints WHERE tenant_id = $1 AND execution_id = $2 AND id IN \
             (SELECT id FROM (SELECT id, \
                 ROW_NUMBER() OVER (ORDER BY created_at DESC, step DESC, id) AS rank, \
                 SUM(size_bytes) OVER (ORDER BY created_at DESC, step DESC, id ROWS UNBOUNDED PRECEDING) AS running \
               FROM checkpoints WHERE tenant_id = $1 AND execution_id = $2) ranked \
              WHERE rank > 1 AND (rank > $3 OR running > $4))",
        )
        .bind(tenant.to_string())
        .bind(execution.to_string())
        .bind(keep.max(1))
        .bind(keep_bytes.max(0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(res.rows_affected())
    }

    /// Whether the tenant's index still holds a checkpoint (retention has
    /// not dropped it).
    pub async fn checkpoint_indexed(&self, tenant: TenantId, checkpoint: &str) -> Result<bool> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM checkpoints WHERE tenant_id = $1 AND id = $2 LIMIT 1")
                .bind(tenant.to_string())
                .bind(checkpoint)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(found.is_some())
    }

    /// Every checkpoint the tenant's executions still hold: what a prune of
    /// the tenant's checkpoint store must keep.
    pub async fn tenant_checkpoints(&self, tenant: TenantId) -> Result<Vec<String>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query("SELECT DISTINCT id FROM checkpoints WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }
}
