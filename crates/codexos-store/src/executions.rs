//! Executions: one run of an agent version on a task, from queued to final.

use codexos_core::{
    AgentVersionId, ExecutionId, ExecutionStatus, PublisherKeyId, SignatureStatus, TenantId, UserId, now_millis,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::error::{Entity, parse_id};
use crate::events::{self, encode};
use crate::quotas;
use crate::{Intent, Result, Store, StoreError};

/// What a caller asks for when starting an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExecution {
    pub agent_version_id: AgentVersionId,
    pub task: String,
    pub workspace: String,
    pub created_by: Option<UserId>,
}

/// What an execution has used so far; the worker writes the running totals
/// with its events and the final ones when it finishes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionTotals {
    pub steps: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_microdollars: i64,
    pub cpu_ms: i64,
    pub peak_memory_bytes: i64,
    pub wall_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub tenant: TenantId,
    pub agent_version_id: AgentVersionId,
    pub agent_name: String,
    pub agent_version: String,
    /// The SHA-256 of the manifest the execution was created with (the
    /// version's, for executions created before it was recorded).
    pub manifest_sha256: String,
    /// The version's signature status and publisher key, as registered.
    pub signature_status: SignatureStatus,
    pub publisher_key_id: Option<PublisherKeyId>,
    pub status: ExecutionStatus,
    pub task: String,
    pub workspace: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub totals: ExecutionTotals,
    /// The final summary or error, written when the execution finishes.
    pub outcome: Option<serde_json::Value>,
    /// For a fork: the execution it was forked from, and the step.
    pub parent: Option<(ExecutionId, i64)>,
}

/// Which executions to list: newest first, `limit` at most, and with
/// `before` the page after that execution (keyset paging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionFilter {
    pub status: Option<ExecutionStatus>,
    /// The agent's name.
    pub agent: Option<String>,
    pub limit: i64,
    pub before: Option<ExecutionId>,
}

impl Default for ExecutionFilter {
    /// Everything, a page of 50.
    fn default() -> Self {
        Self { status: None, agent: None, limit: 50, before: None }
    }
}

/// The columns `execution_from_row` reads; use with `EXECUTIONS_FROM`.
pub(crate) const EXECUTION_COLUMNS: &str = "e.id, e.tenant_id, e.agent_version_id, a.name AS agent_name, \
     v.version AS agent_version, COALESCE(e.manifest_sha256, v.manifest_sha256) AS manifest_sha256, \
     v.signature_status, v.publisher_key_id, e.status, e.task, e.workspace, e.created_at, e.updated_at, e.started_at, \
     e.finished_at, e.steps, e.input_tokens, e.output_tokens, e.cost_microdollars, e.cpu_ms, e.peak_memory_bytes, \
     e.wall_ms, e.outcome, e.parent_execution_id, e.parent_step";
pub(crate) const EXECUTIONS_FROM: &str = "executions e \
     JOIN agent_versions v ON v.tenant_id = e.tenant_id AND v.id = e.agent_version_id \
     JOIN agents a ON a.tenant_id = v.tenant_id AND a.id = v.agent_id";

impl Store {
    /// Queues an execution of one of the tenant's agent versions
    /// (`NotFound(AgentVersion)` otherwise) and records the first event of
    /// its timeline, `status` `{"status": "queued"}`, in the same transaction.
    pub async fn create_execution(&self, tenant: TenantId, new_execution: &NewExecution) -> Result<Execution> {
        self.create_execution_within(tenant, new_execution, None).await
    }

    /// `create_execution` under the tenant's concurrency quota: refused with
    /// `ExecutionQuota`, nothing created, when the tenant has `max_active`
    /// executions that have not finished. Counted in the transaction that
    /// creates, so that concurrent creations cannot both pass.
    pub async fn create_execution_within(
        &self,
        tenant: TenantId,
        new_execution: &NewExecution,
        max_active: Option<u32>,
    ) -> Result<Execution> {
        let queued = serde_json::json!({ "status": ExecutionStatus::Queued });
        let queued_event = encode("status", &queued)?;
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let agent = sqlx::query(
            "SELECT a.name, v.version, v.manifest_sha256, v.signature_status, v.publisher_key_id FROM agent_versions v \
             JOIN agents a ON a.tenant_id = v.tenant_id AND a.id = v.agent_id WHERE v.tenant_id = $1 AND v.id = $2",
        )
        .bind(tenant.to_string())
        .bind(new_execution.agent_version_id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound(Entity::AgentVersion))?;
        quotas::admit_execution(&mut tx, self.backend, tenant, max_active).await?;
        let now = now_millis();
        let execution = Execution {
            id: ExecutionId::new(),
            tenant,
            agent_version_id: new_execution.agent_version_id,
            agent_name: agent.try_get("name")?,
            agent_version: agent.try_get("version")?,
            manifest_sha256: agent.try_get("manifest_sha256")?,
            signature_status: signature_status(&agent)?,
            publisher_key_id: publisher_key_id(&agent)?,
            status: ExecutionStatus::Queued,
            task: new_execution.task.clone(),
            workspace: new_execution.workspace.clone(),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            totals: ExecutionTotals::default(),
            outcome: None,
            parent: None,
        };
        sqlx::query(
            "INSERT INTO executions (id, tenant_id, agent_version_id, status, task, workspace, created_by, created_at, \
             updated_at, manifest_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)",
        )
        .bind(execution.id.to_string())
        .bind(tenant.to_string())
        .bind(execution.agent_version_id.to_string())
        .bind(execution.status.as_str())
        .bind(&execution.task)
        .bind(&execution.workspace)
        .bind(new_execution.created_by.map(|user| user.to_string()))
        .bind(now)
        .bind(&execution.manifest_sha256)
        .execute(&mut *tx)
        .await?;
        events::append_one(&mut tx, tenant, execution.id, &queued_event, now).await?;
        quotas::add_usage_in(&mut tx, tenant, quotas::EXECUTIONS, 1, now).await?;
        tx.commit().await?;
        Ok(execution)
    }

    /// One execution of the tenant; `NotFound(Execution)` for another
    /// tenant's exactly as for a missing one.
    pub async fn execution(&self, tenant: TenantId, id: ExecutionId) -> Result<Execution> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let execution = fetch_execution(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(execution)
    }

    /// The tenant's executions, newest first. Ids are time-ordered (UUIDv7),
    /// so "newest first" is id order, and `before` pages by id.
    pub async fn list_executions(&self, tenant: TenantId, filter: &ExecutionFilter) -> Result<Vec<Execution>> {
        let mut sql = format!("SELECT {EXECUTION_COLUMNS} FROM {EXECUTIONS_FROM} WHERE e.tenant_id = $1");
        let mut binds = Vec::new();
        let mut next_placeholder = |value: String| {
            binds.push(value);
            binds.len() + 1
        };
        if let Some(status) = filter.status {
            sql.push_str(&format!(" AND e.status = ${}", next_placeholder(status.as_str().to_owned())));
        }
        if let Some(agent) = &filter.agent {
            sql.push_str(&format!(" AND a.name = ${}", next_placeholder(agent.clone())));
        }
        if let Some(before) = filter.before {
            sql.push_str(&format!(" AND e.id < ${}", next_placeholder(before.to_string())));
        }
        sql.push_str(&format!(" ORDER BY e.id DESC LIMIT {}", filter.limit.max(0)));

        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let mut query = sqlx::query(&sql).bind(tenant.to_string());
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(execution_from_row).collect()
    }
}

pub(crate) async fn fetch_execution(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    id: ExecutionId,
) -> Result<Execution> {
    let row =
        sqlx::query(&format!("SELECT {EXECUTION_COLUMNS} FROM {EXECUTIONS_FROM} WHERE e.tenant_id = $1 AND e.id = $2"))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound(Entity::Execution))?;
    execution_from_row(&row)
}

pub(crate) fn execution_from_row(row: &sqlx::any::AnyRow) -> Result<Execution> {
    let id: String = row.try_get("id")?;
    let tenant: String = row.try_get("tenant_id")?;
    let agent_version_id: String = row.try_get("agent_version_id")?;
    let status: String = row.try_get("status")?;
    let outcome: Option<String> = row.try_get("outcome")?;
    let parent_id: Option<String> = row.try_get("parent_execution_id")?;
    let parent_step: Option<i64> = row.try_get("parent_step")?;
    let outcome = outcome
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|err| StoreError::Corrupt(format!("outcome of execution {id}: {err}")))?;
    Ok(Execution {
        id: parse_id(&id, ExecutionId::parse)?,
        tenant: parse_id(&tenant, TenantId::parse)?,
        agent_version_id: parse_id(&agent_version_id, AgentVersionId::parse)?,
        agent_name: row.try_get("agent_name")?,
        agent_version: row.try_get("agent_version")?,
        manifest_sha256: row.try_get("manifest_sha256")?,
        signature_status: signature_status(row)?,
        publisher_key_id: publisher_key_id(row)?,
        status: status
            .parse()
            .map_err(|err: codexos_core::execution::StatusError| StoreError::Corrupt(err.to_string()))?,
        task: row.try_get("task")?,
        workspace: row.try_get("workspace")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        totals: ExecutionTotals {
            steps: row.try_get("steps")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cost_microdollars: row.try_get("cost_microdollars")?,
            cpu_ms: row.try_get("cpu_ms")?,
            peak_memory_bytes: row.try_get("peak_memory_bytes")?,
            wall_ms: row.try_get("wall_ms")?,
        },
        outcome,
        parent: match (parent_id, parent_step) {
            (Some(id), Some(step)) => Some((parse_id(&id, ExecutionId::parse)?, step)),
            _ => None,
        },
    })
}

impl Store {
    /// The workspaces of every execution not finished, across tenants, with
    /// their ids: an installation-wide check that no two executions work in
    /// the same tree (one's rollback would rewrite the other's files).
    pub async fn active_workspaces(&self) -> Result<Vec<(ExecutionId, String)>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let rows = sqlx::query(
            "SELECT id, workspace FROM executions WHERE status NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                Ok((parse_id(&id, ExecutionId::parse)?, row.try_get("workspace")?))
            })
            .collect()
    }
}

/// A version's `signature_status` column.
fn signature_status(row: &sqlx::any::AnyRow) -> Result<SignatureStatus> {
    let text: String = row.try_get("signature_status")?;
    text.parse().map_err(|err| StoreError::Corrupt(format!("{err}")))
}

/// A version's `publisher_key_id` column.
fn publisher_key_id(row: &sqlx::any::AnyRow) -> Result<Option<PublisherKeyId>> {
    let text: Option<String> = row.try_get("publisher_key_id")?;
    text.map(|key_id| PublisherKeyId::parse(&key_id)).transpose().map_err(|err| StoreError::Corrupt(err.to_string()))
}
