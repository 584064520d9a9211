//! The tenant's retention policy: how long finished executions, their
//! events and checkpoints, and semantic memory notes are kept. A worker job
//! applies it on schedule and audits every purge.

use std::time::Duration;

use axum::extract::State;
use codexos_core::Permission;
use codexos_store::RetentionPolicy;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};

/// Each kind of data's lifetime as a duration such as `30d` or `12h`;
/// absent or null keeps it for ever.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Finished executions, with their events and checkpoints.
    #[serde(default)]
    executions: Option<String>,
    /// The timelines of finished executions (the executions stay).
    #[serde(default)]
    events: Option<String>,
    /// The workspace checkpoints of finished executions.
    #[serde(default)]
    checkpoints: Option<String>,
    /// Semantic memory notes.
    #[serde(default)]
    memories: Option<String>,
}

/// The shortest lifetime accepted: a typo such as `1m` for a month must not
/// wipe a tenant's history within the minute.
const SHORTEST: Duration = Duration::from_secs(3600);

fn parse(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let duration = humantime::parse_duration(text).map_err(|err| {
        ApiError::bad_request("invalid_field", format!("{field}: '{text}' is not a duration like 30d or 12h: {err}"))
    })?;
    if duration < SHORTEST {
        return Err(ApiError::bad_request("invalid_field", format!("{field}: keep data at least an hour")));
    }
    i64::try_from(duration.as_millis())
        .map(Some)
        .map_err(|_| ApiError::bad_request("invalid_field", format!("{field}: '{text}' is too long")))
}

fn show(millis: Option<i64>) -> Option<String> {
    millis
        .map(|millis| humantime::format_duration(Duration::from_millis(u64::try_from(millis).unwrap_or(0))).to_string())
}

fn view(policy: &RetentionPolicy) -> Retention {
    Retention {
        executions: show(policy.executions_ms),
        events: show(policy.events_ms),
        checkpoints: show(policy.checkpoints_ms),
        memories: show(policy.memories_ms),
    }
}

/// The tenant's retention policy. Needs `tenant:admin`.
#[utoipa::path(
    get, path = "/v1/tenant/retention", tag = "tenant", security(("api_key" = [])),
    responses((status = 200, body = Retention), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn show_retention(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<Retention>> {
    caller.require(Permission::TenantAdmin)?;
    Ok(ApiJson(view(&state.store.retention_policy(caller.0.tenant).await?)))
}

/// Replaces the tenant's retention policy (fields left out keep data for
/// ever). Applied by the workers within their retention interval; every
/// purge is audited. Needs `tenant:admin`.
#[utoipa::path(
    put, path = "/v1/tenant/retention", tag = "tenant", security(("api_key" = [])), request_body = Retention,
    responses(
        (status = 200, body = Retention), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
    )
)]
pub async fn set_retention(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<Retention>,
) -> ApiResult<ApiJson<Retention>> {
    caller.require(Permission::TenantAdmin)?;
    let policy = RetentionPolicy {
        executions_ms: parse("executions", request.executions.as_deref())?,
        events_ms: parse("events", request.events.as_deref())?,
        checkpoints_ms: parse("checkpoints", request.checkpoints.as_deref())?,
        memories_ms: parse("memories", request.memories.as_deref())?,
    };
    state.store.set_retention_policy(caller.0.tenant, &policy).await?;
    Ok(ApiJson(view(&policy)))
}
