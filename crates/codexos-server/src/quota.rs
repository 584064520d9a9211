//! Per-tenant quotas at the API: the request rate, checked right after
//! authentication, and the checks before an execution is created.
//!
//! Each tenant has a token bucket (`governor`'s GCRA) in this process, of
//! its quota's rate and burst. A tenant's quotas are read from the store
//! again at most every `RELOAD_EVERY`, so an operator's change takes effect
//! within seconds without a restart; the bucket is rebuilt only when the
//! rate or burst changed. Several API processes each keep their own
//! buckets: a tenant's rate is per process (docs/tenancy.md).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codexos_core::{Quotas, TenantId, UsagePeriod, now_millis};
use codexos_store::{Principal, Store, TenantUsage};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// How stale a tenant's quotas may get before they are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// What a refusal for too many executions suggests waiting: about the time
/// a short execution takes, and the next check is cheap.
const EXECUTIONS_RETRY_SECONDS: u64 = 5;
/// Storage is freed by retention or an operator, not by time: retry rarely.
const STORAGE_RETRY_SECONDS: u64 = 3600;

/// The quotas in effect for every tenant seen, and their buckets.
pub struct QuotaKeeper {
    store: Store,
    defaults: Quotas,
    tenants: Mutex<HashMap<TenantId, TenantQuotas>>,
}

#[derive(Clone)]
struct TenantQuotas {
    quotas: Quotas,
    limiter: Arc<DefaultDirectRateLimiter>,
    loaded_at: Instant,
}

fn limiter(quotas: &Quotas) -> Arc<DefaultDirectRateLimiter> {
    // Validated as at least 1 wherever they are set; 1 otherwise.
    let rate = NonZeroU32::new(quotas.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(quotas.burst).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)))
}

impl QuotaKeeper {
    pub fn new(store: Store, defaults: Quotas) -> Self {
        Self { store, defaults, tenants: Mutex::new(HashMap::new()) }
    }

    /// The tenant's quotas in effect, and its bucket.
    async fn tenant(&self, tenant: TenantId) -> TenantQuotas {
        let cached = {
            let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match tenants.get_mut(&tenant) {
                Some(entry) if entry.loaded_at.elapsed() < RELOAD_EVERY => return entry.clone(),
                Some(entry) => {
                    // This request reads them again; the others meanwhile
                    // go on with what is cached.
                    entry.loaded_at = Instant::now();
                    Some(entry.clone())
                }
                None => None,
            }
        };
        let quotas = match self.store.tenant_quotas(tenant).await {
            Ok(overrides) => overrides.over(&self.defaults),
            Err(err) => {
                // The quotas in force stay in force; a new tenant gets the
                // defaults until the store answers again.
                tracing::warn!(error = %err, "cannot read the tenant's quotas; keeping the ones in force");
                cached.as_ref().map_or(self.defaults, |entry| entry.quotas)
            }
        };
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let same_bucket = |entry: &TenantQuotas| {
            entry.quotas.requests_per_second == quotas.requests_per_second && entry.quotas.burst == quotas.burst
        };
        let limiter = match tenants.get(&tenant) {
            // The bucket keeps what the tenant used unless its size changed.
            Some(entry) if same_bucket(entry) => Arc::clone(&entry.limiter),
            _ => limiter(&quotas),
        };
        let entry = TenantQuotas { quotas, limiter, loaded_at: Instant::now() };
        tenants.insert(tenant, entry.clone());
        entry
    }

    /// The quotas in effect for the tenant (at most `RELOAD_EVERY` old).
    pub async fn quotas(&self, tenant: TenantId) -> Quotas {
        self.tenant(tenant).await.quotas
    }

    /// Takes a token from the caller's tenant's bucket; 429 `rate_limited`
    /// with `Retry-After` when it is empty.
    pub async fn check_rate(&self, principal: &Principal) -> Result<(), ApiError> {
        let entry = self.tenant(principal.tenant).await;
        let Err(not_until) = entry.limiter.check() else { return Ok(()) };
        let wait = not_until.wait_time_from(entry.limiter.clock().now());
        let seconds = whole_seconds(wait);
        metrics::counter!("codexos_rate_limited_total", "tenant" => principal.tenant_slug.to_string()).increment(1);
        Err(ApiError::too_many_requests(
            "rate_limited",
            format!(
                "the tenant's rate limit of {} requests per second (burst {}) is reached; retry in {seconds} s",
                entry.quotas.requests_per_second, entry.quotas.burst
            ),
            seconds,
        ))
    }

    /// Whether the tenant may start another execution now, by its CPU and
    /// storage quotas; returns the concurrency quota, which the store
    /// checks in the transaction that creates the execution.
    pub async fn admit_execution(&self, principal: &Principal) -> Result<u32, ApiError> {
        let quotas = self.quotas(principal.tenant).await;
        let now = now_millis();
        let usage = self.store.tenant_usage(principal.tenant, UsagePeriod::of(now)).await?;
        let refused = |quota: &'static str| {
            metrics::counter!("codexos_quota_refusals_total", "tenant" => principal.tenant_slug.to_string(), "quota" => quota)
                .increment(1);
        };
        if cpu_used_up(&usage, &quotas) {
            refused("cpu_seconds_per_month");
            let next_month = UsagePeriod::of(now).next().start_millis();
            let seconds = u64::try_from(next_month.saturating_sub(now) / 1000).unwrap_or(0).max(1);
            return Err(ApiError::too_many_requests(
                "quota_exceeded",
                format!(
                    "the tenant used {} of its {} sandbox CPU seconds this month (cpu_seconds_per_month); \
                     the quota renews on {}",
                    usage.cpu_ms / 1000,
                    quotas.cpu_seconds_per_month,
                    codexos_core::format_millis(next_month)
                ),
                seconds,
            ));
        }
        if u64::try_from(usage.storage_bytes).unwrap_or(0) >= quotas.storage_bytes {
            refused("storage_bytes");
            return Err(ApiError::too_many_requests(
                "quota_exceeded",
                format!(
                    "the tenant keeps {} bytes, its storage limit of {} bytes (storage_bytes); \
                     fewer checkpoints or memory notes free some",
                    usage.storage_bytes, quotas.storage_bytes
                ),
                STORAGE_RETRY_SECONDS,
            ));
        }
        Ok(quotas.max_concurrent_executions)
    }
}

/// Whether the month's sandbox CPU has reached the quota.
pub fn cpu_used_up(usage: &TenantUsage, quotas: &Quotas) -> bool {
    let limit_ms = i64::try_from(quotas.cpu_seconds_per_month.saturating_mul(1000)).unwrap_or(i64::MAX);
    usage.cpu_ms >= limit_ms
}

/// The refusal of an execution over the concurrency quota (the store's
/// `ExecutionQuota`).
pub fn too_many_executions(principal: &Principal, active: i64, limit: u32) -> ApiError {
    metrics::counter!(
        "codexos_quota_refusals_total",
        "tenant" => principal.tenant_slug.to_string(),
        "quota" => "max_concurrent_executions"
    )
    .increment(1);
    ApiError::too_many_requests(
        "quota_exceeded",
        format!(
            "the tenant runs {active} execution{}, its limit (max_concurrent_executions {limit}); \
             wait for one to finish",
            if active == 1 { "" } else { "s" }
        ),
        EXECUTIONS_RETRY_SECONDS,
    )
}

/// A wait as `Retry-After` has it: whole seconds, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_refuses() {
        let quotas = Quotas { requests_per_second: 2, burst: 3, ..Quotas::default() };
        let bucket = limiter(&quotas);
        for _ in 0..3 {
            assert!(bucket.check().is_ok());
        }
        let Err(not_until) = bucket.check() else { panic!("the fourth request went through") };
        let wait = not_until.wait_time_from(bucket.clock().now());
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
    }

    #[test]
    fn cpu_is_used_up_at_the_quota() {
        let usage = TenantUsage {
            period: UsagePeriod::of(0),
            cpu_ms: 2000,
            executions_created: 0,
            active_executions: 0,
            storage_bytes: 0,
        };
        let quota = |cpu_seconds_per_month| Quotas { cpu_seconds_per_month, ..Quotas::default() };
        assert!(cpu_used_up(&usage, &quota(2)));
        assert!(!cpu_used_up(&usage, &quota(3)));
        assert!(cpu_used_up(&TenantUsage { cpu_ms: 0, ..usage.clone() }, &quota(0)));
        assert!(!cpu_used_up(&usage, &quota(u64::MAX)));
    }
}
