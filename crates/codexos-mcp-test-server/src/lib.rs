//! A small, real MCP server built with rmcp's server side, for testing the
//! engine's MCP client: over stdio (this crate's binary, run inside the
//! sandbox) and over streamable HTTP (`codexos_test_support::mcp_server`
//! serves it in the test process). It is a crate of its own, with few
//! dependencies, because the tests of other crates build its binary on
//! first use (see `codexos_test_support::mcp_server::stdio_server_binary`).
//!
//! Its tools: `echo`, `add`, `fail` (a tool-level error), `sleep` (for
//! timeouts), `big` (huge output), `read` (a file, to see what the sandbox
//! shows the server), `env` (an environment variable) and, over stdio only,
//! `crash` (the process exits mid-call).

use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

/// The test server's tools.
#[derive(Debug, Clone)]
pub struct TestMcpServer {
    /// Whether `crash` may end the process (stdio only: over HTTP the
    /// process is the test's own).
    can_crash: bool,
    #[allow(dead_code, reason = "the tool_handler macro reads it")]
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// The text to send back.
    pub text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    pub a: i64,
    pub b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct FailArgs {
    /// What the error says.
    pub message: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SleepArgs {
    pub milliseconds: u64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct BigArgs {
    /// How many bytes of text to answer.
    pub bytes: usize,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ReadArgs {
    pub path: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EnvArgs {
    pub name: String,
}

#[tool_router]
impl TestMcpServer {
    #[tool(description = "Answers the text it is given.")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Adds two integers.")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        a.saturating_add(b).to_string()
    }

    #[tool(description = "Always fails, with the given message.")]
    fn fail(&self, Parameters(FailArgs { message }): Parameters<FailArgs>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(message)])
    }

    #[tool(description = "Sleeps, then answers.")]
    async fn sleep(&self, Parameters(SleepArgs { milliseconds }): Parameters<SleepArgs>) -> String {
        tokio::time::sleep(Duration::from_millis(milliseconds)).await;
        format!("slept {milliseconds}ms")
    }

    #[tool(description = "Answers that many bytes of text.")]
    fn big(&self, Parameters(BigArgs { bytes }): Parameters<BigArgs>) -> String {
        "x".repeat(bytes)
    }

    #[tool(description = "Reads a file.")]
    fn read(&self, Parameters(ReadArgs { path }): Parameters<ReadArgs>) -> CallToolResult {
        match std::fs::read_to_string(&path) {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(err) => CallToolResult::error(vec![ContentBlock::text(format!("{path}: {err}"))]),
        }
    }

    #[tool(description = "Answers an environment variable's value.")]
    fn env(&self, Parameters(EnvArgs { name }): Parameters<EnvArgs>) -> String {
        std::env::var(&name).unwrap_or_else(|_| format!("{name} is not set"))
    }

    #[tool(description = "Exits the server process in the middle of the call.")]
    fn crash(&self) -> CallToolResult {
        if self.can_crash {
            std::process::exit(3);
        }
        CallToolResult::error(vec![ContentBlock::text("crash only works over stdio")])
    }
}

#[tool_handler]
impl ServerHandler for TestMcpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("A server for testing CodexOS's MCP client.")
    }
}

impl TestMcpServer {
    pub fn new(can_crash: bool) -> Self {
        Self { can_crash, tool_router: Self::tool_router() }
    }
}

/// Serves the test server on stdin and stdout until the client leaves.
pub async fn serve_stdio() -> Result<(), Box<dyn std::error::Error>> {
    let running = TestMcpServer::new(true).serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
