use codexos_test_support::{clear_client_env, run};
use serde_json::Value;

use super::{bin, server};

#[tokio::test]
async fn the_cli_finds_the_server_through_codexos_home() {
    let server = server().await;
    let (code, stdout, stderr) = run(server.cli().args(["status", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let health: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(health["database"]["ok"], true);

    let (code, stdout, stderr) = run(server.cli().args(["status"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("server    {}", server.url)), "{stdout}");

    let (code, stdout, stderr) = run(server.cli().args(["key", "create", "ci", "--role", "viewer", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();

    // The new key works for the CLI too, given explicitly.
    let (code, stdout, stderr) =
        run(server.cli().args(["key", "list", "--json", "--api-key", &secret, "--server", &server.url]));
    assert_eq!(code, 1, "a viewer may not list keys: {stdout}");
    assert!(stderr.starts_with("error: forbidden (403): the viewer role does not grant keys:read"), "{stderr}");

    let (code, stdout, stderr) = run(server.cli().args(["key", "list"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(|line| line.starts_with(&id) && line.contains("viewer") && line.ends_with("active")),
        "{stdout}"
    );

    let (code, stdout, stderr) = run(server.cli().args(["key", "revoke", &id]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("Revoked key {id} (ci)."));
    let (_, stdout, _) = run(server.cli().args(["key", "list", "--json"]));
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let revoked = list["keys"].as_array().unwrap().iter().find(|key| key["id"] == id.as_str()).unwrap();
    assert!(revoked["revoked_at"].is_string());
}

#[test]
fn without_a_server_the_cli_says_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(bin());
    clear_client_env(&mut command);
    let (code, _, stderr) = run(command.env("CODEXOS_HOME", home.path()).arg("status"));
    assert_eq!(code, 1);
    let expected = format!("looked for {}", home.path().join("url").display());
    assert!(stderr.starts_with("error: no server given") && stderr.contains(&expected), "{stderr}");
}

#[test]
fn commands_not_built_yet_say_so_and_exit_2() {
    for group in ["market", "eval"] {
        let (code, stdout, stderr) = run(std::process::Command::new(bin()).args([group, "list", "--json"]));
        assert_eq!(code, 2, "{group}: {stdout}{stderr}");
        assert!(stderr.contains(&format!("codexos {group}: not built yet")), "{stderr}");
        assert!(stdout.is_empty());
    }
}

#[tokio::test]
async fn doctor_reports_the_host_and_the_database() {
    let home = tempfile::tempdir().unwrap();
    let doctor = || {
        let mut command = std::process::Command::new(bin());
        clear_client_env(&mut command);
        command.env("CODEXOS_HOME", home.path().join("data")).args(["doctor", "--json"]);
        run(&mut command)
    };
    let (code, stdout, stderr) = doctor();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(code, if problems.is_empty() { 0 } else { 1 }, "{report}");

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["sandbox"]["kernel"], kernel.trim());
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(report["sandbox"]["seccomp"]["available"], status.lines().any(|line| line.starts_with("Seccomp:")));
    let cgroup_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let has_cgroup2 = cgroup_mounts.lines().any(|line| line.contains(" - cgroup2 "));
    assert_eq!(report["sandbox"]["cgroups"]["v2_mount"].is_string(), has_cgroup2);

    // A fresh home has no database yet, and doctor does not create one.
    assert_eq!(report["database"]["backend"], "sqlite");
    assert_eq!(report["database"]["exists"], false);
    assert!(!home.path().join("data").exists());
    assert_eq!(report["config"]["data_dir"], home.path().join("data").display().to_string());
    assert_eq!(report["config"]["listen"], "127.0.0.1:7420");
}

#[tokio::test]
async fn doctor_sees_a_running_installation() {
    let server = server().await;
    let mut command = server.cli();
    if server.is_postgres() {
        command.env("CODEXOS_DATABASE_URL", server.database_url().unwrap());
    }
    let (_, stdout, stderr) = run(command.args(["doctor", "--json"]));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    assert_eq!(report["database"]["reachable"], true, "{report}");
    assert_eq!(report["database"]["schema_version"], report["database"]["latest_version"]);
    assert!(report["database"]["url"].as_str().unwrap().starts_with(if server.is_postgres() {
        "postgres://"
    } else {
        "sqlite://"
    }));
}
