//! Durable executions: `codexos up` killed with SIGKILL mid-execution, then
//! started again, resumes each execution from its last recorded step.

use std::path::Path;
use std::time::{Duration, Instant};

use codexos_test_support::TestServer;
use codexos_test_support::fake_model::{FakeModel, FakeTurn};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{bin, events, finished, sandbox_available, status_of, wait_for_event, wait_for_status};

const KEY_VAR: &str = codexos_test_support::TEST_MODEL_KEY_VAR;

/// A short lease, so that the restarted worker takes the crashed one's
/// executions over within seconds.
async fn server() -> TestServer {
    TestServer::start_with_env(
        bin(),
        &[
            (KEY_VAR, "sk-test"),
            ("CODEXOS_WORKER__HEARTBEAT_INTERVAL", "500ms"),
            ("CODEXOS_WORKER__LEASE_TIMEOUT", "2s"),
        ],
    )
    .await
}

async fn start(server: &TestServer, manifest: &str, agent: &str, workspace: &Path) -> String {
    let (status, body) =
        server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(json!({ "manifest": manifest }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let request = json!({ "agent": agent, "task": "work", "workspace": workspace.to_str().unwrap() });
    let (status, execution) = server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(request)).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    execution["id"].as_str().unwrap().to_owned()
}

/// Waits until a file the sandboxed command writes holds `text`.
async fn wait_for_file_text(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(path).is_ok_and(|content| content.contains(text)) {
        assert!(Instant::now() < deadline, "{} never held {text}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tool_events<'a>(timeline: &'a [Value], kind: &str) -> Vec<&'a str> {
    timeline
        .iter()
        .filter(|event| event["kind"] == kind)
        .map(|event| event["payload"]["call_id"].as_str().unwrap())
        .collect()
}

fn assert_contiguous(timeline: &[Value]) {
    let seqs: Vec<i64> = timeline.iter().map(|event| event["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=timeline.len() as i64).collect::<Vec<_>>());
}

const WORKFLOW: &str = r#"
name = "steps"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "echo one >> log.txt" }
[[steps]]
tool = "shell"
args = { command = "echo two-started >> log.txt; sleep 3; echo two >> log.txt" }
[[steps]]
tool = "shell"
args = { command = "echo three >> log.txt" }
"#;

#[tokio::test]
async fn a_workflow_killed_mid_step_resumes_without_repeating_recorded_steps() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let workspace = tempfile::tempdir().unwrap();
    let id = start(&server, WORKFLOW, "steps", workspace.path()).await;
    // Kill while step 2 runs: its call is recorded, its result is not.
    wait_for_event(&server, &id, |event| event["kind"] == "tool_call" && event["payload"]["call_id"] == "step-2").await;
    wait_for_file_text(&workspace.path().join("log.txt"), "two-started").await;
    let server = server.crash_and_restart().await;

    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}\n{}", server.stderr());
    // Step 1 ran once. Step 2 was interrupted: the workspace went back to
    // the checkpoint taken before it, and it ran again, so its effects show
    // once. Step 3 ran once.
    let log = std::fs::read_to_string(workspace.path().join("log.txt")).unwrap();
    assert_eq!(log, "one\ntwo-started\ntwo\nthree\n");
    let timeline = events(&server, &id).await;
    assert_contiguous(&timeline);
    assert_eq!(tool_events(&timeline, "tool_result"), vec!["step-1", "step-2", "step-3"]);
    assert_eq!(tool_events(&timeline, "tool_call"), vec!["step-1", "step-2", "step-2", "step-3"]);
    assert_eq!(tool_events(&timeline, "workspace_restored"), vec!["step-2"]);
    let checkpoints: Vec<&Value> = timeline
        .iter()
        .filter(|event| event["kind"] == "tool_call")
        .map(|event| &event["payload"]["checkpoint"]["id"])
        .collect();
    assert!(checkpoints.iter().all(|id| id.as_str().is_some_and(|id| id.len() == 64)), "{checkpoints:?}");
    let statuses: Vec<(&str, bool)> = timeline
        .iter()
        .filter(|event| event["kind"] == "status")
        .map(|event| (event["payload"]["status"].as_str().unwrap(), event["payload"]["resumed"] == true))
        .collect();
    assert_eq!(statuses, vec![("queued", false), ("running", false), ("running", true), ("succeeded", false)]);
    // Steps are counted once they ran: the interrupted run of step 2 is not.
    assert_eq!(execution["totals"]["steps"], 3);
}

#[tokio::test]
async fn an_llm_execution_killed_after_a_reply_does_not_ask_the_model_again() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = format!(
        r#"
name = "llm"
version = "1.0.0"
kind = "llm"
[model]
provider = "openai"
name = "m"
base_url = "{}"
api_key_env = "{KEY_VAR}"
[tools]
allow = ["shell", "write_file"]
"#,
        model.openai_base_url()
    );
    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![
            ("call_a".into(), "write_file".into(), r#"{"path": "a.txt", "content": "a"}"#.into()),
            ("call_b".into(), "shell".into(), r#"{"command": "echo b >> b.txt; sleep 3"}"#.into()),
        ],
        input_tokens: 100,
        output_tokens: 10,
    });
    model.push(FakeTurn::Reply { text: Some("done".into()), tool_calls: vec![], input_tokens: 200, output_tokens: 5 });
    let workspace = tempfile::tempdir().unwrap();
    let id = start(&server, &manifest, "llm", workspace.path()).await;
    wait_for_event(&server, &id, |event| event["kind"] == "tool_call" && event["payload"]["call_id"] == "call_b").await;
    wait_for_file_text(&workspace.path().join("b.txt"), "b").await;
    let server = server.crash_and_restart().await;

    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}\n{}", server.stderr());
    assert_eq!(execution["outcome"]["answer"], "done");
    // Two model calls in all: the recorded reply was not asked for again.
    assert_eq!(model.requests().len(), 2);
    model.check_tool_calls_answered().unwrap();
    // The tokens of both turns are counted once each.
    assert_eq!(execution["totals"]["input_tokens"], 300);
    // call_a ran once; call_b was interrupted, its effect undone by the
    // checkpoint before it, and ran again.
    assert_eq!(std::fs::read_to_string(workspace.path().join("b.txt")).unwrap(), "b\n");
    assert_eq!(std::fs::read_to_string(workspace.path().join("a.txt")).unwrap(), "a");
    let timeline = events(&server, &id).await;
    assert_contiguous(&timeline);
    assert_eq!(tool_events(&timeline, "tool_result"), vec!["call_a", "call_b"]);
}

const SLOW_WORKFLOW: &str = r#"
name = "slow"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "sleep 2; echo one >> log.txt" }
[[steps]]
tool = "shell"
args = { command = "echo two >> log.txt" }
[[steps]]
tool = "shell"
args = { command = "echo three >> log.txt" }
"#;

#[tokio::test]
async fn a_paused_execution_finishes_its_step_waits_and_resumes_where_it_stopped() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let workspace = tempfile::tempdir().unwrap();
    let id = start(&server, SLOW_WORKFLOW, "slow", workspace.path()).await;
    wait_for_event(&server, &id, |event| event["kind"] == "tool_call" && event["payload"]["call_id"] == "step-1").await;

    let (code, stdout, stderr) = codexos_test_support::run(server.cli().args(["exec", "pause", &id]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("pause requested"), "{stdout}");
    wait_for_status(&server, &id, "paused").await;
    // The step under way finished; the next did not start.
    assert_eq!(std::fs::read_to_string(workspace.path().join("log.txt")).unwrap(), "one\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&server, &id).await, "paused");
    let (code, _, stderr) = codexos_test_support::run(server.cli().args(["exec", "pause", &id]));
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid_state (409)"), "{stderr}");

    let (code, stdout, _) = codexos_test_support::run(server.cli().args(["exec", "resume", &id]));
    assert_eq!(code, 0);
    assert!(stdout.contains("resumed"), "{stdout}");
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(std::fs::read_to_string(workspace.path().join("log.txt")).unwrap(), "one\ntwo\nthree\n");
    let timeline = events(&server, &id).await;
    assert_contiguous(&timeline);
    assert_eq!(tool_events(&timeline, "tool_call"), vec!["step-1", "step-2", "step-3"]);
    let story: Vec<String> = timeline
        .iter()
        .filter(|event| event["kind"] == "status" || event["kind"] == "control")
        .map(|event| {
            let payload = &event["payload"];
            payload["status"].as_str().or(payload["action"].as_str()).unwrap().to_owned()
        })
        .collect();
    assert_eq!(story, vec!["queued", "running", "pause_requested", "paused", "queued", "running", "succeeded"]);
}

#[tokio::test]
async fn a_cancelled_execution_stops_now_and_its_tool_call_is_killed() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let workspace = tempfile::tempdir().unwrap();
    let manifest = SLOW_WORKFLOW.replace("sleep 2; echo one", "sleep 4; echo late");
    let id = start(&server, &manifest, "slow", workspace.path()).await;
    wait_for_event(&server, &id, |event| event["kind"] == "tool_call" && event["payload"]["call_id"] == "step-1").await;
    let cancelled_at = Instant::now();
    let (code, stdout, stderr) = codexos_test_support::run(server.cli().args(["exec", "cancel", &id]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("cancel requested"), "{stdout}");
    let execution = finished(&server, &id).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(3), "took {:?}", cancelled_at.elapsed());
    assert_eq!(execution["status"], "cancelled");
    assert_eq!(execution["outcome"]["reason"], "cancelled");
    // The sleeping command was killed with its sandbox: it never wrote.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!workspace.path().join("log.txt").exists());
    let (status, body) =
        server.call(Method::POST, &format!("/v1/executions/{id}/cancel"), Some(&server.owner_key), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
}

const CHANGING_WORKFLOW: &str = r#"
name = "changer"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell", "write_file"]
[[steps]]
tool = "shell"
args = { command = "echo edited > keep.txt && mkdir -p out && echo one > out/one.txt" }
[[steps]]
tool = "shell"
args = { command = "rm keep.txt && echo two > out/two.txt && ln -s out/two.txt link && chmod +x out/one.txt" }
[[steps]]
tool = "write_file"
args = { path = "three.txt", content = "three" }
"#;

/// Every path of a directory with its kind, permission bits and content.
fn tree(root: &Path) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                use std::os::unix::fs::PermissionsExt;
                format!("{:o} {}", meta.permissions().mode() & 0o777, std::fs::read_to_string(&path).unwrap())
            };
            entries.push((name, what));
        }
    }
    entries.sort();
    entries
}

#[tokio::test]
async fn a_rollback_puts_the_workspace_back_and_the_execution_runs_on_from_there() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("keep.txt"), "original\n").unwrap();
    let id = start(&server, CHANGING_WORKFLOW, "changer", workspace.path()).await;
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    let after_all = tree(workspace.path());

    // Bad requests change nothing.
    let rollback_path = format!("/v1/executions/{id}/rollback");
    let rollback = |to_step: u32| {
        server.call(Method::POST, &rollback_path, Some(&server.owner_key), Some(json!({ "to_step": to_step })))
    };
    let (status, body) = rollback(9).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("its steps are 1 to 3"), "{body}");

    // Back to the start of step 2: step 1's changes stay, the rest are undone.
    let (code, stdout, stderr) = codexos_test_support::run(server.cli().args(["exec", "rollback", &id, "--to", "2"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("rollback queued"), "{stdout}");
    wait_for_status(&server, &id, "paused").await;
    assert_eq!(
        tree(workspace.path()),
        vec![
            ("keep.txt".to_owned(), "644 edited\n".to_owned()),
            ("out".to_owned(), "dir".to_owned()),
            ("out/one.txt".to_owned(), "644 one\n".to_owned()),
        ]
    );
    let timeline = events(&server, &id).await;
    let rolled = timeline.iter().find(|event| event["kind"] == "rolled_back").unwrap();
    assert_eq!(rolled["payload"]["to_step"], 2);
    let (status, _) = rollback(1).await;
    assert_eq!(status, StatusCode::OK, "a paused execution may be rolled back further");
    wait_for_status(&server, &id, "paused").await;
    assert_eq!(tree(workspace.path()), vec![("keep.txt".to_owned(), "644 original\n".to_owned())]);

    // Resumed, it runs the steps again from there, to the same end.
    let (code, _, stderr) = codexos_test_support::run(server.cli().args(["exec", "resume", &id]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    assert_eq!(tree(workspace.path()), after_all);
    assert_contiguous(&events(&server, &id).await);
}

#[tokio::test]
async fn a_fork_starts_from_the_parents_step_on_its_own_workspace_and_diverges() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let root = tempfile::tempdir().unwrap();
    let parent_workspace = root.path().join("parent");
    std::fs::create_dir(&parent_workspace).unwrap();
    std::fs::write(parent_workspace.join("keep.txt"), "original\n").unwrap();
    let id = start(&server, CHANGING_WORKFLOW, "changer", &parent_workspace).await;
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    let parent_after = tree(&parent_workspace);
    let parent_events = events(&server, &id).await.len();

    let fork_workspace = root.path().join("fork");
    let (code, stdout, stderr) = codexos_test_support::run(
        server.cli().args(["exec", "fork", &id, "--from", "2", "--json", "--workspace"]).arg(&fork_workspace),
    );
    assert_eq!(code, 0, "{stderr}");
    let fork: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(fork["forked_from"], json!({ "execution": id, "step": 2 }));
    let fork_id = fork["id"].as_str().unwrap();
    let finished_fork = finished(&server, fork_id).await;
    assert_eq!(finished_fork["status"], "succeeded", "{finished_fork}\n{:?}", events(&server, fork_id).await);
    // The fork ran steps 2 and 3 on a copy of the workspace as step 2 found
    // it, so it ends like the parent; the parent was not touched.
    assert_eq!(tree(&fork_workspace), parent_after);
    assert_eq!(tree(&parent_workspace), parent_after);
    assert_eq!(events(&server, &id).await.len(), parent_events);
    let timeline = events(&server, fork_id).await;
    assert_contiguous(&timeline);
    assert_eq!(tool_events(&timeline, "tool_result"), vec!["step-1", "step-2", "step-3", "step-2", "step-3"]);
    assert!(timeline.iter().any(|event| event["kind"] == "rolled_back"));

    // Diverging: the fork's workspace is its own.
    std::fs::write(fork_workspace.join("only-in-fork.txt"), "x").unwrap();
    assert!(!parent_workspace.join("only-in-fork.txt").exists());

    // Bad requests: a step never reached, a workspace that exists.
    let fork_path = format!("/v1/executions/{id}/fork");
    let (status, _) =
        server.call(Method::POST, &fork_path, Some(&server.owner_key), Some(json!({ "from_step": 7 }))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let existing = json!({ "from_step": 1, "workspace": fork_workspace.to_str().unwrap() });
    let (status, _) = server.call(Method::POST, &fork_path, Some(&server.owner_key), Some(existing)).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn calls_that_need_approval_wait_for_a_person_who_approves_or_denies() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = server().await;
    let manifest = format!(
        r#"
name = "careful"
version = "1.0.0"
kind = "llm"
[model]
provider = "openai"
name = "m"
base_url = "{}"
api_key_env = "{KEY_VAR}"
[tools]
allow = ["shell"]
[approval]
shell = ["git push*", "touch *"]
"#,
        model.openai_base_url()
    );
    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![
            ("call_ok".into(), "shell".into(), r#"{"command": "echo safe > safe.txt"}"#.into()),
            ("call_ask".into(), "shell".into(), r#"{"command": "touch approved.txt"}"#.into()),
        ],
        input_tokens: 10,
        output_tokens: 5,
    });
    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![("call_no".into(), "shell".into(), r#"{"command": "git push --force"}"#.into())],
        input_tokens: 10,
        output_tokens: 5,
    });
    model.push(FakeTurn::Reply { text: Some("done".into()), tool_calls: vec![], input_tokens: 10, output_tokens: 1 });
    let workspace = tempfile::tempdir().unwrap();
    let id = start(&server, &manifest, "careful", workspace.path()).await;

    // The first call runs; the second waits, shown exactly.
    wait_for_status(&server, &id, "waiting_approval").await;
    assert!(workspace.path().join("safe.txt").exists());
    assert!(!workspace.path().join("approved.txt").exists());
    let timeline = events(&server, &id).await;
    let request = timeline.iter().find(|event| event["kind"] == "approval_requested").unwrap();
    assert_eq!(request["payload"]["call_id"], "call_ask");
    assert_eq!(request["payload"]["arguments"], r#"{"command": "touch approved.txt"}"#);
    let seq = request["seq"].as_i64().unwrap().to_string();

    // Only the call waited for can be decided; then it runs.
    let (code, _, stderr) = codexos_test_support::run(server.cli().args(["exec", "approve", &id, "1"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid_state (409)"), "{stderr}");
    let (code, stdout, stderr) = codexos_test_support::run(server.cli().args(["exec", "approve", &id, &seq]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("approved"), "{stdout}");

    // The next turn's push waits too, and is denied with a reason the model reads.
    wait_for_event(&server, &id, |event| {
        event["kind"] == "approval_requested" && event["payload"]["call_id"] == "call_no"
    })
    .await;
    wait_for_status(&server, &id, "waiting_approval").await;
    assert!(workspace.path().join("approved.txt").exists());
    let timeline = events(&server, &id).await;
    let seq = timeline.iter().rev().find(|event| event["kind"] == "approval_requested").unwrap()["seq"].to_string();
    let (code, _, stderr) =
        codexos_test_support::run(server.cli().args(["exec", "deny", &id, &seq, "--reason", "never force-push"]));
    assert_eq!(code, 0, "{stderr}");

    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}");
    model.check_tool_calls_answered().unwrap();
    let last_request = model.requests().last().unwrap().body.clone();
    let denial = last_request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["tool_call_id"] == "call_no")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(denial.contains("denied by") && denial.contains("never force-push"), "{denial}");
    let decisions: Vec<(bool, String)> = events(&server, &id)
        .await
        .iter()
        .filter(|event| event["kind"] == "approval_decided")
        .map(|event| (event["payload"]["approved"] == true, event["payload"]["by"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(decisions.len(), 2);
    assert!(decisions[0].0 && !decisions[1].0);
    assert!(
        decisions.iter().all(|(_, by)| by.starts_with("key:") || by.starts_with("session:") || by.starts_with("user ")),
        "{decisions:?}"
    );
}

/// Kills `codexos up` at several points of a workflow and checks that each
/// run ends exactly as an uninterrupted one would: every step's effect on
/// the workspace once, every recorded result kept, the timeline whole.
#[tokio::test]
async fn kill_9_at_any_point_ends_as_an_uninterrupted_run_would() {
    if !sandbox_available() {
        return;
    }
    let workflow = r#"
name = "counter"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "echo one >> log.txt; sleep 1" }
[[steps]]
tool = "shell"
args = { command = "echo two >> log.txt; sleep 1" }
[[steps]]
tool = "shell"
args = { command = "echo three >> log.txt" }
"#;
    // (event kind, call id): the moment of the kill.
    let moments =
        [("tool_call", "step-1"), ("tool_result", "step-1"), ("tool_call", "step-2"), ("tool_result", "step-2")];
    for (kind, call_id) in moments {
        let server = server().await;
        let workspace = tempfile::tempdir().unwrap();
        let id = start(&server, workflow, "counter", workspace.path()).await;
        wait_for_event(&server, &id, |event| event["kind"] == kind && event["payload"]["call_id"] == call_id).await;
        let server = server.crash_and_restart().await;
        let execution = finished(&server, &id).await;
        assert_eq!(execution["status"], "succeeded", "killed after {kind} {call_id}: {execution}");
        let log = std::fs::read_to_string(workspace.path().join("log.txt")).unwrap();
        assert_eq!(log, "one\ntwo\nthree\n", "killed after {kind} {call_id}");
        let timeline = events(&server, &id).await;
        assert_contiguous(&timeline);
        assert_eq!(
            tool_events(&timeline, "tool_result"),
            vec!["step-1", "step-2", "step-3"],
            "killed after {kind} {call_id}"
        );
    }
}

#[tokio::test]
async fn finished_executions_keep_only_their_newest_checkpoints() {
    if !sandbox_available() {
        return;
    }
    let server = TestServer::start_with_env(bin(), &[("CODEXOS_WORKER__CHECKPOINTS_PER_EXECUTION", "1")]).await;
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("keep.txt"), "original\n").unwrap();
    let id = start(&server, CHANGING_WORKFLOW, "changer", workspace.path()).await;
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    // Three calls took checkpoints; one is kept (the newest), once the worker
    // has applied retention after finishing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, shown) = server.get(&format!("/v1/executions/{id}")).await;
        if shown["checkpoints"]["count"] == 1 {
            assert!(shown["checkpoints"]["bytes"].as_i64().unwrap() > 0, "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "retention never applied: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, stdout, _) = codexos_test_support::run(server.cli().args(["exec", "show", &id]));
    assert_eq!(code, 0);
    assert!(stdout.contains("checkpoints 1"), "{stdout}");
}

#[tokio::test]
async fn after_a_rollback_a_call_that_needs_approval_asks_again() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let manifest = "name = \"gated\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                    [approval]\ntools = [\"shell\"]\n[[steps]]\ntool = \"shell\"\nargs = { command = \"echo ran >> log.txt\" }\n";
    let workspace = tempfile::tempdir().unwrap();
    let id = start(&server, manifest, "gated", workspace.path()).await;
    wait_for_status(&server, &id, "waiting_approval").await;
    let seq = |timeline: &[Value]| {
        timeline.iter().rev().find(|event| event["kind"] == "approval_requested").unwrap()["seq"].to_string()
    };
    let first = seq(&events(&server, &id).await);
    assert_eq!(codexos_test_support::run(server.cli().args(["exec", "approve", &id, &first])).0, 0);
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    assert_eq!(finished(&server, &id).await["totals"]["steps"], 1);

    // Another execution cannot start inside (or around) a workspace in use...
    let rollback_path = format!("/v1/executions/{id}/rollback");
    let (status, _) =
        server.call(Method::POST, &rollback_path, Some(&server.owner_key), Some(json!({ "to_step": 1 }))).await;
    assert_eq!(status, StatusCode::OK);
    wait_for_status(&server, &id, "paused").await;
    assert!(!workspace.path().join("log.txt").exists());
    let body = json!({ "agent": "gated", "task": "t", "workspace": workspace.path().to_str().unwrap() });
    let (status, answer) = server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "workspace_in_use");

    // ...and the resumed step asks again: the earlier approval was for the
    // call as it was before the rollback.
    assert_eq!(codexos_test_support::run(server.cli().args(["exec", "resume", &id])).0, 0);
    wait_for_status(&server, &id, "waiting_approval").await;
    assert!(!workspace.path().join("log.txt").exists());
    let second = seq(&events(&server, &id).await);
    assert_ne!(first, second);
    assert_eq!(codexos_test_support::run(server.cli().args(["exec", "deny", &id, &second])).0, 0);
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "failed");
    assert!(!workspace.path().join("log.txt").exists());
}

/// Every path under `root` with the bytes it holds (or its link target).
fn snapshot_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(path);
                entries.push((name, Vec::new()));
            } else if meta.file_type().is_symlink() {
                entries.push((name, std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()));
            } else {
                entries.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    entries.sort();
    entries
}

#[tokio::test]
async fn checkpoints_rollbacks_and_forks_leave_the_users_git_untouched() {
    if !sandbox_available() {
        return;
    }
    let git = |dir: &Path, args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
    };
    let server = server().await;
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("keep.txt"), "original\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let git_before = snapshot_bytes(&repo.join(".git"));

    let id = start(&server, CHANGING_WORKFLOW, "changer", &repo).await;
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    assert_eq!(snapshot_bytes(&repo.join(".git")), git_before, "a run with checkpoints changed .git");

    let fork = json!({ "from_step": 2, "workspace": root.path().join("fork").to_str().unwrap() });
    let path = format!("/v1/executions/{id}/fork");
    let (status, forked) = server.call(Method::POST, &path, Some(&server.owner_key), Some(fork)).await;
    assert_eq!(status, StatusCode::CREATED, "{forked}");
    assert_eq!(finished(&server, forked["id"].as_str().unwrap()).await["status"], "succeeded");
    assert_eq!(snapshot_bytes(&repo.join(".git")), git_before, "a fork changed the parent's .git");

    let rollback = json!({ "to_step": 1 });
    let path = format!("/v1/executions/{id}/rollback");
    assert_eq!(server.call(Method::POST, &path, Some(&server.owner_key), Some(rollback)).await.0, StatusCode::OK);
    wait_for_status(&server, &id, "paused").await;
    assert_eq!(snapshot_bytes(&repo.join(".git")), git_before, "a rollback changed .git");
    assert_eq!(std::fs::read_to_string(repo.join("keep.txt")).unwrap(), "original\n");
    // The fork's .git is a copy of the repository as it was, and a working one.
    git(&root.path().join("fork"), &["log", "--oneline"]);
}

#[tokio::test]
async fn a_pause_withdrawn_before_the_step_ends_does_not_pause() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let workspace = tempfile::tempdir().unwrap();
    let id = start(&server, SLOW_WORKFLOW, "slow", workspace.path()).await;
    wait_for_event(&server, &id, |event| event["kind"] == "tool_call" && event["payload"]["call_id"] == "step-1").await;
    assert_eq!(codexos_test_support::run(server.cli().args(["exec", "pause", &id])).0, 0);
    // Long enough for the worker to see the request, well within the 2 s step.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (code, stdout, _) = codexos_test_support::run(server.cli().args(["exec", "resume", &id]));
    assert_eq!(code, 0);
    assert!(stdout.contains("pause withdrawn"), "{stdout}");
    assert_eq!(finished(&server, &id).await["status"], "succeeded");
    let paused = events(&server, &id).await.iter().any(|event| event["payload"]["status"] == "paused");
    assert!(!paused, "the withdrawn pause still paused");
}
