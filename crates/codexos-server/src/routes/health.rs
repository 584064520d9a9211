//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use codexos_core::Permission;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiJson, ApiResult, ErrorEnvelope};

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    status: &'static str,
    version: &'static str,
}

/// Liveness: the process is up and answering. No authentication.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> ApiJson<Health> {
    ApiJson(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DetailedHealth {
    /// `ok`, `degraded` (working, but something needs attention: see
    /// `problems`) or `unavailable` (the database cannot be reached).
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    problems: Vec<String>,
    database: DatabaseHealth,
    /// What the host's kernel offers the sandbox (namespaces, Landlock,
    /// seccomp, cgroups), probed at start.
    #[schema(value_type = Object)]
    sandbox: serde_json::Value,
    worker: WorkerHealth,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    /// `sqlite` or `postgres`.
    backend: String,
    ok: bool,
    /// Time of one round trip.
    round_trip_ms: Option<f64>,
    /// PostgreSQL: the role the platform's queries run as (`codexos_app`).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    /// PostgreSQL: whether row-level security binds that role; if not,
    /// a forgotten tenant filter could leak, and `problems` says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    row_level_security: Option<bool>,
    error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerHealth {
    /// Workers whose heartbeat is within the lease timeout.
    workers_alive: i64,
    /// Executions waiting for a worker.
    queue_depth: i64,
    /// Executions held by a worker now.
    running: i64,
    /// How long the oldest queued execution has been waiting.
    lag_seconds: f64,
}

/// Readiness: a database round trip, the sandbox's capabilities and the
/// worker queue. Needs `health:read` (owners and admins): the figures are
/// installation-wide.
#[utoipa::path(
    get, path = "/health/detailed", tag = "health", security(("api_key" = [])),
    responses(
        (status = 200, body = DetailedHealth, description = "Healthy or degraded"),
        (status = 503, body = DetailedHealth, description = "The database cannot be reached"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
    )
)]
pub async fn health_detailed(State(state): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.require(Permission::HealthRead)?;
    let mut problems = Vec::new();
    let database = match state.store.ping().await {
        Ok(check) => {
            if check.row_level_security == Some(false) {
                problems.push(format!(
                    "the database role {} is not bound by row-level security: tenant isolation rests on the store's filters alone",
                    check.role.as_deref().unwrap_or("(unknown)")
                ));
            }
            DatabaseHealth {
                backend: backend_name(&state),
                ok: true,
                round_trip_ms: Some(check.round_trip.as_secs_f64() * 1000.0),
                role: check.role,
                row_level_security: check.row_level_security,
                error: None,
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "health check: database round trip failed");
            problems.push("the database cannot be reached".to_owned());
            DatabaseHealth {
                backend: backend_name(&state),
                ok: false,
                round_trip_ms: None,
                role: None,
                row_level_security: None,
                error: Some(err.to_string()),
            }
        }
    };
    let worker = match state.store.queue_stats(state.lease_timeout).await {
        Ok(stats) => {
            if stats.workers_alive == 0 {
                problems.push("no worker is alive: queued executions will not run".to_owned());
            }
            WorkerHealth {
                workers_alive: stats.workers_alive,
                queue_depth: stats.queued,
                running: stats.running,
                lag_seconds: stats.oldest_queued_age_ms.unwrap_or(0) as f64 / 1000.0,
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "health check: queue statistics failed");
            WorkerHealth { workers_alive: 0, queue_depth: 0, running: 0, lag_seconds: 0.0 }
        }
    };
    for missing in &state.capabilities.missing {
        problems.push(format!("sandbox protection unavailable on this host: {missing}"));
    }
    let (status, code) = if !database.ok {
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    } else if problems.is_empty() {
        ("ok", StatusCode::OK)
    } else {
        ("degraded", StatusCode::OK)
    };
    let body = DetailedHealth {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        problems,
        database,
        sandbox: serde_json::to_value(&*state.capabilities).unwrap_or_default(),
        worker,
    };
    Ok((code, ApiJson(body)))
}

fn backend_name(state: &AppState) -> String {
    state.store.backend().to_string()
}

/// Prometheus text exposition: requests, errors and latency per route and
/// tenant, the execution queue, and process figures (CPU, memory, open files).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.queue_stats(state.lease_timeout).await {
        Ok(stats) => {
            metrics::gauge!("codexos_executions_queued").set(stats.queued as f64);
            metrics::gauge!("codexos_executions_running").set(stats.running as f64);
            metrics::gauge!("codexos_queue_lag_seconds").set(stats.oldest_queued_age_ms.unwrap_or(0) as f64 / 1000.0);
            metrics::gauge!("codexos_workers_alive").set(stats.workers_alive as f64);
        }
        Err(err) => tracing::warn!(error = %err, "metrics: queue statistics failed"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&state.metrics))
}
