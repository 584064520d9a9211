//! Tenant policies through the real server and worker: set with the CLI
//! (a policy that does not compile is refused with its position and
//! nothing stored), asked before every tool call of a real execution
//! (allow, deny, ask), before installs and starts, and tested against
//! case files.

use std::path::Path;

use codexos_test_support::fake_model::{FakeModel, FakeTurn};
use codexos_test_support::{TestServer, run};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{bin, events, finished, sandbox_available, wait_for_event, wait_for_status};

const KEY_VAR: &str = codexos_test_support::TEST_MODEL_KEY_VAR;

/// A tenant's own rules: no `git push`, a person looks at every recursive
/// delete, everything else runs.
const RULES: &str = r#"package codexos

deny contains "no pushing from this tenant" if {
	is_array(input.shell.commands)
	some command in input.shell.commands
	command[0] == "git"
	"push" in command
}

ask contains sprintf("`%s` deletes recursively", [input.shell.raw]) if {
	is_array(input.shell.commands)
	some command in input.shell.commands
	command[0] == "rm"
	some word in command
	regex.match(`^-[a-zA-Z]*[rR]`, word)
}
"#;

async fn server() -> TestServer {
    TestServer::start_with_env(bin(), &[(KEY_VAR, "sk-test")]).await
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn versions(server: &TestServer) -> Vec<i64> {
    let (status, list) = server.get("/v1/policy/versions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["versions"].as_array().unwrap().iter().map(|version| version["version"].as_i64().unwrap()).collect()
}

async fn register(server: &TestServer, manifest: &str) -> (StatusCode, Value) {
    server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(json!({ "manifest": manifest }))).await
}

async fn start(server: &TestServer, agent: &str, workspace: &Path) -> (StatusCode, Value) {
    let request = json!({ "agent": agent, "task": "work", "workspace": workspace.to_str().unwrap() });
    server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(request)).await
}

/// Registers `manifest`, starts `agent` on a new workspace, and waits
/// until the execution asks for approval.
async fn waiting_for_approval(server: &TestServer, manifest: &str, agent: &str) -> (String, tempfile::TempDir) {
    let (status, body) = register(server, manifest).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let workspace = tempfile::tempdir().unwrap();
    let (status, execution) = start(server, agent, workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    let id = execution["id"].as_str().unwrap().to_owned();
    wait_for_status(server, &id, "waiting_approval").await;
    (id, workspace)
}

/// The sequence number of the execution's first approval request.
async fn approval_request(server: &TestServer, id: &str) -> String {
    let timeline = events(server, id).await;
    timeline.iter().find(|event| event["kind"] == "approval_requested").unwrap()["seq"].to_string()
}

#[tokio::test]
async fn a_policy_that_does_not_compile_is_refused_with_its_position_and_nothing_is_stored() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(versions(&server).await, Vec::<i64>::new());

    let broken = write(dir.path(), "broken.rego", "package codexos\n\ndeny contains \"x\" if {\n\tinput.tool ==\n}\n");
    let (code, _, stderr) = run(server.cli().args(["policy", "set"]).arg(&broken));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("invalid_policy (422)"), "{stderr}");
    assert!(stderr.contains("broken.rego:5:1"), "{stderr}");

    // A module outside package codexos, and a refused builtin: each named.
    let elsewhere = write(dir.path(), "elsewhere.rego", "package other\n\ndeny contains \"x\" if input.x\n");
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/policy",
            Some(&server.owner_key),
            Some(json!({ "modules": {
                "elsewhere.rego": std::fs::read_to_string(&elsewhere).unwrap(),
                "main.rego": "package codexos\n\nxs := numbers.range(1, 1e12)\ndeny contains \"x\" if count(xs) > 0\n",
            }})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let mut keys: Vec<&str> =
        body["error"]["problems"].as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["elsewhere.rego:1:1", "main.rego:3:7"], "{body}");
    assert_eq!(versions(&server).await, Vec::<i64>::new(), "nothing was stored");

    // A good one is version 1; `get` gives it back.
    let rules = write(dir.path(), "rules.rego", RULES);
    let (code, stdout, stderr) = run(server.cli().args(["policy", "set"]).arg(&rules));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("Policy version 1 set (1 module"), "{stdout}");
    let (code, stdout, _) = run(server.cli().args(["policy", "get", "--json"]));
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["modules"]["rules.rego"], RULES);

    // A developer may read it but not set it.
    let (_, key) = server
        .call(Method::POST, "/v1/keys", Some(&server.owner_key), Some(json!({ "name": "dev", "role": "developer" })))
        .await;
    let developer = key["secret"].as_str().unwrap();
    let (status, _) = server.call(Method::GET, "/v1/policy", Some(developer), None).await;
    assert_eq!(status, StatusCode::OK);
    let set = json!({ "modules": { "main.rego": "package codexos\n\nask contains \"x\" if input.x\n" } });
    let (status, _) = server.call(Method::PUT, "/v1/policy", Some(developer), Some(set)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(versions(&server).await, [1]);
}

#[tokio::test]
async fn every_tool_call_of_a_real_execution_is_allowed_denied_or_held_by_the_policy() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start().await;
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "rules.rego", RULES);
    assert_eq!(run(server.cli().args(["policy", "set"]).arg(&rules)).0, 0);

    let manifest = format!(
        r#"
name = "fixer"
version = "1.0.0"
kind = "llm"
[model]
provider = "openai"
name = "m"
base_url = "{}"
api_key_env = "{KEY_VAR}"
[tools]
allow = ["shell"]
"#,
        model.openai_base_url()
    );
    model.push(FakeTurn::Reply {
        text: None,
        tool_calls: vec![
            ("call_ok".into(), "shell".into(), r#"{"command": "echo fine > ok.txt"}"#.into()),
            ("call_push".into(), "shell".into(), r#"{"command": "git -C . push origin main"}"#.into()),
            ("call_rm".into(), "shell".into(), r#"{"command": "rm -rf build"}"#.into()),
        ],
        input_tokens: 10,
        output_tokens: 5,
    });
    model.push(FakeTurn::Reply { text: Some("done".into()), tool_calls: vec![], input_tokens: 10, output_tokens: 1 });
    let workspace = tempfile::tempdir().unwrap();
    std::fs::create_dir(workspace.path().join("build")).unwrap();
    std::fs::write(workspace.path().join("build/out"), "x").unwrap();
    let (status, body) = register(&server, &manifest).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, execution) = start(&server, "fixer", workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    let id = execution["id"].as_str().unwrap().to_owned();

    // Allowed: it ran. Denied: recorded as the policy's, and the run goes
    // on. Asked: the execution waits, the delete not done.
    wait_for_status(&server, &id, "waiting_approval").await;
    assert_eq!(std::fs::read_to_string(workspace.path().join("ok.txt")).unwrap(), "fine\n");
    assert!(workspace.path().join("build/out").exists());
    let timeline = events(&server, &id).await;
    let denied = timeline.iter().find(|event| event["kind"] == "tool_denied").unwrap();
    assert_eq!(denied["payload"]["call_id"], "call_push");
    assert_eq!(denied["payload"]["by"], "policy");
    assert_eq!(denied["payload"]["reason"], "denied by the tenant's policy (version 1): no pushing from this tenant");
    let request = timeline.iter().find(|event| event["kind"] == "approval_requested").unwrap();
    assert_eq!(request["payload"]["call_id"], "call_rm");
    assert_eq!(request["payload"]["by"], "policy");
    assert_eq!(request["payload"]["arguments"], r#"{"command": "rm -rf build"}"#);
    assert!(request["payload"]["reason"].as_str().unwrap().contains("`rm -rf build` deletes recursively"), "{request}");
    let called: Vec<&str> = timeline
        .iter()
        .filter(|event| event["kind"] == "tool_call")
        .map(|event| event["payload"]["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(called, ["call_ok"], "only the allowed call ran");

    // Approved, the delete runs; the model read the denial's reason.
    let seq = request["seq"].to_string();
    let (code, _, stderr) = run(server.cli().args(["exec", "approve", &id, &seq]));
    assert_eq!(code, 0, "{stderr}");
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}");
    assert!(!workspace.path().join("build").exists());
    model.check_tool_calls_answered().unwrap();
    let answers = model.requests().last().unwrap().body["messages"].clone();
    let push_answer =
        answers.as_array().unwrap().iter().find(|message| message["tool_call_id"] == "call_push").unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(push_answer.contains("no pushing from this tenant"), "{push_answer}");
}

#[tokio::test]
async fn installs_and_starts_are_put_to_the_policy_and_refusals_are_audited_with_their_reasons() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let workflow = "name = \"tidy\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                    [[steps]]\ntool = \"shell\"\nargs = { command = \"true\" }\n";
    let (status, body) = register(&server, workflow).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The default policy with one setting: only signed agents of the
    // platform team.
    let default = write(dir.path(), "default.rego", codexos_policy::DEFAULT_POLICY);
    let settings = write(dir.path(), "settings.json", r#"{"settings": {"trusted_publishers": ["platform-team"]}}"#);
    let (code, _, stderr) = run(server.cli().args(["policy", "set"]).arg(&default).arg("--data").arg(&settings));
    assert_eq!(code, 0, "{stderr}");

    // Starting the agent registered before is refused now, naming why.
    let workspace = tempfile::tempdir().unwrap();
    let (status, body) = start(&server, "tidy", workspace.path()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "policy_denied");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("only agents signed by platform-team may be installed or run; tidy is unsigned"),
        "{message}"
    );
    let (_, list) = server.get("/v1/executions").await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 0, "nothing was queued");

    // So is installing another unsigned one, and nothing is stored.
    let (status, body) = register(&server, &workflow.replace("tidy", "sweep")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = server.get("/v1/agents/sweep").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The audit log keeps the refusals with their reasons.
    let (status, log) = server.get("/v1/audit?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let refused: Vec<&Value> =
        log["entries"].as_array().unwrap().iter().filter(|entry| entry["outcome"] == "denied").collect();
    assert_eq!(refused.len(), 2, "{log}");
    for entry in refused {
        assert_eq!(entry["details"]["error"]["code"], "policy_denied", "{entry}");
        assert!(entry["details"]["error"]["message"].as_str().unwrap().contains("platform-team"), "{entry}");
    }
}

#[tokio::test]
async fn policy_test_runs_case_files_against_local_modules_and_the_tenants_policy() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "rules.rego", RULES);
    let cases = write(
        dir.path(),
        "cases.json",
        r#"{"cases": [
  {"name": "pushing is denied", "expect": "deny", "reason": "no pushing",
   "input": {"action": "tool_call", "tool": "shell", "args": {"command": "git push origin main"}}},
  {"name": "deleting asks", "expect": "ask",
   "input": {"action": "tool_call", "tool": "shell", "args": {"command": "rm -r target"}}},
  {"name": "reading is fine", "expect": "allow",
   "input": {"action": "tool_call", "tool": "read_file", "args": {"path": "README.md"}}}
]}"#,
    );

    // Local modules, no server needed: every case passes.
    let (code, stdout, stderr) = run(server.cli().args(["policy", "test"]).arg(&cases).arg("--policy").arg(&rules));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("PASS  pushing is denied: deny: no pushing from this tenant"), "{stdout}");
    assert!(stdout.contains("PASS  deleting asks: ask"), "{stdout}");

    // The tenant's policy (the default one until set): the push is
    // allowed there, so that case fails and the exit status says so.
    let (code, stdout, _) = run(server.cli().args(["policy", "test", "--json"]).arg(&cases));
    assert_eq!(code, 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["policy"], "the tenant's policy (default)");
    assert_eq!(report["failed"], 2, "{report}");
    assert_eq!(report["results"][0]["decision"]["verdict"], "allow");

    // Once set, the tenant's policy passes them all.
    assert_eq!(run(server.cli().args(["policy", "set"]).arg(&rules)).0, 0);
    let (code, stdout, stderr) = run(server.cli().args(["policy", "test"]).arg(&cases));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Testing the tenant's policy (version 1)"), "{stdout}");

    // A malformed case file says what is wrong.
    let malformed = write(dir.path(), "bad.json", r#"{"cases": [{"name": "x", "expect": "maybe", "input": {}}]}"#);
    let (code, _, stderr) = run(server.cli().args(["policy", "test"]).arg(&malformed).arg("--policy").arg(&rules));
    assert_ne!(code, 0);
    assert!(stderr.contains("bad.json"), "{stderr}");
}

#[tokio::test]
async fn the_policy_is_asked_again_when_an_execution_resumes() {
    // A policy set while an execution waits applies to what it does next:
    // the worker reads the tenant's current policy whenever it leases.
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = "name = \"careful\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                    [approval]\ntools = [\"shell\"]\n[[steps]]\ntool = \"shell\"\nargs = { command = \"git push origin main\" }\n";
    let (id, _workspace) = waiting_for_approval(&server, manifest, "careful").await;

    let rules = write(dir.path(), "rules.rego", RULES);
    assert_eq!(run(server.cli().args(["policy", "set"]).arg(&rules)).0, 0);
    let seq = approval_request(&server, &id).await;
    assert_eq!(run(server.cli().args(["exec", "approve", &id, &seq])).0, 0);
    wait_for_event(&server, &id, |event| event["kind"] == "tool_denied").await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "failed", "{execution}");
    let denied = events(&server, &id).await.into_iter().find(|event| event["kind"] == "tool_denied").unwrap();
    assert_eq!(denied["payload"]["by"], "policy", "{denied}");
}

#[tokio::test]
async fn a_call_a_person_denied_never_runs_even_if_the_policy_stops_asking() {
    // Regression: the denial was only looked at while something still
    // asked, so a newer policy that no longer asked let the call run.
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let asks = write(
        dir.path(),
        "asks.rego",
        "package codexos\n\nask contains \"a person looks\" if input.tool == \"shell\"\n",
    );
    assert_eq!(run(server.cli().args(["policy", "set"]).arg(&asks)).0, 0);
    let manifest = "name = \"toucher\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                    [[steps]]\ntool = \"shell\"\nargs = { command = \"touch denied.txt\" }\n";
    let (id, workspace) = waiting_for_approval(&server, manifest, "toucher").await;

    let rules = write(dir.path(), "rules.rego", RULES);
    assert_eq!(run(server.cli().args(["policy", "set"]).arg(&rules)).0, 0);
    let seq = approval_request(&server, &id).await;
    let (code, _, stderr) = run(server.cli().args(["exec", "deny", &id, &seq, "--reason", "not today"]));
    assert_eq!(code, 0, "{stderr}");
    finished(&server, &id).await;
    assert!(!workspace.path().join("denied.txt").exists(), "the denied call ran");
    let denied = events(&server, &id).await.into_iter().find(|event| event["kind"] == "tool_denied").unwrap();
    assert!(denied["payload"]["reason"].as_str().unwrap().contains("not today"), "{denied}");
}
