//! Ordinary engineering tools work in the workspace.

use codexos_sandbox::SandboxCommand;

use super::{policy, sh, stderr, stdout, workspace};

#[test]
fn shell_python_git_and_a_c_compiler_work() {
    let ws = workspace();
    std::fs::write(
        ws.path().join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello from c\"); return 0; }\n",
    )
    .unwrap();
    let outcome = sh(
        &policy(ws.path()),
        "set -e; python3 -c 'print(6 * 7)'; cc hello.c -o hello; ./hello; \
         git init -q repo; cd repo; echo x > f; git add f; \
         git -c user.email=a@b -c user.name=agent commit -q -m first; git log --format=%s",
    );
    assert_eq!(stdout(&outcome), "42\nhello from c\nfirst\n", "{}", stderr(&outcome));
    assert_eq!(outcome.exit_code, Some(0));
    assert!(ws.path().join("repo/.git").is_dir());
}

#[test]
fn stdin_env_and_working_directory_reach_the_command() {
    let ws = workspace();
    std::fs::create_dir(ws.path().join("sub")).unwrap();
    let command = SandboxCommand {
        argv: vec!["sh".into(), "-c".into(), "pwd; echo $GREETING; cat; env | grep -c CARGO || true".into()],
        env: vec![("GREETING".into(), "hi".into())],
        cwd: Some("sub".into()),
        stdin: b"from stdin\n".to_vec(),
    };
    // cargo runs tests with CARGO_* variables set: none may reach the command.
    assert!(std::env::vars().any(|(name, _)| name.starts_with("CARGO")));
    let outcome = codexos_sandbox::run(&policy(ws.path()), &command).unwrap();
    let expected = format!("{}\nhi\nfrom stdin\n0\n", ws.path().join("sub").display());
    assert_eq!(stdout(&outcome), expected, "{}", stderr(&outcome));
}

#[test]
fn exit_codes_and_signals_come_through() {
    let ws = workspace();
    assert_eq!(sh(&policy(ws.path()), "exit 3").exit_code, Some(3));
    let outcome = sh(&policy(ws.path()), "kill -TERM $$");
    assert_eq!((outcome.exit_code, outcome.signal), (None, Some(libc::SIGTERM)));
    assert_eq!(outcome.shell_status(), 128 + libc::SIGTERM);
}
