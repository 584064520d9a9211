//! The MCP test server over stdio.

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match codexos_mcp_test_server::serve_stdio().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("codexos-mcp-test-server: {err}");
            ExitCode::FAILURE
        }
    }
}
