//! The caller's own identity.

use axum::extract::State;
use codexos_core::{Permission, format_millis};
use serde::Serialize;
use utoipa::ToSchema;

use codexos_store::Credential;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiJson, ApiResult, ErrorEnvelope};

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    tenant: TenantView,
    /// The caller's role in the tenant (the key's, or the member's for a session).
    role: String,
    /// The API key used for this request, if one was.
    key_id: Option<String>,
    /// The login session used for this request, if one was.
    session_id: Option<String>,
    /// The user behind the key or session, if any.
    user_id: Option<String>,
    /// Everything this role may do.
    permissions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    id: String,
    slug: String,
    name: String,
    created_at: String,
}

/// Who the caller is: tenant, role and permissions. Any valid key.
#[utoipa::path(
    get, path = "/v1/me", tag = "identity", security(("api_key" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorEnvelope))
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<Me>> {
    // Every authenticated caller may see who it is: no permission needed.
    let principal = &caller.0;
    let tenant = state.store.tenant(principal.tenant).await?;
    let permissions = Permission::ALL
        .into_iter()
        .filter(|permission| principal.role.allows(*permission))
        .map(|permission| permission.as_str().to_owned())
        .collect();
    Ok(ApiJson(Me {
        tenant: TenantView {
            id: tenant.id.to_string(),
            slug: tenant.slug.to_string(),
            name: tenant.name,
            created_at: format_millis(tenant.created_at),
        },
        role: principal.role.to_string(),
        key_id: match principal.credential {
            Credential::ApiKey(id) => Some(id.to_string()),
            Credential::Session(_) => None,
        },
        session_id: match principal.credential {
            Credential::Session(id) => Some(id.to_string()),
            Credential::ApiKey(_) => None,
        },
        user_id: principal.user.map(|user| user.to_string()),
        permissions,
    }))
}
