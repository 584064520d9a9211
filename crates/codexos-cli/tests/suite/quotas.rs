//! Quotas per tenant: the request rate (429 `rate_limited`), executions at
//! once, CPU per month and storage (429 `quota_exceeded`), usage through
//! the API and the CLI, and an operator's `codexos tenant quota` applied
//! by a running server without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use codexos_test_support::{TestServer, run};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{events, finished, sandbox_available, server};

/// `codexos tenant quota default ARGS` on the server's database, while it runs.
fn set_quota(server: &TestServer, args: &[&str]) -> (i32, String, String) {
    let mut command = server.cli();
    command.args(["tenant", "quota", "default"]).args(args);
    if let Some(url) = server.database_url() {
        command.args(["--database-url", url]);
    }
    run(&mut command)
}

/// GET /v1/usage with the owner key, waiting out the rate limit if needed.
async fn usage(server: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = server.request(Method::GET, "/v1/usage").bearer_auth(&server.owner_key).send().await.unwrap();
        let status = response.status();
        let retry_after = retry_after(&response);
        let body: Value = response.json().await.unwrap();
        match status {
            StatusCode::OK => return body,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(Instant::now() < deadline, "still rate limited: {body}");
                tokio::time::sleep(Duration::from_secs(retry_after.unwrap())).await;
            }
            other => panic!("GET /v1/usage answered {other}: {body}"),
        }
    }
}

/// Waits until the running server applies the quotas just set (it reads
/// them again every few seconds).
async fn wait_for_usage(server: &TestServer, applied: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let usage = usage(server).await;
        if applied(&usage) {
            return usage;
        }
        assert!(Instant::now() < deadline, "the new quotas never applied: {usage}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response.headers().get("retry-after").map(|value| value.to_str().unwrap().parse().unwrap())
}

async fn create_agent(server: &TestServer, manifest: &str) {
    let body = json!({ "manifest": manifest });
    let (status, answer) = server.call(Method::POST, "/v1/agents", Some(&server.owner_key), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// POST /v1/executions; the status and the answer.
async fn try_start(server: &TestServer, agent: &str, workspace: &Path) -> (StatusCode, Option<u64>, Value) {
    let request = json!({ "agent": agent, "task": "work", "workspace": workspace.to_str().unwrap() });
    let response = server
        .request(Method::POST, "/v1/executions")
        .bearer_auth(&server.owner_key)
        .json(&request)
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (response.status(), retry_after(&response));
    (status, retry_after, response.json().await.unwrap())
}

async fn execution_count(server: &TestServer) -> usize {
    let (status, list) = server.get("/v1/executions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["executions"].as_array().unwrap().len()
}

const WAITING_WORKFLOW: &str = r#"
name = "waiter"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "sleep 30" }
"#;

/// Two steps: a pause requested during the first takes effect after it.
const TWO_STEP_WORKFLOW: &str = r#"
name = "two-steps"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "sleep 2" }
[[steps]]
tool = "shell"
args = { command = "echo done" }
"#;

/// A step that keeps a CPU busy for a moment.
const BUSY_WORKFLOW: &str = r#"
name = "busy"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo $i" }
"#;

#[tokio::test]
async fn a_tenant_over_its_request_rate_gets_429_with_retry_after_and_recovers() {
    let server = server().await;
    let (code, stdout, stderr) = set_quota(&server, &["--requests-per-second", "2", "--burst", "2"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("requests_per_second        2 "), "{stdout}");
    assert!(stdout.contains("set for this tenant") && stdout.contains("installation default"), "{stdout}");
    wait_for_usage(&server, |usage| usage["requests"] == json!({ "per_second": 2, "burst": 2 })).await;

    // A full bucket (2 tokens at 2 per second) lets two through, not three.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = server.request(Method::GET, "/v1/me").bearer_auth(&server.owner_key).send().await.unwrap();
        answers.push((response.status(), retry_after(&response), response.json::<Value>().await.unwrap()));
    }
    let statuses: Vec<StatusCode> = answers.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses, vec![StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS], "{answers:?}");
    let (_, wait, body) = &answers[2];
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 requests per second (burst 2)"), "{message}");
    let wait = wait.expect("a Retry-After header");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");

    // A refused request that would change something is refused alike, and
    // leaves no audit entry (a flood must not become a flood of writes).
    let mut refused_post = None;
    for _ in 0..10 {
        let (status, body) = server
            .call(Method::POST, "/v1/keys", Some(&server.owner_key), Some(json!({ "name": "k", "role": "viewer" })))
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused_post = Some(body);
            break;
        }
    }
    assert_eq!(refused_post.expect("no POST was refused")["error"]["code"], "rate_limited");

    // After the wait, requests go through again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if server.get("/v1/me").await.0 == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the tenant stayed rate limited");
    }

    // Counted per tenant; /metrics itself needs no key and is not limited.
    let text = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let limited: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix(r#"codexos_rate_limited_total{tenant="default"} "#))
        .unwrap_or_else(|| panic!("no codexos_rate_limited_total in\n{text}"))
        .parse()
        .unwrap();
    assert!(limited >= 2.0, "{limited}");

    // Back to the defaults, and the audit log holds the created keys only.
    let (code, stdout, stderr) = set_quota(&server, &["--reset"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("set for this tenant"), "{stdout}");
    wait_for_usage(&server, |usage| usage["requests"] == json!({ "per_second": 50, "burst": 100 })).await;
    let (status, audit) = server.get("/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    for entry in audit["entries"].as_array().unwrap() {
        assert_ne!(entry["details"]["status"], 429, "a rate-limited request was audited: {entry}");
    }
}

#[tokio::test]
async fn a_tenant_at_its_concurrency_limit_cannot_start_another_execution() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let (code, _, stderr) = set_quota(&server, &["--max-concurrent-executions", "1"]);
    assert_eq!(code, 0, "{stderr}");
    wait_for_usage(&server, |usage| usage["executions"]["limit"] == 1).await;
    create_agent(&server, WAITING_WORKFLOW).await;
    let workspace = tempfile::tempdir().unwrap();

    let (status, _, first) = try_start(&server, "waiter", workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first = first["id"].as_str().unwrap().to_owned();
    let other_workspace = tempfile::tempdir().unwrap();
    let (status, wait, refused) = try_start(&server, "waiter", other_workspace.path()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["error"]["code"], "quota_exceeded");
    assert_eq!(
        refused["error"]["message"],
        "the tenant runs 1 execution, its limit (max_concurrent_executions 1); wait for one to finish"
    );
    assert_eq!(wait, Some(5));
    assert_eq!(execution_count(&server).await, 1, "the refused execution must not exist");
    let usage = usage(&server).await;
    assert_eq!(usage["executions"]["active"], 1, "{usage}");
    assert_eq!(usage["executions"]["created_this_period"], 1, "{usage}");

    // Once the first is done, there is room again.
    let (code, _, stderr) = run(server.cli().args(["exec", "cancel", &first]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(finished(&server, &first).await["status"], "cancelled");
    let (status, _, second) = try_start(&server, "waiter", other_workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    let (code, _, stderr) = run(server.cli().args(["exec", "cancel", &second]));
    assert_eq!(code, 0, "{stderr}");
    finished(&server, &second).await;
}

#[tokio::test]
async fn a_tenant_without_cpu_seconds_left_starts_and_resumes_nothing() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    let workspace = tempfile::tempdir().unwrap();

    // Sandbox CPU counts for the tenant's month, exactly as the executions
    // record it.
    create_agent(&server, BUSY_WORKFLOW).await;
    let (status, _, busy) = try_start(&server, "busy", workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{busy}");
    let busy = finished(&server, busy["id"].as_str().unwrap()).await;
    assert_eq!(busy["status"], "succeeded", "{busy}");
    let cpu_ms = busy["totals"]["cpu_ms"].as_i64().unwrap();
    assert!(cpu_ms > 0, "{busy}");
    let used = usage(&server).await["cpu_seconds"]["used"].as_f64().unwrap();
    assert_eq!((used * 1000.0).round() as i64, cpu_ms);

    // An execution paused between its steps, to resume later.
    create_agent(&server, TWO_STEP_WORKFLOW).await;
    let paused_workspace = tempfile::tempdir().unwrap();
    let (status, _, paused) = try_start(&server, "two-steps", paused_workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{paused}");
    let paused = paused["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !events(&server, &paused).await.iter().any(|event| event["kind"] == "tool_call") {
        assert!(Instant::now() < deadline, "the first step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _, stderr) = run(server.cli().args(["exec", "pause", &paused]));
    assert_eq!(code, 0, "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get(&format!("/v1/executions/{paused}")).await.1["status"] != "paused" {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No CPU left this month: creation is refused until the next month.
    let (code, stdout, stderr) = set_quota(&server, &["--cpu-seconds-per-month", "0"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("cpu_seconds_per_month      0 "), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (wait, refused) = loop {
        let (status, wait, answer) = try_start(&server, "busy", workspace.path()).await;
        if status == StatusCode::TOO_MANY_REQUESTS && answer["error"]["code"] == "quota_exceeded" {
            break (wait, answer);
        }
        // Created before the server read the new quota: let it end.
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        finished(&server, answer["id"].as_str().unwrap()).await;
        assert!(Instant::now() < deadline, "the CPU quota never applied");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("cpu_seconds_per_month") && message.contains("renews on"), "{message}");
    let wait = wait.expect("a Retry-After header");
    assert!((1..=31 * 86_400).contains(&wait), "Retry-After {wait}: until the next month");
    let after_refusal = execution_count(&server).await;
    let (status, _, _) = try_start(&server, "busy", workspace.path()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(execution_count(&server).await, after_refusal, "a refused execution must not exist");

    // Resuming is not creating: the worker refuses to run it on.
    let (code, _, stderr) = run(server.cli().args(["exec", "resume", &paused]));
    assert_eq!(code, 0, "{stderr}");
    let ended = finished(&server, &paused).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["outcome"]["reason"], "quota_exceeded", "{ended}");
    assert!(ended["outcome"]["error"].as_str().unwrap().contains("cpu_seconds_per_month"), "{ended}");
}

#[tokio::test]
async fn usage_shows_the_figures_through_the_api_and_the_cli() {
    let server = server().await;
    let usage_now = usage(&server).await;
    let period = usage_now["period"].as_str().unwrap().to_owned();
    assert_eq!(period.len(), 7, "YYYY-MM: {period}");
    assert!(usage_now["resets_at"].as_str().unwrap().ends_with("-01T00:00:00.000Z"), "{usage_now}");
    assert_eq!(
        usage_now,
        json!({
            "tenant": "default",
            "period": period,
            "resets_at": usage_now["resets_at"],
            "requests": { "per_second": 50, "burst": 100 },
            "executions": { "active": 0, "limit": 10, "created_this_period": 0 },
            "cpu_seconds": { "used": 0.0, "limit": 360000 },
            "storage_bytes": { "used": 0, "limit": 53687091200u64 },
        })
    );

    // Every role may read it.
    let (status, viewer) = server
        .call(Method::POST, "/v1/keys", Some(&server.owner_key), Some(json!({ "name": "v", "role": "viewer" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let (status, seen) = server.call(Method::GET, "/v1/usage", viewer["secret"].as_str(), None).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let (status, _) = server.call(Method::GET, "/v1/usage", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (code, stdout, stderr) = set_quota(&server, &["--storage", "10GiB", "--max-concurrent-executions", "3"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(changed)") && stdout.contains("10.0 GiB"), "{stdout}");
    let applied = wait_for_usage(&server, |usage| usage["executions"]["limit"] == 3).await;
    assert_eq!(applied["storage_bytes"], json!({ "used": 0, "limit": 10u64 << 30 }));

    let (code, stdout, stderr) = run(server.cli().args(["usage"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("default, {period}")), "{stdout}");
    assert!(stdout.contains("requests    50 per second, bursts of 100"), "{stdout}");
    assert!(stdout.contains("executions  0 running of 3 at once; 0 started this month"), "{stdout}");
    assert!(stdout.contains("cpu         0.0 of 360000 seconds (0.0%)"), "{stdout}");
    assert!(stdout.contains("storage     0 bytes of 10.0 GiB (0.0%)"), "{stdout}");
    let (code, stdout, stderr) = run(server.cli().args(["usage", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, applied);

    // The operator's view without a change, as JSON.
    let (code, stdout, stderr) = set_quota(&server, &["--json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["changed"], false);
    assert_eq!(report["quotas"]["max_concurrent_executions"], 3);
    assert_eq!(report["set"]["requests_per_second"], Value::Null);

    let (_, api) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(api["paths"]["/v1/usage"]["get"]["tags"], json!(["usage"]));
}

#[tokio::test]
async fn tenant_quota_refuses_bad_input_and_changes_nothing() {
    let server = server().await;
    let mut unknown = server.cli();
    unknown.args(["tenant", "quota", "nope", "--burst", "5"]);
    if let Some(url) = server.database_url() {
        unknown.args(["--database-url", url]);
    }
    let (code, _, stderr) = run(&mut unknown);
    assert_eq!(code, 1);
    assert!(stderr.contains("no tenant 'nope' in this installation"), "{stderr}");

    for (args, expected) in [
        (&["--burst", "-5"][..], "'-5' is not a whole number of 0 or more, nor 'default'"),
        (&["--requests-per-second", "0"][..], "requests_per_second must be between 1 and 1000000, not 0"),
        (&["--burst", "99999999999"][..], "burst 99999999999 is too large"),
        (&["--storage", "lots"][..], "'lots' is not a size like 512M, 1GiB or 65536"),
        (&["--cpu-seconds-per-month", "ten"][..], "'ten' is not a whole number"),
    ] {
        let (code, _, stderr) = set_quota(&server, args);
        assert_ne!(code, 0, "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (code, stdout, stderr) = set_quota(&server, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("set for this tenant") && !stdout.contains("(changed)"), "{stdout}");

    // `default` hands one quota back to the installation.
    let (code, _, stderr) = set_quota(&server, &["--burst", "7", "--storage", "1GiB"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = set_quota(&server, &["--burst", "default"]);
    assert_eq!(code, 0, "{stderr}");
    let burst_line = stdout.lines().find(|line| line.trim_start().starts_with("burst")).unwrap();
    assert!(burst_line.contains("100") && burst_line.contains("installation default"), "{stdout}");
    let storage_line = stdout.lines().find(|line| line.trim_start().starts_with("storage")).unwrap();
    assert!(storage_line.contains("1.0 GiB") && storage_line.contains("set for this tenant"), "{stdout}");
}

#[tokio::test]
async fn a_tenant_over_its_storage_starts_nothing() {
    if !sandbox_available() {
        return;
    }
    let server = server().await;
    // A shell step is checkpointed first: the workspace's content is then
    // kept in the tenant's checkpoint store, and counted as its storage.
    let writer = "name = \"writer\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                  [[steps]]\ntool = \"shell\"\nargs = { command = \"echo more >> data.txt\" }\n";
    create_agent(&server, writer).await;
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("data.txt"), "x".repeat(64 * 1024)).unwrap();
    let (status, _, first) = try_start(&server, "writer", workspace.path()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first = finished(&server, first["id"].as_str().unwrap()).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let kept = usage(&server).await["storage_bytes"]["used"].as_u64().unwrap();
    assert!(kept >= 64 * 1024, "the checkpoint's content is counted: {kept}");

    let (code, _, stderr) = set_quota(&server, &["--storage", "1KiB"]);
    assert_eq!(code, 0, "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (wait, refused) = loop {
        let (status, wait, answer) = try_start(&server, "writer", workspace.path()).await;
        if status == StatusCode::TOO_MANY_REQUESTS && answer["error"]["code"] == "quota_exceeded" {
            break (wait, answer);
        }
        // Created before the server read the new quota: let it end.
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        finished(&server, answer["id"].as_str().unwrap()).await;
        assert!(Instant::now() < deadline, "the storage quota never applied");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("storage_bytes") && message.contains("its storage limit of 1024 bytes"), "{message}");
    assert_eq!(wait, Some(3600));
    let before = execution_count(&server).await;
    assert_eq!(try_start(&server, "writer", workspace.path()).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(execution_count(&server).await, before, "a refused execution must not exist");
}
