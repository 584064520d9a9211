//! Who is calling: a bearer API key, or a login session's cookie, checked
//! against the store; and the permission each endpoint declares.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codexos_core::Permission;
use codexos_store::Principal;

use crate::AppState;
use crate::audit::CallerSlot;
use crate::error::ApiError;

/// An authenticated caller. Extracting it authenticates the request, tags
/// the request's span and metrics with the tenant, and fails with 401.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// Fails with 403 unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.0.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("the {} role does not grant {permission}", self.0.role)))
        }
    }
}

/// The cookie that carries a login session's secret.
pub const SESSION_COOKIE: &str = "codexos_session";

/// One answer for every credential problem (missing, malformed, unknown,
/// expired, revoked, forged): which one it was is nobody's business.
fn unauthorized() -> ApiError {
    ApiError::unauthorized("missing or invalid credentials: send Authorization: Bearer <api key>, or log in")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Already authenticated by `authorize`, before the handler.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let found = match parts.headers.get(AUTHORIZATION) {
            Some(header) => {
                let token = header
                    .to_str()
                    .ok()
                    .and_then(|value| value.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim())
                    .ok_or_else(unauthorized)?;
                state.store.authenticate(token).await
            }
            None => {
                let secret = session_cookie(&parts.headers).ok_or_else(unauthorized)?;
                check_same_origin(parts)?;
                state.store.authenticate_session(&secret).await
            }
        };
        let principal = found
            .map_err(|err| {
                // Without the database no credential can be checked: the
                // service is unavailable, which is not the caller's fault
                // (401) nor a bug (500).
                tracing::warn!(error = %err, "cannot authenticate: database error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database cannot be reached; try again shortly",
                )
                .with_retry_after(5)
            })?
            .ok_or_else(unauthorized)?;
        tracing::Span::current().record("tenant", principal.tenant_slug.as_str());
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            let _ = slot.0.set(principal.clone());
        }
        // The tenant's request rate (crate::quota): refused with 429.
        state.quotas.check_rate(&principal).await?;
        Ok(Caller(principal))
    }
}

/// The session secret from the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

/// A browser sends the session cookie with every request to us, including
/// ones another site makes it send. The cookie is `SameSite=Strict`, which
/// stops that in current browsers; for older ones, a state-changing request
/// whose `Origin` names another site is refused too.
fn check_same_origin(parts: &Parts) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let Some(origin) = parts.headers.get(ORIGIN).and_then(|value| value.to_str().ok()) else { return Ok(()) };
    let host = parts.headers.get(HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::forbidden("a request from another site cannot use this session"))
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anybody, without credentials: health, the API's documents, login.
    Public,
    /// Any authenticated caller, whatever its role: who am I, log out.
    Authenticated,
    /// An authenticated caller whose role grants the permission.
    Requires(Permission),
}

impl Access {
    /// As the OpenAPI document shows it (`x-codexos-access`).
    pub fn name(self) -> String {
        match self {
            Access::Public => "public".to_owned(),
            Access::Authenticated => "authenticated".to_owned(),
            Access::Requires(permission) => permission.to_string(),
        }
    }
}

/// The access every route declares, in one place: checked by `authorize`
/// before the handler runs and before its body is read, so a caller
/// without the permission is answered 403 whatever it sent; shown in the
/// OpenAPI document. A test holds this table to the router, and the role
/// matrix test walks it. Handlers check again where the answer depends on
/// the request (ranks of members, `modules` in a policy test).
const ROUTE_ACCESS: &[(&str, &str, Access)] = {
    use Access::{Authenticated, Public, Requires};
    use Permission::*;
    &[
        ("GET", "/health", Public),
        ("GET", "/metrics", Public),
        ("GET", "/openapi.json", Public),
        ("GET", "/docs", Public),
        ("GET", "/health/detailed", Requires(HealthRead)),
        ("POST", "/v1/login", Public),
        ("GET", "/v1/sso/{tenant}/login", Public),
        ("GET", "/v1/sso/callback", Public),
        ("POST", "/v1/logout", Authenticated),
        ("GET", "/v1/me", Authenticated),
        ("PUT", "/v1/me/password", Authenticated),
        ("GET", "/v1/users", Requires(TenantAdmin)),
        ("POST", "/v1/users", Requires(TenantAdmin)),
        ("PATCH", "/v1/users/{id}", Requires(TenantAdmin)),
        ("DELETE", "/v1/users/{id}", Requires(TenantAdmin)),
        ("GET", "/v1/keys", Requires(KeysRead)),
        ("POST", "/v1/keys", Requires(KeysWrite)),
        ("DELETE", "/v1/keys/{id}", Requires(KeysWrite)),
        ("GET", "/v1/agents", Requires(AgentsRead)),
        ("POST", "/v1/agents", Requires(AgentsWrite)),
        ("GET", "/v1/agents/{name}", Requires(AgentsRead)),
        ("GET", "/v1/publishers", Requires(AgentsRead)),
        ("POST", "/v1/publishers", Requires(TenantAdmin)),
        ("PUT", "/v1/publishers/{id}", Requires(TenantAdmin)),
        ("DELETE", "/v1/publishers/{id}", Requires(TenantAdmin)),
        ("GET", "/v1/executions", Requires(ExecutionsRead)),
        ("POST", "/v1/executions", Requires(ExecutionsRun)),
        ("GET", "/v1/executions/{id}", Requires(ExecutionsRead)),
        ("GET", "/v1/executions/{id}/events", Requires(ExecutionsRead)),
        ("GET", "/v1/executions/{id}/stream", Requires(ExecutionsRead)),
        ("POST", "/v1/executions/{id}/pause", Requires(ExecutionsRun)),
        ("POST", "/v1/executions/{id}/resume", Requires(ExecutionsRun)),
        ("POST", "/v1/executions/{id}/cancel", Requires(ExecutionsRun)),
        ("POST", "/v1/executions/{id}/rollback", Requires(ExecutionsRun)),
        ("POST", "/v1/executions/{id}/fork", Requires(ExecutionsRun)),
        ("POST", "/v1/executions/{id}/approvals/{seq}", Requires(ExecutionsApprove)),
        ("GET", "/v1/secrets", Requires(SecretsRead)),
        ("PUT", "/v1/secrets/{name}", Requires(SecretsWrite)),
        ("DELETE", "/v1/secrets/{name}", Requires(SecretsWrite)),
        ("GET", "/v1/tenant/retention", Requires(TenantAdmin)),
        ("PUT", "/v1/tenant/retention", Requires(TenantAdmin)),
        ("GET", "/v1/tenant/sso", Requires(TenantAdmin)),
        ("PUT", "/v1/tenant/sso", Requires(TenantAdmin)),
        ("DELETE", "/v1/tenant/sso", Requires(TenantAdmin)),
        ("GET", "/v1/audit", Requires(AuditRead)),
        ("GET", "/v1/audit/verify", Requires(AuditRead)),
        ("GET", "/v1/audit/entries/{seq}/proof", Requires(AuditRead)),
        ("GET", "/v1/usage", Requires(ExecutionsRead)),
        ("GET", "/v1/policy", Requires(AgentsRead)),
        ("PUT", "/v1/policy", Requires(TenantAdmin)),
        ("GET", "/v1/policy/versions", Requires(AgentsRead)),
        ("POST", "/v1/policy/test", Requires(AgentsRead)),
    ]
};

/// How many routes the table declares.
#[cfg(test)]
pub fn declared_routes() -> usize {
    ROUTE_ACCESS.len()
}

/// The access a route declares; `HEAD` is its `GET`.
pub fn route_access(method: &Method, route: &str) -> Option<Access> {
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    ROUTE_ACCESS.iter().find(|(m, r, _)| *m == method && *r == route).map(|(_, _, access)| *access)
}

/// Middleware: a route that requires a permission authenticates the
/// caller and checks the permission before its handler runs. A route
/// missing from the table is refused (fail closed); the table's test makes
/// that a bug found before release.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().map(|matched| matched.as_str().to_owned()) else {
        return next.run(request).await;
    };
    match route_access(request.method(), &route) {
        Some(Access::Public | Access::Authenticated) => next.run(request).await,
        Some(Access::Requires(permission)) => {
            let (mut parts, body) = request.into_parts();
            let caller = match Caller::from_request_parts(&mut parts, &state).await {
                Ok(caller) => caller,
                Err(err) => return err.into_response(),
            };
            if let Err(err) = caller.require(permission) {
                return err.into_response();
            }
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        // Other methods on a known path: the router answers 405.
        None if ROUTE_ACCESS.iter().any(|(_, known, _)| *known == route) => next.run(request).await,
        None => {
            tracing::error!(%route, "route declares no access; refused");
            ApiError::forbidden("this route declares no access rule").into_response()
        }
    }
}
