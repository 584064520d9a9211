//! Tenancy end to end: tenants made by the operator, members, local login
//! with sessions and its brute-force lock, the role matrix, and a second
//! tenant walking every endpoint with the first one's ids.

use std::process::Command;

use codexos_test_support::{TestServer, run};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{finished, server};

const WALKER: &str = r#"
name = "acme-walker"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "shell"
args = { command = "echo walked > walked.txt" }
"#;

/// `codexos tenant create` on the server's database, as the operator would.
fn create_tenant(server: &TestServer, slug: &str, owner: &str) -> Value {
    let mut command = server.cli();
    command.args(["tenant", "create", slug, "--owner-email", owner, "--json"]);
    if let Some(url) = server.database_url() {
        command.args(["--database-url", url]);
    }
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

async fn send(server: &TestServer, method: Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, String) {
    let mut request = server.request(method, path).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn tenants_are_created_by_the_operator_and_isolated() {
    let server = server().await;
    let created = create_tenant(&server, "globex", "boss@globex.test");
    let globex_key = created["owner_key"].as_str().unwrap();
    let (status, me) = server.call(Method::GET, "/v1/me", Some(globex_key), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["tenant"]["slug"], "globex");
    assert_eq!(me["role"], "owner");

    // A taken slug, and a bad one, are refused with a message; nothing is made.
    let mut again = server.cli();
    again.args(["tenant", "create", "globex", "--owner-email", "x@y.test"]);
    if let Some(url) = server.database_url() {
        again.args(["--database-url", url]);
    }
    let (code, _, stderr) = run(&mut again);
    assert_eq!(code, 1);
    assert!(stderr.contains("a tenant 'globex' exists already"), "{stderr}");
    let mut listing = server.cli();
    listing.args(["tenant", "list", "--json"]);
    if let Some(url) = server.database_url() {
        listing.args(["--database-url", url]);
    }
    let (code, stdout, stderr) = run(&mut listing);
    assert_eq!(code, 0, "{stderr}");
    let slugs: Vec<String> = serde_json::from_str::<Vec<Value>>(&stdout)
        .unwrap()
        .iter()
        .map(|tenant| tenant["slug"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(slugs, vec!["default", "globex"]);
}

#[tokio::test]
async fn a_second_tenant_sees_nothing_of_the_first_on_any_endpoint() {
    let server = server().await;
    let acme = server.owner_key.clone();
    // The first tenant's objects: an agent, a finished execution, a key, a
    // member, a secret, audit entries.
    let (status, agent) =
        server.call(Method::POST, "/v1/agents", Some(&acme), Some(json!({ "manifest": WALKER }))).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let workspace = tempfile::tempdir().unwrap();
    let request = json!({ "agent": "acme-walker", "task": "walk", "workspace": workspace.path().to_str().unwrap() });
    let (status, execution) = server.call(Method::POST, "/v1/executions", Some(&acme), Some(request)).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    let execution_id = execution["id"].as_str().unwrap().to_owned();
    finished(&server, &execution_id).await;
    let (status, key) =
        server.call(Method::POST, "/v1/keys", Some(&acme), Some(json!({ "name": "acme-ci", "role": "viewer" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key_id = key["key"]["id"].as_str().unwrap().to_owned();
    let (status, member) = server
        .call(Method::POST, "/v1/users", Some(&acme), Some(json!({ "email": "dev@acme.test", "role": "developer" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let user_id = member["id"].as_str().unwrap().to_owned();
    let (status, _) =
        send(&server, Method::PUT, "/v1/secrets/ACME_TOKEN", &acme, Some(json!({ "value": "s3cr3t-acme" }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, audit) = server.get("/v1/audit").await;
    let acme_entry_hash = audit["entries"][0]["entry_hash"].as_str().unwrap().to_owned();
    let markers = [
        execution_id.as_str(),
        "acme-walker",
        key_id.as_str(),
        user_id.as_str(),
        "dev@acme.test",
        "s3cr3t-acme",
        acme_entry_hash.as_str(),
        "owner@localhost",
    ];

    let globex = create_tenant(&server, "globex", "boss@globex.test")["owner_key"].as_str().unwrap().to_owned();
    let (_, openapi) = server.call(Method::GET, "/openapi.json", None, None).await;
    let mut walked = 0;
    for (template, item) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if template == "/v1/logout" || template == "/v1/login" || operation["security"].is_null() {
                continue; // public, or not a tenant's
            }
            let path = template
                .replace("/executions/{id}", &format!("/executions/{execution_id}"))
                .replace("/keys/{id}", &format!("/keys/{key_id}"))
                .replace("/users/{id}", &format!("/users/{user_id}"))
                .replace("{name}", if template.starts_with("/v1/agents") { "acme-walker" } else { "ACME_TOKEN" })
                .replace("{seq}", "1");
            // Bodies that pass validation, so the lookup itself is what answers.
            let body = match (method.as_str(), template.as_str()) {
                ("GET" | "DELETE", _) => None,
                (_, "/v1/executions/{id}/rollback") => Some(json!({ "to_step": 1 })),
                (_, "/v1/executions/{id}/fork") => Some(json!({ "from_step": 1 })),
                (_, "/v1/executions/{id}/approvals/{seq}") => Some(json!({ "approve": true })),
                (_, "/v1/users/{id}") => Some(json!({ "role": "viewer" })),
                _ => Some(json!({})),
            };
            let (status, text) = send(&server, method.clone(), &path, &globex, body).await;
            walked += 1;
            for marker in markers {
                assert!(!text.contains(marker), "{method} {path} leaked {marker}: {status} {text}");
            }
            if template.contains('{') && !template.starts_with("/v1/audit") && method != Method::PUT {
                // An object of the other tenant is answered like a missing one.
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
            }
        }
    }
    assert!(walked >= 25, "walked only {walked} endpoints");

    // The first tenant's objects are untouched.
    let (_, execution) = server.get(&format!("/v1/executions/{execution_id}")).await;
    assert_eq!(execution["status"], "succeeded");
    let (_, keys) = server.get("/v1/keys").await;
    let key = keys["keys"].as_array().unwrap().iter().find(|key| key["id"] == key_id.as_str()).unwrap();
    assert!(key["revoked_at"].is_null(), "{key}");
    let (_, users) = server.get("/v1/users").await;
    assert!(users["users"].as_array().unwrap().iter().any(|user| user["id"] == user_id.as_str()));
    let (_, secrets) = server.get("/v1/secrets").await;
    assert!(secrets["secrets"].as_array().unwrap().iter().any(|secret| secret["name"] == "ACME_TOKEN"));
    let (_, verification) = server.get("/v1/audit/verify").await;
    assert_eq!(verification["status"], "intact");
}

#[tokio::test]
async fn every_role_gets_exactly_its_permissions() {
    let server = server().await;
    let owner = server.owner_key.clone();
    let mut keys = vec![("owner", owner.clone())];
    for role in ["admin", "developer", "viewer"] {
        let (status, created) =
            server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": role, "role": role }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        keys.push((role, created["secret"].as_str().unwrap().to_owned()));
    }
    let missing = "00000000-0000-7000-8000-000000000000";
    // (method, path, body, the roles allowed): a refusal for want of a
    // permission is 403; anything else means the permission was granted.
    let matrix: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (Method::GET, "/health/detailed".into(), None, &["owner", "admin"]),
        (Method::GET, "/v1/keys".into(), None, &["owner", "admin"]),
        (Method::POST, "/v1/keys".into(), Some(json!({ "name": "n", "role": "viewer" })), &["owner", "admin"]),
        (Method::DELETE, format!("/v1/keys/{missing}"), None, &["owner", "admin"]),
        (Method::GET, "/v1/agents".into(), None, &["owner", "admin", "developer", "viewer"]),
        (Method::POST, "/v1/agents".into(), Some(json!({ "manifest": "x" })), &["owner", "admin", "developer"]),
        (Method::GET, "/v1/executions".into(), None, &["owner", "admin", "developer", "viewer"]),
        (
            Method::POST,
            "/v1/executions".into(),
            Some(json!({ "agent": "none", "task": "t", "workspace": "/tmp" })),
            &["owner", "admin", "developer"],
        ),
        (Method::POST, format!("/v1/executions/{missing}/pause"), Some(json!({})), &["owner", "admin", "developer"]),
        (
            Method::POST,
            format!("/v1/executions/{missing}/approvals/1"),
            Some(json!({ "approve": true })),
            &["owner", "admin", "developer"],
        ),
        (Method::GET, "/v1/audit".into(), None, &["owner", "admin", "viewer"]),
        (Method::GET, "/v1/audit/verify".into(), None, &["owner", "admin", "viewer"]),
        (Method::GET, "/v1/users".into(), None, &["owner", "admin"]),
        (Method::POST, "/v1/users".into(), Some(json!({ "email": "a@b.test", "role": "viewer" })), &["owner", "admin"]),
        (Method::GET, "/v1/secrets".into(), None, &["owner", "admin", "developer"]),
        (Method::PUT, "/v1/secrets/MATRIX".into(), Some(json!({ "value": "v" })), &["owner", "admin"]),
        (Method::GET, "/v1/me".into(), None, &["owner", "admin", "developer", "viewer"]),
    ];
    for (method, path, body, allowed) in &matrix {
        for (role, key) in &keys {
            let (status, text) = send(&server, method.clone(), path, key, body.clone()).await;
            let permitted = allowed.contains(role);
            assert_eq!(status != StatusCode::FORBIDDEN, permitted, "{role}: {method} {path}: {status} {text}");
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{role}: {method} {path}");
        }
    }
}

/// Every operation of the OpenAPI document, for every role: 403 exactly
/// when the role lacks the permission the operation declares
/// (`x-codexos-access`), whatever the body, before the body is read; never
/// 401 with a valid key. The roles' permissions are what `/v1/me` says.
#[tokio::test]
async fn every_operation_refuses_exactly_the_roles_its_declared_permission_excludes() {
    let server = TestServer::start_with_env(
        super::bin(),
        &[("CODEXOS_QUOTAS__REQUESTS_PER_SECOND", "100000"), ("CODEXOS_QUOTAS__BURST", "100000")],
    )
    .await;
    let owner = server.owner_key.clone();
    let mut keys = vec![("owner".to_owned(), owner.clone())];
    for role in ["admin", "developer", "viewer"] {
        let (status, created) =
            server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": role, "role": role }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        keys.push((role.to_owned(), created["secret"].as_str().unwrap().to_owned()));
    }
    let mut granted = std::collections::HashMap::new();
    for (role, key) in &keys {
        let (status, me) = server.call(Method::GET, "/v1/me", Some(key), None).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        let permissions: Vec<String> =
            me["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        granted.insert(role.clone(), permissions);
    }
    let (_, openapi) = server.call(Method::GET, "/openapi.json", None, None).await;
    let missing = "00000000-0000-7000-8000-000000000000";
    let mut checked = 0;
    for (template, item) in openapi["paths"].as_object().unwrap() {
        let path = template
            .replace("{id}", missing)
            .replace("{name}", "matrix-missing")
            .replace("{seq}", "999999")
            .replace("{tenant}", "matrix-missing");
        for (method, operation) in item.as_object().unwrap() {
            let access = operation["x-codexos-access"].as_str().unwrap_or_else(|| panic!("{method} {template}"));
            if access == "public" || access == "authenticated" || path == "/v1/logout" {
                continue;
            }
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
            for (role, key) in &keys {
                let (status, text) = send(&server, method.clone(), &path, key, body.clone()).await;
                let permitted = granted[role].iter().any(|permission| permission == access);
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{role}: {method} {template}");
                assert_eq!(
                    status == StatusCode::FORBIDDEN,
                    !permitted,
                    "{role} ({access}): {method} {template}: {status} {text}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 40 * 4, "only {checked} requests: is the document whole?");
}

fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("codexos_session="))
        .map(str::to_owned)
}

async fn login(server: &TestServer, tenant: &str, email: &str, password: &str) -> reqwest::Response {
    server
        .request(Method::POST, "/v1/login")
        .json(&json!({ "tenant": tenant, "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn members_log_in_with_sessions_and_guessing_is_locked() {
    let server = server().await;
    let owner = server.owner_key.clone();
    let (status, member) = server
        .call(
            Method::POST,
            "/v1/users",
            Some(&owner),
            Some(json!({ "email": "Dev@Acme.test", "role": "developer", "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["email"], "dev@acme.test", "emails are compared without case");
    assert_eq!(member["has_password"], true);

    let response = login(&server, "default", "dev@acme.test", "correct horse battery").await;
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = session_cookie(&response).expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["role"].as_str(), body["tenant"].as_str()), (Some("developer"), Some("default")));

    // The session is a caller like a key, with the member's role.
    let me: Value =
        server.request(Method::GET, "/v1/me").header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "developer");
    assert!(me["session_id"].is_string() && me["key_id"].is_null(), "{me}");
    // Another site cannot make the browser use it to change anything.
    let forged_origin = server
        .request(Method::POST, "/v1/keys")
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&json!({ "name": "x", "role": "viewer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged_origin.status(), StatusCode::FORBIDDEN);
    // A forged cookie is refused like any bad credential.
    let forged = format!("codexos_session=cxs_{}", "A".repeat(43));
    let status = server.request(Method::GET, "/v1/me").header("cookie", forged).send().await.unwrap().status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Logout ends the session.
    let response = server.request(Method::POST, "/v1/logout").header("cookie", &cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(session_cookie(&response).unwrap().contains("Max-Age=0"));
    let status = server.request(Method::GET, "/v1/me").header("cookie", &cookie).send().await.unwrap().status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Wrong tenant, unknown email and wrong password look alike.
    for (tenant, email, password) in [
        ("nowhere", "other@acme.test", "correct horse battery"),
        ("default", "nobody@acme.test", "correct horse battery"),
    ] {
        let response = login(&server, tenant, email, password).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "wrong tenant, email or password");
    }
    // Five wrong passwords lock the account, even for the right one.
    for _ in 0..5 {
        assert_eq!(
            login(&server, "default", "dev@acme.test", "wrong password!!").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = login(&server, "default", "dev@acme.test", "correct horse battery").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "login_locked");

    // The attempts are on the tenant's audit log, the last failure saying it
    // locked the account (refusals while locked are only counted).
    let (_, audit) = server.get("/v1/audit?limit=1000").await;
    let logins: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|entry| entry["action"] == "session.login").collect();
    let outcomes: Vec<&str> = logins.iter().map(|entry| entry["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|outcome| **outcome == "success").count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().filter(|outcome| **outcome == "failure").count() >= 6, "{outcomes:?}");
    let last = logins.last().unwrap();
    assert_eq!((last["outcome"].as_str(), &last["details"]["locked"]), (Some("failure"), &json!(true)));
    assert!(audit["entries"].as_array().unwrap().iter().any(|entry| entry["action"] == "session.logout"));
}

#[tokio::test]
async fn members_are_managed_within_ranks() {
    let server = server().await;
    let owner = server.owner_key.clone();
    let (_, admin) =
        server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": "a", "role": "admin" }))).await;
    let admin = admin["secret"].as_str().unwrap().to_owned();
    let (_, users) = server.get("/v1/users").await;
    let owner_id = users["users"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(users["users"][0]["role"], "owner");

    // An admin can neither make an owner nor touch one.
    let (status, _) = server
        .call(Method::POST, "/v1/users", Some(&admin), Some(json!({ "email": "o@x.test", "role": "owner" })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.call(Method::DELETE, &format!("/v1/users/{owner_id}"), Some(&admin), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The last owner stays.
    let (status, body) = server.call(Method::DELETE, &format!("/v1/users/{owner_id}"), Some(&owner), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Bad input is refused with a message.
    for body in [
        json!({ "email": "not an email", "role": "viewer" }),
        json!({ "email": "a@b.test", "role": "root" }),
        json!({ "email": "a@b.test", "role": "viewer", "password": "short" }),
    ] {
        let (status, answer) = server.call(Method::POST, "/v1/users", Some(&owner), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }

    // Through the CLI: add with a password on stdin, change the role, remove.
    let mut add = server.cli();
    add.args(["user", "add", "ops@acme.test", "--role", "viewer", "--password-stdin"]);
    let output = pipe(&mut add, "a long enough password\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (_, users) = server.get("/v1/users").await;
    let ops = users["users"].as_array().unwrap().iter().find(|user| user["email"] == "ops@acme.test").unwrap().clone();
    let ops_id = ops["id"].as_str().unwrap();
    assert_eq!(ops["has_password"], true);
    let (code, stdout, stderr) = run(server.cli().args(["user", "role", ops_id, "developer"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ops@acme.test is now developer"), "{stdout}");
    let response = login(&server, "default", "ops@acme.test", "a long enough password").await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = session_cookie(&response).unwrap().split(';').next().unwrap().to_owned();
    let (code, _, stderr) = run(server.cli().args(["user", "remove", ops_id]));
    assert_eq!(code, 0, "{stderr}");
    // Removal ends the member's sessions at once.
    let status = server.request(Method::GET, "/v1/me").header("cookie", &cookie).send().await.unwrap().status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The bootstrap owner sets a password with their key, then logs in.
    let mut password = server.cli();
    password.args(["user", "password"]);
    let output = pipe(&mut password, "owner password 123\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(login(&server, "default", "owner@localhost", "owner password 123").await.status(), StatusCode::OK);
    // Changing it again needs the current one.
    let output = pipe(server.cli().args(["user", "password"]), "another password 456\n");
    assert!(!output.status.success());
    let output = pipe(server.cli().args(["user", "password"]), "owner password 123\nanother password 456\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn pipe(command: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn retention_purges_old_executions_on_schedule_and_audits_it() {
    let server = codexos_test_support::TestServer::start_with_env(
        super::bin(),
        &[("CODEXOS_WORKER__RETENTION_INTERVAL", "500ms")],
    )
    .await;
    let owner = server.owner_key.clone();
    let (status, _) = server.call(Method::POST, "/v1/agents", Some(&owner), Some(json!({ "manifest": WALKER }))).await;
    assert_eq!(status, StatusCode::CREATED);
    let workspace = tempfile::tempdir().unwrap();
    let request = json!({ "agent": "acme-walker", "task": "walk", "workspace": workspace.path().to_str().unwrap() });
    let (_, execution) = server.call(Method::POST, "/v1/executions", Some(&owner), Some(request)).await;
    let id = execution["id"].as_str().unwrap().to_owned();
    finished(&server, &id).await;

    // Bad policies are refused; a developer may not set one.
    for body in [json!({ "executions": "1m" }), json!({ "executions": "soon" }), json!({ "forever": "1d" })] {
        let (status, answer) = server.call(Method::PUT, "/v1/tenant/retention", Some(&owner), Some(body)).await;
        assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY, "{status} {answer}");
    }
    let (_, developer) =
        server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": "d", "role": "developer" }))).await;
    let developer = developer["secret"].as_str().unwrap().to_owned();
    let (status, _) =
        server.call(Method::PUT, "/v1/tenant/retention", Some(&developer), Some(json!({ "executions": "1d" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, policy) =
        server.call(Method::PUT, "/v1/tenant/retention", Some(&owner), Some(json!({ "executions": "2h" }))).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(policy["executions"], "2h");
    assert!(policy["events"].is_null());

    // Nothing is old enough yet; then three hours pass (for this execution).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(server.get(&format!("/v1/executions/{id}")).await.0, StatusCode::OK);
    age_execution(&server, &id, 3 * 3600 * 1000).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.get(&format!("/v1/executions/{id}")).await.0 != StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "the execution was never purged:\n{}", server.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, audit) = server.get("/v1/audit?limit=1000").await;
    let purge = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["action"] == "retention.purge")
        .expect("the purge is audited")
        .clone();
    assert_eq!(purge["actor"], "system");
    assert_eq!(purge["details"]["purged"]["executions"], 1, "{purge}");
    assert!(audit["entries"].as_array().unwrap().iter().any(|entry| entry["action"] == "tenant.set_retention"));
}

/// Moves an execution's end `millis` into the past, as time passing would.
async fn age_execution(server: &TestServer, id: &str, millis: i64) {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let url = match server.database_url() {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", server.data_dir().join("codexos.db").display()),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    if !server.is_postgres() {
        // The running server writes too: wait for its lock rather than fail.
        conn.execute("PRAGMA busy_timeout = 10000").await.unwrap();
    }
    conn.execute(format!("UPDATE executions SET finished_at = finished_at - {millis} WHERE id = '{id}'").as_str())
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn guesses_sent_at_once_are_each_counted() {
    let server = server().await;
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/users",
            Some(&server.owner_key),
            Some(json!({ "email": "target@acme.test", "role": "viewer", "password": "the real password" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let guesses: Vec<_> = (0..10)
        .map(|n| {
            let request = server
                .request(Method::POST, "/v1/login")
                .json(&json!({ "tenant": "default", "email": "target@acme.test", "password": format!("guess {n}") }));
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let refused = statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count();
    let checked = statuses.iter().filter(|status| **status == StatusCode::UNAUTHORIZED).count();
    assert_eq!((checked, refused), (5, 5), "{statuses:?}");
}

#[tokio::test]
async fn a_demoted_or_removed_member_s_keys_shrink_with_them() {
    let server = server().await;
    let owner = server.owner_key.clone();
    let (_, member) = server
        .call(
            Method::POST,
            "/v1/users",
            Some(&owner),
            Some(json!({ "email": "ops@acme.test", "role": "admin", "password": "ops password 123" })),
        )
        .await;
    let member_id = member["id"].as_str().unwrap().to_owned();
    let response = login(&server, "default", "ops@acme.test", "ops password 123").await;
    let cookie = session_cookie(&response).unwrap().split(';').next().unwrap().to_owned();
    // The member makes an admin key of their own.
    let created: Value = server
        .request(Method::POST, "/v1/keys")
        .header("cookie", &cookie)
        .json(&json!({ "name": "mine", "role": "admin" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(server.call(Method::GET, "/v1/keys", Some(&key), None).await.0, StatusCode::OK);

    // Demoted to viewer, the key holds a viewer's permissions, and cannot
    // promote its owner back.
    let (status, _) = server
        .call(Method::PATCH, &format!("/v1/users/{member_id}"), Some(&owner), Some(json!({ "role": "viewer" })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.call(Method::GET, "/v1/keys", Some(&key), None).await.0, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(Method::PATCH, &format!("/v1/users/{member_id}"), Some(&key), Some(json!({ "role": "owner" })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, me) = server.call(Method::GET, "/v1/me", Some(&key), None).await;
    assert_eq!(me["role"], "viewer");
    // Removed, the key opens nothing.
    let (status, _) = server.call(Method::DELETE, &format!("/v1/users/{member_id}"), Some(&owner), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.call(Method::GET, "/v1/me", Some(&key), None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_password_set_in_one_tenant_opens_nothing_in_another() {
    let server = server().await;
    // Tenant default's admin gives ceo@victim.test a password it chose.
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/users",
            Some(&server.owner_key),
            Some(json!({ "email": "ceo@victim.test", "role": "viewer", "password": "chosen by default" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(login(&server, "default", "ceo@victim.test", "chosen by default").await.status(), StatusCode::OK);
    // The same person owns another tenant: that password does not open it.
    let victim = create_tenant(&server, "victim", "ceo@victim.test");
    let victim_key = victim["owner_key"].as_str().unwrap().to_owned();
    let denied = login(&server, "victim", "ceo@victim.test", "chosen by default").await;
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    // Their own password there is theirs to set, and changes nothing in default.
    let body = json!({ "new_password": "the ceo's own password" });
    let (status, _) = send(&server, Method::PUT, "/v1/me/password", &victim_key, Some(body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(login(&server, "victim", "ceo@victim.test", "the ceo's own password").await.status(), StatusCode::OK);
    assert_eq!(login(&server, "default", "ceo@victim.test", "chosen by default").await.status(), StatusCode::OK);
}
