//! Executions: start one, list and inspect them, read and follow their
//! timelines (paged, or live as server-sent events).

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use codexos_core::{ExecutionId, ExecutionStatus, Permission, format_millis};
use codexos_engine::RecordedEvent;
use codexos_engine::replay::{last_recorded_step, rollback_target};
use codexos_store::{
    CheckpointUsage, ControlAction, Event, Execution, ExecutionFilter, ExecutionTotals, NewExecution, NewFork,
    StoreError,
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};

/// The longest task accepted, in bytes.
const MAX_TASK_BYTES: usize = 64 * 1024;
/// How often a live stream looks for new events.
const STREAM_POLL: Duration = Duration::from_millis(150);
/// Events read per page of a live stream.
const STREAM_PAGE: i64 = 200;
/// The most payload one page of events carries (one event always goes out,
/// however large): events hold up to megabytes of tool output each.
const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The events that fit a page's byte budget, at least one.
fn within_budget(events: Vec<Event>) -> Vec<Event> {
    let mut used = 0;
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        used += event.payload.to_string().len();
        if used > PAGE_BYTES && !kept.is_empty() {
            break;
        }
        kept.push(event);
    }
    kept
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecution {
    /// The agent's name.
    agent: String,
    /// A version of the agent; the newest when absent.
    version: Option<String>,
    /// What the agent is asked to do.
    task: String,
    /// The workspace directory, an absolute path on the workers' hosts.
    workspace: String,
}

/// An execution as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    id: String,
    agent: String,
    /// The exact version it runs.
    agent_version: String,
    /// The SHA-256 of that version's manifest, recorded when the execution
    /// was created; a worker refuses to start it if the manifest no longer
    /// has this hash (`manifest_tampered`).
    manifest_sha256: String,
    /// The version's signature as registered: `status` and `key_id`.
    #[schema(value_type = Object)]
    signature: serde_json::Value,
    /// queued, running, paused, waiting_approval, succeeded, failed or cancelled.
    status: String,
    task: String,
    workspace: String,
    created_at: String,
    updated_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    #[schema(value_type = Object)]
    totals: ExecutionTotals,
    /// How it ended: `reason`, and `answer` or `error`.
    #[schema(value_type = Option<Object>)]
    outcome: Option<serde_json::Value>,
    /// For a fork: the execution and step it was forked from.
    #[serde(skip_serializing_if = "Option::is_none")]
    forked_from: Option<ForkedFrom>,
    /// The workspace checkpoints it holds (on `GET /v1/executions/{id}`):
    /// `count`, and `bytes` of new content they added.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    checkpoints: Option<CheckpointUsage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForkedFrom {
    execution: String,
    step: i64,
}

impl From<Execution> for ExecutionView {
    fn from(execution: Execution) -> Self {
        Self {
            id: execution.id.to_string(),
            agent: execution.agent_name,
            agent_version: execution.agent_version,
            manifest_sha256: execution.manifest_sha256,
            signature: serde_json::json!({
                "status": execution.signature_status,
                "key_id": execution.publisher_key_id,
            }),
            status: execution.status.to_string(),
            task: execution.task,
            workspace: execution.workspace,
            created_at: format_millis(execution.created_at),
            updated_at: format_millis(execution.updated_at),
            started_at: execution.started_at.map(format_millis),
            finished_at: execution.finished_at.map(format_millis),
            totals: execution.totals,
            outcome: execution.outcome,
            forked_from: execution.parent.map(|(id, step)| ForkedFrom { execution: id.to_string(), step }),
            checkpoints: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionList {
    executions: Vec<ExecutionView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only executions in this status.
    status: Option<String>,
    /// Only executions of this agent.
    agent: Option<String>,
    /// At most this many (1 to 200, default 50).
    limit: Option<i64>,
    /// The page after this execution id (newest first).
    before: Option<String>,
}

/// One event of a timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    seq: i64,
    kind: String,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    created_at: String,
}

impl From<Event> for EventView {
    fn from(event: Event) -> Self {
        Self { seq: event.seq, kind: event.kind, payload: event.payload, created_at: format_millis(event.created_at) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<EventView>,
    /// Pass as `after` for the next page.
    next_after: i64,
    /// The execution's status when the page was read.
    status: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Only events with a larger sequence number (default 0: from the start).
    after: Option<i64>,
    /// At most this many (1 to 1000, default 200).
    limit: Option<i64>,
}

/// Starts an execution of an agent on a task; a worker picks it up. Needs
/// `executions:run`.
#[utoipa::path(
    post, path = "/v1/executions", tag = "executions", security(("api_key" = [])), request_body = CreateExecution,
    responses(
        (status = 201, body = ExecutionView),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope, description = "No such agent or version"),
        (status = 429, body = ErrorEnvelope, description = "`quota_exceeded`: a quota of the tenant is reached (`Retry-After` says when to try again); nothing was created"),
    )
)]
pub async fn create_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateExecution>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<ExecutionView>)> {
    caller.require(Permission::ExecutionsRun)?;
    let task = request.task.trim();
    if task.is_empty() || task.len() > MAX_TASK_BYTES {
        return Err(ApiError::bad_request("invalid_field", format!("task must be 1 to {MAX_TASK_BYTES} bytes")));
    }
    check_workspace_path(&state, &request.workspace)?;
    check_no_overlap(&state, &request.workspace, None).await?;
    let version = state.store.agent_version(caller.0.tenant, &request.agent, request.version.as_deref()).await?;
    // The tenant's policy on starting it (docs/policy.md).
    let facts = super::policies::version_facts(&caller, &version, Some(&request.workspace))?;
    super::policies::check(&state, &caller, facts.start_execution(task), "starting this execution").await?;
    let new_execution = NewExecution {
        agent_version_id: version.id,
        task: task.to_owned(),
        workspace: request.workspace.clone(),
        created_by: caller.0.user,
    };
    let max_active = state.quotas.admit_execution(&caller.0).await?;
    let execution = state
        .store
        .create_execution_within(caller.0.tenant, &new_execution, Some(max_active))
        .await
        .map_err(|err| quota_refusal(&caller, err))?;
    tracing::info!(execution = %execution.id, agent = %version.name, version = %version.version, "execution queued");
    metrics::counter!("codexos_executions_created_total", "tenant" => caller.0.tenant_slug.to_string()).increment(1);
    let note = AuditNote::new(format!("execution:{}", execution.id)).with_details(
        serde_json::json!({ "agent": version.name, "version": version.version, "workspace": request.workspace }),
    );
    Ok((StatusCode::CREATED, Extension(note), ApiJson(execution.into())))
}

/// The tenant's executions, newest first. Needs `executions:read`.
#[utoipa::path(
    get, path = "/v1/executions", tag = "executions", security(("api_key" = [])), params(ListQuery),
    responses(
        (status = 200, body = ExecutionList),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
    )
)]
pub async fn list_executions(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<ApiJson<ExecutionList>> {
    caller.require(Permission::ExecutionsRead)?;
    let status = query
        .status
        .as_deref()
        .map(|text| text.parse::<ExecutionStatus>())
        .transpose()
        .map_err(|err| ApiError::bad_request("invalid_field", format!("status: {err}")))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("invalid_field", "limit must be between 1 and 200"));
    }
    let before = query.before.as_deref().map(parse_execution_id).transpose()?;
    let filter = ExecutionFilter { status, agent: query.agent, limit, before };
    let executions = state.store.list_executions(caller.0.tenant, &filter).await?;
    Ok(ApiJson(ExecutionList { executions: executions.into_iter().map(ExecutionView::from).collect() }))
}

/// One execution. Needs `executions:read`; another tenant's is 404.
#[utoipa::path(
    get, path = "/v1/executions/{id}", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, body = ExecutionView),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn show_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<ExecutionView>> {
    caller.require(Permission::ExecutionsRead)?;
    let execution_id = parse_execution_id(&id)?;
    let execution = state.store.execution(caller.0.tenant, execution_id).await?;
    let checkpoints = state.store.checkpoint_usage(caller.0.tenant, execution_id).await?;
    let mut view = ExecutionView::from(execution);
    view.checkpoints = Some(checkpoints);
    Ok(ApiJson(view))
}

/// A page of an execution's timeline, after a sequence number. Needs
/// `executions:read`.
#[utoipa::path(
    get, path = "/v1/executions/{id}/events", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id"), EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> ApiResult<ApiJson<EventPage>> {
    caller.require(Permission::ExecutionsRead)?;
    let execution_id = parse_execution_id(&id)?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request("invalid_field", "after must be zero or positive"));
    }
    let limit = query.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_field", "limit must be between 1 and 1000"));
    }
    // Status first: a page read after it cannot miss the final event of a
    // status it reports as final.
    let status = state.store.execution(caller.0.tenant, execution_id).await?.status;
    let events = within_budget(state.store.events(caller.0.tenant, execution_id, after, limit).await?);
    let next_after = events.last().map_or(after, |event| event.seq);
    Ok(ApiJson(EventPage {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
        status: status.to_string(),
    }))
}

/// The timeline live, as server-sent events: each event's `id` is its
/// sequence number and its `event` its kind, with the whole event as JSON
/// data. Resumes after `Last-Event-ID` (or `?after=`). The stream ends
/// after the execution's final event. Needs `executions:read`.
#[utoipa::path(
    get, path = "/v1/executions/{id}/stream", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id"), EventsQuery),
    responses(
        (status = 200, content_type = "text/event-stream", description = "The timeline as server-sent events"),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.require(Permission::ExecutionsRead)?;
    let execution_id = parse_execution_id(&id)?;
    let resume_from = match headers.get("last-event-id") {
        Some(value) => {
            value.to_str().ok().and_then(|text| text.trim().parse::<i64>().ok()).filter(|seq| *seq >= 0).ok_or_else(
                || ApiError::bad_request("invalid_header", "Last-Event-ID must be an event sequence number"),
            )?
        }
        None => query.after.unwrap_or(0).max(0),
    };
    // Answer 404 now, before the stream starts, for another tenant's id.
    state.store.execution(caller.0.tenant, execution_id).await?;
    let tenant = caller.0.tenant;
    let store = state.store.clone();
    let stream = async_stream(move |sender| async move {
        let mut after = resume_from;
        // A client that went away is noticed here too: while nothing
        // happens there is nothing to send, and so no failed send.
        while !sender.is_closed() {
            // Read the status before the events: if it is final, every event
            // was written before it, so this page holds the end.
            let status = match store.execution(tenant, execution_id).await {
                Ok(execution) => execution.status,
                Err(err) => {
                    tracing::warn!(execution = %execution_id, error = %err, "stream stopped: cannot read the execution");
                    return;
                }
            };
            let events = match store.events(tenant, execution_id, after, STREAM_PAGE).await {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(execution = %execution_id, error = %err, "stream stopped: cannot read events");
                    return;
                }
            };
            // More may follow at once when the page was full or cut short.
            let fetched = events.len();
            let events = within_budget(events);
            let full_page = fetched as i64 == STREAM_PAGE || events.len() < fetched;
            for event in events {
                after = event.seq;
                let sse = SseEvent::default()
                    .id(event.seq.to_string())
                    .event(event.kind.clone())
                    .json_data(EventView::from(event))
                    .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"));
                if sender.send(Ok(sse)).await.is_err() {
                    return; // the client went away
                }
            }
            if status.is_final() && !full_page {
                return;
            }
            if !full_page {
                tokio::time::sleep(STREAM_POLL).await;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Asks to pause an execution: one no worker holds is paused at once; a
/// running one finishes its current step first (watch for the `paused`
/// status event). Needs `executions:run`; 409 if it cannot be paused.
#[utoipa::path(
    post, path = "/v1/executions/{id}/pause", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, body = ExecutionView, description = "The execution, paused or with a pause requested"),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "Finished, or already paused or pausing"),
    )
)]
pub async fn pause_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<ExecutionView>> {
    control(&state, &caller, &id, ControlAction::Pause).await
}

/// Resumes a paused execution (a worker picks it up and carries on from its
/// last recorded step), or withdraws a pause not yet taken. Needs
/// `executions:run`; 409 if it is not paused.
#[utoipa::path(
    post, path = "/v1/executions/{id}/resume", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id")), request_body(content = Option<ResumeExecution>),
    responses(
        (status = 200, body = ExecutionView),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "Not paused"),
    )
)]
pub async fn resume_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<ApiJson<ExecutionView>> {
    // The body is optional: `{"instruction": "..."}` gives the agent a new
    // instruction, read by the model as the user's next message.
    if !body.iter().all(u8::is_ascii_whitespace) {
        let request: ResumeExecution = serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request("invalid_body", format!("the body is not a resume request: {err}")))?;
        if let Some(instruction) = request.instruction.as_deref().map(str::trim).filter(|text| !text.is_empty()) {
            caller.require(Permission::ExecutionsRun)?;
            if instruction.len() > MAX_TASK_BYTES {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("instruction must be at most {MAX_TASK_BYTES} bytes"),
                ));
            }
            let execution_id = parse_execution_id(&id)?;
            state.store.add_instruction(caller.0.tenant, execution_id, instruction, &actor(&caller)).await?;
        }
    }
    control(&state, &caller, &id, ControlAction::Resume).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeExecution {
    /// A new instruction for the agent (after a rollback, say).
    instruction: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackExecution {
    /// The step to go back to: the workspace becomes what it was when that
    /// step began, and the agent forgets that step and everything after.
    to_step: u32,
}

/// Rolls a paused or finished execution back to the start of a step: a
/// worker restores the workspace from the checkpoint taken then, and the
/// session forgets the step and what followed; the execution is then
/// paused, to be resumed (with a new instruction, if wanted). Needs
/// `executions:run`; 404 for a step it never reached; 409 while it runs.
#[utoipa::path(
    post, path = "/v1/executions/{id}/rollback", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id")), request_body = RollbackExecution,
    responses(
        (status = 200, body = ExecutionView, description = "The execution, queued for the rollback"),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope, description = "No such execution, or no such step"),
        (status = 409, body = ErrorEnvelope, description = "Queued or running: pause it first"),
    )
)]
pub async fn rollback_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<RollbackExecution>,
) -> ApiResult<ApiJson<ExecutionView>> {
    caller.require(Permission::ExecutionsRun)?;
    let execution_id = parse_execution_id(&id)?;
    check_step(&state, &caller, execution_id, request.to_step).await?;
    let workspace = state.store.execution(caller.0.tenant, execution_id).await?.workspace;
    check_no_overlap(&state, &workspace, Some(execution_id)).await?;
    let execution =
        state.store.request_rollback(caller.0.tenant, execution_id, request.to_step, &actor(&caller)).await?;
    tracing::info!(execution = %execution_id, to_step = request.to_step, "rollback requested");
    Ok(ApiJson(execution.into()))
}

/// Cancels an execution: at once if no worker holds it; a running one is
/// stopped by its worker within moments, its tool call abandoned. Needs
/// `executions:run`; 409 if it has finished.
#[utoipa::path(
    post, path = "/v1/executions/{id}/cancel", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution's id")),
    responses(
        (status = 200, body = ExecutionView, description = "The execution, cancelled or with a cancel requested"),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "Already finished or being cancelled"),
    )
)]
pub async fn cancel_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<ExecutionView>> {
    control(&state, &caller, &id, ControlAction::Cancel).await
}

async fn control(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: ControlAction,
) -> ApiResult<ApiJson<ExecutionView>> {
    caller.require(Permission::ExecutionsRun)?;
    let execution_id = parse_execution_id(id)?;
    let actor = actor(caller);
    let execution = state.store.control_execution(caller.0.tenant, execution_id, action, &actor).await?;
    tracing::info!(execution = %execution_id, action = action.as_str(), %actor, "execution control");
    Ok(ApiJson(execution.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkExecution {
    /// The step to fork at: the fork has the parent's history before it,
    /// and a workspace as the parent's was when that step began.
    from_step: u32,
    /// A new instruction for the fork's agent, read as the user's next message.
    task: Option<String>,
    /// The fork's workspace: a directory that does not exist yet, in the
    /// workspace roots. Default: beside the parent's, `<parent>-fork-<id>`.
    workspace: Option<String>,
}

/// Forks an execution at a step into a new one: its history up to that
/// step, its workspace a copy of the parent's as it was then (from the
/// checkpoint), then it runs on, with a new instruction if given. The
/// parent is not changed. Needs `executions:run`; 404 for a step it never
/// reached.
#[utoipa::path(
    post, path = "/v1/executions/{id}/fork", tag = "executions", security(("api_key" = [])),
    params(("id" = String, Path, description = "The execution to fork")), request_body = ForkExecution,
    responses(
        (status = 201, body = ExecutionView, description = "The fork, queued"),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope, description = "No such execution, or no such step"),
        (status = 409, body = ErrorEnvelope, description = "The parent has not started"),
        (status = 429, body = ErrorEnvelope, description = "`quota_exceeded`: a quota of the tenant is reached; nothing was created"),
    )
)]
pub async fn fork_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ForkExecution>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<ExecutionView>)> {
    caller.require(Permission::ExecutionsRun)?;
    let parent_id = parse_execution_id(&id)?;
    let parent = state.store.execution(caller.0.tenant, parent_id).await?;
    check_step(&state, &caller, parent_id, request.from_step).await?;
    let workspace = match request.workspace {
        Some(workspace) => workspace,
        None => {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            let beside = format!("{}-fork-{}", parent.workspace.trim_end_matches('/'), &suffix[..8]);
            if !state.workspace_roots.iter().any(|root| std::path::Path::new(&beside).starts_with(root)) {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!(
                        "the default place for the fork, {beside}, is outside the workspace roots; name one with `workspace`"
                    ),
                ));
            }
            beside
        }
    };
    check_workspace_path(&state, &workspace)?;
    check_no_overlap(&state, &workspace, None).await?;
    if std::path::Path::new(&workspace).exists() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("the fork's workspace {workspace} exists already; name a new directory"),
        ));
    }
    let task = request.task.as_deref().map(str::trim).filter(|task| !task.is_empty());
    if task.is_some_and(|task| task.len() > MAX_TASK_BYTES) {
        return Err(ApiError::bad_request("invalid_field", format!("task must be at most {MAX_TASK_BYTES} bytes")));
    }
    // A fork starts an execution: the tenant's policy is asked as for a start.
    let version = state.store.agent_version(caller.0.tenant, &parent.agent_name, Some(&parent.agent_version)).await?;
    let facts = super::policies::version_facts(&caller, &version, Some(&workspace))?;
    let forked_task = task.unwrap_or(&parent.task);
    super::policies::check(&state, &caller, facts.start_execution(forked_task), "starting this fork").await?;
    let actor = actor(&caller);
    let new_fork = NewFork {
        parent: parent_id,
        from_step: request.from_step,
        workspace: &workspace,
        instruction: task,
        created_by: caller.0.user,
        actor: &actor,
    };
    let max_active = state.quotas.admit_execution(&caller.0).await?;
    let fork = state
        .store
        .fork_execution_within(caller.0.tenant, &new_fork, Some(max_active))
        .await
        .map_err(|err| quota_refusal(&caller, err))?;
    tracing::info!(parent = %parent_id, fork = %fork.id, from_step = request.from_step, "execution forked");
    let note = AuditNote::new(format!("execution:{parent_id}"))
        .with_details(serde_json::json!({ "fork": fork.id.to_string(), "from_step": request.from_step }));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(fork.into())))
}

/// The store's refusal of an execution over the tenant's concurrency quota
/// as the API answers it; other errors as usual.
fn quota_refusal(caller: &Caller, err: StoreError) -> ApiError {
    match err {
        StoreError::ExecutionQuota { active, limit } => crate::quota::too_many_executions(&caller.0, active, limit),
        other => other.into(),
    }
}

/// 404 unless the execution's timeline, replayed, reaches `step`; 409 if
/// the workspace could not be put back as it was when `step` began (a call
/// that changed it without a checkpoint, or a checkpoint retention dropped).
async fn check_step(state: &AppState, caller: &Caller, execution_id: ExecutionId, step: u32) -> ApiResult<()> {
    let recorded: Vec<RecordedEvent> = state
        .store
        .timeline(caller.0.tenant, execution_id)
        .await?
        .into_iter()
        .map(|event| RecordedEvent { kind: event.kind, payload: event.payload })
        .collect();
    let last_step = last_recorded_step(&recorded).map_err(|err| ApiError::internal(&std::io::Error::other(err)))?;
    if step == 0 || step > last_step {
        return Err(ApiError::not_found(format!(
            "execution {execution_id} has no step {step} (its steps are 1 to {last_step})"
        )));
    }
    let cannot = |why: String| {
        ApiError::new(StatusCode::CONFLICT, "no_checkpoint", format!("cannot go back to step {step}: {why}"))
    };
    match rollback_target(&recorded, step).map_err(cannot)? {
        Some(checkpoint) if !state.store.checkpoint_indexed(caller.0.tenant, &checkpoint).await? => {
            Err(cannot(format!("its checkpoint {checkpoint} was pruned by retention")))
        }
        _ => Ok(()),
    }
}

/// 409 if `workspace` is, contains or lies inside the workspace of another
/// execution that has not finished, whoever's it is.
async fn check_no_overlap(state: &AppState, workspace: &str, except: Option<ExecutionId>) -> ApiResult<()> {
    let path = std::path::Path::new(workspace);
    let active = state.store.active_workspaces().await?;
    let clash = active
        .iter()
        .filter(|(id, _)| Some(*id) != except)
        .any(|(_, other)| path.starts_with(other) || std::path::Path::new(other).starts_with(path));
    if clash {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "workspace_in_use",
            format!("{workspace} overlaps the workspace of an execution that has not finished"),
        ));
    }
    Ok(())
}

/// A workspace path must be absolute, without `..`, inside a workspace root.
/// A lexical check here (the API may not run on the workers' hosts); the
/// worker checks again with symbolic links resolved.
fn check_workspace_path(state: &AppState, workspace: &str) -> ApiResult<()> {
    let path = std::path::Path::new(workspace);
    if !path.is_absolute() || workspace.contains('\0') || workspace.len() > 4096 {
        return Err(ApiError::bad_request("invalid_field", "workspace must be an absolute path"));
    }
    let normal = path.components().all(|part| !matches!(part, std::path::Component::ParentDir));
    if !normal || !state.workspace_roots.iter().any(|root| path.starts_with(root)) {
        let roots: Vec<String> = state.workspace_roots.iter().map(|root| root.display().to_string()).collect();
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("workspace must lie in one of the workspace roots ({}), without '..'", roots.join(", ")),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideApproval {
    /// `true` runs the call; `false` answers the model that it was denied.
    approve: bool,
    /// Why (told to the model on a denial; recorded either way).
    reason: Option<String>,
}

/// Approves or denies the call an execution is waiting for; `seq` is the
/// sequence number of its `approval_requested` event. Who decided is
/// recorded. Needs `executions:approve`; 409 unless that is the call the
/// execution waits for.
#[utoipa::path(
    post, path = "/v1/executions/{id}/approvals/{seq}", tag = "executions", security(("api_key" = [])),
    params(
        ("id" = String, Path, description = "The execution's id"),
        ("seq" = i64, Path, description = "The sequence number of the approval_requested event"),
    ),
    request_body = DecideApproval,
    responses(
        (status = 200, body = ExecutionView, description = "The execution, queued to carry on"),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "Not waiting for an approval of that step"),
    )
)]
pub async fn decide_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, seq)): Path<(String, i64)>,
    ApiJson(request): ApiJson<DecideApproval>,
) -> ApiResult<ApiJson<ExecutionView>> {
    caller.require(Permission::ExecutionsApprove)?;
    let execution_id = parse_execution_id(&id)?;
    let reason = request.reason.as_deref().map(str::trim).filter(|reason| !reason.is_empty());
    if reason.is_some_and(|reason| reason.len() > 4096) {
        return Err(ApiError::bad_request("invalid_field", "reason must be at most 4096 bytes"));
    }
    let execution = state
        .store
        .decide_approval(caller.0.tenant, execution_id, seq, request.approve, reason, &actor(&caller))
        .await?;
    tracing::info!(execution = %execution_id, seq, approved = request.approve, "approval decided");
    Ok(ApiJson(execution.into()))
}

/// Who asked, as the timeline records it: the user, or the API key.
fn actor(caller: &Caller) -> String {
    match caller.0.user {
        Some(user) => format!("user {user}"),
        None => caller.0.credential.to_string(),
    }
}

/// A stream fed by a task through a small channel; the task stops when the
/// client disconnects (its sends fail).
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, mut receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(sender));
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

fn parse_execution_id(text: &str) -> Result<ExecutionId, ApiError> {
    ExecutionId::parse(text).map_err(|err| ApiError::bad_request("invalid_id", err.to_string()))
}
