use std::os::unix::fs::PermissionsExt;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::server;

#[tokio::test]
async fn up_publishes_its_url_and_the_owner_key() {
    let server = server().await;
    let stdout = server.stdout();
    assert!(stdout.contains(&format!("is up at {}", server.url)), "{stdout}");
    assert!(server.url.starts_with("http://127.0.0.1:") && !server.url.ends_with(":0"), "{}", server.url);
    // The key is printed once, and saved readable by its owner only.
    assert_eq!(stdout.matches(&server.owner_key).count(), 1, "{stdout}");
    let mode = std::fs::metadata(server.data_dir().join("owner.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(server.data_dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the data directory must be private");
}

#[tokio::test]
async fn a_restart_keeps_everything_and_prints_no_new_key() {
    let server = server().await;
    let owner_key = server.owner_key.clone();
    let (status, created) =
        server.call(Method::POST, "/v1/keys", Some(&owner_key), Some(json!({"name": "ci", "role": "developer"}))).await;
    assert_eq!(status, StatusCode::CREATED);

    let server = server.restart().await;
    assert!(!server.stdout().contains("Owner API key"), "{}", server.stdout());
    assert_eq!(server.owner_key, owner_key);
    let (status, keys) = server.get("/v1/keys").await;
    assert_eq!(status, StatusCode::OK);
    assert!(keys["keys"].as_array().unwrap().iter().any(|key| key["id"] == created["key"]["id"]), "{keys}");
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_withdraws_the_url() {
    let mut server = server().await;
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    let status = server.terminate().await;
    assert!(status.success(), "exit {status}: {}", server.stderr());
    assert!(!server.data_dir().join("url").exists(), "a stopped server must not leave its URL behind");
    assert!(server.stderr().contains("SIGTERM received"));
    assert!(!server.stderr().contains("panicked"));
}

#[tokio::test]
async fn a_second_up_on_the_same_data_directory_is_refused() {
    let server = server().await;
    let (code, _, stderr) = codexos_test_support::run(server.cli().args(["up", "--listen", "127.0.0.1:0"]));
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("error: data directory {} is in use by another codexos process", server.data_dir().display())
    );
    // The first one is unharmed.
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
}
