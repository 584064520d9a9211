//! Bad policies and commands: a clear error before anything runs.

use std::time::Duration;

use codexos_sandbox::{Destination, SandboxCommand, SandboxError, SandboxPolicy};

use super::{policy, workspace};

fn command(argv: &[&str]) -> SandboxCommand {
    SandboxCommand { argv: argv.iter().map(|arg| (*arg).to_owned()).collect(), ..SandboxCommand::default() }
}

#[test]
fn bad_policies_are_refused_before_running() {
    let ws = workspace();
    let marker = ws.path().join("ran");
    let touch = command(&["touch", marker.to_str().unwrap()]);
    let cases: Vec<(SandboxPolicy, &str)> = vec![
        (SandboxPolicy::for_workspace("relative"), "workspace relative: must be an absolute path"),
        (SandboxPolicy::for_workspace("/nonexistent/workspace"), "workspace /nonexistent/workspace: does not exist"),
        (
            SandboxPolicy {
                limits: codexos_sandbox::Limits { cpu_seconds: Some(0), ..Default::default() },
                ..policy(ws.path())
            },
            "the cpu_seconds limit must be greater than zero",
        ),
        (
            SandboxPolicy {
                limits: codexos_sandbox::Limits { timeout: Duration::ZERO, ..Default::default() },
                ..policy(ws.path())
            },
            "the timeout limit must be greater than zero",
        ),
        (
            SandboxPolicy { read_only_paths: vec!["/nonexistent/tool".into()], ..policy(ws.path()) },
            "read-only path /nonexistent/tool: does not exist",
        ),
    ];
    for (policy, expected) in cases {
        let err = codexos_sandbox::run(&policy, &touch).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
    assert!(Destination::parse("pypi.org").is_err());
    // Landlock cannot take back write access inside a writable tree.
    std::fs::create_dir(ws.path().join("vendor")).unwrap();
    let nested = SandboxPolicy { read_only_paths: vec![ws.path().join("vendor")], ..policy(ws.path()) };
    let err = codexos_sandbox::run(&nested, &touch).unwrap_err();
    assert!(err.to_string().ends_with("lies inside the workspace, which is writable"), "{err}");
    assert!(!marker.exists(), "something ran");
}

#[test]
fn bad_commands_are_refused() {
    let ws = workspace();
    assert!(matches!(codexos_sandbox::run(&policy(ws.path()), &command(&[])), Err(SandboxError::EmptyCommand)));
    let err = codexos_sandbox::run(&policy(ws.path()), &command(&["echo", "a\0b"])).unwrap_err();
    assert!(matches!(err, SandboxError::InvalidCommand(_)), "{err}");
    let outside = SandboxCommand { cwd: Some("/etc".into()), ..command(&["true"]) };
    let err = codexos_sandbox::run(&policy(ws.path()), &outside).unwrap_err();
    assert!(err.to_string().contains("inside the workspace"), "{err}");
}

#[test]
fn a_missing_command_exits_127_like_a_shell() {
    let ws = workspace();
    let outcome = codexos_sandbox::run(&policy(ws.path()), &command(&["no-such-tool-anywhere"])).unwrap();
    assert_eq!(outcome.exit_code, Some(127));
    assert!(String::from_utf8_lossy(&outcome.stderr.bytes).contains("no-such-tool-anywhere: command not found"));
}
