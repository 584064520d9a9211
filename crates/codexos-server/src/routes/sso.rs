//! Single sign-on per tenant with OpenID Connect (authorization code with
//! PKCE): a tenant's admin configures its identity provider; people start
//! at `/v1/sso/{tenant}/login`, log in at the provider, and come back to
//! `/v1/sso/callback`, where the ID token is checked, the user joins the
//! tenant on their first login, and a session opens exactly as with a
//! password. The protocol itself is `crate::oidc`'s.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::header::{COOKIE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use codexos_core::{Permission, Role, SecretName, TenantId, TenantSlug, format_millis, now_millis};
use codexos_store::{AuditOutcome, NewAuditEntry, OidcClientSecret, SealedSecret, StoreError, TenantOidc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::secrets::{secrets_unavailable, tenant_data_key, wrapped};
use super::sessions::{record, session_cookie, with_cookie};
use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};
use crate::oidc::{self, Expected, LoginSecrets, OidcError};

/// How long a login may take at the provider.
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// The cookie tying a login under way to the browser that started it, so
/// that nobody can log a victim in by making their browser open a callback
/// URL of the attacker's own login. SameSite=Lax: it must come back with
/// the provider's redirect, a navigation from another site.
const STATE_COOKIE: &str = "codexos_sso_state";
const CALLBACK_PATH: &str = "/v1/sso/callback";
/// The audit action of every SSO login, failed or not.
const ACTION: &str = "session.sso_login";
/// The associated data a client secret stored with the configuration is
/// sealed under (in place of a secret's name).
const SEALED_SECRET_NAME: &str = "_sso_client_secret";
const MAX_CLIENT_SECRET_BYTES: usize = 4096;
const MAX_REDIRECT_BYTES: usize = 2048;

fn callback_url(state: &AppState) -> String {
    format!("{}{CALLBACK_PATH}", state.public_url)
}

fn sso_failed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "sso_failed", message)
}

/// Where to go after the login: a path on this site only (`/...`, not
/// `//host` nor `/\host`, which browsers take for another site), printable
/// ASCII.
fn check_redirect(path: &str) -> Result<&str, ApiError> {
    let valid = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= MAX_REDIRECT_BYTES
        && path.bytes().all(|byte| byte.is_ascii_graphic() && byte != b'\\');
    if valid {
        Ok(path)
    } else {
        Err(ApiError::bad_request("invalid_redirect", "redirect must be a path on this site, like /agents"))
    }
}

/// The query's parameters, by name (the first of each); malformed
/// encoding is decoded leniently rather than refused.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// The state cookie, sent back only to the callback: its path as the
/// browser sees it, under the public URL's path (a proxy's prefix).
fn state_cookie(state: &AppState, value: &str, max_age: cookie::time::Duration) -> cookie::Cookie<'static> {
    let prefix = url::Url::parse(&state.public_url).map(|url| url.path().trim_end_matches('/').to_owned());
    cookie::Cookie::build((STATE_COOKIE, value.to_owned()))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Lax)
        .path(format!("{}{CALLBACK_PATH}", prefix.unwrap_or_default()))
        .max_age(max_age)
        .build()
}

fn redirect(status: StatusCode, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = status.into_response();
            response.headers_mut().insert(LOCATION, value);
            response
        }
        Err(err) => ApiError::internal(&err).into_response(),
    }
}

/// Starts a login with the tenant's identity provider: answers 302 to its
/// authorization endpoint (code flow, PKCE S256, state and nonce). After
/// the login the browser is sent to `redirect` (a path on this site;
/// default `/`).
#[utoipa::path(
    get, path = "/v1/sso/{tenant}/login", tag = "identity",
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("redirect" = Option<String>, Query, description = "Where to go once logged in: a path on this site"),
    ),
    responses(
        (status = 302, description = "To the identity provider"),
        (status = 400, body = ErrorEnvelope, description = "A redirect to another site"),
        (status = 404, body = ErrorEnvelope, description = "No such tenant, or no single sign-on for it"),
        (status = 429, body = ErrorEnvelope, description = "Too many logins under way"),
        (status = 502, body = ErrorEnvelope, description = "The identity provider cannot be used"),
    )
)]
pub async fn sso_login(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let redirect_after = query_param(query.as_deref(), "redirect").unwrap_or_else(|| "/".to_owned());
    let redirect_after = check_redirect(&redirect_after)?;
    let no_sso = || ApiError::not_found(format!("tenant '{tenant}' has no single sign-on"));
    let slug = TenantSlug::parse(&tenant).map_err(|_| no_sso())?;
    let Some((tenant_id, Some(config))) = state.store.tenant_oidc_by_slug(&slug).await? else {
        return Err(no_sso());
    };
    let metadata = state.oidc.discover(&config.issuer).await.map_err(|err| {
        tracing::warn!(tenant = %slug, error = %err, "single sign-on: the identity provider cannot be used");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "sso_unavailable",
            format!("the identity provider cannot be used: {err}"),
        )
    })?;
    let login = LoginSecrets::generate();
    let new_login = codexos_store::NewOidcLogin {
        state: &login.state,
        nonce: &login.nonce,
        pkce_verifier: &login.pkce_verifier,
        redirect_after,
        ttl_ms: LOGIN_TTL_MS,
    };
    state.store.begin_oidc_login(tenant_id, &new_login).await.map_err(|err| match err {
        StoreError::InvalidState(message) => ApiError::too_many_requests("sso_busy", message, 60),
        other => other.into(),
    })?;
    let location = oidc::authorization_url(&metadata, &config.client_id, &callback_url(&state), &config.scopes, &login)
        .map_err(|err| ApiError::new(StatusCode::BAD_GATEWAY, "sso_unavailable", err.to_string()))?;
    let response = redirect(StatusCode::FOUND, &location);
    Ok(with_cookie(response, &state_cookie(&state, &login.state, cookie::time::Duration::milliseconds(LOGIN_TTL_MS))))
}

/// What one callback learnt, for its audit entry.
struct Attempt<'a> {
    state: &'a AppState,
    tenant: Option<TenantId>,
    email: Option<String>,
    peer: SocketAddr,
    request_id: Option<String>,
}

impl Attempt<'_> {
    /// Refuses the login (401 `sso_failed`), audited in the tenant's log
    /// when the tenant is known.
    async fn fail(&self, message: String) -> ApiError {
        let entry = NewAuditEntry {
            actor: format!("address:{}", self.peer.ip()),
            action: ACTION.to_owned(),
            target: format!("user:{}", self.email.as_deref().unwrap_or("unknown")),
            outcome: AuditOutcome::Failure,
            request_id: self.request_id.clone(),
            details: serde_json::json!({ "reason": message }),
        };
        tracing::info!(tenant = ?self.tenant, reason = %message, "single sign-on refused");
        record(self.state, self.tenant, &entry).await;
        sso_failed(format!("single sign-on failed: {message}"))
    }
}

/// Where the identity provider sends the browser back: the state is
/// taken (each answers once), the code exchanged with the PKCE verifier,
/// the ID token checked (signature against the provider's keys, issuer,
/// audience, expiry, nonce, a verified email). A user logging in for the
/// first time joins the tenant with its default role. Answers 303 to the
/// login's `redirect` with the session cookie (as `/v1/login` sets it).
/// Every failure is 401 `sso_failed`, naming the check that failed.
#[utoipa::path(
    get, path = "/v1/sso/callback", tag = "identity",
    params(
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The login's state"),
        ("error" = Option<String>, Query, description = "The provider's refusal, instead of a code"),
    ),
    responses(
        (status = 303, description = "Logged in: the session is in the Set-Cookie header"),
        (status = 401, body = ErrorEnvelope, description = "`sso_failed`, naming what failed"),
    )
)]
pub async fn sso_callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request_id = headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let mut attempt = Attempt { state: &state, tenant: None, email: None, peer, request_id };
    match callback(&mut attempt, &headers, query.as_deref()).await {
        Ok(response) => response,
        Err(Failure::Refused(message)) => attempt.fail(message).await.into_response(),
        Err(Failure::Internal(err)) => err.into_response(),
    }
}

enum Failure {
    /// The login is refused: audited, answered 401.
    Refused(String),
    /// Our own failure (the database): answered as it is.
    Internal(ApiError),
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Internal(err.into())
    }
}

impl From<OidcError> for Failure {
    fn from(err: OidcError) -> Self {
        Failure::Refused(err.to_string())
    }
}

async fn callback(attempt: &mut Attempt<'_>, headers: &HeaderMap, query: Option<&str>) -> Result<Response, Failure> {
    let state = attempt.state;
    let refuse = |message: &str| Failure::Refused(message.to_owned());
    let Some(login_state) = query_param(query, "state").filter(|value| !value.is_empty()) else {
        return Err(refuse("the answer has no state"));
    };
    let Some(login) = state.store.take_oidc_login(&login_state).await? else {
        return Err(refuse("unknown or already used login state; start the login again"));
    };
    attempt.tenant = Some(login.tenant);
    if login.expires_at <= now_millis() {
        return Err(refuse("the login took more than 10 minutes; start it again"));
    }
    if cookie_value(headers, STATE_COOKIE).as_deref() != Some(login_state.as_str()) {
        return Err(refuse("this browser did not start this login (its state cookie is missing or different)"));
    }
    // RFC 6749 4.1.2.1: the provider refused, and says why.
    if let Some(error) = query_param(query, "error") {
        let description = query_param(query, "error_description").map(|text| format!(": {text}")).unwrap_or_default();
        let said: String = format!("{error}{description}").chars().filter(|c| !c.is_control()).take(300).collect();
        return Err(Failure::Refused(format!("the identity provider refused the login: {said}")));
    }
    let Some(code) = query_param(query, "code").filter(|code| !code.is_empty()) else {
        return Err(refuse("the answer has no authorization code"));
    };
    let Some(config) = state.store.tenant_oidc(login.tenant).await? else {
        return Err(refuse("the tenant's single sign-on was removed during the login"));
    };
    let metadata = state.oidc.discover(&config.issuer).await?;
    let client_secret = open_client_secret(state, login.tenant, &config).await?;
    let id_token = state
        .oidc
        .exchange_code(
            &metadata,
            &config.client_id,
            client_secret.as_ref(),
            &code,
            &login.pkce_verifier,
            &callback_url(state),
        )
        .await?;
    let expected = Expected { issuer: &config.issuer, client_id: &config.client_id, nonce: &login.nonce };
    let identity = state.oidc.verify_id_token(&metadata, &id_token, &expected).await?;
    attempt.email = Some(identity.email.clone());
    let domain = identity.email.rsplit_once('@').map(|(_, domain)| domain).unwrap_or_default();
    if !config.allowed_domains.is_empty() && !config.allowed_domains.iter().any(|allowed| allowed == domain) {
        return Err(Failure::Refused(format!("the email domain '{domain}' is not allowed to log in to this tenant")));
    }
    let (member, joined) = state.store.provision_sso_member(login.tenant, &identity.email, config.default_role).await?;
    let ttl = i64::try_from(state.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let session = state.store.create_session(login.tenant, member.user, ttl).await?;
    let entry = NewAuditEntry {
        actor: format!("user:{} session:{}", member.user, session.id),
        action: ACTION.to_owned(),
        target: format!("user:{}", identity.email),
        outcome: AuditOutcome::Success,
        request_id: attempt.request_id.clone(),
        details: serde_json::json!({
            "address": attempt.peer.ip().to_string(),
            "issuer": config.issuer,
            "subject": identity.subject,
            "joined": joined,
            "role": member.role,
        }),
    };
    record(state, Some(login.tenant), &entry).await;
    let response = redirect(StatusCode::SEE_OTHER, &login.redirect_after);
    let response = with_cookie(response, &session_cookie(session.secret.expose(), ttl));
    Ok(with_cookie(response, &state_cookie(state, "", cookie::time::Duration::ZERO)))
}

/// The client secret to authenticate to the token endpoint with, if any.
async fn open_client_secret(
    state: &AppState,
    tenant: TenantId,
    config: &TenantOidc,
) -> Result<Option<SecretString>, Failure> {
    let (name, sealed) = match &config.client_secret {
        OidcClientSecret::None => return Ok(None),
        OidcClientSecret::Secret(name) => {
            let Some((_, sealed)) = state.store.sealed_secret(tenant, name).await? else {
                return Err(Failure::Refused(format!(
                    "the client secret's tenant secret {name} is not set (codexos secret set {name})"
                )));
            };
            (name.clone(), sealed)
        }
        OidcClientSecret::Sealed(sealed) => (sealed_secret_name().map_err(Failure::Internal)?, sealed.clone()),
    };
    let stored_key = state.store.data_key(tenant).await?.ok_or_else(|| {
        Failure::Internal(ApiError::internal(&std::io::Error::other("a sealed SSO client secret without a data key")))
    })?;
    let data_key = state
        .keyring
        .unwrap(tenant, &wrapped(&stored_key))
        .map_err(|err| Failure::Internal(secrets_unavailable(&err)))?;
    let sealed = codexos_secrets::Sealed { nonce: sealed.nonce, ciphertext: sealed.ciphertext };
    let value = data_key.open(tenant, &name, &sealed).map_err(|err| Failure::Internal(secrets_unavailable(&err)))?;
    Ok(Some(value))
}

fn sealed_secret_name() -> Result<SecretName, ApiError> {
    SecretName::parse(SEALED_SECRET_NAME).map_err(|err| ApiError::internal(&err))
}

/// The tenant's single sign-on, as shown: never the client secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SsoView {
    issuer: String,
    client_id: String,
    /// `none` (a public client: PKCE alone), `stored` (kept encrypted with
    /// this configuration) or `tenant_secret` (the secret named below).
    client_authentication: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_secret: Option<String>,
    /// The role of users joining by their first login.
    default_role: String,
    /// Email domains allowed to log in; empty: any.
    allowed_domains: Vec<String>,
    scopes: Vec<String>,
    /// The redirect URI to register at the identity provider.
    callback_url: String,
    /// Where people start a login.
    login_url: String,
    created_at: String,
    updated_at: String,
}

fn view(state: &AppState, slug: &TenantSlug, config: TenantOidc) -> SsoView {
    let (client_authentication, client_secret_secret) = match config.client_secret {
        OidcClientSecret::None => ("none", None),
        OidcClientSecret::Sealed(_) => ("stored", None),
        OidcClientSecret::Secret(name) => ("tenant_secret", Some(name.to_string())),
    };
    SsoView {
        issuer: config.issuer,
        client_id: config.client_id,
        client_authentication: client_authentication.to_owned(),
        client_secret_secret,
        default_role: config.default_role.to_string(),
        allowed_domains: config.allowed_domains,
        scopes: config.scopes,
        callback_url: callback_url(state),
        login_url: format!("{}/v1/sso/{slug}/login", state.public_url),
        created_at: format_millis(config.created_at),
        updated_at: format_millis(config.updated_at),
    }
}

/// The identity provider to configure. Its `Debug` shows nothing of the secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSso {
    /// The issuer, exactly as the provider names it (its discovery document
    /// is at `{issuer}/.well-known/openid-configuration`).
    issuer: String,
    /// Our client id at the provider.
    client_id: String,
    /// The client secret, kept encrypted with the tenant's data key. Leave
    /// it and `client_secret_secret` out for a public client (PKCE alone).
    #[schema(value_type = Option<String>)]
    client_secret: Option<SecretString>,
    /// Or: the name of the tenant secret holding the client secret.
    client_secret_secret: Option<String>,
    /// The role of users joining by their first login; at most the
    /// caller's own. Default: `developer`.
    default_role: Option<String>,
    /// Only emails of these domains may log in. Default: any.
    #[serde(default)]
    allowed_domains: Vec<String>,
    /// The scopes to ask for. Default: `openid email profile`; `openid` is
    /// always asked.
    scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for SetSso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSso")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_secret", &self.client_secret_secret)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_field", message)
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// A domain as written in an email address: lowercase letters, digits,
/// dashes, dots between labels.
fn parse_domain(text: &str) -> Result<String, ApiError> {
    let domain = text.trim().trim_start_matches('@').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    if valid { Ok(domain) } else { Err(invalid(format!("allowed_domains: '{text}' is not a domain"))) }
}

/// Scopes as RFC 6749 3.3 has them, `openid` first and always.
fn parse_scopes(scopes: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let asked = scopes.unwrap_or_else(|| oidc::DEFAULT_SCOPES.map(str::to_owned).to_vec());
    let mut scopes = vec!["openid".to_owned()];
    for scope in asked {
        let valid = !scope.is_empty()
            && scope.len() <= 128
            && scope.bytes().all(|byte| byte == 0x21 || (0x23..=0x5b).contains(&byte) || (0x5d..=0x7e).contains(&byte));
        if !valid {
            return Err(invalid(format!("scopes: '{}' is not a scope", scope.chars().take(64).collect::<String>())));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.len() > 32 {
        return Err(invalid("scopes: at most 32"));
    }
    Ok(scopes)
}

/// The tenant's single sign-on. Needs `tenant:admin`.
#[utoipa::path(
    get, path = "/v1/tenant/sso", tag = "tenant", security(("api_key" = [])),
    responses(
        (status = 200, body = SsoView), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope, description = "No single sign-on configured"),
    )
)]
pub async fn show_sso(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<SsoView>> {
    caller.require(Permission::TenantAdmin)?;
    let config = state
        .store
        .tenant_oidc(caller.0.tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("this tenant has no single sign-on"))?;
    Ok(ApiJson(view(&state, &caller.0.tenant_slug, config)))
}

/// Configures the tenant's identity provider (created: 201, replaced: 200).
/// Needs `tenant:admin`. The provider is checked first by running its
/// discovery: 422 with the reason if that fails.
#[utoipa::path(
    put, path = "/v1/tenant/sso", tag = "tenant", security(("api_key" = [])), request_body = SetSso,
    responses(
        (status = 200, body = SsoView, description = "Replaced"), (status = 201, body = SsoView, description = "Created"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope, description = "The issuer cannot be used, or the named secret does not exist"),
    )
)]
pub async fn set_sso(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SetSso>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, Json<SsoView>)> {
    caller.require(Permission::TenantAdmin)?;
    let tenant = caller.0.tenant;
    let issuer = request.issuer.trim().to_owned();
    let client_id = request.client_id.trim().to_owned();
    if client_id.is_empty() || client_id.len() > 256 || client_id.chars().any(char::is_control) {
        return Err(invalid("client_id must be 1 to 256 printable characters"));
    }
    let default_role = match &request.default_role {
        Some(text) => text
            .parse::<Role>()
            .map_err(|err: codexos_core::role::RoleError| invalid(format!("default_role: {err}")))?,
        None => Role::Developer,
    };
    if !caller.0.role.can_grant(default_role) {
        return Err(ApiError::forbidden(format!("a {} cannot make people join as {default_role}", caller.0.role)));
    }
    let mut allowed_domains =
        request.allowed_domains.iter().map(|text| parse_domain(text)).collect::<ApiResult<Vec<_>>>()?;
    allowed_domains.sort();
    allowed_domains.dedup();
    let scopes = parse_scopes(request.scopes)?;
    oidc::check_provider_url(&issuer, state.oidc.allow_loopback_http())
        .map_err(|err| unprocessable("invalid_issuer", format!("issuer: {err}")))?;
    let client_secret = match (request.client_secret, request.client_secret_secret) {
        (Some(_), Some(_)) => {
            return Err(invalid("give client_secret or client_secret_secret, not both"));
        }
        (None, None) => OidcClientSecret::None,
        (None, Some(name)) => {
            let name = SecretName::parse(&name).map_err(|err| unprocessable("invalid_name", err.to_string()))?;
            if state.store.sealed_secret(tenant, &name).await?.is_none() {
                return Err(unprocessable(
                    "missing_secret",
                    format!("the tenant has no secret {name}: set it first (codexos secret set {name})"),
                ));
            }
            OidcClientSecret::Secret(name)
        }
        (Some(value), None) => {
            let text = value.expose_secret();
            if text.is_empty() || text.len() > MAX_CLIENT_SECRET_BYTES {
                return Err(invalid(format!("client_secret must be 1 to {MAX_CLIENT_SECRET_BYTES} bytes")));
            }
            let stored_key = tenant_data_key(&state, tenant).await?;
            let data_key =
                state.keyring.unwrap(tenant, &wrapped(&stored_key)).map_err(|err| secrets_unavailable(&err))?;
            let sealed =
                data_key.seal(tenant, &sealed_secret_name()?, &value).map_err(|err| ApiError::internal(&err))?;
            OidcClientSecret::Sealed(SealedSecret {
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                key_version: stored_key.version,
            })
        }
    };
    // The provider must answer its discovery now, not at the first login.
    let metadata = state
        .oidc
        .discover_now(&issuer)
        .await
        .map_err(|err| unprocessable("invalid_issuer", format!("the issuer cannot be used: {err}")))?;
    if !matches!(client_secret, OidcClientSecret::None) && !metadata.accepts_client_secret() {
        return Err(unprocessable(
            "invalid_issuer",
            "the provider takes no client secret (token_endpoint_auth_methods_supported lists neither client_secret_basic nor client_secret_post)",
        ));
    }
    let existed = state.store.tenant_oidc(tenant).await?.is_some();
    let config = TenantOidc {
        issuer,
        client_id,
        client_secret,
        default_role,
        allowed_domains,
        scopes,
        created_at: 0,
        updated_at: 0,
    };
    let stored = state.store.put_tenant_oidc(tenant, &config).await?;
    let note = AuditNote::new(format!("tenant:{}", caller.0.tenant_slug)).with_details(serde_json::json!({
        "issuer": stored.issuer,
        "client_id": stored.client_id,
        "default_role": stored.default_role,
        "allowed_domains": stored.allowed_domains,
    }));
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Extension(note), Json(view(&state, &caller.0.tenant_slug, stored))))
}

/// Removes the tenant's single sign-on: logins under way fail; sessions
/// opened with it last until they expire. Needs `tenant:admin`.
#[utoipa::path(
    delete, path = "/v1/tenant/sso", tag = "tenant", security(("api_key" = [])),
    responses(
        (status = 204, description = "Removed"), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn delete_sso(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Extension<AuditNote>)> {
    caller.require(Permission::TenantAdmin)?;
    state.store.delete_tenant_oidc(caller.0.tenant).await.map_err(|err| match err {
        StoreError::NotFound(_) => ApiError::not_found("this tenant has no single sign-on"),
        other => other.into(),
    })?;
    Ok((StatusCode::NO_CONTENT, Extension(AuditNote::new(format!("tenant:{}", caller.0.tenant_slug)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_this_site() {
        for good in ["/", "/agents", "/executions/1?tab=events#top", "/a%20b"] {
            assert!(check_redirect(good).is_ok(), "{good}");
        }
        for bad in
            ["", "agents", "//evil.test/x", "/\\evil.test", "https://evil.test/", "/a b", "/a\nb", "/\u{e9}", "/\\"]
        {
            assert!(check_redirect(bad).is_err(), "{bad:?}");
        }
        assert!(check_redirect(&format!("/{}", "a".repeat(MAX_REDIRECT_BYTES))).is_err());
    }

    #[test]
    fn domains_and_scopes_are_checked() {
        assert_eq!(parse_domain(" Example.COM ").ok().as_deref(), Some("example.com"));
        assert_eq!(parse_domain("@corp.example").ok().as_deref(), Some("corp.example"));
        for bad in ["", "exa mple.com", "-a.com", "a..com", "a.com/"] {
            assert!(parse_domain(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_scopes(None).ok(), Some(vec!["openid".into(), "email".into(), "profile".into()]));
        assert_eq!(parse_scopes(Some(vec!["email".into()])).ok(), Some(vec!["openid".into(), "email".into()]));
        assert!(parse_scopes(Some(vec!["a b".into()])).is_err());
        assert!(parse_scopes(Some(vec!["a\"b".into()])).is_err());
        assert!(sealed_secret_name().is_ok());
    }
}
