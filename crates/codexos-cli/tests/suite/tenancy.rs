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

/// Waits for approval before its one shell step: an execution of the first
/// tenant that stays waiting for the whole walk.
const CAREFUL: &str = r#"
name = "acme-careful"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[approval]
tools = ["shell"]
[[steps]]
tool = "shell"
args = { command = "echo careful > careful.txt" }
"#;

/// An id of the same shape as `real` that names nothing: its last character changed.
fn absent_like(real: &str) -> String {
    let mut absent = real.to_owned();
    let last = absent.pop().unwrap();
    absent.push(if last == '0' { '1' } else { '0' });
    absent
}

/// An answer as it may be compared with another: the ids the request named
/// replaced by `<id>`, and times (`*_at`) blanked.
fn comparable(text: &str, named: &[&str]) -> Value {
    let mut text = text.to_owned();
    for id in named {
        text = text.replace(id, "<id>");
    }
    let mut value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    blank_times(&mut value);
    value
}

fn blank_times(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if name.ends_with("_at") && field.is_string() {
                    *field = json!("<time>");
                } else {
                    blank_times(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_times),
        _ => {}
    }
}

/// A path parameter filled in twice: with an object of the first tenant,
/// and with an id of the same shape that names nothing.
type Filling = Vec<(&'static str, String, String)>;

/// The first tenant's objects that path templates name.
struct AcmeObjects {
    /// A finished execution, and one waiting for an approval.
    finished: String,
    waiting: String,
    /// The seq of the waiting execution's `approval_requested` event.
    approval_seq: String,
    keys: Vec<String>,
    users: Vec<String>,
    agents: Vec<String>,
    publishers: Vec<String>,
    secrets: Vec<String>,
    /// An audit entry of the first tenant past the end of the second's log.
    audit_seq: String,
}

impl AcmeObjects {
    /// Every way to fill `template` with the first tenant's objects; one
    /// empty filling for a template without parameters. A template nothing
    /// here fills fails the test: a new endpoint must be walked too.
    fn fillings(&self, template: &str) -> Vec<Filling> {
        let each = |param: &'static str, values: &[String]| -> Vec<Filling> {
            values.iter().map(|value| vec![(param, value.clone(), absent_like(value))]).collect()
        };
        match template {
            _ if !template.contains('{') => vec![Vec::new()],
            "/v1/executions/{id}/approvals/{seq}" => vec![
                vec![
                    ("{id}", self.waiting.clone(), absent_like(&self.waiting)),
                    ("{seq}", self.approval_seq.clone(), self.approval_seq.clone()),
                ],
                vec![("{id}", self.finished.clone(), absent_like(&self.finished)), ("{seq}", "1".into(), "1".into())],
            ],
            _ if template.starts_with("/v1/executions/{id}") => {
                each("{id}", &[self.finished.clone(), self.waiting.clone()])
            }
            "/v1/keys/{id}" => each("{id}", &self.keys),
            "/v1/users/{id}" => each("{id}", &self.users),
            "/v1/agents/{name}" => each("{name}", &self.agents),
            "/v1/publishers/{id}" => each("{id}", &self.publishers),
            "/v1/secrets/{name}" => each("{name}", &self.secrets),
            "/v1/audit/entries/{seq}/proof" => vec![vec![("{seq}", self.audit_seq.clone(), "999999".into())]],
            _ => panic!("{template}: no object of the first tenant to walk it with; add one to this test"),
        }
    }
}

/// Sends the same request about an object of the first tenant and about
/// one that does not exist, as `key`: the answers must be the same but for
/// the ids named. Answers the first one.
async fn same_as_absent(
    server: &TestServer,
    method: Method,
    (path, absent_path): (&str, &str),
    key: &str,
    (body, absent_body): (Option<Value>, Option<Value>),
    (named, absent_named): (&[&str], &[&str]),
) -> (StatusCode, String) {
    let (status, text) = send(server, method.clone(), path, key, body).await;
    let (absent_status, absent_text) = send(server, method.clone(), absent_path, key, absent_body).await;
    assert_eq!(
        (status, comparable(&text, named)),
        (absent_status, comparable(&absent_text, absent_named)),
        "{method} {path} answers the second tenant otherwise than {absent_path}, which names nothing"
    );
    (status, text)
}

#[tokio::test]
async fn a_second_tenant_sees_nothing_of_the_first_on_any_endpoint() {
    let server = TestServer::start_with_env(
        super::bin(),
        &[
            ("CODEXOS_SERVER__SSO_ALLOW_LOOPBACK_HTTP", "true"),
            // The walk sends a few hundred requests; a 429 would make two answers differ.
            ("CODEXOS_QUOTAS__REQUESTS_PER_SECOND", "100000"),
            ("CODEXOS_QUOTAS__BURST", "100000"),
        ],
    )
    .await;
    let acme = server.owner_key.clone();
    // The first tenant owns one of every kind of object: agents (one signed
    // by its publisher key), a finished execution and one waiting for an
    // approval, keys, members, a secret, a publisher key, a policy version,
    // single sign-on, a retention policy, audit entries.
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
    let key_secret = key["secret"].as_str().unwrap().to_owned();
    let (status, member) = server
        .call(Method::POST, "/v1/users", Some(&acme), Some(json!({ "email": "dev@acme.test", "role": "developer" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let user_id = member["id"].as_str().unwrap().to_owned();
    let (status, _) =
        send(&server, Method::PUT, "/v1/secrets/ACME_TOKEN", &acme, Some(json!({ "value": "s3cr3t-acme" }))).await;
    assert_eq!(status, StatusCode::CREATED);

    let publisher_key = codexos_engine::signing::PrivateKey::generate("acme-release").unwrap();
    let public_key = publisher_key.public_key().to_string();
    let body = json!({ "name": "acme-release", "public_key": public_key });
    let (status, publisher) = server.call(Method::POST, "/v1/publishers", Some(&acme), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{publisher}");
    let publisher_id = publisher["id"].as_str().unwrap().to_owned();
    assert_eq!(publisher_id, publisher_key.id().to_string());
    let signed = codexos_engine::signing::sign_manifest(CAREFUL, &publisher_key).unwrap();
    let (status, careful) =
        server.call(Method::POST, "/v1/agents", Some(&acme), Some(json!({ "manifest": signed }))).await;
    assert_eq!(status, StatusCode::CREATED, "{careful}");
    let waiting_workspace = tempfile::tempdir().unwrap();
    let request =
        json!({ "agent": "acme-careful", "task": "wait", "workspace": waiting_workspace.path().to_str().unwrap() });
    let (status, execution) = server.call(Method::POST, "/v1/executions", Some(&acme), Some(request)).await;
    assert_eq!(status, StatusCode::CREATED, "{execution}");
    let waiting_id = execution["id"].as_str().unwrap().to_owned();
    super::wait_for_status(&server, &waiting_id, "waiting_approval").await;
    let timeline = super::events(&server, &waiting_id).await;
    let approval = timeline.iter().find(|event| event["kind"] == "approval_requested").unwrap();
    let approval_seq = approval["seq"].to_string();

    let rego = "package codexos\n\ndeny contains \"acme-only-rule\" if input.nothing\n";
    let (status, policy) =
        server.call(Method::PUT, "/v1/policy", Some(&acme), Some(json!({ "modules": { "main.rego": rego } }))).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    let policy_version = policy["version"].to_string();
    let policy_sha256 = policy["sha256"].as_str().unwrap().to_owned();

    let idp = codexos_test_support::oidc_provider::FakeIdp::start(codexos_test_support::oidc_provider::FakeIdpConfig {
        client_id: "codexos-acme-client".to_owned(),
        client_secret: Some("acme-idp-client-secret".to_owned()),
        redirect_uri: format!("{}/v1/sso/callback", server.url),
        algorithm: codexos_test_support::oidc_provider::SigningAlgorithm::Es256,
    })
    .await;
    let issuer = idp.issuer().to_owned();
    let body = json!({
        "issuer": issuer, "client_id": "codexos-acme-client", "client_secret": "acme-idp-client-secret",
        "default_role": "viewer", "allowed_domains": ["acme-sso.test"],
    });
    let (status, sso) = server.call(Method::PUT, "/v1/tenant/sso", Some(&acme), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{sso}");

    let body = json!({ "executions": "4000h", "events": "3001h", "checkpoints": "2002h", "memories": "1003h" });
    let (status, retention) = server.call(Method::PUT, "/v1/tenant/retention", Some(&acme), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{retention}");

    let (_, me) = server.get("/v1/me").await;
    let acme_tenant_id = me["tenant"]["id"].as_str().unwrap().to_owned();
    let owner_key_id = me["key_id"].as_str().unwrap().to_owned();
    let (_, users) = server.get("/v1/users").await;
    let owner_id =
        users["users"].as_array().unwrap().iter().find(|user| user["email"] == "owner@localhost").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let mut agent_sha256s = Vec::new();
    for name in ["acme-walker", "acme-careful"] {
        let (_, agent) = server.get(&format!("/v1/agents/{name}")).await;
        agent_sha256s.push(agent["version"]["manifest_sha256"].as_str().unwrap().to_owned());
    }
    assert_eq!(careful["signature"]["status"], "verified", "{careful}");
    let (_, audit) = server.get("/v1/audit?limit=1000").await;
    let audit = audit["entries"].as_array().unwrap();
    let acme_entry_hash = audit[0]["entry_hash"].as_str().unwrap().to_owned();
    let audit_seq = audit.last().unwrap()["seq"].as_u64().unwrap();

    // What no answer to the second tenant may hold.
    let mut markers: Vec<String> = [
        execution_id.as_str(),
        "acme-walker",
        key_id.as_str(),
        user_id.as_str(),
        "dev@acme.test",
        "s3cr3t-acme",
        acme_entry_hash.as_str(),
        "owner@localhost",
    ]
    .map(str::to_owned)
    .to_vec();
    markers.extend([
        waiting_id.clone(),
        "acme-careful".to_owned(),
        workspace.path().to_str().unwrap().to_owned(),
        waiting_workspace.path().to_str().unwrap().to_owned(),
        "acme-ci".to_owned(),
        key_secret.clone(),
        acme.clone(),
        owner_key_id.clone(),
        owner_id.clone(),
        acme_tenant_id.clone(),
        "ACME_TOKEN".to_owned(),
        publisher_id.clone(),
        "acme-release".to_owned(),
        public_key.clone(),
        policy_sha256.clone(),
        "acme-only-rule".to_owned(),
        issuer.clone(),
        "codexos-acme-client".to_owned(),
        "acme-idp-client-secret".to_owned(),
        "acme-sso.test".to_owned(),
    ]);
    markers.extend(agent_sha256s);
    for field in ["executions", "events", "checkpoints", "memories"] {
        markers.push(retention[field].as_str().unwrap().to_owned());
    }
    markers.extend(audit.iter().map(|entry| entry["entry_hash"].as_str().unwrap().to_owned()));
    let leaked = |path: &str, text: &str, named: &[&str]| {
        for marker in &markers {
            if !named.contains(&marker.as_str()) {
                assert!(!text.contains(marker.as_str()), "{path} leaked {marker}: {text}");
            }
        }
    };

    let globex = create_tenant(&server, "globex", "boss@globex.test")["owner_key"].as_str().unwrap().to_owned();
    // Its lists and singletons hold its own objects only, none of the first tenant's.
    for (path, expected_status, pointer, expected) in [
        ("/v1/agents", StatusCode::OK, "/agents", json!([])),
        ("/v1/executions", StatusCode::OK, "/executions", json!([])),
        ("/v1/keys", StatusCode::OK, "/keys/0/name", json!("owner")),
        ("/v1/users", StatusCode::OK, "/users/0/email", json!("boss@globex.test")),
        ("/v1/secrets", StatusCode::OK, "/secrets", json!([])),
        ("/v1/publishers", StatusCode::OK, "/publishers", json!([])),
        ("/v1/policy", StatusCode::OK, "/default", json!(true)),
        ("/v1/policy/versions", StatusCode::OK, "/versions", json!([])),
        (
            "/v1/tenant/retention",
            StatusCode::OK,
            "",
            json!({ "executions": null, "events": null, "checkpoints": null, "memories": null }),
        ),
        ("/v1/tenant/sso", StatusCode::NOT_FOUND, "/error/code", json!("not_found")),
        ("/v1/audit", StatusCode::OK, "/next_after", json!(null)),
        ("/v1/audit/verify", StatusCode::OK, "/status", json!("intact")),
        ("/v1/usage", StatusCode::OK, "", Value::Null),
        ("/v1/me", StatusCode::OK, "/tenant/slug", json!("globex")),
    ] {
        let (status, text) = send(&server, Method::GET, path, &globex, None).await;
        assert_eq!(status, expected_status, "{path}: {text}");
        leaked(path, &text, &[]);
        if !expected.is_null() || !pointer.is_empty() {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body.pointer(pointer), Some(&expected), "{path}: {text}");
        }
    }
    let (_, keys) = server.call(Method::GET, "/v1/keys", Some(&globex), None).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    let (_, users) = server.call(Method::GET, "/v1/users", Some(&globex), None).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");

    let objects = AcmeObjects {
        finished: execution_id.clone(),
        waiting: waiting_id.clone(),
        approval_seq,
        keys: vec![key_id.clone(), owner_key_id.clone()],
        users: vec![user_id.clone(), owner_id.clone()],
        agents: vec!["acme-walker".to_owned(), "acme-careful".to_owned()],
        publishers: vec![publisher_id.clone()],
        secrets: vec!["ACME_TOKEN".to_owned()],
        audit_seq: audit_seq.to_string(),
    };

    let (_, openapi) = server.call(Method::GET, "/openapi.json", None, None).await;
    let mut walked = 0;
    let mut walked_templates = Vec::new();
    for (template, item) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if template == "/v1/logout" || template == "/v1/login" || operation["security"].is_null() {
                continue; // public, or not a tenant's
            }
            // Bodies that pass validation, so the lookup itself is what answers.
            let body = match (method.as_str(), template.as_str()) {
                ("GET" | "DELETE", _) => None,
                (_, "/v1/executions/{id}/rollback") => Some(json!({ "to_step": 1 })),
                (_, "/v1/executions/{id}/fork") => Some(json!({ "from_step": 1 })),
                (_, "/v1/executions/{id}/approvals/{seq}") => Some(json!({ "approve": true })),
                (_, "/v1/users/{id}") => Some(json!({ "role": "viewer" })),
                (_, "/v1/publishers/{id}") => Some(json!({ "trusted": false })),
                (_, "/v1/secrets/{name}") => Some(json!({ "value": "globex-own-value" })),
                _ => Some(json!({})),
            };
            if template == "/v1/audit/entries/{seq}/proof" {
                // The first tenant's entry must lie past the end of the second's own log.
                let (_, verification) = server.call(Method::GET, "/v1/audit/verify", Some(&globex), None).await;
                let size = verification["size"].as_u64().unwrap();
                assert!(
                    audit_seq > size,
                    "the first tenant's log ({audit_seq}) is no longer than the second's ({size})"
                );
            }
            for filling in objects.fillings(template) {
                let (mut path, mut absent_path) = (template.clone(), template.clone());
                for (param, real, absent) in &filling {
                    path = path.replace(param, real);
                    absent_path = absent_path.replace(param, absent);
                }
                let named: Vec<&str> = filling
                    .iter()
                    .filter(|(_, real, absent)| real != absent)
                    .map(|(_, real, _)| real.as_str())
                    .collect();
                let absent_named: Vec<&str> = filling
                    .iter()
                    .filter(|(_, real, absent)| real != absent)
                    .map(|(_, _, absent)| absent.as_str())
                    .collect();
                let (status, text) = if filling.is_empty() {
                    send(&server, method.clone(), &path, &globex, body.clone()).await
                } else {
                    // An object of the other tenant is answered exactly like a missing one.
                    same_as_absent(
                        &server,
                        method.clone(),
                        (&path, &absent_path),
                        &globex,
                        (body.clone(), body.clone()),
                        (&named, &absent_named),
                    )
                    .await
                };
                walked += 1;
                leaked(&format!("{method} {path}"), &text, &named);
                if template.contains('{') && !template.starts_with("/v1/audit") && method != Method::PUT {
                    // An object of the other tenant is answered like a missing one.
                    assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
                }
                if template == "/v1/secrets/{name}" && method == Method::PUT {
                    // A name is the tenant's own: the second tenant made its own secret
                    // (201, not 200 "replaced"); it is deleted again.
                    assert_eq!(status, StatusCode::CREATED, "{method} {path}: {text}");
                    for name in [&path, &absent_path] {
                        let (status, text) = send(&server, Method::DELETE, name, &globex, None).await;
                        assert_eq!(status, StatusCode::NO_CONTENT, "{name}: {text}");
                    }
                } else if template.contains('{') {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
                }
            }
            walked_templates.push(format!("{method} {template}"));
        }
    }
    assert!(walked >= 25, "walked only {walked} endpoints");
    for endpoint in [
        "GET /v1/policy",
        "GET /v1/policy/versions",
        "GET /v1/tenant/retention",
        "GET /v1/tenant/sso",
        "GET /v1/publishers",
        "DELETE /v1/publishers/{id}",
        "GET /v1/secrets",
        "GET /v1/users",
        "GET /v1/audit",
        "GET /v1/audit/entries/{seq}/proof",
        "POST /v1/executions/{id}/approvals/{seq}",
    ] {
        assert!(walked_templates.iter().any(|walked| walked == endpoint), "{endpoint} was not walked");
    }

    // Objects named in a query or a body, not the path, are missing too.
    let absent_walker = absent_like("acme-walker");
    for (path, absent_path, named, absent_named) in [
        (
            format!("/v1/policy?version={policy_version}"),
            "/v1/policy?version=999999".to_owned(),
            policy_version.clone(),
            "999999".to_owned(),
        ),
        (
            "/v1/agents/acme-walker?version=1.0.0".to_owned(),
            format!("/v1/agents/{absent_walker}?version=1.0.0"),
            "acme-walker".to_owned(),
            absent_walker.clone(),
        ),
        (
            "/v1/executions?agent=acme-walker".to_owned(),
            format!("/v1/executions?agent={absent_walker}"),
            "acme-walker".to_owned(),
            absent_walker.clone(),
        ),
    ] {
        let (_, text) = same_as_absent(
            &server,
            Method::GET,
            (&path, &absent_path),
            &globex,
            (None, None),
            (&[named.as_str()], &[absent_named.as_str()]),
        )
        .await;
        leaked(&path, &text, &[named.as_str()]);
    }
    let globex_workspace = tempfile::tempdir().unwrap();
    let start =
        |agent: &str| json!({ "agent": agent, "task": "walk", "workspace": globex_workspace.path().to_str().unwrap() });
    let (status, text) = same_as_absent(
        &server,
        Method::POST,
        ("/v1/executions", "/v1/executions"),
        &globex,
        (Some(start("acme-walker")), Some(start(&absent_walker))),
        (&["acme-walker"], &[absent_walker.as_str()]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    leaked("POST /v1/executions", &text, &["acme-walker"]);
    let sso_naming = |secret: &str| json!({ "issuer": issuer, "client_id": "globex", "client_secret_secret": secret });
    let (status, text) = same_as_absent(
        &server,
        Method::PUT,
        ("/v1/tenant/sso", "/v1/tenant/sso"),
        &globex,
        (Some(sso_naming("ACME_TOKEN")), Some(sso_naming("ACME_TOKE0"))),
        (&["ACME_TOKEN"], &["ACME_TOKE0"]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    leaked("PUT /v1/tenant/sso", &text, &["ACME_TOKEN", issuer.as_str()]);
    // A manifest signed with the first tenant's publisher key is, to the
    // second, signed with a key it never registered.
    let stranger = codexos_engine::signing::PrivateKey::generate("stranger").unwrap();
    let stranger_id = stranger.id().to_string();
    let manifest = WALKER.replace("acme-walker", "globex-signed");
    let signed_by = |key: &codexos_engine::signing::PrivateKey| json!({ "manifest": codexos_engine::signing::sign_manifest(&manifest, key).unwrap() });
    let (status, text) = same_as_absent(
        &server,
        Method::POST,
        ("/v1/agents", "/v1/agents"),
        &globex,
        (Some(signed_by(&publisher_key)), Some(signed_by(&stranger))),
        (&[publisher_id.as_str()], &[stranger_id.as_str()]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    leaked("POST /v1/agents", &text, &[publisher_id.as_str()]);

    // The first tenant's objects are untouched.
    let (_, execution) = server.get(&format!("/v1/executions/{execution_id}")).await;
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(super::status_of(&server, &waiting_id).await, "waiting_approval");
    let (_, keys) = server.get("/v1/keys").await;
    let key = keys["keys"].as_array().unwrap().iter().find(|key| key["id"] == key_id.as_str()).unwrap();
    assert!(key["revoked_at"].is_null(), "{key}");
    let (_, users) = server.get("/v1/users").await;
    assert!(users["users"].as_array().unwrap().iter().any(|user| user["id"] == user_id.as_str()));
    let member = users["users"].as_array().unwrap().iter().find(|user| user["id"] == user_id.as_str()).unwrap();
    assert_eq!(member["role"], "developer", "{member}");
    let (_, secrets) = server.get("/v1/secrets").await;
    assert!(secrets["secrets"].as_array().unwrap().iter().any(|secret| secret["name"] == "ACME_TOKEN"));
    let (_, publishers) = server.get("/v1/publishers").await;
    assert_eq!(publishers["publishers"][0]["id"], publisher_id.as_str(), "{publishers}");
    assert_eq!(publishers["publishers"][0]["trusted"], true, "{publishers}");
    assert!(publishers["publishers"][0]["revoked_at"].is_null(), "{publishers}");
    let (_, current) = server.get("/v1/policy").await;
    assert_eq!(current["sha256"], policy_sha256.as_str(), "{current}");
    let (status, now) = server.get("/v1/tenant/sso").await;
    assert_eq!((status, &now["issuer"]), (StatusCode::OK, &json!(issuer)), "{now}");
    let (_, now) = server.get("/v1/tenant/retention").await;
    assert_eq!(now, retention);
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
