//! OpenAI-compatible chat completions: `POST {base_url}/chat/completions`.
//!
//! The same format serves OpenAI and the local servers that copy it (Ollama,
//! vLLM, llama.cpp), which differ in small ways this module tolerates: usage
//! may be missing (counted as zero), `null` may stand for an empty list, a
//! tool call may come without an id (one is made up) and without an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::limits::{self, ReplyBudget};
use super::sse::SseEvent;
use super::{ModelConfig, ModelError, ModelEvent, ModelRequest, Result};
use crate::conversation::{Message, ModelReply, TokenUsage, ToolCall};

#[derive(Debug, Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    /// OpenAI refuses an empty list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `null` is allowed only beside tool calls.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

/// The JSON body of one turn.
///
/// OpenAI's own API has replaced `max_tokens` by `max_completion_tokens`
/// (its reasoning models refuse the old name), while most compatible servers
/// only know `max_tokens` and would silently ignore the new one: the name is
/// chosen by the host.
pub(super) fn request_body(
    config: &ModelConfig,
    request: &ModelRequest<'_>,
    endpoint: &reqwest::Url,
) -> Result<Vec<u8>> {
    let is_openai = endpoint.host_str() == Some("api.openai.com");
    let body = ChatRequest {
        model: &config.model,
        messages: wire_messages(request),
        tools: request
            .tools
            .iter()
            .map(|tool| WireTool {
                kind: "function",
                function: WireFunction {
                    name: &tool.name,
                    description: &tool.description,
                    parameters: &tool.parameters,
                },
            })
            .collect(),
        max_tokens: (!is_openai).then_some(config.max_output_tokens),
        max_completion_tokens: is_openai.then_some(config.max_output_tokens),
        temperature: config.temperature,
        stream: config.stream,
        stream_options: config.stream.then_some(StreamOptions { include_usage: true }),
    };
    serde_json::to_vec(&body).map_err(|err| ModelError::InvalidRequest(err.to_string()))
}

/// Our messages in OpenAI's terms. A tool result's `is_error` has no place
/// in this format: the engine words the content of a failed call so that it
/// reads as a failure.
fn wire_messages<'a>(request: &ModelRequest<'a>) -> Vec<WireMessage<'a>> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(WireMessage::System { content: request.system });
    }
    for message in request.messages {
        messages.push(match message {
            Message::User { content } => WireMessage::User { content },
            Message::Assistant { content, tool_calls } => {
                let content = content.as_deref().filter(|text| !text.is_empty() || tool_calls.is_empty());
                WireMessage::Assistant {
                    content: content.or(tool_calls.is_empty().then_some("")),
                    tool_calls: tool_calls
                        .iter()
                        .map(|call| WireToolCall {
                            id: &call.id,
                            kind: "function",
                            function: WireFunctionCall { name: &call.name, arguments: &call.arguments },
                        })
                        .collect(),
                }
            }
            Message::Tool { call_id, content, is_error: _ } => WireMessage::Tool { tool_call_id: call_id, content },
        });
    }
    messages
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    choices: Option<Vec<Choice>>,
    usage: Option<WireUsage>,
    /// Some servers answer 200 with an error.
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<ResponseMessage>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseMessage {
    content: Option<String>,
    tool_calls: Option<Vec<ResponseToolCall>>,
}

#[derive(Debug, Deserialize)]
struct ResponseToolCall {
    id: Option<String>,
    function: Option<ResponseFunction>,
}

#[derive(Debug, Deserialize)]
struct ResponseFunction {
    name: Option<String>,
    /// A string of JSON in OpenAI's format; some servers send the object
    /// itself.
    arguments: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl From<&WireUsage> for TokenUsage {
    fn from(usage: &WireUsage) -> Self {
        TokenUsage {
            input_tokens: usage.prompt_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
        }
    }
}

/// A whole (non-streamed) answer.
pub(super) fn parse_response(body: &[u8]) -> Result<ModelReply> {
    let response: ChatResponse = super::parse_json("the answer", body)?;
    if let Some(error) = super::reported_error(response.error.as_ref()) {
        return Err(error);
    }
    let choice = response
        .choices
        .and_then(|choices| choices.into_iter().next())
        .ok_or_else(|| ModelError::Protocol("the answer has no choices".to_owned()))?;
    let message = choice.message.ok_or_else(|| ModelError::Protocol("the choice has no message".to_owned()))?;
    let mut tool_calls = Vec::new();
    for call in message.tool_calls.unwrap_or_default() {
        let function = call.function.ok_or_else(|| ModelError::Protocol("a tool call has no function".to_owned()))?;
        let name = function
            .name
            .filter(|name| !name.is_empty())
            .ok_or_else(|| ModelError::Protocol("a tool call has no function name".to_owned()))?;
        let arguments = match function.arguments {
            Some(raw) if raw.get().starts_with('"') => {
                super::parse_json::<String>("tool call arguments", raw.get().as_bytes())?
            }
            Some(raw) if raw.get() == "null" => String::new(),
            Some(raw) => raw.get().to_owned(),
            None => String::new(),
        };
        tool_calls.push(ToolCall {
            id: call.id.filter(|id| !id.is_empty()).unwrap_or_else(super::generated_call_id),
            name,
            arguments: super::arguments_or_empty_object(arguments),
        });
    }
    let reply = ModelReply {
        content: message.content.and_then(super::non_empty),
        tool_calls,
        usage: response.usage.as_ref().map(TokenUsage::from).unwrap_or_default(),
        stop_reason: choice.finish_reason,
    };
    limits::check_reply(&reply)?;
    Ok(reply)
}

#[derive(Debug, Deserialize)]
struct Chunk {
    choices: Option<Vec<ChunkChoice>>,
    usage: Option<WireUsage>,
    /// vLLM and others report a failure in the middle of a stream this way.
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    index: Option<u32>,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<DeltaToolCall>>,
}

#[derive(Debug, Deserialize)]
struct DeltaToolCall {
    index: Option<u32>,
    id: Option<String>,
    function: Option<DeltaFunction>,
}

#[derive(Debug, Deserialize)]
struct DeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// A streamed answer being put together from its chunks.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    text: String,
    /// By the index the server gives each call, which orders them.
    calls: BTreeMap<u32, PartialCall>,
    last_index: Option<u32>,
    finish_reason: Option<String>,
    usage: TokenUsage,
    done: bool,
    budget: ReplyBudget,
}

impl StreamState {
    pub(super) fn on_event(&mut self, event: &SseEvent, events: &mut dyn FnMut(ModelEvent)) -> Result<()> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Chunk = super::parse_json("a stream chunk", data.as_bytes())?;
        if let Some(error) = super::reported_error(chunk.error.as_ref()) {
            return Err(error);
        }
        if let Some(usage) = &chunk.usage {
            self.usage = usage.into();
        }
        for choice in chunk.choices.unwrap_or_default() {
            // Only one answer is asked for; other choices would be `n > 1`.
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                    self.budget.add_content(text.len())?;
                    self.text.push_str(&text);
                    events(ModelEvent::TextDelta(text));
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.add_call_fragment(call)?;
                }
            }
            // Some servers send an empty reason, rather than null, until the end.
            if let Some(reason) = choice.finish_reason.filter(|reason| !reason.is_empty()) {
                self.finish_reason = Some(reason);
            }
        }
        Ok(())
    }

    /// The first fragment of a call brings its id and name, the next ones
    /// pieces of its arguments. A server that omits the index continues the
    /// last call, or starts a new one when the fragment has an id.
    fn add_call_fragment(&mut self, fragment: DeltaToolCall) -> Result<()> {
        let index = match (fragment.index, self.last_index) {
            (Some(index), _) => index,
            (None, Some(last)) if fragment.id.is_none() => last,
            (None, last) => last.map_or(0, |last| last.saturating_add(1)),
        };
        if !self.calls.contains_key(&index) {
            self.budget.add_tool_call()?;
        }
        self.last_index = Some(index);
        let call = self.calls.entry(index).or_default();
        if let Some(id) = fragment.id.filter(|id| !id.is_empty())
            && call.id.is_none()
        {
            self.budget.add_to_total(id.len())?;
            call.id = Some(id);
        }
        if let Some(function) = fragment.function {
            if let Some(name) = function.name
                && call.name.is_empty()
            {
                self.budget.add_to_total(name.len())?;
                call.name = name;
            }
            if let Some(arguments) = function.arguments {
                self.budget.add_arguments(call.arguments.len(), arguments.len())?;
                call.arguments.push_str(&arguments);
            }
        }
        Ok(())
    }

    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// The reply, once the stream has ended. Ending after a finish reason
    /// without `[DONE]` is accepted; ending before one means the answer was
    /// cut off.
    pub(super) fn finish(self) -> Result<ModelReply> {
        if !self.done && self.finish_reason.is_none() {
            return Err(ModelError::Protocol("the stream ended before the answer was complete".to_owned()));
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, call) in self.calls {
            if call.name.is_empty() {
                return Err(ModelError::Protocol(format!("streamed tool call {index} has no function name")));
            }
            tool_calls.push(ToolCall {
                id: call.id.unwrap_or_else(super::generated_call_id),
                name: call.name,
                arguments: super::arguments_or_empty_object(call.arguments),
            });
        }
        Ok(ModelReply {
            content: super::non_empty(self.text),
            tool_calls,
            usage: self.usage,
            stop_reason: self.finish_reason,
        })
    }
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

    fn body_of(config: &ModelConfig, request: &ModelRequest<'_>, url: &str) -> serde_json::Value {
        let endpoint = reqwest::Url::parse(url).unwrap();
        serde_json::from_slice(&request_body(config, request, &endpoint).unwrap()).unwrap()
    }

    #[test]
    fn messages_and_tools_translate_to_chat_completions() {
        let messages = vec![
            Message::User { content: "list files".to_owned() },
            Message::Assistant {
                content: None,
                tool_calls: vec![call("c1", "ls", r#"{"path":"."}"#), call("c2", "cat", "not json")],
            },
            Message::Tool { call_id: "c1".to_owned(), content: "a.txt".to_owned(), is_error: false },
            Message::Tool { call_id: "c2".to_owned(), content: "bad arguments".to_owned(), is_error: true },
            Message::Assistant { content: Some("done".to_owned()), tool_calls: vec![] },
            Message::Assistant { content: None, tool_calls: vec![] },
        ];
        let tools = vec![ToolSpec {
            name: "ls".to_owned(),
            description: "list".to_owned(),
            parameters: json!({"type": "object"}),
        }];
        let request = ModelRequest { system: "be brief", messages: &messages, tools: &tools };
        let mut config = ModelConfig::new(super::super::Provider::OpenAi, "local-model");
        config.stream = false;
        config.temperature = Some(0.5);
        assert_eq!(
            body_of(&config, &request, "http://127.0.0.1:1/v1/chat/completions"),
            json!({
                "model": "local-model",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "list files"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}},
                        {"id": "c2", "type": "function", "function": {"name": "cat", "arguments": "not json"}},
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
                    {"role": "tool", "tool_call_id": "c2", "content": "bad arguments"},
                    {"role": "assistant", "content": "done"},
                    {"role": "assistant", "content": ""},
                ],
                "tools": [{"type": "function", "function": {"name": "ls", "description": "list", "parameters": {"type": "object"}}}],
                "max_tokens": 4096,
                "temperature": 0.5,
            })
        );
        config.stream = true;
        let request = ModelRequest { system: "", messages: &messages[..1], tools: &[] };
        assert_eq!(
            body_of(&config, &request, "https://api.openai.com/v1/chat/completions"),
            json!({
                "model": "local-model",
                "messages": [{"role": "user", "content": "list files"}],
                "max_completion_tokens": 4096,
                "temperature": 0.5,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn a_whole_answer_is_parsed_with_arguments_kept_exactly() {
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"","tool_calls":[
            {"id":"c1","type":"function","function":{"name":"ls","arguments":"{\"z\": 1, \"a\": \"\u00e9\"}"}},
            {"type":"function","function":{"name":"pwd","arguments":{"b":2,"a":1}}},
            {"id":"c3","type":"function","function":{"name":"now","arguments":""}}
        ]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
        let reply = parse_response(body).unwrap();
        assert_eq!(reply.content, None);
        assert_eq!(reply.usage, TokenUsage { input_tokens: 11, output_tokens: 7 });
        assert_eq!(reply.stop_reason.as_deref(), Some("tool_calls"));
        assert_eq!(reply.tool_calls[0], call("c1", "ls", "{\"z\": 1, \"a\": \"é\"}"));
        assert!(reply.tool_calls[1].id.starts_with("call_"), "a missing id is made up");
        assert_eq!(reply.tool_calls[1].arguments, r#"{"b":2,"a":1}"#);
        assert_eq!(reply.tool_calls[2], call("c3", "now", "{}"));
    }

    #[test]
    fn whole_answers_that_break_the_format_are_protocol_errors() {
        for body in [
            &b"not json"[..],
            br#"{"choices":[]}"#,
            br#"{"choices":[{"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"message":{"tool_calls":[{"id":"x","function":{"arguments":"{}"}}]}}]}"#,
            br#"{"choices":"many"}"#,
        ] {
            let err = parse_response(body).unwrap_err();
            assert!(matches!(err, ModelError::Protocol(_)), "{}: {err:?}", String::from_utf8_lossy(body));
        }
        let err = parse_response(br#"{"error":{"message":"slow down","type":"rate_limit"}}"#).unwrap_err();
        assert!(matches!(&err, ModelError::Api { message, .. } if message == "slow down"), "{err:?}");
        let reply = parse_response(br#"{"choices":[{"message":{"content":"hi","tool_calls":null}}],"usage":null}"#);
        assert_eq!(reply.unwrap().usage, TokenUsage::default(), "usage may be missing");
    }

    fn run_stream(chunks: &[serde_json::Value], done: bool) -> (Result<ModelReply>, Vec<String>) {
        let mut state = StreamState::default();
        let mut deltas = Vec::new();
        let mut on_event = |event| {
            if let ModelEvent::TextDelta(text) = event {
                deltas.push(text);
            }
        };
        for chunk in chunks {
            let event = SseEvent { event: None, data: chunk.to_string() };
            if let Err(err) = state.on_event(&event, &mut on_event) {
                return (Err(err), deltas);
            }
        }
        if done {
            state.on_event(&SseEvent { event: None, data: "[DONE]".to_owned() }, &mut on_event).unwrap();
        }
        (state.finish(), deltas)
    }

    fn delta(delta: serde_json::Value) -> serde_json::Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}], "usage": null})
    }

    #[test]
    fn interleaved_tool_call_fragments_are_reassembled_by_index() {
        let chunks = [
            delta(json!({"role": "assistant", "content": ""})),
            delta(json!({"content": "Let me "})),
            delta(json!({"content": "look."})),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "read", "arguments": ""}}]}),
            ),
            delta(
                json!({"tool_calls": [{"index": 1, "id": "b", "type": "function", "function": {"name": "grep", "arguments": "{\"pat"}}]}),
            ),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\":"}}]})),
            delta(json!({"tool_calls": [{"index": 1, "function": {"arguments": "tern\": \"é\"}"}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"a.rs\"}"}}]})),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": null}),
            json!({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12}}),
        ];
        let (reply, deltas) = run_stream(&chunks, true);
        assert_eq!(
            reply.unwrap(),
            ModelReply {
                content: Some("Let me look.".to_owned()),
                tool_calls: vec![call("a", "read", "{\"path\": \"a.rs\"}"), call("b", "grep", "{\"pattern\": \"é\"}")],
                usage: TokenUsage { input_tokens: 30, output_tokens: 12 },
                stop_reason: Some("tool_calls".to_owned()),
            }
        );
        assert_eq!(deltas, vec!["Let me ", "look."]);
    }

    #[test]
    fn fragments_without_an_index_continue_the_last_call() {
        let chunks = [
            delta(json!({"tool_calls": [{"id": "a", "function": {"name": "one", "arguments": "{\"x\""}}]})),
            delta(json!({"tool_calls": [{"function": {"arguments": ":1}"}}]})),
            delta(json!({"tool_calls": [{"id": "b", "function": {"name": "two"}}]})),
            json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
        ];
        let reply = run_stream(&chunks, false).0.unwrap();
        assert_eq!(reply.tool_calls, vec![call("a", "one", "{\"x\":1}"), call("b", "two", "{}")]);
        assert_eq!(reply.usage, TokenUsage::default(), "no usage chunk counts as zero");
    }

    #[test]
    fn a_stream_cut_before_its_finish_is_a_protocol_error() {
        let (reply, _) = run_stream(&[delta(json!({"content": "hel"}))], false);
        assert!(matches!(reply, Err(ModelError::Protocol(_))), "{reply:?}");
        let (reply, _) = run_stream(&[json!({"choices": [{"delta": {"content": "hel"}, "finish_reason": ""}]})], false);
        assert!(matches!(reply, Err(ModelError::Protocol(_))), "an empty finish reason is none: {reply:?}");
        let (reply, _) = run_stream(&[json!({"error": {"message": "overloaded", "type": "server_error"}})], false);
        assert!(matches!(&reply, Err(err @ ModelError::Api { .. }) if err.is_retryable()), "{reply:?}");
        let (reply, _) = run_stream(
            &[json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "x"}]}, "finish_reason": "stop"}]})],
            true,
        );
        assert!(matches!(reply, Err(ModelError::Protocol(_))), "a call without a name: {reply:?}");
    }

    fn refused_limit<T: std::fmt::Debug>(result: Result<T>) -> limits::Limit {
        match result {
            Err(ModelError::TooLarge(limit)) => limit,
            other => panic!("not refused as too large: {other:?}"),
        }
    }

    /// Regression: a streamed reply grew without bound in the number of tool
    /// calls (one per index), in one call's arguments and in its text.
    #[test]
    fn streamed_replies_are_held_to_the_limits() {
        let calls: Vec<_> = (0..=limits::MAX_TOOL_CALLS)
            .map(|index| {
                delta(json!({"tool_calls": [{"index": index * 1000, "id": format!("c{index}"), "function": {"name": "f"}}]}))
            })
            .collect();
        assert_eq!(refused_limit(run_stream(&calls, true).0), limits::Limit::ToolCalls);
        assert!(run_stream(&calls[..limits::MAX_TOOL_CALLS], true).0.is_ok(), "64 calls are allowed");

        let piece = "a".repeat(64 * 1024);
        let mut arguments = vec![delta(json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}))];
        let fragment = delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}));
        arguments.extend(std::iter::repeat_n(fragment, limits::MAX_TOOL_CALL_ARGUMENTS_BYTES / piece.len() + 1));
        assert_eq!(refused_limit(run_stream(&arguments, true).0), limits::Limit::ToolCallArgumentsBytes);
        assert!(run_stream(&arguments[..arguments.len() - 1], true).0.is_ok(), "1 MiB of arguments is allowed");

        let text = vec![delta(json!({"content": piece})); limits::MAX_CONTENT_BYTES / piece.len() + 1];
        let (reply, deltas) = run_stream(&text, true);
        assert_eq!(refused_limit(reply), limits::Limit::ContentBytes);
        assert_eq!(deltas.concat().len(), limits::MAX_CONTENT_BYTES, "no text past the limit is handed out");
    }

    #[test]
    fn whole_replies_are_held_to_the_limits() {
        let calls: Vec<_> = (0..=limits::MAX_TOOL_CALLS)
            .map(|index| json!({"id": format!("c{index}"), "type": "function", "function": {"name": "f", "arguments": "{}"}}))
            .collect();
        let body =
            json!({"choices": [{"message": {"content": null, "tool_calls": calls}, "finish_reason": "tool_calls"}]});
        assert_eq!(refused_limit(parse_response(body.to_string().as_bytes())), limits::Limit::ToolCalls);
        let text = "a".repeat(limits::MAX_CONTENT_BYTES + 1);
        let body = json!({"choices": [{"message": {"content": text}, "finish_reason": "stop"}]});
        assert_eq!(refused_limit(parse_response(body.to_string().as_bytes())), limits::Limit::ContentBytes);
    }

    proptest! {
        #[test]
        fn arbitrary_chunks_never_panic(data in proptest::collection::vec(".{0,40}", 0..6), json_like in proptest::collection::vec(any::<(Option<u32>, Option<String>, Option<String>)>(), 0..6)) {
            let mut state = StreamState::default();
            let mut ignore = |_| {};
            for text in data {
                let _ = state.on_event(&SseEvent { event: None, data: text }, &mut ignore);
            }
            for (index, id, arguments) in json_like {
                let chunk = json!({"choices": [{"delta": {"tool_calls": [{"index": index, "id": id, "function": {"arguments": arguments}}]}}]});
                let _ = state.on_event(&SseEvent { event: None, data: chunk.to_string() }, &mut ignore);
            }
            let _ = state.finish();
        }
    }
}
