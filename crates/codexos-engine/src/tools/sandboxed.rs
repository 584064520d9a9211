//! Running a validated tool call in the sandbox: `shell` directly, every
//! other tool through the tool runner.

use std::path::PathBuf;
use std::time::Duration;

use codexos_sandbox::{
    Limits, NetworkDecision, NetworkPolicy, SandboxCommand, SandboxError, SandboxOutcome, SandboxPolicy, StopSignal,
    Usage, Violation, ViolationKind,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::args::{self, ToolArgs};
use super::runner::{RUNNER_SUBCOMMAND, RunnerRequest};
use super::{BuiltinTool, ToolInvocation, ToolResult, output};
use crate::redact::Redactor;

/// Where and under which rules an execution's tool calls run.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The agent's workspace, writable inside the sandbox.
    pub workspace: PathBuf,
    /// The `codexos` binary, run inside the sandbox for every tool but
    /// `shell`; made visible there read-only.
    pub runner: PathBuf,
    pub limits: Limits,
    pub network: NetworkPolicy,
    /// Host paths masked inside the sandbox (e.g. the platform's data directory).
    pub hidden_paths: Vec<PathBuf>,
    pub allow_missing_protections: bool,
    /// The most of a call's output that is kept (the event log keeps up to this).
    pub output_limit_bytes: usize,
    /// Tenant secrets for the environment of shell commands (`[secrets]`).
    pub env: Vec<(String, SecretString)>,
    /// Replaces every secret value in what a call outputs, before the
    /// output is cut to size.
    pub redactor: Redactor,
}

/// How a tool call went, with the sandbox's accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolExecution {
    /// What the tool produced (for `shell`: the exit code, stdout and
    /// stderr, labelled), at most `output_limit_bytes` with a note where
    /// it was cut.
    pub output: String,
    /// The call failed: a non-zero exit, a limit that ended it, a missing
    /// file, a patch that did not apply, an HTTP error status...
    pub is_error: bool,
    /// The exit code of the process the sandbox ran (the shell command, or
    /// the tool runner), when it exited rather than was killed.
    pub exit_code: Option<i32>,
    pub violations: Vec<Violation>,
    pub network: Vec<NetworkDecision>,
    pub usage: Usage,
    pub absent_protections: Vec<String>,
}

/// Why a tool call could not run at all (nothing ran).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("the sandbox could not run the {tool} tool: {source}")]
    Sandbox {
        tool: BuiltinTool,
        #[source]
        source: SandboxError,
    },
    #[error("the {tool} tool's thread ended abnormally")]
    Thread { tool: BuiltinTool },
}

/// Environment of shell commands beyond the sandbox's defaults: nothing may
/// wait for a terminal or colour its output for one.
const SHELL_ENV: [(&str, &str); 4] = [("PAGER", "cat"), ("GIT_PAGER", "cat"), ("TERM", "dumb"), ("NO_COLOR", "1")];
/// System trees every sandbox shows; a runner there needs no extra binding.
const SYSTEM_TREES: [&str; 9] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// Runs a validated call in the sandbox (on a blocking thread) and waits
/// for it. `Err` only when the sandbox could not run at all; everything the
/// tool itself got wrong is an `is_error` execution.
pub async fn execute(invocation: &ToolInvocation, sandbox: &SandboxSettings) -> Result<ToolExecution, ToolError> {
    let invocation = invocation.clone();
    let settings = sandbox.clone();
    let tool = invocation.tool;
    // Held by this future: if it is dropped (the execution was cancelled, or
    // the worker stops), the sandbox's process tree is killed at once.
    let (_stopper, signal) = codexos_sandbox::stop_pair().map_err(|source| ToolError::Sandbox { tool, source })?;
    tokio::task::spawn_blocking(move || execute_blocking(&invocation, &settings, signal))
        .await
        .map_err(|_| ToolError::Thread { tool })?
}

fn execute_blocking(
    invocation: &ToolInvocation,
    settings: &SandboxSettings,
    stop: StopSignal,
) -> Result<ToolExecution, ToolError> {
    let tool = invocation.tool;
    let parsed = match args::parse(tool, invocation.arguments.clone()) {
        Ok(parsed) => parsed,
        Err(err) => return Ok(not_run(format!("invalid arguments for {tool}: {err}"))),
    };
    let sandbox_error = |source| ToolError::Sandbox { tool, source };
    match parsed {
        ToolArgs::Shell(args) => {
            let cwd = match &args.workdir {
                None => None,
                Some(workdir) => {
                    let relative = match args::workspace_path("workdir", workdir) {
                        Ok(relative) => relative,
                        Err(err) => return Ok(not_run(err.to_string())),
                    };
                    if !settings.workspace.join(&relative).is_dir() {
                        return Ok(not_run(format!("workdir {workdir} is not a directory in the workspace")));
                    }
                    Some(relative)
                }
            };
            let mut policy = policy(settings, false);
            if let Some(seconds) = args.timeout_seconds {
                policy.limits.timeout = policy.limits.timeout.min(Duration::from_secs(seconds));
            }
            let command = SandboxCommand {
                argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), args.command],
                env: SHELL_ENV
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .chain(settings.env.iter().map(|(name, value)| (name.clone(), value.expose_secret().to_owned())))
                    .collect(),
                cwd,
                stdin: Vec::new(),
            };
            let outcome = codexos_sandbox::run_stoppable(&policy, &command, stop).map_err(sandbox_error)?;
            Ok(shell_execution(outcome, settings.output_limit_bytes, &settings.redactor))
        }
        ToolArgs::HttpFetch(_) if settings.network == NetworkPolicy::None => {
            Ok(not_run(super::http::NO_NETWORK.to_owned()))
        }
        _ => {
            let request = RunnerRequest {
                workspace: settings.workspace.clone(),
                tool,
                arguments: invocation.arguments.clone(),
                output_limit_bytes: settings.output_limit_bytes,
            };
            let stdin = match serde_json::to_vec(&request) {
                Ok(stdin) => stdin,
                Err(err) => return Ok(not_run(format!("cannot encode the {tool} request: {err}"))),
            };
            let command = SandboxCommand {
                argv: std::iter::once(settings.runner.display().to_string())
                    .chain(RUNNER_SUBCOMMAND.iter().map(|part| (*part).to_owned()))
                    .collect(),
                env: Vec::new(),
                cwd: None,
                stdin,
            };
            let outcome =
                codexos_sandbox::run_stoppable(&policy(settings, true), &command, stop).map_err(sandbox_error)?;
            Ok(runner_execution(tool, outcome, settings.output_limit_bytes, &settings.redactor))
        }
    }
}

fn policy(settings: &SandboxSettings, with_runner: bool) -> SandboxPolicy {
    let mut read_only_paths = Vec::new();
    let runner_is_visible = SYSTEM_TREES.iter().any(|tree| settings.runner.starts_with(tree));
    if with_runner && !runner_is_visible {
        read_only_paths.push(settings.runner.clone());
    }
    let output_limit_bytes = if with_runner {
        // The runner's JSON answer holds up to the limit of text, which
        // escaping may grow up to sixfold (`\u0001`).
        settings.output_limit_bytes.saturating_mul(6).saturating_add(64 * 1024)
    } else {
        settings.output_limit_bytes
    };
    SandboxPolicy {
        workspace: settings.workspace.clone(),
        read_only_paths,
        read_write_paths: Vec::new(),
        hidden_paths: settings.hidden_paths.clone(),
        network: settings.network.clone(),
        limits: settings.limits.clone(),
        output_limit_bytes: output_limit_bytes.max(1),
        allow_missing_protections: settings.allow_missing_protections,
    }
}

/// A call refused before the sandbox ran anything.
fn not_run(output: String) -> ToolExecution {
    ToolExecution {
        output,
        is_error: true,
        exit_code: None,
        violations: Vec::new(),
        network: Vec::new(),
        usage: Usage { cpu_time: Duration::ZERO, peak_memory_bytes: 0, wall_time: Duration::ZERO },
        absent_protections: Vec::new(),
    }
}

/// Limits that end a command; other violations (a denied system call or
/// connection, cut output) are reported, and the command's own status
/// tells whether it coped.
fn ended_by_limit(violations: &[Violation]) -> bool {
    violations.iter().any(|violation| {
        matches!(
            violation.kind,
            ViolationKind::Timeout
                | ViolationKind::CpuLimit
                | ViolationKind::MemoryLimit
                | ViolationKind::PidsLimit
                | ViolationKind::FileSizeLimit
                | ViolationKind::DenialLimit
        )
    })
}

fn shell_execution(outcome: SandboxOutcome, output_limit: usize, redactor: &Redactor) -> ToolExecution {
    let mut text = match (outcome.exit_code, outcome.signal) {
        (Some(code), _) => format!("exit code: {code}\n"),
        (None, Some(signal)) => format!("killed by signal {signal}\n"),
        (None, None) => "exit status unknown\n".to_owned(),
    };
    // Secrets out first, whole: a cut below must not split a value in two.
    let redact = |captured: &codexos_sandbox::CapturedOutput| {
        let text = String::from_utf8_lossy(&captured.bytes);
        if captured.truncated { redactor.redact_cut(&text) } else { redactor.redact(&text) }
    };
    let stdout = redact(&outcome.stdout);
    let stderr = redact(&outcome.stderr);
    // Each stream gets half of what the limit leaves, and the other's unused share.
    let room = output_limit.saturating_sub(text.len() + 200);
    let stdout_room = room.saturating_sub(stderr.len().min(room / 2));
    let stderr_room = room.saturating_sub(stdout.len().min(stdout_room));
    for (name, content, captured, room) in
        [("stdout", &stdout, &outcome.stdout, stdout_room), ("stderr", &stderr, &outcome.stderr, stderr_room)]
    {
        if content.is_empty() {
            continue;
        }
        text.push_str(&format!("--- {name} ---\n"));
        text.push_str(&output::cap(content, room));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if captured.truncated {
            text.push_str(&format!(
                "[{name}: the command wrote {} bytes; the sandbox kept the first {}]\n",
                captured.total_bytes,
                captured.bytes.len()
            ));
        }
    }
    if stdout.is_empty() && stderr.is_empty() {
        text.push_str("(no output)\n");
    }
    append_violations(&mut text, &outcome.violations);
    let is_error = outcome.exit_code != Some(0) || ended_by_limit(&outcome.violations);
    finish(text, is_error, outcome, output_limit)
}

fn runner_execution(
    tool: BuiltinTool,
    outcome: SandboxOutcome,
    output_limit: usize,
    redactor: &Redactor,
) -> ToolExecution {
    let answer: Option<ToolResult> = serde_json::from_slice(&outcome.stdout.bytes).ok();
    let (mut text, is_error) = match answer {
        Some(result) if !ended_by_limit(&outcome.violations) => (redactor.redact(&result.output), result.is_error),
        _ => {
            // The runner died before answering: say what is known.
            let status = match (outcome.exit_code, outcome.signal) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => "ended".to_owned(),
            };
            let mut text = format!("the {tool} tool failed: its runner {status} without an answer\n");
            let stderr = redactor.redact(&String::from_utf8_lossy(&outcome.stderr.bytes));
            if !stderr.trim().is_empty() {
                text.push_str(&format!("--- stderr ---\n{}\n", output::cap(stderr.trim_end(), 4096)));
            }
            (text, true)
        }
    };
    let blocked: Vec<&NetworkDecision> = outcome.network.iter().filter(|decision| !decision.allowed).collect();
    if !blocked.is_empty() {
        let destinations: Vec<&str> = blocked.iter().map(|decision| decision.destination.as_str()).collect();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[the network policy blocked: {}; only the agent's allow-listed host:port pairs are reachable]\n",
            destinations.join(", ")
        ));
    }
    let violations: Vec<Violation> = outcome
        .violations
        .iter()
        .filter(|violation| violation.kind != ViolationKind::NetworkBlocked)
        .cloned()
        .collect();
    append_violations(&mut text, &violations);
    finish(text, is_error, outcome, output_limit)
}

fn append_violations(text: &mut String, violations: &[Violation]) {
    for violation in violations {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[sandbox: {}: {}]\n", violation.kind, violation.detail));
    }
}

fn finish(text: String, is_error: bool, outcome: SandboxOutcome, output_limit: usize) -> ToolExecution {
    ToolExecution {
        output: output::cap(&text, output_limit),
        is_error,
        exit_code: outcome.exit_code,
        violations: outcome.violations,
        network: outcome.network,
        usage: outcome.usage,
        absent_protections: outcome.absent_protections,
    }
}
