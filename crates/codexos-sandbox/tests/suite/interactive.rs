//! Long-lived sandboxed processes driven over pipes (`codexos_sandbox::spawn`):
//! the same isolation and limits as `run`, and nothing left behind.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use codexos_sandbox::{SandboxCommand, SandboxError, SandboxPolicy, SandboxedProcess, ViolationKind};
use pretty_assertions::assert_eq;

use super::{policy, workspace};

fn spawn(policy: &SandboxPolicy, argv: &[&str]) -> SandboxedProcess {
    let command =
        SandboxCommand { argv: argv.iter().map(|arg| (*arg).to_owned()).collect(), ..SandboxCommand::default() };
    codexos_sandbox::spawn(policy, &command).unwrap_or_else(|err| panic!("sandbox failed: {err}"))
}

/// The process's stdin as a file and its stdout as a line reader.
fn pipes(process: &mut SandboxedProcess) -> (File, BufReader<File>) {
    let stdin = File::from(process.take_stdin().unwrap());
    let stdout = BufReader::new(File::from(process.take_stdout().unwrap()));
    (stdin, stdout)
}

fn line(stdout: &mut BufReader<File>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line
}

/// Host processes running `sleep MARKER`.
fn sleepers(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).into_owned())
        .filter(|cmdline| cmdline == &format!("sleep\0{marker}\0"))
        .collect()
}

/// Waits until both of a test's daemons run `sleep MARKER` (they may still
/// be on their way to exec'ing it when the script says it started).
fn wait_for_two_sleepers(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers(marker).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sleepers(marker).len(), 2, "the daemons should be running");
}

#[test]
fn lines_go_back_and_forth_over_the_pipes() {
    let ws = workspace();
    let mut process =
        spawn(&policy(ws.path()), &["sh", "-c", "while read -r line; do echo \"got $line\"; done; echo bye >&2"]);
    let (mut stdin, mut stdout) = pipes(&mut process);
    for word in ["one", "two", "three"] {
        writeln!(stdin, "{word}").unwrap();
        assert_eq!(line(&mut stdout), format!("got {word}\n"));
    }
    // End of file on stdin ends the loop; the command exits by itself.
    drop(stdin);
    assert_eq!(line(&mut stdout), "");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process.has_ended() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(process.has_ended());
    let outcome = process.wait().unwrap();
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(String::from_utf8_lossy(&outcome.stderr.bytes), "bye\n");
    assert!(outcome.stdout.bytes.is_empty());
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
}

#[test]
fn kill_ends_the_whole_tree() {
    let ws = workspace();
    let marker = format!("8{}1", std::process::id());
    let script = format!("(setsid sleep {marker} &) ; sleep {marker} & echo started; wait");
    let mut process = spawn(&policy(ws.path()), &["sh", "-c", &script]);
    let (_stdin, mut stdout) = pipes(&mut process);
    assert_eq!(line(&mut stdout), "started\n");
    wait_for_two_sleepers(&marker);
    process.kill();
    let outcome = process.wait().unwrap();
    assert_eq!(outcome.signal, Some(libc::SIGKILL), "{outcome:?}");
    // Killing is not a violation: the caller asked for it.
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
    assert_eq!(sleepers(&marker), Vec::<String>::new());
    assert_eq!(line(&mut stdout), "", "stdout is closed once the tree is gone");
}

#[test]
fn dropping_the_handle_leaves_nothing_behind() {
    let ws = workspace();
    let marker = format!("8{}2", std::process::id());
    let script = format!("(setsid sleep {marker} &) ; sleep {marker} & echo started; wait");
    let mut process = spawn(&policy(ws.path()), &["sh", "-c", &script]);
    let (_stdin, mut stdout) = pipes(&mut process);
    assert_eq!(line(&mut stdout), "started\n");
    wait_for_two_sleepers(&marker);
    drop(process);
    assert_eq!(sleepers(&marker), Vec::<String>::new());
}

#[test]
fn the_timeout_bounds_the_whole_life() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.limits.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let mut process = spawn(&policy, &["sh", "-c", "echo up; exec sleep 30"]);
    let (_stdin, mut stdout) = pipes(&mut process);
    assert_eq!(line(&mut stdout), "up\n");
    assert_eq!(line(&mut stdout), "", "the timeout closes stdout");
    let outcome = process.wait().unwrap();
    assert!(outcome.has_violation(ViolationKind::Timeout), "{:?}", outcome.violations);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_filesystem_rules_hold() {
    let ws = workspace();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    // A shell reading its script from the pipe, one command at a time.
    let mut process = spawn(&policy(ws.path()), &["sh"]);
    let (mut stdin, mut stdout) = pipes(&mut process);
    let mut ask = |command: &str| {
        writeln!(stdin, "{command}").unwrap();
        line(&mut stdout)
    };
    assert_eq!(ask("echo inside > made-here && cat made-here"), "inside\n");
    let secret = outside.path().join("secret");
    assert_eq!(ask(&format!("cat {} 2>/dev/null || echo absent", secret.display())), "absent\n");
    assert_eq!(ask("touch /usr/codexos-x 2>/dev/null || echo read-only"), "read-only\n");
    assert_eq!(ask("wc -c < /etc/shadow"), "0\n");
    drop(stdin);
    let outcome = process.wait().unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
    assert_eq!(std::fs::read_to_string(ws.path().join("made-here")).unwrap(), "inside\n");
    assert!(!std::path::Path::new("/usr/codexos-x").exists());
}

#[test]
fn a_missing_program_reads_as_end_of_file_and_says_why() {
    let ws = workspace();
    let mut process = spawn(&policy(ws.path()), &["codexos-no-such-program"]);
    let (mut stdin, mut stdout) = pipes(&mut process);
    assert_eq!(line(&mut stdout), "");
    assert!(stdin.write_all(b"hello\n").is_err());
    let outcome = process.wait().unwrap();
    assert_eq!(outcome.exit_code, Some(127));
    assert!(String::from_utf8_lossy(&outcome.stderr.bytes).contains("command not found"), "{outcome:?}");
}

#[test]
fn setup_errors_and_stdin_bytes_are_refused() {
    let ws = workspace();
    let command = SandboxCommand { argv: vec!["cat".into()], stdin: b"x".to_vec(), ..SandboxCommand::default() };
    let err = codexos_sandbox::spawn(&policy(ws.path()), &command).unwrap_err();
    assert!(matches!(err, SandboxError::InvalidCommand(_)), "{err}");
    let command = SandboxCommand { argv: vec!["cat".into()], ..SandboxCommand::default() };
    let err = codexos_sandbox::spawn(&policy(&ws.path().join("missing")), &command).unwrap_err();
    assert!(matches!(err, SandboxError::Policy(_)), "{err}");
}
