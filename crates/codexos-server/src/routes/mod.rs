//! The routes, each module a resource; `router` assembles them together
//! with their OpenAPI description.

mod agents;
mod audit;
mod docs;
mod executions;
mod health;
mod keys;
mod me;
mod policies;
mod publishers;
mod retention;
mod secrets;
mod sessions;
mod sso;
mod usage;
mod users;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ErrorEnvelope};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CodexOS API",
        description = "Run autonomous engineering agents safely: every tool call allow-listed, policy-checked and sandboxed; \
                       every step on a durable timeline. Errors are always `{\"error\": {\"code\", \"message\"}}`.",
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorEnvelope)),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "identity", description = "Who the caller is: login sessions, passwords, the tenant's members"),
        (name = "keys", description = "API keys of the caller's tenant"),
        (name = "agents", description = "Agents registered from manifests, every version kept"),
        (name = "executions", description = "Runs of agents on tasks, and their timelines"),
        (name = "secrets", description = "Secrets of the caller's tenant, encrypted at rest; values are never answered"),
        (name = "tenant", description = "The tenant's own settings: retention, single sign-on"),
        (name = "audit", description = "The tenant's tamper-evident audit log: entries, verification, inclusion proofs"),
        (name = "usage", description = "The tenant's usage against its quotas (set per tenant by the installation's operator)"),
        (name = "policy", description = "The tenant's policy in Rego: every tool call, install and start is asked (allow, ask, deny)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new(crate::auth::SESSION_COOKIE),
            )),
        );
    }
}

/// All routes with their OpenAPI document.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::health_detailed))
        .routes(routes!(health::metrics))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::reference))
        .routes(routes!(me::me))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::logout))
        .routes(routes!(sessions::change_password))
        .routes(routes!(users::list_users, users::add_user))
        .routes(routes!(users::set_user_role, users::remove_user))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(agents::list_agents, agents::create_agent))
        .routes(routes!(agents::show_agent))
        .routes(routes!(publishers::list_publishers, publishers::create_publisher))
        .routes(routes!(publishers::set_publisher_trust, publishers::revoke_publisher))
        .routes(routes!(executions::list_executions, executions::create_execution))
        .routes(routes!(executions::show_execution))
        .routes(routes!(executions::list_events))
        .routes(routes!(executions::stream_events))
        .routes(routes!(executions::pause_execution))
        .routes(routes!(executions::resume_execution))
        .routes(routes!(executions::cancel_execution))
        .routes(routes!(executions::rollback_execution))
        .routes(routes!(executions::fork_execution))
        .routes(routes!(executions::decide_approval))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(secrets::set_secret, secrets::delete_secret))
        .routes(routes!(retention::show_retention, retention::set_retention))
        .routes(routes!(sso::sso_login))
        .routes(routes!(sso::sso_callback))
        .routes(routes!(sso::show_sso, sso::set_sso, sso::delete_sso))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::prove_entry))
        .routes(routes!(usage::usage))
        .routes(routes!(policies::show_policy, policies::set_policy))
        .routes(routes!(policies::list_policy_versions))
        .routes(routes!(policies::test_policy))
        .split_for_parts();
    (router, with_access(openapi))
}

/// Each operation of the document shows the access its route declares
/// (`x-codexos-access`: `public`, `authenticated`, or the permission).
fn with_access(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for (path, item) in &mut openapi.paths.paths {
        for (method, operation) in [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ] {
            if let (Some(operation), Some(access)) = (operation.as_mut(), crate::auth::route_access(&method, path)) {
                operation
                    .extensions
                    .get_or_insert_with(Default::default)
                    .insert("x-codexos-access".to_owned(), serde_json::Value::String(access.name()));
            }
        }
    }
    openapi
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A panic in a handler is a bug: it is logged and answered like any
/// internal error, never with the panic's text.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has details")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_declares_its_access_and_every_declaration_is_a_route() {
        let (_, openapi) = router();
        let mut operations = 0;
        for (path, item) in &openapi.paths.paths {
            for (method, operation) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                if let Some(operation) = operation {
                    operations += 1;
                    let declared = operation.extensions.as_ref().and_then(|found| found.get("x-codexos-access"));
                    assert!(declared.is_some(), "{method} {path} declares no access");
                }
            }
        }
        assert_eq!(operations, crate::auth::declared_routes(), "the table names a route the router does not have");
    }
}
