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

/// The step a rollback may go back to at most: the last one the timeline,
/// replayed, still holds (earlier rollbacks taken into account).
pub fn last_recorded_step(events: &[RecordedEvent]) -> Result<u32, String> {
    Ok(History::read(events, usize::MAX)?.last_step())
}

/// The checkpoint a rollback (or fork) to `to_step` would restore, or why
/// it cannot be done: every call from that step on that can change the
/// workspace must have its checkpoint, or the workspace cannot be put back
/// exactly. `Ok(None)`: nothing changed the workspace from that step on.
pub fn rollback_target(events: &[RecordedEvent], to_step: u32) -> Result<Option<String>, String> {
    let history = History::read(events, usize::MAX)?;
    let mut target = None;
    for (step, call_id) in history.calls.iter().filter(|(step, _)| *step >= to_step) {
        if !history.changing_calls.contains(call_id) {
            continue;
        }
        match history.checkpoints.get(call_id) {
            Some(id) => {
                target.get_or_insert_with(|| id.clone());
            }
            None => {
                return Err(format!("the call {call_id} of step {step} changed the workspace without a checkpoint"));
            }
        }
    }
    Ok(target)
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

/// What the conversation holds, in order: model turns, and instructions
/// given when the execution was resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    Turn(Turn),
    Instruction(String),
}

/// A rollback asked for and not done yet: the step to go back to, and the
/// checkpoint that holds the workspace as it was when that step began
/// (none if nothing changed the workspace from that step on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingRollback {
    pub to_step: u32,
    pub checkpoint: Option<String>,
    /// For a fork: the parent's workspace; the execution's own workspace is
    /// to be made from the checkpoint (or from the parent's, without one).
    pub fork_of: Option<std::path::PathBuf>,
}

/// What the timeline says happened.
#[derive(Debug, Default, Clone)]
pub(crate) struct History {
    pub items: Vec<Item>,
    pub answers: HashMap<String, Answer>,
    /// The checkpoint taken before each call that had one, by call id.
    pub checkpoints: HashMap<String, String>,
    /// Calls in the order they were recorded, with their step.
    calls: Vec<(u32, String)>,
    /// Calls of tools that can change the workspace.
    changing_calls: std::collections::HashSet<String>,
    pub pending_rollback: Option<PendingRollback>,
    /// Approvals decided, by call id.
    pub decisions: HashMap<String, Decision>,
    /// The state before the pending rollback truncated it, to go back to if
    /// the rollback fails.
    before_rollback: Option<Box<History>>,
}

/// What a person decided about a call that needed approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub approved: bool,
    pub reason: Option<String>,
    pub by: String,
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
        step: u32,
        call_id: String,
        reason: String,
    },
    ToolCall {
        step: u32,
        call_id: String,
        tool: String,
        #[serde(default)]
        checkpoint: Option<CheckpointRef>,
    },
    /// Written by the API when someone asks to go back to a step.
    RollbackRequested {
        to_step: u32,
        #[serde(default)]
        fork_of: Option<std::path::PathBuf>,
    },
    /// Written by the engine once the workspace is back.
    RolledBack {},
    /// Written by the engine when the workspace could not be put back.
    RollbackFailed {},
    ApprovalRequested {
        step: u32,
        call_id: String,
    },
    /// Written by the API when someone resumes with a new instruction.
    Instruction {
        text: String,
    },
    /// Written by the API when someone approves or denies a call.
    ApprovalDecided {
        call_id: String,
        approved: bool,
        #[serde(default)]
        reason: Option<String>,
        by: String,
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
                    history.items.push(Item::Turn(Turn { step, content, tool_calls }));
                }
                Replayed::ToolResult { call_id, output, is_error } => {
                    let content = result_content(&output, tool_output_bytes);
                    history.answers.insert(call_id, Answer { content, is_error });
                }
                Replayed::ToolDenied { step, call_id, reason } => {
                    history.calls.push((step, call_id.clone()));
                    history.answers.insert(call_id, Answer { content: denied_content(&reason), is_error: true });
                }
                Replayed::ToolCall { step, call_id, tool, checkpoint } => {
                    history.calls.push((step, call_id.clone()));
                    // Tools that write the workspace; an MCP server's effects
                    // are its own, and no checkpoint covers them.
                    if matches!(tool.as_str(), "shell" | "write_file" | "apply_patch") {
                        history.changing_calls.insert(call_id.clone());
                    }
                    if let Some(id) = checkpoint.and_then(|checkpoint| checkpoint.id) {
                        history.checkpoints.insert(call_id, id);
                    }
                }
                Replayed::RollbackRequested { to_step, fork_of } => {
                    let checkpoint = history.first_checkpoint_from(to_step);
                    let before = Box::new(history.clone());
                    history.truncate_at(to_step);
                    history.pending_rollback = Some(PendingRollback { to_step, checkpoint, fork_of });
                    history.before_rollback = Some(before);
                }
                Replayed::RolledBack {} => {
                    history.pending_rollback = None;
                    history.before_rollback = None;
                }
                Replayed::RollbackFailed {} => {
                    if let Some(before) = history.before_rollback.take() {
                        history = *before;
                    }
                    history.pending_rollback = None;
                }
                Replayed::ApprovalRequested { step, call_id } => history.calls.push((step, call_id)),
                Replayed::Instruction { text } => history.items.push(Item::Instruction(text)),
                Replayed::ApprovalDecided { call_id, approved, reason, by } => {
                    history.decisions.insert(call_id, Decision { approved, reason, by });
                }
                Replayed::Other => {}
            }
        }
        Ok(history)
    }

    /// The checkpoint taken before the first call of `step` or later that
    /// has one: the workspace as it was when `step` began.
    fn first_checkpoint_from(&self, step: u32) -> Option<String> {
        self.calls
            .iter()
            .filter(|(call_step, _)| *call_step >= step)
            .find_map(|(_, call_id)| self.checkpoints.get(call_id).cloned())
    }

    /// Forgets everything from `step` on: the turns, the calls and their
    /// answers, and what came after them (instructions included).
    fn truncate_at(&mut self, step: u32) {
        if let Some(cut) = self.items.iter().position(|item| matches!(item, Item::Turn(turn) if turn.step >= step)) {
            self.items.truncate(cut);
        }
        let dropped: Vec<String> =
            self.calls.iter().filter(|(call_step, _)| *call_step >= step).map(|(_, id)| id.clone()).collect();
        for call_id in &dropped {
            self.answers.remove(call_id);
            self.checkpoints.remove(call_id);
            // A decision was about that call as it was then: a rerun asks again.
            self.decisions.remove(call_id);
        }
        self.calls.retain(|(call_step, _)| *call_step < step);
    }

    /// The highest step of the conversation as it stands.
    fn last_step(&self) -> u32 {
        let turns = self.items.iter().filter_map(|item| match item {
            Item::Turn(turn) => Some(turn.step),
            Item::Instruction(_) => None,
        });
        turns.chain(self.calls.iter().map(|(step, _)| *step)).max().unwrap_or(0)
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
        assert_eq!(history.items.len(), 1);
        assert!(matches!(&history.items[0], Item::Turn(turn) if turn.tool_calls.len() == 2));
        assert_eq!(history.answers["a"], Answer { content: "x".repeat(100), is_error: false });
        assert_eq!(history.answers["b"], Answer { content: "error: not allowed".into(), is_error: true });
    }

    #[test]
    fn a_rollback_forgets_the_steps_from_its_target_on() {
        let turn = |step: u32, id: &str| {
            event(
                "model_reply",
                json!({ "step": step, "tool_calls": [{ "id": id, "name": "shell", "arguments": "{}" }] }),
            )
        };
        let call = |step: u32, id: &str, checkpoint: &str| {
            event(
                "tool_call",
                json!({ "step": step, "call_id": id, "tool": "shell", "arguments": {},
                                        "checkpoint": { "id": checkpoint } }),
            )
        };
        let result = |id: &str| event("tool_result", json!({ "call_id": id, "output": "ok", "is_error": false }));
        let events = vec![
            turn(1, "a"),
            call(1, "a", "c1"),
            result("a"),
            turn(2, "b"),
            call(2, "b", "c2"),
            result("b"),
            turn(3, "c"),
            call(3, "c", "c3"),
            result("c"),
            event("rollback_requested", json!({ "to_step": 2, "by": "user u" })),
        ];
        let history = History::read(&events, 1024).unwrap();
        assert_eq!(
            history.pending_rollback,
            Some(PendingRollback { to_step: 2, checkpoint: Some("c2".into()), fork_of: None })
        );
        assert_eq!(history.items.len(), 1);
        assert!(history.answers.contains_key("a") && !history.answers.contains_key("b"));
        assert_eq!(history.last_step(), 1);

        let mut done = events.clone();
        done.push(event("rolled_back", json!({ "to_step": 2 })));
        done.push(event("instruction", json!({ "text": "try another way", "by": "user u" })));
        let history = History::read(&done, 1024).unwrap();
        assert_eq!(history.pending_rollback, None);
        assert_eq!(history.items.last(), Some(&Item::Instruction("try another way".into())));
    }

    #[test]
    fn unreadable_events_stop_the_replay() {
        let events = vec![event("tool_result", json!({ "call_id": 7 }))];
        assert!(History::read(&events, 1024).unwrap_err().contains("tool_result"));
        assert!(History::read(&[event("model_reply", json!([1]))], 1024).is_err());
    }
}
