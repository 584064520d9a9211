//! Single sign-on end to end: the real server and a fake OpenID Connect
//! provider (`codexos_test_support::oidc_provider`) on loopback, the browser
//! played by hand (no redirect followed, no cookie kept): the login's
//! redirect to the provider, the provider's back to the callback, the
//! session cookie. Every bad answer of the provider is refused, and leaves
//! no session and no member behind.

use std::io::Write;
use std::process::Stdio;

use codexos_test_support::oidc_provider::{
    FakeIdp, FakeIdpConfig, FakeUser, Misbehaviour, SigningAlgorithm, pkce_challenge,
};
use codexos_test_support::{TestServer, browser_client, run};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::bin;

const CLIENT_ID: &str = "codexos-acme";
const CLIENT_SECRET: &str = "idp-client-secret-0001";
const STATE_COOKIE: &str = "codexos_sso_state";
const SESSION_COOKIE: &str = "codexos_session";

/// A server that may use identity providers on loopback over plain HTTP.
async fn sso_server() -> TestServer {
    TestServer::start_with_env(bin(), &[("CODEXOS_SERVER__SSO_ALLOW_LOOPBACK_HTTP", "true")]).await
}

async fn provider(server: &TestServer, client_secret: Option<&str>, algorithm: SigningAlgorithm) -> FakeIdp {
    FakeIdp::start(FakeIdpConfig {
        client_id: CLIENT_ID.to_owned(),
        client_secret: client_secret.map(str::to_owned),
        redirect_uri: format!("{}/v1/sso/callback", server.url),
        algorithm,
    })
    .await
}

async fn configure(server: &TestServer, key: &str, body: Value) -> (StatusCode, Value) {
    server.call(Method::PUT, "/v1/tenant/sso", Some(key), Some(body)).await
}

/// The value of the cookie `name` set by a response, with its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// A login the browser started and the provider answered: the callback
/// URL it was sent back to, and the state cookie the login start set.
struct Flow {
    callback: String,
    state_cookie: String,
}

/// The browser's first two hops: our login (302 to the provider, with the
/// state cookie), then the provider (302 back to our callback).
async fn start_login(server: &TestServer, tenant: &str, redirect: Option<&str>) -> Flow {
    let browser = browser_client();
    let mut url = format!("{}/v1/sso/{tenant}/login", server.url);
    if let Some(redirect) = redirect {
        url =
            format!("{url}?redirect={}", url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>());
    }
    let response = browser.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{}", response.text().await.unwrap());
    let state_cookie = set_cookie(&response, STATE_COOKIE).expect("the login sets the state cookie");
    assert!(state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"), "{state_cookie}");
    let at_provider = browser.get(location(&response)).send().await.unwrap();
    assert_eq!(at_provider.status(), StatusCode::FOUND, "{}", at_provider.text().await.unwrap());
    let callback = location(&at_provider);
    assert!(callback.starts_with(&format!("{}/v1/sso/callback?", server.url)), "{callback}");
    Flow { callback, state_cookie: cookie_value(&state_cookie) }
}

/// The third hop: the callback, with the browser's state cookie (if any).
async fn finish_login(flow: &Flow, with_cookie: bool) -> reqwest::Response {
    let mut request = browser_client().get(&flow.callback);
    if with_cookie {
        request = request.header("cookie", format!("{STATE_COOKIE}={}", flow.state_cookie));
    }
    request.send().await.unwrap()
}

/// A whole login that must succeed: answers the session cookie (name=value) and where it sent the browser.
async fn log_in(server: &TestServer, tenant: &str, redirect: Option<&str>) -> (String, String) {
    let flow = start_login(server, tenant, redirect).await;
    let response = finish_login(&flow, true).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{}", response.text().await.unwrap());
    let session = set_cookie(&response, SESSION_COOKIE).expect("a session cookie");
    // Exactly as /v1/login sets it.
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(session.contains(attribute), "{attribute}: {session}");
    }
    let cleared = set_cookie(&response, STATE_COOKIE).expect("the state cookie is cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    (format!("{SESSION_COOKIE}={}", cookie_value(&session)), location(&response))
}

/// A whole login that must fail: answers the error's message.
async fn refused_login(server: &TestServer, tenant: &str) -> String {
    let flow = start_login(server, tenant, None).await;
    let response = finish_login(&flow, true).await;
    refusal(response).await
}

async fn refusal(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, SESSION_COOKIE).is_none(), "a refused login opened a session");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sso_failed", "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

async fn me(server: &TestServer, cookie: &str) -> Value {
    let response = server.request(Method::GET, "/v1/me").header("cookie", cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn member_emails(server: &TestServer, key: &str) -> Vec<(String, String)> {
    let (status, users) = server.call(Method::GET, "/v1/users", Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{users}");
    let mut members: Vec<(String, String)> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| (user["email"].as_str().unwrap().to_owned(), user["role"].as_str().unwrap().to_owned()))
        .collect();
    members.sort();
    members
}

async fn sso_audit(server: &TestServer, key: &str) -> Vec<Value> {
    let (status, audit) = server.call(Method::GET, "/v1/audit?limit=1000", Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "session.sso_login")
        .cloned()
        .collect()
}

fn create_tenant(server: &TestServer, slug: &str, owner: &str) -> String {
    let mut command = server.cli();
    command.args(["tenant", "create", slug, "--owner-email", owner, "--json"]);
    if let Some(url) = server.database_url() {
        command.args(["--database-url", url]);
    }
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str::<Value>(&stdout).unwrap()["owner_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_first_login_provisions_a_member_and_later_ones_reuse_them() {
    let server = sso_server().await;
    let owner = server.owner_key.clone();
    let idp = provider(&server, Some(CLIENT_SECRET), SigningAlgorithm::Es256).await;
    let (status, config) = configure(
        &server,
        &owner,
        json!({ "issuer": idp.issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "allowed_domains": ["ACME.test"] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["client_authentication"], "stored");
    assert_eq!(config["default_role"], "developer");
    assert_eq!(config["allowed_domains"], json!(["acme.test"]));
    assert_eq!(config["scopes"], json!(["openid", "email", "profile"]));
    assert_eq!(config["callback_url"], format!("{}/v1/sso/callback", server.url));
    assert_eq!(config["login_url"], format!("{}/v1/sso/default/login", server.url));
    let (status, shown) = server.get("/v1/tenant/sso").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!shown.to_string().contains(CLIENT_SECRET), "{shown}");

    // The first login: the user joins with the default role.
    let (cookie, went_to) = log_in(&server, "default", Some("/agents?tab=mine")).await;
    assert_eq!(went_to, "/agents?tab=mine");
    let first = me(&server, &cookie).await;
    assert_eq!(first["role"], "developer");
    assert_eq!(first["tenant"]["slug"], "default");
    assert!(first["session_id"].is_string(), "{first}");
    let user_id = first["user_id"].as_str().unwrap().to_owned();
    assert_eq!(
        member_emails(&server, &owner).await,
        vec![
            ("alice@acme.test".to_owned(), "developer".to_owned()),
            ("owner@localhost".to_owned(), "owner".to_owned())
        ]
    );
    let (_, users) = server.get("/v1/users").await;
    let alice = users["users"].as_array().unwrap().iter().find(|user| user["email"] == "alice@acme.test").unwrap();
    assert_eq!(alice["has_password"], false);

    // What the provider saw: the authorization request with PKCE S256,
    // state and nonce; the exchange authenticated with Basic and carrying
    // the verifier of that challenge.
    let authorize = &idp.authorize_requests()[0];
    assert_eq!(authorize["response_type"], "code");
    assert_eq!(authorize["scope"], "openid email profile");
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert_eq!(authorize["redirect_uri"], format!("{}/v1/sso/callback", server.url));
    assert!(authorize["nonce"].len() >= 43 && authorize["state"].len() >= 43, "{authorize:?}");
    let exchange = &idp.token_requests()[0];
    assert_eq!(exchange.status, 200);
    assert!(exchange.authorization.as_deref().is_some_and(|value| value.starts_with("Basic ")), "{exchange:?}");
    assert!(!exchange.form.contains_key("client_secret"), "{exchange:?}");
    let verifier = &exchange.form["code_verifier"];
    assert_eq!(pkce_challenge(verifier), authorize["code_challenge"], "the verifier sent is the challenge's");

    // A second login: the same member, a new session; nothing added.
    let (cookie_again, went_to) = log_in(&server, "default", None).await;
    assert_eq!(went_to, "/");
    let second = me(&server, &cookie_again).await;
    assert_eq!(second["user_id"], user_id.as_str());
    assert_ne!(second["session_id"], first["session_id"]);
    assert_eq!(member_emails(&server, &owner).await.len(), 2);

    // A member keeps the role they were given, whatever the default.
    let (status, _) = server
        .call(Method::PATCH, &format!("/v1/users/{user_id}"), Some(&owner), Some(json!({ "role": "viewer" })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (cookie_viewer, _) = log_in(&server, "default", None).await;
    assert_eq!(me(&server, &cookie_viewer).await["role"], "viewer");

    // Every login is on the tenant's audit log.
    let logins = sso_audit(&server, &owner).await;
    assert_eq!(logins.len(), 3, "{logins:?}");
    assert!(logins.iter().all(|entry| entry["outcome"] == "success"), "{logins:?}");
    assert_eq!(logins[0]["details"]["joined"], true);
    assert_eq!(logins[1]["details"]["joined"], false);
    assert_eq!(logins[0]["target"], "user:alice@acme.test");
    assert_eq!(logins[0]["details"]["issuer"], idp.issuer());
    let (_, audit) = server.get("/v1/audit?limit=1000").await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|entry| entry["action"] == "tenant.set_sso"));
}

#[tokio::test]
async fn a_user_of_another_tenant_joins_this_one_with_its_default_role() {
    // RS256 and a public client (PKCE alone, no secret).
    let server = sso_server().await;
    let idp = provider(&server, None, SigningAlgorithm::Rs256).await;
    let globex = create_tenant(&server, "globex", "boss@globex.test");
    for key in [server.owner_key.clone(), globex.clone()] {
        let body = json!({ "issuer": idp.issuer(), "client_id": CLIENT_ID, "default_role": "viewer" });
        let (status, config) = configure(&server, &key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{config}");
        assert_eq!(config["client_authentication"], "none");
    }
    let (acme_cookie, _) = log_in(&server, "default", None).await;
    let (globex_cookie, _) = log_in(&server, "globex", None).await;
    let acme_me = me(&server, &acme_cookie).await;
    let globex_me = me(&server, &globex_cookie).await;
    assert_eq!(globex_me["tenant"]["slug"], "globex");
    assert_eq!(globex_me["role"], "viewer");
    // One user, a member of both.
    assert_eq!(globex_me["user_id"], acme_me["user_id"]);
    assert!(member_emails(&server, &globex).await.contains(&("alice@acme.test".to_owned(), "viewer".to_owned())));
    // The public client sent its id and no secret, in the body.
    for exchange in idp.token_requests() {
        assert_eq!(exchange.status, 200);
        assert_eq!(exchange.authorization, None);
        assert_eq!(exchange.form["client_id"], CLIENT_ID);
        assert!(!exchange.form.contains_key("client_secret"));
    }
    // Each tenant's log holds its own login.
    assert_eq!(sso_audit(&server, &globex).await.len(), 1);
    assert_eq!(sso_audit(&server, &server.owner_key).await.len(), 1);
}

#[tokio::test]
async fn every_bad_answer_of_the_provider_is_refused_and_leaves_nothing() {
    let server = sso_server().await;
    let owner = server.owner_key.clone();
    let idp = provider(&server, Some(CLIENT_SECRET), SigningAlgorithm::Es256).await;
    let body = json!({ "issuer": idp.issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "allowed_domains": ["acme.test"] });
    assert_eq!(configure(&server, &owner, body).await.0, StatusCode::CREATED);
    let members_before = member_emails(&server, &owner).await;
    let cases = [
        (Misbehaviour::WrongAudience, "ID token refused: wrong audience"),
        (Misbehaviour::ExtraAudienceWithoutAzp, "ID token refused: wrong authorized party"),
        (Misbehaviour::WrongIssuer, "ID token refused: wrong issuer"),
        (Misbehaviour::ForeignSignature, "ID token refused: bad signature"),
        (Misbehaviour::Expired, "ID token refused: expired"),
        (Misbehaviour::WrongNonce, "ID token refused: nonce mismatch"),
        (Misbehaviour::EmailUnverified, "ID token refused: the email address is not verified"),
        (Misbehaviour::Unsigned, "ID token refused: unsupported signature algorithm none"),
        (Misbehaviour::Hmac, "ID token refused: unsupported signature algorithm HS256"),
        (
            Misbehaviour::TokenError,
            "the token endpoint refused the code: HTTP 400, invalid_grant: the code was revoked",
        ),
        (Misbehaviour::AuthorizeError, "the identity provider refused the login: access_denied"),
        (
            Misbehaviour::ChallengeMismatch,
            "the token endpoint refused the code: HTTP 400, invalid_grant: PKCE verification failed",
        ),
    ];
    for (misbehaviour, expected) in cases {
        idp.misbehave(misbehaviour);
        let message = refused_login(&server, "default").await;
        assert!(message.contains(expected), "{misbehaviour:?}: {message}");
    }
    // A verified email of a domain the tenant does not allow.
    idp.misbehave(Misbehaviour::None);
    idp.set_user(FakeUser {
        subject: "mallory-1".to_owned(),
        email: "mallory@evil.test".to_owned(),
        email_verified: true,
    });
    let message = refused_login(&server, "default").await;
    assert!(message.contains("the email domain 'evil.test' is not allowed"), "{message}");

    // Nobody joined, and every refusal is on the log with its reason.
    assert_eq!(member_emails(&server, &owner).await, members_before);
    let logins = sso_audit(&server, &owner).await;
    assert_eq!(logins.len(), cases.len() + 1, "{logins:?}");
    for (entry, (misbehaviour, expected)) in logins.iter().zip(cases) {
        assert_eq!(entry["outcome"], "failure", "{misbehaviour:?}");
        assert!(entry["details"]["reason"].as_str().unwrap().contains(expected), "{misbehaviour:?}: {entry}");
    }
    assert_eq!(logins.last().unwrap()["target"], "user:mallory@evil.test");
}

#[tokio::test]
async fn a_login_state_answers_once_and_only_to_the_browser_that_started_it() {
    let server = sso_server().await;
    let idp = provider(&server, Some(CLIENT_SECRET), SigningAlgorithm::Es256).await;
    let body = json!({ "issuer": idp.issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET });
    assert_eq!(configure(&server, &server.owner_key, body).await.0, StatusCode::CREATED);

    // A replayed callback finds its state used.
    let flow = start_login(&server, "default", None).await;
    assert_eq!(finish_login(&flow, true).await.status(), StatusCode::SEE_OTHER);
    let message = refusal(finish_login(&flow, true).await).await;
    assert!(message.contains("unknown or already used login state"), "{message}");

    // A callback without the browser's state cookie (an attacker making a
    // victim's browser finish the attacker's login) is refused, and burns
    // the state.
    let flow = start_login(&server, "default", None).await;
    let message = refusal(finish_login(&flow, false).await).await;
    assert!(message.contains("this browser did not start this login"), "{message}");
    let message = refusal(finish_login(&flow, true).await).await;
    assert!(message.contains("unknown or already used"), "{message}");

    // No state, a made-up one.
    let browser = browser_client();
    let response = browser.get(format!("{}/v1/sso/callback?code=abc", server.url)).send().await.unwrap();
    assert!(refusal(response).await.contains("no state"));
    let response = browser.get(format!("{}/v1/sso/callback?code=abc&state=forged", server.url)).send().await.unwrap();
    assert!(refusal(response).await.contains("unknown or already used"));
    // Only the refusal whose tenant was known (from a state it recognized)
    // is on the tenant's log.
    let logins = sso_audit(&server, &server.owner_key).await;
    let outcomes: Vec<&str> = logins.iter().map(|entry| entry["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["success", "failure"]);

    // The login goes back to this site only.
    for redirect in ["https://evil.test/", "//evil.test/x", "/\\evil.test", "agents"] {
        let url = format!(
            "{}/v1/sso/default/login?redirect={}",
            server.url,
            url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
        );
        let response = browser.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{redirect}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_redirect");
    }
    // Unknown tenants, and tenants without SSO, have no login.
    create_tenant(&server, "globex", "boss@globex.test");
    for tenant in ["nowhere", "globex", "Not_A_Slug"] {
        let response = browser.get(format!("{}/v1/sso/{tenant}/login", server.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{tenant}");
    }

    // The provider itself checks PKCE: a code exchanged with another
    // verifier than the one of its challenge is refused.
    let authorize = idp.authorize_requests()[0].clone();
    let challenge_of_verifier = pkce_challenge(&"v".repeat(43));
    let mut authorize_url = url::Url::parse(&format!("{}/authorize", idp.issuer())).unwrap();
    for (key, value) in &authorize {
        let value = if key == "code_challenge" { &challenge_of_verifier } else { value };
        authorize_url.query_pairs_mut().append_pair(key, value);
    }
    let response = browser.get(authorize_url.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let back = url::Url::parse(&location(&response)).unwrap();
    let code = back.query_pairs().find(|(key, _)| key == "code").unwrap().1.into_owned();
    let exchange = |verifier: String| {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", &authorize["redirect_uri"])
            .append_pair("code_verifier", &verifier)
            .append_pair("client_id", CLIENT_ID)
            .append_pair("client_secret", CLIENT_SECRET)
            .finish();
        browser
            .post(format!("{}/token", idp.issuer()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let refused = exchange("w".repeat(43)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].as_str().unwrap().contains("PKCE"), "{body}");
}

#[tokio::test]
async fn configuring_sso_takes_an_admin_and_a_provider_that_answers() {
    let server = sso_server().await;
    let owner = server.owner_key.clone();
    let idp = provider(&server, Some(CLIENT_SECRET), SigningAlgorithm::Es256).await;
    let mut keys = std::collections::HashMap::new();
    for role in ["admin", "developer"] {
        let (status, created) =
            server.call(Method::POST, "/v1/keys", Some(&owner), Some(json!({ "name": role, "role": role }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        keys.insert(role, created["secret"].as_str().unwrap().to_owned());
    }
    let body = json!({ "issuer": idp.issuer(), "client_id": CLIENT_ID, "client_secret_secret": "IDP_CLIENT_SECRET" });

    // A developer may neither see nor change it.
    assert_eq!(configure(&server, &keys["developer"], body.clone()).await.0, StatusCode::FORBIDDEN);
    let (status, _) = server.call(Method::GET, "/v1/tenant/sso", Some(&keys["developer"]), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An admin may, within their rank and with a secret that exists.
    let admin = keys["admin"].clone();
    let (status, refused) = configure(&server, &admin, body.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "missing_secret");
    let (status, _) = server
        .call(Method::PUT, "/v1/secrets/IDP_CLIENT_SECRET", Some(&admin), Some(json!({ "value": CLIENT_SECRET })))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut as_owner = body.clone();
    as_owner["default_role"] = json!("owner");
    assert_eq!(configure(&server, &admin, as_owner).await.0, StatusCode::FORBIDDEN);

    // The issuer must answer its discovery, under exactly its name.
    for (issuer, reason) in [
        ("http://127.0.0.1:1/idp".to_owned(), "cannot reach"),
        (format!("{}/", idp.issuer()), "names the issuer"),
        ("http://id.example.com".to_owned(), "must be an https:// URL"),
        ("not a url".to_owned(), "is not a URL"),
    ] {
        let mut wrong = body.clone();
        wrong["issuer"] = json!(issuer);
        let (status, refused) = configure(&server, &admin, wrong).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{issuer}: {refused}");
        assert_eq!(refused["error"]["code"], "invalid_issuer");
        assert!(refused["error"]["message"].as_str().unwrap().contains(reason), "{issuer}: {refused}");
    }
    assert_eq!(server.get("/v1/tenant/sso").await.0, StatusCode::NOT_FOUND);

    let (status, config) = configure(&server, &admin, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{config}");
    assert_eq!(config["client_authentication"], "tenant_secret");
    assert_eq!(config["client_secret_secret"], "IDP_CLIENT_SECRET");
    // The secret is read from the tenant's secrets at each login.
    let (cookie, _) = log_in(&server, "default", None).await;
    assert_eq!(me(&server, &cookie).await["role"], "developer");
    let (status, _) = configure(&server, &admin, body).await;
    assert_eq!(status, StatusCode::OK, "replaced");

    // Removed: no more logins; the session opened stays.
    let response = server.request(Method::DELETE, "/v1/tenant/sso").bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.get("/v1/tenant/sso").await.0, StatusCode::NOT_FOUND);
    let response = browser_client().get(format!("{}/v1/sso/default/login", server.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(me(&server, &cookie).await["role"], "developer");
    let (_, audit) = server.get("/v1/audit?limit=1000").await;
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|entry| entry["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"tenant.set_sso") && actions.contains(&"tenant.delete_sso"), "{actions:?}");
}

#[tokio::test]
async fn the_cli_sets_shows_and_deletes_sso() {
    let server = sso_server().await;
    let idp = provider(&server, Some(CLIENT_SECRET), SigningAlgorithm::Es256).await;
    let mut set = server.cli();
    set.args(["tenant", "sso", "set", "--issuer", idp.issuer(), "--client-id", CLIENT_ID, "--client-secret-stdin"])
        .args(["--allowed-domain", "acme.test", "--allowed-domain", "corp.test", "--default-role", "viewer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Off the test's runtime, which serves the provider the server asks.
    let output = tokio::task::spawn_blocking(move || {
        let mut child = set.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{CLIENT_SECRET}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Single sign-on configured"), "{stdout}");
    assert!(stdout.contains(&format!("{}/v1/sso/callback", server.url)), "{stdout}");

    let (code, stdout, stderr) = run(server.cli().args(["tenant", "sso", "show", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["client_authentication"], "stored");
    assert_eq!(shown["default_role"], "viewer");
    assert_eq!(shown["allowed_domains"], json!(["acme.test", "corp.test"]));
    // The secret read from standard input is the one the provider accepts.
    let (cookie, _) = log_in(&server, "default", None).await;
    assert_eq!(me(&server, &cookie).await["role"], "viewer");

    let (code, stdout, stderr) = run(server.cli().args(["tenant", "sso", "show"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("stored encrypted") && stdout.contains("acme.test, corp.test"), "{stdout}");
    let (code, stdout, stderr) = run(server.cli().args(["tenant", "sso", "delete"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    let (code, _, stderr) = run(server.cli().args(["tenant", "sso", "show"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no single sign-on"), "{stderr}");
    // A bad issuer is refused with the server's reason.
    let (code, _, stderr) =
        run(server.cli().args(["tenant", "sso", "set", "--issuer", "http://127.0.0.1:1/x", "--client-id", "c"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach"), "{stderr}");
}
