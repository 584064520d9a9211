//! LLM agents calling MCP servers' tools through the real server and
//! worker: a stdio server started in the sandbox from the workspace, a
//! streamable-HTTP server on 127.0.0.1, the allow-list between them and the
//! model, and a server that cannot start.

use std::path::Path;
use std::time::{Duration, Instant};

use codexos_test_support::TestServer;
use codexos_test_support::fake_model::{FakeModel, FakeTurn};
use codexos_test_support::mcp_server::{HttpMcpServer, stdio_server_binary};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::bin;

const KEY_VAR: &str = codexos_test_support::TEST_MODEL_KEY_VAR;

fn sandbox_available() -> bool {
    let missing = &codexos_sandbox::host_capabilities().missing;
    if !missing.is_empty() {
        eprintln!("skipping: this host lacks sandbox protections {missing:?}");
    }
    missing.is_empty()
}

fn manifest(model: &FakeModel, allow: &str, mcp: &str) -> String {
    format!(
        r#"
name = "mcp-user"
version = "0.1.0"
kind = "llm"

[model]
provider = "openai"
name = "test-model"
base_url = "{}"
api_key_env = "{KEY_VAR}"
stream = false

[tools]
allow = {allow}

[limits]
tool_output = "2KiB"
{mcp}
"#,
        model.openai_base_url()
    )
}

async fn run_agent(server: &TestServer, manifest: &str, workspace: &Path) -> (Value, Vec<Value>) {
    let (status, created) =
        server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(json!({ "manifest": manifest }))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let body = json!({ "agent": "mcp-user", "task": "use the tools", "workspace": workspace.to_str().unwrap() });
    let (status, execution) = server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    let id = execution["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let execution = loop {
        let (_, execution) = server.get(&format!("/v1/executions/{id}")).await;
        if ["succeeded", "failed", "cancelled"].contains(&execution["status"].as_str().unwrap_or("")) {
            break execution;
        }
        assert!(Instant::now() < deadline, "execution {id} did not finish: {execution}\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, page) = server.get(&format!("/v1/executions/{id}/events?limit=1000")).await;
    (execution, page["events"].as_array().unwrap().clone())
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|event| event["kind"] == kind).map(|event| &event["payload"]).collect()
}

#[tokio::test]
async fn an_agent_calls_allowed_tools_of_stdio_and_http_servers() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let http = HttpMcpServer::start().await;
    let server = TestServer::start_with_env(bin(), &[(KEY_VAR, "sk-test")]).await;
    // The stdio server runs in the sandbox, which shows the workspace: the
    // binary is copied there.
    let workspace = tempfile::tempdir().unwrap();
    let local_server = workspace.path().join("mcp-server");
    std::fs::copy(stdio_server_binary(), &local_server).unwrap();
    let mcp = format!(
        r#"
[[mcp]]
name = "local"
command = ["{}"]
env = {{ GREETING = "hello from the manifest" }}

[[mcp]]
name = "remote"
url = "{}"
"#,
        local_server.display(),
        http.url()
    );
    let manifest = manifest(&model, r#"["read_file", "local.*", "remote.echo"]"#, &mcp);

    let call = |id: &str, name: &str, arguments: Value| (id.to_owned(), name.to_owned(), arguments.to_string());
    model.push(FakeTurn::tool_calls(vec![
        call("c1", "local__echo", json!({"text": "hi"})),
        call("c2", "remote__echo", json!({"text": "over http"})),
        call("c3", "local__env", json!({"name": "GREETING"})),
        call("c4", "remote__add", json!({"a": 1, "b": 2})),
        call("c5", "local__fail", json!({"message": "it broke"})),
        call("c6", "local__echo", "not json".into()),
    ]));
    model.push(FakeTurn::text("done"));
    let (execution, events) = run_agent(&server, &manifest, workspace.path()).await;
    assert_eq!(execution["status"], "succeeded", "{execution}\n{}", server.stderr());
    assert_eq!(execution["outcome"]["answer"], "done");

    // The model is offered the built-in tool and the allowed MCP tools, by
    // their model names; remote.add is not allowed and not offered.
    let requests = model.requests();
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect();
    assert!(offered.contains(&"read_file") && offered.contains(&"local__echo"), "{offered:?}");
    assert!(offered.contains(&"remote__echo") && !offered.contains(&"remote__add"), "{offered:?}");
    assert_eq!(offered.iter().filter(|name| name.starts_with("local__")).count(), 8, "{offered:?}");

    model.check_tool_calls_answered().unwrap();
    let answers: Vec<(String, String)> = requests[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| {
            (message["tool_call_id"].as_str().unwrap().to_owned(), message["content"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(answers[0], ("c1".to_owned(), "hi".to_owned()));
    assert_eq!(answers[1], ("c2".to_owned(), "over http".to_owned()));
    assert_eq!(answers[2], ("c3".to_owned(), "hello from the manifest".to_owned()));
    assert!(answers[3].1.contains("tool 'remote.add' is not allowed"), "{answers:?}");
    assert!(answers[4].1.contains("it broke"), "{answers:?}");
    assert!(answers[5].1.contains("invalid arguments for 'local.echo'"), "{answers:?}");

    // The timeline: both servers connected and closed, calls under `server.tool`.
    let connected = of_kind(&events, "mcp_connected");
    assert_eq!(connected.len(), 2);
    assert_eq!(connected[0]["server"], "local");
    assert_eq!(connected[0]["transport"], "stdio");
    assert_eq!(connected[1]["transport"], "http");
    let calls: Vec<&str> = of_kind(&events, "tool_call").iter().map(|call| call["tool"].as_str().unwrap()).collect();
    assert_eq!(calls, ["local.echo", "remote.echo", "local.env", "local.fail"]);
    let results = of_kind(&events, "tool_result");
    assert_eq!(results[0]["output"], "hi");
    assert_eq!(results[3]["is_error"], true);
    let denied: Vec<&str> =
        of_kind(&events, "tool_denied").iter().map(|denied| denied["tool"].as_str().unwrap()).collect();
    assert_eq!(denied, ["remote.add", "local.echo"]);
    let closed = of_kind(&events, "mcp_closed");
    assert_eq!(closed.len(), 2);
    assert!(closed[0]["usage"]["wall_time"].as_f64().unwrap() > 0.0, "{}", closed[0]);
    assert_eq!(kinds_after(&events, "mcp_closed").last().map(String::as_str), Some("status"));
}

/// The kinds of the events from the first of `kind` on.
fn kinds_after(events: &[Value], kind: &str) -> Vec<String> {
    let start = events.iter().position(|event| event["kind"] == kind).unwrap_or(events.len());
    events[start..].iter().map(|event| event["kind"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_server_that_cannot_start_fails_the_execution_before_the_model_is_asked() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = TestServer::start_with_env(bin(), &[(KEY_VAR, "sk-test")]).await;
    let workspace = tempfile::tempdir().unwrap();
    let mcp = "[[mcp]]\nname = \"broken\"\ncommand = [\"sh\", \"-c\", \"echo cannot start >&2; exit 3\"]\n";
    let (execution, events) = run_agent(&server, &manifest(&model, r#"["broken.*"]"#, mcp), workspace.path()).await;
    assert_eq!(execution["status"], "failed", "{execution}");
    assert_eq!(execution["outcome"]["reason"], "mcp_error");
    let error = execution["outcome"]["error"].as_str().unwrap();
    assert!(error.contains("cannot connect the MCP server 'broken'"), "{error}");
    assert!(error.contains("exited with code 3") && error.contains("cannot start"), "{error}");
    let failed = of_kind(&events, "mcp_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["server"], "broken");
    assert!(model.requests().is_empty(), "the model was asked");
}

#[tokio::test]
async fn manifests_naming_undeclared_servers_are_refused() {
    let model = FakeModel::start().await;
    let server = TestServer::start_with_env(bin(), &[(KEY_VAR, "sk-test")]).await;
    let text = manifest(&model, r#"["fs.read"]"#, "[[mcp]]\nname = \"web\"\nurl = \"http://127.0.0.1:1/mcp\"\n");
    let (status, body) =
        server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(json!({ "manifest": text }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("tools.allow[0]"), "{body}");
    assert!(body.to_string().contains("names the MCP server 'fs', which is not declared"), "{body}");
}
