use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pretty_assertions::assert_eq;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::*;

fn server(name: &str) -> McpServerName {
    McpServerName::parse(name).unwrap()
}

fn tool(name: &str, schema: serde_json::Value) -> Tool {
    let serde_json::Value::Object(schema) = schema else { panic!("schemas are objects") };
    Tool::new(name.to_owned(), "does things", Arc::new(schema))
}

#[test]
fn server_names_are_validated() {
    for good in ["fs", "a", "git-hub", "my_server", "0day", &"x".repeat(32)] {
        assert_eq!(McpServerName::parse(good).unwrap().as_str(), good);
    }
    for bad in ["", "Fs", "-fs", "_fs", "a__b", "a.b", "a b", "é", &"x".repeat(33)] {
        assert!(McpServerName::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn tools_are_offered_under_model_names_with_object_schemas() {
    let listed = vec![
        tool("read_file", json!({"type": "object", "properties": {"path": {"type": "string"}}})),
        // No type at all: taken as an object, as the protocol requires one.
        tool("ping", json!({})),
    ];
    let (tools, skipped) = offered_tools(&server("fs"), listed);
    assert_eq!(skipped, Vec::<String>::new());
    assert_eq!(tools[0].qualified_name, "fs.read_file");
    assert_eq!(tools[0].tool, "read_file");
    assert_eq!(tools[0].spec.name, "fs__read_file");
    assert_eq!(tools[0].spec.description, "[MCP server fs] does things");
    assert_eq!(tools[0].spec.parameters, json!({"type": "object", "properties": {"path": {"type": "string"}}}));
    assert_eq!(tools[1].spec.parameters, json!({"type": "object"}));
}

#[test]
fn tools_the_engine_cannot_offer_are_skipped_with_the_reason() {
    let listed = vec![
        tool("ok", json!({"type": "object"})),
        tool("ok", json!({"type": "object"})),
        tool("has.dot", json!({"type": "object"})),
        tool("", json!({"type": "object"})),
        tool(&"n".repeat(70), json!({"type": "object"})),
        tool("list", json!({"type": "array"})),
        tool("huge", json!({"type": "object", "description": "d".repeat(40_000)})),
    ];
    let (tools, skipped) = offered_tools(&server("fs"), listed);
    assert_eq!(tools.len(), 1);
    assert_eq!(skipped.len(), 6, "{skipped:#?}");
    assert_eq!(skipped[0], "ok: listed twice");
    assert!(skipped[1].starts_with("has.dot: the name must be"), "{}", skipped[1]);
    assert!(skipped[3].contains("longer than the 64 characters"), "{}", skipped[3]);
    assert_eq!(skipped[4], "list: its input schema is of type \"array\", not an object");
    assert!(skipped[5].starts_with("huge: its input schema is 400"), "{}", skipped[5]);
}

#[test]
fn a_server_offers_a_bounded_number_of_tools() {
    let listed = (0..MAX_TOOLS_PER_SERVER + 10).map(|n| tool(&format!("t{n}"), json!({}))).collect();
    let (tools, skipped) = offered_tools(&server("many"), listed);
    assert_eq!(tools.len(), MAX_TOOLS_PER_SERVER);
    assert_eq!(skipped, vec![format!("10 more tools: a server may offer at most {MAX_TOOLS_PER_SERVER}")]);
}

#[test]
fn results_are_rendered_as_text_and_capped() {
    let result = CallToolResult::success(vec![
        ContentBlock::text("first"),
        ContentBlock::image("aGVsbG8=", "image/png"),
        ContentBlock::text("last"),
    ]);
    assert_eq!(
        render(result, 1000),
        McpCallResult {
            output: "first\n[an image (image/png), 8 bytes of base64, not shown]\nlast".to_owned(),
            is_error: false
        }
    );
    let failed = render(CallToolResult::error(vec![ContentBlock::text("no such row")]), 1000);
    assert_eq!(failed, McpCallResult { output: "no such row".to_owned(), is_error: true });
    let empty = render(CallToolResult::success(Vec::new()), 1000);
    assert_eq!(empty.output, "(no output)");
    let mut structured = CallToolResult::success(Vec::new());
    structured.structured_content = Some(json!({"sum": 3}));
    assert_eq!(render(structured, 1000).output, r#"{"sum":3}"#);
    let long = render(CallToolResult::success(vec![ContentBlock::text("é".repeat(10_000))]), 1000);
    assert!(long.output.len() <= 1000, "{}", long.output.len());
    assert!(long.output.ends_with("[... cut: 20000 bytes in all; at most 1000 are kept]"), "{}", long.output);
}

#[test]
fn tails_keep_the_end_on_a_character_boundary() {
    assert_eq!(tail("abc", 10), "abc");
    assert_eq!(tail("aé", 1), "");
    assert_eq!(tail("abcdef", 3), "def");
}

#[tokio::test]
async fn a_line_over_the_limit_fails_the_reader() {
    let oversized = Arc::new(AtomicBool::new(false));
    let input: &[u8] = b"short\nthis line is much too long\n";
    let mut reader = LimitedLines::new(input, 10, Arc::clone(&oversized));
    let mut read = Vec::new();
    let err = reader.read_to_end(&mut read).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(oversized.load(std::sync::atomic::Ordering::Relaxed));

    let fine = Arc::new(AtomicBool::new(false));
    let mut reader = LimitedLines::new(&b"0123456789\n0123456789\n"[..], 10, Arc::clone(&fine));
    let mut read = Vec::new();
    reader.read_to_end(&mut read).await.unwrap();
    assert_eq!(read.len(), 22);
}

// ---- the manifest's [[mcp]] entries and their allow-list entries ----

const MCP_MANIFEST: &str = r#"
name = "with-mcp"
version = "0.1.0"
kind = "llm"

[model]
provider = "openai"
name = "m"

[tools]
allow = ["shell", "fs.read_file", "web.*"]

[[mcp]]
name = "fs"
command = ["node", "server.js", "--root", "."]
env = { LOG = "debug", TOKEN_FILE = "token" }

[[mcp]]
name = "web"
url = "http://127.0.0.1:9000/mcp"
"#;

fn manifest_problems(text: &str) -> Vec<(String, String)> {
    let err = crate::AgentManifest::parse(text).unwrap_err();
    err.problems.into_iter().map(|problem| (problem.key, problem.reason)).collect()
}

#[test]
fn mcp_servers_are_read_from_the_manifest() {
    let manifest = crate::AgentManifest::parse(MCP_MANIFEST).unwrap();
    assert_eq!(
        manifest.mcp,
        vec![
            McpServerSpec {
                name: server("fs"),
                transport: McpTransport::Stdio {
                    command: ["node", "server.js", "--root", "."].map(str::to_owned).to_vec(),
                    env: vec![("LOG".to_owned(), "debug".to_owned()), ("TOKEN_FILE".to_owned(), "token".to_owned())],
                },
            },
            McpServerSpec {
                name: server("web"),
                transport: McpTransport::Http { url: "http://127.0.0.1:9000/mcp".to_owned() },
            },
        ]
    );
    assert!(manifest.allows("shell"));
    assert!(manifest.allows("fs.read_file"));
    assert!(!manifest.allows("fs.write_file"));
    assert!(manifest.allows("web.search"));
    assert!(!manifest.allows("web."));
    assert!(!manifest.allows("webx.search"));
    assert!(!manifest.allows("read_file"));
}

#[test]
fn allow_patterns_match_one_server_s_tools() {
    assert!(allow_entry_matches("fs.*", "fs.read"));
    assert!(allow_entry_matches("fs.read", "fs.read"));
    assert!(!allow_entry_matches("fs.*", "fsx.read"));
    assert!(!allow_entry_matches("fs.*", "fs."));
    assert!(!allow_entry_matches("fs.*", "fs.a.b"));
    assert!(!allow_entry_matches("*", "fs.read"));
    assert!(!allow_entry_matches("fs.rea", "fs.read"));
}

#[test]
fn every_mcp_mistake_is_a_problem_under_its_key() {
    let text = MCP_MANIFEST
        .replace(
            r#"allow = ["shell", "fs.read_file", "web.*"]"#,
            r#"allow = ["git.log", "fs.bad name", "fs.*", "fs.*"]"#,
        )
        .replace(r#"url = "http://127.0.0.1:9000/mcp""#, "url = \"ftp://x\"\nenv = { A = \"b\" }")
        + r#"
[[mcp]]
name = "Bad__Name"
command = ["x"]
url = "http://a/mcp"

[[mcp]]
name = "fs"

[[mcp]]
name = "empty"
command = []
timeout = "5s"

[[mcp]]
name = "badenv"
command = ["x"]
env = { "1X" = "y" }
"#;
    assert_eq!(
        manifest_problems(&text),
        [
            ("mcp[1].url", "'ftp://x' is not an http(s) URL"),
            ("mcp[1].env", "applies only to servers started with command"),
            ("mcp[2].name", "'Bad__Name' is not a valid MCP server name (1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit, without '__')"),
            ("mcp[2]", "give command (a program run in the sandbox) or url (an HTTP server), not both"),
            ("mcp[3].name", "'fs' is declared twice"),
            ("mcp[3]", "needs command (a program run in the sandbox) or url (a streamable-HTTP server)"),
            ("mcp[4].timeout", "unknown key"),
            ("mcp[4].command", "must start with the program to run"),
            ("mcp[5].env", "'1X' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ("tools.allow[0]", "'git.log' names the MCP server 'git', which is not declared (declared: fs, badenv)"),
            ("tools.allow[1]", "'fs.bad name': after the server comes a tool name ([A-Za-z0-9_-]) or '*'"),
            ("tools.allow[3]", "'fs.*' is listed twice"),
        ]
        .map(|(key, reason)| (key.to_owned(), reason.to_owned()))
        .to_vec()
    );
}

#[test]
fn workflow_agents_connect_no_mcp_server() {
    let text = r#"
name = "flow"
version = "1.0.0"
kind = "workflow"

[tools]
allow = ["shell"]

[[steps]]
tool = "shell"
args = { command = "true" }

[[mcp]]
name = "fs"
command = ["x"]
"#;
    assert_eq!(manifest_problems(text), vec![("mcp".to_owned(), "only llm agents connect MCP servers".to_owned())]);
}
