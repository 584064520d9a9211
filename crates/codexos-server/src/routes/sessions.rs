//! Local login: email and password for a tenant, answered with a session in
//! an HTTP-only cookie; logout; changing one's own password. Guessing is
//! slowed, then locked, per account and per address, and audited.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header::SET_COOKIE};
use axum::response::{IntoResponse, Response};
use codexos_core::{TenantId, TenantSlug, format_millis, now_millis};
use codexos_store::{AuditOutcome, Credential, NewAuditEntry};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::AuditNote;
use crate::auth::{Caller, SESSION_COOKIE};
use crate::error::{ApiError, ApiJson, ApiResult, ErrorEnvelope};
use crate::password;

/// Failures of one subject are counted over this window.
const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failures of an account before it is locked, and of an address (many
/// people may share one behind a NAT).
const ACCOUNT_FAILURES_BEFORE_LOCK: i64 = 5;
const ADDRESS_FAILURES_BEFORE_LOCK: i64 = 20;
/// The first lock, doubled with each further failure, up to the longest.
const FIRST_LOCK_MS: i64 = 60 * 1000;
const LONGEST_LOCK_MS: i64 = 60 * 60 * 1000;

/// How long a subject is locked after its `failures`-th failure.
fn lock_after(failures: i64, threshold: i64) -> i64 {
    if failures < threshold {
        return 0;
    }
    let doublings = u32::try_from(failures - threshold).unwrap_or(u32::MAX).min(10);
    FIRST_LOCK_MS.saturating_mul(1 << doublings).min(LONGEST_LOCK_MS)
}

/// Each failure answers a little later than the one before: guessing slows
/// down well before the lock.
fn failure_delay(failures: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(failures.clamp(1, 20)).unwrap_or(1) * 100)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The tenant's slug.
    tenant: String,
    email: String,
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedIn {
    tenant: String,
    user_id: String,
    email: String,
    role: String,
    expires_at: String,
}

/// Logs in with email and password; the session travels in the
/// `codexos_session` cookie (HTTP-only, Secure, SameSite=Strict). Wrong
/// tenant, email or password all answer the same 401; repeated failures
/// are slowed, then locked (429 with Retry-After), per account and per address.
#[utoipa::path(
    post, path = "/v1/login", tag = "identity", request_body = Login,
    responses(
        (status = 200, body = LoggedIn, description = "Logged in; the session is in the Set-Cookie header"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 429, body = ErrorEnvelope, description = "Too many failures: locked for Retry-After seconds"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<Login>,
) -> ApiResult<Response> {
    let request_id = headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    if request.email.len() > MAX_EMAIL_BYTES || request.tenant.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::bad_request("invalid_field", "email and tenant are at most 254 bytes"));
    }
    let email = codexos_store::normalize_email(&request.email);
    let account = format!("account:{email}");
    let address = format!("address:{}", address_subject(peer.ip()));
    let slug = TenantSlug::parse(request.tenant.trim()).ok();
    let found = match &slug {
        Some(slug) => state.store.login_record(slug, &email).await?,
        None => None,
    };
    let tenant = found.as_ref().map(|(tenant, _)| *tenant);
    let audit = |outcome: AuditOutcome, actor: String, details: serde_json::Value| NewAuditEntry {
        actor,
        action: "session.login".to_owned(),
        target: format!("user:{email}"),
        outcome,
        request_id: request_id.clone(),
        details,
    };

    // Every attempt is counted before its password is checked, atomically,
    // so guesses sent in parallel cannot all slip under the limit; a locked
    // subject is refused unchecked. (Refusals while locked are counted in a
    // metric, not audited: a flood of them must not become a flood of
    // entries. The failure that set the lock is audited.)
    let account_attempt =
        state.store.count_login_attempt(&account, WINDOW_MS, |n| lock_after(n, ACCOUNT_FAILURES_BEFORE_LOCK)).await?;
    let address_attempt =
        state.store.count_login_attempt(&address, WINDOW_MS, |n| lock_after(n, ADDRESS_FAILURES_BEFORE_LOCK)).await?;
    if let Some(until) = account_attempt.locked_until.max(address_attempt.locked_until) {
        let seconds = u64::try_from((until - now_millis() + 999) / 1000).unwrap_or(1);
        metrics::counter!("codexos_login_locked_total").increment(1);
        return Err(ApiError::too_many_requests("login_locked", "too many failed logins: try again later", seconds));
    }

    let record_entry = found.and_then(|(_, record)| record);
    let password = request.password;
    let stored = record_entry.as_ref().and_then(|record| record.password_hash.clone());
    // Hashing is deliberately slow: off the async threads.
    let matches = tokio::task::spawn_blocking(move || password::verify(&password, stored.as_deref()))
        .await
        .map_err(|err| ApiError::internal(&err))?;
    let member = record_entry.filter(|record| matches && record.role.is_some());
    let (Some(tenant), Some(member)) = (tenant, member) else {
        let (account_state, address_state) = (account_attempt.state, address_attempt.state);
        let entry = audit(
            AuditOutcome::Failure,
            peer_actor(&peer),
            serde_json::json!({
                "account_failures": account_state.failures,
                "locked": account_state.locked_until.is_some() || address_state.locked_until.is_some(),
            }),
        );
        record(&state, tenant, &entry).await;
        tokio::time::sleep(failure_delay(account_state.failures.max(address_state.failures))).await;
        return Err(ApiError::unauthorized("wrong tenant, email or password"));
    };

    state.store.clear_login_failures(&account).await?;
    state.store.forgive_login_attempt(&address).await?;
    let ttl = i64::try_from(state.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let session = state.store.create_session(tenant, member.user, ttl).await?;
    let entry = audit(
        AuditOutcome::Success,
        format!("user:{} session:{}", member.user, session.id),
        serde_json::json!({ "address": peer.ip().to_string() }),
    );
    record(&state, Some(tenant), &entry).await;
    let role = member.role.map(|role| role.to_string()).unwrap_or_default();
    let body = LoggedIn {
        tenant: slug.map(|slug| slug.to_string()).unwrap_or_default(),
        user_id: member.user.to_string(),
        email,
        role,
        expires_at: format_millis(session.expires_at),
    };
    Ok(with_cookie(ApiJson(body).into_response(), &session_cookie(session.secret.expose(), ttl)))
}

/// The cookie that carries a new session: HTTP-only, Secure,
/// SameSite=Strict, for the whole site, as long as the session lasts. Local
/// login and single sign-on both hand out this one.
pub(crate) fn session_cookie(secret: &str, ttl_ms: i64) -> cookie::Cookie<'static> {
    cookie::Cookie::build((SESSION_COOKIE, secret.to_owned()))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::milliseconds(ttl_ms))
        .build()
}

/// The longest email (and tenant slug) a login accepts.
const MAX_EMAIL_BYTES: usize = 254;

/// The address a throttle counts: an IPv4 address, or an IPv6 /64 (one
/// machine is given a whole /64, so single IPv6 addresses are free to vary).
fn address_subject(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn peer_actor(peer: &SocketAddr) -> String {
    format!("address:{}", peer.ip())
}

/// Audits a login event in the tenant it concerns; a login to no existing
/// tenant has no log to go to, and is only traced.
pub(crate) async fn record(state: &AppState, tenant: Option<TenantId>, entry: &NewAuditEntry) {
    let Some(tenant) = tenant else {
        tracing::info!(outcome = entry.outcome.as_str(), actor = %entry.actor, "login to an unknown tenant");
        return;
    };
    if let Err(err) = state.auditor.record(tenant, entry).await {
        tracing::error!(error = %err, action = %entry.action, "cannot append to the audit log");
    }
}

pub(crate) fn with_cookie(mut response: Response, cookie: &cookie::Cookie<'_>) -> Response {
    match HeaderValue::from_str(&cookie.to_string()) {
        Ok(value) => {
            response.headers_mut().append(SET_COOKIE, value);
            response
        }
        Err(err) => ApiError::internal(&err).into_response(),
    }
}

/// Ends the caller's session and clears its cookie. Only a session can log out.
#[utoipa::path(
    post, path = "/v1/logout", tag = "identity", security(("session" = [])),
    responses((status = 204, description = "Logged out"), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope))
)]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let Credential::Session(session) = caller.0.credential else {
        return Err(ApiError::bad_request(
            "not_a_session",
            "logout ends a login session; this request used an API key",
        ));
    };
    state.store.revoke_session(caller.0.tenant, session).await?;
    let cleared = cookie::Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), &cleared))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// Needed when the user has a password already.
    current_password: Option<String>,
    /// At least 12 characters.
    new_password: String,
}

/// Sets the caller's own password in this tenant (passwords are per tenant).
/// The user's sessions in this tenant end.
#[utoipa::path(
    put, path = "/v1/me/password", tag = "identity", security(("api_key" = [])), request_body = ChangePassword,
    responses(
        (status = 204, description = "Changed"), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ChangePassword>,
) -> ApiResult<(StatusCode, Extension<AuditNote>)> {
    let user = caller
        .0
        .user
        .ok_or_else(|| ApiError::bad_request("no_user", "this key belongs to no user, so it has no password"))?;
    password::check_new(&request.new_password).map_err(|reason| ApiError::bad_request("invalid_field", reason))?;
    let stored = state.store.password_hash(caller.0.tenant, user).await?;
    let (new_password, current) = (request.new_password, request.current_password);
    let hashed = tokio::task::spawn_blocking(move || {
        if stored.is_some() && !password::verify(current.as_deref().unwrap_or_default(), stored.as_deref()) {
            return Ok(None);
        }
        password::hash(&new_password).map(Some)
    })
    .await
    .map_err(|err| ApiError::internal(&err))?
    .map_err(|reason| ApiError::internal(&std::io::Error::other(reason)))?;
    let Some(hashed) = hashed else {
        return Err(ApiError::forbidden("the current password is wrong"));
    };
    state.store.set_password(caller.0.tenant, user, &hashed).await?;
    Ok((StatusCode::NO_CONTENT, Extension(AuditNote::new(format!("user:{user}")))))
}
