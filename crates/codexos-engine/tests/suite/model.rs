//! Model providers against a fake model server speaking their wire formats.
//!
//! Every behaviour is driven over real HTTP for both providers, streamed and
//! not, unless it does not depend on the format.

use std::time::{Duration, Instant};

use codexos_engine::model::limits::{self, Limit};
use codexos_engine::model::{ModelClient, ModelConfig, ModelError, ModelEvent, ModelRequest, Provider, TimeoutKind};
use codexos_engine::{Message, ModelReply, TokenUsage, ToolCall, ToolSpec};
use codexos_test_support::fake_model::{FakeModel, FakeTurn};
use pretty_assertions::assert_eq;
use secrecy::SecretString;
use serde_json::json;

const MODES: [(Provider, bool); 4] =
    [(Provider::OpenAi, false), (Provider::OpenAi, true), (Provider::Anthropic, false), (Provider::Anthropic, true)];

fn config(fake: &FakeModel, provider: Provider, stream: bool) -> ModelConfig {
    ModelConfig {
        provider,
        model: "fake-model".to_owned(),
        base_url: match provider {
            Provider::OpenAi => fake.openai_base_url(),
            Provider::Anthropic => fake.anthropic_base_url(),
        },
        api_key: None,
        stream,
        max_output_tokens: 512,
        temperature: Some(0.0),
        request_timeout: Duration::from_secs(120),
        max_retries: 2,
        retry_base_delay: Duration::from_millis(5),
    }
}

fn client(fake: &FakeModel, provider: Provider, stream: bool) -> ModelClient {
    ModelClient::new(config(fake, provider, stream)).unwrap()
}

/// One call, with the events it reported.
async fn call(client: &ModelClient, messages: &[Message]) -> (Result<ModelReply, ModelError>, Vec<ModelEvent>) {
    let tools = [ToolSpec {
        name: "read_file".to_owned(),
        description: "Reads a file.".to_owned(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    }];
    let request = ModelRequest { system: "You are a careful engineer.", messages, tools: &tools };
    let mut events = Vec::new();
    let result = client.complete(&request, &mut |event| events.push(event)).await;
    (result, events)
}

fn task() -> Vec<Message> {
    vec![Message::User { content: "Fix the build.".to_owned() }]
}

fn text_deltas(events: &[ModelEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            ModelEvent::TextDelta(text) => Some(text.as_str()),
            ModelEvent::Retry { .. } => None,
        })
        .collect()
}

fn retries(events: &[ModelEvent]) -> Vec<(u32, &str)> {
    events
        .iter()
        .filter_map(|event| match event {
            ModelEvent::Retry { attempt, reason, .. } => Some((*attempt, reason.as_str())),
            ModelEvent::TextDelta(_) => None,
        })
        .collect()
}

fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall { id: id.to_owned(), name: name.to_owned(), arguments: arguments.to_owned() }
}

fn stop_reason(provider: Provider, tools: bool) -> Option<String> {
    let reason = match (provider, tools) {
        (Provider::OpenAi, false) => "stop",
        (Provider::OpenAi, true) => "tool_calls",
        (Provider::Anthropic, false) => "end_turn",
        (Provider::Anthropic, true) => "tool_use",
    };
    Some(reason.to_owned())
}

#[tokio::test]
async fn a_text_reply_arrives_in_every_mode() {
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        let text = "The build is fixed: «cargo check» passes.";
        fake.push(FakeTurn::Reply {
            text: Some(text.to_owned()),
            tool_calls: vec![],
            input_tokens: 21,
            output_tokens: 8,
        });
        let (reply, events) = call(&client(&fake, provider, stream), &task()).await;
        assert_eq!(
            reply.unwrap(),
            ModelReply {
                content: Some(text.to_owned()),
                tool_calls: vec![],
                usage: TokenUsage { input_tokens: 21, output_tokens: 8 },
                stop_reason: stop_reason(provider, false),
            },
            "{provider} stream={stream}"
        );
        let deltas = text_deltas(&events);
        if stream {
            assert!(deltas.len() > 1, "{provider}: the text came in one piece: {deltas:?}");
            assert_eq!(deltas.concat(), text);
        } else {
            assert_eq!(deltas, Vec::<&str>::new());
        }
        let requests = fake.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].is_stream(), stream);
        assert_eq!(requests[0].body["model"], "fake-model");
    }
}

#[tokio::test]
async fn one_tool_call_is_returned_in_every_mode() {
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::tool_call("call_1", "read_file", r#"{"path":"src/main.rs"}"#));
        let (reply, _) = call(&client(&fake, provider, stream), &task()).await;
        assert_eq!(
            reply.unwrap(),
            ModelReply {
                content: None,
                tool_calls: vec![tool_call("call_1", "read_file", r#"{"path":"src/main.rs"}"#)],
                usage: TokenUsage { input_tokens: FakeTurn::INPUT_TOKENS, output_tokens: FakeTurn::OUTPUT_TOKENS },
                stop_reason: stop_reason(provider, true),
            },
            "{provider} stream={stream}"
        );
    }
}

#[tokio::test]
async fn parallel_tool_calls_with_fragmented_arguments_are_reassembled_exactly() {
    let calls = vec![
        tool_call("call_a", "read_file", r#"{"path": "src/ünïcode.rs",  "range": [1, 20], "z": null}"#),
        tool_call("call_b", "search", r#"{"pattern":"fn main\\(","glob":"**/*.rs","max":5}"#),
    ];
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::Reply {
            text: Some("Reading both.".to_owned()),
            tool_calls: calls.iter().map(|call| (call.id.clone(), call.name.clone(), call.arguments.clone())).collect(),
            input_tokens: 1234,
            output_tokens: 56,
        });
        let (reply, _) = call(&client(&fake, provider, stream), &task()).await;
        assert_eq!(
            reply.unwrap(),
            ModelReply {
                content: Some("Reading both.".to_owned()),
                tool_calls: calls.clone(),
                usage: TokenUsage { input_tokens: 1234, output_tokens: 56 },
                stop_reason: stop_reason(provider, true),
            },
            "{provider} stream={stream}"
        );
    }
}

#[tokio::test]
async fn openai_streams_ask_for_usage_and_take_it_from_the_last_chunk() {
    let fake = FakeModel::start().await;
    fake.push(FakeTurn::Reply { text: Some("hi".to_owned()), tool_calls: vec![], input_tokens: 7, output_tokens: 3 });
    let (reply, _) = call(&client(&fake, Provider::OpenAi, true), &task()).await;
    assert_eq!(reply.unwrap().usage, TokenUsage { input_tokens: 7, output_tokens: 3 });
    let body = &fake.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_tokens"], 512, "a local server gets the max_tokens it knows");
}

/// Runs a two-turn conversation: the model calls two tools, the results go
/// back, the model answers. Returns the fake for inspection.
async fn two_turn_conversation(provider: Provider, stream: bool, answer: fn(&[ToolCall]) -> Vec<Message>) -> FakeModel {
    let fake = FakeModel::start().await;
    fake.push(FakeTurn::Reply {
        text: Some("Let me look.".to_owned()),
        tool_calls: vec![
            ("call_1".to_owned(), "read_file".to_owned(), r#"{"path":"Cargo.toml"}"#.to_owned()),
            ("call_2".to_owned(), "read_file".to_owned(), r#"{"path":"src/lib.rs"}"#.to_owned()),
        ],
        input_tokens: 30,
        output_tokens: 20,
    });
    fake.push(FakeTurn::text("All good."));
    let client = client(&fake, provider, stream);
    let mut messages = task();
    let (first, _) = call(&client, &messages).await;
    let first = first.unwrap();
    messages.push(Message::Assistant { content: first.content.clone(), tool_calls: first.tool_calls.clone() });
    messages.extend(answer(&first.tool_calls));
    let (second, _) = call(&client, &messages).await;
    assert_eq!(second.unwrap().content.as_deref(), Some("All good."), "{provider} stream={stream}");
    fake
}

fn answer_all(calls: &[ToolCall]) -> Vec<Message> {
    calls
        .iter()
        .enumerate()
        .map(|(number, call)| Message::Tool {
            call_id: call.id.clone(),
            content: format!("contents of {}", call.arguments),
            is_error: number == 1,
        })
        .collect()
}

#[tokio::test]
async fn tool_results_go_back_under_their_ids() {
    for (provider, stream) in MODES {
        let fake = two_turn_conversation(provider, stream, answer_all).await;
        assert_eq!(fake.check_tool_calls_answered(), Ok(()), "{provider} stream={stream}");
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        let expected = match provider {
            Provider::OpenAi => json!([
                {"role": "system", "content": "You are a careful engineer."},
                {"role": "user", "content": "Fix the build."},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"Cargo.toml\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"src/lib.rs\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "contents of {\"path\":\"Cargo.toml\"}"},
                {"role": "tool", "tool_call_id": "call_2", "content": "contents of {\"path\":\"src/lib.rs\"}"},
            ]),
            Provider::Anthropic => json!([
                {"role": "user", "content": [{"type": "text", "text": "Fix the build."}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "Cargo.toml"}},
                    {"type": "tool_use", "id": "call_2", "name": "read_file", "input": {"path": "src/lib.rs"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "contents of {\"path\":\"Cargo.toml\"}", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "contents of {\"path\":\"src/lib.rs\"}", "is_error": true},
                ]},
            ]),
        };
        assert_eq!(requests[1].body["messages"], expected, "{provider} stream={stream}");
        if provider == Provider::Anthropic {
            assert_eq!(requests[1].body["system"], "You are a careful engineer.");
        }
    }
}

#[tokio::test]
async fn the_contract_check_reports_a_missing_or_misdirected_answer() {
    fn answer_first_only(calls: &[ToolCall]) -> Vec<Message> {
        answer_all(&calls[..1])
    }
    fn answer_under_another_id(calls: &[ToolCall]) -> Vec<Message> {
        let mut answers = answer_all(calls);
        if let Some(Message::Tool { call_id, .. }) = answers.last_mut() {
            *call_id = "call_999".to_owned();
        }
        answers
    }
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let fake = two_turn_conversation(provider, true, answer_first_only).await;
        let problems = fake.check_tool_calls_answered().unwrap_err();
        assert!(problems.contains("\"call_2\""), "{provider}: {problems}");
        assert!(!problems.contains("\"call_1\""), "{provider}: {problems}");

        let fake = two_turn_conversation(provider, false, answer_under_another_id).await;
        let problems = fake.check_tool_calls_answered().unwrap_err();
        assert!(problems.contains("\"call_999\"") && problems.contains("\"call_2\""), "{provider}: {problems}");
    }
}

#[tokio::test]
async fn a_rate_limit_is_retried_and_then_succeeds() {
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::error(429, "Rate limit reached, slow down"));
        fake.push(FakeTurn::text("ok"));
        let (reply, events) = call(&client(&fake, provider, stream), &task()).await;
        assert_eq!(reply.unwrap().content.as_deref(), Some("ok"), "{provider} stream={stream}");
        let retries = retries(&events);
        assert_eq!(retries.len(), 1, "{events:?}");
        assert_eq!(retries[0].0, 1);
        assert!(retries[0].1.contains("429") && retries[0].1.contains("slow down"), "{}", retries[0].1);
        assert_eq!(fake.requests().len(), 2);
    }
}

#[tokio::test]
async fn server_errors_exhaust_the_retries() {
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let fake = FakeModel::start().await;
        for _ in 0..3 {
            fake.push(FakeTurn::error(500, "internal trouble"));
        }
        fake.push(FakeTurn::text("too late"));
        let (reply, events) = call(&client(&fake, provider, true), &task()).await;
        match reply {
            Err(ModelError::RetriesExhausted { attempts: 3, last }) => {
                assert!(
                    matches!(*last, ModelError::Status { status: 500, ref message } if message == "internal trouble")
                );
            }
            other => panic!("{provider}: {other:?}"),
        }
        assert_eq!(retries(&events).iter().map(|(attempt, _)| *attempt).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(fake.requests().len(), 3, "max_retries 2 means 3 attempts");
        assert_eq!(fake.turns_left(), 1);
    }
}

#[tokio::test]
async fn an_empty_queue_fails_loudly() {
    let fake = FakeModel::start().await;
    let mut config = config(&fake, Provider::Anthropic, false);
    config.max_retries = 0;
    let (reply, _) = call(&ModelClient::new(config).unwrap(), &task()).await;
    let err = reply.unwrap_err();
    assert!(err.to_string().contains("fake model: no turn queued"), "{err}");
}

#[tokio::test]
async fn a_client_error_fails_at_once_with_its_message() {
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::error(400, "messages.1.content: tool_use ids must be unique"));
        fake.push(FakeTurn::text("never served"));
        let (reply, events) = call(&client(&fake, provider, stream), &task()).await;
        match reply {
            Err(ModelError::Status { status: 400, message }) => {
                assert_eq!(message, "messages.1.content: tool_use ids must be unique");
            }
            other => panic!("{provider} stream={stream}: {other:?}"),
        }
        assert_eq!(events, vec![], "no retry");
        assert_eq!(fake.requests().len(), 1);
        assert_eq!(fake.turns_left(), 1);
    }
}

#[tokio::test]
async fn garbage_is_a_protocol_error_and_is_retried() {
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::Garbage);
        fake.push(FakeTurn::text("recovered"));
        let (reply, events) = call(&client(&fake, provider, stream), &task()).await;
        assert_eq!(reply.unwrap().content.as_deref(), Some("recovered"), "{provider} stream={stream}");
        let retries = retries(&events);
        assert_eq!(retries.len(), 1, "{events:?}");
        assert!(retries[0].1.contains("malformed"), "{}", retries[0].1);
        if stream {
            // The broken stream's text came before the retry; the answer
            // starts over after it.
            let retry_at = events.iter().position(|event| matches!(event, ModelEvent::Retry { .. })).unwrap();
            assert_eq!(text_deltas(&events[..retry_at]).concat(), "Hel");
            assert_eq!(text_deltas(&events[retry_at..]).concat(), "recovered");
        }

        let fake = FakeModel::start().await;
        fake.push(FakeTurn::Garbage);
        let mut config = config(&fake, provider, stream);
        config.max_retries = 0;
        let (reply, _) = call(&ModelClient::new(config).unwrap(), &task()).await;
        match reply {
            Err(ModelError::RetriesExhausted { attempts: 1, last }) => {
                assert!(matches!(*last, ModelError::Protocol(_)), "{provider} stream={stream}: {last:?}");
            }
            other => panic!("{provider} stream={stream}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_retry_gets_the_next_turn() {
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::Delay(Duration::from_secs(60)));
        fake.push(FakeTurn::text("too late"));
        fake.push(FakeTurn::text("on time"));
        let mut config = config(&fake, provider, true);
        // The limit under test; the retry's answer is immediate, so even a
        // loaded machine meets it.
        config.request_timeout = Duration::from_secs(2);
        config.max_retries = 1;
        let started = Instant::now();
        let (reply, events) = call(&ModelClient::new(config.clone()).unwrap(), &task()).await;
        assert_eq!(reply.unwrap().content.as_deref(), Some("on time"), "{provider}");
        assert!(started.elapsed() < Duration::from_secs(30), "waited for the slow answer: {:?}", started.elapsed());
        let retries = retries(&events);
        assert_eq!(retries.len(), 1, "{events:?}");
        assert!(retries[0].1.contains("timed out"), "{}", retries[0].1);

        fake.push(FakeTurn::Delay(Duration::from_secs(60)));
        fake.push(FakeTurn::text("too late"));
        config.max_retries = 0;
        let (reply, _) = call(&ModelClient::new(config).unwrap(), &task()).await;
        match reply {
            Err(ModelError::RetriesExhausted { attempts: 1, last }) => assert!(
                matches!(*last, ModelError::Timeout { kind: TimeoutKind::Request, after } if after == Duration::from_secs(2)),
                "{last:?}"
            ),
            other => panic!("{provider}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_api_key_goes_in_the_provider_header_and_nowhere_else() {
    const KEY: &str = "sk-test-0123456789-secret";
    for (provider, base_url_suffix) in [(Provider::OpenAi, "/"), (Provider::Anthropic, "/v1/")] {
        let fake = FakeModel::start_with_api_key(KEY).await;
        fake.push(FakeTurn::text("authorised"));
        let mut right = config(&fake, provider, false);
        right.base_url.push_str(base_url_suffix);
        right.api_key = Some(SecretString::from(KEY));
        let client = ModelClient::new(right).unwrap();
        let (reply, _) = call(&client, &task()).await;
        assert_eq!(reply.unwrap().content.as_deref(), Some("authorised"), "{provider}");

        let request = &fake.requests()[0];
        match provider {
            Provider::OpenAi => {
                assert_eq!(request.path, "/v1/chat/completions");
                assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
                assert_eq!(request.header("x-api-key"), None);
            }
            Provider::Anthropic => {
                assert_eq!(request.path, "/v1/messages");
                assert_eq!(request.header("x-api-key"), Some(KEY));
                assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
                assert_eq!(request.header("authorization"), None);
            }
        }
        let shown = format!("{client:?} {:?}", client.config());
        assert!(!shown.contains(KEY) && !shown.contains("0123456789"), "{shown}");

        // A wrong key is refused at once, and the error does not quote it.
        let mut wrong = config(&fake, provider, true);
        wrong.api_key = Some(SecretString::from("sk-wrong"));
        let (reply, events) = call(&ModelClient::new(wrong).unwrap(), &task()).await;
        let err = reply.unwrap_err();
        assert!(matches!(err, ModelError::Status { status: 401, .. }), "{provider}: {err:?}");
        assert!(!err.to_string().contains("sk-wrong"), "{err}");
        assert_eq!(events, vec![]);
    }
}

/// The failure of a call that must not have been retried.
fn refused_at_once(reply: Result<ModelReply, ModelError>, events: &[ModelEvent], fake: &FakeModel) -> ModelError {
    assert_eq!(retries(events), vec![], "not retried");
    assert_eq!(fake.requests().len(), 1);
    reply.unwrap_err()
}

/// Regression: a hostile server could make a reply as large as it liked:
/// its text, its number of tool calls, one call's arguments, the whole body.
/// Each cap is refused at once: the server would only send it again.
#[tokio::test]
async fn replies_past_the_limits_are_refused_and_not_retried() {
    let tool = |n: usize, arguments: &str| (format!("call_{n}"), "read_file".to_owned(), arguments.to_owned());
    // `{"path":"…"}` of `size` bytes.
    let arguments_of = |size: usize| format!("{{\"path\":\"{}\"}}", "a".repeat(size - 11));
    let cases = [
        (Some("é".repeat(limits::MAX_CONTENT_BYTES / 2 + 1)), vec![], Limit::ContentBytes),
        (None, (0..=limits::MAX_TOOL_CALLS).map(|n| tool(n, "{}")).collect(), Limit::ToolCalls),
        (None, vec![tool(0, &arguments_of(limits::MAX_TOOL_CALL_ARGUMENTS_BYTES + 1))], Limit::ToolCallArgumentsBytes),
        // Each call within its cap, together past the reply's.
        (
            None,
            (0..9).map(|n| tool(n, &arguments_of(limits::MAX_TOOL_CALL_ARGUMENTS_BYTES))).collect(),
            Limit::ReplyBytes,
        ),
    ];
    for (provider, stream) in MODES {
        for (text, tool_calls, limit) in &cases {
            let fake = FakeModel::start().await;
            let turn = FakeTurn::Reply {
                text: text.clone(),
                tool_calls: tool_calls.clone(),
                input_tokens: 1,
                output_tokens: 1,
            };
            fake.push(turn.clone());
            fake.push(turn);
            let (reply, events) = call(&client(&fake, provider, stream), &task()).await;
            let err = refused_at_once(reply, &events, &fake);
            assert!(
                matches!(err, ModelError::TooLarge(refused) if refused == *limit),
                "{provider} stream={stream}: {err:?}"
            );
            assert!(err.to_string().contains(&limit.to_string()), "{err}");
        }
    }
    // Just under the caps, a reply passes.
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        let tool_calls = (0..limits::MAX_TOOL_CALLS).map(|n| tool(n, "{}")).collect();
        fake.push(FakeTurn::Reply { text: Some("ok".to_owned()), tool_calls, input_tokens: 1, output_tokens: 1 });
        let (reply, _) = call(&client(&fake, provider, stream), &task()).await;
        assert_eq!(reply.unwrap().tool_calls.len(), limits::MAX_TOOL_CALLS, "{provider} stream={stream}");
    }
}

/// Regression: reqwest followed redirects, and on a redirect to another host
/// it drops `Authorization` but not Anthropic's `x-api-key`.
#[tokio::test]
async fn redirects_are_not_followed_and_the_key_stays_home() {
    const KEY: &str = "sk-ant-secret-key";
    for (provider, stream) in MODES {
        let elsewhere = FakeModel::start().await;
        elsewhere.push(FakeTurn::text("the key arrived here"));
        let fake = FakeModel::start().await;
        let location = match provider {
            Provider::OpenAi => format!("{}/chat/completions?token=hunter2", elsewhere.openai_base_url()),
            Provider::Anthropic => format!("{}/v1/messages?token=hunter2", elsewhere.anthropic_base_url()),
        };
        fake.push(FakeTurn::Redirect { status: 307, location });
        fake.push(FakeTurn::text("not asked twice"));
        let mut config = config(&fake, provider, stream);
        config.api_key = Some(SecretString::from(KEY));
        let (reply, events) = call(&ModelClient::new(config).unwrap(), &task()).await;
        assert_eq!(elsewhere.requests(), vec![], "{provider} stream={stream}: the redirect was followed");
        let err = refused_at_once(reply, &events, &fake);
        let host = elsewhere.anthropic_base_url().trim_start_matches("http://").to_owned();
        match &err {
            ModelError::Status { status: 307, message } => {
                assert!(message.contains(&host), "{message}");
                assert!(!message.contains("hunter2") && !message.contains("token"), "{message}");
            }
            other => panic!("{provider} stream={stream}: {other:?}"),
        }
    }
}

/// Regression: error text chosen by the server reached messages (and so
/// events, logs and terminals) with its control characters.
#[tokio::test]
async fn server_error_text_loses_its_control_characters() {
    let hostile = "rate limited\u{1b}[2J\u{1b}]0;owned\u{7}\r\nretry\tlater\u{9b}1m";
    for (provider, stream) in MODES {
        let fake = FakeModel::start().await;
        fake.push(FakeTurn::error(400, hostile));
        let (reply, _) = call(&client(&fake, provider, stream), &task()).await;
        match reply {
            Err(ModelError::Status { status: 400, message }) => {
                assert_eq!(message, "rate limited[2J]0;owned\nretry\tlater1m", "{provider} stream={stream}");
            }
            other => panic!("{provider} stream={stream}: {other:?}"),
        }
    }
}

/// Errors name the endpoint but never a URL's user info or query.
#[tokio::test]
async fn connection_errors_name_the_endpoint_only() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = ModelConfig::new(Provider::OpenAi, "m");
    config.base_url = format!("http://127.0.0.1:{port}/v1");
    config.max_retries = 0;
    let (reply, _) = call(&ModelClient::new(config.clone()).unwrap(), &task()).await;
    let message = reply.unwrap_err().to_string();
    assert!(message.contains(&format!("http://127.0.0.1:{port}/v1/chat/completions")), "{message}");
    assert!(!message.contains("for url ("), "reqwest's own copy of the URL is left out: {message}");

    config.base_url = format!("http://user:hunter2@127.0.0.1:{port}/v1");
    let err = ModelClient::new(config).unwrap_err();
    assert!(matches!(err, ModelError::InvalidConfig(_)) && !err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn the_contract_check_reports_answers_out_of_order() {
    fn answer_in_reverse(calls: &[ToolCall]) -> Vec<Message> {
        let mut answers = answer_all(calls);
        answers.reverse();
        answers
    }
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let fake = two_turn_conversation(provider, true, answer_in_reverse).await;
        let problems = fake.check_tool_calls_answered().unwrap_err();
        assert!(problems.contains(r#"in the order ["call_2", "call_1"]"#), "{provider}: {problems}");
    }
}
