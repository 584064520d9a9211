//! The one error type of the HTTP API and its wire envelope:
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use codexos_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to a client: a status, a stable machine-readable code
/// and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For invalid documents (manifests, policies): each problem found.
    pub problems: Vec<Problem>,
    /// For 429 and 503: when to try again, in seconds (the `Retry-After` header).
    pub retry_after: Option<u64>,
}

/// One thing wrong with a submitted document: where, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A dotted key path such as `model.provider` or `steps[1].tool`.
    pub key: String,
    pub reason: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `bad_request`, `invalid_json`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `payload_too_large`, `rate_limited`,
    /// `quota_exceeded` (429, with `Retry-After`), `internal`, ...
    pub code: String,
    pub message: String,
    /// Present when a submitted document is invalid: every problem found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), problems: Vec::new(), retry_after: None }
    }

    /// 422: a document (manifest, policy) that parses but is not valid.
    pub fn invalid_document(code: &'static str, message: impl Into<String>, problems: Vec<Problem>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code, message: message.into(), problems, retry_after: None }
    }

    /// 429: over a limit; try again in `seconds` (at least 1).
    pub fn too_many_requests(code: &'static str, message: impl Into<String>, seconds: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, code, message).with_retry_after(seconds)
    }

    /// Adds a `Retry-After` of `seconds` (at least 1) to the answer.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure that is ours, not the caller's: logged in full (the request
    /// span carries the request id), answered with a generic message.
    pub fn internal(err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has details")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The audit log records why a request was refused (a policy's
        // reasons, a conflict), not only that it was.
        let refusal = Refusal { code: self.code, message: self.message.chars().take(MAX_REFUSAL_CHARS).collect() };
        let body = ErrorEnvelope {
            error: ErrorBody { code: self.code.to_owned(), message: self.message, problems: self.problems },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response.extensions_mut().insert(refusal);
        response
    }
}

/// The longest refusal message kept for the audit log.
const MAX_REFUSAL_CHARS: usize = 2000;

/// What an error answer said, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// The code of an error answer, for the layers around the handler (the
/// audit log leaves out what the rate limit refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(entity) => ApiError::not_found(format!("{entity} not found")),
            StoreError::Conflict(entity) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("{entity} already exists"))
            }
            StoreError::InvalidState(message) => ApiError::new(StatusCode::CONFLICT, "invalid_state", message),
            StoreError::NotPermitted(message) => ApiError::forbidden(message),
            err @ StoreError::ExecutionQuota { .. } => {
                ApiError::too_many_requests("quota_exceeded", err.to_string(), 5)
            }
            other => ApiError::internal(&other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose every rejection (wrong content type, bad syntax, wrong
/// shape, too large) is answered with the error envelope.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "unsupported_content_type",
            "expected a JSON body with Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(err) => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {}", source_message(err)))
        }
        JsonRejection::JsonDataError(err) => ApiError::bad_request(
            "invalid_body",
            format!("the body does not match the expected shape: {}", source_message(err)),
        ),
        JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
        }
        other => ApiError::bad_request("bad_request", other.body_text()),
    }
}

/// serde's own message (with line and column), without axum's prefix.
fn source_message(err: &dyn std::error::Error) -> String {
    let mut innermost = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        innermost = next.to_string();
        source = next.source();
    }
    innermost
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}
