//! Whole executions through the real server and worker: agents registered
//! from manifests, workflow agents on a sample workspace, and LLM agents
//! against a local fake model server speaking the OpenAI and Anthropic
//! wire formats.

use std::path::Path;
use std::time::Duration;

use codexos_test_support::fake_model::{FakeModel, FakeTurn};
use codexos_test_support::{TestServer, run};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{bin, events, finished, sandbox_available};

/// The variable the LLM manifests below read their key from.
const KEY_VAR: &str = codexos_test_support::TEST_MODEL_KEY_VAR;
const KEY: &str = "sk-test-not-a-real-key";

async fn server() -> TestServer {
    TestServer::start_with_env(bin(), &[(KEY_VAR, KEY)]).await
}

async fn create_agent(server: &TestServer, manifest: &str) -> (StatusCode, Value) {
    server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(json!({ "manifest": manifest }))).await
}

async fn start(server: &TestServer, agent: &str, workspace: &Path, task: &str) -> String {
    let body = json!({ "agent": agent, "task": task, "workspace": workspace.to_str().unwrap() });
    let (status, execution) = server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    assert_eq!(execution["status"], "queued");
    execution["id"].as_str().unwrap().to_owned()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(|event| event["kind"].as_str().unwrap().to_owned()).collect()
}

fn llm_manifest(name: &str, provider: &str, base_url: &str, stream: bool, extra: &str) -> String {
    format!(
        r#"
name = "{name}"
version = "0.1.0"
kind = "llm"
instructions = "You fix things."

[model]
provider = "{provider}"
name = "test-model"
base_url = "{base_url}"
api_key_env = "{KEY_VAR}"
stream = {stream}
max_retries = 2

[tools]
allow = ["shell", "read_file", "write_file", "list_dir", "search"]

[limits]
tool_output = "2KiB"
{extra}
"#
    )
}

const WORKFLOW: &str = r#"
name = "tester"
version = "1.0.0"
kind = "workflow"
description = "Runs the workspace's tests"

[tools]
allow = ["shell", "read_file"]

[[steps]]
name = "tests"
tool = "shell"
args = { command = "sh ./run-tests.sh" }

[[steps]]
tool = "read_file"
args = { path = "README.md" }
"#;

fn sample_workspace(tests_pass: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "# sample\n").unwrap();
    let script = if tests_pass { "echo 'test a ... ok'\necho '1 passed'\n" } else { "echo '1 failed' >&2\nexit 3\n" };
    std::fs::write(dir.path().join("run-tests.sh"), script).unwrap();
    dir
}

#[tokio::test]
async fn agents_are_registered_versioned_and_validated() {
    let server = server().await;
    let (status, created) = create_agent(&server, WORKFLOW).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "tester");
    assert_eq!(created["version"], "1.0.0");
    assert_eq!(created["kind"], "workflow");
    assert_eq!(created["manifest_sha256"].as_str().unwrap().len(), 64);

    // The same version again is a conflict; a new version keeps the old one.
    let (status, body) = create_agent(&server, WORKFLOW).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = create_agent(&server, &WORKFLOW.replace("1.0.0", "1.1.0")).await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, list) = server.get("/v1/agents").await;
    assert_eq!(list["agents"][0]["name"], "tester");
    assert_eq!(list["agents"][0]["latest"]["version"], "1.1.0");
    assert_eq!(list["agents"][0]["versions"], 2);
    let (_, shown) = server.get("/v1/agents/tester?version=1.0.0").await;
    assert_eq!(shown["version"]["version"], "1.0.0");
    assert_eq!(shown["tools"], json!(["shell", "read_file"]));
    assert_eq!(shown["manifest"], WORKFLOW);
    let versions: Vec<&str> =
        shown["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(versions, vec!["1.1.0", "1.0.0"]);
    let (status, _) = server.get("/v1/agents/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An invalid manifest: 422 naming every problem with its key.
    let (status, body) = create_agent(&server, "name = \"Bad\"\nversion = \"x\"\nkind = \"llm\"\nextra = 1\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_manifest");
    let keys: Vec<&str> =
        body["error"]["problems"].as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["name", "version", "model", "extra"]);

    // Model servers and key variables are the operator's choice.
    let elsewhere = llm_manifest("leaky", "openai", "https://collector.example/v1", true, "");
    let (status, body) = create_agent(&server, &elsewhere).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["problems"][0]["key"], "model.base_url");
    let other_key = llm_manifest("leaky", "openai", "http://127.0.0.1:9/v1", true, "").replace(KEY_VAR, "DATABASE_URL");
    let (status, body) = create_agent(&server, &other_key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["problems"][0]["key"], "model.api_key_env");

    // The CLI: create from a file, list, show; an invalid file prints each problem.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, WORKFLOW.replace("1.0.0", "2.0.0")).unwrap();
    let (code, stdout, stderr) = run(server.cli().args(["agent", "create", "-f"]).arg(&file));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "Registered agent tester 2.0.0 (workflow).");
    let (code, stdout, _) = run(server.cli().args(["agent", "list"]));
    assert_eq!(code, 0);
    assert!(stdout.lines().nth(1).unwrap().starts_with("tester"), "{stdout}");
    std::fs::write(&file, "name = \"ok\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"nope\"]\n")
        .unwrap();
    let (code, _, stderr) = run(server.cli().args(["agent", "create", "-f"]).arg(&file));
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid_manifest (422)"), "{stderr}");
    assert!(stderr.contains("tools.allow[0]: unknown tool 'nope'"), "{stderr}");
    assert!(stderr.contains("steps: a workflow agent needs at least one [[steps]] entry"), "{stderr}");
}

#[tokio::test]
async fn a_workflow_agent_runs_its_steps_in_the_sandbox() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    create_agent(&server, WORKFLOW).await;
    let workspace = sample_workspace(true);

    // The CLI follows the timeline live and exits 0 on success.
    let (code, stdout, stderr) =
        run(server.cli().args(["run", "--agent", "tester", "--workspace"]).arg(workspace.path()).arg("run the tests"));
    assert_eq!(code, 0, "{stdout}\n{stderr}\n{}", server.stderr());
    assert!(stdout.contains("$ sh ./run-tests.sh"), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(stdout.contains("read_file README.md"), "{stdout}");
    assert!(stdout.contains("✔ succeeded"), "{stdout}");

    let (_, list) = server.get("/v1/executions").await;
    let execution = &list["executions"][0];
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(execution["totals"]["steps"], 2);
    let id = execution["id"].as_str().unwrap();
    let timeline = events(&server, id).await;
    assert_eq!(
        kinds(&timeline),
        vec!["status", "status", "tool_call", "tool_result", "tool_call", "tool_result", "status"]
    );
    let seqs: Vec<i64> = timeline.iter().map(|event| event["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(timeline[3]["payload"]["exit_code"], 0);
    assert!(timeline[3]["payload"]["output"].as_str().unwrap().contains("1 passed"));
    assert_eq!(timeline[5]["payload"]["is_error"], false);
    assert!(timeline[5]["payload"]["output"].as_str().unwrap().contains("# sample"), "{}", timeline[5]);
    assert_eq!(timeline[6]["payload"]["status"], "succeeded");

    // A failing step fails the execution, and `run` exits 1.
    let failing = sample_workspace(false);
    let (code, stdout, _) =
        run(server.cli().args(["run", "--agent", "tester", "--json", "--workspace"]).arg(failing.path()).arg("t"));
    assert_eq!(code, 1, "{stdout}");
    let record: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["outcome"]["error"], "step 1 (tests) failed");
    assert_eq!(record["totals"]["steps"], 1);
}

#[tokio::test]
async fn an_openai_agent_streams_calls_tools_and_answers_every_call() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = llm_manifest("fixer", "openai", &model.openai_base_url(), true, "");
    assert_eq!(create_agent(&server, &manifest).await.0, StatusCode::CREATED);
    let workspace = sample_workspace(true);

    // Turn 1: two calls at once, their arguments streamed in fragments.
    model.push(FakeTurn::Reply {
        text: Some("Let me look.".into()),
        tool_calls: vec![
            ("call_1".into(), "write_file".into(), r#"{"path": "notes/fix.txt", "content": "fixed\n"}"#.into()),
            ("call_2".into(), "shell".into(), r#"{"command": "cat notes/fix.txt && seq 1 2000"}"#.into()),
        ],
        input_tokens: 100,
        output_tokens: 20,
    });
    // Turn 2: a tool the agent may not use, a tool that does not exist, and
    // broken arguments: each is answered as an error and recorded as denied.
    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![
            ("call_3".into(), "http_fetch".into(), r#"{"url": "http://example.com"}"#.into()),
            ("call_4".into(), "teleport".into(), "{}".into()),
            ("call_5".into(), "read_file".into(), r#"{"path": "#.into()),
        ],
        input_tokens: 200,
        output_tokens: 30,
    });
    model.push(FakeTurn::Reply {
        text: Some("All done: notes/fix.txt written.".into()),
        tool_calls: vec![],
        input_tokens: 300,
        output_tokens: 10,
    });

    let id = start(&server, "fixer", workspace.path(), "fix it").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}");
    assert_eq!(execution["outcome"]["answer"], "All done: notes/fix.txt written.");
    assert_eq!(execution["totals"]["input_tokens"], 600);
    assert_eq!(execution["totals"]["output_tokens"], 60);
    assert_eq!(execution["totals"]["steps"], 3);
    assert_eq!(std::fs::read_to_string(workspace.path().join("notes/fix.txt")).unwrap(), "fixed\n");

    // Every call was answered under its own id, in order.
    model.check_tool_calls_answered().unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].headers.get("authorization").map(String::as_str), Some(&*format!("Bearer {KEY}")));
    let tool_messages: Vec<&Value> =
        requests[2].body["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
    let answered: Vec<&str> = tool_messages.iter().map(|m| m["tool_call_id"].as_str().unwrap()).collect();
    assert_eq!(answered, vec!["call_1", "call_2", "call_3", "call_4", "call_5"]);
    // The long shell output reached the model cut to the manifest's 2 KiB, with a note.
    let shell_answer = tool_messages[1]["content"].as_str().unwrap();
    assert!(shell_answer.len() < 3 * 1024, "{} bytes", shell_answer.len());
    assert!(shell_answer.contains("fixed"), "{shell_answer}");
    assert!(tool_messages[2]["content"].as_str().unwrap().contains("not allowed"), "{}", tool_messages[2]);
    assert!(tool_messages[4]["content"].as_str().unwrap().contains("invalid arguments"), "{}", tool_messages[4]);

    let timeline = events(&server, &id).await;
    let denied: Vec<&str> = timeline
        .iter()
        .filter(|event| event["kind"] == "tool_denied")
        .map(|event| event["payload"]["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(denied, vec!["call_3", "call_4", "call_5"]);
    // The log keeps the whole output (the model saw less).
    let shell_result = timeline
        .iter()
        .find(|event| event["kind"] == "tool_result" && event["payload"]["call_id"] == "call_2")
        .unwrap();
    assert_eq!(shell_result["payload"]["truncated_for_model"], true);
    assert!(shell_result["payload"]["output"].as_str().unwrap().contains("\n2000"), "{shell_result}");
    assert!(!server.stderr().contains(KEY), "the API key leaked into the log");
}

#[tokio::test]
async fn an_anthropic_agent_retries_a_rate_limit_and_finishes() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = llm_manifest("claude", "anthropic", &model.anthropic_base_url(), false, "");
    assert_eq!(create_agent(&server, &manifest).await.0, StatusCode::CREATED);
    let workspace = sample_workspace(true);
    model.push(FakeTurn::Error { status: 429, message: "rate limited, slow down".into() });
    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![("toolu_1".into(), "list_dir".into(), "{}".into())],
        input_tokens: 50,
        output_tokens: 5,
    });
    model.push(FakeTurn::Reply {
        text: Some("It has a README.".into()),
        tool_calls: vec![],
        input_tokens: 80,
        output_tokens: 6,
    });

    let id = start(&server, "claude", workspace.path(), "what is here?").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}");
    model.check_tool_calls_answered().unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "one rate-limited attempt, then two turns");
    assert_eq!(requests[1].headers.get("x-api-key").map(String::as_str), Some(KEY));
    let timeline = events(&server, &id).await;
    let retry = timeline.iter().find(|event| event["kind"] == "model_retry").expect("a retry event");
    assert!(retry["payload"]["reason"].as_str().unwrap().contains("429"), "{retry}");
    let listing = timeline.iter().find(|event| event["kind"] == "tool_result").unwrap();
    assert!(listing["payload"]["output"].as_str().unwrap().contains("README.md"), "{listing}");
}

#[tokio::test]
async fn a_model_that_answers_garbage_fails_the_execution_cleanly() {
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = llm_manifest("broken", "openai", &model.openai_base_url(), false, "");
    create_agent(&server, &manifest).await;
    for _ in 0..3 {
        model.push(FakeTurn::Garbage);
    }
    let workspace = sample_workspace(true);
    let id = start(&server, "broken", workspace.path(), "anything").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["outcome"]["reason"], "model_error");
    let timeline = events(&server, &id).await;
    assert_eq!(timeline.iter().filter(|event| event["kind"] == "model_retry").count(), 2);
    assert!(timeline.iter().any(|event| event["kind"] == "model_error"));
    // The server is still fine.
    assert_eq!(server.get("/v1/executions").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_step_limit_stops_an_agent_that_never_finishes() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = llm_manifest("looper", "openai", &model.openai_base_url(), true, "max_steps = 2");
    create_agent(&server, &manifest).await;
    for turn in 0..2 {
        model.push(FakeTurn::Reply {
            text: None,
            tool_calls: vec![(format!("call_{turn}"), "shell".into(), r#"{"command": "true"}"#.into())],
            input_tokens: 10,
            output_tokens: 1,
        });
    }
    let workspace = sample_workspace(true);
    let id = start(&server, "looper", workspace.path(), "loop").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["outcome"]["reason"], "limit_hit");
    assert_eq!(execution["outcome"]["limit"], "max_steps");
    let timeline = events(&server, &id).await;
    assert!(timeline.iter().any(|event| event["kind"] == "limit_hit"));
}

#[tokio::test]
async fn the_timeline_streams_as_server_sent_events_and_resumes() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    create_agent(&server, WORKFLOW).await;
    let workspace = sample_workspace(true);
    let id = start(&server, "tester", workspace.path(), "run").await;
    // Following from the start ends by itself after the final event.
    let stream = |last_event_id: Option<&str>| {
        let mut request = server
            .request(Method::GET, &format!("/v1/executions/{id}/stream"))
            .bearer_auth(&server.owner_key)
            .timeout(Duration::from_secs(120));
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        request
    };
    let response = stream(None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let ids: Vec<&str> = body.lines().filter_map(|line| line.strip_prefix("id: ")).collect();
    assert_eq!(ids, vec!["1", "2", "3", "4", "5", "6", "7"], "{body}");
    assert!(body.contains("event: tool_result"), "{body}");

    // Resuming after event 5 gives only what follows.
    let body = stream(Some("5")).send().await.unwrap().text().await.unwrap();
    let ids: Vec<&str> = body.lines().filter_map(|line| line.strip_prefix("id: ")).collect();
    assert_eq!(ids, vec!["6", "7"], "{body}");

    // Paging by hand agrees.
    let (_, page) = server.get(&format!("/v1/executions/{id}/events?after=5")).await;
    assert_eq!(page["next_after"], 7);
    assert_eq!(page["status"], "succeeded");

    // Bad input is answered, not crashed on.
    let response = stream(Some("soon")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, _) = server.get("/v1/executions/not-an-id/events").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.get(&format!("/v1/executions/{}/events", uuid::Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // `exec events` prints the same timeline.
    let (code, stdout, stderr) = run(server.cli().args(["exec", "events", &id, "--json"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 7);
    let (code, stdout, _) = run(server.cli().args(["exec", "show", &id]));
    assert_eq!(code, 0);
    assert!(stdout.contains("✔ succeeded"), "{stdout}");
}

#[tokio::test]
async fn executions_refuse_bad_input() {
    let server = server().await;
    create_agent(&server, WORKFLOW).await;
    let post = |body: Value| server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(body));
    let (status, body) = post(json!({ "agent": "tester", "task": "", "workspace": "/tmp" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = post(json!({ "agent": "tester", "task": "t", "workspace": "relative/dir" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(json!({ "agent": "ghost", "task": "t", "workspace": "/tmp" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(json!({ "agent": "tester", "task": "t", "workspace": "/tmp", "sneaky": 1 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Only directories in the workspace roots (here the temporary directory).
    for outside in ["/root", "/etc", "/tmp/../root"] {
        let (status, body) = post(json!({ "agent": "tester", "task": "t", "workspace": outside })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{outside}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("workspace roots"), "{body}");
    }
    // A workspace the worker cannot use fails the execution with a reason:
    // missing, or a symbolic link out of the roots.
    let id = start(&server, "tester", &std::env::temp_dir().join("codexos-no-such-workspace"), "t").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["outcome"]["reason"], "invalid_workspace");
    let links = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", links.path().join("etc")).unwrap();
    let id = start(&server, "tester", &links.path().join("etc"), "t").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["outcome"]["reason"], "invalid_workspace", "{execution}");
    // So does the platform's own data directory.
    let id = start(&server, "tester", server.data_dir(), "t").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["outcome"]["reason"], "invalid_workspace", "{execution}");
}

#[tokio::test]
async fn notes_remembered_in_one_execution_are_recalled_in_the_next() {
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = llm_manifest("keeper", "openai", &model.openai_base_url(), true, "")
        .replace("\"search\"]", "\"search\", \"remember\", \"recall\"]")
        + "\n[memory]\nretention = \"30d\"\n";
    let (status, body) = create_agent(&server, &manifest).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let workspace = sample_workspace(true);

    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![(
            "call_m1".into(),
            "remember".into(),
            r#"{"note": "The parser tests are flaky when run in parallel; use --test-threads=1", "tags": ["tests"]}"#
                .into(),
        )],
        input_tokens: 10,
        output_tokens: 5,
    });
    model.push(FakeTurn::Reply { text: Some("Noted.".into()), tool_calls: vec![], input_tokens: 10, output_tokens: 1 });
    let first = start(&server, "keeper", workspace.path(), "learn").await;
    assert_eq!(finished(&server, &first).await["status"], "succeeded");

    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![(
            "call_m2".into(),
            "recall".into(),
            r#"{"query": "why are tests failing in parallel?"}"#.into(),
        )],
        input_tokens: 10,
        output_tokens: 5,
    });
    model.push(FakeTurn::Reply {
        text: Some("Use one thread.".into()),
        tool_calls: vec![],
        input_tokens: 10,
        output_tokens: 1,
    });
    let second = start(&server, "keeper", workspace.path(), "fix the flaky tests").await;
    assert_eq!(finished(&server, &second).await["status"], "succeeded");
    model.check_tool_calls_answered().unwrap();

    let requests = model.requests();
    let recall_answer = requests[3].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(recall_answer.contains("use --test-threads=1"), "{recall_answer}");
    assert!(recall_answer.contains("[tests]"), "{recall_answer}");
    let timeline = events(&server, &second).await;
    let result = timeline.iter().find(|event| event["kind"] == "tool_result").unwrap();
    assert_eq!(result["payload"]["tool"], "recall");
    assert_eq!(result["payload"]["is_error"], false);
}

/// The README's quickstart: the bundled workflow agent on the bundled sample
/// workspace, no API key.
#[tokio::test]
async fn the_quickstart_runs_the_sample_workspace_tests() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (code, stdout, stderr) =
        run(server.cli().args(["agent", "create", "-f"]).arg(repo.join("examples/agents/test-runner.toml")));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "Registered agent test-runner 1.0.0 (workflow).");
    let workspace = tempfile::tempdir().unwrap();
    copy_dir(&repo.join("examples/sample-workspace"), workspace.path());
    let (code, stdout, stderr) = run(server
        .cli()
        .args(["run", "--agent", "test-runner", "--workspace"])
        .arg(workspace.path())
        .arg("run the tests and report"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("shell scripts: 2"), "{stdout}");
    assert!(stdout.contains("✔ succeeded"), "{stdout}");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
