//! A small, real MCP server built with rmcp's server side, for testing the
//! engine's MCP client: over stdio (the `codexos-mcp-test-server` binary,
//! run inside the sandbox) and over streamable HTTP (in the test process, on
//! 127.0.0.1:0).
//!
//! Its tools: `echo`, `add`, `fail` (a tool-level error), `sleep` (for
//! timeouts), `big` (huge output), `read` (a file, to see what the sandbox
//! shows the server), `env` (an environment variable) and, over stdio only,
//! `crash` (the process exits mid-call).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use tokio_util::sync::CancellationToken;

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

/// The test server over streamable HTTP on 127.0.0.1:0; stops when dropped.
#[derive(Debug)]
pub struct HttpMcpServer {
    address: SocketAddr,
    stop: CancellationToken,
}

impl HttpMcpServer {
    pub async fn start() -> Self {
        let stop = CancellationToken::new();
        let config = StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
        let service: StreamableHttpService<TestMcpServer, LocalSessionManager> =
            StreamableHttpService::new(|| Ok(TestMcpServer::new(false)), Default::default(), config);
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(stopped.cancelled_owned()).await;
        });
        Self { address, stop }
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.address)
    }
}

impl Drop for HttpMcpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The `codexos-mcp-test-server` binary (the stdio server), built on first
/// use: `cargo test` builds a package's binaries only for that package's own
/// tests, and this one is used by the engine's and the CLI's.
pub fn stdio_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--message-format=json", "-p", env!("CARGO_PKG_NAME")])
                .args(["--bin", "codexos-mcp-test-server"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("cannot run cargo to build the MCP test server");
            assert!(output.status.success(), "building the MCP test server failed");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let executable = stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|message| message["target"]["name"] == "codexos-mcp-test-server")
                .find_map(|message| message["executable"].as_str().map(PathBuf::from));
            executable.expect("cargo did not say where the MCP test server is")
        })
        .clone()
}
