//! The caller's tenant's usage against its quotas, this month.

use axum::extract::State;
use codexos_core::{Permission, UsagePeriod, format_millis, now_millis};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiJson, ApiResult, ErrorEnvelope};

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// The tenant's slug.
    tenant: String,
    /// The month usage is counted in (UTC), `YYYY-MM`.
    period: String,
    /// When the monthly quotas start again from nothing (RFC 3339).
    resets_at: String,
    requests: RequestQuota,
    executions: ExecutionUsage,
    cpu_seconds: CpuUsage,
    storage_bytes: StorageUsage,
}

/// The request rate limit (a token bucket per API process).
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestQuota {
    per_second: u32,
    burst: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionUsage {
    /// Executions that have not finished (queued, running, paused, waiting for approval).
    active: i64,
    /// The most that may be active at once.
    limit: u32,
    /// Executions created this month (forks included).
    created_this_period: i64,
}

/// Sandbox CPU time this month.
#[derive(Debug, Serialize, ToSchema)]
pub struct CpuUsage {
    /// Seconds used, to the millisecond.
    used: f64,
    limit: u64,
}

/// What the tenant keeps: checkpoint content and memory notes.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorageUsage {
    used: i64,
    limit: u64,
}

/// The tenant's usage this month against each of its quotas. Needs
/// `executions:read` (every role).
#[utoipa::path(
    get, path = "/v1/usage", tag = "usage", security(("api_key" = [])),
    responses(
        (status = 200, body = UsageView),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 429, body = ErrorEnvelope, description = "`rate_limited`: the tenant's request rate is reached"),
    )
)]
pub async fn usage(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<UsageView>> {
    caller.require(Permission::ExecutionsRead)?;
    let quotas = state.quotas.quotas(caller.0.tenant).await;
    let period = UsagePeriod::of(now_millis());
    let usage = state.store.tenant_usage(caller.0.tenant, period).await?;
    Ok(ApiJson(UsageView {
        tenant: caller.0.tenant_slug.to_string(),
        period: period.to_string(),
        resets_at: format_millis(period.next().start_millis()),
        requests: RequestQuota { per_second: quotas.requests_per_second, burst: quotas.burst },
        executions: ExecutionUsage {
            active: usage.active_executions,
            limit: quotas.max_concurrent_executions,
            created_this_period: usage.executions_created,
        },
        cpu_seconds: CpuUsage { used: usage.cpu_ms as f64 / 1000.0, limit: quotas.cpu_seconds_per_month },
        storage_bytes: StorageUsage { used: usage.storage_bytes, limit: quotas.storage_bytes },
    }))
}
