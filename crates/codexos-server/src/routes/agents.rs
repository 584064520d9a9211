//! Agents of the caller's tenant: registered from TOML manifests, every
//! version kept.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use codexos_core::{Permission, format_millis};
use codexos_engine::AgentManifest;
use codexos_store::{AgentSummary, AgentVersion, NewAgentVersion};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// The agent's manifest, as TOML text (see docs/manifest.md).
    manifest: String,
}

/// One version of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentVersionView {
    name: String,
    version: String,
    /// `llm` or `workflow`.
    kind: String,
    description: String,
    /// SHA-256 of the manifest text, hex.
    manifest_sha256: String,
    /// What registration found of the manifest's signature.
    signature: SignatureView,
    created_at: String,
}

/// A version's signature as registration found it (docs/manifest.md, "Signature").
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureView {
    /// `unsigned`, `verified` (by a key the tenant trusts) or `untrusted`.
    status: String,
    /// The id of the key that signed it.
    key_id: Option<String>,
    /// That key's name in the tenant.
    publisher: Option<String>,
}

impl From<&AgentVersion> for AgentVersionView {
    fn from(version: &AgentVersion) -> Self {
        Self {
            name: version.name.clone(),
            version: version.version.clone(),
            kind: version.kind.clone(),
            description: version.description.clone(),
            manifest_sha256: version.manifest_sha256.clone(),
            signature: SignatureView {
                status: version.signature_status.to_string(),
                key_id: version.publisher_key_id.as_ref().map(ToString::to_string),
                publisher: version.publisher_name.clone(),
            },
            created_at: format_millis(version.created_at),
        }
    }
}

/// An agent in the list: its newest version.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentSummaryView {
    name: String,
    latest: AgentVersionView,
    versions: i64,
    created_at: String,
}

impl From<&AgentSummary> for AgentSummaryView {
    fn from(summary: &AgentSummary) -> Self {
        Self {
            name: summary.name.clone(),
            latest: (&summary.latest).into(),
            versions: summary.version_count,
            created_at: format_millis(summary.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    agents: Vec<AgentSummaryView>,
}

/// An agent in full: one version's manifest and the list of all versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDetail {
    name: String,
    /// The version shown (the newest unless `?version=` asked for another).
    version: AgentVersionView,
    /// Its tools allow-list, from the manifest.
    tools: Vec<String>,
    /// The manifest's TOML text.
    manifest: String,
    /// Every version, newest first.
    versions: Vec<AgentVersionView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct VersionQuery {
    /// A version to show instead of the newest.
    version: Option<String>,
}

/// Registers an agent, or a new version of one, from its manifest. Needs
/// `agents:write`. An invalid manifest is answered 422 with every problem.
#[utoipa::path(
    post, path = "/v1/agents", tag = "agents", security(("api_key" = [])), request_body = CreateAgent,
    responses(
        (status = 201, body = AgentVersionView),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "This version of the agent exists already"),
        (status = 422, body = ErrorEnvelope, description = "Invalid manifest (`invalid_manifest`; `problems` names each key and reason), \
            a signature that does not match the manifest (`manifest_tampered`), or one by a key the tenant has not \
            registered, revoked or does not trust (`untrusted_publisher`); nothing is registered"),
    )
)]
pub async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<AgentVersionView>)> {
    caller.require(Permission::AgentsWrite)?;
    let manifest = AgentManifest::parse(&request.manifest).map_err(|err| {
        let count = err.problems.len();
        let problems = err.problems.into_iter().map(|p| Problem { key: p.key, reason: p.reason }).collect();
        ApiError::invalid_document(
            "invalid_manifest",
            format!("the manifest has {count} problem{}", if count == 1 { "" } else { "s" }),
            problems,
        )
    })?;
    // Where the operator's keys may go is the operator's choice, not the manifest's.
    manifest.check_model_endpoint(&state.model_endpoints).map_err(|problem| {
        ApiError::invalid_document(
            "invalid_manifest",
            "the manifest has 1 problem",
            vec![Problem { key: problem.key, reason: problem.reason }],
        )
    })?;
    // A signed manifest must verify: tampered ones are refused always.
    let signature =
        super::publishers::check_manifest_signature(&state, caller.0.tenant, &request.manifest, &manifest).await?;
    // Without a policy that lets them in, manifests signed by a key the
    // tenant does not trust are refused too.
    signature.refuse_untrusted()?;
    // The tenant's policy on installing it (docs/policy.md).
    let facts = super::policies::facts(
        &caller,
        &manifest,
        codexos_engine::policy::signature_facts(signature.status, signature.key_id().as_ref()),
        signature.key.as_ref().map(|key| key.name.clone()),
        None,
    );
    super::policies::check(&state, &caller, facts.install_agent(), "installing this agent").await?;
    let new_version = NewAgentVersion {
        name: manifest.name.to_string(),
        version: manifest.version.to_string(),
        version_key: manifest.version_key(),
        kind: manifest.kind_name().to_owned(),
        description: manifest.description.clone(),
        manifest: request.manifest.clone(),
        manifest_sha256: codexos_engine::signing::manifest_sha256(&request.manifest),
        signature_status: signature.status,
        publisher_key_id: signature.key_id(),
        created_by: caller.0.user,
    };
    let created = state.store.create_agent_version(caller.0.tenant, &new_version).await.map_err(|err| match err {
        codexos_store::StoreError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "{} {} exists already; bump the version to register a change",
                new_version.name, new_version.version
            ),
        ),
        other => other.into(),
    })?;
    tracing::info!(
        agent = %created.name, version = %created.version, signature = %created.signature_status,
        "agent version registered"
    );
    let note = AuditNote::new(format!("agent:{}", created.name)).with_details(serde_json::json!({
        "version": created.version,
        "manifest_sha256": created.manifest_sha256,
        "signature": { "status": created.signature_status, "key_id": created.publisher_key_id },
    }));
    Ok((StatusCode::CREATED, Extension(note), ApiJson((&created).into())))
}

/// The tenant's agents, by name. Needs `agents:read`.
#[utoipa::path(
    get, path = "/v1/agents", tag = "agents", security(("api_key" = [])),
    responses((status = 200, body = AgentList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_agents(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<AgentList>> {
    caller.require(Permission::AgentsRead)?;
    let agents = state.store.list_agents(caller.0.tenant).await?;
    Ok(ApiJson(AgentList { agents: agents.iter().map(AgentSummaryView::from).collect() }))
}

/// One agent: a version's manifest (the newest by default) and all its
/// versions. Needs `agents:read`.
#[utoipa::path(
    get, path = "/v1/agents/{name}", tag = "agents", security(("api_key" = [])),
    params(("name" = String, Path, description = "The agent's name"), VersionQuery),
    responses(
        (status = 200, body = AgentDetail),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn show_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> ApiResult<ApiJson<AgentDetail>> {
    caller.require(Permission::AgentsRead)?;
    let versions = state.store.agent_versions(caller.0.tenant, &name).await?;
    let shown = match &query.version {
        None => versions.first(),
        Some(wanted) => versions.iter().find(|version| &version.version == wanted),
    }
    .ok_or_else(|| ApiError::not_found(format!("agent {name} has no version {}", query.version.unwrap_or_default())))?;
    // Stored manifests were valid when registered; the tools list is read
    // again rather than stored twice.
    let tools = AgentManifest::parse(&shown.manifest).map(|manifest| manifest.tools).unwrap_or_default();
    Ok(ApiJson(AgentDetail {
        name: shown.name.clone(),
        version: shown.into(),
        tools,
        manifest: shown.manifest.clone(),
        versions: versions.iter().map(AgentVersionView::from).collect(),
    }))
}
