//! http_fetch: one HTTP request through the sandbox's egress proxy.
//!
//! Inside the sandbox the only way out is the proxy the sandbox announces in
//! `HTTP_PROXY`/`HTTPS_PROXY` when the agent's network is allow-listed; the
//! tool sends every request there and never tries a direct connection, so
//! without a proxy (network `none`) it fails with a clear message instead
//! of a connection error.

use std::time::Duration;

use super::ToolResult;
use super::args::{self, HttpFetchArgs, HttpMethod};

/// Bytes of body shown at most, whatever the output limit.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A bound of its own, below any sensible sandbox timeout, so that a slow
/// server ends in a message rather than a killed runner.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) const NO_NETWORK: &str = "http_fetch needs network access, and this agent has none: its network policy is \
                                     `none`, so the sandbox offers no egress proxy (an operator can allow \
                                     destinations in the agent's manifest)";

/// The runner's entry: the proxy comes from the environment the sandbox set.
pub(crate) fn fetch_from_sandbox(args: &HttpFetchArgs, output_limit: usize) -> ToolResult {
    let url = match args::http_url(&args.url) {
        Ok(url) => url,
        Err(err) => return ToolResult::error(err.to_string()),
    };
    let names: &[&str] =
        if url.scheme() == "https" { &["HTTPS_PROXY", "https_proxy"] } else { &["HTTP_PROXY", "http_proxy"] };
    let proxy = names.iter().find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()));
    match proxy {
        Some(proxy) => fetch(args, &proxy, output_limit),
        None => ToolResult::error(NO_NETWORK),
    }
}

/// Sends the request through `proxy` on a thread of its own (with its own
/// runtime, so this works whether or not the caller is inside one).
pub(crate) fn fetch(args: &HttpFetchArgs, proxy: &str, output_limit: usize) -> ToolResult {
    let max_body = output_limit.min(MAX_BODY_BYTES);
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(request(args, proxy, max_body))
            })
            .join()
    });
    match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => ToolResult::error(format!("http_fetch could not start its request: {err}")),
        Err(_) => ToolResult::error("http_fetch failed unexpectedly"),
    }
}

async fn request(args: &HttpFetchArgs, proxy: &str, max_body: usize) -> std::io::Result<ToolResult> {
    let url = match args::http_url(&args.url) {
        Ok(url) => url,
        Err(err) => return Ok(ToolResult::error(err.to_string())),
    };
    let client = crate::http_client::builder()
        .map_err(std::io::Error::other)?
        .proxy(reqwest::Proxy::all(proxy).map_err(std::io::Error::other)?)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("codexos-http-fetch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(std::io::Error::other)?;
    let method = args.method.unwrap_or(HttpMethod::Get);
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut builder = client.request(method.clone(), url.clone());
    for (name, value) in args.headers.iter().flatten() {
        builder = builder.header(name, value);
    }
    if let Some(body) = &args.body {
        builder = builder.body(body.clone());
    }
    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(err) => return Ok(ToolResult::error(describe_failure(&url, &err))),
    };
    let status = response.status();
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let mut output = format!("HTTP {} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    if response.url() != &url {
        output.push_str(&format!("url: {} (redirected)\n", response.url()));
    }
    output.push_str(&format!("content-type: {}\n", content_type.as_deref().unwrap_or("(none)")));
    let mut body = Vec::new();
    let mut total = 0usize;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                total += chunk.len();
                let room = max_body.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if total > max_body {
                    // Enough to show; the rest is not waited for.
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => {
                output.push_str(&format!("\n[the body was cut off after {total} bytes: {err}]\n"));
                return Ok(ToolResult { output, is_error: true });
            }
        }
    }
    let is_error = status.is_client_error() || status.is_server_error();
    if method == reqwest::Method::HEAD {
        return Ok(ToolResult { output, is_error });
    }
    output.push('\n');
    if body.is_empty() {
        output.push_str("[empty body]\n");
    } else if is_text(content_type.as_deref(), &body) {
        let text = String::from_utf8_lossy(&body);
        output.push_str(&text);
        if !text.ends_with('\n') {
            output.push('\n');
        }
        if total > body.len() {
            output.push_str(&format!("[body cut after {} bytes; it is longer]\n", body.len()));
        }
    } else {
        let size = if total > body.len() { format!("more than {max_body}") } else { total.to_string() };
        output.push_str(&format!("[binary body of {size} bytes, not shown]\n"));
    }
    Ok(ToolResult { output, is_error })
}

fn is_text(content_type: Option<&str>, body: &[u8]) -> bool {
    let sniffed = !body[..body.len().min(super::files::BINARY_SNIFF_BYTES)].contains(&0);
    let Some(content_type) = content_type else { return sniffed && std::str::from_utf8(body).is_ok() };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let textual = essence.starts_with("text/")
        || ["json", "xml", "javascript", "yaml", "toml", "csv", "x-www-form-urlencoded", "graphql", "sql"]
            .iter()
            .any(|kind| essence.contains(kind));
    textual && sniffed
}

fn describe_failure(url: &reqwest::Url, err: &reqwest::Error) -> String {
    let mut message = format!("http_fetch {url} failed: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    if message.contains("403") || message.contains("tunnel") {
        message.push_str(
            " (the egress proxy refuses destinations that the agent's network policy does not allow; \
             allowed destinations are exact host:port pairs)",
        );
    } else if err.is_timeout() {
        message.push_str(&format!(" (no answer within {}s)", REQUEST_TIMEOUT.as_secs()));
    }
    message
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A one-shot HTTP proxy: answers the first request with `response` and
    /// returns the request it received.
    fn fake_proxy(response: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                let n = stream.read(&mut buffer).unwrap();
                assert!(n > 0, "connection closed mid-request");
                request.extend_from_slice(&buffer[..n]);
            }
            stream.write_all(response).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (address, handle)
    }

    fn args(json: serde_json::Value) -> HttpFetchArgs {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn requests_go_through_the_proxy_and_text_bodies_are_shown() {
        let (proxy, server) =
            fake_proxy(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nhello\n");
        let result = fetch(
            &args(serde_json::json!({"url": "http://example.invalid/page?q=1", "headers": {"x-probe": "yes"}})),
            &proxy,
            1024,
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("GET http://example.invalid/page?q=1 HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("x-probe: yes"), "{request}");
        assert_eq!(result, ToolResult::ok("HTTP 200 OK\ncontent-type: text/plain\n\nhello\n"));
    }

    #[test]
    fn error_statuses_are_errors_and_binary_bodies_are_not_shown() {
        let (proxy, server) = fake_proxy(
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/octet-stream\r\ncontent-length: 3\r\n\r\n\
              \x00\x01\x02",
        );
        let result = fetch(&args(serde_json::json!({"url": "http://example.invalid/x"})), &proxy, 1024);
        server.join().unwrap();
        assert_eq!(
            result,
            ToolResult::error(
                "HTTP 404 Not Found\ncontent-type: application/octet-stream\n\n[binary body of 3 bytes, not shown]\n"
            )
        );
    }

    #[test]
    fn long_bodies_are_cut() {
        let (proxy, server) = fake_proxy(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz",
        );
        let result = fetch(&args(serde_json::json!({"url": "http://example.invalid/"})), &proxy, 10);
        server.join().unwrap();
        assert_eq!(
            result.output,
            "HTTP 200 OK\ncontent-type: text/plain\n\nabcdefghij\n[body cut after 10 bytes; it is longer]\n"
        );
    }

    #[test]
    fn a_refused_tunnel_names_the_policy() {
        let (proxy, server) = fake_proxy(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
        let result = fetch(&args(serde_json::json!({"url": "https://blocked.example.invalid/"})), &proxy, 1024);
        let request = server.join().unwrap();
        assert!(request.starts_with("CONNECT blocked.example.invalid:443 HTTP/1.1"), "{request}");
        assert!(result.is_error);
        assert!(result.output.contains("network policy does not allow"), "{}", result.output);
    }
}
