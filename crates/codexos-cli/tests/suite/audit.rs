//! The audit log end to end: what the API records, `codexos audit verify`
//! straight from the database, proofs checked with nothing but the
//! verifier key, and tampering found by the offline verifier.

use std::process::Command;

use codexos_test_support::{TestServer, run};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

/// The CLI pointed at the server's database, for the offline commands.
fn offline(server: &TestServer, subcommand: &str, args: &[&str]) -> Command {
    let mut command = server.cli();
    command.args(["audit", subcommand]);
    if let Some(url) = server.database_url() {
        command.args(["--database-url", url]);
    }
    command.args(args);
    command
}

async fn audit_entries(server: &TestServer) -> Vec<Value> {
    let (status, page) = server.get("/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn state_changes_are_recorded_verified_and_provable() {
    // No checkpoint by the clock: the proof below names the one it signs.
    let mut server = TestServer::start_with_env(super::bin(), &[("CODEXOS_AUDIT__CHECKPOINT_INTERVAL", "1h")]).await;
    let owner = server.owner_key.clone();
    let (status, created) =
        server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": "ci", "role": "viewer" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let viewer = created["secret"].as_str().unwrap().to_owned();
    // A refused attempt is recorded too, as denied, with its actor.
    let (status, _) =
        server.call(Method::POST, "/v1/keys", Some(&viewer), Some(json!({ "name": "x", "role": "owner" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Reads are not state changes.
    assert_eq!(server.get("/v1/keys").await.0, StatusCode::OK);
    let response = server
        .request(Method::DELETE, &format!("/v1/keys/{}", created["key"]["id"].as_str().unwrap()))
        .bearer_auth(&owner)
        .header("x-request-id", "revoke-req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let entries = audit_entries(&server).await;
    let summary: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap())).collect();
    assert_eq!(summary, vec![("key.create", "success"), ("key.create", "denied"), ("key.revoke", "success")]);
    let key_id = created["key"]["id"].as_str().unwrap();
    assert_eq!(entries[0]["target"], format!("key:{key_id}"));
    assert_eq!(entries[0]["details"]["details"]["role"], "viewer");
    assert_eq!(entries[2]["target"], format!("key:{key_id}"));
    assert_eq!(entries[2]["request_id"], "revoke-req-1");
    let viewer_key_id = created["key"]["id"].as_str().unwrap();
    assert!(entries[1]["actor"].as_str().unwrap().ends_with(&format!("key:{viewer_key_id}")), "{}", entries[1]);
    assert_ne!(entries[0]["actor"], entries[1]["actor"], "the owner and the viewer are told apart");
    assert_eq!(entries[1]["prev_hash"], entries[0]["entry_hash"]);
    // The revoked key is refused like an unknown one.
    assert_eq!(server.call(Method::GET, "/v1/audit", Some(&viewer), None).await.0, StatusCode::UNAUTHORIZED);

    let (status, verification) = server.get("/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{verification}");
    assert_eq!(verification["status"], "intact", "{verification}");
    assert_eq!(verification["size"], 3);
    let verifier_key = verification["verifier_key"].as_str().unwrap().to_owned();

    // A proof, checked offline with the verifier key alone.
    let (code, proof, stderr) = run(server.cli().args(["audit", "proof", "2"]));
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof).unwrap();
    let (code, stdout, stderr) =
        run(Command::new(&server.bin).args(["audit", "check-proof"]).arg(&proof_file).args(["--key", &verifier_key]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("entry 2 (key.create) of tenant "), "{stdout}");
    assert!(stdout.contains("included in the checkpoint of 3 entries"), "{stdout}");
    let forged = proof.replace("\"denied\"", "\"success\"");
    assert_ne!(forged, proof);
    std::fs::write(&proof_file, &forged).unwrap();
    let (code, stdout, _) =
        run(Command::new(&server.bin).args(["audit", "check-proof"]).arg(&proof_file).args(["--key", &verifier_key]));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("entry 2: INVALID"), "{stdout}");

    // Shutdown signs what follows the last checkpoint; the offline verifier
    // then checks everything straight from the database.
    assert!(server.terminate().await.success(), "{}", server.stderr());
    let (code, stdout, stderr) = run(&mut offline(&server, "verify", &["--json"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["intact"], true);
    assert_eq!(report["tenants"][0]["verdict"]["Intact"]["size"], 3, "{report}");

    // The export's every line carries a proof that checks offline.
    let export = dir.path().join("export.jsonl");
    let (code, _, stderr) = run(offline(&server, "export", &["--output"]).arg(&export));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 3);
    let (code, stdout, stderr) =
        run(Command::new(&server.bin).args(["audit", "check-proof"]).arg(&export).args(["--key", &verifier_key]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    // The export's checkpoint, kept outside the database, is a witness.
    let last_line = std::fs::read_to_string(&export).unwrap().lines().last().unwrap().to_owned();
    let witness = dir.path().join("witness.note");
    std::fs::write(&witness, serde_json::from_str::<Value>(&last_line).unwrap()["checkpoint"].as_str().unwrap())
        .unwrap();
    let (code, stdout, stderr) = run(offline(&server, "verify", &["--checkpoint"]).arg(&witness));
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Someone with write access to the database edits an entry: found.
    tamper(&server, "UPDATE audit_entries SET outcome = 'success' WHERE seq = 2").await;
    let (code, stdout, _) = run(&mut offline(&server, "verify", &[]));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("default: TAMPERED at entry 2 (Edited)"), "{stdout}");
}

async fn tamper(server: &TestServer, statement: &str) {
    sqlx::any::install_default_drivers();
    let url = match server.database_url() {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", server.data_dir().join("codexos.db").display()),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    if !server.is_postgres() {
        conn.execute("PRAGMA busy_timeout = 10000").await.unwrap();
    }
    let disable = if server.is_postgres() {
        "ALTER TABLE audit_entries DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER IF EXISTS audit_entries_no_update; DROP TRIGGER IF EXISTS audit_entries_no_delete"
    };
    conn.execute(disable).await.unwrap();
    conn.execute(statement).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_log_that_grew_is_signed_within_the_interval_so_its_tail_cannot_be_cut_unseen() {
    let mut server = TestServer::start_with_env(super::bin(), &[("CODEXOS_AUDIT__CHECKPOINT_INTERVAL", "200ms")]).await;
    let owner = server.owner_key.clone();
    for name in ["one", "two", "three"] {
        let (status, _) =
            server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": name, "role": "viewer" }))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Far fewer entries than `audit.checkpoint_every`: only the interval signs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, verification) = server.get("/v1/audit/verify").await;
        // A checkpoint note's second line is the tree size it signs.
        let latest = verification["latest_checkpoint"].as_str().unwrap_or_default();
        if latest.lines().nth(1) == Some("3") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint of the 3 entries: {verification}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The last entries cut from the log's end, with the database alone: found.
    assert!(server.terminate().await.success(), "{}", server.stderr());
    tamper(&server, "DELETE FROM audit_entries WHERE seq > 1").await;
    let (code, stdout, _) = run(&mut offline(&server, "verify", &[]));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("default: TAMPERED at entry 2 (Truncated)"), "{stdout}");
}

#[tokio::test]
async fn what_the_operator_does_on_the_database_is_on_the_tenants_log() {
    let server = TestServer::start(super::bin()).await;
    let operator = |args: &[&str]| {
        let mut command = server.cli();
        command.args(args);
        if let Some(url) = server.database_url() {
            command.args(["--database-url", url]);
        }
        let (code, stdout, stderr) = run(&mut command);
        assert_eq!(code, 0, "{stdout}{stderr}");
        stdout
    };
    let created: Value = serde_json::from_str(&operator(&[
        "tenant",
        "create",
        "initech",
        "--owner-email",
        "boss@initech.test",
        "--json",
    ]))
    .unwrap();
    operator(&["tenant", "quota", "initech", "--burst", "7"]);
    let owner = created["owner_key"].as_str().unwrap();
    let (status, audit) = server.call(Method::GET, "/v1/audit", Some(owner), None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|entry| entry["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["tenant.create", "tenant.set_quota"]);
    assert!(entries.iter().all(|entry| entry["actor"].as_str().unwrap().starts_with("operator:")), "{audit}");
    assert_eq!(entries[1]["details"]["after"]["burst"], 7, "{audit}");
    // Appended unsigned by the operator's command, signed by the platform:
    // the log verifies.
    let (_, verification) = server.call(Method::GET, "/v1/audit/verify", Some(owner), None).await;
    assert_eq!(verification["status"], "intact", "{verification}");
}
