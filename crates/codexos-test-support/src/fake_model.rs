//! A fake model server that speaks both providers' wire formats over real
//! HTTP on 127.0.0.1: OpenAI chat completions at `/v1/chat/completions` and
//! Anthropic Messages at `/v1/messages`, streamed (server-sent events, in each
//! provider's real event shapes) or not, errors included.
//!
//! Tests queue the answers ([`FakeTurn`]) and the fake serves them in order to
//! whichever format is asked. It checks what it is sent the way the real APIs
//! do (required fields, Anthropic's alternating roles, tool results answering
//! the calls before them) and records every request, so a test can assert on
//! the bodies and headers and on the conversation contract
//! ([`FakeModel::check_tool_calls_answered`]).
//!
//! The fake serves one conversation at a time: its turns and its "next
//! request" checks assume requests arrive one after another.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Which wire format a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    OpenAi,
    Anthropic,
}

/// What the fake answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeTurn {
    /// A reply: text and/or tool calls (id, name, arguments JSON text), with
    /// usage. When the request asks to stream, it is streamed in the
    /// provider's real SSE format: the text in several deltas, each tool
    /// call's arguments in several fragments (OpenAI interleaves parallel
    /// calls by index; Anthropic sends one block after another, as the real
    /// API does), every event split across two body chunks. Otherwise one
    /// JSON body.
    ///
    /// Anthropic's `input` must be an object: unstreamed, arguments that are
    /// not a JSON object are sent as `{}`.
    Reply { text: Option<String>, tool_calls: Vec<(String, String, String)>, input_tokens: u64, output_tokens: u64 },
    /// An HTTP error with the provider's error body.
    Error { status: u16, message: String },
    /// A 200 whose body is not valid JSON, or, when streaming, a stream that
    /// stops in the middle of an event.
    Garbage,
    /// Wait this long, then answer with the turn queued after this one
    /// (which is taken from the queue before waiting, so that a retry of a
    /// timed-out request gets the turn after it).
    Delay(Duration),
    /// A redirect (`status` 301, 302, 307 or 308) to `location`, as a
    /// hostile server might send to carry the key elsewhere.
    Redirect { status: u16, location: String },
}

impl FakeTurn {
    /// Usage of the convenience constructors.
    pub const INPUT_TOKENS: u64 = 10;
    pub const OUTPUT_TOKENS: u64 = 5;

    /// A final text answer.
    pub fn text(text: impl Into<String>) -> Self {
        FakeTurn::Reply {
            text: Some(text.into()),
            tool_calls: Vec::new(),
            input_tokens: Self::INPUT_TOKENS,
            output_tokens: Self::OUTPUT_TOKENS,
        }
    }

    /// One tool call and no text.
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self::tool_calls(vec![(id.into(), name.into(), arguments.into())])
    }

    /// Parallel tool calls (id, name, arguments) and no text.
    pub fn tool_calls(calls: Vec<(String, String, String)>) -> Self {
        FakeTurn::Reply {
            text: None,
            tool_calls: calls,
            input_tokens: Self::INPUT_TOKENS,
            output_tokens: Self::OUTPUT_TOKENS,
        }
    }

    /// An HTTP error with the provider's error body.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        FakeTurn::Error { status, message: message.into() }
    }
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub format: WireFormat,
    pub path: String,
    /// Every header, by lowercase name.
    pub headers: BTreeMap<String, String>,
    /// The JSON body, or `Null` if it was not JSON.
    pub body: Value,
    /// The ids of the tool calls the fake returned in answer.
    pub returned_tool_call_ids: Vec<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn is_stream(&self) -> bool {
        self.body.get("stream") == Some(&Value::Bool(true))
    }

    /// The body's `messages`.
    pub fn messages(&self) -> &[Value] {
        self.body.get("messages").and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }
}

#[derive(Debug, Default)]
struct Shared {
    turns: Mutex<VecDeque<FakeTurn>>,
    requests: Mutex<Vec<RecordedRequest>>,
    api_key: Option<String>,
}

/// A running fake model server; dropping it stops the server.
#[derive(Debug)]
pub struct FakeModel {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeModel {
    /// Starts a fake that accepts requests with or without a key.
    pub async fn start() -> FakeModel {
        Self::serve(None).await
    }

    /// Starts a fake that answers 401, as the real APIs do, to any request
    /// without `key` in the provider's header (`Authorization: Bearer` or
    /// `x-api-key`). Such requests are recorded but take no turn.
    pub async fn start_with_api_key(key: &str) -> FakeModel {
        Self::serve(Some(key.to_owned())).await
    }

    async fn serve(api_key: Option<String>) -> FakeModel {
        let shared = Arc::new(Shared { api_key, ..Shared::default() });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .fallback(unknown_path)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake model server");
        let address = listener.local_addr().expect("the fake model server's address");
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("fake model server stopped: {err}");
            }
        });
        FakeModel { address, shared, server }
    }

    /// The base URL for an OpenAI-compatible client, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// The base URL for an Anthropic client, e.g. `http://127.0.0.1:PORT`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues the next answer; answers are served in order, to whichever
    /// format is asked.
    pub fn push(&self, turn: FakeTurn) {
        lock(&self.shared.turns).push_back(turn);
    }

    /// How many queued turns have not been served yet.
    pub fn turns_left(&self) -> usize {
        lock(&self.shared.turns).len()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Checks the conversation contract across all recorded requests: in each
    /// request, the calls of every assistant message are answered, each under
    /// its own id and in the order they were made, by the tool results right
    /// after it (OpenAI: `tool` messages with that `tool_call_id`; Anthropic:
    /// `tool_result` blocks with that `tool_use_id` in the next user message),
    /// and no result answers an id that was not called; and every tool call
    /// the fake returned is answered in the request after it.
    pub fn check_tool_calls_answered(&self) -> Result<(), String> {
        let requests = self.requests();
        let mut problems = Vec::new();
        let mut answered_per_request = Vec::with_capacity(requests.len());
        for (number, request) in requests.iter().enumerate() {
            let exchanges = match request.format {
                WireFormat::OpenAi => openai_exchanges(request.messages()),
                WireFormat::Anthropic => anthropic_exchanges(request.messages()),
            };
            let mut answered = BTreeSet::new();
            for exchange in &exchanges.exchanges {
                let called: BTreeSet<&String> = exchange.calls.iter().collect();
                let mut seen = BTreeSet::new();
                for id in &exchange.answers {
                    if !called.contains(id) {
                        problems.push(format!(
                            "request {number}: message {} answers tool call {id:?}, which the assistant message before it did not make (it called {:?})",
                            exchange.answers_at, exchange.calls
                        ));
                    } else if !seen.insert(id) {
                        problems.push(format!("request {number}: tool call {id:?} is answered twice"));
                    }
                }
                for id in &exchange.calls {
                    if seen.contains(id) {
                        answered.insert(id.clone());
                    } else {
                        problems.push(format!(
                            "request {number}: tool call {id:?} of message {} is not answered after it",
                            exchange.called_at
                        ));
                    }
                }
                // The order of the answers that do match a call, each counted
                // once, against the order of the calls they answer.
                let answer_order = first_occurrences(exchange.answers.iter().filter(|id| called.contains(id)));
                let call_order = first_occurrences(exchange.calls.iter().filter(|id| seen.contains(id)));
                if answer_order != call_order {
                    problems.push(format!(
                        "request {number}: message {} answers tool calls in the order {answer_order:?}, but message {} made them in the order {call_order:?}",
                        exchange.answers_at, exchange.called_at
                    ));
                }
            }
            for (at, id) in &exchanges.strays {
                problems.push(format!(
                    "request {number}: message {at} answers tool call {id:?}, but no assistant message right before it made calls"
                ));
            }
            answered_per_request.push(answered);
        }
        for (number, request) in requests.iter().enumerate() {
            if request.returned_tool_call_ids.is_empty() {
                continue;
            }
            let Some(next) = answered_per_request.get(number + 1) else {
                problems.push(format!(
                    "the tool calls {:?} returned in answer to request {number} were never answered: no request came after it",
                    request.returned_tool_call_ids
                ));
                continue;
            };
            for id in &request.returned_tool_call_ids {
                if !next.contains(id) {
                    problems.push(format!(
                        "tool call {id:?} returned in answer to request {number} is not answered in request {}",
                        number + 1
                    ));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}

/// The ids in their order, each at its first place.
fn first_occurrences<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut seen = BTreeSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The calls of one assistant message and the results that follow it.
#[derive(Debug, Default)]
struct Exchange {
    called_at: usize,
    calls: Vec<String>,
    answers_at: usize,
    answers: Vec<String>,
}

#[derive(Debug, Default)]
struct Exchanges {
    exchanges: Vec<Exchange>,
    /// Results with no calls right before them: (message index, id).
    strays: Vec<(usize, String)>,
}

fn string_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn openai_exchanges(messages: &[Value]) -> Exchanges {
    let mut found = Exchanges::default();
    let mut open: Option<Exchange> = None;
    for (at, message) in messages.iter().enumerate() {
        let role = string_at(message, "/role").unwrap_or_default();
        if role == "tool" {
            let id = string_at(message, "/tool_call_id").unwrap_or_default().to_owned();
            match &mut open {
                Some(exchange) => {
                    exchange.answers_at = at;
                    exchange.answers.push(id);
                }
                None => found.strays.push((at, id)),
            }
            continue;
        }
        found.exchanges.extend(open.take());
        let calls: Vec<String> = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|call| string_at(call, "/id").unwrap_or_default().to_owned())
            .collect();
        if role == "assistant" && !calls.is_empty() {
            open = Some(Exchange { called_at: at, calls, answers_at: at, answers: Vec::new() });
        }
    }
    found.exchanges.extend(open);
    found
}

fn anthropic_exchanges(messages: &[Value]) -> Exchanges {
    let blocks_of = |message: &Value, kind: &str, id_field: &str| -> Vec<String> {
        message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|block| string_at(block, "/type") == Some(kind))
            .map(|block| block.get(id_field).and_then(Value::as_str).unwrap_or_default().to_owned())
            .collect()
    };
    let mut found = Exchanges::default();
    let mut open: Option<Exchange> = None;
    for (at, message) in messages.iter().enumerate() {
        let role = string_at(message, "/role").unwrap_or_default();
        let answers = if role == "user" { blocks_of(message, "tool_result", "tool_use_id") } else { Vec::new() };
        match open.take() {
            Some(mut exchange) => {
                exchange.answers_at = at;
                exchange.answers = answers;
                found.exchanges.push(exchange);
            }
            None => found.strays.extend(answers.into_iter().map(|id| (at, id))),
        }
        let calls = if role == "assistant" { blocks_of(message, "tool_use", "id") } else { Vec::new() };
        if !calls.is_empty() {
            open = Some(Exchange { called_at: at, calls, answers_at: at, answers: Vec::new() });
        }
    }
    found.exchanges.extend(open);
    found
}

async fn openai(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    answer(&shared, WireFormat::OpenAi, uri.path(), &headers, &body).await
}

async fn anthropic(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    answer(&shared, WireFormat::Anthropic, uri.path(), &headers, &body).await
}

async fn unknown_path(method: Method, uri: Uri) -> Response {
    let message = format!("fake model: nothing at {method} {uri} (try POST /v1/chat/completions or /v1/messages)");
    json_response(StatusCode::NOT_FOUND, &json!({"error": {"message": message, "type": "not_found_error"}}))
}

async fn answer(shared: &Shared, format: WireFormat, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let parsed = serde_json::from_slice::<Value>(body);
    let number = {
        let mut requests = lock(&shared.requests);
        requests.push(RecordedRequest {
            format,
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
                .collect(),
            body: parsed.as_ref().map_or(Value::Null, Clone::clone),
            returned_tool_call_ids: Vec::new(),
        });
        requests.len() - 1
    };
    if let Some(key) = &shared.api_key {
        let sent = match format {
            WireFormat::OpenAi => headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer ")),
            WireFormat::Anthropic => headers.get("x-api-key").and_then(|value| value.to_str().ok()),
        };
        if sent != Some(key.as_str()) {
            return error_response(format, 401, "fake model: missing or wrong API key");
        }
    }
    let request = match parsed {
        Ok(request) => request,
        Err(err) => return error_response(format, 400, &format!("fake model: the request body is not JSON: {err}")),
    };
    let checked = match format {
        WireFormat::OpenAi => check_openai_request(&request),
        WireFormat::Anthropic => check_anthropic_request(headers, &request),
    };
    if let Err(problem) = checked {
        return error_response(format, 400, &format!("fake model: invalid request: {problem}"));
    }
    let (delay, turn) = next_turn(shared);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Some(turn) = turn else {
        return error_response(format, 500, "fake model: no turn queued");
    };
    let stream = request.get("stream") == Some(&Value::Bool(true));
    let model = string_at(&request, "/model").unwrap_or("fake-model");
    match turn {
        FakeTurn::Reply { text, tool_calls, input_tokens, output_tokens } => {
            if let Some(recorded) = lock(&shared.requests).get_mut(number) {
                recorded.returned_tool_call_ids = tool_calls.iter().map(|(id, _, _)| id.clone()).collect();
            }
            let reply =
                Reply { number, model, text: text.as_deref(), tool_calls: &tool_calls, input_tokens, output_tokens };
            match (format, stream) {
                (WireFormat::OpenAi, false) => json_response(StatusCode::OK, &reply.openai_body()),
                (WireFormat::OpenAi, true) => {
                    let include_usage = request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
                    sse_response(reply.openai_events(include_usage))
                }
                (WireFormat::Anthropic, false) => match serde_json::to_vec(&reply.anthropic_body()) {
                    Ok(body) => raw_json_response(StatusCode::OK, body),
                    Err(err) => error_response(format, 500, &format!("fake model: cannot encode the reply: {err}")),
                },
                (WireFormat::Anthropic, true) => sse_response(reply.anthropic_events()),
            }
        }
        FakeTurn::Error { status, message } => error_response(format, status, &message),
        FakeTurn::Garbage if stream => sse_response(broken_stream(format)),
        FakeTurn::Garbage => raw_json_response(StatusCode::OK, b"{\"choices\": [ this is not JSON".to_vec()),
        FakeTurn::Delay(_) => error_response(format, 500, "fake model: two delays in a row"),
        FakeTurn::Redirect { status, location } => {
            let mut response = error_response(format, status, "moved");
            match header::HeaderValue::from_str(&location) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                }
                Err(_) => error_response(format, 500, "fake model: the redirect location is not a header value"),
            }
        }
    }
}

/// Takes the next turn, with the delays queued before it added up.
fn next_turn(shared: &Shared) -> (Duration, Option<FakeTurn>) {
    let mut turns = lock(&shared.turns);
    let mut delay = Duration::ZERO;
    while let Some(turn) = turns.pop_front() {
        match turn {
            FakeTurn::Delay(wait) => delay = delay.saturating_add(wait),
            turn => return (delay, Some(turn)),
        }
    }
    (delay, None)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    raw_json_response(status, body.to_string().into_bytes())
}

fn raw_json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// The provider's error body with `status`.
fn error_response(format: WireFormat, status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match format {
        WireFormat::OpenAi => {
            let kind = match status.as_u16() {
                429 => "rate_limit_exceeded",
                400..=499 => "invalid_request_error",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        WireFormat::Anthropic => {
            let kind = match status.as_u16() {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    json_response(status, &body)
}

/// Events as a streamed body, each split in two chunks at its middle byte
/// (inside a UTF-8 character, at times), as a network may deliver them.
fn sse_response(events: Vec<String>) -> Response {
    let mut pieces: Vec<Vec<u8>> = Vec::with_capacity(events.len() * 2);
    for event in events {
        let bytes = event.into_bytes();
        let (first, second) = bytes.split_at(bytes.len() / 2);
        pieces.push(first.to_vec());
        pieces.push(second.to_vec());
    }
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, Infallible>));
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    response
}

fn data_event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn named_event(data: &Value) -> String {
    format!("event: {}\ndata: {data}\n\n", string_at(data, "/type").unwrap_or("message"))
}

/// `text` in up to `parts` pieces of about equal length, split at character
/// boundaries.
fn fragments(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars.chunks(size).map(|chunk| chunk.iter().collect()).collect()
}

/// A stream that stops in the middle of an event, without its end.
fn broken_stream(format: WireFormat) -> Vec<String> {
    match format {
        WireFormat::OpenAi => vec![
            data_event(&json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})),
            data_event(&json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]})),
            "data: {\"object\": \"chat.completion.chunk\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"lo, wo".to_owned(),
        ],
        WireFormat::Anthropic => vec![
            named_event(&json!({"type": "message_start", "message": {"id": "msg_broken", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}}})),
            named_event(&json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            named_event(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}})),
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_de".to_owned(),
        ],
    }
}

/// A reply turn being written in one of the formats.
struct Reply<'a> {
    number: usize,
    model: &'a str,
    text: Option<&'a str>,
    tool_calls: &'a [(String, String, String)],
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct AnthropicMessage<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<AnthropicBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlock<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: Box<RawValue> },
}

#[derive(Serialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
}

impl Reply<'_> {
    fn openai_finish_reason(&self) -> &'static str {
        if self.tool_calls.is_empty() { "stop" } else { "tool_calls" }
    }

    fn anthropic_stop_reason(&self) -> &'static str {
        if self.tool_calls.is_empty() { "end_turn" } else { "tool_use" }
    }

    fn openai_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens.saturating_add(self.output_tokens),
        })
    }

    fn openai_body(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.text});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                })
                .collect();
        }
        json!({
            "id": format!("chatcmpl-fake-{}", self.number),
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.openai_finish_reason()}],
            "usage": self.openai_usage(),
        })
    }

    fn openai_events(&self, include_usage: bool) -> Vec<String> {
        let id = format!("chatcmpl-fake-{}", self.number);
        let chunk = |delta: Value, finish_reason: Option<&str>| {
            let mut chunk = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            data_event(&chunk)
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        for piece in fragments(self.text.unwrap_or_default(), 3) {
            events.push(chunk(json!({"content": piece}), None));
        }
        // Each call's first fragment names it; the arguments follow in
        // pieces, the calls taking turns.
        for (index, (id, name, _)) in self.tool_calls.iter().enumerate() {
            let call =
                json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
            events.push(chunk(json!({"tool_calls": [call]}), None));
        }
        let pieces: Vec<Vec<String>> =
            self.tool_calls.iter().map(|(_, _, arguments)| fragments(arguments, 3)).collect();
        let rounds = pieces.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            for (index, call_pieces) in pieces.iter().enumerate() {
                if let Some(piece) = call_pieces.get(round) {
                    let call = json!({"index": index, "function": {"arguments": piece}});
                    events.push(chunk(json!({"tool_calls": [call]}), None));
                }
            }
        }
        events.push(chunk(json!({}), Some(self.openai_finish_reason())));
        if include_usage {
            let usage = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [],
                "usage": self.openai_usage(),
            });
            events.push(data_event(&usage));
        }
        events.push("data: [DONE]\n\n".to_owned());
        events
    }

    fn anthropic_body(&self) -> AnthropicMessage<'_> {
        let mut content = Vec::new();
        if let Some(text) = self.text.filter(|text| !text.is_empty()) {
            content.push(AnthropicBlock::Text { text });
        }
        for (id, name, arguments) in self.tool_calls {
            let input = serde_json::from_str::<Box<RawValue>>(arguments)
                .ok()
                .filter(|raw| raw.get().starts_with('{'))
                .unwrap_or_else(empty_object);
            content.push(AnthropicBlock::ToolUse { id, name, input });
        }
        AnthropicMessage {
            id: format!("msg_fake_{}", self.number),
            kind: "message",
            role: "assistant",
            model: self.model,
            content,
            stop_reason: self.anthropic_stop_reason(),
            stop_sequence: None,
            usage: AnthropicUsage { input_tokens: self.input_tokens, output_tokens: self.output_tokens },
        }
    }

    fn anthropic_events(&self) -> Vec<String> {
        let mut events = vec![
            named_event(&json!({
                "type": "message_start",
                "message": {
                    "id": format!("msg_fake_{}", self.number),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
                },
            })),
            named_event(&json!({"type": "ping"})),
        ];
        let mut index = 0;
        if let Some(text) = self.text.filter(|text| !text.is_empty()) {
            events.push(named_event(
                &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in fragments(text, 3) {
                events.push(named_event(&json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
            }
            events.push(named_event(&json!({"type": "content_block_stop", "index": index})));
            index += 1;
        }
        for (id, name, arguments) in self.tool_calls {
            events.push(named_event(&json!({
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
            })));
            let mut pieces = vec![String::new()];
            pieces.extend(fragments(arguments, 3));
            for piece in pieces {
                events.push(named_event(&json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
            events.push(named_event(&json!({"type": "content_block_stop", "index": index})));
            index += 1;
        }
        events.push(named_event(&json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.anthropic_stop_reason(), "stop_sequence": null},
            "usage": {"output_tokens": self.output_tokens},
        })));
        events.push(named_event(&json!({"type": "message_stop"})));
        events
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

/// What OpenAI itself refuses with a 400, in short.
fn check_openai_request(request: &Value) -> Result<(), String> {
    if string_at(request, "/model").is_none_or(str::is_empty) {
        return Err("`model` must be a non-empty string".to_owned());
    }
    let messages = request.get("messages").and_then(Value::as_array).ok_or("`messages` must be an array")?;
    if messages.is_empty() {
        return Err("`messages` must not be empty".to_owned());
    }
    for (at, message) in messages.iter().enumerate() {
        let content = message.get("content");
        let content_is_text = content.is_some_and(|content| content.is_string() || content.is_array());
        match string_at(message, "/role") {
            Some("system" | "developer" | "user") if content_is_text => {}
            Some("tool") if content_is_text => {
                if string_at(message, "/tool_call_id").is_none_or(str::is_empty) {
                    return Err(format!("messages[{at}]: a tool message needs a `tool_call_id`"));
                }
            }
            Some("assistant") => {
                let calls = match message.get("tool_calls") {
                    None => &[][..],
                    Some(calls) => calls
                        .as_array()
                        .map(Vec::as_slice)
                        .ok_or(format!("messages[{at}].tool_calls must be an array"))?,
                };
                if calls.is_empty() && !content_is_text {
                    return Err(format!("messages[{at}]: an assistant message needs `content` or `tool_calls`"));
                }
                if !content_is_text && !content.is_none_or(Value::is_null) {
                    return Err(format!("messages[{at}].content must be a string or null"));
                }
                for (number, call) in calls.iter().enumerate() {
                    let valid = string_at(call, "/id").is_some_and(|id| !id.is_empty())
                        && string_at(call, "/type") == Some("function")
                        && string_at(call, "/function/name").is_some_and(|name| !name.is_empty())
                        && string_at(call, "/function/arguments").is_some();
                    if !valid {
                        return Err(format!(
                            "messages[{at}].tool_calls[{number}] needs an id, type \"function\", a name and arguments as a string"
                        ));
                    }
                }
            }
            _ => return Err(format!("messages[{at}] has no valid role and content")),
        }
    }
    if let Some(tools) = request.get("tools") {
        let tools = tools.as_array().ok_or("`tools` must be an array")?;
        if tools.is_empty() {
            return Err("`tools` must not be an empty array".to_owned());
        }
        for (at, tool) in tools.iter().enumerate() {
            if string_at(tool, "/type") != Some("function") || string_at(tool, "/function/name").is_none() {
                return Err(format!("tools[{at}] needs type \"function\" and a function name"));
            }
        }
    }
    if request.get("stream_options").is_some() && request.get("stream") != Some(&Value::Bool(true)) {
        return Err("`stream_options` is only allowed when `stream` is true".to_owned());
    }
    Ok(())
}

/// What Anthropic itself refuses with a 400, in short.
fn check_anthropic_request(headers: &HeaderMap, request: &Value) -> Result<(), String> {
    if !headers.contains_key("anthropic-version") {
        return Err("the anthropic-version header is missing".to_owned());
    }
    if string_at(request, "/model").is_none_or(str::is_empty) {
        return Err("`model` must be a non-empty string".to_owned());
    }
    if request.get("max_tokens").and_then(Value::as_u64).is_none_or(|max| max == 0) {
        return Err("`max_tokens` must be a positive integer".to_owned());
    }
    if request.get("system").is_some_and(|system| !system.is_string() && !system.is_array()) {
        return Err("`system` must be a string or an array of blocks".to_owned());
    }
    let messages = request.get("messages").and_then(Value::as_array).ok_or("`messages` must be an array")?;
    if messages.is_empty() {
        return Err("`messages` must not be empty".to_owned());
    }
    let mut expected_role = "user";
    for (at, message) in messages.iter().enumerate() {
        let role = string_at(message, "/role").unwrap_or_default();
        if role != expected_role {
            return Err(format!("messages[{at}]: roles must alternate starting with user; expected {expected_role}"));
        }
        expected_role = if role == "user" { "assistant" } else { "user" };
        match message.get("content") {
            Some(Value::String(text)) if !text.is_empty() => {}
            Some(Value::Array(blocks)) if !blocks.is_empty() => check_anthropic_blocks(at, role, blocks)?,
            _ => return Err(format!("messages[{at}].content must be a non-empty string or array")),
        }
    }
    if let Some(tools) = request.get("tools") {
        let tools = tools.as_array().ok_or("`tools` must be an array")?;
        for (at, tool) in tools.iter().enumerate() {
            if string_at(tool, "/name").is_none() || !tool.get("input_schema").is_some_and(Value::is_object) {
                return Err(format!("tools[{at}] needs a name and an input_schema object"));
            }
        }
    }
    Ok(())
}

fn check_anthropic_blocks(at: usize, role: &str, blocks: &[Value]) -> Result<(), String> {
    let mut past_tool_results = false;
    for (number, block) in blocks.iter().enumerate() {
        let place = format!("messages[{at}].content[{number}]");
        match (string_at(block, "/type"), role) {
            (Some("text"), _) => {
                if string_at(block, "/text").is_none_or(str::is_empty) {
                    return Err(format!("{place}: text content blocks must be non-empty"));
                }
                past_tool_results = true;
            }
            (Some("tool_use"), "assistant") => {
                let valid = string_at(block, "/id").is_some_and(|id| !id.is_empty())
                    && string_at(block, "/name").is_some_and(|name| !name.is_empty())
                    && block.get("input").is_some_and(Value::is_object);
                if !valid {
                    return Err(format!("{place}: a tool_use block needs an id, a name and an input object"));
                }
            }
            (Some("tool_result"), "user") => {
                if past_tool_results {
                    return Err(format!("{place}: tool_result blocks must come first in the content"));
                }
                if string_at(block, "/tool_use_id").is_none_or(str::is_empty) {
                    return Err(format!("{place}: a tool_result block needs a tool_use_id"));
                }
            }
            (kind, _) => return Err(format!("{place}: a {kind:?} block is not allowed in a {role} message")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_split_at_character_boundaries() {
        assert_eq!(fragments("", 3), Vec::<String>::new());
        assert_eq!(fragments("ab", 3), vec!["a", "b"]);
        assert_eq!(fragments("{\"é\":\"ü\"}", 3), vec!["{\"é", "\":\"", "ü\"}"]);
    }

    fn recorded(format: WireFormat, messages: Value, returned: &[&str]) -> RecordedRequest {
        RecordedRequest {
            format,
            path: String::new(),
            headers: BTreeMap::new(),
            body: json!({"messages": messages}),
            returned_tool_call_ids: returned.iter().map(|id| (*id).to_owned()).collect(),
        }
    }

    fn check(requests: Vec<RecordedRequest>) -> Result<(), String> {
        let shared = Arc::new(Shared::default());
        *lock(&shared.requests) = requests;
        let fake = FakeModel { address: ([127, 0, 0, 1], 0).into(), shared, server: tokio::spawn(async {}) };
        fake.check_tool_calls_answered()
    }

    #[tokio::test]
    async fn the_contract_check_finds_missing_unknown_and_misplaced_answers() {
        let call = |id: &str| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let user = json!({"role": "user", "content": "go"});
        let calls = json!({"role": "assistant", "content": null, "tool_calls": [call("a"), call("b")]});
        let tool = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "ok"});
        let good = vec![
            recorded(WireFormat::OpenAi, json!([user]), &["a", "b"]),
            recorded(WireFormat::OpenAi, json!([user, calls, tool("a"), tool("b")]), &[]),
        ];
        assert_eq!(check(good), Ok(()));

        // Regression: the check compared sets, so answers in another order
        // than the calls passed.
        let out_of_order = vec![
            recorded(WireFormat::OpenAi, json!([user]), &["a", "b"]),
            recorded(WireFormat::OpenAi, json!([user, calls, tool("b"), tool("a")]), &[]),
        ];
        let problems = check(out_of_order).unwrap_err();
        assert!(
            problems.contains(r#"in the order ["b", "a"]"#) && problems.contains(r#"order ["a", "b"]"#),
            "{problems}"
        );
        // A missing answer is reported as missing, not as out of order.
        let missing_first = vec![recorded(WireFormat::OpenAi, json!([user, calls, tool("b")]), &[])];
        let problems = check(missing_first).unwrap_err();
        assert!(problems.contains("\"a\"") && !problems.contains("order"), "{problems}");

        let missing = vec![
            recorded(WireFormat::OpenAi, json!([user]), &["a", "b"]),
            recorded(WireFormat::OpenAi, json!([user, calls, tool("a"), tool("zzz")]), &[]),
        ];
        let problems = check(missing).unwrap_err();
        assert!(problems.contains("\"zzz\"") && problems.contains("\"b\""), "{problems}");

        let never_sent = vec![recorded(WireFormat::OpenAi, json!([user]), &["a"])];
        assert!(check(never_sent).unwrap_err().contains("no request came after it"));

        let stray = vec![recorded(WireFormat::OpenAi, json!([user, tool("a")]), &[])];
        assert!(check(stray).unwrap_err().contains("no assistant message right before it"));

        let tool_use =
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]});
        let result = |id: &str| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]});
        let anthropic_good = vec![
            recorded(WireFormat::Anthropic, json!([user]), &["t1"]),
            recorded(WireFormat::Anthropic, json!([user, tool_use, result("t1")]), &[]),
        ];
        assert_eq!(check(anthropic_good), Ok(()));
        let two_uses = json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "f", "input": {}},
        ]});
        let results = |first: &str, second: &str| {
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": first, "content": "ok"},
                {"type": "tool_result", "tool_use_id": second, "content": "ok"},
            ]})
        };
        let in_order = vec![recorded(WireFormat::Anthropic, json!([user, two_uses, results("t1", "t2")]), &[])];
        assert_eq!(check(in_order), Ok(()));
        let reversed = vec![recorded(WireFormat::Anthropic, json!([user, two_uses, results("t2", "t1")]), &[])];
        assert!(check(reversed).unwrap_err().contains(r#"in the order ["t2", "t1"]"#));
        let anthropic_wrong_id = vec![
            recorded(WireFormat::Anthropic, json!([user]), &["t1"]),
            recorded(WireFormat::Anthropic, json!([user, tool_use, result("t2")]), &[]),
        ];
        let problems = check(anthropic_wrong_id).unwrap_err();
        assert!(problems.contains("\"t2\"") && problems.contains("\"t1\""), "{problems}");
    }

    #[test]
    fn requests_are_checked_like_the_real_apis_do() {
        let mut headers = HeaderMap::new();
        let anthropic = |messages: Value| json!({"model": "m", "max_tokens": 10, "messages": messages});
        assert!(check_anthropic_request(&headers, &anthropic(json!([{"role": "user", "content": "hi"}]))).is_err());
        headers.insert("anthropic-version", header::HeaderValue::from_static("2023-06-01"));
        assert_eq!(check_anthropic_request(&headers, &anthropic(json!([{"role": "user", "content": "hi"}]))), Ok(()));
        let two_users = json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
        assert!(check_anthropic_request(&headers, &anthropic(two_users)).unwrap_err().contains("alternate"));
        let text_first = json!([{"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "tool_result", "tool_use_id": "x", "content": "r"},
        ]}]);
        assert!(check_anthropic_request(&headers, &anthropic(text_first)).unwrap_err().contains("first"));

        let openai = |messages: Value| json!({"model": "m", "messages": messages});
        assert_eq!(check_openai_request(&openai(json!([{"role": "user", "content": "hi"}]))), Ok(()));
        assert!(check_openai_request(&openai(json!([{"role": "tool", "content": "r"}]))).is_err());
        assert!(check_openai_request(&openai(json!([{"role": "assistant", "content": null}]))).is_err());
        let mut streamless = openai(json!([{"role": "user", "content": "hi"}]));
        streamless["stream_options"] = json!({"include_usage": true});
        assert!(check_openai_request(&streamless).is_err());
    }
}
