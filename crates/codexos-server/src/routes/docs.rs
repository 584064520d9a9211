//! The OpenAPI document and a browsable reference rendered from it on the
//! server, so the reference works offline and needs no JavaScript.

use std::fmt::Write;

use axum::extract::State;
use axum::response::Html;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{OpenApi, RefOr, Required};

use crate::AppState;
use crate::error::ApiJson;

/// The OpenAPI 3.1 document of this API, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi_json(State(state): State<AppState>) -> ApiJson<OpenApi> {
    ApiJson((*state.openapi).clone())
}

/// A browsable API reference (HTML), rendered from the OpenAPI document.
#[utoipa::path(get, path = "/docs", tag = "health", responses((status = 200, content_type = "text/html", body = String)))]
pub async fn reference(State(state): State<AppState>) -> Html<String> {
    Html(render_reference(&state.openapi))
}

fn render_reference(api: &OpenApi) -> String {
    let mut page = String::new();
    let title = escape(&api.info.title);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head><body>\
         <h1>{title} <small>{}</small></h1>",
        escape(&api.info.version)
    );
    if let Some(description) = &api.info.description {
        let _ = write!(page, "<p>{}</p>", escape(description));
    }
    page.push_str("<p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. Authenticated endpoints take <code>Authorization: Bearer &lt;api key&gt;</code>.</p><nav><ul>");
    let operations = operations(api);
    for (method, path, operation) in &operations {
        let _ = write!(
            page,
            "<li><a href=\"#{}\"><span class=\"m {method}\">{method}</span> {}</a> {}</li>",
            anchor(method, path),
            escape(path),
            escape(operation.summary.as_deref().unwrap_or_default())
        );
    }
    page.push_str("</ul></nav>");
    for (method, path, operation) in &operations {
        render_operation(&mut page, method, path, operation);
    }
    if let Some(components) = &api.components {
        page.push_str("<h2>Schemas</h2>");
        for (name, schema) in &components.schemas {
            let json = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = write!(page, "<h3 id=\"schema-{0}\">{0}</h3><pre>{1}</pre>", escape(name), escape(&json));
        }
    }
    page.push_str("</body></html>");
    page
}

fn render_operation(page: &mut String, method: &str, path: &str, operation: &Operation) {
    let _ = write!(
        page,
        "<section id=\"{}\"><h2><span class=\"m {method}\">{method}</span> <code>{}</code></h2>",
        anchor(method, path),
        escape(path)
    );
    for text in [&operation.summary, &operation.description].into_iter().flatten() {
        let _ = write!(page, "<p>{}</p>", escape(text));
    }
    if operation.security.as_ref().is_some_and(|security| !security.is_empty()) {
        page.push_str("<p class=\"auth\">Requires an API key.</p>");
    }
    if let Some(parameters) = operation.parameters.as_ref().filter(|parameters| !parameters.is_empty()) {
        page.push_str("<h4>Parameters</h4><ul>");
        for parameter in parameters {
            let required = if parameter.required == Required::True { " (required)" } else { "" };
            let _ = write!(
                page,
                "<li><code>{}</code>{required} {}</li>",
                escape(&parameter.name),
                escape(parameter.description.as_deref().unwrap_or_default())
            );
        }
        page.push_str("</ul>");
    }
    if let Some(body) = &operation.request_body {
        page.push_str("<h4>Request body</h4><ul>");
        for (content_type, content) in &body.content {
            let _ =
                write!(page, "<li><code>{}</code> {}</li>", escape(content_type), schema_link(content.schema.as_ref()));
        }
        page.push_str("</ul>");
    }
    page.push_str("<h4>Responses</h4><ul>");
    for (status, response) in &operation.responses.responses {
        match response {
            RefOr::T(response) => {
                let schema = response
                    .content
                    .values()
                    .next()
                    .map(|content| schema_link(content.schema.as_ref()))
                    .unwrap_or_default();
                let _ = write!(page, "<li><b>{}</b> {} {schema}</li>", escape(status), escape(&response.description));
            }
            RefOr::Ref(reference) => {
                let _ = write!(page, "<li><b>{}</b> {}</li>", escape(status), escape(&reference.ref_location));
            }
        }
    }
    page.push_str("</ul></section>");
}

fn operations(api: &OpenApi) -> Vec<(&'static str, &str, &Operation)> {
    let mut operations = Vec::new();
    for (path, item) in &api.paths.paths {
        let PathItem { get, put, post, delete, patch, .. } = item;
        for (method, operation) in [("GET", get), ("POST", post), ("PUT", put), ("PATCH", patch), ("DELETE", delete)] {
            if let Some(operation) = operation {
                operations.push((method, path.as_str(), operation));
            }
        }
    }
    operations
}

fn schema_link(schema: Option<&RefOr<utoipa::openapi::schema::Schema>>) -> String {
    match schema {
        Some(RefOr::Ref(reference)) => {
            let name = reference.ref_location.rsplit('/').next().unwrap_or_default();
            format!("<a href=\"#schema-{0}\">{0}</a>", escape(name))
        }
        Some(RefOr::T(schema)) => {
            format!("<code>{}</code>", escape(&serde_json::to_string(schema).unwrap_or_default()))
        }
        None => String::new(),
    }
}

fn anchor(method: &str, path: &str) -> String {
    let slug: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{}{slug}", method.to_ascii_lowercase())
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2330}\
code,pre{font-family:ui-monospace,monospace}pre{background:#f4f5f7;padding:.75rem;overflow:auto}\
section{border-top:1px solid #dde;padding-top:.5rem;margin-top:1.5rem}.m{font-weight:700;font-size:.8em;padding:.1em .4em;border-radius:3px;color:#fff}\
.GET{background:#2b7a4b}.POST{background:#2456a6}.DELETE{background:#a62424}.PUT,.PATCH{background:#8a5a00}.auth{color:#8a5a00}\
nav ul{list-style:none;padding:0}a{color:#2456a6;text-decoration:none}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn every_route_is_on_the_reference_page() {
        let (_, api) = crate::routes::router();
        let page = render_reference(&api);
        for (method, path, _) in operations(&api) {
            assert!(page.contains(&format!("id=\"{}\"", anchor(method, path))), "{method} {path}");
        }
        assert!(page.contains("CreateKey"));
    }
}
