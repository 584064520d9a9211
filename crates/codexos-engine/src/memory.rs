//! The memory tiers of an agent.
//!
//! - *Ephemeral*: what one step holds (a tool call's full output before it is
//!   cut for the model); it lives in the loop's locals and in the event log.
//! - *Session*: the execution's conversation, compacted by the loop when it
//!   nears the model's context window.
//! - *Semantic*: notes the agent keeps across executions with the `remember`
//!   tool and finds with `recall`, per tenant and agent, ranked by full-text
//!   relevance and kept for the manifest's retention period. The worker
//!   provides it over the store through the [`Memory`] trait.
//!
//! The memory tools touch no file and run no program, so they are served by
//! the engine itself rather than in the sandbox; they still pass the
//! allow-list and their arguments the same schema checks as every tool.

use std::future::Future;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conversation::ToolSpec;
use crate::tools::{ArgumentError, schema_of};

/// The longest note the `remember` tool takes, in bytes.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;
/// The most notes one `recall` returns.
pub const MAX_RECALL: u32 = 20;

/// The tools of the semantic memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryTool {
    Remember,
    Recall,
}

impl MemoryTool {
    pub const ALL: [MemoryTool; 2] = [MemoryTool::Remember, MemoryTool::Recall];

    pub fn name(self) -> &'static str {
        match self {
            MemoryTool::Remember => "remember",
            MemoryTool::Recall => "recall",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }

    pub fn spec(self) -> ToolSpec {
        let (description, parameters) = match self {
            MemoryTool::Remember => (
                "Stores a note in your long-term memory, to find again with `recall` in this and later executions: \
                 a lesson learnt, a fact about this repository, a command that works. Keep notes short and \
                 self-contained; add a few tags to make them easier to find.",
                schema_of::<RememberArgs>(),
            ),
            MemoryTool::Recall => (
                "Searches your long-term memory for notes relevant to a query (full-text, ranked by relevance) and \
                 returns the best ones, newest first among equals.",
                schema_of::<RecallArgs>(),
            ),
        };
        ToolSpec { name: self.name().to_owned(), description: description.to_owned(), parameters }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// The note, at most 8 KiB.
    pub note: String,
    /// Words to find the note by.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What to look for, in plain words.
    pub query: String,
    /// The most notes to return (1 to 20). Default: 5.
    #[schemars(range(min = 1, max = 20))]
    pub limit: Option<u32>,
}

/// A validated call of a memory tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCall {
    Remember(RememberArgs),
    Recall(RecallArgs),
}

/// Parses a memory tool's arguments against its schema.
pub fn parse_call(tool: MemoryTool, raw_arguments: &str) -> Result<MemoryCall, ArgumentError> {
    let text = if raw_arguments.trim().is_empty() { "{}" } else { raw_arguments };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| ArgumentError::InvalidJson(err.to_string()))?;
    if !value.is_object() {
        return Err(ArgumentError::NotAnObject(json_type(&value)));
    }
    let mismatch = |err: serde_json::Error| ArgumentError::Mismatch(err.to_string());
    match tool {
        MemoryTool::Remember => {
            let args: RememberArgs = serde_json::from_value(value).map_err(mismatch)?;
            if args.note.trim().is_empty() {
                return Err(ArgumentError::Empty("note"));
            }
            if args.note.len() > MAX_NOTE_BYTES {
                return Err(ArgumentError::OutOfRange { field: "note", reason: "must be at most 8 KiB" });
            }
            if args.tags.len() > 16 || args.tags.iter().any(|tag| tag.len() > 64) {
                return Err(ArgumentError::OutOfRange { field: "tags", reason: "are at most 16, of 64 bytes each" });
            }
            Ok(MemoryCall::Remember(args))
        }
        MemoryTool::Recall => {
            let args: RecallArgs = serde_json::from_value(value).map_err(mismatch)?;
            if args.query.trim().is_empty() {
                return Err(ArgumentError::Empty("query"));
            }
            if matches!(args.limit, Some(limit) if limit == 0 || limit > MAX_RECALL) {
                return Err(ArgumentError::OutOfRange { field: "limit", reason: "must be between 1 and 20" });
            }
            Ok(MemoryCall::Recall(args))
        }
    }
}

/// A note found by `recall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecalledNote {
    pub note: String,
    pub tags: Vec<String>,
    /// When it was written, RFC 3339.
    pub written_at: String,
}

/// The semantic memory of the agent running an execution; the worker
/// implements it over the store, scoped to the execution's tenant and agent.
pub trait Memory: Send + Sync {
    fn remember(&self, note: &str, tags: &[String]) -> impl Future<Output = Result<(), String>> + Send;
    fn recall(&self, query: &str, limit: u32) -> impl Future<Output = Result<Vec<RecalledNote>, String>> + Send;
}

/// A memory that keeps nothing, for agents that do not use the memory tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMemory;

impl Memory for NoMemory {
    async fn remember(&self, _note: &str, _tags: &[String]) -> Result<(), String> {
        Err("this agent has no long-term memory".to_owned())
    }

    async fn recall(&self, _query: &str, _limit: u32) -> Result<Vec<RecalledNote>, String> {
        Ok(Vec::new())
    }
}

/// Runs a memory call and returns what the model is told, and whether it failed.
pub async fn perform<M: Memory>(memory: &M, call: &MemoryCall) -> (String, bool) {
    match call {
        MemoryCall::Remember(args) => match memory.remember(&args.note, &args.tags).await {
            Ok(()) => ("noted".to_owned(), false),
            Err(err) => (format!("error: the note was not stored: {err}"), true),
        },
        MemoryCall::Recall(args) => match memory.recall(&args.query, args.limit.unwrap_or(5)).await {
            Ok(notes) if notes.is_empty() => ("no notes match".to_owned(), false),
            Ok(notes) => {
                let lines: Vec<String> = notes
                    .iter()
                    .enumerate()
                    .map(|(index, note)| {
                        let tags =
                            if note.tags.is_empty() { String::new() } else { format!(" [{}]", note.tags.join(", ")) };
                        format!("{}. ({}){tags} {}", index + 1, note.written_at, note.note)
                    })
                    .collect();
                (lines.join("\n"), false)
            }
            Err(err) => (format!("error: recall failed: {err}"), true),
        },
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_arguments_are_checked() {
        assert_eq!(
            parse_call(MemoryTool::Remember, r#"{"note": "use nextest", "tags": ["tests"]}"#),
            Ok(MemoryCall::Remember(RememberArgs { note: "use nextest".into(), tags: vec!["tests".into()] }))
        );
        assert_eq!(parse_call(MemoryTool::Remember, r#"{"note": "  "}"#), Err(ArgumentError::Empty("note")));
        assert!(matches!(parse_call(MemoryTool::Recall, r#"{"q": "x"}"#), Err(ArgumentError::Mismatch(_))));
        assert!(matches!(
            parse_call(MemoryTool::Recall, r#"{"query": "x", "limit": 99}"#),
            Err(ArgumentError::OutOfRange { .. })
        ));
        assert!(matches!(parse_call(MemoryTool::Recall, "[1]"), Err(ArgumentError::NotAnObject("an array"))));
        assert!(matches!(parse_call(MemoryTool::Recall, "{"), Err(ArgumentError::InvalidJson(_))));
    }

    #[test]
    fn specs_describe_required_fields() {
        let spec = MemoryTool::Remember.spec();
        assert_eq!(spec.parameters["required"], serde_json::json!(["note"]));
        assert_eq!(spec.parameters["additionalProperties"], false);
        assert_eq!(MemoryTool::Recall.spec().parameters["required"], serde_json::json!(["query"]));
    }
}
