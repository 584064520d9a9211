//! Tenant secrets end to end: set through the CLI with the value on
//! standard input, never answered by the API, kept per tenant, opened by
//! the worker for the executions whose manifests name them (the model's key,
//! `[secrets]` variables), redacted from the timeline and from what the
//! model reads, and readable again after the master key is rotated.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use codexos_core::{Role, TenantSlug};
use codexos_store::{NewApiKey, Store};
use codexos_test_support::fake_model::{FakeModel, FakeTurn};
use codexos_test_support::{TestServer, run};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{bin, events, finished, sandbox_available, server};

const GH_VALUE: &str = "ghp_sup3r-s3cret-T0ken";
const MODEL_KEY: &str = "sk-from-a-tenant-secret";

/// Runs the CLI with `stdin` as its standard input.
fn run_with_stdin(command: &mut Command, stdin: &str) -> (i32, String, String) {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn set_secret(server: &TestServer, name: &str, value: &str) -> String {
    let (code, stdout, stderr) = run_with_stdin(server.cli().args(["secret", "set", name]), &format!("{value}\n"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains(value) && !stderr.contains(value), "{stdout}{stderr}");
    stdout
}

async fn key_with_role(server: &TestServer, role: &str) -> String {
    let body = json!({ "name": role, "role": role });
    let (status, created) = server.call(Method::POST, "/v1/keys", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["secret"].as_str().unwrap().to_owned()
}

async fn put(server: &TestServer, key: &str, name: &str, body: Value) -> (StatusCode, Value) {
    server.call(Method::PUT, &format!("/v1/secrets/{name}"), Some(key), Some(body)).await
}

async fn create_agent(server: &TestServer, manifest: &str) {
    let body = json!({ "manifest": manifest });
    let (status, created) = server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

async fn start(server: &TestServer, agent: &str, workspace: &Path) -> String {
    let body = json!({ "agent": agent, "task": "go", "workspace": workspace.to_str().unwrap() });
    let (status, execution) = server.call(Method::POST, "/v1/executions", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    execution["id"].as_str().unwrap().to_owned()
}

/// The database the server uses, for what the API cannot do yet (a second tenant).
async fn open_store(server: &TestServer) -> Store {
    let url = match server.database_url() {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", server.data_dir().join("codexos.db").display()),
    };
    Store::connect(&url).await.unwrap()
}

#[tokio::test]
async fn secrets_are_set_listed_and_never_answered() {
    let server = server().await;
    // The master key was made at first start, readable by its owner only.
    let key_file = server.data_dir().join("master.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);

    let stdout = set_secret(&server, "GH_TOKEN", GH_VALUE);
    assert_eq!(stdout.trim(), "Secret GH_TOKEN created. Its value is never shown again.");
    let stdout = set_secret(&server, "GH_TOKEN", GH_VALUE);
    assert!(stdout.contains("replaced"), "{stdout}");
    set_secret(&server, "API_KEY", "another value");

    let (code, stdout, stderr) = run(server.cli().args(["secret", "list", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = list["secrets"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["API_KEY", "GH_TOKEN"]);
    assert!(!stdout.contains(GH_VALUE));
    let (code, stdout, _) = run(server.cli().args(["secret", "list"]));
    assert_eq!(code, 0);
    assert!(stdout.lines().nth(2).unwrap().starts_with("GH_TOKEN"), "{stdout}");

    // Over HTTP: metadata only, 201 then 200.
    let (status, answer) = put(&server, &server.owner_key, "NEW_ONE", json!({ "value": GH_VALUE })).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut fields: Vec<&String> = answer.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["created_at", "name", "updated_at"]);
    let (status, answer) = put(&server, &server.owner_key, "NEW_ONE", json!({ "value": "v2" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, list) = server.get("/v1/secrets").await;
    assert!(!list.to_string().contains(GH_VALUE), "{list}");

    // Bad input: clear 422s (and 400 for a malformed body).
    for (name, body, status, code) in [
        ("1BAD", json!({ "value": "v" }), StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
        ("has-dash", json!({ "value": "v" }), StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
        ("OK", json!({ "value": "" }), StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
        ("OK", json!({ "value": "a\u{0}b" }), StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
        ("OK", json!({ "value": "x".repeat(64 * 1024 + 1) }), StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
        ("OK", json!({ "value": "v", "extra": 1 }), StatusCode::BAD_REQUEST, "invalid_body"),
        ("OK", json!({ "valu": "v" }), StatusCode::BAD_REQUEST, "invalid_body"),
    ] {
        let (got, answer) = put(&server, &server.owner_key, name, body).await;
        assert_eq!((got, answer["error"]["code"].as_str().unwrap()), (status, code), "{name}: {answer}");
    }
    let (code, _, stderr) = run_with_stdin(server.cli().args(["secret", "set", "EMPTY"]), "");
    assert_eq!(code, 1);
    assert!(stderr.contains("the value is empty"), "{stderr}");
    let (code, _, stderr) = run_with_stdin(server.cli().args(["secret", "set", "no-dashes"]), "v");
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a valid secret name"), "{stderr}");

    // Roles: developers see the names, only admins and owners set; viewers neither.
    let developer = key_with_role(&server, "developer").await;
    let viewer = key_with_role(&server, "viewer").await;
    let admin = key_with_role(&server, "admin").await;
    let (status, _) = server.call(Method::GET, "/v1/secrets", Some(&developer), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.call(Method::GET, "/v1/secrets", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for key in [&developer, &viewer] {
        let (status, answer) = put(&server, key, "GH_TOKEN", json!({ "value": "stolen" })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        let (status, _) = server.call(Method::DELETE, "/v1/secrets/GH_TOKEN", Some(key), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (code, _, stderr) = run_with_stdin(
        server.cli().args(["secret", "set", "GH_TOKEN", "--api-key", &viewer, "--server", &server.url]),
        "stolen",
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("forbidden (403)"), "{stderr}");
    let (status, _) = put(&server, &admin, "ADMIN_SET", json!({ "value": "v" })).await;
    assert_eq!(status, StatusCode::CREATED);

    // Another tenant sees none of them, and cannot delete them.
    let store = open_store(&server).await;
    let globex = store.create_tenant(&TenantSlug::parse("globex").unwrap(), "Globex").await.unwrap();
    let new_key = NewApiKey { name: "owner".into(), role: Role::Owner, user: None, expires_at: None };
    let (_, globex_key) = store.create_api_key(globex.id, &new_key).await.unwrap();
    store.close().await;
    let globex_key = globex_key.expose().to_owned();
    let (status, list) = server.call(Method::GET, "/v1/secrets", Some(&globex_key), None).await;
    assert_eq!((status, list), (StatusCode::OK, json!({ "secrets": [] })));
    let (status, _) = server.call(Method::DELETE, "/v1/secrets/GH_TOKEN", Some(&globex_key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = put(&server, &globex_key, "GH_TOKEN", json!({ "value": "globex's own" })).await;
    assert_eq!(status, StatusCode::CREATED);

    // Deleting: 204, then 404.
    let (code, stdout, stderr) = run(server.cli().args(["secret", "delete", "API_KEY"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "Deleted secret API_KEY.");
    let (code, _, stderr) = run(server.cli().args(["secret", "delete", "API_KEY"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("not_found (404): secret API_KEY not found"), "{stderr}");

    // The value was never logged.
    assert!(!server.stderr().contains(GH_VALUE) && !server.stdout().contains(GH_VALUE));
}

const WORKFLOW_WITH_SECRET: &str = r#"
name = "publisher"
version = "1.0.0"
kind = "workflow"

[tools]
allow = ["shell"]

[secrets]
GITHUB_TOKEN = "GH_TOKEN"

[[steps]]
tool = "shell"
args = { command = "test \"$GITHUB_TOKEN\" = \"$(cat expected.txt)\" && echo same; echo \"token=$GITHUB_TOKEN\"" }
"#;

const WORKFLOW_WITHOUT_SECRET: &str = r#"
name = "bystander"
version = "1.0.0"
kind = "workflow"

[tools]
allow = ["shell"]

[[steps]]
tool = "shell"
args = { command = "echo \"token=${GITHUB_TOKEN:-unset}\"; env | grep -c ghp_ || true" }
"#;

fn workspace_expecting(value: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("expected.txt"), value).unwrap();
    dir
}

/// The shell step's output of a finished execution, and the whole timeline as text.
async fn shell_output(server: &TestServer, id: &str) -> (String, String) {
    let timeline = events(server, id).await;
    let result = timeline.iter().find(|event| event["kind"] == "tool_result").unwrap();
    (result["payload"]["output"].as_str().unwrap().to_owned(), Value::Array(timeline).to_string())
}

#[tokio::test]
async fn secrets_reach_only_the_executions_that_name_them_and_are_redacted() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    create_agent(&server, WORKFLOW_WITH_SECRET).await;
    create_agent(&server, WORKFLOW_WITHOUT_SECRET).await;

    // Named but not set: the execution fails, naming it.
    let workspace = workspace_expecting(GH_VALUE);
    let id = start(&server, "publisher", workspace.path()).await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "failed", "{execution}");
    assert_eq!(execution["outcome"]["reason"], "missing_secret");
    assert!(execution["outcome"]["error"].as_str().unwrap().contains("GH_TOKEN"), "{execution}");

    set_secret(&server, "GH_TOKEN", GH_VALUE);
    let id = start(&server, "publisher", workspace.path()).await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}\n{}", server.stderr());
    let (output, timeline) = shell_output(&server, &id).await;
    // The command saw the value; the timeline shows only its name.
    assert!(output.contains("same\n"), "{output}");
    assert!(output.contains("token=[secret:GH_TOKEN]"), "{output}");
    assert!(!timeline.contains(GH_VALUE), "{timeline}");
    let (code, stdout, _) = run(server.cli().args(["exec", "events", &id, "--json"]));
    assert_eq!(code, 0);
    assert!(!stdout.contains(GH_VALUE));

    // An agent that does not name the secret does not get it.
    let id = start(&server, "bystander", workspace.path()).await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}");
    let (output, _) = shell_output(&server, &id).await;
    assert!(output.contains("token=unset\n0\n"), "{output}");
    assert!(!server.stderr().contains(GH_VALUE));
}

fn llm_manifest(base_url: &str) -> String {
    format!(
        r#"
name = "keyed"
version = "1.0.0"
kind = "llm"

[model]
provider = "openai"
name = "test-model"
base_url = "{base_url}"
api_key_secret = "MODEL_KEY"
stream = false
max_retries = 0

[tools]
allow = ["shell"]

[secrets]
GITHUB_TOKEN = "GH_TOKEN"
"#
    )
}

#[tokio::test]
async fn the_model_key_comes_from_a_secret_and_the_model_never_reads_a_value() {
    if !sandbox_available() {
        return;
    }
    let model = FakeModel::start_with_api_key(MODEL_KEY).await;
    let server = server().await;
    create_agent(&server, &llm_manifest(&model.openai_base_url())).await;
    let workspace = workspace_expecting(GH_VALUE);

    // Without the key's secret: missing_api_key, naming it; the model is not called.
    set_secret(&server, "GH_TOKEN", GH_VALUE);
    let id = start(&server, "keyed", workspace.path()).await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["outcome"]["reason"], "missing_api_key", "{execution}");
    assert!(execution["outcome"]["error"].as_str().unwrap().contains("MODEL_KEY"), "{execution}");
    assert!(model.requests().is_empty());

    set_secret(&server, "MODEL_KEY", MODEL_KEY);
    model.push(FakeTurn::tool_call("call_1", "shell", r#"{"command": "echo \"token=$GITHUB_TOKEN\""}"#));
    model.push(FakeTurn::text("done"));
    let id = start(&server, "keyed", workspace.path()).await;
    let execution = finished(&server, &id).await;
    assert_eq!(execution["status"], "succeeded", "{execution}\n{}", server.stderr());
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.header("authorization"), Some(format!("Bearer {MODEL_KEY}").as_str()));
    }
    // The tool's result reached the model redacted.
    let answer = requests[1].messages().last().unwrap().to_string();
    assert!(answer.contains("token=[secret:GH_TOKEN]"), "{answer}");
    assert!(!answer.contains(GH_VALUE), "{answer}");
    let (_, timeline) = shell_output(&server, &id).await;
    assert!(!timeline.contains(GH_VALUE) && !timeline.contains(MODEL_KEY), "{timeline}");
    model.check_tool_calls_answered().unwrap();
}

#[tokio::test]
async fn rotating_the_master_key_keeps_every_secret_readable() {
    let server = server().await;
    set_secret(&server, "GH_TOKEN", GH_VALUE);
    create_agent(&server, WORKFLOW_WITH_SECRET).await;
    let key_file = server.data_dir().join("master.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();

    // While the platform runs, the embedded database's lock says no.
    if !server.is_postgres() {
        let (code, _, stderr) = run(server.cli().args(["secret", "rotate-master-key"]));
        assert_eq!(code, 1);
        assert!(stderr.contains("stop `codexos up` before rotating"), "{stderr}");
    }

    let server = server
        .restart_after(|stopped| {
            let mut command = stopped.cli();
            command.args(["secret", "rotate-master-key"]);
            if let Some(url) = stopped.database_url() {
                command.args(["--database-url", url]);
            }
            let (code, stdout, stderr) = run(&mut command);
            assert_eq!(code, 0, "{stdout}{stderr}");
            assert!(stdout.starts_with("Master key rotated: 1 tenant data key(s) re-wrapped from "), "{stdout}");
        })
        .await;
    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let retired: Vec<String> = std::fs::read_dir(server.data_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("master.key.retired-"))
        .collect();
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert!(!server.data_dir().join("master.key.next").exists());
    // The rotation is on the tenant's audit log, by the operator.
    let (_, audit) = server.get("/v1/audit?limit=1000").await;
    let rotation = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["action"] == "secrets.rotate_master_key")
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(rotation["actor"].as_str().unwrap().starts_with("operator:"), "{rotation}");
    assert_ne!(rotation["details"]["from"], rotation["details"]["to"]);

    // The restarted server still opens the secret sealed before the rotation.
    if sandbox_available() {
        let workspace = workspace_expecting(GH_VALUE);
        let id = start(&server, "publisher", workspace.path()).await;
        let execution = finished(&server, &id).await;
        assert_eq!(execution["status"], "succeeded", "{execution}\n{}", server.stderr());
        let (output, _) = shell_output(&server, &id).await;
        assert!(output.contains("same\n"), "{output}");
    }
    // Setting a secret seals it under the same, re-wrapped data key.
    let stdout = set_secret(&server, "GH_TOKEN", "replaced value");
    assert!(stdout.contains("replaced"), "{stdout}");

    // Without the (new) key, a start refuses instead of making a new key
    // that could open nothing.
    let server = server
        .restart_after(|stopped| {
            std::fs::rename(stopped.data_dir().join("master.key"), stopped.data_dir().join("moved.key")).unwrap();
            let (code, _, stderr) = run(&mut offline_up(stopped));
            assert_eq!(code, 1, "{stderr}");
            assert!(stderr.contains("does not exist, and the database's secrets are under master key"), "{stderr}");
            std::fs::rename(stopped.data_dir().join("moved.key"), stopped.data_dir().join("master.key")).unwrap();
        })
        .await;
    let (_, list) = server.get("/v1/secrets").await;
    assert_eq!(list["secrets"][0]["name"], "GH_TOKEN");
}

/// `codexos up` on a stopped server's data directory and database, for a
/// start that must fail; `timeout` ends it should it start after all.
fn offline_up(stopped: &TestServer) -> Command {
    let mut command = Command::new("timeout");
    command.arg("60").arg(bin()).args(["up", "--listen", "127.0.0.1:0"]);
    codexos_test_support::clear_client_env(&mut command);
    command.env("CODEXOS_HOME", stopped.data_dir());
    if let Some(url) = stopped.database_url() {
        command.args(["--database-url", url]);
    }
    command
}

#[tokio::test]
async fn a_readable_key_file_is_refused_at_start() {
    let server = server().await;
    let server = server
        .restart_after(|stopped| {
            let key_file = stopped.data_dir().join("master.key");
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let (code, _, stderr) = run(&mut offline_up(stopped));
            assert_eq!(code, 1, "{stderr}");
            assert!(stderr.contains("can be read or written by other users (mode 644)"), "{stderr}");
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        })
        .await;
    let (status, _) = server.get("/v1/secrets").await;
    assert_eq!(status, StatusCode::OK);
}
