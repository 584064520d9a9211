//! What the engine records: the events of an execution's timeline, the
//! running totals, and the `Journal` that makes them durable.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::conversation::{TokenUsage, ToolCall};

/// One entry of the timeline, before the journal gives it a sequence
/// number. `kind()` names it; the rest is its JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimelineEvent {
    /// The engine is asking the model for its next turn.
    ModelRequest { step: u32, model: String, messages: usize, tools: usize, estimated_tokens: u64 },
    /// A model call failed and will be tried again.
    ModelRetry { step: u32, attempt: u32, reason: String, delay_ms: u64 },
    /// The model answered.
    ModelReply {
        step: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
        usage: TokenUsage,
        cost_microdollars: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
        duration_ms: u64,
    },
    /// A model call failed for good.
    ModelError { step: u32, error: String },
    /// A tool call is about to run (it passed the allow-list and its schema).
    ToolCall {
        step: u32,
        call_id: String,
        tool: String,
        arguments: serde_json::Value,
        /// The checkpoint of the workspace taken just before a call that can
        /// change it (shell and the file-writing tools).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<CheckpointTaken>,
    },
    /// A resumed execution put the workspace back to the checkpoint taken
    /// before a call that was interrupted, before running that call again.
    WorkspaceRestored { step: u32, call_id: String, checkpoint: String, files_written: u64, removed: u64 },
    /// A call needs a person's approval: the execution waits (status
    /// `waiting_approval`) until someone approves or denies it.
    ApprovalRequested {
        step: u32,
        call_id: String,
        tool: String,
        arguments: String,
        reason: String,
        /// `policy` when the tenant's policy asked (alone or with the
        /// manifest's `[approval]`); absent when only the manifest did.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A rollback was carried out: the workspace is as it was when `to_step`
    /// began, and the session forgets everything from that step on.
    RolledBack {
        to_step: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
        /// The workspace as it was just before the rollback: restoring it
        /// undoes the rollback.
        #[serde(skip_serializing_if = "Option::is_none")]
        undo_checkpoint: Option<String>,
        files_written: u64,
        removed: u64,
    },
    /// A rollback could not be carried out; the workspace and the session
    /// are as they were before it was asked for.
    RollbackFailed { to_step: u32, error: String },
    /// A tool call that was refused: not allowed, unknown, with arguments
    /// that do not match the tool's schema, or denied by the tenant's
    /// policy (`by: "policy"`). The model is told why.
    ToolDenied {
        step: u32,
        call_id: String,
        tool: String,
        reason: String,
        arguments: String,
        /// `policy` when the tenant's policy denied the call; absent for
        /// the engine's own refusals (allow-list, schema, a person).
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// What a tool call produced and what it cost.
    ToolResult {
        step: u32,
        call_id: String,
        tool: String,
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// The output as kept for the log (capped by the sandbox's output limit).
        output: String,
        /// Whether the model saw less than `output`.
        truncated_for_model: bool,
        cpu_ms: u64,
        peak_memory_bytes: u64,
        wall_ms: u64,
        violations: Vec<codexos_sandbox::Violation>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        network: Vec<codexos_sandbox::NetworkDecision>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        absent_protections: Vec<String>,
    },
    /// The session was shortened to stay within the model's context.
    Compacted { step: u32, elided_results: usize, estimated_tokens_before: u64, estimated_tokens_after: u64 },
    /// A limit of the manifest stopped the execution.
    LimitHit { limit: String, detail: String },
    /// An MCP server of the agent was connected: the tools it offers, and
    /// those left out with the reason.
    McpConnected(crate::mcp::McpConnected),
    /// An MCP server could not be connected; the execution fails.
    McpFailed { server: String, error: String },
    /// An MCP server was closed at the end of the execution; for a stdio
    /// server, the sandbox's accounting of its whole life.
    McpClosed(crate::mcp::McpClosed),
}

impl TimelineEvent {
    /// The event's kind, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            TimelineEvent::ModelRequest { .. } => "model_request",
            TimelineEvent::ModelRetry { .. } => "model_retry",
            TimelineEvent::ModelReply { .. } => "model_reply",
            TimelineEvent::ModelError { .. } => "model_error",
            TimelineEvent::ToolCall { .. } => "tool_call",
            TimelineEvent::WorkspaceRestored { .. } => "workspace_restored",
            TimelineEvent::RolledBack { .. } => "rolled_back",
            TimelineEvent::RollbackFailed { .. } => "rollback_failed",
            TimelineEvent::ApprovalRequested { .. } => "approval_requested",
            TimelineEvent::ToolDenied { .. } => "tool_denied",
            TimelineEvent::ToolResult { .. } => "tool_result",
            TimelineEvent::Compacted { .. } => "compacted",
            TimelineEvent::LimitHit { .. } => "limit_hit",
            TimelineEvent::McpConnected(_) => "mcp_connected",
            TimelineEvent::McpFailed { .. } => "mcp_failed",
            TimelineEvent::McpClosed(_) => "mcp_closed",
        }
    }

    /// The payload without the kind, as stored. A tool's output is cut (in
    /// the middle, with a note) so that, escaped as JSON, it stays within
    /// [`MAX_RECORDED_OUTPUT_BYTES`]: output full of control characters
    /// grows sixfold when escaped.
    pub fn payload(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("kind");
            if let Some(serde_json::Value::String(output)) = object.get_mut("output") {
                fit_escaped(output, MAX_RECORDED_OUTPUT_BYTES);
            }
        }
        value
    }
}

/// A checkpoint of the workspace, or why none could be taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointTaken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// New content it added to the checkpoint store.
    #[serde(default)]
    pub added_bytes: u64,
    /// The workspace's size.
    #[serde(default)]
    pub workspace_bytes: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The most a recorded tool output takes once escaped as JSON.
pub const MAX_RECORDED_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// Cuts `text` until its JSON-escaped form fits `limit` bytes.
fn fit_escaped(text: &mut String, limit: usize) {
    let escaped = |text: &str| serde_json::to_string(text).map_or(usize::MAX, |json| json.len());
    let mut budget = limit;
    while escaped(text) > limit && budget > 1024 {
        // Scale the raw budget by how much escaping inflates this text.
        let ratio = escaped(text) as f64 / text.len().max(1) as f64;
        budget = ((limit as f64 / ratio) * 0.95) as usize;
        *text = crate::tools::for_model(text, budget);
    }
}

/// Running totals of an execution, updated with every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub steps: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_microdollars: i64,
    pub cpu_ms: u64,
    pub peak_memory_bytes: u64,
    pub wall_ms: u64,
}

/// Why the journal could not record: the loop stops at once, because an
/// effect that is not recorded must not be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another worker holds the execution now (ours was presumed dead).
    #[error("the execution's lease was lost to another worker")]
    LeaseLost,
    #[error("cannot record the timeline: {0}")]
    Storage(String),
}

/// Where the timeline goes. The worker implements it over the store; an
/// append returns once the events are durable.
pub trait Journal: Send {
    fn append(
        &mut self,
        events: &[TimelineEvent],
        totals: &Totals,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_character_output_is_cut_to_fit_when_escaped() {
        let event = TimelineEvent::ToolResult {
            step: 1,
            call_id: "c".into(),
            tool: "shell".into(),
            is_error: false,
            exit_code: Some(0),
            output: "\u{1}".repeat(2 * 1024 * 1024),
            truncated_for_model: true,
            cpu_ms: 0,
            peak_memory_bytes: 0,
            wall_ms: 0,
            violations: Vec::new(),
            network: Vec::new(),
            absent_protections: Vec::new(),
        };
        let payload = event.payload();
        assert!(payload.to_string().len() <= MAX_RECORDED_OUTPUT_BYTES + 1024, "{}", payload.to_string().len());
        assert!(payload["output"].as_str().unwrap().contains("bytes cut here"));
        assert!(payload.get("kind").is_none());
    }
}
