//! Quotas and usage per tenant: the values an operator set for a tenant
//! (`tenant_quotas`, a NULL taking the installation's default), what the
//! tenant used per calendar month (`usage`), and the figures quotas are
//! checked against: executions that have not finished, and storage.
//!
//! Sandbox CPU is counted by the database itself: a trigger on
//! `executions` (migration 0008) adds every raise of an execution's
//! `cpu_ms` to its tenant's month, in the transaction that records the
//! step, so the journal's hot path makes no extra round trip and a write
//! under a lost lease (which updates nothing) counts nothing.
//!
//! Storage counts what a tenant keeps on the platform's disks and grows at
//! will: the content its checkpoints added (as indexed, what retention
//! still holds) and the bytes of its memory notes. Timelines are not
//! counted: each event is bounded, their number is bounded by the
//! executions' own limits, and summing every payload would read the
//! tenant's whole history at each check.

use std::collections::BTreeMap;

use codexos_core::{QuotaOverrides, TenantId, UsagePeriod, now_millis};
use sqlx::Row;

use crate::{Backend, Entity, Intent, Result, Store, StoreError};

/// What the `usage` table counts, per tenant and month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageMetric {
    /// Sandbox CPU time of the tenant's executions, in milliseconds,
    /// counted step by step as the worker records it (by a trigger).
    CpuMs,
    /// Executions created (forks included).
    Executions,
}

impl UsageMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageMetric::CpuMs => "cpu_ms",
            UsageMetric::Executions => "executions",
        }
    }
}

pub(crate) const EXECUTIONS: UsageMetric = UsageMetric::Executions;

/// A tenant's figures for its quotas, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUsage {
    pub period: UsagePeriod,
    /// Sandbox CPU used in the period, in milliseconds.
    pub cpu_ms: i64,
    /// Executions created in the period.
    pub executions_created: i64,
    /// Executions that have not finished, now.
    pub active_executions: i64,
    /// Bytes kept now (see the module's documentation).
    pub storage_bytes: i64,
}

/// `WHERE` condition of an execution that has not finished.
const ACTIVE: &str = "status NOT IN ('succeeded', 'failed', 'cancelled')";

impl Store {
    /// The values an operator set for the tenant; `None` for each quota
    /// left to the installation's default (all of them when none was set).
    pub async fn tenant_quotas(&self, tenant: TenantId) -> Result<QuotaOverrides> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let row = sqlx::query(
            "SELECT requests_per_second, burst, max_concurrent_executions, cpu_seconds_per_month, storage_bytes \
             FROM tenant_quotas WHERE tenant_id = $1",
        )
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(QuotaOverrides::default()) };
        Ok(QuotaOverrides {
            requests_per_second: column(&row, "requests_per_second")?,
            burst: column(&row, "burst")?,
            max_concurrent_executions: column(&row, "max_concurrent_executions")?,
            cpu_seconds_per_month: column(&row, "cpu_seconds_per_month")?,
            storage_bytes: column(&row, "storage_bytes")?,
        })
    }

    /// Replaces the tenant's values (all `None`: back to the defaults).
    /// `NotFound(Tenant)` if there is no such tenant. The caller validates
    /// (`QuotaOverrides::validate`); values beyond the database's integers
    /// are refused with `InvalidState`.
    pub async fn set_tenant_quotas(&self, tenant: TenantId, quotas: &QuotaOverrides) -> Result<()> {
        let stored = |quota: &str, value: Option<u64>| -> Result<Option<i64>> {
            value
                .map(|value| {
                    i64::try_from(value).map_err(|_| StoreError::InvalidState(format!("{quota} {value} is too large")))
                })
                .transpose()
        };
        let values = [
            stored("requests_per_second", quotas.requests_per_second.map(u64::from))?,
            stored("burst", quotas.burst.map(u64::from))?,
            stored("max_concurrent_executions", quotas.max_concurrent_executions.map(u64::from))?,
            stored("cpu_seconds_per_month", quotas.cpu_seconds_per_month)?,
            stored("storage_bytes", quotas.storage_bytes)?,
        ];
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(Entity::Tenant));
        }
        if quotas.is_empty() {
            sqlx::query("DELETE FROM tenant_quotas WHERE tenant_id = $1")
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await?;
        } else {
            let [requests_per_second, burst, max_concurrent_executions, cpu_seconds_per_month, storage_bytes] = values;
            sqlx::query(
                "INSERT INTO tenant_quotas (tenant_id, requests_per_second, burst, max_concurrent_executions, \
                 cpu_seconds_per_month, storage_bytes, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id) DO UPDATE SET requests_per_second = excluded.requests_per_second, \
                 burst = excluded.burst, max_concurrent_executions = excluded.max_concurrent_executions, \
                 cpu_seconds_per_month = excluded.cpu_seconds_per_month, storage_bytes = excluded.storage_bytes, \
                 updated_at = excluded.updated_at",
            )
            .bind(tenant.to_string())
            .bind(requests_per_second)
            .bind(burst)
            .bind(max_concurrent_executions)
            .bind(cpu_seconds_per_month)
            .bind(storage_bytes)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds `amount` to the tenant's `metric` of the current month,
    /// atomically (concurrent additions all count). Nothing for an amount
    /// of zero or less.
    pub async fn add_usage(&self, tenant: TenantId, metric: UsageMetric, amount: i64) -> Result<()> {
        if amount <= 0 {
            return Ok(());
        }
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        add_usage_in(&mut tx, tenant, metric, amount, now_millis()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's usage in `period`, by metric name (missing: nothing used).
    pub async fn usage(&self, tenant: TenantId, period: UsagePeriod) -> Result<BTreeMap<String, i64>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query("SELECT metric, amount FROM usage WHERE tenant_id = $1 AND period = $2")
            .bind(tenant.to_string())
            .bind(period.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(|row| Ok((row.try_get("metric")?, row.try_get("amount")?))).collect()
    }

    /// The tenant's executions that have not finished: queued, running,
    /// paused or waiting for approval.
    pub async fn active_executions(&self, tenant: TenantId) -> Result<i64> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let active = count_active(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(active)
    }

    /// The bytes the tenant keeps: checkpoint content and memory notes.
    pub async fn storage_bytes(&self, tenant: TenantId) -> Result<i64> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let bytes = sum_storage(&mut tx, self.backend, tenant).await?;
        tx.commit().await?;
        Ok(bytes)
    }

    /// Every figure the tenant's quotas are checked against, for the month
    /// `period`, in one read.
    pub async fn tenant_usage(&self, tenant: TenantId, period: UsagePeriod) -> Result<TenantUsage> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query("SELECT metric, amount FROM usage WHERE tenant_id = $1 AND period = $2")
            .bind(tenant.to_string())
            .bind(period.to_string())
            .fetch_all(&mut *tx)
            .await?;
        let mut usage = TenantUsage {
            period,
            cpu_ms: 0,
            executions_created: 0,
            active_executions: count_active(&mut tx, tenant).await?,
            storage_bytes: sum_storage(&mut tx, self.backend, tenant).await?,
        };
        tx.commit().await?;
        for row in rows {
            let metric: String = row.try_get("metric")?;
            let amount: i64 = row.try_get("amount")?;
            if metric == UsageMetric::CpuMs.as_str() {
                usage.cpu_ms = amount;
            } else if metric == UsageMetric::Executions.as_str() {
                usage.executions_created = amount;
            }
        }
        Ok(usage)
    }
}

/// Reads a nullable quota column into its unsigned type.
fn column<T: TryFrom<i64>>(row: &sqlx::any::AnyRow, name: &str) -> Result<Option<T>> {
    let value: Option<i64> = row.try_get(name)?;
    value
        .map(|value| T::try_from(value).map_err(|_| StoreError::Corrupt(format!("tenant_quotas.{name} is {value}"))))
        .transpose()
}

async fn count_active(tx: &mut sqlx::Transaction<'static, sqlx::Any>, tenant: TenantId) -> Result<i64> {
    let sql = format!("SELECT COUNT(*) FROM executions WHERE tenant_id = $1 AND {ACTIVE}");
    Ok(sqlx::query_scalar(&sql).bind(tenant.to_string()).fetch_one(&mut **tx).await?)
}

async fn sum_storage(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    tenant: TenantId,
) -> Result<i64> {
    // Bytes, not characters: SQLite's LENGTH counts characters of text.
    let note_bytes = match backend {
        Backend::Sqlite => "LENGTH(CAST(content AS BLOB))",
        Backend::Postgres => "OCTET_LENGTH(content)",
    };
    let sql = format!(
        "SELECT CAST((SELECT COALESCE(SUM(size_bytes), 0) FROM checkpoints WHERE tenant_id = $1) \
         + (SELECT COALESCE(SUM({note_bytes}), 0) FROM memories WHERE tenant_id = $1) AS BIGINT)"
    );
    Ok(sqlx::query_scalar(&sql).bind(tenant.to_string()).fetch_one(&mut **tx).await?)
}

/// Within a transaction that creates an execution: refuses with
/// `ExecutionQuota` when the tenant has `max_active` executions that have
/// not finished. On PostgreSQL the tenant's row is locked first, so that
/// concurrent creations count one after the other (SQLite's write lock,
/// taken at `BEGIN IMMEDIATE`, does that already). `FOR NO KEY UPDATE`
/// leaves the key-share locks of foreign-key checks free: the tenant's
/// other writes do not wait.
pub(crate) async fn admit_execution(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    tenant: TenantId,
    max_active: Option<u32>,
) -> Result<()> {
    let Some(limit) = max_active else { return Ok(()) };
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(tenant.to_string())
            .execute(&mut **tx)
            .await?;
    }
    let active = count_active(tx, tenant).await?;
    if active >= i64::from(limit) {
        return Err(StoreError::ExecutionQuota { active, limit });
    }
    Ok(())
}

/// `add_usage` within a transaction; the month is that of `now`.
pub(crate) async fn add_usage_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    metric: UsageMetric,
    amount: i64,
    now: i64,
) -> Result<()> {
    if amount <= 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage (tenant_id, period, metric, amount, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, period, metric) DO UPDATE SET amount = usage.amount + excluded.amount, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant.to_string())
    .bind(UsagePeriod::of(now).to_string())
    .bind(metric.as_str())
    .bind(amount)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
