//! Anthropic Messages: `POST {base}/v1/messages`.
//!
//! Two differences from our neutral conversation shape take care: tool
//! results travel as `tool_result` blocks of a user message (one message for
//! a run of results), and messages must alternate between user and
//! assistant, so neighbours of the same role are merged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::limits::{self, ReplyBudget};
use super::sse::SseEvent;
use super::{ModelConfig, ModelError, ModelEvent, ModelRequest, Result};
use crate::conversation::{Message, ModelReply, TokenUsage, ToolCall};

#[derive(Debug, Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: Vec<Block<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: ToolInput<'a> },
    ToolResult { tool_use_id: &'a str, content: &'a str, is_error: bool },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ToolInput<'a> {
    /// The stored arguments, sent as they are.
    Object(&'a RawValue),
    /// Stands in for arguments that are not a JSON object.
    Empty(serde_json::Map<String, serde_json::Value>),
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a serde_json::Value,
}

pub(super) fn request_body(config: &ModelConfig, request: &ModelRequest<'_>) -> Result<Vec<u8>> {
    let body = MessagesRequest {
        model: &config.model,
        max_tokens: config.max_output_tokens,
        system: Some(request.system).filter(|system| !system.is_empty()),
        messages: wire_messages(request.messages),
        tools: request
            .tools
            .iter()
            .map(|tool| WireTool { name: &tool.name, description: &tool.description, input_schema: &tool.parameters })
            .collect(),
        temperature: config.temperature,
        stream: config.stream,
    };
    serde_json::to_vec(&body).map_err(|err| ModelError::InvalidRequest(err.to_string()))
}

/// Our messages in Anthropic's terms.
///
/// A `tool_use` block's `input` must be a JSON object, but a call's stored
/// arguments are the model's text, which may be malformed (a reply cut off by
/// `max_tokens` in the middle of a call). Such arguments are sent as `{}`: the
/// engine answers that call with an error result that quotes the problem, so
/// the model learns what went wrong, whereas inventing a wrapper object would
/// show it a call with arguments its schema does not have.
///
/// Empty text blocks, which the API refuses, are left out; a message left with
/// no blocks disappears, and neighbours of the same role merge into one
/// message, tool results first as the API requires.
fn wire_messages(messages: &[Message]) -> Vec<WireMessage<'_>> {
    let mut wire: Vec<WireMessage<'_>> = Vec::with_capacity(messages.len());
    for message in messages {
        let (role, blocks) = match message {
            Message::User { content } => (Role::User, text_block(content).into_iter().collect()),
            Message::Assistant { content, tool_calls } => {
                let mut blocks: Vec<Block<'_>> = content.as_deref().and_then(text_block).into_iter().collect();
                blocks.extend(tool_calls.iter().map(|call| Block::ToolUse {
                    id: &call.id,
                    name: &call.name,
                    input: tool_input(&call.arguments),
                }));
                (Role::Assistant, blocks)
            }
            Message::Tool { call_id, content, is_error } => {
                (Role::User, vec![Block::ToolResult { tool_use_id: call_id, content, is_error: *is_error }])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match wire.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => wire.push(WireMessage { role, content: blocks }),
        }
    }
    for message in &mut wire {
        if message.role == Role::User {
            // A stable sort: tool results first, each group in its order.
            message.content.sort_by_key(|block| !matches!(block, Block::ToolResult { .. }));
        }
    }
    wire
}

fn text_block(text: &str) -> Option<Block<'_>> {
    (!text.is_empty()).then_some(Block::Text { text })
}

fn tool_input(arguments: &str) -> ToolInput<'_> {
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) if raw.get().starts_with('{') => ToolInput::Object(raw),
        _ => ToolInput::Empty(serde_json::Map::new()),
    }
}

#[derive(Debug, Deserialize)]
struct MessagesResponse {
    content: Option<Vec<ResponseBlock>>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ResponseBlock {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Updates `usage` with the counts this report has. Anthropic counts
    /// tokens read from or written to its prompt cache apart from
    /// `input_tokens`; all of them were input, so they are added up.
    fn apply_to(&self, usage: &mut TokenUsage) {
        let input = [self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens];
        if input.iter().any(Option::is_some) {
            usage.input_tokens = input.iter().flatten().fold(0u64, |sum, n| sum.saturating_add(*n));
        }
        if let Some(output) = self.output_tokens {
            usage.output_tokens = output;
        }
    }
}

/// A whole (non-streamed) answer.
pub(super) fn parse_response(body: &[u8]) -> Result<ModelReply> {
    let response: MessagesResponse = super::parse_json("the answer", body)?;
    if let Some(error) = super::reported_error(response.error.as_ref()) {
        return Err(error);
    }
    let blocks = response.content.ok_or_else(|| ModelError::Protocol("the answer has no content".to_owned()))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.kind.as_deref() {
            Some("text") => text.push_str(block.text.as_deref().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block.id.filter(|id| !id.is_empty()).unwrap_or_else(super::generated_call_id),
                name: block
                    .name
                    .filter(|name| !name.is_empty())
                    .ok_or_else(|| ModelError::Protocol("a tool_use block has no name".to_owned()))?,
                arguments: super::arguments_or_empty_object(
                    block.input.map(|raw| raw.get().to_owned()).unwrap_or_default(),
                ),
            }),
            // Thinking, server tools and blocks newer than this client.
            _ => {}
        }
    }
    let mut usage = TokenUsage::default();
    if let Some(wire_usage) = &response.usage {
        wire_usage.apply_to(&mut usage);
    }
    let reply = ModelReply { content: super::non_empty(text), tool_calls, usage, stop_reason: response.stop_reason };
    limits::check_reply(&reply)?;
    Ok(reply)
}

/// Every stream event has the same outer shape; which members are there
/// depends on its `type`.
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    index: Option<u64>,
    message: Option<StartMessage>,
    content_block: Option<ResponseBlock>,
    delta: Option<WireDelta>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct WireDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    stop_reason: Option<String>,
}

#[derive(Debug)]
enum PartialBlock {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
        /// The `input` of `content_block_start`: `{}` from Anthropic, which
        /// streams the input as deltas, but used if no delta comes.
        start_input: Option<String>,
    },
    /// A block this client does not use (thinking, server tools).
    Other,
}

/// A streamed answer being put together from its events.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    /// By block index, which orders them.
    blocks: BTreeMap<u64, PartialBlock>,
    usage: TokenUsage,
    stop_reason: Option<String>,
    done: bool,
    budget: ReplyBudget,
}

impl StreamState {
    pub(super) fn on_event(&mut self, event: &SseEvent, events: &mut dyn FnMut(ModelEvent)) -> Result<()> {
        if event.data.trim().is_empty() {
            return Ok(());
        }
        let wire: WireEvent = super::parse_json("a stream event", event.data.as_bytes())?;
        let kind = wire.kind.as_deref().or(event.event.as_deref()).unwrap_or_default();
        match kind {
            "message_start" => {
                if let Some(usage) = wire.message.as_ref().and_then(|message| message.usage.as_ref()) {
                    usage.apply_to(&mut self.usage);
                }
            }
            "content_block_start" => {
                let index = block_index(&wire)?;
                let block = wire
                    .content_block
                    .ok_or_else(|| ModelError::Protocol("content_block_start without a content_block".to_owned()))?;
                let is_new = !self.blocks.contains_key(&index);
                let partial = match block.kind.as_deref() {
                    Some("text") => PartialBlock::Text(String::new()),
                    Some("tool_use") => {
                        let id = block.id.filter(|id| !id.is_empty()).unwrap_or_else(super::generated_call_id);
                        let name = block
                            .name
                            .filter(|name| !name.is_empty())
                            .ok_or_else(|| ModelError::Protocol("a tool_use block has no name".to_owned()))?;
                        let start_input = block.input.map(|raw| raw.get().to_owned());
                        if is_new {
                            self.budget.add_tool_call()?;
                            self.budget.add_to_total(id.len() + name.len())?;
                            self.budget.add_arguments(0, start_input.as_ref().map_or(0, String::len))?;
                        }
                        PartialBlock::ToolUse { id, name, json: String::new(), start_input }
                    }
                    _ => PartialBlock::Other,
                };
                // A text block may start with some text already.
                let initial_text = block.text.filter(|text| !text.is_empty());
                let entry = self.blocks.entry(index).or_insert(partial);
                if let (PartialBlock::Text(text), Some(initial)) = (entry, initial_text) {
                    self.budget.add_content(initial.len())?;
                    text.push_str(&initial);
                    events(ModelEvent::TextDelta(initial));
                }
            }
            "content_block_delta" => {
                let index = block_index(&wire)?;
                let delta =
                    wire.delta.ok_or_else(|| ModelError::Protocol("content_block_delta without a delta".to_owned()))?;
                let block = self.blocks.get_mut(&index).ok_or_else(|| {
                    ModelError::Protocol(format!("a delta for content block {index}, which was not started"))
                })?;
                match (delta.kind.as_deref(), block) {
                    (Some("text_delta"), PartialBlock::Text(text)) => {
                        if let Some(fragment) = delta.text.filter(|fragment| !fragment.is_empty()) {
                            self.budget.add_content(fragment.len())?;
                            text.push_str(&fragment);
                            events(ModelEvent::TextDelta(fragment));
                        }
                    }
                    (Some("input_json_delta"), PartialBlock::ToolUse { json, .. }) => {
                        let fragment = delta.partial_json.as_deref().unwrap_or_default();
                        self.budget.add_arguments(json.len(), fragment.len())?;
                        json.push_str(fragment);
                    }
                    (Some("text_delta" | "input_json_delta"), _) => {
                        return Err(ModelError::Protocol(format!(
                            "a {} for content block {index} of another type",
                            delta.kind.as_deref().unwrap_or_default()
                        )));
                    }
                    // Thinking, signatures, citations.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = wire.delta.and_then(|delta| delta.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = &wire.usage {
                    usage.apply_to(&mut self.usage);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                return Err(super::reported_error(wire.error.as_ref()).unwrap_or_else(|| ModelError::Api {
                    kind: "error".to_owned(),
                    message: "an error event without details".to_owned(),
                }));
            }
            // `ping`, `content_block_stop` and events newer than this client.
            _ => {}
        }
        Ok(())
    }

    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// The reply, once the stream has ended. Ending after `message_delta`
    /// brought the stop reason, without `message_stop`, is accepted; ending
    /// before means the answer was cut off.
    pub(super) fn finish(self) -> Result<ModelReply> {
        if !self.done && self.stop_reason.is_none() {
            return Err(ModelError::Protocol("the stream ended before the answer was complete".to_owned()));
        }
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in self.blocks.into_values() {
            match block {
                PartialBlock::Text(fragment) => text.push_str(&fragment),
                PartialBlock::ToolUse { id, name, json, start_input } => {
                    let arguments = if json.is_empty() { start_input.unwrap_or_default() } else { json };
                    tool_calls.push(ToolCall { id, name, arguments: super::arguments_or_empty_object(arguments) });
                }
                PartialBlock::Other => {}
            }
        }
        Ok(ModelReply { content: super::non_empty(text), tool_calls, usage: self.usage, stop_reason: self.stop_reason })
    }
}

fn block_index(wire: &WireEvent) -> Result<u64> {
    wire.index.ok_or_else(|| {
        ModelError::Protocol(format!("{} without an index", wire.kind.as_deref().unwrap_or("a block event")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ToolSpec;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;
    use serde_json::json;

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: id.to_owned(), name: name.to_owned(), arguments: arguments.to_owned() }
    }

    fn tool_result(call_id: &str, content: &str, is_error: bool) -> Message {
        Message::Tool { call_id: call_id.to_owned(), content: content.to_owned(), is_error }
    }

    fn body_of(config: &ModelConfig, request: &ModelRequest<'_>) -> serde_json::Value {
        serde_json::from_slice(&request_body(config, request).unwrap()).unwrap()
    }

    #[test]
    fn consecutive_tool_results_become_one_user_message() {
        let messages = vec![
            Message::User { content: "fix it".to_owned() },
            Message::Assistant {
                content: Some("Looking.".to_owned()),
                tool_calls: vec![
                    call("t1", "read", r#"{"path": "a.rs", "lines": [1, 2]}"#),
                    call("t2", "grep", "{\"pattern\": \"unterminated"),
                    call("t3", "list", "[1]"),
                ],
            },
            tool_result("t1", "fn main() {}", false),
            tool_result("t2", "arguments are not valid JSON", true),
            tool_result("t3", "", true),
            Message::User { content: "also check b.rs".to_owned() },
            Message::Assistant { content: Some(String::new()), tool_calls: vec![] },
            Message::Assistant { content: Some("Done.".to_owned()), tool_calls: vec![] },
        ];
        let tools = vec![ToolSpec {
            name: "read".to_owned(),
            description: "read a file".to_owned(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }];
        let request = ModelRequest { system: "You fix code.", messages: &messages, tools: &tools };
        let mut config = ModelConfig::new(super::super::Provider::Anthropic, "claude-x");
        config.max_output_tokens = 1000;
        assert_eq!(
            body_of(&config, &request),
            json!({
                "model": "claude-x",
                "max_tokens": 1000,
                "system": "You fix code.",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "fix it"}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "t1", "name": "read", "input": {"path": "a.rs", "lines": [1, 2]}},
                        {"type": "tool_use", "id": "t2", "name": "grep", "input": {}},
                        {"type": "tool_use", "id": "t3", "name": "list", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "fn main() {}", "is_error": false},
                        {"type": "tool_result", "tool_use_id": "t2", "content": "arguments are not valid JSON", "is_error": true},
                        {"type": "tool_result", "tool_use_id": "t3", "content": "", "is_error": true},
                        {"type": "text", "text": "also check b.rs"},
                    ]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
                ],
                "tools": [{"name": "read", "description": "read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}],
                "stream": true,
            })
        );
    }

    #[test]
    fn stored_arguments_are_sent_byte_for_byte() {
        let messages =
            vec![Message::Assistant { content: None, tool_calls: vec![call("t1", "read", r#"{"z": 1, "a": "é"}"#)] }];
        let request = ModelRequest { system: "", messages: &messages, tools: &[] };
        let config = ModelConfig::new(super::super::Provider::Anthropic, "m");
        let body = String::from_utf8(request_body(&config, &request).unwrap()).unwrap();
        assert!(body.contains(r#""input":{"z": 1, "a": "é"}"#), "{body}");
    }

    #[test]
    fn a_whole_answer_is_parsed() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","content":[
            {"type":"thinking","thinking":"hmm","signature":"s"},
            {"type":"text","text":"I will read it."},
            {"type":"tool_use","id":"toolu_1","name":"read","input":{"path": "a.rs", "b": [1]}},
            {"type":"tool_use","id":"toolu_2","name":"now","input":{}}
        ],"stop_reason":"tool_use","usage":{"input_tokens":20,"cache_read_input_tokens":100,"output_tokens":9}}"#;
        assert_eq!(
            parse_response(body.as_bytes()).unwrap(),
            ModelReply {
                content: Some("I will read it.".to_owned()),
                tool_calls: vec![
                    call("toolu_1", "read", r#"{"path": "a.rs", "b": [1]}"#),
                    call("toolu_2", "now", "{}")
                ],
                usage: TokenUsage { input_tokens: 120, output_tokens: 9 },
                stop_reason: Some("tool_use".to_owned()),
            }
        );
        let err = parse_response(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap_err();
        assert!(matches!(&err, ModelError::Api { kind, .. } if kind == "overloaded_error") && err.is_retryable());
        for broken in [
            &b"{\"content\": [{"[..],
            br#"{"stop_reason":"end_turn"}"#,
            br#"{"content":[{"type":"tool_use","id":"x"}]}"#,
        ] {
            let err = parse_response(broken).unwrap_err();
            assert!(matches!(err, ModelError::Protocol(_)), "{err:?}");
        }
    }

    fn run_stream(events: &[(&str, serde_json::Value)]) -> (Result<ModelReply>, Vec<String>) {
        let mut state = StreamState::default();
        let mut deltas = Vec::new();
        let mut on_event = |event| {
            if let ModelEvent::TextDelta(text) = event {
                deltas.push(text);
            }
        };
        for (name, data) in events {
            let event = SseEvent { event: Some((*name).to_owned()), data: data.to_string() };
            if let Err(err) = state.on_event(&event, &mut on_event) {
                return (Err(err), deltas);
            }
        }
        (state.finish(), deltas)
    }

    fn text_delta(index: u64, text: &str) -> (&'static str, serde_json::Value) {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        )
    }

    fn json_delta(index: u64, partial: &str) -> (&'static str, serde_json::Value) {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial}}),
        )
    }

    fn tool_start(index: u64, id: &str, name: &str) -> (&'static str, serde_json::Value) {
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        )
    }

    fn message_start(input_tokens: u64) -> (&'static str, serde_json::Value) {
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        )
    }

    fn message_end(stop_reason: &str, output_tokens: u64) -> [(&'static str, serde_json::Value); 2] {
        [
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]
    }

    #[test]
    fn a_stream_is_assembled_even_with_interleaved_blocks() {
        let mut events = vec![
            message_start(25),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            text_delta(0, "Reading "),
            text_delta(0, "both."),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            tool_start(1, "toolu_a", "read"),
            tool_start(2, "toolu_b", "now"),
            json_delta(1, ""),
            json_delta(1, "{\"path\": \"é"),
            json_delta(2, ""),
            json_delta(1, ".rs\"}"),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
        ];
        events.extend(message_end("tool_use", 40));
        let (reply, deltas) = run_stream(&events);
        assert_eq!(
            reply.unwrap(),
            ModelReply {
                content: Some("Reading both.".to_owned()),
                tool_calls: vec![call("toolu_a", "read", "{\"path\": \"é.rs\"}"), call("toolu_b", "now", "{}")],
                usage: TokenUsage { input_tokens: 25, output_tokens: 40 },
                stop_reason: Some("tool_use".to_owned()),
            }
        );
        assert_eq!(deltas, vec!["Reading ", "both."]);
    }

    #[test]
    fn broken_streams_are_errors() {
        let (reply, _) = run_stream(&[message_start(1), text_delta(0, "orphan")]);
        assert!(matches!(reply, Err(ModelError::Protocol(_))), "delta before start: {reply:?}");
        let (reply, _) = run_stream(&[
            message_start(1),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            text_delta(0, "cut"),
        ]);
        assert!(matches!(reply, Err(ModelError::Protocol(_))), "no stop: {reply:?}");
        let (reply, _) = run_stream(&[
            message_start(1),
            ("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        ]);
        assert!(matches!(&reply, Err(err @ ModelError::Api { .. }) if err.is_retryable()), "{reply:?}");
        let (reply, _) = run_stream(&[("message_start", json!("not an object"))]);
        assert!(matches!(reply, Err(ModelError::Protocol(_))), "{reply:?}");
        let mut events = vec![message_start(3)];
        events.push(message_end("end_turn", 2)[0].clone());
        let reply = run_stream(&events).0.unwrap();
        assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"), "message_stop may be missing after a stop reason");
        assert_eq!(reply.content, None);
    }

    fn refused_limit<T: std::fmt::Debug>(result: Result<T>) -> limits::Limit {
        match result {
            Err(ModelError::TooLarge(limit)) => limit,
            other => panic!("not refused as too large: {other:?}"),
        }
    }

    /// Regression: a streamed reply grew without bound in the number of
    /// tool_use blocks, in one block's input and in its text.
    #[test]
    fn streamed_replies_are_held_to_the_limits() {
        let mut calls = vec![message_start(1)];
        calls.extend((0..=limits::MAX_TOOL_CALLS as u64).map(|index| tool_start(index, &format!("t{index}"), "f")));
        calls.extend(message_end("tool_use", 1));
        assert_eq!(refused_limit(run_stream(&calls).0), limits::Limit::ToolCalls);
        calls.remove(limits::MAX_TOOL_CALLS + 1);
        assert!(run_stream(&calls).0.is_ok(), "64 calls are allowed");

        let piece = "a".repeat(64 * 1024);
        let mut input = vec![message_start(1), tool_start(0, "t", "f")];
        input.extend(std::iter::repeat_n(json_delta(0, &piece), limits::MAX_TOOL_CALL_ARGUMENTS_BYTES / piece.len()));
        input.extend(message_end("tool_use", 1));
        assert!(run_stream(&input).0.is_ok(), "1 MiB of input is allowed");
        input.insert(2, json_delta(0, "{"));
        assert_eq!(refused_limit(run_stream(&input).0), limits::Limit::ToolCallArgumentsBytes);

        let mut text = vec![
            message_start(1),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
        ];
        text.extend(std::iter::repeat_n(text_delta(0, &piece), limits::MAX_CONTENT_BYTES / piece.len() + 1));
        let (reply, deltas) = run_stream(&text);
        assert_eq!(refused_limit(reply), limits::Limit::ContentBytes);
        assert_eq!(deltas.concat().len(), limits::MAX_CONTENT_BYTES, "no text past the limit is handed out");
    }

    #[test]
    fn whole_replies_are_held_to_the_limits() {
        let blocks: Vec<_> = (0..=limits::MAX_TOOL_CALLS)
            .map(|index| json!({"type": "tool_use", "id": format!("t{index}"), "name": "f", "input": {}}))
            .collect();
        let body = json!({"content": blocks, "stop_reason": "tool_use"});
        assert_eq!(refused_limit(parse_response(body.to_string().as_bytes())), limits::Limit::ToolCalls);
        let input = json!({"content": "a".repeat(limits::MAX_TOOL_CALL_ARGUMENTS_BYTES)});
        let body = json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": input}], "stop_reason": "tool_use"});
        assert_eq!(refused_limit(parse_response(body.to_string().as_bytes())), limits::Limit::ToolCallArgumentsBytes);
    }

    proptest! {
        #[test]
        fn arbitrary_events_never_panic(steps in proptest::collection::vec((0u8..8, 0u64..3, ".{0,12}"), 0..24)) {
            let mut state = StreamState::default();
            let mut ignore = |_| {};
            for (kind, index, text) in steps {
                let data = match kind {
                    0 => json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": text}}),
                    1 => json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": text, "name": text}}),
                    2 => json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                    3 => json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": text}}),
                    4 => json!({"type": "message_delta", "delta": {"stop_reason": text}, "usage": {"output_tokens": index}}),
                    5 => json!({"type": "error", "error": text}),
                    6 => json!({"type": text, "index": index}),
                    _ => json!(text),
                };
                let _ = state.on_event(&SseEvent { event: None, data: data.to_string() }, &mut ignore);
            }
            let _ = state.finish();
        }
    }
}
