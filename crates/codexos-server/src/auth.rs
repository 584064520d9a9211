//! Who is calling: bearer API keys, checked against the store, and the
//! permission each endpoint declares.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing credentials: send Authorization: Bearer <api key>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <api key>'"))?;
        let principal = state
            .store
            .authenticate(token)
            .await
            .map_err(|err| {
                // Without the database no key can be checked: the service is
                // unavailable, which is not the caller's fault (401) nor a bug (500).
                tracing::warn!(error = %err, "cannot authenticate: database error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database cannot be reached; try again shortly",
                )
            })?
            .ok_or_else(|| ApiError::unauthorized("the API key is unknown, revoked or expired"))?;
        tracing::Span::current().record("tenant", principal.tenant_slug.as_str());
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            let _ = slot.0.set(principal.clone());
        }
        Ok(Caller(principal))
    }
}
