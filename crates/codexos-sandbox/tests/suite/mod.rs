mod bad_input;
mod escape;
mod interactive;
mod limits;
mod network;
mod tools;

use std::path::Path;

use codexos_sandbox::{SandboxCommand, SandboxOutcome, SandboxPolicy};

/// A fresh workspace in its own temporary directory.
pub fn workspace() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn policy(workspace: &Path) -> SandboxPolicy {
    SandboxPolicy::for_workspace(workspace)
}

/// Runs a shell script in the sandbox; the outcome must exist (setup worked).
pub fn sh(policy: &SandboxPolicy, script: &str) -> SandboxOutcome {
    let command = SandboxCommand { argv: vec!["sh".into(), "-c".into(), script.into()], ..SandboxCommand::default() };
    codexos_sandbox::run(policy, &command).unwrap_or_else(|err| panic!("sandbox failed: {err}"))
}

pub fn python(policy: &SandboxPolicy, code: &str) -> SandboxOutcome {
    let command =
        SandboxCommand { argv: vec!["python3".into(), "-c".into(), code.into()], ..SandboxCommand::default() };
    codexos_sandbox::run(policy, &command).unwrap_or_else(|err| panic!("sandbox failed: {err}"))
}

pub fn stdout(outcome: &SandboxOutcome) -> String {
    String::from_utf8_lossy(&outcome.stdout.bytes).into_owned()
}

pub fn stderr(outcome: &SandboxOutcome) -> String {
    String::from_utf8_lossy(&outcome.stderr.bytes).into_owned()
}

/// Landlock's denials as the outcome reports them, or `None` where this
/// host cannot report them (then the probe must say why).
pub fn landlock_denials(outcome: &SandboxOutcome) -> Option<Vec<String>> {
    let reporting = &codexos_sandbox::host_capabilities().landlock_audit;
    if !reporting.available {
        assert!(reporting.reason.is_some(), "{reporting:?}");
        eprintln!("Landlock denials are not reported here: {}", reporting.reason.as_deref().unwrap_or_default());
        return None;
    }
    Some(
        outcome
            .violations
            .iter()
            .filter(|violation| violation.kind == codexos_sandbox::ViolationKind::AccessDenied)
            .map(|violation| violation.detail.clone())
            .collect(),
    )
}
