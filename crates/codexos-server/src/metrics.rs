//! Prometheus metrics: rate, errors and duration per route and tenant, the
//! process's own figures, and the execution queue.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::audit::CallerSlot;

const DURATION: &str = "codexos_http_request_duration_seconds";
/// From a cached read (well under a millisecond) to a slow one.
const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide recorder once and returns its handle; later
/// calls (a second server in the same process) share it.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), &DURATION_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            // If another recorder is installed already (only in tests that
            // embed us), our handle still renders what we record on it.
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_counter!(
                "codexos_http_requests_total",
                "HTTP requests answered, by route, status and tenant"
            );
            metrics::describe_counter!(
                "codexos_http_request_errors_total",
                "HTTP requests answered with a 4xx or 5xx status"
            );
            metrics::describe_histogram!(DURATION, metrics::Unit::Seconds, "time to answer an HTTP request");
            metrics_process::Collector::default().describe();
            handle
        })
        .clone()
}

/// Renders the text exposition, refreshing the process figures first.
pub fn render(handle: &PrometheusHandle) -> String {
    metrics_process::Collector::default().collect();
    handle.render()
}

/// Middleware: times each request and counts it under its route template
/// (never the raw path, which would explode the label set).
pub async fn track(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Any token is a valid method on the wire; only the standard ones become
    // labels, so nobody can grow the series without bound.
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let caller = CallerSlot::default();
    request.extensions_mut().insert(caller.clone());

    let response = next.run(request).await;

    let status = response.status();
    let tenant = caller.0.get().map_or_else(|| "-".to_owned(), |principal| principal.tenant_slug.as_str().to_owned());
    let duration_labels = [("method", method), ("route", route), ("tenant", tenant)];
    metrics::histogram!(DURATION, &duration_labels).record(started.elapsed().as_secs_f64());
    let [method, route, tenant] = duration_labels;
    let labels = [method, route, ("status", status.as_u16().to_string()), tenant];
    metrics::counter!("codexos_http_requests_total", &labels).increment(1);
    if status.is_client_error() || status.is_server_error() {
        metrics::counter!("codexos_http_request_errors_total", &labels).increment(1);
    }
    response
}
