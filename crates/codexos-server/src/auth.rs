//! Who is calling: a bearer API key, or a login session's cookie, checked
//! against the store; and the permission each endpoint declares.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
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
