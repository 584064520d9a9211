mod bad_input;
mod cli;
mod durable;
mod engine;
mod http;
mod lifecycle;
mod mcp;
mod sandbox;

use std::path::Path;

use codexos_test_support::TestServer;

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
