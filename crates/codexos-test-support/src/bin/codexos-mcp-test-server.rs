//! The MCP test server over stdio (see `codexos_test_support::mcp_server`).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match codexos_test_support::mcp_server::serve_stdio().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("codexos-mcp-test-server: {err}");
            ExitCode::FAILURE
        }
    }
}
