//! `codexos sandbox exec`, as a user runs it.

use std::process::Command;

use codexos_test_support::{clear_client_env, run};

use super::bin;

fn exec(workspace: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(bin());
    clear_client_env(&mut command);
    command.env("CODEXOS_HOME", workspace.join(".codexos")).args(["sandbox", "exec", "--workspace"]).arg(workspace);
    run(command.args(args))
}

#[test]
fn the_commands_status_and_output_pass_through() {
    let ws = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = exec(ws.path(), &["--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (7, "out\n", "err\n"));
    let (code, _, stderr) = exec(ws.path(), &["--", "no-such-command"]);
    assert_eq!(code, 127, "{stderr}");
    // A denied call the command copes with is reported, not a failure.
    let script = "import socket\ntry:\n    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\nexcept OSError:\n    print('coped')";
    let (code, stdout, stderr) = exec(ws.path(), &["--", "python3", "-c", script]);
    assert_eq!((code, stdout.as_str()), (0, "coped\n"), "{stderr}");
    assert!(stderr.contains("codexos sandbox: syscall_denied: socket (address family) denied"), "{stderr}");
}

#[test]
fn a_connection_landlock_refuses_is_reported_where_the_audit_log_is_readable() {
    let ws = tempfile::tempdir().unwrap();
    let mut doctor = Command::new(bin());
    clear_client_env(&mut doctor);
    doctor.env("CODEXOS_HOME", ws.path().join(".codexos")).args(["doctor", "--json"]);
    let (_, report, _) = run(&mut doctor);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let reporting = &report["sandbox"]["landlock_audit"];
    let script = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 5432))\nexcept OSError as e:\n    print(e.errno)";
    let (code, stdout, stderr) = exec(ws.path(), &["--", "python3", "-c", script]);
    assert_eq!(code, 0, "{stderr}");
    let reported = stderr.contains("codexos sandbox: access_denied: net.connect_tcp denied: 127.0.0.1:5432");
    assert_eq!(reported, reporting["available"] == true, "{reporting} {stderr}");
    if reported {
        // Landlock refused it (EACCES), not the empty network namespace.
        assert_eq!(stdout, "13\n", "{stderr}");
    } else {
        assert!(reporting["reason"].is_string(), "{reporting}");
    }
}

#[test]
fn a_violation_exits_125_and_names_itself() {
    let ws = tempfile::tempdir().unwrap();
    let (code, _, stderr) = exec(ws.path(), &["--timeout", "300ms", "--", "sleep", "10"]);
    assert_eq!(code, 125);
    assert!(stderr.contains("codexos sandbox: timeout: still running after 300ms; killed"), "{stderr}");
    let (code, _, stderr) = exec(ws.path(), &["--memory", "32M", "--", "python3", "-c", "b = bytearray(128 << 20)"]);
    assert_eq!(code, 125);
    assert!(stderr.contains("codexos sandbox: memory_limit:"), "{stderr}");
}

#[test]
fn the_platforms_data_directory_is_hidden() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir(ws.path().join(".codexos")).unwrap();
    std::fs::write(ws.path().join(".codexos/owner.key"), "cxo_secret").unwrap();
    let (code, stdout, stderr) = exec(ws.path(), &["--", "sh", "-c", "cat .codexos/owner.key; echo end"]);
    assert_eq!((code, stdout.as_str()), (0, "end\n"), "{stderr}");
}

#[test]
fn bad_flags_are_named() {
    let ws = tempfile::tempdir().unwrap();
    let (code, _, stderr) = exec(ws.path(), &["--memory", "lots", "--", "true"]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: --memory: 'lots' is not a size like 512M, 1GiB or 65536"), "{stderr}");
    let (code, _, stderr) = exec(ws.path(), &["--net", "everything", "--", "true"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--net 'everything' must be none or allow=HOST:PORT"), "{stderr}");
    let (code, _, stderr) = exec(ws.path(), &["--cpu-seconds", "0", "--", "true"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("the cpu_seconds limit must be greater than zero"), "{stderr}");
    let mut command = Command::new(bin());
    clear_client_env(&mut command);
    let (code, _, stderr) =
        run(command.env("HOME", ws.path()).current_dir(ws.path()).args(["sandbox", "exec", "--", "true"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("refusing to use your home directory"), "{stderr}");
    let (code, _, stderr) = exec(&ws.path().join("missing"), &["--", "true"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
