mod audit;
mod bad_input;
mod cli;
mod durable;
mod engine;
mod http;
mod lifecycle;
mod mcp;
mod policies;
mod quotas;
mod sandbox;
mod secrets;
mod signing;
mod sso;
mod tenancy;

use std::path::Path;
use std::time::{Duration, Instant};

use codexos_test_support::TestServer;
use reqwest::StatusCode;
use serde_json::Value;

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_codexos"))
}

pub async fn server() -> TestServer {
    TestServer::start(bin()).await
}

/// Whether this host can run the sandbox. A host that cannot fails the
/// tests that need it, unless `CODEXOS_TEST_ALLOW_NO_SANDBOX=1` says that
/// skipping them is intended: a CI without the sandbox must not pass
/// silently.
pub fn sandbox_available() -> bool {
    let missing = &codexos_sandbox::host_capabilities().missing;
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CODEXOS_TEST_ALLOW_NO_SANDBOX").is_ok_and(|value| value == "1"),
        "this host lacks sandbox protections {missing:?}; set CODEXOS_TEST_ALLOW_NO_SANDBOX=1 to skip the tests that need them"
    );
    eprintln!("skipping: this host lacks sandbox protections {missing:?}");
    false
}

/// Waits for an execution to reach a final status and returns it.
pub async fn finished(server: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, execution) = server.get(&format!("/v1/executions/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{execution}");
        if ["succeeded", "failed", "cancelled"].contains(&execution["status"].as_str().unwrap()) {
            return execution;
        }
        assert!(Instant::now() < deadline, "execution {id} did not finish: {execution}\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The execution's whole timeline (up to 1000 events).
pub async fn events(server: &TestServer, id: &str) -> Vec<Value> {
    let (status, page) = server.get(&format!("/v1/executions/{id}/events?limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["events"].as_array().unwrap().clone()
}

/// An execution's status now.
pub async fn status_of(server: &TestServer, id: &str) -> String {
    let (_, execution) = server.get(&format!("/v1/executions/{id}")).await;
    execution["status"].as_str().unwrap().to_owned()
}

/// Waits until an execution has the status `wanted`.
pub async fn wait_for_status(server: &TestServer, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while status_of(server, id).await != wanted {
        assert!(Instant::now() < deadline, "never {wanted}: {:?}", events(server, id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the timeline holds an event `wanted` accepts.
pub async fn wait_for_event(server: &TestServer, id: &str, wanted: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !events(server, id).await.iter().any(&wanted) {
        assert!(Instant::now() < deadline, "the awaited event never came: {:?}", events(server, id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
