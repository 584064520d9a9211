//! The tenant's policy (docs/policy.md): read it, set a new version (only
//! one that compiles is stored), list its versions, and test a policy
//! against example inputs. Also the checks of installs and starts, which
//! the agents and executions routes call.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use codexos_core::{Permission, TenantId, format_millis};
use codexos_engine::AgentManifest;
use codexos_engine::policy::{PolicySource, agent_facts, signature_facts};
use codexos_policy::{Bundle, CaseResult, CompileError, Facts, Policy, TenantFacts, UserFacts, Verdict};
use codexos_store::{AgentVersion, NewPolicyBundle, PolicyBundle};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope, Problem};

/// A policy as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// The version (1, 2, ...); absent for the default policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    /// Whether this is the default policy CodexOS ships (the tenant has set none).
    default: bool,
    /// Rego texts by module name.
    modules: BTreeMap<String, String>,
    /// The data document the policy reads as `data`.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// SHA-256 of modules and data (canonical JSON), hex.
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    /// The member who set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

impl PolicyView {
    fn default_policy() -> Self {
        let bundle = Bundle::builtin_default();
        Self {
            version: None,
            default: true,
            sha256: bundle.sha256(),
            modules: bundle.modules,
            data: bundle.data,
            created_at: None,
            created_by: None,
        }
    }

    fn stored(stored: PolicyBundle) -> ApiResult<Self> {
        let bundle = bundle_of(&stored)?;
        Ok(Self {
            version: Some(stored.version),
            default: false,
            modules: bundle.modules,
            data: bundle.data,
            sha256: stored.sha256,
            created_at: Some(format_millis(stored.created_at)),
            created_by: stored.created_by.map(|user| user.to_string()),
        })
    }
}

/// A version as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionView {
    version: i64,
    sha256: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionList {
    /// Newest (current) first; empty while the default policy applies.
    versions: Vec<PolicyVersionView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    /// Rego modules by name (`main.rego`, `lib/paths.rego`): 1 to 64, each
    /// at most 256 KiB, 1 MiB together; in package `codexos` or below it.
    modules: BTreeMap<String, String>,
    /// The data document (a JSON object, at most 1 MiB), read as `data`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPolicy {
    /// The cases: `[{"name", "input", "expect": "allow"|"ask"|"deny", "reason"?}]`.
    #[schema(value_type = Vec<Object>)]
    cases: serde_json::Value,
    /// Modules to test instead of the tenant's current policy (nothing is stored).
    #[serde(default)]
    modules: Option<BTreeMap<String, String>>,
    /// Data to go with `modules`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

/// How a test run went.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyTestReport {
    /// Which policy was tested: `"default"`, `"version 3"`, or `"given"`.
    policy: String,
    passed: usize,
    failed: usize,
    /// Each case: `name`, `passed`, `expected`, `decision` (`verdict`,
    /// `reasons`), and `prints` and `problem` where there are any.
    #[schema(value_type = Vec<Object>)]
    results: Vec<CaseResult>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PolicyQuery {
    /// A version to show instead of the current one.
    version: Option<i64>,
}

/// The tenant's current policy (or a version of it), or the default
/// policy with `"default": true` while it has set none. Needs `agents:read`.
#[utoipa::path(
    get, path = "/v1/policy", tag = "policy", security(("api_key" = [])), params(PolicyQuery),
    responses(
        (status = 200, body = PolicyView),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope, description = "No such version"),
    )
)]
pub async fn show_policy(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PolicyQuery>,
) -> ApiResult<ApiJson<PolicyView>> {
    caller.require(Permission::AgentsRead)?;
    let view = match query.version {
        Some(version) => PolicyView::stored(state.store.policy_version(caller.0.tenant, version).await?)?,
        None => match state.store.current_policy(caller.0.tenant).await? {
            Some(stored) => PolicyView::stored(stored)?,
            None => PolicyView::default_policy(),
        },
    };
    Ok(ApiJson(view))
}

/// Sets the tenant's policy: a new version, current at once. The bundle is
/// compiled first; one that does not compile is answered 422 with every
/// problem (`key` is `module:line:column`, `reason` the compiler's
/// message) and nothing is stored. Needs `tenant:admin`.
#[utoipa::path(
    put, path = "/v1/policy", tag = "policy", security(("api_key" = [])), request_body = SetPolicy,
    responses(
        (status = 200, body = PolicyView),
        (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope, description = "`invalid_policy`: the policy does not compile; `problems` names each place and why"),
    )
)]
pub async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SetPolicy>,
) -> ApiResult<(Extension<AuditNote>, ApiJson<PolicyView>)> {
    caller.require(Permission::TenantAdmin)?;
    let bundle = Bundle { modules: request.modules, data: request.data.unwrap_or_else(|| serde_json::json!({})) };
    let compiled = compile(bundle.clone()).await?;
    let new_bundle = NewPolicyBundle {
        modules: serde_json::to_value(&bundle.modules).map_err(|err| ApiError::internal(&err))?,
        data: bundle.data.clone(),
        sha256: compiled.sha256().to_owned(),
        created_by: caller.0.user,
    };
    let stored = state.store.put_policy(caller.0.tenant, &new_bundle).await?;
    tracing::info!(version = stored.version, sha256 = %stored.sha256, "policy set");
    let note = AuditNote::new(format!("policy:{}", stored.version)).with_details(serde_json::json!({
        "version": stored.version,
        "sha256": stored.sha256,
        "modules": bundle.modules.keys().collect::<Vec<_>>(),
    }));
    Ok((Extension(note), ApiJson(PolicyView::stored(stored)?)))
}

/// The versions of the tenant's policy, newest first. Needs `agents:read`.
#[utoipa::path(
    get, path = "/v1/policy/versions", tag = "policy", security(("api_key" = [])),
    responses((status = 200, body = PolicyVersionList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_policy_versions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<ApiJson<PolicyVersionList>> {
    caller.require(Permission::AgentsRead)?;
    let versions = state.store.policy_versions(caller.0.tenant).await?;
    Ok(ApiJson(PolicyVersionList {
        versions: versions
            .into_iter()
            .map(|version| PolicyVersionView {
                version: version.version,
                sha256: version.sha256,
                created_at: format_millis(version.created_at),
                created_by: version.created_by.map(|user| user.to_string()),
            })
            .collect(),
    }))
}

/// Runs test cases against the tenant's current policy, or against the
/// `modules` (and `data`) given, storing nothing. Answered 200 whether the
/// cases pass or not; 422 if the given modules do not compile, 400 if the
/// cases are malformed. Needs `agents:read`, and `tenant:admin` with `modules`.
#[utoipa::path(
    post, path = "/v1/policy/test", tag = "policy", security(("api_key" = [])), request_body = TestPolicy,
    responses(
        (status = 200, body = PolicyTestReport),
        (status = 400, body = ErrorEnvelope, description = "`invalid_cases`: the cases are malformed"),
        (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope, description = "`invalid_policy`: the given modules do not compile"),
    )
)]
pub async fn test_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TestPolicy>,
) -> ApiResult<ApiJson<PolicyTestReport>> {
    caller.require(Permission::AgentsRead)?;
    if request.modules.is_some() {
        // Running Rego of one's own on the server is what setting a policy
        // allows: the same permission, not merely reading.
        caller.require(Permission::TenantAdmin)?;
    }
    let cases = codexos_policy::parse_cases(&request.cases.to_string())
        .map_err(|err| ApiError::bad_request("invalid_cases", err.to_string()))?;
    let (policy, name) = match request.modules {
        Some(modules) => {
            let bundle = Bundle { modules, data: request.data.unwrap_or_else(|| serde_json::json!({})) };
            (compile(bundle).await?, "given".to_owned())
        }
        None if request.data.is_some() => {
            return Err(ApiError::bad_request("invalid_field", "`data` goes with `modules`"));
        }
        None => {
            let (policy, source) = tenant_policy(&state, caller.0.tenant).await?;
            let name = match source {
                PolicySource::Default => "default".to_owned(),
                PolicySource::Tenant { version } => format!("version {version}"),
            };
            (policy, name)
        }
    };
    let results = tokio::task::spawn_blocking(move || codexos_policy::run_cases(&policy, &cases))
        .await
        .map_err(|_| ApiError::internal(&std::io::Error::other("the policy test thread stopped unexpectedly")))?;
    let passed = results.iter().filter(|result| result.passed).count();
    Ok(ApiJson(PolicyTestReport { policy: name, passed, failed: results.len() - passed, results }))
}

/// Compiles a bundle off the runtime; 422 with every problem if it does not.
async fn compile(bundle: Bundle) -> ApiResult<Arc<Policy>> {
    let compiled = tokio::task::spawn_blocking(move || Policy::cached(&bundle))
        .await
        .map_err(|_| ApiError::internal(&std::io::Error::other("the policy compiler stopped unexpectedly")))?;
    compiled.map_err(invalid_policy)
}

fn invalid_policy(err: CompileError) -> ApiError {
    let count = err.problems.len();
    let problems =
        err.problems.into_iter().map(|problem| Problem { key: problem.location(), reason: problem.message }).collect();
    ApiError::invalid_document(
        "invalid_policy",
        format!("the policy does not compile: {count} problem{}", if count == 1 { "" } else { "s" }),
        problems,
    )
}

fn bundle_of(stored: &PolicyBundle) -> ApiResult<Bundle> {
    let modules = serde_json::from_value(stored.modules.clone()).map_err(|err| ApiError::internal(&err))?;
    Ok(Bundle { modules, data: stored.data.clone() })
}

/// The tenant's current policy compiled, or the default one. A stored
/// policy that no longer compiles (it did when it was set) refuses what
/// it was asked about: fail closed.
pub(crate) async fn tenant_policy(state: &AppState, tenant: TenantId) -> ApiResult<(Arc<Policy>, PolicySource)> {
    let (bundle, source) = match state.store.current_policy(tenant).await? {
        Some(stored) => (bundle_of(&stored)?, PolicySource::Tenant { version: stored.version }),
        None => (Bundle::builtin_default(), PolicySource::Default),
    };
    let compiled = tokio::task::spawn_blocking(move || Policy::cached(&bundle))
        .await
        .map_err(|_| ApiError::internal(&std::io::Error::other("the policy compiler stopped unexpectedly")))?;
    match compiled {
        Ok(policy) => Ok((policy, source)),
        Err(err) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "policy_denied",
            format!("{} does not compile ({err}); set a new policy", source.describe()),
        )),
    }
}

/// The facts of a decision about an agent, asked by `caller`.
pub(crate) fn facts(
    caller: &Caller,
    manifest: &AgentManifest,
    signature: codexos_policy::Signature,
    publisher: Option<String>,
    workspace: Option<&str>,
) -> Facts {
    Facts {
        tenant: TenantFacts { id: caller.0.tenant.to_string(), slug: caller.0.tenant_slug.to_string() },
        user: UserFacts { id: caller.0.user.map(|user| user.to_string()), role: Some(caller.0.role.to_string()) },
        agent: agent_facts(manifest, publisher, signature),
        workspace: workspace.map(str::to_owned),
    }
}

/// The facts of a decision about a registered version.
pub(crate) fn version_facts(caller: &Caller, version: &AgentVersion, workspace: Option<&str>) -> ApiResult<Facts> {
    let manifest = AgentManifest::parse(&version.manifest).map_err(|err| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_manifest",
            format!("the stored manifest of {} {} no longer parses: {err}", version.name, version.version),
        )
    })?;
    let signature = signature_facts(version.signature_status, version.publisher_key_id.as_ref());
    Ok(facts(caller, &manifest, signature, version.publisher_name.clone(), workspace))
}

/// Asks the tenant's policy about `input` (an install or a start): deny is
/// 403 `policy_denied` with the reasons; so is ask, since installs and
/// starts have no one to wait for (docs/policy.md).
pub(crate) async fn check(state: &AppState, caller: &Caller, input: serde_json::Value, what: &str) -> ApiResult<()> {
    let (policy, source) = tenant_policy(state, caller.0.tenant).await?;
    let decision = tokio::task::spawn_blocking(move || policy.decide(&input))
        .await
        .map_err(|_| ApiError::internal(&std::io::Error::other("the policy thread stopped unexpectedly")))?;
    let message = match decision.verdict {
        Verdict::Allow => return Ok(()),
        Verdict::Deny => format!("{} denies {what}: {}", source.describe(), decision.reasons_text()),
        Verdict::Ask => format!(
            "{} asks for a person's approval of {what}, which only tool calls can wait for, so it is refused: {}",
            source.describe(),
            decision.reasons_text()
        ),
    };
    tracing::info!(%what, verdict = %decision.verdict, "refused by policy");
    let mut error = ApiError::new(StatusCode::FORBIDDEN, "policy_denied", message);
    error.problems = decision.reasons.into_iter().map(|reason| Problem { key: "policy".to_owned(), reason }).collect();
    Err(error)
}
