use std::time::Duration;

use codexos_core::now_millis;
use sqlx::Row;

use crate::{Intent, Result, Store};

/// A live worker's registration id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerId(pub String);

/// The state of the execution queue across all tenants, for health checks
/// and metrics (operators see it; tenants do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Executions waiting for a worker.
    pub queued: i64,
    /// Executions a worker holds right now.
    pub running: i64,
    /// How long the oldest queued execution has waited, in milliseconds.
    pub oldest_queued_age_ms: Option<i64>,
    /// Workers whose last heartbeat is within the lease timeout.
    pub workers_alive: i64,
}

impl Store {
    pub async fn queue_stats(&self, lease_timeout: Duration) -> Result<QueueStats> {
        let now = now_millis();
        // Installation-wide figures: they span tenants.
        let mut tx = self.system_tx(Intent::Read).await?;
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM executions WHERE status = 'queued') AS queued, \
               (SELECT COUNT(*) FROM executions WHERE status = 'running') AS running, \
               (SELECT MIN(created_at) FROM executions WHERE status = 'queued') AS oldest, \
               (SELECT COUNT(*) FROM workers WHERE heartbeat_at > $1) AS alive",
        )
        .bind(alive_since(now, lease_timeout))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(QueueStats {
            queued: row.try_get("queued")?,
            running: row.try_get("running")?,
            oldest_queued_age_ms: oldest.map(|created| (now - created).max(0)),
            workers_alive: row.try_get("alive")?,
        })
    }

    /// Records a worker as alive.
    pub async fn register_worker(&self, hostname: &str, pid: u32) -> Result<WorkerId> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_millis();
        sqlx::query("INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(&id)
            .bind(hostname)
            .bind(i64::from(pid))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(WorkerId(id))
    }

    /// Refreshes a worker's heartbeat, registering it again if its row was
    /// reaped while it was stalled.
    pub async fn heartbeat_worker(&self, worker: &WorkerId, hostname: &str, pid: u32) -> Result<()> {
        let now = now_millis();
        sqlx::query(
            "INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&worker.0)
        .bind(hostname)
        .bind(i64::from(pid))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a worker that stops cleanly, and any long-dead ones.
    pub async fn deregister_worker(&self, worker: &WorkerId, dead_before_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1 OR heartbeat_at < $2")
            .bind(&worker.0)
            .bind(dead_before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Live workers' ids, oldest first.
    pub async fn live_workers(&self, lease_timeout: Duration) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM workers WHERE heartbeat_at > $1 ORDER BY started_at")
            .bind(alive_since(now_millis(), lease_timeout))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }
}

/// The oldest heartbeat that still counts as alive.
fn alive_since(now: i64, lease_timeout: Duration) -> i64 {
    now.saturating_sub(i64::try_from(lease_timeout.as_millis()).unwrap_or(i64::MAX))
}
