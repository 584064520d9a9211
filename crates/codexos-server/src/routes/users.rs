//! The tenant's members: users (global identities, by email) with a role in
//! this tenant. Managing them needs `tenant:admin`, and nobody grants, or
//! touches a member holding, a role above their own.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use codexos_core::{Permission, Role, UserId, format_millis};
use codexos_store::Member;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};
use crate::password;

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    id: String,
    email: String,
    role: String,
    /// Whether the user can log in with a password.
    has_password: bool,
    /// When they joined this tenant.
    created_at: String,
}

impl From<Member> for MemberView {
    fn from(member: Member) -> Self {
        Self {
            id: member.user.to_string(),
            email: member.email,
            role: member.role.to_string(),
            has_password: member.has_password,
            created_at: format_millis(member.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    users: Vec<MemberView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    email: String,
    /// `owner`, `admin`, `developer` or `viewer`; at most the caller's own.
    role: String,
    /// The password of a new user (at least 12 characters). A user who
    /// exists already, as another tenant's member, keeps theirs.
    password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    role: String,
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse()
        .map_err(|err: codexos_core::role::RoleError| ApiError::bad_request("invalid_field", format!("role: {err}")))
}

fn parse_user(text: &str) -> Result<UserId, ApiError> {
    UserId::parse(text).map_err(|err| ApiError::bad_request("invalid_id", err.to_string()))
}

/// A plausible address: one `@`, no spaces or control characters, at most 254 bytes.
fn check_email(email: &str) -> Result<(), ApiError> {
    let email = email.trim();
    let plausible = email.len() <= 254
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if plausible { Ok(()) } else { Err(ApiError::bad_request("invalid_field", "email is not an email address")) }
}

/// Fails unless the caller may act on a member holding `role`.
fn check_rank(caller: &Caller, role: Role, verb: &str) -> Result<(), ApiError> {
    if caller.0.role.can_grant(role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("a {} cannot {verb} a {role}", caller.0.role)))
    }
}

/// The tenant's members. Needs `tenant:admin`.
#[utoipa::path(
    get, path = "/v1/users", tag = "identity", security(("api_key" = [])),
    responses((status = 200, body = MemberList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope))
)]
pub async fn list_users(State(state): State<AppState>, caller: Caller) -> ApiResult<ApiJson<MemberList>> {
    caller.require(Permission::TenantAdmin)?;
    let members = state.store.list_members(caller.0.tenant).await?;
    Ok(ApiJson(MemberList { users: members.into_iter().map(MemberView::from).collect() }))
}

/// Adds a member: a new user, or an existing one joining this tenant.
/// Needs `tenant:admin`.
#[utoipa::path(
    post, path = "/v1/users", tag = "identity", security(("api_key" = [])), request_body = AddMember,
    responses(
        (status = 201, body = MemberView), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope, description = "Already a member"),
    )
)]
pub async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<AddMember>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, ApiJson<MemberView>)> {
    caller.require(Permission::TenantAdmin)?;
    check_email(&request.email)?;
    let role = parse_role(&request.role)?;
    check_rank(&caller, role, "add")?;
    let hash = match request.password {
        None => None,
        Some(password) => {
            password::check_new(&password).map_err(|reason| ApiError::bad_request("invalid_field", reason))?;
            let hashed = tokio::task::spawn_blocking(move || password::hash(&password))
                .await
                .map_err(|err| ApiError::internal(&err))?
                .map_err(|reason| ApiError::internal(&std::io::Error::other(reason)))?;
            Some(hashed)
        }
    };
    let member = state.store.add_member(caller.0.tenant, &request.email, role, hash.as_deref()).await.map_err(
        |err| match err {
            codexos_store::StoreError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "that user is a member of this tenant already")
            }
            other => other.into(),
        },
    )?;
    let note = AuditNote::new(format!("user:{}", member.user)).with_details(serde_json::json!({ "role": role }));
    Ok((StatusCode::CREATED, Extension(note), ApiJson(member.into())))
}

/// Changes a member's role. Needs `tenant:admin`; a tenant keeps one owner.
#[utoipa::path(
    patch, path = "/v1/users/{id}", tag = "identity", security(("api_key" = [])), request_body = SetRole,
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = MemberView), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
    )
)]
pub async fn set_user_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<SetRole>,
) -> ApiResult<(Extension<AuditNote>, ApiJson<MemberView>)> {
    caller.require(Permission::TenantAdmin)?;
    let user = parse_user(&id)?;
    let role = parse_role(&request.role)?;
    let current = state.store.member(caller.0.tenant, user).await?;
    let member = state.store.set_member_role(caller.0.tenant, user, role, caller.0.role).await?;
    let note =
        AuditNote::new(format!("user:{user}")).with_details(serde_json::json!({ "from": current.role, "to": role }));
    Ok((Extension(note), ApiJson(member.into())))
}

/// Removes a member from the tenant: their sessions end and their keys here
/// are revoked. Needs `tenant:admin`; a tenant keeps one owner.
#[utoipa::path(
    delete, path = "/v1/users/{id}", tag = "identity", security(("api_key" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, body = MemberView, description = "The member removed"), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope),
    )
)]
pub async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<MemberView>> {
    caller.require(Permission::TenantAdmin)?;
    let user = parse_user(&id)?;
    let removed = state.store.remove_member(caller.0.tenant, user, caller.0.role).await?;
    Ok(ApiJson(removed.into()))
}
