//! Resuming an execution from its recorded timeline.
//!
//! A worker that takes over an execution (its previous worker died, or it
//! was paused and resumed) hands the engine the events recorded so far. The
//! engine rebuilds the conversation from them exactly as the live loop built
//! it (both use [`result_content`] and [`denied_content`]), skips every tool
//! call whose result is recorded, and runs the rest. A call recorded as
//! started but without a result was interrupted: it runs again.

use std::collections::HashMap;

use serde::Deserialize;

use crate::conversation::ToolCall;
use crate::tools;

/// An event of the timeline as stored: its kind and its JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub kind: String,
    pub payload: serde_json::Value,
}

/// What the model is told of a tool's result.
pub(crate) fn result_content(output: &str, tool_output_bytes: usize) -> String {
    tools::for_model(output, tool_output_bytes)
}

/// What the model is told of a refused call.
pub(crate) fn denied_content(reason: &str) -> String {
    format!("error: {reason}")
}

/// A recorded answer to one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub content: String,
    pub is_error: bool,
}

/// A recorded model turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Turn {
    pub step: u32,
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// What the timeline says happened.
#[derive(Debug, Default)]
pub(crate) struct History {
    pub turns: Vec<Turn>,
    pub answers: HashMap<String, Answer>,
    /// The checkpoint taken before each call that had one, by call id.
    pub checkpoints: HashMap<String, String>,
}

#[derive(Deserialize)]
struct CheckpointRef {
    #[serde(default)]
    id: Option<String>,
}

/// The fields replay needs; everything else in a payload is ignored.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Replayed {
    ModelReply {
        step: u32,
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        output: String,
        is_error: bool,
    },
    ToolDenied {
        call_id: String,
        reason: String,
    },
    ToolCall {
        call_id: String,
        #[serde(default)]
        checkpoint: Option<CheckpointRef>,
    },
    #[serde(other)]
    Other,
}

impl History {
    /// Reads the events of a timeline. An event this version cannot read is
    /// an error: resuming from a misread history could repeat side effects.
    pub(crate) fn read(events: &[RecordedEvent], tool_output_bytes: usize) -> Result<Self, String> {
        let mut history = History::default();
        for (index, event) in events.iter().enumerate() {
            let mut payload = event.payload.clone();
            let Some(object) = payload.as_object_mut() else {
                return Err(format!("event {} ({}) is not a JSON object", index + 1, event.kind));
            };
            object.insert("kind".to_owned(), serde_json::Value::String(event.kind.clone()));
            let replayed: Replayed = serde_json::from_value(payload)
                .map_err(|err| format!("event {} ({}) cannot be read: {err}", index + 1, event.kind))?;
            match replayed {
                Replayed::ModelReply { step, content, tool_calls } => {
                    history.turns.push(Turn { step, content, tool_calls });
                }
                Replayed::ToolResult { call_id, output, is_error } => {
                    let content = result_content(&output, tool_output_bytes);
                    history.answers.insert(call_id, Answer { content, is_error });
                }
                Replayed::ToolDenied { call_id, reason } => {
                    history.answers.insert(call_id, Answer { content: denied_content(&reason), is_error: true });
                }
                Replayed::ToolCall { call_id, checkpoint } => {
                    if let Some(id) = checkpoint.and_then(|checkpoint| checkpoint.id) {
                        history.checkpoints.insert(call_id, id);
                    }
                }
                Replayed::Other => {}
            }
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent { kind: kind.to_owned(), payload }
    }

    #[test]
    fn turns_and_answers_are_read_back() {
        let events = vec![
            event("status", json!({ "status": "queued" })),
            event(
                "model_request",
                json!({ "step": 1, "model": "m", "messages": 1, "tools": 2, "estimated_tokens": 9 }),
            ),
            event(
                "model_reply",
                json!({ "step": 1, "tool_calls": [{ "id": "a", "name": "shell", "arguments": "{}" },
                                                   { "id": "b", "name": "nope", "arguments": "{}" }],
                        "usage": { "input_tokens": 1, "output_tokens": 1 }, "cost_microdollars": 0, "duration_ms": 3 }),
            ),
            event("tool_call", json!({ "step": 1, "call_id": "a", "tool": "shell", "arguments": {} })),
            event(
                "tool_result",
                json!({ "step": 1, "call_id": "a", "tool": "shell", "is_error": false,
                                          "output": "x".repeat(100), "truncated_for_model": true }),
            ),
            event(
                "tool_denied",
                json!({ "step": 1, "call_id": "b", "tool": "nope", "reason": "not allowed",
                                          "arguments": "{}" }),
            ),
        ];
        let history = History::read(&events, 1024).unwrap();
        assert_eq!(history.turns.len(), 1);
        assert_eq!(history.turns[0].tool_calls.len(), 2);
        assert_eq!(history.answers["a"], Answer { content: "x".repeat(100), is_error: false });
        assert_eq!(history.answers["b"], Answer { content: "error: not allowed".into(), is_error: true });
    }

    #[test]
    fn unreadable_events_stop_the_replay() {
        let events = vec![event("tool_result", json!({ "call_id": 7 }))];
        assert!(History::read(&events, 1024).unwrap_err().contains("tool_result"));
        assert!(History::read(&[event("model_reply", json!([1]))], 1024).is_err());
    }
}
