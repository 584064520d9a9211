//! The tool runner: the in-sandbox side of every tool but `shell`. The
//! `codexos` binary runs it as `codexos sandbox tool-runner` inside the
//! sandbox; it reads one [`RunnerRequest`] as JSON on stdin and writes one
//! [`ToolResult`] as JSON on stdout.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::{BuiltinTool, ToolInvocation, ToolResult};

/// The arguments after the binary that start the runner:
/// `codexos sandbox tool-runner`.
pub const RUNNER_SUBCOMMAND: [&str; 2] = ["sandbox", "tool-runner"];

/// A request larger than this is refused (a written file's content is the
/// only large part).
const MAX_REQUEST_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunnerRequest {
    /// The workspace, at the same path inside the sandbox as outside.
    pub workspace: PathBuf,
    pub tool: BuiltinTool,
    pub arguments: serde_json::Value,
    pub output_limit_bytes: usize,
}

/// The tool runner's `main`: stdin JSON in, stdout JSON out. Exits 0 when it
/// answered (the answer says whether the tool failed), 2 when the request
/// was unusable (answered too, as a failed result). Never panics on bad
/// input.
pub fn runner_main() -> ExitCode {
    let (result, code) = match read_request() {
        Ok(request) => {
            let invocation = ToolInvocation { tool: request.tool, arguments: request.arguments };
            (super::run_tool(&request.workspace, &invocation, request.output_limit_bytes), ExitCode::SUCCESS)
        }
        Err(message) => (ToolResult::error(format!("tool runner: {message}")), ExitCode::from(2)),
    };
    let encoded = match serde_json::to_string(&result) {
        Ok(encoded) => encoded,
        Err(_) => r#"{"output":"tool runner: cannot encode the result","is_error":true}"#.to_owned(),
    };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(encoded.as_bytes()).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::from(3);
    }
    code
}

fn read_request() -> Result<RunnerRequest, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES + 1)
        .read_to_end(&mut input)
        .map_err(|err| format!("cannot read the request: {err}"))?;
    if input.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!("the request is larger than {MAX_REQUEST_BYTES} bytes"));
    }
    let request: RunnerRequest =
        serde_json::from_slice(&input).map_err(|err| format!("the request is not valid: {err}"))?;
    if !request.workspace.is_absolute() {
        return Err("the request's workspace must be an absolute path".to_owned());
    }
    Ok(request)
}
