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

#[tokio::test]
async fn serve_and_worker_run_apart_on_one_database() {
    let database = codexos_test_support::TestDatabase::create().await;
    let url = database.url().to_owned();
    let server = codexos_test_support::TestServer::serve(super::bin(), database).await;
    assert!(server.stdout().contains("is up at"), "{}", server.stdout());

    // The API alone has no worker: healthy but degraded.
    let (status, health) = server.get("/health/detailed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((health["status"].as_str(), health["worker"]["workers_alive"].as_i64()), (Some("degraded"), Some(0)));
    assert!(health["problems"].to_string().contains("no worker is alive"), "{health}");

    let mut worker = std::process::Command::new(super::bin());
    codexos_test_support::clear_client_env(&mut worker);
    let mut worker = worker
        .args(["worker"])
        .env("DATABASE_URL", &url)
        .env("CODEXOS_HOME", server.data_dir().join("worker-home"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut alive = 0;
    for _ in 0..200 {
        alive = server.get("/health/detailed").await.1["worker"]["workers_alive"].as_i64().unwrap();
        if alive == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(alive, 1, "the worker never showed up");

    // A worker that stops cleanly deregisters at once.
    assert!(codexos_test_support::terminate(&mut worker).await.success());
    assert_eq!(server.get("/health/detailed").await.1["worker"]["workers_alive"], 0);
}
