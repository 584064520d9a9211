//! Controlling executions: pause, resume, cancel.
//!
//! An execution no worker holds (queued, paused, waiting for approval)
//! changes state at once. A running one gets a request in its `control`
//! column that its worker reads while it runs: it pauses after the current
//! step, or cancels at once, and records the new state under its lease.
//! Every request and every change is an event of the timeline.

use codexos_core::{ExecutionId, ExecutionStatus, TenantId, now_millis};
use serde_json::json;
use sqlx::Row;

use crate::events::{self, encode};
use crate::executions::fetch_execution;
use crate::leases::{HELD, Lease, bind_held};
use crate::quotas;
use crate::{Entity, Execution, Intent, NewEvent, Result, Store, StoreError};

/// What a caller asks of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    Pause,
    Resume,
    Cancel,
}

impl ControlAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Cancel => "cancel",
        }
    }
}

/// What a fork is made of (see [`Store::fork_execution`]).
#[derive(Debug, Clone, Copy)]
pub struct NewFork<'a> {
    pub parent: ExecutionId,
    pub from_step: u32,
    /// The fork's workspace, a directory that does not exist yet.
    pub workspace: &'a str,
    /// The model's next user message, if any.
    pub instruction: Option<&'a str>,
    pub created_by: Option<codexos_core::UserId>,
    /// Who asked, as the timeline records it.
    pub actor: &'a str,
}

/// A request the running execution's worker must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Pause,
    Cancel,
}

impl Store {
    /// Applies `action` to the tenant's execution on behalf of `actor` and
    /// returns the execution as it is now. A request that does not fit the
    /// execution's state is `InvalidState`, with nothing changed.
    pub async fn control_execution(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        action: ControlAction,
        actor: &str,
    ) -> Result<Execution> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        // Touching the row first takes its lock (on PostgreSQL; SQLite's
        // write transaction is already exclusive), which serializes this
        // with the worker's own writes and sequence numbers.
        let touched = sqlx::query("UPDATE executions SET updated_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if touched.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::Execution));
        }
        let row = sqlx::query("SELECT status, control FROM executions WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let status: String = row.try_get("status")?;
        let status: ExecutionStatus =
            status.parse().map_err(|err: codexos_core::execution::StatusError| StoreError::Corrupt(err.to_string()))?;
        let control: Option<String> = row.try_get("control")?;
        let invalid =
            |why: &str| Err(StoreError::InvalidState(format!("cannot {} execution {id}: {why}", action.as_str())));

        // (new status, new control, event kind, event payload)
        use ExecutionStatus as S;
        let change = match (action, status, control.as_deref()) {
            (_, status, _) if status.is_final() => return invalid(&format!("it has already {}", past(status))),
            (ControlAction::Pause, S::Queued, _) => {
                Change::status(S::Paused, json!({ "status": S::Paused, "by": actor }))
            }
            (ControlAction::Pause, S::Running, None) => {
                Change::request(Some("pause"), json!({ "action": "pause_requested", "by": actor }))
            }
            (ControlAction::Pause, S::Running, Some("pause")) => return invalid("a pause is already requested"),
            (ControlAction::Pause, S::Running, Some(_)) => return invalid("it is being cancelled"),
            (ControlAction::Pause, S::Paused, _) => return invalid("it is already paused"),
            (ControlAction::Pause, _, _) => return invalid("it is waiting for an approval"),
            (ControlAction::Resume, S::Paused, _) => {
                Change::status(S::Queued, json!({ "status": S::Queued, "resumed_by": actor }))
            }
            (ControlAction::Resume, S::Running, Some("pause")) => {
                Change::request(None, json!({ "action": "pause_withdrawn", "by": actor }))
            }
            (ControlAction::Resume, _, _) => return invalid("it is not paused"),
            (ControlAction::Cancel, S::Running, Some("cancel")) => return invalid("a cancel is already requested"),
            (ControlAction::Cancel, S::Running, _) => {
                Change::request(Some("cancel"), json!({ "action": "cancel_requested", "by": actor }))
            }
            (ControlAction::Cancel, _, _) => Change::status(
                S::Cancelled,
                json!({ "status": S::Cancelled, "reason": "cancelled", "error": format!("cancelled by {actor}") }),
            ),
        };
        let event = encode(change.kind, &change.payload)?;
        match change.status {
            Some(new_status) => {
                let finished = new_status.is_final().then_some(now);
                let outcome = new_status
                    .is_final()
                    .then(|| json!({ "reason": "cancelled", "error": format!("cancelled by {actor}") }).to_string());
                sqlx::query(
                    "UPDATE executions SET status = $3, control = NULL, lease_owner = NULL, lease_expires_at = NULL, \
                     finished_at = COALESCE($4, finished_at), outcome = COALESCE($5, outcome) \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(new_status.as_str())
                .bind(finished)
                .bind(outcome)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("UPDATE executions SET control = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .bind(change.control)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        events::append_one(&mut tx, tenant, id, &event, now).await?;
        let execution = fetch_execution(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(execution)
    }

    /// Asks for a rollback to `to_step` of an execution no worker holds
    /// (paused or finished): appends `rollback_requested` and queues it, for
    /// a worker to put the workspace back and park it as paused. The caller
    /// checks that the step exists.
    pub async fn request_rollback(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        to_step: u32,
        actor: &str,
    ) -> Result<Execution> {
        let payload = json!({ "to_step": to_step, "by": actor });
        let event = encode("rollback_requested", &payload)?;
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        let status = lock_status(&mut tx, tenant, id, now).await?;
        if !matches!(
            status,
            ExecutionStatus::Paused | ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        ) {
            return Err(StoreError::InvalidState(format!(
                "cannot roll back execution {id}: it is {status}; pause it first"
            )));
        }
        sqlx::query(
            "UPDATE executions SET status = 'queued', control = NULL, finished_at = NULL, outcome = NULL \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        events::append_one(&mut tx, tenant, id, &event, now).await?;
        let execution = fetch_execution(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(execution)
    }

    /// Forks an execution at `from_step` into a new one on `workspace` (a
    /// directory that must not exist yet): the same agent version and task,
    /// queued, with `instruction` as the model's next user message if
    /// given. Its timeline starts with
    /// `status` `{"status": "queued", "forked_from", "from_step"}`, then holds
    /// the parent's events as they are now (not its status or control
    /// events), then `rollback_requested` `{"to_step": from_step, "fork_of":
    /// parent workspace}`: the worker that takes it builds its workspace from
    /// the parent's checkpoint and carries on from that step. The parent is
    /// not changed. The caller checks that the step exists.
    pub async fn fork_execution(&self, tenant: TenantId, fork: &NewFork<'_>) -> Result<Execution> {
        self.fork_execution_within(tenant, fork, None).await
    }

    /// `fork_execution` under the tenant's concurrency quota, like
    /// `create_execution_within`.
    pub async fn fork_execution_within(
        &self,
        tenant: TenantId,
        fork: &NewFork<'_>,
        max_active: Option<u32>,
    ) -> Result<Execution> {
        let NewFork { parent: parent_id, from_step, workspace, instruction, created_by, actor } = *fork;
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        let parent = fetch_execution(&mut tx, tenant, parent_id).await?;
        if parent.status == ExecutionStatus::Queued {
            return Err(StoreError::InvalidState(format!("cannot fork execution {parent_id}: it has not started")));
        }
        quotas::admit_execution(&mut tx, self.backend, tenant, max_active).await?;
        let id = ExecutionId::new();
        let task = &parent.task;
        sqlx::query(
            "INSERT INTO executions (id, tenant_id, agent_version_id, status, task, workspace, parent_execution_id, \
             parent_step, created_by, created_at, updated_at, manifest_sha256) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(parent.agent_version_id.to_string())
        .bind(task)
        .bind(workspace)
        .bind(parent_id.to_string())
        .bind(i64::from(from_step))
        .bind(created_by.map(|user| user.to_string()))
        .bind(now)
        // The fork runs the manifest its parent ran.
        .bind(&parent.manifest_sha256)
        .execute(&mut *tx)
        .await?;
        let queued =
            json!({ "status": ExecutionStatus::Queued, "forked_from": parent_id, "from_step": from_step, "by": actor });
        events::append_one(&mut tx, tenant, id, &encode("status", &queued)?, now).await?;
        let inherited = sqlx::query(
            "SELECT kind, payload FROM execution_events WHERE tenant_id = $1 AND execution_id = $2 \
             AND kind NOT IN ('status', 'control') ORDER BY seq",
        )
        .bind(tenant.to_string())
        .bind(parent_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let mut copies = Vec::with_capacity(inherited.len());
        for row in &inherited {
            let kind: String = row.try_get("kind")?;
            let payload: String = row.try_get("payload")?;
            let payload: serde_json::Value = serde_json::from_str(&payload)
                .map_err(|err| StoreError::Corrupt(format!("an event of execution {parent_id}: {err}")))?;
            copies.push((kind, payload));
        }
        let encoded = copies.iter().map(|(kind, payload)| encode(kind, payload)).collect::<Result<Vec<_>>>()?;
        events::append(&mut tx, tenant, id, &encoded, now).await?;
        // The fork holds the parent's checkpoints up to its step (its
        // timeline names them, and it is restored from the last): indexed
        // under the fork too, the parent's retention cannot take them away.
        // They added no content of the fork's own.
        sqlx::query(
            "INSERT INTO checkpoints (id, tenant_id, execution_id, step, tree_id, size_bytes, created_at) \
             SELECT id, tenant_id, $1, step, tree_id, 0, created_at FROM checkpoints \
             WHERE tenant_id = $2 AND execution_id = $3 AND step <= $4",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(parent_id.to_string())
        .bind(i64::from(from_step))
        .execute(&mut *tx)
        .await?;
        let rollback = json!({ "to_step": from_step, "fork_of": parent.workspace, "by": actor });
        events::append_one(&mut tx, tenant, id, &encode("rollback_requested", &rollback)?, now).await?;
        if let Some(text) = instruction {
            let instruction = json!({ "text": text, "by": actor });
            events::append_one(&mut tx, tenant, id, &encode("instruction", &instruction)?, now).await?;
        }
        quotas::add_usage_in(&mut tx, tenant, quotas::EXECUTIONS, 1, now).await?;
        let execution = fetch_execution(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(execution)
    }

    /// Adds an instruction for the agent to a paused execution: when it
    /// resumes, the model reads it as the user's next message.
    pub async fn add_instruction(&self, tenant: TenantId, id: ExecutionId, text: &str, actor: &str) -> Result<()> {
        let payload = json!({ "text": text, "by": actor });
        let event = encode("instruction", &payload)?;
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        let status = lock_status(&mut tx, tenant, id, now).await?;
        if status != ExecutionStatus::Paused {
            return Err(StoreError::InvalidState(format!(
                "cannot give execution {id} an instruction: it is {status}, not paused"
            )));
        }
        events::append_one(&mut tx, tenant, id, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The request waiting for the worker that holds `lease`, if any;
    /// `LeaseLost` if it holds it no more.
    pub async fn pending_control(&self, lease: &Lease) -> Result<Option<ControlRequest>> {
        let mut tx = self.tenant_tx(lease.tenant, Intent::Read).await?;
        let row = bind_held(sqlx::query(&format!("SELECT control FROM executions WHERE {HELD}")), lease)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::LeaseLost)?;
        tx.commit().await?;
        let control: Option<String> = row.try_get("control")?;
        Ok(match control.as_deref() {
            Some("pause") => Some(ControlRequest::Pause),
            Some("cancel") => Some(ControlRequest::Cancel),
            _ => None,
        })
    }

    /// Parks a running execution after its worker stopped between steps:
    /// as `paused` (someone asked, or a rollback was done) or
    /// `waiting_approval` (a call needs a person). Releases the lease, clears
    /// the request and appends `status`. `LeaseLost` if the lease is not held.
    pub async fn park_execution(&self, lease: &Lease, status: ExecutionStatus, events: &[NewEvent]) -> Result<()> {
        if !matches!(status, ExecutionStatus::Paused | ExecutionStatus::WaitingApproval) {
            return Err(StoreError::InvalidState(format!("an execution cannot be parked as {status}")));
        }
        let encoded = events.iter().map(|event| encode(&event.kind, &event.payload)).collect::<Result<Vec<_>>>()?;
        let now = now_millis();
        let mut tx = self.tenant_tx(lease.tenant, Intent::Write).await?;
        let row = bind_held(sqlx::query(&format!("SELECT control FROM executions WHERE {HELD}")), lease)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Err(StoreError::LeaseLost) };
        let control: Option<String> = row.try_get("control")?;
        // A cancel asked for while the worker was stopping wins: the
        // execution ends cancelled rather than waiting for nobody.
        let (status, final_at, outcome) = if control.as_deref() == Some("cancel") {
            let outcome = json!({ "reason": "cancelled", "error": "cancelled while stopping" });
            (ExecutionStatus::Cancelled, Some(now), Some(outcome))
        } else {
            (status, None, None)
        };
        let mut status_event = json!({ "status": status });
        if let (Some(fields), Some(outcome)) =
            (status_event.as_object_mut(), outcome.as_ref().and_then(|o| o.as_object()))
        {
            fields.extend(outcome.clone());
        }
        let status_event = encode("status", &status_event)?;
        bind_held(
            sqlx::query(&format!(
                "UPDATE executions SET status = $5, control = NULL, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = $4, finished_at = COALESCE($6, finished_at), outcome = COALESCE($7, outcome) WHERE {HELD}"
            )),
            lease,
        )
        .bind(now)
        .bind(status.as_str())
        .bind(final_at)
        .bind(outcome.map(|outcome| outcome.to_string()))
        .execute(&mut *tx)
        .await?;
        events::append(&mut tx, lease.tenant, lease.execution_id, &encoded, now).await?;
        events::append_one(&mut tx, lease.tenant, lease.execution_id, &status_event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Decides the approval asked for by the event `request_seq` of an
    /// execution waiting for it: appends `approval_decided` and queues the
    /// execution, whose worker runs the call, or answers the model that it
    /// was denied (with `reason`). `InvalidState` unless the execution waits
    /// and `request_seq` is its last approval request; `NotFound` for no such event.
    pub async fn decide_approval(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        request_seq: i64,
        approved: bool,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Execution> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let now = now_millis();
        let status = lock_status(&mut tx, tenant, id, now).await?;
        let request = sqlx::query(
            "SELECT seq, payload FROM execution_events WHERE tenant_id = $1 AND execution_id = $2 \
             AND kind = 'approval_requested' ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(request) = request else {
            return Err(StoreError::NotFound(Entity::ApprovalRequest));
        };
        let last_seq: i64 = request.try_get("seq")?;
        if status != ExecutionStatus::WaitingApproval || last_seq != request_seq {
            return Err(StoreError::InvalidState(format!(
                "execution {id} is not waiting for an approval of step {request_seq}"
            )));
        }
        let payload: String = request.try_get("payload")?;
        let payload: serde_json::Value =
            serde_json::from_str(&payload).map_err(|err| StoreError::Corrupt(format!("an approval request: {err}")))?;
        let decided = json!({
            "request_seq": request_seq,
            "call_id": payload["call_id"],
            "approved": approved,
            "reason": reason,
            "by": actor,
        });
        let event = encode("approval_decided", &decided)?;
        sqlx::query("UPDATE executions SET status = 'queued' WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        events::append_one(&mut tx, tenant, id, &event, now).await?;
        let execution = fetch_execution(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(execution)
    }
}

/// Locks the execution's row (see `control_execution`) and reads its status.
async fn lock_status(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    id: ExecutionId,
    now: i64,
) -> Result<ExecutionStatus> {
    let touched = sqlx::query("UPDATE executions SET updated_at = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    if touched.rows_affected() == 0 {
        return Err(StoreError::NotFound(Entity::Execution));
    }
    let status: String = sqlx::query_scalar("SELECT status FROM executions WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_one(&mut **tx)
        .await?;
    status.parse().map_err(|err: codexos_core::execution::StatusError| StoreError::Corrupt(err.to_string()))
}

/// What a control request changes: the status (for executions no worker
/// holds) or the request column (for running ones), and the event saying so.
struct Change {
    status: Option<ExecutionStatus>,
    control: Option<&'static str>,
    kind: &'static str,
    payload: serde_json::Value,
}

impl Change {
    fn status(status: ExecutionStatus, payload: serde_json::Value) -> Self {
        Self { status: Some(status), control: None, kind: "status", payload }
    }

    fn request(control: Option<&'static str>, payload: serde_json::Value) -> Self {
        Self { status: None, control, kind: "control", payload }
    }
}

fn past(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Succeeded => "succeeded",
        ExecutionStatus::Failed => "failed",
        _ => "been cancelled",
    }
}
