//! Model providers: one [`ModelClient`] that speaks OpenAI-compatible chat
//! completions (OpenAI, and the local servers that copy it: Ollama, vLLM,
//! llama.cpp) and Anthropic Messages, streamed or not.
//!
//! The client owns the wire formats (`openai.rs`, `anthropic.rs`, with
//! `sse.rs` for streams), the retry policy (`retry.rs`) and the timeouts; the
//! rest of the engine sees only the neutral types of [`crate::conversation`].
//! Nothing a server sends can panic it: malformed answers become
//! [`ModelError::Protocol`], which is retried like a network failure.
//!
//! A tenant chooses its model server, so the client treats it as hostile: what
//! it reads is capped ([`limits`]; an answer past a cap is refused and not
//! retried), it follows no redirect (which could carry the key to another
//! host), its error messages never quote a URL's query or user info, and text
//! the server chose reaches an error message only without control characters.

mod anthropic;
pub mod limits;
mod openai;
mod retry;
pub mod sse;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::conversation::{Message, ModelReply, ToolSpec};
use limits::{Limit, MAX_ERROR_BODY_BYTES, MAX_ERROR_MESSAGE_BYTES};
use sse::{SseEvent, SseParser};

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// The longest a stream may stay silent once its response has begun (capped
/// by the request timeout). Anthropic pings every few seconds, but
/// OpenAI-compatible servers send nothing while a reasoning model thinks or a
/// local server on a CPU works through a long prompt, so this is generous.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Connecting takes no longer than this, even under a long request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which wire format a model server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI chat completions, and every server compatible with it.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The provider's public API, for configurations that name no server.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            _ => Err(ModelError::InvalidConfig(format!(
                "unknown model provider {text:?} (expected openai or anthropic)"
            ))),
        }
    }
}

/// How to reach one model. The `Debug` output never shows the key.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub provider: Provider,
    /// The provider's model name, e.g. `gpt-4.1-mini`.
    pub model: String,
    /// `https://api.openai.com/v1` or `https://api.anthropic.com` (with or
    /// without `/v1`): the client appends `/chat/completions` or `/messages`.
    /// User info (`user:pass@`), a query and a fragment are refused.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic);
    /// local servers often need none. An empty key counts as none.
    pub api_key: Option<SecretString>,
    /// Stream the answer as server-sent events, or take one JSON body.
    pub stream: bool,
    pub max_output_tokens: u32,
    pub temperature: Option<f32>,
    /// The longest one attempt may take, stream included. A stream that stays
    /// silent for [`STREAM_IDLE_TIMEOUT`] fails sooner.
    pub request_timeout: Duration,
    /// Retries after the first attempt, on 408, 429, 5xx, timeouts, network
    /// failures and malformed answers.
    pub max_retries: u32,
    /// The first retry waits about this long, each next one about twice as
    /// long, unless the server says how long with `Retry-After`.
    pub retry_base_delay: Duration,
}

impl ModelConfig {
    /// A configuration for the provider's public API with the usual
    /// settings: streaming, 4096 output tokens, a 10-minute timeout and 3
    /// retries from 1 s.
    pub fn new(provider: Provider, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            base_url: provider.default_base_url().to_owned(),
            api_key: None,
            stream: true,
            max_output_tokens: 4096,
            temperature: None,
            request_timeout: Duration::from_secs(600),
            max_retries: 3,
            retry_base_delay: Duration::from_secs(1),
        }
    }
}

/// What one model turn is asked.
#[derive(Debug, Clone, Copy)]
pub struct ModelRequest<'a> {
    pub system: &'a str,
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
}

/// Progress of a call, reported while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// Attempt number `attempt` (counting from 1) failed and will be retried
    /// after `delay`. Text deltas after this event start the answer over.
    Retry { attempt: u32, reason: String, delay: Duration },
    /// Streaming: a fragment of the assistant's text arrived.
    TextDelta(String),
}

/// Which limit a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The whole attempt took longer than `request_timeout`.
    Request,
    /// A stream stayed silent for too long.
    StreamIdle,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot encode the model request: {0}")]
    InvalidRequest(String),
    /// The server answered with an error status; `message` is the body's
    /// `error.message`, or the start of the body when it has none.
    #[error("model server answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The server reported an error inside a successful response, e.g. an
    /// Anthropic `error` event (`overloaded_error`) in the middle of a stream.
    #[error("model server reported {kind}: {message}")]
    Api { kind: String, message: String },
    #[error("{}", timeout_message(*.kind, *.after))]
    Timeout { kind: TimeoutKind, after: Duration },
    /// Connecting failed, or the connection broke before the answer was read.
    #[error("cannot reach the model server: {0}")]
    Connect(String),
    /// The answer does not follow the wire format: not JSON, a broken stream,
    /// a missing field.
    #[error("malformed answer from the model server: {0}")]
    Protocol(String),
    /// The answer goes past one of the caps in [`limits`]. Unlike a malformed
    /// answer, it is not retried: a server that sent too much will again.
    #[error("the model server's answer exceeds a limit: {0}")]
    TooLarge(Limit),
    #[error("model call failed after {attempts} attempts: {last}")]
    RetriesExhausted { attempts: u32, last: Box<ModelError> },
}

impl ModelError {
    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            ModelError::Api { kind, .. } => !matches!(
                kind.as_str(),
                "invalid_request_error"
                    | "authentication_error"
                    | "permission_error"
                    | "not_found_error"
                    | "request_too_large"
                    | "billing_error"
            ),
            ModelError::Timeout { .. } | ModelError::Connect(_) | ModelError::Protocol(_) => true,
            ModelError::InvalidConfig(_)
            | ModelError::InvalidRequest(_)
            | ModelError::TooLarge(_)
            | ModelError::RetriesExhausted { .. } => false,
        }
    }
}

fn timeout_message(kind: TimeoutKind, after: Duration) -> String {
    let after = humantime::format_duration(after);
    match kind {
        TimeoutKind::Request => format!("model call timed out after {after}"),
        TimeoutKind::StreamIdle => format!("model stream was silent for {after}"),
    }
}

/// A client for one configured model; cheap to share behind an `Arc`.
pub struct ModelClient {
    http: reqwest::Client,
    config: ModelConfig,
    endpoint: reqwest::Url,
    /// Authentication and version headers, the key marked sensitive.
    headers: HeaderMap,
    idle_timeout: Duration,
}

impl fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ModelClient {
    pub fn new(config: ModelConfig) -> Result<Self> {
        if config.model.trim().is_empty() {
            return Err(ModelError::InvalidConfig("the model name is empty".to_owned()));
        }
        if config.max_output_tokens == 0 {
            return Err(ModelError::InvalidConfig("max_output_tokens must be at least 1".to_owned()));
        }
        if config.request_timeout.is_zero() {
            return Err(ModelError::InvalidConfig("request_timeout must be longer than zero".to_owned()));
        }
        if let Some(temperature) = config.temperature
            && !(temperature.is_finite() && temperature >= 0.0)
        {
            return Err(ModelError::InvalidConfig(format!("temperature {temperature} is not a number >= 0")));
        }
        let endpoint = endpoint(config.provider, &config.base_url)?;
        let headers = auth_headers(&config)?;
        // No redirect is followed: reqwest drops `Authorization` on a redirect
        // to another host but not `x-api-key`, and a model API has no reason
        // to redirect a POST anyway.
        let http = crate::http_client::builder()
            .map_err(|err| ModelError::InvalidConfig(format!("cannot set up TLS: {err}")))?
            .connect_timeout(config.request_timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("codexos/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| ModelError::InvalidConfig(format!("cannot build the HTTP client: {}", http_error(err))))?;
        let idle_timeout = STREAM_IDLE_TIMEOUT.min(config.request_timeout);
        Ok(Self { http, config, endpoint, headers, idle_timeout })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// One model turn. `events` receives progress while the call runs.
    ///
    /// Retryable failures are retried up to `max_retries` times, each attempt
    /// under `request_timeout`; when they run out the error is
    /// [`ModelError::RetriesExhausted`] carrying the last failure. Other
    /// failures are returned as they are, at once.
    pub async fn complete(
        &self,
        request: &ModelRequest<'_>,
        events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply> {
        let body = match self.config.provider {
            Provider::OpenAi => openai::request_body(&self.config, request, &self.endpoint)?,
            Provider::Anthropic => anthropic::request_body(&self.config, request)?,
        };
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let failure = match tokio::time::timeout(self.config.request_timeout, self.attempt(&body, events)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::from(ModelError::Timeout {
                    kind: TimeoutKind::Request,
                    after: self.config.request_timeout,
                }),
            };
            if !failure.error.is_retryable() {
                return Err(failure.error);
            }
            if attempt > self.config.max_retries {
                return Err(ModelError::RetriesExhausted { attempts: attempt, last: Box::new(failure.error) });
            }
            let delay = retry::retry_delay(self.config.retry_base_delay, attempt, failure.retry_after);
            tracing::warn!(
                provider = %self.config.provider,
                model = %self.config.model,
                attempt,
                delay = %humantime::format_duration(delay),
                error = %failure.error,
                "model call failed; retrying"
            );
            events(ModelEvent::Retry { attempt, reason: failure.error.to_string(), delay });
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: &[u8], events: &mut (dyn FnMut(ModelEvent) + Send)) -> Result<ModelReply, Failure> {
        let accept = if self.config.stream { "text/event-stream" } else { "application/json" };
        let mut response = self
            .http
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|err| ModelError::Connect(format!("{}: {}", redacted_url(&self.endpoint), http_error(err))))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(
                ModelError::Status { status: status.as_u16(), message: self.redirect_message(&response) }.into()
            );
        }
        if !status.is_success() {
            let retry_after = retry::retry_after(response.headers());
            // The error body is a courtesy: failing to read it must not hide
            // the status.
            let body = read_body(&mut response, MAX_ERROR_BODY_BYTES).await.map(|(body, _)| body).unwrap_or_default();
            let error = ModelError::Status { status: status.as_u16(), message: error_message(&body) };
            return Err(Failure { error, retry_after });
        }
        let is_event_stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
        // A server that ignores `stream: true` and answers in one JSON body
        // is read as such.
        if self.config.stream && is_event_stream {
            return Ok(self.read_stream(&mut response, events).await?);
        }
        // A body announced too large is refused before it is read; one that
        // turns out too large, once the cap is reached.
        if response.content_length().is_some_and(|length| length > limits::MAX_REPLY_BYTES as u64) {
            return Err(ModelError::TooLarge(Limit::ReplyBytes).into());
        }
        let (body, truncated) = read_body(&mut response, limits::MAX_REPLY_BYTES).await?;
        if truncated {
            return Err(ModelError::TooLarge(Limit::ReplyBytes).into());
        }
        let reply = match self.config.provider {
            Provider::OpenAi => openai::parse_response(&body)?,
            Provider::Anthropic => anthropic::parse_response(&body)?,
        };
        Ok(reply)
    }

    /// Why a redirect was not followed, naming where it led (its host and
    /// port only: the rest of a location may carry secrets).
    fn redirect_message(&self, response: &reqwest::Response) -> String {
        let target = response
            .headers()
            .get(header::LOCATION)
            .and_then(|location| location.to_str().ok())
            .and_then(|location| self.endpoint.join(location).ok());
        let target = match target.as_ref().and_then(|url| url.host_str().map(|host| (host, url.port()))) {
            Some((host, Some(port))) => format!("{host}:{port}"),
            Some((host, None)) => host.to_owned(),
            None => "an unknown location".to_owned(),
        };
        let target = server_text(&target, MAX_ERROR_MESSAGE_BYTES);
        format!("redirected to {target}, which is not followed (set base_url to the address that answers)")
    }

    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply> {
        let mut parser = SseParser::default();
        let mut stream = StreamState::new(self.config.provider);
        let mut batch = Vec::new();
        let mut received: usize = 0;
        loop {
            let chunk = match tokio::time::timeout(self.idle_timeout, response.chunk()).await {
                Err(_) => return Err(ModelError::Timeout { kind: TimeoutKind::StreamIdle, after: self.idle_timeout }),
                Ok(Err(err)) => {
                    return Err(ModelError::Connect(format!("the stream broke: {}", http_error(err))));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            limits::ensure_within(received, chunk.len(), Limit::StreamBytes)?;
            received += chunk.len();
            parser.feed(&chunk, &mut batch)?;
            for event in batch.drain(..) {
                stream.on_event(&event, events)?;
                // A server that keeps the connection open after the end of
                // the answer must not hold the call until a timeout.
                if stream.is_done() {
                    return stream.finish();
                }
            }
        }
        if let Some(event) = parser.finish()? {
            stream.on_event(&event, events)?;
        }
        stream.finish()
    }
}

/// A failed attempt, with the pause the server asked for.
#[derive(Debug)]
struct Failure {
    error: ModelError,
    retry_after: Option<Duration>,
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        Self { error, retry_after: None }
    }
}

/// A stream being assembled into a reply, in either format.
enum StreamState {
    OpenAi(openai::StreamState),
    Anthropic(anthropic::StreamState),
}

impl StreamState {
    fn new(provider: Provider) -> Self {
        match provider {
            Provider::OpenAi => StreamState::OpenAi(openai::StreamState::default()),
            Provider::Anthropic => StreamState::Anthropic(anthropic::StreamState::default()),
        }
    }

    fn on_event(&mut self, event: &SseEvent, events: &mut dyn FnMut(ModelEvent)) -> Result<()> {
        match self {
            StreamState::OpenAi(state) => state.on_event(event, events),
            StreamState::Anthropic(state) => state.on_event(event, events),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            StreamState::OpenAi(state) => state.is_done(),
            StreamState::Anthropic(state) => state.is_done(),
        }
    }

    fn finish(self) -> Result<ModelReply> {
        match self {
            StreamState::OpenAi(state) => state.finish(),
            StreamState::Anthropic(state) => state.finish(),
        }
    }
}

/// The URL a provider's turn is posted to.
///
/// A `base_url` may hold secrets (`user:pass@`, a `?key=`), so no message
/// quotes it. User info is refused: the key belongs in `api_key`, where it is
/// sent only as the provider's header and never printed. A query or fragment
/// is refused too, since the path is appended after it.
fn endpoint(provider: Provider, base_url: &str) -> Result<reqwest::Url> {
    let base = base_url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(base)
        .map_err(|err| ModelError::InvalidConfig(format!("base_url is not a valid URL ({err})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ModelError::InvalidConfig(format!(
            "base_url must be an http or https URL, not {}",
            parsed.scheme()
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ModelError::InvalidConfig(
            "base_url must not carry a user name or password (give the key as api_key)".to_owned(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ModelError::InvalidConfig("base_url must not have a query or fragment".to_owned()));
    }
    let url = match provider {
        Provider::OpenAi => format!("{base}/chat/completions"),
        Provider::Anthropic if base.ends_with("/v1") => format!("{base}/messages"),
        Provider::Anthropic => format!("{base}/v1/messages"),
    };
    reqwest::Url::parse(&url).map_err(|err| ModelError::InvalidConfig(format!("base_url is not a valid URL ({err})")))
}

/// A URL as error messages may show it: scheme, host, port and path, without
/// user info, query or fragment.
fn redacted_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

fn auth_headers(config: &ModelConfig) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if config.provider == Provider::Anthropic {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    let Some(key) = config.api_key.as_ref().map(|key| key.expose_secret().trim()).filter(|key| !key.is_empty()) else {
        return Ok(headers);
    };
    let (name, value) = match config.provider {
        Provider::OpenAi => (header::AUTHORIZATION, format!("Bearer {key}")),
        Provider::Anthropic => (header::HeaderName::from_static("x-api-key"), key.to_owned()),
    };
    // The error must not quote the key.
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| ModelError::InvalidConfig("the API key contains characters not allowed in a header".to_owned()))?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(headers)
}

/// Reads the body up to `limit` bytes; the flag tells whether more was left.
async fn read_body(response: &mut reqwest::Response, limit: usize) -> Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|err| ModelError::Connect(format!("reading the answer: {}", http_error(err))))?
    {
        if body.len() + chunk.len() > limit {
            body.extend_from_slice(&chunk[..limit - body.len()]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The message of an error body: `error.message` in both providers' formats
/// (and `error` as a plain string, as Ollama sends), else the body's start.
fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some((_, message)) = api_error(&value)
    {
        return server_text(&message, MAX_ERROR_MESSAGE_BYTES);
    }
    let text = server_text(&String::from_utf8_lossy(body), MAX_ERROR_BODY_BYTES);
    let text = text.trim();
    if text.is_empty() { "(empty body)".to_owned() } else { truncate(text, MAX_ERROR_MESSAGE_BYTES) }
}

/// The `error` member of a JSON answer, as (kind, message), if it has one.
fn api_error(value: &serde_json::Value) -> Option<(String, String)> {
    error_member(value.get("error")?)
}

fn error_member(error: &serde_json::Value) -> Option<(String, String)> {
    match error {
        serde_json::Value::Null => None,
        serde_json::Value::String(message) => Some(("error".to_owned(), message.clone())),
        error => {
            let text = |key: &str| match error.get(key) {
                Some(serde_json::Value::String(text)) => Some(text.clone()),
                Some(serde_json::Value::Number(number)) => Some(number.to_string()),
                _ => None,
            };
            let kind = text("type").or_else(|| text("code")).unwrap_or_else(|| "error".to_owned());
            let message = text("message").unwrap_or_else(|| error.to_string());
            Some((kind, message))
        }
    }
}

/// The error that an answer's `error` member reports, if it has one.
fn reported_error(error: Option<&serde_json::Value>) -> Option<ModelError> {
    error_member(error?).map(|(kind, message)| ModelError::Api {
        kind: server_text(&kind, MAX_ERROR_MESSAGE_BYTES),
        message: server_text(&message, MAX_ERROR_MESSAGE_BYTES),
    })
}

/// `text` as a `T`, or a protocol error saying whether it was not JSON at
/// all or JSON of another shape.
fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &[u8]) -> Result<T> {
    // serde's messages may quote what the server sent.
    serde_json::from_slice(text).map_err(|err| match err.classify() {
        serde_json::error::Category::Data => {
            ModelError::Protocol(server_text(&format!("unexpected shape of {what}: {err}"), MAX_ERROR_MESSAGE_BYTES))
        }
        _ => {
            let start = server_text(&String::from_utf8_lossy(&text[..text.len().min(200)]), 200);
            let err = server_text(&err.to_string(), MAX_ERROR_MESSAGE_BYTES);
            ModelError::Protocol(format!("{what} is not valid JSON ({err}): {start:?}"))
        }
    })
}

/// Text the server chose, made fit for an error message: control characters
/// other than newline and tab are dropped, so that no terminal escape
/// sequence travels into logs and CLIs, and so are the bidirectional-text
/// controls that can make a log line read as something else; then it is cut
/// to `max` bytes.
fn server_text(text: &str, max: usize) -> String {
    let is_unsafe = |c: char| {
        (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(is_unsafe) {
        return truncate(text, max);
    }
    truncate(&text.chars().filter(|c| !is_unsafe(*c)).collect::<String>(), max)
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A reqwest error as a message: without the URL reqwest puts in it (the
/// callers name the endpoint themselves, redacted), with its causes.
fn http_error(err: reqwest::Error) -> String {
    error_chain(&err.without_url())
}

/// An error's message and its causes, which reqwest keeps out of `Display`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The text of a reply: `None` rather than empty.
fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// An id for a tool call whose server gave none (some local servers): the
/// result must go back under some id, and it must not collide with others
/// in the conversation.
fn generated_call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

/// Tool arguments as stored: an empty text means no arguments.
fn arguments_or_empty_object(arguments: String) -> String {
    if arguments.trim().is_empty() { "{}".to_owned() } else { arguments }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn endpoints_tolerate_trailing_slashes_and_v1() {
        let url = |provider, base| endpoint(provider, base).unwrap().to_string();
        assert_eq!(url(Provider::OpenAi, "https://api.openai.com/v1/"), "https://api.openai.com/v1/chat/completions");
        assert_eq!(url(Provider::OpenAi, "http://127.0.0.1:11434/v1"), "http://127.0.0.1:11434/v1/chat/completions");
        assert_eq!(url(Provider::Anthropic, "https://api.anthropic.com"), "https://api.anthropic.com/v1/messages");
        assert_eq!(url(Provider::Anthropic, "https://api.anthropic.com/"), "https://api.anthropic.com/v1/messages");
        assert_eq!(url(Provider::Anthropic, "https://api.anthropic.com/v1/"), "https://api.anthropic.com/v1/messages");
        assert!(matches!(endpoint(Provider::OpenAi, "ftp://example.com"), Err(ModelError::InvalidConfig(_))));
        assert!(matches!(endpoint(Provider::OpenAi, "not a url"), Err(ModelError::InvalidConfig(_))));
    }

    #[test]
    fn providers_parse_print_and_serialize_alike() {
        for provider in [Provider::OpenAi, Provider::Anthropic] {
            assert_eq!(provider.to_string().parse::<Provider>().unwrap(), provider);
            assert_eq!(serde_json::to_value(provider).unwrap(), serde_json::json!(provider.to_string()));
        }
        assert_eq!("OpenAI".parse::<Provider>().unwrap(), Provider::OpenAi);
        assert!("gemini".parse::<Provider>().is_err());
    }

    #[test]
    fn error_messages_come_from_either_format_or_the_body() {
        assert_eq!(error_message(br#"{"error":{"message":"bad tool","type":"invalid_request_error"}}"#), "bad tool");
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            "Overloaded"
        );
        assert_eq!(error_message(br#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(error_message(b"<html>502 Bad Gateway</html>"), "<html>502 Bad Gateway</html>");
        assert_eq!(error_message(b""), "(empty body)");
        let long = "é".repeat(2000);
        let message = error_message(long.as_bytes());
        assert!(message.len() <= MAX_ERROR_MESSAGE_BYTES + "…".len(), "{}", message.len());
    }

    #[test]
    fn retryable_errors() {
        let status = |status| ModelError::Status { status, message: String::new() };
        assert!(status(429).is_retryable());
        assert!(status(408).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(529).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        let api = |kind: &str| ModelError::Api { kind: kind.to_owned(), message: String::new() };
        assert!(api("overloaded_error").is_retryable());
        assert!(api("server_error").is_retryable());
        assert!(!api("invalid_request_error").is_retryable());
        assert!(ModelError::Protocol(String::new()).is_retryable());
        assert!(!ModelError::TooLarge(Limit::ReplyBytes).is_retryable(), "a server that sent too much will again");
        let exhausted = ModelError::RetriesExhausted { attempts: 2, last: Box::new(status(500)) };
        assert!(!exhausted.is_retryable());
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let mut config = ModelConfig::new(Provider::OpenAi, "m");
        config.api_key = Some(SecretString::from("sk-very-secret"));
        let client = ModelClient::new(config.clone()).unwrap();
        let shown = format!("{client:?} {config:?} {:?}", client.headers);
        assert!(!shown.contains("sk-very-secret"), "{shown}");
    }

    #[test]
    fn a_call_can_move_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        let client = ModelClient::new(ModelConfig::new(Provider::OpenAi, "m")).unwrap();
        let request = ModelRequest { system: "", messages: &[], tools: &[] };
        let mut events = |_| {};
        let call = client.complete(&request, &mut events);
        assert_send(&call);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let refused = |change: fn(&mut ModelConfig)| {
            let mut config = ModelConfig::new(Provider::Anthropic, "m");
            change(&mut config);
            matches!(ModelClient::new(config), Err(ModelError::InvalidConfig(_)))
        };
        assert!(!refused(|_| {}));
        assert!(refused(|config| config.model = " ".to_owned()));
        assert!(refused(|config| config.max_output_tokens = 0));
        assert!(refused(|config| config.request_timeout = Duration::ZERO));
        assert!(refused(|config| config.temperature = Some(f32::NAN)));
        assert!(refused(|config| config.api_key = Some(SecretString::from("line\nbreak"))));
        assert!(refused(|config| config.base_url = "api.anthropic.com".to_owned()));
        assert!(refused(|config| config.base_url = "https://example.com/v1?x=1".to_owned()));
        assert!(refused(|config| config.base_url = "https://example.com/v1#top".to_owned()));
    }

    /// Regression: a `base_url` with `user:pass@` was accepted, and the
    /// password then travelled in reqwest's error messages into events and
    /// logs.
    #[test]
    fn a_base_url_with_user_info_is_refused_without_being_quoted() {
        for base_url in ["https://user:hunter2@example.com/v1", "http://hunter2@127.0.0.1:8080", "http://:hunter2@h"] {
            let mut config = ModelConfig::new(Provider::OpenAi, "m");
            config.base_url = base_url.to_owned();
            match ModelClient::new(config) {
                Err(err @ ModelError::InvalidConfig(_)) => {
                    let message = err.to_string();
                    assert!(message.contains("user name or password") && !message.contains("hunter2"), "{message}");
                }
                other => panic!("{base_url}: {other:?}"),
            }
        }
        for (base_url, secret) in [("ftp://u:hunter2@h/x?key=hunter3", "hunter"), ("not a url ?key=hunter3", "hunter")]
        {
            let err = endpoint(Provider::OpenAi, base_url).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
        }
    }

    #[test]
    fn urls_in_messages_lose_user_info_query_and_fragment() {
        let url = reqwest::Url::parse("https://user:hunter2@example.com:8443/v1/chat?key=hunter3#frag").unwrap();
        assert_eq!(redacted_url(&url), "https://example.com:8443/v1/chat");
        let url = reqwest::Url::parse("http://[::1]/v1/messages").unwrap();
        assert_eq!(redacted_url(&url), "http://[::1]/v1/messages");
    }

    /// Regression: reqwest's errors name the whole URL, user info and query
    /// included, and they were copied into our messages as they were.
    #[tokio::test]
    async fn http_errors_do_not_quote_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://user:hunter2@127.0.0.1:{port}/v1/chat/completions?key=hunter3");
        let err = crate::http_client::builder().unwrap().build().unwrap().post(&url).send().await.unwrap_err();
        assert!(error_chain(&err).contains("hunter"), "the test needs an error that names the URL");
        let message = http_error(err);
        assert!(!message.contains("hunter") && !message.contains("key="), "{message}");
    }

    /// Regression: error text chosen by the server went into messages with
    /// its control characters, so terminal escape sequences reached logs and
    /// CLIs.
    #[test]
    fn server_text_in_errors_loses_control_characters() {
        let hostile = "bad \u{1b}[31mred\u{1b}[0m\r\nline 2\ttab\u{7}\u{9b}2J\u{0} \u{202e}txt.exe";
        let clean = "bad [31mred[0m\nline 2\ttab2J txt.exe";
        assert_eq!(error_message(hostile.as_bytes()), clean);
        let body = json!({"error": {"message": hostile, "type": "invalid_request_error"}}).to_string();
        assert_eq!(error_message(body.as_bytes()), clean);
        let error = json!({"type": "over\u{1b}]0;pwned\u{7}loaded", "message": hostile});
        match reported_error(Some(&error)) {
            Some(ModelError::Api { kind, message }) => {
                assert_eq!(kind, "over]0;pwnedloaded");
                assert_eq!(message, clean);
            }
            other => panic!("{other:?}"),
        }
        let err = parse_json::<serde_json::Value>("the answer", "\u{1b}[2J not json".as_bytes()).unwrap_err();
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }
}
