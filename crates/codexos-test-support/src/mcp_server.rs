//! The MCP test server (`codexos-mcp-test-server`) as tests use it: over
//! streamable HTTP in the test process, on 127.0.0.1:0, and over stdio as
//! its binary, built on first use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use codexos_mcp_test_server::TestMcpServer;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

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
/// tests, and this one is used by the engine's and the CLI's. Its crate is
/// small, so the build is quick even when nothing of it is built yet.
pub fn stdio_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--message-format=json", "-p", "codexos-mcp-test-server"])
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
