//! The HTTP API of CodexOS: the only crate that knows HTTP and the JSON wire
//! types. It authenticates callers, checks permissions, answers errors in
//! one envelope, records metrics per route and tenant, and describes itself
//! in an OpenAPI document generated from the handlers.

mod audit;
mod auth;
mod error;
mod metrics;
mod oidc;
pub mod password;
mod quota;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header::AUTHORIZATION};
use codexos_sandbox::HostCapabilities;
use codexos_store::{Auditor, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::{ApiError, ErrorEnvelope};
/// How stale a tenant's quotas may get in a running API server.
pub use quota::RELOAD_EVERY as QUOTA_RELOAD_EVERY;

/// What a server needs to know beyond its dependencies.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Workers silent for longer are dead (for the queue health check).
    pub lease_timeout: Duration,
    /// The model servers manifests may name (checked at registration).
    pub model_endpoints: Vec<codexos_core::ModelEndpoint>,
    /// The directories workspaces must lie in (checked when an execution is created).
    pub workspace_roots: Vec<std::path::PathBuf>,
    /// The master keys that wrap the tenants' data keys (to seal secrets).
    pub keyring: codexos_secrets::Keyring,
    /// How long a login session lasts.
    pub session_ttl: Duration,
    /// The quotas of tenants without values of their own.
    pub quotas: codexos_core::Quotas,
    /// Where browsers and identity providers reach this server (single
    /// sign-on's callback); `None`: `http://` and the bound address.
    pub public_url: Option<String>,
    /// Whether single sign-on may use identity providers on loopback
    /// addresses over plain HTTP (tests, local development).
    pub sso_allow_loopback_http: bool,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    auditor: Auditor,
    capabilities: Arc<HostCapabilities>,
    metrics: PrometheusHandle,
    openapi: Arc<utoipa::openapi::OpenApi>,
    lease_timeout: Duration,
    model_endpoints: Arc<[codexos_core::ModelEndpoint]>,
    workspace_roots: Arc<[std::path::PathBuf]>,
    keyring: codexos_secrets::Keyring,
    session_ttl: Duration,
    quotas: Arc<quota::QuotaKeeper>,
    /// Permits for whole-log audit work (verification, proofs).
    audit_work: Arc<tokio::sync::Semaphore>,
    started_at: Instant,
    /// Single sign-on: the client to identity providers, and our public
    /// URL (without a trailing slash) that they send people back to.
    oidc: Arc<oidc::OidcClient>,
    public_url: Arc<str>,
}

/// A server bound to its port, not yet serving. Binding first lets the
/// caller learn the real port (when asked for port 0) before anything runs.
pub struct Server {
    listener: TcpListener,
    router: Router,
    local_addr: SocketAddr,
    shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Binds the listener and builds the application.
pub async fn bind(
    options: &ServerOptions,
    store: Store,
    auditor: Auditor,
    capabilities: HostCapabilities,
) -> Result<Server, BindError> {
    let listener =
        TcpListener::bind(options.listen).await.map_err(|source| BindError { addr: options.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| BindError { addr: options.listen, source })?;
    let (api_router, openapi) = routes::router();
    let quotas = Arc::new(quota::QuotaKeeper::new(store.clone(), options.quotas));
    let oidc = oidc::OidcClient::new(options.sso_allow_loopback_http)
        .map_err(|reason| BindError { addr: options.listen, source: std::io::Error::other(reason) })?;
    let public_url = match &options.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{local_addr}"),
    };
    let state = AppState {
        store,
        auditor,
        capabilities: Arc::new(capabilities),
        metrics: metrics::recorder(),
        openapi: Arc::new(openapi),
        lease_timeout: options.lease_timeout,
        model_endpoints: options.model_endpoints.clone().into(),
        workspace_roots: options.workspace_roots.clone().into(),
        keyring: options.keyring.clone(),
        session_ttl: options.session_ttl,
        quotas,
        audit_work: Arc::new(tokio::sync::Semaphore::new(2)),
        started_at: Instant::now(),
        oidc: Arc::new(oidc),
        public_url: public_url.into(),
    };
    let router = api_router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Inside the metrics and the request span, so a panic is counted and
        // logged with its request id like any other error.
        .layer(CatchPanicLayer::custom(routes::panic_response))
        // Inside the audit log, which records what it refuses.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        // Inside the metrics, which give it the caller's slot.
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<_>| {
                            let request_id =
                                request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or("-");
                            tracing::info_span!(
                                "request",
                                method = %request.method(),
                                path = %request.uri().path(),
                                request_id,
                                tenant = tracing::field::Empty,
                            )
                        })
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        );
    Ok(Server { listener, router, local_addr, shutdown_grace: options.shutdown_grace })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets
    /// requests in flight finish, for at most the grace period.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let grace = self.shutdown_grace;
        let serving = axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let grace_expired = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            res = serving => res,
            () = grace_expired => {
                tracing::warn!(grace = ?grace, "requests still in flight after the shutdown grace period; stopping anyway");
                Ok(())
            }
        }
    }
}
