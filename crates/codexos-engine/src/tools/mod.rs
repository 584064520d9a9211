//! The built-in tools an agent may call, and how each call runs in the
//! sandbox.
//!
//! One mechanism for all of them: every call runs inside
//! `codexos_sandbox::run` under the execution's policy. `shell` runs
//! `/bin/sh -c COMMAND` there directly; every other tool runs the *tool
//! runner* there, the `codexos` binary itself with a hidden subcommand
//! ([`RUNNER_SUBCOMMAND`]), which reads one JSON request on stdin, does the
//! work with ordinary file APIs ([`execute_in_process`]) and answers one JSON
//! result on stdout. The sandbox confines the runner exactly as it confines a
//! shell command, so a file tool can reach nothing a shell command could not.
//!
//! Arguments are parsed against the same serde structs their JSON schemas
//! are derived from ([`parse_call`], [`BuiltinTool::spec`]), so what the model
//! is told and what is accepted cannot drift apart.

mod args;
mod files;
mod http;
mod output;
mod patch;
mod runner;
mod sandboxed;
mod search;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conversation::ToolSpec;

pub(crate) use args::schema_of;
pub use output::for_model;
pub use runner::{RUNNER_SUBCOMMAND, runner_main};
pub use sandboxed::{SandboxSettings, ToolError, ToolExecution, execute};

/// The tools every agent is offered (subject to its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinTool {
    Shell,
    ReadFile,
    WriteFile,
    ApplyPatch,
    ListDir,
    Search,
    HttpFetch,
}

impl BuiltinTool {
    pub const ALL: [BuiltinTool; 7] = [
        BuiltinTool::Shell,
        BuiltinTool::ReadFile,
        BuiltinTool::WriteFile,
        BuiltinTool::ApplyPatch,
        BuiltinTool::ListDir,
        BuiltinTool::Search,
        BuiltinTool::HttpFetch,
    ];

    /// The name the model calls the tool by.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTool::Shell => "shell",
            BuiltinTool::ReadFile => "read_file",
            BuiltinTool::WriteFile => "write_file",
            BuiltinTool::ApplyPatch => "apply_patch",
            BuiltinTool::ListDir => "list_dir",
            BuiltinTool::Search => "search",
            BuiltinTool::HttpFetch => "http_fetch",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }

    /// The tool as offered to the model: name, description and the JSON
    /// schema of its arguments (an object with its required fields and no
    /// others).
    pub fn spec(self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            parameters: args::schema(self),
        }
    }

    fn description(self) -> &'static str {
        match self {
            BuiltinTool::Shell => {
                "Runs a command with `/bin/sh -c` in the workspace (or `workdir`, relative to it) and returns its exit \
                 code, stdout and stderr. Use it to build, test, run git and other programs. It runs in a sandbox: \
                 only the workspace is writable, there is no terminal and no standard input, network access is \
                 what the agent's policy allows, and the command is killed at its timeout. Long output is cut in \
                 the middle."
            }
            BuiltinTool::ReadFile => {
                "Reads a text file of the workspace and returns its lines as they are, up to `limit` lines (default \
                 2000) from line `offset` (default 1). A note at the end says when the file goes on and which \
                 offset continues it. Binary files are refused."
            }
            BuiltinTool::WriteFile => {
                "Writes a file of the workspace with exactly `content`, replacing the file if it exists and creating \
                 missing parent directories. Prefer apply_patch for changes to part of an existing file."
            }
            BuiltinTool::ApplyPatch => {
                "Applies a unified diff to the workspace, all of it or nothing. Each file starts with `--- a/PATH` \
                 and `+++ b/PATH` (`--- /dev/null` creates a file, `+++ /dev/null` deletes one); each change is a \
                 hunk `@@ -OLD_START,OLD_COUNT +NEW_START,NEW_COUNT @@` followed by lines starting with a space \
                 (unchanged context), `-` (removed) or `+` (added). Include about 3 lines of context around each \
                 change, copied exactly from the file: context and removed lines must match the file exactly, \
                 though a hunk may sit at a different line than its header says. Hunks of a file must be in file \
                 order. Example:\n--- a/src/main.rs\n+++ b/src/main.rs\n@@ -1,3 +1,3 @@\n fn main() {\n-    \
                 println!(\"hi\");\n+    println!(\"hello\");\n }\n"
            }
            BuiltinTool::ListDir => {
                "Lists a directory of the workspace: one entry per line with its type (file, dir, symlink), size \
                 in bytes and path relative to the workspace, sorted by name. `depth` descends into \
                 subdirectories. Entries excluded by .gitignore are left out unless `include_ignored` is true; \
                 the contents of .git are never listed."
            }
            BuiltinTool::Search => {
                "Searches the workspace's text files for a regular expression (Rust regex syntax), line by line, \
                 and returns matching lines as `path:line: text`. Respects .gitignore and skips .git and binary \
                 files. Narrow it with `path` (a file or directory) and `glob` (e.g. `*.rs`)."
            }
            BuiltinTool::HttpFetch => {
                "Fetches an http:// or https:// URL through the sandbox's egress proxy and returns the status, \
                 content type and body (text only, cut when long). Only destinations the agent's network policy \
                 allows are reachable; with no network access the call fails."
            }
        }
    }
}

impl fmt::Display for BuiltinTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A call of a built-in tool whose arguments were validated by [`parse_call`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInvocation {
    pub tool: BuiltinTool,
    /// The arguments as the model sent them (a JSON object).
    pub arguments: serde_json::Value,
}

/// Why a tool call's arguments were refused before anything ran. The
/// message is meant for the model, which can correct its call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("arguments are not valid JSON: {0}")]
    InvalidJson(String),
    #[error("arguments must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// The arguments do not fit the schema: serde's message, prefixed by the
    /// field when there is one ("missing field `path`", "unknown field `foo`,
    /// expected ...", "offset: invalid type: string \"3\", expected u64").
    #[error("{0}")]
    Mismatch(String),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{field} must be relative to the workspace, not an absolute path: {path}")]
    AbsolutePath { field: &'static str, path: String },
    #[error("{field} must stay inside the workspace: {path} leads out of it")]
    EscapingPath { field: &'static str, path: String },
    #[error("{field} {path}: {reason}")]
    InvalidPath { field: &'static str, path: String, reason: &'static str },
    #[error("{field} {reason}")]
    OutOfRange { field: &'static str, reason: &'static str },
    #[error("pattern is not a valid regular expression: {0}")]
    InvalidRegex(String),
    #[error("glob is not a valid glob pattern: {0}")]
    InvalidGlob(String),
    #[error("url {url} cannot be fetched: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("headers: `{0}` is not a valid header name and value")]
    InvalidHeader(String),
    #[error("patch is not a usable unified diff: {0}")]
    InvalidPatch(String),
}

/// Parses the model's raw argument text for `tool` and validates it: the
/// schema's fields and types, then what the schema cannot say (paths inside
/// the workspace, a valid regular expression, an http URL, a well-formed
/// patch). Empty text counts as `{}`, as some models send it for tools
/// without required arguments.
pub fn parse_call(tool: BuiltinTool, raw_arguments: &str) -> Result<ToolInvocation, ArgumentError> {
    let arguments = if raw_arguments.trim().is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(raw_arguments).map_err(|err| ArgumentError::InvalidJson(err.to_string()))?
    };
    args::parse(tool, arguments.clone())?;
    Ok(ToolInvocation { tool, arguments })
}

/// What a tool produced, before the sandbox's accounting is added. This is
/// also the tool runner's answer on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    pub output: String,
    pub is_error: bool,
}

impl ToolResult {
    pub fn ok(output: impl Into<String>) -> Self {
        Self { output: output.into(), is_error: false }
    }

    pub fn error(output: impl Into<String>) -> Self {
        Self { output: output.into(), is_error: true }
    }
}

/// Output a tool keeps when run in process through [`execute_in_process`].
pub const DEFAULT_OUTPUT_LIMIT_BYTES: usize = 1024 * 1024;

/// Performs a non-shell tool call on the workspace at `root` in this
/// process, with ordinary file APIs. This is what the tool runner does
/// inside the sandbox; called anywhere else, nothing but the argument
/// checks keeps it inside `root`. `shell` is refused here: it only runs in
/// the sandbox, through [`execute`].
pub fn execute_in_process(root: &Path, invocation: &ToolInvocation) -> ToolResult {
    run_tool(root, invocation, DEFAULT_OUTPUT_LIMIT_BYTES)
}

pub(crate) fn run_tool(root: &Path, invocation: &ToolInvocation, output_limit_bytes: usize) -> ToolResult {
    let parsed = match args::parse(invocation.tool, invocation.arguments.clone()) {
        Ok(parsed) => parsed,
        Err(err) => return ToolResult::error(format!("invalid arguments for {}: {err}", invocation.tool)),
    };
    let limit = output_limit_bytes.max(1024);
    let result = match parsed {
        args::ToolArgs::Shell(_) => {
            ToolResult::error("the shell tool runs only in the sandbox, not in the tool runner".to_owned())
        }
        args::ToolArgs::ReadFile(args) => files::read_file(root, &args, limit),
        args::ToolArgs::WriteFile(args) => files::write_file(root, &args),
        args::ToolArgs::ApplyPatch(patch) => patch::apply(root, &patch),
        args::ToolArgs::ListDir(args) => files::list_dir(root, &args),
        args::ToolArgs::Search(args) => search::search(root, &args),
        args::ToolArgs::HttpFetch(args) => http::fetch_from_sandbox(&args, limit),
    };
    ToolResult { output: output::cap(&result.output, limit), is_error: result.is_error }
}
