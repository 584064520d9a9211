//! API keys of the caller's tenant.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use codexos_core::{ApiKeyId, Permission, Role, format_millis, now_millis};
use codexos_store::{ApiKey, NewApiKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};

/// A key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    name: String,
    /// The first characters of the key, to recognise it.
    prefix: String,
    role: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id.to_string(),
            name: key.name,
            prefix: key.prefix,
            role: key.role.to_string(),
            created_at: format_millis(key.created_at),
            expires_at: key.expires_at.map(format_millis),
            revoked_at: key.revoked_at.map(format_millis),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, e.g. `ci`.
    name: String,
    /// `owner`, `admin`, `developer` or `viewer`; at most the caller's own.
    role: String,
    /// Lifetime such as `30d` or `12h`; absent for a key that does not expire.
    expires_in: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    key: KeyView,
    /// The key itself: shown this once, stored only as a hash.
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

/// The tenant's keys, revoked ones included. Needs `keys:read`.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys", security(("api_key" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<KeyList>> {
    caller.require(Permission::KeysRead)?;
    let keys = state.store.list_api_keys(caller.0.tenant).await?;
    Ok(ApiJson(KeyList { keys: keys.into_iter().map(KeyView::from).collect() }))
}

/// Creates a key; the answer holds its secret, which is never shown again.
/// Needs `keys:write`, and nobody can create a key above their own role.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys", security(("api_key" = [])), request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, body = ErrorEnvelope, description = "Malformed body or invalid field"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<CreatedKey>)> {
    caller.require(Permission::KeysWrite)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_field", "name must be 1 to 100 printable characters"));
    }
    let role: Role = request
        .role
        .parse()
        .map_err(|err: codexos_core::role::RoleError| ApiError::bad_request("invalid_field", format!("role: {err}")))?;
    if !caller.0.role.can_grant(role) {
        return Err(ApiError::forbidden(format!("a {} cannot create a key with the {role} role", caller.0.role)));
    }
    let expires_at = match request.expires_in.as_deref() {
        None => None,
        Some(text) => {
            let lifetime = humantime::parse_duration(text).map_err(|err| {
                ApiError::bad_request(
                    "invalid_field",
                    format!("expires_in: '{text}' is not a duration like 30d or 12h: {err}"),
                )
            })?;
            let millis = i64::try_from(lifetime.as_millis()).ok().filter(|millis| *millis > 0).ok_or_else(|| {
                ApiError::bad_request("invalid_field", "expires_in must be positive and less than a few million years")
            })?;
            Some(now_millis().saturating_add(millis))
        }
    };
    let new_key = NewApiKey { name: name.to_owned(), role, user: caller.0.user, expires_at };
    let (key, secret) = state.store.create_api_key(caller.0.tenant, &new_key).await?;
    tracing::info!(key_id = %key.id, role = %role, "api key created");
    let note = AuditNote::new(format!("key:{}", key.id)).with_details(serde_json::json!({ "role": role.as_str() }));
    Ok((
        StatusCode::CREATED,
        Extension(note),
        ApiJson(CreatedKey { key: key.into(), secret: secret.expose().to_owned() }),
    ))
}

/// Revokes a key at once. Needs `keys:write`. A key of another tenant is
/// answered 404, exactly like one that does not exist.
#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "keys", security(("api_key" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, body = KeyView, description = "The key, now revoked"),
        (status = 400, body = ErrorEnvelope, description = "Not a key id"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<KeyView>> {
    caller.require(Permission::KeysWrite)?;
    let key_id = ApiKeyId::parse(&id).map_err(|err| ApiError::bad_request("invalid_id", err.to_string()))?;
    let existing = state.store.api_key(caller.0.tenant, key_id).await?;
    if !caller.0.role.can_grant(existing.role) {
        return Err(ApiError::forbidden(format!(
            "a {} cannot revoke a key with the {} role",
            caller.0.role, existing.role
        )));
    }
    let key = state.store.revoke_api_key(caller.0.tenant, key_id).await?;
    tracing::info!(key_id = %key.id, "api key revoked");
    Ok(ApiJson(key.into()))
}
