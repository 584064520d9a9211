//! Every state-changing request of an authenticated caller becomes an entry
//! of its tenant's audit log: who, which action on which object, how it
//! ended, and the request id. One middleware does it for every route, so a
//! new endpoint is audited without remembering to; handlers only add what
//! the request alone does not say (the id of an object they created).

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use codexos_store::{AuditOutcome, NewAuditEntry, Principal};

use crate::AppState;
use crate::error::{ErrorCode, Refusal};

/// Set on every request by the metrics middleware and filled in when the
/// caller authenticates, so the layers around the handler (metrics, audit)
/// learn who called without knowing how authentication works.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(pub Arc<OnceLock<Principal>>);

/// What a handler adds to its response for the audit log: the object it
/// acted on when the path does not name it (e.g. the id it created), and
/// details worth keeping.
#[derive(Debug, Clone)]
pub struct AuditNote {
    pub target: String,
    pub details: serde_json::Value,
}

impl AuditNote {
    pub fn new(target: impl Into<String>) -> Self {
        Self { target: target.into(), details: serde_json::Value::Null }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// The action each state-changing route performs. A route missing here is
/// still audited, under its method and template (and a test fails).
const ACTIONS: &[(&str, &str, &str)] = &[
    // Audited by its handler: the caller is not authenticated yet.
    ("POST", "/v1/login", "session.login"),
    ("POST", "/v1/logout", "session.logout"),
    ("PUT", "/v1/me/password", "user.set_password"),
    ("POST", "/v1/users", "member.add"),
    ("PATCH", "/v1/users/{id}", "member.set_role"),
    ("DELETE", "/v1/users/{id}", "member.remove"),
    ("POST", "/v1/keys", "key.create"),
    ("DELETE", "/v1/keys/{id}", "key.revoke"),
    ("POST", "/v1/agents", "agent.create"),
    ("POST", "/v1/publishers", "publisher.create"),
    ("PUT", "/v1/publishers/{id}", "publisher.set_trust"),
    ("DELETE", "/v1/publishers/{id}", "publisher.revoke"),
    ("POST", "/v1/executions", "execution.create"),
    ("POST", "/v1/executions/{id}/pause", "execution.pause"),
    ("POST", "/v1/executions/{id}/resume", "execution.resume"),
    ("POST", "/v1/executions/{id}/cancel", "execution.cancel"),
    ("POST", "/v1/executions/{id}/rollback", "execution.rollback"),
    ("POST", "/v1/executions/{id}/fork", "execution.fork"),
    ("POST", "/v1/executions/{id}/approvals/{seq}", "execution.decide_approval"),
    ("PUT", "/v1/tenant/retention", "tenant.set_retention"),
    ("PUT", "/v1/policy", "policy.set"),
    ("POST", "/v1/policy/test", "policy.test"),
    // Single sign-on's callback is a GET (the provider redirects the
    // browser to it) that opens a session: audited by its handler.
    ("GET", "/v1/sso/callback", "session.sso_login"),
    ("PUT", "/v1/tenant/sso", "tenant.set_sso"),
    ("DELETE", "/v1/tenant/sso", "tenant.delete_sso"),
    ("PUT", "/v1/secrets/{name}", "secret.set"),
    ("DELETE", "/v1/secrets/{name}", "secret.delete"),
];

pub fn action_name(method: &Method, route: &str) -> Option<&'static str> {
    ACTIONS.iter().find(|(m, r, _)| *m == method.as_str() && *r == route).map(|(_, _, action)| *action)
}

/// Reads change nothing; everything else is audited.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The object a path names: `/v1/executions/ID/pause` is `execution:ID`.
fn target_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match segments.as_slice() {
        [collection, id, ..] => format!("{}:{id}", collection.strip_suffix('s').unwrap_or(collection)),
        _ => path.to_owned(),
    }
}

fn outcome_of(status: StatusCode) -> AuditOutcome {
    match status {
        status if status.is_success() => AuditOutcome::Success,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => AuditOutcome::Denied,
        _ => AuditOutcome::Failure,
    }
}

/// Middleware: appends the entry once the handler has answered and before
/// the caller sees the answer, so an acknowledged action is on the log.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !changes_state(request.method()) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request.extensions().get::<MatchedPath>().map(|matched| matched.as_str().to_owned());
    let request_id = request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let slot = request.extensions().get::<CallerSlot>().cloned().unwrap_or_default();

    let response = next.run(request).await;

    // Without an authenticated caller there is no tenant to hold the entry;
    // such requests changed nothing (they were refused before any handler).
    let Some(principal) = slot.0.get() else { return response };
    // Nor does the rate limit's refusal, which must stay cheap under a
    // flood: an entry each would turn it into a flood of writes. Metrics
    // count them (codexos_rate_limited_total).
    if response.extensions().get::<ErrorCode>() == Some(&ErrorCode("rate_limited")) {
        return response;
    }
    let Some(route) = route else { return response };
    let note = response.extensions().get::<AuditNote>();
    let mut details =
        serde_json::json!({ "method": method.as_str(), "path": path, "status": response.status().as_u16() });
    if let Some(extra) = note.map(|note| &note.details).filter(|extra| !extra.is_null()) {
        details["details"] = extra.clone();
    }
    if let Some(refusal) = response.extensions().get::<Refusal>() {
        details["error"] = serde_json::json!({ "code": refusal.code, "message": refusal.message });
    }
    let entry = NewAuditEntry {
        actor: actor_of(principal),
        action: action_name(&method, &route).map_or_else(|| format!("{method} {route}"), str::to_owned),
        target: note.map_or_else(|| target_of(&path), |note| note.target.clone()),
        outcome: outcome_of(response.status()),
        request_id,
        details,
    };
    if let Err(err) = state.auditor.record(principal.tenant, &entry).await {
        // The action is done and cannot be undone here; say so loudly.
        tracing::error!(error = %err, action = %entry.action, "cannot append to the audit log");
        metrics::counter!("codexos_audit_failures_total").increment(1);
    }
    response
}

/// Who acted: the user behind a key when there is one, and the key.
pub fn actor_of(principal: &Principal) -> String {
    match principal.user {
        Some(user) => format!("user:{user} {}", principal.credential),
        None => principal.credential.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_changing_route_has_an_action() {
        let (_, openapi) = crate::routes::router();
        for (path, item) in &openapi.paths.paths {
            for (method, operation) in [
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                if operation.is_some() {
                    assert!(action_name(&method, path).is_some(), "{method} {path} has no audit action");
                }
            }
        }
    }

    #[test]
    fn targets_name_the_object_of_the_path() {
        assert_eq!(target_of("/v1/executions/abc/pause"), "execution:abc");
        assert_eq!(target_of("/v1/keys/k1"), "key:k1");
        assert_eq!(target_of("/v1/secrets/TOKEN"), "secret:TOKEN");
        assert_eq!(target_of("/v1/agents"), "/v1/agents");
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(outcome_of(StatusCode::CREATED), AuditOutcome::Success);
        assert_eq!(outcome_of(StatusCode::FORBIDDEN), AuditOutcome::Denied);
        assert_eq!(outcome_of(StatusCode::TOO_MANY_REQUESTS), AuditOutcome::Denied);
        assert_eq!(outcome_of(StatusCode::CONFLICT), AuditOutcome::Failure);
    }
}
