//! The HTTP client the CLI's remote commands use. It finds the server and
//! the key from flags, the environment, or the files `codexos up` wrote.

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::data_dir::{OWNER_KEY_FILE, URL_FILE, read_published};

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl Client {
    pub fn from_args(global: &GlobalArgs) -> anyhow::Result<Self> {
        // The same data directory `up` would use, wherever it was configured.
        let data_dir = crate::commands::platform::load_settings(global, None, None)?.data_dir;
        let base_url = match &global.server {
            Some(url) => url.clone(),
            None => read_published(&data_dir, URL_FILE).with_context(|| {
                format!(
                    "no server given: pass --server or set CODEXOS_URL, or start one with `codexos up` \
                     (looked for {})",
                    data_dir.join(URL_FILE).display()
                )
            })?,
        };
        let api_key = match &global.api_key {
            Some(key) => key.clone(),
            None => read_published(&data_dir, OWNER_KEY_FILE).with_context(|| {
                format!(
                    "no API key given: pass --api-key or set CODEXOS_API_KEY (looked for {})",
                    data_dir.join(OWNER_KEY_FILE).display()
                )
            })?,
        };
        if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
            bail!("server URL '{base_url}' must start with http:// or https://");
        }
        let http = codexos_engine::http_client::builder()
            .context("cannot set up TLS")?
            .user_agent(concat!("codexos-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned(), api_key })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path, None::<&()>, &[StatusCode::OK]).await
    }

    /// Like `get`, but also accepts the statuses in `accepted` as answers.
    pub async fn get_accepting<T: DeserializeOwned>(&self, path: &str, accepted: &[StatusCode]) -> anyhow::Result<T> {
        self.send(Method::GET, path, None::<&()>, accepted).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(Method::POST, path, Some(body), &[StatusCode::OK, StatusCode::CREATED]).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::DELETE, path, None::<&()>, &[StatusCode::OK]).await
    }

    /// Sends a request and answers the status with the JSON body, if any
    /// (a 204 has none); any status outside `accepted` is an error.
    pub async fn send_for_status(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accepted: &[StatusCode],
    ) -> anyhow::Result<(StatusCode, Option<Value>)> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| {
            let reason = if err.is_connect() { "cannot connect (is the server running?)" } else { "request failed" };
            anyhow::anyhow!("{method} {url}: {reason}: {}", innermost(&err))
        })?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("{method} {url}: cannot read the answer"))?;
        if !accepted.contains(&status) {
            bail!("{}", describe_error(status, &text));
        }
        if text.trim().is_empty() {
            return Ok((status, None));
        }
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: the server's answer is not the expected JSON"))?;
        Ok((status, Some(value)))
    }

    /// Opens a server-sent event stream, resuming after `last_event_id`.
    /// The response is checked like any other; the stream itself has no
    /// overall timeout (it lasts as long as the execution).
    pub async fn event_stream(&self, path: &str, last_event_id: i64) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.api_key)
            .header("accept", "text/event-stream")
            .header("last-event-id", last_event_id.to_string())
            .timeout(std::time::Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("GET {url}: cannot connect: {}", innermost(&err)))?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            bail!("{}", describe_error(status, &text));
        }
        Ok(response)
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        accepted: &[StatusCode],
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| {
            let reason = if err.is_connect() { "cannot connect (is the server running?)" } else { "request failed" };
            anyhow::anyhow!("{method} {url}: {reason}: {}", innermost(&err))
        })?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("{method} {url}: cannot read the answer"))?;
        if !accepted.contains(&status) {
            bail!("{}", describe_error(status, &text));
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: the server's answer is not the expected JSON"))
    }
}

/// The server's error envelope as one line: `forbidden (403): message`.
fn describe_error(status: StatusCode, body: &str) -> String {
    let envelope: Option<Value> = serde_json::from_str(body).ok();
    let error = envelope.as_ref().and_then(|value| value.get("error"));
    match error {
        Some(error) => {
            let mut line = format!(
                "{} ({}): {}",
                error.get("code").and_then(Value::as_str).unwrap_or("error"),
                status.as_u16(),
                error.get("message").and_then(Value::as_str).unwrap_or("no message")
            );
            // Invalid documents list every problem, one per line.
            for problem in error.get("problems").and_then(Value::as_array).into_iter().flatten() {
                let key = problem.get("key").and_then(Value::as_str).unwrap_or("?");
                let reason = problem.get("reason").and_then(Value::as_str).unwrap_or("?");
                line.push_str(&format!("\n  {key}: {reason}"));
            }
            line
        }
        None => format!("the server answered {status}"),
    }
}

fn innermost(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        message = next.to_string();
        source = next.source();
    }
    message
}
