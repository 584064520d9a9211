use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::server;

#[tokio::test]
async fn health_answers_without_credentials() {
    let server = server().await;
    let (status, body) = server.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }));
}

#[tokio::test]
async fn detailed_health_reports_database_sandbox_and_workers() {
    let server = server().await;
    let (status, body) = server.call(Method::GET, "/health/detailed", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = server.call(Method::GET, "/health/detailed", Some("cxo_not-a-real-key"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The worker of `codexos up` registers alongside the API; give it a moment.
    let mut body = Value::Null;
    for _ in 0..100 {
        let (status, answer) = server.get("/health/detailed").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        body = answer;
        if body["worker"]["workers_alive"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(body["worker"]["workers_alive"], 1, "{body}");
    assert_eq!(body["worker"]["queue_depth"], 0);
    let backend = if server.is_postgres() { "postgres" } else { "sqlite" };
    assert_eq!(body["database"]["backend"], backend);
    assert_eq!(body["database"]["ok"], true);
    assert!(body["database"]["round_trip_ms"].as_f64().unwrap() >= 0.0);
    if server.is_postgres() {
        // The platform's own pool, not a test connection, is bound by
        // row-level security: were the role switch lost, this would fail.
        assert_eq!(body["database"]["role"], "codexos_app", "{body}");
        assert_eq!(body["database"]["row_level_security"], true, "{body}");
    } else {
        assert!(body["database"].get("role").is_none(), "{body}");
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(body["sandbox"]["kernel"], kernel.trim());
    let expected_status = if body["sandbox"]["missing"].as_array().unwrap().is_empty() { "ok" } else { "degraded" };
    assert_eq!(body["status"], expected_status, "{body}");
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_tenant() {
    let server = server().await;
    for _ in 0..3 {
        assert_eq!(server.get("/v1/me").await.0, StatusCode::OK);
    }
    server.call(Method::GET, "/v1/me", None, None).await;
    let response = server.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let value_of = |series: &str| -> f64 {
        let line =
            text.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        value_of(r#"codexos_http_requests_total{method="GET",route="/v1/me",status="200",tenant="default"}"#),
        3.0
    );
    assert_eq!(
        value_of(r#"codexos_http_request_errors_total{method="GET",route="/v1/me",status="401",tenant="-"}"#),
        1.0
    );
    assert_eq!(
        value_of(r#"codexos_http_request_duration_seconds_count{method="GET",route="/v1/me",tenant="default"}"#),
        3.0
    );
    assert!(value_of("process_resident_memory_bytes") > 0.0);
    // The worker registers concurrently with the API's start: poll until it shows.
    let mut alive = 0.0;
    for _ in 0..100 {
        let text = server.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
        alive = text.lines().find_map(|line| line.strip_prefix("codexos_workers_alive ")).unwrap().parse().unwrap();
        if alive == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(alive, 1.0);
}

#[tokio::test]
async fn openapi_and_reference_describe_the_api() {
    let server = server().await;
    let (status, api) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/health", "/health/detailed", "/metrics", "/openapi.json", "/v1/me", "/v1/keys", "/v1/keys/{id}"] {
        assert!(api["paths"].get(path).is_some(), "{path} missing from the document");
    }
    assert_eq!(
        api["paths"]["/v1/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateKey"
    );
    assert!(api["components"]["securitySchemes"]["api_key"].is_object());

    let response = server.request(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("<code>/v1/keys/{id}</code>") && page.contains("CreateKey"), "{page}");
}

#[tokio::test]
async fn errors_always_use_the_envelope() {
    let server = server().await;
    let key = server.owner_key.clone();
    let expect = |status: StatusCode, body: &Value, want_status: StatusCode, code: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    };

    let (status, body) = server.call(Method::GET, "/v1/nothing-here", Some(&key), None).await;
    expect(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server.call(Method::PUT, "/v1/keys", Some(&key), None).await;
    expect(status, &body, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    let send_raw = |content_type: &'static str, raw: &'static str| {
        server.request(Method::POST, "/v1/keys").bearer_auth(&key).header("content-type", content_type).body(raw).send()
    };
    for (content_type, raw, code) in [
        ("application/json", "{\"name\": ", "invalid_json"),
        ("text/plain", "{\"name\": \"ci\", \"role\": \"viewer\"}", "unsupported_content_type"),
        ("application/json", "{\"name\": 5, \"role\": \"viewer\"}", "invalid_body"),
        ("application/json", "{\"name\": \"ci\", \"role\": \"viewer\", \"extra\": 1}", "invalid_body"),
        ("application/json", "{\"name\": \"ci\", \"role\": \"emperor\"}", "invalid_field"),
        ("application/json", "{\"name\": \"ci\", \"role\": \"viewer\", \"expires_in\": \"soon\"}", "invalid_field"),
    ] {
        let response = send_raw(content_type, raw).await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        expect(status, &body, StatusCode::BAD_REQUEST, code);
    }
    // Nothing of the rejected bodies was stored.
    let (_, keys) = server.get("/v1/keys").await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");

    let huge = "x".repeat(5 * 1024 * 1024);
    let response = server
        .request(Method::POST, "/v1/keys")
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{huge}\", \"role\": \"viewer\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = server().await;
    let response = server.request(Method::GET, "/health").send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "{generated}");
    let response = server.request(Method::GET, "/health").header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    // The id reaches the logs too, with the tenant once the caller is known.
    server
        .request(Method::GET, "/v1/me")
        .header("x-request-id", "find-me-in-logs")
        .bearer_auth(&server.owner_key)
        .send()
        .await
        .unwrap();
    let mut found = false;
    for _ in 0..50 {
        found = server.stderr().lines().any(|line| {
            let Ok(entry) = serde_json::from_str::<Value>(line) else { return false };
            entry["span"]["request_id"] == "find-me-in-logs" && entry["span"]["tenant"] == "default"
        });
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found, "no JSON log line with the request and tenant ids:\n{}", server.stderr());
}

#[tokio::test]
async fn keys_carry_roles_and_die_when_revoked() {
    let server = server().await;
    let owner = server.owner_key.clone();
    let (status, me) = server.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((me["tenant"]["slug"].as_str(), me["role"].as_str()), (Some("default"), Some("owner")));

    let create = |role: &str, key: String| {
        let body = json!({ "name": format!("{role}-key"), "role": role });
        let server = &server;
        async move { server.call(Method::POST, "/v1/keys", Some(&key), Some(body)).await }
    };
    let (status, admin) = create("admin", owner.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{admin}");
    let admin_secret = admin["secret"].as_str().unwrap().to_owned();
    assert!(admin_secret.starts_with(admin["key"]["prefix"].as_str().unwrap()));

    // Nobody grants more than they hold.
    let (status, body) = create("owner", admin_secret.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, developer) = create("developer", admin_secret.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let developer_secret = developer["secret"].as_str().unwrap().to_owned();

    // A developer may read its identity but not manage keys.
    let (status, me) = server.call(Method::GET, "/v1/me", Some(&developer_secret), None).await;
    assert_eq!((status, me["role"].as_str()), (StatusCode::OK, Some("developer")));
    assert!(!me["permissions"].as_array().unwrap().contains(&json!("keys:write")));
    let (status, body) = server.call(Method::GET, "/v1/keys", Some(&developer_secret), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));

    // An admin cannot revoke the owner's key.
    let (_, keys) = server.get("/v1/keys").await;
    let owner_key_id = keys["keys"].as_array().unwrap().iter().find(|key| key["role"] == "owner").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server.call(Method::DELETE, &format!("/v1/keys/{owner_key_id}"), Some(&admin_secret), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let developer_id = developer["key"]["id"].as_str().unwrap();
    let (status, revoked) =
        server.call(Method::DELETE, &format!("/v1/keys/{developer_id}"), Some(&admin_secret), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = server.call(Method::GET, "/v1/me", Some(&developer_secret), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = server.call(Method::DELETE, "/v1/keys/not-a-uuid", Some(&owner), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_id")));
    let unknown = uuid_like();
    let (status, body) = server.call(Method::DELETE, &format!("/v1/keys/{unknown}"), Some(&owner), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

fn uuid_like() -> String {
    "01900000-0000-7000-8000-000000000000".to_owned()
}

/// Missing, malformed, unknown, revoked and expired credentials, and forged
/// cookies: every one is answered 401 with the very same body, so the answer
/// tells nothing of which it was.
#[tokio::test]
async fn every_credential_problem_gets_the_same_401() {
    let server = server().await;
    let owner = server.owner_key.clone();
    let mut created = Vec::new();
    for (name, expires_in) in [("revoked", None), ("expiring", Some("1s"))] {
        let mut body = json!({ "name": name, "role": "viewer" });
        if let Some(expires_in) = expires_in {
            body["expires_in"] = json!(expires_in);
        }
        let (status, key) = server.call(Method::POST, "/v1/keys", Some(&owner), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        created.push(key);
    }
    let revoked = created[0]["secret"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call(Method::DELETE, &format!("/v1/keys/{}", created[0]["key"]["id"].as_str().unwrap()), Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let expired = created[1]["secret"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // A well-formed key that never existed: the owner's with its secret part changed.
    let unknown = format!("{}{}", &owner[..owner.len() - 4], if owner.ends_with("AAAA") { "BBBB" } else { "AAAA" });

    let mut answers = Vec::new();
    let attempts: Vec<(&str, Vec<(&str, reqwest::header::HeaderValue)>)> = vec![
        ("no credentials", vec![]),
        ("another scheme", vec![("authorization", "Basic b3duZXI6cGFzcw==".parse().unwrap())]),
        ("bearer without a token", vec![("authorization", "Bearer".parse().unwrap())]),
        ("bearer with spaces", vec![("authorization", "Bearer    ".parse().unwrap())]),
        ("not a key", vec![("authorization", "Bearer not-a-key".parse().unwrap())]),
        (
            "bytes that are not text",
            vec![("authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap())],
        ),
        ("unknown key", vec![("authorization", format!("Bearer {unknown}").parse().unwrap())]),
        ("revoked key", vec![("authorization", format!("Bearer {revoked}").parse().unwrap())]),
        ("expired key", vec![("authorization", format!("Bearer {expired}").parse().unwrap())]),
        ("forged cookie", vec![("cookie", format!("codexos_session=cxs_{}", "A".repeat(43)).parse().unwrap())]),
        ("garbage cookie", vec![("cookie", "codexos_session=%%%; other=1".parse().unwrap())]),
    ];
    for (what, headers) in attempts {
        let mut request = server.request(Method::GET, "/v1/me");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body: Value = response.json().await.unwrap();
        answers.push((what, body));
    }
    for (what, body) in &answers {
        assert_eq!(body, &answers[0].1, "{what} is answered differently from {}", answers[0].0);
    }
}

/// Guessing across many accounts from one address locks the address, even
/// for an account that was never guessed at.
#[tokio::test]
async fn guessing_across_accounts_locks_the_address() {
    let server = server().await;
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/users",
            Some(&server.owner_key),
            Some(json!({ "email": "real@acme.test", "role": "viewer", "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let login = |email: String, password: &'static str| {
        let request = server
            .request(Method::POST, "/v1/login")
            .json(&json!({ "tenant": "default", "email": email, "password": password }));
        async move { request.send().await.unwrap() }
    };
    // Fewer than an account's limit each, over the address's limit in all.
    let mut refused = 0;
    for n in 0..24 {
        let response = login(format!("guess{}@acme.test", n % 8), "wrong password!!").await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&response.status()),
            "{}",
            response.status()
        );
        refused += usize::from(response.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(refused > 0, "the address was never slowed down");
    let locked = login("real@acme.test".to_owned(), "correct horse battery").await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.headers().contains_key("retry-after"));
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "login_locked");
}
