//! MCP servers as agent tools: the client side of the Model Context
//! Protocol, on the official Rust SDK (`rmcp`).
//!
//! An agent's manifest lists servers (`[[mcp]]`); an execution connects them
//! all at its start ([`McpSession::connect`]), offers their tools to the model
//! next to the built-in ones, and closes them at its end. Two transports:
//!
//! - **stdio**: the server is a program started *inside the sandbox*
//!   ([`codexos_sandbox::spawn`]) with the agent's workspace as its working
//!   directory and the agent's limits and network policy, for the whole
//!   execution; JSON-RPC goes over its stdin and stdout, its stderr is kept
//!   for diagnostics, and closing the session kills its process tree.
//! - **streamable HTTP**: the server is a URL, reached *from the worker host
//!   directly*, not through the sandbox or its egress proxy: the manifest's
//!   network policy does not apply to it. Whoever may register agents may
//!   make workers send MCP requests to any address the worker can reach
//!   (loopback and internal services included); docs/tools.md says what
//!   that means for a deployment.
//!
//! A tool `read_file` of the server `fs` is called `fs.read_file` in the
//! allow-list and the timeline, and `fs__read_file` by the model (model
//! APIs accept only `[A-Za-z0-9_-]` in tool names).
//!
//! Servers are untrusted: every answer is bounded (message size, number of
//! tools, schema size, call time), a tool the engine cannot offer is
//! skipped with the reason recorded, and a server that misbehaves (dies,
//! hangs, answers garbage) becomes an error answered to the model, never a
//! panic.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use codexos_sandbox::{
    Limits, NetworkDecision, NetworkPolicy, SandboxCommand, SandboxPolicy, SandboxedProcess, Usage, Violation,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock, Implementation,
    ResourceContents,
};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use crate::conversation::ToolSpec;
use crate::manifest::Problem;

/// Separates the server from the tool in the names the model sees.
pub const MODEL_NAME_SEPARATOR: &str = "__";
/// Tool names as model APIs accept them: at most this long.
const MAX_MODEL_TOOL_NAME: usize = 64;
/// Tools offered per server at most; a server listing more is cut here.
pub const MAX_TOOLS_PER_SERVER: usize = 128;
/// The largest input schema offered to the model, serialized.
const MAX_SCHEMA_BYTES: usize = 32 * 1024;
/// Descriptions are cut to this many bytes.
const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// How much of a stdio server's stderr is kept.
const STDERR_KEPT_BYTES: usize = 64 * 1024;
/// How much of a server's stderr or error text goes into a message.
const MESSAGE_EXCERPT_BYTES: usize = 2 * 1024;
/// How long closing waits for a server to leave by itself.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A server's name in a manifest: 1 to 32 characters of `[a-z0-9_-]`,
/// starting with a letter or digit, without `__` (which separates the
/// server from the tool in the names the model sees).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct McpServerName(String);

impl McpServerName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid_chars =
            text.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte));
        let starts_well = text.bytes().next().is_some_and(|byte| byte.is_ascii_alphanumeric());
        if text.len() > 32 || !valid_chars || !starts_well || text.contains(MODEL_NAME_SEPARATOR) {
            return Err(format!(
                "'{}' is not a valid MCP server name (1-32 characters of a-z, 0-9, '_' and '-', starting with a \
                 letter or digit, without '__')",
                text.chars().take(40).collect::<String>()
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for McpServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `[[mcp]]` entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerSpec {
    pub name: McpServerName,
    pub transport: McpTransport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpTransport {
    /// A program run in the sandbox (looked up in `PATH` there, or a path
    /// inside the workspace or a system directory), spoken to over its
    /// stdin and stdout.
    Stdio { command: Vec<String>, env: Vec<(String, String)> },
    /// A streamable-HTTP endpoint, reached from the worker host.
    Http { url: String },
}

impl McpTransport {
    pub fn kind(&self) -> &'static str {
        match self {
            McpTransport::Stdio { .. } => "stdio",
            McpTransport::Http { .. } => "http",
        }
    }
}

/// Reads the manifest's `[[mcp]]` entries, with a problem for every
/// mistake, each under its key (`mcp[1].url`).
pub(crate) fn read_servers(tables: &[toml::Table]) -> (Vec<McpServerSpec>, Vec<Problem>) {
    let mut servers: Vec<McpServerSpec> = Vec::new();
    let mut problems = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let mut problem = |key: &str, reason: String| {
            let key = if key.is_empty() { format!("mcp[{index}]") } else { format!("mcp[{index}].{key}") };
            problems.push(Problem { key, reason });
        };
        for key in table.keys().filter(|key| !["name", "command", "url", "env"].contains(&key.as_str())) {
            problem(key, "unknown key".to_owned());
        }
        let name = match table.get("name") {
            None => {
                problem("name", "is required".to_owned());
                None
            }
            Some(toml::Value::String(text)) => match McpServerName::parse(text) {
                Ok(name) if servers.iter().any(|server| server.name == name) => {
                    problem("name", format!("'{name}' is declared twice"));
                    None
                }
                Ok(name) => Some(name),
                Err(reason) => {
                    problem("name", reason);
                    None
                }
            },
            Some(other) => {
                problem("name", format!("must be a string, not {}", other.type_str()));
                None
            }
        };
        let command = table.get("command").and_then(|value| match read_command(value) {
            Ok(command) => Some(command),
            Err(reason) => {
                problem("command", reason);
                None
            }
        });
        let url = table.get("url").and_then(|value| match value {
            toml::Value::String(url) => {
                let parsed = reqwest::Url::parse(url);
                if matches!(&parsed, Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some())
                {
                    Some(url.clone())
                } else {
                    problem("url", format!("'{}' is not an http(s) URL", url.chars().take(200).collect::<String>()));
                    None
                }
            }
            other => {
                problem("url", format!("must be a string, not {}", other.type_str()));
                None
            }
        });
        let env = table.get("env").and_then(|value| match read_env(value) {
            Ok(env) => Some(env),
            Err(reason) => {
                problem("env", reason);
                None
            }
        });
        let transport = match (table.contains_key("command"), table.contains_key("url")) {
            (true, true) => {
                problem("", "give command (a program run in the sandbox) or url (an HTTP server), not both".to_owned());
                None
            }
            (false, false) => {
                problem(
                    "",
                    "needs command (a program run in the sandbox) or url (a streamable-HTTP server)".to_owned(),
                );
                None
            }
            (true, false) => command.map(|command| McpTransport::Stdio { command, env: env.unwrap_or_default() }),
            (false, true) => {
                if table.contains_key("env") {
                    problem("env", "applies only to servers started with command".to_owned());
                }
                url.map(|url| McpTransport::Http { url })
            }
        };
        if let (Some(name), Some(transport)) = (name, transport) {
            servers.push(McpServerSpec { name, transport });
        }
    }
    (servers, problems)
}

fn read_command(value: &toml::Value) -> Result<Vec<String>, String> {
    let toml::Value::Array(items) = value else {
        return Err(format!("must be a list of strings (the program and its arguments), not {}", value.type_str()));
    };
    let command: Vec<String> = items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect();
    if command.len() != items.len() {
        return Err("must be a list of strings (the program and its arguments)".to_owned());
    }
    if command.first().is_none_or(String::is_empty) {
        return Err("must start with the program to run".to_owned());
    }
    if command.len() > 256 || command.iter().any(|part| part.len() > 4096 || part.contains('\0')) {
        return Err("has too many or too long arguments, or a NUL byte".to_owned());
    }
    Ok(command)
}

fn read_env(value: &toml::Value) -> Result<Vec<(String, String)>, String> {
    let toml::Value::Table(table) = value else {
        return Err(format!("must be a table of strings ({{ NAME = \"value\" }}), not {}", value.type_str()));
    };
    if table.len() > 64 {
        return Err("has more than 64 variables".to_owned());
    }
    let mut env = Vec::new();
    for (name, value) in table {
        let valid_name = name.bytes().next().is_some_and(|byte| byte.is_ascii_alphabetic() || byte == b'_')
            && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
            && name.len() <= 128;
        if !valid_name {
            return Err(format!(
                "'{}' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                name.chars().take(64).collect::<String>()
            ));
        }
        match value {
            toml::Value::String(text) if !text.contains('\0') && text.len() <= 64 * 1024 => {
                env.push((name.clone(), text.clone()));
            }
            toml::Value::String(_) => return Err(format!("{name}: the value is too long or has a NUL byte")),
            other => return Err(format!("{name}: must be a string, not {}", other.type_str())),
        }
    }
    Ok(env)
}

/// Checks an allow-list entry naming MCP tools: `server.tool` or
/// `server.*`, the server declared in `[[mcp]]`. `None` when the entry is
/// not of that form (it names a built-in tool, or nothing).
pub(crate) fn check_allow_entry(entry: &str, servers: &[McpServerSpec]) -> Option<Result<(), String>> {
    let (server, tool) = entry.split_once('.')?;
    if !servers.iter().any(|spec| spec.name.as_str() == server) {
        let declared: Vec<&str> = servers.iter().map(|spec| spec.name.as_str()).collect();
        return Some(Err(if declared.is_empty() {
            format!("'{entry}' names the MCP server '{server}', but the manifest declares no [[mcp]] server")
        } else {
            format!(
                "'{entry}' names the MCP server '{server}', which is not declared (declared: {})",
                declared.join(", ")
            )
        }));
    }
    let valid_tool = tool == "*"
        || (!tool.is_empty() && tool.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'));
    if !valid_tool {
        return Some(Err(format!("'{entry}': after the server comes a tool name ([A-Za-z0-9_-]) or '*'")));
    }
    Some(Ok(()))
}

/// Whether the allow-list entry `allowed` lets the MCP tool `server.tool` be called.
pub fn allow_entry_matches(allowed: &str, qualified_name: &str) -> bool {
    match allowed.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => {
            qualified_name.strip_prefix(prefix).is_some_and(|tool| !tool.is_empty() && !tool.contains('.'))
        }
        _ => allowed == qualified_name,
    }
}

/// Where stdio servers run and how much of a server's answers is accepted.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// The agent's workspace: the servers' working directory, writable.
    pub workspace: PathBuf,
    /// The stdio servers' limits; `timeout` bounds their whole life and
    /// `cpu_seconds` all the CPU each spends.
    pub limits: Limits,
    pub network: NetworkPolicy,
    pub hidden_paths: Vec<PathBuf>,
    /// Extra host paths visible read-only to stdio servers (e.g. their program).
    pub read_only_paths: Vec<PathBuf>,
    pub allow_missing_protections: bool,
    /// Time for one server to start, initialize and list its tools.
    pub connect_timeout: Duration,
    /// The largest message accepted from a server: a line over stdio, a JSON
    /// body or an event over HTTP. A stdio server that sends a larger one
    /// is disconnected.
    pub max_message_bytes: usize,
    /// The most of a call's answer that is kept, in bytes of text.
    pub output_limit_bytes: usize,
    /// Tenant secrets for the stdio servers' environment (`[secrets]`),
    /// set after the manifest's own `env`.
    pub env: Vec<(String, secrecy::SecretString)>,
}

/// A tool of a connected server, as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    pub server: McpServerName,
    /// The server's own name for the tool.
    pub tool: String,
    /// `server.tool`: what the allow-list and the timeline say.
    pub qualified_name: String,
    /// The tool for the model, named `server__tool`.
    pub spec: ToolSpec,
}

/// What connecting a server found, for the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpConnected {
    pub server: McpServerName,
    pub transport: &'static str,
    /// Every tool it offers that the engine can offer too (`server.tool`).
    pub tools: Vec<String>,
    /// Tools left out, each with the reason.
    pub skipped: Vec<String>,
    pub duration_ms: u64,
}

/// How a server ended, for the timeline: for stdio servers the sandbox's
/// accounting of its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpClosed {
    pub server: McpServerName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<NetworkDecision>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub absent_protections: Vec<String>,
    /// The end of what the server wrote to stderr.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// Why the sandbox could not account for it, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A server that could not be connected (nothing of the session is left running).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot connect the MCP server '{server}': {reason}")]
pub struct McpConnectError {
    pub server: McpServerName,
    pub reason: String,
}

/// What a tool call came to: text for the model and whether it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCallResult {
    pub output: String,
    pub is_error: bool,
}

/// The connected servers of one execution (none by default).
#[derive(Default)]
pub struct McpSession {
    connections: Vec<Connection>,
    tools: Vec<McpTool>,
    connected: Vec<McpConnected>,
    output_limit_bytes: usize,
}

impl std::fmt::Debug for McpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSession").field("connected", &self.connected).finish_non_exhaustive()
    }
}

struct Connection {
    name: McpServerName,
    client: Option<RunningService<RoleClient, ClientConfig>>,
    /// The sandboxed process of a stdio server.
    process: Option<SandboxedProcess>,
    /// Set when a stdio server sent a message over the size limit.
    oversized: Arc<AtomicBool>,
    max_message_bytes: usize,
}

impl McpSession {
    /// Connects every server in order: starts it (stdio) or reaches it
    /// (HTTP), initializes the MCP session and lists its tools, each within
    /// `connect_timeout`. The first server that fails ends the attempt: the
    /// ones already connected are closed again.
    pub async fn connect(specs: &[McpServerSpec], settings: &McpSettings) -> Result<McpSession, McpConnectError> {
        let mut session = McpSession::default();
        session.output_limit_bytes = settings.output_limit_bytes;
        for spec in specs {
            let started = Instant::now();
            let (connection, listed) = match connect(spec, settings).await {
                Ok(connected) => connected,
                Err(reason) => {
                    session.close().await;
                    return Err(McpConnectError { server: spec.name.clone(), reason });
                }
            };
            let (tools, skipped) = offered_tools(&spec.name, listed);
            session.connected.push(McpConnected {
                server: spec.name.clone(),
                transport: spec.transport.kind(),
                tools: tools.iter().map(|tool| tool.qualified_name.clone()).collect(),
                skipped,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            session.tools.extend(tools);
            session.connections.push(connection);
        }
        Ok(session)
    }

    /// Every tool the servers offer (the caller filters by its allow-list).
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// What connecting each server found.
    pub fn connected(&self) -> &[McpConnected] {
        &self.connected
    }

    /// The tool the model calls `model_name` (`server__tool`).
    pub fn find(&self, model_name: &str) -> Option<&McpTool> {
        self.tools.iter().find(|tool| tool.spec.name == model_name)
    }

    /// Calls `tool` with `arguments` (a JSON object) and waits at most
    /// `timeout`. Every failure, the server's or the connection's, is an
    /// error result for the model.
    pub async fn call(
        &self,
        tool: &McpTool,
        arguments: serde_json::Map<String, serde_json::Value>,
        timeout: Duration,
    ) -> McpCallResult {
        let failed = |output: String| McpCallResult { output, is_error: true };
        let Some(connection) = self.connections.iter().find(|connection| connection.name == tool.server) else {
            return failed(format!("the MCP server '{}' is not connected", tool.server));
        };
        let Some(client) = connection.client.as_ref() else {
            return failed(format!("the MCP server '{}' is not connected", tool.server));
        };
        if client.is_closed() {
            return failed(connection.gone());
        }
        let params = CallToolRequestParams::new(tool.tool.clone()).with_arguments(arguments);
        match tokio::time::timeout(timeout, client.call_tool(params)).await {
            Err(_) => failed(format!(
                "the MCP server '{}' did not answer within {}; the call was cancelled",
                tool.server,
                humantime::format_duration(timeout)
            )),
            Ok(Err(ServiceError::McpError(error))) => failed(format!(
                "the MCP server '{}' answered with an error (code {}): {}",
                tool.server,
                error.code.0,
                excerpt(&error.message)
            )),
            Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_))) => failed(connection.gone()),
            Ok(Err(err)) => {
                failed(format!("the call to the MCP server '{}' failed: {}", tool.server, excerpt(&err.to_string())))
            }
            Ok(Ok(result)) => render(result, self.output_limit_bytes),
        }
    }

    /// Closes every server: ends its MCP session, lets a stdio server leave
    /// by itself for a moment, then kills its process tree and collects the
    /// sandbox's accounting.
    pub async fn close(mut self) -> Vec<McpClosed> {
        let mut closed = Vec::new();
        for connection in std::mem::take(&mut self.connections) {
            closed.push(connection.close().await);
        }
        closed
    }
}

impl Drop for McpSession {
    fn drop(&mut self) {
        // Dropped without `close` (the execution was interrupted): killing
        // and reaping the processes blocks for a moment, so not here.
        for connection in &mut self.connections {
            if let Some(process) = connection.process.take() {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(move || drop(process))),
                    Err(_) => drop(process),
                }
            }
        }
    }
}

impl Connection {
    /// Why the connection is gone, as precisely as is known.
    fn gone(&self) -> String {
        if self.oversized.load(Ordering::Relaxed) {
            return format!(
                "the MCP server '{}' was disconnected: it sent a message larger than {} bytes",
                self.name, self.max_message_bytes
            );
        }
        if self.process.as_ref().is_some_and(SandboxedProcess::has_ended) {
            return format!("the MCP server '{}' has exited; its tools are no longer available", self.name);
        }
        format!("the connection to the MCP server '{}' is closed; its tools are no longer available", self.name)
    }

    async fn close(mut self) -> McpClosed {
        if let Some(client) = self.client.take() {
            // Closing the session drops the transport: a stdio server sees
            // end of file on stdin.
            let _ = tokio::time::timeout(CLOSE_GRACE, client.cancel()).await;
        }
        let mut closed = McpClosed {
            server: self.name.clone(),
            exit_code: None,
            signal: None,
            usage: None,
            violations: Vec::new(),
            network: Vec::new(),
            absent_protections: Vec::new(),
            stderr: String::new(),
            error: None,
        };
        let Some(process) = self.process.take() else { return closed };
        match end_process(process).await {
            Ok(outcome) => {
                closed.exit_code = outcome.exit_code;
                closed.signal = outcome.signal;
                closed.usage = Some(outcome.usage);
                closed.violations = outcome.violations;
                closed.network = outcome.network;
                closed.absent_protections = outcome.absent_protections;
                closed.stderr = tail(&String::from_utf8_lossy(&outcome.stderr.bytes), MESSAGE_EXCERPT_BYTES);
            }
            Err(err) => closed.error = Some(err),
        }
        closed
    }
}

/// Gives a process a moment to exit by itself, then kills its tree and
/// returns the sandbox's outcome.
async fn end_process(mut process: SandboxedProcess) -> Result<codexos_sandbox::SandboxOutcome, String> {
    let deadline = Instant::now() + CLOSE_GRACE;
    while !process.has_ended() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.kill();
    match tokio::task::spawn_blocking(move || process.wait()).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("the thread waiting for the server ended abnormally".to_owned()),
    }
}

fn client_config() -> ClientConfig {
    ClientConfig::new(ClientCapabilities::default(), Implementation::new("codexos", env!("CARGO_PKG_VERSION")))
}

/// Starts or reaches one server, initializes it and lists its tools, all
/// within `connect_timeout`.
async fn connect(spec: &McpServerSpec, settings: &McpSettings) -> Result<(Connection, Vec<rmcp::model::Tool>), String> {
    let deadline = Instant::now() + settings.connect_timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut connection = Connection {
        name: spec.name.clone(),
        client: None,
        process: None,
        oversized: Arc::new(AtomicBool::new(false)),
        max_message_bytes: settings.max_message_bytes,
    };
    let served = match &spec.transport {
        McpTransport::Stdio { command, env } => {
            let mut process = start_process(command, env, settings).await?;
            let pipes = process.take_stdin().zip(process.take_stdout());
            connection.process = Some(process);
            let Some((stdin, stdout)) = pipes else {
                return Err(connection.failed("its pipes are missing".to_owned()).await);
            };
            let pipes = tokio::net::unix::pipe::Sender::from_owned_fd(stdin)
                .and_then(|stdin| Ok((stdin, tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?)));
            let (stdin, stdout) = match pipes {
                Ok(pipes) => pipes,
                Err(err) => return Err(connection.failed(format!("cannot use its pipes: {err}")).await),
            };
            let reader = LimitedLines::new(stdout, settings.max_message_bytes, Arc::clone(&connection.oversized));
            // rmcp's own limit drops a long line and goes on; ours, lower,
            // ends the connection, so that a call does not wait in vain.
            let transport = AsyncRwTransport::new_client(reader, stdin)
                .with_max_line_length(settings.max_message_bytes.saturating_add(1));
            tokio::time::timeout(remaining(), client_config().serve(transport))
                .await
                .map(|served| served.map_err(|err| err.to_string()))
        }
        McpTransport::Http { url } => {
            let transport = http_transport(url, settings)?;
            tokio::time::timeout(remaining(), client_config().serve(transport))
                .await
                .map(|served| served.map_err(|err| err.to_string()))
        }
    };
    let client = match served {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => return Err(connection.failed(format!("initialization failed: {}", excerpt(&err))).await),
        Err(_) => return Err(connection.failed(no_answer("initialize", settings)).await),
    };
    let listed =
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), client.list_all_tools()).await;
    connection.client = Some(client);
    match listed {
        Ok(Ok(tools)) => Ok((connection, tools)),
        Ok(Err(err)) => {
            Err(connection.failed(format!("listing its tools failed: {}", excerpt(&err.to_string()))).await)
        }
        Err(_) => Err(connection.failed(no_answer("tools/list", settings)).await),
    }
}

fn no_answer(request: &str, settings: &McpSettings) -> String {
    format!("no answer to {request} within {} of starting", humantime::format_duration(settings.connect_timeout))
}

impl Connection {
    /// Closes what was started and returns `reason`, with what the server's
    /// process said when it has something to say.
    async fn failed(self, reason: String) -> String {
        let oversized = self.oversized.load(Ordering::Relaxed);
        let max = self.max_message_bytes;
        let closed = self.close().await;
        let mut reason = reason;
        if oversized {
            reason.push_str(&format!(" (it sent a message larger than {max} bytes)"));
        }
        match (closed.exit_code, closed.signal) {
            (Some(code), _) => reason.push_str(&format!("; the server exited with code {code}")),
            (None, Some(signal)) if closed.violations.is_empty() => {
                reason.push_str(&format!("; the server was killed by signal {signal}"))
            }
            _ => {}
        }
        for violation in &closed.violations {
            reason.push_str(&format!("; sandbox: {}: {}", violation.kind, violation.detail));
        }
        if let Some(error) = &closed.error {
            reason.push_str(&format!("; {error}"));
        }
        if !closed.stderr.trim().is_empty() {
            reason.push_str(&format!("; its stderr ends with: {}", closed.stderr.trim()));
        }
        reason
    }
}

/// Starts a stdio server in the sandbox.
async fn start_process(
    command: &[String],
    env: &[(String, String)],
    settings: &McpSettings,
) -> Result<SandboxedProcess, String> {
    let policy = SandboxPolicy {
        workspace: settings.workspace.clone(),
        read_only_paths: settings.read_only_paths.clone(),
        read_write_paths: Vec::new(),
        hidden_paths: settings.hidden_paths.clone(),
        network: settings.network.clone(),
        limits: settings.limits.clone(),
        output_limit_bytes: STDERR_KEPT_BYTES,
        allow_missing_protections: settings.allow_missing_protections,
    };
    use secrecy::ExposeSecret;
    let env = env
        .iter()
        .cloned()
        .chain(settings.env.iter().map(|(name, value)| (name.clone(), value.expose_secret().to_owned())))
        .collect();
    let command = SandboxCommand { argv: command.to_vec(), env, cwd: None, stdin: Vec::new() };
    match tokio::task::spawn_blocking(move || codexos_sandbox::spawn(&policy, &command)).await {
        Ok(Ok(process)) => Ok(process),
        Ok(Err(err)) => Err(format!("the sandbox could not start it: {err}")),
        Err(_) => Err("the thread starting it ended abnormally".to_owned()),
    }
}

/// The streamable-HTTP transport for `url`, with our HTTP client: the
/// workspace's TLS (`http_client`), no redirects, no proxy, and the message
/// limits.
fn http_transport(url: &str, settings: &McpSettings) -> Result<StreamableHttpClientTransport<reqwest::Client>, String> {
    let client = crate::http_client::builder()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(settings.connect_timeout)
        .user_agent(concat!("codexos/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| format!("cannot set up the HTTP client: {err}"))?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    config.max_sse_event_size = settings.max_message_bytes;
    config.max_json_response_size = settings.max_message_bytes;
    // Error pages are not shown in full: a URL may point at a service that
    // is not an MCP server, and its answers are nobody's business.
    config.max_error_response_size = 512;
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

/// The tools of a server that the engine can offer, and why the others
/// were left out.
fn offered_tools(server: &McpServerName, listed: Vec<rmcp::model::Tool>) -> (Vec<McpTool>, Vec<String>) {
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    let total = listed.len();
    for tool in listed {
        if tools.len() == MAX_TOOLS_PER_SERVER {
            skipped.push(format!(
                "{} more tools: a server may offer at most {MAX_TOOLS_PER_SERVER}",
                total - tools.len() - skipped.len()
            ));
            break;
        }
        let name: String = tool.name.chars().take(80).collect();
        match offered_tool(server, &tool) {
            Ok(offered) if seen.insert(offered.tool.clone()) => tools.push(offered),
            Ok(_) => skipped.push(format!("{name}: listed twice")),
            Err(reason) => skipped.push(format!("{name}: {reason}")),
        }
    }
    (tools, skipped)
}

fn offered_tool(server: &McpServerName, tool: &rmcp::model::Tool) -> Result<McpTool, String> {
    let name = tool.name.as_ref();
    let valid_chars = name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if name.is_empty() || !valid_chars {
        return Err("the name must be letters, digits, '_' and '-' (model APIs accept nothing else)".to_owned());
    }
    let model_name = format!("{server}{MODEL_NAME_SEPARATOR}{name}");
    if model_name.len() > MAX_MODEL_TOOL_NAME {
        return Err(format!("'{model_name}' is longer than the {MAX_MODEL_TOOL_NAME} characters model APIs accept"));
    }
    let mut schema = tool.input_schema.as_ref().clone();
    match schema.get("type") {
        // The protocol requires an object schema; an absent type is taken as one.
        None => {
            schema.insert("type".to_owned(), serde_json::Value::String("object".to_owned()));
        }
        Some(serde_json::Value::String(kind)) if kind == "object" => {}
        Some(other) => return Err(format!("its input schema is of type {other}, not an object")),
    }
    let schema = serde_json::Value::Object(schema);
    let schema_bytes = schema.to_string().len();
    if schema_bytes > MAX_SCHEMA_BYTES {
        return Err(format!("its input schema is {schema_bytes} bytes; at most {MAX_SCHEMA_BYTES} are offered"));
    }
    let description = tool.description.as_deref().unwrap_or_default();
    Ok(McpTool {
        server: server.clone(),
        tool: name.to_owned(),
        qualified_name: format!("{server}.{name}"),
        spec: ToolSpec {
            name: model_name,
            description: format!("[MCP server {server}] {}", head(description, MAX_DESCRIPTION_BYTES)),
            parameters: schema,
        },
    })
}

/// A call's result as text: text blocks as they are, other content
/// described, structured content as JSON when there is nothing else.
fn render(result: CallToolResult, limit: usize) -> McpCallResult {
    let mut parts: Vec<Cow<'_, str>> = Vec::new();
    for block in &result.content {
        parts.push(match block {
            ContentBlock::Text(text) => Cow::Borrowed(text.text.as_str()),
            ContentBlock::Image(image) => {
                Cow::Owned(format!("[an image ({}), {} bytes of base64, not shown]", image.mime_type, image.data.len()))
            }
            ContentBlock::Audio(audio) => {
                Cow::Owned(format!("[audio ({}), {} bytes of base64, not shown]", audio.mime_type, audio.data.len()))
            }
            ContentBlock::Resource(embedded) => match &embedded.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    Cow::Owned(format!("[resource {uri}]\n{text}"))
                }
                ResourceContents::BlobResourceContents { uri, mime_type, blob, .. } => Cow::Owned(format!(
                    "[resource {uri} ({}), {} bytes of base64, not shown]",
                    mime_type.as_deref().unwrap_or("binary"),
                    blob.len()
                )),
                _ => Cow::Borrowed("[an embedded resource of a kind not shown]"),
            },
            ContentBlock::ResourceLink(resource) => Cow::Owned(format!("[resource link: {}]", resource.uri)),
            _ => Cow::Borrowed("[content of a kind not shown]"),
        });
    }
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(Cow::Owned(structured.to_string()));
    }
    let output = if parts.is_empty() { "(no output)".to_owned() } else { parts.join("\n") };
    McpCallResult { output: head(&output, limit), is_error: result.is_error.unwrap_or(false) }
}

/// At most `limit` bytes of `text`, cut on a character boundary, with a note.
fn head(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let note = format!("\n[... cut: {} bytes in all; at most {limit} are kept]", text.len());
    let mut end = limit.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

/// The last `limit` bytes of `text`, on a character boundary.
fn tail(text: &str, limit: usize) -> String {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// A server's text quoted in a message: one line's worth, not a page.
fn excerpt(text: &str) -> String {
    head(text.trim(), MESSAGE_EXCERPT_BYTES)
}

/// A reader that fails once a line grows past `max` bytes, so that a stdio
/// server sending an endless message is disconnected instead of buffered.
struct LimitedLines<R> {
    inner: R,
    max: usize,
    line: usize,
    oversized: Arc<AtomicBool>,
}

impl<R> LimitedLines<R> {
    fn new(inner: R, max: usize, oversized: Arc<AtomicBool>) -> Self {
        Self { inner, max, line: 0, oversized }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LimitedLines<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.oversized.load(Ordering::Relaxed) {
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large")));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let mut line = self.line;
            for byte in &buf.filled()[before..] {
                line = if *byte == b'\n' { 0 } else { line + 1 };
                if line > self.max {
                    // A reader that fails must not have filled anything.
                    buf.set_filled(before);
                    self.oversized.store(true, Ordering::Relaxed);
                    return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too large")));
                }
            }
            self.line = line;
        }
        polled
    }
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
