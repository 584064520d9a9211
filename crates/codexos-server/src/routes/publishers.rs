//! Publisher keys of the caller's tenant: the public Ed25519 keys whose
//! signatures on manifests it checks, and which of them it trusts
//! (docs/tenancy.md, "Publisher keys"); and the check of a manifest's
//! signature when it is registered.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use codexos_core::{Permission, PublisherKeyId, SignatureStatus, TenantId, format_millis};
use codexos_engine::AgentManifest;
use codexos_engine::signing::{self, PublicKey, SignatureError};
use codexos_store::{NewPublisherKey, PublisherKey, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope, Problem};

/// A registered publisher key.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublisherView {
    /// The key id: the first 16 hex digits of the SHA-256 of the public key.
    id: String,
    name: String,
    /// `ed25519:<base64 of the 32-byte key>`.
    public_key: String,
    /// Whether the tenant accepts manifests this key signed.
    trusted: bool,
    created_at: String,
    updated_at: String,
    /// A revoked key is never trusted again, and versions it signed no longer run.
    revoked_at: Option<String>,
}

impl From<PublisherKey> for PublisherView {
    fn from(key: PublisherKey) -> Self {
        Self {
            id: key.key_id.to_string(),
            name: key.name,
            public_key: key.public_key,
            trusted: key.trusted,
            created_at: format_millis(key.created_at),
            updated_at: format_millis(key.updated_at),
            revoked_at: key.revoked_at.map(format_millis),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublisherList {
    publishers: Vec<PublisherView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePublisher {
    /// A label: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    name: String,
    /// The publisher's public key, `ed25519:<base64 of 32 bytes>`; its
    /// private key never reaches the platform.
    public_key: String,
    /// Whether to trust it at once (the default).
    #[serde(default = "trusted_by_default")]
    trusted: bool,
}

fn trusted_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTrust {
    trusted: bool,
}

/// The tenant's publisher keys, revoked ones included. Needs `agents:read`.
#[utoipa::path(
    get, path = "/v1/publishers", tag = "agents", security(("api_key" = [])),
    responses((status = 200, body = PublisherList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_publishers(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<PublisherList>> {
    caller.require(Permission::AgentsRead)?;
    let keys = state.store.publisher_keys(caller.0.tenant).await?;
    Ok(ApiJson(PublisherList { publishers: keys.into_iter().map(PublisherView::from).collect() }))
}

/// Registers a publisher's public key, the tenant's own or another
/// publisher's; its id is derived from the key. Needs `tenant:admin`.
#[utoipa::path(
    post, path = "/v1/publishers", tag = "agents", security(("api_key" = [])), request_body = CreatePublisher,
    responses(
        (status = 201, body = PublisherView),
        (status = 400, body = ErrorEnvelope, description = "Malformed body, name or public key"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "The tenant has this key already (perhaps revoked)"),
    )
)]
pub async fn create_publisher(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreatePublisher>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<PublisherView>)> {
    caller.require(Permission::TenantAdmin)?;
    signing::check_publisher_name(&request.name)
        .map_err(|err| ApiError::bad_request("invalid_field", format!("name: {err}")))?;
    let public_key = PublicKey::parse(&request.public_key)
        .map_err(|err| ApiError::bad_request("invalid_public_key", format!("public_key: {err}")))?;
    let new_key = NewPublisherKey {
        key_id: public_key.id(),
        name: request.name.clone(),
        public_key: public_key.to_string(),
        trusted: request.trusted,
        created_by: caller.0.user,
    };
    let created = state.store.create_publisher_key(caller.0.tenant, &new_key).await.map_err(|err| match err {
        StoreError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("publisher key {} is registered already (see codexos key publisher list)", new_key.key_id),
        ),
        other => other.into(),
    })?;
    tracing::info!(key_id = %created.key_id, trusted = created.trusted, "publisher key registered");
    let note = AuditNote::new(format!("publisher:{}", created.key_id))
        .with_details(serde_json::json!({ "name": created.name, "trusted": created.trusted }));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(created.into())))
}

/// Trusts a publisher key, or stops trusting it: versions it signed run
/// only while it is trusted. Needs `tenant:admin`.
#[utoipa::path(
    put, path = "/v1/publishers/{id}", tag = "agents", security(("api_key" = [])), request_body = SetTrust,
    params(("id" = String, Path, description = "The key id")),
    responses(
        (status = 200, body = PublisherView),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "The key is revoked"),
    )
)]
pub async fn set_publisher_trust(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<SetTrust>,
) -> ApiResult<(Extension<AuditNote>, ApiJson<PublisherView>)> {
    caller.require(Permission::TenantAdmin)?;
    let key_id = key_id(&id)?;
    let key = state.store.set_publisher_trust(caller.0.tenant, &key_id, request.trusted).await?;
    tracing::info!(key_id = %key.key_id, trusted = key.trusted, "publisher key trust set");
    let note =
        AuditNote::new(format!("publisher:{key_id}")).with_details(serde_json::json!({ "trusted": key.trusted }));
    Ok((Extension(note), ApiJson(key.into())))
}

/// Revokes a publisher key for good: not trusted, not registrable again,
/// and the versions it signed no longer run. Needs `tenant:admin`.
#[utoipa::path(
    delete, path = "/v1/publishers/{id}", tag = "agents", security(("api_key" = [])),
    params(("id" = String, Path, description = "The key id")),
    responses(
        (status = 200, body = PublisherView, description = "The key, now revoked"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn revoke_publisher(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<PublisherView>> {
    caller.require(Permission::TenantAdmin)?;
    let key_id = key_id(&id)?;
    let key = state.store.revoke_publisher_key(caller.0.tenant, &key_id).await?;
    tracing::info!(key_id = %key.key_id, "publisher key revoked");
    Ok(ApiJson(key.into()))
}

/// Something that is not a key id names no key: 404, like an unknown one.
fn key_id(text: &str) -> ApiResult<PublisherKeyId> {
    PublisherKeyId::parse(text).map_err(|_| {
        ApiError::not_found(format!("publisher key {} not found", text.chars().take(40).collect::<String>()))
    })
}

/// What registration found of a manifest's signature: its status, and the
/// registered key that made it.
#[derive(Debug)]
pub struct SignatureCheck {
    pub status: SignatureStatus,
    pub key: Option<PublisherKey>,
}

impl SignatureCheck {
    pub fn key_id(&self) -> Option<PublisherKeyId> {
        self.key.as_ref().map(|key| key.key_id.clone())
    }

    /// A manifest signed by a key the tenant does not trust is never
    /// registered, before any policy is asked: trust is the tenant's own
    /// list of keys, which a policy can narrow but not widen.
    pub fn refuse_untrusted(&self) -> ApiResult<()> {
        match (&self.status, &self.key) {
            (SignatureStatus::Untrusted, Some(key)) => Err(untrusted(
                format!(
                    "the manifest is signed by key {} ({}), which this tenant does not trust; \
                     trust it with `codexos key publisher trust {}`",
                    key.key_id, key.name, key.key_id
                ),
                "is a key this tenant does not trust",
            )),
            _ => Ok(()),
        }
    }
}

fn untrusted(message: String, reason: &str) -> ApiError {
    ApiError::invalid_document(
        "untrusted_publisher",
        message,
        vec![Problem { key: "signature.publisher".to_owned(), reason: reason.to_owned() }],
    )
}

/// Checks the signature of a manifest being registered. Unsigned: fine.
/// Signed: the key must be registered with the tenant and not revoked, and
/// the signature must match the manifest's canonical form; a manifest
/// changed after it was signed is refused as tampered, always. The key's
/// trust decides between `verified` and `untrusted`.
pub async fn check_manifest_signature(
    state: &AppState,
    tenant: TenantId,
    text: &str,
    manifest: &AgentManifest,
) -> ApiResult<SignatureCheck> {
    let Some(signature) = &manifest.signature else {
        return Ok(SignatureCheck { status: SignatureStatus::Unsigned, key: None });
    };
    let key = match state.store.publisher_key(tenant, &signature.publisher).await {
        Ok(key) => key,
        Err(StoreError::NotFound(_)) => {
            return Err(untrusted(
                format!(
                    "the manifest is signed by key {}, which this tenant has not registered; register the \
                     publisher's public key with `codexos key publisher add` to check it",
                    signature.publisher
                ),
                "is not a key this tenant registered",
            ));
        }
        Err(other) => return Err(other.into()),
    };
    if let Some(revoked_at) = key.revoked_at {
        return Err(untrusted(
            format!(
                "the manifest is signed by key {} ({}), which this tenant revoked on {}",
                key.key_id,
                key.name,
                format_millis(revoked_at)
            ),
            "is a revoked key",
        ));
    }
    let public_key = PublicKey::parse(&key.public_key)
        .map_err(|err| ApiError::internal(&StoreError::Corrupt(format!("publisher key {}: {err}", key.key_id))))?;
    match signing::verify_signature(text, signature, &public_key) {
        Ok(()) => {}
        Err(err @ SignatureError::Mismatch { .. }) => {
            return Err(ApiError::invalid_document(
                "manifest_tampered",
                format!("{err} ({}); nothing was registered", key.name),
                vec![Problem {
                    key: "signature.value".to_owned(),
                    reason: "does not match the manifest's content".to_owned(),
                }],
            ));
        }
        Err(SignatureError::NotCanonical { key: problem_key, reason }) => {
            return Err(ApiError::invalid_document(
                "invalid_manifest",
                "the manifest has 1 problem",
                vec![Problem { key: problem_key, reason: format!("{reason}; the manifest cannot be signed") }],
            ));
        }
        Err(other) => {
            return Err(ApiError::invalid_document(
                "invalid_manifest",
                "the manifest has 1 problem",
                vec![Problem { key: "signature".to_owned(), reason: other.to_string() }],
            ));
        }
    }
    let status = if key.trusted { SignatureStatus::Verified } else { SignatureStatus::Untrusted };
    Ok(SignatureCheck { status, key: Some(key) })
}
