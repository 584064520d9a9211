//! Secrets of the caller's tenant: set, listed by name, deleted. A value
//! goes in once and never comes out of the API: it is sealed here with the
//! tenant's data key, and only workers open it, for the executions whose
//! manifests name it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use codexos_core::{Permission, SecretName, TenantId, format_millis};
use codexos_secrets::DataKey;
use codexos_store::{SealedSecret, SecretInfo, StoredDataKey};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};

/// The largest value accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// The version of a tenant's first (and, for now, only) data key.
const DATA_KEY_VERSION: i64 = 1;

/// A secret as listed: its name and times, never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    name: String,
    created_at: String,
    updated_at: String,
}

impl From<SecretInfo> for SecretView {
    fn from(info: SecretInfo) -> Self {
        Self {
            name: info.name.to_string(),
            created_at: format_millis(info.created_at),
            updated_at: format_millis(info.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretList {
    secrets: Vec<SecretView>,
}

/// The value to store. Its `Debug` shows nothing of it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The secret's value: 1 byte to 64 KiB of text, no NUL character.
    #[schema(value_type = String)]
    value: SecretString,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecret(..)")
    }
}

fn parse_name(name: &str) -> Result<SecretName, ApiError> {
    SecretName::parse(name)
        .map_err(|err| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name", err.to_string()))
}

/// The tenant's secrets by name. Needs `secrets:read`. Values are never
/// answered, here or anywhere.
#[utoipa::path(
    get, path = "/v1/secrets", tag = "secrets", security(("api_key" = [])),
    responses((status = 200, body = SecretList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_secrets(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<SecretList>> {
    caller.require(Permission::SecretsRead)?;
    let secrets = state.store.list_secrets(caller.0.tenant).await?;
    Ok(ApiJson(SecretList { secrets: secrets.into_iter().map(SecretView::from).collect() }))
}

/// Sets a secret: created (201) or replaced (200). Needs `secrets:write`.
/// The answer holds the name and times only.
#[utoipa::path(
    put, path = "/v1/secrets/{name}", tag = "secrets", security(("api_key" = [])), request_body = SetSecret,
    params(("name" = String, Path, description = "1-128 characters of A-Z, a-z, 0-9 and '_', not starting with a digit")),
    responses(
        (status = 200, body = SecretView, description = "Replaced"),
        (status = 201, body = SecretView, description = "Created"),
        (status = 400, body = ErrorEnvelope, description = "Malformed body"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope, description = "Invalid name or value"),
    )
)]
pub async fn set_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<SetSecret>,
) -> ApiResult<(StatusCode, ApiJson<SecretView>)> {
    caller.require(Permission::SecretsWrite)?;
    let name = parse_name(&name)?;
    let value = {
        let text = request.value.expose_secret();
        let invalid = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message);
        if text.is_empty() {
            return Err(invalid("value must not be empty".to_owned()));
        }
        if text.len() > MAX_SECRET_BYTES {
            return Err(invalid(format!("value is {} bytes; the limit is {MAX_SECRET_BYTES}", text.len())));
        }
        if text.contains('\0') {
            // It could not be put in an environment variable.
            return Err(invalid("value must not contain a NUL character".to_owned()));
        }
        request.value
    };
    let tenant = caller.0.tenant;
    let stored_key = tenant_data_key(&state, tenant).await?;
    let data_key = state.keyring.unwrap(tenant, &wrapped(&stored_key)).map_err(|err| secrets_unavailable(&err))?;
    let sealed = data_key.seal(tenant, &name, &value).map_err(|err| ApiError::internal(&err))?;
    let sealed = SealedSecret { nonce: sealed.nonce, ciphertext: sealed.ciphertext, key_version: stored_key.version };
    let (info, created) = state.store.put_secret(tenant, &name, &sealed).await?;
    tracing::info!(secret = %name, created, "secret set");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ApiJson(info.into())))
}

/// Deletes a secret. Needs `secrets:write`. Executions that name it fail
/// to start from then on.
#[utoipa::path(
    delete, path = "/v1/secrets/{name}", tag = "secrets", security(("api_key" = [])),
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope, description = "Not a secret name"),
    )
)]
pub async fn delete_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Permission::SecretsWrite)?;
    let name = parse_name(&name)?;
    state.store.delete_secret(caller.0.tenant, &name).await.map_err(|err| match err {
        codexos_store::StoreError::NotFound(_) => ApiError::not_found(format!("secret {name} not found")),
        other => other.into(),
    })?;
    tracing::info!(secret = %name, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's data key, made and stored on its first secret.
pub(crate) async fn tenant_data_key(state: &AppState, tenant: TenantId) -> ApiResult<StoredDataKey> {
    if let Some(stored) = state.store.data_key(tenant).await? {
        return Ok(stored);
    }
    let data_key = DataKey::generate().map_err(|err| ApiError::internal(&err))?;
    let wrapped = state.keyring.wrap(tenant, &data_key).map_err(|err| ApiError::internal(&err))?;
    let new_key = StoredDataKey {
        version: DATA_KEY_VERSION,
        master_key_id: wrapped.master_key_id,
        nonce: wrapped.nonce,
        wrapped_key: wrapped.ciphertext,
    };
    // Another server may have stored one first: the stored one is used.
    Ok(state.store.insert_data_key(tenant, &new_key).await?)
}

pub(crate) fn wrapped(stored: &StoredDataKey) -> codexos_secrets::WrappedKey {
    codexos_secrets::WrappedKey {
        master_key_id: stored.master_key_id.clone(),
        nonce: stored.nonce.clone(),
        ciphertext: stored.wrapped_key.clone(),
    }
}

/// The tenant's data key cannot be opened with this server's master keys:
/// an operator's problem (a missing or wrong key), logged in full.
pub(crate) fn secrets_unavailable(err: &codexos_secrets::Error) -> ApiError {
    tracing::error!(error = %err, "cannot open the tenant's data key");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "secrets_unavailable",
        "the tenant's secrets cannot be opened with this server's master key; the server log has details",
    )
}
