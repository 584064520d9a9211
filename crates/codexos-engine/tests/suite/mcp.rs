//! MCP servers as tools: a real rmcp server over stdio inside the sandbox
//! and over streamable HTTP on 127.0.0.1, and hand-written misbehaving
//! servers (Python scripts in the workspace) for everything a server can
//! get wrong.

use std::path::Path;
use std::time::{Duration, Instant};

use codexos_engine::mcp::{
    McpCallResult, McpServerName, McpServerSpec, McpSession, McpSettings, McpTool, McpTransport,
};
use codexos_sandbox::{Limits, NetworkPolicy};
use codexos_test_support::mcp_server::{HttpMcpServer, stdio_server_binary};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

fn sandbox_available() -> bool {
    let missing = &codexos_sandbox::host_capabilities().missing;
    if !missing.is_empty() {
        eprintln!("skipping: this host lacks sandbox protections {missing:?}");
    }
    missing.is_empty()
}

/// Settings for a session; the test server's binary is made visible in
/// the sandbox only when a test runs it (finding it may build it).
fn settings(workspace: &Path) -> McpSettings {
    McpSettings {
        workspace: workspace.to_owned(),
        limits: Limits { timeout: Duration::from_secs(120), ..Limits::default() },
        network: NetworkPolicy::None,
        hidden_paths: Vec::new(),
        read_only_paths: Vec::new(),
        allow_missing_protections: false,
        connect_timeout: Duration::from_secs(30),
        max_message_bytes: 1024 * 1024,
        output_limit_bytes: 64 * 1024,
        env: Vec::new(),
    }
}

fn with_test_server(workspace: &Path) -> McpSettings {
    McpSettings { read_only_paths: vec![stdio_server_binary()], ..settings(workspace) }
}

fn stdio(name: &str, command: &[&str], env: &[(&str, &str)]) -> McpServerSpec {
    McpServerSpec {
        name: McpServerName::parse(name).unwrap(),
        transport: McpTransport::Stdio {
            command: command.iter().map(|part| (*part).to_owned()).collect(),
            env: env.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
        },
    }
}

fn test_server(env: &[(&str, &str)]) -> McpServerSpec {
    let binary = stdio_server_binary();
    stdio("test", &[binary.to_str().unwrap()], env)
}

fn http(name: &str, url: &str) -> McpServerSpec {
    McpServerSpec { name: McpServerName::parse(name).unwrap(), transport: McpTransport::Http { url: url.to_owned() } }
}

fn tool<'a>(session: &'a McpSession, qualified_name: &str) -> &'a McpTool {
    session.tools().iter().find(|tool| tool.qualified_name == qualified_name).unwrap_or_else(|| {
        let names: Vec<&str> = session.tools().iter().map(|tool| tool.qualified_name.as_str()).collect();
        panic!("no tool {qualified_name} among {names:?}")
    })
}

async fn call(session: &McpSession, qualified_name: &str, arguments: Value) -> McpCallResult {
    let Value::Object(arguments) = arguments else { panic!("arguments are objects") };
    session.call(tool(session, qualified_name), arguments, Duration::from_secs(20)).await
}

fn ok(output: &str) -> McpCallResult {
    McpCallResult { output: output.to_owned(), is_error: false }
}

const TEST_TOOLS: [&str; 8] = ["add", "big", "crash", "echo", "env", "fail", "read", "sleep"];

#[tokio::test]
async fn a_stdio_server_runs_in_the_sandbox_and_its_tools_answer() {
    if !sandbox_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("notes.txt"), "in the workspace\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let specs = [test_server(&[("GREETING", "hello")])];
    let session = McpSession::connect(&specs, &with_test_server(ws.path())).await.unwrap();

    let connected = &session.connected()[0];
    assert_eq!(connected.server.as_str(), "test");
    assert_eq!(connected.transport, "stdio");
    let mut offered = connected.tools.clone();
    offered.sort();
    assert_eq!(offered, TEST_TOOLS.map(|name| format!("test.{name}")));
    assert!(connected.skipped.is_empty(), "{:?}", connected.skipped);
    let echo = tool(&session, "test.echo");
    assert_eq!(echo.spec.name, "test__echo");
    assert_eq!(session.find("test__echo"), Some(echo));
    assert_eq!(echo.spec.parameters["type"], "object");
    assert_eq!(echo.spec.parameters["properties"]["text"]["type"], "string");
    assert_eq!(echo.spec.parameters["required"], json!(["text"]));

    assert_eq!(call(&session, "test.echo", json!({"text": "hi there"})).await, ok("hi there"));
    assert_eq!(call(&session, "test.add", json!({"a": 40, "b": 2})).await, ok("42"));
    assert_eq!(
        call(&session, "test.fail", json!({"message": "no such row"})).await,
        McpCallResult { output: "no such row".to_owned(), is_error: true }
    );
    assert_eq!(call(&session, "test.env", json!({"name": "GREETING"})).await, ok("hello"));
    // The server's working directory is the workspace; the host is not visible.
    assert_eq!(call(&session, "test.read", json!({"path": "notes.txt"})).await, ok("in the workspace\n"));
    let secret = outside.path().join("secret");
    let read = call(&session, "test.read", json!({"path": secret.to_str().unwrap()})).await;
    assert!(read.is_error && read.output.contains("No such file"), "{read:?}");
    // Arguments the server's schema refuses come back as an error.
    let wrong = call(&session, "test.add", json!({"a": "forty"})).await;
    assert!(wrong.is_error, "{wrong:?}");

    let closed = session.close().await;
    assert_eq!(closed.len(), 1);
    let usage = closed[0].usage.as_ref().expect("the sandbox accounts for the server");
    assert!(usage.wall_time > Duration::ZERO);
    assert!(closed[0].violations.is_empty(), "{:?}", closed[0].violations);
    assert_eq!(closed[0].error, None);
}

#[tokio::test]
async fn an_http_server_is_reached_by_url() {
    let server = HttpMcpServer::start().await;
    let ws = tempfile::tempdir().unwrap();
    let session = McpSession::connect(&[http("remote", &server.url())], &settings(ws.path())).await.unwrap();
    assert_eq!(session.connected()[0].transport, "http");
    let mut offered = session.connected()[0].tools.clone();
    offered.sort();
    assert_eq!(offered, TEST_TOOLS.map(|name| format!("remote.{name}")));
    assert_eq!(call(&session, "remote.echo", json!({"text": "over http"})).await, ok("over http"));
    assert_eq!(call(&session, "remote.add", json!({"a": -1, "b": 1})).await, ok("0"));
    let failed = call(&session, "remote.fail", json!({"message": "nope"})).await;
    assert_eq!(failed, McpCallResult { output: "nope".to_owned(), is_error: true });
    let closed = session.close().await;
    assert_eq!(closed[0].usage, None);
}

#[tokio::test]
async fn servers_of_both_transports_share_one_session() {
    if !sandbox_available() {
        return;
    }
    let server = HttpMcpServer::start().await;
    let ws = tempfile::tempdir().unwrap();
    let specs = [test_server(&[]), http("remote", &server.url())];
    let session = McpSession::connect(&specs, &with_test_server(ws.path())).await.unwrap();
    assert_eq!(session.tools().len(), 2 * TEST_TOOLS.len());
    assert_eq!(call(&session, "test.echo", json!({"text": "a"})).await, ok("a"));
    assert_eq!(call(&session, "remote.echo", json!({"text": "b"})).await, ok("b"));
    assert_eq!(session.close().await.len(), 2);
}

#[tokio::test]
async fn a_slow_call_times_out_and_the_server_stays_usable() {
    let server = HttpMcpServer::start().await;
    let ws = tempfile::tempdir().unwrap();
    let session = McpSession::connect(&[http("remote", &server.url())], &settings(ws.path())).await.unwrap();
    let sleep = tool(&session, "remote.sleep");
    let arguments = json!({"milliseconds": 10_000}).as_object().unwrap().clone();
    let started = Instant::now();
    let slow = session.call(sleep, arguments, Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(slow.is_error, "{slow:?}");
    assert!(slow.output.contains("did not answer within 300ms"), "{}", slow.output);
    assert_eq!(call(&session, "remote.echo", json!({"text": "still here"})).await, ok("still here"));
    session.close().await;
}

#[tokio::test]
async fn output_is_capped_and_oversized_messages_are_refused() {
    if !sandbox_available() {
        return;
    }
    let server = HttpMcpServer::start().await;
    let ws = tempfile::tempdir().unwrap();
    let specs = [test_server(&[]), http("remote", &server.url())];
    let session = McpSession::connect(&specs, &with_test_server(ws.path())).await.unwrap();
    // Within the message limit but over the output limit: cut, with a note.
    for server in ["test", "remote"] {
        let big = call(&session, &format!("{server}.big"), json!({"bytes": 200_000})).await;
        assert!(!big.is_error, "{server}: {}", &big.output[big.output.len() - 100..]);
        assert!(big.output.len() <= 64 * 1024, "{server}: {}", big.output.len());
        assert!(big.output.ends_with("[... cut: 200000 bytes in all; at most 65536 are kept]"), "{server}");
    }
    // Over the message limit: over HTTP the answer is refused...
    let huge = call(&session, "remote.big", json!({"bytes": 2_000_000})).await;
    assert!(huge.is_error, "{}", &huge.output[..huge.output.len().min(300)]);
    assert_eq!(call(&session, "remote.echo", json!({"text": "fine"})).await, ok("fine"));
    // ...and over stdio the server is disconnected, with the reason.
    let huge = call(&session, "test.big", json!({"bytes": 2_000_000})).await;
    assert!(huge.is_error);
    assert!(huge.output.contains("sent a message larger than 1048576 bytes"), "{}", huge.output);
    let after = call(&session, "test.echo", json!({"text": "anyone?"})).await;
    assert!(after.is_error && after.output.contains("larger than"), "{after:?}");
    session.close().await;
}

#[tokio::test]
async fn a_server_that_dies_mid_call_is_an_error_for_the_model() {
    if !sandbox_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let session = McpSession::connect(&[test_server(&[])], &with_test_server(ws.path())).await.unwrap();
    let crashed = call(&session, "test.crash", json!({})).await;
    assert!(crashed.is_error, "{crashed:?}");
    assert!(crashed.output.contains("'test'"), "{}", crashed.output);
    let after = call(&session, "test.echo", json!({"text": "hello?"})).await;
    assert!(after.is_error && after.output.contains("no longer available"), "{after:?}");
    let closed = session.close().await;
    assert_eq!(closed[0].exit_code, Some(3), "{:?}", closed[0]);
}

#[tokio::test]
async fn servers_that_cannot_start_fail_the_connection_with_the_reason() {
    if !sandbox_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let mut settings = settings(ws.path());

    let missing = [stdio("gone", &["codexos-no-such-server"], &[])];
    let err = McpSession::connect(&missing, &settings).await.unwrap_err();
    assert_eq!(err.server.as_str(), "gone");
    assert!(err.reason.contains("exited with code 127"), "{err}");
    assert!(err.reason.contains("command not found"), "{err}");

    let talker = [stdio("chatty", &["sh", "-c", "echo starting up >&2; echo not json; exit 4"], &[])];
    let err = McpSession::connect(&talker, &settings).await.unwrap_err();
    assert!(err.reason.contains("exited with code 4") && err.reason.contains("starting up"), "{err}");

    settings.connect_timeout = Duration::from_secs(1);
    let silent = [stdio("silent", &["sleep", "60"], &[])];
    let started = Instant::now();
    let err = McpSession::connect(&silent, &settings).await.unwrap_err();
    assert!(err.reason.contains("no answer to initialize within 1s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let unreachable = [http("nowhere", "http://127.0.0.1:9/mcp")];
    let err = McpSession::connect(&unreachable, &settings).await.unwrap_err();
    assert!(err.reason.contains("initialization failed"), "{err}");
}

#[tokio::test]
async fn a_failed_server_closes_the_ones_already_connected() {
    if !sandbox_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    // A marker in the environment finds the first server's process, if any is left.
    let marker = format!("CODEXOS_MCP_TEST_{}", std::process::id());
    let specs = [test_server(&[(&marker, "1")]), stdio("broken", &["false"], &[])];
    let err = McpSession::connect(&specs, &with_test_server(ws.path())).await.unwrap_err();
    assert_eq!(err.server.as_str(), "broken");
    let needle = format!("{marker}=1");
    let survivors: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("environ")).ok())
        .filter(|environ| environ.split(|byte| *byte == 0).any(|entry| entry == needle.as_bytes()))
        .collect();
    assert!(survivors.is_empty(), "the first server is still running");
}

/// A hand-written stdio server: answers `initialize` and `tools/list` with
/// `tools`, and every `tools/call` with `call_answer` (a Python expression
/// of the request, or a statement when it starts with `!`).
fn python_server(workspace: &Path, tools: Value, call_answer: &str) -> McpServerSpec {
    let script = format!(
        r#"
import json, sys, time
TOOLS = json.loads({tools:?})
def answer(request, result):
    print(json.dumps({{"jsonrpc": "2.0", "id": request["id"], "result": result}}), flush=True)
print("this line is not JSON-RPC and is ignored", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if "id" not in request:
        continue
    method = request["method"]
    if method == "initialize":
        answer(request, {{"protocolVersion": request["params"]["protocolVersion"], "capabilities": {{"tools": {{}}}},
                         "serverInfo": {{"name": "fake", "version": "0"}}}})
    elif method == "tools/list":
        answer(request, {{"tools": TOOLS}})
    elif method == "tools/call":
        CALL = {call_answer:?}
        if CALL.startswith("!"):
            exec(CALL[1:])
        else:
            answer(request, eval(CALL))
"#,
        tools = tools.to_string()
    );
    std::fs::write(workspace.join("server.py"), script).unwrap();
    stdio("fake", &["python3", "server.py"], &[])
}

#[tokio::test]
async fn bad_tool_definitions_are_skipped_and_garbage_is_ignored() {
    if !sandbox_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let tools = json!([
        {"name": "good", "description": "fine", "inputSchema": {"type": "object"}},
        {"name": "bad.name", "inputSchema": {"type": "object"}},
        {"name": "array", "inputSchema": {"type": "array"}},
    ]);
    let spec = python_server(ws.path(), tools, r#"{"content": [{"type": "text", "text": "from python"}]}"#);
    let session = McpSession::connect(&[spec], &settings(ws.path())).await.unwrap();
    assert_eq!(session.connected()[0].tools, vec!["fake.good".to_owned()]);
    assert_eq!(session.connected()[0].skipped.len(), 2, "{:?}", session.connected()[0].skipped);
    assert_eq!(call(&session, "fake.good", json!({})).await, ok("from python"));
    session.close().await;
}

#[tokio::test]
async fn malformed_answers_and_hangs_are_errors_for_the_model() {
    if !sandbox_available() {
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let tools = json!([{"name": "odd", "inputSchema": {"type": "object"}}]);
    // A result that is no tool result at all.
    let spec = python_server(ws.path(), tools.clone(), r#"{"skills": 3}"#);
    let session = McpSession::connect(&[spec], &settings(ws.path())).await.unwrap();
    let odd = call(&session, "fake.odd", json!({})).await;
    assert!(odd.is_error, "{odd:?}");
    session.close().await;

    // A server that never answers a call.
    let spec = python_server(ws.path(), tools, "!time.sleep(60)");
    let session = McpSession::connect(&[spec], &settings(ws.path())).await.unwrap();
    let arguments = serde_json::Map::new();
    let hung = session.call(tool(&session, "fake.odd"), arguments, Duration::from_millis(500)).await;
    assert!(hung.is_error && hung.output.contains("did not answer"), "{hung:?}");
    let started = Instant::now();
    let closed = session.close().await;
    assert!(started.elapsed() < Duration::from_secs(10), "closing waits for the server only briefly");
    assert!(closed[0].signal.is_some() || closed[0].exit_code.is_some(), "{:?}", closed[0]);
}
