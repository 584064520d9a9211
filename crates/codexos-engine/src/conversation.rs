//! The conversation between the engine and a model, in provider-neutral
//! terms: each provider module translates these to and from its wire format.

use serde::{Deserialize, Serialize};

/// A tool as offered to the model: its name, what it does and the JSON
/// schema its arguments must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON schema of type `object`.
    pub parameters: serde_json::Value,
}

/// A tool call the model asked for. `arguments` is the JSON text exactly as
/// the model sent it: it may be malformed, and the engine answers that as an
/// error to the model rather than failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; the result must be sent back under it.
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of the conversation after the system prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    User {
        content: String,
    },
    Assistant {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The answer to one tool call. Consecutive results answer the calls of
    /// the assistant message before them.
    Tool {
        call_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

/// Tokens a model call consumed, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
    }
}

/// What a model answered in one turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReply {
    /// Text for the user, if any.
    pub content: Option<String>,
    /// Tools the model wants run, in order; empty when the model is done.
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    /// Why the model stopped, as the provider put it (`stop`, `tool_calls`,
    /// `end_turn`, `length`, ...).
    pub stop_reason: Option<String>,
}
