//! The caller's tenant's audit log: its entries, its verification, and
//! inclusion proofs that anyone can check without the database.

use axum::extract::{Path, Query, State};
use codexos_core::{Permission, format_millis};
use codexos_store::{AuditEntry, AuditProof};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAudit {
    /// Entries after this sequence number (default 0: from the first).
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    seq: u64,
    actor: String,
    action: String,
    target: String,
    /// `success`, `denied` or `failure`.
    outcome: String,
    request_id: Option<String>,
    #[schema(value_type = Object)]
    details: serde_json::Value,
    created_at: String,
    /// Hex SHA-256 of the previous entry.
    prev_hash: String,
    /// Hex: this entry's hash, the chain's link and the Merkle tree's leaf.
    entry_hash: String,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            seq: entry.seq,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome,
            request_id: entry.request_id,
            details: entry.details,
            created_at: format_millis(entry.created_at),
            prev_hash: entry.prev_hash,
            entry_hash: entry.entry_hash,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    entries: Vec<AuditEntryView>,
    /// Pass as `after` for the next page; absent at the end.
    next_after: Option<u64>,
}

/// The tenant's audit log, oldest first. Needs `audit:read`.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit", security(("api_key" = [])), params(ListAudit),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListAudit>,
) -> ApiResult<ApiJson<AuditList>> {
    caller.require(Permission::AuditRead)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_field", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let entries = state.store.audit_entries(caller.0.tenant, query.after.unwrap_or(0), limit).await?;
    let next_after = (entries.len() as i64 == limit).then(|| entries.last().map(|entry| entry.seq)).flatten();
    Ok(ApiJson(AuditList { entries: entries.into_iter().map(AuditEntryView::from).collect(), next_after }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerification {
    /// `intact` or `tampered`.
    status: String,
    /// Entries checked (when intact).
    size: Option<u64>,
    /// Hex root of the whole log's tree (when intact).
    root: Option<String>,
    /// Signed checkpoints checked (when intact).
    checkpoints: Option<usize>,
    /// The first bad entry (when tampered).
    seq: Option<u64>,
    /// `edited`, `deleted`, `inserted`, `reordered`, `truncated` or `bad_checkpoint`.
    problem: Option<String>,
    detail: Option<String>,
    /// The key the checkpoints were checked with, in signed-note form.
    verifier_key: String,
    /// The newest signed checkpoint: keep it outside the database, and give
    /// it to `codexos audit verify --checkpoint` later as a witness.
    latest_checkpoint: Option<String>,
}

/// Checks the tenant's log: the hash chain, the Merkle tree, every signed
/// checkpoint and the consistency between successive ones. Needs `audit:read`.
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit", security(("api_key" = [])),
    responses((status = 200, body = AuditVerification), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn verify_audit(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<AuditVerification>> {
    caller.require(Permission::AuditRead)?;
    let _permit = heavy_work(&state)?;
    let verdict = state.auditor.verify(caller.0.tenant).await?;
    let mut view = verification_view(verdict, state.auditor.verifier().to_string());
    view.latest_checkpoint =
        state.store.audit_checkpoints(caller.0.tenant).await?.pop().map(|checkpoint| checkpoint.note);
    Ok(ApiJson(view))
}

fn verification_view(verdict: codexos_audit::Verdict, verifier_key: String) -> AuditVerification {
    let blank = AuditVerification {
        status: String::new(),
        size: None,
        root: None,
        checkpoints: None,
        seq: None,
        problem: None,
        detail: None,
        verifier_key,
        latest_checkpoint: None,
    };
    match verdict {
        codexos_audit::Verdict::Intact { size, root, checkpoints } => AuditVerification {
            status: "intact".to_owned(),
            size: Some(size),
            root: Some(root),
            checkpoints: Some(checkpoints),
            ..blank
        },
        codexos_audit::Verdict::Tampered { seq, problem, detail } => AuditVerification {
            status: "tampered".to_owned(),
            seq: Some(seq),
            problem: serde_json::to_value(problem).ok().and_then(|value| value.as_str().map(str::to_owned)),
            detail: Some(detail),
            ..blank
        },
    }
}

/// An inclusion proof of one entry in a signed checkpoint (one is signed
/// now if none covers the entry yet). Checkable offline with the verifier
/// key: `codexos audit check-proof`. Needs `audit:read`.
#[utoipa::path(
    get, path = "/v1/audit/entries/{seq}/proof", tag = "audit", security(("api_key" = [])),
    params(("seq" = u64, Path, description = "The entry's sequence number")),
    responses(
        (status = 200, body = Object, description = "The proof: entry, leaf index, tree size, audit path, signed checkpoint"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    )
)]
pub async fn prove_entry(
    State(state): State<AppState>,
    caller: Caller,
    Path(seq): Path<String>,
) -> ApiResult<ApiJson<AuditProof>> {
    caller.require(Permission::AuditRead)?;
    let _permit = heavy_work(&state)?;
    let seq: u64 = seq
        .parse()
        .ok()
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_field", "the entry's sequence number must be 1 or more"))?;
    Ok(ApiJson(state.auditor.proof(caller.0.tenant, seq).await?))
}

/// Verifying a log and proving an entry read the whole log: only a few run
/// at once in a server, so that no caller can tie it up with them.
fn heavy_work(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.audit_work.clone().try_acquire_owned().map_err(|_| {
        ApiError::too_many_requests("busy", "the server is verifying audit logs already; try again shortly", 5)
    })
}
