//! Bad input at start: one clear line naming the problem, a non-zero exit,
//! never a panic.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use codexos_test_support::{clear_client_env, run};

use super::bin;

/// Runs `codexos up` with `args` in a fresh home and returns (code, last stderr line, all stderr).
fn up(home: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(bin());
    clear_client_env(&mut command);
    command.env("CODEXOS_HOME", home.join("data")).arg("up").args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let (code, _, stderr) = run(&mut command);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (code, last, stderr)
}

fn assert_clean_failure(code: i32, last: &str, stderr: &str, expected: &str) {
    assert_eq!(code, 1, "{stderr}");
    assert!(last.starts_with("error: ") && last.contains(expected), "expected '{expected}' in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_config_keys_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("codexos.toml");
    std::fs::write(&config, "listn = \"127.0.0.1:0\"\n").unwrap();
    let (code, last, stderr) = up(home.path(), &["--config", config.to_str().unwrap()], &[]);
    assert_clean_failure(code, &last, &stderr, "unknown field: found `listn`");

    let (code, last, stderr) = up(home.path(), &[], &[("CODEXOS_LISTN", "127.0.0.1:0")]);
    assert_clean_failure(code, &last, &stderr, "listn");

    let (code, last, stderr) = up(home.path(), &["--config", "/nonexistent/codexos.toml"], &[]);
    assert_clean_failure(code, &last, &stderr, "config file /nonexistent/codexos.toml does not exist");
}

#[test]
fn bad_values_are_named() {
    let home = tempfile::tempdir().unwrap();
    let (code, last, stderr) = up(home.path(), &["--listen", "localhost"], &[]);
    assert_clean_failure(code, &last, &stderr, "invalid socket address");
    let (code, last, stderr) = up(home.path(), &[], &[("CODEXOS_LOG__LEVEL", "loud=[")]);
    assert_clean_failure(code, &last, &stderr, "invalid log level 'loud=['");
}

#[test]
fn a_bad_database_url_is_named() {
    let home = tempfile::tempdir().unwrap();
    let (code, last, stderr) =
        up(home.path(), &["--listen", "127.0.0.1:0", "--database-url", "mysql://localhost/x"], &[]);
    assert_clean_failure(code, &last, &stderr, "database_url scheme 'mysql' is not supported");
    let (code, last, stderr) = up(
        home.path(),
        &["--listen", "127.0.0.1:0", "--database-url", "postgres://app:hunter2@127.0.0.1:1/codexos"],
        &[],
    );
    assert_clean_failure(code, &last, &stderr, "cannot open the database postgres://app:redacted@127.0.0.1:1/codexos");
    assert!(!stderr.contains("hunter2"));
}

#[test]
fn an_occupied_port_is_named() {
    let home = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // DATABASE_URL, exported for some other project, does not move `up` off
    // its embedded database: the failure is the port, not the URL.
    let (code, last, stderr) = up(home.path(), &["--listen", &addr], &[("DATABASE_URL", "mysql://elsewhere/app")]);
    assert_clean_failure(code, &last, &stderr, &format!("cannot listen on {addr}: Address already in use"));
}

#[test]
fn a_corrupt_database_file_is_named() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("codexos.db"), "definitely not SQLite ".repeat(500)).unwrap();
    let (code, last, stderr) = up(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert_clean_failure(code, &last, &stderr, "file is not a database");
    // Nothing was overwritten.
    assert!(std::fs::read_to_string(data.join("codexos.db")).unwrap().starts_with("definitely not SQLite"));
}

#[test]
fn a_data_directory_that_is_a_file_is_named() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("data"), "").unwrap();
    let (code, last, stderr) = up(home.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert_clean_failure(code, &last, &stderr, "exists and is not a directory");
}

#[test]
fn a_read_only_data_directory_is_named() {
    // Root ignores permission bits, so as root the platform runs as
    // `nobody` here, from a copy of the binary that user can execute.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = home.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    let binary = home.path().join("codexos");
    std::fs::copy(bin(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut command = Command::new(&binary);
    clear_client_env(&mut command);
    command.env("CODEXOS_HOME", &data).args(["up", "--listen", "127.0.0.1:0"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        command.uid(65534).gid(65534);
    }
    let (code, _, stderr) = run(&mut command);
    let last = stderr.lines().last().unwrap_or_default();
    assert_clean_failure(
        code,
        last,
        &stderr,
        &format!("data directory {} is not writable: Permission denied", data.display()),
    );
}
